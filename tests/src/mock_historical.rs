//! A scripted mock of Databento's Historical HTTPS API, for loopback tests.
//!
//! The server is written independently of `dbn-pipe-protocol`: blocking `std::net`
//! sockets, `rustls` for TLS (a committed self-signed test certificate for `localhost`
//! and `127.0.0.1`, see [`root_pem`]), HTTP/1.1 parsed by hand with `httparse`, one thread
//! per connection, keep-alive across requests.
//!
//! What the server answers is scripted with [`Reply`] values:
//! - a route per path ([`MockHistoricalBuilder::get_range`] for
//!   `POST /v0/timeseries.get_range`, [`MockHistoricalBuilder::json`] for the JSON
//!   endpoints, served to GET and POST alike), used for every matching request;
//! - a queue of one-shot replies ([`MockHistoricalBuilder::enqueue`],
//!   [`MockHistorical::enqueue`]) served, in order, to the next authenticated requests
//!   whatever their path, before the routes.
//!
//! Every request is first checked for `Authorization: Basic base64("<key>:")` with the
//! expected key (default [`TEST_KEY`]); a mismatch gets a `401` with
//! `{"detail": "..."}` and consumes nothing from the queue. Unknown paths get a `404`.
//!
//! A [`Reply`] chooses the status, headers (`request-id`, `X-Warning`, any other), the
//! body, its [`Framing`] (Content-Length, chunked, close-delimited with or without TLS
//! `close_notify`), a [`Fault`] (cut the connection after N body bytes, abruptly, with
//! `close_notify`, or inside a TLS record; stall before or after the head) and
//! [`Pacing`] (small, spaced writes).
//!
//! Every request is recorded ([`MockHistorical::requests`]) with its connection index,
//! so keep-alive can be checked. Dropping the server stops it: the listener closes
//! and every open connection is shut down (stalled ones included).
//!
//! ```no_run
//! use dbn_pipe_tests::mock_historical::{Framing, MockHistorical, Reply, million_mbo_body};
//!
//! let server = MockHistorical::builder()
//!     .get_range(Reply::dbn_zst(million_mbo_body()).framing(Framing::Chunked { chunk_size: 8192 }))
//!     .json("metadata.get_record_count", Reply::json("1000000"))
//!     .start()
//!     .unwrap();
//! println!("connect to {} as {}", server.addr(), server.host());
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::generate::{mbo_stream, zstd_frames};

/// The fake API key the test suite uses; the server expects it unless told otherwise.
pub const TEST_KEY: &str = "db-0123456789abcdefghijklmnABCDE";

/// The path of `timeseries.get_range`.
pub const GET_RANGE_PATH: &str = "/v0/timeseries.get_range";

/// Records in [`million_mbo_body`].
pub const MILLION: u64 = 1_000_000;

/// The largest request head the server reads before answering `431`.
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// The largest request body the server reads before answering `413`.
pub const MAX_REQUEST_BODY: usize = 1024 * 1024;

/// Plaintext gathered before a write when no [`Pacing`] is set.
const WRITE_BATCH: usize = 64 * 1024;

/// Bytes of the next TLS record written before a [`CutKind::MidTlsRecord`] cut.
const MID_RECORD_PLAINTEXT: usize = 256;

// ---------------------------------------------------------------------------------
// Certificate and fixtures
// ---------------------------------------------------------------------------------

struct Identity {
    pem: String,
    der: CertificateDer<'static>,
    config: Arc<ServerConfig>,
}

/// The self-signed test certificate every mock server presents (`localhost` and
/// `127.0.0.1`, valid from 1975 to 4096), and its private key: test data made with
/// `rcgen::generate_simple_self_signed`, committed so that the demo builds without a
/// certificate generator (`regenerate_the_test_certificate` in this module's tests
/// writes a new pair).
const CERT_PEM: &str = include_str!("../certs/localhost.cert.pem");
const KEY_PEM: &str = include_str!("../certs/localhost.key.pem");

