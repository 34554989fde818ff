//! The Historical API session: TLS, HTTP/1.1, zstd and DBN composed as one sans-IO
//! state machine.

use std::collections::VecDeque;

use base64::Engine as _;
use dbn::{Metadata, RecordRef};

use super::endpoints::{JsonRequest, JsonResponse};
use super::params::GetRangeParams;
use super::status::{ERROR_BODY_CAP, status_error, warnings};
use crate::http::{ClientCodec, CodecConfig, Request, ResponseEvent, ResponseHead};
use crate::live::ApiKey;
use crate::tls::{Plaintext, TlsConfig, TlsSession};
use crate::{Compression, Decoded, DecoderConfig, Error, RecordBatch, StreamConfig, StreamDecoder};

/// The Historical API host.
pub const HIST_HOST: &str = "hist.databento.com";

/// Configuration of a [`HistoricalSession`].
#[derive(Debug, Clone)]
pub struct HistoricalConfig {
    pub(crate) key: ApiKey,
    pub(crate) host: String,
    pub(crate) user_agent_ext: Option<String>,
    pub(crate) decoder: DecoderConfig,
    pub(crate) max_json_body: usize,
}

impl HistoricalConfig {
    /// Largest JSON body accepted by default: 16 MiB.
    pub const DEFAULT_MAX_JSON_BODY: usize = 16 * 1024 * 1024;

    /// A configuration for `hist.databento.com`.
    pub fn new(key: ApiKey) -> Self {
        Self {
            key,
            host: HIST_HOST.to_owned(),
            user_agent_ext: None,
            decoder: DecoderConfig::default(),
            max_json_body: Self::DEFAULT_MAX_JSON_BODY,
        }
    }

    /// Sends requests to `host` (the `Host` header and the TLS server name), e.g. a
    /// private gateway or a test server.
    #[must_use]
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// Appends `ext` (after a space) to the `User-Agent`.
    #[must_use]
    pub fn user_agent_extension(mut self, ext: impl Into<String>) -> Self {
        self.user_agent_ext = Some(ext.into());
        self
    }

    /// Sets the DBN decoder's record buffer size (default 64 KiB).
    #[must_use]
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.decoder = self.decoder.buffer_size(bytes);
        self
    }

    /// Sets the largest JSON body accepted (default 16 MiB).
    #[must_use]
    pub fn max_json_body(mut self, bytes: usize) -> Self {
        self.max_json_body = bytes;
        self
    }

    /// The host requests go to.
    pub fn host_name(&self) -> &str {
        &self.host
    }

    /// The `User-Agent`: the same string as the live `client=` field.
    pub fn user_agent(&self) -> String {
        crate::user_agent(self.user_agent_ext.as_deref())
    }
}

