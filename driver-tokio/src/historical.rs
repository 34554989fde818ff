//! The historical client: a [`HistoricalSession`] (TLS, HTTP/1.1, zstd, DBN) driven
//! over a tokio `TcpStream`, one request at a time on a keep-alive connection.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dbn::{Metadata, RecordRef};
use dbn_pipe_protocol::RecordBatch;
use dbn_pipe_protocol::historical::{
    BaseUrl, DatasetRange, GetRangeParams, HistoricalConfig, HistoricalEvent, HistoricalSession,
    JsonRequest, JsonResponse, Resolution, ResolveParams,
};
use dbn_pipe_protocol::live::ApiKey;
use dbn_pipe_protocol::tls::TlsConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Error;
use crate::net::{self, Outgoing};

/// Options of a [`HistoricalClient`].
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
    user_agent_ext: Option<String>,
}

impl HistoricalOptions {
    /// The default server: `https://hist.databento.com`.
    pub const DEFAULT_BASE_URL: &'static str = "https://hist.databento.com";
    /// Default connect timeout (DNS and TCP): 10 s.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default read timeout: 60 s without a byte from the server is an error.
    pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
    /// Default socket read size: 64 KiB.
    pub const DEFAULT_READ_BUFFER: usize = 64 * 1024;

    /// Options with defaults: `https://hist.databento.com`, the webpki (Mozilla)
    /// roots, 10 s connect and 60 s read timeouts.
    pub fn new(key: ApiKey) -> Self {
        Self {
            key,
            base_url: Self::DEFAULT_BASE_URL.to_owned(),
            tls: None,
            extra_roots: Vec::new(),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            read_timeout: Self::DEFAULT_READ_TIMEOUT,
            read_buffer: Self::DEFAULT_READ_BUFFER,
            buffer_size: None,
            user_agent_ext: None,
        }
    }

    /// Sends requests to `url`: `https://host` or `https://host:port` (only https; no
    /// path). The host is also the TLS server name and the `Host` header.
    #[must_use]
    pub fn base_url(mut self, url: &str) -> Self {
        self.base_url = url.to_owned();
        self
    }

    /// Uses this TLS configuration (trust roots) instead of the default; roots from
    /// [`add_root_pem`](Self::add_root_pem) are then ignored.
    #[must_use]
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Also trusts the certificates in `pem` (besides the webpki roots).
    #[must_use]
    pub fn add_root_pem(mut self, pem: &[u8]) -> Self {
        self.extra_roots.push(pem.to_vec());
        self
    }

    /// Sets the limit for resolving and connecting (default 10 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets how long the server may send nothing before the request fails with kind
    /// `Timeout` (default 60 s).
    #[must_use]
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Sets the socket read size (default 64 KiB).
    #[must_use]
    pub fn read_buffer(mut self, bytes: usize) -> Self {
        self.read_buffer = bytes;
        self
    }

    /// Sets the DBN decoder's record buffer size (default 64 KiB).
    #[must_use]
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.buffer_size = Some(bytes);
        self
    }

    /// Appends `ext` to the `User-Agent`.
    #[must_use]
    pub fn user_agent_extension(mut self, ext: impl Into<String>) -> Self {
        self.user_agent_ext = Some(ext.into());
        self
    }

    /// Builds the client: see [`HistoricalClient::new`].
    ///
    /// # Errors
    /// As [`HistoricalClient::new`].
    pub fn build(self) -> Result<HistoricalClient, Error> {
        HistoricalClient::new(self)
    }
}

/// Progress of [`HistoricalClient::get_range_to_file`], reported as the body arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Progress {
    /// Bytes of the (compressed) body written to the file so far.
    pub bytes_written: u64,
    /// Records decoded from them so far.
    pub records: u64,
}

/// What [`HistoricalClient::get_range_to_file`] wrote.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FileSummary {
    /// The metadata of the stream.
    pub metadata: Metadata,
    /// Bytes written (the body as served, zstd-compressed DBN).
    pub bytes_written: u64,
    /// Records in the file.
    pub records: u64,
}