/// The process-wide certificate and TLS configuration (parsed once).
fn identity() -> &'static Identity {
    static IDENTITY: OnceLock<Identity> = OnceLock::new();
    IDENTITY.get_or_init(|| {
        let der = CertificateDer::from_pem_slice(CERT_PEM.as_bytes())
            .expect("the committed test certificate is PEM");
        let key = PrivateKeyDer::from_pem_slice(KEY_PEM.as_bytes())
            .expect("the committed test key is PEM");
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports the default TLS versions")
                .with_no_client_auth()
                .with_single_cert(vec![der.clone()], key)
                .expect("the committed certificate and key match");
        Identity {
            pem: CERT_PEM.to_owned(),
            der,
            config: Arc::new(config),
        }
    })
}

/// The PEM of the self-signed certificate every mock server presents (valid for
/// `localhost` and the IP `127.0.0.1`): trust it as the only root.
pub fn root_pem() -> String {
    identity().pem.clone()
}

/// The DER form of [`root_pem`].
pub fn root_der() -> Vec<u8> {
    identity().der.to_vec()
}

/// The expected `Authorization` header value for `key`: `Basic base64("<key>:")`.
pub fn basic_auth(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

/// Path of a file in the shared DBN fixture folder (`../shared/fixtures/dbn` beside
/// the repository); the file may not exist.
pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/dbn"
    ))
    .join(name)
}

/// The bytes of fixture `name`, or `None` after printing a visible note when the file
/// cannot be read (outside CI). In CI (`CI` set) a missing fixture panics, so a test
/// never passes silently there.
pub fn fixture_body(name: &str) -> Option<Vec<u8>> {
    let path = fixture_path(name);
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(err) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "fixture {} cannot be read in CI: {err}",
                path.display()
            );
            let note = format!(
                "NOTE: fixture {} not readable ({err}); test skipped\n",
                path.display()
            );
            let _ = io::stderr().write_all(note.as_bytes());
            None
        }
    }
}

/// A `.dbn.zst` body: a DBN v3 stream of `count` generated MBO records
/// ([`crate::generate::mbo_record`]), compressed as several zstd frames of about
/// `frame_len` input bytes each.
pub fn mbo_body(count: u64, frame_len: usize) -> Vec<u8> {
    zstd_frames(&mbo_stream(count), frame_len, 1)
}

/// The `.dbn.zst` body of [`MILLION`] generated MBO records (1 MiB zstd frames),
/// generated once per process and shared: serve it with [`Reply::dbn_zst`] at no copy.
pub fn million_mbo_body() -> Arc<[u8]> {
    static BODY: OnceLock<Arc<[u8]>> = OnceLock::new();
    BODY.get_or_init(|| mbo_body(MILLION, 1024 * 1024).into())
        .clone()
}

