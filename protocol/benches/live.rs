//! What handing out a live session's records costs per record, by the way a driver
//! takes them: whole batches, one record per call through `record_ready` +
//! `poll_record`, or one record per call through `poll_event` (the batch set up for
//! its first record only). The peer: `dbn`'s `DbnFsm::process`, one record per call,
//! as the official client's `next_record` decodes.
//!
//! ```sh
//! cargo bench -p dbn-pipe-protocol --bench live
//! ```
//!
//! The stream is a DBN v3 MBO stream fed in 64 KiB reads into a session that has
//! authenticated and started, as a driver would after reading the socket; no socket
//! or clock is involved. `DBN_BENCH_LIVE=<id>` (`batch`, `record`, `event`, `fsm`)
//! runs one contender alone, for instruction counts under valgrind.
//!
//! Timings are medians of interleaved passes; they are for comparing the contenders
//! of one run on one machine, never pass/fail.

use std::hint::black_box;
use std::time::{Duration, Instant};

use dbn::Schema;
use dbn::decode::dbn::fsm::{DbnFsm, ProcessResult};
use dbn_pipe_protocol::live::{ApiKey, LiveConfig, LiveEvent, LiveSession, Subscription};

mod common;

use common::{Checksum, mbo_stream};

/// Bytes per read offered to the session.
const CHUNK: usize = 64 * 1024;
/// Records per stream.
const RECORDS: u64 = 200_000;
/// Timed passes per contender.
const PASSES: usize = 31;
/// A session that authenticated and started, ready for the DBN stream.
fn started_session(now: Instant) -> LiveSession {
    let key = ApiKey::new("db-0123456789abcdefghijklmnABCDE").expect("test key");
    let mut session = LiveSession::new(LiveConfig::new(key, "GLBX.MDP3"), now).expect("session");
    session
        .subscribe(Subscription::new(Schema::Mbo, ["ESH1"]))
        .expect("subscribe");
    session.start(now).expect("start");
    let _ = session.handle_input(
        now,
        b"lsg_version=0.4.2\ncram=t7kNhwj4xqR0QYjzFKtBEG2ec2pXJ4FK\n",
    );
    let _ = session.handle_input(now, b"success=1|session_id=5|\n");
    let mut sink = Vec::new();
    let _ = session.poll_transmit(&mut sink);
    while let Ok(Some(event)) = session.poll_event() {
        assert!(
            matches!(event, LiveEvent::Authenticated { .. }),
            "only authentication before the stream: {event:?}"
        );
    }
    session
}

/// How a contender takes the records the session holds; returns when it has none.
type Drain = fn(&mut LiveSession, &mut Checksum);

/// Whole batches from `poll_event`.
fn drain_batches(session: &mut LiveSession, check: &mut Checksum) {
    let mut local = *check;
    while let Ok(Some(event)) = session.poll_event() {
        if let LiveEvent::Records(batch) = event {
            for rec in batch {
                local.add(rec);
            }
        }
    }
    *check = local;
}

