//! # dbn-pipe-mio
//!
//! Connects the sans-IO sessions of `dbn-pipe-protocol` to a [mio] `Poll`: either the
//! application's own reactor (register a connection under your own `Token`, hand it
//! your readiness events, pull records, use its next deadline as your poll timeout) or
//! a small built-in loop for simple programs ([`run_live`], [`run_get_range`],
//! [`get_range_to_file`], [`request_json`]).
//!
//! - [`LiveConnection`]: the Live API (plain TCP), with optional automatic reconnect
//!   whose backoff is a deadline in [`LiveConnection::poll_timeout`], never a sleep.
//! - [`HistoricalConnection`]: the Historical API over TLS, one request at a time on a
//!   keep-alive connection: records pulled like live, a download to a file with
//!   progress, and the JSON endpoints.
//!
//! Several connections share one `Poll` (each under its own token).
//!
//! ## The loop in your own reactor
//!
//! Every readiness event goes to [`LiveConnection::handle_event`], the deadline to
//! [`LiveConnection::handle_timeout`]; then pull until `Ok(None)`. Pulling does the
//! socket I/O and resumes reading by itself after backpressure, so mio's edge-triggered
//! readiness never strands bytes in the socket, however long you hold records.
//!
//! ```
//! use std::time::Instant;
//! use dbn::Schema;
//! use dbn_pipe_mio::{LiveConnection, LiveOptions};
//! use dbn_pipe_protocol::live::{ApiKey, Subscription};
//! use mio::{Events, Poll, Token};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use std::io::{BufRead, BufReader, Write};
//! # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! # let gateway_addr = listener.local_addr()?.to_string();
//! # std::thread::spawn(move || -> std::io::Result<()> {
//! #     let script = dbn_pipe_protocol::doc_support::scripted_gateway();
//! #     let (stream, _) = listener.accept()?;
//! #     let mut out = stream.try_clone()?;
//! #     let mut lines = BufReader::new(stream).lines();
//! #     let mut wait_for = |prefix: &str| loop {
//! #         match lines.next() {
//! #             Some(line) => {
//! #                 if line?.starts_with(prefix) {
//! #                     return Ok(());
//! #                 }
//! #             }
//! #             None => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
//! #         }
//! #     };
//! #     out.write_all(&script[0])?;
//! #     out.write_all(&script[1])?;
//! #     wait_for("auth=")?;
//! #     out.write_all(&script[2])?;
//! #     wait_for("start_session")?;
//! #     for chunk in &script[3..] {
//! #         out.write_all(chunk)?;
//! #     }
//! #     Ok(())
//! # });
//! let key = ApiKey::new("db-0123456789abcdefghijklmnABCDE")?; // from DATABENTO_API_KEY
//! let options = LiveOptions::new(key, "GLBX.MDP3").addr(gateway_addr);
//! let mut poll = Poll::new()?;
//! let mut events = Events::with_capacity(64);
//! let now = Instant::now();
//! let mut live = LiveConnection::connect(poll.registry(), Token(1), options, now)?;
//! live.subscribe(Subscription::new(Schema::Mbo, ["ESH1"]))?;
//! live.start(now)?;
//! let mut records = 0;
//! loop {
//!     while let Some(record) = live.next_record()? {
//!         records += 1; // a borrowed dbn::RecordRef: no copy, no allocation
//!         let _ = record.header().ts_event;
//!     }
//!     if live.is_finished() {
//!         break; // the stream ended cleanly (an error came out of `?`)
//!     }
//!     let timeout = live.poll_timeout().map(|at| at.saturating_duration_since(Instant::now()));
//!     poll.poll(&mut events, timeout)?;
//!     let now = Instant::now();
//!     for event in &events {
//!         live.handle_event(event, now); // other tokens are ignored
//!     }
//!     live.handle_timeout(now);
//! }
//! assert_eq!(records, 2);
//! # Ok(())
//! # }
//! ```
//!
//! [`LiveConnection::next_event`] yields the same records plus metadata,
//! authentication, gateway notices with their classification, and reconnect
//! notifications.
//!
//! ## Batches
//!
//! For the highest throughput, [`LiveConnection::next_batch`] hands out every record
//! the session has decoded up to the next gateway notice as one borrowed
//! [`LiveBatch`](dbn_pipe_protocol::live::LiveBatch) (an iterator of records: one
//! session poll and one clock read per batch, not per record). It returns `Ok(None)`
//! when the next thing is not a batch; [`LiveConnection::next_event`] then returns
//! that item (metadata, a notice, a reconnect, the end) or `Ok(None)` to wait, so the
//! loop is: batches until `Ok(None)`, one `next_event`, again (see the example on
//! `next_batch`). Records not taken from a batch stay buffered for the next pull.
//! [`HistoricalConnection::next_batch`] does the same for a get_range.
//!
//! ## The built-in loop
//!
//! ```
//! use std::ops::ControlFlow;
//! use dbn::Schema;
//! use dbn_pipe_mio::{LiveItem, LiveOptions};
//! use dbn_pipe_protocol::live::{ApiKey, Subscription};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use std::io::{BufRead, BufReader, Write};
//! # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! # let gateway_addr = listener.local_addr()?.to_string();
//! # std::thread::spawn(move || -> std::io::Result<()> {
//! #     let script = dbn_pipe_protocol::doc_support::scripted_gateway();
//! #     let (stream, _) = listener.accept()?;
//! #     let mut out = stream.try_clone()?;
//! #     let mut lines = BufReader::new(stream).lines();
//! #     let mut wait_for = |prefix: &str| loop {
//! #         match lines.next() {
//! #             Some(line) => {
//! #                 if line?.starts_with(prefix) {
//! #                     return Ok(());
//! #                 }
//! #             }
//! #             None => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
//! #         }
//! #     };
//! #     out.write_all(&script[0])?;
//! #     out.write_all(&script[1])?;
//! #     wait_for("auth=")?;
//! #     out.write_all(&script[2])?;
//! #     wait_for("start_session")?;
//! #     for chunk in &script[3..] {
//! #         out.write_all(chunk)?;
//! #     }
//! #     Ok(())
//! # });
//! let key = ApiKey::new("db-0123456789abcdefghijklmnABCDE")?;
//! let options = LiveOptions::new(key, "GLBX.MDP3").addr(gateway_addr);
//! let subscription = Subscription::new(Schema::Mbo, ["ESH1"]);
//! let mut records = 0;
//! dbn_pipe_mio::run_live(options, [subscription], |item| {
//!     match item {
//!         LiveItem::Metadata(metadata) => println!("{} {:?}", metadata.dataset, metadata.schema),
//!         LiveItem::Record(_) => records += 1,
//!         LiveItem::End => println!("the gateway ended the stream"),
//!         other => println!("{other:?}"),
//!     }
//!     ControlFlow::Continue(()) // Break(()) stops
//! })?;
//! assert_eq!(records, 2);
//! # Ok(())
//! # }
//! ```
//!
//! ## Errors
//!
//! One [`Error`] type whose [`Error::kind`] ([`ErrorKind`]) names the layer. Errors
//! come after every record that preceded them; a connection that ends inside a record
//! is [`ErrorKind::Truncated`], a clean end is `Ok(None)` with
//! [`LiveConnection::is_finished`].
//!
//! ## Blocking
//!
//! Host names are resolved with `std::net::ToSocketAddrs` on every connect (and every
//! reconnect): that call blocks the thread while the system resolver works. Use an IP
//! address in the options where that matters.
//!
//! [mio]: https://docs.rs/mio
#![forbid(unsafe_code)]

mod error;
mod historical;
mod live;
mod net;
mod run;

pub use error::{Error, ErrorKind};
pub use historical::{FileProgress, HistoricalConnection, HistoricalItem, HistoricalOptions};
pub use live::{LiveConnection, LiveItem, LiveOptions};
pub use run::{get_range_to_file, request_json, run_get_range, run_live};
