//! The response head: status line and header fields, parsed with `httparse` into a
//! bounded header array.

use super::framing::BodyFraming;
use crate::Error;

/// A final response head (interim 1xx heads are skipped by the codec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The minor HTTP version: 1 for `HTTP/1.1`, 0 for `HTTP/1.0`.
    pub version: u8,
    /// The status code, in 200..=599 (1xx never reaches the caller).
    pub status: u16,
    /// The reason phrase; empty when absent or when it held bytes outside ASCII.
    pub reason: String,
    /// The header fields in the order received, names as sent. A value that is not
    /// UTF-8 has its invalid bytes replaced with U+FFFD.
    pub headers: Vec<(String, String)>,
    pub(crate) framing: BodyFraming,
}

impl ResponseHead {
    /// The value of the first header field named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The values of every header field named `name` (ASCII case-insensitive), in
    /// the order received.
    pub fn headers_named<'h>(&'h self, name: &'h str) -> impl Iterator<Item = &'h str> + 'h {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// How the body that follows this head is delimited, as the codec decodes it
    /// (for a response to `HEAD` this is [`BodyFraming::Empty`]).
    pub fn framing(&self) -> BodyFraming {
        self.framing
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Parses one complete head (status line, fields, blank line) found at connection
/// offset `offset`. `bytes` must end with the blank line. The framing is left as
/// [`BodyFraming::Empty`] for the caller to set.
pub(crate) fn parse_head(
    bytes: &[u8],
    max_headers: usize,
    offset: u64,
) -> Result<ResponseHead, Error> {
    let malformed = |reason: String| Error::HttpMalformed { offset, reason };
    let mut slots = vec![httparse::EMPTY_HEADER; max_headers];
    let mut response = httparse::Response::new(&mut slots);
    match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) if len == bytes.len() => {}
        Ok(httparse::Status::Complete(len)) => {
            return Err(malformed(format!(
                "head ends after {len} of {} bytes",
                bytes.len()
            )));
        }
        Ok(httparse::Status::Partial) => {
            return Err(malformed(
                "the response does not start with a status line".into(),
            ));
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::HttpTooManyHeaders { limit: max_headers });
        }
        Err(e) => return Err(malformed(e.to_string())),
    }
    let (Some(version), Some(status)) = (response.version, response.code) else {
        return Err(malformed("the status line is incomplete".into()));
    };
    Ok(ResponseHead {
        version,
        status,
        reason: response.reason.unwrap_or_default().to_owned(),
        headers: response
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        framing: BodyFraming::Empty,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_reason_headers() {
        let head = parse_head(
            b"HTTP/1.1 404 Not Found\r\nRequest-Id: abc\r\nX-Warning: [\"w\"]\r\nx-warning: b\r\n\r\n",
            8,
            7,
        )
        .unwrap();
        assert_eq!(
            (head.version, head.status, head.reason.as_str()),
            (1, 404, "Not Found")
        );
        assert_eq!(head.header("request-id"), Some("abc"));
        assert_eq!(
            head.headers_named("X-WARNING").collect::<Vec<_>>(),
            ["[\"w\"]", "b"]
        );
        assert_eq!(head.header("missing"), None);
        assert!(!head.is_success());
    }

    #[test]
    fn no_reason_obs_text_and_latin1_values() {
        let head = parse_head(b"HTTP/1.0 200\r\nX: caf\xe9\r\n\r\n", 8, 0).unwrap();
        assert_eq!(
            (head.version, head.status, head.reason.as_str()),
            (0, 200, "")
        );
        assert_eq!(head.header("x"), Some("caf\u{fffd}"));
        let head = parse_head(b"HTTP/1.1 200 \xffK\r\n\r\n", 8, 0).unwrap();
        assert_eq!(head.reason, "");
    }

    #[test]
    fn too_many_headers_and_garbage() {
        let err = parse_head(b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 2, 0).unwrap_err();
        assert_eq!(err, Error::HttpTooManyHeaders { limit: 2 });
        for garbage in [
            &b"HTTP/1.1 2000 OK\r\n\r\n"[..],
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"ICY 200 OK\r\n\r\n",
            b"<html>\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            b"\r\n\r\n",
        ] {
            let err = parse_head(garbage, 8, 5).unwrap_err();
            assert!(
                matches!(err, Error::HttpMalformed { offset: 5, .. }),
                "{garbage:?}: {err}"
            );
        }
    }
}
