//! The fleet: hosts, the workloads that start and stop on them, and which workload
//! owns which IP when.
//!
//! Three kinds of hosts (by host index, so every fleet of 10 or more hosts has all
//! three):
//! - pod hosts ([`HostKind::Pod`]): every workload has its own IPv4 from the host's
//!   pod CIDR (`10.128.0.0/9`, a /24 per host), resolved by the IP map. The pool holds
//!   a quarter more IPs than the host has slots, so a released IP is taken again
//!   minutes later (the least recently released one), and sometimes within seconds
//!   (a replacement that takes back the IP its predecessor just released). Processes
//!   of the host itself (kubelet probes) connect from the host IP without an identity.
//! - shared-IPv4 hosts ([`HostKind::Shared`]): the workloads share the host's IPv4 and
//!   connect out through the connect map, each from its own block of local ports.
//!   They are clients only.
//! - VMs ([`HostKind::Vm`]): one workload on the host IP for the whole run, resolved
//!   by the host certificate.
//!
//! Besides: services without an exporter at fixed IPs, some in the collector's static
//! table (a database, a load balancer pool), some in none (unmanaged).
//!
//! Times are microseconds of true time since [`T0_SECS`]; each host's clock is off by
//! its [`Host::skew`].

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque},
    net::Ipv4Addr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use flow_batch::wire::InstanceId;
use flow_record::{IdentitySource, WorkloadId};

use crate::fleet::config::FleetConfig;

/// Simulated time: microseconds since [`T0_SECS`] (negative before it).
pub type Micros = i64;

/// The start of the simulation, seconds since the Unix epoch: a whole minute
/// (2023-11-14T22:14:00Z), so that simulated minutes are the batcher's windows.
pub const T0_SECS: u64 = 1_700_000_040;

/// One second of [`Micros`].
pub const SECOND: Micros = 1_000_000;

/// One minute of [`Micros`].
pub const MINUTE: Micros = 60 * SECOND;

/// The port the pod workloads listen on.
pub const POD_PORT: u16 = 8080;

/// The port the VM workloads listen on.
pub const VM_PORT: u16 = 443;

/// A port nothing listens on (connections to it are refused).
pub const CLOSED_PORT: u16 = 9;

/// The collector's static table of the simulated fleet (`<IP or CIDR> <name>` lines).
pub const STATIC_TABLE: &str = "\
10.250.0.10 db-primary
10.250.0.11 db-replica
10.250.1.0/28 lb-public
";

/// `t` as wall-clock time.
pub fn system_time(t: Micros) -> SystemTime {
    let t0 = UNIX_EPOCH + Duration::from_secs(T0_SECS);
    if t >= 0 {
        t0 + Duration::from_micros(t.unsigned_abs())
    } else {
        t0 - Duration::from_micros(t.unsigned_abs())
    }
}

/// The index of the host called `name` (`host-00042` is 42).
pub fn host_index(name: &str) -> Option<u32> {
    name.strip_prefix("host-")?.parse().ok()
}

/// What kind of host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// A workload per IP (IP map), IPs reused.
    Pod,
    /// Workloads share the host IPv4 (connect map), told apart by local port.
    Shared,
    /// One workload on the host IP (certificate).
    Vm,
}

impl HostKind {
    /// The kind of host `index`: one host in ten shares its IPv4, one in ten is a VM.
    pub fn of(index: u32) -> HostKind {
        match index % 10 {
            3 => HostKind::Shared,
            6 => HostKind::Vm,
            _ => HostKind::Pod,
        }
    }
}

/// One IP of a pod host's pool.
#[derive(Clone, Debug)]
struct PoolIp {
    ip: Ipv4Addr,
    in_use: bool,
    /// When it was last released; `None` when it was never used in the run.
    freed_at: Option<Micros>,
    /// Its next ephemeral port (per IP, as the kernel's are).
    next_port: u16,
}

/// One workload slot of a host.
#[derive(Clone, Debug, Default)]
struct Slot {
    current: Option<u32>,
    generation: u32,
    /// The pool index of the IP of its last workload.
    last_ip: Option<u16>,
    /// Shared hosts: the slot's block of local ports and the next one.
    port_base: u16,
    port_count: u16,
    next_port: u16,
}

