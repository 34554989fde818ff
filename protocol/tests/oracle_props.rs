//! Property tests against the `dbn` crate's own decoder on random DBN streams.
//!
//! Streams of DBN versions 1, 2 and 3, with and without `ts_out`, whole or as
//! record-only fragments, are written with `dbn`'s encoders: random metadata (dataset,
//! schema, times, symbols, symbol mappings) and random records of every record type of
//! the version (the `dbn::v1`/`v2`/`v3` structs filled with random bytes, wrapped in
//! `WithTsOut` when `ts_out` is on), optionally zstd-compressed in several frames. Fed
//! to our decoders in random chunks, polled one at a time or in batches, with small or
//! large buffers, under every upgrade policy, they must give the same metadata and the
//! same record bytes as `dbn`'s `DbnFsm`, or the same refusal (a v3 stream under
//! `UpgradeToV2`, refused with `Error::PolicyConflict`).
//!
//! A second property adds records of unknown types whose lengths may be 4 modulo 8,
//! which misalign everything after them. `DbnFsm` builds misaligned record references
//! there, so the expectation is built from the oracle's output on the same stream
//! without the unknown records, with the unknown records' bytes spliced in as written;
//! every record we hand out must also sit at an 8-byte-aligned address.

use std::any::TypeId;
use std::mem::{offset_of, size_of};
use std::num::NonZeroU64;

use dbn::decode::dbn::fsm::{DbnFsm, ProcessResult};
use dbn::encode::dbn::Encoder;
use dbn::encode::{DbnEncodable, EncodeRecord};
use dbn::{
    HasRType, MappingInterval, Metadata, MetadataBuilder, RecordBuf, RecordHeader, RecordMut,
    RecordRef, SType, Schema, SymbolMapping, WithTsOut, rtype,
};
use dbn_pipe_protocol::{
    DbnDecoder, Decoded, DecoderConfig, Error, FragmentFormat, RecordBatch, StreamConfig,
    StreamDecoder, UpgradePolicy,
};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

