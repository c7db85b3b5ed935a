//! Connections between workloads, and the records the exporters at either end write
//! for them, each in its own host's (skewed) clock.
//!
//! Every minute each host's workloads open `connections_per_minute` connections:
//! mostly to a workload of another host (both ends write a record), some to a
//! service without an exporter (only the client writes one), some refused (the
//! client's record only), some to an IP whose owner stopped a while ago (timed out,
//! nobody there), some kubelet-style probes from a pod host's own IP (no identity),
//! some connections older than the exporters (no start time), and some that stay open
//! for minutes (a pool's connections to a database): both ends send an interim record
//! shortly before the close of every window such a connection spans, then the final
//! one. Each workload that starts gets a connection right after its start, and each
//! that stops one right before its stop.
//!
//! Every record carries its connection's flow ID (its host's boot ID and a socket
//! cookie, the same in the interim and final records of one end), and a client's
//! record the process that connected.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use flow_record::{
    CloseReason, Direction, FlowId, FlowRecord, IdentitySource, ProcessInfo, RecordKind,
    SocketStats, TcpState, UnattributedReason,
};

use crate::fleet::{
    truth::Truth,
    world::{CLOSED_PORT, HostKind, MINUTE, Micros, SECOND, World, system_time},
};

/// One millisecond of [`Micros`].
const MS: Micros = 1_000;

/// How long before a window's close (in its host's clock) an exporter snapshots the
/// connections still open (a tenth of the window, at most 1 s).
const SNAPSHOT_BEFORE_CLOSE: Micros = 500 * MS;

/// A record waiting in its host's exporter for its window to close.
#[derive(Clone, Debug)]
pub struct Pending {
    /// The batcher's window (minutes since T0, in the host's clock).
    pub window: i64,
    /// The record.
    pub record: FlowRecord,
    /// Its true remote.
    pub truth: Truth,
}

/// Kinds of connections, for the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnKind {
    /// Workload to workload; both write a record.
    Normal,
    /// To a service in the static table.
    Static,
    /// To a service in no table.
    Unmanaged,
    /// From a pod host's own IP (no identity) to one of its pods.
    Probe,
    /// Refused by the server's host (the client's record only).
    Refused,
    /// To an IP nobody owns any more (timed out; the client's record only).
    Stale,
    /// Opened before the exporters started: no start time.
    NoStart,
    /// Right after the server started.
    AfterStart,
    /// Right before the server stopped.
    BeforeStop,
    /// Open for minutes: interim records at every window close it spans.
    LongLived,
}

impl ConnKind {
    /// Every kind, in report order.
    pub const ALL: [ConnKind; 10] = [
        ConnKind::Normal,
        ConnKind::Static,
        ConnKind::Unmanaged,
        ConnKind::Probe,
        ConnKind::Refused,
        ConnKind::Stale,
        ConnKind::NoStart,
        ConnKind::AfterStart,
        ConnKind::BeforeStop,
        ConnKind::LongLived,
    ];

    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnKind::Normal => "workload_to_workload",
            ConnKind::Static => "to_static_service",
            ConnKind::Unmanaged => "to_unmanaged_service",
            ConnKind::Probe => "host_probe",
            ConnKind::Refused => "refused",
            ConnKind::Stale => "to_released_ip",
            ConnKind::NoStart => "no_start_time",
            ConnKind::AfterStart => "right_after_server_start",
            ConnKind::BeforeStop => "right_before_server_stop",
            ConnKind::LongLived => "long_lived",
        }
    }

    fn index(self) -> usize {
        ConnKind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// What was generated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrafficCounts {
    /// Connections, by [`ConnKind::ALL`] order.
    pub connections: [u64; ConnKind::ALL.len()],
    /// Records (one or two per connection, and the interim ones).
    pub records: u64,
    /// Interim records among them.
    pub interim_records: u64,
}

impl TrafficCounts {
    /// Connections of `kind`.
    pub fn of(&self, kind: ConnKind) -> u64 {
        self.connections[kind.index()]
    }

    /// All connections.
    pub fn total(&self) -> u64 {
        self.connections.iter().sum()
    }
}

/// Who opened a connection.
#[derive(Clone, Copy, Debug)]
enum Client {
    Workload(u32),
    /// A process of the host itself, on the host IP, without identity.
    HostProcess(u32),
}

