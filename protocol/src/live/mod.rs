//! The Databento Live API as a sans-IO session: CRAM authentication, subscriptions,
//! `start_session`, and the DBN stream (plain or zstd) through the decoding core.
//!
//! Wire facts: the gateway for a dataset is [`gateway_address`]; the session speaks
//! one `key=value|...` line per control message and then DBN. See [`LiveSession`] for
//! the driver contract and a complete example.

mod api_key;
mod backoff;
mod config;
mod lines;
mod notice;
mod replay;
mod requests;
mod session;
mod subscription;

pub use api_key::ApiKey;
pub use backoff::{AutoReconnect, Backoff, is_reconnectable};
pub use config::{GATEWAY_PORT, LiveCompression, LiveConfig, SlowReaderBehavior, gateway_address};
pub use notice::GatewayNotice;
pub use session::{Closed, LiveBatch, LiveEvent, LiveSession, ReconnectPolicy};
pub use subscription::{ALL_SYMBOLS, Start, Subscription, Symbols};
