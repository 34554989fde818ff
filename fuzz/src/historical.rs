//! Target `historical`: a [`HistoricalSession`] paired in memory with a rustls server
//! (an rcgen certificate made once per process); after the TLS handshake and the
//! request, the fuzz bytes are the server's plaintext response, written in
//! fuzzer-chosen pieces (each piece its own TLS records), so they reach the session's
//! HTTP, zstd, DBN and JSON logic through its real TLS layer.
//!
//! Input ([`Framed`]): `flags` bits 0-1 the request (`get_range`, `get_range_copy`,
//! `metadata.list_datasets`, `metadata.get_dataset_range`), bit 2 the server ends
//! with a TLS close_notify before the TCP end (else the TCP end alone), bit 3 a
//! second request (the next kind) when the first one is `Done` and the session is
//! ready, answered with the same bytes. `aux` is
//! unused.
//!
//! Checks: no panic; `handle_input` never takes more than offered; no stall
//! (ciphertext refused while no event comes); after the end of input every request
//! ends in `Done`, its `Json` result or an error; errors are sticky; records are aligned and sized per
//! their header; the API key never crosses the wire outside the `Authorization`
//! header; the chosen split gives the same events as the whole response in one write.

use std::io::{Read, Write};
use std::sync::{Arc, OnceLock};

use dbn::Schema;
use dbn_pipe_protocol::ErrorKind;
use dbn_pipe_protocol::historical::{
    GetRangeParams, HistoricalConfig, HistoricalEvent, HistoricalSession, JsonRequest, JsonResponse,
};
use dbn_pipe_protocol::live::ApiKey;
use dbn_pipe_protocol::tls::TlsConfig;
use rustls::ServerConnection;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::dbn_decoder::check_record;
use crate::input::Framed;
use crate::live_gateway::KEY;

/// The server name the certificate is made for.
const HOST: &str = "hist.test";

/// The TLS configurations of both ends, made once.
struct Certs {
    server: Arc<rustls::ServerConfig>,
    client: TlsConfig,
}

fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let key = rcgen::generate_simple_self_signed(vec![HOST.to_owned()])
            .unwrap_or_else(|e| panic!("rcgen: {e}"));
        let private =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_no_client_auth()
                    .with_single_cert(vec![key.cert.der().clone()], private)
            })
            .unwrap_or_else(|e| panic!("server config: {e}"));
        let client = TlsConfig::builder()
            .without_webpki_roots()
            .add_pem(key.cert.pem().as_bytes())
            .and_then(|b| b.build())
            .unwrap_or_else(|e| panic!("client config: {e}"));
        Certs {
            server: Arc::new(server),
            client,
        }
    })
}

/// One event, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// `Warning`.
    Warning(String),
    /// `Metadata`.
    Metadata(Box<dbn::Metadata>),
    /// Records (merged across batches).
    Records(Vec<Vec<u8>>),
    /// Raw body bytes (merged).
    Body(Vec<u8>),
    /// `Json`.
    Json(JsonResponse),
    /// `Done`.
    Done,
    /// An error: kind and offset.
    Error(ErrorKind, Option<u64>),
}

/// The request `bits` choose.
fn send_request(session: &mut HistoricalSession, bits: u8) {
    let params = || GetRangeParams::new("GLBX.MDP3", Schema::Mbo, ["ESM4"], 1_704_067_200u64);
    let sent = match bits & 3 {
        0 => session.get_range(&params()),
        1 => session.get_range_copy(&params()),
        2 => session.request_json(JsonRequest::ListDatasets {
            start_date: None,
            end_date: None,
        }),
        _ => session.request_json(JsonRequest::GetDatasetRange {
            dataset: "GLBX.MDP3".to_owned(),
        }),
    };
    if let Err(err) = sent {
        panic!("a valid request is refused: {err}");
    }
}

