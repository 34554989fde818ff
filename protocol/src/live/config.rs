//! Configuration of a live session and the gateway address of a dataset.

use std::time::Duration;

use super::ApiKey;
use crate::{DecoderConfig, Error, UpgradePolicy};

/// Port of every live gateway.
pub const GATEWAY_PORT: u16 = 13_000;

/// The gateway host and port for `dataset`: lower-cased, `.` replaced by `-`, then
/// `.lsg.databento.com`, port 13000.
///
/// ```
/// use dbn_pipe_protocol::live::gateway_address;
///
/// assert_eq!(gateway_address("GLBX.MDP3"), ("glbx-mdp3.lsg.databento.com".to_owned(), 13_000));
/// ```
pub fn gateway_address(dataset: &str) -> (String, u16) {
    let host = format!(
        "{}.lsg.databento.com",
        dataset.replace('.', "-").to_ascii_lowercase()
    );
    (host, GATEWAY_PORT)
}

/// What the gateway does when the client reads too slowly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlowReaderBehavior {
    /// Warn (a `SystemMsg` with code 2) and keep buffering.
    Warn,
    /// Skip records to catch up (an `ErrorMsg` with code 7 reports it).
    Skip,
}

impl SlowReaderBehavior {
    /// The value sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warn => "warn",
            Self::Skip => "skip",
        }
    }
}

/// Whether the gateway compresses the DBN stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LiveCompression {
    /// Plain DBN. The default.
    #[default]
    None,
    /// Everything after `start_session` (metadata included) is one zstd stream.
    Zstd,
}

impl LiveCompression {
    /// The value sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Zstd => "zstd",
        }
    }
}

/// Configuration of a [`LiveSession`](super::LiveSession). Validated by
/// [`LiveSession::new`](super::LiveSession::new).
#[derive(Debug, Clone)]
pub struct LiveConfig {
    pub(crate) key: ApiKey,
    pub(crate) dataset: String,
    pub(crate) compression: LiveCompression,
    pub(crate) ts_out: bool,
    pub(crate) heartbeat_interval_s: Option<u32>,
    pub(crate) slow_reader: Option<SlowReaderBehavior>,
    pub(crate) user_agent_ext: Option<String>,
    pub(crate) decoder: DecoderConfig,
    pub(crate) auth_timeout: Duration,
    pub(crate) silence_timeout: Option<Duration>,
    pub(crate) max_line_len: usize,
}

impl LiveConfig {
    /// Default authentication timeout: 30 s, as the official clients.
    pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(30);
    /// Heartbeat timeout when no interval is set: 35 s (the gateway's 30 s default
    /// plus 5 s).
    pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(35);
    /// Slack added to the heartbeat interval before the session times out.
    pub const HEARTBEAT_SLACK: Duration = Duration::from_secs(5);
    /// Longest control line accepted from the gateway: 64 KiB.
    pub const DEFAULT_MAX_LINE_LEN: usize = 64 * 1024;
    /// Accepted heartbeat intervals, in whole seconds.
    pub const HEARTBEAT_RANGE: std::ops::RangeInclusive<u32> = 5..=1800;

    /// A configuration for `dataset` (e.g. `GLBX.MDP3`) with defaults: no compression,
    /// no `ts_out`, the gateway's heartbeat interval, records upgraded to DBN v3.
    pub fn new(key: ApiKey, dataset: impl Into<String>) -> Self {
        Self {
            key,
            dataset: dataset.into(),
            compression: LiveCompression::None,
            ts_out: false,
            heartbeat_interval_s: None,
            slow_reader: None,
            user_agent_ext: None,
            decoder: DecoderConfig::default(),
            auth_timeout: Self::DEFAULT_AUTH_TIMEOUT,
            silence_timeout: None,
            max_line_len: Self::DEFAULT_MAX_LINE_LEN,
        }
    }

    /// Sets the compression of the DBN stream.
    #[must_use]
    pub fn compression(mut self, compression: LiveCompression) -> Self {
        self.compression = compression;
        self
    }

    /// Asks for every record to carry the gateway's send time (`ts_out`).
    #[must_use]
    pub fn ts_out(mut self, ts_out: bool) -> Self {
        self.ts_out = ts_out;
        self
    }

