//! Fault injection and resource bounds, run against both drivers with the same
//! assertions (every scenario is generic over [`Driver`]; `for_each_driver!` instantiates
//! it for `dbn-pipe-mio` and `dbn-pipe-tokio`):
//!
//! - truncation (a peer reset inside a record, a zstd frame, an HTTP chunk, a TLS
//!   record) fails with kind `truncated`, a message naming the layer, and every
//!   record that arrived whole before the cut;
//! - a consumer that pauses for 10 s while the gateway offers 1 GiB, a zstd bomb
//!   (historical and live), and oversized control lines and HTTP heads keep the
//!   client's peak memory under a stated bound;
//! - 10,000 connect/close cycles leak no file descriptor and almost no memory.
//!
//! Memory is measured in a child process that runs only the client: the test
//! re-executes its own binary (`--exact child_client --ignored`), passes the job in
//! the `DBN_PIPE_FAULTS_CHILD` environment variable, serves it from this process, and
//! reads the child's `/proc/self/status` figures from one `FAULTS-CHILD-REPORT` line.
//! Every bound is printed as `MEMORY-BOUND <name> measured_kib=.. bound_kib=..`.

use std::io::{BufRead, BufReader, Read, Write};
use std::ops::ControlFlow;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use dbn::encode::dbn::MetadataEncoder;
use dbn::{SType, Schema};
use dbn_pipe_protocol::historical::GetRangeParams;
use dbn_pipe_protocol::live::{ApiKey, LiveCompression, Start, Subscription};
use dbn_pipe_protocol::tls::TlsConfig;
use dbn_pipe_tests::drivers::{Mio, Tokio};
use dbn_pipe_tests::generate;
use dbn_pipe_tests::mock_gateway::{
    self, Behavior, ConnectionEnd, ConnectionLog, LongLineAt, MockGateway, Script,
};
use dbn_pipe_tests::mock_historical::{self, CutKind, Fault, Framing, MockHistorical, Reply};
use dbn_pipe_tests::scenario::{
    Driver, Failure, Gate, KEY, LiveOutcome, LiveRun, RangeOutcome, RangeRun, RecordLog,
    assert_failed,
};
use serde_json::{Value, json};

const DATASET: &str = "GLBX.MDP3";
/// Bytes of a generated MBO record on the wire.
const MBO_LEN: usize = 56;
/// The environment variable that carries a child's job.
const CHILD_ENV: &str = "DBN_PIPE_FAULTS_CHILD";
/// The name of the test that runs a child's job.
const CHILD_TEST: &str = "child_client";
/// Prefix of the child's report line.
const REPORT: &str = "FAULTS-CHILD-REPORT ";
/// Prefix of the child's progress lines.
const EVENT: &str = "FAULTS-CHILD-EVENT ";
/// The longest a child may run before it is killed and the test fails.
const CHILD_LIMIT: Duration = Duration::from_secs(300);

// Memory bounds (KiB). Each was picked from measurement with a clear margin; the
// measured values are printed with them.
/// Peak RSS of the client while a paused consumer is offered 1 GiB.
const PAUSED_PEAK_BOUND_KIB: u64 = 16 * 1024;
/// Peak RSS of the client while it reads 2M records of a zstd bomb.
const BOMB_PEAK_BOUND_KIB: u64 = 16 * 1024;
/// Peak RSS of the client fed an oversized control line or HTTP head.
const OVERSIZED_PEAK_BOUND_KIB: u64 = 16 * 1024;
/// RSS growth over 10,000 connect/close cycles after the warm-up.
const CYCLES_RSS_GROWTH_BOUND_KIB: u64 = 1024;

/// Records offered to the paused consumer: 1 GiB of generated MBO records.
const GIB_RECORDS: u64 = (1 << 30) / MBO_LEN as u64;
/// How long the paused consumer holds still.
const PAUSE: Duration = Duration::from_secs(10);
/// Records the consumer of a zstd bomb reads before it stops.
const BOMB_READ: u64 = 2_000_000;
/// Bytes offered in an oversized control line or HTTP head (the limits are 64 KiB).
const OVERSIZED: usize = 64 << 20;
/// Connect/close cycles per driver, and those of them that warm up.
const CYCLES: u64 = 10_000;
const WARM_UP: u64 = 200;

dbn_pipe_tests::for_each_driver!(
    reset_mid_record_is_truncation_naming_the_record,
    reset_mid_zstd_frame_is_truncation_naming_the_frame,
    reset_mid_chunk_is_truncation_naming_the_chunked_body,
    reset_mid_tls_record_is_truncation_naming_the_tls_record,
    paused_consumer_offered_a_gib_gets_it_all_in_bounded_memory,
    zstd_bomb_download_streams_in_bounded_memory,
    zstd_bomb_live_streams_in_bounded_memory,
    oversized_greeting_is_a_protocol_error_in_bounded_memory,
    oversized_auth_reply_is_a_protocol_error_in_bounded_memory,
    oversized_http_head_is_a_protocol_error_in_bounded_memory,
    ten_thousand_connect_close_cycles_leak_nothing,
);

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