/// Where it went.
#[derive(Clone, Copy, Debug)]
enum Server {
    Workload(u32),
    Static(u16),
    Unmanaged(u16),
    /// An IP nobody owns.
    Released(Ipv4Addr),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Normal,
    Refused,
    TimedOut,
}

#[derive(Clone, Copy, Debug)]
struct Conn {
    client: Client,
    server: Server,
    t_start: Option<Micros>,
    t_end: Micros,
    outcome: Outcome,
    kind: ConnKind,
}

/// Generates connections minute by minute.
#[derive(Debug)]
pub struct Traffic {
    rng: fastrand::Rng,
    counts: TrafficCounts,
    /// When the traffic ends: a long-lived connection closes before.
    end: Micros,
    /// The last socket cookie handed out.
    cookie: u64,
}

impl Traffic {
    /// A generator seeded with `seed`, whose connections all close before `end`.
    pub fn new(seed: u64, end: Micros) -> Traffic {
        Traffic {
            rng: fastrand::Rng::with_seed(seed),
            counts: TrafficCounts::default(),
            end,
            cookie: 0,
        }
    }

    /// What it generated so far.
    pub fn counts(&self) -> &TrafficCounts {
        &self.counts
    }

    /// The connections of the minute from `from` to `to` (`world` has run through
    /// it): their records go to `out[host]`.
    pub fn minute(
        &mut self,
        world: &mut World,
        from: Micros,
        to: Micros,
        per_host: u32,
        out: &mut [Vec<Pending>],
    ) {
        for i in 0..world.started.len() {
            let s = world.started[i];
            if let Some(conn) = self.after_start(world, s) {
                self.emit(world, conn, out);
            }
        }
        for i in 0..world.stopped.len() {
            let s = world.stopped[i];
            if let Some(conn) = self.before_stop(world, s) {
                self.emit(world, conn, out);
            }
        }
        for h in 0..world.hosts.len() as u32 {
            for _ in 0..per_host {
                if let Some(conn) = self.connection(world, h, from, to) {
                    self.emit(world, conn, out);
                }
            }
        }
    }

    /// A short connection of a random kind opened by host `h`.
    fn connection(&mut self, world: &mut World, h: u32, from: Micros, to: Micros) -> Option<Conn> {
        let roll = self.rng.u32(..1000);
        if world.hosts[h as usize].kind == HostKind::Pod && roll < 30 {
            return self.probe(world, h, from, to);
        }
        let (client, lo, hi) = self.pick_client(world, h, from, to)?;
        let t_end = self.rng.i64(lo..hi);
        let client_start = world.workloads[client as usize].start;
        let t_start = (t_end - self.duration()).max(client_start + MS);
        let conn = |server, t_start, outcome, kind| Conn {
            client: Client::Workload(client),
            server,
            t_start: Some(t_start),
            t_end,
            outcome,
            kind,
        };
        match roll {
            30..90 => {
                let s = self.rng.usize(..world.static_services.len());
                return Some(conn(
                    Server::Static(s as u16),
                    t_start,
                    Outcome::Normal,
                    ConnKind::Static,
                ));
            }
            90..110 => {
                let s = self.rng.usize(..world.unmanaged_services.len());
                return Some(conn(
                    Server::Unmanaged(s as u16),
                    t_start,
                    Outcome::Normal,
                    ConnKind::Unmanaged,
                ));
            }
            110..120 => {
                if let Some(conn) = self.stale(world, client, from, to) {
                    return Some(conn);
                }
            }
            120..130 => {
                if let Some(conn) = self.no_start(world, client, t_end) {
                    return Some(conn);
                }
            }
            160..200 => {
                if let Some(conn) = self.long_lived(world, client, lo, hi) {
                    return Some(conn);
                }
            }
            _ => {}
        }
        let server = self.pick_server(world, client, t_end)?;
        let t_start = t_start.max(world.workloads[server as usize].start + MS);
        if (130..160).contains(&roll) {
            let t_start = t_end - self.rng.i64(200..2 * MS);
            let t_start = t_start.max(world.workloads[server as usize].start + MS);
            return Some(conn(
                Server::Workload(server),
                t_start,
                Outcome::Refused,
                ConnKind::Refused,
            ));
        }
        Some(conn(
            Server::Workload(server),
            t_start,
            Outcome::Normal,
            ConnKind::Normal,
        ))
    }

