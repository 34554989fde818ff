//! The one error type of this crate, with a [`ErrorKind`] a caller can match on.

use std::fmt;

/// Where in a byte stream a truncation was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TruncatedPart {
    /// The 8-byte DBN prelude (`DBN`, version, metadata length).
    Prelude,
    /// The metadata block that follows the prelude.
    Metadata,
    /// A DBN record.
    Record,
    /// A zstd frame: the compressed input ended before the frame did.
    ZstdFrame,
    /// An HTTP response head (status line and headers).
    HttpHead,
    /// An HTTP response body with a Content-Length, or close-delimited without a TLS
    /// close_notify.
    HttpBody,
    /// A chunked HTTP response body (`have` counts its data bytes, without the chunk
    /// framing).
    HttpChunkedBody,
    /// A TLS record: the connection ended inside one (`offset` is where the record
    /// starts in the ciphertext, `need` its length with the 5-byte header when known).
    Tls,
}

impl fmt::Display for TruncatedPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Prelude => "the DBN prelude",
            Self::Metadata => "the DBN metadata",
            Self::Record => "a DBN record",
            Self::ZstdFrame => "a zstd frame",
            Self::HttpHead => "an HTTP response head",
            Self::HttpBody => "an HTTP response body",
            Self::HttpChunkedBody => "a chunked HTTP response body",
            Self::Tls => "a TLS record",
        })
    }
}

/// The category of an [`Error`]: what a caller decides on (retry, report, give up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration given to a constructor is invalid; nothing was decoded.
    Config,
    /// The input is not a DBN stream this crate decodes (wrong magic, legacy DBZ,
    /// unsupported version, or a version the upgrade policy cannot produce).
    Format,
    /// The metadata block is malformed or over its configured size cap.
    Metadata,
    /// A record header breaks DBN framing (zero or too-short length, a known record type
    /// shorter than its struct).
    Framing,
    /// The zstd layer rejected the input (corrupt data, or a window over the limit).
    Decompression,
    /// The input ended inside a prelude, metadata block, record or zstd frame.
    Truncated,
    /// The caller asked for something invalid (an empty symbol list, a snapshot with a
    /// start time, a start time after the session started); nothing was sent.
    Usage,
    /// The peer broke the control protocol (a line over the limit, an unexpected line,
    /// data where none may come).
    Protocol,
    /// The gateway rejected the API key or the session request.
    Auth,
    /// A deadline passed (authentication, heartbeat).
    Timeout,
    /// The connection ended before the session could start.
    Closed,
    /// TLS failed: handshake, certificate (untrusted root, wrong host name), or a
    /// corrupt record.
    Tls,
    /// The HTTP server answered with a status of 300 or more.
    HttpStatus,
}

/// The category of a driver's error, the same in every driver (`dbn-pipe-mio` and
/// `dbn-pipe-tokio` re-export it as their `ErrorKind`): the layer that failed, which is
/// what a caller decides on (retry, report, give up). The session's kinds map onto it
/// with `From<ErrorKind>`; the transport's (`Dns`, `Connect`, `Io`) only drivers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DriverErrorKind {
    /// An option or parameter is invalid; nothing was sent.
    Config,
    /// The host name could not be resolved.
    Dns,
    /// The TCP connection could not be established.
    Connect,
    /// Reading or writing the socket (or an output file) failed.
    Io,
    /// TLS failed (handshake, certificate, record).
    Tls,
    /// The HTTP server answered with an error status.
    HttpStatus,
    /// The gateway rejected the API key or the session request.
    Auth,
    /// The peer broke the protocol (control lines, HTTP, DBN framing or metadata).
    Protocol,
    /// The zstd layer rejected the input.
    Decompression,
    /// The connection ended inside a record, metadata block, zstd frame, HTTP body or
    /// TLS record.
    Truncated,
    /// A deadline passed (connect, authentication, heartbeat, read).
    Timeout,
    /// The connection ended before the session could start, or the client is closed.
    Closed,
    /// The caller asked for something invalid (a request while another is in flight,
    /// an empty symbol list); nothing was sent.
    Usage,
}

