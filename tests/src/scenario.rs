//! What the conformance scenarios ask of a driver and what they read back: one
//! description of a run, one outcome, and the [`Driver`] trait each driver adapter
//! implements, so a single scenario list runs unchanged against mio and tokio.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use dbn::Metadata;
use dbn_pipe_protocol::historical::GetRangeParams;
use dbn_pipe_protocol::live::{AutoReconnect, LiveCompression, ReconnectPolicy, Subscription};
use sha2::{Digest, Sha256};

/// The fake API key every scenario uses (32 characters, never a real key).
pub const KEY: &str = "db-0123456789abcdefghijklmnABCDE";

/// One live connection: where, what to subscribe, and how the consumer behaves.
#[derive(Debug, Clone)]
pub struct LiveRun {
    /// Gateway address, `HOST:PORT`.
    pub addr: String,
    /// Dataset sent in the auth line.
    pub dataset: String,
    /// API key (the fake [`KEY`] unless a scenario tests rejection).
    pub key: String,
    /// Subscriptions, sent in order before `start_session`.
    pub subscriptions: Vec<Subscription>,
    /// Stream compression.
    pub compression: LiveCompression,
    /// Records carry the gateway's send time.
    pub ts_out: bool,
    /// Heartbeat interval asked of the gateway (the timeout is 5 s more).
    pub heartbeat_interval_s: Option<u32>,
    /// Time out after this long without a byte once streaming.
    pub silence_timeout: Option<Duration>,
    /// Time out when authentication does not finish within this.
    pub auth_timeout: Option<Duration>,
    /// Automatic reconnects (off when `None`).
    pub auto_reconnect: Option<AutoReconnect>,
    /// The consumer stops reading after this many records and closes the client.
    pub max_records: Option<u64>,
    /// The consumer stops after the given number of records until the gate opens.
    pub pause: Option<(u64, Gate)>,
    /// Keep every record's bytes in the outcome (else only count and digest).
    pub keep_records: bool,
    /// The decoder's record buffer (default when `None`).
    pub buffer_size: Option<usize>,
}

impl LiveRun {
    /// A run against `addr` for `dataset`, subscribing to `subscription`, keeping
    /// records, everything else default.
    pub fn new(addr: impl Into<String>, dataset: &str, subscription: Subscription) -> Self {
        Self {
            addr: addr.into(),
            dataset: dataset.to_owned(),
            key: KEY.to_owned(),
            subscriptions: vec![subscription],
            compression: LiveCompression::None,
            ts_out: false,
            heartbeat_interval_s: None,
            silence_timeout: None,
            auth_timeout: None,
            auto_reconnect: None,
            max_records: None,
            pause: None,
            keep_records: true,
            buffer_size: None,
        }
    }
}

/// One `timeseries.get_range` download.
#[derive(Debug, Clone)]
pub struct RangeRun {
    /// `https://HOST:PORT` of the server.
    pub base_url: String,
    /// PEM of the server's root certificate, trusted in addition to nothing else.
    pub root_pem: String,
    /// The request.
    pub params: GetRangeParams,
    /// Keep every record's bytes in the outcome (else only count and digest).
    pub keep_records: bool,
    /// Time out when the server sends nothing for this long.
    pub read_timeout: Option<Duration>,
}

/// Where a paused consumer waits: the adapter calls [`Gate::wait`] when it stops
/// pulling records; the scenario sees [`Gate::wait_paused`] and later opens it.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    state: Arc<(Mutex<GateState>, Condvar)>,
}