fn gateway(script: Script) -> MockGateway {
    MockGateway::start(script).expect("start the mock gateway")
}

fn run_for(addr: &str) -> LiveRun {
    LiveRun::new(addr, DATASET, Subscription::new(Schema::Mbo, ["ESH1"]))
}

/// The gateway's logs once `n` connections ended.
fn logs(gw: &MockGateway, n: usize) -> Vec<ConnectionLog> {
    gw.ended_connections(n, Duration::from_secs(60))
}

fn sent(log: &ConnectionLog) -> RecordLog {
    let mut sent = RecordLog::new(true);
    for record in &log.records {
        sent.push(record);
    }
    sent
}

fn range_run(server: &MockHistorical) -> RangeRun {
    RangeRun {
        base_url: server.base_url(),
        root_pem: server.root_pem(),
        params: GetRangeParams::new(DATASET, Schema::Mbo, ["ESH1"], generate::START_NS)
            .end(generate::START_NS + 86_400_000_000_000)
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

/// The records a client can decode from a `.dbn.zst` body that was cut: the zstd
/// streaming decoder's output for the prefix (every block that arrived whole), cut
/// to whole DBN records. Written without the protocol crate.
fn decodable_records(prefix: &[u8]) -> Vec<Vec<u8>> {
    let mut plain = Vec::new();
    let mut decoder = zstd::stream::read::Decoder::new(prefix).expect("a zstd decoder");
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match decoder.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => plain.extend_from_slice(&buf[..n]),
        }
    }
    assert!(
        plain.len() >= 8 && plain.starts_with(b"DBN"),
        "a DBN prefix"
    );
    let metadata_len = u32::from_le_bytes(plain[4..8].try_into().unwrap()) as usize;
    let mut at = 8 + metadata_len;
    let mut records = Vec::new();
    while let Some(&words) = plain.get(at) {
        let len = usize::from(words) * 4;
        if len < 16 || at + len > plain.len() {
            break;
        }
        records.push(plain[at..at + len].to_vec());
        at += len;
    }
    records
}

/// The first `n` records of a `.dbn.zst` body as the `dbn` crate's own decoder
/// streams them, as a log (count and digest).
fn oracle_prefix(body: &[u8], n: u64) -> RecordLog {
    let reader = zstd::stream::read::Decoder::new(body).expect("a zstd decoder");
    let mut decoder = dbn::decode::dbn::Decoder::with_upgrade_policy(
        reader,
        dbn::VersionUpgradePolicy::UpgradeToV3,
    )
    .expect("the oracle reads the metadata");
    let mut log = RecordLog::new(false);
    while log.count() < n {
        match decoder.decode_ref().expect("the oracle decodes") {
            Some(record) => log.push(record.as_ref()),
            None => break,
        }
    }
    log
}

// ---------------------------------------------------------------------------------
// 1. Truncation names the layer
// ---------------------------------------------------------------------------------

fn reset_mid_record_is_truncation_naming_the_record<D: Driver>() {
    let gw = gateway(
        Script::new()
            .generated_records(2_000)
            .keep_records()
            .behavior(Behavior::new().cut_mid_record_after(1_234)),
    );
    let out = D::live(&run_for(&gw.addr().to_string()));
    assert_failed::<D>(out.failure.as_ref(), "truncated", &["record"]);
    let logs = logs(&gw, 1);
    assert_eq!(logs[0].end, Some(ConnectionEnd::Cut));
    assert_eq!(out.records.count(), 1_234, "{}", D::NAME);
    assert_eq!(
        out.records,
        sent(&logs[0]),
        "{}: every record before the cut",
        D::NAME
    );
}

fn reset_mid_zstd_frame_is_truncation_naming_the_frame<D: Driver>() {
    // The frame stays open after a whole record: only the zstd layer is cut.
    let gw = gateway(
        Script::new()
            .generated_records(5_000)
            .keep_records()
            .behavior(Behavior::new().cut_after_records(3_210)),
    );
    let mut run = run_for(&gw.addr().to_string());
    run.compression = LiveCompression::Zstd;
    let out = D::live(&run);
    assert_failed::<D>(out.failure.as_ref(), "truncated", &["zstd frame"]);
    let first = logs(&gw, 1);
    assert_eq!(first[0].end, Some(ConnectionEnd::Cut));
    assert_eq!(out.records.count(), 3_210, "{}", D::NAME);
    assert_eq!(
        out.records,
        sent(&first[0]),
        "{}: every record before the cut",
        D::NAME
    );

    // Cut on the wire inside a compressed block: every record of the blocks that
    // arrived whole is delivered (at least those of the writes that completed), in
    // order, and nothing else.
    let gw = gateway(
        Script::new()
            .generated_records(50_000)
            .keep_records()
            .behavior(Behavior::new().disconnect_after_bytes(40_000)),
    );
    let mut run = run_for(&gw.addr().to_string());
    run.compression = LiveCompression::Zstd;
    let out = D::live(&run);
    assert_failed::<D>(out.failure.as_ref(), "truncated", &["zstd frame"]);
    let logs = logs(&gw, 1);
    assert_eq!(logs[0].dbn_bytes_written, 40_000);
    let got = out.records.records().expect("records kept");
    assert!(
        got.len() as u64 >= logs[0].records_sent && got.len() < 50_000,
        "{}: {} records delivered, {} in completed writes",
        D::NAME,
        got.len(),
        logs[0].records_sent
    );
    for (i, record) in got.iter().enumerate() {
        assert!(
            record[..] == *generate::mbo_record(i as u64).as_ref(),
            "{}: record {i} differs from the timeline",
            D::NAME
        );
    }
}

