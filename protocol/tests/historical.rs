//! The Historical API session in memory against a scripted TLS server (rustls with an
//! rcgen certificate, handwritten HTTP responses): the exact request bytes, records of
//! `get_range` bodies in every framing equal to the `dbn` oracle's, error responses
//! with both JSON shapes and the request id, warnings, JSON endpoints, keep-alive, and
//! truncation.

use std::io::{Read, Write};
use std::sync::Arc;

use dbn::decode::dbn::fsm::{DbnFsm, ProcessResult};
use dbn::encode::{EncodeRecord, dbn::Encoder};
use dbn::{MboMsg, MetadataBuilder, SType, Schema};
use dbn_pipe_protocol::historical::{
    GetRangeParams, HistoricalConfig, HistoricalEvent, HistoricalSession, JsonRequest, JsonResponse,
};
use dbn_pipe_protocol::live::ApiKey;
use dbn_pipe_protocol::tls::TlsConfig;
use dbn_pipe_protocol::{Error, ErrorKind, TruncatedPart};
use rustls::ServerConnection;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

const KEY: &str = "db-0123456789abcdefghijklmnABCDE";
const HOST: &str = "hist.test";

/// A TLS server and a client session connected in memory.
struct Pair {
    client: HistoricalSession,
    server: ServerConnection,
    /// Ciphertext the server produced that the client has not taken yet.
    to_client: Vec<u8>,
    taken: usize,
    /// Take records one at a time with `record_ready` + `poll_record` whenever one
    /// is ready (as the drivers' `next_record` does), `poll_event` otherwise.
    one_by_one: bool,
}

fn pair() -> Pair {
    let key = rcgen::generate_simple_self_signed(vec![HOST.to_owned()]).unwrap();
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![key.cert.der().clone()], private)
        .unwrap();
    let tls = TlsConfig::builder()
        .without_webpki_roots()
        .add_pem(key.cert.pem().as_bytes())
        .unwrap()
        .build()
        .unwrap();
    let config = HistoricalConfig::new(ApiKey::new(KEY).unwrap()).host(HOST);
    let mut server = ServerConnection::new(Arc::new(server_config)).unwrap();
    server.set_buffer_limit(None);
    Pair {
        client: HistoricalSession::new(config, &tls).unwrap(),
        server,
        to_client: Vec::new(),
        taken: 0,
        one_by_one: false,
    }
}

/// What the client saw, owned.
#[derive(Debug, Default)]
struct Seen {
    warnings: Vec<String>,
    metadata: Option<dbn::Metadata>,
    records: Vec<Vec<u8>>,
    json: Vec<JsonResponse>,
    /// Raw body bytes of `get_range_copy`.
    body: Vec<u8>,
    done: usize,
    error: Option<Error>,
}

impl Pair {
    /// Moves client bytes to the server; returns the plaintext the server received.
    fn client_to_server(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = self.client.poll_transmit(&mut out);
        let mut rest = &out[..];
        while !rest.is_empty() {
            self.server.read_tls(&mut rest).unwrap();
            self.server.process_new_packets().unwrap();
        }
        let mut plain = Vec::new();
        let _ = self.server.reader().read_to_end(&mut plain);
        self.flush_server();
        plain
    }

    fn flush_server(&mut self) {
        while self.server.wants_write() {
            self.server.write_tls(&mut self.to_client).unwrap();
        }
    }

    fn server_send(&mut self, plaintext: &[u8]) {
        self.server.writer().write_all(plaintext).unwrap();
        self.flush_server();
    }

    /// Completes the handshake and returns the server's view of the first request.
    fn handshake(&mut self) -> Vec<u8> {
        let mut request = Vec::new();
        for _ in 0..10 {
            request.extend(self.client_to_server());
            self.deliver(usize::MAX, &mut Seen::default());
        }
        request
    }

    /// Feeds the client up to `chunk` ciphertext bytes at a time until it takes no
    /// more, draining events into `seen` after every step.
    fn deliver(&mut self, chunk: usize, seen: &mut Seen) {
        loop {
            let end = self.taken.saturating_add(chunk).min(self.to_client.len());
            let taken = self.client.handle_input(&self.to_client[self.taken..end]);
            self.taken += taken;
            let events = if self.one_by_one {
                drain_one_by_one(&mut self.client, seen)
            } else {
                drain(&mut self.client, seen)
            };
            if taken == 0 && events == 0 {
                return;
            }
        }
    }
}

