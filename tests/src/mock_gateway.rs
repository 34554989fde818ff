//! A scripted mock of the Databento live gateway (PROTOCOL.md §1), for loopback tests.
//!
//! [`MockGateway::start`] binds `127.0.0.1:0` and serves every accepted connection on
//! its own thread, following a [`Script`]:
//!
//! 1. greeting line, then `cram=<challenge>`;
//! 2. reads the auth line and checks it (hash of `"<challenge>|<key>"` plus the bucket
//!    id, dataset, `encoding=dbn`, `compression`, `ts_out`, any field order, a trailing
//!    `|` accepted), replies `success=1|session_id=mock-<index>` or
//!    `success=0|error=<text>`;
//! 3. reads subscription lines until `start_session` (or `start_session=0`);
//! 4. sends one DBN stream: live metadata (schema mixed, `stype_out` instrument_id),
//!    optional subscription acks and symbol mappings, then the records of the
//!    gateway's timeline. With `compression=zstd` everything after `start_session` is
//!    one zstd stream, flushed after every write so the client gets data promptly;
//!    with `ts_out=1` each record carries a trailing u64 send time (length + 2 words).
//!
//! The mock is an independent implementation: it does not use `dbn-pipe-protocol`.
//! Everything it saw and did is recorded in [`ConnectionLog`]s for asserts.
//!
//! ```no_run
//! use dbn_pipe_tests::mock_gateway::{Behavior, MockGateway, Script};
//! // First connection cuts mid-record after 10 records, the second serves normally.
//! let script = Script::new()
//!     .generated_records(100)
//!     .on_connection(0, Behavior::new().cut_mid_record_after(10));
//! let gateway = MockGateway::start(script)?;
//! let addr = gateway.addr();
//! // ... run a client against `addr` ...
//! assert!(gateway.wait_ended(2, std::time::Duration::from_secs(5)));
//! let logs = gateway.connections();
//! assert_eq!(logs[0].records_sent, 10);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dbn::encode::dbn::MetadataEncoder;
use dbn::{
    MboMsg, Mbp1Msg, Mbp10Msg, Metadata, MetadataBuilder, Record, SType, SymbolMappingMsg,
    SystemCode, SystemMsg, TradeMsg, VersionUpgradePolicy, rtype,
};
use sha2::{Digest, Sha256};

use crate::generate;

/// The fake API key every test uses (32 characters, bucket id `ABCDE`).
pub const TEST_API_KEY: &str = "db-0123456789abcdefghijklmnABCDE";
/// The dataset the mock serves unless scripted otherwise.
pub const MOCK_DATASET: &str = "GLBX.MDP3";
/// The longest control line the mock reads; a longer line is a protocol violation.
pub const MAX_LINE_LEN: usize = 256 * 1024;
/// The most symbols one subscription line may carry (PROTOCOL.md §1 step 5).
pub const MAX_SYMBOLS_PER_LINE: usize = 500;
/// First instrument id given to subscribed symbols by [`Script::symbol_mappings`]
/// (the instrument ids of [`generate::mbo_record`] start there too).
pub const FIRST_MAPPED_INSTRUMENT_ID: u32 = 5482;

/// Which timestamp field [`Script::stamp_write_time`] overwrites with the write time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StampField {
    /// `hd.ts_event` (every record has it).
    TsEvent,
    /// `ts_recv` of MBO, trade/MBP-1/TBBO/BBO and MBP-10 records; other rtypes keep
    /// their bytes unchanged.
    TsRecv,
}

/// Which control line [`Behavior::long_line`] replaces by an endless one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongLineAt {
    /// The greeting, the first line of the connection.
    Greeting,
    /// The reply to the auth line (after the client authenticated).
    AuthReply,
}

/// How the records of the timeline are produced.
#[derive(Clone)]
enum Timeline {
    /// `generate::mbo_record(i)` for `i < count`; with `run > 1`, `run` consecutive
    /// records share one `ts_event`.
    Generated { count: usize, run: u64 },
    /// Explicit encoded records.
    Explicit(Arc<Vec<Vec<u8>>>),
}

impl Timeline {
    fn len(&self) -> usize {
        match self {
            Timeline::Generated { count, .. } => *count,
            Timeline::Explicit(records) => records.len(),
        }
    }

    /// Appends record `i` (plain, without ts_out) to `out`.
    fn append(&self, i: usize, out: &mut Vec<u8>) {
        match self {
            Timeline::Generated { run, .. } => {
                out.extend_from_slice(generated_record(i as u64, *run).as_ref())
            }
            Timeline::Explicit(records) => out.extend_from_slice(&records[i]),
        }
    }

    fn ts_event(&self, i: usize) -> u64 {
        match self {
            Timeline::Generated { run, .. } => generated_record(i as u64, *run).hd.ts_event,
            Timeline::Explicit(records) => header_ts_event(&records[i]),
        }
    }

    /// The index timestamp of record `i`, which replay `start` filters on, as the
    /// client's gap fill assumes: `ts_recv` for MBO records, `ts_event` otherwise.
    fn index_ts(&self, i: usize) -> u64 {
        match self {
            Timeline::Generated { run, .. } => generated_record(i as u64, *run).ts_recv,
            Timeline::Explicit(records) => header_index_ts(&records[i]),
        }
    }

