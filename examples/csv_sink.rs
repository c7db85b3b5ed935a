//! A custom sink: records appended to a CSV file, one row each, a header when the file
//! is new. Columns follow the AWS VPC Flow Logs vocabulary where it has one
//! (`srcaddr`, `dstaddr`, `srcport`, `dstport`, `bytes`, `start`, `end`), from the
//! local side's point of view.
//!
//! ```text
//! cargo run --example csv_sink -- /tmp/flows.csv
//! ```

use std::{
    fs::OpenOptions,
    io::Write,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use flowexporter::{
    batch::{Chunk, Window},
    capture::{
        CloseReason, Direction, FlowRecord, IdentitySource, RecordKind, SocketStats, TcpState,
        UnattributedReason,
    },
    sink::{FlowSink, SinkError},
};

const HEADER: &str = "srcaddr,srcport,dstaddr,dstport,direction,start,end,bytes_sent,bytes_received,close_reason,workload\n";

struct CsvSink {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl CsvSink {
    fn open(path: &Path) -> Result<CsvSink, SinkError> {
        let io = |source| SinkError::Io {
            operation: "open for appending",
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        if file.metadata().map_err(io)?.len() == 0 {
            file.write_all(HEADER.as_bytes()).map_err(io)?;
        }
        Ok(CsvSink {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }
}

fn millis(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

fn row(r: &FlowRecord) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{},{},{}\n",
        r.local.ip(),
        r.local.port(),
        r.remote.ip(),
        r.remote.port(),
        r.direction.as_str(),
        r.t_start
            .map(millis)
            .map(|m| m.to_string())
            .unwrap_or_default(),
        millis(r.t_end),
        r.stats.bytes_sent,
        r.stats.bytes_received,
        r.close_reason.as_str(),
        // Workload IDs are identifiers; quote them anyway in case one holds a comma.
        r.local_workload_id
            .as_ref()
            .map(|w| format!("\"{}\"", w.as_str().replace('"', "\"\"")))
            .unwrap_or_default(),
    )
}

#[async_trait]
impl FlowSink for CsvSink {
    fn name(&self) -> &str {
        "csv"
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        let rows: String = chunk.records.iter().map(row).collect();
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(rows.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|source| SinkError::Io {
                operation: "append to",
                path: self.path.clone(),
                source,
            })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: csv_sink FILE")?;
    let sink = CsvSink::open(Path::new(&path))?;
    let now = SystemTime::now();
    let records = (0..3u16)
        .map(|i| FlowRecord {
            local: format!("10.0.0.1:{}", 40_000 + i)
                .parse()
                .expect("literal address"),
            remote: "10.0.0.9:443".parse().expect("literal address"),
            direction: Direction::Outbound,
            t_start: Some(now - Duration::from_millis(100)),
            t_end: now,
            close_state: TcpState(7),
            close_reason: CloseReason::Normal,
            stats: SocketStats {
                bytes_sent: 100 * u64::from(i),
                ..SocketStats::default()
            },
            local_workload_id: None,
            identity_source: IdentitySource::None(UnattributedReason::NoMatch),
            incomplete: false,
            record_kind: RecordKind::Final,
            flow_id: None,
            process: None,
        })
        .collect();
    let start = millis(now) as u64 / 60_000 * 60_000;
    let window = Window::from_millis(start, start + 60_000).ok_or("empty window")?;
    sink.deliver(&Chunk::new(window, 0, 0, true, records))
        .await?;
    println!("appended 3 rows to {path}");
    Ok(())
}
