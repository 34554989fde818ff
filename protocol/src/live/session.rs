//! The Live API session as one sans-IO state machine.

use std::collections::VecDeque;
use std::time::Instant;

use dbn::{Metadata, RecordRef, rtype};

use super::lines::{LineReader, excerpt, field};
use super::notice::GatewayNotice;
use super::replay::{Class, Delivery};
use super::requests::{START_SESSION, auth_request, subscription_lines};
use super::subscription::{Start, Subscription};
use super::{LiveCompression, LiveConfig};
use crate::{
    Compression, Decoded, Error, ErrorKind, RecordBatch, StreamConfig, StreamDecoder, TimerKind,
};

/// How a reconnect resubscribes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReconnectPolicy {
    /// As the official clients: resubscribe without `start`. Records sent while
    /// disconnected are lost; [`LiveEvent::Reconnected`] says from when.
    Resubscribe,
    /// Resubscribe with `start` at the index timestamp of the last delivered record
    /// and drop the replayed records already delivered, so every record is delivered
    /// exactly once (within the gateway's intraday replay window).
    ///
    /// Limits: duplicates are recognised by the last delivered index timestamp and how
    /// many records carried it, across all subscriptions, so it assumes the replay
    /// repeats records at that timestamp in the original order. Snapshot
    /// subscriptions are re-sent as snapshots (a fresh book). When nothing had been
    /// delivered, subscriptions are re-sent with their own start (none if they had
    /// none). Gateway notices and symbol mappings are delivered again, not dropped.
    GapFill,
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// Bytes received on the connection (control lines and DBN).
    pub bytes_received: u64,
    /// `None` for a clean end; the truncation (record, metadata, zstd frame) otherwise.
    pub truncated: Option<Error>,
}

impl Closed {
    /// Whether the stream ended on a record boundary.
    pub fn is_clean(&self) -> bool {
        self.truncated.is_none()
    }
}

/// What a [`LiveSession`] has for the application, in order.
#[derive(Debug)]
pub enum LiveEvent<'a> {
    /// The gateway accepted the key; `session_id` is its opaque id.
    Authenticated {
        /// The gateway's session id.
        session_id: &'a str,
    },
    /// A new connection was authenticated after [`LiveSession::reconnect`] and the
    /// subscriptions were sent again.
    Reconnected {
        /// The policy that ran.
        policy: ReconnectPolicy,
        /// With [`ReconnectPolicy::Resubscribe`]: records after this index timestamp
        /// (that of the last delivered record) may be missing. `None` when nothing
        /// was delivered before, or with [`ReconnectPolicy::GapFill`].
        gap_from: Option<u64>,
    },
    /// The DBN metadata of the stream (once per connection).
    Metadata(Box<Metadata>),
    /// Market-data records (and symbol mappings), borrowed from the decoder.
    Records(LiveBatch<'a>),
    /// A gateway `SystemMsg` or `ErrorMsg` record, with its classification.
    Gateway {
        /// The record.
        record: RecordRef<'a>,
        /// What it says.
        notice: GatewayNotice<'a>,
    },
    /// The connection ended (after [`LiveSession::handle_eof`]); every record was
    /// delivered before this event.
    Closed(Closed),
}

/// Records of one [`LiveEvent::Records`], in stream order. Each yielded record counts
/// as delivered; the rest stay buffered for the next poll when the batch is dropped.
#[derive(Debug)]
pub struct LiveBatch<'a> {
    records: RecordBatch<'a>,
    delivery: &'a mut Delivery,
}

impl<'a> Iterator for LiveBatch<'a> {
    type Item = RecordRef<'a>;