    /// Index of the first record whose index timestamp is `>= start` (timelines are
    /// sorted by it: generated ones by construction; explicit ones are checked by
    /// `ts_event`, and their MBO `ts_recv` must follow the same order).
    fn first_at_or_after(&self, start: u64) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.index_ts(mid) < start {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// The record [`Script::generated_records_with_ties`] serves at index `i`: exactly
/// [`generate::mbo_record`]`(i)` when `run <= 1`; otherwise its `ts_event` is that of
/// record `(i / run) * run`, so runs of `run` records share one `ts_event` (`ts_recv`
/// follows `ts_event` + 275 as in the generator).
pub fn generated_record(i: u64, run: u64) -> MboMsg {
    let mut rec = generate::mbo_record(i);
    if run > 1 {
        rec.hd.ts_event = generate::mbo_record((i / run) * run).hd.ts_event;
        rec.ts_recv = rec.hd.ts_event + 275;
    }
    rec
}

/// Every field of [`generate::mbo_record`]`(i)` that is not linear in `i` repeats
/// with this period (lcm of the moduli 4, 64, 10, 3 and 2 it uses).
const GENERATED_PERIOD: u64 = 960;

/// Appends the bytes of [`generate::mbo_record`]`(i)` for `i` in
/// `first..first + count` to `out`: a pre-encoded period of records with the fields
/// linear in `i` (`ts_event`, `order_id`, `ts_recv`, `sequence`) shifted, much
/// cheaper than encoding each record.
pub fn append_generated_records(first: u64, count: usize, out: &mut Vec<u8>) {
    static TEMPLATE: OnceLock<Vec<u8>> = OnceLock::new();
    let template = TEMPLATE.get_or_init(|| {
        (0..GENERATED_PERIOD)
            .flat_map(|i| generate::mbo_record(i).as_ref().to_vec())
            .collect()
    });
    const LEN: usize = std::mem::size_of::<MboMsg>();
    const TS_EVENT: usize = 8;
    const ORDER_ID: usize = std::mem::offset_of!(MboMsg, order_id);
    const TS_RECV: usize = std::mem::offset_of!(MboMsg, ts_recv);
    const SEQUENCE: usize = std::mem::offset_of!(MboMsg, sequence);
    fn add_u64(rec: &mut [u8], at: usize, delta: u64) {
        let field: &mut [u8; 8] = (&mut rec[at..at + 8]).try_into().expect("8 bytes");
        *field = u64::from_le_bytes(*field).wrapping_add(delta).to_le_bytes();
    }
    out.reserve(count * LEN);
    let mut i = first;
    let end = first + count as u64;
    while i < end {
        // One pass over the rest of the period that holds `i`.
        let base = i - i % GENERATED_PERIOD;
        let from = (i - base) as usize;
        let to = (end - base).min(GENERATED_PERIOD) as usize;
        let start = out.len();
        out.extend_from_slice(&template[from * LEN..to * LEN]);
        if base > 0 {
            let ts_shift = base.wrapping_mul(1_000);
            for rec in out[start..].chunks_exact_mut(LEN) {
                add_u64(rec, TS_EVENT, ts_shift);
                add_u64(rec, ORDER_ID, base);
                add_u64(rec, TS_RECV, ts_shift);
                let seq: &mut [u8; 4] = (&mut rec[SEQUENCE..SEQUENCE + 4])
                    .try_into()
                    .expect("4 bytes");
                *seq = u32::from_le_bytes(*seq)
                    .wrapping_add(base as u32)
                    .to_le_bytes();
            }
        }
        i = base + to as u64;
    }
}

/// The bytes of one record as the `dbn` crate lays it out (no ts_out).
pub fn encode_record<R: Record>(record: &R) -> Vec<u8> {
    record.as_ref().to_vec()
}

/// Reads the records of a DBN file (plain or zstd, any version), upgraded to DBN v3 and
/// without ts_out, as the mock serves them. Metadata is dropped.
pub fn read_fixture_records(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let raw = std::fs::read(path)?;
    let plain = if raw.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        zstd::stream::decode_all(&raw[..])?
    } else {
        raw
    };
    let bad = |e: dbn::Error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    };
    let mut decoder = dbn::decode::dbn::Decoder::with_upgrade_policy(
        &plain[..],
        VersionUpgradePolicy::UpgradeToV3,
    )
    .map_err(bad)?;
    let ts_out = decoder_ts_out(&decoder);
    let mut out = Vec::new();
    while let Some(rec) = decoder.decode_ref().map_err(bad)? {
        let mut bytes = rec.as_ref().to_vec();
        if ts_out && bytes.len() >= 24 {
            bytes.truncate(bytes.len() - 8);
            bytes[0] -= 2;
        }
        out.push(bytes);
    }
    Ok(out)
}

fn decoder_ts_out<R: io::Read>(decoder: &dbn::decode::dbn::Decoder<R>) -> bool {
    use dbn::decode::DbnMetadata;
    decoder.metadata().ts_out
}

/// `ts_recv` of an MBO record (its index timestamp), `ts_event` of any other.
fn header_index_ts(record: &[u8]) -> u64 {
    match record.get(40..48) {
        Some(ts_recv) if record[1] == rtype::MBO => {
            u64::from_le_bytes(ts_recv.try_into().expect("8 bytes"))
        }
        _ => header_ts_event(record),
    }
}

fn header_ts_event(record: &[u8]) -> u64 {
    u64::from_le_bytes(
        record[8..16]
            .try_into()
            .expect("records are at least 16 bytes"),
    )
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What one connection does, selected by its accept index with
/// [`Script::on_connection`] (the others use [`Script::behavior`]).
///
/// All byte and record counts are per connection. Defaults: serve normally, writes of
/// up to 64 KiB.
#[derive(Debug, Clone)]
pub struct Behavior {
    reject_auth: Option<String>,
    split_handshake: bool,
    write_split: Option<usize>,
    write_chunk: usize,
    stall_after_auth: bool,
    stall_after_records: Option<u64>,
    disconnect_after_bytes: Option<u64>,
    cut_mid_record_after: Option<u64>,
    skip_on_resume: usize,
    cut_after_records: Option<u64>,
    long_line: Option<(LongLineAt, usize)>,
}

impl Default for Behavior {
    fn default() -> Self {
        Self::new()
    }
}

impl Behavior {
    /// A connection that serves normally.
    pub fn new() -> Self {
        Self {
            reject_auth: None,
            split_handshake: false,
            write_split: None,
            write_chunk: 64 * 1024,
            stall_after_auth: false,
            stall_after_records: None,
            disconnect_after_bytes: None,
            cut_mid_record_after: None,
            skip_on_resume: 0,
            cut_after_records: None,
            long_line: None,
        }
    }

    /// Replies `success=0|error=<msg>` to the auth line even when it is valid, then
    /// closes.
    pub fn reject_auth(mut self, msg: impl Into<String>) -> Self {
        self.reject_auth = Some(msg.into());
        self
    }

    /// Sends the greeting and the challenge in several writes, each line cut in two
    /// (a short pause between writes makes them separate reads on loopback).
    pub fn split_handshake(mut self) -> Self {
        self.split_handshake = true;
        self
    }

    /// Writes everything after `start_session` in pieces of at most `n` bytes
    /// (`n >= 1`), one `write` call each with TCP_NODELAY, to exercise partial reads.
    pub fn write_split(mut self, n: usize) -> Self {
        self.write_split = Some(n.max(1));
        self
    }

    /// Batches records into writes of about `n` bytes (default 64 KiB; use a few MiB
    /// for throughput runs).
    pub fn write_chunk(mut self, n: usize) -> Self {
        self.write_chunk = n.max(1);
        self
    }

    /// After the auth reply, keeps reading (and logging) subscription lines and
    /// `start_session` but never sends anything; the socket stays open until the
    /// client closes it or the gateway is dropped.
    pub fn stall_after_auth(mut self) -> Self {
        self.stall_after_auth = true;
        self
    }

    /// Sends metadata and `k` timeline records, then sends nothing more while keeping
    /// the socket open.
    pub fn stall_after_records(mut self, k: u64) -> Self {
        self.stall_after_records = Some(k);
        self
    }

    /// Closes the connection after exactly `n` bytes were written after
    /// `start_session` (wire bytes: compressed ones with zstd), wherever that falls.
    pub fn disconnect_after_bytes(mut self, n: u64) -> Self {
        self.disconnect_after_bytes = Some(n);
        self
    }

    /// Sends `k` whole timeline records, then the first half of the next one, then
    /// closes (the cut is in the decompressed stream with zstd).
    pub fn cut_mid_record_after(mut self, k: u64) -> Self {
        self.cut_mid_record_after = Some(k);
        self
    }

    /// When this connection subscribes without `start`, it resumes "now": at the
    /// first record the previous connections did not deliver, plus `n` records that
    /// the gateway "published while the client was away" and that are lost.
    pub fn skip_on_resume(mut self, n: usize) -> Self {
        self.skip_on_resume = n;
        self
    }

    /// Sends `k` whole timeline records (flushed), then closes without finishing the
    /// stream: with zstd the connection ends inside a zstd frame at a record boundary;
    /// without compression this is a clean close after record `k`.
    pub fn cut_after_records(mut self, k: u64) -> Self {
        self.cut_after_records = Some(k);
        self
    }

    /// Sends `bytes` bytes of `x` without a newline in place of the line at `at`, then
    /// waits for the client to close (bytes written: [`ConnectionLog::long_line_written`]).
    pub fn long_line(mut self, at: LongLineAt, bytes: usize) -> Self {
        self.long_line = Some((at, bytes));
        self
    }
}

/// The script of a [`MockGateway`]: gateway-wide settings, the record timeline and the
/// per-connection [`Behavior`]s. Defaults: key [`TEST_API_KEY`], dataset
/// [`MOCK_DATASET`], greeting `lsg_version=0.4.2-mock`, no records, DBN v3 metadata,
/// close after the last record.
#[derive(Clone)]
pub struct Script {
    key: String,
    dataset: String,
    greeting: String,
    timeline: Timeline,
    metadata_version: u8,
    acks: bool,
    heartbeat: Option<Duration>,
    symbol_mappings: bool,
    replay_completed: bool,
    pace: Option<f64>,
    stamp: Option<StampField>,
    keep_records: bool,
    stay_open: bool,
    bulk: bool,
    raw_stream: Option<Arc<[u8]>>,
    default: Behavior,
    per_connection: HashMap<usize, Behavior>,
}

impl fmt::Debug for Script {
    // The key is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Script")
            .field("dataset", &self.dataset)
            .field("records", &self.timeline.len())
            .field("default", &self.default)
            .field("per_connection", &self.per_connection)
            .finish_non_exhaustive()
    }
}

