//! The scenarios' [`Driver`] on `dbn-pipe-mio`: connections registered on one
//! application-owned `Poll`, driven by the loop an application would write (pull
//! items until `Ok(None)`, wait for readiness or the earliest deadline, hand the
//! events and the time to the connections).

use std::io;
use std::path::Path;
use std::time::Instant;

use dbn_pipe_mio::{
    Error, HistoricalConnection, HistoricalItem, HistoricalOptions, LiveConnection, LiveItem,
    LiveOptions,
};
use dbn_pipe_protocol::live::ApiKey;
use dbn_pipe_protocol::tls::TlsConfig;
use mio::{Events, Poll, Token};

use super::{is_market_data, notice_code};
use crate::scenario::{
    Driver, Failure, FileOutcome, LiveOutcome, LiveRun, Pull, RangeOutcome, RangeRun, Seen,
};

/// `dbn-pipe-mio` as a scenario driver.
#[derive(Debug, Clone, Copy)]
pub struct Mio;

fn failure(err: &Error) -> Failure {
    Failure::new(err.kind(), err)
}

/// One live connection of a run and what it saw.
struct LiveTask<'r> {
    run: &'r LiveRun,
    conn: Option<LiveConnection>,
    out: LiveOutcome,
    paused: bool,
    pull: Pull,
    /// Everything handed out, in order, when asked for.
    trace: Option<Vec<Seen>>,
}

impl<'r> LiveTask<'r> {
    fn new(poll: &Poll, token: Token, run: &'r LiveRun) -> Self {
        let mut out = LiveOutcome::new(run.keep_records);
        let conn = match connect_live(poll, token, run) {
            Ok(conn) => Some(conn),
            Err(err) => {
                out.failure = Some(failure(&err));
                None
            }
        };
        Self {
            run,
            conn,
            out,
            paused: false,
            pull: Pull::Items,
            trace: None,
        }
    }

    /// Whether the consumer stops here: pauses at the gate once, and stops for good
    /// after `max_records`.
    fn stops(run: &LiveRun, out: &LiveOutcome, paused: &mut bool) -> bool {
        if let Some((after, gate)) = &run.pause {
            if !*paused && out.records.count() >= *after {
                *paused = true;
                // A consumer that stops: nothing pulls from the connection.
                gate.wait();
            }
        }
        run.max_records
            .is_some_and(|max| out.records.count() >= max)
    }

    /// Pulls everything ready; drops the connection when it is over.
    fn pump(&mut self) {
        let Some(conn) = &mut self.conn else { return };
        let out = &mut self.out;
        let trace = &mut self.trace;
        let result = 'pull: loop {
            if Self::stops(self.run, out, &mut self.paused) {
                break Ok(true);
            }
            if self.pull != Pull::Items {
                match conn.next_batch() {
                    Ok(Some(batch)) => {
                        for record in batch.take(take(self.pull)) {
                            record_live(out, trace, LiveItem::Record(record));
                            if Self::stops(self.run, out, &mut self.paused) {
                                // The rest of the batch stays in the connection.
                                break 'pull Ok(true);
                            }
                        }
                        if self.pull == Pull::Batches {
                            continue;
                        }
                    }
                    Ok(None) => {}
                    Err(err) => break Err(err),
                }
            }
            match conn.next_event() {
                Ok(Some(item)) => record_live(out, trace, item),
                Ok(None) => break Ok(conn.is_finished()),
                Err(err) => break Err(err),
            }
        };
        match result {
            Ok(false) => {}
            Ok(true) => self.conn = None,
            Err(err) => {
                out.failure = Some(failure(&err));
                self.conn = None;
            }
        }
    }
}

/// How many records of a batch a consumer takes.
fn take(pull: Pull) -> usize {
    match pull {
        Pull::Mixed => Pull::MIXED_TAKE,
        Pull::Items | Pull::Batches => usize::MAX,
    }
}

fn record_live(out: &mut LiveOutcome, trace: &mut Option<Vec<Seen>>, item: LiveItem<'_>) {
    if let Some(trace) = trace {
        trace.push(match &item {
            LiveItem::Authenticated { .. } => Seen::Authenticated,
            LiveItem::Metadata(metadata) => Seen::metadata(metadata),
            LiveItem::Record(record) => Seen::Record(record.as_ref().to_vec()),
            LiveItem::Gateway { record, .. } => Seen::Notice(notice_code(record)),
            LiveItem::Disconnected { kind, .. } => {
                Seen::Disconnected(kind.map(|kind| kind.to_string()))
            }
            LiveItem::Reconnected { policy, gap_from } => Seen::Reconnected(*policy, *gap_from),
            LiveItem::End => Seen::End,
            other => panic!("mio: an item the trace does not know: {other:?}"),
        });
    }
    match item {
        LiveItem::Record(record) if is_market_data(record.header().rtype) => {
            out.records.push(record.as_ref());
        }
        LiveItem::Gateway { record, .. } => out.notices.push(notice_code(&record)),
        LiveItem::Metadata(metadata) => out.metadata.push(*metadata),
        LiveItem::Reconnected { policy, gap_from } => out.reconnects.push((policy, gap_from)),
        _ => {}
    }
}