// ---------------------------------------------------------------------------------
// Script
// ---------------------------------------------------------------------------------

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: <len>`; the connection stays open for the next request.
    ContentLength,
    /// `Transfer-Encoding: chunked`, chunks of `chunk_size` bytes (the last one may
    /// be shorter; 0 is taken as 1), then the `0` chunk; the connection stays open.
    Chunked {
        /// Body bytes per chunk.
        chunk_size: usize,
    },
    /// No length: `Connection: close`, and the server closes the connection after the
    /// body, sending TLS `close_notify` first when `close_notify` is set (without it the
    /// close looks like a cut at the TLS layer).
    CloseDelimited {
        /// Send TLS `close_notify` before closing TCP.
        close_notify: bool,
    },
}

/// How the server ends a connection it cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutKind {
    /// Close TCP with no TLS `close_notify`.
    Abrupt,
    /// Send TLS `close_notify`, then close TCP (a clean TLS close at the wrong moment).
    CloseNotify,
    /// Write the first half of one more TLS record's ciphertext, then close TCP.
    MidTlsRecord,
}

/// A failure the server stages while answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// Read the request, write nothing, and end the connection as `how` says.
    CutBeforeHead(CutKind),
    /// Write the head and the first `after_body_bytes` body bytes (counted before
    /// framing: with [`Framing::Chunked`] the chunk holding the cut is announced whole
    /// and written in part), then end the connection as `how` says. `0` cuts right
    /// after the head.
    Cut {
        /// Body bytes written before the cut.
        after_body_bytes: usize,
        /// How the connection ends.
        how: CutKind,
    },
    /// Read the request and never answer; the connection stays open until the client
    /// closes it or the server is dropped.
    StallBeforeHead,
    /// Write the head and the first `after_body_bytes` body bytes (as for
    /// [`Fault::Cut`]), then write nothing more; the connection stays open until the
    /// client closes it or the server is dropped.
    Stall {
        /// Body bytes written before the stall.
        after_body_bytes: usize,
    },
}

/// Split, spaced writes: the response (head and body, as framed) is written at most
/// `write_size` plaintext bytes at a time (each flushed as its own TLS record or
/// records), sleeping `delay` between writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// Plaintext bytes per write (0 is taken as 1).
    pub write_size: usize,
    /// Pause after each write.
    pub delay: Duration,
}

/// One scripted response. Built with a constructor, then adjusted with the
/// builder-style methods; cloning is cheap (the body is shared).
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    content_type: Option<String>,
    headers: Vec<(String, String)>,
    body: Arc<[u8]>,
    framing: Framing,
    fault: Fault,
    pacing: Option<Pacing>,
}

impl Reply {
    /// A response with `status` and `body`, no `Content-Type`, framed by
    /// Content-Length.
    pub fn new(status: u16, body: impl Into<Arc<[u8]>>) -> Self {
        Self {
            status,
            content_type: None,
            headers: Vec::new(),
            body: body.into(),
            framing: Framing::ContentLength,
            fault: Fault::None,
            pacing: None,
        }
    }

    /// `200` with a `.dbn.zst` body (`Content-Type: application/octet-stream`).
    pub fn dbn_zst(body: impl Into<Arc<[u8]>>) -> Self {
        Self::new(200, body).content_type("application/octet-stream")
    }

    /// `200` with a JSON body given as text (`Content-Type: application/json`).
    pub fn json(text: impl Into<String>) -> Self {
        Self::json_status(200, text)
    }

    /// `status` with a JSON body given as text.
    pub fn json_status(status: u16, text: impl Into<String>) -> Self {
        Self::new(status, text.into().into_bytes()).content_type("application/json")
    }

    /// An error in the plain form: `{"detail": "<message>"}`.
    pub fn detail(status: u16, message: &str) -> Self {
        Self::json_status(status, serde_json::json!({ "detail": message }).to_string())
    }

    /// An error in the structured form:
    /// `{"detail": {"case", "message", "status_code", "docs", "payload"}}`.
    pub fn structured(status: u16, case: &str, message: &str, payload: serde_json::Value) -> Self {
        let body = serde_json::json!({
            "detail": {
                "case": case,
                "message": message,
                "status_code": status,
                "docs": "https://databento.com/docs/api-reference-historical",
                "payload": payload,
            }
        });
        Self::json_status(status, body.to_string())
    }

    /// `status` with an HTML body (`Content-Type: text/html`).
    pub fn html(status: u16, html: impl Into<String>) -> Self {
        Self::new(status, html.into().into_bytes()).content_type("text/html")
    }

    /// A `502 Bad Gateway` HTML page, as a proxy in front of the API sends.
    pub fn bad_gateway_html() -> Self {
        Self::html(
            502,
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
             <center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n",
        )
    }

    /// Sets the `Content-Type` header.
    #[must_use]
    pub fn content_type(mut self, value: &str) -> Self {
        self.content_type = Some(value.to_owned());
        self
    }

    /// Adds a header (written as given, after the standard ones).
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds a `request-id` header.
    #[must_use]
    pub fn request_id(self, id: &str) -> Self {
        self.header("request-id", id)
    }

    /// Adds an `X-Warning` header: a JSON array of `warnings`.
    #[must_use]
    pub fn warnings<S: AsRef<str>>(self, warnings: impl IntoIterator<Item = S>) -> Self {
        let values: Vec<String> = warnings
            .into_iter()
            .map(|w| w.as_ref().to_owned())
            .collect();
        let value = serde_json::to_string(&values).expect("a list of strings serializes");
        self.header("X-Warning", &value)
    }

    /// Sets the body framing.
    #[must_use]
    pub fn framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// Sets the staged failure.
    #[must_use]
    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }

    /// Writes the response in small spaced writes.
    #[must_use]
    pub fn pacing(mut self, pacing: Pacing) -> Self {
        self.pacing = Some(pacing);
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The body (before framing).
    pub fn body(&self) -> &Arc<[u8]> {
        &self.body
    }
}

/// Which name the server is reached by (its URL, `Host` header and TLS server name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostName {
    /// `127.0.0.1` (an IP SAN of the certificate).
    #[default]
    Ip,
    /// `localhost` (a DNS SAN of the certificate).
    Localhost,
}

/// Configures and starts a [`MockHistorical`].
#[derive(Debug, Clone)]
pub struct MockHistoricalBuilder {
    key: Option<String>,
    host: HostName,
    routes: HashMap<String, Reply>,
    queue: VecDeque<Reply>,
}

impl Default for MockHistoricalBuilder {
    fn default() -> Self {
        Self {
            key: Some(TEST_KEY.to_owned()),
            host: HostName::Ip,
            routes: HashMap::new(),
            queue: VecDeque::new(),
        }
    }
}

impl MockHistoricalBuilder {
    /// Expects `key` in every request's `Authorization` header (default [`TEST_KEY`]).
    #[must_use]
    pub fn key(mut self, key: &str) -> Self {
        self.key = Some(key.to_owned());
        self
    }

    /// Accepts requests with any or no `Authorization` header.
    #[must_use]
    pub fn no_auth(mut self) -> Self {
        self.key = None;
        self
    }

    /// Chooses the name in [`MockHistorical::base_url`] and [`MockHistorical::host`].
    #[must_use]
    pub fn host_name(mut self, host: HostName) -> Self {
        self.host = host;
        self
    }

    /// Answers `POST /v0/timeseries.get_range` with `reply` (every time).
    #[must_use]
    pub fn get_range(self, reply: Reply) -> Self {
        self.route(GET_RANGE_PATH, reply)
    }

    /// Answers the JSON endpoint `endpoint` (e.g. `metadata.list_datasets`, with or
    /// without the `/v0/` prefix) with `reply`, for GET and POST (every time).
    #[must_use]
    pub fn json(self, endpoint: &str, reply: Reply) -> Self {
        self.route(&endpoint_path(endpoint), reply)
    }

    /// Answers requests to `path` (without query string) with `reply` (every time).
    #[must_use]
    pub fn route(mut self, path: &str, reply: Reply) -> Self {
        self.routes.insert(path.to_owned(), reply);
        self
    }

    /// Queues a one-shot reply for the next authenticated request, whatever its path;
    /// queued replies are served in order before the routes.
    #[must_use]
    pub fn enqueue(mut self, reply: Reply) -> Self {
        self.queue.push_back(reply);
        self
    }

    /// Binds `127.0.0.1` on a free port and starts serving.
    ///
    /// # Errors
    /// When the listener cannot be bound or its thread cannot start.
    pub fn start(self) -> io::Result<MockHistorical> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            expected_auth: self.key.as_deref().map(basic_auth),
            tls: identity().config.clone(),
            script: Mutex::new(Script {
                routes: self.routes,
                queue: self.queue,
            }),
            log: Mutex::new(Vec::new()),
            log_changed: Condvar::new(),
            connections: AtomicUsize::new(0),
            open: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
        });
        let accept_shared = shared.clone();
        let acceptor = thread::Builder::new()
            .name("mock-hist-accept".to_owned())
            .spawn(move || accept_loop(&listener, &accept_shared))?;
        tracing::debug!(%addr, "mock historical server listening");
        Ok(MockHistorical {
            addr,
            host: self.host,
            shared,
            acceptor: Some(acceptor),
        })
    }
}

fn endpoint_path(endpoint: &str) -> String {
    if endpoint.starts_with('/') {
        endpoint.to_owned()
    } else {
        format!("/v0/{endpoint}")
    }
}

/// One request as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Index of the TCP connection it came on (0 for the first accepted).
    pub connection: usize,
    /// The method, e.g. `POST`.
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    /// The path, without the query string.
    pub path: String,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The decoded query string fields, in order.
    pub query: Vec<(String, String)>,
    /// The decoded `application/x-www-form-urlencoded` body fields, in order.
    pub form: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first form field named `name`, else the first query field.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .chain(&self.query)
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

// ---------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct Script {
    routes: HashMap<String, Reply>,
    queue: VecDeque<Reply>,
}

#[derive(Debug)]
struct Shared {
    expected_auth: Option<String>,
    tls: Arc<ServerConfig>,
    script: Mutex<Script>,
    log: Mutex<Vec<RecordedRequest>>,
    log_changed: Condvar,
    connections: AtomicUsize,
    /// Clones of open sockets, shut down when the server is dropped.
    open: Mutex<HashMap<usize, TcpStream>>,
    stop: AtomicBool,
}

/// Locks `m`, ignoring poisoning (a panicking connection thread leaves consistent data).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running mock Historical server on `127.0.0.1`; dropping it stops it.
#[derive(Debug)]
pub struct MockHistorical {
    addr: SocketAddr,
    host: HostName,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl MockHistorical {
    /// A builder with the default script: key [`TEST_KEY`], no routes (every path
    /// answers `404`), host name `127.0.0.1`.
    pub fn builder() -> MockHistoricalBuilder {
        MockHistoricalBuilder::default()
    }

    /// The socket address to connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The host name clients should use (TLS server name and `Host`): `127.0.0.1` or
    /// `localhost`, as chosen with [`MockHistoricalBuilder::host_name`].
    pub fn host(&self) -> &'static str {
        match self.host {
            HostName::Ip => "127.0.0.1",
            HostName::Localhost => "localhost",
        }
    }

    /// `https://<host>:<port>`.
    pub fn base_url(&self) -> String {
        format!("https://{}:{}", self.host(), self.addr.port())
    }

    /// The root certificate clients must trust (same as [`root_pem`]).
    pub fn root_pem(&self) -> String {
        root_pem()
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).clone()
    }

    /// Waits until at least `count` requests were received or `timeout` passed;
    /// returns the requests received (check the length).
    pub fn wait_for_requests(&self, count: usize, timeout: Duration) -> Vec<RecordedRequest> {
        let deadline = Instant::now() + timeout;
        let mut log = lock(&self.shared.log);
        while log.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            log = self
                .shared
                .log_changed
                .wait_timeout(log, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        log.clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Queues a one-shot reply (see [`MockHistoricalBuilder::enqueue`]).
    pub fn enqueue(&self, reply: Reply) {
        lock(&self.shared.script).queue.push_back(reply);
    }

    /// Replaces or adds the route for `path` (see [`MockHistoricalBuilder::route`]).
    pub fn set_route(&self, path: &str, reply: Reply) {
        lock(&self.shared.script)
            .routes
            .insert(endpoint_path(path), reply);
    }
}

impl Drop for MockHistorical {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor; it sees `stop` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for (_, sock) in lock(&self.shared.open).drain() {
            let _ = sock.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let index = shared.connections.fetch_add(1, Ordering::SeqCst);
        let shared = shared.clone();
        let spawned = thread::Builder::new()
            .name(format!("mock-hist-conn-{index}"))
            .spawn(move || serve_connection(&shared, stream, index));
        if let Err(err) = spawned {
            tracing::warn!(%err, "mock historical: cannot start a connection thread");
        }
    }
}

type Tls = StreamOwned<ServerConnection, TcpStream>;

fn serve_connection(shared: &Shared, tcp: TcpStream, index: usize) {
    let _ = tcp.set_nodelay(true);
    match tcp.try_clone() {
        Ok(clone) => {
            lock(&shared.open).insert(index, clone);
        }
        Err(err) => {
            tracing::warn!(%err, "mock historical: cannot clone a socket");
            return;
        }
    }
    // The server may have been dropped between accept and registration.
    if shared.stop.load(Ordering::SeqCst) {
        let _ = tcp.shutdown(Shutdown::Both);
        lock(&shared.open).remove(&index);
        return;
    }
    tracing::debug!(connection = index, "mock historical: connection accepted");
    match ServerConnection::new(shared.tls.clone()) {
        Ok(conn) => {
            let mut tls = StreamOwned::new(conn, tcp);
            let end = serve_requests(shared, &mut tls, index);
            finish(&mut tls, end);
        }
        Err(err) => tracing::warn!(%err, "mock historical: cannot start TLS"),
    }
    lock(&shared.open).remove(&index);
    tracing::debug!(connection = index, "mock historical: connection closed");
}

/// How a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Keep it open for the next request.
    KeepAlive,
    /// `close_notify`, then close TCP.
    Graceful,
    /// Close TCP without `close_notify`.
    Abrupt,
    /// Nothing more to do: the socket is already handled.
    Done,
}