const POLICIES: [UpgradePolicy; 3] = [
    UpgradePolicy::AsIs,
    UpgradePolicy::UpgradeToV2,
    UpgradePolicy::UpgradeToV3,
];

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fill_random(bytes: &mut [u8], seed: u64) {
    let mut state = seed;
    for chunk in bytes.chunks_mut(8) {
        let word = splitmix64(&mut state).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

// ---------------------------------------------------------------------------------
// Random records, written with dbn's structs and encoder
// ---------------------------------------------------------------------------------

/// Writes one record of type `T` and rtype `rtype` to `encoder`, every byte after the
/// length and rtype random (header fields included), or for even seeds all zero but a
/// few random ones; wrapped in `WithTsOut` when `ts_out` is given.
type EncodeFn = fn(&mut Encoder<Vec<u8>>, u8, u64, Option<u64>);

/// A record type of one DBN version: the rtypes it is written with and its writer.
struct RecordKind {
    name: &'static str,
    rtypes: &'static [u8],
    encode: EncodeFn,
}

fn kind<T>(name: &'static str, rtypes: &'static [u8]) -> RecordKind
where
    T: HasRType<Header = RecordHeader> + RecordMut + DbnEncodable + Clone,
    WithTsOut<T>: DbnEncodable,
{
    RecordKind {
        name,
        rtypes,
        encode: encode_random::<T>,
    }
}

fn encode_random<T>(encoder: &mut Encoder<Vec<u8>>, rtype: u8, seed: u64, ts_out: Option<u64>)
where
    T: HasRType<Header = RecordHeader> + RecordMut + DbnEncodable + Clone,
    WithTsOut<T>: DbnEncodable,
{
    // Any valid record to start from; its bytes are all overwritten.
    let mut buf: RecordBuf = RecordBuf::from(dbn::MboMsg::default());
    let len = size_of::<T>();
    let raw = buf.raw_buf_mut();
    fill_random(&mut raw[2..len], seed);
    if seed % 2 == 0 {
        // Sparse: mostly zero, so that zstd compresses it (and holds decompressed
        // output back when the decoder's buffer is full).
        let mut state = seed;
        let body = &mut raw[2..len];
        let keep: Vec<(usize, u8)> = (0..8)
            .map(|_| {
                let r = splitmix64(&mut state);
                ((r >> 8) as usize % body.len(), r as u8)
            })
            .collect();
        body.fill(0);
        for (at, byte) in keep {
            body[at] = byte;
        }
    }
    raw[0] = u8::try_from(len / 4).expect("records are at most 1020 bytes");
    raw[1] = rtype;
    fix_enum_fields::<T>(&mut raw[..len], seed);
    let rec = buf
        .get::<T>()
        .expect("the rtype belongs to the struct")
        .clone();
    let written = match ts_out {
        Some(ts) => encoder.encode_record(&WithTsOut::new(rec, ts)),
        None => encoder.encode_record(&rec),
    };
    written.expect("encoding into a Vec succeeds");
}

/// Gives the few Rust-enum fields of the old definition structs a valid value: random
/// bytes there would make reading the struct undefined behaviour.
fn fix_enum_fields<T: 'static>(raw: &mut [u8], seed: u64) {
    let action = b"AMD"[(seed % 3) as usize];
    let user_defined = b"NY"[((seed >> 8) % 2) as usize];
    if TypeId::of::<T>() == TypeId::of::<dbn::v1::InstrumentDefMsg>() {
        raw[offset_of!(dbn::v1::InstrumentDefMsg, security_update_action)] = action;
        raw[offset_of!(dbn::v1::InstrumentDefMsg, user_defined_instrument)] = user_defined;
    } else if TypeId::of::<T>() == TypeId::of::<dbn::v2::InstrumentDefMsg>() {
        raw[offset_of!(dbn::v2::InstrumentDefMsg, user_defined_instrument)] = user_defined;
    }
}

/// Every record type of a DBN version, with the structs of that version's module.
macro_rules! catalog {
    ($v:ident) => {{
        use dbn::$v as v;
        vec![
            kind::<v::MboMsg>("mbo", &[rtype::MBO]),
            kind::<v::TradeMsg>("trades", &[rtype::MBP_0]),
            kind::<v::Mbp1Msg>("mbp-1", &[rtype::MBP_1]),
            kind::<v::Mbp10Msg>("mbp-10", &[rtype::MBP_10]),
            kind::<v::BboMsg>("bbo", &[rtype::BBO_1S, rtype::BBO_1M]),
            kind::<v::CbboMsg>("cbbo", &[rtype::CBBO_1S, rtype::CBBO_1M]),
            kind::<v::Cmbp1Msg>("cmbp-1", &[rtype::CMBP_1, rtype::TCBBO]),
            kind::<v::OhlcvMsg>(
                "ohlcv",
                &[
                    rtype::OHLCV_1S,
                    rtype::OHLCV_1M,
                    rtype::OHLCV_1H,
                    rtype::OHLCV_1D,
                    rtype::OHLCV_EOD,
                    rtype::OHLCV_DEPRECATED,
                ],
            ),
            kind::<v::StatusMsg>("status", &[rtype::STATUS]),
            kind::<v::ImbalanceMsg>("imbalance", &[rtype::IMBALANCE]),
            kind::<v::InstrumentDefMsg>("definition", &[rtype::INSTRUMENT_DEF]),
            kind::<v::ErrorMsg>("error", &[rtype::ERROR]),
            kind::<v::SymbolMappingMsg>("symbol mapping", &[rtype::SYMBOL_MAPPING]),
            kind::<v::SystemMsg>("system", &[rtype::SYSTEM]),
            kind::<v::StatMsg>("statistics", &[rtype::STATISTICS]),
        ]
    }};
}

fn catalog(version: u8) -> Vec<RecordKind> {
    match version {
        1 => catalog!(v1),
        2 => catalog!(v2),
        3 => catalog!(v3),
        _ => unreachable!("versions 1 to 3"),
    }
}

// ---------------------------------------------------------------------------------
// Random streams
// ---------------------------------------------------------------------------------

const NANOS_PER_DAY: u64 = 86_400 * 1_000_000_000;

/// A mapping interval from day numbers since 1970-01-01 (the date type is reached
/// through `Metadata::start`, as this crate does not depend on `time`).
fn interval(start_day: u32, days: u32, symbol: String) -> MappingInterval {
    let date = |day: u32| {
        MetadataBuilder::new()
            .dataset("")
            .schema(None)
            .start(u64::from(day) * NANOS_PER_DAY)
            .stype_in(None)
            .stype_out(SType::InstrumentId)
            .build()
            .start()
            .date()
    };
    MappingInterval {
        start_date: date(start_day),
        end_date: date(start_day + days),
        symbol,
    }
}

/// A symbol mapping: raw symbol, then intervals as (first day, length in days, symbol).
type MappingSpec = (String, Vec<(u32, u32, String)>);

#[derive(Debug, Clone)]
struct MetaSpec {
    dataset: String,
    schema: Option<Schema>,
    start: u64,
    end: u64,
    limit: u64,
    stype_in: Option<SType>,
    stype_out: SType,
    symbols: Vec<String>,
    partial: Vec<String>,
    not_found: Vec<String>,
    mappings: Vec<MappingSpec>,
}

impl MetaSpec {
    fn build(&self, version: u8, ts_out: bool) -> Metadata {
        // Symbols are at most 21 characters in v1, 70 in v2 and v3.
        let cap = if version == 1 { 21 } else { 70 };
        let fit = |s: &String| s.chars().take(cap).collect::<String>();
        let fit_all = |v: &Vec<String>| v.iter().map(fit).collect::<Vec<_>>();
        MetadataBuilder::new()
            .version(version)
            .dataset(self.dataset.clone())
            .schema(self.schema)
            .start(self.start)
            .end(NonZeroU64::new(self.end))
            .limit(NonZeroU64::new(self.limit))
            .stype_in(self.stype_in)
            .stype_out(self.stype_out)
            .ts_out(ts_out)
            .symbols(fit_all(&self.symbols))
            .partial(fit_all(&self.partial))
            .not_found(fit_all(&self.not_found))
            .mappings(
                self.mappings
                    .iter()
                    .map(|(raw, intervals)| SymbolMapping {
                        raw_symbol: fit(raw),
                        intervals: intervals
                            .iter()
                            .map(|(day, days, symbol)| interval(*day, *days, fit(symbol)))
                            .collect(),
                    })
                    .collect(),
            )
            .build()
    }
}

fn symbol() -> impl Strategy<Value = String> {
    "[A-Za-z0-9 ._:-]{0,70}"
}

fn meta_spec() -> impl Strategy<Value = MetaSpec> {
    let schemas = prop::sample::select(vec![
        None,
        Some(Schema::Mbo),
        Some(Schema::Mbp1),
        Some(Schema::Mbp10),
        Some(Schema::Tbbo),
        Some(Schema::Trades),
        Some(Schema::Ohlcv1S),
        Some(Schema::Ohlcv1D),
        Some(Schema::Definition),
        Some(Schema::Statistics),
        Some(Schema::Status),
        Some(Schema::Imbalance),
        Some(Schema::Cbbo1S),
        Some(Schema::Bbo1M),
    ]);
    let stypes = vec![
        SType::InstrumentId,
        SType::RawSymbol,
        SType::Parent,
        SType::Continuous,
    ];
    let mapping = (
        symbol(),
        prop::collection::vec((0u32..40_000, 1u32..400, symbol()), 0..3),
    );
    (
        (
            "[A-Z0-9.]{0,15}",
            schemas,
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        ),
        (
            prop::option::of(prop::sample::select(stypes.clone())),
            prop::sample::select(stypes),
        ),
        (
            prop::collection::vec(symbol(), 0..4),
            prop::collection::vec(symbol(), 0..2),
            prop::collection::vec(symbol(), 0..2),
            prop::collection::vec(mapping, 0..4),
        ),
    )
        .prop_map(
            |(
                (dataset, schema, start, end, limit),
                (stype_in, stype_out),
                (symbols, partial, not_found, mappings),
            )| MetaSpec {
                dataset,
                schema,
                start,
                end,
                limit,
                stype_in,
                stype_out,
                symbols,
                partial,
                not_found,
                mappings,
            },
        )
}

/// One record of the stream: which kind (index modulo the catalog), which of its
/// rtypes, the seed of its bytes and its `ts_out`.
#[derive(Debug, Clone, Copy)]
struct RecSpec {
    kind: usize,
    rtype: usize,
    seed: u64,
    ts_out: u64,
}

fn rec_spec() -> impl Strategy<Value = RecSpec> {
    (any::<usize>(), any::<usize>(), any::<u64>(), any::<u64>()).prop_map(
        |(kind, rtype, seed, ts_out)| RecSpec {
            kind,
            rtype,
            seed,
            ts_out,
        },
    )
}

/// A record of an rtype no DBN version 1 to 3 defines, written as raw bytes.
#[derive(Debug, Clone, Copy)]
struct UnknownSpec {
    /// Inserted before the known record with this index (modulo their count plus one).
    position: usize,
    rtype: u8,
    /// Length in 4-byte words, header included (odd counts misalign what follows).
    words: u8,
    seed: u64,
}

fn unknown_spec() -> impl Strategy<Value = UnknownSpec> {
    (
        any::<usize>(),
        prop::sample::select(vec![0xEEu8, 0xEF, 0x7F, 0xFE]),
        prop_oneof![4u8..=40, 4u8..=255],
        any::<u64>(),
    )
        .prop_map(|(position, rtype, words, seed)| UnknownSpec {
            position,
            rtype,
            words,
            seed,
        })
}

fn unknown_bytes(spec: &UnknownSpec) -> Vec<u8> {
    let mut bytes = vec![0u8; usize::from(spec.words) * 4];
    fill_random(&mut bytes, spec.seed);
    bytes[0] = spec.words;
    bytes[1] = spec.rtype;
    bytes
}

/// One item of a written stream, with its byte range.
#[derive(Debug, Clone)]
enum Item {
    Known { name: &'static str, bytes: Vec<u8> },
    Unknown { bytes: Vec<u8> },
}

/// A written stream: the bytes and what is in them.
#[derive(Debug)]
struct Written {
    /// Prelude and metadata followed by the records; records only for a fragment.
    bytes: Vec<u8>,
    items: Vec<Item>,
}

/// Writes a stream with dbn's encoder. Unknown records are inserted raw.
fn write_stream(
    version: u8,
    ts_out: bool,
    fragment: bool,
    meta: &MetaSpec,
    records: &[RecSpec],
    unknown: &[UnknownSpec],
) -> Written {
    let metadata = meta.build(version, ts_out);
    let mut encoder = Encoder::new(Vec::new(), &metadata).expect("metadata encodes");
    let header_len = encoder.get_ref().len();
    let kinds = catalog(version);
    let mut items = Vec::new();
    for i in 0..=records.len() {
        for spec in unknown
            .iter()
            .filter(|u| u.position % (records.len() + 1) == i)
        {
            let bytes = unknown_bytes(spec);
            encoder.get_mut().extend_from_slice(&bytes);
            items.push(Item::Unknown { bytes });
        }
        let Some(spec) = records.get(i) else { break };
        let kind = &kinds[spec.kind % kinds.len()];
        let rtype = kind.rtypes[spec.rtype % kind.rtypes.len()];
        let before = encoder.get_ref().len();
        (kind.encode)(
            &mut encoder,
            rtype,
            spec.seed,
            ts_out.then_some(spec.ts_out),
        );
        items.push(Item::Known {
            name: kind.name,
            bytes: encoder.get_ref()[before..].to_vec(),
        });
    }
    let mut bytes = std::mem::take(encoder.get_mut());
    if fragment {
        bytes.drain(..header_len);
    }
    Written { bytes, items }
}

/// Compresses `plain` as concatenated zstd frames of the given sizes (cycled).
fn compress_frames(plain: &[u8], frame_sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut sizes = frame_sizes.iter().cycle();
    while pos < plain.len() {
        let n = (*sizes.next().expect("non-empty")).clamp(1, plain.len() - pos);
        out.extend(zstd::bulk::compress(&plain[pos..pos + n], 1).expect("zstd compresses"));
        pos += n;
    }
    if plain.is_empty() {
        out.extend(zstd::bulk::compress(&[], 1).expect("zstd compresses"));
    }
    out
}

// ---------------------------------------------------------------------------------
// The oracle
// ---------------------------------------------------------------------------------

type Decoding = (Option<Metadata>, Vec<Vec<u8>>);

/// `dbn`'s `DbnFsm` fed `plain` whole: metadata and record bytes, or its refusal.
fn oracle(
    plain: &[u8],
    policy: UpgradePolicy,
    fragment: Option<FragmentFormat>,
) -> Result<Decoding, String> {
    let mut builder = DbnFsm::builder().upgrade_policy(policy.to_dbn());
    if let Some(format) = fragment {
        builder = builder
            .skip_metadata(true)
            .input_dbn_version(Some(format.version))
            .map_err(|e| e.to_string())?
            .ts_out(format.ts_out);
    }
    let mut fsm = builder.build().map_err(|e| e.to_string())?;
    fsm.write_all(plain);
    let mut metadata = None;
    let mut records = Vec::new();
    loop {
        match fsm.process() {
            ProcessResult::ReadMore(_) => break,
            ProcessResult::Metadata(m) => metadata = Some(m),
            ProcessResult::Record(()) => records.push(
                fsm.last_record()
                    .expect("the oracle names the record it decoded")
                    .as_ref()
                    .to_vec(),
            ),
            ProcessResult::Err(e) => return Err(e.to_string()),
        }
    }
    if !fsm.data().is_empty() {
        return Err(format!("{} bytes left undecoded", fsm.data().len()));
    }
    Ok((metadata, records))
}

// ---------------------------------------------------------------------------------
// Our decoders
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum PollMode {
    One,
    Batch(usize),
    /// Take at most this many records of each unbounded batch, then drop it.
    BatchTake(usize),
}

fn poll_mode() -> impl Strategy<Value = PollMode> {
    prop_oneof![
        Just(PollMode::One),
        Just(PollMode::Batch(usize::MAX)),
        (1usize..8).prop_map(PollMode::Batch),
        (1usize..4).prop_map(PollMode::BatchTake),
    ]
}

trait Poller {
    fn poll_one(&mut self) -> Result<Decoded<RecordRef<'_>>, Error>;
    fn poll_many(&mut self, max: usize) -> Result<Decoded<RecordBatch<'_>>, Error>;
}

impl Poller for StreamDecoder {
    fn poll_one(&mut self) -> Result<Decoded<RecordRef<'_>>, Error> {
        self.poll()
    }
    fn poll_many(&mut self, max: usize) -> Result<Decoded<RecordBatch<'_>>, Error> {
        self.poll_batch(max)
    }
}

