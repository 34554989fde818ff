//! The live client: a [`LiveSession`] driven over a tokio `TcpStream`.

use std::io;
use std::ops::Range;
use std::time::{Duration, Instant};

use dbn::{Metadata, RecordBuf, RecordRef, rtype};
use dbn_pipe_protocol::UpgradePolicy;
use dbn_pipe_protocol::live::{
    ApiKey, AutoReconnect, Backoff, GatewayNotice, LiveBatch, LiveCompression, LiveConfig,
    LiveEvent, LiveSession, ReconnectPolicy, SlowReaderBehavior, Subscription, gateway_address,
    is_reconnectable,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Error;
use crate::net::{self, Outgoing};

/// Options of a [`LiveClient`]: the API key and dataset, then optional settings.
/// Nothing is checked or sent until [`connect`](Self::connect).
#[derive(Debug, Clone)]
pub struct LiveOptions {
    key: ApiKey,
    dataset: String,
    addr: Option<String>,
    compression: LiveCompression,
    ts_out: bool,
    heartbeat_interval_s: Option<u32>,
    connect_timeout: Duration,
    auth_timeout: Duration,
    auto_reconnect: Option<AutoReconnect>,
    buffer_size: Option<usize>,
    upgrade_policy: Option<UpgradePolicy>,
    read_buffer: usize,
    slow_reader: Option<SlowReaderBehavior>,
    silence_timeout: Option<Duration>,
    user_agent_ext: Option<String>,
}

impl LiveOptions {
    /// Default connect timeout (DNS and TCP): 10 s.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default socket read size: 64 KiB.
    pub const DEFAULT_READ_BUFFER: usize = 64 * 1024;

    /// Options for `dataset` (e.g. `GLBX.MDP3`) with defaults: the dataset's gateway,
    /// no compression, no `ts_out`, the gateway's heartbeat interval, 10 s connect and
    /// 30 s authentication timeouts, no automatic reconnect, 64 KiB reads.
    pub fn new(key: ApiKey, dataset: impl Into<String>) -> Self {
        Self {
            key,
            dataset: dataset.into(),
            addr: None,
            compression: LiveCompression::None,
            ts_out: false,
            heartbeat_interval_s: None,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            auth_timeout: LiveConfig::DEFAULT_AUTH_TIMEOUT,
            auto_reconnect: None,
            buffer_size: None,
            upgrade_policy: None,
            read_buffer: Self::DEFAULT_READ_BUFFER,
            slow_reader: None,
            silence_timeout: None,
            user_agent_ext: None,
        }
    }

    /// Connects to `addr` (`host:port`) instead of the dataset's gateway
    /// ([`gateway_address`]). The host is resolved on every connect attempt.
    #[must_use]
    pub fn addr(mut self, addr: impl Into<String>) -> Self {
        self.addr = Some(addr.into());
        self
    }

    /// Sets the compression of the DBN stream.
    #[must_use]
    pub fn compression(mut self, compression: LiveCompression) -> Self {
        self.compression = compression;
        self
    }

    /// Asks for every record to carry the gateway's send time.
    #[must_use]
    pub fn ts_out(mut self, ts_out: bool) -> Self {
        self.ts_out = ts_out;
        self
    }

    /// Sets the heartbeat interval (5 to 1800 s); the connection times out when
    /// nothing arrives for the interval plus 5 s.
    #[must_use]
    pub fn heartbeat_interval_s(mut self, seconds: u32) -> Self {
        self.heartbeat_interval_s = Some(seconds);
        self
    }

    /// Sets the limit for resolving and connecting (default 10 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the limit for the authentication handshake (default 30 s).
    #[must_use]
    pub fn auth_timeout(mut self, timeout: Duration) -> Self {
        self.auth_timeout = timeout;
        self
    }

    /// Reconnects automatically after a transient failure (default: off).
    #[must_use]
    pub fn auto_reconnect(mut self, reconnect: AutoReconnect) -> Self {
        self.auto_reconnect = Some(reconnect);
        self
    }

    /// Sets the DBN decoder's record buffer size (default 64 KiB).
    #[must_use]
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.buffer_size = Some(bytes);
        self
    }

    /// Sets how records of older DBN versions are handed out (default `UpgradeToV3`).
    #[must_use]
    pub fn upgrade_policy(mut self, policy: UpgradePolicy) -> Self {
        self.upgrade_policy = Some(policy);
        self
    }

    /// Sets the socket read size (default 64 KiB): the only buffer this driver adds.
    #[must_use]
    pub fn read_buffer(mut self, bytes: usize) -> Self {
        self.read_buffer = bytes;
        self
    }

    /// Sets what the gateway does when this client reads too slowly.
    #[must_use]
    pub fn slow_reader_behavior(mut self, behavior: SlowReaderBehavior) -> Self {
        self.slow_reader = Some(behavior);
        self
    }

    /// Times the stream out after `timeout` without a byte from the gateway instead
    /// of the heartbeat interval plus 5 s ([`LiveConfig::silence_timeout`]).
    #[must_use]
    pub fn silence_timeout(mut self, timeout: Duration) -> Self {
        self.silence_timeout = Some(timeout);
        self
    }

    /// Appends `ext` to the client identification sent to the gateway.
    #[must_use]
    pub fn user_agent_extension(mut self, ext: impl Into<String>) -> Self {
        self.user_agent_ext = Some(ext.into());
        self
    }

    /// Connects and authenticates: see [`LiveClient::connect`].
    ///
    /// # Errors
    /// As [`LiveClient::connect`].
    pub async fn connect(self) -> Result<LiveClient, Error> {
        LiveClient::connect(self).await
    }

    fn session_config(&self) -> LiveConfig {
        let mut config = LiveConfig::new(self.key.clone(), self.dataset.clone())
            .compression(self.compression)
            .ts_out(self.ts_out)
            .auth_timeout(self.auth_timeout);
        if let Some(seconds) = self.heartbeat_interval_s {
            config = config.heartbeat_interval_s(seconds);
        }
        if let Some(bytes) = self.buffer_size {
            config = config.buffer_size(bytes);
        }
        if let Some(policy) = self.upgrade_policy {
            config = config.upgrade_policy(policy);
        }
        if let Some(behavior) = self.slow_reader {
            config = config.slow_reader_behavior(behavior);
        }
        if let Some(timeout) = self.silence_timeout {
            config = config.silence_timeout(timeout);
        }
        if let Some(ext) = &self.user_agent_ext {
            config = config.user_agent_extension(ext.clone());
        }
        config
    }
}

