//! The Databento Historical API as a sans-IO session over TLS and HTTP/1.1:
//! `timeseries.get_range` streamed into records as the body arrives, and the JSON
//! endpoints parsed into types. See [`HistoricalSession`].

mod base_url;
mod endpoints;
mod params;
mod session;
mod status;

pub use base_url::BaseUrl;
pub use endpoints::{
    DatasetRange, JsonRequest, JsonResponse, MappingInterval, Resolution, ResolveParams,
};
pub use params::{DateTime, GetRangeParams};
pub use session::{HIST_HOST, HistoricalConfig, HistoricalEvent, HistoricalSession};
