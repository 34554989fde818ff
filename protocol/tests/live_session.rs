//! The live session driven end to end through an in-memory fake gateway.
//!
//! The fake gateway is written here, independently of the crate's own line handling:
//! it greets, sends a `cram=` challenge, checks the client's CRAM hash (SHA-256 of
//! `"<challenge>|<key>"` in lower-case hex, a dash, the key's last 5 characters),
//! answers `success=1|session_id=...` or a rejection, records every subscription line
//! it receives (parsed into fields), and after `start_session` sends a DBN stream
//! built with `dbn`'s encoders (metadata with `schema = None`, `stype_out =
//! instrument_id`, as a live gateway does), plain or zstd (one streaming encoder or a
//! frame per write), with `ts_out` when asked. It keeps a record history and honours
//! `start=<ns>` by replaying the records whose `ts_recv >= start`.
//!
//! A driver (`Harness`) moves bytes between the two with a chosen chunking, honours
//! backpressure (re-offers what `handle_input` did not take after draining events),
//! forwards `poll_transmit` to the gateway after every call, and records the events in
//! an owned form so whole sequences can be compared. Time is injected; nothing sleeps,
//! no socket or thread is used.
//!
//! Covered: the handshake in any split, rejections and protocol errors, subscription
//! lines as the gateway sees them, records byte-equal and exactly once in any chunking
//! (plain, zstd, `ts_out`), gateway notices, heartbeat and auth timeouts, clean and
//! truncated ends, both reconnect policies (with an exactly-once proof for gap
//! filling), bounded buffering, and property tests over chunkings and hostile input.

use std::collections::BTreeMap;
use std::ffi::c_char;
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dbn::Record as _;
use dbn::encode::EncodeRecord as _;
use dbn::encode::dbn::{Encoder, RecordEncoder};
use dbn::{
    ErrorCode, ErrorMsg, MboMsg, Metadata, MetadataBuilder, SType, Schema, SymbolMappingMsg,
    SystemCode, SystemMsg, WithTsOut, rtype,
};
use dbn_pipe_protocol::live::{
    ApiKey, Closed, GatewayNotice, LiveCompression, LiveConfig, LiveEvent, LiveSession,
    ReconnectPolicy, Start, Subscription,
};
use dbn_pipe_protocol::{Error, ErrorKind, TimerKind, TruncatedPart};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------
// Protocol facts
// ---------------------------------------------------------------------------------------

const KEY: &str = "db-0123456789abcdefghijklmnABCDE";
const DATASET: &str = "GLBX.MDP3";
/// Longest control line the session accepts by default (64 KiB).
const LINE_LIMIT: usize = 64 * 1024;
/// The session decoder's default record buffer (64 KiB).
const DECODER_BUFFER: usize = 64 * 1024;
/// Largest zstd block (128 KiB) plus frame header slack: what zstd may hold of input.
const ZSTD_SLACK: usize = 128 * 1024 + 1024;
/// The metadata size cap of the decoder (16 MiB).
const METADATA_CAP: usize = 16 * 1024 * 1024;
const MBO_LEN: usize = 56;
/// Nanoseconds around which the scripted market lives.
const T_BASE: u64 = 1_700_000_000_000_000_000;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn config() -> LiveConfig {
    LiveConfig::new(ApiKey::new(KEY).unwrap(), DATASET)
}

fn zstd_config() -> LiveConfig {
    config().compression(LiveCompression::Zstd)
}

/// The CRAM reply, computed here from the protocol description.
fn cram(challenge: &str, key: &str) -> String {
    let digest = Sha256::digest(format!("{challenge}|{key}").as_bytes());
    format!("{}-{}", hex::encode(digest), &key[key.len() - 5..])
}

fn fields(line: &str) -> BTreeMap<String, String> {
    line.split('|')
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Records the gateway sends
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum GwRecord {
    Mbo(MboMsg),
    System(SystemMsg),
    Error(ErrorMsg),
    Mapping(SymbolMappingMsg),
}

impl GwRecord {
    /// The index timestamp: `ts_recv` where the record has one, else `ts_event`.
    fn index_ts(&self) -> u64 {
        match self {
            Self::Mbo(r) => r.ts_recv,
            Self::System(r) => r.hd.ts_event,
            Self::Error(r) => r.hd.ts_event,
            Self::Mapping(r) => r.hd.ts_event,
        }
    }

    fn is_market_data(&self) -> bool {
        matches!(self, Self::Mbo(_))
    }

    /// The record as the gateway puts it on the wire (with `ts_out` when asked).
    fn encode(&self, ts_out: Option<u64>) -> Vec<u8> {
        fn enc<R>(rec: &R, ts_out: Option<u64>) -> Vec<u8>
        where
            R: dbn::encode::DbnEncodable
                + dbn::HasRType
                + dbn::RecordMut
                + dbn::Record<Header = dbn::RecordHeader>
                + Clone,
            WithTsOut<R>: dbn::encode::DbnEncodable,
        {
            let mut out = Vec::new();
            let mut encoder = RecordEncoder::new(&mut out);
            match ts_out {
                Some(ts) => encoder.encode_record(&WithTsOut::new(rec.clone(), ts)),
                None => encoder.encode_record(rec),
            }
            .expect("encode a record");
            out
        }
        match self {
            Self::Mbo(r) => enc(r, ts_out),
            Self::System(r) => enc(r, ts_out),
            Self::Error(r) => enc(r, ts_out),
            Self::Mapping(r) => enc(r, ts_out),
        }
    }

    /// What the session should report for it: `None` for a plain record.
    fn expected_notice(&self) -> Option<Notice> {
        match self {
            Self::System(m) => {
                let text = m.msg().unwrap().to_owned();
                Some(match m.code {
                    0 => Notice::Heartbeat,
                    1 => Notice::SubscriptionAck(text),
                    2 => Notice::SlowReaderWarning(text),
                    3 => Notice::ReplayCompleted(text),
                    4 => Notice::EndOfInterval(text),
                    code => Notice::System {
                        code: Some(code),
                        text,
                    },
                })
            }
            Self::Error(m) => Some(Notice::Error {
                code: m.code().ok(),
                raw_code: Some(m.code),
                text: m.err().unwrap().to_owned(),
                is_last: m.is_last != 0,
            }),
            Self::Mbo(_) | Self::Mapping(_) => None,
        }
    }
}

fn mbo(i: u64, ts_recv: u64) -> GwRecord {
    let mut r = MboMsg::default();
    r.hd.publisher_id = 1;
    r.hd.instrument_id = 5482 + (i % 3) as u32;
    r.hd.ts_event = ts_recv - 700;
    r.ts_recv = ts_recv;
    r.order_id = 647_784_973_705 + i;
    r.price = 3_722_750_000_000 + i as i64 * 250_000_000;
    r.size = 1 + (i % 40) as u32;
    r.action = b"ACMTF"[(i % 5) as usize] as c_char;
    r.side = b"AB"[(i % 2) as usize] as c_char;
    r.sequence = 1_170_352 + i as u32;
    GwRecord::Mbo(r)
}

fn mapping(instrument_id: u32, symbol: &str, ts: u64) -> GwRecord {
    GwRecord::Mapping(
        SymbolMappingMsg::new(
            instrument_id,
            ts,
            SType::RawSymbol,
            symbol,
            SType::InstrumentId,
            &instrument_id.to_string(),
            ts,
            ts + 86_400_000_000_000,
        )
        .unwrap(),
    )
}

fn system(code: SystemCode, text: &str, ts: u64) -> GwRecord {
    GwRecord::System(SystemMsg::new(ts, Some(code), text).unwrap())
}

fn error_msg(code: ErrorCode, text: &str, ts: u64) -> GwRecord {
    GwRecord::Error(ErrorMsg::new(ts, Some(code), text, true))
}

/// Symbol mappings, then `n` MBO records with increasing `ts_recv`, one more mapping
/// in the middle.
fn market(n: u64) -> Vec<GwRecord> {
    let mut recs = vec![
        mapping(5482, "ESH1", T_BASE),
        mapping(5483, "ESM1", T_BASE),
        mapping(5484, "ESU1", T_BASE),
    ];
    for i in 0..n {
        if i == n / 2 {
            recs.push(mapping(5485, "ESZ1", T_BASE + 1_000 * i));
        }
        recs.push(mbo(i, T_BASE + 1_000 * (i + 1)));
    }
    recs
}

// ---------------------------------------------------------------------------------------
// The fake gateway
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ZstdMode {
    /// One streaming encoder, flushed after every write.
    Stream,
    /// Every write is a complete zstd frame.
    FramePerWrite,
}

/// A subscription line as the gateway received it.
#[derive(Debug, Clone)]
struct SubLine {
    fields: BTreeMap<String, String>,
    after_start: bool,
}

/// A record the gateway sent on the current connection.
#[derive(Debug, Clone)]
struct Emitted {
    rec: GwRecord,
    bytes: Vec<u8>,
    /// Offset of the record in the (decompressed) DBN stream.
    dbn_offset: u64,
    /// Connection offset after the write that carried it.
    flushed_at: usize,
}

/// Per-connection state.
#[derive(Default)]
struct Conn {
    challenge: String,
    inbox: Vec<u8>,
    auth: Option<BTreeMap<String, String>>,
    authenticated: bool,
    subs: Vec<SubLine>,
    started: bool,
    unexpected: Vec<String>,
    ts_out: bool,
    compressed: bool,
    zstd: Option<zstd::stream::write::Encoder<'static, Vec<u8>>>,
    /// Everything sent to the client on this connection.
    out: Vec<u8>,
    /// End offsets of the writes in `out`.
    writes: Vec<usize>,
    /// Offset in `out` where the DBN stream starts.
    dbn_start: usize,
    dbn_len: u64,
    metadata: Option<Metadata>,
    emitted: Vec<Emitted>,
    closed: bool,
    session_id: String,
}

impl Conn {
    fn write(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.out.extend_from_slice(bytes);
            self.writes.push(self.out.len());
        }
    }
}

struct Gateway {
    /// The key the gateway holds for the client.
    key: String,
    greeting: String,
    /// Replaces the `cram=` line.
    challenge_line: Option<String>,
    /// Replaces the authentication response (newline included).
    reply: Option<String>,
    trailing_pipe: bool,
    zstd_mode: ZstdMode,
    /// Sends only its preset bytes and ignores the client.
    passive: bool,
    history: Vec<GwRecord>,
    /// Published as soon as a connection starts (after any replay).
    queued: Vec<GwRecord>,
    connections: u32,
    conn: Conn,
}

impl Gateway {
    fn new() -> Self {
        Self {
            key: KEY.to_owned(),
            greeting: "lsg_version=0.4.2".to_owned(),
            challenge_line: None,
            reply: None,
            trailing_pipe: false,
            zstd_mode: ZstdMode::Stream,
            passive: false,
            history: Vec::new(),
            queued: Vec::new(),
            connections: 0,
            conn: Conn::default(),
        }
    }

