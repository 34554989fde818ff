//! # dbn-pipe-fuzz
//!
//! Fuzz targets of dbn-pipe in the cargo-fuzz layout, kept in their own workspace so
//! fuzzing builds never touch the main one. Each target's logic is the `run` function
//! of one module here; the libFuzzer entry points in `fuzz_targets/` call it, and the
//! seed replay tests (`tests/seeds.rs`) call it on every file of `corpus/<target>/`
//! and `regressions/<target>/`, so the seeds replay on stable Rust with
//! `cargo test --manifest-path fuzz/Cargo.toml --locked`.
//!
//! Every `run` panics (the fuzzer's crash signal) when the code under test panics or
//! breaks one of its invariants: a split of the same bytes changing the outcome, a
//! consumed count above what was offered, a stall (input refused while nothing is
//! output), a misaligned or mis-sized record, a disagreement with the `dbn` crate's
//! own decoder where the stream is valid. Any other input must end in a typed
//! [`dbn_pipe_protocol::Error`], which is fine.
//!
//! See `FUZZING.md` at the repository root for how to run the fuzzers.
#![forbid(unsafe_code)]

pub mod dbn_decoder;
pub mod historical;
pub mod http_codec;
pub mod input;
pub mod live_gateway;
pub mod live_handshake;
pub mod oracle;
pub mod structured;
pub mod zstd_layer;

/// The names of every target, as `fuzz_targets/<name>.rs`, `corpus/<name>/` and the
/// module `dbn_pipe_fuzz::<name>`.
pub const TARGETS: [&str; 7] = [
    "dbn_decoder",
    "zstd_layer",
    "live_gateway",
    "live_handshake",
    "http_codec",
    "historical",
    "structured",
];

/// Runs the target `name` on `data`; `false` when no target has that name.
pub fn run_target(name: &str, data: &[u8]) -> bool {
    match name {
        "dbn_decoder" => dbn_decoder::run(data),
        "zstd_layer" => zstd_layer::run(data),
        "live_gateway" => live_gateway::run(data),
        "live_handshake" => live_handshake::run(data),
        "http_codec" => http_codec::run(data),
        "historical" => historical::run(data),
        "structured" => structured::run(data),
        _ => return false,
    }
    true
}