    /// Sets the heartbeat interval in whole seconds (5 to 1800); the session times out
    /// when nothing arrives for this interval plus 5 s.
    #[must_use]
    pub fn heartbeat_interval_s(mut self, seconds: u32) -> Self {
        self.heartbeat_interval_s = Some(seconds);
        self
    }

    /// Sets what the gateway does when this client reads too slowly.
    #[must_use]
    pub fn slow_reader_behavior(mut self, behavior: SlowReaderBehavior) -> Self {
        self.slow_reader = Some(behavior);
        self
    }

    /// Appends `ext` (after a space) to the user agent sent as `client=`.
    #[must_use]
    pub fn user_agent_extension(mut self, ext: impl Into<String>) -> Self {
        self.user_agent_ext = Some(ext.into());
        self
    }

    /// Sets the upgrade policy of the DBN decoder (default `UpgradeToV3`).
    #[must_use]
    pub fn upgrade_policy(mut self, policy: UpgradePolicy) -> Self {
        self.decoder = self.decoder.upgrade_policy(policy);
        self
    }

    /// Sets the DBN decoder's record buffer size (default 64 KiB).
    #[must_use]
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.decoder = self.decoder.buffer_size(bytes);
        self
    }

    /// Sets the authentication timeout (default 30 s).
    #[must_use]
    pub fn auth_timeout(mut self, timeout: Duration) -> Self {
        self.auth_timeout = timeout;
        self
    }

    /// Times the stream out after `timeout` without a byte from the gateway, instead
    /// of the heartbeat interval plus 5 s: for fail-over faster than the gateway's
    /// heartbeats (set it above the heartbeat interval, or quiet markets time out).
    #[must_use]
    pub fn silence_timeout(mut self, timeout: Duration) -> Self {
        self.silence_timeout = Some(timeout);
        self
    }

    /// The dataset.
    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    /// The heartbeat timeout in force: the [`silence_timeout`](Self::silence_timeout)
    /// if set, else the interval plus 5 s, or 35 s when no interval is set.
    pub fn heartbeat_timeout(&self) -> Duration {
        if let Some(timeout) = self.silence_timeout {
            return timeout;
        }
        match self.heartbeat_interval_s {
            Some(s) => Duration::from_secs(u64::from(s)) + Self::HEARTBEAT_SLACK,
            None => Self::DEFAULT_HEARTBEAT_TIMEOUT,
        }
    }

    /// The user agent sent as `client=`: `dbn-pipe/<version> Rust <os>-<arch>`, then
    /// the extension if set.
    pub fn user_agent(&self) -> String {
        crate::user_agent(self.user_agent_ext.as_deref())
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.dataset.is_empty() || !is_field_value(&self.dataset) {
            return Err(Error::Config(format!(
                "dataset {:?} must be non-empty printable ASCII without '|', '=' or ','",
                self.dataset
            )));
        }
        if let Some(s) = self.heartbeat_interval_s {
            if !Self::HEARTBEAT_RANGE.contains(&s) {
                return Err(Error::Config(format!(
                    "heartbeat interval {s} s is outside 5..=1800 s"
                )));
            }
        }
        if self.silence_timeout == Some(Duration::ZERO) {
            return Err(Error::Config(
                "the silence timeout must be longer than zero".to_owned(),
            ));
        }
        if let Some(ext) = &self.user_agent_ext {
            if ext.bytes().any(|b| b == b'|' || b == b'\n' || b == b'\r') {
                return Err(Error::Config(
                    "the user agent extension must not contain '|' or line breaks".to_owned(),
                ));
            }
        }
        if self.auth_timeout.is_zero() {
            return Err(Error::Config(
                "the auth timeout must be positive".to_owned(),
            ));
        }
        if self.decoder.fragment.is_some() {
            return Err(Error::Config(
                "a live session decodes whole DBN streams, not fragments".to_owned(),
            ));
        }
        self.decoder.validate()
    }
}

/// Whether `value` can stand as a `key=value` field of a control line.
pub(crate) fn is_field_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'|' | b'=' | b','))
}
