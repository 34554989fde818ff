//! The bounds a [`ClientCodec`](super::ClientCodec) enforces.

use crate::Error;

/// Limits of a [`ClientCodec`](super::ClientCodec). Build it with
/// [`CodecConfig::default`] and the setters; [`ClientCodec::new`](super::ClientCodec::new)
/// validates it. Every buffer the codec holds is bounded by these values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecConfig {
    pub(crate) max_head_bytes: usize,
    pub(crate) max_headers: usize,
    pub(crate) max_chunk_line: usize,
}

impl CodecConfig {
    /// Default cap on a response head (status line, fields, blank line) and on a
    /// chunked trailer section: 64 KiB.
    pub const DEFAULT_MAX_HEAD_BYTES: usize = 64 * 1024;
    /// Largest head cap accepted: 1 MiB.
    pub const MAX_HEAD_BYTES: usize = 1024 * 1024;
    /// Default number of header fields a head may have: 64.
    pub const DEFAULT_MAX_HEADERS: usize = 64;
    /// Largest header count accepted: 1024.
    pub const MAX_HEADERS: usize = 1024;
    /// Default cap on a chunk size line, extensions and CRLF included: 4 KiB.
    pub const DEFAULT_MAX_CHUNK_LINE: usize = 4 * 1024;
    /// Largest chunk size line cap accepted: 64 KiB.
    pub const MAX_CHUNK_LINE: usize = 64 * 1024;

    /// Sets the largest response head, and trailer section, accepted in bytes
    /// (default 64 KiB; 32 to 1 MiB). A head is buffered until its blank line arrives;
    /// one that grows past this is [`Error::HttpHeadTooLarge`].
    #[must_use]
    pub fn max_head_bytes(mut self, bytes: usize) -> Self {
        self.max_head_bytes = bytes;
        self
    }

    /// Sets how many header fields a head may carry (default 64; 1 to 1024). More is
    /// [`Error::HttpTooManyHeaders`].
    #[must_use]
    pub fn max_headers(mut self, count: usize) -> Self {
        self.max_headers = count;
        self
    }

    /// Sets the longest chunk size line accepted, extensions and CRLF included
    /// (default 4 KiB; 8 to 64 KiB). Longer is [`Error::HttpMalformed`].
    #[must_use]
    pub fn max_chunk_line(mut self, bytes: usize) -> Self {
        self.max_chunk_line = bytes;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let check = |name: &str, value: usize, min: usize, max: usize| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(Error::Config(format!(
                    "{name} {value} is outside {min}..={max}"
                )))
            }
        };
        check(
            "max_head_bytes",
            self.max_head_bytes,
            32,
            Self::MAX_HEAD_BYTES,
        )?;
        check("max_headers", self.max_headers, 1, Self::MAX_HEADERS)?;
        check(
            "max_chunk_line",
            self.max_chunk_line,
            8,
            Self::MAX_CHUNK_LINE,
        )
    }
}

impl Default for CodecConfig {
    fn default() -> Self {
        Self {
            max_head_bytes: Self::DEFAULT_MAX_HEAD_BYTES,
            max_headers: Self::DEFAULT_MAX_HEADERS,
            max_chunk_line: Self::DEFAULT_MAX_CHUNK_LINE,
        }
    }
}
