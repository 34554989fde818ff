//! The batch APIs (`next_batch`) of both drivers against their one-item APIs on the
//! same scripted mock servers: whole batches ([`Pull::Batches`]) and partly taken
//! batches mixed with `next_event` ([`Pull::Mixed`]) must hand out exactly what
//! `next_event` / `next_record` hand out ([`Pull::Items`]): the same records,
//! metadata, gateway notices and reconnect events, in the same order, and the same
//! failure after them. Each trace is also checked against what the mock sent, so two
//! equally wrong runs cannot pass.
//!
//! The tokio `select!` cancellation test of `LiveClient::next_batch` is at the end.

use std::time::Duration;

use dbn::{ErrorCode, ErrorMsg, SType, Schema, SystemCode, SystemMsg, rtype};
use dbn_pipe_protocol::historical::GetRangeParams;
use dbn_pipe_protocol::live::{AutoReconnect, ReconnectPolicy, Subscription};
use dbn_pipe_tests::mock_gateway::{
    Behavior, ConnectionLog, MockGateway, Script, encode_record, generated_record,
};
use dbn_pipe_tests::mock_historical::{self, CutKind, Fault, Framing, MockHistorical, Reply};
use dbn_pipe_tests::scenario::{
    Driver, LiveOutcome, LiveRun, Pull, RangeOutcome, RangeRun, RecordLog, Seen, assert_failed,
    oracle,
};

const DATASET: &str = "GLBX.MDP3";

dbn_pipe_tests::for_each_driver!(
    batches_match_items_with_acks_mappings_and_notices,
    batches_match_items_in_small_reads,
    batches_match_items_when_the_stream_is_cut_mid_record,
    batches_match_items_across_a_gap_fill_reconnect,
    batches_match_items_across_a_resubscribe_reconnect,
    range_batches_equal_the_oracle,
    range_batches_deliver_the_records_before_a_cut,
);

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

fn gateway(script: Script) -> MockGateway {
    MockGateway::start(script).expect("start the mock gateway")
}

fn run_for(gw: &MockGateway) -> LiveRun {
    LiveRun::new(
        gw.addr().to_string(),
        DATASET,
        Subscription::new(Schema::Mbo, ["ESH1"]),
    )
}

/// The gateway's logs once `n` connections ended.
fn logs(gw: &MockGateway, n: usize) -> Vec<ConnectionLog> {
    gw.ended_connections(n, Duration::from_secs(20))
}

fn reconnect_config(policy: ReconnectPolicy) -> AutoReconnect {
    AutoReconnect::new(policy)
        .max_attempts(3)
        .delays(Duration::from_millis(10), Duration::from_millis(50))
}

/// Runs `run` once per pull API on a fresh gateway from `script` and checks the
/// three traces and outcomes are equal; returns the one-item run (outcome, trace)
/// and the gateway of that run.
fn same_with_every_pull<D: Driver>(
    script: &Script,
    configure: impl Fn(&mut LiveRun),
) -> (LiveOutcome, Vec<Seen>, MockGateway) {
    let run_with = |pull: Pull| {
        let gw = gateway(script.clone());
        let mut run = run_for(&gw);
        configure(&mut run);
        let (out, trace) = D::live_traced(&run, pull);
        (out, trace, gw)
    };
    let (items, items_trace, items_gw) = run_with(Pull::Items);
    assert!(
        items_trace
            .iter()
            .any(|seen| matches!(seen, Seen::Record(_))),
        "{}: the one-item run saw no record",
        D::NAME
    );
    for pull in [Pull::Batches, Pull::Mixed] {
        let (out, trace, _gw) = run_with(pull);
        assert_eq!(
            trace.len(),
            items_trace.len(),
            "{} {pull:?}: {} things handed out, {} with next_event",
            D::NAME,
            trace.len(),
            items_trace.len()
        );
        if let Some(i) = (0..trace.len()).find(|&i| trace[i] != items_trace[i]) {
            panic!(
                "{} {pull:?}: item {i} differs: {:?} (batches) vs {:?} (next_event)",
                D::NAME,
                trace[i],
                items_trace[i]
            );
        }
        assert_eq!(out.records, items.records, "{} {pull:?}: records", D::NAME);
        assert_eq!(out.notices, items.notices, "{} {pull:?}: notices", D::NAME);
        assert_eq!(
            out.reconnects,
            items.reconnects,
            "{} {pull:?}: reconnects",
            D::NAME
        );
        assert_eq!(
            out.failure.as_ref().map(|f| &f.kind),
            items.failure.as_ref().map(|f| &f.kind),
            "{} {pull:?}: failure",
            D::NAME
        );
    }
    (items, items_trace, items_gw)
}