impl Poller for DbnDecoder {
    fn poll_one(&mut self) -> Result<Decoded<RecordRef<'_>>, Error> {
        self.poll()
    }
    fn poll_many(&mut self, max: usize) -> Result<Decoded<RecordBatch<'_>>, Error> {
        self.poll_batch(max)
    }
}

#[derive(Debug, Default)]
struct Outcome {
    metadata: Option<Metadata>,
    records: Vec<Vec<u8>>,
    error: Option<Error>,
    finish: Option<Result<(), Error>>,
    ended: bool,
    /// Records handed out at an address that is not a multiple of 8.
    misaligned: usize,
    /// More records than this cannot come from the input (each takes at least 16 of
    /// its bytes): a decoder handing a record out twice is stopped here.
    max_records: usize,
}

impl Outcome {
    fn take(&mut self, rec: RecordRef<'_>) {
        assert!(
            self.records.len() < self.max_records,
            "more records than the input holds: a record was handed out twice"
        );
        let bytes = rec.as_ref();
        if bytes.as_ptr().addr() % 8 != 0 {
            self.misaligned += 1;
        }
        self.records.push(bytes.to_vec());
    }
}

enum Polled {
    Item,
    NeedInput,
    End,
    Failed(Error),
}

fn poll_once(dec: &mut impl Poller, mode: PollMode, out: &mut Outcome) -> Polled {
    fn rest<R>(result: Result<Decoded<R>, Error>, out: &mut Outcome) -> Polled {
        match result {
            Ok(Decoded::Metadata(m)) => {
                assert!(out.metadata.is_none() && out.records.is_empty());
                out.metadata = Some(*m);
                Polled::Item
            }
            Ok(Decoded::NeedInput(n)) => {
                assert!(n >= 1, "NeedInput(0)");
                Polled::NeedInput
            }
            Ok(Decoded::End) => Polled::End,
            Ok(Decoded::Record(_)) => unreachable!("records are taken by the caller"),
            Err(err) => Polled::Failed(err),
        }
    }
    match mode {
        PollMode::One => match dec.poll_one() {
            Ok(Decoded::Record(rec)) => {
                out.take(rec);
                Polled::Item
            }
            result => rest(result, out),
        },
        PollMode::Batch(_) | PollMode::BatchTake(_) => {
            let (max, limit) = match mode {
                PollMode::Batch(max) => (max, usize::MAX),
                PollMode::BatchTake(take) => (usize::MAX, take),
                PollMode::One => unreachable!(),
            };
            match dec.poll_many(max) {
                Ok(Decoded::Record(mut batch)) => {
                    let (low, high) = batch.size_hint();
                    let high = high.expect("a batch bounds its size");
                    assert!(
                        low >= 1 && high <= max,
                        "batch of {low}..={high} for max {max}"
                    );
                    let before = out.records.len();
                    for rec in batch.by_ref().take(limit) {
                        out.take(rec);
                    }
                    let yielded = out.records.len() - before;
                    assert!(
                        (low.min(limit)..=high).contains(&yielded),
                        "batch yielded {yielded}, size hint {low}..={high}"
                    );
                    Polled::Item
                }
                result => rest(result, out),
            }
        }
    }
}