/// What a [`HistoricalSession`] has for the application, in order.
#[derive(Debug)]
pub enum HistoricalEvent<'a> {
    /// A warning from the server's `X-Warning` header.
    Warning(String),
    /// The DBN metadata of a `get_range` body.
    Metadata(Box<Metadata>),
    /// Records of a `get_range` body, borrowed from the decoder.
    Records(RecordBatch<'a>),
    /// Raw body bytes of a [`get_range_copy`](HistoricalSession::get_range_copy)
    /// request (compressed as served), in order and each byte once, before the records
    /// decoded from them. Valid until the next poll.
    Body(&'a [u8]),
    /// The typed result of a JSON request.
    Json(JsonResponse),
    /// The request finished: every record was delivered and the body ended cleanly.
    /// The connection can take the next request.
    Done,
}

/// What the response in flight is being read into.
#[derive(Debug)]
enum Reading {
    /// No request.
    Idle,
    /// A `get_range` request; its 2xx body goes to the stream decoder.
    Range {
        stream: Box<StreamDecoder>,
        /// The HTTP body ended (or failed with this truncation) and the stream was
        /// told.
        body_ended: bool,
        truncation: Option<Error>,
        /// The stream returned its end; the next poll finishes the request.
        finished: bool,
        /// The stream (or the body under it) failed; the next poll reports it.
        failed: bool,
    },
    /// A JSON request; its 2xx body is collected.
    Json { request: JsonRequest, body: Vec<u8> },
    /// An error response: up to 4 KiB of its body is kept.
    Failed { head: ResponseHead, body: Vec<u8> },
}

/// A Historical API connection as a sans-IO state machine: TLS to the server, one
/// HTTP/1.1 request at a time (keep-alive), `timeseries.get_range` bodies decompressed
/// and decoded into records as they arrive, JSON endpoints parsed into types.
///
/// Ciphertext in with [`handle_input`](Self::handle_input) (taken only as far as the
/// record consumer keeps up: backpressure reaches the socket), ciphertext out from
/// [`poll_transmit`](Self::poll_transmit), events from
/// [`poll_event`](Self::poll_event), end of input with
/// [`handle_eof`](Self::handle_eof). After an error response the connection is
/// closed.
///
/// # Example
///
/// The loop a driver runs over a blocking `TcpStream` (mio and tokio drivers run the
/// same steps on readiness):
///
/// ```no_run
/// use std::io::{Read, Write};
/// use dbn::Schema;
/// use dbn_pipe_protocol::historical::{GetRangeParams, HistoricalConfig, HistoricalEvent, HistoricalSession};
/// use dbn_pipe_protocol::live::ApiKey;
/// use dbn_pipe_protocol::tls::TlsConfig;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let key = ApiKey::new(std::env::var("DATABENTO_API_KEY")?)?;
/// let mut session = HistoricalSession::new(HistoricalConfig::new(key), &TlsConfig::builder().build()?)?;
/// session.get_range(&GetRangeParams::new("GLBX.MDP3", Schema::Trades, ["ESM4"], 1_704_067_200_000_000_000u64).limit(100))?;
/// let mut socket = std::net::TcpStream::connect(("hist.databento.com", 443))?;
/// let (mut out, mut buf, mut pending) = (Vec::new(), vec![0; 64 * 1024], 0..0);
/// loop {
///     out.clear();
///     let _ = session.poll_transmit(&mut out);
///     socket.write_all(&out)?;
///     while let Some(event) = session.poll_event()? {
///         match event {
///             HistoricalEvent::Records(batch) => batch.for_each(|rec| println!("{:?}", rec.header())),
///             HistoricalEvent::Done => return Ok(()),
///             other => println!("{other:?}"),
///         }
///     }
///     if pending.is_empty() {
///         let n = socket.read(&mut buf)?;
///         if n == 0 {
///             session.handle_eof();
///             continue;
///         }
///         pending = 0..n;
///     }
///     let taken = session.handle_input(&buf[pending.clone()]); // fewer = backpressure
///     pending.start += taken;
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct HistoricalSession {
    config: HistoricalConfig,
    tls: TlsSession,
    http: ClientCodec,
    reading: Reading,
    pending: VecDeque<HistoricalEvent<'static>>,
    failure: Option<Error>,
    /// The transport ended (peer close, or a protocol error): nothing more moves.
    closed: bool,
    /// With `get_range_copy`: body bytes the decoder took, not yet handed out.
    body_copy: Option<Vec<u8>>,
    /// `body_copy` was handed out by the last poll; the next poll empties it.
    body_copy_handed: bool,
    /// The stream offset of the record [`record_ready`](Self::record_ready) last found
    /// ready: the stream's bytes at an offset never change, so
    /// [`poll_record`](Self::poll_record) takes that record without looking again.
    /// Cleared by every request (a new body's offsets start over).
    ready_at: Option<u64>,
}

/// How many raw body bytes `get_range_copy` holds before it stops taking input.
const BODY_COPY_CAP: usize = 256 * 1024;

impl HistoricalSession {
    /// Starts a TLS connection to the configured host; the handshake begins with the
    /// first [`poll_transmit`](Self::poll_transmit).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid host name or decoder setting.
    pub fn new(config: HistoricalConfig, tls: &TlsConfig) -> Result<Self, Error> {
        config.decoder.validate()?;
        let session = TlsSession::new(tls, &config.host)?;
        Ok(Self {
            config,
            tls: session,
            http: ClientCodec::new(CodecConfig::default())?,
            reading: Reading::Idle,
            pending: VecDeque::new(),
            failure: None,
            closed: false,
            body_copy: None,
            body_copy_handed: false,
            ready_at: None,
        })
    }

    /// Whether a new request can be sent now.
    pub fn is_ready(&self) -> bool {
        self.failure.is_none()
            && !self.closed
            && matches!(self.reading, Reading::Idle)
            && self.http.is_ready()
    }

    /// Sends `timeseries.get_range`.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for invalid parameters or when a request is in flight
    /// (or the connection is closed); nothing is sent then.
    pub fn get_range(&mut self, params: &GetRangeParams) -> Result<(), Error> {
        params.validate()?;
        let stream = StreamDecoder::new(StreamConfig {
            decoder: self
                .config
                .decoder
                .clone()
                .upgrade_policy(params.upgrade_policy),
            compression: Compression::Zstd,
            ..StreamConfig::default()
        })?;
        let request = Request::post_form("/v0/timeseries.get_range", params.form())
            .header("Accept", "application/octet-stream");
        self.send(request)?;
        self.body_copy = None;
        self.ready_at = None;
        self.reading = Reading::Range {
            stream: Box::new(stream),
            body_ended: false,
            truncation: None,
            finished: false,
            failed: false,
        };
        Ok(())
    }

    /// Sends `timeseries.get_range` like [`get_range`](Self::get_range), and also hands
    /// out the raw (compressed) body as [`HistoricalEvent::Body`] events, so a driver
    /// can write the `.dbn.zst` file as served while counting its records. At most
    /// 256 KiB of body waits for the application; then input is pushed back.
    ///
    /// # Errors
    /// As [`get_range`](Self::get_range).
    pub fn get_range_copy(&mut self, params: &GetRangeParams) -> Result<(), Error> {
        self.get_range(params)?;
        self.body_copy = Some(Vec::new());
        self.body_copy_handed = false;
        Ok(())
    }

    /// Sends a JSON endpoint request; its result comes as [`HistoricalEvent::Json`].
    ///
    /// # Errors
    /// As [`get_range`](Self::get_range).
    pub fn request_json(&mut self, request: JsonRequest) -> Result<(), Error> {
        request.validate()?;
        let call = request.call();
        let http = match call.form {
            Some(form) => Request::post_form(call.target, form),
            None => Request::get(call.target),
        }
        .header("Accept", "application/json");
        self.send(http)?;
        self.reading = Reading::Json {
            request,
            body: Vec::new(),
        };
        Ok(())
    }

    fn send(&mut self, request: Request) -> Result<(), Error> {
        if let Some(err) = &self.failure {
            return Err(Error::InvalidRequest(format!(
                "the connection failed: {err}"
            )));
        }
        if self.closed {
            return Err(Error::InvalidRequest(
                "the server closed the connection".to_owned(),
            ));
        }
        if !matches!(self.reading, Reading::Idle) {
            return Err(Error::InvalidRequest(
                "a request is in flight: wait for Done (no pipelining)".to_owned(),
            ));
        }
        let credentials = format!("{}:", self.config.key.secret());
        let request = request
            .header(
                "Authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(credentials)
                ),
            )
            .header("User-Agent", self.config.user_agent());
        let mut bytes = Vec::new();
        self.http
            .send_request(&request, &self.config.host, &mut bytes)?;
        self.tls.send(&bytes)
    }

    /// Takes ciphertext from the socket; returns how many bytes were taken (fewer
    /// while decoded records wait for the application).
    pub fn handle_input(&mut self, input: &[u8]) -> usize {
        if self.failure.is_some() {
            return 0;
        }
        match self.tls.handle_input(input) {
            Ok(n) => n,
            Err(err) => {
                self.failure = Some(err);
                0
            }
        }
    }

    /// The TCP connection ended; the response in flight ends or is reported truncated
    /// once its records are delivered.
    pub fn handle_eof(&mut self) {
        if let Err(err) = self.tls.handle_eof() {
            self.failure.get_or_insert(err);
        }
    }

    /// Appends ciphertext to send to `out`; returns how many bytes.
    #[must_use = "the bytes must be written to the socket"]
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        self.tls.poll_transmit(out)
    }

    /// Whether ciphertext waits in [`poll_transmit`](Self::poll_transmit).
    pub fn wants_transmit(&self) -> bool {
        self.tls.wants_transmit()
    }

    /// The next event, `Ok(None)` when more input is needed.
    ///
    /// # Errors
    /// [`Error::HttpStatus`] for an error response (with the server's message and
    /// request id), TLS, HTTP framing, decompression and DBN errors, truncation of the
    /// body; each after every record before it was delivered. Sticky.
    #[must_use = "events carry records and errors that must be handled"]
    pub fn poll_event(&mut self) -> Result<Option<HistoricalEvent<'_>>, Error> {
        if std::mem::take(&mut self.body_copy_handed) {
            if let Some(copy) = &mut self.body_copy {
                copy.clear();
            }
        }
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            if let Reading::Range {
                finished, failed, ..
            } = self.reading
            {
                if finished || failed {
                    // `Done` or the error was already returned.
                    self.reading = Reading::Idle;
                    continue;
                }
            }
            if self.body_copy.as_ref().is_some_and(|copy| !copy.is_empty()) {
                self.body_copy_handed = true;
                let copy = self.body_copy.as_deref().unwrap_or_default();
                return Ok(Some(HistoricalEvent::Body(copy)));
            }
            if self.range_has_output() {
                return self.poll_range().map(Some);
            }
            if let Some(err) = &self.failure {
                return Err(err.clone());
            }
            if !self.pump() {
                return Ok(None);
            }
        }
    }

    /// Whether [`poll_record`](Self::poll_record) hands out a record now: the next
    /// [`poll_event`](Self::poll_event) would be [`HistoricalEvent::Records`] and its
    /// first record is complete. `false` says nothing about what comes instead;
    /// `poll_event` does.
    ///
    /// It borrows nothing, so a driver that hands out one record per call can ask it
    /// before taking the record with `poll_record` and return that record, where
    /// holding a polled event across other calls on the session would not compile.
    /// The loop is the one shown on
    /// [`LiveSession::record_ready`](crate::live::LiveSession::record_ready).
    pub fn record_ready(&mut self) -> bool {
        self.ready_at = None;
        if !self.pending.is_empty() || self.body_copy.as_ref().is_some_and(|c| !c.is_empty()) {
            return false;
        }
        match &mut self.reading {
            Reading::Range {
                stream,
                finished: false,
                failed: false,
                ..
            } => {
                let ready = stream.peek_rtype().is_some();
                // `peek_rtype` released what was delivered: the record is at the head.
                self.ready_at = ready.then(|| stream.dbn().bytes_delivered());
                ready
            }
            _ => false,
        }
    }

    /// The next record of the `get_range` in flight when
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
        let at = self.ready_at.take();
        let checked = at.is_some()
            && self.pending.is_empty()
            && self.body_copy.as_ref().is_none_or(|c| c.is_empty())
            && matches!(
                &self.reading,
                Reading::Range { stream, finished: false, failed: false, .. }
                    if Some(stream.dbn().bytes_delivered()) == at
            );
        if !checked && !self.record_ready() {
            return None;
        }
        self.ready_at = None;
        match &mut self.reading {
            Reading::Range { stream, .. } => match stream.poll() {
                Ok(Decoded::Record(record)) => Some(record),
                // `peek_rtype` saw a complete record, so `poll` returns it.
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether the range stream has records, metadata, an error or its end ready.
    fn range_has_output(&mut self) -> bool {
        match &mut self.reading {
            Reading::Range { stream, .. } => stream.has_output(),
            _ => false,
        }
    }

    /// Polls the range stream; only called when it has output, so it always returns
    /// an event or an error.
    fn poll_range(&mut self) -> Result<HistoricalEvent<'_>, Error> {
        let Reading::Range {
            stream,
            truncation,
            finished,
            failed,
            ..
        } = &mut self.reading
        else {
            return Err(internal("no get_range in flight"));
        };
        let err = match stream.poll_batch(usize::MAX) {
            Ok(Decoded::Metadata(metadata)) => return Ok(HistoricalEvent::Metadata(metadata)),
            Ok(Decoded::Record(batch)) => return Ok(HistoricalEvent::Records(batch)),
            Ok(Decoded::End) => match truncation.take() {
                None => {
                    *finished = true;
                    return Ok(HistoricalEvent::Done);
                }
                Some(err) => err,
            },
            Ok(Decoded::NeedInput(_)) => internal("the record stream had no output"),
            // An HTTP-level truncation is the outer cause of a cut DBN stream.
            Err(err) => truncation.take().unwrap_or(err),
        };
        *failed = true;
        Err(self.failure.get_or_insert(err).clone())
    }

    /// Moves decrypted bytes through HTTP into the reader of the response in flight.
    /// Returns false when nothing moved (more input is needed).
    fn pump(&mut self) -> bool {
        if self.closed {
            return false;
        }
        let max_json = self.config.max_json_body;
        let outcome = match self.tls.plaintext() {
            Plaintext::Closed { clean } => Outcome::Closed { clean },
            Plaintext::Pending => Outcome::Advance(0),
            Plaintext::Data(data) => step(
                &mut self.http,
                &mut self.reading,
                data,
                max_json,
                self.body_copy.as_mut(),
            ),
        };
        let outcome = match outcome {
            Outcome::Advance(0) => match self.tls.failure() {
                Some(err) => Outcome::Fail(err.clone()),
                // A complete Content-Length body ends without more bytes.
                None => match step(
                    &mut self.http,
                    &mut self.reading,
                    &[],
                    max_json,
                    self.body_copy.as_mut(),
                ) {
                    Outcome::Advance(0) => return false,
                    outcome => outcome,
                },
            },
            outcome => outcome,
        };
        match outcome {
            Outcome::Advance(used) => {
                self.tls.consume(used);
                used > 0
            }
            Outcome::Body(used, taken) => {
                self.tls.consume(used + taken);
                used + taken > 0
            }
            Outcome::Head(used, head) => {
                self.tls.consume(used);
                self.on_head(head);
                true
            }
            Outcome::End(used) => {
                self.tls.consume(used);
                self.on_end();
                true
            }
            Outcome::Closed { clean } => {
                self.closed = true;
                match self.http.finish(clean) {
                    Ok(Some(_)) => self.on_end(),
                    Ok(None) => {}
                    // A response cut off where a TLS record was cut off: name the
                    // layer where the connection ended.
                    Err(err @ Error::Truncated { .. }) => {
                        let cut = self.tls.unfinished_record().unwrap_or(err);
                        self.on_truncated(cut);
                    }
                    Err(err) => self.on_truncated(err),
                }
                true
            }
            Outcome::Fail(err) => {
                self.closed = true;
                self.on_truncated(err);
                true
            }
        }
    }

    fn on_head(&mut self, head: ResponseHead) {
        for value in head.headers_named("x-warning") {
            for warning in warnings(value) {
                self.pending.push_back(HistoricalEvent::Warning(warning));
            }
        }
        if head.status >= 300 {
            self.reading = Reading::Failed {
                head,
                body: Vec::new(),
            };
        }
    }

    fn on_end(&mut self) {
        match std::mem::replace(&mut self.reading, Reading::Idle) {
            Reading::Idle => {}
            Reading::Range {
                mut stream,
                truncation,
                finished,
                failed,
                ..
            } => {
                // Records still buffered are delivered; the stream's verdict follows.
                let _ = stream.finish();
                self.reading = Reading::Range {
                    stream,
                    body_ended: true,
                    truncation,
                    finished,
                    failed,
                };
            }
            Reading::Json { request, body } => match request.parse(&body) {
                Ok(response) => self.pending.push_back(HistoricalEvent::Json(response)),
                Err(reason) => {
                    self.failure = Some(Error::HttpMalformed {
                        offset: self.http.bytes_received(),
                        reason,
                    });
                }
            },
            Reading::Failed { head, body } => {
                let err = status_error(head.status, &head.reason, &body, head.header("request-id"));
                self.failure = Some(Error::HttpStatus(Box::new(err)));
                self.tls.close();
            }
        }
    }

    /// The response cannot complete: `err` is reported after the records before it.
    fn on_truncated(&mut self, err: Error) {
        match &mut self.reading {
            Reading::Range {
                stream,
                body_ended,
                truncation,
                ..
            } if !*body_ended => {
                // The records already decoded are delivered first, then `err`.
                let _ = stream.finish();
                *body_ended = true;
                *truncation = Some(err);
            }
            _ => {
                self.failure.get_or_insert(err);
            }
        }
    }
}

