//! TCP connection churn.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

/// Which addresses the connections use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// 127.0.0.1, or 10.77.0.x across namespaces.
    V4,
    /// ::1, or fd77::x across namespaces.
    V6,
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct ChurnConfig {
    /// How many connections.
    pub connections: usize,
    /// Connections per second to aim at; `None` = as fast as possible.
    pub rate: Option<f64>,
    /// Address family.
    pub family: Family,
    /// Bytes the client sends on each connection before closing (0: none).
    pub payload: usize,
    /// Client in one network namespace, server in another, joined by a veth pair.
    pub across_netns: bool,
}

/// What was achieved.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChurnReport {
    /// Connections completed.
    pub connections: usize,
    /// Connections that failed.
    pub errors: usize,
    /// Wall-clock time taken.
    pub elapsed: Duration,
    /// The server's port (to find the records of this run).
    pub server_port: u16,
}

impl ChurnReport {
    /// Connections per second achieved.
    pub fn rate(&self) -> f64 {
        self.connections as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs the churn: one client thread and one server thread. The server closes first,
/// so TIME_WAIT stays on the listener's side and the client's port search does not
/// slow down as runs accumulate.
pub fn run(config: &ChurnConfig) -> anyhow::Result<ChurnReport> {
    if config.across_netns {
        let net = flow_testkit::VethPair::new();
        let (server_ip, _client_ip) = match config.family {
            Family::V4 => (flow_testkit::VethPair::B4, flow_testkit::VethPair::A4),
            Family::V6 => (flow_testkit::VethPair::B6, flow_testkit::VethPair::A6),
        };
        let ip: IpAddr = server_ip.parse()?;
        let listener = net
            .b
            .spawn(move || TcpListener::bind((ip, 0)))
            .join()
            .map_err(|_| anyhow::anyhow!("the server namespace thread panicked"))??;
        let config = config.clone();
        return net
            .a
            .spawn(move || churn_with(listener, &config))
            .join()
            .map_err(|_| anyhow::anyhow!("the client namespace thread panicked"))?;
    }
    let ip: IpAddr = match config.family {
        Family::V4 => "127.0.0.1".parse()?,
        Family::V6 => "::1".parse()?,
    };
    churn_with(TcpListener::bind((ip, 0))?, config)
}

fn churn_with(listener: TcpListener, config: &ChurnConfig) -> anyhow::Result<ChurnReport> {
    let addr: SocketAddr = listener.local_addr()?;
    let (n, payload) = (config.connections, config.payload);
    let server = thread::spawn(move || {
        let mut buf = vec![0u8; payload.max(1)];
        for _ in 0..n {
            let Ok((mut s, _)) = listener.accept() else {
                continue;
            };
            if payload > 0 {
                let _ = s.read_exact(&mut buf[..payload]);
            }
            drop(s);
        }
    });
    let data = vec![0x42u8; payload];
    let interval = config
        .rate
        .map(|r| Duration::from_secs_f64(1.0 / r.max(1e-3)));
    let start = Instant::now();
    let mut report = ChurnReport {
        server_port: addr.port(),
        ..ChurnReport::default()
    };
    let mut buf = [0u8; 1];
    for i in 0..n {
        if let Some(iv) = interval {
            let due = start + iv.mul_f64(i as f64);
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
        }
        match TcpStream::connect(addr) {
            Ok(mut c) => {
                if payload > 0 {
                    let _ = c.write_all(&data);
                }
                // Wait for the server's FIN, then close: an orderly close on both ends.
                let _ = c.read(&mut buf);
                report.connections += 1;
            }
            Err(_) => report.errors += 1,
        }
    }
    report.elapsed = start.elapsed();
    // Let the server's accept loop finish its count for connects that failed.
    for _ in 0..report.errors {
        let _ = TcpStream::connect(addr);
    }
    server
        .join()
        .map_err(|_| anyhow::anyhow!("the server thread panicked"))?;
    Ok(report)
}
