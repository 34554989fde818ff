//! Fetches historical records (`timeseries.get_range`) with the tokio driver, or
//! writes the body to a `.dbn.zst` file with `--output` (with a progress bar on a
//! terminal).
//!
//! ```text
//! DATABENTO_API_KEY=... cargo run -p dbn-pipe-tokio --example tokio_get_range -- \
//!     --dataset GLBX.MDP3 --schema trades --symbols ESM4 --start 2024-05-01 --limit 1000
//! ```
#![forbid(unsafe_code)]

#[path = "common/mod.rs"]
mod common;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use dbn_pipe_tokio::historical::Progress;
use dbn_pipe_tokio::{HistoricalClient, HistoricalOptions};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = common::RangeArgs::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return common::fail(&"io", &err),
    };
    runtime.block_on(run(args))
}

async fn run(args: common::RangeArgs) -> ExitCode {
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
    let mut client = match HistoricalClient::new(options) {
        Ok(client) => client,
        Err(err) => return common::fail(&err.kind(), &err),
    };
    if let Some(path) = &args.output {
        let bar = if args.json || !std::io::stderr().is_terminal() {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} {bytes} written, {msg} [{elapsed}] {bytes_per_sec}",
            ) {
                bar.set_style(style);
            }
            bar
        };
        let result = client
            .get_range_to_file(&params, path, |progress: Progress| {
                bar.set_position(progress.bytes_written);
                bar.set_message(format!("{} records", progress.records));
            })
            .await;
        bar.finish_and_clear();
        return match result {
            Ok(summary) => {
                if !args.json {
                    println!(
                        "wrote {} ({} bytes, {} records, dataset {})",
                        path.display(),
                        summary.bytes_written,
                        summary.records,
                        summary.metadata.dataset
                    );
                }
                ExitCode::SUCCESS
            }
            Err(err) => common::fail(&err.kind(), &err),
        };
    }
    let mut stream = match client.timeseries_get_range(&params).await {
        Ok(stream) => stream,
        Err(err) => return common::fail(&err.kind(), &err),
    };
    let mut output = common::Output::new(args.json);
    output.metadata(stream.metadata());
    loop {
        match stream.next_record().await {
            Ok(Some(record)) => {
                if let Err(err) = output.record(record) {
                    return common::fail(&"io", &err);
                }
            }
            Ok(None) => break,
            Err(err) => {
                let _ = output.finish();
                return common::fail(&err.kind(), &err);
            }
        }
    }
    match output.finish() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => common::fail(&"io", &err),
    }
}