/// Polls until input is needed, the stream ended or failed. Returns whether the run
/// is over (end or failure) and whether anything came out.
fn drain(dec: &mut impl Poller, mode: PollMode, out: &mut Outcome) -> (bool, bool) {
    let mut any = false;
    loop {
        match poll_once(dec, mode, out) {
            Polled::Item => any = true,
            Polled::NeedInput => {
                assert!(out.finish.is_none(), "NeedInput after finish()");
                return (false, any);
            }
            Polled::End => {
                assert!(out.finish.is_some(), "End before finish()");
                out.ended = true;
                return (true, any);
            }
            Polled::Failed(err) => {
                assert_eq!(dec.poll_one().err().as_ref(), Some(&err), "sticky error");
                out.error = Some(err);
                return (true, any);
            }
        }
    }
}

/// How bytes reach the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    /// `StreamDecoder::handle_input`, zstd detected by magic.
    Stream,
    /// `DbnDecoder::space` / `fill` (plain input only).
    SpaceFill,
}

fn run(
    input: &[u8],
    plain_len: usize,
    config: DecoderConfig,
    feed: Feed,
    chunks: &[usize],
    mode: PollMode,
) -> Outcome {
    let mut out = Outcome {
        max_records: plain_len / 16,
        ..Outcome::default()
    };
    let mut sizes = chunks.iter().cycle();
    let mut next_size = move || *sizes.next().expect("non-empty chunk list");
    let mut pos = 0;
    let mut idle = 0;
    match feed {
        Feed::Stream => {
            let config = StreamConfig {
                decoder: config,
                ..StreamConfig::default()
            };
            let mut dec = match StreamDecoder::new(config) {
                Ok(dec) => dec,
                Err(err) => {
                    out.error = Some(err);
                    return out;
                }
            };
            let mut pending: &[u8] = &[];
            loop {
                let mut progressed = false;
                if pending.is_empty() {
                    if pos < input.len() {
                        let n = next_size().clamp(1, input.len() - pos);
                        pending = &input[pos..pos + n];
                        pos += n;
                    } else if out.finish.is_none() {
                        out.finish = Some(dec.finish());
                        progressed = true;
                    }
                }
                // Only bytes are offered, as a driver would after a read: output the
                // zstd layer still holds must come out through polling alone.
                if !pending.is_empty() {
                    let taken = dec.handle_input(pending);
                    assert!(taken <= pending.len(), "took more than offered");
                    pending = &pending[taken..];
                    progressed |= taken > 0;
                }
                let (done, any) = drain(&mut dec, mode, &mut out);
                if done {
                    return out;
                }
                idle = if progressed || any { 0 } else { idle + 1 };
                assert!(idle < 3, "StreamDecoder stalled at input offset {pos}");
            }
        }
        Feed::SpaceFill => {
            let mut dec = match DbnDecoder::new(config) {
                Ok(dec) => dec,
                Err(err) => {
                    out.error = Some(err);
                    return out;
                }
            };
            loop {
                let mut progressed = false;
                if pos < input.len() {
                    let space = dec.space();
                    if !space.is_empty() {
                        let n = next_size().clamp(1, space.len().min(input.len() - pos));
                        space[..n].copy_from_slice(&input[pos..pos + n]);
                        dec.fill(n);
                        pos += n;
                        progressed = true;
                    }
                } else if out.finish.is_none() {
                    out.finish = Some(dec.finish());
                    progressed = true;
                }
                let (done, any) = drain(&mut dec, mode, &mut out);
                if done {
                    return out;
                }
                idle = if progressed || any { 0 } else { idle + 1 };
                assert!(idle < 3, "DbnDecoder stalled at input offset {pos}");
            }
        }
    }
}