    /// A kubelet-style probe from pod host `h`'s own IP to one of its pods.
    fn probe(&mut self, world: &World, h: u32, from: Micros, to: Micros) -> Option<Conn> {
        let list = &world.live_by_host[h as usize];
        if list.is_empty() {
            return None;
        }
        let t_end = self.rng.i64(from..to);
        let t_start = t_end - self.rng.i64(MS..20 * MS);
        for _ in 0..4 {
            let s = list[self.rng.usize(..list.len())];
            if world.workloads[s as usize].runs_through(t_start, t_end) {
                return Some(Conn {
                    client: Client::HostProcess(h),
                    server: Server::Workload(s),
                    t_start: Some(t_start),
                    t_end,
                    outcome: Outcome::Normal,
                    kind: ConnKind::Probe,
                });
            }
        }
        None
    }

    /// A connection attempt to an IP whose owner stopped at least 10 s before and
    /// that nobody took since (a stale endpoint list): it times out.
    fn stale(&mut self, world: &mut World, client: u32, from: Micros, to: Micros) -> Option<Conn> {
        // At least 15 s before the end of the minute: the world knows that nobody
        // takes the IP until then.
        let latest = to - 15 * SECOND;
        let w = &world.workloads[client as usize];
        let lo = from.max(w.start + 3 * SECOND + MS);
        let hi = latest.min(w.stop);
        if lo >= hi {
            return None;
        }
        let t_end = self.rng.i64(lo..hi);
        let t_start = t_end - 3 * SECOND;
        for _ in 0..4 {
            let h = self.rng.u32(..world.hosts.len() as u32);
            if let Some(ip) = world.stale_ip(h, t_start - 10 * SECOND) {
                return Some(Conn {
                    client: Client::Workload(client),
                    server: Server::Released(ip),
                    t_start: Some(t_start),
                    t_end,
                    outcome: Outcome::TimedOut,
                    kind: ConnKind::Stale,
                });
            }
        }
        None
    }

    /// A connection opened before the exporters started, between two workloads that
    /// ran since then, closing at `t_end`: no start time on either side.
    fn no_start(&mut self, world: &World, client: u32, t_end: Micros) -> Option<Conn> {
        if !world.workloads[client as usize].initial() {
            return None;
        }
        for _ in 0..8 {
            let s = world.live_servers[self.rng.usize(..world.live_servers.len().max(1))];
            let server = &world.workloads[s as usize];
            if s != client && server.initial() && t_end < server.stop {
                return Some(Conn {
                    client: Client::Workload(client),
                    server: Server::Workload(s),
                    t_start: None,
                    t_end,
                    outcome: Outcome::Normal,
                    kind: ConnKind::NoStart,
                });
            }
        }
        None
    }

    /// A connection from `client` opening between `lo` and `hi` and staying open for
    /// minutes, to a server that runs all that time.
    fn long_lived(&mut self, world: &World, client: u32, lo: Micros, hi: Micros) -> Option<Conn> {
        let t_start = self.rng.i64(lo..hi);
        let t_end = t_start + self.rng.i64(70 * SECOND..4 * MINUTE);
        let through = |w: u32| world.workloads[w as usize].runs_through(t_start - MS, t_end + MS);
        if t_end >= self.end || !through(client) || world.live_servers.is_empty() {
            return None;
        }
        for _ in 0..8 {
            let s = world.live_servers[self.rng.usize(..world.live_servers.len())];
            if s != client && through(s) {
                return Some(Conn {
                    client: Client::Workload(client),
                    server: Server::Workload(s),
                    t_start: Some(t_start),
                    t_end,
                    outcome: Outcome::Normal,
                    kind: ConnKind::LongLived,
                });
            }
        }
        None
    }

    /// The first connection to server `s`, right after its start.
    fn after_start(&mut self, world: &World, s: u32) -> Option<Conn> {
        let server = &world.workloads[s as usize];
        server.listen_port?;
        let t_start = server.start + self.rng.i64(MS..500 * MS);
        let t_end = t_start + self.rng.i64(MS..100 * MS);
        let client = self.client_through(world, s, t_start, t_end)?;
        Some(Conn {
            client: Client::Workload(client),
            server: Server::Workload(s),
            t_start: Some(t_start),
            t_end,
            outcome: Outcome::Normal,
            kind: ConnKind::AfterStart,
        })
    }

