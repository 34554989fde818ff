//! The driver's error type: transport failures (DNS, connect, socket I/O, timeouts of
//! the driver) and the session's own errors, each with the layer that failed.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// The layer that failed, the same type in both drivers: what a caller decides on
/// (retry, report, give up).
pub use dbn_pipe_protocol::DriverErrorKind as ErrorKind;

/// Every failure of a mio connection. [`Error::kind`] is what to match on; the
/// variants carry the cause (`source()`), and `Display` names the layer and the reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Invalid options (address, URL, timeouts, buffer sizes); nothing was sent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The host name of `host` did not resolve (or resolved to no address).
    #[error("DNS resolution of {host} failed: {source}")]
    Dns {
        /// The `host:port` that was resolved.
        host: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// The TCP connection to `addr` failed (refused, unreachable, reset).
    #[error("TCP connect to {addr} failed: {source}")]
    Connect {
        /// The address tried last.
        addr: String,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The TCP connection to `addr` was not established within `after`.
    #[error("TCP connect to {addr} timed out after {after:?}")]
    ConnectTimeout {
        /// The address tried last.
        addr: String,
        /// The connect timeout.
        after: Duration,
    },
    /// The historical server sent nothing for `after` while a response was expected.
    #[error("read timeout: no byte from the server within {after:?}")]
    ReadTimeout {
        /// The read timeout.
        after: Duration,
    },
    /// A socket operation (or the mio registry) failed.
    #[error("socket I/O failed: {source}")]
    Io {
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing the downloaded body to `path` failed.
    #[error("writing {} failed: {source}", path.display())]
    File {
        /// The output file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The session (live or historical protocol, TLS, HTTP, DBN, zstd) failed.
    #[error("session ({layer}): {0}", layer = session_layer(.0))]
    Session(#[source] dbn_pipe_protocol::Error),
    /// The call is not valid now (for example a request while another is in flight).
    #[error("invalid use: {0}")]
    Usage(String),
}

fn session_layer(err: &dbn_pipe_protocol::Error) -> ErrorKind {
    ErrorKind::from(err.kind())
}

impl Error {
    /// The category of the failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Config(_) => ErrorKind::Config,
            Self::Dns { .. } => ErrorKind::Dns,
            Self::Connect { .. } => ErrorKind::Connect,
            Self::ConnectTimeout { .. } | Self::ReadTimeout { .. } => ErrorKind::Timeout,
            Self::Io { .. } | Self::File { .. } => ErrorKind::Io,
            Self::Session(err) => session_layer(err),
            Self::Usage(_) => ErrorKind::Usage,
        }
    }

    /// The session's error, when the session (not the transport) failed.
    pub fn session_error(&self) -> Option<&dbn_pipe_protocol::Error> {
        match self {
            Self::Session(err) => Some(err),
            _ => None,
        }
    }
}

impl From<dbn_pipe_protocol::Error> for Error {
    fn from(err: dbn_pipe_protocol::Error) -> Self {
        Self::Session(err)
    }
}

impl From<io::Error> for Error {
    fn from(source: io::Error) -> Self {
        Self::Io { source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_and_display_names_the_layer() {
        let err = Error::from(dbn_pipe_protocol::Error::Truncated {
            part: dbn_pipe_protocol::TruncatedPart::Record,
            offset: 10,
            have: 3,
            need: Some(16),
        });
        assert_eq!(err.kind(), ErrorKind::Truncated);
        assert!(err.session_error().is_some());
        assert!(
            err.to_string().starts_with("session (truncated): "),
            "{err}"
        );
        let err = Error::ConnectTimeout {
            addr: "127.0.0.1:9".to_owned(),
            after: Duration::from_secs(1),
        };
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert_eq!(ErrorKind::HttpStatus.to_string(), "http status");
        let err = Error::from(dbn_pipe_protocol::Error::UnexpectedData { offset: 1 });
        assert_eq!(err.kind(), ErrorKind::Protocol);
    }
}