impl From<ErrorKind> for DriverErrorKind {
    /// The layer a session error comes from; `Format`, `Metadata` and `Framing` (the
    /// data is not valid DBN) are `Protocol`.
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::Config => Self::Config,
            ErrorKind::Decompression => Self::Decompression,
            ErrorKind::Truncated => Self::Truncated,
            ErrorKind::Usage => Self::Usage,
            ErrorKind::Auth => Self::Auth,
            ErrorKind::Timeout => Self::Timeout,
            ErrorKind::Closed => Self::Closed,
            ErrorKind::Tls => Self::Tls,
            ErrorKind::HttpStatus => Self::HttpStatus,
            ErrorKind::Format | ErrorKind::Metadata | ErrorKind::Framing | ErrorKind::Protocol => {
                Self::Protocol
            }
        }
    }
}

impl fmt::Display for DriverErrorKind {
    /// The layer's name in lower case, as errors print it (`"http status"`, `"dns"`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Config => "config",
            Self::Dns => "dns",
            Self::Connect => "connect",
            Self::Io => "io",
            Self::Tls => "tls",
            Self::HttpStatus => "http status",
            Self::Auth => "auth",
            Self::Protocol => "protocol",
            Self::Decompression => "decompression",
            Self::Truncated => "truncated",
            Self::Timeout => "timeout",
            Self::Closed => "closed",
            Self::Usage => "usage",
        })
    }
}

/// Which deadline of a session passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimerKind {
    /// The handshake (greeting, challenge, authentication response) took too long.
    Auth,
    /// Nothing arrived from the gateway for the heartbeat interval plus 5 seconds.
    Heartbeat,
}

impl fmt::Display for TimerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auth => "authentication",
            Self::Heartbeat => "heartbeat",
        })
    }
}

