//! Fetches historical records (`timeseries.get_range`) with the mio driver's built-in
//! loop, or downloads the `.dbn.zst` body to a file with `--output`.
//!
//! ```text
//! DATABENTO_API_KEY=... cargo run -p dbn-pipe-mio --example mio_get_range -- \
//!     --dataset GLBX.MDP3 --schema trades --symbols ESM5 \
//!     --start 2025-05-01T14:30:00Z --end 2025-05-01T14:31:00Z
//! ```
#![forbid(unsafe_code)]

#[path = "../../driver-tokio/examples/common/mod.rs"]
mod common;

use std::ops::ControlFlow;
use std::process::ExitCode;

use clap::Parser;
use dbn_pipe_mio::{HistoricalItem, HistoricalOptions};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = common::RangeArgs::parse();
    let key = match common::api_key() {
        Ok(key) => key,
        Err(err) => return common::fail(&"config", &err),
    };
    let params = match args.params() {
        Ok(params) => params,
        Err(err) => return common::fail(&"usage", &err),
    };
    let mut options = HistoricalOptions::new(key);
    if let Some(url) = &args.base_url {
        options = options.base_url(url);
    }
    match args.ca_pem() {
        Ok(Some(pem)) => options = options.add_root_pem(&pem),
        Ok(None) => {}
        Err(err) => return common::fail(&"config", &err),
    }
    if let Some(path) = &args.output {
        let result = dbn_pipe_mio::get_range_to_file(options, &params, path, |progress| {
            tracing::debug!(
                bytes = progress.bytes_written,
                records = progress.records,
                "progress"
            );
        });
        return match result {
            Ok(progress) => {
                if !args.json {
                    println!(
                        "wrote {} bytes ({} records) to {}",
                        progress.bytes_written,
                        progress.records,
                        path.display()
                    );
                }
                ExitCode::SUCCESS
            }
            Err(err) => common::fail(&err.kind(), &err),
        };
    }
    let mut output = common::Output::new(args.json);
    let mut write_error = None;
    let result = dbn_pipe_mio::run_get_range(options, &params, |item| {
        match item {
            HistoricalItem::Metadata(metadata) => output.metadata(&metadata),
            HistoricalItem::Record(record) => {
                if let Err(err) = output.record(record) {
                    write_error = Some(err);
                    return ControlFlow::Break(());
                }
            }
            HistoricalItem::Warning(warning) => eprintln!("warning: {warning}"),
            _ => {}
        }
        ControlFlow::Continue(())
    });
    if let Some(err) = write_error {
        return common::fail(&"io", &err);
    }
    if let Err(err) = result {
        let _ = output.finish();
        return common::fail(&err.kind(), &err);
    }
    match output.finish() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => common::fail(&"io", &err),
    }
}