fn connect_live(poll: &Poll, token: Token, run: &LiveRun) -> Result<LiveConnection, Error> {
    let key = ApiKey::new(run.key.clone())?;
    let mut options = LiveOptions::new(key, run.dataset.clone())
        .addr(run.addr.clone())
        .compression(run.compression)
        .ts_out(run.ts_out);
    if let Some(s) = run.heartbeat_interval_s {
        options = options.heartbeat_interval_s(s);
    }
    if let Some(timeout) = run.silence_timeout {
        options = options.silence_timeout(timeout);
    }
    if let Some(timeout) = run.auth_timeout {
        options = options.auth_timeout(timeout);
    }
    if let Some(reconnect) = &run.auto_reconnect {
        options = options.auto_reconnect(reconnect.clone());
    }
    if let Some(bytes) = run.buffer_size {
        options = options.buffer_size(bytes);
    }
    let now = Instant::now();
    let mut conn = LiveConnection::connect(poll.registry(), token, options, now)?;
    for subscription in &run.subscriptions {
        conn.subscribe(subscription.clone())?;
    }
    conn.start(now)?;
    Ok(conn)
}

/// One download and what it saw.
struct RangeTask {
    conn: Option<HistoricalConnection>,
    out: RangeOutcome,
    file: FileOutcome,
    pull: Pull,
}

impl RangeTask {
    fn new(poll: &Poll, token: Token, run: &RangeRun, to_file: Option<&Path>) -> Self {
        let mut task = Self {
            conn: None,
            out: RangeOutcome::new(run.keep_records),
            file: FileOutcome {
                bytes: 0,
                records: 0,
                progress: Vec::new(),
                failure: None,
            },
            pull: Pull::Items,
        };
        match connect_range(poll, token, run, to_file) {
            Ok(conn) => task.conn = Some(conn),
            Err(err) => task.fail(&err),
        }
        task
    }

    fn fail(&mut self, err: &Error) {
        self.out.failure = Some(failure(err));
        self.file.failure = Some(failure(err));
        self.conn = None;
    }

    fn pump(&mut self) {
        let Some(conn) = &mut self.conn else { return };
        let result = loop {
            if self.pull != Pull::Items {
                match conn.next_batch() {
                    Ok(Some(batch)) => {
                        for record in batch.take(take(self.pull)) {
                            self.out.records.push(record.as_ref());
                        }
                        if self.pull == Pull::Batches {
                            continue;
                        }
                    }
                    Ok(None) => {}
                    Err(err) => break Err(err),
                }
            }
            match conn.next_event() {
                Ok(Some(HistoricalItem::Warning(w))) => self.out.warnings.push(w),
                Ok(Some(HistoricalItem::Metadata(m))) => self.out.metadata = Some(*m),
                Ok(Some(HistoricalItem::Record(record))) => self.out.records.push(record.as_ref()),
                Ok(Some(HistoricalItem::Progress(p))) => {
                    self.file.progress.push((p.bytes_written, p.records));
                }
                Ok(Some(HistoricalItem::Done { file })) => {
                    if let Some(p) = file {
                        self.file.bytes = p.bytes_written;
                        self.file.records = p.records;
                    }
                    break Ok(true);
                }
                Ok(Some(_)) => {}
                Ok(None) => break Ok(false),
                Err(err) => break Err(err),
            }
        };
        match result {
            Ok(false) => {}
            Ok(true) => self.conn = None,
            Err(err) => self.fail(&err),
        }
    }
}

fn connect_range(
    poll: &Poll,
    token: Token,
    run: &RangeRun,
    to_file: Option<&Path>,
) -> Result<HistoricalConnection, Error> {
    let tls = TlsConfig::builder()
        .without_webpki_roots()
        .add_pem(run.root_pem.as_bytes())?
        .build()?;
    let mut options = HistoricalOptions::new(ApiKey::new(crate::scenario::KEY)?)
        .base_url(&run.base_url)
        .tls(tls);
    if let Some(timeout) = run.read_timeout {
        options = options.read_timeout(timeout);
    }
    let mut conn = HistoricalConnection::connect(poll.registry(), token, options, Instant::now())?;
    match to_file {
        Some(path) => conn.get_range_to_file(&run.params, path)?,
        None => conn.get_range(&run.params)?,
    }
    Ok(conn)
}