impl Default for Script {
    fn default() -> Self {
        Self::new()
    }
}

impl Script {
    /// A gateway with the defaults listed on [`Script`].
    pub fn new() -> Self {
        Self {
            key: TEST_API_KEY.to_owned(),
            dataset: MOCK_DATASET.to_owned(),
            greeting: "lsg_version=0.4.2-mock".to_owned(),
            timeline: Timeline::Explicit(Arc::new(Vec::new())),
            metadata_version: 3,
            acks: false,
            heartbeat: None,
            symbol_mappings: false,
            replay_completed: false,
            pace: None,
            stamp: None,
            keep_records: false,
            stay_open: false,
            bulk: false,
            raw_stream: None,
            default: Behavior::new(),
            per_connection: HashMap::new(),
        }
    }

    /// The API key the auth hash must be computed with.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }

    /// The dataset the auth line must name.
    pub fn dataset(mut self, dataset: impl Into<String>) -> Self {
        self.dataset = dataset.into();
        self
    }

    /// The greeting line (without `\n`).
    pub fn greeting(mut self, line: impl Into<String>) -> Self {
        self.greeting = line.into();
        self
    }

    /// Timeline: [`generate::mbo_record`]`(i)` for `i < count`, generated lazily (no
    /// memory per record, fit for million-record runs).
    pub fn generated_records(mut self, count: usize) -> Self {
        self.timeline = Timeline::Generated { count, run: 1 };
        self
    }

    /// Timeline: [`generated_record`]`(i, run)` for `i < count`: runs of `run` records
    /// share one `ts_event` (for replay-from-`start` tests with ties).
    pub fn generated_records_with_ties(mut self, count: usize, run: u64) -> Self {
        self.timeline = Timeline::Generated { count, run };
        self
    }

    /// Timeline: explicit encoded records (DBN v3 layout, no ts_out), sorted by
    /// `ts_event`. [`MockGateway::start`] rejects malformed ones.
    pub fn records(mut self, records: Vec<Vec<u8>>) -> Self {
        self.timeline = Timeline::Explicit(Arc::new(records));
        self
    }

    /// Timeline: the records of a DBN fixture file, see [`read_fixture_records`].
    pub fn fixture_records(self, path: &Path) -> io::Result<Self> {
        Ok(self.records(read_fixture_records(path)?))
    }

    /// The version byte of the metadata prelude (default 3). Only the metadata changes:
    /// the records are served as the timeline holds them.
    pub fn metadata_version(mut self, version: u8) -> Self {
        self.metadata_version = version;
        self
    }

    /// Sends a `SystemMsg` subscription ack (code 1) per subscription (per line with
    /// `is_last=1`), after the metadata, and for subscriptions made after the start.
    pub fn subscription_acks(mut self) -> Self {
        self.acks = true;
        self
    }

    /// Sends a heartbeat `SystemMsg` (code 0) whenever nothing was written for
    /// `every` (between paced records, and while idle with [`Script::stay_open`]).
    /// Stalls send nothing, heartbeats included.
    pub fn heartbeats(mut self, every: Duration) -> Self {
        self.heartbeat = Some(every);
        self
    }

    /// After the metadata (and acks), sends one `SymbolMappingMsg` per distinct
    /// subscribed symbol (`ALL_SYMBOLS` excluded), mapping the `j`-th to instrument id
    /// [`FIRST_MAPPED_INSTRUMENT_ID`]` + j`.
    pub fn symbol_mappings(mut self) -> Self {
        self.symbol_mappings = true;
        self
    }

    /// When a subscription asked for `start`, sends a `SystemMsg` with code 3 (replay
    /// completed) after the last timeline record.
    pub fn replay_completed(mut self) -> Self {
        self.replay_completed = true;
        self
    }

    /// Sends about `records_per_sec` timeline records per second, one write each.
    pub fn pace(mut self, records_per_sec: f64) -> Self {
        self.pace = Some(records_per_sec.max(0.001));
        self
    }

    /// Overwrites `field` of every timeline record with the time it is written (ns
    /// since the UNIX epoch), so a latency test can measure.
    pub fn stamp_write_time(mut self, field: StampField) -> Self {
        self.stamp = Some(field);
        self
    }

    /// Keeps the exact bytes of every timeline record sent in
    /// [`ConnectionLog::records`] (keep this off for huge runs: the count and
    /// [`ConnectionLog::records_sha256`] are always kept).
    pub fn keep_records(mut self) -> Self {
        self.keep_records = true;
        self
    }

    /// After the last timeline record, keeps the connection open (sending heartbeats
    /// if scripted) instead of closing it.
    pub fn stay_open(mut self) -> Self {
        self.stay_open = true;
        self
    }

    /// Builds the records of [`Script::generated_records`] in blocks of about
    /// [`Behavior::write_chunk`] bytes from a pre-encoded template
    /// ([`append_generated_records`]) instead of one by one: the same bytes, cheap
    /// enough for GiB runs. Records that need per-record work (ts_out, stamps, pacing,
    /// ties) are still built one by one, and blocks stop at scripted stalls and cuts.
    pub fn bulk_writes(mut self) -> Self {
        self.bulk = true;
        self
    }

    /// After `start_session`, sends `bytes` verbatim in place of the DBN stream (they
    /// must already be in the compression the client asked for), in writes of
    /// [`Behavior::write_chunk`] bytes, then closes. No record is counted as sent.
    pub fn raw_stream(mut self, bytes: impl Into<Arc<[u8]>>) -> Self {
        self.raw_stream = Some(bytes.into());
        self
    }

    /// The behaviour of every connection not named by [`Script::on_connection`].
    pub fn behavior(mut self, behavior: Behavior) -> Self {
        self.default = behavior;
        self
    }

    /// The behaviour of the connection accepted `index`-th (from 0).
    pub fn on_connection(mut self, index: usize, behavior: Behavior) -> Self {
        self.per_connection.insert(index, behavior);
        self
    }

    fn behavior_for(&self, index: usize) -> &Behavior {
        self.per_connection.get(&index).unwrap_or(&self.default)
    }