fn finish(tls: &mut Tls, end: End) {
    match end {
        End::KeepAlive | End::Graceful => {
            tls.conn.send_close_notify();
            let _ = tls.flush();
            let _ = tls.sock.shutdown(Shutdown::Write);
            // Let the client read everything before the socket goes away: wait for
            // its close (bounded), so no RST discards the tail of the response.
            let _ = tls.sock.set_read_timeout(Some(Duration::from_secs(5)));
            let mut sink = [0u8; 4096];
            while matches!(tls.sock.read(&mut sink), Ok(n) if n > 0) {}
        }
        End::Abrupt => {
            let _ = tls.flush();
            let _ = tls.sock.shutdown(Shutdown::Both);
        }
        End::Done => {}
    }
}

fn serve_requests(shared: &Shared, tls: &mut Tls, index: usize) -> End {
    let mut buf = Vec::new();
    loop {
        let request = match read_request(tls, &mut buf, index) {
            Ok(Some(request)) => request,
            Ok(None) => return End::Graceful,
            Err(ReadError::Io(err)) => {
                tracing::debug!(connection = index, %err, "mock historical: read ended");
                return End::Abrupt;
            }
            Err(ReadError::Bad(status, message)) => {
                tracing::debug!(
                    connection = index,
                    status,
                    %message,
                    "mock historical: bad request"
                );
                let reply = Reply::detail(status, &message);
                return match write_reply(tls, &reply, true) {
                    Ok(_) => End::Graceful,
                    Err(_) => End::Abrupt,
                };
            }
        };
        let client_close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let reply = choose_reply(shared, &request);
        tracing::debug!(
            connection = index,
            method = %request.method,
            path = %request.path,
            status = reply.status,
            "mock historical: request"
        );
        {
            let mut log = lock(&shared.log);
            log.push(request);
            shared.log_changed.notify_all();
        }
        match write_reply(tls, &reply, client_close) {
            Ok(End::KeepAlive) => {}
            Ok(end) => return end,
            Err(err) => {
                tracing::debug!(connection = index, %err, "mock historical: write failed");
                return End::Abrupt;
            }
        }
    }
}

