//! The client roles: one measurement per process, so that the process's peak memory,
//! CPU time and allocations are the client's own. Each prints one result line
//! ([`RESULT_PREFIX`] and a JSON object) and exits non-zero on any failure.

use std::io;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dbn::{MboMsg, RecordRef, Schema};
use dbn_pipe_mio::{LiveConnection, LiveOptions};
use dbn_pipe_protocol::live::{ApiKey, Subscription};
use mio::{Events, Poll, Token};
use serde_json::{Value, json};

use crate::bare::{self, Shape};
use crate::clients::{self, Contender, HistTarget, LiveTarget};
use crate::common::{Args, DATASET, Meter, TEST_KEY, expected_sum, median, quantile, realtime_ns};

/// Runs the client role named by `role=`.
pub(crate) fn main(args: &Args) -> io::Result<Value> {
    match args.get("role")? {
        "throughput" => throughput(args),
        "latency" => latency(args),
        "ttfr" => ttfr(args),
        "scaling" => scaling(args),
        other => Err(io::Error::other(format!("unknown role {other:?}"))),
    }
}

fn hist_target(args: &Args, symbol: &str) -> io::Result<HistTarget> {
    let dir = PathBuf::from(args.get("dir")?);
    Ok(HistTarget {
        port: args.num("port")?,
        symbol: symbol.to_owned(),
        pem: std::fs::read(dir.join("cert.pem"))?,
        der: std::fs::read(dir.join("cert.der"))?,
    })
}

/// `kind=live|zstd|hist contender=mio|tokio|official|bare records= port= ...`: one
/// whole stream, timed from its first record to its last.
fn throughput(args: &Args) -> io::Result<Value> {
    let records: u64 = args.num("records")?;
    let kind = args.get("kind")?;
    let contender = args.get("contender")?;
    let shape = Shape {
        plain_bytes: args.num("plain_bytes")?,
        records,
    };
    let sum = Some(expected_sum(records));
    if contender == "bare" {
        return match kind {
            "live" => {
                let mut meter = Meter::new(records);
                bare::socket(args.num("port")?, shape, &mut meter)?;
                meter.finish(None)
            }
            "zstd" => {
                let dir = PathBuf::from(args.get("dir")?);
                let compressed = std::fs::read(dir.join("stream.dbn.zst"))?;
                let mut meter = Meter::new(records);
                bare::zstd_memory(&compressed, shape, &mut meter)?;
                meter.finish(None)
            }
            _ => {
                let target = hist_target(args, args.get("symbol")?)?;
                let mut meter = Meter::new(records);
                bare::tls_zstd(target.port, &target.symbol, &target.der, shape, &mut meter)?;
                meter.finish(None)
            }
        };
    }
    let contender = Contender::parse(contender)?;
    let hist = match kind {
        "hist" => Some(hist_target(args, args.get("symbol")?)?),
        _ => None,
    };
    let mut meter = Meter::new(records);
    let rt = clients::runtime(contender)?;
    let count = |rec: RecordRef<'_>| {
        meter.record(rec);
        ControlFlow::Continue(())
    };
    match &hist {
        Some(target) => clients::historical(contender, rt.as_ref(), target, count)?,
        None => {
            let target = LiveTarget {
                port: args.num("port")?,
                zstd: kind == "zstd",
                symbol: "FULL".to_owned(),
            };
            clients::live(contender, rt.as_ref(), &target, count)?;
        }
    }
    drop(rt);
    meter.finish(sum)
}

/// `contender= port= rate= count= warmup=`: a paced stream whose records carry
/// their write time; the latency of each record once in the application's hands.
fn latency(args: &Args) -> io::Result<Value> {
    let contender = Contender::parse(args.get("contender")?)?;
    let rate: u64 = args.num("rate")?;
    let count: usize = args.num("count")?;
    let warmup: usize = args.num("warmup")?;
    let target = LiveTarget {
        port: args.num("port")?,
        zstd: false,
        symbol: format!("PACED_{rate}_{count}"),
    };
    // Written in full before the client exists: no allocation while streaming.
    let mut samples = vec![i64::MAX; count];
    let rt = clients::runtime(contender)?;
    let mut i = 0;
    clients::live(contender, rt.as_ref(), &target, |rec| {
        let now = realtime_ns() as i64;
        if let (Some(mbo), Some(slot)) = (rec.get::<MboMsg>(), samples.get_mut(i)) {
            *slot = now - mbo.ts_recv as i64;
        }
        i += 1;
        ControlFlow::Continue(())
    })?;
    drop(rt);
    if i != count {
        return Err(io::Error::other(format!("{i} records, expected {count}")));
    }
    let mut us: Vec<f64> = samples[warmup.min(count)..]
        .iter()
        .map(|&ns| ns as f64 / 1_000.0)
        .collect();
    us.sort_by(f64::total_cmp);
    Ok(json!({
        "samples": us.len(),
        "p50_us": quantile(&us, 0.5),
        "p99_us": quantile(&us, 0.99),
        "p999_us": quantile(&us, 0.999),
        "max_us": us.last().copied().unwrap_or(f64::NAN),
    }))
}