/// Drains events into `seen`; returns how many came and whether one ended the
/// request (`Done`, `Json` or an error). Once an error was seen, polls no more (it is
/// sticky: checked once at the end).
fn drain(session: &mut HistoricalSession, seen: &mut Vec<Seen>) -> (usize, bool) {
    if matches!(seen.last(), Some(Seen::Error(..))) {
        return (0, true);
    }
    let mut count = 0;
    loop {
        let event = match session.poll_event() {
            Ok(Some(event)) => event,
            Ok(None) => return (count, false),
            Err(err) => {
                seen.push(Seen::Error(err.kind(), err.offset()));
                return (count + 1, true);
            }
        };
        count += 1;
        match event {
            HistoricalEvent::Warning(w) => seen.push(Seen::Warning(w)),
            HistoricalEvent::Metadata(m) => seen.push(Seen::Metadata(m)),
            HistoricalEvent::Records(batch) => {
                let records: Vec<Vec<u8>> = batch.map(|r| check_record(&r)).collect();
                assert!(!records.is_empty(), "an empty record batch");
                match seen.last_mut() {
                    Some(Seen::Records(all)) => all.extend(records),
                    _ => seen.push(Seen::Records(records)),
                }
            }
            HistoricalEvent::Body(bytes) => {
                assert!(!bytes.is_empty(), "an empty body event");
                match seen.last_mut() {
                    Some(Seen::Body(all)) => all.extend_from_slice(bytes),
                    _ => seen.push(Seen::Body(bytes.to_vec())),
                }
            }
            HistoricalEvent::Json(j) => {
                // The result of a JSON request ends it (no `Done` follows).
                seen.push(Seen::Json(j));
                return (count, true);
            }
            HistoricalEvent::Done => {
                seen.push(Seen::Done);
                return (count, true);
            }
        }
        assert!(count < 10_000_000, "endless events from a bounded input");
    }
}

/// The client and server of one in-memory connection.
struct Pair {
    client: HistoricalSession,
    server: ServerConnection,
    /// Ciphertext for the client, not yet taken.
    to_client: Vec<u8>,
    /// Everything the client sent, decrypted by the server.
    requests: Vec<u8>,
}

impl Pair {
    fn new() -> Self {
        let certs = certs();
        let config = HistoricalConfig::new(
            ApiKey::new(KEY).unwrap_or_else(|e| panic!("the fake key is refused: {e}")),
        )
        .host(HOST);
        let mut server = ServerConnection::new(Arc::clone(&certs.server))
            .unwrap_or_else(|e| panic!("server: {e}"));
        server.set_buffer_limit(None);
        Self {
            client: HistoricalSession::new(config, &certs.client)
                .unwrap_or_else(|e| panic!("a valid session is refused: {e}")),
            server,
            to_client: Vec::new(),
            requests: Vec::new(),
        }
    }

    /// Moves client ciphertext to the server and server ciphertext to `to_client`.
    fn client_to_server(&mut self) {
        let mut out = Vec::new();
        let _ = self.client.poll_transmit(&mut out);
        let mut rest = &out[..];
        // The server is a test double: once it fails (for example on an alert the
        // client sent after its own error), it simply stops listening.
        while !rest.is_empty() {
            if self.server.read_tls(&mut rest).is_err()
                || self.server.process_new_packets().is_err()
            {
                break;
            }
        }
        let _ = self.server.reader().read_to_end(&mut self.requests);
        self.flush_server();
    }

    fn flush_server(&mut self) {
        while self.server.wants_write() {
            if self.server.write_tls(&mut self.to_client).is_err() {
                panic!("the server cannot write");
            }
        }
    }

    /// Feeds `to_client` to the client until it is all taken, draining events after
    /// every step.
    fn deliver(&mut self, seen: &mut Vec<Seen>, ended: &mut bool) {
        let mut taken_total = 0;
        loop {
            let rest = &self.to_client[taken_total..];
            let taken = self.client.handle_input(rest);
            assert!(taken <= rest.len(), "handle_input took more than offered");
            taken_total += taken;
            let (events, end) = drain(&mut self.client, seen);
            *ended |= end;
            if taken_total == self.to_client.len() {
                break;
            }
            if taken == 0 && (events == 0 || matches!(seen.last(), Some(Seen::Error(..)))) {
                // Refused with nothing to report: only after the request ended
                // (an error closes the connection).
                assert!(*ended, "stalled: ciphertext refused while no event comes");
                break;
            }
        }
        self.to_client.clear();
        self.client_to_server();
    }
}