    /// The last connection to server `s`, right before its stop.
    fn before_stop(&mut self, world: &World, s: u32) -> Option<Conn> {
        let server = &world.workloads[s as usize];
        server.listen_port?;
        let t_end = server.stop - self.rng.i64(MS..500 * MS);
        let t_start = (t_end - self.rng.i64(MS..100 * MS)).max(server.start + MS);
        if t_start >= t_end {
            return None;
        }
        let client = self.client_through(world, s, t_start, t_end)?;
        Some(Conn {
            client: Client::Workload(client),
            server: Server::Workload(s),
            t_start: Some(t_start),
            t_end,
            outcome: Outcome::Normal,
            kind: ConnKind::BeforeStop,
        })
    }

    /// A workload of a random host, other than `not`, running from `from` to `to`.
    fn client_through(&mut self, world: &World, not: u32, from: Micros, to: Micros) -> Option<u32> {
        for _ in 0..8 {
            let list = &world.live_by_host[self.rng.usize(..world.hosts.len())];
            if list.is_empty() {
                continue;
            }
            let c = list[self.rng.usize(..list.len())];
            if c != not && world.workloads[c as usize].runs_through(from, to) {
                return Some(c);
            }
        }
        None
    }

    /// A workload of host `h` running during part of the minute, and the times in the
    /// minute at which it runs.
    fn pick_client(
        &mut self,
        world: &World,
        h: u32,
        from: Micros,
        to: Micros,
    ) -> Option<(u32, Micros, Micros)> {
        let list = &world.live_by_host[h as usize];
        if list.is_empty() {
            return None;
        }
        for _ in 0..4 {
            let c = list[self.rng.usize(..list.len())];
            let w = &world.workloads[c as usize];
            let lo = from.max(w.start + 2 * MS);
            let hi = to.min(w.stop);
            if lo < hi {
                return Some((c, lo, hi));
            }
        }
        None
    }

    /// A server other than `client` that started before `t_end` (by 1 ms at least)
    /// and stops after it.
    fn pick_server(&mut self, world: &World, client: u32, t_end: Micros) -> Option<u32> {
        if world.live_servers.is_empty() {
            return None;
        }
        for _ in 0..8 {
            let s = world.live_servers[self.rng.usize(..world.live_servers.len())];
            let w = &world.workloads[s as usize];
            if s != client && w.start + MS < t_end && t_end < w.stop {
                return Some(s);
            }
        }
        None
    }

    /// Most connections are short; some last seconds, a few minutes.
    fn duration(&mut self) -> Micros {
        match self.rng.u8(..100) {
            0..70 => self.rng.i64(MS..200 * MS),
            70..95 => self.rng.i64(200 * MS..10 * SECOND),
            _ => self.rng.i64(10 * SECOND..5 * MINUTE),
        }
    }

