//! The historical connection: a [`HistoricalSession`] (TLS inside) over a mio
//! `TcpStream`, one request at a time on a keep-alive connection.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dbn::{Metadata, RecordRef};
use dbn_pipe_protocol::RecordBatch;
use dbn_pipe_protocol::historical::{
    BaseUrl, GetRangeParams, HistoricalConfig, HistoricalEvent, HistoricalSession, JsonRequest,
    JsonResponse,
};
use dbn_pipe_protocol::live::ApiKey;
use dbn_pipe_protocol::tls::TlsConfig;
use mio::event::Event;
use mio::{Registry, Token};

use crate::Error;
use crate::net::{ReadOutcome, Socket, is_disconnect, resolve};

/// Options of a [`HistoricalConnection`].
#[derive(Debug, Clone)]
pub struct HistoricalOptions {
    key: ApiKey,
    base_url: String,
    tls: Option<TlsConfig>,
    extra_roots: Vec<Vec<u8>>,
    connect_timeout: Duration,
    read_timeout: Duration,
    read_buffer: usize,
    buffer_size: Option<usize>,
}

impl HistoricalOptions {
    /// Default base URL.
    pub const DEFAULT_BASE_URL: &'static str = "https://hist.databento.com";
    /// Default connect timeout: 10 s.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default read timeout: 60 s without a byte while a response is expected.
    pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);

    /// Options with the defaults: `https://hist.databento.com`, the webpki roots.
    pub fn new(key: ApiKey) -> Self {
        Self {
            key,
            base_url: Self::DEFAULT_BASE_URL.to_owned(),
            tls: None,
            extra_roots: Vec::new(),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            read_timeout: Self::DEFAULT_READ_TIMEOUT,
            read_buffer: 64 * 1024,
            buffer_size: None,
        }
    }

    /// The server: `https://host[:port]` (only https; no path). The host is also the
    /// TLS server name and the HTTP `Host`. Checked by
    /// [`HistoricalConnection::connect`].
    #[must_use]
    pub fn base_url(mut self, url: &str) -> Self {
        self.base_url = url.to_owned();
        self
    }

    /// The TLS configuration (trusted roots). Replaces the default.
    #[must_use]
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Trusts an extra root certificate (PEM) besides the webpki roots. Ignored when
    /// [`tls`](Self::tls) is set.
    #[must_use]
    pub fn add_root_pem(mut self, pem: &[u8]) -> Self {
        self.extra_roots.push(pem.to_vec());
        self
    }

    /// How long the TCP connect may take.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long the server may send nothing while a response is expected (and the
    /// application is not holding records back).
    #[must_use]
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// The socket read size (default 64 KiB).
    #[must_use]
    pub fn read_buffer(mut self, bytes: usize) -> Self {
        self.read_buffer = bytes;
        self
    }

    /// The DBN decoder's record buffer size.
    #[must_use]
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.buffer_size = Some(bytes);
        self
    }

    /// Checks the options: host, port and the TLS configuration.
    fn resolve_config(&self) -> Result<Endpoint, Error> {
        let BaseUrl { host, port } = BaseUrl::parse(&self.base_url)?;
        if self.read_buffer == 0 || self.connect_timeout.is_zero() || self.read_timeout.is_zero() {
            return Err(Error::Config(
                "read_buffer, connect_timeout and read_timeout must not be zero".to_owned(),
            ));
        }
        let tls = match &self.tls {
            Some(tls) => tls.clone(),
            None => {
                let mut builder = TlsConfig::builder();
                for pem in &self.extra_roots {
                    builder = builder.add_pem(pem)?;
                }
                builder.build()?
            }
        };
        let addr = BaseUrl {
            host: host.clone(),
            port,
        }
        .socket_addr();
        Ok(Endpoint { host, addr, tls })
    }
}

#[derive(Debug, Clone)]
struct Endpoint {
    host: String,
    addr: String,
    tls: TlsConfig,
}

