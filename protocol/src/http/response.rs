//! The client side of one HTTP/1.1 connection: requests out, response events in.

use super::blank_line::BlankLineScanner;
use super::chunked::{ChunkStep, ChunkedDecoder};
use super::config::CodecConfig;
use super::framing::{BodyFraming, MessageKind, response_framing};
use super::head::{ResponseHead, parse_head};
use super::request::{Method, Request, encode_request};
use crate::{Error, TruncatedPart};

/// What [`ClientCodec::decode`] found in the response bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseEvent<'a> {
    /// Every byte of the input was consumed (buffered or skipped); call again with
    /// more. Nothing is pending.
    NeedInput,
    /// The head of the final response (1xx interim heads are skipped). The body, if
    /// [`ResponseHead::framing`] announces one, follows as [`ResponseEvent::Body`].
    Head(ResponseHead),
    /// Body bytes, never empty: the subslice of the input right after the consumed
    /// bytes, with the transfer framing removed. Not yet consumed: report how many
    /// were taken with [`ClientCodec::body_consumed`].
    Body(&'a [u8]),
    /// The response is complete. Unless [`ClientCodec::is_ready`] is false (the
    /// connection cannot be reused), the next request may be sent.
    End,
}

#[derive(Debug, Clone)]
enum Body {
    Length { remaining: u64, total: u64 },
    Chunked(ChunkedDecoder),
    UntilClose,
}

