//! `flowexporter identity ip|connect set|rm|ls`.

use std::{borrow::Cow, io::Write};

use anyhow::Context;
use flow_capture::WorkloadId;
use flow_identity::{IdentityMaps, MapValue, connect_addr};

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
                    for (ip, value) in maps.ips()? {
                        writeln!(out, "{ip}\t{}", shown(&value))?;
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
                    for (addr, value) in maps.connects()? {
                        writeln!(out, "{}\t{}\t{}", addr.ip(), addr.port(), shown(&value))?;
                    }
                }
            }
        }
    }
    out.flush().context("writing to stdout")
}

/// A map value as `ls` prints it: a valid ID as it is (it holds no control
/// character), an invalid one escaped, never raw, with why it is invalid, e.g.
/// `(invalid value "ab\u{1b}cd": it contains the control character U+001B at byte 2)`.
fn shown(value: &MapValue) -> Cow<'_, str> {
    match value {
        Ok(id) => Cow::Borrowed(id.as_str()),
        Err(invalid) => Cow::Owned(format!("(invalid value {invalid})")),
    }
}
