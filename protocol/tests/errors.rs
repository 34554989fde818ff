//! Every failure of the decoding core, provoked on purpose.
//!
//! Each test builds its input with the `dbn` crate's encoders (plus byte surgery, and
//! the `zstd` crate for compressed input), feeds it through [`DbnDecoder`] and
//! [`StreamDecoder`] in several chunkings and polling styles, and proves that:
//!
//! - the exact [`Error`] variant comes out, with the [`ErrorKind`] and stream offset
//!   computed from how the input was built (never copied from the decoder);
//! - every record before the fault was delivered first, byte-equal to what was written;
//! - the error is sticky (the next `poll`, `poll_batch` and `finish` return it again,
//!   and no more input is taken);
//! - its `Display` text names the offset.
//!
//! It also proves the misaligned-record decision (a legal record whose length is a
//! multiple of 4 but not of 8 never yields a misaligned `RecordRef`, and the records
//! after it arrive intact), that unknown record types pass through, that backpressure
//! loses nothing, and (with proptest) that arbitrary or mutated input never panics and
//! always ends in `End` or an error.

use std::io::Write as _;

use dbn::encode::dbn::Encoder;
use dbn::{
    MboMsg, Metadata, MetadataBuilder, Record as _, RecordRef, SType, Schema, TradeMsg, WithTsOut,
};
use dbn_pipe_protocol::{
    Compression, DbnDecoder, Decoded, DecoderConfig, Error, ErrorKind, FragmentFormat,
    StreamConfig, StreamDecoder, TruncatedPart, UpgradePolicy, ZSTD_MAGIC, ZstdDecoder,
};
use proptest::collection::vec;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Building input
// ---------------------------------------------------------------------------------------

const PRELUDE_LEN: usize = 8;
const MBO_LEN: usize = 56;
/// Stream offset of the version byte and of the metadata length in the prelude.
const VERSION_OFFSET: u64 = 3;
const LENGTH_OFFSET: u64 = 4;
/// Offset of the schema (u16) in the metadata block: after the 16-byte dataset.
const SCHEMA_OFFSET: usize = PRELUDE_LEN + 16;
/// An rtype no DBN version defines.
const UNKNOWN_RTYPE: u8 = 0xEE;

fn metadata(version: u8, ts_out: bool, symbols: &[&str]) -> Metadata {
    MetadataBuilder::new()
        .dataset("XNAS.ITCH".to_owned())
        .schema(Some(Schema::Mbo))
        .start(1_700_000_000_000_000_000)
        .stype_in(Some(SType::RawSymbol))
        .stype_out(SType::InstrumentId)
        .version(version)
        .ts_out(ts_out)
        .symbols(symbols.iter().map(|s| (*s).to_owned()).collect())
        .build()
}

/// Prelude and metadata, as the `dbn` encoder writes them.
fn header(version: u8, ts_out: bool, symbols: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder::new(&mut out, &metadata(version, ts_out, symbols)).expect("encode metadata");
    out
}

fn mbo(i: u64) -> MboMsg {
    let mut rec = MboMsg::default();
    rec.hd.instrument_id = 1000 + i as u32;
    rec.hd.ts_event = 1_700_000_000_000_000_000 + i;
    rec.order_id = 7919 * i + 1;
    rec.price = 100_000_000_000 + i as i64;
    rec.size = 1 + (i % 97) as u32;
    rec.sequence = i as u32;
    rec
}

fn mbo_bytes(i: u64) -> Vec<u8> {
    mbo(i).as_ref().to_vec()
}

fn mbo_ts_out_bytes(i: u64) -> Vec<u8> {
    WithTsOut::new(mbo(i), 1_800_000_000_000_000_000 + i)
        .as_ref()
        .to_vec()
}

/// A record of `rtype` and `len` bytes (a multiple of 4, at least 16), with a
/// recognisable payload.
fn raw_record(rtype: u8, len: usize, seed: u8) -> Vec<u8> {
    assert!(len % 4 == 0 && (16..=1020).contains(&len));
    let mut rec = vec![0u8; len];
    rec[0] = (len / 4) as u8;
    rec[1] = rtype;
    rec[2..4].copy_from_slice(&7u16.to_le_bytes());
    rec[4..8].copy_from_slice(&(4242 + u32::from(seed)).to_le_bytes());
    rec[8..16].copy_from_slice(&(1_700_000_000_000_000_000u64 + u64::from(seed)).to_le_bytes());
    for (i, b) in rec[16..].iter_mut().enumerate() {
        *b = seed.wrapping_mul(31).wrapping_add(i as u8);
    }
    rec
}

/// A 16-byte record header with an arbitrary length byte (for framing errors).
fn bad_header(length_words: u8, rtype: u8) -> Vec<u8> {
    let mut rec = raw_record(rtype, 16, 9);
    rec[0] = length_words;
    rec
}

/// Writes `text` into a C string field.
fn put_cstr(field: &mut [std::ffi::c_char], text: &str) {
    for (dst, src) in field.iter_mut().zip(text.bytes()) {
        *dst = src as std::ffi::c_char;
    }
}

/// A DBN stream: its bytes, where the records start, and the records as written.
struct Built {
    bytes: Vec<u8>,
    header_len: usize,
    records: Vec<Vec<u8>>,
}

impl Built {
    fn new(header: Vec<u8>, records: Vec<Vec<u8>>) -> Self {
        let header_len = header.len();
        let mut bytes = header;
        for rec in &records {
            bytes.extend_from_slice(rec);
        }
        Self {
            bytes,
            header_len,
            records,
        }
    }

    /// Stream offset of record `i` (of the records as written).
    fn offset_of(&self, i: usize) -> u64 {
        (self.header_len + self.records[..i].iter().map(Vec::len).sum::<usize>()) as u64
    }

    fn append(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }
}

fn mbo_stream(version: u8, n: u64) -> Built {
    Built::new(header(version, false, &[]), (0..n).map(mbo_bytes).collect())
}

/// One zstd frame of `data`, optionally with a window log and content checksum.
fn zstd_frame(data: &[u8], window_log: Option<u32>, checksum: bool) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd encoder");
    if let Some(log) = window_log {
        enc.set_parameter(zstd::stream::raw::CParameter::WindowLog(log))
            .expect("window log");
    }
    enc.include_checksum(checksum).expect("checksum flag");
    enc.write_all(data).expect("compress");
    enc.finish().expect("finish frame")
}

/// Deterministic, poorly compressible bytes.
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Driving decoders
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Poll {
    One,
    Batch(usize),
}

/// How input is offered and output pulled.
#[derive(Debug, Clone, Copy)]
struct How {
    /// Largest slice offered per `handle_input` (or written per `space`/`fill`).
    chunk: usize,
    poll: Poll,
    /// Write through `space`/`fill` instead of `handle_input` (`DbnDecoder` only).
    space_fill: bool,
    /// Offer input until refused (and finish as soon as it is all taken) before
    /// polling, instead of polling after every slice.
    greedy: bool,
}

const HOWS: &[How] = &[
    How {
        chunk: usize::MAX,
        poll: Poll::One,
        space_fill: false,
        greedy: false,
    },
    How {
        chunk: 1,
        poll: Poll::One,
        space_fill: false,
        greedy: false,
    },
    How {
        chunk: 7,
        poll: Poll::Batch(usize::MAX),
        space_fill: false,
        greedy: false,
    },
    How {
        chunk: 61,
        poll: Poll::Batch(1),
        space_fill: true,
        greedy: false,
    },
    How {
        chunk: 4096,
        poll: Poll::Batch(2),
        space_fill: true,
        greedy: false,
    },
    How {
        chunk: usize::MAX,
        poll: Poll::One,
        space_fill: false,
        greedy: true,
    },
    How {
        chunk: 13,
        poll: Poll::Batch(usize::MAX),
        space_fill: true,
        greedy: true,
    },
];

const WHOLE: How = HOWS[0];

/// One poll's result, with records copied out (and checked for alignment).
#[derive(Debug)]
enum Step {
    Metadata,
    Records(Vec<Vec<u8>>),
    NeedInput(usize),
    End,
    Error(Error),
}

/// Copies a handed-out record after checking the two things `RecordRef` relies on.
fn collect(rec: RecordRef<'_>) -> Vec<u8> {
    let bytes = rec.as_ref();
    assert_eq!(
        bytes.as_ptr() as usize % 8,
        0,
        "a misaligned RecordRef was handed out"
    );
    assert_eq!(bytes.len(), rec.record_size(), "RecordRef spans its record");
    assert!(bytes.len() >= 16);
    bytes.to_vec()
}

macro_rules! step_impl {
    ($dec:expr, $poll:expr) => {
        match $poll {
            Poll::One => match $dec.poll() {
                Ok(Decoded::Metadata(_)) => Step::Metadata,
                Ok(Decoded::Record(rec)) => Step::Records(vec![collect(rec)]),
                Ok(Decoded::NeedInput(n)) => Step::NeedInput(n),
                Ok(Decoded::End) => Step::End,
                Err(err) => Step::Error(err),
            },
            Poll::Batch(max) => match $dec.poll_batch(max) {
                Ok(Decoded::Metadata(_)) => Step::Metadata,
                Ok(Decoded::Record(batch)) => {
                    let (low, high) = batch.size_hint();
                    let high = high.expect("a batch bounds its size");
                    assert!(low >= 1 && high <= max.max(1), "batch size");
                    let records: Vec<_> = batch.map(collect).collect();
                    assert!(
                        (low..=high).contains(&records.len()),
                        "batch yields within its size hint"
                    );
                    Step::Records(records)
                }
                Ok(Decoded::NeedInput(n)) => Step::NeedInput(n),
                Ok(Decoded::End) => Step::End,
                Err(err) => Step::Error(err),
            },
        }
    };
}

