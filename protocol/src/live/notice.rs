//! Classification of the gateway's `SystemMsg` and `ErrorMsg` records.

use dbn::{ErrorCode, Record, RecordRef, SystemCode, rtype};

/// What a gateway `SystemMsg` or `ErrorMsg` record says, so a caller can match on it
/// without decoding text. The record itself is delivered too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GatewayNotice<'a> {
    /// A heartbeat: the gateway is alive and has nothing to send.
    Heartbeat,
    /// A subscription was acknowledged.
    SubscriptionAck(&'a str),
    /// The client reads too slowly; the gateway is buffering.
    SlowReaderWarning(&'a str),
    /// An intraday replay finished; records are now real time.
    ReplayCompleted(&'a str),
    /// The end of an interval (for interval schemas).
    EndOfInterval(&'a str),
    /// Another system message (an unknown code, or a v1 record other than a
    /// heartbeat).
    System {
        /// The raw code, when the record has one.
        code: Option<u8>,
        /// The message text.
        text: &'a str,
    },
    /// A gateway error.
    Error {
        /// The error code, when the record has a known one.
        code: Option<ErrorCode>,
        /// The raw code byte (255 when unset; absent in v1 records).
        raw_code: Option<u8>,
        /// The message text.
        text: &'a str,
        /// Whether this is the last record of a multi-record error.
        is_last: bool,
    },
}

impl<'a> GatewayNotice<'a> {
    /// Classifies `rec` when it is a `SystemMsg` or `ErrorMsg` (any DBN version).
    ///
    /// ```
    /// use dbn::{RecordRef, SystemMsg};
    /// use dbn_pipe_protocol::live::GatewayNotice;
    ///
    /// let heartbeat = SystemMsg::heartbeat(1_700_000_000_000_000_000);
    /// let rec = RecordRef::from(&heartbeat);
    /// assert_eq!(GatewayNotice::classify(&rec), Some(GatewayNotice::Heartbeat));
    /// ```
    pub fn classify(rec: &RecordRef<'a>) -> Option<Self> {
        match rec.header().rtype {
            rtype::SYSTEM => Some(Self::system(rec)),
            rtype::ERROR => Some(Self::error(rec)),
            _ => None,
        }
    }

    fn system(rec: &RecordRef<'a>) -> Self {
        if rec.record_size() >= std::mem::size_of::<dbn::SystemMsg>() {
            if let Some(msg) = rec.get::<dbn::SystemMsg>() {
                let text = msg.msg().unwrap_or_default();
                return match msg.code() {
                    Ok(SystemCode::Heartbeat) => Self::Heartbeat,
                    Ok(SystemCode::SubscriptionAck) => Self::SubscriptionAck(text),
                    Ok(SystemCode::SlowReaderWarning) => Self::SlowReaderWarning(text),
                    Ok(SystemCode::ReplayCompleted) => Self::ReplayCompleted(text),
                    Ok(SystemCode::EndOfInterval) => Self::EndOfInterval(text),
                    _ if msg.is_heartbeat() => Self::Heartbeat,
                    _ => Self::System {
                        code: Some(msg.code),
                        text,
                    },
                };
            }
        }
        match rec.get::<dbn::v1::SystemMsg>() {
            Some(msg) if msg.is_heartbeat() => Self::Heartbeat,
            Some(msg) => Self::System {
                code: None,
                text: msg.msg().unwrap_or_default(),
            },
            None => Self::System {
                code: None,
                text: "",
            },
        }
    }

    fn error(rec: &RecordRef<'a>) -> Self {
        if rec.record_size() >= std::mem::size_of::<dbn::ErrorMsg>() {
            if let Some(msg) = rec.get::<dbn::ErrorMsg>() {
                return Self::Error {
                    code: msg.code().ok(),
                    raw_code: Some(msg.code),
                    text: msg.err().unwrap_or_default(),
                    is_last: msg.is_last != 0,
                };
            }
        }
        Self::Error {
            code: None,
            raw_code: None,
            text: rec
                .get::<dbn::v1::ErrorMsg>()
                .and_then(|msg| msg.err().ok())
                .unwrap_or_default(),
            is_last: true,
        }
    }
}