/// What [`LiveClient::next_event`] hands out, in stream order.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A market-data record (or a symbol mapping).
    Record(RecordRef<'a>),
    /// A gateway `SystemMsg` or `ErrorMsg` record, with what it says.
    Gateway {
        /// The record.
        record: RecordRef<'a>,
        /// Its classification.
        notice: GatewayNotice<'a>,
    },
    /// The client reconnected automatically and subscribed again.
    Reconnected {
        /// The policy that ran.
        policy: ReconnectPolicy,
        /// With [`ReconnectPolicy::Resubscribe`]: records after this index timestamp
        /// may be missing.
        gap_from: Option<u64>,
    },
    /// The DBN metadata of a new connection's stream (after a reconnect; the first
    /// connection's metadata is returned by [`LiveClient::start`]).
    Metadata(Box<Metadata>),
}

/// What the next [`LiveClient::step`] found, owning nothing borrowed.
#[derive(Debug)]
enum Step {
    /// A record batch waits in the session; its first record is delivered when taken.
    Batch,
    /// A record was copied into `held` (only right after a gap-filling reconnect).
    Held,
    /// A gateway notice was copied into `held`.
    Gateway,
    Metadata(Box<Metadata>),
    Reconnected {
        policy: ReconnectPolicy,
        gap_from: Option<u64>,
    },
    /// The stream ended cleanly; nothing more comes.
    End,
}

/// How the client ended.
#[derive(Debug, Clone)]
enum Finished {
    Clean,
    Failed(String),
}