fn choose_reply(shared: &Shared, request: &RecordedRequest) -> Reply {
    if let Some(expected) = &shared.expected_auth {
        match request.header("authorization") {
            Some(got) if got == expected => {}
            Some(_) => return Reply::detail(401, "Invalid API key."),
            None => return Reply::detail(401, "Authentication required: no API key given."),
        }
    }
    let mut script = lock(&shared.script);
    if let Some(reply) = script.queue.pop_front() {
        return reply;
    }
    match script.routes.get(&request.path) {
        Some(_) if request.path == GET_RANGE_PATH && request.method != "POST" => {
            Reply::detail(405, "Method Not Allowed").header("Allow", "POST")
        }
        Some(reply) => reply.clone(),
        None => Reply::detail(
            404,
            &format!("mock: no reply scripted for {}", request.path),
        ),
    }
}

// ---------------------------------------------------------------------------------
// Reading requests
// ---------------------------------------------------------------------------------

enum ReadError {
    Io(io::Error),
    /// Answer with this status and message, then close.
    Bad(u16, String),
}

/// Reads more plaintext into `buf`; `Ok(false)` at the end of the stream.
fn fill(tls: &mut Tls, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match tls.read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(true);
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(err) => return Err(err),
        }
    }
}

/// Reads one request; `Ok(None)` when the client closed between requests.
fn read_request(
    tls: &mut Tls,
    buf: &mut Vec<u8>,
    index: usize,
) -> Result<Option<RecordedRequest>, ReadError> {
    let (head_len, mut request, content_length) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                let (request, content_length) = head_to_request(&parsed, index)?;
                break (len, request, content_length);
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_REQUEST_HEAD {
                    return Err(ReadError::Bad(431, "request head too large".to_owned()));
                }
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ReadError::Bad(431, "too many request headers".to_owned()));
            }
            Err(err) => return Err(ReadError::Bad(400, format!("malformed request: {err}"))),
        }
        let more = fill(tls, buf).map_err(ReadError::Io)?;
        if !more {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(ReadError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed inside a request head",
                )))
            };
        }
    };
    while buf.len() < head_len + content_length {
        if !fill(tls, buf).map_err(ReadError::Io)? {
            return Err(ReadError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed inside a request body",
            )));
        }
    }
    request.body = buf[head_len..head_len + content_length].to_vec();
    buf.drain(..head_len + content_length);
    let is_form = request
        .header("content-type")
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        request.form = form_urlencoded::parse(&request.body).into_owned().collect();
    }
    Ok(Some(request))
}

