//! # dbn-pipe-tests
//!
//! The cross-crate suite of dbn-pipe (not published): a mock live gateway and a mock
//! HTTPS historical server (both written without the protocol crate), a generator of
//! DBN records, and, with the default `harness` feature, the driver-neutral
//! [`scenario`] harness with one adapter per driver ([`drivers`]), so the same
//! scenario list in `tests/driver_scenarios.rs` runs against mio and tokio.
#![forbid(unsafe_code)]

#[cfg(feature = "harness")]
pub mod drivers;
pub mod generate;
pub mod mock_gateway;
pub mod mock_historical;
#[cfg(feature = "harness")]
pub mod scenario;