    /// Writes the records of `conn`: the client's, and the server's when the server
    /// runs an exporter and the connection was established.
    fn emit(&mut self, world: &mut World, conn: Conn, out: &mut [Vec<Pending>]) {
        self.counts.connections[conn.kind.index()] += 1;
        let (client_host, client_addr, client_truth) = match conn.client {
            Client::Workload(w) => {
                let port = world.client_port(w);
                let workload = &world.workloads[w as usize];
                (
                    workload.host,
                    SocketAddrV4::new(workload.ip, port),
                    Truth::Workload(w),
                )
            }
            Client::HostProcess(h) => {
                let port = world.host_port(h);
                (
                    h,
                    SocketAddrV4::new(world.hosts[h as usize].ip, port),
                    Truth::Nobody,
                )
            }
        };
        let (server_addr, server_truth) = match conn.server {
            Server::Workload(s) => {
                let w = &world.workloads[s as usize];
                let port = match conn.outcome {
                    Outcome::Refused => CLOSED_PORT,
                    _ => w.listen_port.unwrap_or(CLOSED_PORT),
                };
                (SocketAddrV4::new(w.ip, port), Truth::Workload(s))
            }
            Server::Static(i) => {
                let s = &world.static_services[usize::from(i)];
                (SocketAddrV4::new(s.ip, s.port), Truth::Static(i))
            }
            Server::Unmanaged(i) => {
                let s = &world.unmanaged_services[usize::from(i)];
                (SocketAddrV4::new(s.ip, s.port), Truth::Unmanaged(i))
            }
            Server::Released(ip) => (SocketAddrV4::new(ip, 8080), Truth::Nobody),
        };
        let (close_state, close_reason) = match conn.outcome {
            Outcome::Normal => (TcpState(7), CloseReason::Normal),
            Outcome::Refused => (TcpState(2), CloseReason::Refused),
            Outcome::TimedOut => (TcpState(2), CloseReason::ConnectTimedOut),
        };
        let established = conn.outcome == Outcome::Normal;
        let (out_dir, in_dir) = match conn.t_start {
            Some(_) => (Direction::Outbound, Direction::Inbound),
            None => (Direction::Unknown, Direction::Unknown),
        };
        let identity = |c: Client| match c {
            Client::Workload(w) => {
                let w = &world.workloads[w as usize];
                (Some(w.name.clone()), w.identity)
            }
            Client::HostProcess(_) => (None, IdentitySource::None(UnattributedReason::NoMatch)),
        };
        let client_identity = identity(conn.client);
        let process = match (conn.client, out_dir) {
            (Client::Workload(w), Direction::Outbound) => {
                Some(ProcessInfo::new(1_000 + w, "app", 4_000 + u64::from(w)))
            }
            _ => None,
        };
        let stats = self.stats(established);
        let skew = world.hosts[client_host as usize].skew;
        let client_flow = self.flow_id(client_host);
        let record = FlowRecord {
            local: SocketAddr::V4(client_addr),
            remote: SocketAddr::V4(server_addr),
            direction: out_dir,
            t_start: conn.t_start.map(|t| system_time(t + skew)),
            t_end: system_time(conn.t_end + skew),
            close_state,
            close_reason,
            stats,
            local_workload_id: client_identity.0,
            identity_source: client_identity.1,
            incomplete: false,
            record_kind: RecordKind::Final,
            flow_id: Some(client_flow),
            process,
        };
        self.interim(out, client_host, &conn, &record, skew, server_truth);
        push(out, client_host, conn.t_end + skew, record, server_truth);
        self.counts.records += 1;

        let Server::Workload(s) = conn.server else {
            return;
        };
        if !established {
            return;
        }
        let w = &world.workloads[s as usize];
        let skew = world.hosts[w.host as usize].skew;
        // The server's socket opens a few hundred microseconds after the client's and
        // closes about when it does.
        let t_start = conn
            .t_start
            .map(|t| (t + self.rng.i64(50..400)).min(conn.t_end));
        let server_flow = self.flow_id(w.host);
        let record = FlowRecord {
            local: SocketAddr::V4(server_addr),
            remote: SocketAddr::V4(client_addr),
            direction: in_dir,
            t_start: t_start.map(|t| system_time(t + skew)),
            t_end: system_time(conn.t_end + skew),
            close_state,
            close_reason,
            stats: SocketStats {
                bytes_sent: stats.bytes_received,
                bytes_received: stats.bytes_sent,
                segs_in: stats.segs_out,
                segs_out: stats.segs_in,
                ..stats
            },
            local_workload_id: Some(w.name.clone()),
            identity_source: w.identity,
            incomplete: false,
            record_kind: RecordKind::Final,
            flow_id: Some(server_flow),
            process: None,
        };
        let conn = Conn { t_start, ..conn };
        self.interim(out, w.host, &conn, &record, skew, client_truth);
        push(out, w.host, conn.t_end + skew, record, client_truth);
        self.counts.records += 1;
    }

    /// A new connection's ID on host `h`: the host's boot ID, a fresh socket cookie.
    fn flow_id(&mut self, h: u32) -> FlowId {
        self.cookie += 1;
        let mut boot_id = [0xb0; 16];
        boot_id[12..].copy_from_slice(&h.to_be_bytes());
        FlowId {
            boot_id,
            cookie: self.cookie,
        }
    }