/// One connection: the socket, its session and the read buffer.
#[derive(Debug)]
struct Conn {
    socket: TcpStream,
    session: HistoricalSession,
    read_buf: Box<[u8]>,
    pending: Range<usize>,
    out: Outgoing,
    eof: bool,
    /// The last input step took nothing: the session must now have an event (an
    /// error it just met, for one); a second such step is a stall.
    stalled: bool,
}

/// What the session has for the client, owning nothing borrowed.
#[derive(Debug)]
enum Step {
    Metadata(Box<Metadata>),
    /// A record batch waits in the session.
    Batch,
    Json(JsonResponse),
    Done,
}

/// A Databento Historical API client on tokio: TLS to the server, one HTTP/1.1
/// request at a time on a keep-alive connection (opened on the first request, opened
/// again when the server closed it), `timeseries.get_range` bodies decoded as they
/// arrive with records borrowed from the decoder's buffer.
///
/// # Cancel safety
///
/// [`RangeStream::next_record`] and [`RangeStream::next_batch`] are cancel-safe
/// (bytes read are kept in the client, a partly written request resumes). The other
/// methods are not: cancelling one leaves its request unfinished, and the next
/// request opens a fresh connection.
///
/// # Example
///
/// ```no_run
/// use dbn::Schema;
/// use dbn_pipe_protocol::historical::GetRangeParams;
/// use dbn_pipe_protocol::live::ApiKey;
/// use dbn_pipe_tokio::{HistoricalClient, HistoricalOptions};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let key = ApiKey::new(std::env::var("DATABENTO_API_KEY")?)?;
/// let mut client = HistoricalClient::new(HistoricalOptions::new(key))?;
/// let params = GetRangeParams::new("GLBX.MDP3", Schema::Trades, ["ESM4"], 1_704_067_200_000_000_000u64)
///     .limit(100);
/// println!("{} records", client.get_record_count(&params).await?);
/// let mut stream = client.timeseries_get_range(&params).await?;
/// println!("schema {:?}", stream.metadata().schema);
/// while let Some(record) = stream.next_record().await? {
///     println!("{:?}", record.header());
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct HistoricalClient {
    host: String,
    port: u16,
    config: HistoricalConfig,
    tls: TlsConfig,
    connect_timeout: Duration,
    read_timeout: Duration,
    read_buffer: usize,
    conn: Option<Conn>,
    /// `X-Warning`s of the request in flight (or the last one).
    warnings: Vec<String>,
}

impl HistoricalClient {
    /// Checks the options and builds the client; nothing is connected until the
    /// first request.
    ///
    /// # Errors
    /// Kind `Config` for a base URL that is not `https://host[:port]`, an invalid
    /// root certificate, or a zero timeout or buffer.
    pub fn new(options: HistoricalOptions) -> Result<Self, Error> {
        let BaseUrl { host, port } = BaseUrl::parse(&options.base_url)?;
        if options.connect_timeout.is_zero() || options.read_timeout.is_zero() {
            return Err(Error::Config("timeouts must be positive".to_owned()));
        }
        if options.read_buffer == 0 {
            return Err(Error::Config("read_buffer must be positive".to_owned()));
        }
        let tls = match options.tls {
            Some(tls) => tls,
            None => {
                let mut builder = TlsConfig::builder();
                for pem in &options.extra_roots {
                    builder = builder.add_pem(pem)?;
                }
                builder.build()?
            }
        };
        let mut config = HistoricalConfig::new(options.key).host(host.clone());
        if let Some(bytes) = options.buffer_size {
            config = config.buffer_size(bytes);
        }
        if let Some(ext) = options.user_agent_ext {
            config = config.user_agent_extension(ext);
        }
        // Check the session settings before any request.
        HistoricalSession::new(config.clone(), &tls)?;
        Ok(Self {
            host,
            port,
            config,
            tls,
            connect_timeout: options.connect_timeout,
            read_timeout: options.read_timeout,
            read_buffer: options.read_buffer,
            conn: None,
            warnings: Vec::new(),
        })
    }