/// A host running an exporter.
#[derive(Clone, Debug)]
pub struct Host {
    /// Its host ID (`host-00042`).
    pub name: String,
    /// Its kind.
    pub kind: HostKind,
    /// Its IPv4 (in 10.0.0.0/16).
    pub ip: Ipv4Addr,
    /// How far its clock is ahead of true time (negative: behind).
    pub skew: Micros,
    /// Its exporter's instance ID.
    pub instance: InstanceId,
    slots: Vec<Slot>,
    pool: Vec<PoolIp>,
    /// Free pool indexes, least recently released first.
    free: VecDeque<u16>,
    /// The next ephemeral port of the host IP.
    next_port: u16,
}

/// A workload: one pod, container or VM from its start to its stop.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Its ID (unique in the run).
    pub name: WorkloadId,
    /// Its host's index.
    pub host: u32,
    /// Its slot on the host.
    pub slot: u16,
    /// Its IP (the host's, on shared hosts and VMs).
    pub ip: Ipv4Addr,
    /// How its host's exporter resolves it.
    pub identity: IdentitySource,
    /// When it started (before 0: before the exporters started).
    pub start: Micros,
    /// When it stops (`Micros::MAX`: never).
    pub stop: Micros,
    /// The port it listens on; `None` for clients only.
    pub listen_port: Option<u16>,
    /// Its pool index (pod hosts).
    pool_index: Option<u16>,
}

impl Workload {
    /// Whether it runs from `from` to `to` (both included).
    pub fn runs_through(&self, from: Micros, to: Micros) -> bool {
        self.start < from && to < self.stop
    }

    /// Whether it started before the exporters did.
    pub fn initial(&self) -> bool {
        self.start < 0
    }
}

/// A service without an exporter.
#[derive(Clone, Debug)]
pub struct Service {
    /// Its IP.
    pub ip: Ipv4Addr,
    /// Its port.
    pub port: u16,
    /// Its name: in the static table (static services), or only for reports
    /// (unmanaged ones).
    pub name: WorkloadId,
}

/// A change to a slot, at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// The slot's workload stops (ordered first: a released IP can be taken at once).
    Stop,
    /// A new workload starts in the slot; `fast`: it takes back its predecessor's IP
    /// if still free.
    Start { fast: bool },
}

/// The whole fleet over time.
#[derive(Debug)]
pub struct World {
    /// The hosts, by index.
    pub hosts: Vec<Host>,
    /// Every workload that ever ran, by ID number.
    pub workloads: Vec<Workload>,
    /// Services in the static table.
    pub static_services: Vec<Service>,
    /// Services in no table.
    pub unmanaged_services: Vec<Service>,
    /// Workloads that run at some time of the current minute.
    pub live: Vec<u32>,
    /// Of [`live`](World::live), those that accept connections.
    pub live_servers: Vec<u32>,
    /// Of [`live`](World::live), by host.
    pub live_by_host: Vec<Vec<u32>>,
    /// Workloads started during the current minute.
    pub started: Vec<u32>,
    /// Workloads stopped during the current minute.
    pub stopped: Vec<u32>,
    events: BinaryHeap<Reverse<(Micros, Event, u32, u16)>>,
    rng: fastrand::Rng,
    mean_lifetime: Micros,
    now: Micros,
}

impl World {
    /// The fleet at time 0, its workloads started at random times before.
    pub fn new(config: &FleetConfig, seed: u64) -> World {
        let mut rng = fastrand::Rng::with_seed(seed);
        let half_skew = i64::try_from(config.max_skew.as_micros() / 2).unwrap_or(0);
        let mean_lifetime = i64::try_from(config.mean_lifetime.as_micros()).unwrap_or(i64::MAX);
        let mut world = World {
            hosts: Vec::with_capacity(config.hosts as usize),
            workloads: Vec::new(),
            static_services: static_services(),
            unmanaged_services: unmanaged_services(),
            live: Vec::new(),
            live_servers: Vec::new(),
            live_by_host: vec![Vec::new(); config.hosts as usize],
            started: Vec::new(),
            stopped: Vec::new(),
            events: BinaryHeap::new(),
            rng,
            mean_lifetime,
            now: 0,
        };
        rng = world.rng.fork();
        let slots = config.workloads_per_host;
        for h in 0..config.hosts {
            let kind = HostKind::of(h);
            let pool_size = match kind {
                HostKind::Pod => slots + (slots / 4).max(2),
                _ => 0,
            };
            let pod_net = 0x0a80_0000u32 + (h << 8);
            let pool = (1..=pool_size)
                .map(|i| PoolIp {
                    ip: Ipv4Addr::from(pod_net + u32::from(i)),
                    in_use: false,
                    freed_at: None,
                    next_port: 32768 + rng.u16(..20_000),
                })
                .collect();
            let block = (50_000 / slots).min(250);
            let host = Host {
                name: format!("host-{h:05}"),
                kind,
                ip: Ipv4Addr::from(0x0a00_0000u32 + h + 1),
                skew: if half_skew > 0 {
                    rng.i64(-half_skew..=half_skew)
                } else {
                    0
                },
                instance: InstanceId::new(rng.u128(..)),
                slots: (0..slots)
                    .map(|s| Slot {
                        port_base: 10_000 + s * block,
                        port_count: block,
                        next_port: rng.u16(..block),
                        ..Slot::default()
                    })
                    .collect(),
                pool,
                free: (0..pool_size).collect(),
                next_port: 32768 + rng.u16(..20_000),
            };
            world.hosts.push(host);
            match kind {
                HostKind::Vm => {
                    world.start_workload(h, 0, Micros::MIN / 4, Micros::MAX, false);
                }
                _ => {
                    for s in 0..slots {
                        let life = world.lifetime();
                        let age = world.rng.i64(0..life);
                        world.start_workload(h, s, -age, life - age, false);
                    }
                }
            }
        }
        world.live = (0..world.workloads.len() as u32).collect();
        world.rebuild_live_lists();
        world
    }