    fn validate(&self) -> io::Result<()> {
        let invalid = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        if let Timeline::Explicit(records) = &self.timeline {
            let mut last_ts = 0;
            for (i, rec) in records.iter().enumerate() {
                if rec.len() < 16 || rec.len() % 4 != 0 || rec.len() / 4 != usize::from(rec[0]) {
                    return invalid(format!(
                        "record {i}: {} bytes do not match its length byte",
                        rec.len()
                    ));
                }
                if rec.len() > 255 * 4 - 8 {
                    return invalid(format!("record {i}: too long to append ts_out"));
                }
                let ts = header_ts_event(rec);
                if ts < last_ts {
                    return invalid(format!("record {i}: ts_event goes backwards"));
                }
                last_ts = ts;
            }
        }
        Ok(())
    }
}

/// One subscription line the gateway received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionLine {
    /// Its `key=value` fields.
    pub fields: BTreeMap<String, String>,
    /// Whether it arrived after `start_session`.
    pub after_start: bool,
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEnd {
    /// The client closed (EOF) or reset the connection.
    ClientClosed,
    /// The gateway rejected the auth line (the error text it sent).
    AuthRejected(String),
    /// The client broke the protocol before the stream started (see
    /// [`ConnectionLog::violations`]); the gateway closed.
    Violation,
    /// The gateway closed as scripted ([`Behavior::disconnect_after_bytes`],
    /// [`Behavior::cut_mid_record_after`] or [`Behavior::cut_after_records`]).
    Cut,
    /// The gateway sent the whole timeline and closed (finishing the zstd stream).
    Finished,
    /// The gateway was dropped while the connection was open.
    Stopped,
    /// A socket error other than the client closing.
    Error(String),
}

/// Everything one connection saw and did.
#[derive(Debug, Clone, Default)]
pub struct ConnectionLog {
    /// Accept index, from 0.
    pub index: usize,
    /// The auth line's fields (`auth` holds the hash, never the key).
    pub auth: Option<BTreeMap<String, String>>,
    /// The session id sent on success.
    pub session_id: Option<String>,
    /// Subscription lines in arrival order.
    pub subscriptions: Vec<SubscriptionLine>,
    /// Whether `start_session` arrived.
    pub start_session: bool,
    /// What the client did wrong (malformed or unexpected lines, bad fields); empty
    /// for a conforming client.
    pub violations: Vec<String>,
    /// Bytes written after `start_session` (on the wire, so compressed with zstd).
    pub dbn_bytes_written: u64,
    /// Timeline records delivered whole (with zstd: those in writes that completed).
    pub records_sent: u64,
    /// Control records sent (acks, heartbeats, symbol mappings, replay completed).
    pub control_records_sent: u64,
    /// Timeline index of the first record this connection served.
    pub first_record_index: Option<usize>,
    /// Lowercase hex sha256 over the bytes of the delivered timeline records, as sent
    /// (ts_out and stamps included).
    pub records_sha256: String,
    /// The bytes of each delivered timeline record, when [`Script::keep_records`].
    pub records: Vec<Vec<u8>>,
    /// How it ended; `None` while open.
    pub end: Option<ConnectionEnd>,
    /// Bytes of a [`Behavior::long_line`] written before the client went away.
    pub long_line_written: u64,
    /// The challenge sent in the `cram=` line.
    pub challenge: String,
}

/// Shared state of the server and its connection threads.
struct Shared {
    script: Script,
    stop: AtomicBool,
    logs: Mutex<Vec<ConnectionLog>>,
    changed: Condvar,
    /// Clones of the open connections' sockets by accept index, shut down on drop.
    sockets: Mutex<HashMap<usize, TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Timeline index of the first record no connection delivered yet ("now").
    cursor: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn update(&self, index: usize, f: impl FnOnce(&mut ConnectionLog)) {
        let mut logs = lock(&self.logs);
        if let Some(log) = logs.get_mut(index) {
            f(log);
        }
        drop(logs);
        self.changed.notify_all();
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// A running mock gateway. Dropping it closes every connection and joins all of its
/// threads.
pub struct MockGateway {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl fmt::Debug for MockGateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockGateway")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockGateway {
    /// Binds `127.0.0.1:0` and starts serving `script`. Fails on a malformed explicit
    /// timeline (`InvalidInput`) or a socket error.
    pub fn start(script: Script) -> io::Result<MockGateway> {
        script.validate()?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            script,
            stop: AtomicBool::new(false),
            logs: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            sockets: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
            cursor: AtomicUsize::new(0),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("mock-gateway-accept".into())
            .spawn(move || accept_loop(&listener, &accept_shared))?;
        tracing::debug!(%addr, "mock gateway listening");
        Ok(MockGateway {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A snapshot of the logs of every connection accepted so far, in accept order.
    pub fn connections(&self) -> Vec<ConnectionLog> {
        lock(&self.shared.logs).clone()
    }

    /// Waits until at least `n` connections were accepted; false on timeout.
    pub fn wait_connections(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |logs| logs.len() >= n)
    }

    /// Waits until at least `n` connections have ended (their logs are final); false
    /// on timeout.
    pub fn wait_ended(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |logs| {
            logs.iter().filter(|l| l.end.is_some()).count() >= n
        })
    }

    /// The logs once at least `n` connections ended.
    ///
    /// # Panics
    /// When fewer than `n` connections ended within `timeout` (a test helper).
    pub fn ended_connections(&self, n: usize, timeout: Duration) -> Vec<ConnectionLog> {
        assert!(
            self.wait_ended(n, timeout),
            "the gateway saw {} connections end, expected {n}",
            self.connections()
                .iter()
                .filter(|c| c.end.is_some())
                .count()
        );
        self.connections()
    }

    /// Waits until `pred` holds for the logs; false on timeout.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&[ConnectionLog]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut logs = lock(&self.shared.logs);
        loop {
            if pred(&logs) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            logs = self
                .shared
                .changed
                .wait_timeout(logs, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Timeline index of the first record no connection has delivered yet: where a
    /// connection subscribing without `start` resumes (before its
    /// [`Behavior::skip_on_resume`]).
    pub fn cursor(&self) -> usize {
        self.shared.cursor.load(Ordering::SeqCst)
    }
}

impl Drop for MockGateway {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for (_, socket) in lock(&self.shared.sockets).drain() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        let threads: Vec<_> = lock(&self.shared.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.stopped() {
            return;
        }
        let stream = match incoming {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "mock gateway accept failed");
                continue;
            }
        };
        let index = {
            let mut logs = lock(&shared.logs);
            let index = logs.len();
            logs.push(ConnectionLog {
                index,
                ..ConnectionLog::default()
            });
            logs.len() - 1
        };
        shared.changed.notify_all();
        if let Ok(clone) = stream.try_clone() {
            lock(&shared.sockets).insert(index, clone);
        }
        let conn_shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name(format!("mock-gateway-conn-{index}"))
            .spawn(move || {
                let mut end = serve(&conn_shared, index, stream);
                // Long runs accept thousands of connections: keep no descriptor of
                // an ended one.
                lock(&conn_shared.sockets).remove(&index);
                if conn_shared.stopped()
                    && matches!(end, ConnectionEnd::ClientClosed | ConnectionEnd::Error(_))
                {
                    // The socket was shut down by `Drop`, not by the client.
                    end = ConnectionEnd::Stopped;
                }
                tracing::debug!(index, ?end, "mock gateway connection ended");
                conn_shared.update(index, |log| log.end = Some(end));
            });
        match spawned {
            Ok(handle) => lock(&shared.threads).push(handle),
            Err(e) => shared.update(index, |log| {
                log.end = Some(ConnectionEnd::Error(format!("spawn: {e}")));
            }),
        }
    }
}

/// Reads `\n`-terminated lines with a length cap.
struct LineReader {
    stream: TcpStream,
    buf: Vec<u8>,
}

enum LineError {
    Eof,
    TooLong,
    Io(io::Error),
}

impl LineReader {
    fn read_line(&mut self) -> Result<String, LineError> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + pos;
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line[..end]);
                return Ok(text.trim_end_matches('\r').to_owned());
            }
            scanned = self.buf.len();
            if scanned > MAX_LINE_LEN {
                return Err(LineError::TooLong);
            }
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(LineError::Eof),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LineError::Io(e)),
            }
        }
    }
}