trait Decode {
    fn give(&mut self, bytes: &[u8], space_fill: bool) -> usize;
    fn end_input(&mut self) -> Result<(), Error>;
    fn step(&mut self, poll: Poll) -> Step;
}

impl Decode for DbnDecoder {
    fn give(&mut self, bytes: &[u8], space_fill: bool) -> usize {
        if space_fill {
            let space = self.space();
            let n = space.len().min(bytes.len());
            space[..n].copy_from_slice(&bytes[..n]);
            self.fill(n);
            n
        } else {
            self.handle_input(bytes)
        }
    }

    fn end_input(&mut self) -> Result<(), Error> {
        self.finish()
    }

    fn step(&mut self, poll: Poll) -> Step {
        step_impl!(self, poll)
    }
}

impl Decode for StreamDecoder {
    fn give(&mut self, bytes: &[u8], _space_fill: bool) -> usize {
        self.handle_input(bytes)
    }

    fn end_input(&mut self) -> Result<(), Error> {
        self.finish()
    }

    fn step(&mut self, poll: Poll) -> Step {
        step_impl!(self, poll)
    }
}

/// Everything a decoder produced from one input.
#[derive(Debug, Default)]
struct Outcome {
    metadata: bool,
    records: Vec<Vec<u8>>,
    end: bool,
    error: Option<Error>,
    /// What `finish` returned, if input ran out.
    finish: Option<Result<(), Error>>,
}

/// Feeds `pieces` in order (each one wholly before the next, in slices of at most
/// `how.chunk` bytes), polls until `NeedInput` after every mutation (or, when
/// `how.greedy`, first offers input until it is refused), calls `finish` when the
/// input runs out, and stops at `End` or the first error. Panics if the decoder stops
/// making progress or runs past a generous step budget.
fn drive<D: Decode>(dec: &mut D, pieces: &[&[u8]], how: How) -> Outcome {
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    let mut budget = 2_000_000 + 64 * total;
    let mut out = Outcome::default();
    let mut pieces = pieces.iter().copied();
    let mut pending: &[u8] = &[];
    let mut stalls = 0;
    loop {
        // Offer input: one slice, or (greedy) until refused; finish when it runs out.
        let mut progressed = false;
        loop {
            while pending.is_empty() {
                match pieces.next() {
                    Some(piece) => pending = piece,
                    None => break,
                }
            }
            if pending.is_empty() {
                if out.finish.is_none() {
                    out.finish = Some(dec.end_input());
                    progressed = true;
                }
                break;
            }
            let n = how.chunk.min(pending.len());
            let taken = dec.give(&pending[..n], how.space_fill);
            assert!(taken <= n, "took more than offered");
            pending = &pending[taken..];
            if taken == 0 {
                break;
            }
            progressed = true;
            if !how.greedy {
                break;
            }
        }
        // Drain.
        loop {
            budget = budget.checked_sub(1).expect("decoder did not terminate");
            match dec.step(how.poll) {
                Step::Metadata => {
                    assert!(!out.metadata, "metadata handed out twice");
                    assert!(out.records.is_empty(), "metadata after records");
                    out.metadata = true;
                    progressed = true;
                }
                Step::Records(records) => {
                    assert!(!records.is_empty(), "empty batch");
                    out.records.extend(records);
                    progressed = true;
                }
                Step::NeedInput(n) => {
                    assert!(n > 0, "NeedInput(0)");
                    break;
                }
                Step::End => {
                    out.end = true;
                    return out;
                }
                Step::Error(err) => {
                    out.error = Some(err);
                    return out;
                }
            }
        }
        if progressed {
            stalls = 0;
        } else {
            stalls += 1;
            assert!(
                stalls < 3,
                "no progress: NeedInput, yet no input taken (or finish already called)"
            );
        }
    }
}

/// Invariants of every run, whatever the input: it ended in `End` or an error, `End`
/// only after a clean `finish`, and an error from `finish` is the one polled.
fn check_terminal(out: &Outcome) {
    assert!(out.end != out.error.is_some(), "ends in End xor Error");
    if out.end {
        assert_eq!(out.finish, Some(Ok(())), "End only after a clean finish");
    }
    if let Some(Err(finish_err)) = &out.finish {
        assert_eq!(
            out.error.as_ref(),
            Some(finish_err),
            "finish and poll report the same error"
        );
    }
    if let Some(err) = &out.error {
        check_display(err);
    }
}

/// The error text names the offset, when there is one.
fn check_display(err: &Error) {
    let text = err.to_string();
    if let Some(offset) = err.offset() {
        assert!(
            text.contains(&offset.to_string()),
            "`{text}` does not name offset {offset}"
        );
    }
    assert!(!text.is_empty());
}

/// After an error, every poll, `finish` and further input return it again.
fn assert_sticky<D: Decode>(dec: &mut D, err: &Error) {
    for poll in [Poll::One, Poll::Batch(usize::MAX), Poll::Batch(1)] {
        match dec.step(poll) {
            Step::Error(again) => assert_eq!(&again, err, "sticky error"),
            other => panic!("after {err:?} a poll returned {other:?}"),
        }
    }
    assert_eq!(
        dec.end_input(),
        Err(err.clone()),
        "finish repeats the error"
    );
    assert_eq!(dec.give(&mbo_bytes(0), false), 0, "no input after an error");
    match dec.step(Poll::One) {
        Step::Error(again) => assert_eq!(&again, err, "sticky error"),
        other => panic!("after {err:?} a poll returned {other:?}"),
    }
}

fn dbn(config: DecoderConfig) -> DbnDecoder {
    DbnDecoder::new(config).expect("valid config")
}

fn stream(config: StreamConfig) -> StreamDecoder {
    StreamDecoder::new(config).expect("valid config")
}

/// Runs `make()` over `pieces` with every [`How`] and checks the exact error, the
/// records delivered before it, stickiness and display.
fn expect_error<D: Decode>(
    make: impl Fn() -> D,
    pieces: &[&[u8]],
    expected: &Error,
    records: &[Vec<u8>],
) {
    for &how in HOWS {
        let mut dec = make();
        let out = drive(&mut dec, pieces, how);
        assert_eq!(out.error.as_ref(), Some(expected), "{how:?}");
        assert_eq!(
            out.records.len(),
            records.len(),
            "records before the fault, {how:?}"
        );
        assert!(out.records == records, "records delivered intact, {how:?}");
        check_terminal(&out);
        assert_sticky(&mut dec, expected);
    }
}

/// Runs to a clean end and returns the records.
fn expect_clean<D: Decode>(dec: &mut D, pieces: &[&[u8]], how: How) -> Outcome {
    let out = drive(dec, pieces, how);
    assert_eq!(out.error, None, "{how:?}");
    assert!(out.end);
    check_terminal(&out);
    out
}

// ---------------------------------------------------------------------------------------
// Format errors
// ---------------------------------------------------------------------------------------

#[test]
fn legacy_dbz_magic_is_rejected() {
    let mut input = vec![0x50, 0x2A, 0x4D, 0x18, 0x20, 0, 0, 0];
    input.extend(noise(200, 1));
    let expected = Error::LegacyDbz { offset: 0 };
    assert_eq!(expected.kind(), ErrorKind::Format);
    assert_eq!(expected.offset(), Some(0));
    assert!(expected.to_string().contains("DBZ"));
    expect_error(|| dbn(DecoderConfig::default()), &[&input], &expected, &[]);
    expect_error(
        || stream(StreamConfig::default()),
        &[&input],
        &expected,
        &[],
    );
}

#[test]
fn wrong_magic_is_not_dbn() {
    let mut input = mbo_stream(3, 2).bytes;
    input[2] = b'M';
    let expected = Error::NotDbn {
        offset: 0,
        found: *b"DBM\x03",
    };
    assert_eq!(expected.kind(), ErrorKind::Format);
    assert_eq!(expected.offset(), Some(0));
    expect_error(|| dbn(DecoderConfig::default()), &[&input], &expected, &[]);
    expect_error(
        || stream(StreamConfig::default()),
        &[&input],
        &expected,
        &[],
    );

    // Inside a zstd frame the offset is the DBN (decompressed) offset.
    let text = b"plain text, neither DBN nor DBZ, long enough for a prelude".to_vec();
    let compressed = zstd_frame(&text, None, true);
    let expected = Error::NotDbn {
        offset: 0,
        found: *b"plai",
    };
    expect_error(
        || stream(StreamConfig::default()),
        &[&compressed],
        &expected,
        &[],
    );
}

