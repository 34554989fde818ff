//! The live connection: a [`LiveSession`] over a mio `TcpStream` registered with the
//! application's `Registry` under its `Token`.

use std::time::{Duration, Instant};

use dbn::{Metadata, RecordBuf, RecordRef, rtype};
use dbn_pipe_protocol::UpgradePolicy;
use dbn_pipe_protocol::live::{
    ApiKey, AutoReconnect, Backoff, Closed, GatewayNotice, LiveBatch, LiveCompression, LiveConfig,
    LiveEvent, LiveSession, ReconnectPolicy, SlowReaderBehavior, Subscription, gateway_address,
    is_reconnectable,
};
use mio::event::Event;
use mio::{Registry, Token};

use crate::net::{ReadOutcome, Socket, is_disconnect, resolve};
use crate::{Error, ErrorKind};

/// Options of a [`LiveConnection`]: the session's configuration plus the transport.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    config: LiveConfig,
    addr: Option<String>,
    connect_timeout: Duration,
    read_buffer: usize,
    auto_reconnect: Option<AutoReconnect>,
}

impl LiveOptions {
    /// Default connect timeout: 10 s.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default socket read size: 64 KiB.
    pub const DEFAULT_READ_BUFFER: usize = 64 * 1024;

    /// Options for `dataset` with the defaults: the dataset's gateway, no compression,
    /// 10 s connect timeout, 30 s authentication timeout, no automatic reconnect.
    pub fn new(key: ApiKey, dataset: impl Into<String>) -> Self {
        Self {
            config: LiveConfig::new(key, dataset),
            addr: None,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            read_buffer: Self::DEFAULT_READ_BUFFER,
            auto_reconnect: None,
        }
    }

    /// Connects to `addr` (`host:port`) instead of the dataset's gateway.
    #[must_use]
    pub fn addr(mut self, addr: impl Into<String>) -> Self {
        self.addr = Some(addr.into());
        self
    }

    /// Compression of the DBN stream.
    #[must_use]
    pub fn compression(mut self, compression: LiveCompression) -> Self {
        self.config = self.config.compression(compression);
        self
    }

    /// Whether the gateway appends its send timestamp to every record.
    #[must_use]
    pub fn ts_out(mut self, ts_out: bool) -> Self {
        self.config = self.config.ts_out(ts_out);
        self
    }

    /// The gateway's heartbeat interval in seconds (the heartbeat timeout is 5 s more).
    #[must_use]
    pub fn heartbeat_interval_s(mut self, seconds: u32) -> Self {
        self.config = self.config.heartbeat_interval_s(seconds);
        self
    }

    /// What the gateway does when this client reads too slowly.
    #[must_use]
    pub fn slow_reader_behavior(mut self, behavior: SlowReaderBehavior) -> Self {
        self.config = self.config.slow_reader_behavior(behavior);
        self
    }

    /// How long the TCP connect may take (per attempt).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long the handshake (greeting to authentication) may take. The timer starts
    /// when the connection is created (first connection) or when the TCP connection is
    /// up (reconnects).
    #[must_use]
    pub fn auth_timeout(mut self, timeout: Duration) -> Self {
        self.config = self.config.auth_timeout(timeout);
        self
    }

    /// Times the stream out after `timeout` without a byte from the gateway instead
    /// of the heartbeat interval plus 5 s ([`LiveConfig::silence_timeout`]).
    #[must_use]
    pub fn silence_timeout(mut self, timeout: Duration) -> Self {
        self.config = self.config.silence_timeout(timeout);
        self
    }

    /// Reconnects automatically as `policy` says (default: off).
    #[must_use]
    pub fn auto_reconnect(mut self, policy: AutoReconnect) -> Self {
        self.auto_reconnect = Some(policy);
        self
    }

