//! The error type of the tokio driver: every layer (configuration, DNS, TCP, the
//! sans-IO session) in one enum with a [`ErrorKind`] to match on.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// The layer that failed, the same type in both drivers: what a caller decides on
/// (retry, report, give up).
pub use dbn_pipe_protocol::DriverErrorKind as ErrorKind;

/// Every failure of the tokio driver, carrying its cause. [`Error::kind`] names the
/// layer; `Display` says which layer failed and why (never the API key).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An option is invalid; nothing was sent.
    #[error("configuration: {0}")]
    Config(String),

    /// Resolving `host` failed (or gave no address).
    #[error("dns: resolving {host} failed: {source}")]
    Dns {
        /// The host name (with port) looked up.
        host: String,
        /// What the resolver reported.
        #[source]
        source: io::Error,
    },

    /// Connecting to `addr` failed (every resolved address was tried; this is the
    /// last failure).
    #[error("connect: connecting to {addr} failed: {source}")]
    Connect {
        /// The address (`host:port` as configured, or the socket address tried).
        addr: String,
        /// What the operating system reported.
        #[source]
        source: io::Error,
    },

    /// Resolving and connecting to `addr` took longer than the connect timeout.
    #[error("timeout: connecting to {addr} took longer than {after:?}")]
    ConnectTimeout {
        /// The address as configured.
        addr: String,
        /// The connect timeout.
        after: Duration,
    },

    /// No byte arrived from the server for the read timeout.
    #[error("timeout: nothing received from the server for {after:?}")]
    ReadTimeout {
        /// The read timeout.
        after: Duration,
    },

    /// Reading from or writing to the socket failed.
    #[error("io: the connection failed: {source}")]
    Io {
        /// What the operating system reported.
        #[source]
        source: io::Error,
    },

    /// Creating or writing the output file failed.
    #[error("io: writing {} failed: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What the operating system reported.
        #[source]
        source: io::Error,
    },

    /// The session (protocol layer) failed: authentication, a deadline, framing,
    /// decompression, truncation, TLS, an HTTP error status.
    #[error("{kind}: {0}", kind = Error::session_kind(.0))]
    Session(#[source] dbn_pipe_protocol::Error),

    /// The client was closed, or an earlier error ended it; nothing more will come.
    #[error("closed: {0}")]
    Closed(String),
}

impl From<dbn_pipe_protocol::Error> for Error {
    fn from(err: dbn_pipe_protocol::Error) -> Self {
        Self::Session(err)
    }
}

impl Error {
    /// The layer that failed.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Config(_) => ErrorKind::Config,
            Self::Dns { .. } => ErrorKind::Dns,
            Self::Connect { .. } => ErrorKind::Connect,
            Self::ConnectTimeout { .. } | Self::ReadTimeout { .. } => ErrorKind::Timeout,
            Self::Io { .. } | Self::File { .. } => ErrorKind::Io,
            Self::Session(err) => Self::session_kind(err),
            Self::Closed(_) => ErrorKind::Closed,
        }
    }

    /// The protocol error underneath, for [`Error::Session`].
    pub fn session_error(&self) -> Option<&dbn_pipe_protocol::Error> {
        match self {
            Self::Session(err) => Some(err),
            _ => None,
        }
    }

    /// The HTTP status error (status, message, request id) of an error response.
    pub fn http_status(&self) -> Option<&dbn_pipe_protocol::HttpStatusError> {
        match self.session_error() {
            Some(dbn_pipe_protocol::Error::HttpStatus(status)) => Some(status),
            _ => None,
        }
    }

    fn session_kind(err: &dbn_pipe_protocol::Error) -> ErrorKind {
        ErrorKind::from(err.kind())
    }

    pub(crate) fn io(source: io::Error) -> Self {
        Self::Io { source }
    }

    /// A state the driver's own checks rule out, reported instead of a panic.
    pub(crate) fn internal(what: &str) -> Self {
        Self::Session(dbn_pipe_protocol::Error::driver_internal(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_the_protocol_layers() {
        let timeout = Error::from(dbn_pipe_protocol::Error::Timeout {
            timer: dbn_pipe_protocol::TimerKind::Heartbeat,
            after: Duration::from_secs(35),
        });
        assert_eq!(timeout.kind(), ErrorKind::Timeout);
        assert!(
            timeout.to_string().starts_with("timeout: heartbeat"),
            "{timeout}"
        );
        let framing = Error::from(dbn_pipe_protocol::Error::RecordLength {
            offset: 8,
            length_words: 0,
            rtype: 0xA0,
        });
        assert_eq!(framing.kind(), ErrorKind::Protocol);
        assert_eq!(ErrorKind::HttpStatus.to_string(), "http status");
        let refused = Error::Connect {
            addr: "127.0.0.1:1".to_owned(),
            source: io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(refused.kind(), ErrorKind::Connect);
        assert!(std::error::Error::source(&refused).is_some());
    }
}
