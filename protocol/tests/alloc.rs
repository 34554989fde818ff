//! Heap use of the decoding core, measured with a counting global allocator.
//!
//! Proves two things:
//!
//! 1. **No allocation per record.** Once the metadata has been decoded and a first
//!    record handed out (warm-up), decoding 100,000 v3 MBO records makes zero heap
//!    allocations, through [`DbnDecoder::poll`], [`DbnDecoder::poll_batch`],
//!    `space`/`fill`, a v1 stream whose records are misaligned and converted, and
//!    [`StreamDecoder`] over multi-frame zstd input (poll and batch).
//! 2. **Bounded memory on hostile input.** The peak of live heap bytes while decoding
//!    hostile input (a metadata length far over the cap, endless partial records,
//!    metadata at the cap with adversarial content, arbitrary bytes) stays under a bound
//!    derived from the configuration; see [`bound`] for the formula.
//!
//! The allocator counts per thread (const-initialised thread-locals, so counting never
//! allocates), so the tests of this binary may run in parallel.
//!
//! libzstd allocates its context and window with C `malloc`, which a Rust
//! `#[global_allocator]` does not see: the zstd share of memory (at most the window
//! limit, 2^`zstd_window_log_max` bytes, plus zstd's block buffer of 128 KiB and its
//! context of roughly 100 to 200 KiB) is therefore stated but not measured here; the
//! window limit itself is enforced and tested in `errors.rs` (`WindowTooLarge`).

use std::io::Write as _;

use dbn::encode::dbn::Encoder;
use dbn::{MboMsg, MetadataBuilder, SType, Schema};
use dbn_pipe_protocol::{
    Compression, DbnDecoder, Decoded, DecoderConfig, FragmentFormat, StreamConfig, StreamDecoder,
    UpgradePolicy,
};
use proptest::collection::vec;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// The counting allocator
// ---------------------------------------------------------------------------------------

mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    /// Forwards to [`System`], counting allocations and live bytes per thread.
    pub(crate) struct Counting;

    thread_local! {
        static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
        static LIVE: Cell<i64> = const { Cell::new(0) };
        static PEAK: Cell<i64> = const { Cell::new(0) };
    }

    fn grew(bytes: usize) {
        let _ = LIVE.try_with(|live| {
            let now = live.get() + bytes as i64;
            live.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
    }

    fn shrank(bytes: usize) {
        let _ = LIVE.try_with(|live| live.set(live.get() - bytes as i64));
    }

    fn counted() {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }

    // SAFETY: every method forwards its arguments unchanged to `System`, which upholds
    // the `GlobalAlloc` contract; the bookkeeping only touches const-initialised
    // thread-locals of `Copy` types (no lazy initialisation, no destructor), so it
    // never allocates, recurses or unwinds.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller guarantees `layout` has a non-zero size, as
            // `System.alloc` requires.
            let ptr = unsafe { System.alloc(layout) };
            if !ptr.is_null() {
                counted();
                grew(layout.size());
            }
            ptr
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: as for `alloc`.
            let ptr = unsafe { System.alloc_zeroed(layout) };
            if !ptr.is_null() {
                counted();
                grew(layout.size());
            }
            ptr
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: the caller guarantees `ptr` was allocated by this allocator (hence
            // by `System`) with `layout`.
            unsafe { System.dealloc(ptr, layout) };
            shrank(layout.size());
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: the caller guarantees `ptr` was allocated by this allocator with
            // `layout` and that `new_size` is valid for it, as `System.realloc` requires.
            let new = unsafe { System.realloc(ptr, layout, new_size) };
            if !new.is_null() {
                counted();
                shrank(layout.size());
                grew(new_size);
            }
            new
        }
    }

    /// Allocations (including reallocations) made by this thread so far.
    pub(crate) fn allocations() -> u64 {
        ALLOCATIONS.with(Cell::get)
    }

    /// Starts a peak measurement on this thread; returns the live bytes now.
    pub(crate) fn start_peak() -> i64 {
        let live = LIVE.with(Cell::get);
        PEAK.with(|peak| peak.set(live));
        live
    }

    /// The highest live byte count since [`start_peak`] returned `base`, above `base`.
    pub(crate) fn peak_above(base: i64) -> usize {
        usize::try_from(PEAK.with(Cell::get) - base).unwrap_or(0)
    }
}

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

