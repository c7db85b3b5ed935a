//! A custom sink: every chunk is POSTed to a webhook as one JSON document,
//! `{"window_start": ..., "window_end": ..., "records": [...]}`, with the record fields
//! of `flowexporter tail --json`.
//!
//! ```text
//! cargo run --example webhook_sink -- http://127.0.0.1:8080/flows
//! ```
//!
//! The demo `main` sends one small chunk. In an exporter, pass the sink wherever a
//! `FlowSink` goes, alone or next to others (`Vec<Box<dyn FlowSink>>`).

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use flowexporter::{
    batch::{Chunk, Window},
    capture::{
        CloseReason, Direction, FlowRecord, IdentitySource, RecordKind, SocketStats, TcpState,
        UnattributedReason,
    },
    sink::{FlowSink, SinkError, json::JsonFlow},
};

/// Posts each chunk as JSON. It does not retry or spool: a failed post returns the
/// error to the caller, which still owns the chunk (see `FlowSink::deliver`).
struct WebhookSink {
    client: reqwest::Client,
    url: String,
}

impl WebhookSink {
    fn new(url: impl Into<String>) -> Result<WebhookSink, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(WebhookSink {
            client,
            url: url.into(),
        })
    }
}

#[async_trait]
impl FlowSink for WebhookSink {
    fn name(&self) -> &str {
        "webhook"
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        let body = serde_json::json!({
            "window_start": flowexporter::sink::json::rfc3339(chunk.window.start()),
            "window_end": flowexporter::sink::json::rfc3339(chunk.window.end()),
            "records": chunk.records.iter().map(JsonFlow::from).collect::<Vec<_>>(),
        });
        let transport = |source| SinkError::Transport {
            url: self.url.clone(),
            source,
        };
        let response = self
            .client
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // Read at most the first 512 bytes of the answer: a peer may send an endless body.
        let mut response = response;
        let mut head = Vec::new();
        while head.len() < 512 {
            match response.chunk().await {
                Ok(Some(bytes)) => {
                    head.extend_from_slice(&bytes[..bytes.len().min(512 - head.len())])
                }
                _ => break,
            }
        }
        Err(SinkError::Rejected {
            url: self.url.clone(),
            batch_id: format!("sequence {}", chunk.sequence),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&head).chars().take(200).collect(),
        })
    }
}

fn demo_chunk() -> Chunk {
    let now = SystemTime::now();
    let record = FlowRecord {
        local: "10.0.0.1:443".parse().expect("literal address"),
        remote: "10.0.0.2:50000".parse().expect("literal address"),
        direction: Direction::Inbound,
        t_start: Some(now - Duration::from_millis(250)),
        t_end: now,
        close_state: TcpState(7),
        close_reason: CloseReason::Normal,
        stats: SocketStats::default(),
        local_workload_id: None,
        identity_source: IdentitySource::None(UnattributedReason::NoMatch),
        incomplete: false,
        record_kind: RecordKind::Final,
        flow_id: None,
        process: None,
    };
    let start = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64 / 60_000 * 60_000);
    let window = Window::from_millis(start, start + 60_000).expect("a non-empty window");
    Chunk::new(window, 0, 0, true, vec![record])
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).ok_or("usage: webhook_sink URL")?;
    let sink = WebhookSink::new(url)?;
    sink.deliver(&demo_chunk()).await?;
    println!("delivered one chunk to {}", sink.url);
    Ok(())
}
