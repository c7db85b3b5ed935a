//! The host's identity certificate (plain hosts): a PEM X.509 certificate on disk whose
//! SAN URI (SPIFFE-style, e.g. `spiffe://prod.example/app/billing`) or subject CN
//! names the workload.
//!
//! The file is checked for replacement (inode, size, modification time) on every
//! [`CertificateIdentity::refresh`]; a new certificate applies to records that closed
//! at or after the moment the file was replaced, so no record after a rotation carries
//! the old identity. Validity is checked against each record's own close time.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use flow_record::{UnattributedReason, WorkloadId};
use x509_parser::{extensions::GeneralName, pem::parse_x509_pem};

use crate::error::IdentityError;

/// Which part of the certificate names the workload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IdentityField {
    /// The first URI subject alternative name (the SPIFFE convention). The default.
    #[default]
    SanUri,
    /// The subject common name.
    SubjectCn,
}

/// A parsed certificate's identity and validity window.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Parsed {
    id: WorkloadId,
    not_before: SystemTime,
    not_after: SystemTime,
}

/// What is known about one version of the file.
#[derive(Clone, Debug)]
struct Version {
    stamp: Option<FileStamp>,
    parsed: Result<Parsed, (UnattributedReason, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    size: u64,
    mtime: SystemTime,
}

/// The identity certificate at a path, reloaded when the file is replaced.
#[derive(Debug)]
pub struct CertificateIdentity {
    path: PathBuf,
    field: IdentityField,
    current: Version,
    /// The version before the last replacement, and when the replacement happened.
    previous: Option<(Version, SystemTime)>,
}

impl CertificateIdentity {
    /// Loads the certificate at `path`. A certificate that cannot be used is not an
    /// error here (records are then unattributed with the reason): the returned error,
    /// if any, says what is wrong, for the caller to report.
    pub fn load(
        path: impl AsRef<Path>,
        field: IdentityField,
    ) -> (CertificateIdentity, Option<IdentityError>) {
        let path = path.as_ref().to_path_buf();
        let current = read_version(&path, field);
        let error = version_error(&path, &current);
        (
            CertificateIdentity {
                path,
                field,
                current,
                previous: None,
            },
            error,
        )
    }

    /// The certificate's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reloads the certificate if the file changed since the last look. Returns
    /// `Ok(true)` when a new version was loaded, and the new version's problem, if any,
    /// as the error.
    pub fn refresh(&mut self) -> Result<bool, IdentityError> {
        let stamp = stamp_of(&self.path);
        if stamp == self.current.stamp {
            return Ok(false);
        }
        let next = read_version(&self.path, self.field);
        let replaced_at = next.stamp.map(|s| s.mtime).unwrap_or_else(SystemTime::now);
        let previous = std::mem::replace(&mut self.current, next);
        self.previous = Some((previous, replaced_at));
        match version_error(&self.path, &self.current) {
            Some(e) => Err(e),
            None => Ok(true),
        }
    }

    /// The identity for a record that closed at `t`, or why there is none.
    pub fn identity_at(&self, t: SystemTime) -> Result<WorkloadId, UnattributedReason> {
        let version = match &self.previous {
            Some((previous, replaced_at)) if t < *replaced_at => previous,
            _ => &self.current,
        };
        let parsed = version.parsed.as_ref().map_err(|(reason, _)| *reason)?;
        if t < parsed.not_before {
            return Err(UnattributedReason::CertificateNotYetValid);
        }
        if t > parsed.not_after {
            return Err(UnattributedReason::CertificateExpired);
        }
        Ok(parsed.id.clone())
    }

    /// The problem with the current certificate at `now`, if any (for reporting).
    pub fn check(&self, now: SystemTime) -> Result<WorkloadId, IdentityError> {
        self.identity_at(now)
            .map_err(|reason| IdentityError::Certificate {
                path: self.path.clone(),
                problem: match &self.current.parsed {
                    Err((_, msg)) => msg.clone(),
                    Ok(p) if reason == UnattributedReason::CertificateExpired => {
                        format!("expired at {}", fmt_time(p.not_after))
                    }
                    Ok(p) => format!("not valid before {}", fmt_time(p.not_before)),
                },
                reason,
            })
    }
}

fn fmt_time(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{secs} s after the Unix epoch")
}

fn version_error(path: &Path, v: &Version) -> Option<IdentityError> {
    v.parsed
        .as_ref()
        .err()
        .map(|(reason, problem)| IdentityError::Certificate {
            path: path.to_path_buf(),
            problem: problem.clone(),
            reason: *reason,
        })
}

fn stamp_of(path: &Path) -> Option<FileStamp> {
    let m = fs::metadata(path).ok()?;
    Some(FileStamp {
        ino: m.ino(),
        size: m.size(),
        mtime: m.modified().ok()?,
    })
}

/// Largest certificate file read (a PEM certificate is a few KiB; a chain, tens).
pub const MAX_CERTIFICATE_BYTES: u64 = 1 << 20;

/// Reads the certificate file with a bound, without blocking on a FIFO (`O_NONBLOCK`),
/// and only if it is a regular file (links are followed: secrets are often mounted
/// through them).
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::{
        io::{Error, ErrorKind, Read},
        os::unix::fs::OpenOptionsExt,
    };
    // The type first, so that a link to a device is never opened (opening some has
    // effects), then again on the open file.
    if !fs::metadata(path)?.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    if meta.len() > MAX_CERTIFICATE_BYTES {
        return Err(Error::new(
            ErrorKind::FileTooLarge,
            format!(
                "{} bytes, more than the {MAX_CERTIFICATE_BYTES} allowed",
                meta.len()
            ),
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CERTIFICATE_BYTES).read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn read_version(path: &Path, field: IdentityField) -> Version {
    let stamp = stamp_of(path);
    let parsed = match read_bounded(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err((
            UnattributedReason::CertificateMissing,
            "does not exist".to_string(),
        )),
        Err(e) => Err((
            UnattributedReason::CertificateUnreadable,
            format!("cannot be read: {e}"),
        )),
        Ok(bytes) => parse(&bytes, field),
    };
    Version { stamp, parsed }
}

fn parse(bytes: &[u8], field: IdentityField) -> Result<Parsed, (UnattributedReason, String)> {
    let malformed = |what: String| (UnattributedReason::CertificateMalformed, what);
    let (_, pem) = parse_x509_pem(bytes).map_err(|e| malformed(format!("is not PEM: {e}")))?;
    if pem.label != "CERTIFICATE" {
        return Err(malformed(format!(
            "holds a PEM {:?}, not a CERTIFICATE",
            pem.label
        )));
    }
    let cert = pem
        .parse_x509()
        .map_err(|e| malformed(format!("is not a valid X.509 certificate: {e}")))?;
    let to_time = |secs: i64| {
        if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        }
    };
    let validity = cert.validity();
    let name = match field {
        IdentityField::SanUri => cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|n| match n {
                    GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                })
            }),
        IdentityField::SubjectCn => cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string),
    };
    let no_identity = |what: &str| {
        (
            UnattributedReason::CertificateHasNoIdentity,
            what.to_string(),
        )
    };
    let name = name.ok_or_else(|| match field {
        IdentityField::SanUri => no_identity("has no URI subject alternative name"),
        IdentityField::SubjectCn => no_identity("has no subject common name"),
    })?;
    let id = WorkloadId::new(name)
        .map_err(|e| no_identity(&format!("names no usable identity: {e}")))?;
    Ok(Parsed {
        id,
        not_before: to_time(validity.not_before.timestamp()),
        not_after: to_time(validity.not_after.timestamp()),
    })
}
