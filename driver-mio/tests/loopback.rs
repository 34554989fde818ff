//! The mio driver against small in-test loopback gateways (std threads speaking the
//! live protocol from `doc_support::scripted_gateway()` or hand-written bytes).
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use dbn::encode::{DbnEncodable, EncodeRecord, dbn::Encoder};
use dbn::{MboMsg, MetadataBuilder, SType, Schema};
use dbn_pipe_mio::{ErrorKind, LiveConnection, LiveItem, LiveOptions};
use dbn_pipe_protocol::doc_support::{sample_dbn, scripted_gateway};
use dbn_pipe_protocol::live::{ApiKey, AutoReconnect, ReconnectPolicy, Subscription};
use mio::{Events, Poll, Token};

const KEY: &str = "db-0123456789abcdefghijklmnABCDE";
/// Safety net for every wait: never decides pass or fail by itself.
const SAFETY: Duration = Duration::from_secs(20);

fn options(addr: SocketAddr) -> LiveOptions {
    LiveOptions::new(ApiKey::new(KEY).unwrap(), "GLBX.MDP3").addr(addr.to_string())
}

/// A DBN stream with `n` MBO records.
fn dbn_records(n: u64) -> Vec<u8> {
    let metadata = MetadataBuilder::new()
        .dataset("GLBX.MDP3".to_owned())
        .schema(Some(Schema::Mbo))
        .start(1)
        .stype_in(Some(SType::RawSymbol))
        .stype_out(SType::InstrumentId)
        .build();
    let mut out = Vec::new();
    {
        let mut encoder = Encoder::new(&mut out, &metadata).unwrap();
        for i in 0..n {
            let mut rec = MboMsg::default();
            rec.hd.instrument_id = 7;
            rec.hd.ts_event = 1_000 + i;
            rec.ts_recv = 1_000 + i;
            rec.order_id = i;
            encode(&mut encoder, &rec);
        }
    }
    out
}

fn encode<W: Write, R: DbnEncodable>(encoder: &mut Encoder<W>, rec: &R) {
    encoder.encode_record(rec).unwrap();
}

/// Reads lines from the client until one starts with `prefix`.
fn read_until(reader: &mut BufReader<TcpStream>, prefix: &str) {
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "client closed before sending {prefix}");
        if line.starts_with(prefix) {
            return;
        }
    }
}

/// Serves one client: greeting, challenge, reads `auth=`, accepts, reads up to
/// `start_session`, then sends `body`. Returns the stream (still open).
fn handshake(stream: TcpStream, body: &[u8]) -> TcpStream {
    let script = scripted_gateway();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    writer.write_all(&script[0]).unwrap();
    writer.write_all(&script[1]).unwrap();
    read_until(&mut reader, "auth=");
    writer.write_all(&script[2]).unwrap();
    read_until(&mut reader, "start_session");
    writer.write_all(body).unwrap();
    writer
}

/// A gateway thread serving each accepted client with the body at that index, then
/// closing it (after `hold` says so, when given).
fn gateway(
    bodies: Vec<Vec<u8>>,
    hold: Option<mpsc::Receiver<()>>,
    written: Option<mpsc::Sender<()>>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for body in bodies {
            let (stream, _) = listener.accept().unwrap();
            let writer = handshake(stream, &body);
            if let Some(written) = &written {
                let _ = written.send(());
            }
            if let Some(hold) = &hold {
                let _ = hold.recv_timeout(SAFETY);
            }
            drop(writer);
        }
    });
    addr
}

/// A gateway serving each body in turn; the last connection stays open until `hold`
/// fires or is dropped.
fn gateway_holding_last(
    bodies: Vec<Vec<u8>>,
    hold: mpsc::Receiver<()>,
    written: mpsc::Sender<()>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let last = bodies.len() - 1;
        for (i, body) in bodies.into_iter().enumerate() {
            let (stream, _) = listener.accept().unwrap();
            let writer = handshake(stream, &body);
            let _ = written.send(());
            if i == last {
                let _ = hold.recv_timeout(SAFETY);
            }
            drop(writer);
        }
    });
    addr
}

