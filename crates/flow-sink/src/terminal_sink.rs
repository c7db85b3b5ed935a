//! `TerminalSink`: records for a person at a terminal (or a pipe): a table like bcc's
//! tcplife, or JSON lines, flushed after each record.

use std::{
    io::{self, Write},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use flow_batch::Chunk;
use flow_record::{Direction, FlowRecord, RecordKind};
use tokio::sync::Notify;

use crate::{error::SinkError, json, sink::FlowSink};

/// How a [`TerminalSink`] prints records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TerminalFormat {
    /// Fixed-width columns under a header.
    Table,
    /// One JSON object per line: the fields of [`json::JsonFlow`].
    Json,
}

/// The table's header.
pub const TABLE_HEADER: &str = "DIR  LADDR                                   LPORT RADDR                                   RPORT       TX_B       RX_B SRTT_US    MS CLOSED_FROM REASON";

/// Writes `record` as one line in `format` (no flush).
pub fn write_record(
    out: &mut impl Write,
    format: TerminalFormat,
    r: &FlowRecord,
) -> io::Result<()> {
    match format {
        TerminalFormat::Json => json::write_line(out, r),
        TerminalFormat::Table => {
            let ms = r
                .t_start
                .and_then(|s| r.t_end.duration_since(s).ok())
                .map_or_else(|| "-".to_string(), |d| d.as_millis().to_string());
            let dir = match r.direction {
                Direction::Outbound => "OUT",
                Direction::Inbound => "IN",
                Direction::Unknown => "?",
            };
            writeln!(
                out,
                "{dir:<4} {:<39} {:>5} {:<39} {:>5} {:>10} {:>10} {:>7} {:>5} {:<11} {}",
                r.local.ip(),
                r.local.port(),
                r.remote.ip(),
                r.remote.port(),
                r.stats.bytes_sent,
                r.stats.bytes_received,
                r.stats.srtt_us,
                ms,
                r.close_state.as_str(),
                // An interim record's connection has not closed: its state is the one
                // it is in, and it has no close reason.
                match r.record_kind {
                    RecordKind::Final => r.close_reason.as_str(),
                    RecordKind::Interim => "interim".into(),
                },
            )
        }
    }
}

/// Prints every record of every chunk on standard output in a [`TerminalFormat`],
/// one write and flush per chunk (on the blocking pool: a slow terminal never stalls
/// the runtime). With [`Shipping::Immediately`](https://docs.rs/flowexporter) a chunk
/// is what one read of the ring buffer found, so records appear as they are captured.
/// Another write error than a closed pipe (a full disk behind a redirect, say) fails
/// the chunk, which the exporter's pipeline tries again.
///
/// Once stdout is closed (its reader went away, e.g. `| head`), it wakes
/// [`closed`](TerminalSink::closed) and takes every later chunk without printing it:
/// there is nobody to print it for. Use that to stop the exporter.
#[derive(Debug)]
pub struct TerminalSink {
    format: TerminalFormat,
    /// `false` once stdout is closed.
    open: Arc<Mutex<bool>>,
    closed: Arc<Notify>,
}

impl TerminalSink {
    /// A sink printing in `format`; a table starts with its header, now.
    pub fn new(format: TerminalFormat) -> Result<TerminalSink, SinkError> {
        if format == TerminalFormat::Table {
            let mut out = io::stdout().lock();
            writeln!(out, "{TABLE_HEADER}")
                .and_then(|()| out.flush())
                .map_err(|source| SinkError::Stdout { source })?;
        }
        Ok(TerminalSink {
            format,
            open: Arc::new(Mutex::new(true)),
            closed: Arc::new(Notify::new()),
        })
    }

    /// Completes once stdout has been found closed.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let closed = Arc::clone(&self.closed);
        async move { closed.notified().await }
    }
}

#[async_trait]
impl FlowSink for TerminalSink {
    fn name(&self) -> &str {
        "terminal"
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        // Encoded here, written in one call on the blocking pool.
        let mut lines = Vec::with_capacity(chunk.records.len() * 200);
        for record in &chunk.records {
            // Writing into a Vec cannot fail and every field serialises.
            let _ = write_record(&mut lines, self.format, record);
        }
        let (open, closed) = (Arc::clone(&self.open), Arc::clone(&self.closed));
        tokio::task::spawn_blocking(move || {
            let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
            if !*open {
                return Ok(());
            }
            let mut out = io::stdout().lock();
            match out.write_all(&lines).and_then(|()| out.flush()) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    *open = false;
                    closed.notify_one();
                    Ok(())
                }
                Err(source) => Err(SinkError::Stdout { source }),
            }
        })
        .await
        .map_err(|source| SinkError::Task {
            task: "terminal sink write",
            source,
        })?
    }
}

#[cfg(test)]
mod tests {
    use flow_testkit::record;

    use super::*;

    #[test]
    fn a_table_row_has_the_header_s_columns() {
        let r = record().build();
        let mut line = Vec::new();
        write_record(&mut line, TerminalFormat::Table, &r).expect("write");
        let line = String::from_utf8(line).expect("UTF-8");
        assert!(line.starts_with("IN   10.0.0.1"), "{line}");
        assert_eq!(
            line.split_whitespace().count(),
            TABLE_HEADER.split_whitespace().count()
        );
    }

    #[test]
    fn an_interim_row_says_so_instead_of_a_close_reason() {
        let r = record()
            .close(flow_record::TcpState(1), flow_record::CloseReason::Normal)
            .kind(RecordKind::Interim)
            .build();
        let mut line = Vec::new();
        write_record(&mut line, TerminalFormat::Table, &r).expect("write");
        let line = String::from_utf8(line).expect("UTF-8");
        assert!(line.trim_end().ends_with("ESTABLISHED interim"), "{line}");
    }

    #[test]
    fn a_json_line_is_the_json_sinks_line() {
        let r = record().build();
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        write_record(&mut ours, TerminalFormat::Json, &r).expect("write");
        json::write_line(&mut theirs, &r).expect("write");
        assert_eq!(ours, theirs);
    }
}
