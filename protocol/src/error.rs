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
}

impl fmt::Display for TruncatedPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Prelude => "the DBN prelude",
            Self::Metadata => "the DBN metadata",
            Self::Record => "a DBN record",
            Self::ZstdFrame => "a zstd frame",
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

    /// The zstd decoder rejected the compressed input.
    #[error("zstd decompression failed at compressed offset {offset}: {reason}")]
    Decompression {
        /// Compressed input offset where the failing call started.
        offset: u64,
        /// The zstd error text.
        reason: String,
    },

    /// A zstd frame asks for a window larger than the configured limit.
    #[error(
        "zstd frame at compressed offset {offset} needs a window above the limit of 2^{window_log_max} bytes"
    )]
    WindowTooLarge {
        /// Compressed input offset where the failing call started.
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
}

impl Error {
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
            Self::RecordLength { .. } | Self::RecordTooShort { .. } => ErrorKind::Framing,
            Self::Decompression { .. } | Self::WindowTooLarge { .. } => ErrorKind::Decompression,
            Self::Truncated { .. } => ErrorKind::Truncated,
        }
    }

    /// The stream offset the error names, if it names one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Self::Config(_) | Self::PolicyConflict { .. } => None,
            Self::LegacyDbz { offset }
            | Self::NotDbn { offset, .. }
            | Self::UnsupportedVersion { offset, .. }
            | Self::MetadataTooShort { offset, .. }
            | Self::MetadataTooLarge { offset, .. }
            | Self::Metadata { offset, .. }
            | Self::RecordLength { offset, .. }
            | Self::RecordTooShort { offset, .. }
            | Self::Decompression { offset, .. }
            | Self::WindowTooLarge { offset, .. }
            | Self::Truncated { offset, .. } => Some(*offset),
        }
    }
}