/// Drives `conns` on one poll until every one is finished; returns per connection
/// the records seen and the error, if any.
struct Outcome {
    records: Vec<u64>,
    items: Vec<String>,
    error: Option<dbn_pipe_mio::Error>,
}

fn drive(poll: &mut Poll, conns: &mut [LiveConnection]) -> Vec<Outcome> {
    drive_until(poll, conns, |_| false)
}

/// As [`drive`], also stopping as soon as `stop` says so.
fn drive_until(
    poll: &mut Poll,
    conns: &mut [LiveConnection],
    stop: impl Fn(&[Outcome]) -> bool,
) -> Vec<Outcome> {
    let mut out: Vec<Outcome> = conns
        .iter()
        .map(|_| Outcome {
            records: Vec::new(),
            items: Vec::new(),
            error: None,
        })
        .collect();
    let mut events = Events::with_capacity(16);
    let give_up = Instant::now() + SAFETY;
    loop {
        for (conn, out) in conns.iter_mut().zip(&mut out) {
            if out.error.is_some() {
                continue;
            }
            loop {
                match conn.next_event() {
                    Ok(Some(LiveItem::Record(rec))) => {
                        out.records
                            .push(rec.get::<MboMsg>().map_or(u64::MAX, |m| m.order_id));
                    }
                    Ok(Some(item)) => out.items.push(format!("{item:?}")),
                    Ok(None) => break,
                    Err(err) => {
                        out.error = Some(err);
                        break;
                    }
                }
            }
        }
        if stop(&out)
            || conns
                .iter()
                .zip(&out)
                .all(|(c, o)| c.is_finished() || o.error.is_some())
        {
            return out;
        }
        assert!(Instant::now() < give_up, "safety net: no end");
        let deadline = conns.iter().filter_map(LiveConnection::poll_timeout).min();
        let wait = deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(SAFETY)
            .min(SAFETY);
        poll.poll(&mut events, Some(wait)).unwrap();
        let now = Instant::now();
        for event in &events {
            for conn in conns.iter_mut() {
                conn.handle_event(event, now);
            }
        }
        for conn in conns.iter_mut() {
            conn.handle_timeout(now);
        }
    }
}

fn live(poll: &Poll, token: usize, options: LiveOptions) -> LiveConnection {
    let now = Instant::now();
    let mut conn = LiveConnection::connect(poll.registry(), Token(token), options, now).unwrap();
    conn.subscribe(Subscription::new(Schema::Mbo, ["ESH1"]))
        .unwrap();
    conn.start(now).unwrap();
    conn
}

#[test]
fn delivers_every_record_then_ends_cleanly() {
    let addr = gateway(vec![sample_dbn()], None, None);
    let mut poll = Poll::new().unwrap();
    let mut conns = [live(&poll, 1, options(addr))];
    let out = drive(&mut poll, &mut conns).remove(0);
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.records, [647_784_973_705, 647_784_973_706]);
    assert!(out.items[0].starts_with("Authenticated"), "{:?}", out.items);
    assert!(out.items.iter().any(|i| i.starts_with("Metadata")));
    assert_eq!(out.items.last().map(String::as_str), Some("End"));
    assert!(conns[0].is_finished());
    assert!(conns[0].next_record().unwrap().is_none());
}

