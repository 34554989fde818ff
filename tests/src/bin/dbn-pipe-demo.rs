//! The main job of dbn-pipe, until the drivers exist: encode a synthetic MBO stream with
//! the `dbn` crate, compress it with zstd in several frames, decode it through
//! `dbn-pipe-protocol` in 64 KiB reads, and check the summary against what was encoded.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use dbn::MboMsg;
use dbn_pipe_protocol::{Decoded, StreamConfig, StreamDecoder};
use dbn_pipe_tests::generate;

/// Decode a generated `.dbn.zst` stream through the dbn-pipe core and print a summary.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Number of MBO records to generate.
    #[arg(long, default_value_t = 2_000_000)]
    records: u64,
    /// Uncompressed bytes per zstd frame.
    #[arg(long, default_value_t = 4 << 20)]
    frame_bytes: usize,
    /// Size of each simulated read, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    read_bytes: usize,
}

/// What the decode loop saw.
#[derive(Debug, Default)]
struct Summary {
    dataset: String,
    records: u64,
    volume: u64,
    first_ts: Option<u64>,
    last_ts: u64,
    max_sequence: u32,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let plain = generate::mbo_stream(args.records);
    let compressed = generate::zstd_frames(&plain, args.frame_bytes, 3);
    println!(
        "encoded {} MBO records: {} bytes of DBN, {} bytes as {} zstd frames",
        args.records,
        plain.len(),
        compressed.len(),
        plain.len().div_ceil(args.frame_bytes.max(1)),
    );
    let started = Instant::now();
    let summary = match decode(&compressed, args.read_bytes.max(1)) {
        Ok(summary) => summary,
        Err(err) => {
            eprintln!("decode failed: {err} (kind {:?})", err.kind());
            return ExitCode::FAILURE;
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    println!("dataset          {}", summary.dataset);
    println!("records          {}", summary.records);
    println!("total size       {}", summary.volume);
    println!(
        "ts_event         {} .. {}",
        summary.first_ts.unwrap_or_default(),
        summary.last_ts
    );
    println!("last sequence    {}", summary.max_sequence);
    println!(
        "decoded in       {:.3} s ({:.1} M records/s, {:.0} MB/s of DBN)",
        elapsed,
        summary.records as f64 / elapsed / 1e6,
        plain.len() as f64 / elapsed / 1e6
    );
    let expected_volume: u64 = (0..args.records)
        .map(|i| u64::from(generate::mbo_record(i).size))
        .sum();
    let expected_last = args.records.checked_sub(1).map(generate::mbo_record);
    let ok = summary.records == args.records
        && summary.volume == expected_volume
        && expected_last.is_none_or(|last| {
            summary.last_ts == last.hd.ts_event && summary.max_sequence == last.sequence
        });
    if ok {
        println!("check            OK: every record decoded and matches what was encoded");
        ExitCode::SUCCESS
    } else {
        println!(
            "check            MISMATCH: expected {} records, volume {expected_volume}",
            args.records
        );
        ExitCode::FAILURE
    }
}

/// Feeds `compressed` in reads of `read_bytes`, draining after each.
fn decode(compressed: &[u8], read_bytes: usize) -> Result<Summary, dbn_pipe_protocol::Error> {
    let mut decoder = StreamDecoder::new(StreamConfig::default())?;
    let mut summary = Summary::default();
    let mut reads = compressed.chunks(read_bytes);
    let mut pending: &[u8] = &[];
    loop {
        if pending.is_empty() {
            match reads.next() {
                Some(read) => pending = read,
                None => decoder.finish()?,
            }
        }
        let taken = decoder.handle_input(pending);
        pending = &pending[taken..];
        loop {
            match decoder.poll_batch(usize::MAX)? {
                Decoded::Metadata(metadata) => summary.dataset = metadata.dataset.clone(),
                Decoded::Record(batch) => {
                    for rec in batch {
                        if let Some(mbo) = rec.get::<MboMsg>() {
                            summary.records += 1;
                            summary.volume += u64::from(mbo.size);
                            summary.first_ts.get_or_insert(mbo.hd.ts_event);
                            summary.last_ts = mbo.hd.ts_event;
                            summary.max_sequence = summary.max_sequence.max(mbo.sequence);
                        }
                    }
                }
                Decoded::NeedInput(_) => break,
                Decoded::End => return Ok(summary),
            }
        }
    }
}