#[derive(Debug, Default)]
struct GateState {
    paused: bool,
    open: bool,
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Called by the consumer: marks it paused and blocks until the gate opens.
    pub fn wait(&self) {
        let (lock, changed) = &*self.state;
        let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
        state.paused = true;
        changed.notify_all();
        while !state.open {
            state = changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Blocks until the consumer paused, or `timeout` passed; returns whether it did.
    pub fn wait_paused(&self, timeout: Duration) -> bool {
        let (lock, changed) = &*self.state;
        let state = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (state, _) = changed
            .wait_timeout_while(state, timeout, |s| !s.paused)
            .unwrap_or_else(|e| e.into_inner());
        state.paused
    }

    /// Lets the consumer go on.
    pub fn open(&self) {
        let (lock, changed) = &*self.state;
        lock.lock().unwrap_or_else(|e| e.into_inner()).open = true;
        changed.notify_all();
    }
}

/// How a run failed, in driver-neutral terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The driver's error category, as its `Display` names it (`"timeout"`, ...).
    pub kind: String,
    /// The error's `Display`, with its sources joined by `": "`.
    pub message: String,
    /// The error's `Debug` (`{:?}`), for checks that no secret appears in it.
    pub debug: String,
}

impl Failure {
    /// A failure from any error: its kind name and full message chain.
    pub fn new(kind: impl std::fmt::Display, err: &dyn std::error::Error) -> Self {
        let mut message = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        Self {
            kind: kind.to_string(),
            message,
            debug: format!("{err:?}"),
        }
    }
}

/// Instantiates scenario functions generic over a driver (`fn name<D: ...>()`) as
/// `#[test]`s in two modules, `mio` and `tokio`, so every scenario runs against both
/// drivers with the same assertions.
#[macro_export]
macro_rules! for_each_driver {
    ($($name:ident),* $(,)?) => {
        mod mio {
            $(#[test] fn $name() { super::$name::<$crate::drivers::Mio>() })*
        }
        mod tokio {
            $(#[test] fn $name() { super::$name::<$crate::drivers::Tokio>() })*
        }
    };
}

/// Checks that a run failed with `kind` and a message holding every text of `says`,
/// and returns the failure.
///
/// # Panics
/// When the run succeeded, failed otherwise, or the message lacks one of `says`.
pub fn assert_failed<D: Driver>(failure: Option<&Failure>, kind: &str, says: &[&str]) -> Failure {
    let failure = failure
        .unwrap_or_else(|| panic!("{}: expected a {kind} failure, the run succeeded", D::NAME));
    assert_eq!(failure.kind, kind, "{}: {failure:?}", D::NAME);
    for text in says {
        assert!(
            failure.message.contains(text),
            "{}: {kind} message {:?} does not say {text:?}",
            D::NAME,
            failure.message
        );
    }
    failure.clone()
}

/// Records a consumer received: count, an order-sensitive digest, and optionally
/// the bytes.
#[derive(Debug, Clone, Default)]
pub struct RecordLog {
    count: u64,
    digest: Sha256,
    kept: Option<Vec<Vec<u8>>>,
}

impl RecordLog {
    /// An empty log; `keep` keeps every record's bytes.
    pub fn new(keep: bool) -> Self {
        Self {
            kept: keep.then(Vec::new),
            ..Self::default()
        }
    }

    /// Adds one record.
    pub fn push(&mut self, record: &[u8]) {
        self.count += 1;
        // Records frame themselves (their length is in the header), so the digest of
        // their concatenation identifies the sequence.
        self.digest.update(record);
        if let Some(kept) = &mut self.kept {
            kept.push(record.to_vec());
        }
    }

    /// Records logged.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Lowercase hex sha256 of every record's bytes concatenated in order (as the
    /// mock gateway's `records_sha256`).
    pub fn digest(&self) -> String {
        hex::encode(self.digest.clone().finalize())
    }

    /// The records' bytes, if kept.
    pub fn records(&self) -> Option<&[Vec<u8>]> {
        self.kept.as_deref()
    }
}

impl PartialEq for RecordLog {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.digest() == other.digest()
    }
}

/// What a live run saw.
#[derive(Debug, Clone)]
pub struct LiveOutcome {
    /// Metadata of each connection's stream, in order.
    pub metadata: Vec<Metadata>,
    /// Market-data records (gateway notices excluded), in order.
    pub records: RecordLog,
    /// `code` of each gateway `SystemMsg`/`ErrorMsg` (`None` when it has none).
    pub notices: Vec<Option<u8>>,
    /// One entry per reconnect: the policy and the gap start the driver reported.
    pub reconnects: Vec<(ReconnectPolicy, Option<u64>)>,
    /// How it failed, or `None` when the stream ended cleanly (or the consumer
    /// stopped at `max_records`).
    pub failure: Option<Failure>,
}

impl LiveOutcome {
    /// An empty outcome for a run that keeps records if `keep`.
    pub fn new(keep: bool) -> Self {
        Self {
            metadata: Vec::new(),
            records: RecordLog::new(keep),
            notices: Vec::new(),
            reconnects: Vec::new(),
            failure: None,
        }
    }
}

/// What a download saw.
#[derive(Debug, Clone)]
pub struct RangeOutcome {
    /// The body's metadata.
    pub metadata: Option<Metadata>,
    /// Records, in order.
    pub records: RecordLog,
    /// Server warnings (`X-Warning`).
    pub warnings: Vec<String>,
    /// How it failed, if it did.
    pub failure: Option<Failure>,
}

impl RangeOutcome {
    /// An empty outcome for a run that keeps records if `keep`.
    pub fn new(keep: bool) -> Self {
        Self {
            metadata: None,
            records: RecordLog::new(keep),
            warnings: Vec::new(),
            failure: None,
        }
    }
}

/// What `get_range_to_file` reported.
#[derive(Debug, Clone)]
pub struct FileOutcome {
    /// Bytes the driver said it wrote.
    pub bytes: u64,
    /// Records the driver said it decoded.
    pub records: u64,
    /// Progress reports, `(bytes, records)`, in order.
    pub progress: Vec<(u64, u64)>,
    /// How it failed, if it did.
    pub failure: Option<Failure>,
}

/// A driver as the scenarios see it: each call runs one connection to completion on
/// the calling thread (the tokio adapter builds its own runtime).
pub trait Driver {
    /// `"mio"` or `"tokio"`, for messages.
    const NAME: &'static str;

    /// Runs one live session until it ends, fails, or the consumer stops.
    fn live(run: &LiveRun) -> LiveOutcome;

    /// Downloads one range, decoding its records.
    fn range(run: &RangeRun) -> RangeOutcome;

    /// Downloads one range into `path` as served (`.dbn.zst`).
    fn range_to_file(run: &RangeRun, path: &Path) -> FileOutcome;

    /// Two live sessions and one download at once (on one mio `Poll`, or one tokio
    /// runtime thread).
    fn concurrent(lives: [&LiveRun; 2], range: &RangeRun) -> ([LiveOutcome; 2], RangeOutcome);

    /// Runs one live session as [`live`](Self::live) does, pulling with `pull`, and
    /// also returns everything the consumer was handed, in order.
    fn live_traced(run: &LiveRun, pull: Pull) -> (LiveOutcome, Vec<Seen>);

    /// Downloads one range as [`range`](Self::range) does, pulling with `pull`.
    fn range_pulled(run: &RangeRun, pull: Pull) -> RangeOutcome;
}

/// Which of a driver's pull APIs a consumer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pull {
    /// One item per call: `next_event` (live), `next_record` (a range).
    Items,
    /// Whole record batches (`next_batch`), and `next_event` for everything else
    /// whenever `next_batch` returns `Ok(None)`.
    Batches,
    /// At most [`Pull::MIXED_TAKE`] records of each batch (the batch is dropped with
    /// the rest in it), then one `next_event` (`next_record` for a tokio range), and
    /// again: records left in a dropped batch must come next, from either API.
    Mixed,
}

impl Pull {
    /// Records a [`Pull::Mixed`] consumer takes from each batch.
    pub const MIXED_TAKE: usize = 3;
}

/// One thing a live consumer was handed, in stream order (what two pull APIs must
/// agree on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The gateway accepted the key (drivers that report it).
    Authenticated,
    /// A connection's metadata (the fields that do not depend on the clock).
    Metadata {
        /// Its dataset.
        dataset: String,
        /// Its DBN version.
        version: u8,
        /// Whether records carry `ts_out`.
        ts_out: bool,
    },
    /// A record other than a gateway notice (market data or a symbol mapping): its
    /// bytes.
    Record(Vec<u8>),
    /// A gateway notice: its `code`.
    Notice(Option<u8>),
    /// The connection dropped and a reconnect is scheduled (drivers that report it):
    /// the error kind's name, `None` for a clean end.
    Disconnected(Option<String>),
    /// A reconnect: the policy and the gap start.
    Reconnected(ReconnectPolicy, Option<u64>),
    /// The end of the stream (drivers that report it as an item).
    End,
}

