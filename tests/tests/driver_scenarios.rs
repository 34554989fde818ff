//! One scenario list, run against both drivers with the same assertions: every
//! scenario is a function generic over [`Driver`], and `for_each_driver!` instantiates
//! each for `dbn-pipe-mio` and `dbn-pipe-tokio`.
//!
//! The live gateway and the historical server are the repo's loopback mocks
//! (`dbn_pipe_tests::mock_gateway`, `dbn_pipe_tests::mock_historical`), written
//! without the protocol crate; the expected records come from what the mocks sent
//! or from the `dbn` crate's own decoder.

use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use dbn::{SType, Schema};
use dbn_pipe_protocol::historical::GetRangeParams;
use dbn_pipe_protocol::live::{AutoReconnect, LiveCompression, ReconnectPolicy, Subscription};
use dbn_pipe_tests::mock_gateway::{Behavior, ConnectionLog, MockGateway, Script};
use dbn_pipe_tests::mock_historical::{self, CutKind, Fault, Framing, MockHistorical, Reply};
use dbn_pipe_tests::scenario::{
    Driver, Gate, KEY, LiveOutcome, LiveRun, RangeRun, RecordLog, assert_failed, oracle,
};

const DATASET: &str = "GLBX.MDP3";
/// Size of a generated MBO record on the wire.
const MBO_LEN: u64 = 56;

dbn_pipe_tests::for_each_driver!(
    live_plain_delivers_every_record_in_order,
    live_zstd_in_small_writes_delivers_every_record,
    rejected_key_is_an_auth_error,
    a_thousand_and_one_symbols_go_in_three_lines,
    ts_out_records_carry_the_send_time,
    heartbeat_interval_sets_the_timeout,
    stall_after_records_times_out_after_delivering_them,
    stall_after_auth_times_out,
    auth_timeout_when_the_gateway_never_speaks,
    disconnect_mid_record_is_truncation_after_every_record,
    connect_refused_is_a_connect_error,
    reconnect_resubscribe_reports_the_gap,
    reconnect_gap_fill_delivers_every_record_once,
    slow_consumer_stops_the_gateway_and_loses_nothing,
    two_live_sessions_and_a_download_at_once,
    range_in_every_framing_equals_the_oracle,
    range_error_statuses_carry_message_and_request_id,
    range_of_a_million_records_equals_the_oracle,
    range_cut_mid_body_is_truncation_after_the_records,
    range_to_file_writes_the_body_as_served,
);

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

fn mbo(symbols: &[&str]) -> Subscription {
    Subscription::new(Schema::Mbo, symbols)
}

fn gateway(script: Script) -> MockGateway {
    MockGateway::start(script).expect("start the mock gateway")
}

fn run_for(gw: &MockGateway) -> LiveRun {
    LiveRun::new(gw.addr().to_string(), DATASET, mbo(&["ESH1"]))
}

/// The gateway's logs once `n` connections ended.
fn logs(gw: &MockGateway, n: usize) -> Vec<ConnectionLog> {
    gw.ended_connections(n, Duration::from_secs(20))
}

/// The records a connection delivered, as a log.
fn sent(logs: &[&ConnectionLog]) -> RecordLog {
    let mut log = RecordLog::new(true);
    for conn in logs {
        for record in &conn.records {
            log.push(record);
        }
    }
    log
}

fn assert_clean<D: Driver>(out: &LiveOutcome) {
    assert!(
        out.failure.is_none(),
        "{}: unexpected failure {:?}",
        D::NAME,
        out.failure
    );
}

fn field<'a>(conn: &'a ConnectionLog, name: &str) -> Option<&'a str> {
    conn.auth.as_ref()?.get(name).map(String::as_str)
}

fn range_run(server: &MockHistorical) -> RangeRun {
    RangeRun {
        base_url: server.base_url(),
        root_pem: server.root_pem(),
        params: GetRangeParams::new(
            DATASET,
            Schema::Mbo,
            ["ESH1", "NQH1"],
            1_609_160_400_000_000_000u64,
        )
        .end(1_609_246_800_000_000_000u64)
        .stype_in(SType::RawSymbol),
        keep_records: true,
        read_timeout: Some(Duration::from_secs(10)),
    }
}