fn line_end(e: LineError) -> ConnectionEnd {
    match e {
        LineError::Eof => ConnectionEnd::ClientClosed,
        LineError::TooLong => ConnectionEnd::Violation,
        LineError::Io(e) if is_disconnect(&e) => ConnectionEnd::ClientClosed,
        LineError::Io(e) => ConnectionEnd::Error(e.to_string()),
    }
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::NotConnected
    )
}

/// Splits a control line into `key=value` fields, accepting one trailing `|`.
fn parse_fields(line: &str) -> Result<BTreeMap<String, String>, String> {
    let body = line.strip_suffix('|').unwrap_or(line);
    let mut fields = BTreeMap::new();
    if body.is_empty() {
        return Err("empty line".to_owned());
    }
    for part in body.split('|') {
        let Some((k, v)) = part.split_once('=') else {
            return Err(format!("field {part:?} is not key=value"));
        };
        if k.is_empty() {
            return Err(format!("field {part:?} has an empty key"));
        }
        if fields.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(format!("duplicate field {k:?}"));
        }
    }
    Ok(fields)
}

/// The auth hash a client must send for `challenge` and `key`.
pub fn expected_auth(challenge: &str, key: &str) -> String {
    let digest = Sha256::digest(format!("{challenge}|{key}").as_bytes());
    let bucket = &key[key.len().saturating_sub(5)..];
    format!("{}-{bucket}", hex::encode(digest))
}

/// The settings the auth line selected.
struct Session {
    zstd: bool,
    ts_out: bool,
}

/// Checks the auth line; `Err` is the error text sent back.
fn check_auth(
    fields: &BTreeMap<String, String>,
    challenge: &str,
    script: &Script,
) -> Result<Session, String> {
    let get = |k: &str| fields.get(k).map(String::as_str);
    match get("auth") {
        None => return Err("missing auth field".to_owned()),
        Some(a) if a != expected_auth(challenge, &script.key) => {
            return Err("Authentication failed: bad CRAM response".to_owned());
        }
        Some(_) => {}
    }
    match get("dataset") {
        Some(d) if d == script.dataset => {}
        Some(d) => return Err(format!("unknown dataset {d:?} for this gateway")),
        None => return Err("missing dataset field".to_owned()),
    }
    if get("encoding") != Some("dbn") {
        return Err(format!("unsupported encoding {:?}", get("encoding")));
    }
    let zstd = match get("compression") {
        Some("none") | None => false,
        Some("zstd") => true,
        Some(c) => return Err(format!("unsupported compression {c:?}")),
    };
    let ts_out = match get("ts_out") {
        Some("0") | None => false,
        Some("1") => true,
        Some(t) => return Err(format!("invalid ts_out {t:?}")),
    };
    if let Some(h) = get("heartbeat_interval_s") {
        match h.parse::<u32>() {
            Ok(s) if (5..=1800).contains(&s) => {}
            _ => {
                return Err(format!(
                    "invalid heartbeat_interval_s {h:?}: must be 5..=1800"
                ));
            }
        }
    }
    if let Some(s) = get("slow_reader_behavior").filter(|s| *s != "warn" && *s != "skip") {
        return Err(format!("invalid slow_reader_behavior {s:?}"));
    }
    Ok(Session { zstd, ts_out })
}

/// Checks one subscription line; returns the violations found.
fn check_subscription(fields: &BTreeMap<String, String>, after_start: bool) -> Vec<String> {
    const KNOWN: [&str; 7] = [
        "schema", "stype_in", "symbols", "snapshot", "is_last", "start", "id",
    ];
    let mut bad = Vec::new();
    for k in fields.keys() {
        if !KNOWN.contains(&k.as_str()) {
            bad.push(format!("unknown subscription field {k:?}"));
        }
    }
    for k in ["schema", "stype_in", "symbols"] {
        if fields.get(k).is_none_or(String::is_empty) {
            bad.push(format!("subscription without {k}"));
        }
    }
    if let Some(symbols) = fields.get("symbols") {
        let parts: Vec<_> = symbols.split(',').collect();
        if parts.iter().any(|s| s.is_empty()) {
            bad.push("empty symbol in symbols".to_owned());
        }
        if parts.len() > MAX_SYMBOLS_PER_LINE {
            bad.push(format!(
                "{} symbols in one line (max {MAX_SYMBOLS_PER_LINE})",
                parts.len()
            ));
        }
    }
    for k in ["snapshot", "is_last"] {
        if let Some(v) = fields.get(k).filter(|v| *v != "0" && *v != "1") {
            bad.push(format!("{k}={v:?} is not 0 or 1"));
        }
    }
    if let Some(id) = fields.get("id").filter(|id| id.parse::<u32>().is_err()) {
        bad.push(format!("id={id:?} is not a u32"));
    }
    if let Some(start) = fields.get("start") {
        if fields.get("snapshot").map(String::as_str) == Some("1") {
            bad.push("start together with snapshot=1".to_owned());
        }
        if after_start {
            bad.push("start sent after start_session (ignored by the gateway)".to_owned());
        }
        if start.is_empty() {
            bad.push("empty start".to_owned());
        }
    }
    bad
}

/// The replay position a `start` value asks for: `Some(ns)`, 0 for ISO-8601 text.
fn start_ns(value: &str) -> u64 {
    // ISO-8601 starts are accepted but the mock replays everything for them.
    value.parse::<u64>().unwrap_or(0)
}

fn send_line(stream: &mut TcpStream, line: &str) -> io::Result<()> {
    stream.write_all(format!("{line}\n").as_bytes())
}