    /// Sends `timeseries.get_range` and waits for the stream's metadata; records
    /// follow from [`RangeStream::next_record`]. Dropping the stream before its end
    /// abandons the connection (the next request opens a new one).
    ///
    /// # Errors
    /// Kind `Usage` for invalid parameters, `Dns`, `Connect`, `Timeout`, `Tls`,
    /// `HttpStatus` (with the server's message and request id), `Protocol`,
    /// `Decompression`, `Truncated`, `Io`.
    pub async fn timeseries_get_range(
        &mut self,
        params: &GetRangeParams,
    ) -> Result<RangeStream<'_>, Error> {
        self.begin(|session| session.get_range(params)).await?;
        match self.step().await? {
            Step::Metadata(metadata) => Ok(RangeStream {
                client: self,
                metadata: *metadata,
                done: false,
            }),
            Step::Batch | Step::Json(_) | Step::Done => {
                self.conn = None;
                Err(Error::internal("a get_range body without metadata"))
            }
        }
    }

    /// Sends `timeseries.get_range` and writes the body as served (zstd-compressed
    /// DBN, a valid `.dbn.zst` file) to `path` as it arrives, decoding it on the way
    /// to count records and check it is complete. `progress` is called after every
    /// write. At most 256 KiB of body is held in memory.
    ///
    /// # Errors
    /// As [`timeseries_get_range`](Self::timeseries_get_range), and kind `Io`
    /// ([`Error::File`]) when the file cannot be created or written. A partial file
    /// is left in place on error.
    pub async fn get_range_to_file(
        &mut self,
        params: &GetRangeParams,
        path: impl AsRef<Path>,
        mut progress: impl FnMut(Progress),
    ) -> Result<FileSummary, Error> {
        let path = path.as_ref();
        let file_error = |source| Error::File {
            path: PathBuf::from(path),
            source,
        };
        let mut file = tokio::fs::File::create(path).await.map_err(file_error)?;
        self.begin(|session| session.get_range_copy(params)).await?;
        let mut done = Progress::default();
        let mut metadata = None;
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Err(Error::internal("no connection"));
            };
            match conn.session.poll_event() {
                Ok(Some(HistoricalEvent::Body(bytes))) => {
                    file.write_all(bytes).await.map_err(file_error)?;
                    done.bytes_written += bytes.len() as u64;
                    progress(done);
                }
                Ok(Some(HistoricalEvent::Records(batch))) => {
                    done.records += batch.count() as u64;
                    progress(done);
                }
                Ok(Some(HistoricalEvent::Metadata(m))) => metadata = Some(*m),
                Ok(Some(HistoricalEvent::Warning(warning))) => {
                    tracing::warn!(%warning, "historical API warning");
                    self.warnings.push(warning);
                }
                Ok(Some(HistoricalEvent::Json(_))) => {}
                Ok(Some(HistoricalEvent::Done)) => break,
                Ok(None) => {
                    if let Err(err) = io_once(conn, self.read_timeout).await {
                        self.conn = None;
                        return Err(err);
                    }
                }
                Err(err) => {
                    self.conn = None;
                    return Err(err.into());
                }
            }
        }
        file.flush().await.map_err(file_error)?;
        file.sync_all().await.map_err(file_error)?;
        let metadata = metadata.ok_or_else(|| Error::internal("a body without metadata"))?;
        Ok(FileSummary {
            metadata,
            bytes_written: done.bytes_written,
            records: done.records,
        })
    }

    /// Sends a JSON endpoint request and returns its typed result.
    ///
    /// # Errors
    /// As [`timeseries_get_range`](Self::timeseries_get_range).
    pub async fn request_json(&mut self, request: JsonRequest) -> Result<JsonResponse, Error> {
        self.begin(|session| session.request_json(request)).await?;
        match self.step().await? {
            Step::Json(response) => Ok(response),
            Step::Metadata(_) | Step::Batch | Step::Done => {
                self.conn = None;
                Err(Error::internal("a JSON request got a DBN body"))
            }
        }
    }

    /// `metadata.list_datasets`: dataset codes, optionally limited to a date range
    /// (`YYYY-MM-DD`).
    ///
    /// # Errors
    /// As [`request_json`](Self::request_json).
    pub async fn list_datasets(
        &mut self,
        start_date: Option<&str>,
        end_date: Option<&str>,
    ) -> Result<Vec<String>, Error> {
        match self
            .request_json(JsonRequest::ListDatasets {
                start_date: start_date.map(str::to_owned),
                end_date: end_date.map(str::to_owned),
            })
            .await?
        {
            JsonResponse::Datasets(datasets) => Ok(datasets),
            _ => Err(Error::internal("unexpected response type")),
        }
    }

    /// `metadata.get_dataset_range`: the available range of `dataset`.
    ///
    /// # Errors
    /// As [`request_json`](Self::request_json).
    pub async fn get_dataset_range(&mut self, dataset: &str) -> Result<DatasetRange, Error> {
        match self
            .request_json(JsonRequest::GetDatasetRange {
                dataset: dataset.to_owned(),
            })
            .await?
        {
            JsonResponse::DatasetRange(range) => Ok(range),
            _ => Err(Error::internal("unexpected response type")),
        }
    }

    /// `metadata.get_record_count`: how many records `params` would return.
    ///
    /// # Errors
    /// As [`request_json`](Self::request_json).
    pub async fn get_record_count(&mut self, params: &GetRangeParams) -> Result<u64, Error> {
        match self
            .request_json(JsonRequest::GetRecordCount(params.clone()))
            .await?
        {
            JsonResponse::RecordCount(count) => Ok(count),
            _ => Err(Error::internal("unexpected response type")),
        }
    }

    /// `metadata.get_cost`: what `params` would cost, in US dollars.
    ///
    /// # Errors
    /// As [`request_json`](Self::request_json).
    pub async fn get_cost(&mut self, params: &GetRangeParams) -> Result<f64, Error> {
        match self
            .request_json(JsonRequest::GetCost(params.clone()))
            .await?
        {
            JsonResponse::Cost(cost) => Ok(cost),
            _ => Err(Error::internal("unexpected response type")),
        }
    }

    /// `symbology.resolve`: symbols of one type to another over a date range.
    ///
    /// # Errors
    /// As [`request_json`](Self::request_json).
    pub async fn symbology_resolve(&mut self, params: ResolveParams) -> Result<Resolution, Error> {
        match self
            .request_json(JsonRequest::SymbologyResolve(params))
            .await?
        {
            JsonResponse::Resolution(resolution) => Ok(resolution),
            _ => Err(Error::internal("unexpected response type")),
        }
    }

    /// The server's warnings (`X-Warning` headers) about the request in flight, or
    /// the last one (also logged at warn level).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Whether a connection is open and idle (kept alive for the next request).
    pub fn is_connected(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.session.is_ready())
    }

    /// Sends a request, on the kept-alive connection when the server has not closed
    /// it, else on a new one.
    async fn begin(
        &mut self,
        send: impl FnOnce(&mut HistoricalSession) -> Result<(), dbn_pipe_protocol::Error>,
    ) -> Result<(), Error> {
        self.warnings.clear();
        if let Some(conn) = &mut self.conn {
            if !conn.is_reusable() {
                tracing::debug!("historical connection closed; opening a new one");
                self.conn = None;
            }
        }
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                tracing::debug!(host = %self.host, port = self.port, "connecting to the historical API");
                let socket = net::connect(&self.host, self.port, self.connect_timeout).await?;
                let session = HistoricalSession::new(self.config.clone(), &self.tls)?;
                self.conn.insert(Conn {
                    socket,
                    session,
                    read_buf: vec![0; self.read_buffer].into_boxed_slice(),
                    pending: 0..0,
                    out: Outgoing::default(),
                    eof: false,
                    stalled: false,
                })
            }
        };
        send(&mut conn.session)?;
        Ok(())
    }

    /// Drives the connection until the session has an event for the client.
    async fn step(&mut self) -> Result<Step, Error> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Err(Error::Closed("no request in flight".to_owned()));
            };
            let result = match conn.poll_step(&mut self.warnings) {
                Ok(Some(step)) => {
                    conn.stalled = false;
                    return Ok(step);
                }
                Ok(None) => io_once(conn, self.read_timeout).await,
                Err(err) => Err(err),
            };
            if let Err(err) = result {
                self.conn = None;
                return Err(err);
            }
        }
    }
}