#[test]
fn unsupported_versions_are_rejected() {
    for version in [0u8, 4, 200] {
        let mut input = mbo_stream(3, 2).bytes;
        input[VERSION_OFFSET as usize] = version;
        let expected = Error::UnsupportedVersion {
            offset: VERSION_OFFSET,
            version,
        };
        assert_eq!(expected.kind(), ErrorKind::Format);
        assert_eq!(expected.offset(), Some(3));
        assert!(expected.to_string().contains(&format!("version {version}")));
        expect_error(|| dbn(DecoderConfig::default()), &[&input], &expected, &[]);
        expect_error(
            || stream(StreamConfig::default()),
            &[&input],
            &expected,
            &[],
        );
    }
    // The boundaries on either side are accepted.
    for version in 1..=3 {
        let built = mbo_stream(version, 2);
        let out = expect_clean(
            &mut dbn(DecoderConfig::default().upgrade_policy(UpgradePolicy::AsIs)),
            &[&built.bytes],
            WHOLE,
        );
        assert_eq!(out.records, built.records);
    }
}

#[test]
fn upgrade_to_v2_cannot_decode_v3() {
    let built = mbo_stream(3, 2);
    let config = DecoderConfig::default().upgrade_policy(UpgradePolicy::UpgradeToV2);
    let expected = Error::PolicyConflict {
        policy: "UpgradeToV2",
        version: 3,
    };
    assert_eq!(expected.kind(), ErrorKind::Format);
    assert_eq!(expected.offset(), None);
    expect_error(|| dbn(config.clone()), &[&built.bytes], &expected, &[]);
    let sconfig = StreamConfig {
        decoder: config.clone(),
        ..StreamConfig::default()
    };
    expect_error(|| stream(sconfig.clone()), &[&built.bytes], &expected, &[]);

    // A v3 fragment configuration is refused by the constructor.
    let fragment = config.clone().fragment(FragmentFormat {
        version: 3,
        ts_out: false,
    });
    assert_eq!(DbnDecoder::new(fragment.clone()).unwrap_err(), expected);
    let sfragment = StreamConfig {
        decoder: fragment,
        ..StreamConfig::default()
    };
    assert_eq!(StreamDecoder::new(sfragment).unwrap_err(), expected);

    // The same policy decodes v1 and v2 streams and fragments.
    for version in [1, 2] {
        let built = mbo_stream(version, 2);
        let out = expect_clean(&mut dbn(config.clone()), &[&built.bytes], WHOLE);
        assert_eq!(out.records, built.records);
        let fragment = config.clone().fragment(FragmentFormat {
            version,
            ts_out: false,
        });
        assert!(DbnDecoder::new(fragment).is_ok());
    }
}

// ---------------------------------------------------------------------------------------
// Metadata errors
// ---------------------------------------------------------------------------------------

#[test]
fn metadata_shorter_than_fixed_part() {
    for length in [0u32, 99] {
        let mut input = mbo_stream(3, 1).bytes;
        input[4..8].copy_from_slice(&length.to_le_bytes());
        let expected = Error::MetadataTooShort {
            offset: LENGTH_OFFSET,
            length,
        };
        assert_eq!(expected.kind(), ErrorKind::Metadata);
        assert_eq!(expected.offset(), Some(4));
        expect_error(|| dbn(DecoderConfig::default()), &[&input], &expected, &[]);
        expect_error(
            || stream(StreamConfig::default()),
            &[&input],
            &expected,
            &[],
        );
    }
}

#[test]
fn metadata_over_the_cap_is_refused_without_buffering_it() {
    let cap = 1000;
    let length: u32 = 1_000_000;
    let mut input = b"DBN\x03".to_vec();
    input.extend_from_slice(&length.to_le_bytes());
    input.extend(noise(length as usize, 7));
    let config = DecoderConfig::default()
        .max_metadata_len(cap)
        .buffer_size(DecoderConfig::MIN_BUFFER_SIZE);
    let expected = Error::MetadataTooLarge {
        offset: LENGTH_OFFSET,
        length,
        cap,
    };
    assert_eq!(expected.kind(), ErrorKind::Metadata);
    assert_eq!(expected.offset(), Some(4));
    expect_error(|| dbn(config.clone()), &[&input], &expected, &[]);

    // Memory stays bounded: the decoder takes at most its fixed buffer, then nothing.
    let mut dec = dbn(config.clone());
    let taken = dec.handle_input(&input);
    assert!(
        taken <= DecoderConfig::MIN_BUFFER_SIZE,
        "took {taken} bytes"
    );
    assert_eq!(dec.handle_input(&input[taken..]), 0);
    assert!(dec.bytes_received() <= DecoderConfig::MIN_BUFFER_SIZE as u64);
    assert_eq!(dec.poll().unwrap_err(), expected);

    // The cap is inclusive: a header of exactly `cap` metadata bytes decodes, one byte
    // less of cap refuses it.
    let built = mbo_stream(3, 3);
    let meta_len = built.header_len - PRELUDE_LEN;
    let at_cap = DecoderConfig::default()
        .max_metadata_len(meta_len)
        .upgrade_policy(UpgradePolicy::AsIs);
    let out = expect_clean(&mut dbn(at_cap), &[&built.bytes], WHOLE);
    assert_eq!(out.records, built.records);
    let below = DecoderConfig::default().max_metadata_len(meta_len - 1);
    let expected = Error::MetadataTooLarge {
        offset: LENGTH_OFFSET,
        length: meta_len as u32,
        cap: meta_len - 1,
    };
    expect_error(|| dbn(below.clone()), &[&built.bytes], &expected, &[]);
}

#[test]
fn corrupt_metadata_content() {
    let built = mbo_stream(3, 2);
    // An undefined schema value (0xFFFF would mean "no schema").
    let mut input = built.bytes.clone();
    input[SCHEMA_OFFSET..SCHEMA_OFFSET + 2].copy_from_slice(&0xFFFEu16.to_le_bytes());
    let out = drive(&mut dbn(DecoderConfig::default()), &[&input], WHOLE);
    let Some(Error::Metadata { offset, reason }) = &out.error else {
        panic!("expected a metadata error, got {out:?}");
    };
    assert_eq!(*offset, PRELUDE_LEN as u64);
    assert!(!reason.is_empty());
    let expected = out.error.clone().unwrap();
    assert_eq!(expected.kind(), ErrorKind::Metadata);
    assert_eq!(expected.offset(), Some(8));
    expect_error(|| dbn(DecoderConfig::default()), &[&input], &expected, &[]);
    expect_error(
        || stream(StreamConfig::default()),
        &[&input],
        &expected,
        &[],
    );

    // A v1 symbol count that overstates what the block holds.
    let built = Built::new(header(1, false, &["AAPL"]), vec![mbo_bytes(0)]);
    let mut input = built.bytes.clone();
    let count_at = built.header_len - 4 * 4 - 22; // symbols count, then one 22-byte symbol
    assert_eq!(&input[count_at..count_at + 4], &1u32.to_le_bytes());
    input[count_at..count_at + 4].copy_from_slice(&1000u32.to_le_bytes());
    let out = drive(&mut dbn(DecoderConfig::default()), &[&input], WHOLE);
    assert!(
        matches!(&out.error, Some(Error::Metadata { offset: 8, .. })),
        "{out:?}"
    );
    check_terminal(&out);
}

#[test]
fn metadata_of_exactly_the_fixed_part_is_a_metadata_error_not_too_short() {
    // 100 bytes pass the length check but leave no room for the symbology counts.
    let mut input = header(3, false, &[]);
    input.truncate(PRELUDE_LEN + 100);
    input[4..8].copy_from_slice(&100u32.to_le_bytes());
    let out = drive(&mut dbn(DecoderConfig::default()), &[&input], WHOLE);
    assert!(
        matches!(&out.error, Some(Error::Metadata { offset: 8, .. })),
        "{out:?}"
    );
    check_terminal(&out);
}

// ---------------------------------------------------------------------------------------
// Framing errors
// ---------------------------------------------------------------------------------------

#[test]
fn record_length_zero_and_three_words() {
    for length_words in [0u8, 3] {
        for version in [1u8, 3] {
            let mut built = mbo_stream(version, 3);
            let fault = built.offset_of(3);
            built.append(&bad_header(length_words, dbn::rtype::MBO));
            built.append(&mbo_bytes(99)); // never delivered
            let expected = Error::RecordLength {
                offset: fault,
                length_words,
                rtype: dbn::rtype::MBO,
            };
            assert_eq!(expected.kind(), ErrorKind::Framing);
            assert_eq!(expected.offset(), Some(fault));
            let text = expected.to_string();
            assert!(text.contains(&format!("{} bytes", u32::from(length_words) * 4)));
            let policy = DecoderConfig::default().upgrade_policy(UpgradePolicy::AsIs);
            expect_error(
                || dbn(policy.clone()),
                &[&built.bytes],
                &expected,
                &built.records,
            );
            expect_error(
                || stream(StreamConfig::default()),
                &[&built.bytes],
                &expected,
                &built.records,
            );
            // Compressed: the offset still counts DBN bytes.
            let compressed = zstd_frame(&built.bytes, None, true);
            expect_error(
                || stream(StreamConfig::default()),
                &[&compressed],
                &expected,
                &built.records,
            );
        }
    }
    // In a fragment the offsets count from the first record.
    let records: Vec<_> = (0..2).map(mbo_bytes).collect();
    let mut input = records.concat();
    input.extend(bad_header(0, UNKNOWN_RTYPE));
    let expected = Error::RecordLength {
        offset: 2 * MBO_LEN as u64,
        length_words: 0,
        rtype: UNKNOWN_RTYPE,
    };
    let fragment = DecoderConfig::default().fragment(FragmentFormat {
        version: 3,
        ts_out: false,
    });
    expect_error(|| dbn(fragment.clone()), &[&input], &expected, &records);
}