/// Serves one connection and returns how it ended.
fn serve(shared: &Arc<Shared>, index: usize, stream: TcpStream) -> ConnectionEnd {
    let script = &shared.script;
    let behavior = script.behavior_for(index).clone();
    let _ = stream.set_nodelay(true);
    let mut out = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => return ConnectionEnd::Error(e.to_string()),
    };
    let mut reader = LineReader {
        stream,
        buf: Vec::new(),
    };
    let challenge = format!("mock{index}{}", fastrand::u64(..));
    shared.update(index, |log| log.challenge.clone_from(&challenge));
    let io_end = |e: io::Error| {
        if is_disconnect(&e) {
            ConnectionEnd::ClientClosed
        } else {
            ConnectionEnd::Error(e.to_string())
        }
    };

    if let Some((LongLineAt::Greeting, bytes)) = behavior.long_line {
        return send_long_line(shared, index, &mut out, &mut reader, bytes);
    }

    // 1-2. Greeting and challenge.
    let cram = format!("cram={challenge}");
    let sent = if behavior.split_handshake {
        let g = format!("{}\n", script.greeting);
        let c = format!("{cram}\n");
        let (g1, g2) = g.split_at(g.len() / 2);
        let (c1, c2) = c.split_at(c.len() / 2);
        [g1, g2, c1, c2].iter().try_for_each(|piece| {
            out.write_all(piece.as_bytes())?;
            out.flush()?;
            thread::sleep(Duration::from_millis(2));
            Ok::<(), io::Error>(())
        })
    } else {
        out.write_all(format!("{}\n{cram}\n", script.greeting).as_bytes())
    };
    if let Err(e) = sent {
        return io_end(e);
    }

    // 3-4. Auth.
    let line = match reader.read_line() {
        Ok(l) => l,
        Err(e) => return line_end(e),
    };
    let fields = match parse_fields(&line) {
        Ok(f) => f,
        Err(why) => {
            shared.update(index, |log| {
                log.violations.push(format!("auth line: {why}"))
            });
            let msg = format!("malformed auth request: {why}");
            let _ = send_line(&mut out, &format!("success=0|error={msg}"));
            return ConnectionEnd::AuthRejected(msg);
        }
    };
    let checked = check_auth(&fields, &challenge, script);
    let client_missing = !fields.contains_key("client");
    shared.update(index, |log| {
        log.auth = Some(fields.clone());
        if client_missing {
            log.violations.push("auth line without client".to_owned());
        }
    });
    if let Some((LongLineAt::AuthReply, bytes)) = behavior.long_line {
        return send_long_line(shared, index, &mut out, &mut reader, bytes);
    }
    let checked = match (checked, &behavior.reject_auth) {
        (Ok(_), Some(msg)) => Err(msg.clone()),
        (checked, _) => checked,
    };
    let session = match checked {
        Err(msg) => {
            let _ = send_line(&mut out, &format!("success=0|error={msg}"));
            let _ = out.shutdown(Shutdown::Write);
            return ConnectionEnd::AuthRejected(msg);
        }
        Ok(session) => session,
    };
    let session_id = format!("mock-{index}");
    if let Err(e) = send_line(&mut out, &format!("success=1|session_id={session_id}")) {
        return io_end(e);
    }
    shared.update(index, |log| log.session_id = Some(session_id));

    // 5-6. Subscriptions until start_session.
    let mut subs: Vec<BTreeMap<String, String>> = Vec::new();
    let mut open_chunk = false;
    loop {
        let line = match reader.read_line() {
            Ok(l) => l,
            Err(LineError::TooLong) => {
                shared.update(index, |log| {
                    log.violations
                        .push(format!("line longer than {MAX_LINE_LEN} bytes"));
                });
                return ConnectionEnd::Violation;
            }
            Err(e) => return line_end(e),
        };
        let trimmed = line.strip_suffix('|').unwrap_or(&line);
        if trimmed == "start_session" || trimmed == "start_session=0" {
            if open_chunk {
                shared.update(index, |log| {
                    log.violations
                        .push("start_session after a chunk with is_last=0".to_owned());
                });
            }
            shared.update(index, |log| log.start_session = true);
            break;
        }
        match parse_fields(&line) {
            Ok(f) => {
                let bad = check_subscription(&f, false);
                open_chunk = f.get("is_last").map(String::as_str) == Some("0");
                subs.push(f.clone());
                shared.update(index, |log| {
                    log.violations.extend(bad);
                    log.subscriptions.push(SubscriptionLine {
                        fields: f,
                        after_start: false,
                    });
                });
            }
            Err(why) => shared.update(index, |log| {
                log.violations.push(format!("line {line:?}: {why}"));
            }),
        }
    }

    // Lines after start_session are read by a second thread.
    let client_gone = Arc::new(AtomicBool::new(false));
    let (late_tx, late_rx) = mpsc::channel();
    let reader_thread = {
        let shared = Arc::clone(shared);
        let gone = Arc::clone(&client_gone);
        thread::Builder::new()
            .name(format!("mock-gateway-read-{index}"))
            .spawn(move || read_late_lines(&shared, index, reader, &gone, &late_tx))
    };
    let reader_thread = match reader_thread {
        Ok(t) => t,
        Err(e) => return ConnectionEnd::Error(format!("spawn: {e}")),
    };

    let mut writer = Writer {
        shared,
        index,
        out,
        split: behavior.write_split,
        budget: behavior.disconnect_after_bytes,
        zstd: if session.zstd {
            match zstd::stream::write::Encoder::new(Vec::new(), 0) {
                Ok(e) => Some(e),
                Err(e) => return ConnectionEnd::Error(e.to_string()),
            }
        } else {
            None
        },
        plain: Vec::new(),
        pending: Vec::new(),
        hasher: Sha256::new(),
        ts_out: session.ts_out,
        last_write: Instant::now(),
    };
    let end = if behavior.stall_after_auth {
        stall(shared, &client_gone)
    } else {
        stream_records(&mut writer, &behavior, &subs, &client_gone, &late_rx)
    };
    let _ = writer.out.shutdown(Shutdown::Both);
    let _ = reader_thread.join();
    end
}

fn read_late_lines(
    shared: &Shared,
    index: usize,
    mut reader: LineReader,
    gone: &AtomicBool,
    late: &mpsc::Sender<BTreeMap<String, String>>,
) {
    loop {
        match reader.read_line() {
            Ok(line) => match parse_fields(&line) {
                Ok(f) => {
                    let bad = check_subscription(&f, true);
                    let _ = late.send(f.clone());
                    shared.update(index, |log| {
                        log.violations.extend(bad);
                        log.subscriptions.push(SubscriptionLine {
                            fields: f,
                            after_start: true,
                        });
                    });
                }
                Err(why) => shared.update(index, |log| {
                    log.violations
                        .push(format!("line {line:?} after start_session: {why}"));
                }),
            },
            Err(LineError::TooLong) => {
                shared.update(index, |log| {
                    log.violations
                        .push(format!("line longer than {MAX_LINE_LEN} bytes"));
                });
                gone.store(true, Ordering::SeqCst);
                return;
            }
            Err(_) => {
                gone.store(true, Ordering::SeqCst);
                return;
            }
        }
    }
}