impl Conn {
    /// Drains events up to the next one for the client; `None` when I/O is needed.
    fn poll_step(&mut self, warnings: &mut Vec<String>) -> Result<Option<Step>, Error> {
        loop {
            return match self.session.poll_event()? {
                None => Ok(None),
                Some(HistoricalEvent::Warning(warning)) => {
                    tracing::warn!(%warning, "historical API warning");
                    warnings.push(warning);
                    continue;
                }
                Some(HistoricalEvent::Body(_)) => continue,
                Some(HistoricalEvent::Metadata(metadata)) => Ok(Some(Step::Metadata(metadata))),
                // Left in the session; `take_record` hands it out.
                Some(HistoricalEvent::Records(_)) => Ok(Some(Step::Batch)),
                Some(HistoricalEvent::Json(response)) => Ok(Some(Step::Json(response))),
                Some(HistoricalEvent::Done) => Ok(Some(Step::Done)),
            };
        }
    }

    /// Whether the connection can take the next request: idle, and not closed by
    /// the server meanwhile (checked without waiting).
    fn is_reusable(&mut self) -> bool {
        if self.eof || !self.session.is_ready() || !self.pending.is_empty() {
            return false;
        }
        match self.socket.try_read(&mut self.read_buf) {
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => true,
            Ok(n) if n > 0 => {
                // Bytes while idle: most likely a TLS close_notify.
                let taken = self.session.handle_input(&self.read_buf[..n]);
                taken == n
                    && matches!(self.poll_step(&mut Vec::new()), Ok(None))
                    && self.session.is_ready()
            }
            _ => false,
        }
    }
}

