//! Flags and output shared by the `live` and `get_range` examples of both drivers
//! (`dbn-pipe-mio` includes this file by path), so the four programs take the same
//! flags and print the same way.
//!
//! Output: with `--json`, one record per line from `dbn`'s JSON encoder and nothing
//! else on stdout; without it, a summary. Errors go to stderr as
//! `error [<layer>]: <message>` with a non-zero exit code.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::{self, BufWriter, Stdout, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Instant;

use clap::Parser;
use dbn::encode::EncodeRecordRef;
use dbn::encode::json::Encoder as JsonEncoder;
use dbn::{Metadata, RecordRef, SType, Schema};
use dbn_pipe_protocol::historical::{DateTime, GetRangeParams};
use dbn_pipe_protocol::live::{ALL_SYMBOLS, ApiKey, LiveCompression, Start, Subscription, Symbols};

/// Flags of the `live` examples.
#[derive(Debug, Parser)]
#[command(about = "Stream live records from a Databento gateway (key from DATABENTO_API_KEY)")]
pub struct LiveArgs {
    /// Gateway as HOST:PORT (default: the dataset's Databento gateway).
    #[arg(long)]
    pub addr: Option<String>,
    /// Dataset, e.g. GLBX.MDP3.
    #[arg(long)]
    pub dataset: String,
    /// Schema, e.g. mbo, trades, ohlcv-1s.
    #[arg(long, value_parser = parse_schema)]
    pub schema: Schema,
    /// Comma-separated symbols (ALL_SYMBOLS for all).
    #[arg(long, value_delimiter = ',', required = true)]
    pub symbols: Vec<String>,
    /// How the symbols are named.
    #[arg(long, value_parser = parse_stype, default_value = "raw_symbol")]
    pub stype_in: SType,
    /// Intraday replay start: nanoseconds since the epoch or ISO-8601.
    #[arg(long)]
    pub start: Option<String>,
    /// Accepted for symmetry with get_range; the live stream has no end.
    #[arg(long)]
    pub end: Option<String>,
    /// Stream compression.
    #[arg(long, value_parser = parse_compression, default_value = "none")]
    pub compression: LiveCompression,
    /// Ask the gateway to append its send time to every record.
    #[arg(long)]
    pub ts_out: bool,
    /// An extra trusted root certificate (PEM); unused by the plain-TCP live API.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// One JSON record per line on stdout instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many records (default: until the gateway closes).
    #[arg(long)]
    pub max_records: Option<u64>,
    /// Gateway heartbeat interval in seconds.
    #[arg(long)]
    pub heartbeat_interval_s: Option<u32>,
}

impl LiveArgs {
    /// The subscription the flags describe.
    pub fn subscription(&self) -> Result<Subscription, String> {
        let mut sub =
            Subscription::new(self.schema, symbols(&self.symbols)?).stype_in(self.stype_in);
        if let Some(start) = &self.start {
            sub = sub.start(match start.parse::<u64>() {
                Ok(nanos) => Start::Nanos(nanos),
                Err(_) => Start::iso8601(start.as_str()).map_err(|e| e.to_string())?,
            });
        }
        Ok(sub)
    }
}

/// Flags of the `get_range` examples.
#[derive(Debug, Parser)]
#[command(about = "Download records with timeseries.get_range (key from DATABENTO_API_KEY)")]
pub struct RangeArgs {
    /// Server base URL (default https://hist.databento.com).
    #[arg(long)]
    pub base_url: Option<String>,
    /// Dataset, e.g. GLBX.MDP3.
    #[arg(long)]
    pub dataset: String,
    /// Schema, e.g. mbo, trades, ohlcv-1s.
    #[arg(long, value_parser = parse_schema)]
    pub schema: Schema,
    /// Comma-separated symbols (ALL_SYMBOLS for all).
    #[arg(long, value_delimiter = ',', required = true)]
    pub symbols: Vec<String>,
    /// How the symbols are named.
    #[arg(long, value_parser = parse_stype, default_value = "raw_symbol")]
    pub stype_in: SType,
    /// Inclusive start: nanoseconds since the epoch or ISO-8601.
    #[arg(long)]
    pub start: String,
    /// Exclusive end: nanoseconds since the epoch or ISO-8601.
    #[arg(long)]
    pub end: Option<String>,
    /// At most this many records.
    #[arg(long)]
    pub limit: Option<u64>,
    /// An extra trusted root certificate (PEM), e.g. of a test server.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// One JSON record per line on stdout instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Write the compressed body (.dbn.zst) to this file instead of decoding it.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

impl RangeArgs {
    /// The request the flags describe.
    pub fn params(&self) -> Result<GetRangeParams, String> {
        let mut params = GetRangeParams::new(
            self.dataset.as_str(),
            self.schema,
            symbols(&self.symbols)?,
            date_time(&self.start)?,
        )
        .stype_in(self.stype_in);
        if let Some(end) = &self.end {
            params = params.end(date_time(end)?);
        }
        if let Some(limit) = self.limit {
            params = params.limit(limit);
        }
        Ok(params)
    }