    /// A gateway that sends `bytes` whatever the client says.
    fn passive(bytes: Vec<u8>) -> Self {
        let mut gw = Self::new();
        gw.passive = true;
        gw.conn.write(&bytes);
        gw
    }

    /// A new connection: greeting and challenge, in two writes.
    fn connect(&mut self) {
        self.connections += 1;
        let challenge = format!("t7kNhwj4xqR0QYjzFKtBEG2ec2pXJ{:03}", self.connections);
        self.conn = Conn {
            session_id: format!("mock-{}", 2 + self.connections),
            challenge: challenge.clone(),
            ..Conn::default()
        };
        let greeting = format!("{}\n", self.greeting);
        self.conn.write(greeting.as_bytes());
        let challenge_line = match &self.challenge_line {
            Some(line) => format!("{line}\n"),
            None => format!("cram={challenge}\n"),
        };
        self.conn.write(challenge_line.as_bytes());
    }

    /// Bytes from the client.
    fn receive(&mut self, bytes: &[u8]) {
        if self.passive {
            return;
        }
        self.conn.inbox.extend_from_slice(bytes);
        while let Some(pos) = self.conn.inbox.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.conn.inbox.drain(..=pos).collect();
            let line = String::from_utf8(line[..line.len() - 1].to_vec()).expect("UTF-8 line");
            self.on_line(&line);
        }
    }

    fn on_line(&mut self, line: &str) {
        if self.conn.auth.is_none() {
            let f = fields(line);
            let ok = f.get("auth") == Some(&cram(&self.conn.challenge, &self.key))
                && f.get("dataset").is_some_and(|d| !d.is_empty())
                && f.get("encoding").map(String::as_str) == Some("dbn");
            self.conn.ts_out = f.get("ts_out").map(String::as_str) == Some("1");
            self.conn.compressed = f.get("compression").map(String::as_str) == Some("zstd");
            self.conn.auth = Some(f);
            let reply = match &self.reply {
                Some(reply) => reply.clone(),
                None if ok => format!(
                    "success=1|session_id={}{}\n",
                    self.conn.session_id,
                    if self.trailing_pipe { "|" } else { "" }
                ),
                None => "success=0|error=Authentication failed.\n".to_owned(),
            };
            self.conn.authenticated =
                fields(reply.trim_end()).get("success").map(String::as_str) == Some("1");
            self.conn.write(reply.as_bytes());
            return;
        }
        if !self.conn.authenticated {
            self.conn.unexpected.push(line.to_owned());
            return;
        }
        if line == "start_session" || line == "start_session=0" {
            if self.conn.started {
                self.conn.unexpected.push(line.to_owned());
            } else {
                self.start_streaming();
            }
            return;
        }
        let f = fields(line);
        if ["schema", "stype_in", "symbols", "is_last"]
            .iter()
            .all(|k| f.contains_key(*k))
        {
            let after_start = self.conn.started;
            self.conn.subs.push(SubLine {
                fields: f,
                after_start,
            });
        } else {
            self.conn.unexpected.push(line.to_owned());
        }
    }

    fn start_streaming(&mut self) {
        self.conn.started = true;
        self.conn.dbn_start = self.conn.out.len();
        let start = self
            .conn
            .subs
            .iter()
            .filter_map(|s| s.fields.get("start")?.parse::<u64>().ok())
            .min();
        let dataset = self.conn.auth.as_ref().unwrap()["dataset"].clone();
        let metadata = MetadataBuilder::new()
            .dataset(dataset)
            .schema(None)
            .start(start.unwrap_or(T_BASE))
            .stype_in(None)
            .stype_out(SType::InstrumentId)
            .ts_out(self.conn.ts_out)
            .version(3)
            .build();
        let mut bytes = Vec::new();
        Encoder::new(&mut bytes, &metadata).expect("encode metadata");
        self.conn.metadata = Some(metadata);
        self.emit_dbn(&bytes);
        if let Some(start) = start {
            let replay: Vec<GwRecord> = self
                .history
                .iter()
                .filter(|r| r.index_ts() >= start)
                .cloned()
                .collect();
            for rec in replay {
                self.send(&[rec]);
            }
        }
        for rec in std::mem::take(&mut self.queued) {
            self.publish(vec![rec]);
        }
    }

    /// Appends DBN bytes to the connection, compressed when asked.
    fn emit_dbn(&mut self, bytes: &[u8]) {
        let c = &mut self.conn;
        c.dbn_len += bytes.len() as u64;
        if !c.compressed {
            c.write(bytes);
            return;
        }
        match self.zstd_mode {
            ZstdMode::Stream => {
                let enc = c.zstd.get_or_insert_with(|| {
                    zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd encoder")
                });
                enc.write_all(bytes).unwrap();
                enc.flush().unwrap();
                let compressed = std::mem::take(enc.get_mut());
                c.write(&compressed);
            }
            ZstdMode::FramePerWrite => {
                let frame = zstd::bulk::compress(bytes, 3).unwrap();
                c.write(&frame);
            }
        }
    }

    /// Sends records in one write (no history).
    fn send(&mut self, recs: &[GwRecord]) {
        let mut bytes = Vec::new();
        let first = self.conn.emitted.len();
        for rec in recs {
            let ts_out = self.conn.ts_out.then(|| rec.index_ts() + 12_345);
            let enc = rec.encode(ts_out);
            self.conn.emitted.push(Emitted {
                rec: rec.clone(),
                bytes: enc.clone(),
                dbn_offset: self.conn.dbn_len + bytes.len() as u64,
                flushed_at: 0,
            });
            bytes.extend_from_slice(&enc);
        }
        self.emit_dbn(&bytes);
        let end = self.conn.out.len();
        for e in &mut self.conn.emitted[first..] {
            e.flushed_at = end;
        }
    }

    /// New records: kept in the history and sent (in one write) when streaming.
    fn publish(&mut self, recs: Vec<GwRecord>) {
        if self.conn.started && !self.conn.closed {
            self.history.extend(recs.iter().cloned());
            self.send(&recs);
        } else {
            // Not streaming: queued records came first; all of it is history now.
            self.history.append(&mut self.queued);
            self.history.extend(recs);
        }
    }

    /// New records, each in its own write.
    fn publish_each(&mut self, recs: Vec<GwRecord>) {
        for rec in recs {
            self.publish(vec![rec]);
        }
    }

    /// Records to publish once the next connection starts (or now if streaming).
    fn queue(&mut self, recs: Vec<GwRecord>) {
        if self.conn.started && !self.conn.closed {
            self.publish_each(recs);
        } else {
            self.queued.extend(recs);
        }
    }

    /// Ends the stream cleanly (finishes the zstd frame) before the connection closes.
    fn close(&mut self) {
        if let Some(enc) = self.conn.zstd.take() {
            let rest = enc.finish().unwrap();
            self.conn.write(&rest);
        }
        self.conn.closed = true;
    }

    /// A connection offset strictly inside the bytes that carry emitted record `k`.
    fn inside_record(&self, k: usize) -> usize {
        let e = &self.conn.emitted[k];
        if self.conn.compressed {
            let before = if k == 0 {
                self.conn.writes[self
                    .conn
                    .writes
                    .iter()
                    .position(|&w| w == e.flushed_at)
                    .unwrap()
                    - 1]
            } else {
                self.conn.emitted[k - 1].flushed_at
            };
            assert!(e.flushed_at - before >= 2, "record {k} shares its write");
            before + (e.flushed_at - before) / 2
        } else {
            self.conn.dbn_start + e.dbn_offset as usize + e.bytes.len() / 2
        }
    }

    /// The connection offset right after emitted record `k` (plain streams).
    fn after_record(&self, k: usize) -> usize {
        let e = &self.conn.emitted[k];
        if self.conn.compressed {
            e.flushed_at
        } else {
            self.conn.dbn_start + e.dbn_offset as usize + e.bytes.len()
        }
    }

    /// The events a session must produce for this connection's DBN stream.
    fn expected_stream_events(&self) -> Vec<Ev> {
        let mut evs = vec![Ev::Metadata(Box::new(self.conn.metadata.clone().unwrap()))];
        evs.extend(
            self.conn
                .emitted
                .iter()
                .map(|e| match e.rec.expected_notice() {
                    Some(notice) => Ev::Gateway(e.bytes.clone(), notice),
                    None => Ev::Record(e.bytes.clone()),
                }),
        );
        evs
    }

    fn sub_lines(&self) -> Vec<BTreeMap<String, String>> {
        self.conn.subs.iter().map(|s| s.fields.clone()).collect()
    }
}

// ---------------------------------------------------------------------------------------
// Owned events
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Notice {
    Heartbeat,
    SubscriptionAck(String),
    SlowReaderWarning(String),
    ReplayCompleted(String),
    EndOfInterval(String),
    System {
        code: Option<u8>,
        text: String,
    },
    Error {
        code: Option<ErrorCode>,
        raw_code: Option<u8>,
        text: String,
        is_last: bool,
    },
}

impl From<GatewayNotice<'_>> for Notice {
    fn from(notice: GatewayNotice<'_>) -> Self {
        match notice {
            GatewayNotice::Heartbeat => Self::Heartbeat,
            GatewayNotice::SubscriptionAck(t) => Self::SubscriptionAck(t.to_owned()),
            GatewayNotice::SlowReaderWarning(t) => Self::SlowReaderWarning(t.to_owned()),
            GatewayNotice::ReplayCompleted(t) => Self::ReplayCompleted(t.to_owned()),
            GatewayNotice::EndOfInterval(t) => Self::EndOfInterval(t.to_owned()),
            GatewayNotice::System { code, text } => Self::System {
                code,
                text: text.to_owned(),
            },
            GatewayNotice::Error {
                code,
                raw_code,
                text,
                is_last,
            } => Self::Error {
                code,
                raw_code,
                text: text.to_owned(),
                is_last,
            },
            other => Self::System {
                code: None,
                text: format!("unknown notice {other:?}"),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Authenticated(String),
    Reconnected(ReconnectPolicy, Option<u64>),
    Metadata(Box<Metadata>),
    Record(Vec<u8>),
    Gateway(Vec<u8>, Notice),
    Closed(Closed),
    Error(Error),
}

// ---------------------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------------------

/// How the gateway's bytes are cut into inputs.
#[derive(Debug, Clone)]
enum Chunks {
    /// Everything pending in one input.
    Whole,
    /// One input per gateway write.
    Writes,
    /// These sizes, cycled.
    Sizes(Vec<usize>, usize),
}

impl Chunks {
    fn sizes(sizes: &[usize]) -> Self {
        assert!(sizes.iter().all(|&s| s > 0));
        Self::Sizes(sizes.to_vec(), 0)
    }

    /// Seeded random sizes in `1..=max`.
    fn random(seed: u64, max: usize) -> Self {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let sizes = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                1 + (x % max as u64) as usize
            })
            .collect::<Vec<_>>();
        Self::Sizes(sizes, 0)
    }

    fn next(&mut self, fed: usize, pending: usize, writes: &[usize]) -> usize {
        match self {
            Self::Whole => pending,
            Self::Writes => writes
                .iter()
                .find(|&&end| end > fed)
                .map_or(pending, |&end| end - fed),
            Self::Sizes(sizes, i) => {
                let size = sizes[*i % sizes.len()];
                *i += 1;
                size
            }
        }
    }
}

