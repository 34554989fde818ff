//! The two drivers behind the scenarios' [`Driver`](crate::scenario::Driver) trait:
//! each adapter runs a scenario's connections with the driver's public API only,
//! exactly as an application would.

mod with_mio;
mod with_tokio;

pub use with_mio::Mio;
pub use with_tokio::Tokio;

use dbn::{RecordRef, rtype};

/// Whether a record is market data (not a symbol mapping or a gateway notice).
pub(crate) fn is_market_data(rtype: u8) -> bool {
    !matches!(rtype, rtype::SYMBOL_MAPPING | rtype::SYSTEM | rtype::ERROR)
}

/// The `code` of a gateway `SystemMsg` or `ErrorMsg`.
pub(crate) fn notice_code(record: &RecordRef<'_>) -> Option<u8> {
    if let Some(msg) = record.get::<dbn::SystemMsg>() {
        return Some(msg.code);
    }
    record.get::<dbn::ErrorMsg>().map(|msg| msg.code)
}
