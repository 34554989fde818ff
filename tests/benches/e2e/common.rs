//! What every role shares: the workload's constants, the per-record meter, process
//! statistics from `/proc/self`, and the result line a client process prints.

use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dbn::RecordRef;
use dbn_pipe_tests::generate::START_NS;
use serde_json::{Value, json};
use stats_alloc::Stats;

use crate::GLOBAL;

/// The fake API key of the test suite.
pub(crate) const TEST_KEY: &str = "db-0123456789abcdefghijklmnABCDE";

/// The dataset every client asks for.
pub(crate) const DATASET: &str = "GLBX.MDP3";

/// Size of a v3 MBO record.
pub(crate) const MBO_SIZE: u64 = 56;

/// Byte offset of `ts_recv` in a v3 MBO record: where the paced gateway stamps its
/// write time (nanoseconds since the UNIX epoch, `CLOCK_REALTIME`).
pub(crate) const TS_RECV_OFFSET: usize = 40;

/// Prefix of the line a client process prints its result on.
pub(crate) const RESULT_PREFIX: &str = "E2E-RESULT ";

/// `CLOCK_REALTIME` now, in nanoseconds since the UNIX epoch (the clock both the
/// gateway process and the client process read).
pub(crate) fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The checksum a client of `count` generated records must reach: the sum of
/// `ts_event` (`START_NS + 1000 i`) over the records, wrapping.
pub(crate) fn expected_sum(count: u64) -> u64 {
    let tri = (u128::from(count) * u128::from(count.saturating_sub(1)) / 2) as u64;
    START_NS
        .wrapping_mul(count)
        .wrapping_add(tri.wrapping_mul(1_000))
}

/// CPU time of this process so far (user + system, every thread, living or not),
/// from `/proc/self/stat`, in clock ticks of 10 ms (`USER_HZ` is 100 on Linux).
pub(crate) fn cpu_time() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may hold spaces) in parentheses.
            let rest = stat.rsplit_once(')')?.1;
            let mut fields = rest.split_whitespace();
            // rest: state(3) ppid(4) ... utime(14) stime(15): utime is the 12th here.
            let utime: u64 = fields.nth(11)?.parse().ok()?;
            let stime: u64 = fields.next()?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`), in KiB.
pub(crate) fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let value = line.strip_prefix(field)?.strip_prefix(':')?;
                value.trim().trim_end_matches("kB").trim().parse().ok()
            })
        })
        .unwrap_or(0)
}

/// Heap allocations (new blocks and reallocations) in a span of [`Stats`].
fn allocations(stats: &Stats) -> u64 {
    (stats.allocations + stats.reallocations) as u64
}

/// Counts the records a client hands the application and times them: the window runs
/// from the first record to the `expected`-th (the handshake and the teardown are
/// outside it), and allocations are counted from record `expected / 10` to the last
/// (steady state).
#[derive(Debug)]
pub(crate) struct Meter {
    expected: u64,
    warm: u64,
    records: u64,
    sum: u64,
    bytes: u64,
    baseline_kib: u64,
    start: Option<(Instant, Duration)>,
    end: Option<(Instant, Duration)>,
    warm_stats: Option<Stats>,
    end_stats: Option<Stats>,
}

impl Meter {
    /// A meter for `expected` records; takes the memory baseline now (call it before
    /// the client, its runtime or its poll exist).
    pub(crate) fn new(expected: u64) -> Self {
        Self {
            expected,
            warm: (expected / 10).max(1),
            records: 0,
            sum: 0,
            bytes: 0,
            baseline_kib: status_kib("VmRSS"),
            start: None,
            end: None,
            warm_stats: None,
            end_stats: None,
        }
    }

    /// Takes one record as an application would: reads its header.
    #[inline(always)]
    pub(crate) fn record(&mut self, rec: RecordRef<'_>) {
        if self.records == 0 {
            self.start = Some((Instant::now(), cpu_time()));
        }
        let header = rec.header();
        self.records += 1;
        self.sum = self.sum.wrapping_add(header.ts_event);
        self.bytes += header.record_size() as u64;
        if self.records == self.warm {
            self.warm_stats = Some(GLOBAL.stats());
        }
        if self.records == self.expected {
            self.end_stats = Some(GLOBAL.stats());
            self.end = Some((Instant::now(), cpu_time()));
        }
    }

    /// Counts `bytes` of a stream that is not decoded (the ceilings); `records` is how
    /// many records they complete.
    pub(crate) fn raw(&mut self, bytes: u64, records_done: u64) {
        if self.start.is_none() {
            self.start = Some((Instant::now(), cpu_time()));
        }
        self.bytes += bytes;
        self.records = records_done;
        if self.records >= self.expected && self.end.is_none() {
            self.end = Some((Instant::now(), cpu_time()));
        }
    }

    /// Checks the count and (for decoded records) the checksum against `sum`, and
    /// builds the result.
    pub(crate) fn finish(self, sum: Option<u64>) -> io::Result<Value> {
        if self.records != self.expected {
            return Err(io::Error::other(format!(
                "{} records, expected {}",
                self.records, self.expected
            )));
        }
        if sum.is_some_and(|sum| sum != self.sum) {
            return Err(io::Error::other("the records' checksum is wrong"));
        }
        let (Some((t0, c0)), Some((t1, c1))) = (self.start, self.end) else {
            return Err(io::Error::other("the window never closed"));
        };
        // Allocations from record `warm` to the last, and the records in between.
        let steady = match (&self.warm_stats, &self.end_stats) {
            (Some(warm), Some(end)) => Some(allocations(&(*end - *warm))),
            _ => None,
        };
        let hwm = status_kib("VmHWM");
        Ok(json!({
            "records": self.records,
            "bytes": self.bytes,
            "wall_s": (t1 - t0).as_secs_f64(),
            "cpu_s": (c1.saturating_sub(c0)).as_secs_f64(),
            "peak_kib": hwm.saturating_sub(self.baseline_kib),
            "steady_allocs": steady,
            "steady_records": self.expected - self.warm,
        }))
    }
}

/// The `q` quantile (0..=1) of sorted `values`.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The median of `values` (NaN when empty).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    quantile(&sorted, 0.5)
}

/// Arguments `key=value` after the role.
#[derive(Debug, Clone, Default)]
pub(crate) struct Args(pub(crate) Vec<(String, String)>);

impl Args {
    /// Parses `key=value` words (others, like cargo's `--bench`, are ignored).
    pub(crate) fn parse(words: impl IntoIterator<Item = String>) -> Self {
        Self(
            words
                .into_iter()
                .filter_map(|w| {
                    let (k, v) = w.split_once('=')?;
                    Some((k.to_owned(), v.to_owned()))
                })
                .collect(),
        )
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &str) -> io::Result<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| io::Error::other(format!("missing argument {key}=")))
    }

    /// The value of `key` parsed.
    pub(crate) fn num<T: std::str::FromStr>(&self, key: &str) -> io::Result<T> {
        self.get(key)?
            .parse()
            .map_err(|_| io::Error::other(format!("argument {key}= is not a number")))
    }
}
