//! The control lines a live session sends are byte-exact: the auth request with its
//! CRAM hash, subscription chunking, `start_session`; and they carry the same fields
//! as the official `databento` client's `live::protocol` types for the same options.

use std::collections::BTreeMap;
use std::time::Instant;

use dbn::{SType, Schema};
use dbn_pipe_protocol::ErrorKind;
use dbn_pipe_protocol::live::{
    ApiKey, LiveCompression, LiveConfig, LiveSession, SlowReaderBehavior, Start, Subscription,
    Symbols,
};

const KEY: &str = "db-0123456789abcdefghijklmnABCDE";
const CHALLENGE: &str = "t7kNhwj4xqR0QYjzFKtBEG2ec2pXJ4FK";
/// SHA-256 of `"<CHALLENGE>|<KEY>"`, computed with an independent implementation
/// (Python's hashlib).
const CRAM_HASH: &str = "6a8533110551edceb088f56df7d273cfd37dfdf18b697e59055a7bb59153d243";

fn config() -> LiveConfig {
    LiveConfig::new(ApiKey::new(KEY).unwrap(), "GLBX.MDP3")
}

/// Drives a session to the point where it sent its auth request; returns the lines.
fn auth_line(config: LiveConfig) -> String {
    let now = Instant::now();
    let mut session = LiveSession::new(config, now).unwrap();
    let greeting = format!("lsg_version=0.4.2\ncram={CHALLENGE}\n");
    assert_eq!(
        session.handle_input(now, greeting.as_bytes()),
        greeting.len()
    );
    let mut out = Vec::new();
    let _ = session.poll_transmit(&mut out);
    String::from_utf8(out).unwrap()
}