use counting::{allocations, peak_above, start_peak};

// ---------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------

const N: u64 = 100_000;
const CHUNK: usize = 16 * 1024;

fn header(version: u8, symbols: &[&str]) -> Vec<u8> {
    let metadata = MetadataBuilder::new()
        .dataset("GLBX.MDP3".to_owned())
        .schema(Some(Schema::Mbo))
        .start(1_700_000_000_000_000_000)
        .stype_in(Some(SType::RawSymbol))
        .stype_out(SType::InstrumentId)
        .version(version)
        .symbols(symbols.iter().map(|s| (*s).to_owned()).collect())
        .build();
    let mut out = Vec::new();
    Encoder::new(&mut out, &metadata).expect("encode metadata");
    out
}

fn mbo(i: u64) -> MboMsg {
    let mut rec = MboMsg::default();
    rec.hd.instrument_id = 1 + (i % 50) as u32;
    rec.hd.ts_event = 1_700_000_000_000_000_000 + i;
    rec.order_id = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    rec.price = 4_000_000_000_000 + (i % 1000) as i64;
    rec.size = 1 + (i % 13) as u32;
    rec
}

/// A v3 stream of `n` MBO records and the sum of their `ts_event`s.
fn mbo_stream(n: u64) -> (Vec<u8>, u64) {
    let mut bytes = header(3, &[]);
    let mut sum = 0u64;
    for i in 0..n {
        let rec = mbo(i);
        sum = sum.wrapping_add(rec.hd.ts_event);
        bytes.extend_from_slice(rec.as_ref());
    }
    (bytes, sum)
}

fn zstd_frame(data: &[u8]) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("zstd encoder");
    enc.include_checksum(true).expect("checksum flag");
    enc.write_all(data).expect("compress");
    enc.finish().expect("finish frame")
}

/// `data` compressed as one zstd frame per `frame_len` bytes.
fn zstd_frames(data: &[u8], frame_len: usize) -> Vec<u8> {
    data.chunks(frame_len).flat_map(zstd_frame).collect()
}

// ---------------------------------------------------------------------------------------
// Allocation-free loops (nothing in them allocates unless the decoder does)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Tally {
    metadata: u64,
    records: u64,
    checksum: u64,
    ended: bool,
    failed: bool,
}

impl Tally {
    fn record(&mut self, ts_event: u64) {
        self.records += 1;
        self.checksum = self.checksum.wrapping_add(ts_event);
    }

