//! The static table: IPs and CIDRs of things that run no exporter (load balancers,
//! databases), with the name to give them.
//!
//! The file has one entry a line, `<IP or CIDR> <name>` separated by whitespace;
//! `#` starts a comment, blank lines are ignored. IPv4 and IPv6; a CIDR's host bits
//! must be zero; a prefix may appear once; names are workload IDs (1 to 64 bytes, no
//! control character).
//!
//! ```text
//! # Things without an exporter.
//! 10.20.0.0/16   db:prod/postgres
//! 10.20.5.7      lb:prod/ingress     # longest prefix wins
//! 2001:db8::/32  external:partner
//! ```

use std::{
    collections::HashMap,
    fs::OpenOptions,
    io::{self, Read},
    net::IpAddr,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use flow_record::WorkloadId;

/// Largest table read (bytes).
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The prefixes of one length, of one family.
#[derive(Clone, Debug)]
struct PrefixTable {
    len: u8,
    /// The address with its host bits zero -> name.
    entries: HashMap<u128, WorkloadId>,
}

/// IPs and CIDRs -> names, looked up longest prefix first.
#[derive(Clone, Debug, Default)]
pub struct StaticOwners {
    /// IPv4 then IPv6: the tables of each prefix length, longest first.
    families: [Vec<PrefixTable>; 2],
    len: usize,
}

/// Why a static table was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StaticOwnersError {
    /// A line is not `<IP or CIDR> <name>`.
    #[error("{}:{line}: {reason}", .path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The file could not be read.
    #[error("reading {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// An address as bits (IPv4 in the low 32), its family index and width.
fn bits(ip: IpAddr) -> (u128, usize, u8) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 0, 32),
        IpAddr::V6(v6) => (u128::from(v6), 1, 128),
    }
}

/// The mask of a `len`-bit prefix in a `width`-bit address.
fn mask(len: u8, width: u8) -> u128 {
    if len == 0 {
        return 0;
    }
    let all = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    all & !all.checked_shr(u32::from(len)).unwrap_or(0)
}

