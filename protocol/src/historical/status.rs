//! Historical API error responses and warnings.

use serde::Deserialize;

use crate::HttpStatusError;

/// Largest error body kept, in bytes.
pub(crate) const ERROR_BODY_CAP: usize = 4 * 1024;

/// `{"detail": "..."}` or `{"detail": {"case": ..., "message": ..., ...}}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    detail: Detail,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Detail {
    Text(String),
    Structured {
        #[serde(default)]
        case: Option<String>,
        #[serde(default)]
        message: Option<String>,
    },
}

/// Builds the error for a response of status `status` with this (capped) body.
pub(crate) fn status_error(
    status: u16,
    reason: &str,
    body: &[u8],
    request_id: Option<&str>,
) -> HttpStatusError {
    let raw = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_CAP)]).into_owned();
    let (message, case) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody {
            detail: Detail::Text(text),
        }) => (text, None),
        Ok(ErrorBody {
            detail: Detail::Structured { case, message },
        }) => (message.unwrap_or_else(|| raw.clone()), case),
        Err(_) => (raw.trim().to_owned(), None),
    };
    HttpStatusError {
        status,
        reason: reason.to_owned(),
        message,
        case,
        body: raw,
        request_id: request_id.map(str::to_owned),
    }
}

/// The warnings of an `X-Warning` header: a JSON array of strings (a plain string is
/// kept whole).
pub(crate) fn warnings(header: &str) -> Vec<String> {
    serde_json::from_str::<Vec<String>>(header).unwrap_or_else(|_| vec![header.to_owned()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_json_shapes_and_html() {
        let e = status_error(
            422,
            "Unprocessable Entity",
            br#"{"detail": "Invalid symbol"}"#,
            Some("abc"),
        );
        assert_eq!(
            (e.message.as_str(), e.case.as_deref()),
            ("Invalid symbol", None)
        );
        assert_eq!(e.request_id.as_deref(), Some("abc"));
        let e = status_error(
            400,
            "Bad Request",
            br#"{"detail": {"case": "symbology_invalid_request", "message": "Bad symbols", "status_code": 400, "docs": "https://x", "payload": {}}}"#,
            None,
        );
        assert_eq!(e.message, "Bad symbols");
        assert_eq!(e.case.as_deref(), Some("symbology_invalid_request"));
        let html = b"<html><body><h1>502 Bad Gateway</h1></body></html>";
        let e = status_error(502, "Bad Gateway", html, None);
        assert!(e.message.contains("502 Bad Gateway"));
        let big = vec![b'x'; 10_000];
        assert_eq!(status_error(500, "", &big, None).body.len(), ERROR_BODY_CAP);
        let shown =
            status_error(401, "Unauthorized", br#"{"detail":"Bad key"}"#, Some("r-1")).to_string();
        assert!(shown.contains("401") && shown.contains("Bad key") && shown.contains("r-1"));
    }

    #[test]
    fn warning_header_is_a_json_array() {
        assert_eq!(warnings(r#"["a", "b"]"#), ["a", "b"]);
        assert_eq!(warnings("plain"), ["plain"]);
    }
}
