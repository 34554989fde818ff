//! Streams live records from a Databento gateway with the mio driver's built-in loop.
//!
//! ```text
//! DATABENTO_API_KEY=... cargo run -p dbn-pipe-mio --example mio_live -- \
//!     --dataset GLBX.MDP3 --schema trades --symbols ESM5 --max-records 100
//! ```
//!
//! `--max-records` ends the stream (the closure breaks, the socket is closed), then
//! the summary is printed.
#![forbid(unsafe_code)]

#[path = "../../driver-tokio/examples/common/mod.rs"]
mod common;

use std::ops::ControlFlow;
use std::process::ExitCode;

use clap::Parser;
use dbn_pipe_mio::{LiveItem, LiveOptions};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = common::LiveArgs::parse();
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
    let mut output = common::Output::new(args.json).ts_out(args.ts_out);
    let max = args.max_records.unwrap_or(u64::MAX);
    let mut write_error = None;
    let result = dbn_pipe_mio::run_live(options, [subscription], |item| {
        match item {
            LiveItem::Metadata(metadata) => output.metadata(&metadata),
            LiveItem::Record(record) | LiveItem::Gateway { record, .. } => {
                if let Err(err) = output.record(record) {
                    write_error = Some(err);
                    return ControlFlow::Break(());
                }
            }
            _ => {}
        }
        if output.records() >= max {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
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
