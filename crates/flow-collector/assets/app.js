// The dependency map (docs/graph-page.md): reads GET api/v1/graph (docs/graph.md),
// lays the workloads out with a force simulation and draws them as SVG (no library). It makes no
// request outside the collector. When a graph is drawn (and painted),
// window.__graph says so: {rendered, ms, render_ms, layout_ms, fetch_ms, nodes, edges}.
(function () {
  'use strict';

  const RANGES = { '15m': 15, '1h': 60, '6h': 360, '24h': 1440 };
  const $ = (id) => document.getElementById(id);
  const svg = $('graph');
  const viewport = $('viewport');
  const gEdges = $('edges');
  const gNodes = $('nodes');
  const gLabels = $('labels');
  const panel = $('panel');
  const tooltip = $('tooltip');

  window.__graph = { rendered: false, loads: 0 };

  // ---- State (kept in the URL's fragment, so a view can be linked) ----------------
  const state = {
    range: '15m', // a key of RANGES, or 'custom' with from/to
    from: '',
    to: '',
    metric: 'connections',
    q: '',
    workload: '', // the API's server-side filter
  };
  let data = null; // the last answer, indexed (see index())
  let view = { x: 0, y: 0, k: 1 };
  let selected = null; // {type: 'node'|'edge', id}
  let hovered = null;
  const positions = new Map(); // node id -> {x, y}: kept across reloads
  let loadSeq = 0;
  let stageSize = { w: 800, h: 600 };

  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    if (p.get('range') && (RANGES[p.get('range')] || p.get('range') === 'custom')) state.range = p.get('range');
    state.from = p.get('from') || '';
    state.to = p.get('to') || '';
    if (state.range === 'custom' && !(state.from && state.to)) state.range = '15m';
    if (p.get('metric') === 'bytes') state.metric = 'bytes';
    state.q = p.get('q') || '';
    state.workload = p.get('workload') || '';
  }
  function writeHash() {
    const p = new URLSearchParams();
    p.set('range', state.range);
    if (state.range === 'custom') { p.set('from', state.from); p.set('to', state.to); }
    if (state.metric !== 'connections') p.set('metric', state.metric);
    if (state.q) p.set('q', state.q);
    if (state.workload) p.set('workload', state.workload);
    history.replaceState(null, '', '#' + p.toString());
  }

  // ---- Formatting -------------------------------------------------------------------
  const nf = new Intl.NumberFormat('en-US');
  const num = (n) => (n == null ? '–' : nf.format(n));
  function bytes(n) {
    if (n == null) return '–';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return (i === 0 ? String(v) : v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)) + ' ' + u[i];
  }
  function compact(n) {
    if (n < 1000) return String(n);
    const u = ['k', 'M', 'G', 'T'];
    let i = -1;
    let v = n;
    while (v >= 1000 && i < u.length - 1) { v /= 1000; i++; }
    return v.toFixed(v < 10 ? 1 : 0) + u[i];
  }
  function micros(us) {
    if (us == null) return '–';
    if (us < 1000) return Math.round(us) + ' µs';
    if (us < 1e6) return (us / 1000).toFixed(us < 10000 ? 2 : 1) + ' ms';
    return (us / 1e6).toFixed(2) + ' s';
  }
  const pct = (x) => (x * 100 < 0.1 && x > 0 ? '< 0.1' : (x * 100).toFixed(x * 100 < 10 ? 1 : 0)) + ' %';
  function utc(t) {
    if (!t) return '–';
    const d = new Date(t);
    if (isNaN(d)) return t;
    return d.toISOString().slice(0, 19).replace('T', ' ');
  }
  const hhmmss = (t) => { const d = new Date(t); return isNaN(d) ? String(t) : d.toISOString().slice(11, 19); };
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
  const isoNoMs = (d) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');

  // ---- Labels -----------------------------------------------------------------------
  function shortName(id) {
    const m = /^spiffe:\/\/([^/]+)(\/.*)?$/.exec(id);
    if (!m) return id;
    const path = (m[2] || '').split('/').filter(Boolean);
    if (!path.length) return m[1];
    const k = /(?:^|\/)ns\/([^/]+)\/sa\/([^/]+)$/.exec(m[2]);
    if (k) return k[2] + ' · ' + k[1];
    return path[path.length - 1];
  }
  function labelOf(n) {
    if (n.kind === 'unattributed') return 'unattributed ' + n.id.replace(/^unattributed:/, '');
    if (n.kind === 'other' && n.id === 'other') return 'other (folded)';
    return n.short;
  }

  // ---- Loading ----------------------------------------------------------------------
  function rangeParams() {
    if (state.range === 'custom') {
      return { from: new Date(state.from + 'Z'), to: new Date(state.to + 'Z') };
    }
    const to = new Date();
    return { from: new Date(to.getTime() - RANGES[state.range] * 60000), to };
  }

  async function load() {
    const seq = ++loadSeq;
    window.__graph = { rendered: false, loads: (window.__graph.loads || 0) };
    const t0 = performance.now();
    const { from, to } = rangeParams();
    if (isNaN(from) || isNaN(to) || from >= to) {
      return showError('The range is empty: "from" must come before "to".');
    }
    const p = new URLSearchParams({ from: isoNoMs(from), to: isoNoMs(to) });
    const workload = state.workload; // the answer's server-side filter
    if (workload) p.set('workload', workload);
    svg.setAttribute('aria-busy', 'true');
    let json;
    try {
      const r = await fetch('api/v1/graph?' + p.toString(), { headers: { accept: 'application/json' } });
      const text = await r.text();
      if (!r.ok) throw new Error('The collector answered ' + r.status + ': ' + text.trim());
      json = JSON.parse(text);
    } catch (e) {
      if (seq === loadSeq) showError(e.message || String(e));
      return;
    }
    if (seq !== loadSeq) return; // a newer load is under way
    const t1 = performance.now();
    try {
      await render(json, { t0, t1, workload }, seq);
    } catch (e) {
      showError('Could not draw the graph: ' + (e && e.message));
      throw e;
    }
  }

  function showError(msg) {
    const m = $('message');
    m.hidden = false;
    m.className = 'message error';
    m.textContent = msg;
    svg.removeAttribute('aria-busy');
    window.__graph = { rendered: false, error: msg, loads: (window.__graph.loads || 0) + 1 };
  }

  // ---- Indexing ---------------------------------------------------------------------
  function index(json) {
    const nodes = (json.nodes || []).map((n) => Object.assign({}, n));
    const byId = new Map(nodes.map((n) => [n.id, n]));
    const edges = (json.edges || []).map((e) => Object.assign({}, e));
    for (const e of edges) {
      for (const id of [e.source, e.target]) {
        if (!byId.has(id)) {
          const kind = id.startsWith('unattributed:') ? 'unattributed' : id === 'other' ? 'other' : 'workload';
          const n = { id, kind, connections_in: 0, connections_out: 0, bytes_in: 0, bytes_out: 0, failed: 0 };
          nodes.push(n);
          byId.set(id, n);
        }
      }
    }
    // Short labels; two workloads with the same short name get their whole IDs.
    const seen = new Map();
    for (const n of nodes) {
      // A workload whose ID reads as another kind's comes as `workload:<id>`.
      n.name = n.kind === 'workload' && n.id.startsWith('workload:') ? n.id.slice(9) : n.id;
      n.short = n.kind === 'unattributed' ? n.id : shortName(n.name);
      seen.set(n.short, (seen.get(n.short) || 0) + 1);
    }
    for (const n of nodes) {
      if (n.kind !== 'unattributed' && seen.get(n.short) > 1) n.short = n.name.replace(/^spiffe:\/\//, '');
      n.label = labelOf(n);
      n.search = (n.id + ' ' + n.label).toLowerCase();
      n.edgesOut = [];
      n.edgesIn = [];
    }
    const edgeById = new Map();
    for (const e of edges) {
      e.failed_total = e.failed_total || 0;
      e.connections = e.connections || 0;
      e.share = e.connections > 0 ? e.failed_total / e.connections : e.failed_total > 0 ? 1 : 0;
      e.bytes = (e.bytes_sent || 0) + (e.bytes_received || 0);
      e.s = byId.get(e.source);
      e.t = byId.get(e.target);
      e.s.edgesOut.push(e);
      e.t.edgesIn.push(e);
      edgeById.set(String(e.id), e);
    }
    for (const n of nodes) {
      n.conns = (n.connections_in || 0) + (n.connections_out || 0);
      n.bytes = (n.bytes_in || 0) + (n.bytes_out || 0);
    }
    return { json, nodes, edges, byId, edgeById };
  }

  // ---- Layout: a force simulation, run to the end before anything is drawn ---------
  // The model of d3-force (velocity Verlet, alpha cooling from 1 to 0.001, velocity
  // decay 0.6): links pull their ends to a distance, nodes repel each other and do not
  // overlap, and a weak pull holds each node near its column.
  //
  // Up to EXACT_MAX nodes every pair is computed exactly (typed arrays: for a few
  // hundred nodes this is faster than a tree). Above, the repulsion is Barnes-Hut's (a
  // quadtree; a far cell acts as one body at its centre of mass: theta 1.2, THETA2 below), and
  // the overlap test looks only at the nodes of the neighbouring cells of a grid
  // (cells as wide as the largest overlap distance): O(n log n) per step, not O(n²).
  // The simulation is a generator: it yields after each step, so that the caller can
  // give the browser its event loop (the tab stays responsive), and it keeps to a
  // time budget: when its steps would take longer than `budgetMs` (a large graph on a
  // slow or busy machine), it cools faster, in fewer steps.
  const EXACT_MAX = 300;
  const THETA2 = 1.44; // theta 1.2 (coarser than d3's 0.9: fewer cells opened)
  const ALPHA_MIN = 0.001;
  const MIN_TICKS = 40;
  // Two nodes overlap when closer than their radii and twice this margin; each is
  // then pushed apart by this share of the overlap (both layouts use these).
  const OVERLAP_MARGIN = 14;
  const OVERLAP_PUSH = 0.35;
  // The push of an overlap `rr - l` (l > 0), per unit of the distance vector.
  function overlapPush(l, rr) { return ((rr - l) / l) * OVERLAP_PUSH; }

  function* simulate(n, r, col, links, init, ticks, budgetMs) {
    const x = new Float64Array(n);
    const y = new Float64Array(n);
    const vx = new Float64Array(n);
    const vy = new Float64Array(n);
    const golden = Math.PI * (3 - Math.sqrt(5));
    for (let i = 0; i < n; i++) {
      if (init[i]) { x[i] = init[i].x; y[i] = init[i].y; continue; }
      const rad = 12 * Math.sqrt(0.5 + i);
      x[i] = col[i] + rad * Math.cos(i * golden);
      y[i] = rad * Math.sin(i * golden);
    }
    const m = links.length >> 1;
    const count = new Float64Array(n);
    for (let k = 0; k < m; k++) { count[links[2 * k]]++; count[links[2 * k + 1]]++; }
    const lstr = new Float64Array(m);
    const lbias = new Float64Array(m);
    const ldist = new Float64Array(m);
    for (let k = 0; k < m; k++) {
      const a = links[2 * k];
      const b = links[2 * k + 1];
      lstr[k] = 1 / Math.min(count[a], count[b]);
      lbias[k] = count[a] / (count[a] + count[b]);
      ldist[k] = 46 + r[a] + r[b];
    }
    const warm = init.some(Boolean);
    let alpha = warm ? 0.3 : 1;
    const charge = n > 120 ? -300 : -380;
    const dmax2 = 1000 * 1000;
    const gx = 0.08;
    const gy = n > 1 ? 0.07 : 0.3;
    const many = n > EXACT_MAX ? manyBody(n, x, y, vx, vy, r, dmax2) : null;
    let end = ticks;
    let busy = 0; // ms spent in the steps themselves (not in what ran between them)
    let pace = 0; // ms per step, recent steps weigh most (the first ones warm the JIT up)
    for (let t = 0; t < end; t++) {
      const t0 = performance.now();
      alpha *= Math.pow(ALPHA_MIN / alpha, 1 / (end - t));
      for (let k = 0; k < m; k++) {
        const s = links[2 * k];
        const q = links[2 * k + 1];
        let dx = x[q] + vx[q] - x[s] - vx[s];
        let dy = y[q] + vy[q] - y[s] - vy[s];
        if (dx === 0 && dy === 0) { dx = 1e-3 * ((k % 7) - 3); dy = 1e-3; }
        let l = Math.sqrt(dx * dx + dy * dy);
        l = ((l - ldist[k]) / l) * alpha * lstr[k];
        dx *= l;
        dy *= l;
        vx[q] -= dx * lbias[k];
        vy[q] -= dy * lbias[k];
        vx[s] += dx * (1 - lbias[k]);
        vy[s] += dy * (1 - lbias[k]);
      }
      const ca = charge * alpha;
      if (many) {
        many.charge(ca);
        many.collide();
      } else {
        for (let i = 0; i < n; i++) {
          const xi = x[i];
          const yi = y[i];
          const ri = r[i] + OVERLAP_MARGIN;
          let ax = 0;
          let ay = 0;
          for (let j = i + 1; j < n; j++) {
            let dx = x[j] - xi;
            let dy = y[j] - yi;
            let l2 = dx * dx + dy * dy;
            if (l2 === 0) { dx = (j - i) * 1e-3; dy = 1e-3; l2 = dx * dx + dy * dy; }
            if (l2 < dmax2) {
              const w = ca / Math.max(l2, 1);
              ax += dx * w;
              ay += dy * w;
              vx[j] -= dx * w;
              vy[j] -= dy * w;
            }
            const rr = ri + r[j] + OVERLAP_MARGIN;
            if (l2 < rr * rr) {
              const push = overlapPush(Math.sqrt(l2), rr);
              vx[j] += dx * push;
              vy[j] += dy * push;
              ax -= dx * push;
              ay -= dy * push;
            }
          }
          vx[i] += ax;
          vy[i] += ay;
        }
      }
      for (let i = 0; i < n; i++) {
        vx[i] += (col[i] - x[i]) * gx * alpha;
        vy[i] += -y[i] * gy * alpha;
        x[i] += (vx[i] *= 0.6);
        y[i] += (vy[i] *= 0.6);
      }
      const spent = performance.now() - t0;
      busy += spent;
      pace = t === 0 ? spent : 0.7 * pace + 0.3 * spent;
      // The time budget: as many steps as fit in what is left of it at the recent pace,
      // up to `ticks` and never fewer than MIN_TICKS in all (the picture would not
      // have settled).
      if (budgetMs && t >= 2) {
        const left = Math.floor((budgetMs - busy) / pace);
        end = Math.max(Math.min(ticks, t + 1 + Math.max(left, 0)), Math.min(ticks, MIN_TICKS));
      }
      yield t;
    }
    return { x, y, ticks: end, busy };
  }

  // Repulsion (Barnes-Hut) and overlap (a grid) for many nodes: see simulate().
  function manyBody(n, x, y, vx, vy, r, dmax2) {
    // The quadtree, rebuilt at each step: a cell holds its points idx[lo, hi) (sorted
    // into its quadrants when it is split); a leaf holds at most LEAF of them.
    const LEAF = 8;
    const MAX_DEPTH = 24;
    let cap = n + 64;
    let qLo = new Int32Array(cap);
    let qHi = new Int32Array(cap);
    let qKids = new Int32Array(cap); // the first child (its quadrants follow), -1: a leaf
    let qNk = new Uint8Array(cap); // how many children
    let qS = new Float64Array(cap); // width
    let qM = new Float64Array(cap); // points under it
    let qX = new Float64Array(cap); // their centre
    let qY = new Float64Array(cap);
    let nq = 0;
    const idx = new Int32Array(n);
    const tmp = new Int32Array(n);
    const quadOf = new Uint8Array(n);
    const stack = new Int32Array(4 * MAX_DEPTH + 8);
    function alloc(k) {
      while (nq + k > cap) {
        const grow = (a) => { const b = new a.constructor(2 * cap); b.set(a); return b; };
        qLo = grow(qLo); qHi = grow(qHi); qKids = grow(qKids); qNk = grow(qNk);
        qS = grow(qS); qM = grow(qM); qX = grow(qX); qY = grow(qY);
        cap *= 2;
      }
      const q = nq;
      nq += k;
      return q;
    }
    // Fills cell q (points idx[lo, hi), square x0, y0, s) and its subtree.
    function fill(q, lo, hi, x0, y0, s, depth) {
      qLo[q] = lo; qHi[q] = hi; qS[q] = s; qKids[q] = -1; qNk[q] = 0;
      let sx = 0; let sy = 0;
      for (let k = lo; k < hi; k++) { sx += x[idx[k]]; sy += y[idx[k]]; }
      qM[q] = hi - lo; qX[q] = sx / (hi - lo); qY[q] = sy / (hi - lo);
      if (hi - lo <= LEAF || depth >= MAX_DEPTH) return;
      const h = s / 2;
      const mx = x0 + h;
      const my = y0 + h;
      let c0 = 0; let c1 = 0; let c2 = 0; let c3 = 0;
      for (let k = lo; k < hi; k++) {
        const i = idx[k];
        const c = (x[i] >= mx ? 1 : 0) | (y[i] >= my ? 2 : 0);
        quadOf[i] = c;
        if (c === 0) c0++; else if (c === 1) c1++; else if (c === 2) c2++; else c3++;
      }
      if (c0 === hi - lo || c1 === hi - lo || c2 === hi - lo || c3 === hi - lo) {
        // One quadrant holds them all: descend without a cell for the empty ones.
        const c = quadOf[idx[lo]];
        return fillSame(q, lo, hi, c & 1 ? mx : x0, c & 2 ? my : y0, h, depth + 1);
      }
      const at = [lo, lo + c0, lo + c0 + c1, lo + c0 + c1 + c2];
      const end = [lo + c0, lo + c0 + c1, lo + c0 + c1 + c2, hi];
      const put = at.slice();
      for (let k = lo; k < hi; k++) { const i = idx[k]; tmp[put[quadOf[i]]++] = i; }
      for (let k = lo; k < hi; k++) idx[k] = tmp[k];
      let nk = 0;
      for (let c = 0; c < 4; c++) if (end[c] > at[c]) nk++;
      const first = alloc(nk);
      qKids[q] = first;
      qNk[q] = nk;
      let kq = first;
      for (let c = 0; c < 4; c++) {
        if (end[c] > at[c]) fill(kq++, at[c], end[c], c & 1 ? mx : x0, c & 2 ? my : y0, h, depth + 1);
      }
    }
    // The same points in a smaller square: cell q stays (its mass is already right),
    // with one child.
    function fillSame(q, lo, hi, x0, y0, s, depth) {
      const c = alloc(1);
      qKids[q] = c;
      qNk[q] = 1;
      fill(c, lo, hi, x0, y0, s, depth);
    }
    function build() {
      let x0 = Infinity; let y0 = Infinity; let x1 = -Infinity; let y1 = -Infinity;
      for (let i = 0; i < n; i++) {
        idx[i] = i;
        if (x[i] < x0) x0 = x[i]; if (x[i] > x1) x1 = x[i];
        if (y[i] < y0) y0 = y[i]; if (y[i] > y1) y1 = y[i];
      }
      nq = 0;
      fill(alloc(1), 0, n, x0, y0, Math.max(x1 - x0, y1 - y0) + 1, 0);
    }
    function charge(ca) {
      if (n < 2) return;
      build();
      for (let i = 0; i < n; i++) {
        const xi = x[i];
        const yi = y[i];
        let ax = 0;
        let ay = 0;
        let sp = 0;
        stack[sp++] = 0;
        while (sp) {
          const q = stack[--sp];
          const dx = qX[q] - xi;
          const dy = qY[q] - yi;
          const l2 = dx * dx + dy * dy;
          const w = qS[q];
          if (w * w < THETA2 * l2) {
            // Far enough: the cell as one body.
            if (l2 < dmax2) { const f = (ca * qM[q]) / l2; ax += dx * f; ay += dy * f; }
            continue;
          }
          const kids = qKids[q];
          if (kids >= 0) {
            for (let k = kids + qNk[q] - 1; k >= kids; k--) stack[sp++] = k;
            continue;
          }
          for (let k = qLo[q], e = qHi[q]; k < e; k++) {
            const p = idx[k];
            if (p === i) continue;
            let ddx = x[p] - xi;
            let ddy = y[p] - yi;
            let d2 = ddx * ddx + ddy * ddy;
            if (d2 === 0) { ddx = (p - i) * 1e-3; ddy = 1e-3; d2 = ddx * ddx + ddy * ddy; }
            if (d2 < dmax2) { const f = ca / Math.max(d2, 1); ax += ddx * f; ay += ddy * f; }
          }
        }
        vx[i] += ax;
        vy[i] += ay;
      }
    }
    // The overlap: the pairs closer than their radii and 2 OVERLAP_MARGIN, from a grid.
    let rmax = 0;
    for (let i = 0; i < n; i++) if (r[i] > rmax) rmax = r[i];
    const order = new Int32Array(n);
    const cellOf = new Int32Array(n);
    const maxCells = 4 * n + 16;
    const start = new Int32Array(maxCells + 1);
    function collide() {
      let x0 = Infinity; let y0 = Infinity; let x1 = -Infinity; let y1 = -Infinity;
      for (let i = 0; i < n; i++) {
        if (x[i] < x0) x0 = x[i]; if (x[i] > x1) x1 = x[i];
        if (y[i] < y0) y0 = y[i]; if (y[i] > y1) y1 = y[i];
      }
      let cell = 2 * (rmax + OVERLAP_MARGIN);
      // Few cells when the nodes are spread far apart (wider cells: more to compare).
      while (Math.floor((x1 - x0) / cell + 1) * Math.floor((y1 - y0) / cell + 1) > maxCells) cell *= 2;
      const nx = Math.floor((x1 - x0) / cell) + 1;
      const ny = Math.floor((y1 - y0) / cell) + 1;
      const cells = nx * ny;
      start.fill(0, 0, cells + 1);
      for (let i = 0; i < n; i++) {
        const c = Math.floor((x[i] - x0) / cell) + nx * Math.floor((y[i] - y0) / cell);
        cellOf[i] = c;
        start[c + 1]++;
      }
      for (let c = 0; c < cells; c++) start[c + 1] += start[c];
      const fill = start.slice(0, cells);
      for (let i = 0; i < n; i++) order[fill[cellOf[i]]++] = i;
      // Each pair once: a cell with itself, and with its right, lower-left, lower and
      // lower-right neighbours.
      for (let cy = 0; cy < ny; cy++) {
        for (let cx = 0; cx < nx; cx++) {
          const c = cx + nx * cy;
          const e = start[c + 1];
          for (let ka = start[c]; ka < e; ka++) {
            const i = order[ka];
            pairs(i, ka + 1, e);
            if (cx + 1 < nx) pairs(i, start[c + 1], start[c + 2]);
            if (cy + 1 < ny) {
              const d = c + nx;
              pairs(i, start[cx > 0 ? d - 1 : d], start[cx + 1 < nx ? d + 2 : d + 1]);
            }
          }
        }
      }
    }
    // Node i against the nodes order[k0, k1).
    function pairs(i, k0, k1) {
      const xi = x[i];
      const yi = y[i];
      const ri = r[i] + OVERLAP_MARGIN;
      let ax = 0;
      let ay = 0;
      for (let k = k0; k < k1; k++) {
        const j = order[k];
        let dx = x[j] - xi;
        let dy = y[j] - yi;
        let l2 = dx * dx + dy * dy;
        const rr = ri + r[j] + OVERLAP_MARGIN;
        if (l2 >= rr * rr) continue;
        if (l2 === 0) { dx = (j - i) * 1e-3; dy = 1e-3; l2 = dx * dx + dy * dy; }
        const push = overlapPush(Math.sqrt(l2), rr);
        vx[j] += dx * push;
        vy[j] += dy * push;
        ax -= dx * push;
        ay -= dy * push;
      }
      vx[i] += ax;
      vy[i] += ay;
    }
    return { charge, collide };
  }

  // Gives the browser its event loop (input, paint) between slices of work.
  const yieldTask = (() => {
    const ch = new MessageChannel();
    const waiting = [];
    ch.port1.onmessage = () => { const f = waiting.shift(); if (f) f(); };
    return () => new Promise((resolve) => { waiting.push(resolve); ch.port2.postMessage(0); });
  })();
  const SLICE_MS = 30;
  const LAYOUT_BUDGET_MS = 600;

  // Lays the graph out; false when a newer load made it moot.
  async function layout(d, seq) {
    const nodes = d.nodes;
    const n = nodes.length;
    const maxConns = nodes.reduce((a, x) => Math.max(a, x.conns), 1);
    nodes.forEach((x, i) => { x.r = 7 + 13 * Math.sqrt(x.conns / maxConns); x.i = i; });
    // Clients drift left, servers right: the arrows read left to right.
    const spread = 60 + 30 * Math.sqrt(n);
    const r = new Float64Array(n);
    const col = new Float64Array(n);
    for (const x of nodes) {
      const out = x.edgesOut.reduce((a, e) => a + e.connections + 1, 0);
      const inn = x.edgesIn.reduce((a, e) => a + e.connections + 1, 0);
      r[x.i] = x.r;
      col[x.i] = out + inn > 0 ? (-(out - inn) / (out + inn)) * spread : 0;
    }
    const seen = new Set();
    const links = [];
    for (const e of d.edges) {
      const a = e.s.i;
      const b = e.t.i;
      const key = a < b ? a * n + b : b * n + a;
      if (a !== b && !seen.has(key)) { seen.add(key); links.push(a, b); }
    }
    const init = nodes.map((x) => positions.get(x.id));
    const sim = simulate(n, r, col, links, init, n > 400 ? 200 : 300, LAYOUT_BUDGET_MS);
    let slice = performance.now();
    let step;
    for (;;) {
      step = sim.next();
      if (step.done) break;
      if (performance.now() - slice > SLICE_MS) {
        await yieldTask();
        if (seq !== loadSeq) return false;
        slice = performance.now();
      }
    }
    const p = step.value;
    d.ticks = p.ticks;
    for (const x of nodes) {
      x.x = p.x[x.i];
      x.y = p.y[x.i];
    }
    return true;
  }

  // ---- Drawing ----------------------------------------------------------------------
  function metricOf(e) { return state.metric === 'bytes' ? e.bytes : e.connections; }
  function nodeMetric(x) { return state.metric === 'bytes' ? x.bytes : x.conns; }

  function edgeWidth(e, max) {
    const w = 1.2 + 7 * Math.sqrt(metricOf(e) / max);
    return e.failed_total > 0 ? Math.max(w, 2 + 3 * e.share) : w;
  }

  function geometry(d) {
    // Parallel edges (other ports, or the other direction) bend apart.
    const groups = new Map();
    for (const e of d.edges) {
      const key = e.source + '\u0000' + e.target;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(e);
    }
    for (const list of groups.values()) {
      list.sort((a, b) => (a.port || 0) - (b.port || 0));
      list.forEach((e, i) => { e.bend = 0.1 + 0.14 * i; });
    }
    for (const e of d.edges) e.path = edgePath(e);
  }

  function edgePath(e) {
    const s = e.s;
    const t = e.t;
    if (s === t) {
      // A workload connecting to itself: a loop above it.
      const r = s.r;
      e.pts = quadPoints(s.x - r * 0.6, s.y - r * 0.8, s.x, s.y - r * 3.6, s.x + r * 0.75, s.y - r * 1.55);
      return `M${(s.x - r * 0.6).toFixed(1)},${(s.y - r * 0.8).toFixed(1)}C${(s.x - r * 2.2).toFixed(1)},${(s.y - r * 3.4).toFixed(1)} ${(s.x + r * 2.2).toFixed(1)},${(s.y - r * 3.4).toFixed(1)} ${(s.x + r * 0.75).toFixed(1)},${(s.y - r * 1.55).toFixed(1)}`;
    }
    const dx = t.x - s.x;
    const dy = t.y - s.y;
    const len = Math.hypot(dx, dy) || 1;
    // The control point: off the middle, to the left of the direction of travel.
    const cx = (s.x + t.x) / 2 + dy * e.bend;
    const cy = (s.y + t.y) / 2 - dx * e.bend;
    const a = unit(cx - s.x, cy - s.y, dx / len, dy / len);
    const b = unit(t.x - cx, t.y - cy, dx / len, dy / len);
    const sx = s.x + a[0] * (s.r + 2);
    const sy = s.y + a[1] * (s.r + 2);
    const back = t.r + 2 + 9; // the arrow head (9) sits between the line's end and the node
    const tx = t.x - b[0] * back;
    const ty = t.y - b[1] * back;
    e.pts = quadPoints(sx, sy, cx, cy, t.x - b[0] * (t.r + 2), t.y - b[1] * (t.r + 2));
    return `M${sx.toFixed(1)},${sy.toFixed(1)}Q${cx.toFixed(1)},${cy.toFixed(1)} ${tx.toFixed(1)},${ty.toFixed(1)}`;
  }
  const SAMPLES = 12;
  function quadPoints(x0, y0, cx, cy, x1, y1) {
    const p = new Float64Array(2 * (SAMPLES + 1));
    for (let i = 0; i <= SAMPLES; i++) {
      const t = i / SAMPLES;
      const u = 1 - t;
      p[2 * i] = u * u * x0 + 2 * u * t * cx + t * t * x1;
      p[2 * i + 1] = u * u * y0 + 2 * u * t * cy + t * t * y1;
    }
    return p;
  }
  // The edge drawn nearest to a point of the window (within a few pixels), or null:
  // thin arrows are hard to hit exactly.
  function edgeAt(clientX, clientY) {
    if (!data) return null;
    const rect = svg.getBoundingClientRect();
    const wx = (clientX - rect.left - view.x) / view.k;
    const wy = (clientY - rect.top - view.y) / view.k;
    const max = Math.max(1, ...data.edges.map(metricOf));
    let best = null;
    let bestD = Infinity;
    for (const e of data.edges) {
      if (e.hidden || !e.pts) continue;
      const p = e.pts;
      const reach = (6 + edgeWidth(e, max) / 2) / view.k;
      for (let i = 0; i < SAMPLES; i++) {
        const d = segDist(wx, wy, p[2 * i], p[2 * i + 1], p[2 * i + 2], p[2 * i + 3]);
        if (d <= reach && d < bestD) { bestD = d; best = e; }
      }
    }
    return best;
  }
  function segDist(px, py, ax, ay, bx, by) {
    const dx = bx - ax;
    const dy = by - ay;
    const l2 = dx * dx + dy * dy;
    let t = l2 > 0 ? ((px - ax) * dx + (py - ay) * dy) / l2 : 0;
    t = Math.max(0, Math.min(1, t));
    return Math.hypot(px - ax - t * dx, py - ay - t * dy);
  }
  window.__graphEdgeAt = (x, y) => { const e = edgeAt(x, y); return e ? String(e.id) : null; };
  function unit(x, y, fx, fy) {
    const l = Math.hypot(x, y);
    return l > 1e-6 ? [x / l, y / l] : [fx, fy];
  }

  // Into `into` (a detached <g> while a new graph is drawn: see render()).
  function drawEdges(d, into) {
    const max = Math.max(1, ...d.edges.map(metricOf));
    let html = '';
    // Failed edges last: on top.
    const order = d.edges.slice().sort((a, b) => (a.failed_total > 0) - (b.failed_total > 0) || metricOf(a) - metricOf(b));
    for (const e of order) {
      const failed = e.failed_total > 0;
      const cls = 'edge' + (failed ? ' failed' : '') + (failed && e.share >= 0.5 ? ' mostly' : '');
      const w = edgeWidth(e, max).toFixed(2);
      const marker = failed ? 'arrow-fail' : 'arrow';
      html += `<path class="${cls}" d="${e.path}" style="stroke-width:${w}px" marker-end="url(#${marker})" data-edge-id="${esc(e.id)}" data-source="${esc(e.source)}" data-target="${esc(e.target)}" data-port="${esc(e.port)}" data-connections="${e.connections}" data-failed="${e.failed_total}" data-bytes="${e.bytes}"/>`;
    }
    into.innerHTML = html;
    for (const el of into.children) {
      const e = d.edgeById.get(el.getAttribute('data-edge-id'));
      e.el = el;
      e.line = el;
    }
  }

  // Above LAZY_LABELS nodes, the labels hidden until zoomed in (all but the 40 busiest
  // nodes') are made when first needed (zoom, filter, hover): thousands of <text>
  // elements nobody sees would cost a large graph's draw a few hundred ms.
  const LAZY_LABELS = 1000;
  function labelMarkup(x) {
    const cls = `label ${esc(x.kind)}${x.major ? '' : ' minor'}${x.hidden ? ' hidden' : ''}${x.match ? ' match' : ''}${x.force ? ' force' : ''}`;
    return `<text class="${cls}" data-label-for="${esc(x.id)}" x="${x.x.toFixed(1)}" y="${(x.y + x.r).toFixed(1)}" dy="1.15em">${esc(x.label)}</text>`;
  }
  function drawNodes(d, intoNodes, intoLabels) {
    let html = '';
    let labels = '';
    // The busiest nodes keep their labels when zoomed out; the others show on zoom.
    const ranked = d.nodes.slice().sort((a, b) => nodeMetric(b) - nodeMetric(a));
    const major = new Set(ranked.slice(0, d.nodes.length <= 60 ? d.nodes.length : 40).map((x) => x.id));
    const lazy = d.nodes.length > LAZY_LABELS;
    const labelled = [];
    for (const x of d.nodes) {
      const cls = 'node ' + esc(x.kind) + (x.failed > 0 ? ' has-failed' : '');
      const shape = x.kind === 'other'
        ? `<rect class="${cls}" x="${(x.x - x.r).toFixed(1)}" y="${(x.y - x.r).toFixed(1)}" width="${(2 * x.r).toFixed(1)}" height="${(2 * x.r).toFixed(1)}" rx="${(x.r * 0.35).toFixed(1)}"/>`
        : `<circle class="${cls}" cx="${x.x.toFixed(1)}" cy="${x.y.toFixed(1)}" r="${x.r.toFixed(1)}"/>`;
      html += `<g class="node-group" data-node-id="${esc(x.id)}" data-kind="${esc(x.kind)}" data-label="${esc(x.label)}">${shape}</g>`;
      x.major = major.has(x.id);
      x.labelEl = null;
      if (!lazy || x.major) { labels += labelMarkup(x); labelled.push(x); }
    }
    intoNodes.innerHTML = html;
    intoLabels.innerHTML = labels;
    const groups = intoNodes.children;
    const texts = intoLabels.children;
    for (let i = 0; i < d.nodes.length; i++) d.nodes[i].el = groups[i];
    labelled.forEach((x, i) => { x.labelEl = texts[i]; });
    d.lazyLabels = labelled.length < d.nodes.length;
  }
  // Makes the labels of `list` not made yet (see LAZY_LABELS).
  function ensureLabels(list) {
    if (!data || !data.lazyLabels) return;
    const missing = list.filter((x) => !x.labelEl);
    if (missing.length) {
      gLabels.insertAdjacentHTML('beforeend', missing.map(labelMarkup).join(''));
      const texts = gLabels.children;
      const base = texts.length - missing.length;
      missing.forEach((x, i) => { x.labelEl = texts[base + i]; });
    }
    if (list === data.nodes) data.lazyLabels = false;
  }

  async function render(json, t, seq) {
    const t1 = t.t1;
    const d = index(json);
    d.workload = t.workload;
    // The graph shown stays as it is (and answers clicks) until the new one is laid out.
    const m = $('message');
    if (d.nodes.length > 1000) {
      m.hidden = false;
      m.className = 'message';
      m.textContent = `Laying out ${num(d.nodes.length)} nodes and ${num(d.edges.length)} edges…`;
    }
    const tl = performance.now();
    if (!(await layout(d, seq))) return; // a newer load is under way
    const t2 = performance.now();
    // The new graph's elements are made off the page, edges and nodes each in a task of
    // its own (a large graph's take a few hundred ms), then put in at once.
    geometry(d);
    const made = [gEdges, gNodes, gLabels].map(() => document.createElementNS(svg.namespaceURI, 'g'));
    drawEdges(d, made[0]);
    if (d.nodes.length > 1000) { await yieldTask(); if (seq !== loadSeq) return; }
    drawNodes(d, made[1], made[2]);
    if (d.nodes.length > 1000) { await yieldTask(); if (seq !== loadSeq) return; }
    data = d;
    for (const x of data.nodes) positions.set(x.id, { x: x.x, y: x.y });
    m.hidden = true;
    // The workload IDs, for the search box's suggestions.
    $('workload-ids').innerHTML = data.nodes
      .filter((x) => x.kind === 'workload')
      .map((x) => `<option value="${esc(x.id)}">`)
      .join('');
    // The stage's size, read before the new graph is in it (else reading it would lay
    // out 2,000 fresh paths twice).
    stageSize = { w: svg.clientWidth || 800, h: svg.clientHeight || 600 };
    svg.classList.toggle('dense', data.edges.length > 300);
    hovered = null;
    [gEdges, gNodes, gLabels].forEach((g, i) => g.replaceChildren(...made[i].childNodes));
    const keep = selected && (selected.type === 'node' ? data.byId.has(selected.id) : data.edgeById.has(selected.id));
    selected = keep ? selected : null;
    applyFilter();
    fit(false);
    renderPanel();
    renderFooter();
    renderSummary();
    svg.removeAttribute('aria-busy');
    svg.getBoundingClientRect(); // style and layout now, so that draw_ms has them
    const t3 = performance.now();
    if (!data.nodes.length) {
      m.hidden = false;
      m.className = 'message';
      m.textContent = state.workload
        ? `No flows of ${state.workload} from ${utc(json.from)} to ${utc(json.to)} UTC.`
        : `No flows from ${utc(json.from)} to ${utc(json.to)} UTC.`;
    }
    // Painted: the frame after the next animation frame.
    requestAnimationFrame(() => requestAnimationFrame(() => {
      const now = performance.now();
      const loads = (window.__graph.loads || 0) + 1;
      window.__graph = {
        rendered: true,
        loads,
        ms: Math.round(now), // since the navigation started: load, fetch, layout, draw, paint
        render_ms: Math.round(now - t1), // from the answer to the painted graph
        layout_ms: Math.round(t2 - tl), // with the other tasks the page let run meanwhile
        layout_ticks: data.ticks,
        draw_ms: Math.round(t3 - t2), // the SVG built, styled and laid out by the browser
        fetch_ms: Math.round(t1 - t.t0),
        nodes: data.nodes.length,
        edges: data.edges.length,
      };
      document.body.dataset.loads = String(loads);
    }));
  }

  // ---- Zoom and pan -----------------------------------------------------------------
  function applyView() {
    viewport.setAttribute('transform', `translate(${view.x.toFixed(1)},${view.y.toFixed(1)}) scale(${view.k.toFixed(4)})`);
    // Labels keep their size on screen.
    svg.style.setProperty('--label-size', (12 / view.k).toFixed(2) + 'px');
    svg.classList.toggle('zoomed-out', !!data && view.k < 1.3 && data.nodes.length > 60);
    if (data && data.lazyLabels && view.k >= 1.3) ensureLabels(data.nodes); // every label shows
  }
  function fit(onlyVisible) {
    if (!data || !data.nodes.length) { view = { x: 0, y: 0, k: 1 }; applyView(); return; }
    const list = onlyVisible ? data.nodes.filter((x) => !x.hidden) : data.nodes;
    if (!list.length) return;
    let x0 = Infinity; let y0 = Infinity; let x1 = -Infinity; let y1 = -Infinity;
    for (const x of list) {
      x0 = Math.min(x0, x.x - x.r); x1 = Math.max(x1, x.x + x.r);
      y0 = Math.min(y0, x.y - x.r); y1 = Math.max(y1, x.y + x.r + 18);
    }
    const w = stageSize.w;
    const h = stageSize.h;
    const pad = 40;
    const k = Math.min(2.2, (w - 2 * pad) / Math.max(1, x1 - x0), (h - 2 * pad - 30) / Math.max(1, y1 - y0));
    view = { k, x: w / 2 - k * (x0 + x1) / 2, y: h / 2 + 10 - k * (y0 + y1) / 2 };
    applyView();
  }
  function zoomAt(factor, px, py) {
    const k = Math.max(0.05, Math.min(12, view.k * factor));
    view.x = px - (px - view.x) * (k / view.k);
    view.y = py - (py - view.y) * (k / view.k);
    view.k = k;
    applyView();
  }
  svg.addEventListener('wheel', (ev) => {
    ev.preventDefault();
    const r = svg.getBoundingClientRect();
    zoomAt(Math.exp(-ev.deltaY * (ev.deltaMode === 1 ? 0.05 : 0.0015)), ev.clientX - r.left, ev.clientY - r.top);
  }, { passive: false });
  let drag = null;
  svg.addEventListener('pointerdown', (ev) => {
    if (ev.button !== 0) return;
    drag = { x: ev.clientX, y: ev.clientY, vx: view.x, vy: view.y, moved: false };
  });
  window.addEventListener('pointermove', (ev) => {
    if (!drag) return;
    const dx = ev.clientX - drag.x;
    const dy = ev.clientY - drag.y;
    if (!drag.moved && Math.hypot(dx, dy) < 4) return;
    drag.moved = true;
    svg.classList.add('panning');
    view.x = drag.vx + dx;
    view.y = drag.vy + dy;
    applyView();
  });
  window.addEventListener('pointerup', () => {
    if (drag && drag.moved) svg.dataset.justPanned = '1';
    drag = null;
    svg.classList.remove('panning');
  });
  $('zoom-in').onclick = () => zoomAt(1.4, stageSize.w / 2, stageSize.h / 2);
  $('zoom-out').onclick = () => zoomAt(1 / 1.4, stageSize.w / 2, stageSize.h / 2);
  $('zoom-fit').onclick = () => fit(!!state.q);
  window.addEventListener('resize', () => {
    stageSize = { w: svg.clientWidth || 800, h: svg.clientHeight || 600 };
    fit(!!state.q);
  });

  // ---- Selection, hover, focus ------------------------------------------------------
  svg.addEventListener('click', (ev) => {
    if (svg.dataset.justPanned) { delete svg.dataset.justPanned; return; }
    const n = ev.target.closest('[data-node-id]');
    const el = ev.target.closest('[data-edge-id]');
    const e = n ? null : el ? data.edgeById.get(el.getAttribute('data-edge-id')) : edgeAt(ev.clientX, ev.clientY);
    if (n) select({ type: 'node', id: n.getAttribute('data-node-id') });
    else if (e) select({ type: 'edge', id: String(e.id) });
    else select(null);
  });
  let hoverFrame = 0;
  svg.addEventListener('pointermove', (ev) => {
    if (drag && drag.moved) return;
    if (hoverFrame) return;
    const cx = ev.clientX;
    const cy = ev.clientY;
    const target = ev.target;
    hoverFrame = requestAnimationFrame(() => {
      hoverFrame = 0;
      if (!data) return;
      const n = target.closest('[data-node-id]');
      const el = n ? null : target.closest('[data-edge-id]');
      const e = n ? null : el ? data.edgeById.get(el.getAttribute('data-edge-id')) : edgeAt(cx, cy);
      const h = n ? { type: 'node', id: n.getAttribute('data-node-id') } : e ? { type: 'edge', id: String(e.id) } : null;
      if ((h && h.id) !== (hovered && hovered.id) || (h && h.type) !== (hovered && hovered.type)) {
        hovered = h;
        applyFocus();
        showTooltip({ clientX: cx, clientY: cy });
      } else if (hovered) {
        moveTooltip({ clientX: cx, clientY: cy });
      }
      svg.style.cursor = h ? 'pointer' : '';
    });
  });
  svg.addEventListener('pointerleave', () => { hovered = null; applyFocus(); tooltip.hidden = true; });

  function select(s) {
    selected = s;
    applyFocus();
    renderPanel();
  }

  let lit = [];
  const FOCUS_LABELS = 150;
  function applyFocus() {
    for (const el of lit) el.classList.remove('hl', 'selected');
    lit = [];
    const light = (el, cls) => { if (el) { el.classList.add(cls); lit.push(el); } };
    if (!data) return;
    const f = hovered || selected;
    if (selected) {
      if (selected.type === 'node') light(data.byId.get(selected.id).el, 'selected');
      else light(data.edgeById.get(selected.id).line, 'selected');
    }
    if (!f) { svg.classList.remove('focus'); return; }
    svg.classList.add('focus');
    if (f.type === 'node') {
      const x = data.byId.get(f.id);
      const edges = x.edgesOut.concat(x.edgesIn);
      // The neighbours' labels: the FOCUS_LABELS heaviest edges' (thousands would
      // cover each other, and take seconds to make and lay out).
      const named = edges.length > FOCUS_LABELS
        ? new Set(edges.slice().sort((a, b) => metricOf(b) - metricOf(a)).slice(0, FOCUS_LABELS))
        : null;
      const near = (e) => (e.s === x ? e.t : e.s);
      ensureLabels([x].concat((named ? [...named] : edges).map(near)));
      light(x.el, 'hl'); light(x.labelEl, 'hl');
      for (const e of edges) {
        light(e.line, 'hl');
        const o = near(e);
        light(o.el, 'hl');
        if (!named || named.has(e)) light(o.labelEl, 'hl');
      }
    } else {
      const e = data.edgeById.get(f.id);
      light(e.line, 'hl');
      ensureLabels([e.s, e.t]);
      for (const o of [e.s, e.t]) { light(o.el, 'hl'); light(o.labelEl, 'hl'); }
    }
  }

  function showTooltip(ev) {
    if (!hovered || !data) { tooltip.hidden = true; return; }
    let html;
    if (hovered.type === 'node') {
      const x = data.byId.get(hovered.id);
      html = `<div class="t">${esc(x.label)}</div><div class="d">${esc(x.id)}</div>` +
        `<div>${num(x.connections_in)} in · ${num(x.connections_out)} out · ${bytes(x.bytes)}` +
        (x.failed ? ` · <span style="color:var(--fail)">${num(x.failed)} failed</span>` : '') + '</div>';
    } else {
      const e = data.edgeById.get(hovered.id);
      html = `<div class="t">${esc(e.s.label)} → ${esc(e.t.label)} :${esc(e.port)}</div>` +
        `<div>${num(e.connections)} connections · ${bytes(e.bytes)}` +
        (e.failed_total ? ` · <span style="color:var(--fail)">${num(e.failed_total)} failed (${pct(e.share)})</span>` : '') + '</div>';
    }
    tooltip.innerHTML = html;
    tooltip.hidden = false;
    moveTooltip(ev);
  }
  function moveTooltip(ev) {
    const r = $('stage').getBoundingClientRect();
    let x = ev.clientX - r.left + 14;
    let y = ev.clientY - r.top + 14;
    if (x + tooltip.offsetWidth > r.width - 8) x = ev.clientX - r.left - tooltip.offsetWidth - 14;
    if (y + tooltip.offsetHeight > r.height - 8) y = ev.clientY - r.top - tooltip.offsetHeight - 14;
    tooltip.style.left = x + 'px';
    tooltip.style.top = y + 'px';
  }

  // ---- The filter (client side; Enter asks the collector) ---------------------------
  function applyFilter() {
    if (!data) return;
    const q = state.q.trim().toLowerCase();
    const matched = new Set();
    if (q) for (const x of data.nodes) if (x.search.includes(q)) matched.add(x);
    const shown = new Set(matched);
    for (const x of matched) for (const e of x.edgesOut.concat(x.edgesIn)) { shown.add(e.s); shown.add(e.t); }
    const make = [];
    for (const x of data.nodes) {
      x.hidden = !!q && !shown.has(x);
      x.match = matched.has(x);
      x.force = !!q && shown.has(x);
      x.el.classList.toggle('hidden', x.hidden);
      x.el.classList.toggle('match', x.match);
      if (x.labelEl) {
        x.labelEl.classList.toggle('hidden', x.hidden);
        x.labelEl.classList.toggle('match', x.match);
        x.labelEl.classList.toggle('force', x.force);
      } else if (x.force) make.push(x); // made with these classes
    }
    ensureLabels(make);
    for (const e of data.edges) {
      e.hidden = !!q && !(matched.has(e.s) || matched.has(e.t));
      e.el.classList.toggle('hidden', e.hidden);
    }
    svg.dataset.matches = q ? String(matched.size) : '';
    renderSummary();
  }

  // ---- The side panel ---------------------------------------------------------------
  function stat(k, v, opts) {
    const o = opts || {};
    return `<div class="stat${o.bad ? ' bad' : ''}${o.wide ? ' wide' : ''}"><div class="k">${k}</div>` +
      `<div class="v" data-field="${o.field}" data-value="${o.value == null ? '' : esc(o.value)}"${o.title ? ` title="${esc(o.title)}"` : ''}>${v}</div></div>`;
  }

  function renderPanel() {
    if (!data || !selected) {
      const j = data && data.json;
      panel.innerHTML = `<div class="panel-empty"><h2>Service dependencies</h2>` +
        `<p>Workloads are drawn as circles, and an arrow from a client to the server it connected to. ` +
        `An edge's width is its ${state.metric === 'bytes' ? 'bytes (both ways)' : 'number of connections'}; red when connections failed.</p>` +
        `<p>Click a workload or an edge for its numbers and most recent flows. Scroll to zoom, drag to move.</p>` +
        (j ? `<p>${num(data.nodes.length)} nodes, ${num(data.edges.length)} edges from ${esc(utc(j.from))} to ${esc(utc(j.to))} UTC.</p>` : '') +
        '</div>';
      return;
    }
    if (selected.type === 'node') renderNodePanel(data.byId.get(selected.id));
    else renderEdgePanel(data.edgeById.get(selected.id));
  }

  // A node's edges, heaviest first; the first EDGE_ROWS of them (a table of thousands
  // of rows takes the browser seconds to lay out).
  const EDGE_ROWS = 100;
  function edgeRows(list, other) {
    if (!list.length) return '<p class="none">none</p>';
    const sorted = list.slice().sort((a, b) => metricOf(b) - metricOf(a));
    const more = sorted.length > EDGE_ROWS
      ? `<p class="none" data-more="${sorted.length - EDGE_ROWS}">and ${num(sorted.length - EDGE_ROWS)} lighter edges (hover the node, or filter, to see them)</p>`
      : '';
    const rows = sorted.slice(0, EDGE_ROWS).map((e) => {
      const o = other(e);
      return `<tr class="link" data-edge-id="${esc(e.id)}"><td title="${esc(o.id)}">${esc(o.label)}</td><td class="n">${esc(e.port)}</td>` +
        `<td class="n">${num(e.connections)}</td><td class="n">${bytes(e.bytes)}</td><td class="n${e.failed_total ? ' bad' : ''}">${num(e.failed_total)}</td></tr>`;
    }).join('');
    return `<table><thead><tr><th></th><th class="n">port</th><th class="n">conns</th><th class="n">bytes</th><th class="n">failed</th></tr></thead><tbody>${rows}</tbody></table>${more}`;
  }

  // The node's most recent flows: its edges' `recent` lists merged, latest first.
  const NODE_RECENT = 10;
  function nodeRecent(x) {
    const all = [];
    for (const e of new Set(x.edgesOut.concat(x.edgesIn))) { // a loop is in both
      for (const f of e.recent || []) {
        const t = Date.parse(f.t_end);
        all.push({ f, e, t: isNaN(t) ? -Infinity : t });
      }
    }
    all.sort((a, b) => b.t - a.t);
    return { list: all.slice(0, NODE_RECENT), total: all.length };
  }

  // Flows as the panels list them; `x` (a node's panel): each names its edge.
  function flowList(list, x) {
    if (!list.length) return '<p class="none">none</p>';
    return '<div class="flows" data-table="recent">' +
      list.map(({ f, e }) => `<div class="flow" data-flow="${esc(f.flow)}" title="flow ${esc(f.flow)}">` +
        `<div class="top"><span class="when">${esc(hhmmss(f.t_end))}</span><span class="reason${f.close_reason && f.close_reason !== 'normal' ? ' bad' : ''}">${esc(f.close_reason || f.record_kind || 'open')}</span>` +
        `<span class="io">↑ ${bytes(f.bytes_sent)} · ↓ ${bytes(f.bytes_received)}</span></div>` +
        (x ? `<div class="edge-of"><a href="#" data-open-edge="${esc(e.id)}">${e.s === x ? `→ ${esc(e.t.label)}` : `← ${esc(e.s.label)}`} <span class="port">:${esc(e.port)}</span></a></div>` : '') +
        `<div class="ends mono">${esc(f.client)} → ${esc(f.server)}</div></div>`).join('') +
      '</div>';
  }

  function renderNodePanel(x) {
    const kind = x.kind === 'unattributed'
      ? '<span class="badge unattributed">unattributed</span>'
      : `<span class="badge">${esc(x.kind)}</span>`;
    const note = x.kind === 'unattributed'
      ? '<p class="none">No exporter and no owners table claimed this address while these flows ran: the flows are counted, their remote workload is unknown.</p>'
      : '';
    const recent = nodeRecent(x);
    panel.innerHTML = `<div data-panel="node" data-node-id="${esc(x.id)}">` +
      `<h2>${kind}${esc(x.label)}</h2><div class="id mono">${esc(x.id)}</div>${note}` +
      '<div class="stats">' +
      stat('connections in', num(x.connections_in), { field: 'connections_in', value: x.connections_in }) +
      stat('connections out', num(x.connections_out), { field: 'connections_out', value: x.connections_out }) +
      stat('bytes in', bytes(x.bytes_in), { field: 'bytes_in', value: x.bytes_in, title: num(x.bytes_in) + ' bytes' }) +
      stat('bytes out', bytes(x.bytes_out), { field: 'bytes_out', value: x.bytes_out, title: num(x.bytes_out) + ' bytes' }) +
      stat('failed connections', num(x.failed), { field: 'failed', value: x.failed, bad: x.failed > 0, wide: true }) +
      '</div>' +
      `<h3 title="The latest flows of its edges (the collector sends each edge's 5 latest), latest first">Most recent flows (${recent.list.length}${recent.total > recent.list.length ? ` of ${num(recent.total)}` : ''})</h3>` +
      flowList(recent.list, x) +
      `<h3>Connects to (${x.edgesOut.length})</h3>${edgeRows(x.edgesOut, (e) => e.t)}` +
      `<h3>Connected from (${x.edgesIn.length})</h3>${edgeRows(x.edgesIn, (e) => e.s)}` +
      '</div>';
  }

  function renderEdgePanel(e) {
    const reasons = Object.entries(e.failed || {}).filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]);
    const rtt = e.rtt_us;
    const recent = e.recent || [];
    panel.innerHTML = `<div data-panel="edge" data-edge-id="${esc(e.id)}">` +
      `<h2><a href="#" data-goto="${esc(e.source)}">${esc(e.s.label)}</a><span class="arrowsep">→</span><a href="#" data-goto="${esc(e.target)}">${esc(e.t.label)}</a> <span class="arrowsep" style="white-space:nowrap">port <b style="color:var(--fg)">${esc(e.port)}</b></span></h2>` +
      `<div class="id mono">${esc(e.source)} → ${esc(e.target)}:${esc(e.port)}</div>` +
      '<div class="stats">' +
      stat('connections', num(e.connections), { field: 'connections', value: e.connections }) +
      stat('failed', `${num(e.failed_total)} <small>${e.connections ? pct(e.share) : ''}</small>`, { field: 'failed_total', value: e.failed_total, bad: e.failed_total > 0 }) +
      stat('bytes sent <small>client → server</small>', bytes(e.bytes_sent), { field: 'bytes_sent', value: e.bytes_sent, title: num(e.bytes_sent) + ' bytes' }) +
      stat('bytes received <small>server → client</small>', bytes(e.bytes_received), { field: 'bytes_received', value: e.bytes_received, title: num(e.bytes_received) + ' bytes' }) +
      stat('retransmits', num(e.retransmits), { field: 'retransmits', value: e.retransmits }) +
      stat('RTT p50 / p99', rtt ? `${micros(rtt.p50)} <small>/ ${micros(rtt.p99)}${rtt.samples != null ? ` · ${num(rtt.samples)} samples` : ''}</small>` : '<small>no samples</small>', { field: 'rtt', value: rtt ? `${rtt.p50}/${rtt.p99}` : '' }) +
      '</div>' +
      '<h3>Failures by reason</h3>' +
      (reasons.length
        ? `<table data-table="failures"><tbody>${reasons.map(([k, v]) => `<tr data-reason="${esc(k)}" data-value="${v}"><td>${esc(k)}</td><td class="n bad">${num(v)}</td></tr>`).join('')}</tbody></table>`
        : '<p class="none">none</p>') +
      `<h3>Most recent flows (${recent.length})</h3>` +
      flowList(recent.map((f) => ({ f })), null) +
      '</div>';
  }

  panel.addEventListener('click', (ev) => {
    const row = ev.target.closest('[data-edge-id]');
    const go = ev.target.closest('[data-goto]');
    const open = ev.target.closest('[data-open-edge]');
    if (go) { ev.preventDefault(); select({ type: 'node', id: go.getAttribute('data-goto') }); }
    else if (open) { ev.preventDefault(); select({ type: 'edge', id: open.getAttribute('data-open-edge') }); }
    else if (row && row.tagName === 'TR') select({ type: 'edge', id: row.getAttribute('data-edge-id') });
  });

  // ---- Footer and summary -----------------------------------------------------------
  function renderFooter() {
    const j = data.json;
    const flows = j.flows || 0;
    const un = j.unattributed_flows || 0;
    const share = j.unattributed_share != null ? j.unattributed_share : flows ? un / flows : 0;
    const inc = j.incomplete || [];
    const windows = j.windows || {};
    const reported = windows.reported || 0;
    // The totals are the collector's for every node, also when it was asked for one
    // workload's edges (docs/graph.md).
    const every = data.workload
      ? ` <span id="footer-every-node" class="why" title="The workload filter narrows the edges drawn; the flow totals are the collector's over every workload">(every workload, not only ${esc(data.workload)})</span>`
      : '';
    let html = `<span id="footer-flows" data-flows="${esc(flows)}" data-unattributed="${esc(un)}" data-scope="${data.workload ? 'every-node' : 'graph'}"><b>${num(flows)}</b> flows, <b>${num(un)}</b> unattributed (${pct(share)})${every}</span>`;
    const incCount = windows.incomplete != null ? windows.incomplete : inc.length;
    if (!incCount && !reported) {
      // Nothing to say the minutes are complete: no exporter reported a window.
      html += '<span id="footer-incomplete" data-count="0" data-reported="0" class="warn" title="Exporters report each window\'s record counts; none reached this collector for this range, so whether records were lost is unknown">no window completeness reports received in this range: completeness unknown</span>';
    } else if (!incCount) {
      html += `<span id="footer-incomplete" data-count="0" data-reported="${esc(reported)}" class="good">every reported host minute complete (${num(reported)} reported)</span>`;
    } else {
      const known = inc.filter((w) => w.records_lost != null);
      const lost = known.reduce((a, w) => a + w.records_lost, 0);
      const why = { all_chunks: 'numbers do not add up', chunks_missing: 'chunks missing', last_chunk_missing: 'last chunk missing' };
      const items = inc.map((w) => `<li><b>${esc(w.host)}</b> ${esc(utc(w.window_start))}–${esc(hhmmss(w.window_end))}: ` +
        (w.records_lost != null ? `${num(w.records_lost)} records lost` : 'records lost unknown') +
        (w.status && why[w.status] ? ` <span class="why">(${why[w.status]})</span>` : '') + '</li>').join('');
      const of = reported ? ` of ${num(reported)}` : '';
      const lostText = known.length ? `, ${num(lost)}${known.length < inc.length ? '+' : ''} records lost` : '';
      html += `<span id="footer-incomplete" data-count="${esc(incCount)}" data-reported="${esc(reported)}" class="warn"><details${inc.length <= 3 ? ' open' : ''}><summary>${num(incCount)}${of} host minute${(reported || incCount) === 1 ? '' : 's'} incomplete${lostText}</summary><ul>${items}</ul></details></span>`;
    }
    const folded = j.folded || {};
    if (folded.edges) html += `<span id="footer-folded" data-edges="${esc(folded.edges)}" title="The collector keeps each minute's heaviest edges; the rest are counted in the node 'other'">${num(folded.edges)} small edge-minutes folded into “other” (${num(folded.connections)} connections${data.workload ? ', every workload' : ''})</span>`;
    // held_from: the start of the oldest minute the graph holds; later than `from` when
    // the collector started since or its edge cap dropped older minutes (absent from
    // older collectors).
    const heldFrom = j.held_from ? Date.parse(j.held_from) : NaN;
    if (!isNaN(heldFrom) && heldFrom > Date.parse(j.from)) {
      html += `<span id="footer-held" class="warn" data-held-from="${esc(j.held_from)}" title="The collector keeps its graph in memory: it started then, or its edge cap dropped the older minutes. What came before is not in this picture">the graph only holds data since ${esc(utc(j.held_from))} UTC (collector started, or older minutes dropped at the edge cap)</span>`;
    }
    if (j.clamped) html += '<span id="footer-clamped" class="warn" title="The range asked for reached further back than the collector keeps">range clamped to the collector\'s retention</span>';
    if (j.truncated) html += '<span id="footer-truncated" class="warn" title="More edges matched than one answer holds">truncated: the lightest edges were left out</span>';
    html += `<span>${esc(utc(j.from))} – ${esc(utc(j.to))} UTC${j.minutes != null ? ` (${num(j.minutes)} min)` : ''}</span>`;
    if (j.collector != null && j.collector !== '') {
      html += `<span id="footer-collector" data-collector="${esc(j.collector)}" title="Each collector node's graph holds only the flows that node wrote: with several collector nodes, this is this node's share">from collector <b>${esc(j.collector)}</b> (its own flows only)</span>`;
    }
    $('footer').innerHTML = html;
  }

  function renderSummary() {
    if (!data) return;
    const q = state.q.trim();
    const vis = data.nodes.filter((x) => !x.hidden).length;
    const visE = data.edges.filter((e) => !e.hidden).length;
    const failed = data.edges.filter((e) => e.failed_total > 0).length;
    let s = q
      ? `${num(Number(svg.dataset.matches || 0))} matching “${esc(q)}” · ${num(vis)} of ${num(data.nodes.length)} nodes · ${num(visE)} edges`
      : `${num(data.nodes.length)} nodes · ${num(data.edges.length)} edges`;
    if (failed) s += ` · <span style="color:var(--fail)">${num(failed)} with failures</span>`;
    $('summary').innerHTML = s;
  }

  // ---- Controls -----------------------------------------------------------------------
  function syncControls() {
    for (const b of document.querySelectorAll('#range button')) b.classList.toggle('on', b.dataset.range === state.range);
    for (const b of document.querySelectorAll('#metric button')) b.classList.toggle('on', b.dataset.metric === state.metric);
    $('custom').hidden = state.range !== 'custom';
    $('legend-metric').textContent = state.metric === 'bytes' ? 'bytes' : 'connections';
    const chip = $('server-filter');
    chip.hidden = !state.workload;
    chip.querySelector('b').textContent = state.workload;
    if ($('q').value !== state.q) $('q').value = state.q;
  }
  function toLocalInput(d) { return d.toISOString().slice(0, 16); }

  $('range').addEventListener('click', (ev) => {
    const b = ev.target.closest('button');
    if (!b) return;
    if (b.dataset.range === 'custom') {
      if (state.range !== 'custom') {
        const { from, to } = rangeParams();
        $('from').value = toLocalInput(from);
        $('to').value = toLocalInput(to);
      }
      $('custom').hidden = false;
      for (const x of document.querySelectorAll('#range button')) x.classList.toggle('on', x === b);
      return;
    }
    state.range = b.dataset.range;
    writeHash(); syncControls(); load();
  });
  $('custom').addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.range = 'custom';
    state.from = $('from').value;
    state.to = $('to').value;
    writeHash(); syncControls(); load();
  });
  $('metric').addEventListener('click', (ev) => {
    const b = ev.target.closest('button');
    if (!b || b.dataset.metric === state.metric) return;
    state.metric = b.dataset.metric;
    writeHash(); syncControls();
    if (data) { drawEdges(data, gEdges); drawNodes(data, gNodes, gLabels); applyFilter(); applyFocus(); renderPanel(); }
  });
  let qTimer = 0;
  $('q').addEventListener('input', () => {
    clearTimeout(qTimer);
    qTimer = setTimeout(() => { state.q = $('q').value; writeHash(); applyFilter(); }, 60);
  });
  $('q').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') {
      const q = $('q').value.trim();
      // One matching workload: ask for its ID; else for what was typed.
      const m = data ? data.nodes.filter((x) => x.search.includes(q.toLowerCase())) : [];
      state.workload = m.length === 1 ? m[0].id : q;
      state.q = '';
      writeHash(); syncControls(); load();
    } else if (ev.key === 'Escape') {
      $('q').value = '';
      state.q = '';
      writeHash(); applyFilter();
    }
  });
  $('server-filter').querySelector('button').onclick = () => { state.workload = ''; writeHash(); syncControls(); load(); };
  $('reload').onclick = () => load();
  document.addEventListener('keydown', (ev) => {
    if (ev.target.tagName === 'INPUT') return;
    if (ev.key === 'Escape') select(null);
    else if (ev.key === 'r') load();
    else if (ev.key === '/') { ev.preventDefault(); $('q').focus(); }
  });

  // Theme: the system's, or the one chosen here (remembered).
  function applyTheme(t) { document.documentElement.dataset.theme = t; }
  const saved = (() => { try { return localStorage.getItem('flowcollector-theme'); } catch (e) { return null; } })();
  applyTheme(saved || (matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light'));
  $('theme').onclick = () => {
    const t = document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark';
    applyTheme(t);
    try { localStorage.setItem('flowcollector-theme', t); } catch (e) { /* private mode */ }
  };

  readHash();
  syncControls();
  renderPanel();
  load();
}());
