//! # dbn-pipe-tokio
//!
//! Drives the sans-IO sessions of [`dbn_pipe_protocol`] with [tokio]:
//!
//! - [`LiveClient`]: the Databento Live API. `next_record().await` hands out records
//!   borrowed from the session's buffer (no allocation, no copy) and is cancel-safe,
//!   so it sits in a `tokio::select!` loop next to a shutdown signal; optional
//!   automatic reconnect ([`LiveOptions::auto_reconnect`]).
//! - [`HistoricalClient`]: the Historical API over TLS: `timeseries.get_range`
//!   decoded as it arrives, or written to a `.dbn.zst` file with progress, and the
//!   JSON metadata endpoints.
//!
//! Both work on the current-thread and the multi-thread runtime. The socket is read
//! only when the session took everything read before: a slow consumer pushes back to
//! the server, and memory stays bounded by one read buffer plus the session's own
//! fixed buffers. Errors are one [`Error`] type whose [`Error::kind`] names the layer
//! that failed.
//!
//! ## Live
//!
//! ```
//! use std::time::Duration;
//! use dbn::Schema;
//! use dbn_pipe_tokio::dbn_pipe_protocol::live::{ApiKey, Subscription};
//! use dbn_pipe_tokio::{LiveClient, LiveOptions};
//!
//! # /// A loopback gateway replaying the protocol crate's scripted session.
//! # fn gateway() -> std::io::Result<String> {
//! #     use std::io::{BufRead, BufReader, Write};
//! #     let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! #     let addr = listener.local_addr()?.to_string();
//! #     std::thread::spawn(move || -> std::io::Result<()> {
//! #         let (mut socket, _) = listener.accept()?;
//! #         let mut lines = BufReader::new(socket.try_clone()?);
//! #         let chunks = dbn_pipe_protocol::doc_support::scripted_gateway();
//! #         socket.write_all(&chunks[0])?;
//! #         socket.write_all(&chunks[1])?;
//! #         let mut line = String::new();
//! #         lines.read_line(&mut line)?; // auth=...
//! #         assert!(line.starts_with("auth="));
//! #         socket.write_all(&chunks[2])?;
//! #         while !line.starts_with("start_session") {
//! #             line.clear();
//! #             if lines.read_line(&mut line)? == 0 {
//! #                 return Ok(());
//! #             }
//! #         }
//! #         for chunk in &chunks[3..] {
//! #             socket.write_all(chunk)?;
//! #         }
//! #         Ok(()) // closing the socket ends the stream cleanly
//! #     });
//! #     Ok(addr)
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let gateway_addr = gateway()?;
//! let key = ApiKey::new("db-0123456789abcdefghijklmnABCDE")?; // from DATABENTO_API_KEY
//! let options = LiveOptions::new(key, "GLBX.MDP3")
//!     .addr(gateway_addr) // default: the dataset's gateway
//!     .heartbeat_interval_s(10);
//! let mut client = LiveClient::connect(options).await?; // connected and authenticated
//! client.subscribe(Subscription::new(Schema::Mbo, ["ESH1"])).await?;
//! let metadata = client.start().await?; // subscriptions and start_session in one write
//! println!("{} {:?}", metadata.dataset, metadata.schema);
//!
//! let shutdown = tokio::time::sleep(Duration::from_secs(60)); // or ctrl_c, a channel...
//! tokio::pin!(shutdown);
//! let mut records = 0;
//! loop {
//!     tokio::select! {
//!         // Cancel-safe: when the shutdown wins, no byte or record is lost.
//!         next = client.next_record() => match next? {
//!             Some(record) => {
//!                 records += 1;
//!                 println!("{:?}", record.header()); // borrowed, no allocation
//!             }
//!             None => break, // the gateway ended the session cleanly
//!         },
//!         () = &mut shutdown => {
//!             client.close().await?;
//!             break;
//!         }
//!     }
//! }
//! assert_eq!(records, 2);
//! # Ok(())
//! # }
//! ```
//!
//! ## Batches
//!
//! For the highest throughput, [`LiveClient::next_batch`] waits for the next batch of
//! records and hands all of them out at once as a borrowed
//! [`LiveBatch`](dbn_pipe_protocol::live::LiveBatch), an iterator of records (one
//! session poll per batch, not per record). Records not taken from a batch stay
//! buffered for the next call. When the next thing is not records (a gateway notice,
//! a reconnect, a new connection's metadata, the end) it returns `Ok(None)` and
//! [`LiveClient::next_event`] returns that event without waiting (`Ok(None)` for the
//! end). Both are cancel-safe, so the loop sits in `tokio::select!`:
//!
//! ```
//! use std::time::Duration;
//! use dbn::Schema;
//! use dbn_pipe_tokio::dbn_pipe_protocol::live::{ApiKey, Subscription};
//! use dbn_pipe_tokio::{Event, LiveClient, LiveOptions};
//!
//! # fn gateway() -> std::io::Result<String> {
//! #     use std::io::{BufRead, BufReader, Write};
//! #     let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! #     let addr = listener.local_addr()?.to_string();
//! #     std::thread::spawn(move || -> std::io::Result<()> {
//! #         let (mut socket, _) = listener.accept()?;
//! #         let mut lines = BufReader::new(socket.try_clone()?);
//! #         let chunks = dbn_pipe_protocol::doc_support::scripted_gateway();
//! #         socket.write_all(&chunks[0])?;
//! #         socket.write_all(&chunks[1])?;
//! #         let mut line = String::new();
//! #         lines.read_line(&mut line)?;
//! #         socket.write_all(&chunks[2])?;
//! #         while !line.starts_with("start_session") {
//! #             line.clear();
//! #             if lines.read_line(&mut line)? == 0 {
//! #                 return Ok(());
//! #             }
//! #         }
//! #         for chunk in &chunks[3..] {
//! #             socket.write_all(chunk)?;
//! #         }
//! #         Ok(())
//! #     });
//! #     Ok(addr)
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let gateway_addr = gateway()?;
//! let key = ApiKey::new("db-0123456789abcdefghijklmnABCDE")?;
//! let options = LiveOptions::new(key, "GLBX.MDP3").addr(gateway_addr);
//! let mut client = LiveClient::connect(options).await?;
//! client.subscribe(Subscription::new(Schema::Mbo, ["ESH1"])).await?;
//! client.start().await?;
//! let shutdown = tokio::time::sleep(Duration::from_secs(60));
//! tokio::pin!(shutdown);
//! let mut records = 0;
//! loop {
//!     tokio::select! {
//!         batch = client.next_batch() => {
//!             if let Some(batch) = batch? {
//!                 for record in batch {
//!                     records += 1; // borrowed, no copy
//!                     let _ = record.header().ts_event;
//!                 }
//!                 continue;
//!             }
//!             // Not records: the event waits, `next_event` returns it at once.
//!             match client.next_event().await? {
//!                 Some(Event::Gateway { notice, .. }) => println!("{notice:?}"),
//!                 Some(Event::Record(_)) => records += 1, // records may come here too
//!                 Some(_) => {}                             // reconnects, later metadata
//!                 None => break,                            // the stream ended cleanly
//!             }
//!         }
//!         () = &mut shutdown => {
//!             client.close().await?;
//!             break;
//!         }
//!     }
//! }
//! assert_eq!(records, 2);
//! # Ok(())
//! # }
//! ```
//!
//! [`RangeStream::next_batch`] does the same for a historical download.
//!
//! ## Historical
//!
//! ```no_run
//! use dbn::Schema;
//! use dbn_pipe_tokio::dbn_pipe_protocol::historical::GetRangeParams;
//! use dbn_pipe_tokio::dbn_pipe_protocol::live::ApiKey;
//! use dbn_pipe_tokio::{HistoricalClient, HistoricalOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = ApiKey::new(std::env::var("DATABENTO_API_KEY")?)?;
//! let mut client = HistoricalClient::new(HistoricalOptions::new(key))?;
//! let params = GetRangeParams::new("GLBX.MDP3", Schema::Trades, ["ESM4"], 1_704_067_200_000_000_000u64)
//!     .limit(1_000);
//!
//! // Decoded as the body arrives:
//! let mut stream = client.timeseries_get_range(&params).await?;
//! let mut count = 0;
//! while let Some(record) = stream.next_record().await? {
//!     count += 1;
//!     let _ = record.header().ts_event;
//! }
//!
//! // Or written to a file as served, with progress (same keep-alive connection):
//! let summary = client
//!     .get_range_to_file(&params, "trades.dbn.zst", |p| eprintln!("{} bytes, {} records", p.bytes_written, p.records))
//!     .await?;
//! assert_eq!(summary.records, count);
//! # Ok(())
//! # }
//! ```
//!
//! ## Errors
//!
//! [`Error::kind`] gives the layer: `Dns`, `Connect`, `Timeout`, `Auth`, `Truncated`
//! (the connection ended inside a record: reported after every record before it),
//! `HttpStatus` (with the server's message and request id), and so on.
//! [`Error::session_error`] exposes the protocol error underneath.
//!
//! [tokio]: https://docs.rs/tokio
#![forbid(unsafe_code)]

mod error;
pub mod historical;
pub mod live;
mod net;

pub use error::{Error, ErrorKind};
pub use historical::{FileSummary, HistoricalClient, HistoricalOptions, Progress, RangeStream};
pub use live::{Event, LiveClient, LiveOptions};

/// The protocol crate, re-exported for its option and parameter types.
pub use dbn_pipe_protocol;