fn head_to_request(
    parsed: &httparse::Request<'_, '_>,
    index: usize,
) -> Result<(RecordedRequest, usize), ReadError> {
    let method = parsed.method.unwrap_or_default().to_owned();
    let target = parsed.path.unwrap_or_default().to_owned();
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), query.to_owned()),
        None => (target.clone(), String::new()),
    };
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let request = RecordedRequest {
        connection: index,
        method,
        target,
        path,
        query: form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect(),
        headers,
        form: Vec::new(),
        body: Vec::new(),
    };
    if request.header("transfer-encoding").is_some() {
        return Err(ReadError::Bad(
            501,
            "mock: chunked request bodies are not supported".to_owned(),
        ));
    }
    let content_length = match request.header("content-length") {
        None => 0,
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map_err(|_| ReadError::Bad(400, format!("bad Content-Length {v:?}")))?,
    };
    if content_length > MAX_REQUEST_BODY {
        return Err(ReadError::Bad(
            413,
            format!("request body of {content_length} bytes is too large"),
        ));
    }
    Ok((request, content_length))
}

// ---------------------------------------------------------------------------------
// Writing responses
// ---------------------------------------------------------------------------------

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Buffers plaintext and writes it through TLS in large writes, or paced.
struct Out<'a> {
    tls: &'a mut Tls,
    pending: Vec<u8>,
    pacing: Option<Pacing>,
}