/// The socket holds the whole stream and no new readiness edge will come: records
/// held back by the application must still all arrive when it pulls again.
#[test]
fn backpressure_resumes_reading_without_a_new_edge() {
    const N: u64 = 5_000; // 280 KB: far more than the decoder and read buffers
    let (release, hold) = mpsc::channel();
    let (written_tx, written) = mpsc::channel();
    let addr = gateway(vec![dbn_records(N)], Some(hold), Some(written_tx));
    let mut poll = Poll::new().unwrap();
    let opts = options(addr).buffer_size(4096).read_buffer(1024);
    let mut conn = live(&poll, 7, opts);
    let mut events = Events::with_capacity(16);
    let mut seen = 0u64;
    // Drive until the first record, then stop pulling.
    let give_up = Instant::now() + SAFETY;
    'first: loop {
        assert!(Instant::now() < give_up, "safety net: no first record");
        while let Some(item) = conn.next_event().unwrap() {
            if let LiveItem::Record(_) = item {
                seen += 1;
                break 'first;
            }
        }
        poll.poll(&mut events, Some(Duration::from_millis(200)))
            .unwrap();
        let now = Instant::now();
        for event in &events {
            conn.handle_event(event, now);
        }
        conn.handle_timeout(now);
    }
    // The gateway has written everything (it sits in the socket buffers).
    written.recv_timeout(SAFETY).unwrap();
    // Pull everything without polling again.
    while let Some(rec) = conn.next_record().unwrap() {
        assert_eq!(rec.get::<MboMsg>().unwrap().order_id, seen);
        seen += 1;
    }
    assert_eq!(seen, N, "records stuck behind backpressure");
    assert!(!conn.is_finished());
    release.send(()).unwrap();
    let mut conns = [conn];
    let out = drive(&mut poll, &mut conns).remove(0);
    assert!(out.error.is_none(), "{:?}", out.error);
    assert!(out.records.is_empty());
    assert!(conns[0].is_finished());
}

#[test]
fn auth_timeout_when_the_gateway_never_speaks() {
    // The kernel completes the TCP handshake (backlog) but nobody ever answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut poll = Poll::new().unwrap();
    let opts = options(addr).auth_timeout(Duration::from_millis(100));
    let mut conns = [live(&poll, 1, opts)];
    let out = drive(&mut poll, &mut conns).remove(0);
    let err = out.error.expect("an auth timeout");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.session_error().is_some());
    drop(listener);
}

#[test]
fn connect_refused_is_a_connect_error() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut poll = Poll::new().unwrap();
    match LiveConnection::connect(poll.registry(), Token(1), options(port), Instant::now()) {
        Err(err) => assert_eq!(err.kind(), ErrorKind::Connect, "{err}"),
        Ok(conn) => {
            let mut conns = [conn];
            let out = drive(&mut poll, &mut conns).remove(0);
            let err = out.error.expect("a connect error");
            assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
            assert!(std::error::Error::source(&err).is_some());
        }
    }
}

#[test]
fn dns_failure_is_a_dns_error() {
    let poll = Poll::new().unwrap();
    let opts =
        LiveOptions::new(ApiKey::new(KEY).unwrap(), "GLBX.MDP3").addr("no-such-host.invalid:13000");
    let err = LiveConnection::connect(poll.registry(), Token(1), opts, Instant::now()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Dns, "{err}");
}

#[test]
fn a_disconnect_mid_record_is_truncated_after_every_record() {
    let dbn = sample_dbn();
    let cut = dbn[..dbn.len() - 10].to_vec(); // inside the second record
    let addr = gateway(vec![cut], None, None);
    let mut poll = Poll::new().unwrap();
    let mut conns = [live(&poll, 1, options(addr))];
    let out = drive(&mut poll, &mut conns).remove(0);
    assert_eq!(out.records, [647_784_973_705]);
    let err = out.error.expect("truncated");
    assert_eq!(err.kind(), ErrorKind::Truncated, "{err}");
    assert!(conns[0].is_finished());
    assert!(conns[0].next_record().unwrap().is_none());
}

#[test]
fn two_connections_on_one_poll() {
    let a = gateway(vec![sample_dbn()], None, None);
    let b = gateway(vec![dbn_records(300)], None, None);
    let mut poll = Poll::new().unwrap();
    let mut conns = [
        live(&poll, 1, options(a)),
        live(&poll, 2, options(b).read_buffer(512)),
    ];
    let out = drive(&mut poll, &mut conns);
    assert!(out.iter().all(|o| o.error.is_none()));
    assert_eq!(out[0].records.len(), 2);
    assert_eq!(out[1].records, (0..300).collect::<Vec<_>>());
}