    /// The current time (what [`run_minute`](World::run_minute) reached).
    pub fn now(&self) -> Micros {
        self.now
    }

    /// Runs the fleet's starts and stops up to (not including) `to`, the end of a
    /// minute that begins at `from`, and lists what runs during the minute.
    pub fn run_minute(&mut self, from: Micros, to: Micros) {
        self.started.clear();
        self.stopped.clear();
        let workloads = &self.workloads;
        self.live.retain(|&w| workloads[w as usize].stop > from);
        while let Some(&Reverse((at, event, host, slot))) = self.events.peek() {
            if at >= to {
                break;
            }
            self.events.pop();
            match event {
                Event::Stop => self.stop_workload(host, slot, at),
                Event::Start { fast } => {
                    let life = self.lifetime();
                    self.start_workload(host, slot, at, at.saturating_add(life), fast);
                }
            }
        }
        self.now = to;
        self.rebuild_live_lists();
    }

    fn rebuild_live_lists(&mut self) {
        self.live_servers.clear();
        for list in &mut self.live_by_host {
            list.clear();
        }
        for &w in &self.live {
            let workload = &self.workloads[w as usize];
            if workload.listen_port.is_some() {
                self.live_servers.push(w);
            }
            self.live_by_host[workload.host as usize].push(w);
        }
    }

    /// A lifetime: at least a minute, exponential above it, at most 6 hours.
    fn lifetime(&mut self) -> Micros {
        let extra = (self.mean_lifetime - MINUTE).max(SECOND) as f64;
        let u = self.rng.f64().max(1e-12);
        MINUTE + ((-u.ln() * extra) as Micros).min(6 * 60 * MINUTE)
    }

    fn start_workload(&mut self, h: u32, s: u16, start: Micros, stop: Micros, fast: bool) {
        let id = self.workloads.len() as u32;
        let host = &mut self.hosts[h as usize];
        let slot = &mut host.slots[s as usize];
        let generation = slot.generation;
        slot.generation += 1;
        let (ip, pool_index, identity, listen_port, name) = match host.kind {
            HostKind::Pod => {
                let reuse = slot
                    .last_ip
                    .filter(|_| fast)
                    .and_then(|i| host.free.iter().rposition(|&f| f == i));
                let taken = match reuse {
                    Some(at) => host.free.remove(at),
                    None => host.free.pop_front(),
                };
                // The pool holds more IPs than the host has slots: one is free.
                let index = taken.unwrap_or(0);
                slot.last_ip = Some(index);
                let entry = &mut host.pool[index as usize];
                entry.in_use = true;
                (
                    entry.ip,
                    Some(index),
                    IdentitySource::IpMap,
                    Some(POD_PORT),
                    format!("k8s:ns{}/app{s}-h{h}-{generation}", h % 7),
                )
            }
            HostKind::Shared => (
                host.ip,
                None,
                IdentitySource::ConnectMap,
                None,
                format!("ctr:h{h}/c{s}-{generation}"),
            ),
            HostKind::Vm => (
                host.ip,
                None,
                IdentitySource::Certificate,
                Some(VM_PORT),
                format!("vm:h{h}"),
            ),
        };
        slot.current = Some(id);
        let name = WorkloadId::new(name).unwrap_or_else(|_| fallback_name());
        self.workloads.push(Workload {
            name,
            host: h,
            slot: s,
            ip,
            identity,
            start,
            stop,
            listen_port,
            pool_index,
        });
        if stop != Micros::MAX {
            self.events.push(Reverse((stop, Event::Stop, h, s)));
        }
        if start >= 0 {
            self.started.push(id);
            self.live.push(id);
        }
    }

