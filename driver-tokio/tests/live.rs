//! The live client against small in-test loopback gateways (std threads speaking the
//! gateway side of the protocol): success on both runtimes, cancel safety,
//! backpressure, timeouts, refused connections, truncation and reconnects.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use dbn::encode::{EncodeRecord, dbn::Encoder};
use dbn::{MboMsg, MetadataBuilder, SType, Schema};
use dbn_pipe_protocol::live::{ApiKey, AutoReconnect, ReconnectPolicy, Subscription};
use dbn_pipe_tokio::{ErrorKind, Event, LiveClient, LiveOptions};

const KEY: &str = "db-0123456789abcdefghijklmnABCDE";
/// Safety net so a broken client fails the test instead of hanging it.
const LIMIT: Duration = Duration::from_secs(30);

/// A DBN v3 stream of `n` MBO records whose `order_id`s count up from `first`.
fn dbn_stream(first: u64, n: u64) -> Vec<u8> {
    let metadata = MetadataBuilder::new()
        .dataset("GLBX.MDP3".to_owned())
        .schema(Some(Schema::Mbo))
        .start(1_609_160_400_000_000_000)
        .stype_in(Some(SType::RawSymbol))
        .stype_out(SType::InstrumentId)
        .build();
    let mut out = Vec::new();
    {
        let mut encoder = Encoder::new(&mut out, &metadata).expect("encoder");
        for i in first..first + n {
            let rec = MboMsg {
                order_id: i,
                ts_recv: 1_609_160_400_000_000_000 + i,
                ..MboMsg::default()
            };
            encoder.encode_record(&rec).expect("encode");
        }
    }
    out
}

/// Size of one MBO record on the wire.
const MBO_LEN: usize = std::mem::size_of::<MboMsg>();