/// One I/O step: write what the session queued, feed buffered input, or read (within
/// the read timeout).
async fn io_once(conn: &mut Conn, read_timeout: Duration) -> Result<(), Error> {
    let _ = conn.session.poll_transmit(&mut conn.out.buf);
    if !conn.out.is_empty() {
        conn.out.flush(&mut conn.socket).await.map_err(Error::io)?;
    }
    if !conn.pending.is_empty() {
        let taken = conn
            .session
            .handle_input(&conn.read_buf[conn.pending.clone()]);
        conn.pending.start += taken;
        if taken > 0 {
            conn.stalled = false;
        } else if std::mem::replace(&mut conn.stalled, true) {
            return Err(Error::internal(
                "the session took no input and had no event",
            ));
        }
        // Taking nothing may mean the input just failed the session (a TLS alert):
        // the caller polls the session for its verdict before coming back.
        return Ok(());
    }
    if conn.eof {
        return Err(Error::internal(
            "the session gave no verdict after the end of input",
        ));
    }
    match tokio::time::timeout(read_timeout, conn.socket.read(&mut conn.read_buf)).await {
        Err(_) => Err(Error::ReadTimeout {
            after: read_timeout,
        }),
        Ok(Ok(0)) => {
            conn.eof = true;
            conn.session.handle_eof();
            Ok(())
        }
        Ok(Ok(n)) => {
            conn.pending = 0..n;
            Ok(())
        }
        Ok(Err(err)) => {
            // A reset: the session reports a truncated response (or the io error
            // surfaces as its verdict when nothing was cut).
            tracing::debug!(error = %err, "historical socket error");
            conn.eof = true;
            conn.session.handle_eof();
            Ok(())
        }
    }
}