fn historical(reply: Reply) -> MockHistorical {
    MockHistorical::builder()
        .get_range(reply)
        .start()
        .expect("start the mock historical server")
}

// ---------------------------------------------------------------------------------
// Live
// ---------------------------------------------------------------------------------

fn live_plain_delivers_every_record_in_order<D: Driver>() {
    let gw = gateway(Script::new().generated_records(5_000).keep_records());
    let out = D::live(&run_for(&gw));
    let logs = logs(&gw, 1);
    assert_clean::<D>(&out);
    assert_eq!(out.records.count(), 5_000, "{}", D::NAME);
    assert_eq!(
        out.records,
        sent(&[&logs[0]]),
        "{}: records differ",
        D::NAME
    );
    assert_eq!(out.records.digest(), logs[0].records_sha256);
    assert_eq!(out.metadata.len(), 1);
    assert_eq!(out.metadata[0].dataset, DATASET);
    let conn = &logs[0];
    assert!(
        conn.violations.is_empty(),
        "{}: {:?}",
        D::NAME,
        conn.violations
    );
    assert_eq!(field(conn, "dataset"), Some(DATASET));
    assert_eq!(field(conn, "encoding"), Some("dbn"));
    assert_eq!(field(conn, "compression"), Some("none"));
    assert_eq!(field(conn, "ts_out"), Some("0"));
    assert!(field(conn, "client").is_some_and(|c| c.starts_with("dbn-pipe/")));
    assert_eq!(conn.subscriptions.len(), 1);
    let sub = &conn.subscriptions[0].fields;
    assert_eq!(sub.get("schema").map(String::as_str), Some("mbo"));
    assert_eq!(sub.get("symbols").map(String::as_str), Some("ESH1"));
    assert_eq!(sub.get("stype_in").map(String::as_str), Some("raw_symbol"));
    assert!(conn.start_session);
}

fn live_zstd_in_small_writes_delivers_every_record<D: Driver>() {
    let script = Script::new()
        .generated_records(3_000)
        .keep_records()
        .behavior(Behavior::new().write_split(997));
    let gw = gateway(script);
    let mut run = run_for(&gw);
    run.compression = LiveCompression::Zstd;
    let out = D::live(&run);
    let logs = logs(&gw, 1);
    assert_clean::<D>(&out);
    assert_eq!(field(&logs[0], "compression"), Some("zstd"));
    assert_eq!(out.records.count(), 3_000);
    assert_eq!(
        out.records,
        sent(&[&logs[0]]),
        "{}: records differ",
        D::NAME
    );
}

fn rejected_key_is_an_auth_error<D: Driver>() {
    let gw = gateway(
        Script::new()
            .generated_records(10)
            .behavior(Behavior::new().reject_auth("API key deactivated")),
    );
    let out = D::live(&run_for(&gw));
    assert_failed::<D>(out.failure.as_ref(), "auth", &["API key deactivated"]);
    assert_eq!(out.records.count(), 0);
    let logs = logs(&gw, 1);
    assert!(!logs[0].start_session, "nothing is sent after a rejection");
}

fn a_thousand_and_one_symbols_go_in_three_lines<D: Driver>() {
    let gw = gateway(Script::new().generated_records(10).keep_records());
    let symbols: Vec<String> = (0..1001).map(|i| format!("SYM{i}")).collect();
    let mut run = run_for(&gw);
    run.subscriptions = vec![Subscription::new(Schema::Trades, symbols.clone())];
    let out = D::live(&run);
    assert_clean::<D>(&out);
    let logs = logs(&gw, 1);
    let lines = &logs[0].subscriptions;
    let counts: Vec<usize> = lines
        .iter()
        .map(|l| l.fields["symbols"].split(',').count())
        .collect();
    let last: Vec<&str> = lines.iter().map(|l| l.fields["is_last"].as_str()).collect();
    assert_eq!(counts, [500, 500, 1], "{}", D::NAME);
    assert_eq!(last, ["0", "0", "1"], "{}", D::NAME);
    let joined: Vec<String> = lines
        .iter()
        .flat_map(|l| l.fields["symbols"].split(',').map(str::to_owned))
        .collect();
    assert_eq!(joined, symbols);
    assert!(
        lines.iter().all(|l| !l.after_start),
        "subscriptions precede start_session"
    );
    assert_eq!(out.records.count(), 10);
}

