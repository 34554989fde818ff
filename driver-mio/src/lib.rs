//! # dbn-pipe-mio
//!
//! Connects the sans-IO sessions of `dbn-pipe-protocol` to a [mio] `Poll`: either the
//! application's own reactor (register a connection under your own `Token`, hand it your
//! readiness events, pull records, use its next deadline as your poll timeout) or a small
//! built-in loop for simple programs.
//!
//! Nothing is implemented yet: the live and historical sessions come first. Until then
//! this crate holds only its documentation.
//!
//! [mio]: https://docs.rs/mio
#![forbid(unsafe_code)]