fn reset_mid_chunk_is_truncation_naming_the_chunked_body<D: Driver>() {
    let body = mock_historical::mbo_body(20_000, 16 * 1024);
    // Inside a 4 KiB chunk, which was announced whole.
    let cut = body.len() / 2 + 1_000;
    let server = historical(
        Reply::dbn_zst(body.clone())
            .framing(Framing::Chunked { chunk_size: 4_096 })
            .fault(Fault::Cut {
                after_body_bytes: cut,
                how: CutKind::Abrupt,
            }),
    );
    let out = D::range(&range_run(&server));
    assert_failed::<D>(
        out.failure.as_ref(),
        "truncated",
        &["chunked HTTP response body"],
    );
    let expected = decodable_records(&body[..cut]);
    let got = out.records.records().expect("records kept");
    assert!(!expected.is_empty());
    assert_eq!(
        got.len(),
        expected.len(),
        "{}: records before the cut",
        D::NAME
    );
    assert!(got == &expected[..], "{}: the records sent", D::NAME);
}

fn reset_mid_tls_record_is_truncation_naming_the_tls_record<D: Driver>() {
    let body = mock_historical::mbo_body(20_000, 16 * 1024);
    let cut = body.len() / 3;
    let server = historical(Reply::dbn_zst(body.clone()).fault(Fault::Cut {
        after_body_bytes: cut,
        how: CutKind::MidTlsRecord,
    }));
    let out = D::range(&range_run(&server));
    // The TLS layer tracks record framing: the cut is named where it happened.
    assert_failed::<D>(out.failure.as_ref(), "truncated", &["a TLS record"]);
    let expected = decodable_records(&body[..cut]);
    let got = out.records.records().expect("records kept");
    assert!(!expected.is_empty());
    assert_eq!(
        got.len(),
        expected.len(),
        "{}: records before the cut",
        D::NAME
    );
    assert!(got == &expected[..], "{}: the records sent", D::NAME);
}

// ---------------------------------------------------------------------------------
// Child processes: the client alone, measured
// ---------------------------------------------------------------------------------

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// What a child reported: its job's figures.
#[derive(Debug)]
struct ChildReport(Value);

impl ChildReport {
    fn u64(&self, name: &str) -> u64 {
        self.0[name]
            .as_u64()
            .unwrap_or_else(|| panic!("child report without {name}: {}", self.0))
    }

    fn str(&self, name: &str) -> &str {
        self.0[name]
            .as_str()
            .unwrap_or_else(|| panic!("child report without {name}: {}", self.0))
    }

    fn failure(&self) -> Option<Failure> {
        let f = &self.0["failure"];
        // Only kind and message travel; the debug text stays in the child.
        f.is_object().then(|| Failure {
            kind: f["kind"].as_str().unwrap_or_default().to_owned(),
            message: f["message"].as_str().unwrap_or_default().to_owned(),
            debug: String::new(),
        })
    }
}

