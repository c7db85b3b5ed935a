//! The identity certificate: SAN URI and CN, rotation, and every way it can be
//! unusable. Real certificates (generated with rcgen) in real files.

use std::{
    fs,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use flow_identity::{
    CertificateIdentity, CertificateResolver, IdentityField, IdentityResolver, ReloadableResolver,
};
use flow_record::{
    CloseReason, Direction, FlowRecord, IdentitySource, TcpState, UnattributedReason, WorkloadId,
};
use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use time::OffsetDateTime;

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fe-cert-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

fn cert_pem(
    uri: Option<&str>,
    cn: Option<&str>,
    valid: (OffsetDateTime, OffsetDateTime),
) -> String {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    if let Some(uri) = uri {
        params.subject_alt_names = vec![SanType::URI(uri.try_into().expect("ia5"))];
    }
    if let Some(cn) = cn {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    params.not_before = valid.0;
    params.not_after = valid.1;
    let key = KeyPair::generate().expect("key");
    params.self_signed(&key).expect("sign").pem()
}

fn now_window() -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (
        now - time::Duration::days(1),
        now + time::Duration::days(30),
    )
}

fn record_at(t_end: SystemTime) -> FlowRecord {
    flow_testkit::record()
        .local("10.1.2.3:40000")
        .remote("10.9.9.9:443")
        .direction(Direction::Outbound)
        .t_start(None)
        .t_end(t_end)
        .close(TcpState(5), CloseReason::Normal)
        // What the kernel reports when neither map had an entry.
        .unattributed(UnattributedReason::NoMatch)
        .build()
}

fn resolve(resolver: &mut CertificateResolver, t_end: SystemTime) -> FlowRecord {
    let mut r = record_at(t_end);
    resolver.resolve(&mut r);
    r
}

#[test]
fn identity_from_san_uri_and_from_cn() {
    let path = temp_path("both.pem");
    let uri = "spiffe://prod.example/app/billing";
    fs::write(&path, cert_pem(Some(uri), Some("billing-cn"), now_window())).expect("write");

    let (cert, err) = CertificateIdentity::load(&path, IdentityField::SanUri);
    assert!(err.is_none(), "{err:?}");
    let mut resolver = CertificateResolver::new(Some(cert));
    let r = resolve(&mut resolver, SystemTime::now());
    assert_eq!(
        r.local_workload_id.as_ref().map(WorkloadId::as_str),
        Some(uri)
    );
    assert_eq!(r.identity_source, IdentitySource::Certificate);

    let (cert, err) = CertificateIdentity::load(&path, IdentityField::SubjectCn);
    assert!(err.is_none(), "{err:?}");
    let mut resolver = CertificateResolver::new(Some(cert));
    let r = resolve(&mut resolver, SystemTime::now());
    assert_eq!(
        r.local_workload_id.as_ref().map(WorkloadId::as_str),
        Some("billing-cn")
    );
    assert_eq!(resolver.counters().certificate, 1);
}

#[test]
fn map_attribution_takes_precedence_over_the_certificate() {
    let path = temp_path("precedence.pem");
    fs::write(&path, cert_pem(Some("spiffe://x/host"), None, now_window())).expect("write");
    let (cert, _) = CertificateIdentity::load(&path, IdentityField::SanUri);
    let mut resolver = CertificateResolver::new(Some(cert));
    let mut r = record_at(SystemTime::now());
    r.identity_source = IdentitySource::IpMap;
    r.local_workload_id = Some(WorkloadId::new("from-ip-map").expect("id"));
    resolver.resolve(&mut r);
    assert_eq!(r.identity_source, IdentitySource::IpMap);
    assert_eq!(
        r.local_workload_id.as_ref().map(WorkloadId::as_str),
        Some("from-ip-map")
    );
    assert_eq!(resolver.counters().ip_map, 1);
}

#[test]
fn rotation_is_picked_up_and_applies_from_the_replacement_on() {
    let path = temp_path("rotate.pem");
    fs::write(&path, cert_pem(Some("spiffe://x/old"), None, now_window())).expect("write");
    let (cert, _) = CertificateIdentity::load(&path, IdentityField::SanUri);
    let mut resolver = CertificateResolver::new(Some(cert));
    let before_rotation = SystemTime::now();
    std::thread::sleep(Duration::from_millis(20));

    // Rotate the way agents do: write a new file, rename it over the old one.
    let staged = temp_path("rotate.pem.new");
    fs::write(
        &staged,
        cert_pem(Some("spiffe://x/new"), None, now_window()),
    )
    .expect("write");
    fs::rename(&staged, &path).expect("rename");
    let replaced_at = fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    assert!(resolver.refresh().is_none());
    assert_eq!(resolver.counters().certificate_reloads, 1);

    let after = resolve(&mut resolver, SystemTime::now());
    assert_eq!(
        after.local_workload_id.as_ref().map(WorkloadId::as_str),
        Some("spiffe://x/new")
    );
    let at_replacement = resolve(&mut resolver, replaced_at);
    assert_eq!(
        at_replacement
            .local_workload_id
            .as_ref()
            .map(WorkloadId::as_str),
        Some("spiffe://x/new"),
        "no record from the rotation on carries the old identity"
    );
    let earlier = resolve(&mut resolver, before_rotation);
    assert_eq!(
        earlier.local_workload_id.as_ref().map(WorkloadId::as_str),
        Some("spiffe://x/old")
    );
    // Unchanged file: no reload.
    assert!(resolver.refresh().is_none());
    assert_eq!(resolver.counters().certificate_reloads, 1);
}

#[test]
fn resolve_all_picks_up_a_rotation_through_the_trait() {
    let path = temp_path("rotate-trait.pem");
    fs::write(&path, cert_pem(Some("spiffe://x/one"), None, now_window())).expect("write");
    let (cert, _) = CertificateIdentity::load(&path, IdentityField::SanUri);
    let mut resolver: Box<dyn IdentityResolver> = Box::new(CertificateResolver::new(Some(cert)));
    let mut first = [record_at(SystemTime::now())];
    resolver.resolve_all(&mut first);
    assert_eq!(
        first[0].local_workload_id.as_ref().map(WorkloadId::as_str),
        Some("spiffe://x/one")
    );

    std::thread::sleep(Duration::from_millis(20));
    let staged = temp_path("rotate-trait.pem.new");
    fs::write(
        &staged,
        cert_pem(Some("spiffe://x/two"), None, now_window()),
    )
    .expect("write");
    fs::rename(&staged, &path).expect("rename");
    std::thread::sleep(Duration::from_millis(20));
    let mut second = [record_at(SystemTime::now())];
    resolver.resolve_all(&mut second);
    assert_eq!(
        second[0].local_workload_id.as_ref().map(WorkloadId::as_str),
        Some("spiffe://x/two")
    );
    let c = resolver.counters();
    assert_eq!((c.certificate, c.certificate_reloads), (2, 1));
}

#[test]
fn a_reloadable_resolver_switches_certificate_and_field() {
    let path = temp_path("reloadable.pem");
    fs::write(
        &path,
        cert_pem(Some("spiffe://x/uri"), Some("the-cn"), now_window()),
    )
    .expect("write");
    let mut resolver = ReloadableResolver::new(Some(&path), IdentityField::SanUri);
    let mut by_uri = record_at(SystemTime::now());
    resolver.resolve(&mut by_uri);
    resolver.replace(Some(&path), IdentityField::SubjectCn);
    assert_eq!(
        resolver.settings(),
        (Some(path.as_path()), IdentityField::SubjectCn)
    );
    let mut by_cn = [record_at(SystemTime::now())];
    resolver.resolve_all(&mut by_cn);
    let ids: Vec<_> = [&by_uri, &by_cn[0]]
        .iter()
        .map(|r| r.local_workload_id.as_ref().map(WorkloadId::as_str))
        .collect();
    assert_eq!(ids, [Some("spiffe://x/uri"), Some("the-cn")]);
    assert_eq!(
        resolver.counters().certificate,
        2,
        "counts go on across a replacement"
    );
}

/// Loads `path` and checks the error names the path and the problem, and that records
/// are unattributed with `reason`.
fn assert_unusable(path: &PathBuf, field: IdentityField, reason: UnattributedReason, words: &str) {
    let (cert, err) = CertificateIdentity::load(path, field);
    let now = SystemTime::now();
    let err = match err {
        Some(e) => e,
        None => cert
            .check(now)
            .expect_err("the certificate must be unusable"),
    };
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains(words), "{text}");
    let mut resolver = CertificateResolver::new(Some(cert));
    assert_eq!(resolver.counters().certificate_errors, 1);
    let r = resolve(&mut resolver, now);
    assert_eq!(r.local_workload_id, None, "never a guessed identity");
    assert_eq!(r.identity_source, IdentitySource::None(reason));
    assert_eq!(resolver.counters().unattributed_certificate, 1);
}

