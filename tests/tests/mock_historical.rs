//! Tests of the mock Historical server itself, with a plain rustls client over a
//! blocking `TcpStream` (not the protocol crate), so the scenario suite can trust it.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use dbn_pipe_tests::mock_historical::{
    CutKind, Fault, Framing, GET_RANGE_PATH, HostName, MockHistorical, Pacing, Reply, TEST_KEY,
    basic_auth, fixture_body, mbo_body, million_mbo_body, root_der,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

type Client = StreamOwned<ClientConnection, TcpStream>;

/// Safety net against a hung test; never decides pass/fail.
const SAFETY: Duration = Duration::from_secs(20);

const FORM: &str = "dataset=GLBX.MDP3&schema=mbo&symbols=ESH1%2CNQH1&start=1609160400000000000\
                    &stype_in=raw_symbol&stype_out=instrument_id&encoding=dbn&compression=zstd&limit=2";

fn connect(server: &MockHistorical) -> Client {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(root_der()))
        .expect("the mock's root certificate parses");
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let name = ServerName::try_from(server.host().to_owned()).unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(server.addr()).unwrap();
    tcp.set_read_timeout(Some(SAFETY)).unwrap();
    StreamOwned::new(conn, tcp)
}

fn send(client: &mut Client, method: &str, target: &str, key: Option<&str>, form: Option<&str>) {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if let Some(key) = key {
        req.push_str(&format!("Authorization: {}\r\n", basic_auth(key)));
    }
    if let Some(form) = form {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        req.push_str(&format!("Content-Length: {}\r\n\r\n{form}", form.len()));
    } else {
        req.push_str("\r\n");
    }
    client.write_all(req.as_bytes()).unwrap();
    client.flush().unwrap();
}

/// A parsed response; `end` is how reading ended after the body when it was read to
/// the end of the stream (close-delimited and cut bodies).
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    end: Option<io::ErrorKind>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// Reads until `buf` holds `n` bytes; `Err(kind)` when the stream ends first
/// (`UnexpectedEof` for a TLS-level cut, `Other`... as rustls reports it; a clean
/// `close_notify` is `Ok(0)` and reported as `UnexpectedEof` here with `clean = true`).
fn read_more(client: &mut Client, buf: &mut Vec<u8>) -> Result<(), Ending> {
    let mut chunk = [0u8; 32 * 1024];
    match client.read(&mut chunk) {
        Ok(0) => Err(Ending::Clean),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(err) => Err(Ending::Error(err.kind())),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// `close_notify` then EOF.
    Clean,
    /// An error (a cut without `close_notify` is `UnexpectedEof`).
    Error(io::ErrorKind),
}

/// Reads one response; bodies without a length (or cut short) are read to the end of
/// the stream and `end` says how it ended (`None` for a clean `close_notify`).
fn read_response(client: &mut Client, buf: &mut Vec<u8>) -> Response {
    let (head_len, status, headers) = loop {
        let mut hs = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut hs);
        if let httparse::Status::Complete(len) = resp.parse(buf).unwrap() {
            let headers = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8(h.value.to_vec()).unwrap(),
                    )
                })
                .collect::<Vec<_>>();
            break (len, resp.code.unwrap(), headers);
        }
        read_more(client, buf).expect("the stream ended inside the response head");
    };
    buf.drain(..head_len);
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
        end: None,
    };
    if let Some(len) = response.header("content-length") {
        let len: usize = len.parse().unwrap();
        while buf.len() < len {
            if let Err(ending) = read_more(client, buf) {
                response.end = Some(ending_kind(ending));
                response.body = std::mem::take(buf);
                return response;
            }
        }
        response.body = buf.drain(..len).collect();
    } else if response.header("transfer-encoding") == Some("chunked") {
        loop {
            let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
                if let Err(ending) = read_more(client, buf) {
                    response.end = Some(ending_kind(ending));
                    return response;
                }
                continue;
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16).unwrap();
            while buf.len() < line_end + 2 + size + 2 {
                if let Err(ending) = read_more(client, buf) {
                    // Cut inside a chunk: keep what arrived of it.
                    let have = buf.len().saturating_sub(line_end + 2).min(size);
                    response
                        .body
                        .extend_from_slice(&buf[line_end + 2..line_end + 2 + have]);
                    response.end = Some(ending_kind(ending));
                    return response;
                }
            }
            assert_eq!(&buf[line_end + 2 + size..line_end + 4 + size], b"\r\n");
            response
                .body
                .extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            buf.drain(..line_end + 4 + size);
            if size == 0 {
                break;
            }
        }
    } else {
        let ending = loop {
            if let Err(ending) = read_more(client, buf) {
                break ending;
            }
        };
        response.body = std::mem::take(buf);
        if ending != Ending::Clean {
            response.end = Some(ending_kind(ending));
        }
    }
    response
}