    // Always inlined: with `#[inline]` LLVM kept it out of line in callers in other
    // crates, and every record paid a call and reloaded the batch from memory.
    #[inline(always)]
    fn next(&mut self) -> Option<RecordRef<'a>> {
        loop {
            // One table look-up classifies the record as it is taken; gateway notices
            // stay buffered: they come as their own event.
            let (rec, class) = self.records.next_classified(|rtype| {
                let class = Class::of(rtype);
                (class != Class::Notice).then_some(class)
            })?;
            if self.delivery.admit_as(class, &rec) {
                return Some(rec);
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, self.records.size_hint().1)
    }
}

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the greeting line.
    Greeting,
    /// Waiting for `cram=<challenge>`.
    Challenge,
    /// The auth request is out; waiting for `success=...`.
    AuthResponse,
    /// Authenticated; subscriptions may be sent; `start_session` not yet sent.
    Authenticated,
    /// `start_session` sent; the DBN stream flows.
    Streaming,
    /// The connection is over (closed or failed).
    Ended,
}

/// Events that borrow nothing from the decoder, queued in order.
#[derive(Debug)]
enum Pending {
    Authenticated,
    Reconnected {
        policy: ReconnectPolicy,
        gap_from: Option<u64>,
    },
    Closed(Closed),
}

/// A Databento Live API session: CRAM authentication, subscriptions, `start_session`
/// and the DBN stream (plain or zstd), with no I/O of its own.
///
/// # Contract
///
/// - Create it when the TCP connection is up: [`new`](Self::new) arms the
///   authentication deadline from `now`.
/// - Input: [`handle_input`](Self::handle_input) with the bytes read and the time they
///   arrived; it returns how many it took (fewer = backpressure: keep the rest, poll,
///   offer them again). End of input: [`handle_eof`](Self::handle_eof).
/// - Output: after every call above (and after [`subscribe`](Self::subscribe),
///   [`start`](Self::start), [`handle_timeout`](Self::handle_timeout),
///   [`reconnect`](Self::reconnect)), drain [`poll_transmit`](Self::poll_transmit)
///   into the socket and [`poll_event`](Self::poll_event) until `Ok(None)`, then wait
///   for input or [`poll_timeout`](Self::poll_timeout).
/// - Time: the session never reads a clock. Pass `now` in; call
///   [`handle_timeout`](Self::handle_timeout) when the deadline from
///   [`poll_timeout`](Self::poll_timeout) passes.
/// - Every piece of state lives here, so a driver can be cancelled anywhere (for
///   example in `tokio::select!`) without losing or half-sending anything: a line is
///   either in the transmit buffer or not.
///
/// # Example
///
/// A whole session against an in-memory gateway:
///
/// ```
/// use std::time::{Duration, Instant};
/// use dbn::Schema;
/// use dbn_pipe_protocol::live::{ApiKey, LiveConfig, LiveEvent, LiveSession, Subscription};
///
/// # fn main() -> Result<(), dbn_pipe_protocol::Error> {
/// let key = ApiKey::new("db-0123456789abcdefghijklmnABCDE")?;
/// let now = Instant::now(); // the driver's clock; tests move it by hand
/// let mut session = LiveSession::new(LiveConfig::new(key, "GLBX.MDP3"), now)?;
/// session.subscribe(Subscription::new(Schema::Mbo, ["ESH1"]))?;
/// session.start(now)?; // sent right after authentication
///
/// let mut to_gateway = Vec::new();
/// session.handle_input(now, b"lsg_version=0.4.2\ncram=t7kNhwj4xqR0QYjzFKtBEG2ec2pXJ4FK\n");
/// let _ = session.poll_transmit(&mut to_gateway);
/// assert!(to_gateway.starts_with(b"auth="));
///
/// session.handle_input(now, b"success=1|session_id=5|\n");
/// to_gateway.clear();
/// let _ = session.poll_transmit(&mut to_gateway);
/// assert!(to_gateway.ends_with(b"start_session\n"));
///
/// # let dbn_stream = dbn_pipe_protocol::doc_support::sample_dbn();
/// session.handle_input(now + Duration::from_millis(1), &dbn_stream); // the DBN stream
/// session.handle_eof();
/// let mut records = 0;
/// while let Some(event) = session.poll_event()? {
///     match event {
///         LiveEvent::Authenticated { session_id } => assert_eq!(session_id, "5"),
///         LiveEvent::Metadata(metadata) => assert_eq!(metadata.dataset, "GLBX.MDP3"),
///         LiveEvent::Records(batch) => records += batch.count(),
///         LiveEvent::Gateway { notice, .. } => println!("{notice:?}"),
///         LiveEvent::Reconnected { .. } => {}
///         LiveEvent::Closed(closed) => assert!(closed.is_clean()),
///     }
/// }
/// assert_eq!(records, 2);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct LiveSession {
    config: LiveConfig,
    phase: Phase,
    lines: LineReader,
    transmit: Vec<u8>,
    subscriptions: Vec<(Subscription, u32)>,
    next_id: u32,
    start_requested: bool,
    stream: StreamDecoder,
    /// `start_session` went out on this connection and the stream has not concluded.
    stream_active: bool,
    session_id: Option<String>,
    pending: VecDeque<Pending>,
    /// Bytes received on this connection.
    received: u64,
    eof: bool,
    auth_deadline: Option<Instant>,
    heartbeat_deadline: Option<Instant>,
    failure: Option<Error>,
    /// `poll_event` has returned `failure` at least once.
    failure_reported: bool,
    delivery: Delivery,
    /// The stream offset of the record [`record_ready`](Self::record_ready) last found
    /// ready: the stream's bytes at an offset never change, so
    /// [`poll_record`](Self::poll_record) takes that record without looking again.
    /// Cleared with the stream (a new connection's offsets start over).
    ready_at: Option<u64>,
    /// The policy of a reconnect in progress (until re-authenticated).
    reconnecting: Option<ReconnectPolicy>,
}