/// An error for a state the session's own checks rule out (instead of a panic).
fn internal(what: &str) -> Error {
    Error::HttpMalformed {
        offset: 0,
        reason: format!("internal: {what}"),
    }
}

/// Decodes `data` up to the next HTTP event and hands body bytes to `reading`.
fn step(
    http: &mut ClientCodec,
    reading: &mut Reading,
    data: &[u8],
    max_json: usize,
    body_copy: Option<&mut Vec<u8>>,
) -> Outcome {
    match http.decode(data) {
        Err(err) => Outcome::Fail(err),
        Ok((used, ResponseEvent::NeedInput)) => Outcome::Advance(used),
        Ok((used, ResponseEvent::End)) => Outcome::End(used),
        Ok((used, ResponseEvent::Head(head))) => Outcome::Head(used, head),
        Ok((used, ResponseEvent::Body(body))) => {
            match take_body(reading, body, max_json, body_copy) {
                Ok(n) => match http.body_consumed(n) {
                    Ok(()) => Outcome::Body(used, n),
                    Err(err) => Outcome::Fail(err),
                },
                Err(err) => Outcome::Fail(err),
            }
        }
    }
}

/// What one pump step did, decided while the plaintext is borrowed.
enum Outcome {
    Advance(usize),
    Head(usize, ResponseHead),
    Body(usize, usize),
    End(usize),
    Closed { clean: bool },
    Fail(Error),
}

/// Hands body bytes to the reader in flight (and a copy to `body_copy`, if any);
/// returns how many it took.
fn take_body(
    reading: &mut Reading,
    body: &[u8],
    max_json: usize,
    body_copy: Option<&mut Vec<u8>>,
) -> Result<usize, Error> {
    match reading {
        Reading::Idle => Ok(body.len()),
        Reading::Range { stream, .. } => match body_copy {
            None => Ok(stream.handle_input(body)),
            Some(copy) => {
                let room = BODY_COPY_CAP.saturating_sub(copy.len());
                let taken = stream.handle_input(&body[..room.min(body.len())]);
                copy.extend_from_slice(&body[..taken]);
                Ok(taken)
            }
        },
        Reading::Json {
            body: collected, ..
        } => {
            if collected.len() + body.len() > max_json {
                return Err(Error::InvalidRequest(format!(
                    "the JSON body exceeds the configured cap of {max_json} bytes"
                )));
            }
            collected.extend_from_slice(body);
            Ok(body.len())
        }
        Reading::Failed { body: kept, .. } => {
            let room = ERROR_BODY_CAP.saturating_sub(kept.len());
            kept.extend_from_slice(&body[..room.min(body.len())]);
            Ok(body.len())
        }
    }
}
