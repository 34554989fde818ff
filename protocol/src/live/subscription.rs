//! What a live session subscribes to.

use dbn::{SType, Schema};

use super::config::is_field_value;
use crate::Error;

/// The symbol list sent for `ALL_SYMBOLS`.
pub const ALL_SYMBOLS: &str = "ALL_SYMBOLS";

/// The instruments of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Symbols {
    /// Every symbol of the dataset (`ALL_SYMBOLS`).
    All,
    /// These symbols, in the subscription's `stype_in`.
    List(Vec<String>),
}

impl From<Vec<String>> for Symbols {
    fn from(symbols: Vec<String>) -> Self {
        Self::List(symbols)
    }
}

impl From<&[&str]> for Symbols {
    fn from(symbols: &[&str]) -> Self {
        Self::List(symbols.iter().map(|s| (*s).to_owned()).collect())
    }
}

impl<const N: usize> From<[&str; N]> for Symbols {
    fn from(symbols: [&str; N]) -> Self {
        Self::from(&symbols[..])
    }
}

impl From<&str> for Symbols {
    /// One symbol; `ALL_SYMBOLS` means [`Symbols::All`].
    fn from(symbol: &str) -> Self {
        if symbol == ALL_SYMBOLS {
            Self::All
        } else {
            Self::List(vec![symbol.to_owned()])
        }
    }
}

/// Where intraday replay starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Nanoseconds since the UNIX epoch; 0 replays all available intraday data.
    Nanos(u64),
    /// An ISO-8601 date or date-time, validated by [`Start::iso8601`].
    Iso8601(String),
}

impl Start {
    /// A start given as an ISO-8601 string: a date (`2024-01-02`), or a date-time with
    /// an optional fraction and an offset or `Z` (`2024-01-02T14:30:00.5Z`,
    /// `2024-01-02T09:30:00-05:00`), or without an offset (UTC is assumed by the
    /// gateway).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] naming the string when it is none of these.
    pub fn iso8601(value: impl Into<String>) -> Result<Self, Error> {
        use time::format_description::well_known::Iso8601;
        let value = value.into();
        let ok = time::OffsetDateTime::parse(&value, &Iso8601::DEFAULT).is_ok()
            || time::PrimitiveDateTime::parse(&value, &Iso8601::DEFAULT).is_ok()
            || time::Date::parse(&value, &Iso8601::DEFAULT).is_ok();
        if !ok || !is_field_value(&value) {
            return Err(Error::InvalidRequest(format!(
                "start {value:?} is not an ISO-8601 date or date-time"
            )));
        }
        Ok(Self::Iso8601(value))
    }

    /// The value sent on the wire.
    pub(crate) fn wire(&self) -> String {
        match self {
            Self::Nanos(ns) => ns.to_string(),
            Self::Iso8601(s) => s.clone(),
        }
    }
}

impl From<u64> for Start {
    fn from(nanos: u64) -> Self {
        Self::Nanos(nanos)
    }
}

/// A subscription request: a schema, the symbols and how they are named, and
/// optionally where replay starts, an MBO snapshot, and an id the gateway echoes.
///
/// ```
/// use dbn::{SType, Schema};
/// use dbn_pipe_protocol::live::{Start, Subscription};
///
/// let sub = Subscription::new(Schema::Trades, ["ESM4", "NQM4"])
///     .stype_in(SType::RawSymbol)
///     .start(Start::Nanos(0)); // replay all available intraday data
/// assert_eq!(sub.schema(), Schema::Trades);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub(crate) schema: Schema,
    pub(crate) stype_in: SType,
    pub(crate) symbols: Symbols,
    pub(crate) start: Option<Start>,
    pub(crate) snapshot: bool,
    pub(crate) id: Option<u32>,
}

impl Subscription {
    /// Most symbols sent on one subscription line.
    pub const SYMBOLS_PER_LINE: usize = 500;

    /// A subscription to `schema` for `symbols` given as raw symbols.
    pub fn new(schema: Schema, symbols: impl Into<Symbols>) -> Self {
        Self {
            schema,
            stype_in: SType::RawSymbol,
            symbols: symbols.into(),
            start: None,
            snapshot: false,
            id: None,
        }
    }

    /// How the symbols are named (default `raw_symbol`).
    #[must_use]
    pub fn stype_in(mut self, stype_in: SType) -> Self {
        self.stype_in = stype_in;
        self
    }

    /// Replays intraday data from `start` (only before the session starts).
    #[must_use]
    pub fn start(mut self, start: impl Into<Start>) -> Self {
        self.start = Some(start.into());
        self
    }

    /// Asks for an MBO book snapshot first (MBO only; excludes a start).
    #[must_use]
    pub fn snapshot(mut self, snapshot: bool) -> Self {
        self.snapshot = snapshot;
        self
    }

    /// Sets the id the gateway echoes in acknowledgements (default: the session
    /// numbers subscriptions 1, 2, 3, ...).
    #[must_use]
    pub fn id(mut self, id: u32) -> Self {
        self.id = Some(id);
        self
    }

    /// The schema.
    pub fn schema(&self) -> Schema {
        self.schema
    }

    /// The symbols.
    pub fn symbols(&self) -> &Symbols {
        &self.symbols
    }

    /// Checks everything that can be checked before sending.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if let Symbols::List(list) = &self.symbols {
            if list.is_empty() {
                return Err(Error::InvalidRequest(
                    "a subscription needs at least one symbol (or Symbols::All)".to_owned(),
                ));
            }
            if let Some(bad) = list.iter().find(|s| s.is_empty() || !is_field_value(s)) {
                return Err(Error::InvalidRequest(format!(
                    "symbol {bad:?} is empty or contains a character the control line cannot carry ('|', '=', ',', space, control)"
                )));
            }
        }
        if self.snapshot && self.schema != Schema::Mbo {
            return Err(Error::InvalidRequest(format!(
                "a snapshot is only available for the mbo schema, not {}",
                self.schema
            )));
        }
        if self.snapshot && self.start.is_some() {
            return Err(Error::InvalidRequest(
                "a snapshot subscription cannot have a start time".to_owned(),
            ));
        }
        Ok(())
    }
}