fn ending_kind(ending: Ending) -> io::ErrorKind {
    match ending {
        // A clean close where more was announced: report it as a plain EOF.
        Ending::Clean => io::ErrorKind::BrokenPipe,
        Ending::Error(kind) => kind,
    }
}

fn get_range_body() -> Vec<u8> {
    // Several zstd frames, so framing boundaries fall inside and across frames.
    let body = mbo_body(2_000, 16 * 1024);
    assert!(body.len() > 10_000, "the body is large enough to matter");
    body
}

fn serve_once(reply: Reply) -> (MockHistorical, Response) {
    let server = MockHistorical::builder().get_range(reply).start().unwrap();
    let mut client = connect(&server);
    send(
        &mut client,
        "POST",
        GET_RANGE_PATH,
        Some(TEST_KEY),
        Some(FORM),
    );
    let response = read_response(&mut client, &mut Vec::new());
    (server, response)
}

#[test]
fn content_length_serves_the_exact_body_and_records_the_form() {
    let body = get_range_body();
    let (server, response) = serve_once(Reply::dbn_zst(body.clone()));
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-length"),
        Some(&*body.len().to_string())
    );
    assert_eq!(
        response.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(response.end, None);
    assert!(
        response.body == body,
        "the body differs from the scripted one"
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", GET_RANGE_PATH)
    );
    assert_eq!(req.connection, 0);
    assert_eq!(req.field("dataset"), Some("GLBX.MDP3"));
    assert_eq!(req.field("symbols"), Some("ESH1,NQH1"));
    assert_eq!(req.field("start"), Some("1609160400000000000"));
    assert_eq!(req.field("limit"), Some("2"));
    assert_eq!(req.field("end"), None);
    assert_eq!(req.body, FORM.as_bytes());
    assert_eq!(req.header("Authorization"), Some(&*basic_auth(TEST_KEY)));
    assert_eq!(
        req.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
}

#[test]
fn chunked_serves_the_exact_body() {
    let body = get_range_body();
    for chunk_size in [1, 1000, 1 << 20] {
        let (_server, response) =
            serve_once(Reply::dbn_zst(body.clone()).framing(Framing::Chunked { chunk_size }));
        assert_eq!(response.status, 200);
        assert_eq!(response.header("transfer-encoding"), Some("chunked"));
        assert_eq!(response.header("content-length"), None);
        assert_eq!(response.end, None, "chunk size {chunk_size}");
        assert!(
            response.body == body,
            "chunk size {chunk_size}: body differs"
        );
    }
}

#[test]
fn close_delimited_serves_the_exact_body_then_closes() {
    let body = get_range_body();
    for (close_notify, expected_end) in [(true, None), (false, Some(io::ErrorKind::UnexpectedEof))]
    {
        let (_server, response) = serve_once(
            Reply::dbn_zst(body.clone()).framing(Framing::CloseDelimited { close_notify }),
        );
        assert_eq!(response.status, 200);
        assert_eq!(response.header("connection"), Some("close"));
        assert_eq!(response.header("content-length"), None);
        assert_eq!(response.header("transfer-encoding"), None);
        assert!(
            response.body == body,
            "close_notify {close_notify}: body differs"
        );
        assert_eq!(response.end, expected_end, "close_notify {close_notify}");
    }
}

#[test]
fn paced_writes_serve_the_exact_body() {
    let body = get_range_body();
    let pacing = Pacing {
        write_size: 777,
        delay: Duration::ZERO,
    };
    for framing in [Framing::ContentLength, Framing::Chunked { chunk_size: 500 }] {
        let (_server, response) =
            serve_once(Reply::dbn_zst(body.clone()).framing(framing).pacing(pacing));
        assert!(response.body == body, "{framing:?}: body differs");
    }
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let body = get_range_body();
    let server = MockHistorical::builder()
        .get_range(Reply::dbn_zst(body.clone()).framing(Framing::Chunked { chunk_size: 4096 }))
        .json(
            "metadata.list_datasets",
            Reply::json(r#"["GLBX.MDP3","XNAS.ITCH"]"#),
        )
        .start()
        .unwrap();
    let mut client = connect(&server);
    let mut buf = Vec::new();
    send(
        &mut client,
        "POST",
        GET_RANGE_PATH,
        Some(TEST_KEY),
        Some(FORM),
    );
    let first = read_response(&mut client, &mut buf);
    assert!(first.body == body);
    send(
        &mut client,
        "GET",
        "/v0/metadata.list_datasets?start_date=2024-01-01",
        Some(TEST_KEY),
        None,
    );
    let second = read_response(&mut client, &mut buf);
    assert_eq!(second.status, 200);
    assert_eq!(second.json(), serde_json::json!(["GLBX.MDP3", "XNAS.ITCH"]));
    send(
        &mut client,
        "POST",
        GET_RANGE_PATH,
        Some(TEST_KEY),
        Some(FORM),
    );
    let third = read_response(&mut client, &mut buf);
    assert!(third.body == body);

    assert_eq!(server.connections(), 1);
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.connection == 0));
    assert_eq!(requests[1].method, "GET");
    assert_eq!(requests[1].field("start_date"), Some("2024-01-01"));

    // A second connection gets the next index.
    let mut other = connect(&server);
    send(
        &mut other,
        "GET",
        "/v0/metadata.list_datasets",
        Some(TEST_KEY),
        None,
    );
    assert_eq!(read_response(&mut other, &mut Vec::new()).status, 200);
    assert_eq!(server.connections(), 2);
    assert_eq!(server.requests()[3].connection, 1);
}