/// Drains events; returns how many there were.
fn drain(client: &mut HistoricalSession, seen: &mut Seen) -> usize {
    let mut count = 0;
    loop {
        match drain_one(client, seen) {
            0 => return count,
            n => count += n,
        }
        if seen.error.is_some() {
            return count;
        }
    }
}

/// As [`drain`], taking each record that is ready alone with `poll_record`.
fn drain_one_by_one(client: &mut HistoricalSession, seen: &mut Seen) -> usize {
    let mut count = 0;
    loop {
        if client.record_ready() {
            let record = client
                .poll_record()
                .expect("record_ready promised a record");
            seen.records.push(record.as_ref().to_vec());
            count += 1;
            continue;
        }
        // One event at a time, so that a record ready after it is taken alone.
        match drain_one(client, seen) {
            0 => return count,
            n => count += n,
        }
        if seen.error.is_some() {
            return count;
        }
    }
}

/// Polls one event into `seen`; returns 1, or 0 when there was none.
fn drain_one(client: &mut HistoricalSession, seen: &mut Seen) -> usize {
    match client.poll_event() {
        Ok(Some(event)) => {
            match event {
                HistoricalEvent::Warning(w) => seen.warnings.push(w),
                HistoricalEvent::Metadata(m) => seen.metadata = Some(*m),
                HistoricalEvent::Records(batch) => {
                    seen.records.extend(batch.map(|r| r.as_ref().to_vec()));
                }
                HistoricalEvent::Json(j) => seen.json.push(j),
                HistoricalEvent::Body(bytes) => seen.body.extend_from_slice(bytes),
                HistoricalEvent::Done => seen.done += 1,
            }
            1
        }
        Ok(None) => 0,
        Err(err) => {
            let new = usize::from(seen.error.is_none());
            seen.error = Some(err);
            new
        }
    }
}

/// The oracle's records for a `.dbn.zst` body.
fn oracle(body_zst: &[u8]) -> (dbn::Metadata, Vec<Vec<u8>>) {
    let plain = zstd::stream::decode_all(body_zst).unwrap();
    let mut fsm = DbnFsm::builder().build().unwrap();
    fsm.write_all(&plain);
    let mut metadata = None;
    let mut records = Vec::new();
    loop {
        match fsm.process() {
            ProcessResult::Metadata(m) => metadata = Some(m),
            ProcessResult::Record(()) => records.push(fsm.last_record().unwrap().as_ref().to_vec()),
            ProcessResult::ReadMore(_) => break,
            ProcessResult::Err(e) => panic!("oracle: {e}"),
        }
    }
    (metadata.unwrap(), records)
}

fn generated_body(records: u64, frames: usize) -> Vec<u8> {
    let metadata = MetadataBuilder::new()
        .dataset("GLBX.MDP3".to_owned())
        .schema(Some(Schema::Mbo))
        .start(1)
        .stype_in(Some(SType::RawSymbol))
        .stype_out(SType::InstrumentId)
        .build();
    let mut plain = Vec::new();
    {
        let mut encoder = Encoder::new(&mut plain, &metadata).unwrap();
        for i in 0..records {
            let mut rec = MboMsg::default();
            rec.hd.instrument_id = (i % 7) as u32;
            rec.hd.ts_event = i;
            rec.ts_recv = i + 1;
            rec.order_id = i * 3;
            encoder.encode_record(&rec).unwrap();
        }
    }
    let frame_len = plain.len().div_ceil(frames);
    plain
        .chunks(frame_len)
        .flat_map(|c| zstd::bulk::compress(c, 1).unwrap())
        .collect()
}

fn fixture(name: &str) -> Option<Vec<u8>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/dbn/");
    match std::fs::read(format!("{path}{name}")) {
        Ok(bytes) => Some(bytes),
        Err(_) if std::env::var_os("CI").is_some() => panic!("fixture {path}{name} missing in CI"),
        Err(_) => {
            let _ = writeln!(
                std::io::stderr(),
                "NOTE: fixture folder {path} missing; test skipped"
            );
            None
        }
    }
}

