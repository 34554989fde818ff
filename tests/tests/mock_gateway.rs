//! Tests of the mock live gateway, driven by a hand-written std `TcpStream` client
//! (deliberately not the protocol crate, so the mock is checked independently).
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::mem::offset_of;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use dbn::decode::DbnMetadata;
use dbn::{MboMsg, Record, SType, SystemMsg, rtype};
use dbn_pipe_tests::generate::{self, mbo_record};
use dbn_pipe_tests::mock_gateway::{
    Behavior, ConnectionEnd, MOCK_DATASET, MockGateway, Script, StampField, TEST_API_KEY,
    expected_auth, generated_record, read_fixture_records,
};
use sha2::{Digest, Sha256};

/// Safety net for every blocking wait: generous, never decides pass/fail by timing.
const SAFETY: Duration = Duration::from_secs(10);

struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(gateway: &MockGateway) -> Client {
        let stream = TcpStream::connect(gateway.addr()).expect("connect to the mock");
        stream.set_read_timeout(Some(SAFETY)).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    fn read_line(&mut self) -> String {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return String::from_utf8(line[..pos].to_vec()).expect("utf-8 line");
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("read a line");
            assert!(n > 0, "EOF while reading a line");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn send(&mut self, line: &str) {
        self.stream.write_all(line.as_bytes()).unwrap();
    }

    /// Reads greeting and challenge, sends `auth_fields` (with the hash prepended when
    /// `key` is given), returns (greeting, reply).
    fn handshake(&mut self, key: &str, rest: &str) -> (String, String) {
        let greeting = self.read_line();
        let cram = self.read_line();
        let challenge = cram.strip_prefix("cram=").expect("cram= line");
        let auth = expected_auth(challenge, key);
        self.send(&format!("{rest}|auth={auth}|\n"));
        (greeting, self.read_line())
    }

    fn login(&mut self, compression: &str, ts_out: u8) -> String {
        let rest = format!(
            "dataset={MOCK_DATASET}|encoding=dbn|compression={compression}|ts_out={ts_out}|client=hand-test/0"
        );
        self.handshake(TEST_API_KEY, &rest).1
    }

    /// Everything until EOF (buffered bytes first).
    fn read_to_end(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        self.stream.read_to_end(&mut out).expect("read to EOF");
        out
    }

    /// Reads until `buf` holds at least `n` bytes after the text lines.
    fn read_at_least(&mut self, n: usize) {
        while self.buf.len() < n {
            let mut chunk = [0u8; 65536];
            let got = self.stream.read(&mut chunk).expect("read stream bytes");
            assert!(got > 0, "EOF after {} of {n} bytes", self.buf.len());
            self.buf.extend_from_slice(&chunk[..got]);
        }
    }
}

/// Splits a plain DBN stream into (metadata, records, trailing partial bytes).
fn split_dbn(stream: &[u8]) -> (dbn::Metadata, Vec<Vec<u8>>, usize) {
    assert_eq!(&stream[..3], b"DBN", "stream starts with the DBN prelude");
    let meta_len = u32::from_le_bytes(stream[4..8].try_into().unwrap()) as usize;
    let metadata = dbn::decode::dbn::MetadataDecoder::new(&stream[..8 + meta_len])
        .decode()
        .expect("metadata decodes");
    let mut pos = 8 + meta_len;
    let mut records = Vec::new();
    while pos < stream.len() {
        let len = usize::from(stream[pos]) * 4;
        assert!(len >= 16, "record length byte {len}");
        if pos + len > stream.len() {
            return (metadata, records, stream.len() - pos);
        }
        records.push(stream[pos..pos + len].to_vec());
        pos += len;
    }
    (metadata, records, 0)
}

fn metadata_len(stream: &[u8]) -> usize {
    8 + u32::from_le_bytes(stream[4..8].try_into().unwrap()) as usize
}

fn mbo_bytes(i: u64) -> Vec<u8> {
    mbo_record(i).as_ref().to_vec()
}

fn system_code(rec: &[u8]) -> u8 {
    rec[offset_of!(SystemMsg, code)]
}

fn system_text(rec: &[u8]) -> String {
    let start = offset_of!(SystemMsg, msg);
    let bytes = &rec[start..offset_of!(SystemMsg, code)];
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn subscribe_line(extra: &str) -> String {
    format!("schema=mbo|stype_in=raw_symbol|symbols=ESH1|snapshot=0|is_last=1{extra}\n")
}

#[test]
fn handshake_success_any_field_order_and_trailing_pipe() {
    let gateway = MockGateway::start(Script::new().generated_records(3)).unwrap();
    let mut client = Client::connect(&gateway);
    let (greeting, reply) = client.handshake(
        TEST_API_KEY,
        "ts_out=0|client=hand-test/0|compression=none|encoding=dbn|dataset=GLBX.MDP3",
    );
    assert_eq!(greeting, "lsg_version=0.4.2-mock");
    assert_eq!(reply, "success=1|session_id=mock-0");
    client.send(&subscribe_line("|id=7"));
    client.send("start_session=0\n");
    let stream = client.read_to_end();
    let (metadata, records, partial) = split_dbn(&stream);
    assert_eq!(metadata.version, 3);
    assert_eq!(metadata.dataset, MOCK_DATASET);
    assert_eq!(metadata.schema, None);
    assert_eq!(metadata.stype_out, SType::InstrumentId);
    assert!(!metadata.ts_out);
    assert_eq!(partial, 0);
    assert_eq!(records, (0..3).map(mbo_bytes).collect::<Vec<_>>());

    assert!(gateway.wait_ended(1, SAFETY));
    let log = &gateway.connections()[0];
    let auth = log.auth.as_ref().unwrap();
    assert_eq!(auth["dataset"], MOCK_DATASET);
    assert_eq!(auth["compression"], "none");
    assert!(
        !auth.values().any(|v| v.contains(TEST_API_KEY)),
        "key never logged"
    );
    assert_eq!(log.session_id.as_deref(), Some("mock-0"));
    assert!(log.start_session);
    assert!(log.violations.is_empty(), "{:?}", log.violations);
    assert_eq!(log.records_sent, 3);
    assert_eq!(log.dbn_bytes_written, stream.len() as u64);
    assert_eq!(log.end, Some(ConnectionEnd::Finished));
    let mut hash = Sha256::new();
    for r in &records {
        hash.update(r);
    }
    assert_eq!(log.records_sha256, hex::encode(hash.finalize()));
}

#[test]
fn auth_rejects_bad_hash_wrong_dataset_and_scripted_reject() {
    let script = Script::new().on_connection(2, Behavior::new().reject_auth("go away"));
    let gateway = MockGateway::start(script).unwrap();
    let good = "dataset=GLBX.MDP3|encoding=dbn|compression=none|ts_out=0|client=t";

    // Wrong key: the hash does not match.
    let mut c0 = Client::connect(&gateway);
    let (_, reply) = c0.handshake("db-XXXXXXXXXXXXXXXXXXXXXXXXXABCDE", good);
    assert!(reply.starts_with("success=0|error="), "{reply}");
    // Wrong dataset.
    let mut c1 = Client::connect(&gateway);
    let (_, reply) = c1.handshake(
        TEST_API_KEY,
        "dataset=XNAS.ITCH|encoding=dbn|compression=none|ts_out=0|client=t",
    );
    assert!(reply.starts_with("success=0|error="), "{reply}");
    assert!(reply.contains("XNAS.ITCH"), "{reply}");
    // Valid, but the script rejects connection 2.
    let mut c2 = Client::connect(&gateway);
    let (_, reply) = c2.handshake(TEST_API_KEY, good);
    assert_eq!(reply, "success=0|error=go away");
    // Connection 3 is accepted with the same line.
    let mut c3 = Client::connect(&gateway);
    let (_, reply) = c3.handshake(TEST_API_KEY, good);
    assert_eq!(reply, "success=1|session_id=mock-3");

    assert!(gateway.wait_ended(3, SAFETY));
    let logs = gateway.connections();
    for log in &logs[..3] {
        assert!(
            matches!(log.end, Some(ConnectionEnd::AuthRejected(_))),
            "{:?}",
            log.end
        );
        assert!(log.session_id.is_none());
    }
}

#[test]
fn subscription_lines_are_parsed_and_violations_recorded() {
    let gateway = MockGateway::start(Script::new()).unwrap();
    let mut client = Client::connect(&gateway);
    assert!(client.login("none", 0).starts_with("success=1"));
    let many: Vec<String> = (0..501).map(|i| format!("S{i}")).collect();
    client.send(
        "schema=trades|stype_in=parent|symbols=ES.FUT,NQ.FUT|snapshot=0|is_last=1|start=1609160400000000000|id=3|\n",
    );
    client.send("this is not a subscription\n");
    client.send(&format!(
        "schema=mbo|stype_in=raw_symbol|symbols={}|is_last=1\n",
        many.join(",")
    ));
    client.send("schema=mbo|stype_in=raw_symbol|symbols=|bogus=1\n");
    client.send("start_session\n");
    let _ = client.read_to_end();
    assert!(gateway.wait_ended(1, SAFETY));
    let log = &gateway.connections()[0];
    assert!(log.start_session);
    assert_eq!(
        log.subscriptions.len(),
        3,
        "the malformed line is not a subscription"
    );
    let first = &log.subscriptions[0];
    assert!(!first.after_start);
    assert_eq!(first.fields["schema"], "trades");
    assert_eq!(first.fields["stype_in"], "parent");
    assert_eq!(first.fields["symbols"], "ES.FUT,NQ.FUT");
    assert_eq!(first.fields["start"], "1609160400000000000");
    assert_eq!(first.fields["id"], "3");
    let v = &log.violations;
    assert_eq!(v.len(), 5, "{v:?}");
    assert!(v[0].contains("this is not a subscription"), "{v:?}");
    assert!(v[1].contains("501 symbols"), "{v:?}");
    assert!(v.iter().any(|m| m.contains("bogus")), "{v:?}");
    assert!(v.iter().any(|m| m.contains("without symbols")), "{v:?}");
    assert!(v.iter().any(|m| m.contains("empty symbol")), "{v:?}");
}

#[test]
fn zstd_stream_decodes_to_the_scripted_records() {
    let script = Script::new()
        .generated_records(500)
        .keep_records()
        .behavior(Behavior::new().write_chunk(4096));
    let gateway = MockGateway::start(script).unwrap();
    let mut client = Client::connect(&gateway);
    assert!(client.login("zstd", 0).starts_with("success=1"));
    client.send(&subscribe_line(""));
    client.send("start_session\n");
    let compressed = client.read_to_end();
    assert_eq!(
        &compressed[..4],
        &[0x28, 0xB5, 0x2F, 0xFD],
        "zstd frame magic"
    );
    let plain = zstd::stream::decode_all(&compressed[..]).expect("one valid zstd stream");
    let mut decoder = dbn::decode::dbn::Decoder::new(&plain[..]).unwrap();
    assert_eq!(decoder.metadata().schema, None);
    let mut got = Vec::new();
    while let Some(rec) = decoder.decode_ref().unwrap() {
        got.push(rec.as_ref().to_vec());
    }
    let want: Vec<_> = (0..500).map(mbo_bytes).collect();
    assert_eq!(got, want);

    assert!(gateway.wait_ended(1, SAFETY));
    let log = &gateway.connections()[0];
    assert_eq!(
        log.records, want,
        "records_sent bytes match what was decoded"
    );
    assert_eq!(log.records_sent, 500);
    assert_eq!(log.dbn_bytes_written, compressed.len() as u64);
}

#[test]
fn ts_out_appends_a_send_time_to_every_record() {
    let script = Script::new()
        .generated_records(5)
        .subscription_acks()
        .symbol_mappings();
    let gateway = MockGateway::start(script).unwrap();
    let mut client = Client::connect(&gateway);
    assert!(client.login("none", 1).starts_with("success=1"));
    client.send("schema=mbo|stype_in=raw_symbol|symbols=ESH1,ESM1|snapshot=0|is_last=1|id=9\n");
    client.send("start_session\n");
    let stream = client.read_to_end();
    let (metadata, records, partial) = split_dbn(&stream);
    assert!(metadata.ts_out);
    assert_eq!(partial, 0);
    // One ack, two mappings, five records; every one 8 bytes longer than its struct.
    assert_eq!(records.len(), 8);
    assert_eq!(records[0][1], rtype::SYSTEM);
    assert_eq!(records[0].len(), size_of::<SystemMsg>() + 8);
    assert_eq!(records[1][1], rtype::SYMBOL_MAPPING);
    assert_eq!(records[2][1], rtype::SYMBOL_MAPPING);
    assert_eq!(
        u32::from_le_bytes(records[2][4..8].try_into().unwrap()),
        5483,
        "second symbol maps to the second instrument id"
    );
    for (i, rec) in records[3..].iter().enumerate() {
        assert_eq!(rec.len(), 64);
        assert_eq!(usize::from(rec[0]) * 4, 64, "length byte counts ts_out");
        let mut plain = mbo_bytes(i as u64);
        plain[0] = 16;
        assert_eq!(&rec[..56], &plain[..]);
        let ts_out = u64::from_le_bytes(rec[56..].try_into().unwrap());
        assert!(ts_out > generate::START_NS, "send time is wall clock");
    }
    // The dbn decoder agrees with the framing.
    let mut decoder = dbn::decode::dbn::Decoder::new(&stream[..]).unwrap();
    let mut n = 0;
    while let Some(rec) = decoder.decode_ref().unwrap() {
        assert_eq!(rec.record_size(), records[n].len());
        n += 1;
    }
    assert_eq!(n, 8);
    assert!(gateway.wait_ended(1, SAFETY));
    let log = &gateway.connections()[0];
    assert_eq!(log.control_records_sent, 3);
    assert_eq!(log.records_sent, 5);
}

#[test]
fn disconnect_after_bytes_cuts_exactly_there() {
    let probe = MockGateway::start(Script::new()).unwrap();
    let mut c = Client::connect(&probe);
    assert!(c.login("none", 0).starts_with("success=1"));
    c.send("start_session\n");
    let meta_len = metadata_len(&c.read_to_end());
    drop(probe);

    let cut = (meta_len + 3 * 56 + 20) as u64;
    let script = Script::new()
        .generated_records(100)
        .behavior(Behavior::new().disconnect_after_bytes(cut).write_split(7));
    let gateway = MockGateway::start(script).unwrap();
    let mut client = Client::connect(&gateway);
    assert!(client.login("none", 0).starts_with("success=1"));
    client.send(&subscribe_line(""));
    client.send("start_session\n");
    let stream = client.read_to_end();
    assert_eq!(stream.len() as u64, cut);
    let (_, records, partial) = split_dbn(&stream);
    assert_eq!(records, (0..3).map(mbo_bytes).collect::<Vec<_>>());
    assert_eq!(partial, 20);
    assert!(gateway.wait_ended(1, SAFETY));
    let log = &gateway.connections()[0];
    assert_eq!(log.end, Some(ConnectionEnd::Cut));
    assert_eq!(log.dbn_bytes_written, cut);
    assert_eq!(log.records_sent, 3);
    assert_eq!(gateway.cursor(), 3, "only whole records count as delivered");
}

#[test]
fn replay_from_start_includes_ties_and_resume_without_start_skips() {
    // Runs of 3 records share a ts_event: records 9, 10, 11 have the same one.
    let script = Script::new()
        .generated_records_with_ties(30, 3)
        .keep_records()
        .on_connection(0, Behavior::new().cut_mid_record_after(10));
    let gateway = MockGateway::start(script).unwrap();
    let all: Vec<Vec<u8>> = (0..30)
        .map(|i| generated_record(i, 3).as_ref().to_vec())
        .collect();

    // Connection 0: 10 whole records then half of the 11th.
    let mut c0 = Client::connect(&gateway);
    assert!(c0.login("none", 0).starts_with("success=1"));
    c0.send(&subscribe_line(""));
    c0.send("start_session\n");
    let (_, records, partial) = split_dbn(&c0.read_to_end());
    assert_eq!(records, all[..10]);
    assert_eq!(partial, 28);
    assert!(gateway.wait_ended(1, SAFETY));
    assert_eq!(gateway.cursor(), 10);

    // Connection 1: GapFill-style start at the last received ts_event replays from
    // the first record of that run (index 9), an overlap of one record.
    let last_ts = u64::from_le_bytes(records[9][8..16].try_into().unwrap());
    let mut c1 = Client::connect(&gateway);
    assert!(c1.login("none", 0).starts_with("success=1"));
    c1.send(&subscribe_line(&format!("|start={last_ts}")));
    c1.send("start_session\n");
    let (_, records, partial) = split_dbn(&c1.read_to_end());
    assert_eq!(partial, 0);
    assert_eq!(records, all[9..]);
    assert!(gateway.wait_ended(2, SAFETY));
    let log = &gateway.connections()[1];
    assert_eq!(log.first_record_index, Some(9));
    assert_eq!(log.records, all[9..]);

    // Connection 2 resubscribes without start after a scripted cut of the cursor.
    let script2 = Script::new()
        .generated_records(40)
        .on_connection(0, Behavior::new().cut_mid_record_after(10))
        .on_connection(1, Behavior::new().skip_on_resume(5));
    let gateway2 = MockGateway::start(script2).unwrap();
    let mut d0 = Client::connect(&gateway2);
    assert!(d0.login("zstd", 0).starts_with("success=1"));
    d0.send(&subscribe_line(""));
    d0.send("start_session\n");
    // The zstd frame is cut too: decode what arrived, and expect the cut frame.
    let compressed = d0.read_to_end();
    let mut plain = Vec::new();
    let err = zstd::stream::read::Decoder::new(&compressed[..])
        .unwrap()
        .read_to_end(&mut plain)
        .expect_err("the frame was cut");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    let (_, records, partial) = split_dbn(&plain);
    assert_eq!(records.len(), 10);
    assert_eq!(partial, 28);
    assert!(gateway2.wait_ended(1, SAFETY));
    let mut d1 = Client::connect(&gateway2);
    assert!(d1.login("none", 0).starts_with("success=1"));
    d1.send(&subscribe_line(""));
    d1.send("start_session\n");
    let (_, records, _) = split_dbn(&d1.read_to_end());
    assert_eq!(records, (15..40).map(mbo_bytes).collect::<Vec<_>>());
    assert!(gateway2.wait_ended(2, SAFETY));
    assert_eq!(gateway2.connections()[1].first_record_index, Some(15));
}

#[test]
fn split_handshake_and_split_writes_deliver_the_same_bytes() {
    let script = Script::new()
        .generated_records(50)
        .behavior(Behavior::new().split_handshake().write_split(5));
    let gateway = MockGateway::start(script).unwrap();
    let mut client = Client::connect(&gateway);
    assert!(client.login("none", 0).starts_with("success=1"));
    client.send(&subscribe_line(""));
    client.send("start_session\n");
    let (_, records, partial) = split_dbn(&client.read_to_end());
    assert_eq!(partial, 0);
    assert_eq!(records, (0..50).map(mbo_bytes).collect::<Vec<_>>());
}

#[test]
fn stall_after_records_keeps_the_socket_open_and_silent() {
    let script = Script::new()
        .generated_records(20)
        .behavior(Behavior::new().stall_after_records(4));
    let gateway = MockGateway::start(script).unwrap();
    let mut client = Client::connect(&gateway);
    assert!(client.login("none", 0).starts_with("success=1"));
    client.send(&subscribe_line(""));
    client.send("start_session\n");
    client.read_at_least(8);
    let meta_len = metadata_len(&client.buf);
    client.read_at_least(meta_len + 4 * 56);
    assert_eq!(client.buf.len(), meta_len + 4 * 56);
    // Nothing more arrives and the socket is not closed.
    client
        .stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut byte = [0u8; 1];
    let err = client.stream.read(&mut byte).expect_err("no data, no EOF");
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    drop(client);
    assert!(gateway.wait_ended(1, SAFETY));
    let log = &gateway.connections()[0];
    assert_eq!(log.end, Some(ConnectionEnd::ClientClosed));
    assert_eq!(log.records_sent, 4);
}

#[test]
fn stay_open_sends_heartbeats_and_acks_late_subscriptions() {
    let script = Script::new()
        .generated_records(2)
        .subscription_acks()
        .heartbeats(Duration::from_millis(20))
        .stay_open();
    let gateway = MockGateway::start(script).unwrap();
    let mut client = Client::connect(&gateway);
    assert!(client.login("none", 0).starts_with("success=1"));
    client.send(&subscribe_line("|id=1"));
    client.send("start_session\n");
    client.read_at_least(8);
    let meta_len = metadata_len(&client.buf);
    let sys = size_of::<SystemMsg>();
    // ack + 2 records + a heartbeat.
    client.read_at_least(meta_len + sys + 2 * 56 + sys);
    let (_, records, _) = split_dbn(&client.buf);
    assert_eq!(records[0][1], rtype::SYSTEM);
    assert_eq!(system_code(&records[0]), 1);
    assert!(system_text(&records[0]).contains("request 1"));
    assert_eq!(records[3][1], rtype::SYSTEM);
    assert_eq!(system_code(&records[3]), 0, "heartbeat");
    // A subscription after the start is logged and acked.
    client.send("schema=trades|stype_in=raw_symbol|symbols=NQH1|snapshot=0|is_last=1|id=2\n");
    let mut seen_ack2 = false;
    while !seen_ack2 {
        let have = client.buf.len();
        client.read_at_least(have + 1);
        let (_, records, _) = split_dbn(&client.buf);
        seen_ack2 = records.iter().any(|r| {
            r[1] == rtype::SYSTEM && system_code(r) == 1 && system_text(r).contains("request 2")
        });
    }
    let log = &gateway.connections()[0];
    assert_eq!(log.subscriptions.len(), 2);
    assert!(log.subscriptions[1].after_start);
    assert!(log.violations.is_empty(), "{:?}", log.violations);
    assert!(log.end.is_none(), "still open");
}

#[test]
fn stamp_write_time_overwrites_ts_recv() {
    let script = Script::new()
        .generated_records(3)
        .stamp_write_time(StampField::TsRecv)
        .pace(1000.0);
    let gateway = MockGateway::start(script).unwrap();
    let mut client = Client::connect(&gateway);
    assert!(client.login("none", 0).starts_with("success=1"));
    client.send(&subscribe_line(""));
    client.send("start_session\n");
    let (_, records, _) = split_dbn(&client.read_to_end());
    assert_eq!(records.len(), 3);
    for (i, rec) in records.iter().enumerate() {
        let want = mbo_bytes(i as u64);
        let at = offset_of!(MboMsg, ts_recv);
        assert_eq!(&rec[..at], &want[..at], "fields before ts_recv unchanged");
        assert_eq!(
            &rec[at + 8..],
            &want[at + 8..],
            "fields after ts_recv unchanged"
        );
        let ts_recv = u64::from_le_bytes(rec[at..at + 8].try_into().unwrap());
        assert!(ts_recv > 1_700_000_000_000_000_000, "wall-clock write time");
    }
}

#[test]
fn stall_after_auth_and_drop_does_not_hang() {
    let script = Script::new()
        .generated_records(5)
        .behavior(Behavior::new().stall_after_auth());
    let gateway = MockGateway::start(script).unwrap();
    let mut client = Client::connect(&gateway);
    assert!(client.login("none", 0).starts_with("success=1"));
    client.send(&subscribe_line(""));
    client.send("start_session\n");
    assert!(gateway.wait_until(SAFETY, |logs| logs.first().is_some_and(|l| l.start_session)));
    // Dropping the gateway with an open, silent connection joins its threads and the
    // client sees the connection end.
    drop(gateway);
    let rest = client.read_to_end();
    assert!(rest.is_empty(), "nothing was sent after auth");
}

#[test]
fn invalid_explicit_records_are_refused() {
    let err = MockGateway::start(Script::new().records(vec![vec![0u8; 10]])).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let backwards = vec![mbo_bytes(5), mbo_bytes(1)];
    let err = MockGateway::start(Script::new().records(backwards)).unwrap_err();
    assert!(err.to_string().contains("backwards"), "{err}");
}

fn fixture_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/dbn");
    let dir = if dir.is_dir() {
        dir
    } else {
        PathBuf::from("/work/shared/fixtures/dbn")
    };
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("NOTE: DBN fixtures folder not found; fixture test skipped");
        None
    }
}

#[test]
fn fixture_records_are_served_in_live_form() {
    let Some(dir) = fixture_dir() else { return };
    // v2 file: definition records are upgraded to v3 (520 bytes).
    let path = dir.join("test_data.definition.dbn");
    let want = read_fixture_records(&path).unwrap();
    assert!(!want.is_empty());
    assert!(want.iter().all(|r| r.len() == 520));
    let mbo = read_fixture_records(&dir.join("test_data.mbo.v3.dbn")).unwrap();
    assert_eq!(mbo.len(), 2);
    assert_eq!(mbo[0].len(), 56);
    assert_eq!(
        u64::from_le_bytes(mbo[0][8..16].try_into().unwrap()),
        1_609_160_400_000_429_831
    );

    let gateway = MockGateway::start(Script::new().fixture_records(&path).unwrap()).unwrap();
    let mut client = Client::connect(&gateway);
    assert!(client.login("none", 0).starts_with("success=1"));
    client.send(&subscribe_line(""));
    client.send("start_session\n");
    let (metadata, records, _) = split_dbn(&client.read_to_end());
    assert_eq!(metadata.version, 3);
    assert_eq!(records, want);
}
