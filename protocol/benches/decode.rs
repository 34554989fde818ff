//! Decoding throughput of `dbn-pipe-protocol` against the `dbn` crate's own sans-IO
//! decoder (`DbnFsm`) and against bandwidth ceilings (plain `memcpy`, bare zstd), with
//! two reference floors (the copy plus one or two unchecked passes over the records)
//! that bound what any decoder fed by copy can reach.
//!
//! Run with `cargo bench -p dbn-pipe-protocol`. Every contender decodes the same bytes,
//! fed in 64 KiB chunks with backpressure respected, and touches every record the same
//! way (sums `ts_event` and the record length); the checksums must agree. Contenders are
//! run round-robin so that noise from other processes hits them alike; the table
//! reports the median run and the spread (min..max).
//!
//! Workloads:
//! - (a) 16,384 v3 MBO records (about 900 KiB, cache-resident), decoded many times;
//! - (b) 10,000,000 v3 MBO records (560 MB), memory-bound;
//! - (c) the (b) stream as `.dbn.zst` (zstd level 3, 16 MiB frames).
//!
//! `DBN_BENCH_RECORDS` overrides the record count of (b) and (c) for quick runs;
//! `DBN_BENCH_PROFILE=<id>` runs one contender alone over the (a) stream (for
//! instruction counting, e.g. with `valgrind --tool=callgrind`).

use std::hint::black_box;
use std::time::Instant;

use dbn::decode::dbn::fsm::{DbnFsm, ProcessResult};
use dbn::{MboMsg, RecordRef};
use dbn_pipe_protocol::{DbnDecoder, Decoded, DecoderConfig, StreamConfig, StreamDecoder};
use zstd::stream::raw::{Decoder as RawZstd, InBuffer, Operation, OutBuffer};

mod common;

use common::{Checksum, START_NS, mbo_stream};

/// Input is offered in chunks of this size, as a socket or file read would.
const CHUNK: usize = 64 * 1024;
/// Records in the cache-resident workload (a).
const SMALL_RECORDS: u64 = 16_384;
/// Records in the memory-bound workloads (b) and (c).
const LARGE_RECORDS: u64 = 10_000_000;
/// Decompressed bytes per zstd frame in (c).
const ZSTD_FRAME: usize = 16 * 1024 * 1024;
/// zstd level used for (c).
const ZSTD_LEVEL: i32 = 3;
/// `Option<RecordRef>` slots handed to `DbnFsm::process_many` per call.
const FSM_SLOTS: usize = 64;

/// `plain` compressed as concatenated zstd frames of `frame_len` input bytes each.
fn zstd_frames(plain: &[u8], frame_len: usize, level: i32) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in plain.chunks(frame_len) {
        out.extend_from_slice(&zstd::bulk::compress(chunk, level).expect("zstd compresses"));
    }
    out
}

// ---------------------------------------------------------------------------------
// Contenders on plain DBN.

/// Ours: `DbnDecoder::handle_input` + `poll_batch(usize::MAX)`.
fn ours_batch(stream: &[u8]) -> Checksum {
    let mut dec = DbnDecoder::new(DecoderConfig::default()).expect("decoder");
    let mut check = Checksum::default();
    let drain = |dec: &mut DbnDecoder, check: &mut Checksum| {
        loop {
            match dec.poll_batch(usize::MAX).expect("valid stream") {
                Decoded::Record(batch) => check.add_all(batch),
                Decoded::Metadata(metadata) => drop(black_box(metadata)),
                Decoded::NeedInput(_) | Decoded::End => break,
            }
        }
    };
    for chunk in stream.chunks(CHUNK) {
        let mut pending = chunk;
        while !pending.is_empty() {
            let taken = dec.handle_input(pending);
            pending = &pending[taken..];
            drain(&mut dec, &mut check);
        }
    }
    dec.finish().expect("complete stream");
    drain(&mut dec, &mut check);
    check
}

/// Ours: `DbnDecoder::handle_input` + `poll` (one record per call).
fn ours_poll(stream: &[u8]) -> Checksum {
    let mut dec = DbnDecoder::new(DecoderConfig::default()).expect("decoder");
    let mut check = Checksum::default();
    let drain = |dec: &mut DbnDecoder, check: &mut Checksum| {
        loop {
            match dec.poll().expect("valid stream") {
                Decoded::Record(rec) => check.add(rec),
                Decoded::Metadata(metadata) => drop(black_box(metadata)),
                Decoded::NeedInput(_) | Decoded::End => break,
            }
        }
    };
    for chunk in stream.chunks(CHUNK) {
        let mut pending = chunk;
        while !pending.is_empty() {
            let taken = dec.handle_input(pending);
            pending = &pending[taken..];
            drain(&mut dec, &mut check);
        }
    }
    dec.finish().expect("complete stream");
    drain(&mut dec, &mut check);
    check
}