/// A Databento Live API client on tokio: one connection to a gateway, CRAM
/// authentication, subscriptions, and records borrowed from the session's buffer.
///
/// Works on the current-thread and the multi-thread runtime. The socket is read only
/// when the session has taken every byte read before (backpressure reaches the
/// gateway); memory stays bounded by the read buffer and the decoder's buffer.
///
/// # Cancel safety
///
/// [`next_record`](Self::next_record), [`next_event`](Self::next_event) and
/// [`next_batch`](Self::next_batch) are cancel-safe: bytes read are stored in the
/// client before any await can be cancelled, partly written requests resume where
/// they stopped, and a record (or batch) is only taken from the session in the same
/// poll that returns it. Use them in
/// `tokio::select!` in a loop without losing or repeating bytes or records. A
/// cancelled reconnect resumes its wait (or repeats its connect attempt) on the next
/// call. [`subscribe`](Self::subscribe) and [`start`](Self::start) are cancel-safe in
/// the same sense (requests stay queued; `start` may be called again only if it did
/// not return). [`connect`](Self::connect) and [`close`](Self::close) are not
/// resumable: a cancelled `connect` drops its connection.
#[derive(Debug)]
pub struct LiveClient {
    host: String,
    port: u16,
    connect_timeout: Duration,
    session: LiveSession,
    socket: Option<TcpStream>,
    read_buf: Box<[u8]>,
    /// Bytes of `read_buf` read but not yet taken by the session.
    pending: Range<usize>,
    out: Outgoing,
    /// The session was told the connection ended.
    eof: bool,
    /// A socket error that ended the connection, reported with its verdict.
    io_error: Option<io::Error>,
    metadata: Option<Metadata>,
    backoff: Option<Backoff>,
    /// A reconnect is due at this time.
    reconnect_at: Option<Instant>,
    /// The failure that started the reconnects in progress.
    last_error: Option<Error>,
    started: bool,
    start_returned: bool,
    /// After a gap-filling reconnect, until the first market-data record: records are
    /// taken (and copied) before returning, as replayed duplicates may be dropped.
    replay_copy: bool,
    held: Option<RecordBuf>,
    /// What [`next_batch`](Self::next_batch) found that is not a record batch, for
    /// the next pull (its record, if any, is in `held`).
    waiting: Option<Step>,
    finished: Option<Finished>,
}

impl LiveClient {
    /// Resolves the gateway, connects (within the connect timeout) and authenticates
    /// (within the authentication timeout). Automatic reconnects apply after
    /// [`start`](Self::start) only: a first connection that fails is reported.
    ///
    /// # Errors
    /// Kind `Config` for invalid options, `Dns`, `Connect`, `Timeout` (connect or
    /// authentication), `Auth` when the gateway rejects the key, `Closed` when it
    /// closes during the handshake, `Io`, `Protocol`.
    pub async fn connect(options: LiveOptions) -> Result<Self, Error> {
        let (host, port) = match &options.addr {
            Some(addr) => net::split_addr(addr)?,
            None => gateway_address(&options.dataset),
        };
        if options.read_buffer == 0 {
            return Err(Error::Config("read_buffer must be positive".to_owned()));
        }
        if options.connect_timeout.is_zero() {
            return Err(Error::Config("connect_timeout must be positive".to_owned()));
        }
        let backoff = options
            .auto_reconnect
            .clone()
            .map(Backoff::new)
            .transpose()?;
        let config = options.session_config();
        // Check the configuration before touching the network.
        LiveSession::new(config.clone(), Instant::now())?;
        tracing::debug!(%host, port, dataset = %options.dataset, "connecting to the live gateway");
        let socket = net::connect(&host, port, options.connect_timeout).await?;
        let session = LiveSession::new(config, Instant::now())?;
        let mut client = Self {
            host,
            port,
            connect_timeout: options.connect_timeout,
            session,
            socket: Some(socket),
            read_buf: vec![0; options.read_buffer].into_boxed_slice(),
            pending: 0..0,
            out: Outgoing::default(),
            eof: false,
            io_error: None,
            metadata: None,
            backoff,
            reconnect_at: None,
            last_error: None,
            started: false,
            start_returned: false,
            replay_copy: false,
            held: None,
            waiting: None,
            finished: None,
        };
        loop {
            // Nothing but `Authenticated` (handled inside) comes before `start`.
            let _ = client.poll_step(false)?;
            if client.session.is_authenticated() && !client.session.wants_transmit() {
                return Ok(client);
            }
            client.io_once().await?;
        }
    }