/// The application's loop: pull until nothing is ready, then wait for readiness or
/// the earliest deadline, until every connection is over.
fn drive(poll: &mut Poll, lives: &mut [LiveTask<'_>], mut range: Option<&mut RangeTask>) {
    let mut events = Events::with_capacity(64);
    loop {
        for task in lives.iter_mut() {
            task.pump();
        }
        if let Some(task) = range.as_deref_mut() {
            task.pump();
        }
        let live_deadlines = lives
            .iter()
            .filter_map(|t| t.conn.as_ref().map(LiveConnection::poll_timeout));
        let range_deadline = range
            .as_deref()
            .and_then(|t| t.conn.as_ref().map(HistoricalConnection::poll_timeout));
        let open: Vec<Option<Instant>> = live_deadlines.chain(range_deadline).collect();
        if open.is_empty() {
            return;
        }
        let deadline = open.into_iter().flatten().min();
        let wait = deadline.map(|at| at.saturating_duration_since(Instant::now()));
        match poll.poll(&mut events, wait) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => panic!("mio poll failed: {err}"),
        }
        let now = Instant::now();
        for event in events.iter() {
            for task in lives.iter_mut() {
                if let Some(conn) = &mut task.conn {
                    conn.handle_event(event, now);
                }
            }
            if let Some(conn) = range.as_deref_mut().and_then(|t| t.conn.as_mut()) {
                conn.handle_event(event, now);
            }
        }
        for task in lives.iter_mut() {
            if let Some(conn) = &mut task.conn {
                conn.handle_timeout(now);
            }
        }
        if let Some(conn) = range.as_deref_mut().and_then(|t| t.conn.as_mut()) {
            conn.handle_timeout(now);
        }
    }
}

const RANGE_TOKEN: Token = Token(1_000);

impl Driver for Mio {
    const NAME: &'static str = "mio";

    fn live(run: &LiveRun) -> LiveOutcome {
        let mut poll = Poll::new().expect("a mio Poll");
        let mut tasks = [LiveTask::new(&poll, Token(0), run)];
        drive(&mut poll, &mut tasks, None);
        let [task] = tasks;
        task.out
    }

    fn range(run: &RangeRun) -> RangeOutcome {
        let mut poll = Poll::new().expect("a mio Poll");
        let mut task = RangeTask::new(&poll, RANGE_TOKEN, run, None);
        drive(&mut poll, &mut [], Some(&mut task));
        task.out
    }

    fn range_to_file(run: &RangeRun, path: &Path) -> FileOutcome {
        let mut poll = Poll::new().expect("a mio Poll");
        let mut task = RangeTask::new(&poll, RANGE_TOKEN, run, Some(path));
        drive(&mut poll, &mut [], Some(&mut task));
        task.file
    }

    fn concurrent(lives: [&LiveRun; 2], range: &RangeRun) -> ([LiveOutcome; 2], RangeOutcome) {
        let mut poll = Poll::new().expect("a mio Poll");
        let mut tasks = [
            LiveTask::new(&poll, Token(0), lives[0]),
            LiveTask::new(&poll, Token(1), lives[1]),
        ];
        let mut range_task = RangeTask::new(&poll, RANGE_TOKEN, range, None);
        drive(&mut poll, &mut tasks, Some(&mut range_task));
        let [a, b] = tasks;
        ([a.out, b.out], range_task.out)
    }

    fn live_traced(run: &LiveRun, pull: Pull) -> (LiveOutcome, Vec<Seen>) {
        let mut poll = Poll::new().expect("a mio Poll");
        let mut task = LiveTask::new(&poll, Token(0), run);
        task.pull = pull;
        task.trace = Some(Vec::new());
        drive(&mut poll, std::slice::from_mut(&mut task), None);
        (task.out, task.trace.unwrap_or_default())
    }

    fn range_pulled(run: &RangeRun, pull: Pull) -> RangeOutcome {
        let mut poll = Poll::new().expect("a mio Poll");
        let mut task = RangeTask::new(&poll, RANGE_TOKEN, run, None);
        task.pull = pull;
        drive(&mut poll, &mut [], Some(&mut task));
        task.out
    }
}