    fn done(&self, until: u64) -> bool {
        self.ended || self.failed || self.records >= until
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Api {
    Poll,
    Batch,
    SpaceFill,
}

/// Polls `$dec` (a `DbnDecoder` or `StreamDecoder`) until it needs input (`true`), or
/// `$until` records were handed out, or it ends or fails (`false`). Allocates nothing.
macro_rules! drain {
    ($dec:expr, $batch:expr, $tally:expr, $until:expr) => {
        loop {
            if $tally.done($until) {
                break false;
            }
            if $batch {
                match $dec.poll_batch(64) {
                    Ok(Decoded::Record(batch)) => {
                        for rec in batch {
                            $tally.record(rec.header().ts_event);
                            if $tally.records >= $until {
                                break;
                            }
                        }
                    }
                    Ok(Decoded::Metadata(_)) => $tally.metadata += 1,
                    Ok(Decoded::NeedInput(_)) => break true,
                    Ok(Decoded::End) => $tally.ended = true,
                    Err(_) => $tally.failed = true,
                }
            } else {
                match $dec.poll() {
                    Ok(Decoded::Record(rec)) => $tally.record(rec.header().ts_event),
                    Ok(Decoded::Metadata(_)) => $tally.metadata += 1,
                    Ok(Decoded::NeedInput(_)) => break true,
                    Ok(Decoded::End) => $tally.ended = true,
                    Err(_) => $tally.failed = true,
                }
            }
        }
    };
}

/// Feeds `input` to a `DbnDecoder` through `api` and drains it until `until` records
/// have been handed out in all, or the stream ends.
fn run_dbn(dec: &mut DbnDecoder, input: &mut &[u8], api: Api, tally: &mut Tally, until: u64) {
    while drain!(dec, api == Api::Batch, tally, until) {
        if input.is_empty() {
            if dec.finish().is_err() {
                tally.failed = true;
            }
            continue;
        }
        let n = CHUNK.min(input.len());
        let taken = if api == Api::SpaceFill {
            let space = dec.space();
            let taken = space.len().min(n);
            space[..taken].copy_from_slice(&input[..taken]);
            dec.fill(taken);
            taken
        } else {
            dec.handle_input(&input[..n])
        };
        *input = &input[taken..];
    }
}

/// As [`run_dbn`], for a `StreamDecoder` (`handle_input` only).
fn run_stream(
    dec: &mut StreamDecoder,
    input: &mut &[u8],
    batch: bool,
    tally: &mut Tally,
    until: u64,
) {
    while drain!(dec, batch, tally, until) {
        if input.is_empty() {
            if dec.finish().is_err() {
                tally.failed = true;
            }
            continue;
        }
        let taken = dec.handle_input(&input[..CHUNK.min(input.len())]);
        *input = &input[taken..];
    }
}

// ---------------------------------------------------------------------------------------
// (a) Zero allocations in the steady state
// ---------------------------------------------------------------------------------------

fn assert_dbn_steady_state(config: DecoderConfig, bytes: &[u8], records: u64, sum: u64) {
    for api in [Api::Poll, Api::Batch, Api::SpaceFill] {
        let mut dec = DbnDecoder::new(config.clone()).expect("config");
        let mut input = bytes;
        let mut tally = Tally::default();
        // Warm-up: the metadata and a first record.
        run_dbn(&mut dec, &mut input, api, &mut tally, 1);
        assert_eq!((tally.metadata, tally.records), (1, 1), "{api:?} warm-up");
        let before = allocations();
        run_dbn(&mut dec, &mut input, api, &mut tally, u64::MAX);
        let made = allocations() - before;
        assert!(tally.ended && !tally.failed, "{api:?}: {tally:?}");
        assert_eq!(tally.records, records, "{api:?}");
        assert_eq!(tally.checksum, sum, "{api:?}");
        assert_eq!(made, 0, "{api:?}: {made} allocations after warm-up");
    }
}

#[test]
fn dbn_decoder_steady_state_makes_no_allocations() {
    let (bytes, sum) = mbo_stream(N);
    assert_dbn_steady_state(DecoderConfig::default(), &bytes, N, sum);
    // The smallest buffer compacts far more often.
    let small = DecoderConfig::default().buffer_size(DecoderConfig::MIN_BUFFER_SIZE);
    assert_dbn_steady_state(small, &bytes, N, sum);
}

#[test]
fn misaligned_and_converted_records_make_no_allocations() {
    // A v1 stream (unpadded metadata) mixing MBOs, 20-byte unknown records (which
    // misalign everything after them) and v1 instrument definitions (converted to v3).
    let mut bytes = header(1, &["ESZ4"]);
    assert_ne!(bytes.len() % 8, 0, "records start misaligned");
    let mut sum = 0u64;
    let mut count = 0u64;
    let mut i = 0u64;
    while count < N {
        let rec = mbo(i);
        bytes.extend_from_slice(rec.as_ref());
        sum = sum.wrapping_add(rec.hd.ts_event);
        let mut unknown = [0u8; 20];
        unknown[0] = 5;
        unknown[1] = 0xEE;
        unknown[8..16].copy_from_slice(&i.to_le_bytes());
        bytes.extend_from_slice(&unknown);
        sum = sum.wrapping_add(i);
        let mut def = dbn::v1::InstrumentDefMsg::default();
        def.hd.ts_event = i * 3;
        bytes.extend_from_slice(def.as_ref());
        sum = sum.wrapping_add(i * 3);
        count += 3;
        i += 1;
    }
    assert_dbn_steady_state(DecoderConfig::default(), &bytes, count, sum);
    let as_is = DecoderConfig::default().upgrade_policy(UpgradePolicy::AsIs);
    assert_dbn_steady_state(as_is, &bytes, count, sum);
}

#[test]
fn stream_decoder_over_multi_frame_zstd_makes_no_allocations() {
    let (bytes, sum) = mbo_stream(N);
    // Frames of 256 KiB of DBN each: about 22 frames.
    let compressed = zstd_frames(&bytes, 256 * 1024);
    assert!(bytes.len() > 20 * 256 * 1024, "over 20 frames");
    assert!(compressed.len() < bytes.len());
    for batch in [false, true] {
        for config in [
            StreamConfig::default(),
            StreamConfig {
                decoder: DecoderConfig::default().buffer_size(DecoderConfig::MIN_BUFFER_SIZE),
                compression: Compression::Zstd,
                ..StreamConfig::default()
            },
        ] {
            let mut dec = StreamDecoder::new(config).expect("config");
            let mut input = &compressed[..];
            let mut tally = Tally::default();
            run_stream(&mut dec, &mut input, batch, &mut tally, 1);
            assert_eq!((tally.metadata, tally.records), (1, 1), "warm-up");
            let before = allocations();
            run_stream(&mut dec, &mut input, batch, &mut tally, u64::MAX);
            let made = allocations() - before;
            assert!(tally.ended && !tally.failed, "{tally:?}");
            assert_eq!(tally.records, N);
            assert_eq!(tally.checksum, sum);
            assert_eq!(made, 0, "batch {batch}: {made} allocations after warm-up");
        }
    }
}

#[test]
fn the_counter_sees_allocations() {
    // The measurement can fail: an allocation in the measured window is counted.
    let before = allocations();
    let v: Vec<u8> = std::hint::black_box(vec![1, 2, 3]);
    assert!(allocations() > before);
    let base = start_peak();
    let big = std::hint::black_box(vec![0u8; 1 << 20]);
    assert!(peak_above(base) >= 1 << 20);
    drop((v, big));
}

// ---------------------------------------------------------------------------------------
// (b) Bounded memory on hostile input
// ---------------------------------------------------------------------------------------

/// The default size of the `dbn` crate's metadata decoder buffer, which it allocates
/// and then grows to the metadata length while decoding a header.
const DBN_FSM_BUF: usize = 64 * 1024;
/// How much larger than its encoded block `dbn`'s decoded `Metadata` can be: a v2/v3
/// block may declare 1-byte symbols, each of which becomes a 24-byte `String` in a
/// `Vec` plus its 1-byte heap text. (Real metadata with 71-byte symbols is about 1.3
/// times its block.)
const METADATA_EXPANSION: usize = 26;
/// Small allocations besides the buffers: the boxed metadata and zstd decoder, error
/// texts.
const SLACK: usize = 8 * 1024;

/// Upper bound on the live Rust heap of a decoder with record buffer `buffer` and
/// metadata cap `cap`, while it decodes anything:
///
/// - record buffer + aligned scratch of the same size + a 1 KiB staging area;
/// - when a header is accepted (declared length at most `cap`): the collected header
///   (prelude + metadata, `cap + 8`), the `dbn` metadata decoder's copy of it (its
///   64 KiB default buffer, grown to `cap + 8`: both live during the growth), and the
///   decoded `Metadata` (at most `METADATA_EXPANSION * cap`);
/// - slack for the boxed metadata, the boxed zstd decoder and error texts.
///
/// zstd's context and window (at most 2^`zstd_window_log_max` + ~300 KiB) live on the
/// C heap and are not counted (see the crate docs above).
fn bound(buffer: usize, cap: usize) -> usize {
    let records = 2 * buffer + 1024;
    let header = (cap + 8) + DBN_FSM_BUF + (cap + 8) + METADATA_EXPANSION * cap;
    records + header + SLACK
}

/// The bound when no metadata block is ever accepted.
fn bound_without_metadata(buffer: usize) -> usize {
    2 * buffer + 1024 + SLACK
}

/// A decoder driven by the peak measurements.
trait Churn {
    fn give(&mut self, bytes: &[u8]) -> usize;
    /// Polls until input is needed (`None`), the end (`Some(false)`) or an error
    /// (`Some(true)`); calls `finish` first (once) when `finish` is set.
    fn drain(&mut self, finish: bool) -> Option<bool>;
}

macro_rules! drain_any {
    ($dec:expr) => {
        loop {
            match $dec.poll_batch(usize::MAX) {
                Ok(Decoded::Record(batch)) => {
                    std::hint::black_box(batch.count());
                }
                Ok(Decoded::Metadata(m)) => {
                    std::hint::black_box(&m);
                }
                Ok(Decoded::NeedInput(_)) => break None,
                Ok(Decoded::End) => break Some(false),
                Err(_) => break Some(true),
            }
        }
    };
}

impl Churn for DbnDecoder {
    fn give(&mut self, bytes: &[u8]) -> usize {
        self.handle_input(bytes)
    }

    fn drain(&mut self, finish: bool) -> Option<bool> {
        if finish && !self.is_finished() {
            let _ = self.finish();
        }
        drain_any!(self)
    }
}

impl Churn for (StreamDecoder, bool) {
    fn give(&mut self, bytes: &[u8]) -> usize {
        self.0.handle_input(bytes)
    }

    fn drain(&mut self, finish: bool) -> Option<bool> {
        if finish && !self.1 {
            self.1 = true;
            let _ = self.0.finish();
        }
        drain_any!(self.0)
    }
}

/// Feeds `input` in `chunk`-byte slices, draining between them, until it is all taken
/// or refused; then (when `finish`) finishes and drains to the end. Returns whether it
/// ended with an error.
fn churn(dec: &mut impl Churn, input: &[u8], chunk: usize, finish: bool) -> bool {
    let mut rest = input;
    let mut refused = 0;
    while !rest.is_empty() {
        if let Some(failed) = dec.drain(false) {
            return failed;
        }
        let taken = dec.give(&rest[..chunk.min(rest.len())]);
        rest = &rest[taken..];
        if taken == 0 {
            refused += 1;
            if refused > 2 {
                break; // a sticky error, or full after finish
            }
        } else {
            refused = 0;
        }
    }
    if !finish {
        return false;
    }
    for _ in 0..1_000 {
        if let Some(failed) = dec.drain(true) {
            return failed;
        }
    }
    panic!("the decoder never ended");
}

/// Peak live bytes (above the start) of decoding `input` with a fresh `DbnDecoder`,
/// and whether it failed.
fn peak_dbn(config: &DecoderConfig, input: &[u8], chunk: usize, finish: bool) -> (usize, bool) {
    let base = start_peak();
    let mut dec = DbnDecoder::new(config.clone()).expect("config");
    let failed = churn(&mut dec, input, chunk, finish);
    drop(dec);
    (peak_above(base), failed)
}

/// The same with a fresh `StreamDecoder`, always finishing.
fn peak_stream(config: &StreamConfig, input: &[u8], chunk: usize) -> (usize, bool) {
    let base = start_peak();
    let mut dec = (StreamDecoder::new(config.clone()).expect("config"), false);
    let failed = churn(&mut dec, input, chunk, true);
    drop(dec);
    (peak_above(base), failed)
}

const BUFFER: usize = 16 * 1024;
const CAP: usize = 64 * 1024;

fn hostile_config() -> DecoderConfig {
    DecoderConfig::default()
        .buffer_size(BUFFER)
        .max_metadata_len(CAP)
}

#[test]
fn a_metadata_length_over_the_cap_is_never_buffered() {
    let config = hostile_config();
    for declared in [CAP as u32 + 1, 1 << 30, u32::MAX] {
        let mut input = b"DBN\x02".to_vec();
        input.extend_from_slice(&declared.to_le_bytes());
        input.resize(8 * 1024 * 1024, 0x41);
        for chunk in [1, 4096, usize::MAX] {
            let (peak, failed) = peak_dbn(&config, &input, chunk, true);
            assert!(failed);
            let limit = bound_without_metadata(BUFFER);
            assert!(
                peak <= limit,
                "declared {declared}, chunk {chunk}: peak {peak} > {limit}"
            );
        }
    }
}

#[test]
fn a_partial_metadata_block_grows_only_to_its_declared_length() {
    // A block just over a power of two, declared at the cap and never completed: the
    // collected bytes must not be over-allocated past the cap.
    let cap = 64 * 1024 + 100;
    let config = DecoderConfig::default()
        .buffer_size(BUFFER)
        .max_metadata_len(cap);
    let mut input = b"DBN\x03".to_vec();
    input.extend_from_slice(&(cap as u32).to_le_bytes());
    input.resize(8 + cap - 1, 0);
    for chunk in [1000, 4096] {
        let (peak, failed) = peak_dbn(&config, &input, chunk, false);
        assert!(!failed);
        let limit = bound_without_metadata(BUFFER) + cap + 8;
        assert!(peak <= limit, "chunk {chunk}: peak {peak} > {limit}");
    }
}

#[test]
fn endless_partial_records_stay_in_the_fixed_buffers() {
    // 1020-byte records (the longest framing allows) of an unknown type, offered in
    // odd slices so a record is almost always partial, 4 MiB in all.
    let mut record = vec![0x5Au8; 1020];
    record[0] = 255;
    record[1] = 0xEE;
    let mut body = Vec::new();
    while body.len() < 4 * 1024 * 1024 {
        body.extend_from_slice(&record);
    }
    let mut whole = header(3, &[]);
    whole.extend_from_slice(&body);
    let limit = bound(BUFFER, whole.len() - body.len());
    for chunk in [13, 1021, 65_537] {
        let (peak, failed) = peak_dbn(&hostile_config(), &whole, chunk, true);
        assert!(!failed);
        assert!(peak <= limit, "chunk {chunk}: peak {peak} > {limit}");
        // A fragment never holds metadata at all.
        let fragment = hostile_config().fragment(FragmentFormat {
            version: 3,
            ts_out: false,
        });
        let (peak, failed) = peak_dbn(&fragment, &body, chunk, true);
        assert!(!failed);
        let limit = bound_without_metadata(BUFFER);
        assert!(
            peak <= limit,
            "fragment, chunk {chunk}: peak {peak} > {limit}"
        );
    }
    // Never polled: the buffer fills and input is refused; memory does not grow.
    let base = start_peak();
    let mut dec = DbnDecoder::new(hostile_config()).expect("config");
    let mut taken = 0;
    for _ in 0..100 {
        taken += dec.handle_input(&whole[taken..taken + 4096]);
    }
    assert!(taken <= BUFFER + 4096, "took {taken}");
    drop(dec);
    assert!(peak_above(base) <= bound(BUFFER, CAP));
    // The same through the stream decoder, compressed.
    let compressed = zstd_frame(&whole);
    let config = StreamConfig {
        decoder: hostile_config(),
        ..StreamConfig::default()
    };
    for chunk in [13, 4093] {
        let (peak, failed) = peak_stream(&config, &compressed, chunk);
        assert!(!failed);
        assert!(peak <= limit, "zstd, chunk {chunk}: peak {peak} > {limit}");
    }
}

/// A v3 header whose metadata block is `len` bytes (a multiple of 8, at least 128) of
/// 1-byte symbols: the most `dbn`'s decoded `Metadata` can expand.
fn one_byte_symbols_header(len: usize) -> Vec<u8> {
    let mut bytes = header(3, &[]);
    assert_eq!(bytes.len(), 128);
    // symbol_cstr_len sits after dataset (16), schema (2), start, end, limit (24),
    // stype_in, stype_out, ts_out (3): metadata offset 45, stream offset 53.
    assert_eq!(&bytes[53..55], &71u16.to_le_bytes(), "symbol_cstr_len");
    bytes[53..55].copy_from_slice(&1u16.to_le_bytes());
    // Then 53 reserved bytes, the u32 schema-definition length (0) at 108, the symbol
    // count at 112, and the (empty) partial, not_found and mapping lists.
    assert_eq!(&bytes[112..116], &0u32.to_le_bytes());
    let symbols = len - 120;
    bytes[112..116].copy_from_slice(&(symbols as u32).to_le_bytes());
    bytes.truncate(116);
    bytes.extend(std::iter::repeat_n(b'A', symbols));
    bytes.extend_from_slice(&[0; 12]);
    bytes[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    assert_eq!(bytes.len(), 8 + len);
    bytes
}

#[test]
fn metadata_at_the_cap_stays_within_the_bound() {
    // A real header with many symbols, exactly at the cap.
    let symbols: Vec<String> = (0..800).map(|i| format!("SYM{i:05}")).collect();
    let refs: Vec<&str> = symbols.iter().map(String::as_str).collect();
    let real = header(3, &refs);
    let cap = real.len() - 8;
    let config = DecoderConfig::default()
        .buffer_size(BUFFER)
        .max_metadata_len(cap);
    let (peak, failed) = peak_dbn(&config, &real, 4096, true);
    assert!(!failed);
    let limit = bound(BUFFER, cap);
    assert!(peak <= limit, "real metadata: peak {peak} > {limit}");

    // Adversarial: 1-byte symbols filling the cap.
    let hostile = one_byte_symbols_header(CAP);
    let (peak, failed) = peak_dbn(&hostile_config(), &hostile, 4096, true);
    assert!(!failed, "dbn accepts 1-byte symbols");
    let limit = bound(BUFFER, CAP);
    assert!(peak <= limit, "1-byte symbols: peak {peak} > {limit}");
    // The expansion is real (this is why the bound carries METADATA_EXPANSION).
    assert!(peak > 10 * CAP, "peak {peak}");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_input_stays_within_the_bound(
        prefix in prop_oneof![
            Just(Vec::new()),
            (1u8..=3, 100u32..(2 * CAP as u32)).prop_map(|(v, l)| {
                let mut p = b"DBN".to_vec();
                p.push(v);
                p.extend_from_slice(&l.to_le_bytes());
                p
            }),
        ],
        body in vec(any::<u8>(), 0..20_000),
        chunk in 1usize..5000,
        fragment in any::<bool>(),
        compress in any::<bool>(),
    ) {
        let mut input = prefix;
        input.extend(body);
        let mut config = hostile_config();
        if fragment {
            config = config.fragment(FragmentFormat { version: 3, ts_out: false });
        }
        let limit = bound(BUFFER, CAP);
        let (peak, _) = peak_dbn(&config, &input, chunk, true);
        prop_assert!(peak <= limit, "peak {} > {}", peak, limit);
        let input = if compress { zstd_frame(&input) } else { input };
        let sconfig = StreamConfig {
            decoder: config,
            zstd_window_log_max: 20,
            ..StreamConfig::default()
        };
        let (peak, _) = peak_stream(&sconfig, &input, chunk);
        prop_assert!(peak <= limit, "stream: peak {} > {}", peak, limit);
    }
}