#[derive(Debug, Clone)]
enum State {
    /// No request in flight; the connection can carry one.
    Idle,
    /// A request was sent; reading the response head (in `head` while incomplete).
    Head { scanner: BlankLineScanner },
    /// Reading the body.
    Body(Body),
    /// The body is complete; `End` is the next event.
    Complete,
    /// No further request may be sent, for this reason.
    Closed(&'static str),
    /// A decoding error; returned again by every later call.
    Failed(Error),
}

/// The sans-IO client codec of one HTTP/1.1 connection (one request at a time, no
/// pipelining), in the style of h11.
///
/// # Contract
///
/// - [`send_request`](Self::send_request) appends a request to a caller buffer; it is
///   refused while a response is in flight, and once the connection cannot be reused
///   (a close-delimited body, `Connection: close` either way, an HTTP/1.0 response, the
///   end of input, an error).
/// - [`decode`](Self::decode) takes response bytes and returns `(consumed, event)`:
///   `consumed` bytes of the input were used before the event's data. Call it again
///   with `&input[consumed..]` (plus what the next layer took of a `Body`) until it
///   returns [`ResponseEvent::NeedInput`], which means every byte was used.
/// - After [`ResponseEvent::Body`]`(data)` the caller hands `data` on; the next layer
///   may take only `n <= data.len()` bytes (backpressure). The caller reports `n` with
///   [`body_consumed`](Self::body_consumed) and advances its input by `consumed + n`.
///   Bytes not reported are offered again by the next `decode`.
/// - [`finish`](Self::finish) is called when the transport ends, saying whether it
///   ended cleanly (TLS close_notify); it completes a close-delimited body or reports
///   truncation.
///
/// Errors are sticky: after one, `decode` and `finish` return it again. Offsets in
/// errors count response bytes on the connection. Memory is bounded by
/// [`CodecConfig`]: the head buffer, one header array, a chunk size line; body bytes
/// are never copied.
///
/// ```
/// use dbn_pipe_protocol::http::{ClientCodec, Request, ResponseEvent};
///
/// # fn main() -> Result<(), dbn_pipe_protocol::Error> {
/// let mut codec = ClientCodec::default();
/// let mut out = Vec::new();
/// codec.send_request(&Request::get("/v0/metadata.list_datasets"), "hist.databento.com", &mut out)?;
/// // socket.write_all(&out); then feed what the socket returns:
/// let mut input: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
/// let mut body = Vec::new();
/// loop {
///     let (consumed, event) = codec.decode(input)?;
///     match event {
///         ResponseEvent::Head(head) => assert_eq!(head.status, 200),
///         ResponseEvent::Body(data) => {
///             let taken = data.len().min(3); // the next layer may take less
///             body.extend_from_slice(&data[..taken]);
///             codec.body_consumed(taken)?;
///             input = &input[consumed + taken..];
///             continue;
///         }
///         ResponseEvent::End => break,
///         ResponseEvent::NeedInput => unreachable!("the whole response is here"),
///     }
///     input = &input[consumed..];
/// }
/// assert_eq!(body, b"hello");
/// assert!(codec.is_ready()); // keep-alive: the next request may go
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ClientCodec {
    config: CodecConfig,
    state: State,
    /// The method of the request in flight.
    method: Method,
    /// Why the connection cannot be reused after the response in flight, if known.
    close: Option<&'static str>,
    /// Whether the request in flight asked for `Connection: close`.
    request_close: bool,
    /// An incomplete head; never above `config.max_head_bytes`.
    head: Vec<u8>,
    /// Connection offset of the head being read.
    head_offset: u64,
    /// Connection offset of the body being read.
    body_offset: u64,
    /// Body bytes (after chunk framing is removed) consumed so far.
    body_have: u64,
    /// Response bytes consumed on the connection.
    offset: u64,
    /// Body bytes offered by the last `decode` and not yet reported.
    offered: usize,
}

impl Default for ClientCodec {
    /// A codec with [`CodecConfig::default`].
    fn default() -> Self {
        Self::with_valid_config(CodecConfig::default())
    }
}

impl ClientCodec {
    /// A codec for a fresh connection, ready for its first request.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when a limit of `config` is outside its documented range.
    pub fn new(config: CodecConfig) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self::with_valid_config(config))
    }

    fn with_valid_config(config: CodecConfig) -> Self {
        Self {
            config,
            state: State::Idle,
            method: Method::Get,
            close: None,
            request_close: false,
            head: Vec::new(),
            head_offset: 0,
            body_offset: 0,
            body_have: 0,
            offset: 0,
            offered: 0,
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &CodecConfig {
        &self.config
    }

    /// Whether [`send_request`](Self::send_request) would accept a request now: no
    /// response is in flight and the connection can be reused.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// Whether a request was sent and its response has not reached
    /// [`ResponseEvent::End`] yet.
    pub fn is_in_flight(&self) -> bool {
        matches!(
            self.state,
            State::Head { .. } | State::Body(_) | State::Complete
        )
    }

    /// Why this connection cannot carry another request: `None` while it can (or
    /// might, when the response in flight has not said yet), else the reason. After
    /// an [`ResponseEvent::End`] with `Some`, the driver closes the connection.
    pub fn close_reason(&self) -> Option<&'static str> {
        match self.state {
            State::Closed(reason) => Some(reason),
            State::Failed(_) => Some("the connection failed"),
            State::Idle => None,
            State::Head { .. } | State::Body(_) | State::Complete => self.close,
        }
    }

    /// Response bytes consumed on this connection so far (the base of error offsets).
    pub fn bytes_received(&self) -> u64 {
        self.offset
    }

    /// Appends `req` for `host` to `out` (see [`encode_request`]) and expects its
    /// response. A `HEAD` request's response is read without a body.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`], with `out` and the codec unchanged, when a response
    /// is still in flight (no pipelining), when the connection cannot be reused (see
    /// [`close_reason`](Self::close_reason)), or when `encode_request` refuses the
    /// request.
    pub fn send_request(
        &mut self,
        req: &Request,
        host: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        match &self.state {
            State::Idle => {}
            State::Closed(reason) => {
                return Err(Error::InvalidRequest(format!(
                    "the connection cannot carry another request: {reason}"
                )));
            }
            State::Failed(e) => {
                return Err(Error::InvalidRequest(format!("the connection failed: {e}")));
            }
            State::Head { .. } | State::Body(_) | State::Complete => {
                return Err(Error::InvalidRequest(
                    "a response is still in flight: wait for its End (no pipelining)".into(),
                ));
            }
        }
        encode_request(req, host, out)?;
        self.method = req.method();
        self.request_close = req.asks_close();
        self.close = None;
        self.head.clear();
        self.head_offset = self.offset;
        self.state = State::Head {
            scanner: BlankLineScanner::InLine,
        };
        Ok(())
    }

    /// Decodes response bytes up to the next event.
    ///
    /// Returns how many bytes of `input` were consumed before the event's data, and
    /// the event. On [`ResponseEvent::NeedInput`] that is all of `input`. On
    /// [`ResponseEvent::Body`] the data is the subslice right after them and is not
    /// consumed until [`body_consumed`](Self::body_consumed) says so. A body offered
    /// and not reported is simply offered again.
    ///
    /// # Errors
    ///
    /// [`Error::HttpHeadTooLarge`], [`Error::HttpTooManyHeaders`],
    /// [`Error::HttpMalformed`] (status line, header, framing headers, chunk framing,
    /// a 101, bytes with no request in flight); sticky.
    #[must_use = "the event and the consumed count drive the caller's input"]
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<(usize, ResponseEvent<'a>), Error> {
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        self.offered = 0;
        let result = self.step(input);
        if let Err(e) = &result {
            self.state = State::Failed(e.clone());
        }
        result
    }

    /// Reports that the next layer took the first `n` bytes of the last
    /// [`ResponseEvent::Body`]. May be called several times; the sum may not exceed
    /// the offered length. `0` is allowed (the data is offered again by the next
    /// `decode`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`], changing nothing, when `n` is more than what is left
    /// of the offered data.
    pub fn body_consumed(&mut self, n: usize) -> Result<(), Error> {
        if n > self.offered {
            return Err(Error::InvalidRequest(format!(
                "body_consumed({n}) exceeds the {} body bytes offered",
                self.offered
            )));
        }
        if n == 0 {
            return Ok(());
        }
        self.offered -= n;
        self.offset += n as u64;
        self.body_have += n as u64;
        if let State::Body(body) = &mut self.state {
            match body {
                Body::Length { remaining, .. } => {
                    *remaining = remaining.saturating_sub(n as u64);
                    if *remaining == 0 {
                        self.state = State::Complete;
                    }
                }
                Body::Chunked(chunked) => chunked.data_consumed(n),
                Body::UntilClose => {}
            }
        }
        Ok(())
    }

    /// Ends the input: the transport was closed, cleanly (`clean_close`, a TLS
    /// close_notify) or not. Afterwards the codec accepts no request.
    ///
    /// Returns `Some(End)` when this completes the response in flight (a
    /// close-delimited body with `clean_close`, or a body already complete whose
    /// `End` was not yet returned), `None` when no response was in flight.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] with [`TruncatedPart::HttpHead`] when the input ended
    /// before or inside a response head (`have` head bytes), or
    /// [`TruncatedPart::HttpBody`] inside a Content-Length body (`need` is its length)
    /// or a close-delimited body without `clean_close`, or
    /// [`TruncatedPart::HttpChunkedBody`] inside a chunked body; `offset` is
    /// where the head or body started and `have` counts its bytes received (body bytes
    /// without chunk framing). A sticky error is returned again.
    #[must_use = "an error here is a truncated response"]
    pub fn finish(&mut self, clean_close: bool) -> Result<Option<ResponseEvent<'static>>, Error> {
        self.offered = 0;
        let truncated = |part, offset, have: u64, need: Option<u64>| Error::Truncated {
            part,
            offset,
            have: usize::try_from(have).unwrap_or(usize::MAX),
            need: need.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        };
        let result = match &self.state {
            State::Failed(e) => return Err(e.clone()),
            State::Closed(_) => return Ok(None),
            State::Idle => Ok(None),
            State::Head { .. } => Err(truncated(
                TruncatedPart::HttpHead,
                self.head_offset,
                self.head.len() as u64,
                None,
            )),
            State::Body(Body::Length { remaining, total }) => Err(truncated(
                TruncatedPart::HttpBody,
                self.body_offset,
                total - remaining,
                Some(*total),
            )),
            State::Body(Body::UntilClose) if clean_close => Ok(Some(ResponseEvent::End)),
            State::Body(Body::Chunked(_)) => Err(truncated(
                TruncatedPart::HttpChunkedBody,
                self.body_offset,
                self.body_have,
                None,
            )),
            State::Body(Body::UntilClose) => Err(truncated(
                TruncatedPart::HttpBody,
                self.body_offset,
                self.body_have,
                None,
            )),
            State::Complete => Ok(Some(ResponseEvent::End)),
        };
        self.state = match &result {
            Ok(_) => State::Closed(self.close.unwrap_or("the connection ended")),
            Err(e) => State::Failed(e.clone()),
        };
        result
    }

    fn step<'a>(&mut self, input: &'a [u8]) -> Result<(usize, ResponseEvent<'a>), Error> {
        let mut pos = 0;
        loop {
            let rest = input.get(pos..).unwrap_or_default();
            match &mut self.state {
                State::Idle | State::Closed(_) | State::Failed(_) => {
                    if rest.is_empty() {
                        return Ok((pos, ResponseEvent::NeedInput));
                    }
                    let reason = match self.state {
                        State::Closed(why) => {
                            format!("bytes after the last response of the connection ({why})")
                        }
                        _ => "response bytes arrived with no request in flight".to_owned(),
                    };
                    return Err(Error::HttpMalformed {
                        offset: self.offset,
                        reason,
                    });
                }
                State::Head { scanner } => {
                    let limit = self.config.max_head_bytes;
                    let window = &rest[..limit.saturating_sub(self.head.len()).min(rest.len())];
                    let Some(end) = scanner.scan(window) else {
                        if rest.len() > window.len() {
                            return Err(Error::HttpHeadTooLarge { limit });
                        }
                        self.head.extend_from_slice(window);
                        self.offset += window.len() as u64;
                        return Ok((input.len(), ResponseEvent::NeedInput));
                    };
                    let parsed = if self.head.is_empty() {
                        parse_head(&window[..end], self.config.max_headers, self.head_offset)
                    } else {
                        self.head.extend_from_slice(&window[..end]);
                        parse_head(&self.head, self.config.max_headers, self.head_offset)
                    };
                    self.head.clear();
                    pos += end;
                    self.offset += end as u64;
                    let mut head = parsed?;
                    let kind =
                        response_framing(self.method, head.version, head.status, &head.headers)
                            .map_err(|reason| Error::HttpMalformed {
                                offset: self.head_offset,
                                reason,
                            })?;
                    let MessageKind::Final { body, close } = kind else {
                        // A 1xx interim response: the final one follows.
                        self.head_offset = self.offset;
                        self.state = State::Head {
                            scanner: BlankLineScanner::InLine,
                        };
                        continue;
                    };
                    head.framing = body;
                    self.close = close.or(self
                        .request_close
                        .then_some("the request asked for Connection: close"));
                    self.body_offset = self.offset;
                    self.body_have = 0;
                    self.state = match body {
                        BodyFraming::Empty => State::Complete,
                        BodyFraming::Length(n) => State::Body(Body::Length {
                            remaining: n,
                            total: n,
                        }),
                        BodyFraming::Chunked => State::Body(Body::Chunked(ChunkedDecoder::new(
                            self.config.max_chunk_line,
                            self.config.max_head_bytes,
                        ))),
                        BodyFraming::UntilClose => State::Body(Body::UntilClose),
                    };
                    return Ok((pos, ResponseEvent::Head(head)));
                }
                State::Body(Body::Length { remaining, .. }) => {
                    if rest.is_empty() {
                        return Ok((pos, ResponseEvent::NeedInput));
                    }
                    let take = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(rest.len());
                    self.offered = take;
                    return Ok((pos, ResponseEvent::Body(&rest[..take])));
                }
                State::Body(Body::UntilClose) => {
                    if rest.is_empty() {
                        return Ok((pos, ResponseEvent::NeedInput));
                    }
                    self.offered = rest.len();
                    return Ok((pos, ResponseEvent::Body(rest)));
                }
                State::Body(Body::Chunked(chunked)) => {
                    let (used, step) = chunked.decode(rest, self.offset)?;
                    pos += used;
                    self.offset += used as u64;
                    match step {
                        ChunkStep::NeedInput => return Ok((pos, ResponseEvent::NeedInput)),
                        ChunkStep::Data(data) => {
                            self.offered = data.len();
                            return Ok((pos, ResponseEvent::Body(data)));
                        }
                        ChunkStep::Done => self.state = State::Complete,
                    }
                }
                State::Complete => {
                    self.state = match self.close {
                        Some(reason) => State::Closed(reason),
                        None => State::Idle,
                    };
                    return Ok((pos, ResponseEvent::End));
                }
            }
        }
    }
}
