//! Identity resolved in the kernel from the pinned maps, against the real program and
//! real sockets, with network namespaces standing in for containers.

use std::{
    io::Read,
    net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::Duration,
};

use flow_capture::{
    CaptureError, FlowCaptureBuilder, IdentitySource, UnattributedReason, WorkloadId,
    WorkloadIdProblem,
};
use flow_common::{ConnectKey, IpKey, WorkloadValue};
use flow_identity::{CertificateResolver, IdentityError, IdentityMaps, IdentityResolver};
use flow_testkit::{
    Capture, VethPair, by_local, involves, mount_kernel_filesystems, pin_foreign_map,
};
use socket2::{Domain, Socket, Type};

const WAIT: Duration = Duration::from_secs(10);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A pin directory of this test's own on the BPF filesystem, removed on drop.
struct PinDir(PathBuf);

impl PinDir {
    fn new() -> PinDir {
        mount_kernel_filesystems();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        PinDir(PathBuf::from(format!(
            "/sys/fs/bpf/fe-test-{}-{n}",
            std::process::id()
        )))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn id(s: &str) -> WorkloadId {
    WorkloadId::new(s).expect("valid id")
}

fn workload(r: &flow_capture::FlowRecord) -> Option<&str> {
    r.local_workload_id.as_ref().map(WorkloadId::as_str)
}

fn capture_with(pins: &PinDir) -> Capture {
    Capture::load_with(FlowCaptureBuilder::new().identity_pin_dir(&pins.0))
}

#[test]
fn each_namespace_ip_carries_its_workload_on_both_ends() {
    let pins = PinDir::new();
    let mut maps = IdentityMaps::open_or_create(&pins.0).expect("maps");
    let mut cap = capture_with(&pins);
    let net = VethPair::new();
    for (ip, wl) in [
        (VethPair::A4, "wl-a"),
        (VethPair::B4, "wl-b"),
        (VethPair::A6, "wl-a6"),
        (VethPair::B6, "wl-b6"),
    ] {
        maps.set_ip(ip.parse().expect("ip"), &id(wl)).expect("set");
    }
    // a -> b over IPv4, b -> a over IPv6: both directions, both families.
    let cases = [
        (&net.a, &net.b, VethPair::B4, "wl-a", "wl-b"),
        (&net.b, &net.a, VethPair::A6, "wl-b6", "wl-a6"),
    ];
    for (client_ns, server_ns, server_ip, client_wl, server_wl) in cases {
        let bind = SocketAddr::new(server_ip.parse().expect("ip"), 0);
        let listener = server_ns
            .spawn(move || TcpListener::bind(bind).expect("bind"))
            .join()
            .expect("server ns");
        let server_addr = listener.local_addr().expect("addr");
        let server = thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).expect("read");
        });
        let client_addr = client_ns
            .spawn(move || {
                let c = TcpStream::connect(server_addr).expect("connect");
                let local = c.local_addr().expect("local");
                c.shutdown(Shutdown::Both).expect("shutdown");
                local
            })
            .join()
            .expect("client ns");
        server.join().expect("server");
        let records = cap.collect(2, WAIT, involves(server_addr.port()));
        let c = by_local(&records, client_addr);
        let s = by_local(&records, server_addr);
        assert_eq!(
            (workload(c), c.identity_source),
            (Some(client_wl), IdentitySource::IpMap),
            "{c:#?}"
        );
        assert_eq!(
            (workload(s), s.identity_source),
            (Some(server_wl), IdentitySource::IpMap),
            "{s:#?}"
        );
    }
    assert_eq!(maps.ips().expect("ls").len(), 4);
}

/// Connects from `local` (bound first, as a container runtime does) to `to`.
fn connect_from(local: SocketAddr, to: SocketAddr) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    s.bind(&local.into()).expect("bind");
    s.connect(&to.into()).expect("connect");
    s.into()
}