#[test]
fn wrong_or_missing_key_gets_401_and_consumes_no_queued_reply() {
    let server = MockHistorical::builder()
        .enqueue(Reply::json("42"))
        .start()
        .unwrap();
    let mut client = connect(&server);
    let mut buf = Vec::new();
    send(
        &mut client,
        "POST",
        "/v0/metadata.get_record_count",
        Some("db-wrongwrongwrongwrongwrongwrong"),
        Some(FORM),
    );
    let wrong = read_response(&mut client, &mut buf);
    assert_eq!(wrong.status, 401);
    assert!(wrong.json()["detail"].is_string());
    send(
        &mut client,
        "POST",
        "/v0/metadata.get_record_count",
        None,
        Some(FORM),
    );
    let missing = read_response(&mut client, &mut buf);
    assert_eq!(missing.status, 401);
    assert!(missing.json()["detail"].is_string());
    // The queued reply is still there for the first authenticated request.
    send(
        &mut client,
        "POST",
        "/v0/metadata.get_record_count",
        Some(TEST_KEY),
        Some(FORM),
    );
    let ok = read_response(&mut client, &mut buf);
    assert_eq!((ok.status, ok.json()), (200, serde_json::json!(42)));
    // Then the routes apply: none is scripted here.
    send(
        &mut client,
        "POST",
        "/v0/metadata.get_record_count",
        Some(TEST_KEY),
        Some(FORM),
    );
    assert_eq!(read_response(&mut client, &mut buf).status, 404);
}

#[test]
fn error_bodies_carry_detail_and_request_id() {
    let server = MockHistorical::builder()
        .enqueue(Reply::detail(422, "symbols: unknown symbol ZZZZ").request_id("req-1"))
        .enqueue(Reply::structured(
            400,
            "dataset_unavailable_range",
            "end is after the available range",
            serde_json::json!({"available_end": "2024-01-02"}),
        ))
        .enqueue(Reply::bad_gateway_html().request_id("req-3"))
        .enqueue(Reply::detail(500, "boom").framing(Framing::Chunked { chunk_size: 3 }))
        .start()
        .unwrap();
    let mut client = connect(&server);
    let mut buf = Vec::new();
    let mut next = |client: &mut Client| {
        send(client, "POST", GET_RANGE_PATH, Some(TEST_KEY), Some(FORM));
        read_response(client, &mut buf)
    };

    let plain = next(&mut client);
    assert_eq!(plain.status, 422);
    assert_eq!(plain.header("request-id"), Some("req-1"));
    assert_eq!(
        plain.json(),
        serde_json::json!({"detail": "symbols: unknown symbol ZZZZ"})
    );

    let structured = next(&mut client);
    assert_eq!(structured.status, 400);
    assert_eq!(structured.header("request-id"), None);
    let detail = &structured.json()["detail"];
    assert_eq!(detail["case"], "dataset_unavailable_range");
    assert_eq!(detail["message"], "end is after the available range");
    assert_eq!(detail["status_code"], 400);
    assert!(detail["docs"].is_string());
    assert_eq!(detail["payload"]["available_end"], "2024-01-02");

    let html = next(&mut client);
    assert_eq!(html.status, 502);
    assert_eq!(html.header("content-type"), Some("text/html"));
    assert_eq!(html.header("request-id"), Some("req-3"));
    assert!(
        String::from_utf8(html.body)
            .unwrap()
            .contains("502 Bad Gateway")
    );

    let chunked = next(&mut client);
    assert_eq!(chunked.status, 500);
    assert_eq!(chunked.json(), serde_json::json!({"detail": "boom"}));
    assert_eq!(server.connections(), 1);
}