/// The records of one `timeseries.get_range` response.
#[derive(Debug)]
pub struct RangeStream<'c> {
    client: &'c mut HistoricalClient,
    metadata: Metadata,
    done: bool,
}

impl RangeStream<'_> {
    /// The DBN metadata of the response.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The server's warnings about this request (`X-Warning` headers).
    pub fn warnings(&self) -> &[String] {
        self.client.warnings()
    }

    /// The next record, borrowed from the decoder's buffer (no allocation, no copy);
    /// `Ok(None)` once the body ended cleanly (the connection is then ready for the
    /// next request).
    ///
    /// Cancel-safe.
    ///
    /// # Errors
    /// After every record before it: kind `Truncated` when the body was cut,
    /// `Timeout`, `Tls`, `Protocol`, `Decompression`, `Io`.
    pub async fn next_record(&mut self) -> Result<Option<RecordRef<'_>>, Error> {
        // The record path: a record is buffered and nothing comes before it.
        let ready = !self.done
            && self
                .client
                .conn
                .as_mut()
                .is_some_and(|conn| conn.session.record_ready());
        if ready {
            return match self
                .client
                .conn
                .as_mut()
                .and_then(|conn| conn.session.poll_record())
            {
                Some(record) => Ok(Some(record)),
                None => Err(Error::internal("a ready record vanished")),
            };
        }
        // The first record of the next batch; the rest stay buffered when it drops.
        match self.next_batch().await? {
            Some(mut batch) => batch
                .next()
                .map(Some)
                .ok_or_else(|| Error::internal("a record batch had no record")),
            None => Ok(None),
        }
    }

    /// The next batch of records, borrowed from the decoder's buffer: every record
    /// decoded so far, in order, without copying (at least one). Waits until records
    /// arrive; `Ok(None)` once the body ended cleanly, as for
    /// [`next_record`](Self::next_record). Records not taken from the batch stay
    /// buffered when it is dropped and come first from the next call, whichever
    /// method it is.
    ///
    /// Cancel-safe: a batch only exists once returned.
    ///
    /// Compiled, not run (it needs the real server and a key):
    ///
    /// ```no_run
    /// use dbn::Schema;
    /// use dbn_pipe_tokio::dbn_pipe_protocol::historical::GetRangeParams;
    /// use dbn_pipe_tokio::dbn_pipe_protocol::live::ApiKey;
    /// use dbn_pipe_tokio::{HistoricalClient, HistoricalOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let key = ApiKey::new(std::env::var("DATABENTO_API_KEY")?)?;
    /// let mut client = HistoricalClient::new(HistoricalOptions::new(key))?;
    /// let params = GetRangeParams::new("GLBX.MDP3", Schema::Trades, ["ESM4"], 1_704_067_200_000_000_000u64)
    ///     .limit(1_000);
    /// let mut stream = client.timeseries_get_range(&params).await?;
    /// let mut records = 0;
    /// while let Some(batch) = stream.next_batch().await? {
    ///     for record in batch {
    ///         records += 1; // borrowed, no copy
    ///         let _ = record.header().ts_event;
    ///     }
    /// }
    /// println!("{records} records");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`next_record`](Self::next_record).
    pub async fn next_batch(&mut self) -> Result<Option<RecordBatch<'_>>, Error> {
        if self.done {
            return Ok(None);
        }
        loop {
            match self.client.step().await? {
                Step::Batch => break,
                Step::Done => {
                    self.done = true;
                    return Ok(None);
                }
                Step::Metadata(_) | Step::Json(_) => {}
            }
        }
        let Some(conn) = self.client.conn.as_mut() else {
            return Err(Error::internal("no connection"));
        };
        // `step` saw a batch and left it in the session; nothing ran since, so this
        // poll hands the same records out.
        match conn.session.poll_event() {
            Ok(Some(HistoricalEvent::Records(batch))) => Ok(Some(batch)),
            Ok(_) => Err(Error::internal("a record batch vanished")),
            Err(err) => Err(err.into()),
        }
    }
}