#[test]
fn shared_ipv4_clients_are_told_apart_by_the_connect_map() {
    let pins = PinDir::new();
    let mut maps = IdentityMaps::open_or_create(&pins.0).expect("maps");
    let mut cap = capture_with(&pins);
    let shared: Ipv4Addr = "127.0.0.77".parse().expect("ip");
    maps.set_ip(IpAddr::V4(shared), &id("whole-ip"))
        .expect("set ip");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server_addr = listener.local_addr().expect("addr");

    // Two clients on one shared address, told apart only by their local ports.
    let ports = [free_port(shared), free_port(shared)];
    for (port, wl) in ports.iter().zip(["client-one", "client-two"]) {
        maps.set_connect(SocketAddrV4::new(shared, *port), &id(wl))
            .expect("set connect");
    }
    let clients: Vec<TcpStream> = ports
        .iter()
        .map(|p| connect_from(SocketAddr::from((shared, *p)), server_addr))
        .collect();
    let accepted: Vec<TcpStream> = clients
        .iter()
        .map(|_| listener.accept().expect("accept").0)
        .collect();
    drop(clients);
    drop(accepted);
    let records = cap.collect(4, WAIT, involves(server_addr.port()));
    for (port, wl) in ports.iter().zip(["client-one", "client-two"]) {
        let r = by_local(&records, SocketAddr::from((shared, *port)));
        assert_eq!(
            (workload(r), r.identity_source),
            (Some(wl), IdentitySource::ConnectMap),
            "{r:#?}"
        );
    }
    // The server end (127.0.0.1) is in neither map.
    let servers: Vec<_> = records.iter().filter(|r| r.local == server_addr).collect();
    assert_eq!(servers.len(), 2);
    assert!(servers.iter().all(|r| r.local_workload_id.is_none()));
    assert_eq!(maps.connects().expect("ls").len(), 2);
    assert!(
        maps.remove_connect(SocketAddrV4::new(shared, ports[0]))
            .expect("rm")
    );
    assert!(
        !maps
            .remove_connect(SocketAddrV4::new(shared, ports[0]))
            .expect("rm again")
    );
}

/// Writes `bytes` (NUL-padded to 64) as a map value under `key`, as another tool
/// might: no validation on the way in.
fn write_raw<K: aya::Pod>(pin: &std::path::Path, key: K, bytes: &[u8]) {
    let data = aya::maps::MapData::from_pin(pin).expect("open pinned map");
    let map = aya::maps::Map::from_map_data(data).expect("map");
    let mut map: aya::maps::HashMap<_, K, WorkloadValue> =
        aya::maps::HashMap::try_from(map).expect("hash map");
    let mut value = WorkloadValue::EMPTY;
    value.id[..bytes.len()].copy_from_slice(bytes);
    map.insert(key, value, 0).expect("insert raw value");
}

#[test]
fn map_values_with_an_inner_nul_or_control_characters_are_invalid() {
    let pins = PinDir::new();
    let maps = IdentityMaps::open_or_create(&pins.0).expect("maps");
    let mut cap = capture_with(&pins);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server_addr = listener.local_addr().expect("addr");
    let ip_pin = pins.0.join("ip_map");
    let connect_pin = pins.0.join("connect_map");

    // IP map: `ab\0cd` (was attributed as `ab`) and ESC; connect map: `ab\0cd`.
    let nul_ip: Ipv4Addr = "127.0.0.91".parse().expect("ip");
    let esc_ip: Ipv4Addr = "127.0.0.92".parse().expect("ip");
    let conn_ip: Ipv4Addr = "127.0.0.93".parse().expect("ip");
    write_raw(&ip_pin, IpKey::v4(nul_ip.octets()), b"ab\0cd");
    write_raw(&ip_pin, IpKey::v4(esc_ip.octets()), b"ab\x1b[2Jcd");
    let conn_port = free_port(conn_ip);
    write_raw(
        &connect_pin,
        ConnectKey {
            addr: conn_ip.octets(),
            port: conn_port,
            _pad: 0,
        },
        b"ab\0cd",
    );

    let locals = [
        SocketAddr::from((nul_ip, 0)),
        SocketAddr::from((esc_ip, 0)),
        SocketAddr::from((conn_ip, conn_port)),
    ];
    let clients: Vec<TcpStream> = locals
        .iter()
        .map(|l| connect_from(*l, server_addr))
        .collect();
    let bound: Vec<SocketAddr> = clients
        .iter()
        .map(|c| c.local_addr().expect("local"))
        .collect();
    let accepted: Vec<TcpStream> = clients
        .iter()
        .map(|_| listener.accept().expect("accept").0)
        .collect();
    drop(clients);
    drop(accepted);
    let mut records = cap.collect(6, WAIT, involves(server_addr.port()));
    // They are counted as invalid map values (the server ends match nothing).
    let mut resolver = CertificateResolver::new(None);
    resolver.resolve_all(&mut records);
    assert_eq!(resolver.counters().unattributed_invalid_map_value, 3);
    assert_eq!(resolver.counters().unattributed_no_match, 3);
    for local in bound {
        let r = by_local(&records, local);
        assert_eq!(
            (workload(r), r.identity_source),
            (
                None,
                IdentitySource::None(UnattributedReason::InvalidMapValue)
            ),
            "{r:#?}"
        );
    }

    // Listing shows the values escaped, with why they are refused.
    let ips = maps.ips().expect("ls");
    let shown: Vec<(IpAddr, String)> = ips
        .iter()
        .map(|(ip, v)| (*ip, v.as_ref().expect_err("invalid").to_string()))
        .collect();
    assert_eq!(
        shown,
        [
            (
                IpAddr::V4(nul_ip),
                "\"ab\\0cd\": it contains a NUL byte at byte 2".to_string()
            ),
            (
                IpAddr::V4(esc_ip),
                "\"ab\\u{1b}[2Jcd\": it contains the control character U+001B at byte 2"
                    .to_string()
            ),
        ]
    );
    let connects = maps.connects().expect("ls");
    assert_eq!(connects.len(), 1);
    assert_eq!(
        connects[0].1.as_ref().map_err(|e| e.problem()),
        Err(WorkloadIdProblem::Nul { at: 2 })
    );
}