#[test]
fn x_warning_is_a_json_array_of_strings() {
    let (_server, response) = serve_once(
        Reply::dbn_zst(get_range_body()).warnings(["reduced quality", "a \"quoted\" one"]),
    );
    let warning: Vec<String> = serde_json::from_str(response.header("x-warning").unwrap()).unwrap();
    assert_eq!(warning, ["reduced quality", "a \"quoted\" one"]);
}

#[test]
fn json_endpoints_answer_get_and_post_and_unknown_paths_404() {
    let server = MockHistorical::builder()
        .json(
            "metadata.get_dataset_range",
            Reply::json(r#"{"start":"2018-05-01T00:00:00Z","end":"2024-01-02T00:00:00Z"}"#),
        )
        .json("/v0/metadata.get_cost", Reply::json("1.25"))
        .get_range(Reply::dbn_zst(get_range_body()))
        .start()
        .unwrap();
    let mut client = connect(&server);
    let mut buf = Vec::new();
    send(
        &mut client,
        "GET",
        "/v0/metadata.get_dataset_range?dataset=GLBX.MDP3",
        Some(TEST_KEY),
        None,
    );
    let range = read_response(&mut client, &mut buf);
    assert_eq!(range.json()["end"], "2024-01-02T00:00:00Z");
    send(
        &mut client,
        "POST",
        "/v0/metadata.get_cost",
        Some(TEST_KEY),
        Some("dataset=GLBX.MDP3&mode=historical-streaming"),
    );
    let cost = read_response(&mut client, &mut buf);
    assert_eq!(cost.json(), serde_json::json!(1.25));
    send(
        &mut client,
        "GET",
        "/v0/metadata.list_schemas",
        Some(TEST_KEY),
        None,
    );
    assert_eq!(read_response(&mut client, &mut buf).status, 404);
    // get_range is POST only.
    send(&mut client, "GET", GET_RANGE_PATH, Some(TEST_KEY), None);
    let wrong_method = read_response(&mut client, &mut buf);
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("POST"));

    let requests = server.requests();
    assert_eq!(requests[0].field("dataset"), Some("GLBX.MDP3"));
    assert_eq!(requests[0].path, "/v0/metadata.get_dataset_range");
    assert_eq!(
        requests[0].target,
        "/v0/metadata.get_dataset_range?dataset=GLBX.MDP3"
    );
    assert_eq!(requests[1].field("mode"), Some("historical-streaming"));
}

#[test]
fn cut_after_n_body_bytes_delivers_exactly_the_prefix() {
    let body = get_range_body();
    let n = 5_001;
    let cases = [
        (Framing::ContentLength, CutKind::Abrupt),
        (Framing::ContentLength, CutKind::CloseNotify),
        (Framing::ContentLength, CutKind::MidTlsRecord),
        // 5_001 is inside the third 2_000-byte chunk: a mid-chunk cut.
        (Framing::Chunked { chunk_size: 2_000 }, CutKind::Abrupt),
        (
            Framing::Chunked { chunk_size: 2_000 },
            CutKind::MidTlsRecord,
        ),
        (
            Framing::CloseDelimited { close_notify: true },
            CutKind::Abrupt,
        ),
    ];
    for (framing, how) in cases {
        let (_server, response) = serve_once(Reply::dbn_zst(body.clone()).framing(framing).fault(
            Fault::Cut {
                after_body_bytes: n,
                how,
            },
        ));
        assert_eq!(response.status, 200);
        assert!(
            response.body == body[..n],
            "{framing:?} {how:?}: received {} bytes",
            response.body.len()
        );
        let clean_close = how == CutKind::CloseNotify;
        match (framing, clean_close) {
            // A close-delimited body cut abruptly looks like a body without close_notify.
            (Framing::CloseDelimited { .. }, _) => {
                assert_eq!(response.end, Some(io::ErrorKind::UnexpectedEof));
            }
            (_, true) => assert_eq!(response.end, Some(io::ErrorKind::BrokenPipe)),
            (_, false) => assert!(
                response.end.is_some_and(|k| k != io::ErrorKind::BrokenPipe),
                "{framing:?} {how:?}: ended {:?}",
                response.end
            ),
        }
    }
}