#[test]
fn finish_reports_the_same_framing_error_as_poll_when_a_zstd_frame_is_cut_after_it() {
    // Frame A ends with a bad record header; frame B is cut short. The first fault in
    // stream order is the framing error: `finish` and `poll` must agree on it.
    let mut built = mbo_stream(3, 2);
    let fault = built.offset_of(2);
    built.append(&bad_header(0, dbn::rtype::MBO));
    let frame_a = zstd_frame(&built.bytes, None, true);
    let frame_b = zstd_frame(
        &(10..40).map(mbo_bytes).collect::<Vec<_>>().concat(),
        None,
        true,
    );
    let cut_b = &frame_b[..frame_b.len() / 2];
    let expected = Error::RecordLength {
        offset: fault,
        length_words: 0,
        rtype: dbn::rtype::MBO,
    };
    expect_error(
        || stream(StreamConfig::default()),
        &[&frame_a, cut_b],
        &expected,
        &built.records,
    );
    // A driver that reads everything before polling learns the verdict from `finish`
    // first; it must be the error the polls end with.
    let mut dec = stream(StreamConfig::default());
    assert_eq!(dec.handle_input(&frame_a), frame_a.len());
    assert_eq!(dec.handle_input(cut_b), cut_b.len());
    assert_eq!(dec.finish(), Err(expected.clone()), "finish");
    let out = drive(&mut dec, &[], WHOLE);
    assert_eq!(out.error.as_ref(), Some(&expected), "poll");
    assert!(out.records == built.records);
    assert_sticky(&mut dec, &expected);
    // The same with the DBN decoder and an upstream failure is not needed: its
    // `finish` sees the bad header among the buffered records.
    let mut dec = dbn(DecoderConfig::default());
    assert_eq!(dec.handle_input(&built.bytes), built.bytes.len());
    assert_eq!(dec.finish(), Err(expected.clone()));
    let out = drive(&mut dec, &[], WHOLE);
    assert_eq!(out.error.as_ref(), Some(&expected));
    assert!(out.records == built.records);
}

#[test]
fn known_rtype_shorter_than_its_struct() {
    // A v3 MBO of 48 bytes.
    let mut built = mbo_stream(3, 2);
    let fault = built.offset_of(2);
    let mut short = mbo_bytes(50);
    short.truncate(48);
    short[0] = 12;
    built.append(&short);
    built.append(&mbo_bytes(51));
    let expected = Error::RecordTooShort {
        offset: fault,
        rtype: dbn::rtype::MBO,
        length: 48,
        min: 56,
        version: 3,
    };
    assert_eq!(expected.kind(), ErrorKind::Framing);
    assert_eq!(expected.offset(), Some(fault));
    assert!(expected.to_string().contains("48 bytes"));
    expect_error(
        || dbn(DecoderConfig::default()),
        &[&built.bytes],
        &expected,
        &built.records,
    );
    expect_error(
        || stream(StreamConfig::default()),
        &[&built.bytes],
        &expected,
        &built.records,
    );

    // A v1 InstrumentDef of 356 bytes (its v1 struct is 360), with unpadded metadata,
    // under both AsIs and the default upgrade policy.
    let mut built = Built::new(
        header(1, false, &["ESZ4"]),
        vec![mbo_bytes(0), mbo_bytes(1)],
    );
    assert_ne!(built.header_len % 8, 0, "v1 metadata is not padded");
    let fault = built.offset_of(2);
    let mut def = dbn::v1::InstrumentDefMsg::default().as_ref().to_vec();
    assert_eq!(def.len(), 360);
    def.truncate(356);
    def[0] = 89;
    built.append(&def);
    let expected = Error::RecordTooShort {
        offset: fault,
        rtype: dbn::rtype::INSTRUMENT_DEF,
        length: 356,
        min: 360,
        version: 1,
    };
    for policy in [UpgradePolicy::AsIs, UpgradePolicy::UpgradeToV3] {
        let config = DecoderConfig::default().upgrade_policy(policy);
        expect_error(
            || dbn(config.clone()),
            &[&built.bytes],
            &expected,
            &built.records,
        );
    }

    // With ts_out, an MBO of exactly 56 bytes is too short: 64 are needed.
    let mut built = Built::new(
        header(3, true, &[]),
        vec![mbo_ts_out_bytes(0), mbo_ts_out_bytes(1)],
    );
    let fault = built.offset_of(2);
    built.append(&mbo_bytes(2));
    let expected = Error::RecordTooShort {
        offset: fault,
        rtype: dbn::rtype::MBO,
        length: 56,
        min: 64,
        version: 3,
    };
    expect_error(
        || dbn(DecoderConfig::default()),
        &[&built.bytes],
        &expected,
        &built.records,
    );
    // The same in a ts_out fragment, offsets from the first record.
    let records = vec![mbo_ts_out_bytes(0), mbo_ts_out_bytes(1)];
    let mut input = records.concat();
    input.extend(mbo_bytes(2));
    let expected = Error::RecordTooShort {
        offset: 128,
        rtype: dbn::rtype::MBO,
        length: 56,
        min: 64,
        version: 3,
    };
    let fragment = DecoderConfig::default().fragment(FragmentFormat {
        version: 3,
        ts_out: true,
    });
    expect_error(|| dbn(fragment.clone()), &[&input], &expected, &records);
}

// ---------------------------------------------------------------------------------------
// Truncation
// ---------------------------------------------------------------------------------------

#[test]
fn truncated_inside_the_prelude() {
    let built = mbo_stream(3, 2);
    let input = &built.bytes[..5];
    let expected = Error::Truncated {
        part: TruncatedPart::Prelude,
        offset: 0,
        have: 5,
        need: Some(8),
    };
    assert_eq!(expected.kind(), ErrorKind::Truncated);
    assert_eq!(expected.offset(), Some(0));
    assert!(expected.to_string().contains("5 bytes received of 8"));
    expect_error(|| dbn(DecoderConfig::default()), &[input], &expected, &[]);
    expect_error(|| stream(StreamConfig::default()), &[input], &expected, &[]);
    let mut dec = dbn(DecoderConfig::default());
    assert_eq!(dec.handle_input(input), 5);
    assert_eq!(dec.finish(), Err(expected.clone()), "finish reports it");
    // Two bytes are too few for the zstd magic: the stream decoder treats them as DBN.
    let expected = Error::Truncated {
        part: TruncatedPart::Prelude,
        offset: 0,
        have: 2,
        need: Some(8),
    };
    expect_error(
        || stream(StreamConfig::default()),
        &[&ZSTD_MAGIC[..2]],
        &expected,
        &[],
    );
}

#[test]
fn truncated_inside_the_metadata() {
    let built = mbo_stream(3, 2);
    let meta_len = built.header_len - PRELUDE_LEN;
    let input = &built.bytes[..PRELUDE_LEN + 30];
    let expected = Error::Truncated {
        part: TruncatedPart::Metadata,
        offset: PRELUDE_LEN as u64,
        have: 30,
        need: Some(meta_len),
    };
    assert_eq!(expected.kind(), ErrorKind::Truncated);
    assert_eq!(expected.offset(), Some(8));
    expect_error(|| dbn(DecoderConfig::default()), &[input], &expected, &[]);
    expect_error(|| stream(StreamConfig::default()), &[input], &expected, &[]);
    let compressed = zstd_frame(input, None, true);
    expect_error(
        || stream(StreamConfig::default()),
        &[&compressed],
        &expected,
        &[],
    );
}

#[test]
fn truncated_inside_a_record() {
    for (cut, have) in [(20usize, 20usize), (1, 1), (15, 15), (55, 55)] {
        let built = mbo_stream(3, 3);
        let fault = built.offset_of(2);
        let input = &built.bytes[..fault as usize + cut];
        let expected = Error::Truncated {
            part: TruncatedPart::Record,
            offset: fault,
            have,
            need: Some(MBO_LEN),
        };
        assert_eq!(expected.kind(), ErrorKind::Truncated);
        assert_eq!(expected.offset(), Some(fault));
        let before = &built.records[..2];
        expect_error(
            || dbn(DecoderConfig::default()),
            &[input],
            &expected,
            before,
        );
        expect_error(
            || stream(StreamConfig::default()),
            &[input],
            &expected,
            before,
        );
        let compressed = zstd_frame(input, None, true);
        expect_error(
            || stream(StreamConfig::default()),
            &[&compressed],
            &expected,
            before,
        );
    }
    // A partial header whose length byte is invalid: the length needed is unknown.
    let mut built = mbo_stream(3, 1);
    let fault = built.offset_of(1);
    built.append(&bad_header(0, dbn::rtype::MBO)[..5]);
    let expected = Error::Truncated {
        part: TruncatedPart::Record,
        offset: fault,
        have: 5,
        need: None,
    };
    assert!(!expected.to_string().contains(" of "));
    expect_error(
        || dbn(DecoderConfig::default()),
        &[&built.bytes],
        &expected,
        &built.records,
    );
}

