//! Target `http_codec`: fuzz bytes as the server's side of one HTTP/1.1 connection
//! into [`ClientCodec`], cut at fuzzer-chosen split points; up to three requests on
//! the connection while it stays reusable.
//!
//! Input ([`Framed`]): `flags` bit 0 the first request is `HEAD` (no body), bit 1 the
//! transport ends cleanly (`finish(true)`, a TLS close_notify), bits 2-3 the body
//! bytes the next layer takes per event (all, 1, 7, 100), bit 4 tight limits (head
//! 256 bytes, 4 headers, chunk line 16 bytes). `aux` is unused.
//!
//! Checks: no panic; `decode`'s consumed count plus the body it offers never exceed
//! the input; `NeedInput` consumes everything; a body event is never empty; errors
//! are sticky; the chosen split and take size give the same heads, body bytes, ends
//! and verdict as the whole input taken at once.

use dbn_pipe_protocol::ErrorKind;
use dbn_pipe_protocol::http::{ClientCodec, CodecConfig, Request, ResponseEvent, ResponseHead};

use crate::input::Framed;

/// The host every request names.
const HOST: &str = "hist.test";

/// Requests sent at most on one connection.
const MAX_REQUESTS: usize = 3;

/// One event, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A final head.
    Head(ResponseHead),
    /// Body bytes (merged across events of one response).
    Body(Vec<u8>),
    /// The response ended.
    End,
    /// An error: kind and offset.
    Error(ErrorKind, Option<u64>),
}

fn push_body(seen: &mut Vec<Seen>, data: &[u8]) {
    if let Some(Seen::Body(all)) = seen.last_mut() {
        all.extend_from_slice(data);
    } else {
        seen.push(Seen::Body(data.to_vec()));
    }
}

/// Runs one connection over `chunks`.
///
/// # Panics
/// On a broken invariant (see the module docs).
pub fn drive(flags: u8, chunks: &[&[u8]], take: usize) -> Vec<Seen> {
    let config = if flags & 0x10 != 0 {
        CodecConfig::default()
            .max_head_bytes(256)
            .max_headers(4)
            .max_chunk_line(16)
    } else {
        CodecConfig::default()
    };
    let mut codec =
        ClientCodec::new(config).unwrap_or_else(|e| panic!("valid limits are refused: {e}"));
    let mut out = Vec::new();
    let mut sent = 1;
    let first = if flags & 1 != 0 {
        Request::head("/v0/metadata.list_datasets")
    } else {
        Request::get("/v0/metadata.list_datasets")
    };
    codec
        .send_request(&first, HOST, &mut out)
        .unwrap_or_else(|e| panic!("the first request is refused: {e}"));
    let mut seen = Vec::new();
    for chunk in chunks {
        let mut rest: &[u8] = chunk;
        loop {
            let (consumed, event) = match codec.decode(rest) {
                Ok(step) => step,
                Err(err) => {
                    let again = codec.decode(b"x").err().map(|e| (e.kind(), e.offset()));
                    assert_eq!(again, Some((err.kind(), err.offset())), "not sticky");
                    seen.push(Seen::Error(err.kind(), err.offset()));
                    return seen;
                }
            };
            assert!(consumed <= rest.len(), "decode consumed more than offered");
            match event {
                ResponseEvent::NeedInput => {
                    assert_eq!(consumed, rest.len(), "NeedInput left bytes unconsumed");
                    break;
                }
                ResponseEvent::Head(head) => {
                    assert!((200..=599).contains(&head.status), "status {}", head.status);
                    seen.push(Seen::Head(head));
                    rest = &rest[consumed..];
                }
                ResponseEvent::Body(data) => {
                    assert!(!data.is_empty(), "an empty body event");
                    assert!(
                        consumed + data.len() <= rest.len(),
                        "the body runs past the input"
                    );
                    assert_eq!(
                        data.as_ptr(),
                        rest[consumed..].as_ptr(),
                        "the body is not the input right after the consumed bytes"
                    );
                    let n = data.len().min(take);
                    push_body(&mut seen, &data[..n]);
                    codec
                        .body_consumed(n)
                        .unwrap_or_else(|e| panic!("body_consumed({n}) refused: {e}"));
                    assert!(
                        n < data.len() || codec.body_consumed(1).is_err(),
                        "body_consumed accepted more than offered"
                    );
                    rest = &rest[consumed + n..];
                }
                ResponseEvent::End => {
                    seen.push(Seen::End);
                    rest = &rest[consumed..];
                    if codec.is_ready() && sent < MAX_REQUESTS {
                        sent += 1;
                        codec
                            .send_request(&Request::get("/v0/next"), HOST, &mut out)
                            .unwrap_or_else(|e| panic!("a ready codec refused a request: {e}"));
                    }
                }
            }
        }
    }
    match codec.finish(flags & 2 != 0) {
        Ok(Some(ResponseEvent::End)) => seen.push(Seen::End),
        Ok(Some(other)) => panic!("finish returned {other:?}"),
        Ok(None) => {}
        Err(err) => seen.push(Seen::Error(err.kind(), err.offset())),
    }
    assert!(!codec.is_ready(), "the codec takes requests after finish");
    seen
}

/// The target: see the module docs.
pub fn run(data: &[u8]) {
    let framed = Framed::parse(data);
    let take = [usize::MAX, 1, 7, 100][usize::from((framed.flags >> 2) & 3)];
    let whole = drive(framed.flags, &[framed.payload], usize::MAX);
    let split = drive(framed.flags, &framed.chunks(), take);
    assert_eq!(whole, split, "a split changed the events");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_response_then_a_length_one_are_read() {
        let bytes: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
        let seen = drive(2, &[&bytes[..60], &bytes[60..]], 1);
        assert!(matches!(&seen[0], Seen::Head(h) if h.status == 200));
        assert_eq!(seen[1], Seen::Body(b"hello".to_vec()));
        assert_eq!(seen[2], Seen::End);
        assert_eq!(seen[4], Seen::Body(b"hi".to_vec()));
        assert_eq!(seen[5], Seen::End);
        // A third request went out; the connection ended before its head.
        assert!(matches!(seen[6], Seen::Error(ErrorKind::Truncated, _)));
        assert_eq!(seen.len(), 7, "{seen:?}");
    }
}
