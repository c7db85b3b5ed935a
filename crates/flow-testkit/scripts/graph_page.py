#!/usr/bin/env python3
"""Drives the collector's dependency map (`/`, docs/graph-page.md) in headless Chromium.

    graph_page.py check   --url URL --expect JSON [--screenshot PNG] [--screenshot-dark PNG]
    graph_page.py measure --url URL [--loads 5] [--expect-size NODES,EDGES]
    graph_page.py serve   [--url URL] [--assets-dir DIR]   print the proxy's URL, serve until killed
    (any)  --fixture FILE | --synthetic WORKLOADS,EDGES | --star WORKLOADS,EDGES
           serve that graph instead [--write-fixture FILE: and write it there]

URL is the collector's base URL (its page at `/`, its API at `/api/v1/graph`). With
--fixture or --synthetic, a proxy on loopback answers `/api/v1/graph` with that JSON and
passes every other request to URL (the collector's own page and assets); with
--assets-dir DIR the proxy serves the page from DIR instead (development, no collector).
--synthetic is a tiered mesh of WORKLOADS workloads (and a few unattributed addresses);
--star is the API's largest answer in nodes: WORKLOADS workloads behind one
internet-facing `front`, whose clients are distinct unattributed addresses, one edge
each, up to EDGES edges in all (`--star 10,5000`: 5,000 edges, 4,993 nodes).

`check` takes its expectations as JSON (inline, or @file):

    {"edges": [{"source": ID, "target": ID, "port": N, "connections": N,
                "failed_total": N, "failed": {"refused": N}, "bytes_sent": N,
                "bytes_received": N, "recent_min": N}],
     "nodes": [{"id": ID, "connections_in": N, ..., "recent_min": N, "recent": [FLOW KEY]}],
     "unattributed": ["10.0.0.7"],
     "filter": {"q": "web", "shown": [ID], "hidden": [ID]},
     "footer": {"flows": N, "unattributed": N, "incomplete": N, "reported": N,
                "collector": NAME, "held_from": TIME},
     "server_filter": {"q": TEXT, "workload": ID},
     "no_script": true,
     "min_nodes": N, "min_edges": N}

and checks each against the page: an edge's arrow (data attributes) and the side panel a
click on it opens, a node's panel (its full ID as text, its most recent flows: at least
recent_min, latest first, the flow keys `recent` in that order), the unattributed
addresses' style and label, that typing in the filter hides the rest, the footer
(`collector`, `held_from`: null for none shown); with server_filter, that Enter in the
filter asks the collector for that workload (`workload=` in the request), shows it in
the chip and says the footer's totals are every workload's; with no_script, that no
markup from the answer became an element (no <img>, no on* attribute, window.__xss
unset); that every request the page made went to the collector. `measure` loads the page LOADS times and reads window.__graph (the
time from the navigation to the painted graph); with --expect-size NODES,EDGES (or
--synthetic/--star, whose sizes it knows) each load must have drawn at least that many
nodes and edges. Each load also records the page's longest main-thread task
(`longest_task_ms`, from a PerformanceObserver of long tasks: how long the tab could not
answer a click). Both print one JSON line
of results last; a failed check exits 1 with the reasons.
"""

import argparse
import http.server
import json
import os
import random
import shutil
import statistics
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
except ImportError as e:  # pragma: no cover
    sys.exit(f"selenium is missing ({e}): pip install selenium==4.51.0 (flow_testkit::python::PACKAGES) into the tests' venv (.ci/run)")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---- A graph of a given size, the shape of GET /api/v1/graph --------------------------