/// Runs `job` for driver `D` in a child process and returns its report. Each line
/// the child prints after [`EVENT`] is handed to `on_event` with a writer to the
/// child's stdin, for replies.
fn run_child<D: Driver>(
    mut job: Value,
    mut on_event: impl FnMut(&str, &mut dyn Write),
) -> ChildReport {
    job["driver"] = json!(D::NAME);
    let exe = std::env::current_exe().expect("the test binary");
    let mut child = Command::new(exe)
        .args(["--exact", CHILD_TEST, "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD_ENV, job.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut stderr = child.stderr.take().expect("child stderr");
    let mut stdin = child.stdin.take().expect("child stdin");
    let child: Arc<Mutex<Child>> = Arc::new(Mutex::new(child));
    // A watchdog ends the child if it runs too long; `done` stops it.
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = {
        let child = Arc::clone(&child);
        thread::spawn(move || {
            if finished.recv_timeout(CHILD_LIMIT).is_err() {
                let _ = child.lock().unwrap_or_else(|e| e.into_inner()).kill();
                return true;
            }
            false
        })
    };
    let errors = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut report = None;
    let mut output = String::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        // libtest may have printed `test child_client ... ` on the same line.
        if let Some(at) = line.find(REPORT) {
            let json = &line[at + REPORT.len()..];
            report = Some(serde_json::from_str::<Value>(json).expect("a JSON report"));
        } else if let Some(at) = line.find(EVENT) {
            on_event(&line[at + EVENT.len()..], &mut stdin);
        } else {
            output.push_str(&line);
            output.push('\n');
        }
    }
    drop(stdin);
    let _ = done.send(());
    let killed = watchdog.join().expect("the watchdog");
    let status = child
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .wait()
        .expect("wait for the child");
    let errors = errors.join().unwrap_or_default();
    assert!(!killed, "{}: the child ran over {CHILD_LIMIT:?}", D::NAME);
    assert!(
        status.success(),
        "{}: the child failed ({status}):\n{output}\n{errors}",
        D::NAME
    );
    let report =
        report.unwrap_or_else(|| panic!("{}: the child printed no report:\n{output}", D::NAME));
    ChildReport(report)
}

/// Prints a measured memory figure with its bound in a parseable line and checks it.
/// The line goes straight to stderr, past the test harness's output capture, so the
/// README's test command shows every bound.
fn check_bound(name: &str, driver: &str, measured_kib: u64, bound_kib: u64, what: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "MEMORY-BOUND {name} driver={driver} measured_kib={measured_kib} \
         bound_kib={bound_kib} ({what}: {:.1} MiB, bound {:.1} MiB)",
        measured_kib as f64 / 1024.0,
        bound_kib as f64 / 1024.0
    );
    assert!(
        measured_kib <= bound_kib,
        "{driver}: {what}: {measured_kib} KiB is over the bound of {bound_kib} KiB"
    );
}

/// The job of a child process, from [`CHILD_ENV`]: runs the client and prints one
/// [`REPORT`] line. Does nothing (with a note) when run directly.
#[test]
#[ignore = "run by the memory tests as a child process"]
fn child_client() {
    let Ok(job) = std::env::var(CHILD_ENV) else {
        println!("note: {CHILD_TEST} only runs as a child of the memory tests");
        return;
    };
    let job: Value = serde_json::from_str(&job).expect("a JSON job");
    let report = match job["driver"].as_str() {
        Some("mio") => child_job::<Mio>(&job),
        Some("tokio") => child_job::<Tokio>(&job),
        other => panic!("unknown driver {other:?}"),
    };
    println!("{REPORT}{report}");
}

fn failure_json(failure: Option<&Failure>) -> Value {
    match failure {
        Some(f) => json!({ "kind": f.kind, "message": f.message }),
        None => Value::Null,
    }
}

fn live_json(out: &LiveOutcome) -> Value {
    json!({
        "records": out.records.count(),
        "digest": out.records.digest(),
        "failure": failure_json(out.failure.as_ref()),
    })
}

fn child_job<D: FaultDriver>(job: &Value) -> Value {
    let (rss_start, _) = memory_kib();
    let addr = job["addr"].as_str().unwrap_or_default();
    let mut report = match job["job"].as_str().expect("a job name") {
        "paused" => {
            let gate = Gate::new();
            let mut run = run_for(addr);
            run.keep_records = false;
            run.pause = Some((
                job["pause_after"].as_u64().expect("pause_after"),
                gate.clone(),
            ));
            // The parent decides when the consumer goes on: it answers on stdin.
            let opener = thread::spawn(move || {
                assert!(gate.wait_paused(Duration::from_secs(60)), "never paused");
                println!("{EVENT}paused");
                let mut line = String::new();
                let _ = std::io::stdin().read_line(&mut line);
                gate.open();
            });
            let out = D::live(&run);
            opener.join().expect("the gate opener");
            live_json(&out)
        }
        "bomb-range" => {
            let run = RangeRun {
                base_url: job["base_url"].as_str().expect("base_url").to_owned(),
                root_pem: job["root_pem"].as_str().expect("root_pem").to_owned(),
                ..range_run_params()
            };
            let out = D::range_first(&run, job["max"].as_u64().expect("max"));
            json!({
                "records": out.records.count(),
                "digest": out.records.digest(),
                "failure": failure_json(out.failure.as_ref()),
            })
        }
        "live" => {
            let mut run = run_for(addr);
            run.keep_records = false;
            run.max_records = job["max"].as_u64();
            if job["zstd"].as_bool() == Some(true) {
                run.compression = LiveCompression::Zstd;
            }
            run.auth_timeout = Some(Duration::from_secs(20));
            live_json(&D::live(&run))
        }
        "range" => {
            let run = RangeRun {
                base_url: job["base_url"].as_str().expect("base_url").to_owned(),
                root_pem: job["root_pem"].as_str().expect("root_pem").to_owned(),
                ..range_run_params()
            };
            let out = D::range(&run);
            json!({
                "records": out.records.count(),
                "failure": failure_json(out.failure.as_ref()),
            })
        }
        "cycles" => {
            let mut run = run_for(addr);
            // Every connection replays the gateway's timeline from its start.
            run.subscriptions =
                vec![Subscription::new(Schema::Mbo, ["ESH1"]).start(Start::Nanos(0))];
            run.silence_timeout = Some(Duration::from_secs(10));
            run.keep_records = false;
            let per_cycle = job["records"].as_u64().expect("records");
            run.max_records = Some(per_cycle);
            let cycles = job["cycles"].as_u64().expect("cycles");
            let warm_up = job["warm_up"].as_u64().expect("warm_up");
            let mut warm = None;
            let started = Instant::now();
            for cycle in 0..cycles {
                let out = D::live(&run);
                assert!(out.failure.is_none(), "cycle {cycle}: {:?}", out.failure);
                assert_eq!(out.records.count(), per_cycle, "cycle {cycle}");
                assert_eq!(out.metadata.len(), 1, "cycle {cycle}");
                if cycle + 1 == warm_up {
                    warm = Some((open_fds(), memory_kib().0, started.elapsed()));
                }
            }
            let (fds_warm, rss_warm, warm_time) = warm.expect("the warm-up ran");
            let (rss_end, _) = memory_kib();
            json!({
                "fds_warm": fds_warm,
                "fds_end": open_fds(),
                "rss_warm_kib": rss_warm,
                "rss_end_kib": rss_end,
                "cycles_ms": (started.elapsed() - warm_time).as_millis() as u64,
            })
        }
        other => panic!("unknown job {other}"),
    };
    let (rss_end, hwm) = memory_kib();
    report["vmrss_start_kib"] = json!(rss_start);
    report["vmrss_end_kib"] = json!(rss_end);
    report["vmhwm_kib"] = json!(hwm);
    report
}