/// Plays the gateway's handshake on `socket`: greeting and challenge, the client's
/// `auth=` line, success, then waits for `start_session` (returns false if the client
/// went away first).
fn handshake(socket: &mut TcpStream) -> std::io::Result<bool> {
    let chunks = dbn_pipe_protocol::doc_support::scripted_gateway();
    let mut lines = BufReader::new(socket.try_clone()?);
    socket.write_all(&chunks[0])?;
    socket.write_all(&chunks[1])?;
    let mut line = String::new();
    lines.read_line(&mut line)?;
    assert!(
        line.starts_with("auth="),
        "expected the auth line, got {line:?}"
    );
    socket.write_all(&chunks[2])?;
    while !line.starts_with("start_session") {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A gateway for one connection per entry of `streams`: handshake, then the bytes in
/// `chunk`-sized writes, then close.
fn gateway(streams: Vec<Vec<u8>>, chunk: usize) -> (String, JoinHandle<std::io::Result<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let handle = std::thread::spawn(move || {
        for stream in streams {
            let (mut socket, _) = listener.accept()?;
            if !handshake(&mut socket)? {
                continue;
            }
            for part in stream.chunks(chunk) {
                socket.write_all(part)?;
            }
            socket.flush()?;
        }
        Ok(())
    });
    (addr, handle)
}

fn options(addr: String) -> LiveOptions {
    LiveOptions::new(ApiKey::new(KEY).expect("key"), "GLBX.MDP3").addr(addr)
}

async fn started(addr: String) -> LiveClient {
    let mut client = LiveClient::connect(options(addr)).await.expect("connect");
    client
        .subscribe(Subscription::new(Schema::Mbo, ["ESH1"]))
        .await
        .expect("subscribe");
    let metadata = client.start().await.expect("start");
    assert_eq!(metadata.dataset, "GLBX.MDP3");
    client
}

/// Reads every record; checks `order_id`s run from `first` without gap or repeat.
async fn read_all(client: &mut LiveClient, first: u64) -> Result<u64, dbn_pipe_tokio::Error> {
    let mut next = first;
    while let Some(record) = client.next_record().await? {
        let mbo = record.get::<MboMsg>().expect("an MBO record");
        assert_eq!(mbo.order_id, next, "records out of order or repeated");
        next += 1;
    }
    Ok(next - first)
}

async fn success() {
    let (addr, server) = gateway(vec![dbn_stream(0, 1_000)], 777);
    let mut client = started(addr).await;
    let count = tokio::time::timeout(LIMIT, read_all(&mut client, 0))
        .await
        .expect("in time")
        .expect("clean end");
    assert_eq!(count, 1_000);
    // A clean end stays a clean end.
    assert!(client.next_record().await.expect("still clean").is_none());
    server.join().expect("gateway thread").expect("gateway io");
}

#[tokio::test(flavor = "current_thread")]
async fn records_then_clean_end_on_the_current_thread_runtime() {
    success().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_then_clean_end_on_the_multi_thread_runtime() {
    success().await;
}

/// Resolves to `None` (dropping `fut`) the first time `fut` is not ready: a
/// deterministic cancellation at every point where the client waits.
async fn poll_once<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
        std::task::Poll::Ready(out) => std::task::Poll::Ready(Some(out)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

async fn cancel_safety() {
    const N: u64 = 20_000;
    // Small writes: the client waits (and is cancelled) often, mid-record too.
    let (addr, server) = gateway(vec![dbn_stream(0, N)], 37);
    let mut client = started(addr).await;
    let (mut next, mut cancelled) = (0u64, 0u64);
    let run = async {
        loop {
            // Alternate: a 50 µs timer racing the read, and a cancel at the first wait.
            let record = if next % 2 == 0 {
                tokio::select! {
                    record = client.next_record() => Some(record),
                    () = tokio::time::sleep(Duration::from_micros(50)) => None,
                }
            } else {
                let record = poll_once(client.next_record()).await;
                if record.is_none() {
                    // Let the runtime poll the socket before trying again.
                    tokio::task::yield_now().await;
                }
                record
            };
            match record {
                None => cancelled += 1,
                Some(Ok(Some(record))) => {
                    let mbo = record.get::<MboMsg>().expect("an MBO record");
                    assert_eq!(mbo.order_id, next, "records lost, repeated or reordered");
                    next += 1;
                }
                Some(Ok(None)) => break,
                Some(Err(err)) => panic!("unexpected error: {err}"),
            }
        }
    };
    tokio::time::timeout(LIMIT, run).await.expect("in time");
    assert_eq!(next, N, "every record exactly once");
    println!("{cancelled} cancellations of next_record");
    server.join().expect("gateway thread").expect("gateway io");
}

#[tokio::test(flavor = "current_thread")]
async fn cancelled_next_record_loses_nothing_on_the_current_thread_runtime() {
    cancel_safety().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_next_record_loses_nothing_on_the_multi_thread_runtime() {
    cancel_safety().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_consumer_that_stops_reading_stops_the_socket() {
    const N: u64 = 600_000; // about 34 MB
    let stream = dbn_stream(0, N);
    let total = stream.len();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (blocked_tx, blocked_rx) = mpsc::channel();
    let (resume_tx, resume_rx) = mpsc::channel::<()>();
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut socket, _) = listener.accept()?;
        assert!(handshake(&mut socket)?);
        socket.set_nonblocking(true)?;
        let mut sent = 0;
        // Write until the kernel refuses more: the client is not reading.
        while sent < stream.len() {
            match socket.write(&stream[sent..]) {
                Ok(n) => sent += n,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(err) => return Err(err),
            }
        }
        blocked_tx.send(sent).expect("report");
        resume_rx.recv().expect("resume");
        socket.set_nonblocking(false)?;
        socket.write_all(&stream[sent..])?;
        Ok(())
    });
    let mut client = started(addr).await;
    // Take a few records, then hold off (the client is not polled).
    for expected in 0..10u64 {
        let record = client.next_record().await.expect("record").expect("some");
        assert_eq!(record.get::<MboMsg>().expect("mbo").order_id, expected);
    }
    let accepted = tokio::task::spawn_blocking(move || blocked_rx.recv_timeout(LIMIT))
        .await
        .expect("join")
        .expect("the gateway stalled: the client stopped reading");
    // What the gateway got rid of is at most the kernel's socket buffers plus the
    // client's fixed buffers, far below the stream.
    assert!(
        accepted < total / 2,
        "{accepted} of {total} bytes left the gateway while the consumer held off"
    );
    println!("{accepted} of {total} bytes accepted while the consumer held off");
    resume_tx.send(()).expect("resume");
    let rest = tokio::time::timeout(LIMIT, read_all(&mut client, 10))
        .await
        .expect("in time")
        .expect("clean end");
    assert_eq!(rest, N - 10);
    server.join().expect("gateway thread").expect("gateway io");
}

#[tokio::test(flavor = "current_thread")]
async fn a_silent_gateway_fails_authentication_with_a_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    // Accepts (by the kernel's backlog) and never writes.
    let options = options(addr).auth_timeout(Duration::from_millis(200));
    let err = tokio::time::timeout(LIMIT, LiveClient::connect(options))
        .await
        .expect("in time")
        .expect_err("no greeting");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("authentication"), "{err}");
    drop(listener);
}

#[tokio::test(flavor = "current_thread")]
async fn a_closed_port_is_a_connect_error() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let err = LiveClient::connect(options(format!("127.0.0.1:{port}")))
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    assert!(std::error::Error::source(&err).is_some());
}