impl Seen {
    /// A metadata entry.
    pub fn metadata(metadata: &Metadata) -> Self {
        Self::Metadata {
            dataset: metadata.dataset.clone(),
            version: metadata.version,
            ts_out: metadata.ts_out,
        }
    }
}

/// What the `dbn` crate's own decoder (the oracle) makes of a `.dbn.zst` body:
/// its metadata and records (upgraded to DBN v3, as the clients' default).
///
/// # Panics
/// When the body is not valid DBN: the oracle is only asked about bodies the test
/// built.
pub fn oracle(body_zst: &[u8], keep: bool) -> (Metadata, RecordLog) {
    use dbn::decode::dbn::fsm::{DbnFsm, ProcessResult};
    let plain = zstd::stream::decode_all(body_zst).expect("oracle: the body is zstd");
    let mut fsm = DbnFsm::builder().build().expect("oracle: default DbnFsm");
    fsm.write_all(&plain);
    let mut metadata = None;
    let mut records = RecordLog::new(keep);
    loop {
        match fsm.process() {
            ProcessResult::Metadata(m) => metadata = Some(m),
            ProcessResult::Record(()) => {
                records.push(fsm.last_record().expect("oracle: a record").as_ref());
            }
            ProcessResult::ReadMore(_) => break,
            ProcessResult::Err(e) => panic!("oracle: {e}"),
        }
    }
    (metadata.expect("oracle: metadata"), records)
}
