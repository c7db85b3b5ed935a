//! How `tail` prints records: a table like bcc's tcplife, or JSON lines.

use std::io::{self, Write};

use flow_capture::FlowRecord;

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
                    flow_capture::Direction::Outbound => "OUT",
                    flow_capture::Direction::Inbound => "IN",
                    flow_capture::Direction::Unknown => "?",
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