impl StaticOwners {
    /// Parses a table; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<StaticOwners, StaticOwnersError> {
        let error = |line: usize, reason: String| StaticOwnersError::Line {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let mut owners = StaticOwners::default();
        // (family, length, prefix) -> the line that gave it.
        let mut seen: HashMap<(usize, u8, u128), usize> = HashMap::new();
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            let content = raw.split('#').next().unwrap_or("");
            let mut fields = content.split_whitespace();
            let (Some(prefix), name, extra) = (fields.next(), fields.next(), fields.next()) else {
                continue;
            };
            let (Some(name), None) = (name, extra) else {
                return Err(error(
                    line,
                    format!(
                        "expected \"<IP or CIDR> <name>\", found {:?}",
                        content.trim()
                    ),
                ));
            };
            let (addr, len) = match prefix.split_once('/') {
                Some((addr, len)) => (addr, Some(len)),
                None => (prefix, None),
            };
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| error(line, format!("{addr:?} is not an IP address")))?;
            let (value, family, width) = match ip {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)), 0, 32u8),
                IpAddr::V6(v6) => (u128::from(v6), 1, 128u8),
            };
            let len = match len {
                None => width,
                Some(len) => len
                    .parse::<u8>()
                    .ok()
                    .filter(|l| *l <= width)
                    .ok_or_else(|| {
                        error(
                            line,
                            format!("{len:?} is not a prefix length (0 to {width}) in {prefix:?}"),
                        )
                    })?,
            };
            let masked = value & mask(len, width);
            if masked != value {
                let network = match ip {
                    IpAddr::V4(_) => IpAddr::from(std::net::Ipv4Addr::from(masked as u32)),
                    IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::from(masked)),
                };
                return Err(error(
                    line,
                    format!("{prefix:?} has host bits set (the network is {network}/{len})"),
                ));
            }
            let name = WorkloadId::new(name)
                .map_err(|e| error(line, format!("the name is refused: {e}")))?;
            if let Some(first) = seen.insert((family, len, masked), line) {
                return Err(error(
                    line,
                    format!("{prefix:?} is listed twice: on line {first} and on line {line}"),
                ));
            }
            let tables = &mut owners.families[family];
            let at = match tables.binary_search_by(|t| len.cmp(&t.len)) {
                Ok(at) => at,
                Err(at) => {
                    tables.insert(
                        at,
                        PrefixTable {
                            len,
                            entries: HashMap::new(),
                        },
                    );
                    at
                }
            };
            tables[at].entries.insert(masked, name);
            owners.len += 1;
        }
        Ok(owners)
    }

    /// Reads and parses `path` (a regular file of at most 16 MiB).
    pub fn load(path: &Path) -> Result<StaticOwners, StaticOwnersError> {
        let read_error = |source| StaticOwnersError::Read {
            path: path.to_path_buf(),
            source,
        };
        let refused = |what: String| read_error(io::Error::new(io::ErrorKind::InvalidInput, what));
        // O_NOFOLLOW: a symbolic link is refused rather than followed; O_NONBLOCK: a
        // FIFO does not block the open (it is refused below, as not a regular file).
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    refused("it is a symbolic link: give the path of the file itself".into())
                } else {
                    read_error(e)
                }
            })?;
        let meta = file.metadata().map_err(read_error)?;
        if !meta.is_file() {
            return Err(refused("it is not a regular file".into()));
        }
        let too_large = || refused(format!("it is larger than {MAX_FILE_BYTES} bytes"));
        if meta.len() > MAX_FILE_BYTES {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(too_large());
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            let line = 1 + e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count();
            StaticOwnersError::Line {
                path: path.to_path_buf(),
                line,
                reason: "it is not UTF-8".into(),
            }
        })?;
        StaticOwners::parse(&text, path)
    }

    /// The name of `ip`, from the longest matching prefix.
    pub fn lookup(&self, ip: std::net::IpAddr) -> Option<&WorkloadId> {
        let (value, family, width) = bits(ip);
        self.families[family]
            .iter()
            .find_map(|t| t.entries.get(&(value & mask(t.len, width))))
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<StaticOwners, StaticOwnersError> {
        StaticOwners::parse(text, Path::new("/etc/owners"))
    }

    fn name(owners: &StaticOwners, ip: &str) -> Option<String> {
        let ip: IpAddr = ip.parse().ok()?;
        owners.lookup(ip).map(|w| w.as_str().to_owned())
    }

    fn line_error(text: &str) -> (usize, String, String) {
        match parse(text) {
            Err(e @ StaticOwnersError::Line { .. }) => {
                let shown = e.to_string();
                match e {
                    StaticOwnersError::Line { line, reason, .. } => (line, reason, shown),
                    StaticOwnersError::Read { .. } => unreachable!(),
                }
            }
            other => panic!("expected a line error, got {other:?}"),
        }
    }

    #[test]
    fn longest_prefix_wins() -> Result<(), StaticOwnersError> {
        let owners = parse(
            "# things without an exporter\n\
             \n\
             10.0.0.0/8      net:ten\n\
             10.20.0.0/16\tdb:prod   # the database subnet\n\
             10.20.5.7       lb:prod\n\
             0.0.0.0/0       internet:v4\n\
             2001:db8::/32   external:partner\n\
             2001:db8::1/128 external:one\n   \n",
        )?;
        assert_eq!(owners.len(), 6);
        assert!(!owners.is_empty());
        assert_eq!(name(&owners, "10.20.5.7").as_deref(), Some("lb:prod"));
        assert_eq!(name(&owners, "10.20.5.8").as_deref(), Some("db:prod"));
        assert_eq!(name(&owners, "10.21.0.1").as_deref(), Some("net:ten"));
        assert_eq!(name(&owners, "192.0.2.1").as_deref(), Some("internet:v4"));
        assert_eq!(
            name(&owners, "::ffff:10.20.5.7").as_deref(),
            Some("lb:prod")
        );
        assert_eq!(
            name(&owners, "2001:db8::1").as_deref(),
            Some("external:one")
        );
        assert_eq!(
            name(&owners, "2001:db8::2").as_deref(),
            Some("external:partner")
        );
        assert_eq!(name(&owners, "2001:db9::1"), None);
        let empty = parse("# nothing\n")?;
        assert!(empty.is_empty());
        assert_eq!(name(&empty, "10.0.0.1"), None);
        assert_eq!(name(&StaticOwners::default(), "10.0.0.1"), None);
        Ok(())
    }

    #[test]
    fn refuses_bad_lines_naming_file_and_line() {
        let (line, reason, shown) = line_error("10.0.0.1 a\n10.0.0.2\n");
        assert_eq!(line, 2);
        assert!(reason.contains("expected"), "{reason}");
        assert!(shown.starts_with("/etc/owners:2: "), "{shown}");
        let (line, reason, _) = line_error("10.0.0.1 a b\n");
        assert_eq!(line, 1);
        assert!(reason.contains("expected"), "{reason}");
        let (_, reason, _) = line_error("10.0.0.256 a\n");
        assert!(reason.contains("not an IP address"), "{reason}");
        let (_, reason, _) = line_error("10.0.0.0/33 a\n");
        assert!(reason.contains("prefix length (0 to 32)"), "{reason}");
        let (_, reason, _) = line_error("2001:db8::/129 a\n");
        assert!(reason.contains("prefix length (0 to 128)"), "{reason}");
        let (_, reason, _) = line_error("10.0.0.1/8 a\n");
        assert!(
            reason.contains("host bits") && reason.contains("10.0.0.0/8"),
            "{reason}"
        );
        let (_, reason, _) = line_error("2001:db8::1/32 a\n");
        assert!(reason.contains("2001:db8::/32"), "{reason}");
        let (_, reason, _) = line_error(&format!("10.0.0.1 {}\n", "x".repeat(65)));
        assert!(reason.contains("name is refused"), "{reason}");
        let (_, reason, _) = line_error("10.0.0.1 a\u{7}b\n");
        assert!(reason.contains("control character"), "{reason}");
        let (line, reason, _) = line_error("10.0.0.0/8 a\n# x\n10.0.0.0/8 b\n");
        assert_eq!(line, 3);
        assert!(
            reason.contains("line 1") && reason.contains("line 3"),
            "{reason}"
        );
        // The same address as an IP and as a /32 is one prefix.
        let (_, reason, _) = line_error("10.0.0.1 a\n10.0.0.1/32 b\n");
        assert!(reason.contains("twice"), "{reason}");
    }

    #[test]
    fn load_reads_regular_files_only() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("owners");
        std::fs::write(&file, "10.0.0.0/8 net:ten\n")?;
        let owners = StaticOwners::load(&file)?;
        assert_eq!(name(&owners, "10.1.1.1").as_deref(), Some("net:ten"));
        // A symbolic link is refused, not followed.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link)?;
        let err = StaticOwners::load(&link).expect_err("symlink");
        assert!(matches!(err, StaticOwnersError::Read { .. }), "{err:?}");
        assert!(format!("{err:?}").contains("symbolic link"), "{err:?}");
        // A directory is not a regular file.
        let err = StaticOwners::load(dir.path()).expect_err("directory");
        assert!(format!("{err:?}").contains("not a regular file"), "{err:?}");
        // Missing.
        let err = StaticOwners::load(&dir.path().join("missing")).expect_err("missing");
        assert!(err.to_string().contains("missing"), "{err}");
        // Not UTF-8, on line 2.
        std::fs::write(&file, b"10.0.0.0/8 a\n10.0.0.1 \xff\n")?;
        match StaticOwners::load(&file) {
            Err(StaticOwnersError::Line { line, reason, .. }) => {
                assert_eq!(line, 2);
                assert!(reason.contains("UTF-8"));
            }
            other => panic!("expected a line error, got {other:?}"),
        }
        // Too large (sparse: no 16 MiB written).
        let big = std::fs::File::create(&file)?;
        big.set_len(MAX_FILE_BYTES + 1)?;
        let err = StaticOwners::load(&file).expect_err("too large");
        assert!(format!("{err:?}").contains("larger than"), "{err:?}");
        Ok(())
    }
}