fn ts_out_records_carry_the_send_time<D: Driver>() {
    let gw = gateway(Script::new().generated_records(200).keep_records());
    let mut run = run_for(&gw);
    run.ts_out = true;
    let out = D::live(&run);
    assert_clean::<D>(&out);
    let logs = logs(&gw, 1);
    assert_eq!(field(&logs[0], "ts_out"), Some("1"));
    let records = out.records.records().unwrap();
    assert_eq!(records.len(), 200);
    assert!(records.iter().all(|r| r.len() as u64 == MBO_LEN + 8));
    assert_eq!(
        out.records,
        sent(&[&logs[0]]),
        "{}: ts_out bytes differ",
        D::NAME
    );
}

fn heartbeat_interval_sets_the_timeout<D: Driver>() {
    // The gateway goes quiet after 20 records; with a 5 s heartbeat interval the
    // client gives up 10 s after the last byte.
    let gw = gateway(
        Script::new()
            .generated_records(100)
            .keep_records()
            .behavior(Behavior::new().stall_after_records(20)),
    );
    let mut run = run_for(&gw);
    run.heartbeat_interval_s = Some(5);
    let out = D::live(&run);
    assert_failed::<D>(out.failure.as_ref(), "timeout", &["heartbeat", "10s"]);
    assert_eq!(out.records.count(), 20);
    let logs = gw.connections();
    assert_eq!(field(&logs[0], "heartbeat_interval_s"), Some("5"));
}

fn stall_after_records_times_out_after_delivering_them<D: Driver>() {
    let gw = gateway(
        Script::new()
            .generated_records(1_000)
            .keep_records()
            .behavior(Behavior::new().stall_after_records(700)),
    );
    let mut run = run_for(&gw);
    run.silence_timeout = Some(Duration::from_millis(300));
    let out = D::live(&run);
    assert_failed::<D>(out.failure.as_ref(), "timeout", &["heartbeat"]);
    assert_eq!(
        out.records.count(),
        700,
        "{}: records before the stall",
        D::NAME
    );
    let logs = logs(&gw, 1);
    assert_eq!(out.records, sent(&[&logs[0]]));
}

fn stall_after_auth_times_out<D: Driver>() {
    let gw = gateway(
        Script::new()
            .generated_records(10)
            .behavior(Behavior::new().stall_after_auth()),
    );
    let mut run = run_for(&gw);
    run.silence_timeout = Some(Duration::from_millis(300));
    let out = D::live(&run);
    assert_failed::<D>(out.failure.as_ref(), "timeout", &[]);
    assert_eq!(out.records.count(), 0);
    assert!(out.metadata.is_empty());
}

fn auth_timeout_when_the_gateway_never_speaks<D: Driver>() {
    // Accepts the connection (the kernel does) and never writes a byte.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut run = LiveRun::new(addr.to_string(), DATASET, mbo(&["ESH1"]));
    run.auth_timeout = Some(Duration::from_millis(300));
    let out = D::live(&run);
    assert_failed::<D>(out.failure.as_ref(), "timeout", &["auth"]);
    drop(listener);
}

fn disconnect_mid_record_is_truncation_after_every_record<D: Driver>() {
    for compression in [LiveCompression::None, LiveCompression::Zstd] {
        let gw = gateway(
            Script::new()
                .generated_records(500)
                .keep_records()
                .behavior(Behavior::new().cut_mid_record_after(321)),
        );
        let mut run = run_for(&gw);
        run.compression = compression;
        let out = D::live(&run);
        assert_failed::<D>(out.failure.as_ref(), "truncated", &[]);
        assert_eq!(out.records.count(), 321, "{} {compression:?}", D::NAME);
        let logs = logs(&gw, 1);
        assert_eq!(out.records, sent(&[&logs[0]]));
    }
}

