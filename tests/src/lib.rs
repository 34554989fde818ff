//! # dbn-pipe-tests
//!
//! The cross-crate suite of dbn-pipe (not published): helpers that generate DBN
//! streams with the `dbn` crate's encoders, and the demo binary that runs the
//! project's main job. The mock live gateway, the mock HTTPS historical server and the
//! conformance scenarios run against both drivers will live here as the drivers land.
#![forbid(unsafe_code)]

pub mod drivers;
pub mod generate;
pub mod mock_gateway;
pub mod mock_historical;
pub mod scenario;
