//! The parent process: starts the server child, runs every measurement in its own
//! client child (contenders round-robin, so that load from other processes falls on
//! all of them alike), and prints the tables, the ratios and the targets.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Instant;

use serde_json::Value;

use crate::common::{RESULT_PREFIX, median};

/// Settings, from environment variables (all optional).
#[derive(Debug, Clone)]
struct Config {
    /// `E2E_RECORDS`: records in the throughput streams (default 10,000,000).
    records: u64,
    /// `E2E_ROUNDS`: rounds of the throughput scenarios (default 5).
    rounds: usize,
    /// `E2E_SCENARIOS`: comma-separated subset of
    /// `live,zstd,hist,latency,ttfr,scaling` (default all).
    scenarios: Vec<String>,
    /// `E2E_LATENCY_SECS`: length of each latency run at 10,000 records/s (default 3).
    latency_secs: u64,
    /// `E2E_LATENCY_ROUNDS`: latency runs per contender (default 3).
    latency_rounds: usize,
    /// `E2E_TTFR_ITERATIONS`: connections per time-to-first-record run (default 21).
    ttfr_iterations: usize,
    /// `E2E_SCALE_RECORDS`: records per scaling run, over all sessions (default
    /// 2,000,000).
    scale_records: u64,
    /// `E2E_SCALE_ROUNDS`: rounds of the scaling runs (default 3).
    scale_rounds: usize,
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

impl Config {
    fn from_env() -> Self {
        let scenarios = std::env::var("E2E_SCENARIOS")
            .unwrap_or_else(|_| "live,zstd,hist,latency,ttfr,scaling".to_owned())
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        Self {
            records: env_num("E2E_RECORDS", 10_000_000),
            rounds: env_num("E2E_ROUNDS", 5usize).max(1),
            scenarios,
            latency_secs: env_num("E2E_LATENCY_SECS", 3),
            latency_rounds: env_num("E2E_LATENCY_ROUNDS", 3usize).max(1),
            ttfr_iterations: env_num("E2E_TTFR_ITERATIONS", 21usize).max(1),
            scale_records: env_num("E2E_SCALE_RECORDS", 2_000_000),
            scale_rounds: env_num("E2E_SCALE_ROUNDS", 3usize).max(1),
        }
    }

    fn runs(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }
}

/// The server child and what it announced.
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    live_port: u16,
    https_port: u16,
    plain_bytes: u64,
    zst_bytes: u64,
    gen_s: f64,
}