/// A download request without a server (filled in from the job).
fn range_run_params() -> RangeRun {
    RangeRun {
        base_url: String::new(),
        root_pem: String::new(),
        params: GetRangeParams::new(DATASET, Schema::Mbo, ["ESH1"], generate::START_NS)
            .stype_in(SType::RawSymbol),
        keep_records: false,
        read_timeout: Some(Duration::from_secs(20)),
    }
}

// ---------------------------------------------------------------------------------
// A download that stops early (the consumer drops the client)
// ---------------------------------------------------------------------------------

/// What the memory tests need beyond [`Driver`]: a download whose consumer stops
/// after `max` records and drops the client.
trait FaultDriver: Driver {
    fn range_first(run: &RangeRun, max: u64) -> RangeOutcome;
}

impl FaultDriver for Mio {
    fn range_first(run: &RangeRun, max: u64) -> RangeOutcome {
        use dbn_pipe_mio::{HistoricalItem, HistoricalOptions, run_get_range};
        let mut out = RangeOutcome::new(run.keep_records);
        let result = (|| -> Result<(), dbn_pipe_mio::Error> {
            let tls = TlsConfig::builder()
                .without_webpki_roots()
                .add_pem(run.root_pem.as_bytes())?
                .build()?;
            let mut options = HistoricalOptions::new(ApiKey::new(KEY)?)
                .base_url(&run.base_url)
                .tls(tls);
            if let Some(timeout) = run.read_timeout {
                options = options.read_timeout(timeout);
            }
            run_get_range(options, &run.params, |item| {
                match item {
                    HistoricalItem::Metadata(m) => out.metadata = Some(*m),
                    HistoricalItem::Record(record) => {
                        out.records.push(record.as_ref());
                        if out.records.count() >= max {
                            return ControlFlow::Break(());
                        }
                    }
                    _ => {}
                }
                ControlFlow::Continue(())
            })
        })();
        if let Err(err) = result {
            out.failure = Some(Failure::new(err.kind(), &err));
        }
        out
    }
}

impl FaultDriver for Tokio {
    fn range_first(run: &RangeRun, max: u64) -> RangeOutcome {
        use dbn_pipe_tokio::HistoricalOptions;
        let runtime = ::tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let mut out = RangeOutcome::new(run.keep_records);
        let result = runtime.block_on(async {
            let tls = TlsConfig::builder()
                .without_webpki_roots()
                .add_pem(run.root_pem.as_bytes())?
                .build()?;
            let mut options = HistoricalOptions::new(ApiKey::new(KEY)?)
                .base_url(&run.base_url)
                .tls(tls);
            if let Some(timeout) = run.read_timeout {
                options = options.read_timeout(timeout);
            }
            let mut client = options.build()?;
            let mut stream = client.timeseries_get_range(&run.params).await?;
            out.metadata = Some(stream.metadata().clone());
            while out.records.count() < max {
                match stream.next_record().await? {
                    Some(record) => out.records.push(record.as_ref()),
                    None => break,
                }
            }
            Ok::<(), dbn_pipe_tokio::Error>(())
        });
        if let Err(err) = result {
            out.failure = Some(Failure::new(err.kind(), &err));
        }
        out
    }
}