/// How far a [`HistoricalConnection::get_range_to_file`] download got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileProgress {
    /// Body bytes written to the file (compressed, as served).
    pub bytes_written: u64,
    /// Records decoded from those bytes.
    pub records: u64,
}

/// What a [`HistoricalConnection`] hands the application.
#[derive(Debug)]
#[non_exhaustive]
pub enum HistoricalItem<'a> {
    /// A server warning (`X-Warning`).
    Warning(String),
    /// The DBN metadata of a get_range body.
    Metadata(Box<Metadata>),
    /// A record, borrowed from the session.
    Record(RecordRef<'a>),
    /// Body bytes were written to the file of a get_range_to_file request.
    Progress(FileProgress),
    /// The result of a JSON request (which ends it).
    Json(JsonResponse),
    /// The get_range request finished cleanly; `file` is the final progress of a
    /// get_range_to_file request (the file is flushed and closed).
    Done {
        /// The final progress of a download to a file.
        file: Option<FileProgress>,
    },
}

#[derive(Debug)]
enum Request {
    Records,
    File {
        path: PathBuf,
        file: BufWriter<File>,
        progress: FileProgress,
    },
    Json,
}

#[derive(Debug)]
enum Step {
    Batch,
    Item(Owned),
    Again,
    Idle,
}

/// A session event without borrows.
#[derive(Debug)]
enum Polled {
    Item(Owned),
    Json(JsonResponse),
    Done,
    Nothing,
    Failed(Error),
}

#[derive(Debug)]
enum Owned {
    Warning(String),
    Metadata(Box<Metadata>),
    Progress(FileProgress),
    Json(JsonResponse),
    Done(Option<FileProgress>),
}

/// A Historical API connection driven by the application's mio `Poll`: one request
/// at a time (get_range, get_range_to_file, JSON) on a keep-alive connection, reopened
/// (re-resolved) for the next request when the server closed it or it failed.
///
/// The loop is the one of [`LiveConnection`](crate::LiveConnection): give it your
/// events ([`handle_event`](Self::handle_event)) and deadlines
/// ([`handle_timeout`](Self::handle_timeout), [`poll_timeout`](Self::poll_timeout)),
/// then pull with [`next_record`](Self::next_record) or
/// [`next_event`](Self::next_event) until `Ok(None)` (or whole batches with
/// [`next_batch`](Self::next_batch), then `next_event`). Pulling does the socket I/O
/// and resumes reading by itself after backpressure.
#[derive(Debug)]
pub struct HistoricalConnection {
    registry: Registry,
    token: Token,
    options: HistoricalOptions,
    endpoint: Endpoint,
    session: HistoricalSession,
    socket: Option<Socket>,
    eof_sent: bool,
    /// The last input step took nothing; the next one that takes nothing waits.
    stalled: bool,
    failure: Option<Error>,
    request: Option<Request>,
    read_deadline: Option<Instant>,
    /// An item [`next_batch`](Self::next_batch) took from the session, for the next
    /// pull: nothing is lost or reordered between the two APIs.
    held: Option<Owned>,
}

impl HistoricalConnection {
    /// Resolves the server (blocking, `std::net::ToSocketAddrs`), starts connecting
    /// and registers the socket under `token`.
    ///
    /// # Errors
    /// [`Error::Config`] for invalid options, [`Error::Dns`], [`Error::Connect`],
    /// [`Error::Io`].
    pub fn connect(
        registry: &Registry,
        token: Token,
        options: HistoricalOptions,
        now: Instant,
    ) -> Result<Self, Error> {
        let endpoint = options.resolve_config()?;
        let registry = registry.try_clone()?;
        let session = new_session(&options, &endpoint)?;
        let socket = open(&registry, token, &options, &endpoint, now)?;
        Ok(Self {
            registry,
            token,
            options,
            endpoint,
            session,
            socket: Some(socket),
            eof_sent: false,
            stalled: false,
            failure: None,
            request: None,
            read_deadline: None,
            held: None,
        })
    }