struct Harness {
    session: LiveSession,
    gw: Gateway,
    t0: Instant,
    now: Instant,
    chunks: Chunks,
    /// Bytes of the current connection's output taken by the session.
    fed: usize,
    events: Vec<Ev>,
    /// `poll_event` returned an error (it is sticky; not polled again).
    failed: bool,
    taken_since_event: usize,
    max_taken_since_event: usize,
    /// Takes records one at a time with `record_ready` + `poll_record` whenever one is
    /// ready (as the drivers' `next_record` does), `poll_event` otherwise.
    one_by_one: bool,
}

impl Harness {
    fn new(config: LiveConfig, gw: Gateway, chunks: Chunks) -> Self {
        let t0 = Instant::now();
        Self {
            session: LiveSession::new(config, t0).expect("valid config"),
            gw,
            t0,
            now: t0,
            chunks,
            fed: 0,
            events: Vec::new(),
            failed: false,
            taken_since_event: 0,
            max_taken_since_event: 0,
            one_by_one: false,
        }
    }

    /// A session subscribed to MBO for ESH1 (replay from 0) and started.
    fn started(config: LiveConfig, gw: Gateway, chunks: Chunks) -> Self {
        let mut h = Self::new(config, gw, chunks);
        h.session
            .subscribe(Subscription::new(Schema::Mbo, ["ESH1"]).start(Start::Nanos(0)))
            .unwrap();
        h.session.start(h.now).unwrap();
        h.connect();
        h
    }

    /// Opens a gateway connection and runs the conversation as far as it goes.
    fn connect(&mut self) {
        self.gw.connect();
        self.fed = 0;
        self.run();
    }

    fn run(&mut self) {
        self.run_until(usize::MAX);
    }

    /// Feeds the gateway's output up to connection offset `limit`, reacting to
    /// everything the session transmits.
    fn run_until(&mut self, limit: usize) {
        loop {
            self.transmit();
            self.drain();
            let avail = self.gw.conn.out.len().min(limit);
            if self.fed >= avail {
                return;
            }
            let pending = avail - self.fed;
            let size = self
                .chunks
                .next(self.fed, pending, &self.gw.conn.writes)
                .clamp(1, pending);
            let chunk = self.gw.conn.out[self.fed..self.fed + size].to_vec();
            let mut off = 0;
            while off < chunk.len() {
                let n = self.session.handle_input(self.now, &chunk[off..]);
                assert!(n <= chunk.len() - off, "took more than offered");
                off += n;
                self.fed += n;
                self.taken_since_event += n;
                self.max_taken_since_event = self.max_taken_since_event.max(self.taken_since_event);
                self.transmit();
                let events = self.drain();
                if n == 0 && events == 0 {
                    assert!(
                        self.session.is_ended() || self.failed,
                        "stalled: input refused with no event to drain at offset {}",
                        self.fed
                    );
                    return;
                }
            }
        }
    }

    /// Feeds up to `limit` without polling events (bytes arrive, nobody reads).
    fn feed_unpolled(&mut self, limit: usize) -> usize {
        let end = self.gw.conn.out.len().min(limit);
        let n = self
            .session
            .handle_input(self.now, &self.gw.conn.out[self.fed..end]);
        self.fed += n;
        n
    }

    fn eof(&mut self) {
        // The connection is gone for the gateway too.
        self.gw.conn.closed = true;
        self.session.handle_eof();
        self.transmit();
        self.drain();
    }

    fn transmit(&mut self) {
        let mut out = Vec::new();
        let n = self.session.poll_transmit(&mut out);
        assert_eq!(n, out.len());
        assert!(!self.session.wants_transmit());
        if !out.is_empty() {
            self.gw.receive(&out);
        }
    }

    /// Polls every event; returns how many.
    fn drain(&mut self) -> usize {
        if self.failed {
            return 0;
        }
        let mut count = 0;
        let mut idle_batches = 0;
        loop {
            if self.one_by_one && self.session.record_ready() {
                let rec = self
                    .session
                    .poll_record()
                    .expect("record_ready promised a record");
                let bytes: &[u8] = rec.as_ref();
                assert_eq!(bytes.len(), rec.record_size());
                assert!(
                    !matches!(bytes[1], rtype::SYSTEM | rtype::ERROR),
                    "notices come as their own events"
                );
                self.events.push(Ev::Record(bytes.to_vec()));
                count += 1;
                continue;
            }
            let event = match self.session.poll_event() {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(err) => {
                    self.events.push(Ev::Error(err));
                    self.failed = true;
                    count += 1;
                    break;
                }
            };
            count += 1;
            match event {
                LiveEvent::Authenticated { session_id } => {
                    self.events.push(Ev::Authenticated(session_id.to_owned()));
                }
                LiveEvent::Reconnected { policy, gap_from } => {
                    self.events.push(Ev::Reconnected(policy, gap_from));
                }
                LiveEvent::Metadata(metadata) => self.events.push(Ev::Metadata(metadata)),
                LiveEvent::Records(batch) => {
                    let before = self.events.len();
                    for rec in batch {
                        let bytes: &[u8] = rec.as_ref();
                        assert_eq!(bytes.len(), rec.record_size());
                        self.events.push(Ev::Record(bytes.to_vec()));
                    }
                    if self.events.len() == before {
                        idle_batches += 1;
                        assert!(idle_batches < 1_000_000, "endless empty batches");
                    }
                }
                LiveEvent::Gateway { record, notice } => {
                    let bytes: &[u8] = record.as_ref();
                    self.events.push(Ev::Gateway(bytes.to_vec(), notice.into()));
                }
                LiveEvent::Closed(closed) => self.events.push(Ev::Closed(closed)),
            }
        }
        if count > 0 {
            self.taken_since_event = 0;
        }
        count
    }

    /// Record bytes delivered (plain records, not notices), in order.
    fn records(&self) -> Vec<Vec<u8>> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Ev::Record(b) => Some(b.clone()),
                _ => None,
            })
            .collect()
    }

    /// Delivered MBO records.
    fn mbo_records(&self) -> Vec<Vec<u8>> {
        self.records()
            .into_iter()
            .filter(|b| b[1] == rtype::MBO)
            .collect()
    }

    fn take_events(&mut self) -> Vec<Ev> {
        std::mem::take(&mut self.events)
    }

    fn last_error(&self) -> &Error {
        match self.events.last() {
            Some(Ev::Error(err)) => err,
            other => panic!("expected an error last, got {other:?}"),
        }
    }

    /// Reconnects the session and opens a new gateway connection.
    fn reconnect(&mut self, policy: ReconnectPolicy) {
        self.session.reconnect(self.now, policy).expect("reconnect");
        self.failed = false;
        self.connect();
    }
}

fn mbo_bytes(recs: &[GwRecord]) -> Vec<Vec<u8>> {
    recs.iter()
        .filter(|r| r.is_market_data())
        .map(|r| r.encode(None))
        .collect()
}

fn authenticated_then(h: &Harness, stream: Vec<Ev>) -> Vec<Ev> {
    let mut evs = vec![Ev::Authenticated(h.gw.conn.session_id.clone())];
    evs.extend(stream);
    evs
}

// ---------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------

#[test]
fn greeting_and_challenge_in_separate_inputs_or_in_one() {
    for chunks in [
        Chunks::Writes,
        Chunks::Whole,
        Chunks::sizes(&[1]),
        Chunks::sizes(&[3, 1, 4, 1, 5, 9, 2, 6]),
    ] {
        let mut h = Harness::new(config(), Gateway::new(), chunks.clone());
        h.session
            .subscribe(Subscription::new(Schema::Mbo, ["ESH1"]))
            .unwrap();
        h.session.start(h.now).unwrap();
        h.gw.connect();
        let writes = h.gw.conn.writes.clone();
        assert_eq!(writes.len(), 2, "greeting and challenge are two writes");
        if matches!(chunks, Chunks::Writes) {
            h.run_until(writes[0]);
            assert!(h.gw.conn.auth.is_none(), "no reply to the greeting alone");
            assert!(h.events.is_empty());
        }
        h.run();
        let auth = h.gw.conn.auth.clone().expect("auth request");
        assert_eq!(auth["auth"], cram(&h.gw.conn.challenge, KEY), "{chunks:?}");
        assert_eq!(auth["dataset"], DATASET);
        assert_eq!(auth["encoding"], "dbn");
        assert_eq!(auth["compression"], "none");
        assert_eq!(auth["ts_out"], "0");
        assert!(auth["client"].starts_with("dbn-pipe/"));
        assert!(h.gw.conn.authenticated && h.gw.conn.started);
        assert!(
            h.gw.conn.unexpected.is_empty(),
            "{:?}",
            h.gw.conn.unexpected
        );
        let expected = authenticated_then(&h, h.gw.expected_stream_events());
        assert_eq!(h.events, expected, "{chunks:?}");
        assert_eq!(h.events[0], Ev::Authenticated("mock-3".to_owned()));
        assert_eq!(h.session.session_id(), Some("mock-3"));
        assert!(h.session.is_authenticated() && !h.session.is_ended());
    }
}

#[test]
fn an_auth_response_split_across_inputs_with_a_trailing_pipe() {
    let mut gw = Gateway::new();
    gw.trailing_pipe = true;
    let mut h = Harness::new(config(), gw, Chunks::Whole);
    h.session
        .subscribe(Subscription::new(Schema::Trades, ["ESH1"]))
        .unwrap();
    h.session.start(h.now).unwrap();
    h.gw.connect();
    let challenge_end = h.gw.conn.out.len();
    h.run_until(challenge_end);
    let reply_end = h.gw.conn.out.len();
    assert_eq!(
        &h.gw.conn.out[challenge_end..],
        b"success=1|session_id=mock-3|\n"
    );
    // One byte at a time: nothing happens before the newline.
    for end in challenge_end + 1..reply_end {
        h.run_until(end);
        assert!(h.events.is_empty(), "event before the line was complete");
        assert!(h.gw.conn.subs.is_empty() && !h.gw.conn.started);
    }
    h.run_until(reply_end);
    assert_eq!(h.events, [Ev::Authenticated("mock-3".to_owned())]);
    assert_eq!(h.gw.conn.subs.len(), 1);
    assert!(h.gw.conn.started);
    h.run();
    assert_eq!(h.events.len(), 2, "then the metadata: {:?}", h.events);
}

