//! Parameters of Historical API requests, encoded as forms and query strings.

use dbn::{SType, Schema};

use crate::Error;
use crate::UpgradePolicy;
use crate::live::{ALL_SYMBOLS, Symbols};

/// A point in time as the Historical API takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DateTime {
    /// Nanoseconds since the UNIX epoch.
    Nanos(u64),
    /// An ISO-8601 date or date-time (validated on construction).
    Iso8601(String),
}

impl DateTime {
    /// An ISO-8601 date (`2024-01-02`) or date-time (`2024-01-02T14:30:00Z`).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] naming the string when it is neither.
    pub fn iso8601(value: impl Into<String>) -> Result<Self, Error> {
        match crate::live::Start::iso8601(value)? {
            crate::live::Start::Iso8601(s) => Ok(Self::Iso8601(s)),
            crate::live::Start::Nanos(n) => Ok(Self::Nanos(n)),
        }
    }
}

/// A point in time as sent on the wire.
pub(crate) fn wire(time: &DateTime) -> String {
    match time {
        DateTime::Nanos(n) => n.to_string(),
        DateTime::Iso8601(s) => s.clone(),
    }
}

impl From<u64> for DateTime {
    fn from(nanos: u64) -> Self {
        Self::Nanos(nanos)
    }
}

/// `timeseries.get_range`: records of one schema for some symbols over a time range.
///
/// ```
/// use dbn::Schema;
/// use dbn_pipe_protocol::historical::GetRangeParams;
///
/// let params = GetRangeParams::new("GLBX.MDP3", Schema::Trades, ["ESM4", "NQM4"], 1_704_067_200_000_000_000u64)
///     .end(1_704_153_600_000_000_000u64)
///     .limit(1_000);
/// assert!(params.form().contains("symbols=ESM4%2CNQM4"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetRangeParams {
    pub(crate) dataset: String,
    pub(crate) schema: Schema,
    pub(crate) symbols: Symbols,
    pub(crate) start: DateTime,
    pub(crate) end: Option<DateTime>,
    pub(crate) stype_in: SType,
    pub(crate) stype_out: SType,
    pub(crate) limit: Option<u64>,
    pub(crate) upgrade_policy: UpgradePolicy,
}

impl GetRangeParams {
    /// Records of `schema` for `symbols` (raw symbols) in `dataset` from `start`.
    pub fn new(
        dataset: impl Into<String>,
        schema: Schema,
        symbols: impl Into<Symbols>,
        start: impl Into<DateTime>,
    ) -> Self {
        Self {
            dataset: dataset.into(),
            schema,
            symbols: symbols.into(),
            start: start.into(),
            end: None,
            stype_in: SType::RawSymbol,
            stype_out: SType::InstrumentId,
            limit: None,
            upgrade_policy: UpgradePolicy::default(),
        }
    }

    /// The exclusive end (default: the dataset's available end).
    #[must_use]
    pub fn end(mut self, end: impl Into<DateTime>) -> Self {
        self.end = Some(end.into());
        self
    }

    /// How the symbols are named (default `raw_symbol`).
    #[must_use]
    pub fn stype_in(mut self, stype_in: SType) -> Self {
        self.stype_in = stype_in;
        self
    }

    /// How records name instruments (default `instrument_id`).
    #[must_use]
    pub fn stype_out(mut self, stype_out: SType) -> Self {
        self.stype_out = stype_out;
        self
    }

    /// At most this many records.
    #[must_use]
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// How records of older DBN versions are handed out (default `UpgradeToV3`).
    #[must_use]
    pub fn upgrade_policy(mut self, policy: UpgradePolicy) -> Self {
        self.upgrade_policy = policy;
        self
    }

    /// Checks what can be checked before sending.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        validate_dataset(&self.dataset)?;
        validate_symbols(&self.symbols)?;
        if self.limit == Some(0) {
            return Err(Error::InvalidRequest("limit must be positive".to_owned()));
        }
        Ok(())
    }

    /// The form body: every field of the API, url-encoded.
    pub fn form(&self) -> String {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("dataset", &self.dataset)
            .append_pair("schema", self.schema.as_str())
            .append_pair("symbols", &symbols_field(&self.symbols))
            .append_pair("start", &wire(&self.start));
        if let Some(end) = &self.end {
            form.append_pair("end", &wire(end));
        }
        form.append_pair("stype_in", self.stype_in.as_str())
            .append_pair("stype_out", self.stype_out.as_str())
            .append_pair("encoding", "dbn")
            .append_pair("compression", "zstd");
        if let Some(limit) = self.limit {
            form.append_pair("limit", &limit.to_string());
        }
        form.finish()
    }
}

/// The `symbols` field: comma-joined, or `ALL_SYMBOLS`.
pub(crate) fn symbols_field(symbols: &Symbols) -> String {
    match symbols {
        Symbols::All => ALL_SYMBOLS.to_owned(),
        Symbols::List(list) => list.join(","),
    }
}

pub(crate) fn validate_dataset(dataset: &str) -> Result<(), Error> {
    if dataset.is_empty() || !dataset.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::InvalidRequest(format!(
            "dataset {dataset:?} must be non-empty printable ASCII"
        )));
    }
    Ok(())
}

pub(crate) fn validate_symbols(symbols: &Symbols) -> Result<(), Error> {
    if let Symbols::List(list) = symbols {
        if list.is_empty() {
            return Err(Error::InvalidRequest(
                "a request needs at least one symbol (or Symbols::All)".to_owned(),
            ));
        }
        if let Some(bad) = list.iter().find(|s| s.is_empty() || s.contains(',')) {
            return Err(Error::InvalidRequest(format!(
                "symbol {bad:?} is empty or contains ','"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_has_every_field_url_encoded() {
        let params = GetRangeParams::new("GLBX.MDP3", Schema::Mbo, ["SPOT", "AAPL"], 1u64)
            .end(DateTime::iso8601("2024-01-02T00:00:00Z").unwrap())
            .stype_in(SType::Parent)
            .limit(5);
        assert_eq!(
            params.form(),
            "dataset=GLBX.MDP3&schema=mbo&symbols=SPOT%2CAAPL&start=1&end=2024-01-02T00%3A00%3A00Z\
             &stype_in=parent&stype_out=instrument_id&encoding=dbn&compression=zstd&limit=5"
        );
        let all = GetRangeParams::new("XNAS.ITCH", Schema::Trades, crate::live::Symbols::All, 0u64);
        assert!(all.form().contains("symbols=ALL_SYMBOLS"));
        assert!(!all.form().contains("end="), "end may be omitted");
    }

    #[test]
    fn invalid_parameters_are_refused() {
        let empty: Vec<String> = Vec::new();
        assert!(
            GetRangeParams::new("GLBX.MDP3", Schema::Mbo, empty, 0u64)
                .validate()
                .is_err()
        );
        assert!(
            GetRangeParams::new("", Schema::Mbo, ["A"], 0u64)
                .validate()
                .is_err()
        );
        assert!(
            GetRangeParams::new("X", Schema::Mbo, ["A,B"], 0u64)
                .validate()
                .is_err()
        );
        assert!(
            GetRangeParams::new("X", Schema::Mbo, ["A"], 0u64)
                .limit(0)
                .validate()
                .is_err()
        );
        assert!(DateTime::iso8601("nope").is_err());
    }
}