#[test]
fn truncated_inside_a_zstd_frame() {
    let mut built = mbo_stream(3, 10);
    let frame_a = zstd_frame(&built.bytes, None, true);
    let more: Vec<Vec<u8>> = (10..400).map(mbo_bytes).collect();
    let frame_b = zstd_frame(&more.concat(), None, true);
    for rec in &more {
        built.append(rec);
    }
    built.records.extend(more);
    for cut in [1, 6, frame_b.len() / 2, frame_b.len() - 1] {
        let expected = Error::Truncated {
            part: TruncatedPart::ZstdFrame,
            offset: frame_a.len() as u64,
            have: cut,
            need: None,
        };
        assert_eq!(expected.kind(), ErrorKind::Truncated);
        for &how in HOWS {
            let mut dec = stream(StreamConfig::default());
            let out = drive(&mut dec, &[&frame_a, &frame_b[..cut]], how);
            assert_eq!(out.error.as_ref(), Some(&expected), "cut {cut} {how:?}");
            // Everything decompressed was delivered: at least frame A's records, and
            // only records as written.
            assert!(out.records.len() >= 10, "cut {cut} {how:?}");
            assert!(out.records[..] == built.records[..out.records.len()]);
            check_terminal(&out);
            assert_sticky(&mut dec, &expected);
        }
    }
    // Cut inside the very first frame header.
    let expected = Error::Truncated {
        part: TruncatedPart::ZstdFrame,
        offset: 0,
        have: 6,
        need: None,
    };
    expect_error(
        || stream(StreamConfig::default()),
        &[&frame_a[..6]],
        &expected,
        &[],
    );
}

#[test]
fn finish_after_an_error_repeats_it() {
    // Regression: `StreamDecoder::finish` called a second time returned `Ok(())` after
    // the stream had already failed.
    let built = mbo_stream(3, 2);
    let input = &built.bytes[..built.bytes.len() - 1];
    let expected = Error::Truncated {
        part: TruncatedPart::Record,
        offset: built.offset_of(1),
        have: MBO_LEN - 1,
        need: Some(MBO_LEN),
    };
    let mut dec = stream(StreamConfig::default());
    assert_eq!(dec.handle_input(input), input.len());
    assert_eq!(dec.finish(), Err(expected.clone()));
    assert_eq!(dec.finish(), Err(expected.clone()), "second finish");
    let out = drive(&mut dec, &[], WHOLE);
    assert_eq!(out.error, Some(expected.clone()));
    assert_eq!(dec.finish(), Err(expected.clone()), "finish after the poll");
    // Regression: an error polled while zstd still held decompressed bytes (the DBN
    // buffer was full) made a later `finish` return `Ok(())`.
    let mut long = mbo_stream(3, 10);
    let fault = long.offset_of(10);
    long.append(&bad_header(0, dbn::rtype::MBO));
    for i in 0..2000 {
        long.append(&mbo_bytes(i));
    }
    let compressed = zstd_frame(&long.bytes, None, true);
    let expected = Error::RecordLength {
        offset: fault,
        length_words: 0,
        rtype: dbn::rtype::MBO,
    };
    let mut dec = stream(StreamConfig {
        decoder: DecoderConfig::default().buffer_size(DecoderConfig::MIN_BUFFER_SIZE),
        ..StreamConfig::default()
    });
    let mut rest = &compressed[..];
    let mut records = 0;
    let err = loop {
        match dec.poll() {
            Ok(Decoded::Metadata(_)) => {}
            Ok(Decoded::Record(_)) => records += 1,
            Ok(Decoded::NeedInput(_)) => {
                let taken = dec.handle_input(rest);
                assert!(taken > 0);
                rest = &rest[taken..];
            }
            Ok(Decoded::End) => panic!("no end before finish"),
            Err(err) => break err,
        }
    };
    assert_eq!(err, expected);
    assert_eq!(records, 10);
    assert!(!rest.is_empty(), "the input had not run out");
    assert_eq!(
        dec.finish(),
        Err(expected.clone()),
        "finish after the error"
    );
    assert_sticky(&mut dec, &expected);
    // A clean end stays clean.
    let mut dec = stream(StreamConfig::default());
    assert_eq!(dec.handle_input(&built.bytes), built.bytes.len());
    assert_eq!(dec.finish(), Ok(()));
    assert_eq!(dec.finish(), Ok(()));
}

