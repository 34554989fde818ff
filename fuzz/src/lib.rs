//! # dbn-pipe-fuzz
//!
//! Fuzz targets of dbn-pipe in the cargo-fuzz layout, kept in their own workspace so
//! fuzzing builds never touch the main one. Each target's logic will live in a function
//! of this library that ordinary `cargo test` also calls on the seed corpus, so the
//! seeds replay on stable Rust. No target exists yet.
#![forbid(unsafe_code)]