/// The records a trace holds, market data only (no symbol mapping), as a log.
fn market_data(trace: &[Seen]) -> RecordLog {
    let mut log = RecordLog::new(true);
    for seen in trace {
        if let Seen::Record(bytes) = seen {
            if bytes[1] != rtype::SYMBOL_MAPPING {
                log.push(bytes);
            }
        }
    }
    log
}

/// The market-data records the gateway sent on these connections, in order.
fn sent(logs: &[&ConnectionLog]) -> RecordLog {
    let mut log = RecordLog::new(true);
    for conn in logs {
        for record in &conn.records {
            if !matches!(record[1], rtype::SYSTEM | rtype::ERROR) {
                log.push(record);
            }
        }
    }
    log
}

fn count(trace: &[Seen], what: impl Fn(&Seen) -> bool) -> usize {
    trace.iter().filter(|seen| what(seen)).count()
}

fn assert_clean<D: Driver>(out: &LiveOutcome) {
    assert!(
        out.failure.is_none(),
        "{}: unexpected failure {:?}",
        D::NAME,
        out.failure
    );
}

// ---------------------------------------------------------------------------------
// Live
// ---------------------------------------------------------------------------------

/// 2,000 MBO records with a `SystemMsg` every 97 records and an `ErrorMsg` every 500
/// in the timeline: batches end at every notice.
fn timeline_with_notices() -> (Vec<Vec<u8>>, usize) {
    let mut records = Vec::new();
    let mut notices = 0;
    for i in 0..2_000u64 {
        let mbo = generated_record(i, 1);
        let ts = mbo.hd.ts_event;
        records.push(encode_record(&mbo));
        if i % 97 == 96 {
            let msg = SystemMsg::new(ts, Some(SystemCode::SlowReaderWarning), "slow down")
                .expect("a short system message");
            records.push(encode_record(&msg));
            notices += 1;
        }
        if i % 500 == 499 {
            let msg = ErrorMsg::new(
                ts,
                Some(ErrorCode::SkippedRecordsAfterSlowReading),
                "skipped",
                true,
            );
            records.push(encode_record(&msg));
            notices += 1;
        }
    }
    (records, notices)
}

fn batches_match_items_with_acks_mappings_and_notices<D: Driver>() {
    let (timeline, notices) = timeline_with_notices();
    let script = Script::new()
        .records(timeline)
        .subscription_acks()
        .symbol_mappings()
        .keep_records();
    let (out, trace, gw) = same_with_every_pull::<D>(&script, |_| {});
    assert_clean::<D>(&out);
    let logs = logs(&gw, 1);
    assert_eq!(market_data(&trace), sent(&[&logs[0]]), "{}", D::NAME);
    assert_eq!(market_data(&trace).count(), 2_000);
    // One ack, one mapping, the timeline's notices.
    assert_eq!(
        count(&trace, |s| matches!(s, Seen::Notice(_))),
        notices + 1,
        "{}: notices",
        D::NAME
    );
    assert_eq!(
        out.notices.first(),
        Some(&Some(SystemCode::SubscriptionAck as u8)),
        "{}: the ack comes first",
        D::NAME
    );
    assert_eq!(
        count(
            &trace,
            |s| matches!(s, Seen::Record(r) if r[1] == rtype::SYMBOL_MAPPING)
        ),
        1,
        "{}: the symbol mapping",
        D::NAME
    );
    assert!(
        matches!(trace.iter().find(|s| !matches!(s, Seen::Authenticated)), Some(Seen::Metadata { dataset, .. }) if dataset == DATASET),
        "{}: metadata comes first: {:?}",
        D::NAME,
        trace.first()
    );
}