fn range_params() -> GetRangeParams {
    GetRangeParams::new(
        "GLBX.MDP3",
        Schema::Mbo,
        ["ESH1", "ESM1"],
        1_609_160_400_000_000_000u64,
    )
    .end(1_609_200_000_000_000_000u64)
    .limit(2)
}

#[derive(Clone, Copy, Debug)]
enum Framing {
    Length,
    Chunked,
    Close,
}

fn response(framing: Framing, body: &[u8], extra_headers: &str) -> Vec<u8> {
    let mut out = Vec::new();
    match framing {
        Framing::Length => {
            out.extend(format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n{extra_headers}Content-Length: {}\r\n\r\n",
                body.len()
            ).bytes());
            out.extend_from_slice(body);
        }
        Framing::Chunked => {
            out.extend(
                format!("HTTP/1.1 200 OK\r\n{extra_headers}Transfer-Encoding: chunked\r\n\r\n")
                    .bytes(),
            );
            for (i, chunk) in body.chunks(9_973).enumerate() {
                out.extend(format!("{:x};ext={i}\r\n", chunk.len()).bytes());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n");
        }
        Framing::Close => {
            out.extend(
                format!("HTTP/1.1 200 OK\r\n{extra_headers}Connection: close\r\n\r\n").bytes(),
            );
            out.extend_from_slice(body);
        }
    }
    out
}