/// How a generated stream is delivered to our decoder.
#[derive(Debug, Clone)]
struct Delivery {
    /// zstd frame sizes (of the plain bytes), or `None` for plain input.
    frames: Option<Vec<usize>>,
    /// Sizes of the successive reads, cycled.
    chunks: Vec<usize>,
    mode: PollMode,
    buffer: usize,
    space_fill: bool,
}

fn delivery() -> impl Strategy<Value = Delivery> {
    (
        prop::option::of(prop_oneof![
            prop::collection::vec(1usize..3000, 1..4),
            // Frames (and zstd blocks) larger than the decoder's buffer.
            prop::collection::vec(4000usize..40_000, 1..3),
        ]),
        prop_oneof![
            Just(vec![usize::MAX]),
            prop::collection::vec(1usize..64, 1..6),
            prop::collection::vec(1usize..1500, 1..6),
        ],
        poll_mode(),
        prop::sample::select(vec![
            DecoderConfig::MIN_BUFFER_SIZE,
            DecoderConfig::MIN_BUFFER_SIZE + 12,
            DecoderConfig::DEFAULT_BUFFER_SIZE,
        ]),
        any::<bool>(),
    )
        .prop_map(|(frames, chunks, mode, buffer, space_fill)| Delivery {
            frames,
            chunks,
            mode,
            buffer,
            space_fill,
        })
}