impl Server {
    fn spawn(exe: &Path, dir: &Path, records: u64) -> io::Result<Self> {
        let mut child = Command::new(exe)
            .arg("server")
            .arg(format!("records={records}"))
            .arg(format!("dir={}", dir.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let field = |key: &str| -> io::Result<String> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
                .ok_or_else(|| io::Error::other(format!("server said {line:?}")))
        };
        let num = |key: &str| -> io::Result<u64> {
            field(key)?
                .parse()
                .map_err(|_| io::Error::other(format!("server said {line:?}")))
        };
        Ok(Self {
            live_port: num("live")? as u16,
            https_port: num("https")? as u16,
            plain_bytes: num("plain_bytes")?,
            zst_bytes: num("zst_bytes")?,
            gen_s: field("gen_s")?.parse().unwrap_or(f64::NAN),
            stdin,
            child,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Closing its standard input ends it.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// Runs one client child; its result, or the error it printed.
fn client(exe: &Path, args: &[String]) -> Result<Value, String> {
    let output = Command::new(exe)
        .arg("client")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix(RESULT_PREFIX))
        .and_then(|json| serde_json::from_str(json).ok());
    match (output.status.success(), result) {
        (true, Some(value)) => Ok(value),
        _ => Err(format!(
            "client {} failed ({}): {}",
            args.join(" "),
            output.status,
            stdout.trim()
        )),
    }
}

fn num(value: &Value, key: &str) -> f64 {
    value.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// Every round's result of one row.
#[derive(Debug, Default)]
struct Row {
    runs: Vec<Value>,
    failures: Vec<String>,
}

impl Row {
    fn push(&mut self, result: Result<Value, String>) {
        match result {
            Ok(v) => self.runs.push(v),
            Err(e) => {
                eprintln!("{e}");
                self.failures.push(e);
            }
        }
    }

    fn median_of(&self, f: impl Fn(&Value) -> f64) -> f64 {
        median(&self.runs.iter().map(f).collect::<Vec<_>>())
    }

    /// Median records per second.
    fn rate(&self) -> f64 {
        self.median_of(|v| num(v, "records") / num(v, "wall_s"))
    }

    /// Median MB/s (10^6 bytes) of decoded bytes.
    fn mbs(&self) -> f64 {
        self.median_of(|v| num(v, "bytes") / num(v, "wall_s") / 1e6)
    }

    /// Median CPU seconds per million records.
    fn cpu_per_m(&self) -> f64 {
        self.median_of(|v| num(v, "cpu_s") / num(v, "records") * 1e6)
    }

    /// Largest peak memory above the baseline, MiB.
    fn peak_mib(&self) -> f64 {
        self.runs
            .iter()
            .map(|v| num(v, "peak_kib") / 1024.0)
            .fold(f64::NAN, f64::max)
    }

    /// Largest steady-state allocations per million records.
    fn allocs(&self) -> f64 {
        self.runs
            .iter()
            .map(|v| num(v, "steady_allocs") / num(v, "steady_records") * 1e6)
            .fold(f64::NAN, f64::max)
    }
}

fn fmt(v: f64, decimals: usize) -> String {
    if v.is_nan() {
        "n/a".to_owned()
    } else {
        let s = format!("{v:.decimals$}");
        // Thousands separators on the integer part.
        let (int, frac) = s.split_once('.').map_or((s.as_str(), ""), |(i, f)| (i, f));
        let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if frac.is_empty() {
            format!("{sign}{grouped}")
        } else {
            format!("{sign}{grouped}.{frac}")
        }
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

/// One target: what, measured ratio or value, whether met.
struct Target {
    what: String,
    measured: String,
    met: Option<bool>,
}

fn target(targets: &mut Vec<Target>, what: String, measured: f64, met: bool, unit: &str) {
    targets.push(Target {
        what,
        measured: format!("{}{unit}", fmt(measured, 2)),
        met: if measured.is_nan() { None } else { Some(met) },
    });
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned()))
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("nproc {cores}, CPU {cpu}, {rustc}")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Contender names of this build, ours first.
fn contenders() -> Vec<&'static str> {
    let mut all = vec!["mio", "tokio", "mio-batch", "tokio-batch"];
    if cfg!(feature = "official") {
        all.push("official");
    }
    all
}

fn label(contender: &str, ceiling: &str) -> String {
    match contender {
        "mio" => "ours, dbn-pipe-mio".to_owned(),
        "tokio" => "ours, dbn-pipe-tokio".to_owned(),
        "mio-batch" => "ours, dbn-pipe-mio, next_batch".to_owned(),
        "tokio-batch" => "ours, dbn-pipe-tokio, next_batch".to_owned(),
        "official" => "official databento 0.64".to_owned(),
        _ => format!("ceiling: {ceiling}"),
    }
}

/// The parent's work; see the module docs.
pub(crate) fn main() -> io::Result<()> {
    let cfg = Config::from_env();
    let exe = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(format!("dbn-pipe-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run(&cfg, &exe, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(cfg: &Config, exe: &Path, dir: &Path) -> io::Result<()> {
    let started = Instant::now();
    println!("# dbn-pipe end to end");
    println!();
    println!("machine: {}", machine());
    println!("load average at start: {}", loadavg());
    if !cfg!(feature = "official") {
        println!(
            "built without `--features official`: our clients and the ceilings only (no ratios to the official client)"
        );
    }
    let server = Server::spawn(exe, dir, cfg.records)?;
    println!(
        "workload: {} v3 MBO records, {} MB plain DBN, {} MB as zstd level 3 in 16 MiB frames (generated in {:.1} s)",
        fmt(cfg.records as f64, 0),
        fmt(server.plain_bytes as f64 / 1e6, 1),
        fmt(server.zst_bytes as f64 / 1e6, 1),
        server.gen_s
    );
    println!();

    let common = |extra: &[(&str, String)]| -> Vec<String> {
        let mut args = vec![
            format!("records={}", cfg.records),
            format!("plain_bytes={}", server.plain_bytes),
            format!("dir={}", dir.display()),
        ];
        args.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
        args
    };
    let mut targets = Vec::new();
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    let ours = ["mio", "tokio", "mio-batch", "tokio-batch"];
    let official = cfg!(feature = "official");

    // Throughput: rounds of every contender in turn.
    let mut kinds: Vec<(&str, &str)> = Vec::new();
    if cfg.runs("live") {
        kinds.push(("live", ""));
    }
    if cfg.runs("zstd") {
        kinds.push(("zstd", ""));
    }
    if cfg.runs("hist") {
        kinds.extend([("hist", "CL"), ("hist", "CHUNKED"), ("hist", "CLOSE")]);
    }
    for round in 0..cfg.rounds {
        eprintln!(
            "round {}/{} ({:.0} s in)",
            round + 1,
            cfg.rounds,
            started.elapsed().as_secs_f64()
        );
        for &(kind, symbol) in &kinds {
            let port = if kind == "hist" {
                server.https_port
            } else {
                server.live_port
            };
            for contender in contenders().into_iter().chain(["bare"]) {
                let args = common(&[
                    ("role", "throughput".to_owned()),
                    ("kind", kind.to_owned()),
                    ("contender", contender.to_owned()),
                    ("port", port.to_string()),
                    ("symbol", symbol.to_owned()),
                ]);
                let key = (format!("{kind}{symbol}"), contender.to_owned());
                rows.entry(key).or_default().push(client(exe, &args));
            }
        }
    }
    for &(kind, symbol) in &kinds {
        let scenario = format!("{kind}{symbol}");
        let (title, ceiling) = match (kind, symbol) {
            ("live", _) => (
                "1. Live, uncompressed (loopback gateway, large writes)",
                "bare socket read, bytes counted",
            ),
            ("zstd", _) => (
                "2. Live, compression=zstd",
                "bare zstd decompression from memory",
            ),
            (_, "CL") => (
                "3a. Historical, Content-Length",
                "bare TLS + zstd, one core",
            ),
            (_, "CHUNKED") => (
                "3b. Historical, chunked (64 KiB chunks)",
                "bare TLS + de-chunk + zstd, one core",
            ),
            _ => (
                "3c. Historical, close-delimited (close_notify)",
                "bare TLS + zstd, one core",
            ),
        };
        let row = |c: &str| rows.get(&(scenario.clone(), c.to_owned()));
        let rate_of = |c: &str| row(c).map_or(f64::NAN, Row::rate);
        let official_rate = rate_of("official");
        let ceiling_rate = rate_of("bare");
        println!("## {title}");
        println!();
        println!(
            "Medians of {} rounds; window from the first record to the last; CPU and memory are the client process's own.",
            cfg.rounds
        );
        println!();
        println!(
            "| contender | Mrecords/s | MB/s | CPU s / M records | peak MiB above baseline | allocations / M records (steady) | / official | / ceiling |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for contender in contenders().into_iter().chain(["bare"]) {
            let Some(r) = row(contender) else { continue };
            let ceiling_row = contender == "bare";
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |{}",
                label(contender, ceiling),
                fmt(r.rate() / 1e6, 2),
                fmt(r.mbs(), 0),
                fmt(r.cpu_per_m(), 3),
                if ceiling_row {
                    "-".to_owned()
                } else {
                    fmt(r.peak_mib(), 2)
                },
                if ceiling_row {
                    "-".to_owned()
                } else {
                    fmt(r.allocs(), 1)
                },
                if ceiling_row || contender == "official" {
                    "-".to_owned()
                } else {
                    fmt(ratio(r.rate(), official_rate), 2)
                },
                if ceiling_row {
                    "-".to_owned()
                } else {
                    fmt(ratio(r.rate(), ceiling_rate), 2)
                },
                if r.failures.is_empty() {
                    String::new()
                } else {
                    format!(" ({} failed runs)", r.failures.len())
                },
            );
        }
        println!();
        for c in ours {
            let Some(r) = row(c) else { continue };
            let (vs_official, vs_ceiling) = match (kind, symbol) {
                ("live", _) => (2.0, 0.75),
                ("zstd", _) => (1.5, 0.9),
                (_, "CL") => (1.0, 0.9),
                _ => (1.3, 0.9),
            };
            let what = |t: &str| format!("{title}: {c} {t}");
            if official {
                let rx = ratio(r.rate(), official_rate);
                target(
                    &mut targets,
                    what(&format!("records/s >= {vs_official}x official")),
                    rx,
                    rx >= vs_official,
                    "x",
                );
            }
            let rc = ratio(r.rate(), ceiling_rate);
            target(
                &mut targets,
                what(&format!("records/s >= {vs_ceiling}x ceiling")),
                rc,
                rc >= vs_ceiling,
                "x",
            );
            if kind == "hist" && official {
                let official_cpu = row("official").map_or(f64::NAN, Row::cpu_per_m);
                // Records per CPU second, ours over official's.
                let rx = ratio(official_cpu, r.cpu_per_m());
                target(
                    &mut targets,
                    what("records per CPU second >= 1.3x official"),
                    rx,
                    rx >= 1.3,
                    "x",
                );
            }
            let peak = r.peak_mib();
            target(
                &mut targets,
                what("peak memory < 8 MiB above baseline"),
                peak,
                peak < 8.0,
                " MiB",
            );
            let allocs = r.allocs();
            target(
                &mut targets,
                what("zero allocations per record (steady state)"),
                allocs,
                allocs == 0.0,
                " per M records",
            );
        }
    }

    if cfg.runs("latency") {
        let rate = 10_000u64;
        let count = rate * cfg.latency_secs;
        let warmup = (rate / 2).min(count / 2);
        println!(
            "## 4. Live latency at {} records/s (gateway write to record in hand, CLOCK_REALTIME in ts_recv)",
            fmt(rate as f64, 0)
        );
        println!();
        println!(
            "{} records per run, the first {} dropped as warm-up; the gateway writes each due batch of records (usually one) in one write. Medians over {} rounds of each run's percentiles (contenders round-robin).",
            fmt(count as f64, 0),
            fmt(warmup as f64, 0),
            cfg.latency_rounds
        );
        println!();
        let mut lat: BTreeMap<&str, Row> = BTreeMap::new();
        for _ in 0..cfg.latency_rounds {
            for contender in contenders() {
                let args = vec![
                    "role=latency".to_owned(),
                    format!("contender={contender}"),
                    format!("port={}", server.live_port),
                    format!("rate={rate}"),
                    format!("count={count}"),
                    format!("warmup={warmup}"),
                ];
                lat.entry(contender).or_default().push(client(exe, &args));
            }
        }
        println!("| contender | p50 µs | p99 µs | p99.9 µs | max µs | p99 of each round µs |");
        println!("|---|---:|---:|---:|---:|---|");
        let pct = |r: &Row, key: &str| r.median_of(|v| num(v, key));
        for contender in contenders() {
            let Some(r) = lat.get(contender) else {
                continue;
            };
            let rounds: Vec<String> = r.runs.iter().map(|v| fmt(num(v, "p99_us"), 0)).collect();
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                label(contender, ""),
                fmt(pct(r, "p50_us"), 1),
                fmt(pct(r, "p99_us"), 1),
                fmt(pct(r, "p999_us"), 1),
                fmt(pct(r, "max_us"), 1),
                rounds.join(", ")
            );
        }
        println!();
        if let Some(off) = lat.get("official") {
            for c in ours {
                let Some(r) = lat.get(c) else { continue };
                let p99 = ratio(pct(r, "p99_us"), pct(off, "p99_us"));
                target(
                    &mut targets,
                    format!("4. latency: {c} p99 <= official p99"),
                    p99,
                    p99 <= 1.0,
                    "x",
                );
                let p50 = ratio(pct(r, "p50_us"), pct(off, "p50_us"));
                target(
                    &mut targets,
                    format!("4. latency: {c} p50 < official p50"),
                    p50,
                    p50 < 1.0,
                    "x",
                );
            }
        }
    }

    if cfg.runs("ttfr") {
        println!("## 5. Time from connect to first record (loopback)");
        println!();
        println!(
            "{} fresh connections per contender in one process; from the client's construction (connect, handshake; TLS and the request for historical) to the first record in hand. Live: a 1,000-record stream; historical: a 1,000-record Content-Length body.",
            cfg.ttfr_iterations
        );
        println!();
        println!(
            "| contender | live median ms | live min ms | historical median ms | historical min ms |"
        );
        println!("|---|---:|---:|---:|---:|");
        for contender in contenders() {
            let mut cells = Vec::new();
            for (kind, port) in [("live", server.live_port), ("hist", server.https_port)] {
                let args = vec![
                    "role=ttfr".to_owned(),
                    format!("kind={kind}"),
                    format!("contender={contender}"),
                    format!("port={port}"),
                    format!("iterations={}", cfg.ttfr_iterations),
                    format!("dir={}", dir.display()),
                ];
                match client(exe, &args) {
                    Ok(v) => {
                        let med = num(&v, "median_ms");
                        cells.push(fmt(med, 2));
                        cells.push(fmt(num(&v, "min_ms"), 2));
                        if ours.contains(&contender) {
                            target(
                                &mut targets,
                                format!("5. time to first record, {kind}: {contender} <= 5 ms"),
                                med,
                                med <= 5.0,
                                " ms",
                            );
                        }
                    }
                    Err(e) => {
                        cells.push(format!("failed: {e}"));
                        cells.push(String::new());
                    }
                }
            }
            println!("| {} | {} |", label(contender, ""), cells.join(" | "));
        }
        println!();
    }

    if cfg.runs("scaling") {
        println!("## 8. Scaling: one mio thread, N live sessions");
        println!();
        println!(
            "{} records per run split evenly over the sessions; medians of {} rounds; window from the first record of any session to the last of all.",
            fmt(cfg.scale_records as f64, 0),
            cfg.scale_rounds
        );
        println!();
        println!(
            "| sessions | aggregate Mrecords/s | CPU ns / record | CPU / record vs 1 session | peak MiB above baseline | allocations / M records |"
        );
        println!("|---:|---:|---:|---:|---:|---:|");
        let counts = [1usize, 10, 100];
        let mut scale: BTreeMap<usize, Row> = BTreeMap::new();
        for _ in 0..cfg.scale_rounds {
            for &n in &counts {
                let args = vec![
                    "role=scaling".to_owned(),
                    format!("sessions={n}"),
                    format!("per_session={}", cfg.scale_records / n as u64),
                    format!("port={}", server.live_port),
                ];
                scale.entry(n).or_default().push(client(exe, &args));
            }
        }
        let one = scale.get(&1).map_or(f64::NAN, Row::cpu_per_m);
        for (n, r) in &scale {
            let cpu = r.cpu_per_m();
            println!(
                "| {n} | {} | {} | {} | {} | {} |",
                fmt(r.rate() / 1e6, 2),
                fmt(cpu * 1e3, 1),
                fmt(ratio(cpu, one), 2),
                fmt(r.peak_mib(), 2),
                fmt(r.allocs(), 1)
            );
        }
        println!();
        if let Some(r) = scale.get(&100) {
            let x = ratio(r.cpu_per_m(), one);
            target(
                &mut targets,
                "8. scaling: CPU per record at 100 sessions <= 1.5x one session".to_owned(),
                x,
                x <= 1.5,
                "x",
            );
        }
    }

    println!("## Targets");
    println!();
    println!("| target | measured | verdict |");
    println!("|---|---:|---|");
    for t in &targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        println!("| {} | {} | {verdict} |", t.what, t.measured);
    }
    println!();
    println!(
        "load average at end: {}; total {:.0} s",
        loadavg(),
        started.elapsed().as_secs_f64()
    );
    drop(server);
    Ok(())
}