/// Every failure of the decoding core, each naming the stream offset where it was found.
///
/// Offsets count bytes of the DBN stream (after decompression) from its first byte,
/// except for [`Error::Decompression`], [`Error::WindowTooLarge`] and a truncated zstd
/// frame, whose offsets count compressed input bytes. Errors are sticky: once a decoder
/// returns one, every later poll returns it again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A constructor was given a value outside its documented range.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The stream starts with the magic number of the legacy DBZ format, which DBN
    /// replaced; convert it with the `dbn` command-line tool first.
    #[error("legacy DBZ stream at offset {offset}: DBZ is not supported, only DBN versions 1 to 3")]
    LegacyDbz {
        /// Offset of the magic number.
        offset: u64,
    },

    /// The stream does not start with `DBN`.
    #[error("not a DBN stream at offset {offset}: expected magic `DBN`, found bytes {found:02X?}")]
    NotDbn {
        /// Offset of the bad magic.
        offset: u64,
        /// The first bytes found instead.
        found: [u8; 4],
    },

    /// The prelude names a DBN version this decoder does not read (0, or above 3).
    #[error(
        "unsupported DBN version {version} at offset {offset}: only versions 1 to 3 are decoded"
    )]
    UnsupportedVersion {
        /// Offset of the version byte.
        offset: u64,
        /// The version found.
        version: u8,
    },

    /// The upgrade policy cannot produce records from a stream of this version
    /// (`UpgradeToV2` asked to decode version 3: DBN has no downgrade).
    #[error(
        "upgrade policy {policy} cannot decode DBN version {version} (no downgrade exists); use AsIs or UpgradeToV3"
    )]
    PolicyConflict {
        /// The policy in force, as its name.
        policy: &'static str,
        /// The stream's version.
        version: u8,
    },

    /// The prelude declares a metadata block shorter than its 100 fixed bytes.
    #[error("metadata length {length} at offset {offset} is shorter than the 100 fixed bytes")]
    MetadataTooShort {
        /// Offset of the length field.
        offset: u64,
        /// The declared length.
        length: u32,
    },

    /// The prelude declares a metadata block larger than the configured cap.
    #[error(
        "metadata length {length} at offset {offset} exceeds the configured cap of {cap} bytes"
    )]
    MetadataTooLarge {
        /// Offset of the length field.
        offset: u64,
        /// The declared length.
        length: u32,
        /// The configured cap.
        cap: usize,
    },

    /// The metadata block could not be decoded.
    #[error("invalid metadata at offset {offset}: {reason}")]
    Metadata {
        /// Offset of the metadata block (after the prelude).
        offset: u64,
        /// What `dbn`'s metadata decoder reported.
        reason: String,
    },

    /// A record header's length is zero or shorter than the 16-byte header.
    #[error(
        "invalid record length at offset {offset}: {length_words} words ({} bytes) for rtype {rtype:#04x}, the header alone is 16 bytes",
        u32::from(*length_words) * 4
    )]
    RecordLength {
        /// Offset of the record.
        offset: u64,
        /// The raw length byte (in 4-byte words).
        length_words: u8,
        /// The record type byte.
        rtype: u8,
    },

    /// A record of a known type is shorter than that type's struct for the stream's
    /// version (plus 8 bytes when `ts_out` is on); casting it would read past its end.
    #[error(
        "record at offset {offset} with rtype {rtype:#04x} is {length} bytes, shorter than the {min} bytes its type needs in DBN version {version}"
    )]
    RecordTooShort {
        /// Offset of the record.
        offset: u64,
        /// The record type byte.
        rtype: u8,
        /// The record's length in bytes.
        length: usize,
        /// The minimum length for this type, version and `ts_out`.
        min: usize,
        /// The stream's DBN version.
        version: u8,
    },

    /// A field that the `dbn` crate's struct for this record holds as a Rust enum has
    /// a byte outside that enum (v1 and v2 instrument definitions); viewing the record
    /// as its struct would be undefined behaviour, so it is refused.
    #[error(
        "record at offset {offset} with rtype {rtype:#04x}: field {field} holds {value:#04x}, which is not a value DBN defines"
    )]
    InvalidRecordField {
        /// Offset of the record.
        offset: u64,
        /// The record type byte.
        rtype: u8,
        /// The field's name.
        field: &'static str,
        /// The byte found.
        value: u8,
    },

    /// The zstd decoder rejected the compressed input.
    #[error("zstd decompression failed at compressed offset {offset}: {reason}")]
    Decompression {
        /// Compressed input offset of the zstd frame that failed (or of the bytes
        /// that should have started a frame).
        offset: u64,
        /// The zstd error text.
        reason: String,
    },

    /// A zstd frame asks for a window larger than the configured limit.
    #[error(
        "zstd frame at compressed offset {offset} needs a window above the limit of 2^{window_log_max} bytes"
    )]
    WindowTooLarge {
        /// Compressed input offset of the zstd frame that failed (or of the bytes
        /// that should have started a frame).
        offset: u64,
        /// The configured limit, as a power of two.
        window_log_max: u32,
    },

    /// The input ended inside a prelude, metadata block, record or zstd frame.
    #[error(
        "stream truncated inside {part} at offset {offset}: {have} bytes received{}",
        match need { Some(n) => format!(" of {n}"), None => String::new() }
    )]
    Truncated {
        /// Which part was left unfinished.
        part: TruncatedPart,
        /// Offset where the unfinished part starts.
        offset: u64,
        /// Bytes of it that did arrive.
        have: usize,
        /// Bytes it needed in all, when known.
        need: Option<usize>,
    },

    /// A request the caller made is invalid; nothing was sent.
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// A control line from the peer exceeds the line length limit.
    #[error("control line at offset {offset} exceeds the limit of {limit} bytes")]
    LineTooLong {
        /// Offset of the line's first byte in the connection's input.
        offset: u64,
        /// The configured limit.
        limit: usize,
    },

    /// A control line from the peer is not what the protocol expects at this point.
    #[error("unexpected line from the gateway while waiting for {expected}: {line:?}")]
    UnexpectedLine {
        /// What the session was waiting for.
        expected: &'static str,
        /// The line received (without its newline, at most 256 bytes).
        line: String,
    },

    /// The gateway sent bytes where the protocol allows none.
    #[error("the gateway sent data at offset {offset} before the session was started")]
    UnexpectedData {
        /// Offset of the first unexpected byte in the connection's input.
        offset: u64,
    },

    /// The gateway rejected authentication; `message` is its text (or the raw
    /// response line when it carried no `error` field).
    #[error("authentication rejected by the gateway: {message}")]
    AuthRejected {
        /// The gateway's explanation.
        message: String,
    },

    /// A deadline passed.
    #[error("{timer} timeout: nothing completed within {after:?}")]
    Timeout {
        /// Which deadline.
        timer: TimerKind,
        /// How long the session waited.
        after: std::time::Duration,
    },

    /// The connection ended during the handshake.
    #[error("the gateway closed the connection during the handshake after {received} bytes")]
    ClosedDuringHandshake {
        /// Bytes received on the connection.
        received: u64,
    },

    /// The HTTP response head is larger than the configured limit.
    #[error("HTTP response head exceeds the limit of {limit} bytes")]
    HttpHeadTooLarge {
        /// The configured limit.
        limit: usize,
    },

    /// The HTTP response has more headers than the configured limit.
    #[error("HTTP response has more than {limit} headers")]
    HttpTooManyHeaders {
        /// The configured limit.
        limit: usize,
    },

    /// The HTTP response is malformed (status line, header, Content-Length, chunk
    /// framing).
    #[error("malformed HTTP response at offset {offset}: {reason}")]
    HttpMalformed {
        /// Offset in the connection's response bytes.
        offset: u64,
        /// What was wrong.
        reason: String,
    },

    /// The server answered with a status of 300 or more.
    #[error("{0}")]
    HttpStatus(Box<HttpStatusError>),

    /// TLS failed.
    #[error("TLS error: {reason}")]
    Tls {
        /// What rustls reported (handshake, certificate, record).
        reason: String,
    },
}