impl Out<'_> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.pacing.is_none() && bytes.len() >= WRITE_BATCH {
            self.emit()?;
            return self.tls.write_all(bytes);
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= WRITE_BATCH {
            self.emit()?;
        }
        Ok(())
    }

    /// Writes everything pending and flushes TLS to the socket.
    fn emit(&mut self) -> io::Result<()> {
        match self.pacing {
            None => self.tls.write_all(&self.pending)?,
            Some(p) => {
                for piece in self.pending.chunks(p.write_size.max(1)) {
                    self.tls.write_all(piece)?;
                    self.tls.flush()?;
                    if !p.delay.is_zero() {
                        thread::sleep(p.delay);
                    }
                }
            }
        }
        self.pending.clear();
        self.tls.flush()
    }
}

/// Writes `reply`'s head and body per its framing and fault; returns how the
/// connection goes on.
fn write_reply(tls: &mut Tls, reply: &Reply, client_close: bool) -> io::Result<End> {
    match reply.fault {
        Fault::CutBeforeHead(how) => return cut(tls, how, &[]),
        Fault::StallBeforeHead => return Ok(stall(tls)),
        _ => {}
    }
    let close_delimited = matches!(reply.framing, Framing::CloseDelimited { .. });
    let close_after = client_close || close_delimited;
    let body = &reply.body[..];

    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    if let Some(ct) = &reply.content_type {
        let _ = write!(head, "Content-Type: {ct}\r\n");
    }
    match reply.framing {
        Framing::ContentLength => {
            let _ = write!(head, "Content-Length: {}\r\n", body.len());
        }
        Framing::Chunked { .. } => head.push_str("Transfer-Encoding: chunked\r\n"),
        Framing::CloseDelimited { .. } => {}
    }
    if close_after {
        head.push_str("Connection: close\r\n");
    }
    for (name, value) in &reply.headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");

    let limit = match reply.fault {
        Fault::Cut {
            after_body_bytes, ..
        }
        | Fault::Stall { after_body_bytes } => Some(after_body_bytes.min(body.len())),
        _ => None,
    };

    let mut out = Out {
        tls,
        pending: Vec::new(),
        pacing: reply.pacing,
    };
    out.put(head.as_bytes())?;
    // The plaintext that would have come next, for a cut inside a TLS record.
    let mut next: Vec<u8> = Vec::new();
    match reply.framing {
        Framing::ContentLength | Framing::CloseDelimited { .. } => {
            let end = limit.unwrap_or(body.len());
            out.put(&body[..end])?;
            next.extend_from_slice(&body[end..(end + MID_RECORD_PLAINTEXT).min(body.len())]);
        }
        Framing::Chunked { chunk_size } => {
            let chunk_size = chunk_size.max(1);
            let stop = limit.unwrap_or(usize::MAX);
            let mut offset = 0;
            while offset < body.len() && offset < stop {
                let chunk = &body[offset..(offset + chunk_size).min(body.len())];
                let take = chunk.len().min(stop - offset);
                out.put(format!("{:x}\r\n", chunk.len()).as_bytes())?;
                out.put(&chunk[..take])?;
                if take == chunk.len() {
                    out.put(b"\r\n")?;
                } else {
                    let rest = &chunk[take..];
                    next.extend_from_slice(&rest[..rest.len().min(MID_RECORD_PLAINTEXT)]);
                }
                offset += take;
            }
            if limit.is_none() {
                out.put(b"0\r\n\r\n")?;
            } else if next.is_empty() {
                next.extend_from_slice(format!("{chunk_size:x}\r\n").as_bytes());
            }
        }
    }
    out.emit()?;
    match reply.fault {
        Fault::Cut { how, .. } => cut(tls, how, &next),
        Fault::Stall { .. } => Ok(stall(tls)),
        _ => Ok(match reply.framing {
            Framing::CloseDelimited { close_notify: true } => End::Graceful,
            Framing::CloseDelimited {
                close_notify: false,
            } => End::Abrupt,
            _ if close_after => End::Graceful,
            _ => End::KeepAlive,
        }),
    }
}

