//! # dbn-pipe-tokio
//!
//! Connects the sans-IO sessions of `dbn-pipe-protocol` to [tokio] with an async API:
//! a live client whose `next_record().await` is cancel-safe in `tokio::select!`, and a
//! historical client that streams `timeseries.get_range` bodies.
//!
//! Nothing is implemented yet: the live and historical sessions come first. Until then
//! this crate holds only its documentation.
//!
//! [tokio]: https://docs.rs/tokio
#![forbid(unsafe_code)]
