//! The `live` and `get_range` example programs of both drivers, spawned as processes
//! against the loopback mocks: with `--json` their stdout must be exactly the JSON the
//! `dbn` crate's own encoder writes for the records the mock served, and failures
//! must exit non-zero naming the layer.
//!
//! The programs are built by the README's test command (`cargo test --workspace`
//! builds every example of the workspace).

use std::path::PathBuf;
use std::process::{Command, Output};

use dbn::decode::DecodeRecordRef;
use dbn::decode::dbn::RecordDecoder;
use dbn::decode::dbn::fsm::{DbnFsm, ProcessResult};
use dbn::encode::EncodeRecordRef;
use dbn::encode::json::Encoder as JsonEncoder;
use dbn_pipe_tests::mock_gateway::{Behavior, MockGateway, Script};
use dbn_pipe_tests::mock_historical::{self, MockHistorical, Reply};
use dbn_pipe_tests::scenario::KEY;

/// The example binary `name`, next to this test's own executable.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "example {name} is not built at {}: run the README's test command \
         (cargo test --workspace), which builds every example",
        path.display()
    );
    path
}

fn run(name: &str, args: &[&str], key: &str) -> Output {
    Command::new(example(name))
        .args(args)
        .env("DATABENTO_API_KEY", key)
        .env_remove("RUST_LOG")
        .output()
        .expect("spawn the example")
}

/// The oracle: `dbn`'s JSON encoder over records decoded by `dbn`'s decoder.
fn json_lines_of_records(records: &[Vec<u8>]) -> String {
    let bytes: Vec<u8> = records.concat();
    let mut decoder =
        RecordDecoder::with_version(&bytes[..], 3, dbn::VersionUpgradePolicy::AsIs, false)
            .expect("oracle decoder");
    let mut out = Vec::new();
    {
        let mut encoder = JsonEncoder::new(&mut out, false, false, false);
        while let Some(record) = decoder.decode_record_ref().expect("oracle decode") {
            encoder.encode_record_ref(record).expect("oracle encode");
        }
    }
    String::from_utf8(out).expect("JSON is UTF-8")
}

fn json_lines_of_body(body_zst: &[u8]) -> String {
    let plain = zstd::stream::decode_all(body_zst).expect("zstd body");
    let mut fsm = DbnFsm::builder().build().expect("fsm");
    fsm.write_all(&plain);
    let mut out = Vec::new();
    {
        let mut encoder = JsonEncoder::new(&mut out, false, false, false);
        loop {
            match fsm.process() {
                ProcessResult::Metadata(_) => {}
                ProcessResult::Record(()) => encoder
                    .encode_record_ref(fsm.last_record().expect("a record"))
                    .expect("oracle encode"),
                ProcessResult::ReadMore(_) => break,
                ProcessResult::Err(e) => panic!("oracle: {e}"),
            }
        }
    }
    String::from_utf8(out).expect("JSON is UTF-8")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn live_json_equals_the_oracle(program: &str) {
    for compression in ["none", "zstd"] {
        // A gateway per run: without `start`, a gateway resumes where the last
        // connection stopped.
        let gw = MockGateway::start(
            Script::new()
                .generated_records(1_500)
                .keep_records()
                .behavior(Behavior::new().write_split(1_000)),
        )
        .unwrap();
        let addr = gw.addr().to_string();
        let out = run(
            program,
            &[
                "--addr",
                &addr,
                "--dataset",
                "GLBX.MDP3",
                "--schema",
                "mbo",
                "--symbols",
                "ESH1,NQH1",
                "--compression",
                compression,
                "--json",
            ],
            KEY,
        );
        assert!(out.status.success(), "{program}: {}", stderr(&out));
        assert!(gw.wait_ended(1, std::time::Duration::from_secs(10)));
        let conn = gw.connections().pop().unwrap();
        assert_eq!(conn.records.len(), 1_500);
        let expected = json_lines_of_records(&conn.records);
        assert_eq!(
            stdout(&out).lines().count(),
            1_500,
            "{program}: one line per record"
        );
        assert!(
            stdout(&out) == expected,
            "{program} {compression}: JSON differs from the oracle"
        );
    }
}

fn live_failure_names_the_layer(program: &str) {
    let gw = MockGateway::start(
        Script::new()
            .generated_records(10)
            .behavior(Behavior::new().reject_auth("unknown API key")),
    )
    .unwrap();
    let addr = gw.addr().to_string();
    let out = run(
        program,
        &[
            "--addr",
            &addr,
            "--dataset",
            "GLBX.MDP3",
            "--schema",
            "mbo",
            "--symbols",
            "ESH1",
            "--json",
        ],
        KEY,
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing on stdout: {}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("error [auth]") && err.contains("unknown API key"),
        "{program}: {err}"
    );
    assert!(!err.contains(KEY), "the key never appears");
}

fn get_range_json_equals_the_oracle(program: &str) {
    let body = mock_historical::mbo_body(2_000, 16 * 1024);
    let server = MockHistorical::builder()
        .get_range(Reply::dbn_zst(body.clone()))
        .start()
        .unwrap();
    let ca = std::env::temp_dir().join(format!(
        "dbn-pipe-example-ca-{program}-{}.pem",
        std::process::id()
    ));
    std::fs::write(&ca, server.root_pem()).unwrap();
    let args = [
        "--base-url",
        &server.base_url(),
        "--ca-file",
        ca.to_str().unwrap(),
        "--dataset",
        "GLBX.MDP3",
        "--schema",
        "mbo",
        "--symbols",
        "ESH1",
        "--start",
        "2020-12-28",
        "--json",
    ];
    let out = run(program, &args, KEY);
    assert!(out.status.success(), "{program}: {}", stderr(&out));
    assert!(
        stdout(&out) == json_lines_of_body(&body),
        "{program}: JSON differs from the oracle"
    );
    let request = server.requests().pop().unwrap();
    assert_eq!(request.field("start"), Some("2020-12-28"));

    // Without --ca-file the test server is not trusted: a TLS error, named.
    let without_ca: Vec<&str> = args[..2].iter().chain(&args[4..]).copied().collect();
    let out = run(program, &without_ca, KEY);
    let _ = std::fs::remove_file(&ca);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("error [tls]"),
        "{program}: {}",
        stderr(&out)
    );
}

#[test]
fn tokio_live_json_equals_the_oracle() {
    live_json_equals_the_oracle("tokio_live");
}

#[test]
fn mio_live_json_equals_the_oracle() {
    live_json_equals_the_oracle("mio_live");
}

#[test]
fn tokio_live_failure_names_the_layer() {
    live_failure_names_the_layer("tokio_live");
}

#[test]
fn mio_live_failure_names_the_layer() {
    live_failure_names_the_layer("mio_live");
}

#[test]
fn tokio_get_range_json_equals_the_oracle() {
    get_range_json_equals_the_oracle("tokio_get_range");
}

#[test]
fn mio_get_range_json_equals_the_oracle() {
    get_range_json_equals_the_oracle("mio_get_range");
}
