//! The scenarios' [`Driver`] on `dbn-pipe-tokio`: each run on its own current-thread
//! runtime, the way a single-threaded service would use the client.

use std::path::Path;

use dbn_pipe_protocol::live::ApiKey;
use dbn_pipe_protocol::tls::TlsConfig;
use dbn_pipe_tokio::{Error, Event, HistoricalClient, HistoricalOptions, LiveClient, LiveOptions};

use super::{is_market_data, notice_code};
use crate::scenario::{
    Driver, Failure, FileOutcome, LiveOutcome, LiveRun, Pull, RangeOutcome, RangeRun, Seen,
};

/// `dbn-pipe-tokio` as a scenario driver.
#[derive(Debug, Clone, Copy)]
pub struct Tokio;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn failure(err: &Error) -> Failure {
    Failure::new(err.kind(), err)
}

impl Driver for Tokio {
    const NAME: &'static str = "tokio";

    fn live(run: &LiveRun) -> LiveOutcome {
        runtime().block_on(live(run))
    }

    fn range(run: &RangeRun) -> RangeOutcome {
        runtime().block_on(range(run))
    }

    fn range_to_file(run: &RangeRun, path: &Path) -> FileOutcome {
        runtime().block_on(range_to_file(run, path))
    }

    fn concurrent(lives: [&LiveRun; 2], range_run: &RangeRun) -> ([LiveOutcome; 2], RangeOutcome) {
        runtime().block_on(async {
            let (a, b, r) = tokio::join!(live(lives[0]), live(lives[1]), range(range_run));
            ([a, b], r)
        })
    }

    fn live_traced(run: &LiveRun, pull: Pull) -> (LiveOutcome, Vec<Seen>) {
        runtime().block_on(async {
            let mut out = LiveOutcome::new(run.keep_records);
            let mut trace = Some(Vec::new());
            if let Err(err) = live_into(run, &mut out, pull, &mut trace).await {
                out.failure = Some(failure(&err));
            }
            (out, trace.unwrap_or_default())
        })
    }

    fn range_pulled(run: &RangeRun, pull: Pull) -> RangeOutcome {
        runtime().block_on(async {
            let mut out = RangeOutcome::new(run.keep_records);
            if let Err(err) = range_into(run, &mut out, pull).await {
                out.failure = Some(failure(&err));
            }
            out
        })
    }
}

fn options(run: &LiveRun) -> Result<LiveOptions, Error> {
    let key = ApiKey::new(run.key.clone())?;
    let mut options = LiveOptions::new(key, run.dataset.clone())
        .addr(run.addr.clone())
        .compression(run.compression)
        .ts_out(run.ts_out);
    if let Some(s) = run.heartbeat_interval_s {
        options = options.heartbeat_interval_s(s);
    }
    if let Some(timeout) = run.silence_timeout {
        options = options.silence_timeout(timeout);
    }
    if let Some(timeout) = run.auth_timeout {
        options = options.auth_timeout(timeout);
    }
    if let Some(reconnect) = &run.auto_reconnect {
        options = options.auto_reconnect(reconnect.clone());
    }
    if let Some(bytes) = run.buffer_size {
        options = options.buffer_size(bytes);
    }
    Ok(options)
}

async fn live(run: &LiveRun) -> LiveOutcome {
    let mut out = LiveOutcome::new(run.keep_records);
    if let Err(err) = live_into(run, &mut out, Pull::Items, &mut None).await {
        out.failure = Some(failure(&err));
    }
    out
}

/// Whether the consumer stops here: pauses at the gate once, and stops for good after
/// `max_records`.
fn stops(run: &LiveRun, out: &LiveOutcome, paused: &mut bool) -> bool {
    if let Some((after, gate)) = &run.pause {
        if !*paused && out.records.count() >= *after {
            *paused = true;
            // A consumer that stops: nothing polls the client meanwhile.
            gate.wait();
        }
    }
    run.max_records
        .is_some_and(|max| out.records.count() >= max)
}