    /// The DBN decoder's record buffer size.
    #[must_use]
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.config = self.config.buffer_size(bytes);
        self
    }

    /// The DBN upgrade policy (default: upgrade to v3).
    #[must_use]
    pub fn upgrade_policy(mut self, policy: UpgradePolicy) -> Self {
        self.config = self.config.upgrade_policy(policy);
        self
    }

    /// The socket read size: the only buffer the driver adds (default 64 KiB).
    #[must_use]
    pub fn read_buffer(mut self, bytes: usize) -> Self {
        self.read_buffer = bytes;
        self
    }

    /// The session configuration.
    pub fn config(&self) -> &LiveConfig {
        &self.config
    }

    /// The `host:port` connected to.
    pub fn address(&self) -> String {
        match &self.addr {
            Some(addr) => addr.clone(),
            None => {
                let (host, port) = gateway_address(self.config.dataset());
                format!("{host}:{port}")
            }
        }
    }

    fn validate(&self) -> Result<(), Error> {
        if self.read_buffer == 0 {
            return Err(Error::Config(
                "read_buffer must be at least 1 byte".to_owned(),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::Config("connect_timeout must not be zero".to_owned()));
        }
        if let Some(auto) = &self.auto_reconnect {
            auto.validate()?;
        }
        Ok(())
    }
}

/// What a [`LiveConnection`] hands the application, in stream order.
#[derive(Debug)]
#[non_exhaustive]
pub enum LiveItem<'a> {
    /// The gateway accepted the key (on every connection, reconnects included).
    Authenticated {
        /// The gateway's session id.
        session_id: String,
    },
    /// The DBN metadata (once per connection).
    Metadata(Box<Metadata>),
    /// A market-data record (or symbol mapping), borrowed: no copy, no allocation.
    Record(RecordRef<'a>),
    /// A gateway `SystemMsg` / `ErrorMsg` record with its classification.
    Gateway {
        /// The record (rtype 0x17 or 0x15).
        record: RecordRef<'a>,
        /// What it says.
        notice: GatewayNotice<'a>,
    },
    /// The connection dropped and a reconnect attempt is scheduled after `retry_in`
    /// (with [`LiveOptions::auto_reconnect`] only). Every record before the drop was
    /// delivered.
    Disconnected {
        /// Why: `None` for a clean end of stream, the error's kind otherwise.
        kind: Option<ErrorKind>,
        /// The reason, for logs.
        reason: String,
        /// Delay before the attempt.
        retry_in: Duration,
    },
    /// A new connection is authenticated and the subscriptions were sent again.
    Reconnected {
        /// The policy that ran.
        policy: ReconnectPolicy,
        /// Records after this index timestamp may be missing (resubscribe policy).
        gap_from: Option<u64>,
    },
    /// The stream ended cleanly; nothing more comes.
    End,
}

/// An event that borrows nothing.
#[derive(Debug)]
enum Owned {
    Authenticated(String),
    Metadata(Box<Metadata>),
    Disconnected {
        kind: Option<ErrorKind>,
        reason: String,
        retry_in: Duration,
    },
    Reconnected {
        policy: ReconnectPolicy,
        gap_from: Option<u64>,
    },
    End,
}

impl Owned {
    fn into_item<'a>(self) -> LiveItem<'a> {
        match self {
            Self::Authenticated(session_id) => LiveItem::Authenticated { session_id },
            Self::Metadata(metadata) => LiveItem::Metadata(metadata),
            Self::Disconnected {
                kind,
                reason,
                retry_in,
            } => LiveItem::Disconnected {
                kind,
                reason,
                retry_in,
            },
            Self::Reconnected { policy, gap_from } => LiveItem::Reconnected { policy, gap_from },
            Self::End => LiveItem::End,
        }
    }
}

/// One step of the pull loop; only owned values, so the borrow of the session ends
/// before the record is taken (see `next_item`).
#[derive(Debug)]
enum Step {
    /// The session has records: the next poll yields a batch whose first record is
    /// delivered.
    Batch,
    /// A record was copied into the stash (a gateway notice, or the first record
    /// after a gap-filling reconnect, where duplicates are dropped).
    Stashed {
        gateway: bool,
    },
    Item(Owned),
    /// Progress was made; step again.
    Again,
    /// Nothing until the next readiness event or deadline.
    Idle,
}