fn batches_match_items_in_small_reads<D: Driver>() {
    // Writes of 997 bytes: records straddle reads, batches are short.
    let script = Script::new()
        .generated_records(5_000)
        .keep_records()
        .subscription_acks()
        .behavior(Behavior::new().write_split(997));
    let (out, trace, gw) = same_with_every_pull::<D>(&script, |_| {});
    assert_clean::<D>(&out);
    let logs = logs(&gw, 1);
    assert_eq!(market_data(&trace), sent(&[&logs[0]]), "{}", D::NAME);
    assert_eq!(out.records.count(), 5_000);
}

fn batches_match_items_when_the_stream_is_cut_mid_record<D: Driver>() {
    let script = Script::new()
        .generated_records(1_000)
        .keep_records()
        .subscription_acks()
        .behavior(Behavior::new().cut_mid_record_after(600));
    let (out, trace, gw) = same_with_every_pull::<D>(&script, |_| {});
    assert_failed::<D>(out.failure.as_ref(), "truncated", &[]);
    let logs = logs(&gw, 1);
    assert_eq!(market_data(&trace).count(), 600, "{}", D::NAME);
    assert_eq!(market_data(&trace), sent(&[&logs[0]]), "{}", D::NAME);
}

fn batches_match_items_across_a_gap_fill_reconnect<D: Driver>() {
    // Runs of 3 records share a timestamp and the cut falls inside a run: the
    // replay repeats records the client already has, which batches must drop too.
    let script = Script::new()
        .generated_records_with_ties(300, 3)
        .keep_records()
        .subscription_acks()
        .on_connection(0, Behavior::new().cut_mid_record_after(100));
    let (out, trace, gw) = same_with_every_pull::<D>(&script, |run| {
        run.auto_reconnect = Some(reconnect_config(ReconnectPolicy::GapFill));
        run.max_records = Some(300);
    });
    assert_clean::<D>(&out);
    assert_eq!(
        out.reconnects,
        [(ReconnectPolicy::GapFill, None)],
        "{}",
        D::NAME
    );
    let logs = logs(&gw, 2);
    let replay_from = logs[1]
        .first_record_index
        .expect("the second connection served");
    let mut expected = RecordLog::new(true);
    for record in &logs[0].records {
        expected.push(record);
    }
    for record in &logs[1].records[100 - replay_from..] {
        expected.push(record);
    }
    assert_eq!(
        market_data(&trace).count(),
        300,
        "{}: every record once",
        D::NAME
    );
    assert_eq!(
        market_data(&trace),
        expected,
        "{}: order and bytes",
        D::NAME
    );
    assert_eq!(
        count(&trace, |s| matches!(s, Seen::Metadata { .. })),
        2,
        "{}: one metadata per connection",
        D::NAME
    );
    let reconnected = trace
        .iter()
        .position(|s| matches!(s, Seen::Reconnected(..)))
        .expect("a reconnect in the trace");
    let records_before = trace[..reconnected]
        .iter()
        .filter(|s| matches!(s, Seen::Record(_)))
        .count();
    assert_eq!(
        records_before,
        100,
        "{}: the reconnect comes after the first connection's records",
        D::NAME
    );
}