    fn stop_workload(&mut self, h: u32, s: u16, at: Micros) {
        let host = &mut self.hosts[h as usize];
        let slot = &mut host.slots[s as usize];
        let Some(id) = slot.current.take() else {
            return;
        };
        if let Some(index) = self.workloads[id as usize].pool_index {
            let entry = &mut host.pool[index as usize];
            entry.in_use = false;
            entry.freed_at = Some(at);
            host.free.push_back(index);
        }
        self.stopped.push(id);
        // A replacement: one in five within seconds, taking back the same IP.
        let fast = self.rng.u8(..5) == 0;
        let gap = if fast {
            self.rng.i64(SECOND / 2..5 * SECOND)
        } else {
            self.rng.i64(5 * SECOND..120 * SECOND)
        };
        self.events
            .push(Reverse((at + gap, Event::Start { fast }, h, s)));
    }

    /// The next local port of a workload's connection.
    pub fn client_port(&mut self, w: u32) -> u16 {
        let workload = &self.workloads[w as usize];
        let host = &mut self.hosts[workload.host as usize];
        match (workload.pool_index, host.kind) {
            (Some(index), _) => next_ephemeral(&mut host.pool[index as usize].next_port),
            (None, HostKind::Shared) => {
                let slot = &mut host.slots[workload.slot as usize];
                let port = slot.port_base + slot.next_port;
                slot.next_port = (slot.next_port + 1) % slot.port_count.max(1);
                port
            }
            (None, _) => next_ephemeral(&mut host.next_port),
        }
    }

    /// The next local port of a connection from host `h`'s own IP (host processes).
    pub fn host_port(&mut self, h: u32) -> u16 {
        next_ephemeral(&mut self.hosts[h as usize].next_port)
    }

    /// A pod IP of host `h` that was released at or before `before` and has been
    /// free since (an IP a stale endpoint list may still point at).
    pub fn stale_ip(&mut self, h: u32, before: Micros) -> Option<Ipv4Addr> {
        let host = &self.hosts[h as usize];
        if host.free.is_empty() {
            return None;
        }
        let index = host.free[self.rng.usize(..host.free.len())];
        let entry = &host.pool[index as usize];
        match entry.freed_at {
            Some(at) if !entry.in_use && at <= before => Some(entry.ip),
            _ => None,
        }
    }

    /// The workloads that ever had `ip`, with their times (for reports).
    pub fn owners_of(&self, ip: Ipv4Addr) -> Vec<&Workload> {
        self.workloads.iter().filter(|w| w.ip == ip).collect()
    }
}

/// The next port of an ephemeral range (32768 to 60999, as Linux's default).
fn next_ephemeral(port: &mut u16) -> u16 {
    let p = *port;
    *port = if p >= 60_999 { 32_768 } else { p + 1 };
    p
}

fn fallback_name() -> WorkloadId {
    WorkloadId::new("invalid").unwrap_or_else(|_| unreachable!("a valid workload ID"))
}

fn service(ip: [u8; 4], port: u16, name: &str) -> Service {
    Service {
        ip: Ipv4Addr::from(ip),
        port,
        name: WorkloadId::new(name).unwrap_or_else(|_| fallback_name()),
    }
}

/// The services [`STATIC_TABLE`] names.
fn static_services() -> Vec<Service> {
    let mut services = vec![
        service([10, 250, 0, 10], 5432, "db-primary"),
        service([10, 250, 0, 11], 5432, "db-replica"),
    ];
    services.extend((1..=6).map(|i| service([10, 250, 1, i], 443, "lb-public")));
    services
}