/// A port free on `ip` right now.
fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[test]
fn a_reassigned_ip_does_not_change_an_open_connection() {
    let pins = PinDir::new();
    let mut maps = IdentityMaps::open_or_create(&pins.0).expect("maps");
    let mut cap = capture_with(&pins);
    let ip: Ipv4Addr = "127.0.0.88".parse().expect("ip");
    maps.set_ip(IpAddr::V4(ip), &id("old-owner")).expect("set");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server_addr = listener.local_addr().expect("addr");

    let first = connect_from(SocketAddr::from((ip, 0)), server_addr);
    let first_server = listener.accept().expect("accept").0;
    maps.set_ip(IpAddr::V4(ip), &id("new-owner"))
        .expect("reassign");
    let second = connect_from(SocketAddr::from((ip, 0)), server_addr);
    let second_server = listener.accept().expect("accept").0;
    let (a, b) = (
        first.local_addr().expect("a"),
        second.local_addr().expect("b"),
    );
    drop((first, first_server, second, second_server));

    let records = cap.collect(4, WAIT, involves(server_addr.port()));
    assert_eq!(workload(by_local(&records, a)), Some("old-owner"));
    assert_eq!(workload(by_local(&records, b)), Some("new-owner"));
    assert!(maps.remove_ip(IpAddr::V4(ip)).expect("rm"));
}

#[test]
fn a_wrong_map_at_the_pin_path_is_refused() {
    let pins = PinDir::new();
    std::fs::create_dir_all(&pins.0).expect("dir");
    let ip_map = pins.0.join("ip_map");
    pin_foreign_map(&ip_map, 16, 8);

    let Err(err) = IdentityMaps::open_or_create(&pins.0) else {
        panic!("a foreign map must be refused");
    };
    assert!(
        matches!(err, IdentityError::PinnedMapMismatch { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("ip_map") && text.contains("8-byte values"),
        "{text}"
    );

    let Err(err) = FlowCaptureBuilder::new().identity_pin_dir(&pins.0).load() else {
        panic!("the exporter must refuse it too");
    };
    assert!(
        matches!(
            err,
            CaptureError::IdentityPins(IdentityError::PinnedMapMismatch { .. })
        ),
        "{err}"
    );
}

#[test]
fn a_pin_dir_off_the_bpf_filesystem_is_refused() {
    let dir = std::env::temp_dir().join("fe-not-bpffs");
    let Err(err) = IdentityMaps::open_or_create(&dir) else {
        panic!("a tmp directory is not on bpffs");
    };
    assert!(err.to_string().contains("not on a BPF filesystem"), "{err}");
}

#[test]
fn exporters_and_writers_starting_at_once_share_one_set_of_maps() {
    // Whichever starts first creates the maps; the others must reuse them, even when
    // they all look at the same moment and race to pin (a starter that loses the race
    // for one map may find the other not pinned yet: it must load again, not fail).
    for _ in 0..10 {
        let pins = PinDir::new();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let (dir, barrier) = (pins.0.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    if i % 2 == 0 {
                        FlowCaptureBuilder::new()
                            .identity_pin_dir(&dir)
                            .load()
                            .map(drop)
                            .map_err(|e| chain(&e))
                    } else {
                        IdentityMaps::open_or_create(&dir)
                            .map(drop)
                            .map_err(|e| chain(&e))
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread").expect("every starter succeeds");
        }
        let mut maps = IdentityMaps::open_or_create(&pins.0).expect("maps");
        maps.set_ip("10.9.9.9".parse().expect("ip"), &id("shared"))
            .expect("set");
        assert_eq!(maps.ips().expect("ls").len(), 1);
    }
}

/// An error and its sources, for assertion messages.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