#[test]
fn success_responses_in_every_accepted_form() {
    for (reply, session_id) in [
        ("success=1|session_id=mock-3\n", "mock-3"),
        ("success=1|session_id=mock-3|\n", "mock-3"),
        ("session_id=abc:42|success=1\n", "abc:42"),
        ("success=1|session_id=5\r\n", "5"),
        ("success=1|lsg_version=0.4.2|session_id=x-y_z|\n", "x-y_z"),
    ] {
        let mut gw = Gateway::new();
        gw.reply = Some(reply.to_owned());
        let h = Harness::started(config(), gw, Chunks::sizes(&[2]));
        assert_eq!(
            h.events[0],
            Ev::Authenticated(session_id.to_owned()),
            "{reply:?}"
        );
        assert!(
            matches!(h.events[1], Ev::Metadata(_)),
            "{reply:?}: {:?}",
            h.events
        );
        assert_eq!(h.session.session_id(), Some(session_id));
    }
}

#[test]
fn a_rejected_key_is_an_auth_error_with_the_gateways_text() {
    let mut gw = Gateway::new();
    gw.key = "db-ZZZZZZZZZZZZZZZZZZZZZZZZZABCDE".to_owned(); // not the client's key
    let mut h = Harness::new(config(), gw, Chunks::Writes);
    h.session
        .subscribe(Subscription::new(Schema::Mbo, ["ESH1"]))
        .unwrap();
    h.session.start(h.now).unwrap();
    h.connect();
    assert!(!h.gw.conn.authenticated, "the gateway rejected the hash");
    assert_eq!(h.events.len(), 1, "{:?}", h.events);
    let err = h.last_error().clone();
    assert_eq!(err.kind(), ErrorKind::Auth);
    match &err {
        Error::AuthRejected { message } => assert!(message.contains("Authentication failed.")),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("Authentication failed."));
    // Nothing more was sent: no subscription, no start_session.
    assert!(h.gw.conn.subs.is_empty() && !h.gw.conn.started);
    assert!(h.gw.conn.unexpected.is_empty());
    // Sticky, and the connection is over.
    assert_eq!(h.session.poll_event().unwrap_err(), err);
    assert!(h.session.is_ended() && !h.session.is_authenticated());
    assert_eq!(h.session.session_id(), None);
    assert_eq!(h.session.handle_input(h.now, b"more"), 0);
    assert_eq!(h.session.poll_timeout(), None);
}

#[test]
fn rejections_and_responses_without_success() {
    for (reply, message) in [
        (
            "success=0|error=Authentication failed.\n",
            "Authentication failed.",
        ),
        ("success=0|error=Unknown dataset\n", "Unknown dataset"),
        ("success=0\n", "success=0"),
        ("hello=world|session_id=1\n", "hello=world|session_id=1"),
        ("garbage\n", "garbage"),
        ("success=true|session_id=1\n", "success=true|session_id=1"),
    ] {
        let mut gw = Gateway::new();
        gw.reply = Some(reply.to_owned());
        let h = Harness::started(config(), gw, Chunks::Whole);
        assert_eq!(h.events.len(), 1, "{reply:?}: {:?}", h.events);
        assert_eq!(
            h.last_error(),
            &Error::AuthRejected {
                message: message.to_owned()
            },
            "{reply:?}"
        );
        assert_eq!(h.last_error().kind(), ErrorKind::Auth);
        assert!(!h.gw.conn.started);
    }
}

#[test]
fn a_greeting_not_followed_by_a_challenge_is_a_protocol_error() {
    for line in ["lsg_version=0.4.2", "success=1|session_id=1", "", "cram"] {
        let mut gw = Gateway::new();
        gw.challenge_line = Some(line.to_owned());
        let h = Harness::started(config(), gw, Chunks::Whole);
        assert_eq!(h.events.len(), 1, "{line:?}: {:?}", h.events);
        let err = h.last_error();
        assert_eq!(err.kind(), ErrorKind::Protocol, "{line:?}");
        match err {
            Error::UnexpectedLine { line: got, .. } => assert_eq!(got, line),
            other => panic!("{other:?}"),
        }
        assert!(h.gw.conn.auth.is_none(), "no auth request was sent");
    }
}

#[test]
fn a_line_over_64_kib_is_refused_without_buffering_it_all() {
    // Exactly the limit is fine.
    let mut gw = Gateway::new();
    gw.greeting = "g".repeat(LINE_LIMIT);
    let h = Harness::started(config(), gw, Chunks::sizes(&[4096]));
    assert_eq!(h.events[0], Ev::Authenticated("mock-3".to_owned()));

    // One more byte is not, whether or not the newline came.
    for (chunk, newline) in [(4096, true), (LINE_LIMIT + 10, true), (1000, false)] {
        let mut gw = Gateway::new();
        gw.greeting = "g".repeat(LINE_LIMIT + 1);
        if !newline {
            gw.greeting = "g".repeat(LINE_LIMIT * 4);
        }
        let h = Harness::started(config(), gw, Chunks::sizes(&[chunk]));
        assert_eq!(
            h.last_error(),
            &Error::LineTooLong {
                offset: 0,
                limit: LINE_LIMIT
            }
        );
        assert!(
            h.fed <= LINE_LIMIT,
            "took {} bytes of an endless line",
            h.fed
        );
        assert!(h.gw.conn.auth.is_none());
    }

    // In the auth response, the offset names the line's start.
    let mut gw = Gateway::new();
    gw.reply = Some(format!("success=1|session_id={}\n", "s".repeat(LINE_LIMIT)));
    let h = Harness::started(config(), gw, Chunks::sizes(&[777]));
    let reply_start = h.gw.conn.writes[1];
    assert_eq!(
        h.last_error(),
        &Error::LineTooLong {
            offset: reply_start as u64,
            limit: LINE_LIMIT
        }
    );
    assert_eq!(h.last_error().kind(), ErrorKind::Protocol);
}

#[test]
fn eof_during_the_handshake_is_a_closed_error() {
    let mut full = Gateway::new();
    full.connect();
    let greeting_end = full.conn.writes[0];
    let challenge_end = full.conn.writes[1];
    // Cut points: nothing, mid greeting, after greeting, mid challenge, after the
    // challenge, mid reply.
    for cut in [
        0,
        5,
        greeting_end,
        greeting_end + 3,
        challenge_end,
        challenge_end + 4,
    ] {
        let mut h = Harness::new(config(), Gateway::new(), Chunks::sizes(&[3]));
        h.session.start(h.now).unwrap();
        h.gw.connect();
        h.run_until(cut);
        assert!(h.events.is_empty());
        h.eof();
        assert_eq!(
            h.events,
            [Ev::Error(Error::ClosedDuringHandshake {
                received: cut as u64
            })],
            "cut at {cut}"
        );
        assert_eq!(h.last_error().kind(), ErrorKind::Closed);
        assert!(h.session.is_ended());
    }
}

// ---------------------------------------------------------------------------------------
// Subscriptions
// ---------------------------------------------------------------------------------------

#[test]
fn subscriptions_as_the_gateway_sees_them() {
    let symbols: Vec<String> = (0..1001).map(|i| format!("SYM{i}")).collect();
    let mut h = Harness::new(config(), Gateway::new(), Chunks::sizes(&[5]));
    let big = h
        .session
        .subscribe(Subscription::new(Schema::Trades, symbols.clone()))
        .unwrap();
    let snap = h
        .session
        .subscribe(Subscription::new(Schema::Mbo, ["ESM4", "NQM4"]).snapshot(true))
        .unwrap();
    let replay = h
        .session
        .subscribe(Subscription::new(Schema::Mbp1, ["ESH1"]).start(Start::Nanos(0)))
        .unwrap();
    h.connect();
    // Authenticated, not started: the queued subscriptions went out, no start yet.
    assert_eq!(h.events, [Ev::Authenticated("mock-3".to_owned())]);
    assert!(!h.gw.conn.started);
    let subs = h.gw.sub_lines();
    assert_eq!(subs.len(), 5);
    let is_last: Vec<&str> = subs.iter().map(|s| s["is_last"].as_str()).collect();
    assert_eq!(is_last, ["0", "0", "1", "1", "1"]);
    let mut got: Vec<String> = Vec::new();
    for sub in &subs[..3] {
        assert_eq!(sub["schema"], "trades");
        assert_eq!(sub["stype_in"], "raw_symbol");
        assert_eq!(sub["id"], big.to_string());
        assert!(!sub.contains_key("start"));
        got.extend(sub["symbols"].split(',').map(str::to_owned));
    }
    assert_eq!(got, symbols, "every symbol once, in order");
    assert_eq!(subs[3]["snapshot"], "1");
    assert_eq!(subs[3]["symbols"], "ESM4,NQM4");
    assert_eq!(subs[3]["id"], snap.to_string());
    assert!(!subs[3].contains_key("start"), "a snapshot has no start");
    assert_eq!(subs[4]["start"], "0");
    assert_eq!(subs[4]["snapshot"], "0");
    assert_eq!(subs[4]["id"], replay.to_string());
    assert_eq!(
        [big, snap, replay]
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        3,
        "distinct ids"
    );

    // Subscribed while authenticated: sent at once.
    let now_sent = h
        .session
        .subscribe(Subscription::new(Schema::Ohlcv1S, ["SPY"]))
        .unwrap();
    h.run();
    assert_eq!(h.gw.conn.subs.len(), 6);
    assert_eq!(h.gw.conn.subs[5].fields["id"], now_sent.to_string());
    assert!(!h.gw.conn.subs[5].after_start);

    // Then start, then one more after start: it goes out without start.
    h.session.start(h.now).unwrap();
    h.run();
    assert!(h.gw.conn.started);
    assert!(h.gw.conn.subs.iter().all(|s| !s.after_start));
    h.session
        .subscribe(Subscription::new(Schema::Trades, ["NQH1"]))
        .unwrap();
    let err = h
        .session
        .subscribe(Subscription::new(Schema::Trades, ["NQH1"]).start(0u64))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage);
    h.run();
    let last = h.gw.conn.subs.last().unwrap();
    assert!(last.after_start);
    assert_eq!(last.fields["symbols"], "NQH1");
    assert!(!last.fields.contains_key("start"));
    assert_eq!(h.gw.conn.subs.len(), 7, "the refused one was not sent");
    assert!(
        h.gw.conn.unexpected.is_empty(),
        "{:?}",
        h.gw.conn.unexpected
    );
}

// ---------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------

