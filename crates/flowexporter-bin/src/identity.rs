//! `flowexporter identity ip|connect set|rm|ls`.

use std::io::Write;

use anyhow::Context;
use flow_capture::WorkloadId;
use flow_identity::{IdentityMaps, connect_addr};

use crate::cli::{ConnectOp, IdentityCommand, IpOp};

/// Runs one identity command.
pub fn run(cmd: IdentityCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        IdentityCommand::Ip { op, pin_dir } => {
            let mut maps = IdentityMaps::open_or_create(&pin_dir)?;
            match op {
                IpOp::Set { ip, workload } => {
                    maps.set_ip(ip, &WorkloadId::new(workload)?)?;
                }
                IpOp::Rm { ip } => {
                    if !maps.remove_ip(ip)? {
                        anyhow::bail!("{ip} is not in the IP map");
                    }
                }
                IpOp::Ls => {
                    for (ip, id) in maps.ips()? {
                        writeln!(out, "{ip}\t{}", shown(id.as_ref()))?;
                    }
                }
            }
        }
        IdentityCommand::Connect { op, pin_dir } => {
            let mut maps = IdentityMaps::open_or_create(&pin_dir)?;
            match op {
                ConnectOp::Set { ip, port, workload } => {
                    maps.set_connect(connect_addr(ip, port)?, &WorkloadId::new(workload)?)?;
                }
                ConnectOp::Rm { ip, port } => {
                    let addr = connect_addr(ip, port)?;
                    if !maps.remove_connect(addr)? {
                        anyhow::bail!("{addr} is not in the connect map");
                    }
                }
                ConnectOp::Ls => {
                    for (addr, id) in maps.connects()? {
                        writeln!(
                            out,
                            "{}\t{}\t{}",
                            addr.ip(),
                            addr.port(),
                            shown(id.as_ref())
                        )?;
                    }
                }
            }
        }
    }
    out.flush().context("writing to stdout")
}

fn shown(id: Option<&WorkloadId>) -> &str {
    id.map_or("(invalid value)", WorkloadId::as_str)
}
