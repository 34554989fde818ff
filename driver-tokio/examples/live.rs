//! Streams live records from a Databento gateway with the tokio driver.
//!
//! ```text
//! DATABENTO_API_KEY=... cargo run -p dbn-pipe-tokio --example tokio_live -- \
//!     --dataset GLBX.MDP3 --schema trades --symbols ESM5 --max-records 100
//! ```
//!
//! `--max-records` ends the stream cleanly (the connection is shut down, then the
//! summary is printed).
#![forbid(unsafe_code)]

#[path = "common/mod.rs"]
mod common;

use std::process::ExitCode;

use clap::Parser;
use dbn_pipe_tokio::{LiveClient, LiveOptions};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = common::LiveArgs::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return common::fail(&"io", &err),
    };
    runtime.block_on(run(args))
}

async fn run(args: common::LiveArgs) -> ExitCode {
    let key = match common::api_key() {
        Ok(key) => key,
        Err(err) => return common::fail(&"config", &err),
    };
    let subscription = match args.subscription() {
        Ok(subscription) => subscription,
        Err(err) => return common::fail(&"usage", &err),
    };
    let mut options = LiveOptions::new(key, args.dataset.clone())
        .compression(args.compression)
        .ts_out(args.ts_out);
    if let Some(addr) = &args.addr {
        options = options.addr(addr.clone());
    }
    if let Some(seconds) = args.heartbeat_interval_s {
        options = options.heartbeat_interval_s(seconds);
    }
    let mut client = match LiveClient::connect(options).await {
        Ok(client) => client,
        Err(err) => return common::fail(&err.kind(), &err),
    };
    if let Err(err) = client.subscribe(subscription).await {
        return common::fail(&err.kind(), &err);
    }
    let metadata = match client.start().await {
        Ok(metadata) => metadata,
        Err(err) => return common::fail(&err.kind(), &err),
    };
    let mut output = common::Output::new(args.json).ts_out(args.ts_out);
    output.metadata(&metadata);
    let max = args.max_records.unwrap_or(u64::MAX);
    while output.records() < max {
        match client.next_record().await {
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
    let _ = client.close().await;
    match output.finish() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => common::fail(&"io", &err),
    }
}