impl Delivery {
    fn run(&self, plain: &[u8], config: DecoderConfig) -> Outcome {
        let config = config.buffer_size(self.buffer);
        match &self.frames {
            Some(frames) => run(
                &compress_frames(plain, frames),
                plain.len(),
                config,
                Feed::Stream,
                &self.chunks,
                self.mode,
            ),
            None if self.space_fill => run(
                plain,
                plain.len(),
                config,
                Feed::SpaceFill,
                &self.chunks,
                self.mode,
            ),
            None => run(
                plain,
                plain.len(),
                config,
                Feed::Stream,
                &self.chunks,
                self.mode,
            ),
        }
    }
}

fn decoder_config(policy: UpgradePolicy, fragment: Option<FragmentFormat>) -> DecoderConfig {
    let config = DecoderConfig::default().upgrade_policy(policy);
    match fragment {
        Some(format) => config.fragment(format),
        None => config,
    }
}

/// Asserts a clean decoding equal to `expected`.
fn assert_decoded(outcome: &Outcome, expected: &Decoding, what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(&outcome.error, &None, "{}: unexpected error", what);
    prop_assert_eq!(&outcome.finish, &Some(Ok(())), "{}: finish()", what);
    prop_assert!(outcome.ended, "{}: no Decoded::End", what);
    prop_assert_eq!(
        outcome.misaligned,
        0,
        "{}: misaligned records handed out",
        what
    );
    prop_assert_eq!(&outcome.metadata, &expected.0, "{}: metadata", what);
    prop_assert_eq!(
        outcome.records.len(),
        expected.1.len(),
        "{}: record count",
        what
    );
    for (i, (ours, theirs)) in outcome.records.iter().zip(&expected.1).enumerate() {
        prop_assert!(
            ours == theirs,
            "{}: record {} differs (ours {} bytes rtype {:#04x}, expected {} bytes rtype {:#04x})",
            what,
            i,
            ours.len(),
            ours[1],
            theirs.len(),
            theirs[1]
        );
    }
    Ok(())
}