fn new_fsm() -> DbnFsm {
    DbnFsm::builder()
        .upgrade_policy(dbn::VersionUpgradePolicy::UpgradeToV3)
        .build()
        .expect("DbnFsm")
}

/// Drains every complete record `fsm` holds through `process_many`.
#[inline(always)]
fn fsm_drain(fsm: &mut DbnFsm, check: &mut Checksum) {
    loop {
        let mut slots: [Option<RecordRef<'_>>; FSM_SLOTS] = [None; FSM_SLOTS];
        match fsm.process_many(&mut slots) {
            ProcessResult::Record(records) => check.add_all(records.iter().copied()),
            ProcessResult::Metadata(metadata) => drop(black_box(metadata)),
            ProcessResult::ReadMore(_) => break,
            ProcessResult::Err(err) => panic!("DbnFsm: {err}"),
        }
    }
}

/// The `dbn` crate: `DbnFsm::write_all` + `process_many`.
fn fsm_write_all(stream: &[u8]) -> Checksum {
    let mut fsm = new_fsm();
    let mut check = Checksum::default();
    for chunk in stream.chunks(CHUNK) {
        fsm.write_all(chunk);
        fsm_drain(&mut fsm, &mut check);
    }
    check
}

/// The `dbn` crate: `DbnFsm::space` / `fill` + `process_many`.
fn fsm_space_fill(stream: &[u8]) -> Checksum {
    let mut fsm = new_fsm();
    let mut check = Checksum::default();
    for chunk in stream.chunks(CHUNK) {
        let mut pending = chunk;
        while !pending.is_empty() {
            let space = fsm.space();
            let n = space.len().min(pending.len());
            space[..n].copy_from_slice(&pending[..n]);
            fsm.fill(n);
            pending = &pending[n..];
            fsm_drain(&mut fsm, &mut check);
        }
    }
    check
}

/// Ceiling: copy the same chunks into a 64 KiB buffer.
fn memcpy(stream: &[u8]) -> Checksum {
    let mut buf = vec![0u8; CHUNK];
    for chunk in stream.chunks(CHUNK) {
        buf[..chunk.len()].copy_from_slice(chunk);
        black_box(&mut buf);
    }
    Checksum::default()
}

/// Reference floor for any decoder fed by copy: the same copy, in pieces of whole
/// records, then one pass reading every record's `ts_event` and length at the known
/// fixed record size, with no framing or checks at all. `header_pass` adds the pass
/// an exact-size batch needs first (comparing each record's two header bytes).
fn floor(stream: &[u8], header_pass: bool) -> Checksum {
    const STRIDE: usize = size_of::<MboMsg>();
    let metadata_len = u32::from_le_bytes(stream[4..8].try_into().expect("prelude"));
    let records = &stream[8 + metadata_len as usize..];
    let piece = CHUNK - CHUNK % STRIDE;
    let mut buf = vec![0u8; piece];
    let mut check = Checksum::default();
    for chunk in records.chunks(piece) {
        let buf = &mut buf[..chunk.len()];
        buf.copy_from_slice(chunk);
        let mut n = buf.len() / STRIDE;
        if header_pass {
            let key = [buf[0], buf[1]];
            n = buf
                .chunks_exact(STRIDE)
                .take_while(|rec| rec[..2] == key)
                .count();
        }
        let (mut records, mut sum) = (check.records, check.sum);
        for rec in buf[..n * STRIDE].chunks_exact(STRIDE) {
            let ts_event = u64::from_le_bytes(rec[8..16].try_into().expect("8 bytes"));
            records += 1;
            sum = sum
                .wrapping_add(ts_event)
                .wrapping_add(u64::from(rec[0]) * 4);
        }
        check = Checksum { records, sum };
    }
    check
}

fn floor_one_pass(stream: &[u8]) -> Checksum {
    floor(stream, false)
}

fn floor_two_passes(stream: &[u8]) -> Checksum {
    floor(stream, true)
}

// ---------------------------------------------------------------------------------
// Contenders on `.dbn.zst`.

/// Ours: `StreamDecoder` (zstd detected) + `poll_batch(usize::MAX)`.
fn ours_zst(compressed: &[u8]) -> Checksum {
    let mut dec = StreamDecoder::new(StreamConfig::default()).expect("decoder");
    let mut check = Checksum::default();
    let drain = |dec: &mut StreamDecoder, check: &mut Checksum| {
        loop {
            match dec.poll_batch(usize::MAX).expect("valid stream") {
                Decoded::Record(batch) => check.add_all(batch),
                Decoded::Metadata(metadata) => drop(black_box(metadata)),
                Decoded::NeedInput(_) | Decoded::End => break,
            }
        }
    };
    for chunk in compressed.chunks(CHUNK) {
        let mut pending = chunk;
        while !pending.is_empty() {
            let taken = dec.handle_input(pending);
            pending = &pending[taken..];
            drain(&mut dec, &mut check);
        }
    }
    dec.finish().expect("complete stream");
    drain(&mut dec, &mut check);
    check
}

/// The `dbn` crate's path: bare zstd into `DbnFsm::space` / `fill` + `process_many`.
fn fsm_zst(compressed: &[u8]) -> Checksum {
    let mut zstd = RawZstd::new().expect("zstd context");
    let mut fsm = new_fsm();
    let mut check = Checksum::default();
    for chunk in compressed.chunks(CHUNK) {
        let mut input = InBuffer::around(chunk);
        loop {
            let space = fsm.space();
            let mut output = OutBuffer::around(space);
            zstd.run(&mut input, &mut output).expect("zstd");
            let (produced, full) = (output.pos(), output.pos() == output.capacity());
            fsm.fill(produced);
            fsm_drain(&mut fsm, &mut check);
            if input.pos() == chunk.len() && !full {
                break;
            }
        }
    }
    check
}

/// Ceiling: bare zstd decompression of the same chunks into a 64 KiB buffer.
fn zstd_bare(compressed: &[u8]) -> Checksum {
    let mut zstd = RawZstd::new().expect("zstd context");
    let mut buf = vec![0u8; CHUNK];
    for chunk in compressed.chunks(CHUNK) {
        let mut input = InBuffer::around(chunk);
        loop {
            let mut output = OutBuffer::around(&mut buf[..]);
            zstd.run(&mut input, &mut output).expect("zstd");
            let full = output.pos() == output.capacity();
            black_box(&mut buf);
            if input.pos() == chunk.len() && !full {
                break;
            }
        }
    }
    Checksum::default()
}

// ---------------------------------------------------------------------------------
// Harness.

type DecodeFn = fn(&[u8]) -> Checksum;

struct Contender {
    /// Short name for `DBN_BENCH_PROFILE`.
    id: &'static str,
    name: &'static str,
    run: DecodeFn,
    /// Whether it decodes records (its checksum must match); ceilings do not.
    decodes: bool,
    /// Seconds per pass over the input, one entry per sample.
    samples: Vec<f64>,
}

impl Contender {
    fn new(id: &'static str, name: &'static str, run: DecodeFn, decodes: bool) -> Self {
        Self {
            id,
            name,
            run,
            decodes,
            samples: Vec::new(),
        }
    }

    fn median(&self) -> f64 {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        }
    }

    fn min(&self) -> f64 {
        self.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn max(&self) -> f64 {
        self.samples.iter().copied().fold(0.0, f64::max)
    }
}

struct Workload {
    label: &'static str,
    input: Vec<u8>,
    /// Decoded (plain DBN) bytes, for MB/s.
    plain_len: usize,
    records: u64,
    contenders: Vec<Contender>,
}

impl Workload {
    /// Checks every decoding contender agrees, then runs `warmup` rounds untimed and
    /// `samples` timed rounds, each round running every contender `passes` times
    /// (round-robin, so they share the machine's conditions).
    fn run(&mut self, warmup: usize, samples: usize, passes: usize) {
        let expected = expected_checksum(self.records);
        for c in &self.contenders {
            let got = black_box((c.run)(black_box(&self.input)));
            if c.decodes {
                assert_eq!(got, expected, "{}: {} checksum", self.label, c.name);
            }
        }
        for round in 0..warmup + samples {
            for c in &mut self.contenders {
                let start = Instant::now();
                for _ in 0..passes {
                    black_box((c.run)(black_box(&self.input)));
                }
                let elapsed = start.elapsed();
                if round >= warmup {
                    c.samples.push(elapsed.as_secs_f64() / passes as f64);
                }
            }
        }
    }

    fn get(&self, name: &str) -> &Contender {
        self.contenders
            .iter()
            .find(|c| c.name == name)
            .expect("contender exists")
    }

    fn print(&self) {
        println!(
            "\n{} — {} records, {:.1} MB decoded{}",
            self.label,
            self.records,
            self.plain_len as f64 / 1e6,
            if self.input.len() == self.plain_len {
                String::new()
            } else {
                format!(", {:.1} MB compressed", self.input.len() as f64 / 1e6)
            }
        );
        println!(
            "  {:<34} {:>11} {:>21} {:>11} {:>9} {:>8}",
            "contender", "median", "min..max", "Mrecords/s", "MB/s", "ns/rec"
        );
        for c in &self.contenders {
            let med = c.median();
            println!(
                "  {:<34} {:>11} {:>21} {:>11.1} {:>9.0} {:>8.2}",
                c.name,
                fmt_time(med),
                format!("{}..{}", fmt_time(c.min()), fmt_time(c.max())),
                self.records as f64 / med / 1e6,
                self.plain_len as f64 / med / 1e6,
                med * 1e9 / self.records as f64,
            );
        }
    }
}

fn fmt_time(secs: f64) -> String {
    if secs >= 1.0 {
        format!("{secs:.3} s")
    } else if secs >= 1e-3 {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{:.1} us", secs * 1e6)
    }
}

/// What a decoder of the first `records` generated records must compute.
fn expected_checksum(records: u64) -> Checksum {
    let mut sum = 0u64;
    for i in 0..records {
        let ts_event = START_NS + i * 1_000;
        sum = sum
            .wrapping_add(ts_event)
            .wrapping_add(size_of::<MboMsg>() as u64);
    }
    Checksum { records, sum }
}

fn ratio_line(name: &str, value: f64, target: f64) {
    let verdict = if value >= target { "met" } else { "NOT met" };
    println!("  {name:<60} {value:>6.2}  (target >= {target}: {verdict})");
}

const OURS_BATCH: &str = "ours DbnDecoder::poll_batch";
const OURS_POLL: &str = "ours DbnDecoder::poll";
const FSM_WRITE: &str = "dbn DbnFsm::process_many write_all";
const FSM_SPACE: &str = "dbn DbnFsm::process_many space/fill";
const MEMCPY: &str = "memcpy 64 KiB chunks (ceiling)";
const FLOOR_1: &str = "floor: memcpy + 1 unchecked pass";
const FLOOR_2: &str = "floor: memcpy + 2 unchecked passes";
const OURS_ZST: &str = "ours StreamDecoder::poll_batch";
const FSM_ZST: &str = "dbn zstd + DbnFsm::process_many";
const ZSTD_BARE: &str = "bare zstd raw::Decoder (ceiling)";

fn plain_contenders() -> Vec<Contender> {
    vec![
        Contender::new("ours-batch", OURS_BATCH, ours_batch, true),
        Contender::new("ours-poll", OURS_POLL, ours_poll, true),
        Contender::new("fsm-write", FSM_WRITE, fsm_write_all, true),
        Contender::new("fsm-space", FSM_SPACE, fsm_space_fill, true),
        Contender::new("memcpy", MEMCPY, memcpy, false),
        Contender::new("floor1", FLOOR_1, floor_one_pass, true),
        Contender::new("floor2", FLOOR_2, floor_two_passes, true),
    ]
}

/// The faster (by median) of the two ways of feeding `DbnFsm`.
fn best_fsm(w: &Workload) -> f64 {
    w.get(FSM_WRITE).median().min(w.get(FSM_SPACE).median())
}

fn zst_contenders() -> Vec<Contender> {
    vec![
        Contender::new("ours-zst", OURS_ZST, ours_zst, true),
        Contender::new("fsm-zst", FSM_ZST, fsm_zst, true),
        Contender::new("zstd", ZSTD_BARE, zstd_bare, false),
    ]
}

/// `DBN_BENCH_PROFILE=<id>`: runs one contender alone, over the (a) stream (or
/// `DBN_BENCH_RECORDS` records), compressed for the zstd contenders, and prints the
/// fastest and the median pass; for instruction counting with e.g.
/// `valgrind --tool=callgrind`, or timing one contender without the others.
fn profile(id: &str) {
    let records: u64 = std::env::var("DBN_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SMALL_RECORDS);
    let passes = (1_638_400 / records).clamp(5, 100) as usize;
    let plain = mbo_stream(records);
    let (contender, input) = if let Some(c) = plain_contenders().into_iter().find(|c| c.id == id) {
        (c, plain)
    } else if let Some(c) = zst_contenders().into_iter().find(|c| c.id == id) {
        (c, zstd_frames(&plain, ZSTD_FRAME, ZSTD_LEVEL))
    } else {
        panic!("unknown contender {id:?}");
    };
    let mut last = Checksum::default();
    let mut times = Vec::with_capacity(passes);
    for _ in 0..passes {
        let start = Instant::now();
        last = black_box((contender.run)(black_box(&input)));
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{}: {passes} passes over {} bytes, {last:?}; per pass min {} median {}",
        contender.name,
        input.len(),
        fmt_time(times[0]),
        fmt_time(times[passes / 2])
    );
}

fn main() {
    if let Ok(id) = std::env::var("DBN_BENCH_PROFILE") {
        return profile(&id);
    }
    let total = Instant::now();
    let large: u64 = std::env::var("DBN_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LARGE_RECORDS);
    println!(
        "dbn-pipe-protocol decode benchmark: {} KiB input chunks, medians of interleaved runs",
        CHUNK / 1024
    );

    // (a) cache-resident.
    let small = mbo_stream(SMALL_RECORDS);
    let mut a = Workload {
        label: "(a) cache-resident v3 MBO",
        plain_len: small.len(),
        input: small,
        records: SMALL_RECORDS,
        contenders: plain_contenders(),
    };
    a.run(20, 201, 1);
    a.print();

    // (b) memory-bound.
    let generated = Instant::now();
    let big = mbo_stream(large);
    let gen_time = generated.elapsed();
    let mut b = Workload {
        label: "(b) large v3 MBO",
        plain_len: big.len(),
        input: big,
        records: large,
        contenders: plain_contenders(),
    };
    b.run(1, 9, 1);
    b.print();

    // (c) .dbn.zst.
    let compressed_at = Instant::now();
    let compressed = zstd_frames(&b.input, ZSTD_FRAME, ZSTD_LEVEL);
    let zstd_time = compressed_at.elapsed();
    let mut c = Workload {
        label: "(c) large v3 MBO .dbn.zst",
        plain_len: b.input.len(),
        input: compressed,
        records: large,
        contenders: zst_contenders(),
    };
    drop(std::mem::take(&mut b.input));
    c.run(1, 9, 1);
    c.print();

    println!("\nratios (of medians)");
    ratio_line(
        "(a) ours poll_batch / DbnFsm (faster feed) records/s",
        best_fsm(&a) / a.get(OURS_BATCH).median(),
        2.5,
    );
    println!(
        "      ours poll / DbnFsm (faster feed) records/s: {:.2}",
        best_fsm(&a) / a.get(OURS_POLL).median()
    );
    println!(
        "      bound for a copy-fed decoder: floor 1 pass / DbnFsm {:.2}, floor 2 passes / DbnFsm {:.2}",
        best_fsm(&a) / a.get(FLOOR_1).median(),
        best_fsm(&a) / a.get(FLOOR_2).median()
    );
    ratio_line(
        "(b) ours poll_batch / memcpy bandwidth",
        b.get(MEMCPY).median() / b.get(OURS_BATCH).median(),
        0.6,
    );
    println!(
        "      ours poll_batch / DbnFsm (faster feed) records/s: {:.2}",
        best_fsm(&b) / b.get(OURS_BATCH).median()
    );
    println!(
        "      bound for a copy-fed decoder: floor 1 pass / memcpy {:.2}, floor 2 passes / memcpy {:.2}",
        b.get(MEMCPY).median() / b.get(FLOOR_1).median(),
        b.get(MEMCPY).median() / b.get(FLOOR_2).median()
    );
    ratio_line(
        "(c) ours StreamDecoder / bare zstd throughput",
        c.get(ZSTD_BARE).median() / c.get(OURS_ZST).median(),
        0.9,
    );
    println!(
        "      ours StreamDecoder / dbn zstd + DbnFsm: {:.2}",
        c.get(FSM_ZST).median() / c.get(OURS_ZST).median()
    );
    println!(
        "\n(input generation {:.1} s, zstd level {ZSTD_LEVEL} compression {:.1} s; total {:.1} s)",
        gen_time.as_secs_f64(),
        zstd_time.as_secs_f64(),
        total.elapsed().as_secs_f64()
    );
}