/// Drives a session through authentication with `subs` and start; returns what it
/// sent after the auth request.
fn lines_after_auth(subs: Vec<Subscription>, start: bool) -> Vec<String> {
    let now = Instant::now();
    let mut session = LiveSession::new(config(), now).unwrap();
    for sub in subs {
        session.subscribe(sub).unwrap();
    }
    if start {
        session.start(now).unwrap();
    }
    session.handle_input(now, format!("lsg-test\ncram={CHALLENGE}\n").as_bytes());
    let mut out = Vec::new();
    let _ = session.poll_transmit(&mut out);
    out.clear();
    session.handle_input(now, b"success=1|session_id=mock-3|\n");
    let _ = session.poll_transmit(&mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(text.ends_with('\n') || text.is_empty());
    text.lines().map(str::to_owned).collect()
}

fn fields(line: &str) -> BTreeMap<String, String> {
    line.trim_end_matches('\n')
        .split('|')
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn auth_request_is_byte_exact() {
    let line = auth_line(config());
    let client = format!(
        "dbn-pipe/{} Rust {}-{}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    assert_eq!(
        line,
        format!(
            "auth={CRAM_HASH}-ABCDE|dataset=GLBX.MDP3|encoding=dbn|compression=none|ts_out=0|client={client}\n"
        )
    );
}

#[test]
fn auth_request_carries_every_option() {
    let line = auth_line(
        config()
            .compression(LiveCompression::Zstd)
            .ts_out(true)
            .heartbeat_interval_s(15)
            .slow_reader_behavior(SlowReaderBehavior::Skip)
            .user_agent_extension("my-app/2"),
    );
    let f = fields(&line);
    assert_eq!(f["auth"], format!("{CRAM_HASH}-ABCDE"));
    assert_eq!(f["compression"], "zstd");
    assert_eq!(f["ts_out"], "1");
    assert_eq!(f["heartbeat_interval_s"], "15");
    assert_eq!(f["slow_reader_behavior"], "skip");
    assert!(f["client"].starts_with("dbn-pipe/") && f["client"].ends_with(" my-app/2"));
    assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
}

#[test]
fn subscription_and_start_lines_are_byte_exact() {
    let lines = lines_after_auth(
        vec![
            Subscription::new(Schema::Mbo, ["ESH1"]).start(Start::Nanos(0)),
            Subscription::new(Schema::Trades, Symbols::All)
                .stype_in(SType::Parent)
                .id(42),
            Subscription::new(Schema::Mbo, ["ESM4", "NQM4"]).snapshot(true),
            Subscription::new(Schema::Ohlcv1S, ["SPY"])
                .stype_in(SType::RawSymbol)
                .start(Start::iso8601("2024-01-02T14:30:00Z").unwrap()),
        ],
        true,
    );
    assert_eq!(
        lines,
        [
            "schema=mbo|stype_in=raw_symbol|symbols=ESH1|snapshot=0|is_last=1|start=0|id=1",
            "schema=trades|stype_in=parent|symbols=ALL_SYMBOLS|snapshot=0|is_last=1|id=42",
            "schema=mbo|stype_in=raw_symbol|symbols=ESM4,NQM4|snapshot=1|is_last=1|id=2",
            "schema=ohlcv-1s|stype_in=raw_symbol|symbols=SPY|snapshot=0|is_last=1|start=2024-01-02T14:30:00Z|id=3",
            "start_session",
        ]
    );
}

#[test]
fn one_thousand_and_one_symbols_make_three_lines() {
    let symbols: Vec<String> = (0..1001).map(|i| format!("SYM{i}")).collect();
    let lines = lines_after_auth(vec![Subscription::new(Schema::Trades, symbols)], false);
    assert_eq!(lines.len(), 3);
    let counts: Vec<usize> = lines
        .iter()
        .map(|l| fields(l)["symbols"].split(',').count())
        .collect();
    assert_eq!(counts, [500, 500, 1]);
    let is_last: Vec<String> = lines.iter().map(|l| fields(l)["is_last"].clone()).collect();
    assert_eq!(is_last, ["0", "0", "1"]);
    assert_eq!(fields(&lines[0])["symbols"].split(',').next(), Some("SYM0"));
    assert_eq!(fields(&lines[2])["symbols"], "SYM1000");
    assert!(lines.iter().all(|l| fields(l)["id"] == "1"));
}

#[test]
fn invalid_requests_fail_before_anything_is_sent() {
    let now = Instant::now();
    let mut session = LiveSession::new(config(), now).unwrap();
    let empty: Vec<String> = Vec::new();
    let cases = [
        Subscription::new(Schema::Mbo, empty),
        Subscription::new(Schema::Mbo, ["ESH1"])
            .snapshot(true)
            .start(0u64),
        Subscription::new(Schema::Trades, ["ESH1"]).snapshot(true),
        Subscription::new(Schema::Trades, ["ES|H1"]),
        Subscription::new(Schema::Trades, [""]),
    ];
    for sub in cases {
        let err = session.subscribe(sub.clone()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Usage, "{sub:?}: {err}");
    }
    assert!(Start::iso8601("yesterday").is_err());
    assert!(Start::iso8601("2024-13-01").is_err());
    assert!(Start::iso8601("2024-01-02").is_ok());
    assert!(Start::iso8601("2024-01-02T09:30:00.123456789-05:00").is_ok());
    session.start(now).unwrap();
    let err = session
        .subscribe(Subscription::new(Schema::Trades, ["ESH1"]).start(0u64))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage);
    assert!(session.start(now).is_err(), "a second start is refused");
    let mut out = Vec::new();
    assert_eq!(
        session.poll_transmit(&mut out),
        0,
        "nothing sent before the handshake"
    );
    // A subscription without start after start is fine.
    assert!(
        session
            .subscribe(Subscription::new(Schema::Trades, ["ESH1"]))
            .is_ok()
    );
}

#[test]
fn configuration_is_validated() {
    assert_eq!(ApiKey::new("short").unwrap_err().kind(), ErrorKind::Config);
    assert!(ApiKey::new("db-0123456789abcdefghijklmn|BCDE").is_err());
    let err = ApiKey::new("db-0123456789abcdefghijklmnABCDEF").unwrap_err();
    assert!(
        !err.to_string().contains("0123456789"),
        "never echo the key: {err}"
    );
    let now = Instant::now();
    for bad in [
        config().heartbeat_interval_s(4),
        config().heartbeat_interval_s(1801),
        LiveConfig::new(ApiKey::new(KEY).unwrap(), ""),
        LiveConfig::new(ApiKey::new(KEY).unwrap(), "GLBX|MDP3"),
        config().user_agent_extension("a\nb"),
    ] {
        assert_eq!(
            LiveSession::new(bad, now).unwrap_err().kind(),
            ErrorKind::Config
        );
    }
    assert!(LiveSession::new(config().heartbeat_interval_s(5), now).is_ok());
    assert!(LiveSession::new(config().heartbeat_interval_s(1800), now).is_ok());
    assert_eq!(
        format!("{:?}", ApiKey::new(KEY).unwrap()),
        "ApiKey(<redacted>)"
    );
    assert!(!format!("{:?}", config()).contains(KEY));
}

/// Field-for-field (order aside) equality with the official client's lines.
mod official {
    use databento::live::protocol::{
        AuthRequest, Challenge, RawApiMsg, SessionOptions, StartRequest, SubRequest,
    };

    use super::*;

    fn official_key() -> databento::ApiKey {
        databento::ApiKey::new(KEY.to_owned()).unwrap()
    }

    #[test]
    fn auth_request_matches_the_official_client() {
        for (compression, ts_out, heartbeat, slow) in [
            (LiveCompression::None, false, None, None),
            (
                LiveCompression::Zstd,
                true,
                Some(10),
                Some(SlowReaderBehavior::Warn),
            ),
            (
                LiveCompression::None,
                true,
                Some(1800),
                Some(SlowReaderBehavior::Skip),
            ),
        ] {
            let mut ours = config().compression(compression).ts_out(ts_out);
            if let Some(h) = heartbeat {
                ours = ours.heartbeat_interval_s(h);
            }
            if let Some(s) = slow {
                ours = ours.slow_reader_behavior(s);
            }
            let ours = fields(&auth_line(ours));
            let challenge_line = format!("cram={CHALLENGE}");
            let challenge = Challenge::parse(&challenge_line).unwrap();
            let options = SessionOptions {
                compression: match compression {
                    LiveCompression::None => dbn::Compression::None,
                    LiveCompression::Zstd => dbn::Compression::Zstd,
                },
                send_ts_out: ts_out,
                heartbeat_interval_s: heartbeat.map(i64::from),
                user_agent_ext: None,
                slow_reader_behavior: slow.map(|s| match s {
                    SlowReaderBehavior::Warn => databento::live::SlowReaderBehavior::Warn,
                    SlowReaderBehavior::Skip => databento::live::SlowReaderBehavior::Skip,
                }),
            };
            let theirs = AuthRequest::new(&official_key(), "GLBX.MDP3", &challenge, options);
            let mut theirs = fields(theirs.as_str());
            // The user agent names each client; everything else must be equal.
            let (our_client, their_client) = (ours["client"].clone(), theirs["client"].clone());
            assert!(our_client.starts_with("dbn-pipe/") && their_client.starts_with("Databento/"));
            let mut ours = ours;
            ours.remove("client");
            theirs.remove("client");
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn subscription_lines_match_the_official_client() {
        let symbols: Vec<String> = (0..1001).map(|i| format!("S{i}")).collect();
        let ours = lines_after_auth(
            vec![
                Subscription::new(Schema::Mbp10, symbols.clone())
                    .stype_in(SType::InstrumentId)
                    .start(Start::Nanos(1_700_000_000_000_000_000))
                    .id(9),
                Subscription::new(Schema::Mbo, ["ESH1"])
                    .snapshot(true)
                    .id(10),
            ],
            true,
        );
        let mut theirs = Vec::new();
        let chunks: Vec<String> = symbols.chunks(500).map(|c| c.join(",")).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            theirs.push(
                SubRequest::new(
                    Schema::Mbp10,
                    SType::InstrumentId,
                    Some(1_700_000_000_000_000_000),
                    false,
                    Some(9),
                    chunk,
                    i == chunks.len() - 1,
                )
                .as_str()
                .to_owned(),
            );
        }
        theirs.push(
            SubRequest::new(
                Schema::Mbo,
                SType::RawSymbol,
                None,
                true,
                Some(10),
                "ESH1",
                true,
            )
            .as_str()
            .to_owned(),
        );
        theirs.push(StartRequest.as_str().to_owned());
        assert_eq!(ours.len(), theirs.len());
        for (ours, theirs) in ours.iter().zip(&theirs) {
            assert_eq!(fields(ours), fields(theirs), "{ours} vs {theirs}");
            assert_eq!(
                ours.trim_end(),
                theirs.trim_end_matches('\n').trim_end(),
                "byte-exact"
            );
        }
    }
}

/// A rejected key must reach the application before a reconnect can discard it: a
/// driver that reconnects on every close would otherwise retry a bad key forever.
#[test]
fn reconnect_waits_until_a_handshake_error_was_polled() {
    use dbn_pipe_protocol::live::ReconnectPolicy;
    let now = Instant::now();
    let mut session = LiveSession::new(config(), now).unwrap();
    session.handle_input(now, format!("lsg-test\ncram={CHALLENGE}\n").as_bytes());
    session.handle_input(now, b"success=0|error=Authentication failed.\n");
    session.handle_eof();
    let refused = session
        .reconnect(now, ReconnectPolicy::GapFill)
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Usage);
    let err = session.poll_event().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth);
    assert!(err.to_string().contains("Authentication failed."));
    session.reconnect(now, ReconnectPolicy::GapFill).unwrap();
    assert!(
        session.poll_event().unwrap().is_none(),
        "a fresh connection has no events"
    );
}