#[test]
fn get_range_request_bytes_are_exact() {
    let mut pair = pair();
    pair.client.get_range(&range_params()).unwrap();
    let request = String::from_utf8(pair.handshake()).unwrap();
    let (head, form) = request.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("POST /v0/timeseries.get_range HTTP/1.1"));
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap();
            (k.to_ascii_lowercase(), v.to_owned())
        })
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("host"), Some(HOST));
    // base64("db-0123456789abcdefghijklmnABCDE:")
    assert_eq!(
        get("authorization"),
        Some("Basic ZGItMDEyMzQ1Njc4OWFiY2RlZmdoaWprbG1uQUJDREU6")
    );
    assert_eq!(get("accept"), Some("application/octet-stream"));
    assert_eq!(
        get("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(get("content-length"), Some(form.len().to_string().as_str()));
    assert!(get("user-agent").unwrap().starts_with("dbn-pipe/"));
    assert_eq!(
        form,
        "dataset=GLBX.MDP3&schema=mbo&symbols=ESH1%2CESM1&start=1609160400000000000\
         &end=1609200000000000000&stype_in=raw_symbol&stype_out=instrument_id&encoding=dbn\
         &compression=zstd&limit=2"
    );
}

#[test]
fn every_framing_yields_the_oracle_records() {
    let bodies: Vec<(&str, Vec<u8>)> = [
        fixture("test_data.mbo.v3.dbn.zst").map(|b| ("fixture mbo v3", b)),
        fixture("test_data.definition.v1.dbn.zst").map(|b| ("fixture definition v1", b)),
        Some(("generated, 5 frames", generated_body(20_000, 5))),
    ]
    .into_iter()
    .flatten()
    .collect();
    for (name, body) in &bodies {
        let (metadata, records) = oracle(body);
        for framing in [Framing::Length, Framing::Chunked, Framing::Close] {
            for (chunk, one_by_one) in [
                (usize::MAX, false),
                (1_000, false),
                (17, false),
                (usize::MAX, true),
                (1_000, true),
                (17, true),
            ] {
                let mut pair = pair();
                pair.one_by_one = one_by_one;
                pair.client.get_range(&range_params()).unwrap();
                pair.handshake();
                pair.server_send(&response(framing, body, "X-Warning: [\"limited\"]\r\n"));
                if let Framing::Close = framing {
                    pair.server.send_close_notify();
                    pair.flush_server();
                }
                let mut seen = Seen::default();
                pair.deliver(chunk, &mut seen);
                if let Framing::Close = framing {
                    pair.client.handle_eof();
                    drain(&mut pair.client, &mut seen);
                }
                let ctx = format!("{name} {framing:?} chunk {chunk} one by one {one_by_one}");
                assert!(seen.error.is_none(), "{ctx}: {:?}", seen.error);
                assert_eq!(seen.metadata.as_ref(), Some(&metadata), "{ctx}");
                assert_eq!(seen.records.len(), records.len(), "{ctx}");
                assert!(seen.records == records, "{ctx}: records differ");
                assert_eq!(seen.done, 1, "{ctx}");
                assert_eq!(seen.warnings, ["limited"], "{ctx}");
            }
        }
    }
}

#[test]
fn get_range_copy_hands_out_the_body_as_served_and_its_records() {
    let body = generated_body(300_000, 3);
    let (metadata, records) = oracle(&body);
    for framing in [Framing::Length, Framing::Chunked] {
        for chunk in [usize::MAX, 4_093] {
            let mut pair = pair();
            pair.client.get_range_copy(&range_params()).unwrap();
            pair.handshake();
            pair.server_send(&response(framing, &body, ""));
            let mut seen = Seen::default();
            pair.deliver(chunk, &mut seen);
            let ctx = format!("{framing:?} chunk {chunk}");
            assert!(seen.error.is_none(), "{ctx}: {:?}", seen.error);
            assert!(
                seen.body == body,
                "{ctx}: copied body differs ({} of {} bytes)",
                seen.body.len(),
                body.len()
            );
            assert_eq!(seen.metadata.as_ref(), Some(&metadata), "{ctx}");
            assert!(seen.records == records, "{ctx}: records differ");
            assert_eq!(seen.done, 1, "{ctx}");
            // A plain get_range on the same connection hands out no body copy.
            pair.client.get_range(&range_params()).unwrap();
            let _ = pair.client_to_server();
            pair.server_send(&response(framing, &body, ""));
            let mut again = Seen::default();
            pair.deliver(chunk, &mut again);
            assert!(
                again.body.is_empty() && again.records.len() == records.len(),
                "{ctx}"
            );
        }
    }
}

#[test]
fn close_without_close_notify_is_truncation_after_the_records() {
    let body = generated_body(1_000, 2);
    let (_, records) = oracle(&body);
    let mut pair = pair();
    pair.client.get_range(&range_params()).unwrap();
    pair.handshake();
    pair.server_send(&response(Framing::Close, &body, ""));
    let mut seen = Seen::default();
    pair.deliver(4096, &mut seen);
    pair.client.handle_eof();
    drain(&mut pair.client, &mut seen);
    assert!(
        seen.records == records,
        "every record before the cut arrives"
    );
    let err = seen.error.expect("an unclean close is reported");
    assert!(
        matches!(
            err,
            Error::Truncated {
                part: TruncatedPart::HttpBody,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(seen.done, 0);
}

#[test]
fn a_connection_cut_inside_a_tls_record_names_the_tls_record() {
    // Many small zstd frames, so that the half before the cut holds whole frames.
    let body = generated_body(20_000, 40);
    let (_, records) = oracle(&body);
    for framing in [Framing::Length, Framing::Chunked] {
        let mut pair = pair();
        pair.client.get_range(&range_params()).unwrap();
        pair.handshake();
        let start = pair.to_client.len();
        pair.server_send(&response(framing, &body, ""));
        // Cut 100 bytes into the second half of the response's ciphertext: inside a
        // TLS record (rustls writes records of at most 16 KiB plus overhead).
        let cut = start + (pair.to_client.len() - start) / 2 + 100;
        pair.to_client.truncate(cut);
        let mut seen = Seen::default();
        pair.deliver(4096, &mut seen);
        pair.client.handle_eof();
        drain(&mut pair.client, &mut seen);
        let err = seen.error.expect("the cut is reported");
        let Error::Truncated {
            part: TruncatedPart::Tls,
            offset,
            have,
            need: Some(need),
        } = err
        else {
            panic!("{framing:?}: {err}");
        };
        assert!(offset < cut as u64 && have > 0 && have < need, "{err}");
        assert_eq!(offset + have as u64, cut as u64, "{err}");
        assert!(err.to_string().contains("TLS record"), "{err}");
        assert!(
            !seen.records.is_empty() && seen.records[..] == records[..seen.records.len()],
            "{framing:?}: records before the cut arrive, in order"
        );
        assert_eq!(seen.done, 0);
    }
}

#[test]
fn content_length_body_cut_short_is_truncated() {
    let body = generated_body(1_000, 4);
    let mut pair = pair();
    pair.client.get_range(&range_params()).unwrap();
    pair.handshake();
    let full = response(Framing::Length, &body, "");
    pair.server_send(&full[..full.len() - 100]);
    pair.server.send_close_notify();
    pair.flush_server();
    let mut seen = Seen::default();
    pair.deliver(usize::MAX, &mut seen);
    pair.client.handle_eof();
    drain(&mut pair.client, &mut seen);
    let err = seen.error.expect("truncated");
    assert_eq!(err.kind(), ErrorKind::Truncated, "{err}");
    assert!(!seen.records.is_empty() && seen.done == 0);
}

#[test]
fn error_responses_carry_message_case_and_request_id() {
    let cases: [(&str, &[u8], &str, Option<&str>); 4] = [
        ("302 Found", b"moved", "moved", None),
        ("422 Unprocessable Entity", br#"{"detail":"Invalid symbols: XX"}"#, "Invalid symbols: XX", None),
        (
            "400 Bad Request",
            br#"{"detail":{"case":"auth_invalid","message":"Bad key","status_code":400,"docs":null,"payload":null}}"#,
            "Bad key",
            Some("auth_invalid"),
        ),
        ("502 Bad Gateway", b"<html><h1>502 Bad Gateway</h1></html>", "502 Bad Gateway", None),
    ];
    for (status, body, message, case) in cases {
        let mut pair = pair();
        pair.client.get_range(&range_params()).unwrap();
        pair.handshake();
        pair.server_send(
            format!(
                "HTTP/1.1 {status}\r\nrequest-id: req-77\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        pair.server_send(body);
        let mut seen = Seen::default();
        pair.deliver(usize::MAX, &mut seen);
        let Some(Error::HttpStatus(err)) = seen.error else {
            panic!(
                "{status}: expected an HttpStatus error, got {:?}",
                seen.error
            );
        };
        assert_eq!(err.status.to_string(), status[..3]);
        assert!(err.message.contains(message), "{}", err.message);
        assert_eq!(err.case.as_deref(), case);
        assert_eq!(err.request_id.as_deref(), Some("req-77"));
        assert!(seen.records.is_empty());
        assert!(
            pair.client.get_range(&range_params()).is_err(),
            "the connection is closed after an error response"
        );
    }
}

#[test]
fn json_endpoints_and_keep_alive() {
    let mut pair = pair();
    pair.client
        .request_json(JsonRequest::ListDatasets {
            start_date: None,
            end_date: None,
        })
        .unwrap();
    let first = String::from_utf8(pair.handshake()).unwrap();
    assert!(
        first.starts_with("GET /v0/metadata.list_datasets HTTP/1.1\r\n"),
        "{first}"
    );
    let body = br#"["GLBX.MDP3","XNAS.ITCH"]"#;
    pair.server_send(
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
    );
    pair.server_send(body);
    let mut seen = Seen::default();
    pair.deliver(usize::MAX, &mut seen);
    assert_eq!(
        seen.json,
        [JsonResponse::Datasets(vec![
            "GLBX.MDP3".into(),
            "XNAS.ITCH".into()
        ])]
    );
    assert!(pair.client.is_ready());
    // A second request on the same connection: a get_range, chunked.
    let range_body = generated_body(3_000, 3);
    let (_, records) = oracle(&range_body);
    pair.client.get_range(&range_params()).unwrap();
    let second = String::from_utf8(pair.client_to_server()).unwrap();
    assert!(second.starts_with("POST /v0/timeseries.get_range HTTP/1.1\r\n"));
    pair.server_send(&response(Framing::Chunked, &range_body, ""));
    let mut seen = Seen::default();
    pair.deliver(usize::MAX, &mut seen);
    assert!(seen.error.is_none(), "{:?}", seen.error);
    assert!(seen.records == records);
    assert_eq!(seen.done, 1);
    assert!(
        pair.client.get_range(&range_params()).is_ok(),
        "keep-alive again"
    );
    assert!(
        pair.client.get_range(&range_params()).is_err(),
        "no pipelining"
    );
}

#[test]
fn a_million_records_in_every_framing() {
    let body = generated_body(1_000_000, 8);
    let (metadata, records) = oracle(&body);
    assert_eq!(records.len(), 1_000_000);
    for framing in [Framing::Length, Framing::Chunked, Framing::Close] {
        let mut pair = pair();
        pair.client.get_range(&range_params()).unwrap();
        pair.handshake();
        pair.server_send(&response(framing, &body, ""));
        if let Framing::Close = framing {
            pair.server.send_close_notify();
            pair.flush_server();
        }
        let mut seen = Seen::default();
        pair.deliver(64 * 1024, &mut seen);
        pair.client.handle_eof();
        drain(&mut pair.client, &mut seen);
        assert!(seen.error.is_none(), "{framing:?}: {:?}", seen.error);
        assert_eq!(seen.metadata.as_ref(), Some(&metadata), "{framing:?}");
        assert_eq!(seen.records.len(), records.len(), "{framing:?}");
        assert!(
            seen.records == records,
            "{framing:?}: records equal the oracle's"
        );
        assert_eq!(seen.done, 1, "{framing:?}");
    }
}

/// The server offers a body of 100 MB of DBN (about 1.8 million records) at once; a
/// consumer taking one record per step keeps what the client has taken but not yet
/// delivered within its fixed buffers.
#[test]
fn one_record_per_step_over_100_mb() {
    const RECORDS: u64 = 100_000_000 / 56;
    let body = generated_body(RECORDS, 16);
    let mut pair = pair();
    pair.client.get_range(&range_params()).unwrap();
    pair.handshake();
    pair.server_send(&response(Framing::Chunked, &body, ""));
    let total = pair.to_client.len();
    let mut delivered = 0u64;
    let mut max_ahead = 0u64;
    let bytes_per_record = total as f64 / RECORDS as f64;
    loop {
        match pair.client.poll_event().unwrap() {
            Some(HistoricalEvent::Records(mut batch)) => {
                if batch.next().is_some() {
                    delivered += 1;
                }
            }
            Some(HistoricalEvent::Done) => break,
            Some(_) => {}
            None => {
                let more = pair.client.handle_input(&pair.to_client[pair.taken..]);
                assert!(more > 0, "stalled after {delivered} records");
                pair.taken += more;
            }
        }
        let ahead =
            (pair.taken as u64).saturating_sub((delivered as f64 * bytes_per_record) as u64);
        max_ahead = max_ahead.max(ahead);
    }
    assert_eq!(delivered, RECORDS);
    assert_eq!(pair.taken, total);
    // TLS plaintext (64 KiB) + a TLS record + the zstd window's worth of compressed
    // input + the 64 KiB record buffer, in compressed terms: well under 1 MiB.
    assert!(
        max_ahead < 1024 * 1024,
        "ran {max_ahead} bytes ahead of the consumer"
    );
}

mod arbitrary_server_bytes {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever a server sends after the handshake, the session never panics,
        /// terminates, and ends in an event stream or an error.
        #[test]
        fn never_panic(
            head_valid in any::<bool>(),
            garbage in proptest::collection::vec(any::<u8>(), 0..4096),
            chunk in 1usize..5000,
            json in any::<bool>(),
        ) {
            let mut pair = pair();
            if json {
                pair.client.request_json(JsonRequest::ListDatasets { start_date: None, end_date: None }).unwrap();
            } else {
                pair.client.get_range(&range_params()).unwrap();
            }
            pair.handshake();
            if head_valid {
                pair.server_send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
            }
            pair.server_send(&garbage);
            pair.server.send_close_notify();
            pair.flush_server();
            let mut seen = Seen::default();
            pair.deliver(chunk, &mut seen);
            pair.client.handle_eof();
            drain(&mut pair.client, &mut seen);
            // Terminated: a second drain yields nothing new or the same sticky error.
            let mut again = Seen::default();
            drain(&mut pair.client, &mut again);
            prop_assert!(again.records.is_empty() && again.done == 0);
        }
    }
}