// ---------------------------------------------------------------------------------
// 2. A paused consumer offered 1 GiB
// ---------------------------------------------------------------------------------

fn paused_consumer_offered_a_gib_gets_it_all_in_bounded_memory<D: FaultDriver>() {
    let gw = gateway(
        Script::new()
            .generated_records(GIB_RECORDS as usize)
            .bulk_writes()
            .behavior(Behavior::new().write_chunk(1 << 20)),
    );
    let started = Instant::now();
    let mut held = None;
    let report = run_child::<D>(
        json!({ "job": "paused", "addr": gw.addr().to_string(), "pause_after": 1_000 }),
        |event, stdin| {
            assert_eq!(event, "paused");
            let written = || gw.connections()[0].dbn_bytes_written;
            let at_pause = written();
            thread::sleep(PAUSE);
            held = Some((at_pause, written()));
            let _ = writeln!(stdin, "go");
            let _ = stdin.flush();
        },
    );
    let elapsed = started.elapsed();
    let logs = logs(&gw, 1);
    let (at_pause, at_resume) = held.expect("the consumer paused");
    assert!(
        report.failure().is_none(),
        "{}: {:?}",
        D::NAME,
        report.failure()
    );
    assert_eq!(
        report.u64("records"),
        GIB_RECORDS,
        "{}: every record",
        D::NAME
    );
    assert_eq!(logs[0].records_sent, GIB_RECORDS);
    assert_eq!(
        report.str("digest"),
        logs[0].records_sha256,
        "{}: every record exactly once, in order",
        D::NAME
    );
    println!(
        "{}: 1 GiB offered; the gateway had written {at_pause} bytes when the consumer \
         paused and {at_resume} when it resumed {PAUSE:?} later; run took {elapsed:.1?}",
        D::NAME
    );
    // The client holds fixed buffers; the rest waits in socket buffers (a few MiB).
    assert!(
        at_resume < 32 << 20,
        "{}: {at_resume} bytes were taken while paused",
        D::NAME
    );
    let peak = report.u64("vmhwm_kib");
    println!(
        "{}: client VmRSS at start {} KiB, VmHWM {peak} KiB",
        D::NAME,
        report.u64("vmrss_start_kib")
    );
    println!(
        "client peak memory: {:.1} MiB while 1 GiB was offered, bound {:.1} MiB ({})",
        peak as f64 / 1024.0,
        PAUSED_PEAK_BOUND_KIB as f64 / 1024.0,
        D::NAME
    );
    check_bound(
        "paused_consumer_1gib_peak",
        D::NAME,
        peak,
        PAUSED_PEAK_BOUND_KIB,
        "client peak memory while 1 GiB was offered",
    );
}

// ---------------------------------------------------------------------------------
// 3. zstd bomb
// ---------------------------------------------------------------------------------

/// Records in one frame of the bomb (just under 1 MiB of plaintext).
const BOMB_FRAME_RECORDS: usize = 18_724;
/// Frames of records in the bomb.
const BOMB_FRAMES: usize = 3_072;

/// A `.dbn.zst` body of a few hundred KB that expands to about 3 GiB: a metadata
/// frame, then one zstd frame of 1 MiB of one MBO record repeated, concatenated
/// [`BOMB_FRAMES`] times (about 128 bytes per frame: zstd's block overhead bounds
/// the ratio near 8,000:1). Returns the body and its record
/// count.
fn bomb() -> (Arc<[u8]>, u64) {
    let mut head = Vec::new();
    MetadataEncoder::new(&mut head)
        .encode(&generate::mbo_metadata(&["ESH1"]))
        .expect("metadata encodes");
    let block = generate::mbo_record(7).as_ref().repeat(BOMB_FRAME_RECORDS);
    let frame = zstd::bulk::compress(&block, 19).expect("zstd compresses");
    let mut body = zstd::bulk::compress(&head, 3).expect("zstd compresses");
    body.reserve(frame.len() * BOMB_FRAMES);
    for _ in 0..BOMB_FRAMES {
        body.extend_from_slice(&frame);
    }
    (body.into(), (BOMB_FRAME_RECORDS * BOMB_FRAMES) as u64)
}

fn print_bomb(body: &[u8], records: u64) {
    println!(
        "zstd bomb: {} KiB expanding to {:.2} GiB ({records} records)",
        body.len() / 1024,
        (records * MBO_LEN as u64) as f64 / f64::from(1 << 30)
    );
}

