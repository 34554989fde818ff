//! The main job of dbn-pipe, with no key and no network: the repo's loopback live
//! gateway replays generated MBO records and the real client streams them through the
//! tokio driver; then the loopback HTTPS historical server serves the same kind of
//! records as a `.dbn.zst` body, which the client downloads to a file with progress.
//! Every record is checked against what was served, and a summary is printed.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Instant;

use dbn::Schema;
use dbn_pipe_protocol::historical::GetRangeParams;
use dbn_pipe_protocol::live::{ApiKey, LiveCompression, Subscription};
use dbn_pipe_protocol::tls::TlsConfig;
use dbn_pipe_tests::generate::{self, START_NS};
use dbn_pipe_tests::mock_gateway::{Behavior, MockGateway, Script, TEST_API_KEY};
use dbn_pipe_tests::mock_historical::{self, MockHistorical, Reply};
use dbn_pipe_tokio::{HistoricalClient, HistoricalOptions, LiveClient, LiveOptions};
use indicatif::{ProgressBar, ProgressStyle};

const USAGE: &str = "\
Stream generated market data from a local gateway and a local HTTPS historical
server through the dbn-pipe tokio driver.

Usage: dbn-pipe-demo [--records N] [--compression none|zstd] [--historical-records N]

  --records N               live MBO records the gateway replays (default 2000000)
  --compression none|zstd   live stream compression (default zstd)
  --historical-records N    records of the historical download, 0 skips it (default 1000000)
  -h, --help                this text
";

/// The demo's flags.
#[derive(Debug)]
struct Args {
    /// Live MBO records the gateway replays.
    records: u64,
    /// Live stream compression: `none` or `zstd`.
    compression: String,
    /// Records of the historical download (0 skips it).
    historical_records: u64,
}

impl Args {
    /// Parses the command line; `Ok(None)` after printing the help.
    ///
    /// The demo keeps to three flags and `lexopt` (a small, dependency-free parser):
    /// the main job builds cold in under two minutes, and a derive-based parser
    /// would add about a tenth to that build.
    fn parse() -> Result<Option<Self>, lexopt::Error> {
        use lexopt::prelude::*;
        let mut args = Self {
            records: 2_000_000,
            compression: "zstd".to_owned(),
            historical_records: 1_000_000,
        };
        let mut parser = lexopt::Parser::from_env();
        while let Some(arg) = parser.next()? {
            match arg {
                Long("records") => args.records = parser.value()?.parse()?,
                Long("compression") => args.compression = parser.value()?.string()?,
                Long("historical-records") => args.historical_records = parser.value()?.parse()?,
                Short('h') | Long("help") => {
                    print!("{USAGE}");
                    return Ok(None);
                }
                _ => return Err(arg.unexpected()),
            }
        }
        Ok(Some(args))
    }
}

type Failure = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(Some(args)) => args,
        Ok(None) => return ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dbn-pipe-demo: {err}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(&args)),
        Err(err) => Err(err.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("demo failed: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), Failure> {
    live(args).await?;
    if args.historical_records > 0 {
        historical(args.historical_records).await?;
    }
    Ok(())
}

/// Live: the gateway replays `records` generated MBO records; each one received must
/// be the one generated at its position.
async fn live(args: &Args) -> Result<(), Failure> {
    let compression = match args.compression.as_str() {
        "none" => LiveCompression::None,
        "zstd" => LiveCompression::Zstd,
        other => return Err(format!("--compression must be none or zstd, not {other}").into()),
    };
    let records = usize::try_from(args.records)?;
    let gateway = MockGateway::start(
        Script::new()
            .generated_records(records)
            .behavior(Behavior::new().write_chunk(1 << 20)),
    )?;
    println!(
        "live: a local gateway at {} replays {records} MBO records ({compression:?})",
        gateway.addr()
    );
    let started = Instant::now();
    let options = LiveOptions::new(ApiKey::new(TEST_API_KEY)?, "GLBX.MDP3")
        .addr(gateway.addr().to_string())
        .compression(compression);
    let mut client = LiveClient::connect(options).await?;
    client
        .subscribe(Subscription::new(Schema::Mbo, ["ESH1"]))
        .await?;
    let metadata = client.start().await?;
    let (mut count, mut volume, mut last_ts) = (0u64, 0u64, 0u64);
    while let Some(record) = client.next_record().await? {
        let Some(mbo) = record.get::<dbn::MboMsg>() else {
            continue; // gateway notices
        };
        let expected = generate::mbo_record(count);
        if mbo.order_id != expected.order_id || mbo.hd.ts_event != expected.hd.ts_event {
            return Err(format!("record {count} is not the one the gateway sent").into());
        }
        count += 1;
        volume += u64::from(mbo.size);
        last_ts = mbo.hd.ts_event;
    }
    let secs = started.elapsed().as_secs_f64();
    if count != args.records {
        return Err(format!("received {count} of {} records", args.records).into());
    }
    println!("  dataset        {}", metadata.dataset);
    println!("  records        {count} (each checked against the generator)");
    println!("  volume         {volume}");
    println!("  ts_event       {START_NS} .. {last_ts}");
    println!(
        "  throughput     {:.1} M records/s ({secs:.2} s, connect to last record)",
        count as f64 / secs / 1e6
    );
    Ok(())
}

/// Historical: `get_range` of a `.dbn.zst` body over TLS, written to a temporary
/// file with a progress bar, compared byte for byte with what the server sent.
async fn historical(records: u64) -> Result<(), Failure> {
    let body = mock_historical::mbo_body(records, 4 << 20);
    let server = MockHistorical::builder()
        .get_range(Reply::dbn_zst(body.clone()))
        .start()?;
    println!(
        "historical: a local HTTPS server at {} serves {records} records ({} bytes of .dbn.zst)",
        server.base_url(),
        body.len()
    );
    let tls = TlsConfig::builder()
        .without_webpki_roots()
        .add_pem(server.root_pem().as_bytes())?
        .build()?;
    let mut client = HistoricalClient::new(
        HistoricalOptions::new(ApiKey::new(TEST_API_KEY)?)
            .base_url(&server.base_url())
            .tls(tls),
    )?;
    let params = GetRangeParams::new("GLBX.MDP3", Schema::Mbo, ["ESH1"], START_NS);
    let path = std::env::temp_dir().join(format!("dbn-pipe-demo-{}.dbn.zst", std::process::id()));
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(body.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("  {bar:40} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let summary = client
        .get_range_to_file(&params, &path, |progress| {
            bar.set_position(progress.bytes_written);
            bar.set_message(format!("{} records", progress.records));
        })
        .await;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let written = std::fs::read(&path);
    let _ = std::fs::remove_file(&path);
    let summary = summary?;
    if written? != body || summary.records != records {
        return Err("the downloaded file differs from the served body".into());
    }
    println!(
        "  file           {} bytes, identical to the served body",
        summary.bytes_written
    );
    println!("  records        {}", summary.records);
    println!(
        "  throughput     {:.1} M records/s ({secs:.2} s)",
        summary.records as f64 / secs / 1e6
    );
    Ok(())
}
