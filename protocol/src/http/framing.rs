//! How long a response body is (RFC 9112 section 6.3), and whether the connection can
//! carry another request after it. All the rules are in [`response_framing`].

use super::request::{Method, has_token};

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyFraming {
    /// No body: a response to `HEAD`, a 204 or a 304 (whatever its headers say), or a
    /// `Content-Length: 0`.
    Empty,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`: the codec removes the chunk framing and hands
    /// out the data.
    Chunked,
    /// Everything up to the end of the connection. Complete only when the transport
    /// closed cleanly (TLS close_notify).
    UntilClose,
}

/// What a response head means for the message that follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MessageKind {
    /// A 1xx interim response other than 101: skipped, the final response follows.
    Interim,
    /// The final response.
    Final {
        /// How its body is delimited.
        body: BodyFraming,
        /// Why the connection cannot carry another request after it, if it cannot.
        close: Option<&'static str>,
    },
}

/// Applies RFC 9112 section 6.3 to a response head.
///
/// In order: a status outside 100..=599 is malformed; 101 is refused (this client
/// never asks to upgrade); other 1xx are interim; `HEAD`, 204 and 304 have no body;
/// `Transfer-Encoding` must be exactly `chunked` (the only coding this client accepts,
/// as it never sends `TE`) and then wins over any `Content-Length` (the connection is
/// then not reused, as the RFC advises for such a message); an HTTP/1.0 response with
/// `Transfer-Encoding` is malformed (RFC 9112 section 6.1); else a `Content-Length`,
/// whose values (several fields or a comma list) must all be the same decimal number;
/// else the body runs until the connection closes.
///
/// The connection is not reused after an HTTP/1.0 response, a `Connection: close`, or
/// a body delimited by the close.
///
/// Returns the reason text of an `HttpMalformed` error when the head is unusable.
pub(crate) fn response_framing(
    request: Method,
    version: u8,
    status: u16,
    headers: &[(String, String)],
) -> Result<MessageKind, String> {
    match status {
        0..=99 | 600.. => return Err(format!("status code {status} is outside 100..=599")),
        101 => return Err("101 Switching Protocols: this client never upgrades".into()),
        100..=199 => return Ok(MessageKind::Interim),
        _ => {}
    }
    let mut close = if version == 0 {
        Some("the server answered with HTTP/1.0")
    } else {
        None
    };
    if named(headers, "connection").any(|value| has_token(value, "close")) {
        close = Some("the server sent Connection: close");
    }
    let transfer_encoding = transfer_codings(headers)?;
    let content_length = content_length(headers)?;
    let body = if request == Method::Head || status == 204 || status == 304 {
        BodyFraming::Empty
    } else if let Some(codings) = transfer_encoding {
        if version == 0 {
            return Err("an HTTP/1.0 response carries Transfer-Encoding".into());
        }
        if codings != "chunked" {
            return Err(format!(
                "Transfer-Encoding {codings:?} is not supported: only chunked is accepted"
            ));
        }
        if content_length.is_some() {
            close = close.or(Some(
                "the response carried both Transfer-Encoding and Content-Length",
            ));
        }
        BodyFraming::Chunked
    } else {
        match content_length {
            Some(0) => BodyFraming::Empty,
            Some(n) => BodyFraming::Length(n),
            None => {
                close = close.or(Some(
                    "the response body was delimited by the connection close",
                ));
                BodyFraming::UntilClose
            }
        }
    };
    Ok(MessageKind::Final { body, close })
}

fn named<'h>(headers: &'h [(String, String)], name: &'h str) -> impl Iterator<Item = &'h str> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The transfer codings of all `Transfer-Encoding` fields, lowercased and joined with
/// `", "`; `None` when there is no such field.
fn transfer_codings(headers: &[(String, String)]) -> Result<Option<String>, String> {
    let mut fields = named(headers, "transfer-encoding").peekable();
    if fields.peek().is_none() {
        return Ok(None);
    }
    let mut joined = String::new();
    for coding in fields
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        if !joined.is_empty() {
            joined.push_str(", ");
        }
        joined.push_str(&coding.to_ascii_lowercase());
    }
    if joined.is_empty() {
        return Err("Transfer-Encoding is empty".into());
    }
    Ok(Some(joined))
}

/// The one value of every `Content-Length` field and comma-list element, or `None`
/// when there is none.
fn content_length(headers: &[(String, String)]) -> Result<Option<u64>, String> {
    let mut found: Option<u64> = None;
    for value in named(headers, "content-length") {
        for item in value.split(',').map(str::trim) {
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("Content-Length {value:?} is not a decimal number"));
            }
            let n: u64 = item
                .parse()
                .map_err(|_| format!("Content-Length {item} does not fit in 64 bits"))?;
            match found {
                Some(previous) if previous != n => {
                    return Err(format!("Content-Length values differ: {previous} and {n}"));
                }
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn body(method: Method, status: u16, pairs: &[(&str, &str)]) -> Result<BodyFraming, String> {
        match response_framing(method, 1, status, &h(pairs))? {
            MessageKind::Final { body, .. } => Ok(body),
            MessageKind::Interim => Err("interim".into()),
        }
    }

    #[test]
    fn no_body_for_head_204_304() {
        let cl = [("Content-Length", "10")];
        assert_eq!(body(Method::Head, 200, &cl), Ok(BodyFraming::Empty));
        assert_eq!(body(Method::Get, 204, &cl), Ok(BodyFraming::Empty));
        assert_eq!(
            body(Method::Get, 304, &[("Transfer-Encoding", "chunked")]),
            Ok(BodyFraming::Empty)
        );
        assert_eq!(
            body(Method::Get, 200, &[("Content-Length", "0")]),
            Ok(BodyFraming::Empty)
        );
    }

    #[test]
    fn interim_and_upgrade() {
        assert_eq!(
            response_framing(Method::Get, 1, 100, &[]),
            Ok(MessageKind::Interim)
        );
        assert_eq!(
            response_framing(Method::Get, 1, 103, &[]),
            Ok(MessageKind::Interim)
        );
        assert!(response_framing(Method::Get, 1, 101, &[]).is_err());
        assert!(response_framing(Method::Get, 1, 99, &[]).is_err());
        assert!(response_framing(Method::Get, 1, 600, &[]).is_err());
    }

    #[test]
    fn chunked_wins_over_content_length_and_closes() {
        let pairs = [("Content-Length", "3"), ("transfer-encoding", " Chunked ")];
        assert_eq!(
            response_framing(Method::Get, 1, 200, &h(&pairs)),
            Ok(MessageKind::Final {
                body: BodyFraming::Chunked,
                close: Some("the response carried both Transfer-Encoding and Content-Length"),
            })
        );
        assert_eq!(
            body(Method::Post, 200, &[("Transfer-Encoding", "chunked")]),
            Ok(BodyFraming::Chunked)
        );
    }

    #[test]
    fn other_codings_are_refused() {
        for te in [
            "gzip",
            "gzip, chunked",
            "chunked, gzip",
            "chunked, chunked",
            "",
            " , ",
        ] {
            assert!(
                body(Method::Get, 200, &[("Transfer-Encoding", te)]).is_err(),
                "{te:?}"
            );
        }
        let two = [
            ("Transfer-Encoding", "gzip"),
            ("Transfer-Encoding", "chunked"),
        ];
        assert!(body(Method::Get, 200, &two).is_err());
        assert!(
            response_framing(Method::Get, 0, 200, &h(&[("Transfer-Encoding", "chunked")])).is_err()
        );
    }

    #[test]
    fn content_length_rules() {
        assert_eq!(
            body(Method::Get, 200, &[("Content-Length", "42")]),
            Ok(BodyFraming::Length(42))
        );
        assert_eq!(
            body(Method::Get, 200, &[("Content-Length", "42, 42")]),
            Ok(BodyFraming::Length(42))
        );
        let same = [("Content-Length", "7"), ("content-length", "7")];
        assert_eq!(body(Method::Get, 200, &same), Ok(BodyFraming::Length(7)));
        for bad in [
            "",
            "+5",
            "-1",
            "5 5",
            "0x10",
            "1,2",
            "5,",
            "18446744073709551616",
            "\u{663}",
        ] {
            assert!(
                body(Method::Get, 200, &[("Content-Length", bad)]).is_err(),
                "{bad:?}"
            );
        }
        let differ = [("Content-Length", "7"), ("Content-Length", "8")];
        assert!(body(Method::Get, 200, &differ).is_err());
        assert_eq!(
            body(
                Method::Get,
                200,
                &[("Content-Length", "18446744073709551615")]
            ),
            Ok(BodyFraming::Length(u64::MAX))
        );
    }

    #[test]
    fn until_close_and_connection_close() {
        assert_eq!(
            response_framing(Method::Get, 1, 200, &[]),
            Ok(MessageKind::Final {
                body: BodyFraming::UntilClose,
                close: Some("the response body was delimited by the connection close"),
            })
        );
        let close = h(&[("Connection", "keep-alive, CLOSE"), ("Content-Length", "1")]);
        assert_eq!(
            response_framing(Method::Get, 1, 200, &close),
            Ok(MessageKind::Final {
                body: BodyFraming::Length(1),
                close: Some("the server sent Connection: close")
            })
        );
        let old = h(&[("Content-Length", "1")]);
        assert!(matches!(
            response_framing(Method::Get, 0, 200, &old),
            Ok(MessageKind::Final { close: Some(_), .. })
        ));
        assert!(matches!(
            response_framing(Method::Get, 1, 200, &old),
            Ok(MessageKind::Final { close: None, .. })
        ));
    }
}