/// The child read the first `BOMB_READ` records of the bomb without a failure, and
/// they are exactly the oracle's.
fn assert_read_bomb_prefix<D: FaultDriver>(report: &ChildReport, body: &[u8]) {
    assert!(
        report.failure().is_none(),
        "{}: {:?}",
        D::NAME,
        report.failure()
    );
    assert_eq!(report.u64("records"), BOMB_READ, "{}", D::NAME);
    assert_eq!(
        report.str("digest"),
        oracle_prefix(body, BOMB_READ).digest(),
        "{}: the records",
        D::NAME
    );
}

fn zstd_bomb_download_streams_in_bounded_memory<D: FaultDriver>() {
    let (body, records) = bomb();
    print_bomb(&body, records);
    assert!(body.len() < 512 << 10 && records * (MBO_LEN as u64) > 3_000_000_000);
    let server = historical(Reply::dbn_zst(Arc::clone(&body)));
    let report = run_child::<D>(
        json!({
            "job": "bomb-range",
            "base_url": server.base_url(),
            "root_pem": server.root_pem(),
            "max": BOMB_READ,
        }),
        |_, _| {},
    );
    assert_read_bomb_prefix::<D>(&report, &body);
    check_bound(
        "zstd_bomb_download_peak",
        D::NAME,
        report.u64("vmhwm_kib"),
        BOMB_PEAK_BOUND_KIB,
        "client peak memory reading 2M records of a zstd bomb (download)",
    );
}

fn zstd_bomb_live_streams_in_bounded_memory<D: FaultDriver>() {
    let (body, records) = bomb();
    let gw = gateway(Script::new().raw_stream(Arc::clone(&body)));
    let report = run_child::<D>(
        json!({ "job": "live", "addr": gw.addr().to_string(), "max": BOMB_READ, "zstd": true }),
        |_, _| {},
    );
    assert_read_bomb_prefix::<D>(&report, &body);
    let logs = logs(&gw, 1);
    assert!(
        matches!(
            logs[0].end,
            Some(ConnectionEnd::ClientClosed | ConnectionEnd::Finished)
        ),
        "{}: {:?}",
        D::NAME,
        logs[0].end
    );
    println!(
        "{}: live zstd bomb of {} KiB ({:.2} GiB of records): the gateway wrote {} bytes",
        D::NAME,
        body.len() / 1024,
        (records * MBO_LEN as u64) as f64 / f64::from(1 << 30),
        logs[0].dbn_bytes_written
    );
    check_bound(
        "zstd_bomb_live_peak",
        D::NAME,
        report.u64("vmhwm_kib"),
        BOMB_PEAK_BOUND_KIB,
        "client peak memory reading 2M records of a zstd bomb (live)",
    );
}

// ---------------------------------------------------------------------------------
// 4. Oversized input
// ---------------------------------------------------------------------------------

fn oversized_line<D: FaultDriver>(at: LongLineAt) {
    let gw = gateway(
        Script::new()
            .generated_records(10)
            .behavior(Behavior::new().long_line(at, OVERSIZED)),
    );
    let report = run_child::<D>(
        json!({ "job": "live", "addr": gw.addr().to_string() }),
        |_, _| {},
    );
    assert_failed::<D>(
        report.failure().as_ref(),
        "protocol",
        &["control line", "exceeds the limit of 65536 bytes"],
    );
    assert_eq!(report.u64("records"), 0);
    let logs = logs(&gw, 1);
    assert_eq!(
        logs[0].end,
        Some(ConnectionEnd::ClientClosed),
        "{}",
        D::NAME
    );
    let written = logs[0].long_line_written;
    println!(
        "{}: the gateway got {written} of {OVERSIZED} bytes of the {at:?} line out",
        D::NAME
    );
    assert!(
        written < OVERSIZED as u64 / 2,
        "{}: the client read on after the limit",
        D::NAME
    );
    check_bound(
        &format!("oversized_{at:?}_line_peak").to_lowercase(),
        D::NAME,
        report.u64("vmhwm_kib"),
        OVERSIZED_PEAK_BOUND_KIB,
        &format!(
            "client peak memory fed a {} MiB {at:?} line",
            OVERSIZED >> 20
        ),
    );
}

fn oversized_greeting_is_a_protocol_error_in_bounded_memory<D: FaultDriver>() {
    oversized_line::<D>(LongLineAt::Greeting);
}

fn oversized_auth_reply_is_a_protocol_error_in_bounded_memory<D: FaultDriver>() {
    oversized_line::<D>(LongLineAt::AuthReply);
}

