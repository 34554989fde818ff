//! The control lines a live client sends, byte for byte.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::subscription::{ALL_SYMBOLS, Start, Subscription, Symbols};
use super::{ApiKey, LiveConfig};

/// The line that starts the session.
pub(crate) const START_SESSION: &[u8] = b"start_session\n";

/// The CRAM reply: lower-case hex SHA-256 of `<challenge>|<key>`, a dash, the bucket id.
pub(crate) fn cram_reply(challenge: &str, key: &ApiKey) -> String {
    let mut hasher = Sha256::new();
    hasher.update(challenge.as_bytes());
    hasher.update(b"|");
    hasher.update(key.secret().as_bytes());
    format!("{}-{}", hex::encode(hasher.finalize()), key.bucket_id())
}

/// The authentication request line, `\n` included.
pub(crate) fn auth_request(config: &LiveConfig, challenge: &str) -> String {
    let mut line = format!(
        "auth={}|dataset={}|encoding=dbn|compression={}|ts_out={}|client={}",
        cram_reply(challenge, &config.key),
        config.dataset,
        config.compression.as_str(),
        u8::from(config.ts_out),
        config.user_agent(),
    );
    if let Some(seconds) = config.heartbeat_interval_s {
        let _ = write!(line, "|heartbeat_interval_s={seconds}");
    }
    if let Some(behavior) = config.slow_reader {
        let _ = write!(line, "|slow_reader_behavior={}", behavior.as_str());
    }
    line.push('\n');
    line
}

/// Appends the subscription lines of `sub` to `out`: one per chunk of at most 500
/// symbols, `is_last=1` on the last only. `start` replaces the subscription's own
/// start (`None` sends none).
pub(crate) fn subscription_lines(
    sub: &Subscription,
    id: u32,
    start: Option<&Start>,
    out: &mut Vec<u8>,
) {
    let chunks: Vec<String> = match &sub.symbols {
        Symbols::All => vec![ALL_SYMBOLS.to_owned()],
        Symbols::List(list) => list
            .chunks(Subscription::SYMBOLS_PER_LINE)
            .map(|chunk| chunk.join(","))
            .collect(),
    };
    let last = chunks.len().saturating_sub(1);
    for (i, symbols) in chunks.iter().enumerate() {
        let mut line = format!(
            "schema={}|stype_in={}|symbols={symbols}|snapshot={}|is_last={}",
            sub.schema,
            sub.stype_in,
            u8::from(sub.snapshot),
            u8::from(i == last),
        );
        if let Some(start) = start {
            let _ = write!(line, "|start={}", start.wire());
        }
        let _ = write!(line, "|id={id}");
        line.push('\n');
        out.extend_from_slice(line.as_bytes());
    }
}
