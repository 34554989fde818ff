//! Requests and their encoding: `METHOD target HTTP/1.1`, `Host`, the caller's
//! headers, the body framing headers, the blank line, the body.

use crate::Error;

/// The request methods the Historical API needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`: no body is sent.
    Get,
    /// `POST`: the body is sent with a `Content-Length`.
    Post,
    /// `HEAD`: no body is sent, and the response has none whatever its headers say.
    Head,
}

impl Method {
    /// The method as it appears on the request line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Head => "HEAD",
        }
    }
}

/// The media type [`Request::post_form`] sends.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// One HTTP/1.1 request: method, target, headers and body.
///
/// Building never fails; [`encode_request`] checks every part and refuses, writing
/// nothing, a request that would not be a single well-formed HTTP/1.1 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    method: Method,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    content_type: Option<&'static str>,
}

impl Request {
    /// A `GET` of `path_and_query` (origin form, for example `/v0/metadata.list_datasets`
    /// or `/v0/batch.list_jobs?states=done`).
    pub fn get(path_and_query: impl Into<String>) -> Self {
        Self::without_body(Method::Get, path_and_query.into())
    }

    /// A `HEAD` of `path_and_query`: the response carries a head and never a body.
    pub fn head(path_and_query: impl Into<String>) -> Self {
        Self::without_body(Method::Head, path_and_query.into())
    }

    /// A `POST` of an already url-encoded form (`dataset=GLBX.MDP3&schema=mbo`) to
    /// `path`. It is sent with `Content-Type: application/x-www-form-urlencoded` (unless
    /// a `Content-Type` header is added) and its `Content-Length`.
    pub fn post_form(path: impl Into<String>, form_body: String) -> Self {
        Self {
            method: Method::Post,
            target: path.into(),
            headers: Vec::new(),
            body: form_body.into_bytes(),
            content_type: Some(FORM_CONTENT_TYPE),
        }
    }

    fn without_body(method: Method, target: String) -> Self {
        Self {
            method,
            target,
            headers: Vec::new(),
            body: Vec::new(),
            content_type: None,
        }
    }

    /// Adds a header, sent after `Host` in the order added. `Host`, `Content-Length`
    /// and `Transfer-Encoding` are written by the encoder and refused here at encoding
    /// time; `Connection: close` makes the connection unusable after the response.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The request target (path and query).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The headers added with [`Request::header`], in order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The body (empty for `GET` and `HEAD`).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Whether a `Connection` header of this request carries the `close` token.
    pub(crate) fn asks_close(&self) -> bool {
        self.headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
            .any(|(_, value)| has_token(value, "close"))
    }
}

/// Whether the comma-separated list `value` holds `token` (ASCII case-insensitive).
pub(crate) fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// Appends the request to `out` as one HTTP/1.1 message for `host` (a host name,
/// optionally with `:port`).
///
/// Writes the request line, `Host`, the request's headers in order, then for `POST`
/// the `Content-Type` (forms) and `Content-Length`, the blank line and the body.
///
/// # Errors
///
/// [`Error::InvalidRequest`], with `out` left as it was, when the target is not an
/// origin-form path of visible ASCII, the host is empty or holds other than visible
/// ASCII, a header name is not an RFC 9110 token, a header value holds a control
/// character (CR, LF, NUL...; tab is allowed), or a header is one the encoder writes
/// itself (`Host`, `Content-Length`, `Transfer-Encoding`).
pub fn encode_request(req: &Request, host: &str, out: &mut Vec<u8>) -> Result<(), Error> {
    validate(req, host)?;
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_content_type = false;
    for (name, value) in &req.headers {
        has_content_type |= name.eq_ignore_ascii_case("content-type");
        write_header(out, name, value);
    }
    if req.method == Method::Post {
        if let (Some(content_type), false) = (req.content_type, has_content_type) {
            write_header(out, "Content-Type", content_type);
        }
        write_header(out, "Content-Length", &req.body.len().to_string());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&req.body);
    Ok(())
}

fn write_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn validate(req: &Request, host: &str) -> Result<(), Error> {
    let invalid = |what: String| Err(Error::InvalidRequest(what));
    if !req.target.starts_with('/') || !req.target.bytes().all(|b| b.is_ascii_graphic()) {
        return invalid(format!(
            "request target {:?} must be a path starting with '/' of visible ASCII (percent-encode the rest)",
            req.target
        ));
    }
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
        return invalid(format!(
            "host {host:?} must be a non-empty host name, optionally with a port"
        ));
    }
    if req.method != Method::Post && !req.body.is_empty() {
        return invalid(format!("a {} request carries no body", req.method.as_str()));
    }
    for (name, value) in &req.headers {
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return invalid(format!("header name {name:?} is not a token"));
        }
        if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return invalid(format!(
                "value of header {name:?} holds a control character (CR, LF, NUL...)"
            ));
        }
        for reserved in ["host", "content-length", "transfer-encoding"] {
            if name.eq_ignore_ascii_case(reserved) {
                return invalid(format!("header {name:?} is written by the encoder"));
            }
        }
    }
    Ok(())
}