impl LiveSession {
    /// Creates a session for a connection that is up at `now`.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid dataset, heartbeat interval, user agent
    /// extension or decoder setting.
    pub fn new(config: LiveConfig, now: Instant) -> Result<Self, Error> {
        config.validate()?;
        let stream = Self::new_stream(&config)?;
        Ok(Self {
            lines: LineReader::new(config.max_line_len),
            auth_deadline: Some(now + config.auth_timeout),
            config,
            phase: Phase::Greeting,
            transmit: Vec::new(),
            subscriptions: Vec::new(),
            next_id: 1,
            start_requested: false,
            stream,
            stream_active: false,
            session_id: None,
            pending: VecDeque::new(),
            received: 0,
            eof: false,
            heartbeat_deadline: None,
            failure: None,
            failure_reported: false,
            delivery: Delivery::default(),
            ready_at: None,
            reconnecting: None,
        })
    }

    fn new_stream(config: &LiveConfig) -> Result<StreamDecoder, Error> {
        StreamDecoder::new(StreamConfig {
            decoder: config.decoder.clone(),
            compression: match config.compression {
                LiveCompression::None => Compression::None,
                LiveCompression::Zstd => Compression::Zstd,
            },
            ..StreamConfig::default()
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LiveConfig {
        &self.config
    }

    /// The gateway's session id, once authenticated.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// Whether the gateway accepted the key on the current connection.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.phase, Phase::Authenticated | Phase::Streaming)
            || (self.phase == Phase::Ended && self.session_id.is_some())
    }

    /// Whether the current connection is over (closed or failed).
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// Bytes received on the current connection.
    pub fn bytes_received(&self) -> u64 {
        self.received
    }

    /// Adds a subscription and returns its id. Sent at once when authenticated,
    /// otherwise right after authentication; sent again on every reconnect.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] (nothing is sent) for an empty symbol list, a symbol
    /// the control line cannot carry, a snapshot on a schema other than MBO, a
    /// snapshot with a start, or a start once the session was started.
    pub fn subscribe(&mut self, subscription: Subscription) -> Result<u32, Error> {
        subscription.validate()?;
        if subscription.start.is_some() && self.start_requested {
            return Err(Error::InvalidRequest(
                "a subscription start after the session started would be ignored by the gateway"
                    .to_owned(),
            ));
        }
        let id = match subscription.id {
            Some(id) => id,
            None => {
                let id = self.next_id;
                self.next_id = self.next_id.wrapping_add(1).max(1);
                id
            }
        };
        if matches!(self.phase, Phase::Authenticated | Phase::Streaming) {
            let start = subscription.start.clone();
            subscription_lines(&subscription, id, start.as_ref(), &mut self.transmit);
        }
        self.subscriptions.push((subscription, id));
        Ok(id)
    }

    /// Asks the gateway to start sending data: `start_session` goes out now when
    /// authenticated, otherwise right after authentication (and after every
    /// reconnect).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] when start was already requested.
    pub fn start(&mut self, now: Instant) -> Result<(), Error> {
        if self.start_requested {
            return Err(Error::InvalidRequest(
                "start_session was already requested".to_owned(),
            ));
        }
        self.start_requested = true;
        if self.phase == Phase::Authenticated {
            self.begin_streaming(now);
        }
        Ok(())
    }

    /// Takes bytes received from the gateway at `now`; returns how many were taken.
    pub fn handle_input(&mut self, now: Instant, input: &[u8]) -> usize {
        if input.is_empty() {
            return 0;
        }
        if self.phase == Phase::Streaming && !self.eof {
            // The gateway is alive, even if backpressure keeps its bytes waiting.
            self.heartbeat_deadline = Some(now + self.config.heartbeat_timeout());
        }
        let mut used = 0;
        while used < input.len() {
            match self.phase {
                Phase::Greeting | Phase::Challenge | Phase::AuthResponse => {
                    match self.lines.read(&input[used..], self.received) {
                        Ok((n, line)) => {
                            used += n;
                            self.received += n as u64;
                            if let Some(line) = line {
                                self.on_line(&line, now);
                            }
                        }
                        Err(err) => {
                            self.fail(err);
                            break;
                        }
                    }
                }
                Phase::Authenticated => {
                    self.fail(Error::UnexpectedData {
                        offset: self.received,
                    });
                    break;
                }
                Phase::Streaming => {
                    let n = self.stream.handle_input(&input[used..]);
                    used += n;
                    self.received += n as u64;
                    break;
                }
                Phase::Ended => break,
            }
        }
        used
    }

    /// The gateway closed the connection (or the driver gave up on it). Records
    /// still buffered are delivered, then [`LiveEvent::Closed`] says whether the
    /// stream ended cleanly.
    pub fn handle_eof(&mut self) {
        if self.eof {
            return;
        }
        self.eof = true;
        self.heartbeat_deadline = None;
        match self.phase {
            Phase::Greeting | Phase::Challenge | Phase::AuthResponse => {
                self.fail(Error::ClosedDuringHandshake {
                    received: self.received,
                });
            }
            Phase::Authenticated => {
                self.phase = Phase::Ended;
                self.pending.push_back(Pending::Closed(Closed {
                    bytes_received: self.received,
                    truncated: None,
                }));
            }
            Phase::Streaming | Phase::Ended => {
                if self.stream_active {
                    // The verdict comes through poll_event, after the records.
                    let _ = self.stream.finish();
                }
            }
        }
    }

    /// Fires the deadlines that have passed at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Greeting | Phase::Challenge | Phase::AuthResponse => {
                if self.auth_deadline.is_some_and(|d| now >= d) {
                    self.fail(Error::Timeout {
                        timer: TimerKind::Auth,
                        after: self.config.auth_timeout,
                    });
                }
            }
            Phase::Streaming => {
                if !self.eof && self.heartbeat_deadline.is_some_and(|d| now >= d) {
                    self.fail(Error::Timeout {
                        timer: TimerKind::Heartbeat,
                        after: self.config.heartbeat_timeout(),
                    });
                }
            }
            Phase::Authenticated | Phase::Ended => {}
        }
    }

    /// The next deadline: call [`handle_timeout`](Self::handle_timeout) when it passes.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Greeting | Phase::Challenge | Phase::AuthResponse => self.auth_deadline,
            Phase::Streaming if !self.eof => self.heartbeat_deadline,
            _ => None,
        }
    }

    /// Appends the bytes to send to the gateway to `out`; returns how many.
    #[must_use = "the bytes must be written to the socket"]
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let n = self.transmit.len();
        out.append(&mut self.transmit);
        n
    }

    /// Whether bytes wait in [`poll_transmit`](Self::poll_transmit).
    pub fn wants_transmit(&self) -> bool {
        !self.transmit.is_empty()
    }

    /// The next event, `Ok(None)` when there is nothing until more input or a timeout.
    ///
    /// # Errors
    /// The error that ended the connection (authentication rejected, timeout,
    /// protocol or framing error), after every record received before it. Sticky
    /// until [`reconnect`](Self::reconnect).
    #[must_use = "events carry records and errors that must be handled"]
    pub fn poll_event(&mut self) -> Result<Option<LiveEvent<'_>>, Error> {
        if let Some(pending) = self.pending.pop_front() {
            return Ok(Some(match pending {
                Pending::Authenticated => LiveEvent::Authenticated {
                    session_id: self.session_id.as_deref().unwrap_or_default(),
                },
                Pending::Reconnected { policy, gap_from } => {
                    LiveEvent::Reconnected { policy, gap_from }
                }
                Pending::Closed(closed) => LiveEvent::Closed(closed),
            }));
        }
        if self.stream_active {
            return self.poll_stream();
        }
        match &self.failure {
            Some(err) => {
                self.failure_reported = true;
                Err(err.clone())
            }
            None => Ok(None),
        }
    }

    /// Whether [`poll_record`](Self::poll_record) hands out a record now: the next
    /// [`poll_event`](Self::poll_event) would be [`LiveEvent::Records`], its first
    /// record is complete, and no gap-filling replay check is pending (such records
    /// may be dropped as duplicates: `poll_event` handles them). `false` says nothing
    /// about what comes instead; `poll_event` does.
    ///
    /// It borrows nothing, so a driver that hands out one record per call can ask it
    /// before taking the record with `poll_record` and return that record, where
    /// holding a polled event across other calls on the session would not compile.
    ///
    /// # Example
    ///
    /// Records one at a time, everything else from `poll_event`:
    ///
    /// ```
    /// use std::time::Instant;
    /// use dbn::Schema;
    /// use dbn_pipe_protocol::live::{ApiKey, LiveConfig, LiveEvent, LiveSession, Subscription};
    ///
    /// # fn main() -> Result<(), dbn_pipe_protocol::Error> {
    /// let key = ApiKey::new("db-0123456789abcdefghijklmnABCDE")?;
    /// let now = Instant::now();
    /// let mut session = LiveSession::new(LiveConfig::new(key, "GLBX.MDP3"), now)?;
    /// session.subscribe(Subscription::new(Schema::Mbo, ["ESH1"]))?;
    /// session.start(now)?;
    /// let mut to_gateway = Vec::new();
    /// for read in dbn_pipe_protocol::doc_support::scripted_gateway() {
    ///     assert_eq!(session.handle_input(now, &read), read.len());
    ///     let _ = session.poll_transmit(&mut to_gateway);
    /// }
    /// session.handle_eof();
    /// let mut order_ids = Vec::new();
    /// loop {
    ///     if session.record_ready() {
    ///         let record = session.poll_record().expect("record_ready said so");
    ///         if let Some(mbo) = record.get::<dbn::MboMsg>() {
    ///             order_ids.push(mbo.order_id);
    ///         }
    ///         continue;
    ///     }
    ///     match session.poll_event()? {
    ///         Some(LiveEvent::Closed(closed)) => assert!(closed.is_clean()),
    ///         Some(_) => {} // authentication, metadata, notices
    ///         None => break,
    ///     }
    /// }
    /// assert_eq!(order_ids, [647_784_973_705, 647_784_973_706]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn record_ready(&mut self) -> bool {
        let ready = self.pending.is_empty()
            && self.stream_active
            && !self.delivery.replay_pending()
            && self
                .stream
                .peek_rtype()
                .is_some_and(|rtype| Class::of(rtype) != Class::Notice);
        // `peek_rtype` released what was delivered: the record is at the head.
        self.ready_at = ready.then(|| self.stream.dbn().bytes_delivered());
        ready
    }

    /// The next market-data record or symbol mapping when
    /// [`record_ready`](Self::record_ready) is true, delivered exactly as the first
    /// record of the batch [`poll_event`](Self::poll_event) would return; `None`, with
    /// nothing consumed, otherwise.
    ///
    /// One record per call costs less here than through `poll_event`, which sets up
    /// a whole batch; for many records, batches cost least.
    #[must_use = "a polled record must be handled"]
    pub fn poll_record(&mut self) -> Option<RecordRef<'_>> {
        // Still at the record `record_ready` found (nothing was taken since, and no
        // event was queued before it), or it is asked again.
        let checked = self.ready_at.take().is_some_and(|at| {
            at == self.stream.dbn().bytes_delivered()
                && self.pending.is_empty()
                && self.stream_active
        });
        if !checked && !self.record_ready() {
            return None;
        }
        self.ready_at = None;
        match self.stream.poll() {
            Ok(Decoded::Record(record)) => {
                // No replay is pending, so the record is admitted (and counted).
                let admitted = self
                    .delivery
                    .admit_as(Class::of(record.header().rtype), &record);
                admitted.then_some(record)
            }
            // `peek_rtype` saw a complete record, so `poll` returns it.
            _ => None,
        }
    }

    /// Prepares the session for a new connection that is up at `now`, keeping its
    /// subscriptions, which are sent again after authentication as `policy` says; if
    /// the session had been started, `start_session` follows.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] when the current connection has not ended, or its
    /// records have not all been polled: call [`handle_eof`](Self::handle_eof) and
    /// drain [`poll_event`](Self::poll_event) first, so nothing is lost.
    pub fn reconnect(&mut self, now: Instant, policy: ReconnectPolicy) -> Result<(), Error> {
        let unreported = self.failure.is_some() && !self.failure_reported;
        if self.phase != Phase::Ended
            || self.stream_active
            || !self.pending.is_empty()
            || unreported
        {
            return Err(Error::InvalidRequest(
                "reconnect needs the current connection ended and drained (handle_eof, then poll_event until Closed or an error)"
                    .to_owned(),
            ));
        }
        self.stream = Self::new_stream(&self.config)?;
        self.ready_at = None;
        self.phase = Phase::Greeting;
        self.lines = LineReader::new(self.config.max_line_len);
        self.transmit.clear();
        self.session_id = None;
        self.received = 0;
        self.eof = false;
        self.failure = None;
        self.failure_reported = false;
        self.auth_deadline = Some(now + self.config.auth_timeout);
        self.heartbeat_deadline = None;
        match policy {
            ReconnectPolicy::GapFill => self.delivery.expect_replay(),
            ReconnectPolicy::Resubscribe => self.delivery.no_replay(),
        }
        self.reconnecting = Some(policy);
        Ok(())
    }

    fn poll_stream(&mut self) -> Result<Option<LiveEvent<'_>>, Error> {
        if matches!(self.stream.peek_rtype(), Some(rtype::SYSTEM | rtype::ERROR)) {
            return match self.stream.poll() {
                Ok(Decoded::Record(record)) => {
                    let notice =
                        GatewayNotice::classify(&record).unwrap_or(GatewayNotice::System {
                            code: None,
                            text: "",
                        });
                    Ok(Some(LiveEvent::Gateway { record, notice }))
                }
                // `peek_rtype` saw a complete record, so `poll` returns it.
                _ => Ok(None),
            };
        }
        match self.stream.poll_batch(usize::MAX) {
            Ok(Decoded::Metadata(metadata)) => Ok(Some(LiveEvent::Metadata(metadata))),
            Ok(Decoded::Record(records)) => Ok(Some(LiveEvent::Records(LiveBatch {
                records,
                delivery: &mut self.delivery,
            }))),
            Ok(Decoded::NeedInput(_)) => match &self.failure {
                Some(err) => {
                    self.stream_active = false;
                    self.failure_reported = true;
                    Err(err.clone())
                }
                None => Ok(None),
            },
            Ok(Decoded::End) => {
                self.stream_active = false;
                self.phase = Phase::Ended;
                // A timeout that came before the end of input is the verdict.
                if let Some(err) = &self.failure {
                    self.failure_reported = true;
                    return Err(err.clone());
                }
                Ok(Some(LiveEvent::Closed(Closed {
                    bytes_received: self.received,
                    truncated: None,
                })))
            }
            Err(err) if err.kind() == ErrorKind::Truncated && self.failure.is_none() => {
                self.stream_active = false;
                self.phase = Phase::Ended;
                Ok(Some(LiveEvent::Closed(Closed {
                    bytes_received: self.received,
                    truncated: Some(err),
                })))
            }
            Err(err) => {
                self.stream_active = false;
                self.phase = Phase::Ended;
                // A timeout that came first is the cause; keep it.
                let err = self.failure.get_or_insert(err).clone();
                self.failure_reported = true;
                Err(err)
            }
        }
    }

    /// Handles one complete control line.
    fn on_line(&mut self, line: &str, now: Instant) {
        match self.phase {
            Phase::Greeting if !line.starts_with("cram=") => self.phase = Phase::Challenge,
            Phase::Greeting | Phase::Challenge => match line.strip_prefix("cram=") {
                Some(challenge) => {
                    let request = auth_request(&self.config, challenge);
                    self.transmit.extend_from_slice(request.as_bytes());
                    self.phase = Phase::AuthResponse;
                }
                None => self.fail(Error::UnexpectedLine {
                    expected: "a `cram=` challenge",
                    line: excerpt(line),
                }),
            },
            Phase::AuthResponse => {
                if field(line, "success") == Some("1") {
                    self.on_authenticated(field(line, "session_id").unwrap_or_default(), now);
                } else {
                    let message = field(line, "error").unwrap_or(line);
                    self.fail(Error::AuthRejected {
                        message: excerpt(message),
                    });
                }
            }
            Phase::Authenticated | Phase::Streaming | Phase::Ended => {}
        }
    }

    fn on_authenticated(&mut self, session_id: &str, now: Instant) {
        self.session_id = Some(session_id.to_owned());
        self.phase = Phase::Authenticated;
        self.auth_deadline = None;
        self.pending.push_back(Pending::Authenticated);
        let reconnect = self.reconnecting.take();
        let replay_start = match reconnect {
            Some(ReconnectPolicy::GapFill) => self.delivery.last_ts().map(Start::Nanos),
            _ => None,
        };
        if let Some(policy) = reconnect {
            let gap_from = match policy {
                ReconnectPolicy::Resubscribe => self.delivery.last_ts(),
                ReconnectPolicy::GapFill => None,
            };
            self.pending
                .push_back(Pending::Reconnected { policy, gap_from });
        }
        for (sub, id) in &self.subscriptions {
            let start = match reconnect {
                None => sub.start.as_ref(),
                Some(ReconnectPolicy::Resubscribe) => None,
                Some(ReconnectPolicy::GapFill) if sub.snapshot => None,
                Some(ReconnectPolicy::GapFill) => replay_start.as_ref().or(sub.start.as_ref()),
            };
            subscription_lines(sub, *id, start, &mut self.transmit);
        }
        if self.start_requested {
            self.begin_streaming(now);
        }
    }

    fn begin_streaming(&mut self, now: Instant) {
        self.transmit.extend_from_slice(START_SESSION);
        self.phase = Phase::Streaming;
        self.stream_active = true;
        self.heartbeat_deadline = Some(now + self.config.heartbeat_timeout());
    }

    /// Ends the connection with `err`; records already received still drain first.
    fn fail(&mut self, err: Error) {
        if self.failure.is_none() {
            self.failure = Some(err);
        }
        self.phase = Phase::Ended;
        self.auth_deadline = None;
        self.heartbeat_deadline = None;
    }
}