/// A session event without borrows.
#[derive(Debug)]
enum Polled {
    Item(Owned),
    Closed(Closed),
    Nothing,
    Failed(dbn_pipe_protocol::Error),
}

#[derive(Debug)]
enum Link {
    /// Connecting or connected.
    Up(Socket),
    /// Waiting for a reconnect attempt at this instant.
    Backoff(Instant),
    /// No socket: the connection is over.
    Down,
}

/// A live connection driven by the application's mio `Poll`.
///
/// # Contract
///
/// - [`connect`](Self::connect) resolves the address (blocking: it calls
///   `std::net::ToSocketAddrs`, as every reconnect does), starts a non-blocking TCP
///   connect and registers the socket with your `Registry` under your `Token`. The
///   connection keeps a clone of the registry to change its interest itself
///   (WRITABLE only while bytes wait to be written) and to register the new socket of
///   a reconnect under the same token.
/// - For every event with your token call [`handle_event`](Self::handle_event); when
///   [`poll_timeout`](Self::poll_timeout) passes call
///   [`handle_timeout`](Self::handle_timeout) (calling it early is harmless).
/// - Then pull with [`next_record`](Self::next_record) (or
///   [`next_event`](Self::next_event)) until it returns `Ok(None)`; for throughput,
///   take whole batches with [`next_batch`](Self::next_batch) and the rest with
///   `next_event` (the loop is in its documentation). Pulling does the
///   socket I/O: it reads only while the session takes bytes and resumes reading by
///   itself after you pulled the records that held it back, so no readiness edge is
///   ever lost however long you keep the records waiting. `Ok(None)` means "wait for
///   the next event or deadline"; [`is_finished`](Self::is_finished) tells it from
///   the end of the stream.
///
/// Memory is bounded by the session's decoder buffer plus one read buffer.
#[derive(Debug)]
pub struct LiveConnection {
    registry: Registry,
    token: Token,
    options: LiveOptions,
    session: LiveSession,
    link: Link,
    backoff: Option<Backoff>,
    /// A reconnect is in progress: transport failures schedule the next attempt.
    reconnecting: bool,
    /// The new socket needs `session.reconnect` once connected.
    needs_session_reconnect: bool,
    started: bool,
    ever_authenticated: bool,
    last_error: Option<Error>,
    /// A transport error to report once the session drained.
    failure: Option<Error>,
    stash: Option<RecordBuf>,
    /// What [`next_batch`](Self::next_batch) took from the session that is not a
    /// record batch (an item, or a stashed record), for the next pull: nothing is
    /// lost or reordered between the two APIs.
    held: Option<Step>,
    /// After a gap-filling reconnect, until the first market-data record.
    replay_guard: bool,
    metadata: Option<Box<Metadata>>,
    finished: bool,
}

impl LiveConnection {
    /// Resolves the address, starts connecting and registers the socket under `token`
    /// (READABLE | WRITABLE while connecting). The session's authentication timer
    /// starts at `now`.
    ///
    /// # Errors
    /// [`Error::Config`] for invalid options, [`Error::Dns`], [`Error::Connect`] when
    /// the connect fails at once, [`Error::Io`] when the registry fails.
    pub fn connect(
        registry: &Registry,
        token: Token,
        options: LiveOptions,
        now: Instant,
    ) -> Result<Self, Error> {
        options.validate()?;
        let registry = registry.try_clone()?;
        let session = LiveSession::new(options.config.clone(), now)?;
        let backoff = options
            .auto_reconnect
            .clone()
            .map(Backoff::new)
            .transpose()?;
        let socket = open(&registry, token, &options, now)?;
        Ok(Self {
            registry,
            token,
            session,
            link: Link::Up(socket),
            backoff,
            reconnecting: false,
            needs_session_reconnect: false,
            started: false,
            ever_authenticated: false,
            last_error: None,
            failure: None,
            stash: None,
            held: None,
            replay_guard: false,
            metadata: None,
            finished: false,
            options,
        })
    }