fn connect_refused_is_a_connect_error<D: Driver>() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let run = LiveRun::new(format!("127.0.0.1:{port}"), DATASET, mbo(&["ESH1"]));
    let out = D::live(&run);
    assert_failed::<D>(out.failure.as_ref(), "connect", &[&port.to_string()]);
}

fn reconnect_config(policy: ReconnectPolicy) -> AutoReconnect {
    AutoReconnect::new(policy)
        .max_attempts(3)
        .delays(Duration::from_millis(10), Duration::from_millis(50))
}

fn reconnect_resubscribe_reports_the_gap<D: Driver>() {
    let script = Script::new()
        .generated_records(300)
        .keep_records()
        .on_connection(0, Behavior::new().cut_mid_record_after(100))
        .on_connection(1, Behavior::new().skip_on_resume(20));
    let gw = gateway(script);
    let mut run = run_for(&gw);
    run.auto_reconnect = Some(reconnect_config(ReconnectPolicy::Resubscribe));
    // A live client with auto-reconnect reconnects after a clean end too: the
    // consumer stops once it has what the gateway will ever send.
    run.max_records = Some(280);
    let out = D::live(&run);
    assert_clean::<D>(&out);
    let logs = logs(&gw, 2);
    // The gap starts at the index timestamp (ts_recv for MBO) of the last record.
    let last_ts = dbn_pipe_tests::generate::mbo_record(99).ts_recv;
    assert_eq!(
        out.reconnects,
        [(ReconnectPolicy::Resubscribe, Some(last_ts))],
        "{}",
        D::NAME
    );
    assert!(
        logs[1]
            .subscriptions
            .iter()
            .all(|s| !s.fields.contains_key("start"))
    );
    assert_eq!(
        logs[1].first_record_index,
        Some(120),
        "the gateway skipped 20"
    );
    assert_eq!(out.records.count(), 100 + 180);
    assert_eq!(out.records, sent(&[&logs[0], &logs[1]]), "{}", D::NAME);
    assert_eq!(out.metadata.len(), 2, "one metadata per connection");
}

fn reconnect_gap_fill_delivers_every_record_once<D: Driver>() {
    // Runs of 3 records share a timestamp, and the cut falls inside a run: the
    // replay from `start` repeats records the client already has.
    let script = Script::new()
        .generated_records_with_ties(300, 3)
        .keep_records()
        .on_connection(0, Behavior::new().cut_mid_record_after(100));
    let gw = gateway(script);
    let mut run = run_for(&gw);
    run.auto_reconnect = Some(reconnect_config(ReconnectPolicy::GapFill));
    run.max_records = Some(300);
    let out = D::live(&run);
    assert_clean::<D>(&out);
    let logs = logs(&gw, 2);
    assert_eq!(
        out.reconnects,
        [(ReconnectPolicy::GapFill, None)],
        "{}",
        D::NAME
    );
    let start = logs[1].subscriptions[0].fields.get("start").cloned();
    let replay_from = logs[1]
        .first_record_index
        .expect("the second connection served");
    assert!(
        start.is_some() && replay_from < 100,
        "{start:?} {replay_from}"
    );
    // Expected: the first connection's 100 records, then the replay minus overlap.
    let mut expected = RecordLog::new(true);
    for record in &logs[0].records {
        expected.push(record);
    }
    for record in &logs[1].records[100 - replay_from..] {
        expected.push(record);
    }
    assert_eq!(expected.count(), 300);
    assert_eq!(out.records.count(), 300, "{}: every record once", D::NAME);
    assert_eq!(out.records, expected, "{}: order and bytes", D::NAME);
}

