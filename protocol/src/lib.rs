//! # dbn-pipe-protocol
//!
//! Sans-IO state machines for [Databento](https://databento.com) market data. Nothing
//! in this crate opens a socket, reads a clock, spawns a thread or awaits: every layer
//! takes byte slices and returns how much it consumed, hands out what it decoded when
//! polled, and is told explicitly when input ends. Drivers (`dbn-pipe-mio`,
//! `dbn-pipe-tokio`, or your own loop) move the bytes.
//!
//! What it holds:
//!
//! - [`live::LiveSession`]: the Live API (CRAM authentication, subscriptions,
//!   `start_session`, the DBN stream plain or zstd, heartbeat and auth timeouts with
//!   time passed in, gateway notices classified, reconnects that fill the gap).
//!
//! and the decoding core every session builds on:
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
//! ## A live session driven by hand
//!
//! Every driver (mio, tokio, a test) runs the same loop: feed what the socket gave,
//! write what the session wants sent, drain events, honour the deadline.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use dbn::Schema;
//! use dbn_pipe_protocol::live::{ApiKey, LiveConfig, LiveEvent, LiveSession, Subscription};
//!
//! # fn main() -> Result<(), dbn_pipe_protocol::Error> {
//! # let mut gateway = dbn_pipe_protocol::doc_support::scripted_gateway().into_iter();
//! let key = ApiKey::new("db-0123456789abcdefghijklmnABCDE")?; // from DATABENTO_API_KEY
//! let mut now = Instant::now();
//! let mut session = LiveSession::new(LiveConfig::new(key, "GLBX.MDP3"), now)?;
//! session.subscribe(Subscription::new(Schema::Mbo, ["ESH1"]))?;
//! session.start(now)?;
//! let mut outgoing = Vec::new();
//! let mut records = 0;
//! 'connection: loop {
//!     // 1. Whatever the session wants sent goes to the socket.
//!     let _ = session.poll_transmit(&mut outgoing);
//!     outgoing.clear(); // socket.write_all(&outgoing)
//!     // 2. Drain events after every mutation.
//!     while let Some(event) = session.poll_event()? {
//!         match event {
//!             LiveEvent::Records(batch) => records += batch.count(),
//!             LiveEvent::Closed(closed) => {
//!                 assert!(closed.is_clean());
//!                 break 'connection;
//!             }
//!             _ => {}
//!         }
//!     }
//!     // 3. Wait for input or the deadline (here: the next scripted read).
//!     let _deadline = session.poll_timeout();
//!     now += Duration::from_millis(1);
//!     match gateway.next() {
//!         Some(bytes) => {
//!             let mut bytes = &bytes[..];
//!             while !bytes.is_empty() {
//!                 let taken = session.handle_input(now, bytes); // fewer = backpressure
//!                 bytes = &bytes[taken..];
//!                 while let Some(event) = session.poll_event()? {
//!                     if let LiveEvent::Records(batch) = event {
//!                         records += batch.count();
//!                     }
//!                 }
//!             }
//!         }
//!         None => session.handle_eof(),
//!     }
//!     session.handle_timeout(now);
//! }
//! assert_eq!(records, 2);
//! # Ok(())
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
pub mod historical;
pub mod http;
pub mod live;
mod stream;
pub mod tls;
mod zstd;
mod zstd_blocks;

pub use crate::dbn::{
    DbnDecoder, Decoded, DecoderConfig, FragmentFormat, RecordBatch, UpgradePolicy,
};
pub use crate::error::{
    DriverErrorKind, Error, ErrorKind, HttpStatusError, TimerKind, TruncatedPart,
};
pub use crate::stream::{Compression, StreamConfig, StreamDecoder};
pub use crate::zstd::{Progress, ZSTD_MAGIC, ZstdDecoder};

#[doc(hidden)]
pub mod doc_support;

/// The client identification sent as the live `client=` field and the HTTP
/// `User-Agent`: `dbn-pipe/<version> Rust <os>-<arch>`, then `ext` after a space.
pub(crate) fn user_agent(ext: Option<&str>) -> String {
    let base = format!(
        "dbn-pipe/{} Rust {}-{}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    match ext {
        Some(ext) => format!("{base} {ext}"),
        None => base,
    }
}