fn batches_match_items_across_a_resubscribe_reconnect<D: Driver>() {
    let script = Script::new()
        .generated_records(300)
        .keep_records()
        .on_connection(0, Behavior::new().cut_mid_record_after(100))
        .on_connection(1, Behavior::new().skip_on_resume(20));
    let (out, trace, gw) = same_with_every_pull::<D>(&script, |run| {
        run.auto_reconnect = Some(reconnect_config(ReconnectPolicy::Resubscribe));
        // The client reconnects after a clean end too: stop at what the gateway sends.
        run.max_records = Some(280);
    });
    assert_clean::<D>(&out);
    let last_ts = dbn_pipe_tests::generate::mbo_record(99).ts_recv;
    assert_eq!(
        out.reconnects,
        [(ReconnectPolicy::Resubscribe, Some(last_ts))],
        "{}",
        D::NAME
    );
    let logs = logs(&gw, 2);
    assert_eq!(market_data(&trace).count(), 280, "{}", D::NAME);
    assert_eq!(
        market_data(&trace),
        sent(&[&logs[0], &logs[1]]),
        "{}",
        D::NAME
    );
}

// ---------------------------------------------------------------------------------
// Historical
// ---------------------------------------------------------------------------------

fn range_run(server: &MockHistorical) -> RangeRun {
    RangeRun {
        base_url: server.base_url(),
        root_pem: server.root_pem(),
        params: GetRangeParams::new(DATASET, Schema::Mbo, ["ESH1"], 1_609_160_400_000_000_000u64)
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

fn range_with<D: Driver>(reply: &Reply, pull: Pull) -> RangeOutcome {
    let server = historical(reply.clone());
    D::range_pulled(&range_run(&server), pull)
}

fn range_batches_equal_the_oracle<D: Driver>() {
    let body = mock_historical::mbo_body(30_000, 32 * 1024);
    let (metadata, records) = oracle(&body, true);
    let reply = Reply::dbn_zst(body)
        .framing(Framing::Chunked { chunk_size: 7_919 })
        .warnings(["dataset condition degraded"]);
    for pull in [Pull::Items, Pull::Batches, Pull::Mixed] {
        let out = range_with::<D>(&reply, pull);
        assert!(
            out.failure.is_none(),
            "{} {pull:?}: {:?}",
            D::NAME,
            out.failure
        );
        assert_eq!(
            out.metadata.as_ref(),
            Some(&metadata),
            "{} {pull:?}",
            D::NAME
        );
        assert_eq!(out.records, records, "{} {pull:?}: records", D::NAME);
        assert_eq!(out.warnings, ["dataset condition degraded"], "{pull:?}");
    }
}

fn range_batches_deliver_the_records_before_a_cut<D: Driver>() {
    let body = mock_historical::mbo_body(20_000, 16 * 1024);
    let reply = Reply::dbn_zst(body.clone())
        .framing(Framing::Chunked { chunk_size: 4_096 })
        .fault(Fault::Cut {
            after_body_bytes: body.len() / 2,
            how: CutKind::Abrupt,
        });
    let items = range_with::<D>(&reply, Pull::Items);
    assert_failed::<D>(items.failure.as_ref(), "truncated", &[]);
    let (_, all) = oracle(&body, true);
    let all = all.records().expect("kept");
    let got = items.records.records().expect("kept");
    assert!(
        !got.is_empty() && got.len() < all.len() && got == &all[..got.len()],
        "{}: a strict prefix of the oracle",
        D::NAME
    );
    for pull in [Pull::Batches, Pull::Mixed] {
        let out = range_with::<D>(&reply, pull);
        assert_failed::<D>(out.failure.as_ref(), "truncated", &[]);
        assert_eq!(out.records, items.records, "{} {pull:?}: records", D::NAME);
    }
}

// ---------------------------------------------------------------------------------
// tokio: next_batch in select!
// ---------------------------------------------------------------------------------

mod tokio_cancel {
    use std::time::Duration;

    use dbn::rtype;
    use dbn_pipe_protocol::live::{ApiKey, LiveBatch, Subscription};
    use dbn_pipe_tests::mock_gateway::{Behavior, Script};
    use dbn_pipe_tests::scenario::{KEY, RecordLog};
    use dbn_pipe_tokio::{Error, Event, LiveClient, LiveOptions};

    use super::{DATASET, gateway, logs, sent};

    const N: usize = 20_000;
    /// Safety net so a broken client fails the test instead of hanging it.
    const LIMIT: Duration = Duration::from_secs(60);

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

    /// What one turn of the loop got.
    enum Turn {
        Cancelled,
        Records,
        /// `next_batch` said the next thing is not records.
        Event,
    }

    /// Takes up to `take` records of a returned batch (dropping it with the rest
    /// inside).
    fn take_records(
        batch: Result<Option<LiveBatch<'_>>, Error>,
        take: usize,
        got: &mut RecordLog,
    ) -> Turn {
        match batch {
            Ok(Some(batch)) => {
                for record in batch.take(take) {
                    assert_ne!(record.header().rtype, rtype::SYSTEM, "a notice in a batch");
                    got.push(record.as_ref());
                }
                Turn::Records
            }
            Ok(None) => Turn::Event,
            Err(err) => panic!("unexpected error: {err}"),
        }
    }

    async fn cancelled_next_batch_loses_nothing() {
        // Writes of 37 bytes: the client waits (and is cancelled) often, mid-record
        // too; an ack notice sits between the metadata and the records.
        let gw = gateway(
            Script::new()
                .generated_records(N)
                .keep_records()
                .subscription_acks()
                .behavior(Behavior::new().write_split(37)),
        );
        let key = ApiKey::new(KEY).expect("the test key");
        let options = LiveOptions::new(key, DATASET).addr(gw.addr().to_string());
        let mut client = LiveClient::connect(options).await.expect("connect");
        client
            .subscribe(Subscription::new(dbn::Schema::Mbo, ["ESH1"]))
            .await
            .expect("subscribe");
        client.start().await.expect("start");
        let mut got = RecordLog::new(true);
        let (mut turns, mut cancelled, mut notices, mut events) = (0u64, 0u64, 0u64, 0u64);
        let run = async {
            loop {
                turns += 1;
                // Take 1 to 5 records of each batch and drop it with the rest inside.
                let take = 1 + (turns % 5) as usize;
                // Alternate: a 50 µs timer racing the batch, and a cancel at the
                // first wait.
                let turn = if turns % 2 == 0 {
                    tokio::select! {
                        batch = client.next_batch() => take_records(batch, take, &mut got),
                        () = tokio::time::sleep(Duration::from_micros(50)) => Turn::Cancelled,
                    }
                } else {
                    match poll_once(client.next_batch()).await {
                        Some(batch) => take_records(batch, take, &mut got),
                        None => {
                            // Let the runtime poll the socket before trying again.
                            tokio::task::yield_now().await;
                            Turn::Cancelled
                        }
                    }
                };
                match turn {
                    Turn::Cancelled => cancelled += 1,
                    Turn::Records => {}
                    Turn::Event => {
                        events += 1;
                        // The event waits in the client: no wait, nothing to cancel.
                        let event = poll_once(client.next_event())
                            .await
                            .expect("next_event returns at once after next_batch said Ok(None)");
                        match event.expect("no error") {
                            Some(Event::Gateway { .. }) => notices += 1,
                            Some(Event::Record(record)) => got.push(record.as_ref()),
                            Some(_) => {}
                            None => break,
                        }
                    }
                }
            }
        };
        tokio::time::timeout(LIMIT, run).await.expect("in time");
        let logs = logs(&gw, 1);
        assert_eq!(got.count(), N as u64, "every record exactly once");
        assert_eq!(
            got,
            sent(&[&logs[0]]),
            "records lost, repeated or reordered"
        );
        assert_eq!(notices, 1, "the subscription ack");
        println!("{cancelled} cancellations of next_batch, {events} other events, {turns} turns");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn cancelled_next_batch_loses_nothing_on_the_current_thread_runtime() {
        cancelled_next_batch_loses_nothing().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelled_next_batch_loses_nothing_on_the_multi_thread_runtime() {
        cancelled_next_batch_loses_nothing().await;
    }
}
