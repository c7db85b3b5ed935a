//! How `tail` prints records: a table like bcc's tcplife, or JSON lines, through a
//! [`TerminalSink`].

use std::{
    io::{self, Write},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use flow_batch::Chunk;
use flow_record::FlowRecord;
use flow_sink::{FlowSink, SinkError};
use tokio::sync::Notify;

/// The output format.
#[derive(Clone, Copy, Debug)]
pub enum Format {
    /// Fixed-width columns with a header.
    Table,
    /// One JSON object per line.
    Json,
}

/// Writes records in `format`, flushing after each one.
pub struct RecordWriter<W: Write> {
    out: W,
    format: Format,
}

const HEADER: &str = "DIR  LADDR                                   LPORT RADDR                                   RPORT       TX_B       RX_B SRTT_US    MS CLOSED_FROM REASON";

impl<W: Write> RecordWriter<W> {
    /// A writer; a table starts with its header.
    pub fn new(mut out: W, format: Format) -> io::Result<RecordWriter<W>> {
        if let Format::Table = format {
            writeln!(out, "{HEADER}")?;
            out.flush()?;
        }
        Ok(RecordWriter { out, format })
    }

    /// Writes one record and flushes it.
    pub fn write(&mut self, r: &FlowRecord) -> io::Result<()> {
        match self.format {
            Format::Json => flow_sink::json::write_line(&mut self.out, r)?,
            Format::Table => {
                let ms = r
                    .t_start
                    .and_then(|s| r.t_end.duration_since(s).ok())
                    .map_or_else(|| "-".to_string(), |d| d.as_millis().to_string());
                let dir = match r.direction {
                    flow_record::Direction::Outbound => "OUT",
                    flow_record::Direction::Inbound => "IN",
                    flow_record::Direction::Unknown => "?",
                };
                writeln!(
                    self.out,
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
                    r.close_reason.as_str(),
                )?;
            }
        }
        self.out.flush()
    }
}

/// Prints every record of every chunk on standard output, flushing after each one.
///
/// Once stdout is closed (the reader went away, e.g. `| head`), it wakes `closed` and
/// takes every later chunk without printing it: there is nobody to print it for.
pub struct TerminalSink {
    out: Mutex<Option<RecordWriter<io::Stdout>>>,
    closed: Arc<Notify>,
}

impl TerminalSink {
    /// A sink printing in `format` (a table starts with its header now).
    pub fn new(format: Format, closed: Arc<Notify>) -> io::Result<TerminalSink> {
        Ok(TerminalSink {
            out: Mutex::new(Some(RecordWriter::new(io::stdout(), format)?)),
            closed,
        })
    }
}

#[async_trait]
impl FlowSink for TerminalSink {
    fn name(&self) -> &str {
        "terminal"
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let Some(writer) = out.as_mut() else {
            return Ok(());
        };
        for record in &chunk.records {
            match writer.write(record) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    *out = None;
                    self.closed.notify_one();
                    return Ok(());
                }
                Err(source) => return Err(SinkError::Stdout { source }),
            }
        }
        Ok(())
    }
}