fn oversized_http_head_is_a_protocol_error_in_bounded_memory<D: FaultDriver>() {
    let body = mock_historical::mbo_body(10, 1024);
    // One header line of 64 MiB.
    let huge = "a".repeat(OVERSIZED);
    let server = historical(Reply::dbn_zst(body.clone()).header("X-Filler", &huge));
    drop(huge);
    let report = run_child::<D>(
        json!({ "job": "range", "base_url": server.base_url(), "root_pem": server.root_pem() }),
        |_, _| {},
    );
    assert_failed::<D>(
        report.failure().as_ref(),
        "protocol",
        &["HTTP response head", "65536"],
    );
    assert_eq!(report.u64("records"), 0);
    check_bound(
        "oversized_http_head_peak",
        D::NAME,
        report.u64("vmhwm_kib"),
        OVERSIZED_PEAK_BOUND_KIB,
        "client peak memory fed a 64 MiB HTTP header",
    );

    // A 1 MiB header section of many short headers.
    let mut reply = Reply::dbn_zst(body);
    for i in 0..16_384 {
        reply = reply.header(
            &format!("X-Filler-{i}"),
            "0123456789012345678901234567890123456789",
        );
    }
    let server = historical(reply);
    let report = run_child::<D>(
        json!({ "job": "range", "base_url": server.base_url(), "root_pem": server.root_pem() }),
        |_, _| {},
    );
    assert_failed::<D>(report.failure().as_ref(), "protocol", &["HTTP response"]);
    let message = report.failure().map(|f| f.message).unwrap_or_default();
    assert!(
        message.contains("head exceeds the limit") || message.contains("more than 64 headers"),
        "{}: {message:?} names neither the head size nor the header count",
        D::NAME
    );
    check_bound(
        "oversized_http_header_section_peak",
        D::NAME,
        report.u64("vmhwm_kib"),
        OVERSIZED_PEAK_BOUND_KIB,
        "client peak memory fed a 1 MiB section of 16,384 HTTP headers",
    );
}

// ---------------------------------------------------------------------------------
// 5. Connect/close cycles
// ---------------------------------------------------------------------------------

fn ten_thousand_connect_close_cycles_leak_nothing<D: FaultDriver>() {
    // Each connection: handshake, one subscription, start, metadata, 3 records; the
    // client closes while the gateway stays open.
    let gw = gateway(Script::new().generated_records(5).stay_open());
    let report = run_child::<D>(
        json!({
            "job": "cycles",
            "addr": gw.addr().to_string(),
            "cycles": CYCLES,
            "warm_up": WARM_UP,
            "records": 3,
        }),
        |_, _| {},
    );
    let total = CYCLES as usize;
    let logs = logs(&gw, total);
    assert_eq!(logs.len(), total, "{}: one connection per cycle", D::NAME);
    let not_closed: Vec<_> = logs
        .iter()
        .filter(|l| l.end != Some(ConnectionEnd::ClientClosed))
        .map(|l| (l.index, l.end.clone()))
        .take(5)
        .collect();
    assert!(
        not_closed.is_empty(),
        "{}: connections not closed by the client: {not_closed:?}",
        D::NAME
    );
    let (fds_warm, fds_end) = (report.u64("fds_warm"), report.u64("fds_end"));
    let (rss_warm, rss_end) = (report.u64("rss_warm_kib"), report.u64("rss_end_kib"));
    let growth = rss_end.saturating_sub(rss_warm);
    println!(
        "{}: {} cycles after a warm-up of {WARM_UP} in {} ms: open fds {fds_warm} -> \
         {fds_end}, VmRSS {rss_warm} -> {rss_end} KiB (+{growth} KiB)",
        D::NAME,
        CYCLES - WARM_UP,
        report.u64("cycles_ms")
    );
    let _ = writeln!(
        std::io::stderr(),
        "FD-CHECK cycles driver={} fds_warm={fds_warm} fds_end={fds_end}",
        D::NAME
    );
    assert_eq!(fds_end, fds_warm, "{}: file descriptors leaked", D::NAME);
    check_bound(
        "connect_close_cycles_rss_growth",
        D::NAME,
        growth,
        CYCLES_RSS_GROWTH_BOUND_KIB,
        "client VmRSS growth over 10,000 connect/close cycles",
    );
}

// ---------------------------------------------------------------------------------
// The mock's bulk records are the generator's
// ---------------------------------------------------------------------------------

#[test]
fn bulk_generated_records_equal_the_generator() {
    for (first, count) in [
        (0u64, 3_000usize),
        (959, 2),
        (123_456, 1_000),
        (19_000_000, 2_000),
    ] {
        let mut bulk = Vec::new();
        mock_gateway::append_generated_records(first, count, &mut bulk);
        let mut one_by_one = Vec::new();
        for i in first..first + count as u64 {
            one_by_one.extend_from_slice(generate::mbo_record(i).as_ref());
        }
        assert!(bulk == one_by_one, "records {first}..+{count} differ");
    }
    // A gateway in bulk mode sends the digest of the one-by-one gateway.
    let digest = |script: Script| {
        let gw = gateway(script.generated_records(30_000));
        let out = Mio::live(&run_for(&gw.addr().to_string()));
        assert!(out.failure.is_none(), "{:?}", out.failure);
        let log = &logs(&gw, 1)[0];
        assert_eq!(out.records.digest(), log.records_sha256);
        (log.records_sent, log.records_sha256.clone())
    };
    assert_eq!(digest(Script::new().bulk_writes()), digest(Script::new()));
}