    /// Adds a subscription; returns its id. Sent once authenticated (and again after
    /// every reconnect).
    ///
    /// # Errors
    /// [`Error::Session`] of kind Usage for an invalid subscription (nothing sent).
    pub fn subscribe(&mut self, subscription: Subscription) -> Result<u32, Error> {
        let id = self.session.subscribe(subscription)?;
        self.flush();
        Ok(id)
    }

    /// Asks the gateway to start streaming (sent with the subscriptions after
    /// authentication, in one write when the socket takes it).
    ///
    /// # Errors
    /// [`Error::Session`] of kind Usage when already started.
    pub fn start(&mut self, now: Instant) -> Result<(), Error> {
        self.session.start(now)?;
        self.started = true;
        self.flush();
        Ok(())
    }

    /// The token the socket is registered under.
    pub fn token(&self) -> Token {
        self.token
    }

    /// The session (subscriptions, session id, bytes received).
    pub fn session(&self) -> &LiveSession {
        &self.session
    }

    /// The metadata of the current connection, once received.
    pub fn metadata(&self) -> Option<&Metadata> {
        self.metadata.as_deref()
    }

    /// Whether the stream is over (ended cleanly or failed and reported): nothing
    /// more comes, the socket is deregistered.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Takes a readiness event of this connection's token: completes the connect,
    /// writes what waits, and notes readability (reads happen when you pull).
    pub fn handle_event(&mut self, event: &Event, now: Instant) {
        if event.token() != self.token {
            return;
        }
        let Link::Up(socket) = &mut self.link else {
            return;
        };
        if !socket.is_connected() {
            self.check_connect(now);
            return;
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            socket.set_readable();
        }
        if event.is_writable() || event.is_error() {
            self.flush();
        }
    }