#[test]
fn empty_input_whole_stream_versus_fragment() {
    let expected = Error::Truncated {
        part: TruncatedPart::Prelude,
        offset: 0,
        have: 0,
        need: Some(8),
    };
    let mut dec = dbn(DecoderConfig::default());
    assert_eq!(dec.finish(), Err(expected.clone()));
    assert_eq!(dec.poll().unwrap_err(), expected);
    expect_error(|| dbn(DecoderConfig::default()), &[], &expected, &[]);
    expect_error(|| stream(StreamConfig::default()), &[], &expected, &[]);

    for version in 1..=3 {
        let fragment = DecoderConfig::default().fragment(FragmentFormat {
            version,
            ts_out: false,
        });
        let mut dec = dbn(fragment.clone());
        assert_eq!(dec.finish(), Ok(()));
        assert!(matches!(dec.poll(), Ok(Decoded::End)));
        assert!(matches!(dec.poll_batch(8), Ok(Decoded::End)), "End repeats");
        let out = expect_clean(&mut dbn(fragment.clone()), &[], WHOLE);
        assert!(out.records.is_empty() && !out.metadata);
        let mut dec = stream(StreamConfig {
            decoder: fragment,
            ..StreamConfig::default()
        });
        let out = expect_clean(&mut dec, &[], WHOLE);
        assert!(out.records.is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// zstd errors
// ---------------------------------------------------------------------------------------

#[test]
fn corrupt_zstd_after_a_valid_frame() {
    let built = mbo_stream(3, 20);
    let frame_a = zstd_frame(&built.bytes, None, true);
    // Not a frame: zstd rejects the magic.
    let garbage = b"this is not a zstd frame at all".to_vec();
    let out = drive(
        &mut stream(StreamConfig::default()),
        &[&frame_a, &garbage],
        WHOLE,
    );
    let Some(Error::Decompression { offset, reason }) = &out.error else {
        panic!("expected a decompression error, got {out:?}");
    };
    assert_eq!(
        *offset,
        frame_a.len() as u64,
        "the failing frame starts there"
    );
    assert!(!reason.is_empty());
    let expected = out.error.clone().unwrap();
    assert_eq!(expected.kind(), ErrorKind::Decompression);
    assert_eq!(expected.offset(), Some(frame_a.len() as u64));
    expect_error(
        || stream(StreamConfig::default()),
        &[&frame_a, &garbage],
        &expected,
        &built.records,
    );
}

#[test]
fn corrupt_zstd_in_the_same_chunk_as_a_valid_frame_still_delivers_that_frame() {
    // Frame A and the garbage after it arrive in one read: frame A's records were
    // decompressed before zstd failed, and must not be lost.
    let built = mbo_stream(3, 20);
    let frame_a = zstd_frame(&built.bytes, None, true);
    let mut input = frame_a.clone();
    input.extend_from_slice(b"this is not a zstd frame at all");
    let out = drive(&mut stream(StreamConfig::default()), &[&input], WHOLE);
    assert!(
        matches!(out.error, Some(Error::Decompression { .. })),
        "{out:?}"
    );
    assert_eq!(out.records.len(), built.records.len(), "frame A's records");
    assert!(out.records == built.records);
    check_terminal(&out);
    // The error's offset is where the failure lies, whatever the chunking.
    assert_eq!(out.error.unwrap().offset(), Some(frame_a.len() as u64));
}

#[test]
fn corrupt_zstd_checksum() {
    let built = mbo_stream(3, 20);
    let mut frame = zstd_frame(&built.bytes, None, true);
    let last = frame.len() - 1;
    frame[last] ^= 0xFF; // the content checksum
    for &how in HOWS {
        let mut dec = stream(StreamConfig::default());
        let out = drive(&mut dec, &[&frame], how);
        let Some(err @ Error::Decompression { offset, .. }) = &out.error else {
            panic!("expected a decompression error, got {out:?}");
        };
        assert_eq!(err.kind(), ErrorKind::Decompression);
        assert_eq!(*offset, 0, "the offset of the failing frame, {how:?}");
        // What zstd emitted before checking the checksum is delivered, in order.
        assert!(out.records[..] == built.records[..out.records.len()]);
        check_terminal(&out);
        assert_sticky(&mut dec, err);
    }
}

#[test]
fn zstd_window_over_the_limit() {
    let log_max = 10;
    let config = StreamConfig {
        zstd_window_log_max: log_max,
        ..StreamConfig::default()
    };
    let built = mbo_stream(3, 40); // 2 KiB: more than the 1 KiB window
    let frame_a = zstd_frame(&built.bytes, Some(10), true);
    let big: Vec<u8> = (100..2000).map(mbo_bytes).collect::<Vec<_>>().concat();
    let frame_b = zstd_frame(&big, Some(20), true);

    // A frame within the limit decodes.
    let out = expect_clean(&mut stream(config.clone()), &[&frame_a], WHOLE);
    assert!(out.records == built.records);

    // See how zstd itself reports the oversized window.
    let mut raw = zstd::stream::raw::Decoder::new().unwrap();
    raw.set_parameter(zstd::stream::raw::DParameter::WindowLogMax(log_max))
        .unwrap();
    let mut sink = vec![0u8; 1 << 16];
    let mut inb = zstd::stream::raw::InBuffer::around(&frame_b);
    let mut outb = zstd::stream::raw::OutBuffer::around(&mut sink[..]);
    use zstd::stream::raw::Operation as _;
    let zstd_err = raw.run(&mut inb, &mut outb).unwrap_err();
    assert!(
        zstd_err.to_string().contains("too much memory"),
        "zstd says {zstd_err}"
    );

    let expected = Error::WindowTooLarge {
        offset: frame_a.len() as u64,
        window_log_max: log_max,
    };
    assert_eq!(expected.kind(), ErrorKind::Decompression);
    assert!(expected.to_string().contains("2^10"));
    expect_error(
        || stream(config.clone()),
        &[&frame_a, &frame_b],
        &expected,
        &built.records,
    );
    // Alone, the oversized frame fails at its first byte.
    let expected = Error::WindowTooLarge {
        offset: 0,
        window_log_max: log_max,
    };
    let mut whole = built.bytes.clone();
    whole.extend_from_slice(&big);
    let frame = zstd_frame(&whole, Some(20), true);
    expect_error(|| stream(config.clone()), &[&frame], &expected, &[]);
    // The standalone zstd decoder says the same.
    let mut zd = ZstdDecoder::new(log_max).unwrap();
    let mut out = vec![0u8; 4096];
    assert_eq!(zd.decompress(&frame, &mut out).unwrap_err(), expected);
}

// ---------------------------------------------------------------------------------------
// Configuration errors
// ---------------------------------------------------------------------------------------

#[test]
fn invalid_configurations() {
    let is_config = |r: Result<DbnDecoder, Error>| {
        let err = r.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(err.offset(), None);
        assert!(err.to_string().starts_with("invalid configuration"));
    };
    let min = DecoderConfig::MIN_BUFFER_SIZE;
    let max = DecoderConfig::MAX_BUFFER_SIZE;
    is_config(DbnDecoder::new(
        DecoderConfig::default().buffer_size(min - 1),
    ));
    is_config(DbnDecoder::new(DecoderConfig::default().buffer_size(0)));
    is_config(DbnDecoder::new(
        DecoderConfig::default().buffer_size(max + 1),
    ));
    is_config(DbnDecoder::new(
        DecoderConfig::default().max_metadata_len(99),
    ));
    for version in [0, 4] {
        is_config(DbnDecoder::new(DecoderConfig::default().fragment(
            FragmentFormat {
                version,
                ts_out: false,
            },
        )));
    }
    // The boundaries are accepted.
    assert!(DbnDecoder::new(DecoderConfig::default().buffer_size(min)).is_ok());
    assert!(DbnDecoder::new(DecoderConfig::default().max_metadata_len(100)).is_ok());

    for log in [0, 9, 32, 64] {
        for compression in [Compression::Detect, Compression::Zstd, Compression::None] {
            let config = StreamConfig {
                zstd_window_log_max: log,
                compression,
                ..StreamConfig::default()
            };
            if compression == Compression::None {
                continue; // the window limit is not used
            }
            let err = StreamDecoder::new(config).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{err:?}");
            assert_eq!(err.kind(), ErrorKind::Config);
        }
        assert!(matches!(ZstdDecoder::new(log), Err(Error::Config(_))));
    }
    for log in [10, 31] {
        assert!(ZstdDecoder::new(log).is_ok());
        let config = StreamConfig {
            zstd_window_log_max: log,
            ..StreamConfig::default()
        };
        assert!(StreamDecoder::new(config).is_ok());
    }
    let config = StreamConfig {
        decoder: DecoderConfig::default().buffer_size(min - 8),
        ..StreamConfig::default()
    };
    assert!(matches!(StreamDecoder::new(config), Err(Error::Config(_))));
}

// ---------------------------------------------------------------------------------------
// Misaligned records, unknown rtypes
// ---------------------------------------------------------------------------------------

/// Records interleaving MBOs with unknown records of 20 and 44 bytes (multiples of 4,
/// not of 8), each of which shifts every later record off 8-byte alignment.
fn misaligning_records(n: u64, ts_out: bool) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    for i in 0..n {
        records.push(if ts_out {
            mbo_ts_out_bytes(i)
        } else {
            mbo_bytes(i)
        });
        match i % 4 {
            0 => records.push(raw_record(UNKNOWN_RTYPE, 20, i as u8)),
            2 => records.push(raw_record(UNKNOWN_RTYPE, 44, i as u8)),
            _ => {}
        }
    }
    records
}

fn all_hows_clean<D: Decode>(make: impl Fn() -> D, pieces: &[&[u8]], expected: &[Vec<u8>]) {
    for &how in HOWS {
        let out = expect_clean(&mut make(), pieces, how);
        assert_eq!(out.records.len(), expected.len(), "{how:?}");
        assert!(out.records == expected, "records intact, {how:?}");
    }
}

#[test]
fn misaligned_records_never_yield_misaligned_refs() {
    assert_eq!(
        dbn::RType::try_from(UNKNOWN_RTYPE).ok(),
        None,
        "the test rtype is unknown"
    );
    for (version, symbols) in [(1u8, &["ESZ4"][..]), (2, &["ESZ4"][..]), (3, &[][..])] {
        for ts_out in [false, true] {
            let built = Built::new(
                header(version, ts_out, symbols),
                misaligning_records(60, ts_out),
            );
            if version < 3 {
                assert_ne!(built.header_len % 8, 0, "unpadded v{version} metadata");
            } else {
                assert_eq!(built.header_len % 8, 0, "padded v3 metadata");
            }
            for buffer in [
                DecoderConfig::MIN_BUFFER_SIZE,
                DecoderConfig::DEFAULT_BUFFER_SIZE,
            ] {
                for policy in [UpgradePolicy::AsIs, UpgradePolicy::UpgradeToV3] {
                    let config = DecoderConfig::default()
                        .buffer_size(buffer)
                        .upgrade_policy(policy);
                    all_hows_clean(|| dbn(config.clone()), &[&built.bytes], &built.records);
                    let sconfig = StreamConfig {
                        decoder: config.clone(),
                        ..StreamConfig::default()
                    };
                    let compressed = zstd_frame(&built.bytes, None, true);
                    all_hows_clean(|| stream(sconfig.clone()), &[&compressed], &built.records);
                }
            }
            // The same records as a fragment.
            let fragment = DecoderConfig::default().fragment(FragmentFormat { version, ts_out });
            let input = built.records.concat();
            all_hows_clean(|| dbn(fragment.clone()), &[&input], &built.records);
        }
    }
}

#[test]
fn a_buffer_full_of_misaligned_records_fills_scratch_in_batches() {
    // Every record is 20 bytes: all of them must be copied to aligned scratch, which
    // cannot hold a whole buffer of them (24 bytes each once aligned).
    let records: Vec<_> = (0..2000)
        .map(|i| raw_record(UNKNOWN_RTYPE, 20, i as u8))
        .collect();
    let built = Built::new(header(3, false, &[]), records);
    let config = DecoderConfig::default().buffer_size(DecoderConfig::MIN_BUFFER_SIZE);
    all_hows_clean(|| dbn(config.clone()), &[&built.bytes], &built.records);
}

#[test]
fn misaligned_records_that_need_conversion_are_converted() {
    use dbn::{v1, v2, v3};
    let mut def = v1::InstrumentDefMsg::default();
    def.hd.instrument_id = 77;
    def.min_price_increment = 250_000_000;
    put_cstr(&mut def.raw_symbol, "ESZ4");
    let mut stat = v1::StatMsg::default();
    stat.hd.instrument_id = 78;
    stat.price = 5_000;
    stat.quantity = 17;
    let mut error = v1::ErrorMsg::default();
    put_cstr(&mut error.err, "oops");
    let input_records = vec![
        mbo_bytes(0),
        raw_record(UNKNOWN_RTYPE, 20, 1),
        def.as_ref().to_vec(),
        raw_record(UNKNOWN_RTYPE, 44, 2),
        stat.as_ref().to_vec(),
        raw_record(UNKNOWN_RTYPE, 20, 3),
        error.as_ref().to_vec(),
        mbo_bytes(1),
    ];
    let built = Built::new(header(1, false, &["ESZ4"]), input_records.clone());
    let to_v3 = vec![
        mbo_bytes(0),
        raw_record(UNKNOWN_RTYPE, 20, 1),
        v3::InstrumentDefMsg::from(&def).as_ref().to_vec(),
        raw_record(UNKNOWN_RTYPE, 44, 2),
        v3::StatMsg::from(&stat).as_ref().to_vec(),
        raw_record(UNKNOWN_RTYPE, 20, 3),
        v2::ErrorMsg::from(&error).as_ref().to_vec(),
        mbo_bytes(1),
    ];
    let to_v2 = vec![
        mbo_bytes(0),
        raw_record(UNKNOWN_RTYPE, 20, 1),
        v2::InstrumentDefMsg::from(&def).as_ref().to_vec(),
        raw_record(UNKNOWN_RTYPE, 44, 2),
        stat.as_ref().to_vec(),
        raw_record(UNKNOWN_RTYPE, 20, 3),
        v2::ErrorMsg::from(&error).as_ref().to_vec(),
        mbo_bytes(1),
    ];
    for (policy, expected) in [
        (UpgradePolicy::AsIs, &input_records),
        (UpgradePolicy::UpgradeToV2, &to_v2),
        (UpgradePolicy::UpgradeToV3, &to_v3),
    ] {
        let config = DecoderConfig::default().upgrade_policy(policy);
        all_hows_clean(|| dbn(config.clone()), &[&built.bytes], expected);
    }
}

#[test]
fn unknown_rtypes_pass_through_framed_by_length() {
    let mut records = Vec::new();
    for (i, rtype) in [0xEEu8, 0x5A, 0xFE, 0x7F].into_iter().enumerate() {
        assert!(
            dbn::RType::try_from(rtype).is_err(),
            "{rtype:#x} is unknown"
        );
        for len in [16usize, 24, 64, 1020] {
            records.push(raw_record(rtype, len, (i * 10 + len) as u8));
        }
        records.push(mbo_bytes(i as u64));
    }
    for version in 1..=3 {
        let built = Built::new(header(version, false, &[]), records.clone());
        for policy in [UpgradePolicy::AsIs, UpgradePolicy::UpgradeToV3] {
            let config = DecoderConfig::default()
                .upgrade_policy(policy)
                .buffer_size(DecoderConfig::MIN_BUFFER_SIZE);
            all_hows_clean(|| dbn(config.clone()), &[&built.bytes], &records);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Display
// ---------------------------------------------------------------------------------------

#[test]
fn display_names_the_offset_and_the_fault() {
    let cases: Vec<(Error, &[&str])> = vec![
        (Error::LegacyDbz { offset: 0 }, &["offset 0", "DBZ"]),
        (
            Error::NotDbn {
                offset: 0,
                found: *b"ABCD",
            },
            &["offset 0", "41"],
        ),
        (
            Error::UnsupportedVersion {
                offset: 3,
                version: 200,
            },
            &["offset 3", "version 200"],
        ),
        (
            Error::MetadataTooShort {
                offset: 4,
                length: 99,
            },
            &["offset 4", "99"],
        ),
        (
            Error::MetadataTooLarge {
                offset: 4,
                length: 123_456,
                cap: 1000,
            },
            &["offset 4", "123456", "1000"],
        ),
        (
            Error::Metadata {
                offset: 8,
                reason: "bad schema".into(),
            },
            &["offset 8", "bad schema"],
        ),
        (
            Error::RecordLength {
                offset: 31_337,
                length_words: 3,
                rtype: 0xA0,
            },
            &["offset 31337", "3 words", "12 bytes", "0xa0"],
        ),
        (
            Error::RecordTooShort {
                offset: 4_242,
                rtype: 0xA0,
                length: 48,
                min: 56,
                version: 3,
            },
            &["offset 4242", "48 bytes", "56 bytes", "version 3"],
        ),
        (
            Error::Decompression {
                offset: 777,
                reason: "Unknown frame descriptor".into(),
            },
            &["offset 777", "Unknown frame descriptor"],
        ),
        (
            Error::WindowTooLarge {
                offset: 778,
                window_log_max: 10,
            },
            &["offset 778", "2^10"],
        ),
        (
            Error::Truncated {
                part: TruncatedPart::Record,
                offset: 9_999,
                have: 20,
                need: Some(56),
            },
            &["offset 9999", "record", "20 bytes received of 56"],
        ),
        (
            Error::Truncated {
                part: TruncatedPart::ZstdFrame,
                offset: 5,
                have: 6,
                need: None,
            },
            &["offset 5", "zstd frame", "6 bytes received"],
        ),
    ];
    for (err, needles) in cases {
        let text = err.to_string();
        for needle in needles {
            assert!(text.contains(needle), "`{text}` lacks `{needle}`");
        }
        check_display(&err);
    }
    // Real errors too (see also every other test, which checks their Display).
    let built = mbo_stream(3, 3);
    let fault = built.offset_of(2) + 10;
    let out = drive(
        &mut dbn(DecoderConfig::default()),
        &[&built.bytes[..fault as usize]],
        WHOLE,
    );
    let text = out.error.unwrap().to_string();
    assert!(text.contains(&built.offset_of(2).to_string()), "{text}");
}

// ---------------------------------------------------------------------------------------
// Backpressure
// ---------------------------------------------------------------------------------------

#[test]
fn backpressure_takes_less_and_loses_nothing() {
    let built = mbo_stream(3, 2000);
    let config = DecoderConfig::default().buffer_size(DecoderConfig::MIN_BUFFER_SIZE);
    let mut dec = dbn(config.clone());
    let taken = dec.handle_input(&built.bytes);
    assert!(taken > 0 && taken <= DecoderConfig::MIN_BUFFER_SIZE + built.header_len);
    assert_eq!(
        dec.handle_input(&built.bytes[taken..]),
        0,
        "full until polled"
    );
    assert!(matches!(dec.poll(), Ok(Decoded::Metadata(_))));
    assert!(matches!(dec.poll(), Ok(Decoded::Record(_))));
    assert!(
        dec.handle_input(&built.bytes[taken..]) > 0,
        "room after a poll"
    );
    // Re-offer the rest after draining: nothing is lost or duplicated.
    for &how in HOWS {
        let out = expect_clean(&mut dbn(config.clone()), &[&built.bytes], how);
        assert!(out.records == built.records, "{how:?}");
    }

    // Compressed input is taken only as far as the decompressed bytes fit.
    let mut records = Vec::new();
    for i in 0..3000u64 {
        let mut rec = mbo(i);
        let n = noise(16, i + 1);
        rec.order_id = u64::from_le_bytes(n[..8].try_into().unwrap());
        rec.price = i64::from_le_bytes(n[8..].try_into().unwrap());
        records.push(rec.as_ref().to_vec());
    }
    let built = Built::new(header(3, false, &[]), records);
    let compressed = zstd_frame(&built.bytes, None, true);
    let sconfig = StreamConfig {
        decoder: config.clone(),
        ..StreamConfig::default()
    };
    let mut dec = stream(sconfig.clone());
    let taken = dec.handle_input(&compressed);
    assert!(
        taken < compressed.len(),
        "took all {taken} compressed bytes into a 4 KiB buffer"
    );
    for &how in HOWS {
        let out = expect_clean(&mut stream(sconfig.clone()), &[&compressed], how);
        assert!(out.records == built.records, "{how:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Property tests: no panics, always an end
// ---------------------------------------------------------------------------------------

/// Which decoder a property runs.
#[derive(Debug, Clone, Copy)]
enum Target {
    Whole(UpgradePolicy),
    Fragment(FragmentFormat, UpgradePolicy),
    Stream(Compression),
    StreamFragment(FragmentFormat),
}

fn target() -> impl Strategy<Value = Target> {
    let policy = prop_oneof![
        Just(UpgradePolicy::AsIs),
        Just(UpgradePolicy::UpgradeToV2),
        Just(UpgradePolicy::UpgradeToV3),
    ];
    let format =
        (1u8..=3, any::<bool>()).prop_map(|(version, ts_out)| FragmentFormat { version, ts_out });
    prop_oneof![
        policy.clone().prop_map(Target::Whole),
        (format.clone(), policy).prop_map(|(f, p)| {
            // UpgradeToV2 cannot take a v3 fragment (tested above).
            let p = if f.version == 3 && p == UpgradePolicy::UpgradeToV2 {
                UpgradePolicy::AsIs
            } else {
                p
            };
            Target::Fragment(f, p)
        }),
        prop_oneof![
            Just(Compression::Detect),
            Just(Compression::Zstd),
            Just(Compression::None)
        ]
        .prop_map(Target::Stream),
        format.prop_map(Target::StreamFragment),
    ]
}

fn how() -> impl Strategy<Value = How> {
    (
        prop_oneof![Just(usize::MAX), 1usize..300],
        prop_oneof![
            Just(Poll::One),
            Just(Poll::Batch(usize::MAX)),
            (1usize..5).prop_map(Poll::Batch)
        ],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(chunk, poll, space_fill, greedy)| How {
            chunk,
            poll,
            space_fill,
            greedy,
        })
}

/// Splits `bytes` at the given cut points (taken modulo the length).
fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

/// Runs `target` over `input` and checks that it ends cleanly or with an error.
fn run_target(target: Target, input: &[u8], cuts: &[usize], how: How) -> Outcome {
    let pieces = split(input, cuts);
    let buffer = DecoderConfig::MIN_BUFFER_SIZE;
    let out = match target {
        Target::Whole(policy) => {
            let config = DecoderConfig::default()
                .upgrade_policy(policy)
                .buffer_size(buffer)
                .max_metadata_len(64 * 1024);
            let mut dec = dbn(config);
            let out = drive(&mut dec, &pieces, how);
            if let Some(err) = &out.error {
                assert_sticky(&mut dec, err);
            }
            out
        }
        Target::Fragment(format, policy) => {
            let config = DecoderConfig::default()
                .upgrade_policy(policy)
                .buffer_size(buffer)
                .fragment(format);
            let mut dec = dbn(config);
            let out = drive(&mut dec, &pieces, how);
            if let Some(err) = &out.error {
                assert_sticky(&mut dec, err);
            }
            out
        }
        Target::Stream(compression) => {
            let config = StreamConfig {
                decoder: DecoderConfig::default()
                    .buffer_size(buffer)
                    .max_metadata_len(64 * 1024),
                compression,
                zstd_window_log_max: 24,
            };
            let mut dec = stream(config);
            let out = drive(&mut dec, &pieces, how);
            if let Some(err) = &out.error {
                assert_sticky(&mut dec, err);
            }
            out
        }
        Target::StreamFragment(format) => {
            let config = StreamConfig {
                decoder: DecoderConfig::default()
                    .buffer_size(buffer)
                    .upgrade_policy(UpgradePolicy::AsIs)
                    .fragment(format),
                ..StreamConfig::default()
            };
            let mut dec = stream(config);
            let out = drive(&mut dec, &pieces, how);
            if let Some(err) = &out.error {
                assert_sticky(&mut dec, err);
            }
            out
        }
    };
    check_terminal(&out);
    out
}

/// A record kind for generated valid streams.
fn record_of(kind: u8, version: u8, ts_out: bool, i: u64) -> Vec<u8> {
    let mut rec = match kind % 7 {
        0 => mbo_bytes(i),
        1 => {
            let mut trade = TradeMsg::default();
            trade.hd.instrument_id = i as u32;
            trade.price = i as i64;
            trade.as_ref().to_vec()
        }
        2 => match version {
            1 => dbn::v1::InstrumentDefMsg::default().as_ref().to_vec(),
            2 => dbn::v2::InstrumentDefMsg::default().as_ref().to_vec(),
            _ => dbn::v3::InstrumentDefMsg::default().as_ref().to_vec(),
        },
        3 => match version {
            1 | 2 => dbn::v1::StatMsg::default().as_ref().to_vec(),
            _ => dbn::v3::StatMsg::default().as_ref().to_vec(),
        },
        4 => raw_record(UNKNOWN_RTYPE, 20, i as u8),
        5 => raw_record(UNKNOWN_RTYPE, 44, i as u8),
        _ => raw_record(0x5A, 16, i as u8),
    };
    if ts_out {
        rec.extend_from_slice(&(i + 5).to_le_bytes());
        rec[0] += 2;
    }
    rec
}

/// A valid stream of `kinds` records, as whole-stream bytes plus where the records
/// start.
fn valid_stream(version: u8, ts_out: bool, kinds: &[u8]) -> Built {
    let records = kinds
        .iter()
        .enumerate()
        .map(|(i, &k)| record_of(k, version, ts_out, i as u64))
        .collect();
    let symbols: &[&str] = if version < 3 { &["ESZ4"] } else { &[] };
    Built::new(header(version, ts_out, symbols), records)
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    /// Overwrite the length byte of record `n % count` with the value.
    Length(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, x)| Mutation::Flip(at, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(n, v)| Mutation::Length(n, v)),
    ]
}

fn mutate(built: &Built, skip_header: bool, mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = if skip_header {
        built.bytes[built.header_len..].to_vec()
    } else {
        built.bytes.clone()
    };
    let base = if skip_header { 0 } else { built.header_len };
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        match *m {
            Mutation::Flip(at, x) => {
                let at = at % bytes.len();
                bytes[at] ^= x;
            }
            Mutation::Truncate(at) => bytes.truncate(at % (bytes.len() + 1)),
            Mutation::Length(n, v) => {
                if !built.records.is_empty() {
                    let k = n % built.records.len();
                    let at = base + built.records[..k].iter().map(Vec::len).sum::<usize>();
                    if at < bytes.len() {
                        bytes[at] = v;
                    }
                }
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic_and_always_end(
        prefix in prop_oneof![
            Just(Vec::new()),
            (1u8..=3, 100u32..600).prop_map(|(v, l)| {
                let mut p = b"DBN".to_vec();
                p.push(v);
                p.extend_from_slice(&l.to_le_bytes());
                p
            }),
            Just(ZSTD_MAGIC.to_vec()),
        ],
        body in vec(any::<u8>(), 0..1500),
        cuts in vec(any::<usize>(), 0..6),
        target in target(),
        how in how(),
    ) {
        let mut input = prefix;
        input.extend(body);
        run_target(target, &input, &cuts, how);
    }

    #[test]
    fn mutated_streams_never_panic_and_always_end(
        version in 1u8..=3,
        ts_out in any::<bool>(),
        kinds in vec(any::<u8>(), 0..24),
        mutations in vec(mutation(), 0..4),
        compress in 0u8..3,
        cuts in vec(any::<usize>(), 0..6),
        target in target(),
        how in how(),
    ) {
        let built = valid_stream(version, ts_out, &kinds);
        let fragment = matches!(target, Target::Fragment(..) | Target::StreamFragment(..));
        let input = match compress {
            // Mutate the DBN bytes, then compress them.
            1 if matches!(target, Target::Stream(_) | Target::StreamFragment(_)) => {
                zstd_frame(&mutate(&built, fragment, &mutations), None, true)
            }
            // Compress, then mutate the zstd bytes.
            2 => {
                let plain = if fragment {
                    built.bytes[built.header_len..].to_vec()
                } else {
                    built.bytes.clone()
                };
                let compressed = Built::new(zstd_frame(&plain, None, false), Vec::new());
                mutate(&compressed, false, &mutations)
            }
            _ => mutate(&built, fragment, &mutations),
        };
        run_target(target, &input, &cuts, how);
    }

    #[test]
    fn valid_streams_decode_exactly_in_any_chunking(
        version in 1u8..=3,
        ts_out in any::<bool>(),
        kinds in vec(any::<u8>(), 0..40),
        cuts in vec(any::<usize>(), 0..8),
        how in how(),
        compress in any::<bool>(),
    ) {
        let built = valid_stream(version, ts_out, &kinds);
        let input = if compress { zstd_frame(&built.bytes, None, true) } else { built.bytes.clone() };
        let target = Target::Stream(Compression::Detect);
        // The stream decoder's default policy upgrades; compare with AsIs through the
        // DBN decoder, and counts through the stream decoder.
        let out = run_target(target, &input, &cuts, how);
        prop_assert!(out.end && out.metadata);
        prop_assert_eq!(out.records.len(), built.records.len());
        let out = run_target(Target::Whole(UpgradePolicy::AsIs), &built.bytes, &cuts, how);
        prop_assert!(out.end);
        prop_assert!(out.records == built.records);
    }
}

/// v1 and v2 instrument definitions hold Rust enums in the `dbn` structs: a byte
/// outside the enum is refused before the record is handed out or converted (viewing
/// it as the struct would be undefined behaviour), with the field and byte named.
#[test]
fn invalid_enum_bytes_in_old_definitions_are_refused() {
    use std::mem::offset_of;
    let cases = [
        (
            1u8,
            offset_of!(dbn::v1::InstrumentDefMsg, security_update_action),
            "security_update_action",
        ),
        (
            1,
            offset_of!(dbn::v1::InstrumentDefMsg, user_defined_instrument),
            "user_defined_instrument",
        ),
        (
            2,
            offset_of!(dbn::v2::InstrumentDefMsg, user_defined_instrument),
            "user_defined_instrument",
        ),
    ];
    for (version, field_offset, field) in cases {
        let good = match version {
            1 => dbn::v1::InstrumentDefMsg::default().as_ref().to_vec(),
            _ => dbn::v2::InstrumentDefMsg::default().as_ref().to_vec(),
        };
        let mut bad = good.clone();
        bad[field_offset] = b'X';
        let mut built = Built::new(header(version, false, &["ESZ4"]), vec![mbo_bytes(0), good]);
        let fault = built.offset_of(2);
        built.append(&bad);
        built.append(&mbo_bytes(1));
        let expected = Error::InvalidRecordField {
            offset: fault,
            rtype: dbn::rtype::INSTRUMENT_DEF,
            field,
            value: b'X',
        };
        assert_eq!(expected.kind(), ErrorKind::Framing);
        assert!(expected.to_string().contains(field));
        let as_is = DecoderConfig::default().upgrade_policy(UpgradePolicy::AsIs);
        expect_error(
            || dbn(as_is.clone()),
            &[&built.bytes],
            &expected,
            &built.records,
        );
        // Converting policies refuse it too, after the two records before it.
        let mut dec = dbn(DecoderConfig::default());
        let out = drive(&mut dec, &[&built.bytes], HOWS[0]);
        assert_eq!(
            out.error.as_ref(),
            Some(&expected),
            "v{version} {field} UpgradeToV3"
        );
        assert_eq!(out.records.len(), 2);
    }
}