    /// The interim records of one end (`final_record`, on `host`, whose clock is
    /// `skew` ahead) of a long-lived connection: one shortly before the close of every
    /// window, in the host's clock, that the connection is open across.
    fn interim(
        &mut self,
        out: &mut [Vec<Pending>],
        host: u32,
        conn: &Conn,
        final_record: &FlowRecord,
        skew: Micros,
        truth: Truth,
    ) {
        if conn.kind != ConnKind::LongLived {
            return;
        }
        let Some(t_start) = conn.t_start else {
            return;
        };
        let (start, end) = (t_start + skew, conn.t_end + skew);
        let mut close = (start.div_euclid(MINUTE) + 1) * MINUTE;
        while close <= end {
            let snapshot = close - SNAPSHOT_BEFORE_CLOSE;
            if snapshot > start {
                let record = FlowRecord {
                    t_end: system_time(snapshot),
                    close_state: TcpState(1),
                    close_reason: CloseReason::Normal,
                    record_kind: RecordKind::Interim,
                    ..final_record.clone()
                };
                push(out, host, snapshot, record, truth);
                self.counts.records += 1;
                self.counts.interim_records += 1;
            }
            close += MINUTE;
        }
    }

    fn stats(&mut self, established: bool) -> SocketStats {
        if !established {
            return SocketStats {
                segs_out: 1 + u32::from(self.rng.u8(..4)),
                ..SocketStats::default()
            };
        }
        SocketStats {
            bytes_sent: self.rng.u64(..20_000),
            bytes_received: self.rng.u64(..200_000),
            segs_in: self.rng.u32(2..200),
            segs_out: self.rng.u32(2..100),
            retransmits: u32::from(self.rng.u8(..3)),
            bytes_retransmitted: 0,
            srtt_us: self.rng.u32(50..5_000),
            rttvar_us: self.rng.u32(10..2_000),
        }
    }
}