#[tokio::test(flavor = "current_thread")]
async fn an_unknown_host_is_a_dns_error() {
    let err = LiveClient::connect(options("no-such-host.invalid:13000".to_owned()))
        .await
        .expect_err("no such host");
    assert_eq!(err.kind(), ErrorKind::Dns, "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_disconnect_mid_record_is_truncated_after_every_whole_record() {
    let mut stream = dbn_stream(0, 100);
    stream.truncate(stream.len() - MBO_LEN / 2);
    let (addr, server) = gateway(vec![stream], 1000);
    let mut client = started(addr).await;
    let mut next = 0;
    let err = loop {
        match client.next_record().await {
            Ok(Some(record)) => {
                assert_eq!(record.get::<MboMsg>().expect("mbo").order_id, next);
                next += 1;
            }
            Ok(None) => panic!("a cut stream must not end cleanly"),
            Err(err) => break err,
        }
    };
    assert_eq!(next, 99, "every whole record before the cut");
    assert_eq!(err.kind(), ErrorKind::Truncated, "{err}");
    assert!(err.session_error().is_some());
    server.join().expect("gateway thread").expect("gateway io");
}

#[tokio::test(flavor = "current_thread")]
async fn auto_reconnect_resubscribes_after_a_cut_and_reports_it() {
    let mut first = dbn_stream(0, 50);
    first.truncate(first.len() - 10);
    let second = dbn_stream(49, 51);
    let (addr, server) = gateway(vec![first, second], 4096);
    let reconnect = AutoReconnect::new(ReconnectPolicy::Resubscribe)
        .max_attempts(3)
        .delays(Duration::from_millis(1), Duration::from_millis(5));
    let mut client = LiveClient::connect(options(addr).auto_reconnect(reconnect))
        .await
        .expect("connect");
    client
        .subscribe(Subscription::new(Schema::Mbo, ["ESH1"]))
        .await
        .expect("subscribe");
    client.start().await.expect("start");
    let (mut ids, mut reconnects, mut metadata) = (Vec::new(), 0, 0);
    let run = async {
        // With auto-reconnect a clean end reconnects too: stop after the last record.
        while ids.len() < 100 {
            let event = client.next_event().await.expect("no error").expect("more");
            match event {
                Event::Record(record) => ids.push(record.get::<MboMsg>().expect("mbo").order_id),
                Event::Reconnected { policy, gap_from } => {
                    assert_eq!(policy, ReconnectPolicy::Resubscribe);
                    assert_eq!(gap_from, Some(1_609_160_400_000_000_000 + 48));
                    reconnects += 1;
                }
                Event::Metadata(_) => metadata += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    tokio::time::timeout(LIMIT, run).await.expect("in time");
    assert_eq!(reconnects, 1);
    assert_eq!(metadata, 1, "the new connection's metadata");
    assert_eq!(ids, (0..100).collect::<Vec<_>>());
    server.join().expect("gateway thread").expect("gateway io");
}

#[tokio::test(flavor = "current_thread")]
async fn gap_fill_drops_the_replayed_records_already_delivered() {
    let mut first = dbn_stream(0, 50);
    first.truncate(first.len() - 10);
    // The replay repeats 45..=48 (already delivered), then continues.
    let second = dbn_stream(45, 55);
    let (addr, server) = gateway(vec![first, second], 333);
    let reconnect = AutoReconnect::new(ReconnectPolicy::GapFill)
        .max_attempts(3)
        .delays(Duration::from_millis(1), Duration::from_millis(5));
    let mut client = started_with(options(addr).auto_reconnect(reconnect)).await;
    // With auto-reconnect a clean end reconnects too: stop after the last record.
    let run = async {
        for expected in 0..100u64 {
            let record = client.next_record().await.expect("no error").expect("more");
            let mbo = record.get::<MboMsg>().expect("an MBO record");
            assert_eq!(mbo.order_id, expected, "records lost or repeated");
        }
    };
    tokio::time::timeout(LIMIT, run).await.expect("in time");
    client.close().await.expect("close");
    assert!(client.next_record().await.expect("closed").is_none());
    server.join().expect("gateway thread").expect("gateway io");
}

#[tokio::test(flavor = "current_thread")]
async fn reconnect_attempts_run_out_with_the_last_error() {
    let mut first = dbn_stream(0, 5);
    first.truncate(first.len() - 10);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut socket, _) = listener.accept()?;
        // Every reconnect is refused: the listener is gone before the cut.
        drop(listener);
        assert!(handshake(&mut socket)?);
        socket.write_all(&first)?;
        Ok(())
    });
    let reconnect = AutoReconnect::new(ReconnectPolicy::GapFill)
        .max_attempts(2)
        .delays(Duration::from_millis(1), Duration::from_millis(2));
    let mut client = started_with(options(addr).auto_reconnect(reconnect)).await;
    let mut records = 0;
    let err = loop {
        match tokio::time::timeout(LIMIT, client.next_record())
            .await
            .expect("in time")
        {
            Ok(Some(_)) => records += 1,
            Ok(None) => panic!("must fail"),
            Err(err) => break err,
        }
    };
    assert_eq!(records, 4);
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    // The client stays failed.
    let again = client.next_record().await.expect_err("still failed");
    assert_eq!(again.kind(), ErrorKind::Closed);
    server.join().expect("gateway thread").expect("gateway io");
}

async fn started_with(options: LiveOptions) -> LiveClient {
    let mut client = LiveClient::connect(options).await.expect("connect");
    client
        .subscribe(Subscription::new(Schema::Mbo, ["ESH1"]))
        .await
        .expect("subscribe");
    client.start().await.expect("start");
    client
}
