//! The parameters of `GET /api/v1/graph?from=&to=&workload=`.

use std::time::{Duration, SystemTime};

/// Most edges one answer holds; more are cut (`"truncated": true`).
pub const MAX_RESPONSE_EDGES: usize = 5_000;

/// The range when `from` is not given: this long before `to`.
pub const DEFAULT_RANGE: Duration = Duration::from_secs(15 * 60);

/// The latest time a query may name: 9999-12-31T23:59:59Z (RFC 3339 has four-digit
/// years).
const LATEST_SECS: u64 = 253_402_300_799;

/// A query of the graph.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GraphQuery {
    /// The range's start.
    pub from: SystemTime,
    /// Its end (exclusive).
    pub to: SystemTime,
    /// Only edges touching the node with this ID.
    pub workload: Option<String>,
    /// `from` was moved forward to the retention's start.
    pub clamped: bool,
}

impl GraphQuery {
    /// `[from, to)`, edges touching `workload` (all when `None`); not clamped.
    pub fn new(from: SystemTime, to: SystemTime, workload: Option<String>) -> GraphQuery {
        GraphQuery {
            from,
            to,
            workload,
            clamped: false,
        }
    }

    /// Parses a URL query (`from`, `to`: RFC 3339 in UTC, e.g.
    /// `2026-11-30T10:00:00Z`, or Unix seconds; `workload`: a node ID). `to` defaults
    /// to `now`, `from` to 15 minutes before `to`; a `from` before `now - retention`
    /// is clamped to it. The error is one line naming the parameter.
    pub fn parse(
        query: Option<&str>,
        now: SystemTime,
        retention: Duration,
    ) -> Result<GraphQuery, String> {
        let mut from = None;
        let mut to = None;
        let mut workload = None;
        let mut seen: Vec<String> = Vec::new();
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if seen.iter().any(|k| k == key.as_ref()) {
                return Err(format!("{key}: given more than once"));
            }
            seen.push(key.to_string());
            match key.as_ref() {
                "from" => from = Some(time(&value).map_err(|e| format!("from: {e}"))?),
                "to" => to = Some(time(&value).map_err(|e| format!("to: {e}"))?),
                "workload" if value.is_empty() => {
                    return Err("workload: empty (leave it out for every node)".into());
                }
                "workload" => workload = Some(value.into_owned()),
                other => {
                    return Err(format!(
                        "{other}: unknown parameter (from, to and workload are known)"
                    ));
                }
            }
        }
        let to = to.unwrap_or(now);
        let from = from.unwrap_or_else(|| to.checked_sub(DEFAULT_RANGE).unwrap_or(to));
        if from >= to {
            return Err("from: must be before to".into());
        }
        let mut query = GraphQuery::new(from, to, workload);
        let oldest = now.checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH);
        if query.from < oldest {
            query.from = oldest;
            query.clamped = true;
            if query.to <= query.from {
                return Err("to: before the retention's start; nothing is held".into());
            }
        }
        Ok(query)
    }
}

/// A time: Unix seconds, or RFC 3339 in UTC.
fn time(value: &str) -> Result<SystemTime, String> {
    let too_late = || format!("{value:?} is after 9999-12-31T23:59:59Z");
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = value.parse().map_err(|_| too_late())?;
        if secs > LATEST_SECS {
            return Err(too_late());
        }
        return Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
    }
    let t = humantime::parse_rfc3339(value).map_err(|_| {
        format!("{value:?} is neither Unix seconds nor RFC 3339 in UTC (2026-11-30T10:00:00Z)")
    })?;
    if t > SystemTime::UNIX_EPOCH + Duration::from_secs(LATEST_SECS) {
        return Err(too_late());
    }
    Ok(t)
}