/// `kind=live|hist contender= port= iterations=`: from the start of the connection
/// (client construction included) to the first record in hand, `iterations` times
/// on fresh connections.
fn ttfr(args: &Args) -> io::Result<Value> {
    let contender = Contender::parse(args.get("contender")?)?;
    let iterations: usize = args.num("iterations")?;
    let kind = args.get("kind")?;
    let rt = clients::runtime(contender)?;
    let hist = match kind {
        "hist" => Some(hist_target(args, "SMALL")?),
        _ => None,
    };
    let live = LiveTarget {
        port: args.num("port")?,
        zstd: false,
        symbol: "COUNT_1000".to_owned(),
    };
    let mut ms = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t0 = Instant::now();
        let mut first = None;
        let stop = |_rec: RecordRef<'_>| {
            first = Some(t0.elapsed());
            ControlFlow::Break(())
        };
        match &hist {
            Some(target) => clients::historical(contender, rt.as_ref(), target, stop)?,
            None => clients::live(contender, rt.as_ref(), &live, stop)?,
        }
        let first = first.ok_or_else(|| io::Error::other("no record"))?;
        ms.push(first.as_secs_f64() * 1_000.0);
    }
    let mut sorted = ms.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(json!({
        "iterations": iterations,
        "median_ms": median(&ms),
        "min_ms": sorted.first().copied().unwrap_or(f64::NAN),
        "p90_ms": quantile(&sorted, 0.9),
    }))
}

/// `sessions= per_session= port=`: one thread and one `mio::Poll` serving
/// `sessions` live connections at once, each streaming `per_session` records; the
/// aggregate is timed from the first record of any session to the last of all.
fn scaling(args: &Args) -> io::Result<Value> {
    let sessions: usize = args.num("sessions")?;
    let per_session: u64 = args.num("per_session")?;
    let port: u16 = args.num("port")?;
    let total = per_session * sessions as u64;
    let mut meter = Meter::new(total);
    let other = |err: dbn_pipe_mio::Error| io::Error::other(err.to_string());
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let key = ApiKey::new(TEST_KEY).map_err(|e| io::Error::other(e.to_string()))?;
    let now = Instant::now();
    let mut conns = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let options = LiveOptions::new(key.clone(), DATASET).addr(format!("127.0.0.1:{port}"));
        let mut conn =
            LiveConnection::connect(poll.registry(), Token(i), options, now).map_err(other)?;
        let symbol = format!("COUNT_{per_session}");
        conn.subscribe(Subscription::new(Schema::Mbo, symbol.as_str()))
            .map_err(other)?;
        conn.start(now).map_err(other)?;
        conns.push(conn);
    }
    // Connections with something to pull: all at first, then those with events.
    let mut ready: Vec<usize> = (0..sessions).collect();
    let mut flagged = vec![true; sessions];
    let mut per_conn = vec![0u64; sessions];
    let mut finished = 0;
    let mut next_deadline: Option<Instant> = None;
    while finished < sessions {
        for &i in &ready {
            flagged[i] = false;
            let conn = &mut conns[i];
            if conn.is_finished() {
                continue;
            }
            while let Some(rec) = conn.next_record().map_err(other)? {
                meter.record(rec);
                per_conn[i] += 1;
            }
            if conn.is_finished() {
                finished += 1;
            }
        }
        ready.clear();
        if finished == sessions {
            break;
        }
        // The earliest deadline of all connections (heartbeat timers).
        if next_deadline.is_none_or(|at| at <= Instant::now()) {
            next_deadline = conns.iter().filter_map(LiveConnection::poll_timeout).min();
        }
        let timeout = next_deadline.map(|at| at.saturating_duration_since(Instant::now()));
        poll.poll(
            &mut events,
            timeout.map(|t| t.max(Duration::from_millis(1))),
        )?;
        let now = Instant::now();
        for event in &events {
            let i = event.token().0;
            if let Some(conn) = conns.get_mut(i) {
                conn.handle_event(event, now);
                if !std::mem::replace(&mut flagged[i], true) {
                    ready.push(i);
                }
            }
        }
        if next_deadline.is_some_and(|at| now >= at) {
            for (i, conn) in conns.iter_mut().enumerate() {
                conn.handle_timeout(now);
                if !std::mem::replace(&mut flagged[i], true) {
                    ready.push(i);
                }
            }
            next_deadline = None;
        }
    }
    if let Some(i) = per_conn.iter().position(|&n| n != per_session) {
        return Err(io::Error::other(format!(
            "session {i} got {} records, expected {per_session}",
            per_conn[i]
        )));
    }
    let sum = expected_sum(per_session).wrapping_mul(sessions as u64);
    meter.finish(Some(sum))
}