fn chunkings() -> Vec<Chunks> {
    vec![
        Chunks::sizes(&[1]),
        Chunks::sizes(&[7]),
        Chunks::random(1, 100),
        Chunks::random(2, 3000),
        Chunks::random(3, 17),
        Chunks::Writes,
        Chunks::Whole,
    ]
}

/// A session of `recs` through a gateway in `mode`, closed cleanly.
fn whole_session(
    config: LiveConfig,
    mode: ZstdMode,
    recs: &[GwRecord],
    each: bool,
    chunks: Chunks,
) -> Harness {
    whole_session_taken(config, mode, recs, each, chunks, false)
}

/// [`whole_session`], taking records one by one when `one_by_one`.
fn whole_session_taken(
    config: LiveConfig,
    mode: ZstdMode,
    recs: &[GwRecord],
    each: bool,
    chunks: Chunks,
    one_by_one: bool,
) -> Harness {
    let mut gw = Gateway::new();
    gw.zstd_mode = mode;
    let mut h = Harness::new(config, gw, chunks);
    h.one_by_one = one_by_one;
    h.session
        .subscribe(Subscription::new(Schema::Mbo, ["ESH1"]).start(Start::Nanos(0)))
        .unwrap();
    h.session.start(h.now).unwrap();
    h.connect();
    if each {
        h.gw.publish_each(recs.to_vec());
    } else {
        for part in recs.chunks(97) {
            h.gw.publish(part.to_vec());
        }
    }
    h.gw.close();
    h.run();
    h.eof();
    h
}

#[test]
fn records_arrive_byte_equal_in_order_once_in_any_chunking() {
    let recs = market(1000);
    for (config, mode) in [
        (config(), ZstdMode::Stream),
        (zstd_config(), ZstdMode::Stream),
        (zstd_config(), ZstdMode::FramePerWrite),
    ] {
        for chunks in chunkings() {
            let h = whole_session(config.clone(), mode, &recs, false, chunks.clone());
            let label = format!("zstd={} {mode:?} {chunks:?}", h.gw.conn.compressed);
            assert_eq!(
                h.gw.conn.compressed,
                h.gw.conn.auth.as_ref().unwrap()["compression"] == "zstd"
            );
            let mut expected = authenticated_then(&h, h.gw.expected_stream_events());
            expected.push(Ev::Closed(Closed {
                bytes_received: h.gw.conn.out.len() as u64,
                truncated: None,
            }));
            assert_eq!(h.events.len(), expected.len(), "{label}");
            assert!(h.events == expected, "{label}: event sequences differ");
            // Independently of the gateway's bookkeeping: the history, byte for byte.
            let want: Vec<Vec<u8>> = recs.iter().map(|r| r.encode(None)).collect();
            assert_eq!(h.records(), want, "{label}");
            match &h.events[1] {
                Ev::Metadata(m) => {
                    assert_eq!(m.dataset, DATASET);
                    assert_eq!(m.schema, None);
                    assert_eq!(m.stype_out, SType::InstrumentId);
                    assert!(!m.ts_out);
                }
                other => panic!("{other:?}"),
            }
        }
    }
}

#[test]
fn ts_out_records_carry_the_send_time_in_their_length() {
    let recs = market(50);
    for (config, mode) in [
        (config().ts_out(true), ZstdMode::Stream),
        (zstd_config().ts_out(true), ZstdMode::FramePerWrite),
    ] {
        for chunks in [Chunks::sizes(&[1]), Chunks::random(9, 200), Chunks::Whole] {
            let h = whole_session(config.clone(), mode, &recs, true, chunks);
            assert_eq!(h.gw.conn.auth.as_ref().unwrap()["ts_out"], "1");
            match &h.events[1] {
                Ev::Metadata(m) => assert!(m.ts_out),
                other => panic!("{other:?}"),
            }
            let got = h.records();
            assert_eq!(got.len(), recs.len());
            for (bytes, rec) in got.iter().zip(&recs) {
                let plain = rec.encode(None);
                assert_eq!(bytes.len(), plain.len() + 8);
                assert_eq!(
                    usize::from(bytes[0]) * 4,
                    bytes.len(),
                    "length counts ts_out"
                );
                assert_eq!(&bytes[1..], &rec.encode(Some(rec.index_ts() + 12_345))[1..]);
                assert_eq!(&bytes[16..plain.len()], &plain[16..]);
                let ts_out = u64::from_le_bytes(bytes[plain.len()..].try_into().unwrap());
                assert_eq!(ts_out, rec.index_ts() + 12_345);
            }
            assert!(matches!(h.events.last(), Some(Ev::Closed(c)) if c.is_clean()));
        }
    }
}