def synthetic(workloads, edges, seed=7):
    """`workloads` workloads in tiers (front, middle, back), `edges` edges client -> server,
    some failing, a few unattributed remotes; deterministic."""
    rnd = random.Random(seed)
    namespaces = ["shop", "payments", "search", "identity", "media", "ops", "data", "edge"]
    ids = [f"spiffe://prod.example.org/ns/{namespaces[i % len(namespaces)]}/sa/svc-{i:03d}" for i in range(workloads)]
    tier = {w: (0 if i < workloads // 5 else 1 if i < workloads * 3 // 5 else 2) for i, w in enumerate(ids)}
    by_tier = [[w for w in ids if tier[w] == t] for t in range(3)]
    unattributed = [f"unattributed:10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}" for _ in range(max(1, workloads // 40))]
    ports = [443, 8080, 9090, 5432, 6379, 50051]
    seen = set()
    out = []
    t0 = 1_796_032_800  # 2026-11-30T10:00:00Z
    while len(out) < edges:
        r = rnd.random()
        if r < 0.02:
            s, t = rnd.choice(ids), rnd.choice(unattributed)
        else:
            st = rnd.choice([0, 0, 1, 1, 1])
            s = rnd.choice(by_tier[st])
            tt = min(2, st + rnd.choice([0, 1, 1]))
            t = rnd.choice(by_tier[tt])
        port = rnd.choice(ports)
        if s == t or (s, t, port) in seen:
            continue
        seen.add((s, t, port))
        conns = int(rnd.paretovariate(1.2) * 3)
        failed = conns // 3 if rnd.random() < 0.06 else 0
        sent = conns * rnd.randrange(200, 20000)
        recv = conns * rnd.randrange(500, 200000)
        recent = [{
            "flow": f"host-{rnd.randrange(50):02d}/{rnd.getrandbits(64):016x}/{rnd.randrange(9)}/{k}",
            "t_end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + rnd.randrange(900))),
            "client": f"10.1.{rnd.randrange(256)}.{rnd.randrange(1, 255)}:{rnd.randrange(32768, 60999)}",
            "server": f"10.2.{rnd.randrange(256)}.{rnd.randrange(1, 255)}:{port}",
            "bytes_sent": rnd.randrange(100, 5000), "bytes_received": rnd.randrange(100, 50000),
            "close_reason": "refused" if failed and k == 0 else "normal",
        } for k in range(min(conns, 5))]
        out.append({
            "id": f"{s}|{t}|{port}", "source": s, "target": t, "port": port, "connections": conns,
            "failed": {"refused": failed} if failed else {}, "failed_total": failed,
            "bytes_sent": sent, "bytes_received": recv, "retransmits": rnd.randrange(0, 3) * conns // 4,
            "rtt_us": {"p50": rnd.randrange(80, 2000), "p99": rnd.randrange(2000, 60000)}, "recent": recent,
        })
    return graph_answer(out, ids + unattributed)


def synthetic_star(workloads, edges, seed=11):
    """The API's largest answer in nodes: `front` (internet-facing) and `workloads - 1`
    back-ends it and they call (heavy edges), and `front`'s clients, each a distinct
    unattributed address with one light edge, up to `edges` edges in all; deterministic."""
    rnd = random.Random(seed)
    front = "spiffe://prod.example.org/ns/edge/sa/front"
    back = [f"spiffe://prod.example.org/ns/shop/sa/svc-{i:03d}" for i in range(1, workloads)]
    t0 = 1_796_032_800  # 2026-11-30T10:00:00Z
    stamp = lambda: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0 + rnd.randrange(900))) + f".{rnd.randrange(1000):03d}Z"  # noqa: E731

    def edge(s, t, port, conns, client, server, failed=0):
        recent = sorted(({
            "flow": f"host-{rnd.randrange(50):02d}/{rnd.getrandbits(64):016x}/{rnd.randrange(9)}/{k}",
            "t_end": stamp(), "record_kind": "final", "client": f"{client}:{rnd.randrange(32768, 60999)}",
            "server": f"{server}:{port}", "bytes_sent": rnd.randrange(100, 5000),
            "bytes_received": rnd.randrange(100, 50000),
            "close_reason": "refused" if failed and k == 0 else "normal",
        } for k in range(min(conns, 5))), key=lambda f: f["t_end"], reverse=True)
        return {"id": f"{s} -> {t}:{port}", "source": s, "target": t, "port": port, "connections": conns,
                "failed": {"refused": failed} if failed else {}, "failed_total": failed,
                "bytes_sent": conns * rnd.randrange(200, 20000), "bytes_received": conns * rnd.randrange(500, 200000),
                "retransmits": 0, "rtt_us": {"p50": rnd.randrange(80, 2000), "p99": rnd.randrange(2000, 60000), "samples": conns},
                "recent": recent}

    ip = lambda w: "10.3.0." + str(1 + w)  # noqa: E731
    inner = [edge(front, b, 8080, rnd.randrange(2000, 20000), ip(0), ip(i + 1)) for i, b in enumerate(back)]
    for i, b in enumerate(back[:-1]):
        inner.append(edge(b, back[i + 1], 5432, rnd.randrange(500, 5000), ip(i + 1), ip(i + 2)))
    inner = inner[:edges]
    out = list(inner)
    for i in range(edges - len(inner)):
        addr = f"198.{18 + i // 65024}.{(i // 254) % 256}.{1 + i % 254}"
        conns = int(rnd.paretovariate(2.5))
        failed = 1 if rnd.random() < 0.01 else 0
        out.append(edge(f"unattributed:{addr}", front, 443, conns, addr, ip(0), failed))
    out.sort(key=lambda e: (-e["connections"], -(e["bytes_sent"] + e["bytes_received"])))
    return graph_answer(out)


def graph_answer(out, node_ids=()):
    """The answer around `out` (edges): its nodes (`node_ids` first, with or without
    edges, then every edge's ends), and the totals."""
    nodes = {}
    for w in node_ids:
        nodes.setdefault(w, {"id": w, "kind": "unattributed" if w.startswith("unattributed:") else "workload",
                             "connections_in": 0, "connections_out": 0, "bytes_in": 0, "bytes_out": 0, "failed": 0})
    for e in out:
        for w in (e["source"], e["target"]):
            nodes.setdefault(w, {"id": w, "kind": "unattributed" if w.startswith("unattributed:") else "workload",
                                 "connections_in": 0, "connections_out": 0, "bytes_in": 0, "bytes_out": 0, "failed": 0})
    for e in out:
        s, t = nodes[e["source"]], nodes[e["target"]]
        s["connections_out"] += e["connections"]
        t["connections_in"] += e["connections"]
        s["bytes_out"] += e["bytes_sent"]
        s["bytes_in"] += e["bytes_received"]
        t["bytes_in"] += e["bytes_sent"]
        t["bytes_out"] += e["bytes_received"]
        s["failed"] += e["failed_total"]
        t["failed"] += e["failed_total"]
    flows = sum(e["connections"] for e in out)
    un = sum(e["connections"] for e in out if e["target"].startswith("unattributed:") or e["source"].startswith("unattributed:"))
    return {
        "from": "2026-11-30T10:00:00Z", "to": "2026-11-30T10:15:00Z", "minutes": 15,
        "nodes": sorted(nodes.values(), key=lambda n: (n["kind"] != "workload", n["id"])), "edges": out,
        "flows": flows, "unattributed_flows": un,
        "unattributed_share": un / flows if flows else 0.0, "folded": {"edges": 0, "connections": 0},
        "windows": {"reported": 150, "incomplete": 1},
        "incomplete": [{"host": "host-07", "window_start": "2026-11-30T10:04:00Z",
                        "window_end": "2026-11-30T10:05:00Z", "records_lost": 12, "status": "chunks_missing"}],
        "clamped": False, "truncated": False,
    }


# ---- The proxy: a fixed graph, the rest from the collector (or a directory) -----------

def start_proxy(upstream, graph_bytes, assets_dir):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            path = urllib.parse.urlsplit(self.path).path
            if path == "/api/v1/graph":
                return self.answer(200, graph_bytes, "application/json")
            if assets_dir:
                rel = "index.html" if path == "/" else path[len("/assets/"):] if path.startswith("/assets/") else None
                full = os.path.realpath(os.path.join(assets_dir, rel)) if rel else None
                if not full or not full.startswith(os.path.realpath(assets_dir)) or not os.path.isfile(full):
                    return self.answer(404, b"not found\n", "text/plain")
                ty = {"html": "text/html", "js": "text/javascript", "css": "text/css"}.get(full.rsplit(".", 1)[-1], "text/plain")
                with open(full, "rb") as f:
                    return self.answer(200, f.read(), ty)
            try:
                with urllib.request.urlopen(upstream.rstrip("/") + self.path, timeout=30) as r:
                    return self.answer(r.status, r.read(), r.headers.get("content-type", "application/octet-stream"))
            except urllib.error.HTTPError as e:
                return self.answer(e.code, e.read(), e.headers.get("content-type", "text/plain"))

        def answer(self, status, body, ty):
            self.send_response(status)
            self.send_header("content-type", ty)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


# ---- The browser ---------------------------------------------------------------------

def browser(width=1440, height=900):
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if not chromium or not driver_path:
        sys.exit("no Chromium or chromedriver on PATH (set CHROMIUM/CHROMEDRIVER, or apt-get install chromium chromium-driver as .ci/run does)")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--window-size={width},{height}", "--force-device-scale-factor=1",
              "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)


def wait_rendered(d, loads_before=0, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        g = d.execute_script("return window.__graph || null")
        if g and g.get("error"):
            raise Check(f"the page says: {g['error']}")
        if g and g.get("rendered") and g.get("loads", 0) > loads_before:
            return g
        time.sleep(0.05)
    raise Check(f"the graph was not rendered within {timeout} s: {d.execute_script('return window.__graph')}")


REQUESTS = []  # the requests read by requests_made_since (the log is read once)


def requests_made(d):
    urls = []
    for entry in d.get_log("performance"):
        m = json.loads(entry["message"])["message"]
        if m.get("method") == "Network.requestWillBeSent":
            urls.append(m["params"]["request"]["url"])
    return urls


def requests_made_since(d):
    """The requests since the last call (kept for requests_made's final check)."""
    urls = requests_made(d)
    REQUESTS.extend(urls)
    return urls


class Check(Exception):
    pass


def css(s):
    return s.replace("\\", "\\\\").replace('"', '\\"')


def click_edge(d, el):
    """Clicks a point of the edge's arrow as a user would (the first point along it that
    the edge itself is under); returns how it was clicked."""
    for frac in (0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8):
        pt = d.execute_script(
            """const p = arguments[0], f = arguments[1];
               const q = p.getPointAtLength(p.getTotalLength() * f).matrixTransform(p.getScreenCTM());
               const hit = document.elementFromPoint(q.x, q.y);
               const on = hit && hit.closest('[data-edge-id]');
               const id = on ? on.getAttribute('data-edge-id')
                 : hit && hit.closest('#graph') && !hit.closest('[data-node-id]') ? window.__graphEdgeAt(q.x, q.y) : null;
               return {x: q.x, y: q.y, mine: id === p.getAttribute('data-edge-id')};""", el, frac)
        if pt["mine"]:
            ActionChains(d).move_to_element_with_offset(d.find_element(By.TAG_NAME, "body"), 0, 0).perform()
            actions = ActionChains(d)
            actions.w3c_actions.pointer_action.move_to_location(int(pt["x"]), int(pt["y"]))
            actions.w3c_actions.pointer_action.click()
            actions.perform()
            return "pointer"
    d.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", el)
    return "event (covered by other elements at every point tried)"


def field(d, name):
    return d.find_element(By.CSS_SELECTOR, f'#panel [data-field="{name}"]').get_attribute("data-value")


def check(d, url, expect, shots):
    problems = []
    result = {"edges": [], "nodes": []}

    def want(cond, msg):
        if not cond:
            problems.append(msg)
            log("FAIL:", msg)

    d.get(url)
    g = wait_rendered(d)
    result["graph"] = g
    log(f"rendered: {g}")
    want(g["nodes"] >= expect.get("min_nodes", 0), f"{g['nodes']} nodes, expected at least {expect.get('min_nodes')}")
    want(g["edges"] >= expect.get("min_edges", 0), f"{g['edges']} edges, expected at least {expect.get('min_edges')}")

    for e in expect.get("edges", []):
        sel = f'#edges [data-source="{css(e["source"])}"][data-target="{css(e["target"])}"][data-port="{e["port"]}"]'
        found = d.find_elements(By.CSS_SELECTOR, sel)
        want(len(found) == 1, f"edge {e['source']} -> {e['target']}:{e['port']}: {len(found)} arrows")
        if not found:
            continue
        el = found[0]
        eid = el.get_attribute("data-edge-id")
        want(int(el.get_attribute("data-connections")) == e["connections"],
             f"edge {eid}: data-connections {el.get_attribute('data-connections')}, expected {e['connections']}")
        how = click_edge(d, el)
        panel = d.find_elements(By.CSS_SELECTOR, f'#panel [data-panel="edge"][data-edge-id="{css(eid)}"]')
        want(len(panel) == 1, f"edge {eid}: no side panel after the click ({how})")
        if not panel:
            continue
        got = {"id": eid, "click": how}
        for k in ("connections", "failed_total", "bytes_sent", "bytes_received", "retransmits"):
            v = field(d, k)
            got[k] = int(v) if v not in (None, "") else None
            if k in e:
                want(got[k] == e[k], f"edge {eid}: the panel's {k} is {got[k]}, expected {e[k]}")
        reasons = {r.get_attribute("data-reason"): int(r.get_attribute("data-value"))
                   for r in d.find_elements(By.CSS_SELECTOR, "#panel [data-reason]")}
        got["failed"] = reasons
        if "failed" in e:
            want(reasons == {k: v for k, v in e["failed"].items() if v}, f"edge {eid}: failures {reasons}, expected {e['failed']}")
        red = d.execute_script("return arguments[0].classList.contains('failed')", el)
        want(red == (e.get("failed_total", 0) > 0) or "failed_total" not in e, f"edge {eid}: drawn failed={red}")
        recent = len(d.find_elements(By.CSS_SELECTOR, "#panel [data-table=recent] [data-flow]"))
        got["recent"] = recent
        if "recent_min" in e:
            want(recent >= e["recent_min"], f"edge {eid}: {recent} recent flows in the panel, expected at least {e['recent_min']}")
        result["edges"].append(got)

    for n in expect.get("nodes", []):
        found = d.find_elements(By.CSS_SELECTOR, f'#nodes [data-node-id="{css(n["id"])}"] > *')
        want(len(found) == 1, f"node {n['id']}: {len(found)} shapes")
        if not found:
            continue
        found[0].click()
        panel = d.find_elements(By.CSS_SELECTOR, f'#panel [data-panel="node"][data-node-id="{css(n["id"])}"]')
        want(len(panel) == 1, f"node {n['id']}: no side panel after the click")
        got = {"id": n["id"]}
        for k in ("connections_in", "connections_out", "bytes_in", "bytes_out", "failed"):
            if panel:
                got[k] = int(field(d, k))
                if k in n:
                    want(got[k] == n[k], f"node {n['id']}: the panel's {k} is {got[k]}, expected {n[k]}")
        if panel:
            shown_id = d.find_element(By.CSS_SELECTOR, "#panel [data-panel=node] .id").text
            want(shown_id == n["id"], f"node {n['id']}: the panel shows the ID {shown_id!r}")
            flows = d.execute_script(
                """return Array.from(document.querySelectorAll('#panel [data-table=recent] [data-flow]'))
                     .map((f) => ({flow: f.getAttribute('data-flow'), when: f.querySelector('.when').textContent,
                                   edge: (f.querySelector('[data-open-edge]') || {}).textContent || null}));""")
            got["recent"] = flows
            if "recent_min" in n:
                want(len(flows) >= n["recent_min"], f"node {n['id']}: {len(flows)} recent flows in the panel, expected at least {n['recent_min']}")
            if "recent" in n:
                want([f["flow"] for f in flows] == n["recent"], f"node {n['id']}: recent flows {[f['flow'] for f in flows]}, expected {n['recent']}")
            whens = [f["when"] for f in flows]
            want(whens == sorted(whens, reverse=True), f"node {n['id']}: recent flows not latest first: {whens}")
        result["nodes"].append(got)

    for ip in expect.get("unattributed", []):
        nid = f"unattributed:{ip}"
        found = d.find_elements(By.CSS_SELECTOR, f'#nodes [data-node-id="{css(nid)}"]')
        want(len(found) == 1, f"no node {nid}")
        if found:
            want(found[0].get_attribute("data-kind") == "unattributed", f"{nid} drawn as {found[0].get_attribute('data-kind')}")
            label = d.find_element(By.CSS_SELECTOR, f'#labels [data-label-for="{css(nid)}"]')
            want(label.text == f"unattributed {ip}", f"{nid} labelled {label.text!r}")
            dash = d.execute_script("return getComputedStyle(arguments[0].firstChild).strokeDasharray", found[0])
            want(dash not in ("", "none"), f"{nid} not drawn dashed ({dash!r})")

    f = expect.get("footer")
    if f:
        el = d.find_element(By.ID, "footer-flows")
        inc = d.find_element(By.ID, "footer-incomplete")
        opt = lambda id_, attr: d.execute_script(  # noqa: E731
            "const e = document.getElementById(arguments[0]); return e ? e.getAttribute(arguments[1]) : null", id_, attr)
        got = {"flows": int(el.get_attribute("data-flows")), "unattributed": int(el.get_attribute("data-unattributed")),
               "incomplete": int(inc.get_attribute("data-count")), "reported": int(inc.get_attribute("data-reported")),
               "collector": opt("footer-collector", "data-collector"), "held_from": opt("footer-held", "data-held-from"),
               "text": d.find_element(By.ID, "footer").text}
        result["footer"] = got
        for k in ("flows", "unattributed", "incomplete", "reported", "collector", "held_from"):
            if k in f:
                want(got[k] == f[k], f"footer: {k} {got[k]!r}, expected {f[k]!r}")

    flt = expect.get("filter")
    if flt:
        d.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        q = d.find_element(By.ID, "q")
        q.clear()
        q.send_keys(flt["q"])
        time.sleep(0.3)
        for nid in flt.get("shown", []):
            el = d.find_elements(By.CSS_SELECTOR, f'#nodes [data-node-id="{css(nid)}"]')
            want(bool(el) and el[0].is_displayed(), f"filter {flt['q']!r}: {nid} not shown")
        for nid in flt.get("hidden", []):
            el = d.find_elements(By.CSS_SELECTOR, f'#nodes [data-node-id="{css(nid)}"]')
            want(bool(el) and not el[0].is_displayed(), f"filter {flt['q']!r}: {nid} still shown")
        shown = [e.get_attribute("data-node-id") for e in d.find_elements(By.CSS_SELECTOR, "#nodes [data-node-id]") if e.is_displayed()]
        result["filter"] = {"q": flt["q"], "shown": shown}
        q.send_keys(Keys.ESCAPE)
        time.sleep(0.2)

    sf = expect.get("server_filter")
    if sf:
        # Enter in the filter: the collector is asked for that workload only.
        d.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        loads = d.execute_script("return window.__graph.loads || 0")
        q = d.find_element(By.ID, "q")
        q.clear()
        q.send_keys(sf["q"])
        q.send_keys(Keys.ENTER)
        wait_rendered(d, loads)
        chip = d.execute_script("return document.querySelector('#server-filter b').textContent")
        want(chip == sf["workload"], f"server filter: the chip says {chip!r}, expected {sf['workload']!r}")
        asked = [u for u in requests_made_since(d) if "/api/v1/graph" in u]
        wl = [urllib.parse.parse_qs(urllib.parse.urlsplit(u).query).get("workload", [None])[0] for u in asked]
        want(sf["workload"] in wl, f"server filter: the page asked {asked}, not workload={sf['workload']!r}")
        scope = d.find_element(By.ID, "footer-flows").get_attribute("data-scope")
        want(scope == "every-node", f"server filter: the footer's totals are not said to be every workload's ({scope!r})")
        result["server_filter"] = {"chip": chip, "asked": wl, "footer": d.find_element(By.ID, "footer").text}
        d.find_element(By.CSS_SELECTOR, "#server-filter button").click()
        wait_rendered(d, loads + 1)

    if expect.get("no_script"):
        got = d.execute_script("""return {
            xss: window.__xss === undefined ? null : String(window.__xss),
            img: document.querySelectorAll('img').length,
            on: Array.from(document.querySelectorAll('*')).filter((e) =>
                Array.from(e.attributes).some((a) => a.name.startsWith('on'))).map((e) => e.outerHTML.slice(0, 120)),
        }""")
        result["no_script"] = got
        want(got["xss"] is None, f"a script from the answer ran: window.__xss = {got['xss']}")
        want(got["img"] == 0, f"{got['img']} <img> elements: markup from the answer became elements")
        want(not got["on"], f"elements with event handler attributes: {got['on']}")

    urls = requests_made(d) + REQUESTS
    base = url.split("#")[0].rstrip("/")
    outside = [u for u in urls if not u.startswith(base) and not u.startswith("data:")]
    want(not outside, f"the page made requests outside the collector: {outside}")
    result["requests"] = len(urls)

    if shots.get("light") or shots.get("dark"):
        # The screenshot: the first failing edge selected (else the first edge).
        target = (d.find_elements(By.CSS_SELECTOR, '#edges [data-failed]:not([data-failed="0"])')
                  or d.find_elements(By.CSS_SELECTOR, "#edges [data-edge-id]"))
        if target:
            click_edge(d, target[0])
        # The pointer off the graph: no tooltip, no hover focus in the picture.
        ActionChains(d).move_to_element(d.find_element(By.ID, "footer")).perform()
        time.sleep(0.3)
        if shots.get("light"):
            d.execute_script("document.documentElement.dataset.theme = 'light'")
            d.save_screenshot(shots["light"])
            result["screenshot"] = shots["light"]
        if shots.get("dark"):
            d.execute_script("document.documentElement.dataset.theme = 'dark'")
            time.sleep(0.1)
            d.save_screenshot(shots["dark"])
            result["screenshot_dark"] = shots["dark"]
    result["problems"] = problems
    return result


LONG_TASKS = """window.__longTasks = [];
try {
  new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__longTasks.push(e.duration); })
    .observe({type: 'longtask'});
} catch (e) { window.__longTasks = null; }"""


def measure(d, url, loads, size):
    """`size`: (nodes, edges), each at least."""
    # Every page load records its main thread's long tasks (over 50 ms): the longest is
    # how long the tab could not answer a click.
    d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": LONG_TASKS})
    runs = []
    for i in range(loads):
        d.get("about:blank")
        d.get(url)
        g = wait_rendered(d, timeout=120)
        tasks = d.execute_script("return window.__longTasks")
        g["longest_task_ms"] = round(max(tasks)) if tasks else (0 if tasks is not None else None)
        if size:
            if g["nodes"] < size[0] or g["edges"] < size[1]:
                raise Check(f"load {i}: {g['nodes']} nodes and {g['edges']} edges, expected at least {size[0]} and {size[1]}")
        runs.append(g)
        log(f"load {i + 1}: {g}")
    med = lambda k: statistics.median(r[k] for r in runs if r.get(k) is not None)  # noqa: E731
    return {"loads": runs, "median_ms": med("ms"), "median_render_ms": med("render_ms"),
            "median_layout_ms": med("layout_ms"), "median_fetch_ms": med("fetch_ms"),
            "median_draw_ms": med("draw_ms"), "max_longest_task_ms": max((r["longest_task_ms"] or 0) for r in runs),
            "nodes": runs[0]["nodes"], "edges": runs[0]["edges"],
            "chromium": d.capabilities.get("browserVersion"), "problems": []}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["check", "measure", "serve"])
    ap.add_argument("--url", help="the collector's base URL")
    ap.add_argument("--expect", default="{}", help="expectations (JSON, or @file)")
    ap.add_argument("--fixture", help="serve this graph JSON at /api/v1/graph")
    ap.add_argument("--synthetic", help="serve a synthetic graph of WORKLOADS,EDGES")
    ap.add_argument("--star", help="serve a star: WORKLOADS,EDGES (one front, its clients unattributed)")
    ap.add_argument("--expect-size", help="measure: every load draws at least NODES,EDGES")
    ap.add_argument("--write-fixture", help="write the synthetic graph here too")
    ap.add_argument("--assets-dir", help="serve the page from this directory, not URL")
    ap.add_argument("--screenshot")
    ap.add_argument("--screenshot-dark")
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--fragment", default="", help="appended to the page's URL (e.g. '#range=24h')")
    ap.add_argument("--window", default="1440,900")
    a = ap.parse_args()

    url = a.url
    proxy = None
    graph = None
    size = tuple(int(x) for x in a.expect_size.split(",")) if a.expect_size else None
    if a.synthetic or a.star:
        w, e = (int(x) for x in (a.synthetic or a.star).split(","))
        graph = synthetic(w, e) if a.synthetic else synthetic_star(w, e)
        size = size or (len(graph["nodes"]), len(graph["edges"]))
        if a.write_fixture:
            with open(a.write_fixture, "w") as f:
                json.dump(graph, f)
    elif a.fixture:
        with open(a.fixture) as f:
            graph = json.load(f)
    if graph is not None or a.assets_dir:
        body = json.dumps(graph if graph is not None else {}).encode()
        proxy, url = start_proxy(a.url or "http://127.0.0.1:9/", body, a.assets_dir)
        log(f"proxy at {url}")
    if not url:
        sys.exit("--url or --assets-dir is needed")
    if a.mode == "serve":
        print(url, flush=True)
        threading.Event().wait()
    expect = a.expect
    if expect.startswith("@"):
        with open(expect[1:]) as f:
            expect = f.read()
    expect = json.loads(expect)
    w, h = (int(x) for x in a.window.split(","))
    d = browser(w, h)
    try:
        page = url + a.fragment
        if a.mode == "check":
            result = check(d, page, expect, {"light": a.screenshot, "dark": a.screenshot_dark})
        else:
            result = measure(d, page, a.loads, size)
    except Check as e:
        result = {"problems": [str(e)]}
        try:
            if a.screenshot:
                d.save_screenshot(a.screenshot)
        except Exception:  # noqa: BLE001
            pass
    finally:
        d.quit()
        if proxy:
            proxy.shutdown()
    print(json.dumps(result), flush=True)
    sys.exit(1 if result["problems"] else 0)


if __name__ == "__main__":
    main()