/// Runs one connection: handshake, request(s), `chunks` as the response plaintext.
///
/// # Panics
/// On a broken invariant (see the module docs).
pub fn drive(flags: u8, chunks: &[&[u8]]) -> Vec<Seen> {
    let mut pair = Pair::new();
    let mut seen = Vec::new();
    send_request(&mut pair.client, flags);
    let mut ended = false;
    for _ in 0..8 {
        pair.client_to_server();
        pair.deliver(&mut seen, &mut ended);
        if !pair.server.is_handshaking() && !pair.requests.is_empty() {
            break;
        }
    }
    assert!(
        !pair.server.is_handshaking(),
        "the TLS handshake did not complete"
    );
    assert!(seen.is_empty(), "events before any response: {seen:?}");
    let rounds = if flags & 8 != 0 { 2 } else { 1 };
    for round in 0..rounds {
        if round == 1 {
            // A second request on the kept-alive connection, answered alike.
            if !(ended && pair.client.is_ready()) {
                break;
            }
            ended = false;
            send_request(&mut pair.client, flags.wrapping_add(2));
            pair.client_to_server();
        }
        for chunk in chunks {
            if pair.server.writer().write_all(chunk).is_err() {
                break;
            }
            pair.flush_server();
            pair.deliver(&mut seen, &mut ended);
        }
    }
    if flags & 4 != 0 {
        pair.server.send_close_notify();
        pair.flush_server();
        pair.deliver(&mut seen, &mut ended);
    }
    pair.client.handle_eof();
    let (_, end) = drain(&mut pair.client, &mut seen);
    ended |= end;
    assert!(
        ended,
        "no Done, Json nor error after the end of input: {:?}",
        seen.last()
    );
    if let Some(Seen::Error(kind, offset)) = seen.last().cloned() {
        match pair.client.poll_event() {
            Err(again) => assert_eq!(
                (again.kind(), again.offset()),
                (kind, offset),
                "the error is not sticky"
            ),
            Ok(_) => panic!("the error is not sticky"),
        }
    }
    // The key travels only in the Authorization header (base64), never as is.
    assert!(
        !pair
            .requests
            .windows(KEY.len())
            .any(|w| w == KEY.as_bytes()),
        "the API key was sent in clear"
    );
    seen
}

/// The target: see the module docs.
pub fn run(data: &[u8]) {
    let framed = Framed::parse(data);
    let whole = drive(framed.flags, &[framed.payload]);
    let split = drive(framed.flags, &framed.chunks());
    assert_eq!(whole, split, "a split changed the events");
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbn_pipe_protocol::doc_support::sample_dbn_zst;

    #[test]
    fn a_range_response_reaches_records_and_done() {
        let zst = sample_dbn_zst();
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nX-Warning: [\"w\"]\r\nContent-Length: {}\r\n\r\n",
            zst.len()
        )
        .into_bytes();
        response.extend_from_slice(&zst);
        let seen = drive(0, &[&response[..30], &response[30..]]);
        assert_eq!(seen[0], Seen::Warning("w".into()));
        assert!(matches!(&seen[1], Seen::Metadata(_)));
        assert!(matches!(&seen[2], Seen::Records(r) if r.len() == 2));
        assert_eq!(seen[3], Seen::Done);
        // get_range_copy hands out the raw body first.
        let seen = drive(1, &[&response]);
        assert!(seen.contains(&Seen::Body(zst.clone())), "{seen:?}");
    }

    #[test]
    fn a_json_response_is_parsed_and_an_error_status_is_typed() {
        let seen = drive(
            2,
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n[\"GLBX.MDP3\"]"],
        );
        assert!(matches!(seen.as_slice(), [Seen::Json(_)]), "{seen:?}");
        let seen = drive(
            0,
            &[b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\n{}"],
        );
        assert!(
            matches!(seen.as_slice(), [Seen::Error(ErrorKind::HttpStatus, _)]),
            "{seen:?}"
        );
    }
}
