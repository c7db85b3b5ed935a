//! What ties a connection's records together, whether a record is its last, and the
//! process that opened it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Whether a record reports a closed connection or one still open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// The connection closed: `t_end` is its close and the counters are final. Every
    /// connection yields exactly one (unless it was lost, which is counted).
    #[default]
    Final,
    /// The connection was still open when a batch window closed: `t_end` is the time
    /// of the snapshot, the counters are cumulative since the open, and the state is
    /// the one it was in. Later interim records and the final record share its
    /// [`FlowId`].
    Interim,
}

impl RecordKind {
    /// The name used in JSON output: `final` or `interim`.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Final => "final",
            RecordKind::Interim => "interim",
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connection's identity on its host, shared by all its records: the host's boot ID
/// (`/proc/sys/kernel/random/boot_id`) and the kernel's socket cookie, which the
/// kernel never reuses within a boot. Unique per host across exporter restarts.
///
/// Its text form is the boot ID's 32 hex digits, `-`, and the cookie's 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FlowId {
    /// The host's boot ID, as its 16 bytes.
    pub boot_id: [u8; 16],
    /// The socket cookie (`bpf_get_socket_cookie`, `SO_COOKIE`, `ss -e`'s `sk:`).
    pub cookie: u64,
}

impl FlowId {
    /// Length of the text form.
    pub const TEXT_LEN: usize = 32 + 1 + 16;

    /// Writes the text form into `out` (exactly [`FlowId::TEXT_LEN`] bytes).
    pub fn write_text(&self, out: &mut [u8; FlowId::TEXT_LEN]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in self.boot_id.iter().enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        out[32] = b'-';
        for (i, slot) in out[33..].iter_mut().enumerate() {
            *slot = HEX[((self.cookie >> (60 - 4 * i)) & 0xf) as usize];
        }
    }
}

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = [0u8; FlowId::TEXT_LEN];
        self.write_text(&mut text);
        // The text is ASCII hex digits and '-'.
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FlowId({self})")
    }
}

/// Longest command name the kernel keeps for a task (`TASK_COMM_LEN` less the NUL).
pub const COMM_MAX: usize = 15;

/// The task that made an outbound connection, recorded at its active open
/// (`SYN_SENT`), in the kernel, in the connecting task's context.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// The process ID (the thread group ID, as `getpid()` returns it) in the initial
    /// PID namespace.
    pub pid: u32,
    /// The cgroup v2 ID of the task's cgroup (the inode number of its cgroup
    /// directory, as `bpf_get_current_cgroup_id` returns it).
    pub cgroup_id: u64,
    /// The task's command name (`comm`), NUL-padded; at most [`COMM_MAX`] bytes.
    pub comm: [u8; 16],
}

impl ProcessInfo {
    /// The command name as text: up to the first NUL, invalid UTF-8 replaced.
    pub fn comm(&self) -> std::borrow::Cow<'_, str> {
        let end = self
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.comm.len());
        String::from_utf8_lossy(&self.comm[..end])
    }

    /// A process with a command name given as text (cut to [`COMM_MAX`] bytes).
    pub fn new(pid: u32, comm: &str, cgroup_id: u64) -> ProcessInfo {
        ProcessInfo::from_comm_bytes(pid, comm.as_bytes(), cgroup_id)
    }

    /// A process with a command name given as raw bytes, as the kernel hands them over
    /// (`bpf_get_current_comm`): the name ends at the first NUL, or after
    /// [`COMM_MAX`] bytes, and the rest of [`comm`](ProcessInfo::comm) is NUL. That is
    /// the one form of `comm` the wire format carries ([`ProcessInfo::comm_is_canonical`]).
    pub fn from_comm_bytes(pid: u32, comm: &[u8], cgroup_id: u64) -> ProcessInfo {
        let mut bytes = [0u8; 16];
        let name = comm.split(|&b| b == 0).next().unwrap_or_default();
        let n = name.len().min(COMM_MAX);
        bytes[..n].copy_from_slice(&name[..n]);
        ProcessInfo {
            pid,
            cgroup_id,
            comm: bytes,
        }
    }

    /// Whether [`comm`](ProcessInfo::comm) is in its one form: at most [`COMM_MAX`]
    /// bytes of name, then only NULs (so its last byte is always NUL). What
    /// [`ProcessInfo::new`] and [`ProcessInfo::from_comm_bytes`] build; the wire format
    /// refuses anything else.
    pub fn comm_is_canonical(&self) -> bool {
        let end = self
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.comm.len());
        end <= COMM_MAX && self.comm[end..].iter().all(|&b| b == 0)
    }
}

impl fmt::Debug for ProcessInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessInfo")
            .field("pid", &self.pid)
            .field("comm", &self.comm())
            .field("cgroup_id", &self.cgroup_id)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_id_text() {
        let id = FlowId {
            boot_id: [0xab; 16],
            cookie: 0x1234,
        };
        assert_eq!(
            id.to_string(),
            "abababababababababababababababab-0000000000001234"
        );
        assert_eq!(id.to_string().len(), FlowId::TEXT_LEN);
    }

    #[test]
    fn comm_stops_at_nul() {
        let p = ProcessInfo::new(7, "curl", 9);
        assert_eq!(p.comm(), "curl");
        let long = ProcessInfo::new(7, "a-very-long-command-name", 9);
        assert_eq!(long.comm().len(), COMM_MAX);
        assert!(p.comm_is_canonical() && long.comm_is_canonical());
    }

    #[test]
    fn raw_comm_bytes_are_made_canonical() {
        let p = ProcessInfo::from_comm_bytes(1, b"sh\0garbage\0", 2);
        assert_eq!(p.comm(), "sh");
        assert_eq!(&p.comm[..], b"sh\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
        assert!(p.comm_is_canonical());
        let full = ProcessInfo::from_comm_bytes(1, &[b'x'; 16], 2);
        assert_eq!(full.comm().len(), COMM_MAX);
        assert!(full.comm_is_canonical());
        let mut bad = p;
        bad.comm[5] = b'!';
        assert!(!bad.comm_is_canonical());
        bad.comm = [b'y'; 16];
        assert!(!bad.comm_is_canonical());
        bad.comm = [0; 16];
        assert!(bad.comm_is_canonical(), "an empty name");
    }
}