/// An HTTP response with a status of 300 or more, as the Historical API reports errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpStatusError {
    /// The status code.
    pub status: u16,
    /// The reason phrase of the status line.
    pub reason: String,
    /// The message: `detail` (or `detail.message`) of a JSON body, else the raw body.
    pub message: String,
    /// `detail.case` of a structured JSON error, when present.
    pub case: Option<String>,
    /// The raw body, cut to 4 KiB.
    pub body: String,
    /// The `request-id` response header, when present.
    pub request_id: Option<String>,
}

impl fmt::Display for HttpStatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} {}: {}", self.status, self.reason, self.message)?;
        if let Some(case) = &self.case {
            write!(f, " (case {case})")?;
        }
        if let Some(id) = &self.request_id {
            write!(f, " [request-id {id}]")?;
        }
        Ok(())
    }
}

impl Error {
    /// For drivers: a state the driver's own checks rule out (a session answering
    /// against what it said a moment before), reported as a `Usage` error naming
    /// `what` instead of a panic or a silent stall.
    pub fn driver_internal(what: &str) -> Self {
        Self::InvalidRequest(format!("internal driver error: {what}"))
    }

    /// The category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Config(_) => ErrorKind::Config,
            Self::LegacyDbz { .. }
            | Self::NotDbn { .. }
            | Self::UnsupportedVersion { .. }
            | Self::PolicyConflict { .. } => ErrorKind::Format,
            Self::MetadataTooShort { .. }
            | Self::MetadataTooLarge { .. }
            | Self::Metadata { .. } => ErrorKind::Metadata,
            Self::RecordLength { .. }
            | Self::RecordTooShort { .. }
            | Self::InvalidRecordField { .. } => ErrorKind::Framing,
            Self::Decompression { .. } | Self::WindowTooLarge { .. } => ErrorKind::Decompression,
            Self::Truncated { .. } => ErrorKind::Truncated,
            Self::InvalidRequest(_) => ErrorKind::Usage,
            Self::LineTooLong { .. }
            | Self::UnexpectedLine { .. }
            | Self::UnexpectedData { .. } => ErrorKind::Protocol,
            Self::AuthRejected { .. } => ErrorKind::Auth,
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::ClosedDuringHandshake { .. } => ErrorKind::Closed,
            Self::HttpHeadTooLarge { .. }
            | Self::HttpTooManyHeaders { .. }
            | Self::HttpMalformed { .. } => ErrorKind::Protocol,
            Self::HttpStatus(_) => ErrorKind::HttpStatus,
            Self::Tls { .. } => ErrorKind::Tls,
        }
    }

    /// The stream offset the error names, if it names one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Self::Config(_)
            | Self::PolicyConflict { .. }
            | Self::InvalidRequest(_)
            | Self::UnexpectedLine { .. }
            | Self::AuthRejected { .. }
            | Self::Timeout { .. }
            | Self::ClosedDuringHandshake { .. }
            | Self::HttpHeadTooLarge { .. }
            | Self::HttpTooManyHeaders { .. }
            | Self::HttpStatus(_)
            | Self::Tls { .. } => None,
            Self::HttpMalformed { offset, .. } => Some(*offset),
            Self::LineTooLong { offset, .. } | Self::UnexpectedData { offset } => Some(*offset),
            Self::LegacyDbz { offset }
            | Self::NotDbn { offset, .. }
            | Self::UnsupportedVersion { offset, .. }
            | Self::MetadataTooShort { offset, .. }
            | Self::MetadataTooLarge { offset, .. }
            | Self::Metadata { offset, .. }
            | Self::RecordLength { offset, .. }
            | Self::RecordTooShort { offset, .. }
            | Self::InvalidRecordField { offset, .. }
            | Self::Decompression { offset, .. }
            | Self::WindowTooLarge { offset, .. }
            | Self::Truncated { offset, .. } => Some(*offset),
        }
    }
}