/// RFC 9110 `tchar`: the bytes a header name (token) may hold.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(req: &Request) -> Result<String, Error> {
        let mut out = b"kept".to_vec();
        let result = encode_request(req, "hist.databento.com", &mut out);
        match result {
            Ok(()) => Ok(String::from_utf8(out[4..].to_vec()).unwrap()),
            Err(e) => {
                assert_eq!(out, b"kept", "nothing written on error");
                Err(e)
            }
        }
    }

    #[test]
    fn get_is_request_line_host_headers_blank_line() {
        let req = Request::get("/v0/metadata.list_datasets?start_date=2024-01-01")
            .header("Authorization", "Basic ZGI6")
            .header("Accept", "application/json");
        assert_eq!(
            encode(&req).unwrap(),
            "GET /v0/metadata.list_datasets?start_date=2024-01-01 HTTP/1.1\r\n\
             Host: hist.databento.com\r\n\
             Authorization: Basic ZGI6\r\n\
             Accept: application/json\r\n\r\n"
        );
        assert_eq!(req.method(), Method::Get);
        assert!(req.body().is_empty());
    }

    #[test]
    fn head_has_no_content_length() {
        let text = encode(&Request::head("/v0/x")).unwrap();
        assert_eq!(
            text,
            "HEAD /v0/x HTTP/1.1\r\nHost: hist.databento.com\r\n\r\n"
        );
    }

    #[test]
    fn post_form_carries_type_length_and_body() {
        let req = Request::post_form(
            "/v0/timeseries.get_range",
            "dataset=GLBX.MDP3&symbols=SPOT%2CAAPL".into(),
        )
        .header("Accept", "application/octet-stream");
        assert_eq!(
            encode(&req).unwrap(),
            "POST /v0/timeseries.get_range HTTP/1.1\r\n\
             Host: hist.databento.com\r\n\
             Accept: application/octet-stream\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: 37\r\n\r\n\
             dataset=GLBX.MDP3&symbols=SPOT%2CAAPL"
        );
        let own_type = Request::post_form("/p", String::new()).header("content-type", "text/plain");
        let text = encode(&own_type).unwrap();
        assert!(text.contains("content-type: text/plain\r\n"));
        assert!(!text.contains("x-www-form-urlencoded"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn refuses_injection_and_reserved_headers() {
        let cases = [
            Request::get("/a").header("X-Evil", "a\r\nInjected: 1"),
            Request::get("/a").header("X-Evil", "a\nb"),
            Request::get("/a").header("X-Evil", "a\rb"),
            Request::get("/a").header("X-Evil", "a\0b"),
            Request::get("/a").header("X-Evil\r\n", "v"),
            Request::get("/a").header("Bad Name", "v"),
            Request::get("/a").header("", "v"),
            Request::get("/a").header("Host", "other"),
            Request::get("/a").header("content-length", "5"),
            Request::get("/a").header("Transfer-Encoding", "chunked"),
            Request::get("/a b"),
            Request::get("/a\r\nX: y"),
            Request::get("no-slash"),
            Request::get(""),
            Request::get("/caf\u{e9}"),
        ];
        for req in cases {
            let err = encode(&req).unwrap_err();
            assert!(matches!(err, Error::InvalidRequest(_)), "{req:?}: {err}");
        }
        let mut out = Vec::new();
        for host in ["", "a b", "a\r\nb", "a/b"] {
            let err = encode_request(&Request::get("/"), host, &mut out).unwrap_err();
            assert!(matches!(err, Error::InvalidRequest(_)));
            assert!(out.is_empty());
        }
        assert!(encode(&Request::get("/a").header("X-Tab", "a\tb")).is_ok());
    }

    #[test]
    fn connection_close_is_recognised() {
        assert!(
            Request::get("/")
                .header("connection", "Keep-Alive, Close")
                .asks_close()
        );
        assert!(
            !Request::get("/")
                .header("Connection", "keep-alive")
                .asks_close()
        );
        assert!(
            !Request::get("/")
                .header("X-Connection", "close")
                .asks_close()
        );
    }
}
