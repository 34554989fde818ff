//! End-to-end benchmark of dbn-pipe's drivers against the official `databento` client
//! and against ceilings (bare socket, bare zstd, bare TLS + zstd), over loopback.
//!
//! ```text
//! cargo bench -p dbn-pipe-tests --bench e2e --features official   # all contenders
//! cargo bench -p dbn-pipe-tests --bench e2e                        # ours and the ceilings
//! ```
//!
//! The binary plays three roles: without a role word it is the parent, which starts
//! itself again as the `server` (every loopback server, the workload generated once)
//! and as one `client` process per measurement, so that each client's CPU time
//! (`/proc/self/stat`), peak memory (`VmHWM` above the `VmRSS` before the client
//! existed) and heap allocations (counted by this binary's global allocator) are its
//! own. See `report.rs` for the environment variables that size the run and
//! BENCHMARKS.md ("End to end") for the results.
#![forbid(unsafe_code)]

use std::alloc::System;
use std::process::ExitCode;

use stats_alloc::StatsAlloc;

#[path = "e2e/bare.rs"]
mod bare;
#[path = "e2e/clients.rs"]
mod clients;
#[path = "e2e/common.rs"]
mod common;
#[path = "e2e/gateway.rs"]
mod gateway;
#[path = "e2e/https.rs"]
mod https;
#[path = "e2e/report.rs"]
mod report;
#[path = "e2e/roles.rs"]
mod roles;
#[path = "e2e/server.rs"]
mod server;

/// Counts every heap allocation of the process (all threads).
#[global_allocator]
static GLOBAL: StatsAlloc<System> = StatsAlloc::system();

fn main() -> ExitCode {
    // cargo passes `--bench`; roles and settings are `word` and `key=value`.
    let words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|w| !w.starts_with("--"))
        .collect();
    let role = words.first().map(String::as_str);
    let args = common::Args::parse(words.iter().skip(1).cloned());
    let result = match role {
        Some("server") => server::main(&args),
        Some("client") => roles::main(&args).map(|value| {
            println!("{}{value}", common::RESULT_PREFIX);
        }),
        _ => report::main(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("e2e: {err}");
            ExitCode::FAILURE
        }
    }
}