/// One record per call: `record_ready` + `poll_record`, `poll_event` for the rest.
fn drain_records(session: &mut LiveSession, check: &mut Checksum) {
    loop {
        if session.record_ready() {
            if let Some(rec) = session.poll_record() {
                check.add(rec);
            }
            continue;
        }
        match session.poll_event() {
            Ok(Some(LiveEvent::Records(batch))) => {
                for rec in batch {
                    check.add(rec);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
}

/// One record per call through `poll_event`: the batch is set up for its first
/// record only (a driver that returns one borrowed record per call, polling once to
/// see what comes and once to take it, as the drivers did before `poll_record`).
fn drain_events(session: &mut LiveSession, check: &mut Checksum) {
    loop {
        let records_next = match session.poll_event() {
            Ok(Some(LiveEvent::Records(_))) => true,
            Ok(Some(_)) => false,
            Ok(None) | Err(_) => break,
        };
        if records_next {
            if let Ok(Some(LiveEvent::Records(mut batch))) = session.poll_event() {
                if let Some(rec) = batch.next() {
                    check.add(rec);
                }
            }
        }
    }
}

/// Feeds `stream` in 64 KiB reads, draining after each, then the end.
fn run_session(stream: &[u8], drain: Drain) -> Checksum {
    let now = Instant::now();
    let mut session = started_session(now);
    let mut check = Checksum::default();
    for chunk in stream.chunks(CHUNK) {
        let mut pending = chunk;
        while !pending.is_empty() {
            let taken = session.handle_input(now, pending);
            pending = &pending[taken..];
            drain(&mut session, &mut check);
        }
    }
    session.handle_eof();
    drain(&mut session, &mut check);
    check
}

/// The peer: `DbnFsm::process` + `last_record`, one record per call.
fn run_fsm(stream: &[u8]) -> Checksum {
    let mut fsm = DbnFsm::builder()
        .upgrade_policy(dbn::VersionUpgradePolicy::UpgradeToV3)
        .build()
        .expect("DbnFsm");
    let mut check = Checksum::default();
    for chunk in stream.chunks(CHUNK) {
        fsm.write_all(chunk);
        loop {
            match fsm.process() {
                ProcessResult::Record(()) => {
                    if let Some(rec) = fsm.last_record() {
                        check.add(rec);
                    }
                }
                ProcessResult::Metadata(metadata) => drop(black_box(metadata)),
                ProcessResult::ReadMore(_) => break,
                ProcessResult::Err(err) => panic!("DbnFsm: {err}"),
            }
        }
    }
    check
}

struct Contender {
    id: &'static str,
    name: &'static str,
    run: fn(&[u8]) -> Checksum,
}

fn contenders() -> Vec<Contender> {
    vec![
        Contender {
            id: "batch",
            name: "ours poll_event, whole batches",
            run: |s| run_session(s, drain_batches),
        },
        Contender {
            id: "record",
            name: "ours record_ready + poll_record",
            run: |s| run_session(s, drain_records),
        },
        Contender {
            id: "event",
            name: "ours poll_event twice per record",
            run: |s| run_session(s, drain_events),
        },
        Contender {
            id: "fsm",
            name: "dbn DbnFsm::process per record",
            run: run_fsm,
        },
    ]
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let stream = mbo_stream(RECORDS);
    let contenders = contenders();
    let expected = run_fsm(&stream);
    assert_eq!(expected.records, RECORDS, "the peer sees every record");
    for contender in &contenders {
        assert_eq!((contender.run)(&stream), expected, "{}", contender.name);
    }
    if let Ok(id) = std::env::var("DBN_BENCH_LIVE") {
        let contender = contenders
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("unknown contender {id:?}"));
        for _ in 0..10 {
            black_box((contender.run)(black_box(&stream)));
        }
        return;
    }
    // Interleaved passes, so that load from other processes falls on all alike.
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); contenders.len()];
    for pass in 0..PASSES + 3 {
        for (contender, samples) in contenders.iter().zip(&mut samples) {
            let started = Instant::now();
            black_box((contender.run)(black_box(&stream)));
            if pass >= 3 {
                samples.push(started.elapsed());
            }
        }
    }
    println!(
        "dbn-pipe-protocol live session benchmark: {RECORDS} v3 MBO records in 64 KiB reads, medians of {PASSES} interleaved passes"
    );
    println!("  {:<40} {:>10} {:>10}", "contender", "ns/record", "/ peer");
    let medians: Vec<Duration> = samples.into_iter().map(median).collect();
    let peer = medians[contenders.len() - 1].as_secs_f64();
    for (contender, median) in contenders.iter().zip(&medians) {
        let ns = median.as_secs_f64() * 1e9 / RECORDS as f64;
        println!(
            "  {:<40} {:>10.2} {:>9.2}x",
            contender.name,
            ns,
            peer / median.as_secs_f64()
        );
    }
    println!("  (/ peer: records per second relative to DbnFsm::process; above 1 is faster)");
}