#[test]
fn gateway_notices_come_as_their_own_events_in_order() {
    let t = T_BASE + 5_000;
    let recs = vec![
        mbo(0, t),
        system(SystemCode::Heartbeat, "Heartbeat", t + 1),
        mbo(1, t + 2),
        system(
            SystemCode::SubscriptionAck,
            "Subscription request 1 for mbo data succeeded",
            t + 3,
        ),
        system(
            SystemCode::SlowReaderWarning,
            "Warning: slow reading, 5 MiB buffered",
            t + 4,
        ),
        mbo(2, t + 5),
        mbo(3, t + 5),
        system(SystemCode::ReplayCompleted, "Finished mbo replay", t + 6),
        system(
            SystemCode::EndOfInterval,
            "End of interval for ohlcv-1s",
            t + 7,
        ),
        error_msg(
            ErrorCode::SymbolResolutionFailed,
            "Failed to resolve symbol: XYZ",
            t + 8,
        ),
        mbo(4, t + 9),
        error_msg(
            ErrorCode::SkippedRecordsAfterSlowReading,
            "Skipped 1024 records",
            t + 10,
        ),
        GwRecord::System(SystemMsg::new(t + 11, None, "a message with no code").unwrap()),
        mbo(5, t + 12),
        mapping(5490, "NQH1", t + 13),
        system(SystemCode::Heartbeat, "Heartbeat", t + 14),
    ];
    let notices: Vec<Notice> = vec![
        Notice::Heartbeat,
        Notice::SubscriptionAck("Subscription request 1 for mbo data succeeded".into()),
        Notice::SlowReaderWarning("Warning: slow reading, 5 MiB buffered".into()),
        Notice::ReplayCompleted("Finished mbo replay".into()),
        Notice::EndOfInterval("End of interval for ohlcv-1s".into()),
        Notice::Error {
            code: Some(ErrorCode::SymbolResolutionFailed),
            raw_code: Some(4),
            text: "Failed to resolve symbol: XYZ".into(),
            is_last: true,
        },
        Notice::Error {
            code: Some(ErrorCode::SkippedRecordsAfterSlowReading),
            raw_code: Some(7),
            text: "Skipped 1024 records".into(),
            is_last: true,
        },
        Notice::System {
            code: Some(255),
            text: "a message with no code".into(),
        },
        Notice::Heartbeat,
    ];
    for (config, mode) in [
        (config(), ZstdMode::Stream),
        (zstd_config(), ZstdMode::Stream),
        (config().ts_out(true), ZstdMode::Stream),
    ] {
        for chunks in [Chunks::sizes(&[1]), Chunks::random(4, 300), Chunks::Whole] {
            let h = whole_session(config.clone(), mode, &recs, false, chunks.clone());
            // The exact sequence: records and notices interleaved as sent.
            let mut expected = authenticated_then(&h, h.gw.expected_stream_events());
            expected.push(Ev::Closed(Closed {
                bytes_received: h.gw.conn.out.len() as u64,
                truncated: None,
            }));
            assert_eq!(h.events, expected, "{chunks:?}");
            // And the notices are the ones the protocol defines, in order.
            let got: Vec<Notice> = h
                .events
                .iter()
                .filter_map(|e| match e {
                    Ev::Gateway(_, n) => Some(n.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(got, notices);
            let kinds: String = h.events[2..h.events.len() - 1]
                .iter()
                .map(|e| match e {
                    Ev::Record(_) => 'r',
                    Ev::Gateway(..) => 'n',
                    _ => '?',
                })
                .collect();
            assert_eq!(kinds, "rnrnnrrnnnrnnrrn");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------

#[test]
fn heartbeat_timeout_fires_after_the_records_already_received() {
    // (heartbeat interval, silence timeout, the timeout in force), in seconds.
    let cases = [
        (None, None, 35),
        (Some(10), None, 15),
        (Some(1800), None, 1805),
        (Some(10), Some(3), 3),
        (None, Some(1), 1),
    ];
    for (interval, silence, timeout) in cases {
        let mut cfg = config();
        if let Some(s) = interval {
            cfg = cfg.heartbeat_interval_s(s);
        }
        if let Some(s) = silence {
            cfg = cfg.silence_timeout(secs(s));
        }
        let mut h = Harness::new(cfg, Gateway::new(), Chunks::Whole);
        h.session
            .subscribe(Subscription::new(Schema::Mbo, ["ESH1"]))
            .unwrap();
        h.session.start(h.now).unwrap();
        h.now = h.t0 + secs(2);
        h.connect();
        let timeout = secs(timeout);
        assert_eq!(
            h.gw.conn.auth.as_ref().unwrap().get("heartbeat_interval_s"),
            interval.map(|s| s.to_string()).as_ref()
        );
        assert_eq!(h.session.poll_timeout(), Some(h.now + timeout));

        // Records (and heartbeats) are input: the deadline moves.
        h.now = h.t0 + secs(9);
        h.gw.publish(vec![
            mbo(0, T_BASE + 1),
            system(SystemCode::Heartbeat, "Heartbeat", T_BASE + 2),
        ]);
        h.run();
        let deadline = h.now + timeout;
        assert_eq!(h.session.poll_timeout(), Some(deadline));
        h.session.handle_timeout(deadline - Duration::from_nanos(1));
        assert_eq!(h.drain(), 0, "nothing before the deadline");
        assert_eq!(h.session.poll_timeout(), Some(deadline));
        assert!(!h.session.is_ended());

        // Three records and part of a fourth arrive; nobody polls; the deadline passes.
        h.gw.publish(vec![
            mbo(1, T_BASE + 3),
            mbo(2, T_BASE + 4),
            mbo(3, T_BASE + 5),
        ]);
        h.gw.publish(vec![mbo(4, T_BASE + 6)]);
        let before = h.events.len();
        h.now = h.t0 + secs(30);
        let part = h.gw.inside_record(h.gw.conn.emitted.len() - 1);
        let fed_from = h.fed;
        assert_eq!(h.feed_unpolled(part), part - fed_from);
        let deadline = h.now + timeout;
        assert_eq!(h.session.poll_timeout(), Some(deadline));
        h.session.handle_timeout(deadline);
        assert_eq!(h.session.poll_timeout(), None);
        h.drain();
        let emitted = &h.gw.conn.emitted;
        let n = emitted.len();
        let mut expected: Vec<Ev> = emitted[n - 4..n - 1]
            .iter()
            .map(|e| Ev::Record(e.bytes.clone()))
            .collect();
        expected.push(Ev::Error(Error::Timeout {
            timer: TimerKind::Heartbeat,
            after: timeout,
        }));
        assert_eq!(h.events[before..], expected[..]);
        assert_eq!(h.last_error().kind(), ErrorKind::Timeout);
        assert!(h.session.is_ended());
        assert_eq!(h.session.handle_input(h.now, b"late"), 0);
        assert_eq!(
            h.session.poll_event().unwrap_err(),
            expected[3].clone().into_error()
        );
    }
}

impl Ev {
    fn into_error(self) -> Error {
        match self {
            Ev::Error(err) => err,
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_timeout_stays_the_verdict_when_eof_follows() {
    // The driver gives up after the heartbeat deadline and reports EOF before polling:
    // the records still come, then the timeout, never a clean close.
    for cut_inside in [false, true] {
        let mut h = Harness::started(config(), Gateway::new(), Chunks::Whole);
        h.gw.publish(vec![
            mbo(0, T_BASE + 1),
            mbo(1, T_BASE + 2),
            mbo(2, T_BASE + 3),
        ]);
        let end = if cut_inside {
            h.gw.inside_record(2)
        } else {
            h.gw.after_record(2)
        };
        h.feed_unpolled(end);
        h.now += secs(35);
        h.session.handle_timeout(h.now);
        h.session.handle_eof();
        h.drain();
        let timeout = Ev::Error(Error::Timeout {
            timer: TimerKind::Heartbeat,
            after: secs(35),
        });
        let mut expected = vec![
            Ev::Authenticated("mock-3".to_owned()),
            Ev::Metadata(Box::new(h.gw.conn.metadata.clone().unwrap())),
            Ev::Record(h.gw.conn.emitted[0].bytes.clone()),
            Ev::Record(h.gw.conn.emitted[1].bytes.clone()),
        ];
        if !cut_inside {
            expected.push(Ev::Record(h.gw.conn.emitted[2].bytes.clone()));
        }
        expected.push(timeout);
        assert_eq!(
            h.events, expected,
            "cut inside the last record: {cut_inside}"
        );
    }
}

#[test]
fn no_heartbeat_deadline_before_start_or_after_eof() {
    let mut h = Harness::new(config(), Gateway::new(), Chunks::Whole);
    h.connect();
    assert_eq!(h.events, [Ev::Authenticated("mock-3".to_owned())]);
    assert_eq!(h.session.poll_timeout(), None, "authenticated, not started");
    h.session.handle_timeout(h.t0 + secs(100_000));
    assert_eq!(h.drain(), 0);
    h.now = h.t0 + secs(50);
    h.session.start(h.now).unwrap();
    h.run();
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now + secs(35)),
        "armed at start"
    );
    h.gw.close();
    h.run();
    h.eof();
    assert_eq!(h.session.poll_timeout(), None);
    h.session.handle_timeout(h.now + secs(1000));
    assert_eq!(h.drain(), 0);
    assert!(matches!(h.events.last(), Some(Ev::Closed(c)) if c.is_clean()));
}

#[test]
fn auth_timeout_during_the_handshake() {
    for (cfg, timeout) in [
        (config(), secs(30)),
        (config().auth_timeout(secs(3)), secs(3)),
    ] {
        // Stuck after the greeting and challenge (the reply never comes).
        let mut gw = Gateway::new();
        gw.reply = Some(String::new());
        let mut h = Harness::new(cfg.clone(), gw, Chunks::Writes);
        h.session.start(h.now).unwrap();
        assert_eq!(h.session.poll_timeout(), Some(h.t0 + timeout));
        h.now = h.t0 + secs(1);
        h.connect();
        assert!(h.gw.conn.auth.is_some());
        assert_eq!(
            h.session.poll_timeout(),
            Some(h.t0 + timeout),
            "input does not extend it"
        );
        h.session
            .handle_timeout(h.t0 + timeout - Duration::from_nanos(1));
        assert_eq!(h.drain(), 0);
        h.session.handle_timeout(h.t0 + timeout);
        h.drain();
        assert_eq!(
            h.events,
            [Ev::Error(Error::Timeout {
                timer: TimerKind::Auth,
                after: timeout
            })]
        );
        assert_eq!(h.last_error().kind(), ErrorKind::Timeout);
        assert_eq!(h.session.poll_timeout(), None);

        // Authenticated in time: the auth deadline no longer applies.
        let mut h = Harness::new(cfg, Gateway::new(), Chunks::Whole);
        h.now = h.t0 + timeout - Duration::from_millis(1);
        h.connect();
        assert_eq!(h.session.poll_timeout(), None);
        h.session.handle_timeout(h.t0 + timeout * 10);
        assert_eq!(h.drain(), 0);
        assert_eq!(h.events, [Ev::Authenticated("mock-3".to_owned())]);
    }
}

// ---------------------------------------------------------------------------------------
// End of stream
// ---------------------------------------------------------------------------------------

#[test]
fn a_clean_eof_closes_with_every_byte_counted() {
    for (cfg, mode) in [
        (config(), ZstdMode::Stream),
        (zstd_config(), ZstdMode::Stream),
        (zstd_config(), ZstdMode::FramePerWrite),
    ] {
        let h = whole_session(cfg, mode, &market(20), true, Chunks::random(5, 64));
        let closed = match h.events.last() {
            Some(Ev::Closed(c)) => c.clone(),
            other => panic!("{other:?}"),
        };
        assert!(closed.is_clean());
        assert_eq!(closed.bytes_received, h.gw.conn.out.len() as u64);
        assert_eq!(h.session.bytes_received(), h.gw.conn.out.len() as u64);
        assert_eq!(h.records(), mbo_and_mappings(&market(20)));
        assert!(h.session.is_ended());
        // Nothing after Closed.
        let mut session = h.session;
        assert!(matches!(session.poll_event(), Ok(None)));
    }
}

fn mbo_and_mappings(recs: &[GwRecord]) -> Vec<Vec<u8>> {
    recs.iter().map(|r| r.encode(None)).collect()
}

#[test]
fn eof_inside_a_record_is_a_truncated_close_after_the_records_before() {
    let recs = market(30);
    for k in [0, 1, 17, recs.len() - 1] {
        let mut h = Harness::started(config(), Gateway::new(), Chunks::sizes(&[13]));
        h.gw.publish(recs.clone());
        let cut = h.gw.inside_record(k);
        h.run_until(cut);
        h.eof();
        let e = &h.gw.conn.emitted[k];
        let have = cut - (h.gw.conn.dbn_start + e.dbn_offset as usize);
        let mut expected = authenticated_then(&h, h.gw.expected_stream_events());
        expected.truncate(2 + k);
        expected.push(Ev::Closed(Closed {
            bytes_received: cut as u64,
            truncated: Some(Error::Truncated {
                part: TruncatedPart::Record,
                offset: e.dbn_offset,
                have,
                need: Some(e.bytes.len()),
            }),
        }));
        assert_eq!(h.events, expected, "cut inside record {k}");
        assert!(!matches!(h.events.last(), Some(Ev::Closed(c)) if c.is_clean()));
        assert!(h.session.is_ended());
        assert!(matches!(h.session.poll_event(), Ok(None)));
    }
}

#[test]
fn eof_inside_the_metadata_or_before_it() {
    let mut probe = Harness::started(config(), Gateway::new(), Chunks::Whole);
    let dbn_start = probe.gw.conn.dbn_start;
    let dbn_end = probe.gw.conn.out.len();
    probe.eof();
    for (cut, part) in [
        // The gateway closed right after start_session: not a clean stream either.
        (dbn_start, TruncatedPart::Prelude),
        (dbn_start + 3, TruncatedPart::Prelude),
        (dbn_start + 20, TruncatedPart::Metadata),
        (dbn_end - 1, TruncatedPart::Metadata),
    ] {
        let mut h = Harness::new(config(), Gateway::new(), Chunks::sizes(&[4]));
        h.session.start(h.now).unwrap();
        h.gw.connect();
        h.run_until(cut);
        h.eof();
        assert_eq!(h.events.len(), 2, "{:?}", h.events);
        match &h.events[1] {
            Ev::Closed(Closed {
                bytes_received,
                truncated: Some(Error::Truncated { part: got, .. }),
            }) => {
                assert_eq!(*got, part, "cut at {cut}");
                assert_eq!(*bytes_received, cut as u64);
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn eof_inside_a_zstd_frame_is_a_truncated_close_after_the_records_before() {
    let recs = market(30);
    for mode in [ZstdMode::Stream, ZstdMode::FramePerWrite] {
        for k in [0, 9, recs.len() - 1] {
            let mut gw = Gateway::new();
            gw.zstd_mode = mode;
            let mut h = Harness::started(zstd_config(), gw, Chunks::random(k as u64, 9));
            h.gw.publish_each(recs.clone());
            let cut = h.gw.inside_record(k);
            h.run_until(cut);
            h.eof();
            let mut expected = authenticated_then(&h, h.gw.expected_stream_events());
            expected.truncate(2 + k);
            assert_eq!(
                h.events[..expected.len()],
                expected[..],
                "{mode:?} cut in {k}"
            );
            assert_eq!(h.events.len(), expected.len() + 1, "{:?}", h.events.last());
            match h.events.last() {
                Some(Ev::Closed(Closed {
                    bytes_received,
                    truncated: Some(err @ Error::Truncated { part, .. }),
                })) => {
                    assert_eq!(*part, TruncatedPart::ZstdFrame, "{mode:?} {k}: {err}");
                    assert_eq!(*bytes_received, cut as u64);
                }
                other => panic!("{mode:?} {k}: {other:?}"),
            }
        }
    }
    // A stream flushed on a record boundary but whose frame never ended.
    let mut h = Harness::started(zstd_config(), Gateway::new(), Chunks::Whole);
    h.gw.publish(recs.clone());
    h.run();
    h.eof();
    assert_eq!(h.records(), mbo_and_mappings(&recs));
    assert!(matches!(
        h.events.last(),
        Some(Ev::Closed(Closed {
            truncated: Some(Error::Truncated {
                part: TruncatedPart::ZstdFrame,
                ..
            }),
            ..
        }))
    ));
}

// ---------------------------------------------------------------------------------------
// Reconnect
// ---------------------------------------------------------------------------------------

#[test]
fn reconnect_with_resubscribe_loses_the_gap_and_says_from_when() {
    for (cfg, mode) in [
        (config(), ZstdMode::Stream),
        (zstd_config(), ZstdMode::FramePerWrite),
    ] {
        let mut gw = Gateway::new();
        gw.zstd_mode = mode;
        let mut h = Harness::new(cfg, gw, Chunks::random(11, 40));
        h.session
            .subscribe(Subscription::new(Schema::Mbo, ["ESH1"]).start(Start::Nanos(0)))
            .unwrap();
        h.session
            .subscribe(Subscription::new(Schema::Mbo, ["ESM1"]).snapshot(true))
            .unwrap();
        h.session.start(h.now).unwrap();
        h.connect();
        let first: Vec<GwRecord> = (0..20).map(|i| mbo(i, T_BASE + 100 * (i + 1))).collect();
        h.gw.publish_each(first.clone());
        // Disconnect inside record 12: records 0..=11 delivered.
        let cut = h.gw.inside_record(12);
        h.run_until(cut);
        h.eof();
        assert!(matches!(h.events.last(), Some(Ev::Closed(c)) if !c.is_clean()));
        assert_eq!(h.mbo_records(), mbo_bytes(&first[..12]));
        let last_ts = first[11].index_ts();
        // While disconnected.
        h.gw.publish((20..25).map(|i| mbo(i, T_BASE + 100 * (i + 1))).collect());
        h.take_events();

        h.now += secs(1);
        h.reconnect(ReconnectPolicy::Resubscribe);
        // Subscriptions again, none with start; start_session without asking.
        let subs = h.gw.sub_lines();
        assert_eq!(subs.len(), 2);
        assert!(subs.iter().all(|s| !s.contains_key("start")), "{subs:?}");
        assert_eq!(subs[0]["symbols"], "ESH1");
        assert_eq!(subs[1]["snapshot"], "1");
        assert!(h.gw.conn.started);
        let later: Vec<GwRecord> = (25..30).map(|i| mbo(i, T_BASE + 100 * (i + 1))).collect();
        h.gw.publish_each(later.clone());
        h.gw.close();
        h.run();
        h.eof();
        let mut expected = vec![
            Ev::Authenticated("mock-4".to_owned()),
            Ev::Reconnected(ReconnectPolicy::Resubscribe, Some(last_ts)),
        ];
        expected.extend(h.gw.expected_stream_events());
        expected.push(Ev::Closed(Closed {
            bytes_received: h.gw.conn.out.len() as u64,
            truncated: None,
        }));
        assert_eq!(h.events, expected);
        assert_eq!(
            h.mbo_records(),
            mbo_bytes(&later),
            "the gap is lost, nothing repeated"
        );
    }
}

#[test]
fn reconnect_with_gap_fill_across_a_burst_delivers_every_record_once() {
    for (cfg, mode, split) in [
        (config(), ZstdMode::Stream, true),
        (config(), ZstdMode::Stream, false),
        (zstd_config(), ZstdMode::Stream, true),
        (zstd_config(), ZstdMode::FramePerWrite, true),
        (config().ts_out(true), ZstdMode::Stream, true),
    ] {
        let t = T_BASE + 10_000;
        let mut history: Vec<GwRecord> = (0..3).map(|i| mbo(i, T_BASE + i + 1)).collect();
        history.extend((3..13).map(|i| mbo(i, t))); // a burst sharing one ts_recv
        let mut gw = Gateway::new();
        gw.zstd_mode = mode;
        let mut h = Harness::new(cfg, gw, Chunks::random(7, 30));
        h.session
            .subscribe(Subscription::new(Schema::Mbo, ["ESH1"]).start(Start::Nanos(0)))
            .unwrap();
        h.session
            .subscribe(Subscription::new(Schema::Mbo, ["ESM1"]).snapshot(true))
            .unwrap();
        h.session.start(h.now).unwrap();
        h.connect();
        h.gw.publish_each(history.clone());
        // The 4th record of the burst delivered; some of the 5th in flight (or not).
        let k = 3 + 3;
        let cut = if split {
            h.gw.inside_record(k)
        } else {
            h.gw.after_record(k - 1)
        };
        h.run_until(cut);
        h.eof();
        assert!(matches!(h.events.last(), Some(Ev::Closed(c)) if c.is_clean() != split));
        let mut delivered = h.mbo_records();
        assert_eq!(delivered.len(), k);
        let strip = |b: &Vec<u8>| -> Vec<u8> {
            // Compare without ts_out (it is the send time of each connection).
            let mut b = b.clone();
            if b.len() == MBO_LEN + 8 {
                b.truncate(MBO_LEN);
                b[0] = (MBO_LEN / 4) as u8;
            }
            b
        };
        h.take_events();

        // More records while disconnected, also at the burst's timestamp.
        let gap: Vec<GwRecord> = vec![mbo(13, t), mbo(14, t + 1), mbo(15, t + 2)];
        h.gw.publish(gap.clone());
        history.extend(gap);

        h.now += secs(3);
        h.reconnect(ReconnectPolicy::GapFill);
        let subs = h.gw.sub_lines();
        assert_eq!(
            subs[0]["start"],
            t.to_string(),
            "start at the last delivered ts_recv"
        );
        assert!(
            !subs[1].contains_key("start"),
            "a snapshot never has a start"
        );
        assert!(h.gw.conn.started, "start_session re-sent after re-auth");
        let live: Vec<GwRecord> = vec![mbo(16, t + 3), mbo(17, t + 3)];
        h.gw.publish(live.clone());
        history.extend(live);
        h.gw.close();
        h.run();
        h.eof();
        assert_eq!(
            h.events[..2],
            [
                Ev::Authenticated("mock-4".to_owned()),
                Ev::Reconnected(ReconnectPolicy::GapFill, None),
            ]
        );
        assert!(matches!(h.events.last(), Some(Ev::Closed(c)) if c.is_clean()));
        delivered.extend(h.mbo_records());
        let delivered: Vec<Vec<u8>> = delivered.iter().map(strip).collect();
        assert_eq!(delivered, mbo_bytes(&history), "exactly once, in order");
    }
}

#[test]
fn reconnect_is_refused_until_the_connection_is_drained() {
    let mut h = Harness::started(config(), Gateway::new(), Chunks::Whole);
    h.gw.publish(market(5));
    // Streaming.
    let err = h
        .session
        .reconnect(h.now, ReconnectPolicy::GapFill)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage);
    // Bytes received, EOF, not yet polled.
    let end = h.gw.conn.out.len();
    h.feed_unpolled(end);
    h.session.handle_eof();
    for policy in [ReconnectPolicy::GapFill, ReconnectPolicy::Resubscribe] {
        assert_eq!(
            h.session.reconnect(h.now, policy).unwrap_err().kind(),
            ErrorKind::Usage
        );
    }
    h.drain();
    assert_eq!(
        h.records(),
        mbo_and_mappings(&market(5)),
        "nothing lost by the refusal"
    );
    assert!(matches!(h.events.last(), Some(Ev::Closed(_))));
    h.session
        .reconnect(h.now, ReconnectPolicy::Resubscribe)
        .unwrap();

    // During the handshake of the new connection: refused too.
    h.failed = false;
    h.gw.connect();
    h.fed = 0;
    h.run_until(h.gw.conn.writes[0]);
    assert_eq!(
        h.session
            .reconnect(h.now, ReconnectPolicy::Resubscribe)
            .unwrap_err()
            .kind(),
        ErrorKind::Usage
    );
}

#[test]
fn reconnect_is_refused_while_the_old_connection_has_an_event_pending() {
    // Authenticated, not started, then EOF: the old connection's `Closed` is pending.
    let mut h = Harness::new(config(), Gateway::new(), Chunks::Whole);
    h.session
        .subscribe(Subscription::new(Schema::Trades, ["ESH1"]))
        .unwrap();
    h.gw.connect();
    let end = h.gw.conn.writes[1];
    h.feed_unpolled(end);
    h.transmit();
    let end = h.gw.conn.out.len();
    h.feed_unpolled(end);
    h.session.handle_eof();
    let err = h
        .session
        .reconnect(h.now, ReconnectPolicy::Resubscribe)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage);
    h.drain();
    assert_eq!(
        h.events,
        [
            Ev::Authenticated("mock-3".to_owned()),
            Ev::Closed(Closed {
                bytes_received: end as u64,
                truncated: None
            })
        ]
    );
    h.take_events();
    h.reconnect(ReconnectPolicy::Resubscribe);
    assert_eq!(
        h.events,
        [
            Ev::Authenticated("mock-4".to_owned()),
            Ev::Reconnected(ReconnectPolicy::Resubscribe, None)
        ],
        "nothing of the old connection after reconnect"
    );
}

#[test]
fn reconnect_without_start_does_not_start_and_keeps_every_subscription() {
    let mut h = Harness::new(config(), Gateway::new(), Chunks::Whole);
    h.session
        .subscribe(Subscription::new(Schema::Trades, ["ESH1", "NQH1"]).id(7))
        .unwrap();
    h.connect();
    h.eof();
    assert_eq!(
        h.events,
        [
            Ev::Authenticated("mock-3".to_owned()),
            Ev::Closed(Closed {
                bytes_received: h.gw.conn.out.len() as u64,
                truncated: None
            })
        ]
    );
    h.take_events();
    h.reconnect(ReconnectPolicy::GapFill);
    assert!(!h.gw.conn.started);
    let subs = h.gw.sub_lines();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0]["symbols"], "ESH1,NQH1");
    assert_eq!(subs[0]["id"], "7");
    assert!(
        !subs[0].contains_key("start"),
        "nothing delivered: no replay point"
    );
    assert_eq!(
        h.events,
        [
            Ev::Authenticated("mock-4".to_owned()),
            Ev::Reconnected(ReconnectPolicy::GapFill, None)
        ]
    );
}

#[test]
fn reconnect_after_a_failed_connection() {
    // Heartbeat timeout, then reconnect: the error is gone, the new session streams.
    let mut h = Harness::started(config(), Gateway::new(), Chunks::Whole);
    h.gw.publish(vec![mbo(0, T_BASE + 1), mbo(1, T_BASE + 2)]);
    h.run();
    h.now += secs(36);
    h.session.handle_timeout(h.now);
    h.drain();
    assert_eq!(h.last_error().kind(), ErrorKind::Timeout);
    h.take_events();
    h.reconnect(ReconnectPolicy::GapFill);
    assert_eq!(h.gw.sub_lines()[0]["start"], (T_BASE + 2).to_string());
    h.gw.publish(vec![mbo(2, T_BASE + 3)]);
    h.gw.close();
    h.run();
    h.eof();
    assert_eq!(h.mbo_records(), mbo_bytes(&[mbo(2, T_BASE + 3)]));
    assert!(matches!(h.events.last(), Some(Ev::Closed(c)) if c.is_clean()));
}

// ---------------------------------------------------------------------------------------
// Bounded buffering
// ---------------------------------------------------------------------------------------

#[test]
fn a_reader_that_stops_polling_stops_the_input() {
    for (cfg, mode) in [
        (config(), ZstdMode::Stream),
        (zstd_config(), ZstdMode::Stream),
    ] {
        let mut gw = Gateway::new();
        gw.zstd_mode = mode;
        let mut h = Harness::started(cfg, gw, Chunks::Whole);
        let recs: Vec<GwRecord> = (0..40_000).map(|i| mbo(i, T_BASE + i + 1)).collect();
        for part in recs.chunks(4000) {
            h.gw.publish(part.to_vec());
        }
        h.gw.close();
        let total = h.gw.conn.out.len();
        let start = h.fed;
        let mut taken = 0;
        loop {
            let n = h.feed_unpolled(total);
            taken += n;
            if n == 0 {
                break;
            }
        }
        let bound = if h.gw.conn.compressed {
            DECODER_BUFFER + ZSTD_SLACK
        } else {
            DECODER_BUFFER
        };
        assert!(
            taken <= bound,
            "took {taken} bytes without a poll (bound {bound})"
        );
        assert!(start + taken < total, "backpressure must hold some back");
        h.run();
        h.eof();
        assert_eq!(h.mbo_records(), mbo_bytes(&recs));
        assert!(matches!(h.events.last(), Some(Ev::Closed(c)) if c.is_clean()));
    }
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

/// A small scripted session: mappings, MBO records, notices, published in several
/// writes, closed cleanly.
fn scripted_records() -> Vec<GwRecord> {
    let mut recs = market(40);
    recs.insert(
        10,
        system(SystemCode::Heartbeat, "Heartbeat", T_BASE + 9_500),
    );
    recs.insert(
        20,
        error_msg(
            ErrorCode::SymbolResolutionFailed,
            "Failed to resolve XYZ",
            T_BASE + 19_500,
        ),
    );
    recs.push(system(SystemCode::ReplayCompleted, "done", T_BASE + 90_000));
    recs
}

fn compression_case(i: u8) -> (LiveConfig, ZstdMode) {
    match i % 4 {
        0 => (config(), ZstdMode::Stream),
        1 => (zstd_config(), ZstdMode::Stream),
        2 => (zstd_config(), ZstdMode::FramePerWrite),
        _ => (
            config().ts_out(true).heartbeat_interval_s(5),
            ZstdMode::Stream,
        ),
    }
}

/// The gateway's whole output for a scripted session, plain and zstd.
fn valid_session_bytes(zstd: bool) -> &'static [u8] {
    static PLAIN: OnceLock<Vec<u8>> = OnceLock::new();
    static ZSTD: OnceLock<Vec<u8>> = OnceLock::new();
    let cell = if zstd { &ZSTD } else { &PLAIN };
    cell.get_or_init(|| {
        let cfg = if zstd { zstd_config() } else { config() };
        let h = whole_session(
            cfg,
            ZstdMode::Stream,
            &scripted_records(),
            false,
            Chunks::Whole,
        );
        assert!(matches!(h.events.last(), Some(Ev::Closed(c)) if c.is_clean()));
        h.gw.conn.out.clone()
    })
}

/// Feeds fixed gateway bytes in the given chunks, then EOF; checks the invariants
/// that hold for any input.
fn feed_hostile(bytes: Vec<u8>, sizes: &[usize], zstd: bool, start: bool) -> Vec<Ev> {
    let len = bytes.len();
    let cfg = if zstd { zstd_config() } else { config() };
    let mut h = Harness::new(cfg, Gateway::passive(bytes), Chunks::sizes(sizes));
    h.session
        .subscribe(Subscription::new(Schema::Mbo, ["ESH1"]))
        .unwrap();
    if start {
        h.session.start(h.now).unwrap();
    }
    h.run();
    assert!(h.fed <= len);
    h.now += secs(1);
    h.eof();
    // Always a verdict, last.
    let terminal = h
        .events
        .iter()
        .filter(|e| matches!(e, Ev::Closed(_) | Ev::Error(_)))
        .count();
    assert_eq!(terminal, 1, "exactly one verdict: {:?}", h.events.last());
    assert!(
        matches!(h.events.last(), Some(Ev::Closed(_) | Ev::Error(_))),
        "{:?}",
        h.events.last()
    );
    if let Some(Ev::Closed(c)) = h.events.last() {
        assert_eq!(c.bytes_received, h.fed as u64);
    }
    // Nothing is buffered beyond the documented limits without an event.
    let bound = 3 * (LINE_LIMIT + 1) + METADATA_CAP + DECODER_BUFFER + ZSTD_SLACK;
    assert!(h.max_taken_since_event <= bound);
    // After the verdict: quiet.
    assert_eq!(h.session.poll_timeout(), None);
    h.session.handle_timeout(h.now + secs(100_000));
    assert_eq!(h.session.handle_input(h.now, b"x"), 0);
    h.events
}

fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(proptest_config(48))]

    /// Any chunking of the gateway's bytes gives the same events as one input each,
    /// with records taken in batches or one by one (`record_ready` + `poll_record`).
    #[test]
    fn any_chunking_gives_the_same_events(
        case in 0u8..4,
        sizes in vec(1usize..400, 1..40),
        each in any::<bool>(),
        one_by_one in any::<bool>(),
    ) {
        let (cfg, mode) = compression_case(case);
        let recs = scripted_records();
        let whole = whole_session(cfg.clone(), mode, &recs, each, Chunks::Whole);
        let split =
            whole_session_taken(cfg, mode, &recs, each, Chunks::Sizes(sizes, 0), one_by_one);
        prop_assert_eq!(&whole.gw.conn.out, &split.gw.conn.out);
        prop_assert_eq!(whole.events.len(), split.events.len());
        prop_assert!(whole.events == split.events, "event sequences differ");
        prop_assert!(matches!(split.events.last(), Some(Ev::Closed(c)) if c.is_clean()));
    }

    /// Random bytes from a "gateway", in random chunks: no panic, a verdict, bounded.
    #[test]
    fn random_gateway_bytes_never_panic(
        bytes in vec(any::<u8>(), 0..3000),
        sizes in vec(1usize..300, 1..20),
        zstd in any::<bool>(),
        start in any::<bool>(),
    ) {
        feed_hostile(bytes, &sizes, zstd, start);
    }

    /// A valid handshake followed by random bytes (reaches the DBN decoder).
    #[test]
    fn random_stream_after_a_valid_handshake_never_panics(
        tail in vec(any::<u8>(), 0..3000),
        prefix_dbn in any::<bool>(),
        sizes in vec(1usize..300, 1..20),
        zstd in any::<bool>(),
    ) {
        let mut bytes = b"lsg_version=0.4.2\ncram=abc\nsuccess=1|session_id=1\n".to_vec();
        if prefix_dbn {
            let base = valid_session_bytes(zstd);
            // After greeting, challenge and auth response.
            let dbn_at = base
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .nth(2)
                .map_or(0, |(p, _)| p + 1);
            // The real prelude and metadata (and maybe more), then garbage.
            bytes.extend_from_slice(&base[dbn_at..(dbn_at + 120).min(base.len())]);
        }
        bytes.extend(tail);
        feed_hostile(bytes, &sizes, zstd, true);
    }

    /// A valid session's bytes with random mutations and a random truncation.
    #[test]
    fn mutated_sessions_never_panic(
        zstd in any::<bool>(),
        edits in vec((any::<Index>(), any::<u8>(), 0u8..3), 0..6),
        truncate in proptest::option::of(any::<Index>()),
        sizes in vec(1usize..500, 1..20),
    ) {
        let mut bytes = valid_session_bytes(zstd).to_vec();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => { bytes.remove(i); }
            }
        }
        if let Some(at) = truncate {
            bytes.truncate(at.index(bytes.len() + 1));
        }
        feed_hostile(bytes, &sizes, zstd, true);
    }
}

proptest! {
    #![proptest_config(proptest_config(128))]

    /// Gap filling across any number of disconnects at any byte gives every record
    /// exactly once, in order.
    #[test]
    fn gap_fill_delivers_every_record_exactly_once(
        bursts in vec(1usize..6, 3..12),
        cuts in vec(0usize..900, 1..4),
        case in 0u8..3,
        chunk in 1usize..120,
        one_by_one in any::<bool>(),
    ) {
        let (cfg, mode) = compression_case(case);
        let mut history = Vec::new();
        let mut i = 0;
        for (g, &n) in bursts.iter().enumerate() {
            for _ in 0..n {
                history.push(mbo(i, T_BASE + 1_000 * g as u64));
                i += 1;
            }
        }
        let segments: Vec<Vec<GwRecord>> = history
            .chunks(history.len().div_ceil(2 * cuts.len() + 1))
            .map(<[GwRecord]>::to_vec)
            .collect();
        let mut segments = segments.into_iter();
        let mut gw = Gateway::new();
        gw.zstd_mode = mode;
        let mut h = Harness::new(cfg, gw, Chunks::sizes(&[chunk]));
        h.one_by_one = one_by_one;
        h.session
            .subscribe(Subscription::new(Schema::Mbo, ["ESH1"]).start(Start::Nanos(0)))
            .unwrap();
        h.session.start(h.now).unwrap();
        let mut delivered = Vec::new();
        for (round, &cut) in cuts.iter().enumerate() {
            h.gw.queue(segments.next().unwrap_or_default());
            if round == 0 {
                h.gw.connect();
                h.fed = 0;
            } else {
                h.session.reconnect(h.now, ReconnectPolicy::GapFill).unwrap();
                h.failed = false;
                h.gw.connect();
                h.fed = 0;
            }
            h.run_until(cut);
            h.eof();
            prop_assert!(matches!(h.events.last(), Some(Ev::Closed(_) | Ev::Error(_))));
            delivered.extend(h.mbo_records());
            h.take_events();
            // Published while disconnected.
            let gap = segments.next().unwrap_or_default();
            h.gw.publish(gap);
        }
        h.session.reconnect(h.now, ReconnectPolicy::GapFill).unwrap();
        h.failed = false;
        h.gw.queue(segments.flatten().collect());
        h.gw.connect();
        h.fed = 0;
        h.run();
        h.gw.close();
        h.run();
        h.eof();
        prop_assert!(matches!(h.events.last(), Some(Ev::Closed(c)) if c.is_clean()), "{:?}", h.events.last());
        delivered.extend(h.mbo_records());
        let delivered: Vec<Vec<u8>> = delivered
            .into_iter()
            .map(|mut b| {
                if b.len() == MBO_LEN + 8 {
                    b.truncate(MBO_LEN);
                    b[0] = (MBO_LEN / 4) as u8;
                }
                b
            })
            .collect();
        prop_assert_eq!(delivered.len(), history.len());
        prop_assert!(delivered == mbo_bytes(&history), "not exactly once, in order");
    }
}