    /// Sends `timeseries.get_range`; pull its records with
    /// [`next_record`](Self::next_record).
    ///
    /// # Errors
    /// [`Error::Usage`] while a request is in flight; the session's error for invalid
    /// parameters; transport errors when the connection had to be reopened.
    pub fn get_range(&mut self, params: &GetRangeParams) -> Result<(), Error> {
        self.prepare()?;
        self.session.get_range(params)?;
        self.sent(Request::Records);
        Ok(())
    }

    /// Sends `timeseries.get_range` and writes the raw body (`.dbn.zst` as served) to
    /// `path` as it arrives; [`next_event`](Self::next_event) yields
    /// [`HistoricalItem::Progress`] after every write and every batch of records counted, and the final progress in
    /// [`HistoricalItem::Done`]. The records are decoded too (counted, checked), not
    /// handed out.
    ///
    /// # Errors
    /// As [`get_range`](Self::get_range); [`Error::File`] when `path` cannot be
    /// created.
    pub fn get_range_to_file(&mut self, params: &GetRangeParams, path: &Path) -> Result<(), Error> {
        self.prepare()?;
        let file = File::create(path).map_err(|source| Error::File {
            path: path.to_owned(),
            source,
        })?;
        self.session.get_range_copy(params)?;
        self.sent(Request::File {
            path: path.to_owned(),
            file: BufWriter::new(file),
            progress: FileProgress::default(),
        });
        Ok(())
    }

    /// Sends a JSON endpoint request; the result comes as [`HistoricalItem::Json`].
    ///
    /// # Errors
    /// As [`get_range`](Self::get_range).
    pub fn request_json(&mut self, request: JsonRequest) -> Result<(), Error> {
        self.prepare()?;
        self.session.request_json(request)?;
        self.sent(Request::Json);
        Ok(())
    }

    /// Whether no request is in flight (the last one finished or failed).
    pub fn is_idle(&self) -> bool {
        self.request.is_none()
    }

    /// The token the socket is registered under.
    pub fn token(&self) -> Token {
        self.token
    }

    /// Takes a readiness event of this connection's token.
    pub fn handle_event(&mut self, event: &Event, now: Instant) {
        if event.token() != self.token {
            return;
        }
        let Some(socket) = &mut self.socket else {
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

    /// Fires the deadlines that passed at `now`: connect and read timeouts. The read
    /// timeout only counts while the connection waits for the server (not while the
    /// application holds records back).
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(socket) = &mut self.socket else {
            return;
        };
        if !socket.is_connected() {
            if socket.deadline().is_some_and(|d| now >= d) {
                self.check_connect(now);
            }
            return;
        }
        let Some(deadline) = self.read_deadline else {
            return;
        };
        if now < deadline {
            return;
        }
        if socket.pending().is_empty() && !socket.can_read() {
            self.failure = Some(Error::ReadTimeout {
                after: self.options.read_timeout,
            });
            self.read_deadline = None;
            self.close_socket();
        } else {
            self.read_deadline = Some(now + self.options.read_timeout);
        }
    }

    /// The next deadline (connect or read timeout): your `Poll::poll` timeout.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let socket = self.socket.as_ref()?;
        socket.deadline().or(self.read_deadline)
    }

