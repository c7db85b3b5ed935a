//! The Python that tests use as an independent peer: the virtualenv `.ci/run` makes
//! (`$HOME/.cache/flowexporter/venv`), with kafka-python, zstandard,
//! opentelemetry-proto and protobuf. A test that needs it and cannot find it fails
//! with a message saying how to make it: it never passes by skipping.

use std::path::PathBuf;

/// The venv's packages, as `pip install` takes them.
pub const PACKAGES: &str =
    "kafka-python==3.0.12 zstandard==0.25.0 opentelemetry-proto==1.45.2 selenium==4.51.0";

/// The Python of the tests' virtualenv: `$FLOWEXPORTER_PYTHON`, else the one `.ci/run`
/// makes. Panics, saying how to make it, when neither exists.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FLOWEXPORTER_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = crate::kafka::cache_dir().join("venv/bin/python3");
    assert!(
        venv.is_file(),
        "no Python virtualenv at {}: run .ci/run, or `python3 -m venv {} && {} -m pip \
         install {PACKAGES}`",
        venv.display(),
        crate::kafka::cache_dir().join("venv").display(),
        venv.display()
    );
    venv
}