    /// Adds a subscription and returns its id. Before [`start`](Self::start) it is
    /// queued and goes out with `start_session` in one write; afterwards it is sent
    /// now. Subscriptions are sent again on every reconnect.
    ///
    /// # Errors
    /// Kind `Usage` for an invalid subscription (nothing is sent), `Io` when writing
    /// fails, `Closed` when the client has ended.
    pub async fn subscribe(&mut self, subscription: Subscription) -> Result<u32, Error> {
        self.check_finished()?;
        let id = self.session.subscribe(subscription)?;
        if self.started {
            self.flush().await?;
        }
        Ok(id)
    }

    /// Starts the session (subscriptions and `start_session` in one write) and waits
    /// for the stream's metadata.
    ///
    /// # Errors
    /// Kind `Usage` when called twice, `Io`, `Timeout`, `Protocol` from the stream's
    /// first bytes, `Closed` when the gateway ends the connection before the metadata.
    pub async fn start(&mut self) -> Result<Metadata, Error> {
        self.check_finished()?;
        if !self.started {
            self.session.start(Instant::now())?;
            self.started = true;
        } else if self.start_returned {
            return Err(dbn_pipe_protocol::Error::InvalidRequest(
                "start was already called".to_owned(),
            )
            .into());
        }
        loop {
            match self.next_step().await? {
                Step::Metadata(metadata) => {
                    self.start_returned = true;
                    return Ok(*metadata);
                }
                Step::End => {
                    return Err(Error::Closed(
                        "the gateway ended the stream before sending its metadata".to_owned(),
                    ));
                }
                Step::Batch | Step::Held | Step::Gateway | Step::Reconnected { .. } => {}
            }
        }
    }