#[test]
fn each_bad_certificate_gives_its_error_and_unattributed_records() {
    let now = OffsetDateTime::now_utc();
    let missing = temp_path("missing.pem");
    let _ = fs::remove_file(&missing);
    assert_unusable(
        &missing,
        IdentityField::SanUri,
        UnattributedReason::CertificateMissing,
        "does not exist",
    );

    let garbage = temp_path("garbage.pem");
    fs::write(&garbage, "this is not a certificate").expect("write");
    assert_unusable(
        &garbage,
        IdentityField::SanUri,
        UnattributedReason::CertificateMalformed,
        "PEM",
    );

    let key_only = temp_path("key.pem");
    fs::write(&key_only, KeyPair::generate().expect("key").serialize_pem()).expect("write");
    assert_unusable(
        &key_only,
        IdentityField::SanUri,
        UnattributedReason::CertificateMalformed,
        "not a CERTIFICATE",
    );

    let expired = temp_path("expired.pem");
    let window = (
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    );
    fs::write(&expired, cert_pem(Some("spiffe://x/y"), None, window)).expect("write");
    assert_unusable(
        &expired,
        IdentityField::SanUri,
        UnattributedReason::CertificateExpired,
        "expired",
    );

    let future = temp_path("future.pem");
    let window = (
        now + time::Duration::days(1),
        now + time::Duration::days(30),
    );
    fs::write(&future, cert_pem(Some("spiffe://x/y"), None, window)).expect("write");
    assert_unusable(
        &future,
        IdentityField::SanUri,
        UnattributedReason::CertificateNotYetValid,
        "not valid before",
    );

    let no_uri = temp_path("no-uri.pem");
    fs::write(&no_uri, cert_pem(None, Some("cn-only"), now_window())).expect("write");
    assert_unusable(
        &no_uri,
        IdentityField::SanUri,
        UnattributedReason::CertificateHasNoIdentity,
        "no URI",
    );

    let unreadable = temp_path("a-directory.pem");
    fs::create_dir_all(&unreadable).expect("dir");
    assert_unusable(
        &unreadable,
        IdentityField::SanUri,
        UnattributedReason::CertificateUnreadable,
        "cannot be read",
    );
    // A FIFO does not hang the loader, and a link to /dev/zero is not read forever.
    let fifo = temp_path("a-fifo.pem");
    let _ = fs::remove_file(&fifo);
    let c_fifo = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a NUL-terminated path and a mode.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    assert_unusable(
        &fifo,
        IdentityField::SanUri,
        UnattributedReason::CertificateUnreadable,
        "not a regular file",
    );
    let zero = temp_path("dev-zero.pem");
    let _ = fs::remove_file(&zero);
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
    assert_unusable(
        &zero,
        IdentityField::SanUri,
        UnattributedReason::CertificateUnreadable,
        "not a regular file",
    );
    let huge = temp_path("huge.pem");
    fs::File::create(&huge)
        .and_then(|f| f.set_len(64 << 20))
        .expect("sparse file");
    assert_unusable(
        &huge,
        IdentityField::SanUri,
        UnattributedReason::CertificateUnreadable,
        "more than the",
    );
}

#[test]
fn workload_ids_are_validated() {
    assert!(WorkloadId::new("").is_err());
    assert!(WorkloadId::new("a".repeat(65)).is_err());
    assert!(WorkloadId::new("nul\0inside").is_err());
    assert!(WorkloadId::new("a".repeat(64)).is_ok());
    assert!(WorkloadId::new("ümlaut-workload").is_ok());
    let err = WorkloadId::new("a".repeat(65)).expect_err("too long");
    assert!(err.to_string().contains("longer than 64 bytes"), "{err}");
    let err = WorkloadId::new("spiffe://x/\u{1b}[2J").expect_err("control character");
    assert!(err.to_string().contains("U+001B at byte 11"), "{err}");
}