fn slow_consumer_stops_the_gateway_and_loses_nothing<D: Driver>() {
    const RECORDS: usize = 1_000_000;
    let gw = gateway(
        Script::new()
            .generated_records(RECORDS)
            .behavior(Behavior::new().write_chunk(1 << 20)),
    );
    let gate = Gate::new();
    let mut run = run_for(&gw);
    run.keep_records = false;
    run.pause = Some((1_000, gate.clone()));
    let runner = thread::spawn(move || D::live(&run));
    assert!(
        gate.wait_paused(Duration::from_secs(20)),
        "the consumer never paused"
    );
    let written = || gw.connections()[0].dbn_bytes_written;
    let at_pause = written();
    // The consumer holds still for a second; the gateway may fill socket buffers
    // and the client's fixed buffers, then its writes must block.
    thread::sleep(Duration::from_secs(1));
    let after = written();
    gate.open();
    let out = runner.join().expect("the driver thread");
    let logs = logs(&gw, 1);
    let held = after.saturating_sub(1_000 * MBO_LEN);
    let total = RECORDS as u64 * MBO_LEN;
    println!(
        "{}: while the consumer paused the gateway had written {after} of {total} bytes \
         ({} during the pause)",
        D::NAME,
        after - at_pause
    );
    // Loopback socket buffers are a few MiB; the client adds two 64 KiB buffers.
    assert!(
        held < 24 << 20,
        "{}: {held} bytes were taken while paused",
        D::NAME
    );
    assert!(after < total / 2);
    assert_clean::<D>(&out);
    assert_eq!(
        out.records.count(),
        RECORDS as u64,
        "{}: nothing lost",
        D::NAME
    );
    assert_eq!(out.records.digest(), logs[0].records_sha256);
}

fn two_live_sessions_and_a_download_at_once<D: Driver>() {
    let first = gateway(Script::new().generated_records(20_000).keep_records());
    let second = gateway(
        Script::new()
            .generated_records(15_000)
            .keep_records()
            .behavior(Behavior::new().write_split(4_096)),
    );
    let body = mock_historical::mbo_body(50_000, 64 * 1024);
    let server = historical(Reply::dbn_zst(body.clone()));
    let mut zstd_run = run_for(&second);
    zstd_run.compression = LiveCompression::Zstd;
    let ([a, b], range) = D::concurrent([&run_for(&first), &zstd_run], &range_run(&server));
    assert_clean::<D>(&a);
    assert_clean::<D>(&b);
    assert_eq!(a.records, sent(&[&logs(&first, 1)[0]]));
    assert_eq!(b.records, sent(&[&logs(&second, 1)[0]]));
    assert!(range.failure.is_none(), "{:?}", range.failure);
    let (metadata, records) = oracle(&body, false);
    assert_eq!(range.metadata.as_ref(), Some(&metadata));
    assert_eq!(range.records, records);
}

// ---------------------------------------------------------------------------------
// Historical
// ---------------------------------------------------------------------------------

fn range_in_every_framing_equals_the_oracle<D: Driver>() {
    let body = mock_historical::mbo_body(30_000, 32 * 1024);
    let (metadata, records) = oracle(&body, true);
    for framing in [
        Framing::ContentLength,
        Framing::Chunked { chunk_size: 7_919 },
        Framing::CloseDelimited { close_notify: true },
    ] {
        let server = historical(
            Reply::dbn_zst(body.clone())
                .framing(framing)
                .warnings(["dataset condition degraded"]),
        );
        let out = D::range(&range_run(&server));
        assert!(
            out.failure.is_none(),
            "{} {framing:?}: {:?}",
            D::NAME,
            out.failure
        );
        assert_eq!(out.metadata.as_ref(), Some(&metadata), "{framing:?}");
        assert_eq!(out.records, records, "{} {framing:?}: records", D::NAME);
        assert_eq!(out.warnings, ["dataset condition degraded"]);
        let requests = server.requests();
        let request = &requests[0];
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, mock_historical::GET_RANGE_PATH);
        assert_eq!(
            request.header("authorization"),
            Some(mock_historical::basic_auth(KEY).as_str())
        );
        assert_eq!(request.field("dataset"), Some(DATASET));
        assert_eq!(request.field("schema"), Some("mbo"));
        assert_eq!(request.field("symbols"), Some("ESH1,NQH1"));
        assert_eq!(request.field("encoding"), Some("dbn"));
        assert_eq!(request.field("compression"), Some("zstd"));
    }
}