    /// The next record, borrowed from the session's buffer (no allocation, no copy;
    /// right after a gap-filling reconnect the first replayed records are copied into
    /// a fixed buffer of the client). Gateway notices (`SystemMsg`, `ErrorMsg`) come
    /// as records too; reconnect notifications and later metadata are skipped (see
    /// [`next_event`](Self::next_event)). `Ok(None)` when the stream ended cleanly.
    ///
    /// Cancel-safe.
    ///
    /// # Errors
    /// The error that ended the connection, after every record before it: kind
    /// `Truncated` for a connection that ends (or is reset) inside a record, `Timeout`
    /// (heartbeat), `Protocol`, `Decompression`, `Io`; with automatic reconnect, the
    /// last error once the attempts run out.
    pub async fn next_record(&mut self) -> Result<Option<RecordRef<'_>>, Error> {
        // The record path: a record is buffered and nothing else comes first (no kept
        // step, no end, no reconnect, no replay check), so it is taken as is.
        if self.waiting.is_none()
            && self.finished.is_none()
            && self.reconnect_at.is_none()
            && !self.replay_copy
            && self.session.record_ready()
        {
            return match self.session.poll_record() {
                Some(record) => Ok(Some(record)),
                None => Err(Error::internal("a ready record vanished")),
            };
        }
        loop {
            match self.next_step().await? {
                Step::Batch => break,
                Step::Held | Step::Gateway => {
                    return Ok(self.held.as_ref().map(RecordBuf::as_rec_ref));
                }
                Step::End => return Ok(None),
                Step::Metadata(_) | Step::Reconnected { .. } => {}
            }
        }
        self.take_batch_record().map(Some)
    }

    /// The next event: a record, a gateway notice with its classification, a
    /// reconnect, or a new connection's metadata. `Ok(None)` when the stream ended
    /// cleanly.
    ///
    /// Cancel-safe.
    ///
    /// # Errors
    /// As [`next_record`](Self::next_record).
    pub async fn next_event(&mut self) -> Result<Option<Event<'_>>, Error> {
        let step = self.next_step().await?;
        Ok(Some(match step {
            Step::Batch => Event::Record(self.take_batch_record()?),
            Step::Held => match &self.held {
                Some(held) => Event::Record(held.as_rec_ref()),
                None => return Err(Error::internal("no held record")),
            },
            Step::Gateway => match &self.held {
                Some(held) => {
                    let record = held.as_rec_ref();
                    let notice =
                        GatewayNotice::classify(&record).unwrap_or(GatewayNotice::System {
                            code: None,
                            text: "",
                        });
                    Event::Gateway { record, notice }
                }
                None => return Err(Error::internal("no held notice")),
            },
            Step::Metadata(metadata) => Event::Metadata(metadata),
            Step::Reconnected { policy, gap_from } => Event::Reconnected { policy, gap_from },
            Step::End => return Ok(None),
        }))
    }

    /// The next batch of records, borrowed from the session's buffer: every
    /// market-data record and symbol mapping decoded up to the next gateway notice, in
    /// stream order, without copying. Waits until records, another event or the end
    /// arrive. Records not taken from the batch stay buffered when it is dropped and
    /// come first from the next call, whichever method it is.
    ///
    /// `Ok(None)` when the next thing is not a record batch: a gateway notice, a
    /// reconnect, a new connection's metadata, or the clean end of the stream. Call
    /// [`next_event`](Self::next_event) then: it returns that event (`Ok(None)` for
    /// the end) without waiting, so nothing is lost or reordered between the two
    /// calls. The loop is in the [crate documentation](crate#batches).
    ///
    /// Cancel-safe: a batch only exists once returned, and a cancelled call leaves
    /// every byte and record in the client. A batch yields at least one record,
    /// except right after a gap-filling reconnect ([`ReconnectPolicy::GapFill`]),
    /// where replayed records already delivered are dropped as the batch is iterated
    /// and a batch may hold only those.
    ///
    /// ```
    /// use dbn::Schema;
    /// use dbn_pipe_tokio::dbn_pipe_protocol::live::{ApiKey, Subscription};
    /// use dbn_pipe_tokio::{Event, LiveClient, LiveOptions};
    ///
    /// # fn gateway() -> std::io::Result<String> {
    /// #     use std::io::{BufRead, BufReader, Write};
    /// #     let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// #     let addr = listener.local_addr()?.to_string();
    /// #     std::thread::spawn(move || -> std::io::Result<()> {
    /// #         let (mut socket, _) = listener.accept()?;
    /// #         let mut lines = BufReader::new(socket.try_clone()?);
    /// #         let chunks = dbn_pipe_protocol::doc_support::scripted_gateway();
    /// #         socket.write_all(&chunks[0])?;
    /// #         socket.write_all(&chunks[1])?;
    /// #         let mut line = String::new();
    /// #         lines.read_line(&mut line)?;
    /// #         socket.write_all(&chunks[2])?;
    /// #         while !line.starts_with("start_session") {
    /// #             line.clear();
    /// #             if lines.read_line(&mut line)? == 0 {
    /// #                 return Ok(());
    /// #             }
    /// #         }
    /// #         for chunk in &chunks[3..] {
    /// #             socket.write_all(chunk)?;
    /// #         }
    /// #         Ok(())
    /// #     });
    /// #     Ok(addr)
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let gateway_addr = gateway()?;
    /// let key = ApiKey::new("db-0123456789abcdefghijklmnABCDE")?;
    /// let options = LiveOptions::new(key, "GLBX.MDP3").addr(gateway_addr);
    /// let mut client = LiveClient::connect(options).await?;
    /// client.subscribe(Subscription::new(Schema::Mbo, ["ESH1"])).await?;
    /// client.start().await?;
    /// let mut records = 0;
    /// loop {
    ///     if let Some(batch) = client.next_batch().await? {
    ///         for record in batch {
    ///             records += 1; // borrowed, no copy
    ///             let _ = record.header().ts_event;
    ///         }
    ///         continue;
    ///     }
    ///     match client.next_event().await? {
    ///         Some(Event::Gateway { notice, .. }) => println!("{notice:?}"),
    ///         Some(Event::Record(_)) => records += 1, // records may come here too
    ///         Some(_) => {}                             // reconnects, later metadata
    ///         None => break,                            // the stream ended cleanly
    ///     }
    /// }
    /// assert_eq!(records, 2);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`next_record`](Self::next_record): the error that ended the connection,
    /// after every record before it.
    pub async fn next_batch(&mut self) -> Result<Option<LiveBatch<'_>>, Error> {
        if self.waiting.is_some() {
            return Ok(None);
        }
        match self.step(true).await? {
            Step::Batch => {}
            step => {
                // Kept for `next_event`: nothing awaits between here and the return,
                // so a cancellation cannot lose it.
                self.waiting = Some(step);
                return Ok(None);
            }
        }
        // `step` saw a batch and left it in the session; nothing ran since, so this
        // poll hands the same records out.
        match self.session.poll_event() {
            Ok(Some(LiveEvent::Records(batch))) => Ok(Some(batch)),
            Ok(_) => Err(Error::internal("a record batch vanished")),
            Err(err) => Err(err.into()),
        }
    }

    /// Shuts the connection down cleanly (TCP FIN) and ends the client: later calls
    /// to [`next_record`](Self::next_record) return `Ok(None)`.
    ///
    /// # Errors
    /// Kind `Io` when the shutdown fails (the socket is closed anyway).
    pub async fn close(&mut self) -> Result<(), Error> {
        self.finished = Some(Finished::Clean);
        self.reconnect_at = None;
        self.waiting = None;
        self.out.clear();
        match self.socket.take() {
            Some(mut socket) => socket.shutdown().await.map_err(Error::io),
            None => Ok(()),
        }
    }

    /// The metadata of the current connection's stream, once received.
    pub fn metadata(&self) -> Option<&Metadata> {
        self.metadata.as_ref()
    }

    /// The gateway's session id of the current connection, once authenticated.
    pub fn session_id(&self) -> Option<&str> {
        self.session.session_id()
    }

    /// The sans-IO session underneath (read-only).
    pub fn session(&self) -> &LiveSession {
        &self.session
    }

    fn check_finished(&self) -> Result<(), Error> {
        match &self.finished {
            None => Ok(()),
            Some(Finished::Clean) => Err(Error::Closed("the client is closed".to_owned())),
            Some(Finished::Failed(why)) => Err(Error::Closed(format!("the client failed: {why}"))),
        }
    }

    /// Takes the first record of the batch `step` found. Nothing ran in between, so
    /// the session hands out that batch again.
    fn take_batch_record(&mut self) -> Result<RecordRef<'_>, Error> {
        match self.session.poll_event() {
            Ok(Some(LiveEvent::Records(mut batch))) => batch
                .next()
                .ok_or_else(|| Error::internal("a record batch had no record")),
            Ok(_) => Err(Error::internal("a record batch vanished")),
            Err(err) => Err(err.into()),
        }
    }

    /// The step [`next_batch`](Self::next_batch) kept, else the next one.
    async fn next_step(&mut self) -> Result<Step, Error> {
        match self.waiting.take() {
            Some(step) => Ok(step),
            None => self.step(false).await,
        }
    }

    /// Drives the connection until the session has something for the application.
    /// Cancel-safe: every await leaves the state resumable. `batches`: a record batch
    /// is left in the session even during the replay check (see `poll_step`).
    async fn step(&mut self, batches: bool) -> Result<Step, Error> {
        loop {
            match &self.finished {
                None => {}
                Some(Finished::Clean) => return Ok(Step::End),
                Some(Finished::Failed(why)) => {
                    return Err(Error::Closed(format!(
                        "the connection failed earlier: {why}"
                    )));
                }
            }
            if let Some(at) = self.reconnect_at {
                tokio::time::sleep_until(at.into()).await;
                self.reconnect().await?;
                continue;
            }
            if let Some(step) = self.poll_step(batches)? {
                return Ok(step);
            }
            if self.reconnect_at.is_none() {
                self.io_once().await?;
            }
        }
    }

    /// Connects again after the delay, or schedules the next attempt.
    async fn reconnect(&mut self) -> Result<(), Error> {
        let policy = match &self.backoff {
            Some(backoff) => backoff.config().policy,
            None => return Err(Error::internal("reconnect without a policy")),
        };
        let attempt = self.backoff.as_ref().map_or(0, Backoff::attempts);
        tracing::warn!(host = %self.host, port = self.port, attempt, "reconnecting to the live gateway");
        match net::connect(&self.host, self.port, self.connect_timeout).await {
            Ok(socket) => {
                self.reconnect_at = None;
                self.socket = Some(socket);
                self.pending = 0..0;
                self.out.clear();
                self.eof = false;
                self.io_error = None;
                self.session.reconnect(Instant::now(), policy)?;
                self.replay_copy = policy == ReconnectPolicy::GapFill;
                Ok(())
            }
            Err(err) => {
                self.reconnect_at = None;
                match self.schedule_reconnect(Some(err)) {
                    Ok(_) => Ok(()),
                    Err(err) => Err(err),
                }
            }
        }
    }

    /// Drains the session's events until one is for the application (`Some`), it
    /// needs I/O (`None`), or a reconnect was scheduled (`None`). `batches`: the
    /// caller hands out whole batches, which drop replayed duplicates themselves, so
    /// no record is copied during the replay check.
    fn poll_step(&mut self, batches: bool) -> Result<Option<Step>, Error> {
        loop {
            let event = match self.session.poll_event() {
                Ok(Some(event)) => event,
                Ok(None) => return Ok(None),
                Err(err) => return self.schedule_reconnect(Some(Error::Session(err))),
            };
            match event {
                LiveEvent::Authenticated { session_id } => {
                    tracing::info!(session_id, "authenticated with the live gateway");
                    if let Some(backoff) = &mut self.backoff {
                        backoff.reset();
                    }
                    self.last_error = None;
                }
                LiveEvent::Reconnected { policy, gap_from } => {
                    tracing::info!(?policy, ?gap_from, "reconnected to the live gateway");
                    return Ok(Some(Step::Reconnected { policy, gap_from }));
                }
                LiveEvent::Metadata(metadata) => {
                    self.metadata = Some((*metadata).clone());
                    return Ok(Some(Step::Metadata(metadata)));
                }
                LiveEvent::Records(mut batch) => {
                    if batches || !self.replay_copy {
                        // Left in the session; `take_batch_record` hands it out.
                        return Ok(Some(Step::Batch));
                    }
                    // Replayed duplicates may be dropped by the batch: take first.
                    match batch.next() {
                        None => {}
                        Some(record) => {
                            if record.header().rtype != rtype::SYMBOL_MAPPING {
                                // The first market-data record ends the replay check.
                                self.replay_copy = false;
                            }
                            self.held = Some(record.to_owned());
                            return Ok(Some(Step::Held));
                        }
                    }
                }
                LiveEvent::Gateway { record, .. } => {
                    self.held = Some(record.to_owned());
                    return Ok(Some(Step::Gateway));
                }
                LiveEvent::Closed(closed) => {
                    tracing::debug!(
                        bytes = closed.bytes_received,
                        clean = closed.is_clean(),
                        "live connection ended"
                    );
                    return self.schedule_reconnect(closed.truncated.map(Error::Session));
                }
            }
        }
    }

    /// The connection ended (cleanly when `cause` is `None`). Schedules a reconnect
    /// when one applies (`Ok(None)`), else ends the client (`Ok(Some(End))` or the
    /// error).
    fn schedule_reconnect(&mut self, cause: Option<Error>) -> Result<Option<Step>, Error> {
        let io_error = self.io_error.take();
        let cause = match (cause, io_error) {
            // A reset during the handshake says more than "closed".
            (Some(cause), Some(io)) if cause.kind() == crate::ErrorKind::Closed => {
                Some(Error::io(io))
            }
            (Some(cause), _) => Some(cause),
            // A reset on a record boundary is not a clean end.
            (None, Some(io)) => Some(Error::io(io)),
            (None, None) => None,
        };
        self.socket = None;
        self.pending = 0..0;
        self.out.clear();
        let eligible = self.started && cause.as_ref().is_none_or(reconnectable);
        if let (true, Some(backoff)) = (eligible, self.backoff.as_mut()) {
            if let Some(delay) = backoff.next_delay(fastrand::u64(..)) {
                match &cause {
                    Some(err) => {
                        tracing::warn!(error = %err, ?delay, attempt = backoff.attempts(), "live connection failed; reconnecting")
                    }
                    None => tracing::warn!(
                        ?delay,
                        attempt = backoff.attempts(),
                        "live gateway closed the connection; reconnecting"
                    ),
                }
                if cause.is_some() {
                    self.last_error = cause;
                }
                self.reconnect_at = Some(Instant::now() + delay);
                return Ok(None);
            }
            tracing::warn!(
                attempts = backoff.attempts(),
                "live reconnect attempts exhausted"
            );
        }
        let cause = cause.or_else(|| {
            if eligible {
                self.last_error.take()
            } else {
                None
            }
        });
        match cause {
            None => {
                self.finished = Some(Finished::Clean);
                Ok(Some(Step::End))
            }
            Some(err) => {
                self.finished = Some(Finished::Failed(err.to_string()));
                Err(err)
            }
        }
    }

    /// Writes what the session queued.
    async fn flush(&mut self) -> Result<(), Error> {
        let _ = self.session.poll_transmit(&mut self.out.buf);
        if self.out.is_empty() {
            return Ok(());
        }
        match self.socket.as_mut() {
            Some(socket) => {
                if let Err(err) = self.out.flush(socket).await {
                    self.connection_lost(err);
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// The socket failed: the session is told the connection ended; its verdict
    /// (with `err`) comes through the events.
    fn connection_lost(&mut self, err: io::Error) {
        tracing::debug!(error = %err, "live socket error");
        self.io_error.get_or_insert(err);
        self.out.clear();
        self.pending = 0..0;
        if !self.eof {
            self.eof = true;
            self.session.handle_eof();
        }
    }

    /// One I/O step once the events are drained: write, feed buffered input, or wait
    /// for the socket or the session's deadline.
    async fn io_once(&mut self) -> Result<(), Error> {
        self.flush().await?;
        if self.session.wants_transmit() {
            return Ok(());
        }
        if !self.pending.is_empty() {
            let taken = self
                .session
                .handle_input(Instant::now(), &self.read_buf[self.pending.clone()]);
            self.pending.start += taken;
            if taken == 0 {
                if !self.session.is_ended() {
                    return Err(Error::internal(
                        "the session took no input and had no event",
                    ));
                }
                // The connection already failed: what follows is moot.
                self.pending = 0..0;
            }
            return Ok(());
        }
        if self.eof {
            if self.session.is_ended() {
                // Ended without a verdict (nothing was started): a clean end.
                return self.schedule_reconnect(None).map(|_| ());
            }
            return Err(Error::internal(
                "the session gave no verdict after the end of input",
            ));
        }
        let deadline = self.session.poll_timeout();
        let Some(socket) = self.socket.as_mut() else {
            return Err(Error::internal("no socket"));
        };
        tokio::select! {
            biased;
            read = socket.read(&mut self.read_buf) => match read {
                Ok(0) => {
                    self.eof = true;
                    self.session.handle_eof();
                }
                Ok(n) => self.pending = 0..n,
                Err(err) => self.connection_lost(err),
            },
            () = sleep_until(deadline) => self.session.handle_timeout(Instant::now()),
        }
        Ok(())
    }
}

/// Whether another connection may fix what failed.
fn reconnectable(err: &Error) -> bool {
    match err {
        Error::Session(err) => is_reconnectable(err),
        Error::Io { .. }
        | Error::Dns { .. }
        | Error::Connect { .. }
        | Error::ConnectTimeout { .. }
        | Error::ReadTimeout { .. } => true,
        _ => false,
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
