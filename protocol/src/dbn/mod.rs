//! DBN framing: the sans-IO decoder of DBN streams and fragments.

mod aligned_buf;
mod config;
mod decoder;
mod header;
mod layout;
mod record_cast;
mod upgrade;

pub use config::{DecoderConfig, FragmentFormat, UpgradePolicy};
pub use decoder::{DbnDecoder, Decoded, RecordBatch};