/// Ends the connection as `how` says; `next` is plaintext to put in the partial record
/// of [`CutKind::MidTlsRecord`].
fn cut(tls: &mut Tls, how: CutKind, next: &[u8]) -> io::Result<End> {
    tls.flush()?;
    match how {
        CutKind::Abrupt => Ok(End::Abrupt),
        CutKind::CloseNotify => Ok(End::Graceful),
        CutKind::MidTlsRecord => {
            let filler: &[u8] = if next.is_empty() {
                b"cut inside this record"
            } else {
                next
            };
            tls.conn.writer().write_all(filler)?;
            let mut ciphertext = Vec::new();
            while tls.conn.wants_write() {
                tls.conn.write_tls(&mut ciphertext)?;
            }
            let half = (ciphertext.len() / 2).max(1);
            tls.sock.write_all(&ciphertext[..half])?;
            tls.sock.flush()?;
            let _ = tls.sock.shutdown(Shutdown::Both);
            Ok(End::Done)
        }
    }
}

/// Writes nothing more and waits for the client to close (or the server's drop).
fn stall(tls: &mut Tls) -> End {
    let _ = tls.flush();
    let mut sink = [0u8; 4096];
    while matches!(tls.sock.read(&mut sink), Ok(n) if n > 0) {}
    End::Abrupt
}

#[cfg(test)]
mod tests {
    /// Writes a new test certificate and key over the committed ones (run by hand:
    /// `cargo test -p dbn-pipe-tests --lib -- --ignored regenerate`).
    #[test]
    #[ignore = "rewrites tests/certs; run by hand to replace the test certificate"]
    fn regenerate_the_test_certificate() {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let certified = rcgen::generate_simple_self_signed(names).expect("rcgen");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
        std::fs::write(dir.join("localhost.cert.pem"), certified.cert.pem()).expect("write");
        std::fs::write(
            dir.join("localhost.key.pem"),
            certified.signing_key.serialize_pem(),
        )
        .expect("write");
    }

    #[test]
    fn the_committed_certificate_and_key_make_a_server_config() {
        let identity = super::identity();
        assert!(identity.pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(super::root_der(), identity.der.to_vec());
    }
}