fn push(out: &mut [Vec<Pending>], host: u32, t_end_host: Micros, record: FlowRecord, truth: Truth) {
    if let Some(pending) = out.get_mut(host as usize) {
        pending.push(Pending {
            window: t_end_host.div_euclid(MINUTE),
            record,
            truth,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, net::IpAddr};

    use super::*;
    use crate::fleet::{config::FleetConfig, world::T0_SECS};

    fn micros(t: std::time::SystemTime) -> Micros {
        let d = t
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as i64;
        d - T0_SECS as i64 * SECOND
    }

    /// Runs `minutes` of a small fleet (whose traffic goes on 20 minutes) and returns
    /// the world and every record.
    fn generate(minutes: i64) -> (World, Vec<(u32, Pending)>, TrafficCounts) {
        let config = FleetConfig {
            hosts: 30,
            workloads_per_host: 6,
            mean_lifetime: std::time::Duration::from_secs(4 * 60),
            ..FleetConfig::default()
        };
        let mut world = World::new(&config, 11);
        let mut traffic = Traffic::new(12, 20 * MINUTE);
        let mut out = vec![Vec::new(); config.hosts as usize];
        for m in 0..minutes {
            world.run_minute(m * MINUTE, (m + 1) * MINUTE);
            traffic.minute(&mut world, m * MINUTE, (m + 1) * MINUTE, 40, &mut out);
        }
        let records = out
            .into_iter()
            .enumerate()
            .flat_map(|(h, v)| v.into_iter().map(move |p| (h as u32, p)))
            .collect();
        let counts = traffic.counts().clone();
        (world, records, counts)
    }

    #[test]
    fn the_truth_owns_the_remote_ip_for_the_whole_connection() {
        let (world, records, _) = generate(20);
        for (h, p) in &records {
            let skew = world.hosts[*h as usize].skew;
            let t_end = micros(p.record.t_end) - skew;
            let t_start = p.record.t_start.map(|t| micros(t) - skew);
            let ip = match p.record.remote.ip() {
                IpAddr::V4(ip) => ip,
                IpAddr::V6(_) => panic!("IPv4 only"),
            };
            match p.truth {
                Truth::Workload(w) => {
                    let w = &world.workloads[w as usize];
                    assert_eq!(w.ip, ip);
                    let from = t_start.unwrap_or(0);
                    assert!(
                        w.start < from && t_end < w.stop,
                        "{w:?} {t_start:?} {t_end}"
                    );
                }
                Truth::Static(s) => assert_eq!(world.static_services[s as usize].ip, ip),
                Truth::Unmanaged(s) => assert_eq!(world.unmanaged_services[s as usize].ip, ip),
                Truth::Nobody => {
                    // A host IP of a pod host, or a pod IP nobody owned then.
                    for w in world.owners_of(ip) {
                        let from = t_start.unwrap_or(t_end) - 10 * SECOND;
                        assert!(w.stop < from || w.start > t_end + 10 * SECOND, "{w:?}");
                    }
                }
            }
            // The local side is the record's own workload, which ran then.
            if let Some(id) = &p.record.local_workload_id {
                let mine = world
                    .workloads
                    .iter()
                    .find(|w| &w.name == id && w.host == *h)
                    .expect("the local workload");
                assert!(mine.start < t_start.unwrap_or(0) && t_end < mine.stop);
            }
        }
    }

    #[test]
    fn every_kind_of_connection_occurs() {
        let (_, records, counts) = generate(20);
        for kind in ConnKind::ALL {
            assert!(counts.of(kind) > 0, "no {kind:?}");
        }
        assert_eq!(counts.records, records.len() as u64);
        assert!(
            records
                .iter()
                .any(|(_, p)| p.record.identity_source == IdentitySource::ConnectMap)
        );
        assert!(records.iter().any(|(_, p)| p.record.t_start.is_none()));
    }

    #[test]
    fn long_lived_connections_send_an_interim_record_per_window_close() {
        let (_, records, counts) = generate(20);
        assert!(counts.interim_records > 0);
        // Per end of a connection (its flow ID): its records, final last.
        let mut by_flow: HashMap<FlowId, Vec<&Pending>> = HashMap::new();
        for (_, p) in &records {
            let id = p.record.flow_id.expect("every record has a flow ID");
            by_flow.entry(id).or_default().push(p);
        }
        let mut spanning = 0;
        for (id, list) in &by_flow {
            let finals: Vec<_> = list
                .iter()
                .filter(|p| p.record.record_kind == RecordKind::Final)
                .collect();
            assert_eq!(finals.len(), 1, "{id:?}");
            let last = &finals[0].record;
            // In the host's clock, as the exporter's windows are.
            let Some(start) = last.t_start.map(micros) else {
                continue;
            };
            let end = micros(last.t_end);
            let mut interims: Vec<_> = list
                .iter()
                .filter(|p| p.record.record_kind == RecordKind::Interim)
                .collect();
            interims.sort_by_key(|p| p.record.t_end);
            if interims.is_empty() {
                // Not a long-lived connection (the others send their final record only).
                continue;
            }
            // One per window close inside the connection, in the window that closes.
            let closes = (start.div_euclid(MINUTE) + 1..=end.div_euclid(MINUTE))
                .filter(|k| k * MINUTE - SNAPSHOT_BEFORE_CLOSE > start)
                .count();
            assert_eq!(interims.len(), closes, "{id:?}");
            for p in &interims {
                let t = micros(p.record.t_end);
                assert!(start < t && t < end);
                assert_eq!(p.window, (t + SNAPSHOT_BEFORE_CLOSE) / MINUTE - 1);
                assert_eq!(p.truth, finals[0].truth);
                assert_eq!(
                    (p.record.local, p.record.remote, p.record.t_start),
                    (last.local, last.remote, last.t_start)
                );
            }
            spanning += 1;
        }
        assert!(spanning > 0);
    }

    #[test]
    fn no_two_overlapping_connections_share_a_four_tuple() {
        let (world, records, _) = generate(20);
        let mut by_tuple: HashMap<(SocketAddr, SocketAddr), Vec<(Micros, Micros)>> = HashMap::new();
        for (h, p) in &records {
            if p.record.direction == Direction::Inbound
                || p.record.record_kind == RecordKind::Interim
            {
                continue;
            }
            let skew = world.hosts[*h as usize].skew;
            let t_end = micros(p.record.t_end) - skew;
            let t_start = p.record.t_start.map_or(Micros::MIN, |t| micros(t) - skew);
            by_tuple
                .entry((p.record.local, p.record.remote))
                .or_default()
                .push((t_start, t_end));
        }
        for (tuple, mut times) in by_tuple {
            times.sort();
            for pair in times.windows(2) {
                assert!(pair[0].1 < pair[1].0, "{tuple:?} reused while open");
            }
        }
    }

    #[test]
    fn shared_host_clients_are_told_apart_by_port() {
        let (_, records, _) = generate(10);
        let mut owner = HashMap::new();
        for (_, p) in &records {
            if p.record.identity_source == IdentitySource::ConnectMap {
                let id = p.record.local_workload_id.clone();
                let first = owner.entry(p.record.local).or_insert_with(|| id.clone());
                assert_eq!(*first, id, "{} used by two workloads", p.record.local);
            }
        }
        assert!(!owner.is_empty());
    }
}