#[test]
fn reconnects_after_a_drop_and_reports_it() {
    let dbn = dbn_records(4);
    let first = dbn[..dbn.len() - 20].to_vec(); // ends inside the 4th record
    // The second connection stays open (a clean end would reconnect again).
    let (_release, hold) = mpsc::channel::<()>();
    let (written_tx, _written) = mpsc::channel();
    let addr = gateway_holding_last(vec![first, dbn], hold, written_tx);
    let mut poll = Poll::new().unwrap();
    let auto = AutoReconnect::new(ReconnectPolicy::GapFill)
        .max_attempts(3)
        .delays(Duration::from_millis(5), Duration::from_millis(20));
    let mut conns = [live(&poll, 3, options(addr).auto_reconnect(auto))];
    let out = drive_until(&mut poll, &mut conns, |out| out[0].records.len() >= 4).remove(0);
    assert!(out.error.is_none(), "{:?}", out.error);
    // Gap fill: the replay's duplicates are dropped, each record comes once.
    assert_eq!(out.records, [0, 1, 2, 3]);
    let disconnected = out.items.iter().position(|i| i.starts_with("Disconnected"));
    let reconnected = out.items.iter().position(|i| i.starts_with("Reconnected"));
    assert!(
        disconnected.is_some() && reconnected > disconnected,
        "{:?}",
        out.items
    );
    assert!(out.items[disconnected.unwrap()].contains("Truncated"));
}

#[test]
fn attempts_run_out_with_the_last_error() {
    // One connection that ends inside a record, then nothing listens.
    let dbn = sample_dbn();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = dbn[..dbn.len() - 10].to_vec();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let stream = handshake(stream, &cut);
        drop(listener); // refuse every reconnect, then end the first connection
        drop(stream);
    });
    let mut poll = Poll::new().unwrap();
    let auto = AutoReconnect::new(ReconnectPolicy::Resubscribe)
        .max_attempts(2)
        .delays(Duration::from_millis(1), Duration::from_millis(5));
    let mut conns = [live(&poll, 3, options(addr).auto_reconnect(auto))];
    let out = drive(&mut poll, &mut conns).remove(0);
    assert_eq!(out.records.len(), 1);
    let err = out.error.expect("attempts exhausted");
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    assert_eq!(
        out.items
            .iter()
            .filter(|i| i.starts_with("Disconnected"))
            .count(),
        2,
        "{:?}",
        out.items
    );
}

#[test]
fn historical_reports_a_server_that_is_not_tls() {
    use dbn_pipe_mio::{HistoricalConnection, HistoricalOptions};
    use dbn_pipe_protocol::historical::GetRangeParams;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 512];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    });
    let mut poll = Poll::new().unwrap();
    let opts =
        HistoricalOptions::new(ApiKey::new(KEY).unwrap()).base_url(&format!("https://{addr}"));
    let mut conn =
        HistoricalConnection::connect(poll.registry(), Token(9), opts, Instant::now()).unwrap();
    conn.get_range(&GetRangeParams::new(
        "GLBX.MDP3",
        Schema::Trades,
        ["ESM4"],
        1u64,
    ))
    .unwrap();
    let mut events = Events::with_capacity(8);
    let give_up = Instant::now() + SAFETY;
    let err = loop {
        match conn.next_record() {
            Ok(Some(_)) => panic!("no record can come"),
            Ok(None) => {}
            Err(err) => break err,
        }
        assert!(Instant::now() < give_up, "safety net");
        poll.poll(&mut events, Some(Duration::from_millis(200)))
            .unwrap();
        let now = Instant::now();
        for event in &events {
            conn.handle_event(event, now);
        }
        conn.handle_timeout(now);
    };
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    assert!(conn.is_idle());
}

#[test]
fn historical_rejects_a_plain_http_base_url() {
    use dbn_pipe_mio::{HistoricalConnection, HistoricalOptions};
    let poll = Poll::new().unwrap();
    let opts =
        HistoricalOptions::new(ApiKey::new(KEY).unwrap()).base_url("http://hist.databento.com");
    let err =
        HistoricalConnection::connect(poll.registry(), Token(9), opts, Instant::now()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}
