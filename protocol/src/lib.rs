//! # dbn-pipe-protocol
//!
//! Sans-IO state machines for [Databento](https://databento.com) market data. Nothing
//! in this crate opens a socket, reads a clock, spawns a thread or awaits: every layer
//! takes byte slices and returns how much it consumed, hands out what it decoded when
//! polled, and is told explicitly when input ends. Drivers (`dbn-pipe-mio`,
//! `dbn-pipe-tokio`, or your own loop) move the bytes.
//!
//! This release holds the decoding core that every session builds on:
//!
//! - [`DbnDecoder`]: DBN versions 1 to 3, whole streams or record-only fragments,
//!   records handed out as borrowed [`dbn::RecordRef`]s from an aligned buffer of fixed
//!   size, optional upgrade to the v2 or v3 layouts, strict framing with typed errors
//!   that name the stream offset, and truncation reported at end of input.
//! - [`ZstdDecoder`]: streaming zstd into the caller's buffer, concatenated frames, a
//!   window cap, truncation at end of input.
//! - [`StreamDecoder`]: the two composed for a `.dbn` or `.dbn.zst` byte stream, with
//!   zstd recognised by its magic number.
//!
//! ## The loop every driver runs
//!
//! ```
//! use dbn_pipe_protocol::{Decoded, StreamConfig, StreamDecoder};
//!
//! # fn main() -> Result<(), dbn_pipe_protocol::Error> {
//! # let source = dbn_pipe_protocol::doc_support::sample_dbn_zst();
//! # let mut source = source.chunks(4096);
//! let mut decoder = StreamDecoder::new(StreamConfig::default())?;
//! let mut pending: &[u8] = &[]; // bytes read but not yet taken (backpressure)
//! let mut total = 0u64;
//! loop {
//!     if pending.is_empty() {
//!         match source.next() {            // your socket or file read
//!             Some(bytes) => pending = bytes,
//!             None => decoder.finish()?,   // end of input: reports truncation
//!         }
//!     }
//!     let taken = decoder.handle_input(pending);
//!     pending = &pending[taken..];
//!     // Every mutation is followed by draining output.
//!     loop {
//!         match decoder.poll_batch(usize::MAX)? {
//!             Decoded::Metadata(metadata) => println!("{} {:?}", metadata.dataset, metadata.schema),
//!             Decoded::Record(batch) => {
//!                 for record in batch {
//!                     total += record.header().ts_event; // borrowed, no allocation
//!                 }
//!             }
//!             Decoded::NeedInput(_) => break,
//!             Decoded::End => return Ok(println!("clean end, checksum {total}")),
//!         }
//!     }
//! }
//! # }
//! ```
//!
//! ## Errors
//!
//! One error type, [`Error`], whose [`Error::kind`] is the category to match on
//! ([`ErrorKind`]). Errors are sticky and come after every record that preceded the
//! fault, so nothing decoded is lost.
//!
//! ## Safety
//!
//! The crate denies `unsafe` except in one audited module that views aligned,
//! length-checked buffer bytes as a `RecordRef`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod dbn;
mod error;
mod stream;
mod zstd;

pub use crate::dbn::{
    DbnDecoder, Decoded, DecoderConfig, FragmentFormat, RecordBatch, UpgradePolicy,
};
pub use crate::error::{Error, ErrorKind, TruncatedPart};
pub use crate::stream::{Compression, StreamConfig, StreamDecoder};
pub use crate::zstd::{Progress, ZSTD_MAGIC, ZstdDecoder};

#[doc(hidden)]
pub mod doc_support;