    /// Fires the deadlines that passed at `now`: connect timeout, the session's
    /// authentication and heartbeat timers, a reconnect attempt that is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.link {
            Link::Up(socket) if socket.deadline().is_some_and(|d| now >= d) => {
                self.check_connect(now);
            }
            Link::Backoff(at) if now >= *at => self.attempt(now),
            _ => {}
        }
        self.session.handle_timeout(now);
    }

    /// The next deadline: pass it (minus `now`) as your `Poll::poll` timeout and call
    /// [`handle_timeout`](Self::handle_timeout) when it passes. `None` when only
    /// readiness matters.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let transport = match &self.link {
            Link::Up(socket) => socket.deadline(),
            Link::Backoff(at) => Some(*at),
            Link::Down => None,
        };
        let session = match &self.link {
            Link::Up(_) => self.session.poll_timeout(),
            _ => None,
        };
        match (transport, session) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next record (gateway notices included: rtype 0x17 / 0x15), borrowed from
    /// the session. `Ok(None)`: nothing until the next event or deadline, or the
    /// stream ended ([`is_finished`](Self::is_finished)). Metadata, authentication and
    /// reconnect notifications are skipped here (see [`next_event`](Self::next_event)).
    ///
    /// # Errors
    /// The failure that ended the connection, after every record before it, once; a
    /// connection ending inside a record is kind [`ErrorKind::Truncated`].
    #[must_use = "records and errors must be handled"]
    pub fn next_record(&mut self) -> Result<Option<RecordRef<'_>>, Error> {
        // The record path: a record is buffered and nothing else comes first (no kept
        // step, no end, no replay check), so it is taken as is.
        if self.held.is_none()
            && !self.finished
            && !self.replay_guard
            && self.session.record_ready()
        {
            return match self.session.poll_record() {
                Some(record) => Ok(Some(record)),
                None => Err(Error::Session(dbn_pipe_protocol::Error::driver_internal(
                    "a ready record vanished",
                ))),
            };
        }
        match self.next_item(false)? {
            Some(LiveItem::Record(record) | LiveItem::Gateway { record, .. }) => Ok(Some(record)),
            _ => Ok(None),
        }
    }

    /// The next item: records, gateway notices, metadata, authentication, reconnect
    /// notifications and [`LiveItem::End`]. `Ok(None)` as for
    /// [`next_record`](Self::next_record).
    ///
    /// # Errors
    /// As [`next_record`](Self::next_record).
    #[must_use = "items and errors must be handled"]
    pub fn next_event(&mut self) -> Result<Option<LiveItem<'_>>, Error> {
        self.next_item(true)
    }

    /// The next batch of records, borrowed from the session: the market-data records
    /// and symbol mappings buffered in the session, up to the next gateway notice, in
    /// stream order, without copying. Records not taken from the batch stay buffered
    /// when it is dropped and come first from the next pull, whichever API it uses.
    ///
    /// `Ok(None)` when the next thing is not a record batch: nothing is buffered yet
    /// (wait for the next readiness event or deadline), or an item other than market
    /// data waits (metadata, authentication, a gateway notice, a disconnect or
    /// reconnect notification, [`LiveItem::End`]). Call
    /// [`next_event`](Self::next_event) then: it returns that item (or `Ok(None)` when
    /// there is nothing, [`is_finished`](Self::is_finished) telling the end), so
    /// nothing is lost or reordered between the two calls.
    ///
    /// Does the socket I/O and resumes reading after backpressure as
    /// [`next_record`](Self::next_record) does; the clock is read once per socket
    /// read, never per record. A batch yields at least one record, except right after
    /// a gap-filling reconnect ([`ReconnectPolicy::GapFill`]), where the replayed
    /// records the application already has are dropped as the batch is iterated and
    /// a batch may hold only those.
    ///
    /// ```
    /// use std::time::Instant;
    /// use dbn::Schema;
    /// use dbn_pipe_mio::{LiveConnection, LiveItem, LiveOptions};
    /// use dbn_pipe_protocol::live::{ApiKey, Subscription};
    /// use mio::{Events, Poll, Token};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use std::io::{BufRead, BufReader, Write};
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// # let gateway_addr = listener.local_addr()?.to_string();
    /// # std::thread::spawn(move || -> std::io::Result<()> {
    /// #     let script = dbn_pipe_protocol::doc_support::scripted_gateway();
    /// #     let (stream, _) = listener.accept()?;
    /// #     let mut out = stream.try_clone()?;
    /// #     let mut lines = BufReader::new(stream).lines();
    /// #     let mut wait_for = |prefix: &str| loop {
    /// #         match lines.next() {
    /// #             Some(line) => {
    /// #                 if line?.starts_with(prefix) {
    /// #                     return Ok(());
    /// #                 }
    /// #             }
    /// #             None => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
    /// #         }
    /// #     };
    /// #     out.write_all(&script[0])?;
    /// #     out.write_all(&script[1])?;
    /// #     wait_for("auth=")?;
    /// #     out.write_all(&script[2])?;
    /// #     wait_for("start_session")?;
    /// #     for chunk in &script[3..] {
    /// #         out.write_all(chunk)?;
    /// #     }
    /// #     Ok(())
    /// # });
    /// let key = ApiKey::new("db-0123456789abcdefghijklmnABCDE")?;
    /// let options = LiveOptions::new(key, "GLBX.MDP3").addr(gateway_addr);
    /// let mut poll = Poll::new()?;
    /// let mut events = Events::with_capacity(64);
    /// let now = Instant::now();
    /// let mut live = LiveConnection::connect(poll.registry(), Token(1), options, now)?;
    /// live.subscribe(Subscription::new(Schema::Mbo, ["ESH1"]))?;
    /// live.start(now)?;
    /// let (mut records, mut metadata) = (0, 0);
    /// loop {
    ///     // Whole batches while records flow...
    ///     while let Some(batch) = live.next_batch()? {
    ///         for record in batch {
    ///             records += 1; // borrowed, no copy
    ///             let _ = record.header().ts_event;
    ///         }
    ///     }
    ///     // ...then whatever else comes, one item at a time.
    ///     match live.next_event()? {
    ///         Some(LiveItem::Metadata(_)) => metadata += 1,
    ///         Some(LiveItem::Record(_)) => records += 1, // records may come here too
    ///         Some(_) => {} // authentication, gateway notices, reconnects, End
    ///         None => {
    ///             if live.is_finished() {
    ///                 break; // the stream ended cleanly (an error came out of `?`)
    ///             }
    ///             let timeout =
    ///                 live.poll_timeout().map(|at| at.saturating_duration_since(Instant::now()));
    ///             poll.poll(&mut events, timeout)?;
    ///             let now = Instant::now();
    ///             for event in &events {
    ///                 live.handle_event(event, now);
    ///             }
    ///             live.handle_timeout(now);
    ///         }
    ///     }
    /// }
    /// assert_eq!((records, metadata), (2, 1));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`next_record`](Self::next_record): the failure that ended the connection,
    /// after every record before it, once.
    #[must_use = "records and errors must be handled"]
    pub fn next_batch(&mut self) -> Result<Option<LiveBatch<'_>>, Error> {
        if self.held.is_some() {
            return Ok(None);
        }
        loop {
            match self.step(true)? {
                Step::Again => {}
                Step::Batch => break,
                Step::Idle => return Ok(None),
                held @ (Step::Item(_) | Step::Stashed { .. }) => {
                    self.held = Some(held);
                    return Ok(None);
                }
            }
        }
        // `step` saw a batch and left it in the session; nothing ran since, so this
        // poll hands the same records out.
        match self.session.poll_event()? {
            Some(LiveEvent::Records(batch)) => Ok(Some(batch)),
            _ => Ok(None),
        }
    }

    fn next_item(&mut self, all: bool) -> Result<Option<LiveItem<'_>>, Error> {
        let step = loop {
            let step = match self.held.take() {
                Some(held) => held,
                None => self.step(false)?,
            };
            match step {
                Step::Again => {}
                Step::Item(Owned::End) => {
                    if all {
                        break Step::Item(Owned::End);
                    }
                    return Ok(None);
                }
                Step::Item(owned) if !all => drop(owned),
                step => break step,
            }
        };
        Ok(match step {
            Step::Batch => match self.session.poll_event()? {
                Some(LiveEvent::Records(mut batch)) => batch.next().map(LiveItem::Record),
                // `step` saw a batch and nothing ran since.
                _ => None,
            },
            Step::Stashed { gateway } => {
                let Some(stash) = &self.stash else {
                    return Ok(None);
                };
                let record = stash.as_rec_ref();
                match GatewayNotice::classify(&record) {
                    Some(notice) if gateway && all => Some(LiveItem::Gateway { record, notice }),
                    _ => Some(LiveItem::Record(record)),
                }
            }
            Step::Item(owned) => Some(owned.into_item()),
            Step::Again | Step::Idle => None,
        })
    }

    /// Polls the session once and handles whatever borrows nothing. `batches`: a
    /// record batch is left in the session even during the replay check (the caller
    /// hands out the whole batch, which drops the duplicates itself).
    fn step(&mut self, batches: bool) -> Result<Step, Error> {
        if self.finished {
            return Ok(Step::Idle);
        }
        // The session's event is turned into owned values inside this block, so its
        // borrow of the session ends before any other method runs.
        let polled = match self.session.poll_event() {
            Ok(Some(LiveEvent::Records(mut batch))) => {
                if batches || !self.replay_guard {
                    return Ok(Step::Batch);
                }
                // Replayed duplicates are dropped as the batch is iterated: take the
                // first admitted record here (copied once) so an all-duplicate batch
                // never looks like a record.
                return Ok(match batch.next() {
                    Some(record) => {
                        if !matches!(
                            record.header().rtype,
                            rtype::SYMBOL_MAPPING | rtype::SYSTEM | rtype::ERROR
                        ) {
                            self.replay_guard = false;
                        }
                        self.stash = Some(record.to_owned());
                        Step::Stashed { gateway: false }
                    }
                    None => Step::Again,
                });
            }
            Ok(Some(LiveEvent::Gateway { record, .. })) => {
                self.stash = Some(record.to_owned());
                return Ok(Step::Stashed { gateway: true });
            }
            Ok(Some(LiveEvent::Authenticated { session_id })) => {
                Polled::Item(Owned::Authenticated(session_id.to_owned()))
            }
            Ok(Some(LiveEvent::Reconnected { policy, gap_from })) => {
                Polled::Item(Owned::Reconnected { policy, gap_from })
            }
            Ok(Some(LiveEvent::Metadata(metadata))) => Polled::Item(Owned::Metadata(metadata)),
            Ok(Some(LiveEvent::Closed(closed))) => Polled::Closed(closed),
            Ok(None) => Polled::Nothing,
            Err(err) => Polled::Failed(err),
        };
        // The clock is read only here, off the record path.
        let event = match polled {
            Polled::Item(event) => event,
            Polled::Closed(closed) => return self.on_closed(closed, Instant::now()),
            Polled::Nothing => return self.pump(Instant::now()),
            Polled::Failed(err) => return self.on_error(Error::Session(err), Instant::now()),
        };
        match &event {
            Owned::Authenticated(session_id) => {
                tracing::debug!(session_id, "authenticated");
                if let Some(backoff) = &mut self.backoff {
                    backoff.reset();
                }
                self.reconnecting = false;
                self.ever_authenticated = true;
                self.last_error = None;
            }
            Owned::Metadata(metadata) => self.metadata = Some(metadata.clone()),
            _ => {}
        }
        Ok(Step::Item(event))
    }

    /// Moves bytes: offers what was read, reads more when allowed, writes what the
    /// session wants sent. `Again` when something moved.
    fn pump(&mut self, now: Instant) -> Result<Step, Error> {
        let Link::Up(socket) = &mut self.link else {
            return match self.failure.take() {
                Some(err) => self.on_error(err, now),
                None => Ok(Step::Idle),
            };
        };
        if !socket.is_connected() {
            return Ok(Step::Idle);
        }
        if socket.pending().is_empty() {
            match socket.read() {
                Ok(ReadOutcome::Data) => {}
                Ok(ReadOutcome::WouldBlock) => {
                    return match self.failure.take() {
                        Some(err) => self.on_error(err, now),
                        None => Ok(Step::Idle),
                    };
                }
                Ok(ReadOutcome::Eof) => {
                    if self.session.is_ended() && self.failure.is_none() {
                        return Ok(Step::Idle);
                    }
                    self.session.handle_eof();
                    return Ok(match self.failure.take() {
                        Some(err) => return self.on_error(err, now),
                        None => Step::Again,
                    });
                }
                Err(err) => {
                    if !is_disconnect(&err) {
                        self.failure = Some(Error::Io { source: err });
                    }
                    self.session.handle_eof();
                    return Ok(Step::Again);
                }
            }
        }
        let taken = self.session.handle_input(now, socket.pending());
        socket.consume(taken);
        self.flush();
        // Nothing taken and no event: the session ended and ignores input.
        Ok(if taken > 0 { Step::Again } else { Step::Idle })
    }

    fn on_closed(&mut self, closed: Closed, now: Instant) -> Result<Step, Error> {
        match closed.truncated {
            Some(err) => self.on_error(Error::Session(err), now),
            None => {
                if let Some(err) = self.failure.take() {
                    return self.on_error(err, now);
                }
                let reconnect = self.backoff.is_some() && self.started;
                if reconnect {
                    return self.schedule(None, now);
                }
                self.finish();
                Ok(Step::Item(Owned::End))
            }
        }
    }

    fn on_error(&mut self, err: Error, now: Instant) -> Result<Step, Error> {
        if matches!(err, Error::Session(_)) {
            // The session's verdict supersedes a transport error seen on the way.
            self.failure = None;
        }
        let reconnectable = self.backoff.is_some()
            && match &err {
                Error::Session(inner) => is_reconnectable(inner),
                // Transport failures once the gateway had accepted the key.
                _ => self.reconnecting || self.ever_authenticated,
            };
        if reconnectable {
            return self.schedule(Some(err), now);
        }
        self.finish();
        Err(err)
    }

    /// Drops the socket and schedules the next attempt, or gives up with the last
    /// error when the attempts ran out.
    fn schedule(&mut self, err: Option<Error>, now: Instant) -> Result<Step, Error> {
        self.close_socket();
        let delay = self
            .backoff
            .as_mut()
            .and_then(|backoff| backoff.next_delay(fastrand::u64(..)));
        let kind = err.as_ref().map(Error::kind);
        let reason = err.as_ref().map_or_else(
            || "the gateway closed the stream".to_owned(),
            ToString::to_string,
        );
        if let Some(err) = err {
            self.last_error = Some(err);
        }
        let Some(delay) = delay else {
            self.finish();
            return match self.last_error.take() {
                Some(err) => Err(err),
                None => Ok(Step::Item(Owned::End)),
            };
        };
        let attempt = self.backoff.as_ref().map_or(0, Backoff::attempts);
        tracing::warn!(
            attempt,
            delay_ms = delay.as_millis() as u64,
            addr = %self.options.address(),
            dataset = self.options.config.dataset(),
            reason,
            "live connection lost; reconnecting"
        );
        self.reconnecting = true;
        self.link = Link::Backoff(now + delay);
        Ok(Step::Item(Owned::Disconnected {
            kind,
            reason,
            retry_in: delay,
        }))
    }

    /// A reconnect attempt: re-resolve, connect; the session follows once connected.
    fn attempt(&mut self, now: Instant) {
        match open(&self.registry, self.token, &self.options, now) {
            Ok(socket) => {
                self.link = Link::Up(socket);
                self.needs_session_reconnect = true;
            }
            Err(err) => {
                self.link = Link::Down;
                self.failure = Some(err);
                self.fail_transport(now);
            }
        }
    }

    fn check_connect(&mut self, now: Instant) {
        let Link::Up(socket) = &mut self.link else {
            return;
        };
        match socket.check_connect(&self.registry, self.token, now) {
            Ok(false) => {}
            Ok(true) => {
                if std::mem::take(&mut self.needs_session_reconnect) {
                    let policy = self
                        .options
                        .auto_reconnect
                        .as_ref()
                        .map_or(ReconnectPolicy::Resubscribe, |auto| auto.policy);
                    if let Err(err) = self.session.reconnect(now, policy) {
                        self.failure = Some(err.into());
                        self.fail_transport(now);
                        return;
                    }
                    self.replay_guard = policy == ReconnectPolicy::GapFill;
                    self.metadata = None;
                }
                self.flush();
            }
            Err(err) => {
                self.failure = Some(err);
                self.fail_transport(now);
            }
        }
    }

    /// A transport failure outside a session stream (connect, DNS, registry): the
    /// socket is dropped and the error waits in `failure`, reported (or turned into
    /// the next attempt) when the application pulls.
    fn fail_transport(&mut self, _now: Instant) {
        self.close_socket();
        self.needs_session_reconnect = false;
    }

    fn flush(&mut self) {
        let Link::Up(socket) = &mut self.link else {
            return;
        };
        if !socket.is_connected() {
            return;
        }
        let session = &mut self.session;
        if let Err(err) = socket.send(&self.registry, self.token, |out| session.poll_transmit(out))
        {
            if !is_disconnect(&err) {
                self.failure.get_or_insert(Error::Io { source: err });
            }
            self.session.handle_eof();
        }
    }

    fn close_socket(&mut self) {
        if let Link::Up(socket) = std::mem::replace(&mut self.link, Link::Down) {
            socket.close(&self.registry);
        }
    }

    fn finish(&mut self) {
        self.close_socket();
        self.finished = true;
    }
}

fn open(
    registry: &Registry,
    token: Token,
    options: &LiveOptions,
    now: Instant,
) -> Result<Socket, Error> {
    let host = options.address();
    let addrs = resolve(&host)?;
    tracing::debug!(%host, ?addrs, "connecting");
    Socket::connect(
        registry,
        token,
        addrs,
        options.connect_timeout,
        options.read_buffer,
        now,
    )
}