fn range_error_statuses_carry_message_and_request_id<D: Driver>() {
    let cases = [
        (
            Reply::detail(422, "symbol ESZ9 not found").request_id("req-422"),
            vec!["422", "symbol ESZ9 not found", "req-422"],
        ),
        (
            Reply::structured(
                400,
                "invalid_end",
                "end is before start",
                serde_json::json!({"end": 1}),
            ),
            vec!["400", "end is before start"],
        ),
        (
            Reply::bad_gateway_html().request_id("req-502"),
            vec!["502", "req-502"],
        ),
    ];
    for (reply, says) in cases {
        let server = historical(reply);
        let out = D::range(&range_run(&server));
        assert_failed::<D>(out.failure.as_ref(), "http status", &says);
        assert_eq!(out.records.count(), 0);
    }
    // A wrong key: the server answers 401.
    let server = MockHistorical::builder()
        .key("db-ZYXWVUTSRQPONMLKJIHGFEDCBA987")
        .get_range(Reply::dbn_zst(mock_historical::mbo_body(10, 1024)))
        .start()
        .unwrap();
    let out = D::range(&range_run(&server));
    assert_failed::<D>(out.failure.as_ref(), "http status", &["401"]);
}

fn range_of_a_million_records_equals_the_oracle<D: Driver>() {
    let body = mock_historical::million_mbo_body();
    let (metadata, records) = oracle(&body, false);
    let server = historical(Reply::dbn_zst(body).framing(Framing::Chunked {
        chunk_size: 1 << 20,
    }));
    let mut run = range_run(&server);
    run.keep_records = false;
    let out = D::range(&run);
    assert!(out.failure.is_none(), "{}: {:?}", D::NAME, out.failure);
    assert_eq!(out.metadata, Some(metadata));
    assert_eq!(out.records.count(), mock_historical::MILLION);
    assert_eq!(
        out.records,
        records,
        "{}: a million records, in order",
        D::NAME
    );
}

fn range_cut_mid_body_is_truncation_after_the_records<D: Driver>() {
    let body = mock_historical::mbo_body(20_000, 16 * 1024);
    let (_, all) = oracle(&body, true);
    let all = all.records().unwrap();
    for how in [CutKind::Abrupt, CutKind::MidTlsRecord] {
        let server = historical(
            Reply::dbn_zst(body.clone())
                .framing(Framing::Chunked { chunk_size: 4_096 })
                .fault(Fault::Cut {
                    after_body_bytes: body.len() / 2,
                    how,
                }),
        );
        let out = D::range(&range_run(&server));
        assert_failed::<D>(out.failure.as_ref(), "truncated", &[]);
        let got = out.records.records().unwrap();
        assert!(
            !got.is_empty() && got.len() < all.len(),
            "{} {how:?}: {}",
            D::NAME,
            got.len()
        );
        assert!(
            got == &all[..got.len()],
            "{} {how:?}: a prefix of the oracle",
            D::NAME
        );
    }
}

fn range_to_file_writes_the_body_as_served<D: Driver>() {
    let body = mock_historical::mbo_body(200_000, 256 * 1024);
    let server =
        historical(Reply::dbn_zst(body.clone()).framing(Framing::Chunked { chunk_size: 65_536 }));
    let path = std::env::temp_dir().join(format!(
        "dbn-pipe-scenario-{}-{}.dbn.zst",
        D::NAME,
        std::process::id()
    ));
    let out = D::range_to_file(&range_run(&server), &path);
    let written = std::fs::read(&path).expect("the file exists");
    let _ = std::fs::remove_file(&path);
    assert!(out.failure.is_none(), "{}: {:?}", D::NAME, out.failure);
    assert!(
        written == body,
        "{}: the file differs from the served body",
        D::NAME
    );
    assert_eq!(out.bytes, body.len() as u64);
    assert_eq!(out.records, 200_000);
    assert!(!out.progress.is_empty(), "progress was reported");
    assert!(
        out.progress
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1)
    );
    assert_eq!(out.progress.last(), Some(&(body.len() as u64, 200_000)));
}
