//! A collector with an output of its own: attributed flows as tab-separated lines,
//! `local workload -> remote workload`, with the source of the remote side. The ledger,
//! deduplication, attribution and recovery are the library's; the output only says
//! where it stands (`commit`) and, after a crash, which flows it already holds.
//!
//! ```text
//! cargo run --example collector_output -- --listen 127.0.0.1:9000 --out /tmp/edges.tsv
//! ```

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Seek, SeekFrom, Write},
    net::SocketAddr,
    path::PathBuf,
};

use clap::Parser;
use flow_collector::{
    CollectorOptions, FlowCollector,
    attribution::AttributedFlow,
    output::{FlowKey, FlowOutput, OutputError, OutputPosition},
};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    #[arg(long)]
    out: PathBuf,
}

/// `batch_id \t index \t local workload \t remote workload \t source \t bytes`.
struct Tsv {
    path: PathBuf,
    file: File,
}

impl Tsv {
    fn io(&self, operation: &'static str) -> impl Fn(std::io::Error) -> OutputError + '_ {
        move |source| OutputError::Io {
            operation,
            path: self.path.clone(),
            source,
        }
    }
}

impl FlowOutput for Tsv {
    fn write(&mut self, flows: &[AttributedFlow]) -> Result<(), OutputError> {
        let mut text = String::new();
        for f in flows {
            let name =
                |w: Option<&flow_record::WorkloadId>| w.map_or("-", |w| w.as_str()).to_owned();
            text += &format!(
                "{}\t{}\t{}\t{}\t{}\t{}\n",
                f.batch,
                f.record_index,
                name(f.record.local_workload_id.as_ref()),
                name(f.remote_workload_id.as_ref()),
                f.remote_identity_source.as_str(),
                f.record.stats.bytes_sent + f.record.stats.bytes_received,
            );
        }
        self.file
            .write_all(text.as_bytes())
            .map_err(self.io("write"))
    }

    fn commit(&mut self) -> Result<OutputPosition, OutputError> {
        self.file.sync_data().map_err(self.io("sync"))?;
        let len = self.file.metadata().map_err(self.io("stat"))?.len();
        Ok(OutputPosition(len.to_le_bytes().to_vec()))
    }

    fn written_since(&mut self, at: Option<&OutputPosition>) -> Result<Vec<FlowKey>, OutputError> {
        let from = at
            .and_then(|p| p.0.as_slice().try_into().ok())
            .map_or(0, u64::from_le_bytes);
        let mut file = File::open(&self.path).map_err(self.io("open"))?;
        file.seek(SeekFrom::Start(from)).map_err(self.io("seek"))?;
        let mut keys = Vec::new();
        for line in BufReader::new(file).lines() {
            let line = line.map_err(self.io("read"))?;
            let mut fields = line.split('\t');
            if let (Some(batch), Some(Ok(index))) = (fields.next(), fields.next().map(str::parse)) {
                keys.push((batch.to_owned(), index));
            }
        }
        Ok(keys)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)?;
    let output = Box::new(Tsv {
        path: args.out.clone(),
        file,
    });
    // `out` names the ledger's default place (<out>.state); the file itself is ours.
    let options = CollectorOptions::new(args.listen, &args.out);
    let collector = FlowCollector::start_with_output(options, output).await?;
    println!("listening on {}", collector.local_addr());
    collector
        .run_until(async { tokio::signal::ctrl_c().await.unwrap_or(()) })
        .await;
    Ok(())
}