fn assert_policy_conflict(outcome: &Outcome, what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        &outcome.error,
        &Some(Error::PolicyConflict {
            policy: "UpgradeToV2",
            version: 3
        }),
        "{}",
        what
    );
    prop_assert!(
        outcome.records.is_empty() && outcome.metadata.is_none(),
        "{}",
        what
    );
    Ok(())
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Keep the test tree free of regression files; failures print their seed.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// Random streams of every version and record type decode exactly as `dbn`
    /// decodes them, however they are chunked, compressed and polled.
    #[test]
    fn random_streams_match_the_dbn_oracle(
        version in 1u8..=3,
        ts_out in any::<bool>(),
        fragment in prop::bool::weighted(0.25),
        meta in meta_spec(),
        records in prop::collection::vec(rec_spec(), 0..40),
        delivery in delivery(),
    ) {
        let written = write_stream(version, ts_out, fragment, &meta, &records, &[]);
        let format = fragment.then_some(FragmentFormat { version, ts_out });
        for policy in POLICIES {
            let what = format!("v{version} ts_out={ts_out} fragment={fragment} {policy:?} {delivery:?}");
            let outcome = delivery.run(&written.bytes, decoder_config(policy, format));
            match oracle(&written.bytes, policy, format) {
                Ok(expected) => {
                    assert_decoded(&outcome, &expected, &what)?;
                    if policy == UpgradePolicy::AsIs {
                        // As is means as written: the bytes dbn's encoder produced.
                        let written_records: Vec<&Vec<u8>> = written
                            .items
                            .iter()
                            .map(|item| match item {
                                Item::Known { bytes, .. } | Item::Unknown { bytes } => bytes,
                            })
                            .collect();
                        prop_assert!(
                            outcome.records.iter().eq(written_records.iter().copied()),
                            "{}: AsIs changed the records", what
                        );
                    }
                }
                Err(reason) => {
                    prop_assert!(
                        policy == UpgradePolicy::UpgradeToV2 && version == 3,
                        "{}: the oracle refused for an unexpected reason: {}", what, reason
                    );
                    assert_policy_conflict(&outcome, &what)?;
                }
            }
        }
    }

    /// Records of unknown types are passed through as written, and those whose length
    /// is 4 modulo 8 do not disturb the records after them: every record comes out
    /// whole, in order, at an aligned address.
    #[test]
    fn unknown_rtypes_pass_through_and_realign(
        version in 1u8..=3,
        ts_out in any::<bool>(),
        fragment in prop::bool::weighted(0.25),
        meta in meta_spec(),
        records in prop::collection::vec(rec_spec(), 0..16),
        unknown in prop::collection::vec(unknown_spec(), 1..5),
        delivery in delivery(),
    ) {
        for spec in &unknown {
            let mut probe: RecordBuf = RecordBuf::from(dbn::MboMsg::default());
            probe.raw_buf_mut()[1] = spec.rtype;
            prop_assert!(probe.as_enum().is_err(), "{:#x} is a known rtype", spec.rtype);
        }
        let written = write_stream(version, ts_out, fragment, &meta, &records, &unknown);
        let known_only = write_stream(version, ts_out, fragment, &meta, &records, &[]);
        let all_aligned = unknown.iter().all(|u| u.words % 2 == 0);
        let format = fragment.then_some(FragmentFormat { version, ts_out });
        for policy in POLICIES {
            let what = format!(
                "v{version} ts_out={ts_out} fragment={fragment} {policy:?} unknown={unknown:?} {delivery:?}"
            );
            let outcome = delivery.run(&written.bytes, decoder_config(policy, format));
            match oracle(&known_only.bytes, policy, format) {
                Ok((metadata, known)) => {
                    // The oracle's records for the known ones, with the unknown
                    // records' bytes spliced in where they were written.
                    let mut known = known.into_iter();
                    let mut expected = Vec::new();
                    for item in &written.items {
                        match item {
                            Item::Known { name, .. } => expected.push(
                                known.next().unwrap_or_else(|| panic!("oracle lost a {name} record")),
                            ),
                            Item::Unknown { bytes } => expected.push(bytes.clone()),
                        }
                    }
                    prop_assert!(known.next().is_none(), "the oracle made up records");
                    let expected = (metadata, expected);
                    assert_decoded(&outcome, &expected, &what)?;
                    if all_aligned {
                        // Nothing is misaligned: the oracle can read the whole stream.
                        let direct = oracle(&written.bytes, policy, format)
                            .map_err(|e| TestCaseError::fail(format!("{what}: oracle: {e}")))?;
                        assert_decoded(&outcome, &direct, &what)?;
                    }
                }
                Err(reason) => {
                    prop_assert!(
                        policy == UpgradePolicy::UpgradeToV2 && version == 3,
                        "{}: the oracle refused for an unexpected reason: {}", what, reason
                    );
                    assert_policy_conflict(&outcome, &what)?;
                }
            }
        }
    }
}

