//! The dependency map's browser driver for tests: `scripts/graph_page.py` drives the
//! collector's page in headless Chromium (Debian's `chromium` and `chromium-driver`)
//! with selenium (in the tests' virtualenv, [`crate::python`]). A test that needs them
//! and cannot find them fails, saying how to install them: it never skips.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

/// The driver script.
pub const GRAPH_PAGE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/graph_page.py");

/// Chromium and chromedriver (`$CHROMIUM`, `$CHROMEDRIVER`, else on `PATH`), or a
/// failure saying how to get them.
pub fn require_browser() {
    for (tool, env, package) in [
        ("chromium", "CHROMIUM", "chromium"),
        ("chromedriver", "CHROMEDRIVER", "chromium-driver"),
    ] {
        let found = std::env::var_os(env).map(PathBuf::from).or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|d| d.join(tool))
                .find(|p| p.is_file())
        });
        assert!(
            found.is_some_and(|p| p.is_file()),
            "the dependency map's browser test needs {tool}: `apt-get install {package}` \
             (as .ci/run does), or set {env} to its path"
        );
    }
}

/// Runs `graph_page.py` with `args` (`check --url ... --expect JSON`, `measure ...`);
/// its JSON result line, after asserting that every check passed.
pub fn graph_page(args: &[&str]) -> serde_json::Value {
    require_browser();
    let python = crate::python::binary();
    let out = Command::new(&python)
        .arg(GRAPH_PAGE_SCRIPT)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "graph_page.py printed no result ({}):\n{stdout}",
                out.status
            )
        });
    assert!(
        out.status.success(),
        "the page's checks failed: {:#}",
        result["problems"]
    );
    result
}
