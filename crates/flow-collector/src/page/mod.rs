//! The dependency map's static page (`docs/graph-page.md`): its HTML, script and style
//! sheet, built into the binary so that the page works on a host without internet (it
//! makes no request outside the collector, and loads no library: it lays the graph out
//! and draws it itself). The handler
//! serves [`asset`]`("")` at `/` and [`asset`]`(path)` at `/assets/<path>`; the page
//! reads `GET /api/v1/graph` (`docs/graph.md`).

/// The assets: path under `/assets/`, bytes, content type.
const ASSETS: &[(&str, &[u8], &str)] = &[
    (
        "index.html",
        include_bytes!("../../assets/index.html"),
        HTML,
    ),
    ("app.js", include_bytes!("../../assets/app.js"), JS),
    ("style.css", include_bytes!("../../assets/style.css"), CSS),
];

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The asset at `path` (`""` or `"index.html"` for the page itself, else the path
/// under `/assets/`): its bytes and content type, or `None` for any other path (the
/// table is fixed: nothing is read from the file system).
pub fn asset(path: &str) -> Option<(&'static [u8], &'static str)> {
    let path = if path.is_empty() { "index.html" } else { path };
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, bytes, ty)| (*bytes, *ty))
}

#[cfg(test)]
mod tests {
    use super::asset;

    #[test]
    fn the_page_and_its_assets_are_served_and_nothing_else() {
        let (html, ty) = asset("").expect("index");
        assert!(ty.starts_with("text/html"));
        assert_eq!(asset("index.html").expect("index").0, html);
        let html = std::str::from_utf8(html).expect("utf-8");
        // Every script and style sheet the page names is in the table, and the page
        // names nothing outside the collector.
        for part in html.split(['"', '\'']) {
            if let Some(p) = part.strip_prefix("assets/") {
                assert!(asset(p).is_some(), "the page names assets/{p}, not served");
            }
            assert!(
                !part.starts_with("http://")
                    && !part.starts_with("https://")
                    && !part.starts_with("//"),
                "the page names {part}"
            );
        }
        assert_eq!(
            asset("app.js").expect("js").1,
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            asset("style.css").expect("css").1,
            "text/css; charset=utf-8"
        );
        for p in [
            "../Cargo.toml",
            "/etc/passwd",
            "assets/app.js",
            "/app.js",
            "APP.JS",
        ] {
            assert!(asset(p).is_none(), "{p}");
        }
    }
}