/// The catalogs cover every record type the wire facts list for each version, with
/// the struct sizes of that version.
#[test]
fn catalogs_cover_every_record_type_of_each_version() {
    let sizes = |version: u8| -> Vec<(&'static str, usize)> {
        let mut out = Vec::new();
        let mut encoder = Encoder::new(
            Vec::new(),
            &MetaSpec {
                dataset: String::new(),
                schema: None,
                start: 0,
                end: 0,
                limit: 0,
                stype_in: None,
                stype_out: SType::InstrumentId,
                symbols: vec![],
                partial: vec![],
                not_found: vec![],
                mappings: vec![],
            }
            .build(version, false),
        )
        .expect("metadata encodes");
        for kind in catalog(version) {
            for &rtype in kind.rtypes {
                let before = encoder.get_ref().len();
                (kind.encode)(&mut encoder, rtype, 7, None);
                let bytes = &encoder.get_ref()[before..];
                assert_eq!(bytes[1], rtype, "{} rtype", kind.name);
                assert_eq!(
                    usize::from(bytes[0]) * 4,
                    bytes.len(),
                    "{} length",
                    kind.name
                );
                out.push((kind.name, bytes.len()));
            }
        }
        out
    };
    for (version, def, error, mapping, system, stat) in [
        (1, 360, 80, 80, 80, 64),
        (2, 400, 320, 176, 320, 64),
        (3, 520, 320, 176, 320, 80),
    ] {
        let got = sizes(version);
        let size_of_kind = |name: &str| {
            got.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| *s)
                .unwrap_or_else(|| panic!("v{version} catalog lacks {name}"))
        };
        assert_eq!(size_of_kind("definition"), def);
        assert_eq!(size_of_kind("error"), error);
        assert_eq!(size_of_kind("symbol mapping"), mapping);
        assert_eq!(size_of_kind("system"), system);
        assert_eq!(size_of_kind("statistics"), stat);
        assert_eq!(size_of_kind("mbo"), 56);
        assert_eq!(size_of_kind("trades"), 48);
        assert_eq!(size_of_kind("mbp-10"), 368);
        assert_eq!(size_of_kind("imbalance"), 112);
        assert_eq!(size_of_kind("status"), 40);
        assert_eq!(size_of_kind("ohlcv"), 56);
        assert_eq!(got.len(), 23, "v{version}: rtypes written");
    }
}