#[test]
fn cut_before_head_closes_without_a_response() {
    let server = MockHistorical::builder()
        .get_range(Reply::dbn_zst(get_range_body()).fault(Fault::CutBeforeHead(CutKind::Abrupt)))
        .start()
        .unwrap();
    let mut client = connect(&server);
    send(
        &mut client,
        "POST",
        GET_RANGE_PATH,
        Some(TEST_KEY),
        Some(FORM),
    );
    let mut buf = Vec::new();
    assert_eq!(
        read_more(&mut client, &mut buf),
        Err(Ending::Error(io::ErrorKind::UnexpectedEof))
    );
    assert!(buf.is_empty());
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn stall_after_head_holds_the_connection_until_the_server_is_dropped() {
    let server = MockHistorical::builder()
        .get_range(Reply::dbn_zst(get_range_body()).fault(Fault::Stall {
            after_body_bytes: 0,
        }))
        .start()
        .unwrap();
    let mut client = connect(&server);
    send(
        &mut client,
        "POST",
        GET_RANGE_PATH,
        Some(TEST_KEY),
        Some(FORM),
    );
    let mut buf = Vec::new();
    // The head arrives in full...
    let head = loop {
        let mut hs = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut hs);
        if let httparse::Status::Complete(len) = resp.parse(&buf).unwrap() {
            break len;
        }
        read_more(&mut client, &mut buf).expect("the head arrives");
    };
    assert_eq!(buf.len(), head, "no body byte after the head");
    // ... then nothing: the read times out instead of ending.
    client
        .sock
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let stalled = read_more(&mut client, &mut buf);
    assert!(
        matches!(
            stalled,
            Err(Ending::Error(
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ))
        ),
        "{stalled:?}"
    );
    // Dropping the server ends the stalled connection.
    drop(server);
    client.sock.set_read_timeout(Some(SAFETY)).unwrap();
    let ended = read_more(&mut client, &mut buf);
    assert!(
        matches!(
            ended,
            Err(Ending::Error(
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
            ))
        ),
        "{ended:?}"
    );
    assert_eq!(buf.len(), head);
}

#[test]
fn localhost_name_is_trusted_too() {
    let server = MockHistorical::builder()
        .host_name(HostName::Localhost)
        .json("metadata.list_datasets", Reply::json("[]"))
        .start()
        .unwrap();
    assert_eq!(server.host(), "localhost");
    assert_eq!(
        server.base_url(),
        format!("https://localhost:{}", server.addr().port())
    );
    let mut client = connect(&server);
    send(
        &mut client,
        "GET",
        "/v0/metadata.list_datasets",
        Some(TEST_KEY),
        None,
    );
    assert_eq!(
        read_response(&mut client, &mut Vec::new()).json(),
        serde_json::json!([])
    );
}

#[test]
fn a_million_records_are_served_from_memory() {
    let body = million_mbo_body();
    let (_server, response) = serve_once(Reply::dbn_zst(body.clone()));
    assert!(
        response.body[..] == body[..],
        "the million-record body differs"
    );
    let plain = zstd::stream::decode_all(&response.body[..]).unwrap();
    // Metadata, then 56-byte MBO records.
    let records_len = 1_000_000 * 56;
    assert!(plain.len() > records_len && plain.len() < records_len + 1024);
}

#[test]
fn a_fixture_body_is_served_unchanged() {
    let Some(fixture) = fixture_body("test_data.trades.v3.dbn.zst") else {
        return;
    };
    let (_server, response) = serve_once(Reply::dbn_zst(fixture.clone()));
    assert!(response.body == fixture);
}