/// Services in no table: the collector must leave them unattributed.
fn unmanaged_services() -> Vec<Service> {
    (1..=4)
        .map(|i| service([172, 16, 0, i], 80, &format!("unmanaged-{i}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config() -> FleetConfig {
        FleetConfig {
            hosts: 20,
            workloads_per_host: 8,
            mean_lifetime: Duration::from_secs(3 * 60),
            ..FleetConfig::default()
        }
    }

    fn run(world: &mut World, minutes: i64) {
        for m in 0..minutes {
            world.run_minute(m * MINUTE, (m + 1) * MINUTE);
        }
    }

    #[test]
    fn no_two_workloads_own_one_pod_ip_at_once_and_ips_are_reused() {
        let mut world = World::new(&config(), 7);
        run(&mut world, 60);
        let mut by_ip: HashMap<Ipv4Addr, Vec<&Workload>> = HashMap::new();
        for w in &world.workloads {
            if w.identity == IdentitySource::IpMap {
                by_ip.entry(w.ip).or_default().push(w);
            }
        }
        let (mut reused, mut within_seconds) = (0, 0);
        for owners in by_ip.values_mut() {
            owners.sort_by_key(|w| w.start);
            for pair in owners.windows(2) {
                assert!(
                    pair[0].stop < pair[1].start,
                    "{:?} overlaps {:?}",
                    pair[0],
                    pair[1]
                );
                reused += 1;
                if pair[1].start - pair[0].stop < 5 * SECOND {
                    within_seconds += 1;
                }
            }
        }
        assert!(reused > 100, "{reused} reuses");
        assert!(
            within_seconds > 10,
            "{within_seconds} reuses within seconds"
        );
        assert!(within_seconds < reused / 2);
    }

    #[test]
    fn every_slot_runs_one_workload_at_a_time_and_names_are_unique() {
        let mut world = World::new(&config(), 3);
        run(&mut world, 30);
        let mut names = std::collections::HashSet::new();
        for w in &world.workloads {
            assert!(names.insert(w.name.clone()) || w.identity == IdentitySource::Certificate);
            assert!(w.start < w.stop);
        }
        let mut by_slot: HashMap<(u32, u16), Vec<&Workload>> = HashMap::new();
        for w in &world.workloads {
            by_slot.entry((w.host, w.slot)).or_default().push(w);
        }
        for owners in by_slot.values_mut() {
            owners.sort_by_key(|w| w.start);
            for pair in owners.windows(2) {
                assert!(pair[0].stop < pair[1].start);
            }
        }
    }

    #[test]
    fn the_live_lists_hold_what_runs_during_the_minute() {
        let mut world = World::new(&config(), 5);
        for m in 0..20 {
            let (from, to) = (m * MINUTE, (m + 1) * MINUTE);
            world.run_minute(from, to);
            for (i, w) in world.workloads.iter().enumerate() {
                let runs = w.start < to && w.stop > from;
                assert_eq!(
                    world.live.contains(&(i as u32)),
                    runs,
                    "{w:?} in minute {m}"
                );
            }
            for &s in &world.live_servers {
                assert!(world.workloads[s as usize].listen_port.is_some());
            }
        }
    }

    #[test]
    fn host_kinds_identities_and_skews() {
        let c = config();
        let world = World::new(&c, 1);
        let kinds: Vec<HostKind> = world.hosts.iter().map(|h| h.kind).collect();
        assert!(kinds.contains(&HostKind::Shared) && kinds.contains(&HostKind::Vm));
        let half = c.max_skew.as_micros() as i64 / 2;
        assert!(world.hosts.iter().all(|h| h.skew.abs() <= half));
        for w in &world.workloads {
            let host = &world.hosts[w.host as usize];
            match host.kind {
                HostKind::Shared => {
                    assert_eq!((w.ip, w.identity), (host.ip, IdentitySource::ConnectMap));
                    assert_eq!(w.listen_port, None);
                }
                HostKind::Vm => assert_eq!(w.identity, IdentitySource::Certificate),
                HostKind::Pod => assert_ne!(w.ip, host.ip),
            }
        }
        assert_eq!(host_index(&world.hosts[17].name), Some(17));
    }

    #[test]
    fn shared_host_workloads_use_their_own_ports() {
        let mut world = World::new(&config(), 2);
        let shared: Vec<u32> = (0..world.workloads.len() as u32)
            .filter(|&w| world.workloads[w as usize].identity == IdentitySource::ConnectMap)
            .collect();
        let mut owner = HashMap::new();
        for _ in 0..100 {
            for &w in &shared {
                let port = world.client_port(w);
                let key = (world.workloads[w as usize].ip, port);
                let slot = world.workloads[w as usize].slot;
                assert_eq!(*owner.entry(key).or_insert(slot), slot);
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_world() {
        let (mut a, mut b) = (World::new(&config(), 9), World::new(&config(), 9));
        run(&mut a, 10);
        run(&mut b, 10);
        let names = |w: &World| {
            w.workloads
                .iter()
                .map(|w| (w.name.clone(), w.ip, w.start))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&a), names(&b));
    }

    #[test]
    fn system_time_is_t0_plus_the_offset() {
        assert_eq!(
            system_time(-SECOND),
            UNIX_EPOCH + Duration::from_secs(T0_SECS - 1)
        );
        assert_eq!(T0_SECS % 60, 0);
    }
}
