//! The dependency map end to end, for real: the `flowexporter` binary traces real TCP
//! connections between workloads in two network namespaces (each workload its own IP,
//! named in the exporter's IP map with its own CLI), sends them to the real collector,
//! and the collector's page (`/`), opened in headless Chromium, must draw the edges
//! between the workloads with the right counts, a remote no workload owns as
//! unattributed, and a filter that hides the workloads it does not match. A screenshot
//! is saved to `target/dependency-map-e2e.png`.
//!
//! Needs root, a kernel with BTF, Chromium and chromedriver (Debian `chromium`,
//! `chromium-driver`) and Python with selenium (`flow_testkit::python`): it fails,
//! never skips, without them.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::{Exporter, Scratch, runtime, set_owner, start_collector, start_exporter_at};
use flow_collector::FaultInjection;
use flow_testkit::{NetNs, VethPair, browser::graph_page};
use serde_json::{Value, json};

const WEB: &str = "spiffe://e2e/ns/shop/sa/web";
const API: &str = "spiffe://e2e/ns/shop/sa/api";
const DB: &str = "spiffe://e2e/ns/data/sa/db";
/// In namespace b, owned by no workload.
const NOBODY: &str = "10.77.0.3";
/// In namespace b, the database's.
const DB_IP: &str = "10.77.0.4";

/// `n` connections from `client_ns` (bound to `client_ip`) to a listener of
/// `server_ns` on `server_ip`, each exchanging 100 bytes up and 200 down; returns the
/// server's port.
fn connections(
    client_ns: &NetNs,
    client_ip: &str,
    server_ns: &NetNs,
    server_ip: &str,
    n: usize,
) -> u16 {
    let bind = SocketAddr::new(server_ip.parse().expect("ip"), 0);
    let listener = server_ns
        .spawn(move || TcpListener::bind(bind).expect("bind the server"))
        .join()
        .expect("server namespace");
    let to = listener.local_addr().expect("listener address");
    let from = SocketAddr::new(client_ip.parse().expect("ip"), 0);
    for _ in 0..n {
        let mut client = client_ns
            .spawn(move || {
                let socket =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                        .expect("socket");
                socket.bind(&from.into()).expect("bind the client");
                socket.connect(&to.into()).expect("connect");
                TcpStream::from(socket)
            })
            .join()
            .expect("client namespace");
        let (mut server, _) = listener.accept().expect("accept");
        client.write_all(&[1; 100]).expect("write");
        server.read_exact(&mut [0; 100]).expect("read");
        server.write_all(&[2; 200]).expect("answer");
        client.read_exact(&mut [0; 200]).expect("read the answer");
        drop(client);
        drop(server);
    }
    to.port()
}

/// The collector's final lines of connections to `port`.
fn lines_for(out: &Path, port: u16) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["record_kind"] == "final")
        .filter(|v| v["local_port"] == port || v["remote_port"] == port)
        .collect()
}

#[test]
fn real_connections_between_workloads_appear_on_the_dependency_map() {
    flow_testkit::mount_kernel_filesystems();
    let scratch = Scratch::new("depmap");
    let net = VethPair::new();
    let dev = |ns: &NetNs| {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.name, "ip", "-o", "-4", "addr", "show"])
            .output()
            .expect("ip addr");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.contains(VethPair::B4))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .expect("b's veth")
    };
    let b_dev = dev(&net.b);
    for ip in [NOBODY, DB_IP] {
        net.b
            .exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", &b_dev]);
    }
    for (ip, workload) in [(VethPair::A4, WEB), (VethPair::B4, API), (DB_IP, DB)] {
        set_owner(scratch.pins(), ip, workload);
    }
    let rt = runtime();
    let port = common::free_port();
    let out = scratch.path("flows.jsonl");
    let collector = start_collector(&rt, port, &out, FaultInjection::default());
    let (child, _logs) = start_exporter_at(
        &collector.url().replace("/v1/chunks", ""),
        &scratch,
        "1s",
        &[],
    );
    let exporter = Exporter::new(child);

    // web -> api x3, web -> an address nobody owns x2, api -> db x4.
    let api_port = connections(&net.a, VethPair::A4, &net.b, VethPair::B4, 3);
    let nobody_port = connections(&net.a, VethPair::A4, &net.b, NOBODY, 2);
    let db_port = connections(&net.b, VethPair::B4, &net.b, DB_IP, 4);
    // Both ends of each connection reach the collector (each end is a record).
    let deadline = Instant::now() + Duration::from_secs(60);
    for (p, n) in [(api_port, 3), (nobody_port, 2), (db_port, 4)] {
        while lines_for(&out, p).len() < 2 * n {
            assert!(
                Instant::now() < deadline,
                "port {p}: {:?}",
                lines_for(&out, p)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    exporter.stop();

    let screenshot =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dependency-map-e2e.png");
    let expect = json!({
        "edges": [
            {"source": WEB, "target": API, "port": api_port, "connections": 3, "failed_total": 0,
             "bytes_sent": 300, "bytes_received": 600, "recent_min": 3},
            {"source": API, "target": DB, "port": db_port, "connections": 4, "failed_total": 0,
             "bytes_sent": 400, "bytes_received": 800, "recent_min": 4},
            {"source": WEB, "target": format!("unattributed:{NOBODY}"), "port": nobody_port,
             "connections": 2, "failed_total": 0},
        ],
        "unattributed": [NOBODY],
        "filter": {"q": "db", "shown": [DB, API], "hidden": [WEB]},
    });
    let base = collector.url().replace("/v1/chunks", "/");
    let result = graph_page(&[
        "check",
        "--url",
        &base,
        "--expect",
        &expect.to_string(),
        "--screenshot",
        screenshot.to_str().expect("path"),
    ]);
    println!("dependency map: {result:#}");
    rt.block_on(collector.shutdown());
}