async fn live_into(
    run: &LiveRun,
    out: &mut LiveOutcome,
    pull: Pull,
    trace: &mut Option<Vec<Seen>>,
) -> Result<(), Error> {
    let mut client = LiveClient::connect(options(run)?).await?;
    for subscription in &run.subscriptions {
        client.subscribe(subscription.clone()).await?;
    }
    let metadata = client.start().await?;
    if let Some(trace) = trace {
        trace.push(Seen::metadata(&metadata));
    }
    out.metadata.push(metadata);
    let mut paused = false;
    loop {
        if stops(run, out, &mut paused) {
            return client.close().await;
        }
        if pull != Pull::Items {
            if let Some(batch) = client.next_batch().await? {
                let mut stop = false;
                for record in batch.take(take(pull)) {
                    record_live(out, trace, Event::Record(record));
                    if stops(run, out, &mut paused) {
                        // The rest of the batch stays in the client.
                        stop = true;
                        break;
                    }
                }
                if stop {
                    return client.close().await;
                }
                if pull == Pull::Batches {
                    continue;
                }
            }
        }
        match client.next_event().await? {
            None => return Ok(()),
            Some(event) => record_live(out, trace, event),
        }
    }
}

/// How many records of a batch a consumer takes.
fn take(pull: Pull) -> usize {
    match pull {
        Pull::Mixed => Pull::MIXED_TAKE,
        Pull::Items | Pull::Batches => usize::MAX,
    }
}

fn record_live(out: &mut LiveOutcome, trace: &mut Option<Vec<Seen>>, event: Event<'_>) {
    if let Some(trace) = trace {
        trace.push(match &event {
            Event::Record(record) => Seen::Record(record.as_ref().to_vec()),
            Event::Gateway { record, .. } => Seen::Notice(notice_code(record)),
            Event::Reconnected { policy, gap_from } => Seen::Reconnected(*policy, *gap_from),
            Event::Metadata(metadata) => Seen::metadata(metadata),
            other => panic!("tokio: an event the trace does not know: {other:?}"),
        });
    }
    match event {
        Event::Record(record) if is_market_data(record.header().rtype) => {
            out.records.push(record.as_ref());
        }
        Event::Gateway { record, .. } => out.notices.push(notice_code(&record)),
        Event::Reconnected { policy, gap_from } => out.reconnects.push((policy, gap_from)),
        Event::Metadata(metadata) => out.metadata.push(*metadata),
        _ => {}
    }
}

fn historical(run: &RangeRun) -> Result<HistoricalClient, Error> {
    let tls = TlsConfig::builder()
        .without_webpki_roots()
        .add_pem(run.root_pem.as_bytes())?
        .build()?;
    let mut options = HistoricalOptions::new(ApiKey::new(crate::scenario::KEY)?)
        .base_url(&run.base_url)
        .tls(tls);
    if let Some(timeout) = run.read_timeout {
        options = options.read_timeout(timeout);
    }
    options.build()
}

async fn range(run: &RangeRun) -> RangeOutcome {
    let mut out = RangeOutcome::new(run.keep_records);
    if let Err(err) = range_into(run, &mut out, Pull::Items).await {
        out.failure = Some(failure(&err));
    }
    out
}

async fn range_into(run: &RangeRun, out: &mut RangeOutcome, pull: Pull) -> Result<(), Error> {
    let mut client = historical(run)?;
    let mut stream = client.timeseries_get_range(&run.params).await?;
    out.metadata = Some(stream.metadata().clone());
    // X-Warning headers come with the response head, before the metadata.
    out.warnings = stream.warnings().to_vec();
    match pull {
        Pull::Items => {
            while let Some(record) = stream.next_record().await? {
                out.records.push(record.as_ref());
            }
        }
        Pull::Batches => {
            while let Some(batch) = stream.next_batch().await? {
                for record in batch {
                    out.records.push(record.as_ref());
                }
            }
        }
        Pull::Mixed => loop {
            if let Some(batch) = stream.next_batch().await? {
                for record in batch.take(Pull::MIXED_TAKE) {
                    out.records.push(record.as_ref());
                }
            }
            match stream.next_record().await? {
                Some(record) => out.records.push(record.as_ref()),
                None => break,
            }
        },
    }
    Ok(())
}

async fn range_to_file(run: &RangeRun, path: &Path) -> FileOutcome {
    let mut out = FileOutcome {
        bytes: 0,
        records: 0,
        progress: Vec::new(),
        failure: None,
    };
    let result = async {
        let mut client = historical(run)?;
        client
            .get_range_to_file(&run.params, path, |p| {
                out.progress.push((p.bytes_written, p.records));
            })
            .await
    }
    .await;
    match result {
        Ok(summary) => {
            out.bytes = summary.bytes_written;
            out.records = summary.records;
        }
        Err(err) => out.failure = Some(failure(&err)),
    }
    out
}