    /// The extra root certificate's PEM bytes, if `--ca-file` was given.
    pub fn ca_pem(&self) -> Result<Option<Vec<u8>>, String> {
        read_ca(self.ca_file.as_ref())
    }
}

/// Reads a `--ca-file`.
fn read_ca(path: Option<&PathBuf>) -> Result<Option<Vec<u8>>, String> {
    path.map(|p| std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display())))
        .transpose()
}

/// The API key from `DATABENTO_API_KEY`.
pub fn api_key() -> Result<ApiKey, String> {
    let key = std::env::var("DATABENTO_API_KEY")
        .map_err(|_| "set DATABENTO_API_KEY to your 32-character API key".to_owned())?;
    ApiKey::new(key).map_err(|e| e.to_string())
}

fn symbols(list: &[String]) -> Result<Symbols, String> {
    match list {
        [] => Err("--symbols needs at least one symbol".to_owned()),
        [one] if one == ALL_SYMBOLS => Ok(Symbols::All),
        _ => Ok(Symbols::List(list.to_vec())),
    }
}

fn date_time(value: &str) -> Result<DateTime, String> {
    match value.parse::<u64>() {
        Ok(nanos) => Ok(DateTime::Nanos(nanos)),
        Err(_) => DateTime::iso8601(value).map_err(|e| e.to_string()),
    }
}

fn parse_schema(value: &str) -> Result<Schema, String> {
    Schema::from_str(value).map_err(|e| e.to_string())
}

fn parse_stype(value: &str) -> Result<SType, String> {
    SType::from_str(value).map_err(|e| e.to_string())
}

fn parse_compression(value: &str) -> Result<LiveCompression, String> {
    match value {
        "none" => Ok(LiveCompression::None),
        "zstd" => Ok(LiveCompression::Zstd),
        other => Err(format!("compression must be none or zstd, not {other:?}")),
    }
}

/// Prints an error naming the failing layer; returns the exit code to end with.
pub fn fail(layer: &dyn Display, err: &dyn Display) -> ExitCode {
    eprintln!("error [{layer}]: {err}");
    ExitCode::from(2)
}

/// Where records go: JSON lines, or tallies for a summary.
pub struct Output {
    json: Option<JsonEncoder<BufWriter<Stdout>>>,
    ts_out: bool,
    started: Instant,
    records: u64,
    bytes: u64,
    per_rtype: BTreeMap<u8, u64>,
    first_ts: Option<u64>,
    last_ts: Option<u64>,
    dataset: Option<String>,
}

impl Output {
    /// Output in JSON lines (`json`) or as a summary at the end.
    pub fn new(json: bool) -> Self {
        Self {
            json: json.then(|| JsonEncoder::new(BufWriter::new(io::stdout()), false, false, false)),
            ts_out: false,
            started: Instant::now(),
            records: 0,
            bytes: 0,
            per_rtype: BTreeMap::new(),
            first_ts: None,
            last_ts: None,
            dataset: None,
        }
    }

    /// Records carry a trailing `ts_out` (live `--ts-out`): JSON lines include it.
    pub fn ts_out(mut self, ts_out: bool) -> Self {
        self.ts_out = ts_out;
        self
    }

    /// Notes the stream's metadata (the summary names the dataset).
    pub fn metadata(&mut self, metadata: &Metadata) {
        self.dataset = Some(metadata.dataset.clone());
    }

    /// Counts one record, or writes it as a JSON line.
    pub fn record(&mut self, record: RecordRef<'_>) -> io::Result<()> {
        let header = record.header();
        self.records += 1;
        self.bytes += record.as_ref().len() as u64;
        *self.per_rtype.entry(header.rtype).or_default() += 1;
        self.first_ts.get_or_insert(header.ts_event);
        self.last_ts = Some(header.ts_event);
        let Some(encoder) = &mut self.json else {
            return Ok(());
        };
        let bytes = record.as_ref();
        let written = match (self.ts_out, bytes.len().checked_sub(8)) {
            (true, Some(at)) => {
                let mut ts = [0; 8];
                ts.copy_from_slice(&bytes[at..]);
                encoder.encode_record_ref_with_ts_out(record, u64::from_le_bytes(ts))
            }
            _ => encoder.encode_record_ref(record),
        };
        written.map_err(io::Error::other)
    }

    /// Records counted so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Flushes JSON lines, or prints the summary.
    pub fn finish(self) -> io::Result<()> {
        if let Some(mut encoder) = self.json {
            return encoder.get_mut().flush();
        }
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let mut out = io::stdout().lock();
        if let Some(dataset) = &self.dataset {
            writeln!(out, "dataset      {dataset}")?;
        }
        writeln!(out, "records      {}", self.records)?;
        for (rtype, count) in &self.per_rtype {
            let name = dbn::RType::try_from(*rtype)
                .map(|r| format!("{r:?}"))
                .unwrap_or_else(|_| format!("rtype {rtype:#04x}"));
            writeln!(out, "  {name:<11}{count}")?;
        }
        if let (Some(first), Some(last)) = (self.first_ts, self.last_ts) {
            writeln!(out, "ts_event     {first} .. {last}")?;
        }
        writeln!(
            out,
            "throughput   {:.0} records/s, {:.1} MB/s over {secs:.3} s",
            self.records as f64 / secs,
            self.bytes as f64 / secs / 1e6,
        )
    }
}
