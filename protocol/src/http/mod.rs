//! HTTP/1.1 client codec for the Historical API: requests out, response heads and body
//! bytes in, with no I/O.
//!
//! - [`encode_request`] / [`Request`]: `GET`, `HEAD` and url-encoded form `POST`s with
//!   `Host`, the caller's headers and `Content-Length`; header injection (CR, LF) is
//!   refused.
//! - [`ClientCodec`]: one connection, one request at a time. Response heads are parsed
//!   with `httparse` into a bounded header array from a bounded buffer (the search for
//!   the blank line resumes where it stopped, so a head arriving byte by byte costs
//!   linear time); bodies framed by `Content-Length`, `Transfer-Encoding: chunked` or the
//!   connection close (RFC 9112 section 6.3, see [`BodyFraming`]) are handed out as
//!   slices of the caller's input, as soon as they arrive, with backpressure
//!   ([`ClientCodec::body_consumed`]). 1xx interim responses are skipped; `HEAD`, 204
//!   and 304 have no body; truncation is reported at end of input
//!   ([`ClientCodec::finish`]).
//!
//! Status codes of 300 and more are not errors here: the codec hands out their head
//! and body like any other, for the session above to turn into
//! [`HttpStatusError`](crate::HttpStatusError).

mod blank_line;
mod chunked;
mod config;
mod framing;
mod head;
mod request;
mod response;
#[cfg(test)]
mod tests;

pub use config::CodecConfig;
pub use framing::BodyFraming;
pub use head::ResponseHead;
pub use request::{FORM_CONTENT_TYPE, Method, Request, encode_request};
pub use response::{ClientCodec, ResponseEvent};
