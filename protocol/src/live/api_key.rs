//! The Databento API key, validated and never printed.

use std::fmt;

use crate::Error;

/// A Databento API key: exactly 32 printable ASCII characters, the last 5 of which are
/// the bucket id.
///
/// The key is never shown by `Debug` or `Display` (both print `ApiKey(<redacted>)`)
/// and no error of this crate contains it.
///
/// ```
/// use dbn_pipe_protocol::live::ApiKey;
///
/// let key = ApiKey::new("db-0123456789abcdefghijklmnABCDE")?;
/// assert_eq!(key.bucket_id(), "ABCDE");
/// assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
/// assert!(ApiKey::new("too-short").is_err());
/// # Ok::<(), dbn_pipe_protocol::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Length of every API key.
    pub const LEN: usize = 32;
    /// Length of the bucket id at the end of the key.
    pub const BUCKET_ID_LEN: usize = 5;

    /// Validates `key`.
    ///
    /// # Errors
    /// [`Error::Config`] when `key` is not exactly 32 printable ASCII characters or
    /// contains `|` (which would break the control line). The message gives the length
    /// found, never the key.
    pub fn new(key: impl Into<String>) -> Result<Self, Error> {
        let key = key.into();
        if key.len() != Self::LEN || !key.bytes().all(|b| b.is_ascii_graphic() && b != b'|') {
            let chars = key.chars().count();
            return Err(Error::Config(format!(
                "an API key is exactly {} printable ASCII characters without '|'; got {chars} characters",
                Self::LEN
            )));
        }
        Ok(Self(key))
    }

    /// The bucket id: the key's last 5 characters.
    pub fn bucket_id(&self) -> &str {
        &self.0[Self::LEN - Self::BUCKET_ID_LEN..]
    }

    /// The key itself, for the CRAM hash and HTTP Basic auth only.
    pub(crate) fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}
