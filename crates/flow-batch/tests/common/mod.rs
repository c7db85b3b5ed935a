//! Helpers shared by the integration tests: simulated time, records, a PRNG.

#![allow(dead_code)]

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use flow_record::{
    CloseReason, Direction, FlowRecord, IdentitySource, SocketStats, TcpState, UnattributedReason,
    WorkloadId,
};

/// Simulated wall-clock time: `ms` milliseconds after the Unix epoch.
pub fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Milliseconds since the Unix epoch of a simulated time (at or after the epoch).
pub fn ms(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).expect("after the epoch");
    d.as_secs() * 1000 + u64::from(d.subsec_millis())
}

/// Simulated wall-clock time: `s` seconds after the Unix epoch.
pub fn at(s: u64) -> SystemTime {
    at_ms(s * 1000)
}

/// A small IPv4 record closing at `t_end`; `port` tells records apart.
pub fn record(t_end: SystemTime, port: u16) -> FlowRecord {
    flow_testkit::record()
        .remote(([10, 0, 0, 2], port))
        .t_start(None)
        .t_end(t_end)
        .build()
}

/// SplitMix64: small, deterministic, good enough to drive tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }

    /// A record with every field drawn at random (IPv4 or IPv6, optional start time and
    /// workload, every close reason), closing at `t_end`.
    pub fn record(&mut self, t_end: SystemTime) -> FlowRecord {
        let v6 = self.chance(2);
        let addr = |rng: &mut Rng| -> SocketAddr {
            let port = rng.next_u64() as u16;
            let ip: IpAddr = if v6 {
                Ipv6Addr::from((u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64()))
                    .into()
            } else {
                Ipv4Addr::from(rng.next_u64() as u32).into()
            };
            SocketAddr::new(ip, port)
        };
        let close_reason = match self.below(8) {
            0 => CloseReason::Normal,
            1 => CloseReason::Refused,
            2 => CloseReason::ConnectTimedOut,
            3 => CloseReason::ConnectAborted,
            4 => CloseReason::Reset,
            5 => CloseReason::Aborted,
            6 => CloseReason::TimedOut,
            _ => CloseReason::Error(self.next_u64() as u32),
        };
        let t_start = if self.chance(4) {
            None
        } else {
            t_end
                .checked_sub(Duration::from_nanos(self.below(1 << 40)))
                .filter(|t| *t >= UNIX_EPOCH)
        };
        let workload = self.chance(2).then(|| {
            let len = self.below(40) as usize;
            WorkloadId::new(format!("wl-{}", "x".repeat(len))).expect("valid id")
        });
        let identity_source = match (&workload, self.below(3)) {
            (None, _) => IdentitySource::None(UnattributedReason::NoMatch),
            (Some(_), 0) => IdentitySource::ConnectMap,
            (Some(_), 1) => IdentitySource::IpMap,
            (Some(_), _) => IdentitySource::Certificate,
        };
        // Drawn in the order of the fields, as they always were.
        flow_testkit::record()
            .local(addr(self))
            .remote(addr(self))
            .direction(match self.below(3) {
                0 => Direction::Outbound,
                1 => Direction::Inbound,
                _ => Direction::Unknown,
            })
            .t_start(t_start)
            .t_end(t_end)
            .close(TcpState(self.below(13) as u8), close_reason)
            .stats(SocketStats {
                bytes_sent: self.next_u64(),
                bytes_received: self.next_u64() >> self.below(64),
                segs_in: self.next_u64() as u32,
                segs_out: self.next_u64() as u32,
                retransmits: self.below(100) as u32,
                bytes_retransmitted: self.below(1 << 20),
                srtt_us: self.below(1_000_000) as u32,
                rttvar_us: self.below(100_000) as u32,
            })
            .identity(workload, identity_source)
            .incomplete(self.chance(10))
            .build()
    }
}