    /// The next record of the get_range in flight, borrowed. `Ok(None)`: nothing
    /// until the next event or deadline, or the request finished
    /// ([`is_idle`](Self::is_idle)).
    ///
    /// # Errors
    /// The failure of the request (HTTP status with the server's message, TLS,
    /// truncation, timeouts, transport), after every record before it.
    #[must_use = "records and errors must be handled"]
    pub fn next_record(&mut self) -> Result<Option<RecordRef<'_>>, Error> {
        // The record path: records are handed out (not counted into a file), one is
        // buffered and nothing comes before it.
        if self.held.is_none()
            && matches!(self.request, Some(Request::Records))
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
            Some(HistoricalItem::Record(record)) => Ok(Some(record)),
            _ => Ok(None),
        }
    }

    /// The next item of the request in flight. `Ok(None)` as for
    /// [`next_record`](Self::next_record).
    ///
    /// # Errors
    /// As [`next_record`](Self::next_record).
    #[must_use = "items and errors must be handled"]
    pub fn next_event(&mut self) -> Result<Option<HistoricalItem<'_>>, Error> {
        self.next_item(true)
    }

    /// The next batch of records of the get_range in flight, borrowed from the
    /// session: every record decoded so far, in order, without copying. Records not
    /// taken from the batch stay buffered when it is dropped and come first from the
    /// next pull, whichever API it uses. A batch yields at least one record.
    ///
    /// `Ok(None)` when the next thing is not a record batch: nothing is buffered yet
    /// (wait for the next readiness event or deadline), or another item waits (a
    /// warning, the metadata, progress, [`HistoricalItem::Done`]). Call
    /// [`next_event`](Self::next_event) then: it returns that item, or `Ok(None)` to
    /// wait, so nothing is lost or reordered between the two calls. After
    /// [`get_range_to_file`](Self::get_range_to_file) there are no batches (the records
    /// are only counted).
    ///
    /// Compiled, not run (it needs the real server and a key):
    ///
    /// ```no_run
    /// use std::time::Instant;
    /// use dbn::Schema;
    /// use dbn_pipe_mio::{HistoricalConnection, HistoricalItem, HistoricalOptions};
    /// use dbn_pipe_protocol::historical::GetRangeParams;
    /// use dbn_pipe_protocol::live::ApiKey;
    /// use mio::{Events, Poll, Token};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let key = ApiKey::new(std::env::var("DATABENTO_API_KEY")?)?;
    /// let mut poll = Poll::new()?;
    /// let mut events = Events::with_capacity(16);
    /// let options = HistoricalOptions::new(key);
    /// let mut hist = HistoricalConnection::connect(poll.registry(), Token(7), options, Instant::now())?;
    /// let params = GetRangeParams::new("GLBX.MDP3", Schema::Trades, ["ESM4"], 1_704_067_200_000_000_000u64)
    ///     .limit(1_000);
    /// hist.get_range(&params)?;
    /// let mut records = 0;
    /// loop {
    ///     while let Some(batch) = hist.next_batch()? {
    ///         records += batch.count(); // each a borrowed dbn::RecordRef
    ///     }
    ///     match hist.next_event()? {
    ///         Some(HistoricalItem::Done { .. }) => break,
    ///         Some(HistoricalItem::Record(_)) => records += 1,
    ///         Some(_) => {} // warnings, metadata
    ///         None => {
    ///             let timeout =
    ///                 hist.poll_timeout().map(|at| at.saturating_duration_since(Instant::now()));
    ///             poll.poll(&mut events, timeout)?;
    ///             let now = Instant::now();
    ///             for event in &events {
    ///                 hist.handle_event(event, now);
    ///             }
    ///             hist.handle_timeout(now);
    ///         }
    ///     }
    /// }
    /// println!("{records} records");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`next_record`](Self::next_record).
    #[must_use = "records and errors must be handled"]
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch<'_>>, Error> {
        if self.held.is_some() {
            return Ok(None);
        }
        loop {
            match self.step()? {
                Step::Again => {}
                Step::Batch => break,
                Step::Idle => return Ok(None),
                Step::Item(owned) => {
                    self.held = Some(owned);
                    return Ok(None);
                }
            }
        }
        // `step` saw a batch and left it in the session; nothing ran since, so this
        // poll hands the same records out.
        match self.session.poll_event()? {
            Some(HistoricalEvent::Records(batch)) => Ok(Some(batch)),
            _ => Ok(None),
        }
    }

    fn next_item(&mut self, all: bool) -> Result<Option<HistoricalItem<'_>>, Error> {
        let step = loop {
            let step = match self.held.take() {
                Some(owned) => Step::Item(owned),
                None => self.step()?,
            };
            match step {
                Step::Again => {}
                Step::Item(Owned::Done(_) | Owned::Json(_)) if !all => return Ok(None),
                Step::Item(_) if !all => {}
                step => break step,
            }
        };
        Ok(match step {
            Step::Batch => match self.session.poll_event()? {
                Some(HistoricalEvent::Records(mut batch)) => {
                    batch.next().map(HistoricalItem::Record)
                }
                _ => None,
            },
            Step::Item(owned) => Some(match owned {
                Owned::Warning(warning) => HistoricalItem::Warning(warning),
                Owned::Metadata(metadata) => HistoricalItem::Metadata(metadata),
                Owned::Progress(progress) => HistoricalItem::Progress(progress),
                Owned::Json(json) => HistoricalItem::Json(json),
                Owned::Done(file) => HistoricalItem::Done { file },
            }),
            Step::Again | Step::Idle => None,
        })
    }

    fn step(&mut self) -> Result<Step, Error> {
        if self.request.is_none() {
            return Ok(Step::Idle);
        }
        // Owned values only leave this block, so the session's borrow ends here.
        let polled = match self.session.poll_event() {
            Ok(Some(HistoricalEvent::Records(batch))) => match &mut self.request {
                Some(Request::File { progress, .. }) => {
                    // Counted records are progress too: the last report equals the
                    // totals of `Done`.
                    progress.records += batch.count() as u64;
                    Polled::Item(Owned::Progress(*progress))
                }
                _ => return Ok(Step::Batch),
            },
            Ok(Some(HistoricalEvent::Body(bytes))) => match &mut self.request {
                Some(Request::File {
                    path,
                    file,
                    progress,
                }) => match file.write_all(bytes) {
                    Ok(()) => {
                        progress.bytes_written += bytes.len() as u64;
                        Polled::Item(Owned::Progress(*progress))
                    }
                    Err(source) => Polled::Failed(Error::File {
                        path: path.clone(),
                        source,
                    }),
                },
                _ => return Ok(Step::Again),
            },
            Ok(Some(HistoricalEvent::Warning(warning))) => {
                tracing::warn!(warning, "historical API warning");
                Polled::Item(Owned::Warning(warning))
            }
            Ok(Some(HistoricalEvent::Metadata(metadata))) => {
                Polled::Item(Owned::Metadata(metadata))
            }
            Ok(Some(HistoricalEvent::Json(json))) => Polled::Json(json),
            Ok(Some(HistoricalEvent::Done)) => Polled::Done,
            Ok(None) => Polled::Nothing,
            Err(err) => Polled::Failed(Error::Session(err)),
        };
        let owned = match polled {
            Polled::Item(owned) => owned,
            Polled::Json(json) => {
                self.request = None;
                self.read_deadline = None;
                Owned::Json(json)
            }
            Polled::Done => {
                self.read_deadline = None;
                match self.request.take() {
                    Some(Request::File {
                        path,
                        mut file,
                        progress,
                    }) => {
                        if let Err(source) = file.flush() {
                            return self.fail(Error::File { path, source });
                        }
                        Owned::Done(Some(progress))
                    }
                    _ => Owned::Done(None),
                }
            }
            Polled::Nothing => return self.pump(),
            Polled::Failed(err) => return self.fail(err),
        };
        Ok(Step::Item(owned))
    }

    /// Ends the request with `err`; the connection is reopened for the next one.
    fn fail(&mut self, err: Error) -> Result<Step, Error> {
        self.request = None;
        self.read_deadline = None;
        self.close_socket();
        Err(err)
    }

    fn pump(&mut self) -> Result<Step, Error> {
        let Some(socket) = &mut self.socket else {
            return match self.failure.take() {
                Some(err) => self.fail(err),
                None => Ok(Step::Idle),
            };
        };
        if !socket.is_connected() {
            return Ok(Step::Idle);
        }
        if socket.pending().is_empty() {
            match socket.read() {
                Ok(ReadOutcome::Data) => {
                    self.read_deadline = Some(Instant::now() + self.options.read_timeout);
                }
                Ok(ReadOutcome::WouldBlock) => return Ok(Step::Idle),
                Ok(ReadOutcome::Eof) => {
                    if std::mem::replace(&mut self.eof_sent, true) {
                        return Ok(Step::Idle);
                    }
                    self.session.handle_eof();
                    return Ok(Step::Again);
                }
                Err(err) => {
                    if !is_disconnect(&err) {
                        self.failure = Some(Error::Io { source: err });
                        return self.fail_pending();
                    }
                    self.eof_sent = true;
                    self.session.handle_eof();
                    return Ok(Step::Again);
                }
            }
        }
        let taken = self.session.handle_input(socket.pending());
        socket.consume(taken);
        self.flush();
        // Taking nothing may mean the input just failed the session (a TLS alert):
        // poll it once more for its verdict before waiting for the socket.
        let stalled = std::mem::replace(&mut self.stalled, taken == 0);
        Ok(if taken > 0 || !stalled {
            Step::Again
        } else {
            Step::Idle
        })
    }

    fn fail_pending(&mut self) -> Result<Step, Error> {
        match self.failure.take() {
            Some(err) => self.fail(err),
            None => Ok(Step::Idle),
        }
    }

    /// Reopens the connection when the last one cannot take a request.
    fn prepare(&mut self) -> Result<(), Error> {
        if self.request.is_some() {
            return Err(Error::Usage(
                "a request is in flight: wait for its end (no pipelining)".to_owned(),
            ));
        }
        // The end (`Done`, `Json`) of the last request, left by `next_batch`: a new
        // request supersedes it.
        self.held = None;
        // A server that closed the idle keep-alive connection: notice it before
        // sending (its close was an edge nobody pulled).
        let mut closed = false;
        if let Some(socket) = &mut self.socket {
            if socket.pending().is_empty() && socket.can_read() {
                closed = !matches!(
                    socket.read(),
                    Ok(ReadOutcome::WouldBlock | ReadOutcome::Data)
                );
            }
        }
        if !closed && self.session.is_ready() && self.socket.is_some() && self.failure.is_none() {
            return Ok(());
        }
        self.close_socket();
        self.failure = None;
        self.eof_sent = false;
        self.session = new_session(&self.options, &self.endpoint)?;
        self.socket = Some(open(
            &self.registry,
            self.token,
            &self.options,
            &self.endpoint,
            Instant::now(),
        )?);
        tracing::debug!(addr = %self.endpoint.addr, "historical connection reopened");
        Ok(())
    }

    fn sent(&mut self, request: Request) {
        self.request = Some(request);
        self.read_deadline = Some(Instant::now() + self.options.read_timeout);
        self.flush();
    }

    fn check_connect(&mut self, now: Instant) {
        let Some(socket) = &mut self.socket else {
            return;
        };
        match socket.check_connect(&self.registry, self.token, now) {
            Ok(false) => {}
            Ok(true) => {
                if self.request.is_some() {
                    self.read_deadline = Some(now + self.options.read_timeout);
                }
                self.flush();
            }
            Err(err) => {
                self.failure = Some(err);
                self.close_socket();
            }
        }
    }

    fn flush(&mut self) {
        let Some(socket) = &mut self.socket else {
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
            if !std::mem::replace(&mut self.eof_sent, true) {
                self.session.handle_eof();
            }
        }
    }

    fn close_socket(&mut self) {
        if let Some(socket) = self.socket.take() {
            socket.close(&self.registry);
        }
    }
}

fn new_session(
    options: &HistoricalOptions,
    endpoint: &Endpoint,
) -> Result<HistoricalSession, Error> {
    let mut config = HistoricalConfig::new(options.key.clone()).host(endpoint.host.clone());
    if let Some(bytes) = options.buffer_size {
        config = config.buffer_size(bytes);
    }
    Ok(HistoricalSession::new(config, &endpoint.tls)?)
}

fn open(
    registry: &Registry,
    token: Token,
    options: &HistoricalOptions,
    endpoint: &Endpoint,
    now: Instant,
) -> Result<Socket, Error> {
    let addrs = resolve(&endpoint.addr)?;
    Socket::connect(
        registry,
        token,
        addrs,
        options.connect_timeout,
        options.read_buffer,
        now,
    )
}