/// Sends nothing until the client leaves or the gateway stops.
fn stall(shared: &Shared, gone: &AtomicBool) -> ConnectionEnd {
    loop {
        if shared.stopped() {
            return ConnectionEnd::Stopped;
        }
        if gone.load(Ordering::SeqCst) {
            return ConnectionEnd::ClientClosed;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Why a write stopped.
enum WriteStop {
    /// The scripted byte budget ran out.
    Cut,
    Io(io::Error),
}

/// Writes the DBN stream: plaintext goes to `plain` (records tracked in `pending`),
/// `flush` compresses if needed and writes with the scripted split and byte budget.
struct Writer<'a> {
    shared: &'a Shared,
    index: usize,
    out: TcpStream,
    split: Option<usize>,
    budget: Option<u64>,
    zstd: Option<zstd::stream::write::Encoder<'static, Vec<u8>>>,
    plain: Vec<u8>,
    /// (timeline index of the first, record count, start, end in `plain`) of runs of
    /// equally long timeline records not yet written.
    pending: Vec<(usize, usize, usize, usize)>,
    hasher: Sha256,
    ts_out: bool,
    last_write: Instant,
}

impl Writer<'_> {
    /// Appends a record, with the ts_out suffix when the session asked for it.
    fn push(&mut self, record: &[u8]) -> (usize, usize) {
        let start = self.plain.len();
        self.plain.extend_from_slice(record);
        if self.ts_out {
            self.plain[start] += 2;
            self.plain.extend_from_slice(&now_ns().to_le_bytes());
        }
        (start, self.plain.len())
    }

    fn push_control<R: Record>(&mut self, record: &R) {
        self.push(record.as_ref());
        self.shared
            .update(self.index, |log| log.control_records_sent += 1);
    }

    /// [`Writer::flush`] without finishing, when `due`.
    fn flush_when(&mut self, due: bool) -> Result<(), WriteStop> {
        if due { self.flush(false) } else { Ok(()) }
    }

    /// Writes everything buffered (`finish` ends the zstd frame). Timeline records
    /// are logged once delivered.
    fn flush(&mut self, finish: bool) -> Result<(), WriteStop> {
        let plain = std::mem::take(&mut self.plain);
        let pending = std::mem::take(&mut self.pending);
        let wire = match &mut self.zstd {
            None => plain.clone(),
            Some(enc) => {
                let io = WriteStop::Io;
                enc.write_all(&plain).map_err(io)?;
                if finish {
                    enc.do_finish().map_err(io)?;
                } else {
                    enc.flush().map_err(io)?;
                }
                std::mem::take(enc.get_mut())
            }
        };
        let (written, result) = self.write_wire(&wire);
        // Delivered plaintext: all of it on success; on a cut without compression,
        // the bytes written.
        let delivered = match &result {
            Ok(()) => plain.len(),
            Err(WriteStop::Cut) if self.zstd.is_none() => written,
            Err(_) => 0,
        };
        let keep = self.shared.script.keep_records;
        let mut kept = Vec::new();
        let mut count = 0u64;
        let mut next_index = None;
        for (first, n, s, e) in pending {
            // The records of a run have one length: count those delivered whole.
            let len = (e - s) / n.max(1);
            let whole = if e <= delivered {
                n
            } else if s < delivered && len > 0 {
                (delivered - s) / len
            } else {
                0
            };
            if whole == 0 {
                continue;
            }
            let end = s + whole * len;
            self.hasher.update(&plain[s..end]);
            if keep {
                kept.extend(plain[s..end].chunks(len).map(<[u8]>::to_vec));
            }
            count += whole as u64;
            next_index = Some(first + whole);
        }
        if let Some(next) = next_index {
            self.shared.cursor.fetch_max(next, Ordering::SeqCst);
        }
        let hash = hex::encode(self.hasher.clone().finalize());
        self.shared.update(self.index, |log| {
            log.dbn_bytes_written += written as u64;
            log.records_sent += count;
            log.records_sha256 = hash;
            log.records.extend(kept);
        });
        self.last_write = Instant::now();
        result
    }

    /// Writes `wire` in the scripted pieces, stopping at the byte budget. Returns the
    /// bytes written.
    fn write_wire(&mut self, wire: &[u8]) -> (usize, Result<(), WriteStop>) {
        let mut allowed = wire.len();
        let mut cut = false;
        if let Some(budget) = self.budget {
            let left = usize::try_from(budget).unwrap_or(usize::MAX);
            if left < allowed {
                allowed = left;
                cut = true;
            }
        }
        let piece = self.split.unwrap_or(usize::MAX);
        let mut written = 0;
        while written < allowed {
            if self.shared.stopped() {
                break;
            }
            let end = allowed.min(written.saturating_add(piece));
            if let Err(e) = self.out.write_all(&wire[written..end]) {
                self.charge(written);
                return (written, Err(WriteStop::Io(e)));
            }
            written = end;
        }
        self.charge(written);
        if cut {
            (written, Err(WriteStop::Cut))
        } else {
            (written, Ok(()))
        }
    }

    fn charge(&mut self, n: usize) {
        if let Some(budget) = &mut self.budget {
            *budget = budget.saturating_sub(n as u64);
        }
    }
}

fn stop_end(stop: WriteStop) -> ConnectionEnd {
    match stop {
        WriteStop::Cut => ConnectionEnd::Cut,
        WriteStop::Io(e) if is_disconnect(&e) => ConnectionEnd::ClientClosed,
        WriteStop::Io(e) => ConnectionEnd::Error(e.to_string()),
    }
}

/// Overwrites the scripted timestamp field of `record` with `ns`.
fn stamp(record: &mut [u8], field: StampField, ns: u64) {
    let offset = match field {
        StampField::TsEvent => Some(8),
        StampField::TsRecv => match record[1] {
            rtype::MBO => Some(std::mem::offset_of!(MboMsg, ts_recv)),
            rtype::MBP_0 => Some(std::mem::offset_of!(TradeMsg, ts_recv)),
            rtype::MBP_1 => Some(std::mem::offset_of!(Mbp1Msg, ts_recv)),
            rtype::MBP_10 => Some(std::mem::offset_of!(Mbp10Msg, ts_recv)),
            _ => None,
        },
    };
    if let Some(o) = offset.filter(|o| record.len() >= o + 8) {
        record[o..o + 8].copy_from_slice(&ns.to_le_bytes());
    }
}

/// The live metadata the gateway sends first.
fn live_metadata(script: &Script, ts_out: bool, start: u64) -> Metadata {
    let mut metadata = MetadataBuilder::new()
        .dataset(script.dataset.clone())
        .schema(None)
        .start(start)
        .stype_in(None)
        .stype_out(SType::InstrumentId)
        .ts_out(ts_out)
        .build();
    metadata.version = script.metadata_version;
    metadata
}

fn ack_for(fields: &BTreeMap<String, String>) -> Option<SystemMsg> {
    if fields.get("is_last").map(String::as_str) == Some("0") {
        return None;
    }
    let schema = fields.get("schema").map_or("?", String::as_str);
    let msg = match fields.get("id") {
        Some(id) => format!("Subscription request {id} for {schema} data succeeded"),
        None => format!("Subscription request for {schema} data succeeded"),
    };
    SystemMsg::new(now_ns(), Some(SystemCode::SubscriptionAck), &msg).ok()
}

/// Bytes of one generated record on the wire without ts_out.
const BULK_RECORD_LEN: usize = std::mem::size_of::<MboMsg>();

/// Sends a [`Script::raw_stream`] in writes of `write_chunk` bytes.
fn stream_raw(
    w: &mut Writer<'_>,
    behavior: &Behavior,
    raw: &[u8],
    gone: &AtomicBool,
) -> ConnectionEnd {
    for piece in raw.chunks(behavior.write_chunk) {
        if w.shared.stopped() {
            return ConnectionEnd::Stopped;
        }
        if gone.load(Ordering::SeqCst) {
            return ConnectionEnd::ClientClosed;
        }
        let (written, result) = w.write_wire(piece);
        w.shared
            .update(w.index, |log| log.dbn_bytes_written += written as u64);
        if let Err(stop) = result {
            return stop_end(stop);
        }
    }
    ConnectionEnd::Finished
}

/// Writes a [`Behavior::long_line`] of `bytes` bytes, then waits for the client to
/// close.
fn send_long_line(
    shared: &Shared,
    index: usize,
    out: &mut TcpStream,
    reader: &mut LineReader,
    bytes: usize,
) -> ConnectionEnd {
    let piece = [b'x'; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        if shared.stopped() {
            return ConnectionEnd::Stopped;
        }
        let n = left.min(piece.len());
        if let Err(e) = out.write_all(&piece[..n]) {
            return if is_disconnect(&e) {
                ConnectionEnd::ClientClosed
            } else {
                ConnectionEnd::Error(e.to_string())
            };
        }
        left -= n;
        shared.update(index, |log| log.long_line_written += n as u64);
    }
    // The whole line is out: the client has to give up on its own.
    loop {
        if let Err(e) = reader.read_line() {
            return line_end(e);
        }
    }
}

/// Sends metadata, acks, mappings and the timeline as scripted.
fn stream_records(
    w: &mut Writer<'_>,
    behavior: &Behavior,
    subs: &[BTreeMap<String, String>],
    gone: &AtomicBool,
    late: &mpsc::Receiver<BTreeMap<String, String>>,
) -> ConnectionEnd {
    let shared = w.shared;
    let script = &shared.script;
    let timeline = &script.timeline;
    if let Some(raw) = &script.raw_stream {
        return stream_raw(w, behavior, raw, gone);
    }
    // Generated records in blocks, when nothing needs them one by one.
    let bulk = script.bulk
        && matches!(timeline, Timeline::Generated { run: 1, .. })
        && !w.ts_out
        && script.stamp.is_none()
        && script.pace.is_none();

    // Where this connection starts in the timeline.
    let replay_from = subs
        .iter()
        .filter_map(|f| f.get("start"))
        .map(|s| start_ns(s))
        .min();
    let mut next = match replay_from {
        Some(start) => timeline.first_at_or_after(start),
        None => shared
            .cursor
            .load(Ordering::SeqCst)
            .saturating_add(behavior.skip_on_resume),
    }
    .min(timeline.len());
    shared.update(w.index, |log| log.first_record_index = Some(next));

    let first_ts = if next < timeline.len() {
        timeline.ts_event(next)
    } else {
        now_ns()
    };
    let metadata = live_metadata(script, w.ts_out, first_ts);
    if let Err(e) = MetadataEncoder::new(&mut w.plain).encode(&metadata) {
        return ConnectionEnd::Error(format!("encoding metadata: {e}"));
    }
    if script.acks {
        for f in subs {
            if let Some(ack) = ack_for(f) {
                w.push_control(&ack);
            }
        }
    }
    if script.symbol_mappings {
        let mut symbols: Vec<(&str, SType)> = Vec::new();
        for f in subs {
            let stype = match f.get("stype_in").map(String::as_str) {
                Some("parent") => SType::Parent,
                Some("continuous") => SType::Continuous,
                Some("instrument_id") => SType::InstrumentId,
                _ => SType::RawSymbol,
            };
            for s in f.get("symbols").map_or("", String::as_str).split(',') {
                if !s.is_empty() && s != "ALL_SYMBOLS" && !symbols.iter().any(|(x, _)| *x == s) {
                    symbols.push((s, stype));
                }
            }
        }
        for (j, (symbol, stype)) in symbols.into_iter().enumerate() {
            let id = FIRST_MAPPED_INSTRUMENT_ID.saturating_add(j as u32);
            let mapping = SymbolMappingMsg::new(
                id,
                first_ts,
                stype,
                symbol,
                SType::InstrumentId,
                &id.to_string(),
                first_ts,
                u64::MAX,
            );
            if let Ok(mapping) = mapping {
                w.push_control(&mapping);
            }
        }
    }

    let mut sent: u64 = 0;
    let mut scratch = Vec::with_capacity(1024);
    let paced_start = Instant::now();
    let mut replay_done_sent = false;
    loop {
        if shared.stopped() {
            return ConnectionEnd::Stopped;
        }
        if gone.load(Ordering::SeqCst) {
            return ConnectionEnd::ClientClosed;
        }
        while let Ok(f) = late.try_recv() {
            if let Some(ack) = ack_for(&f).filter(|_| script.acks) {
                w.push_control(&ack);
            }
        }
        if behavior.stall_after_records == Some(sent) {
            if let Err(stop) = w.flush(false) {
                return stop_end(stop);
            }
            return stall(shared, gone);
        }
        if behavior.cut_after_records == Some(sent) {
            // Flushed, not finished: a zstd frame stays open.
            return match w.flush(false) {
                Ok(()) => ConnectionEnd::Cut,
                Err(stop) => stop_end(stop),
            };
        }
        if next >= timeline.len() {
            if script.replay_completed && replay_from.is_some() && !replay_done_sent {
                replay_done_sent = true;
                if let Ok(msg) = SystemMsg::new(
                    now_ns(),
                    Some(SystemCode::ReplayCompleted),
                    "Finished replay",
                ) {
                    w.push_control(&msg);
                }
            }
            if !script.stay_open {
                return match w.flush(true) {
                    Ok(()) => ConnectionEnd::Finished,
                    Err(stop) => stop_end(stop),
                };
            }
            let due = !w.plain.is_empty();
            if let Err(stop) = w.flush_when(due) {
                return stop_end(stop);
            }
            if script
                .heartbeat
                .is_some_and(|every| w.last_write.elapsed() >= every)
            {
                w.push_control(&SystemMsg::heartbeat(now_ns()));
                if let Err(stop) = w.flush(false) {
                    return stop_end(stop);
                }
            }
            thread::sleep(Duration::from_millis(2));
            continue;
        }

        if bulk {
            let room = behavior.write_chunk.saturating_sub(w.plain.len()) / BULK_RECORD_LEN;
            let mut n = room.max(1).min(timeline.len() - next);
            let scripted = [
                behavior.stall_after_records,
                behavior.cut_mid_record_after,
                behavior.cut_after_records,
            ];
            for at in scripted.into_iter().flatten().filter(|&at| at >= sent) {
                n = n.min(usize::try_from(at - sent).unwrap_or(usize::MAX));
            }
            if n > 0 {
                let s = w.plain.len();
                append_generated_records(next as u64, n, &mut w.plain);
                w.pending.push((next, n, s, w.plain.len()));
                next += n;
                sent += n as u64;
                let due = w.plain.len() >= behavior.write_chunk;
                if let Err(stop) = w.flush_when(due) {
                    return stop_end(stop);
                }
                continue;
            }
        }
        scratch.clear();
        timeline.append(next, &mut scratch);
        if let Some(field) = script.stamp {
            stamp(&mut scratch, field, now_ns());
        }
        if behavior.cut_mid_record_after == Some(sent) {
            // Half a record (the header at least partly), then close.
            w.plain.extend_from_slice(&scratch[..scratch.len() / 2]);
            return match w.flush(false) {
                Ok(()) => ConnectionEnd::Cut,
                Err(stop) => stop_end(stop),
            };
        }
        let (s, e) = w.push(&scratch);
        w.pending.push((next, 1, s, e));
        next += 1;
        sent += 1;

        if let Some(rate) = script.pace {
            if let Err(stop) = w.flush(false) {
                return stop_end(stop);
            }
            let due = paced_start + Duration::from_secs_f64(sent as f64 / rate);
            while Instant::now() < due {
                if shared.stopped() || gone.load(Ordering::SeqCst) {
                    break;
                }
                if script
                    .heartbeat
                    .is_some_and(|every| w.last_write.elapsed() >= every)
                {
                    w.push_control(&SystemMsg::heartbeat(now_ns()));
                    if let Err(stop) = w.flush(false) {
                        return stop_end(stop);
                    }
                }
                let left = due.saturating_duration_since(Instant::now());
                thread::sleep(left.min(Duration::from_millis(5)));
            }
        } else {
            let due = w.plain.len() >= behavior.write_chunk;
            if let Err(stop) = w.flush_when(due) {
                return stop_end(stop);
            }
        }
    }
}
