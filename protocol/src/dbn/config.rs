//! How a [`DbnDecoder`](super::DbnDecoder) is set up.

use crate::Error;

/// How records of older DBN versions are handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UpgradePolicy {
    /// Records keep the layout of the stream's version; read them with the `dbn::v1`,
    /// `dbn::v2` or `dbn::v3` structs that match [`DbnDecoder::input_version`](super::DbnDecoder::input_version).
    AsIs,
    /// Version 1 records are converted to version 2 layouts. A version 3 stream is
    /// rejected with [`Error::PolicyConflict`] (DBN has no downgrade).
    UpgradeToV2,
    /// Version 1 and 2 records are converted to version 3 layouts (the `dbn` crate's
    /// current structs). The default.
    #[default]
    UpgradeToV3,
}

impl UpgradePolicy {
    /// The policy's name, as it appears in errors.
    pub fn name(self) -> &'static str {
        match self {
            Self::AsIs => "AsIs",
            Self::UpgradeToV2 => "UpgradeToV2",
            Self::UpgradeToV3 => "UpgradeToV3",
        }
    }

    /// The same policy as the `dbn` crate spells it.
    pub fn to_dbn(self) -> dbn::VersionUpgradePolicy {
        match self {
            Self::AsIs => dbn::VersionUpgradePolicy::AsIs,
            Self::UpgradeToV2 => dbn::VersionUpgradePolicy::UpgradeToV2,
            Self::UpgradeToV3 => dbn::VersionUpgradePolicy::UpgradeToV3,
        }
    }

    /// Whether this policy can decode a stream of `version` (1 to 3).
    pub(crate) fn accepts(self, version: u8) -> bool {
        !(self == Self::UpgradeToV2 && version > 2)
    }
}

/// The shape of a record-only stream (a DBN "fragment"): no prelude, no metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentFormat {
    /// The DBN version the records are written in (1 to 3).
    pub version: u8,
    /// Whether every record carries a trailing 8-byte send timestamp.
    pub ts_out: bool,
}

/// Configuration of a [`DbnDecoder`](super::DbnDecoder). Build it with
/// [`DecoderConfig::default`] and the setters; [`DbnDecoder::new`](super::DbnDecoder::new)
/// validates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderConfig {
    pub(crate) upgrade_policy: UpgradePolicy,
    pub(crate) buffer_size: usize,
    pub(crate) max_metadata_len: usize,
    pub(crate) fragment: Option<FragmentFormat>,
}

impl DecoderConfig {
    /// Default record buffer size: 64 KiB.
    pub const DEFAULT_BUFFER_SIZE: usize = 64 * 1024;
    /// Smallest record buffer accepted: room for the largest possible record
    /// (255 words, 1020 bytes) several times over.
    pub const MIN_BUFFER_SIZE: usize = 4 * 1024;
    /// Largest record buffer accepted: 64 MiB.
    pub const MAX_BUFFER_SIZE: usize = 64 * 1024 * 1024;
    /// Default cap on the metadata block: 16 MiB.
    pub const DEFAULT_MAX_METADATA_LEN: usize = 16 * 1024 * 1024;

    /// Sets the upgrade policy (default [`UpgradePolicy::UpgradeToV3`]).
    #[must_use]
    pub fn upgrade_policy(mut self, policy: UpgradePolicy) -> Self {
        self.upgrade_policy = policy;
        self
    }

    /// Sets the record buffer size in bytes (default 64 KiB, rounded up to a multiple
    /// of 8). The decoder allocates it once (with a fixed 8 KiB scratch area for
    /// converted and realigned records); neither ever grows.
    #[must_use]
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.buffer_size = bytes;
        self
    }

    /// Sets the largest metadata block accepted (default 16 MiB).
    #[must_use]
    pub fn max_metadata_len(mut self, bytes: usize) -> Self {
        self.max_metadata_len = bytes;
        self
    }

    /// Decodes a record-only stream of the given version and `ts_out` instead of a
    /// whole stream with prelude and metadata.
    #[must_use]
    pub fn fragment(mut self, format: FragmentFormat) -> Self {
        self.fragment = Some(format);
        self
    }

    /// The upgrade policy in force.
    pub fn policy(&self) -> UpgradePolicy {
        self.upgrade_policy
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if !(Self::MIN_BUFFER_SIZE..=Self::MAX_BUFFER_SIZE).contains(&self.buffer_size) {
            return Err(Error::Config(format!(
                "buffer_size {} is outside {}..={} bytes",
                self.buffer_size,
                Self::MIN_BUFFER_SIZE,
                Self::MAX_BUFFER_SIZE
            )));
        }
        if self.max_metadata_len < 100 {
            return Err(Error::Config(format!(
                "max_metadata_len {} is below the 100 fixed bytes of any metadata block",
                self.max_metadata_len
            )));
        }
        if let Some(FragmentFormat { version, .. }) = self.fragment {
            if !(1..=3).contains(&version) {
                return Err(Error::Config(format!(
                    "fragment version {version} is not a DBN version this decoder reads (1 to 3)"
                )));
            }
            if !self.upgrade_policy.accepts(version) {
                return Err(Error::PolicyConflict {
                    policy: self.upgrade_policy.name(),
                    version,
                });
            }
        }
        Ok(())
    }
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            upgrade_policy: UpgradePolicy::default(),
            buffer_size: Self::DEFAULT_BUFFER_SIZE,
            max_metadata_len: Self::DEFAULT_MAX_METADATA_LEN,
            fragment: None,
        }
    }
}
