//! Conformance of the decoding core with the `dbn` crate on real Databento files.
//!
//! Every file in `shared/fixtures/dbn` is decoded under every [`UpgradePolicy`] through
//! [`StreamDecoder`] (zstd recognised by its magic number) fed whole, byte by byte, in
//! 7-byte chunks and in random-size chunks from seeded generators, with a small record
//! buffer as well as the default one, pulling records with `poll`, `poll_batch` and
//! batches dropped early; plain bytes also go through the copy-free
//! [`DbnDecoder::space`]/[`DbnDecoder::fill`] path. Each run must give the same
//! metadata and the same record bytes, in the same order, as the `dbn` crate's own
//! sans-IO decoder (`DbnFsm`), end with [`Decoded::End`] after a successful
//! `finish()`, and hand out only 8-byte-aligned records. Combinations the oracle
//! rejects (a v3 stream under `UpgradeToV2`) must be rejected with
//! [`Error::PolicyConflict`], and legacy DBZ files with [`Error::LegacyDbz`], both
//! without a single record. Finally the ground truth of PROTOCOL.md section 4 is
//! checked field by field.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use dbn::decode::dbn::fsm::{DbnFsm, ProcessResult};
use dbn::{Metadata, RecordRef};
use dbn_pipe_protocol::{
    DbnDecoder, Decoded, DecoderConfig, Error, ErrorKind, FragmentFormat, RecordBatch,
    StreamConfig, StreamDecoder, UpgradePolicy, ZSTD_MAGIC,
};

const POLICIES: [UpgradePolicy; 3] = [
    UpgradePolicy::AsIs,
    UpgradePolicy::UpgradeToV2,
    UpgradePolicy::UpgradeToV3,
];

/// Seeds of the random chunkings.
const SEEDS: [u64; 4] = [1, 0x5EED, 0xDB_1234, 0xFEED_FACE_CAFE];

// ---------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------

/// The fixture folder, or `None` (with a visible note) when it is absent outside CI.
fn fixture_dir() -> Option<PathBuf> {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/dbn"
    ));
    if dir.is_dir() {
        return Some(dir.to_path_buf());
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the DBN fixture folder {} is missing and CI is set: the conformance suite cannot run",
        dir.display()
    );
    // One write, so that the note is not interleaved with the harness's output.
    let note = format!(
        "NOTE: DBN fixture folder {} not found; conformance test skipped",
        dir.display()
    );
    let _ = writeln!(std::io::stderr(), "{note}");
    None
}

/// What a fixture file is, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A whole DBN stream (prelude, metadata, records), maybe zstd-compressed.
    Stream,
    /// Records only, of this DBN version, without `ts_out`.
    Fragment { version: u8 },
    /// The legacy DBZ format.
    LegacyDbz,
}

#[derive(Debug)]
struct Fixture {
    name: String,
    /// The file's bytes as stored.
    raw: Vec<u8>,
    /// The DBN bytes: `raw`, decompressed when it is zstd.
    plain: Vec<u8>,
    kind: Kind,
}

impl Fixture {
    fn is_zstd(&self) -> bool {
        self.raw.starts_with(&ZSTD_MAGIC)
    }

    /// The DBN version of the records, when the file is DBN.
    fn version(&self) -> Option<u8> {
        match self.kind {
            Kind::Stream => {
                assert!(
                    self.plain.starts_with(b"DBN"),
                    "{}: no DBN prelude",
                    self.name
                );
                Some(self.plain[3])
            }
            Kind::Fragment { version } => Some(version),
            Kind::LegacyDbz => None,
        }
    }

    /// The schema part of `test_data.<schema>.…`.
    fn schema(&self) -> Option<&str> {
        self.name.strip_prefix("test_data.")?.split('.').next()
    }

    /// The configuration of our decoder for this file under `policy`.
    fn decoder_config(&self, policy: UpgradePolicy) -> DecoderConfig {
        let config = DecoderConfig::default().upgrade_policy(policy);
        match self.kind {
            Kind::Fragment { version } => config.fragment(FragmentFormat {
                version,
                ts_out: false,
            }),
            Kind::Stream | Kind::LegacyDbz => config,
        }
    }
}

/// Classifies a fixture by its name; panics on a name no rule covers, so that no file
/// is skipped silently.
fn kind_of(name: &str) -> Kind {
    if name.ends_with(".dbz") {
        return Kind::LegacyDbz;
    }
    if name.ends_with(".frag") || name.ends_with(".frag.zst") {
        // The one fragment without a version in its name holds v2 records.
        if name == "test_data.definition.dbn.frag.zst" {
            return Kind::Fragment { version: 2 };
        }
        for version in 1..=3u8 {
            if name.contains(&format!("definition.v{version}.dbn.frag")) {
                return Kind::Fragment { version };
            }
        }
        panic!("fragment fixture {name} does not name its DBN version");
    }
    if name.ends_with(".dbn") || name.ends_with(".dbn.zst") {
        return Kind::Stream;
    }
    panic!("fixture {name} is of no known kind (.dbn, .dbn.zst, .frag, .frag.zst, .dbz)");
}

/// Every fixture file except the license and readme, sorted by name.
fn load_fixtures(dir: &Path) -> Vec<Fixture> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read the fixture folder")
        .map(|entry| {
            entry
                .expect("read a fixture folder entry")
                .file_name()
                .into_string()
                .expect("fixture names are UTF-8")
        })
        .filter(|name| name != "LICENSE" && name != "README.md")
        .collect();
    names.sort();
    assert!(!names.is_empty(), "the fixture folder holds no file");
    names
        .into_iter()
        .map(|name| {
            let raw = std::fs::read(dir.join(&name)).expect("read a fixture");
            let kind = kind_of(&name);
            let plain = if kind != Kind::LegacyDbz && raw.starts_with(&ZSTD_MAGIC) {
                zstd::stream::decode_all(&raw[..]).expect("the zstd fixture decompresses")
            } else {
                raw.clone()
            };
            Fixture {
                name,
                raw,
                plain,
                kind,
            }
        })
        .collect()
}

fn load(dir: &Path, name: &str) -> Fixture {
    load_fixtures(dir)
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("fixture {name} is missing"))
}

// ---------------------------------------------------------------------------------
// The oracle
// ---------------------------------------------------------------------------------

/// What `dbn`'s `DbnFsm` decodes from `plain`: metadata and record bytes, or why it
/// refused.
fn oracle(
    plain: &[u8],
    policy: UpgradePolicy,
    fragment_version: Option<u8>,
) -> Result<(Option<Metadata>, Vec<Vec<u8>>), String> {
    let mut builder = DbnFsm::builder().upgrade_policy(policy.to_dbn());
    if let Some(version) = fragment_version {
        builder = builder
            .skip_metadata(true)
            .input_dbn_version(Some(version))
            .map_err(|e| e.to_string())?
            .ts_out(false);
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
        return Err(format!(
            "the oracle left {} trailing bytes undecoded",
            fsm.data().len()
        ));
    }
    Ok((metadata, records))
}

// ---------------------------------------------------------------------------------
// Our decoders, driven as a user would
// ---------------------------------------------------------------------------------

/// How records are pulled.
#[derive(Debug, Clone, Copy)]
enum PollMode {
    /// `poll`, one record at a time.
    One,
    /// `poll_batch(max)`, every batch drained.
    Batch(usize),
    /// `poll_batch(usize::MAX)`, at most this many records taken from each batch before
    /// it is dropped (the rest must come with the next poll).
    BatchTake(usize),
}

const POLL_MODES: [PollMode; 4] = [
    PollMode::One,
    PollMode::Batch(usize::MAX),
    PollMode::Batch(3),
    PollMode::BatchTake(2),
];

/// Sizes of the successive chunks input is read in.
#[derive(Debug, Clone, Copy)]
enum Chunking {
    Whole,
    Fixed(usize),
    Random(u64),
}

impl Chunking {
    fn sizes(self) -> impl FnMut() -> usize {
        let mut state = match self {
            Self::Random(seed) => seed,
            _ => 0,
        };
        move || match self {
            Self::Whole => usize::MAX,
            Self::Fixed(n) => n,
            Self::Random(_) => {
                let r = splitmix64(&mut state);
                // Mostly small reads, now and then a large one.
                let cap = if r % 8 == 0 { 2048 } else { 64 };
                1 + (r >> 8) as usize % cap
            }
        }
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Everything a run of our decoder produced.
#[derive(Debug, Default)]
struct Outcome {
    metadata: Option<Metadata>,
    records: Vec<Vec<u8>>,
    /// The error a poll (or the constructor) returned, if any.
    error: Option<Error>,
    /// What `finish()` returned, once called.
    finish: Option<Result<(), Error>>,
    /// A poll returned `Decoded::End`.
    ended: bool,
    /// More records than this cannot come from the input (each takes at least 16 of
    /// its bytes): a decoder handing a record out twice is stopped here.
    max_records: usize,
}

impl Outcome {
    fn new(plain_len: usize) -> Self {
        Self {
            max_records: plain_len / 16,
            ..Self::default()
        }
    }
}

/// The two decoders' polling surface.
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

enum Step {
    NeedInput,
    End,
    Failed,
}

/// Records a handed-out record, checking its alignment.
fn take_record(out: &mut Outcome, rec: RecordRef<'_>) {
    assert!(
        out.records.len() < out.max_records,
        "more records than the input holds: a record was handed out twice"
    );
    let bytes = rec.as_ref();
    assert_eq!(
        bytes.as_ptr().addr() % 8,
        0,
        "record {} handed out at a misaligned address",
        out.records.len()
    );
    out.records.push(bytes.to_vec());
}

fn take_metadata(out: &mut Outcome, metadata: Metadata) {
    assert!(out.metadata.is_none(), "metadata handed out twice");
    assert!(
        out.records.is_empty(),
        "metadata handed out after {} records",
        out.records.len()
    );
    out.metadata = Some(metadata);
}

/// One poll's result, with records already taken.
enum Polled {
    Records,
    Metadata(Box<Metadata>),
    NeedInput(usize),
    End,
    Failed(Error),
}

fn poll_into(dec: &mut impl Poller, mode: PollMode, out: &mut Outcome) -> Polled {
    fn other<R>(result: Result<Decoded<R>, Error>) -> Polled {
        match result {
            Ok(Decoded::Metadata(m)) => Polled::Metadata(m),
            Ok(Decoded::NeedInput(n)) => Polled::NeedInput(n),
            Ok(Decoded::End) => Polled::End,
            Ok(Decoded::Record(_)) => unreachable!("records are taken by the caller"),
            Err(err) => Polled::Failed(err),
        }
    }
    match mode {
        PollMode::One => match dec.poll_one() {
            Ok(Decoded::Record(rec)) => {
                take_record(out, rec);
                Polled::Records
            }
            result => other(result),
        },
        PollMode::Batch(_) | PollMode::BatchTake(_) => {
            let (max, limit) = match mode {
                PollMode::BatchTake(take) => (usize::MAX, take),
                PollMode::Batch(max) => (max, usize::MAX),
                PollMode::One => unreachable!(),
            };
            match dec.poll_many(max) {
                Ok(Decoded::Record(mut batch)) => {
                    let (low, high) = batch.size_hint();
                    let high = high.expect("a batch bounds its size");
                    assert!(low >= 1, "a batch must promise its first record");
                    assert!(
                        high <= max,
                        "a batch of up to {high} records exceeds max {max}"
                    );
                    let mut yielded = 0;
                    for rec in batch.by_ref().take(limit) {
                        take_record(out, rec);
                        yielded += 1;
                    }
                    assert!(
                        (low.min(limit)..=high).contains(&yielded),
                        "a batch yielded {yielded} records outside its size hint {low}..={high}"
                    );
                    // Dropped here, early in `BatchTake` mode: the rest must come with the
                    // next poll.
                    Polled::Records
                }
                result => other(result),
            }
        }
    }
}

/// Polls until the decoder needs input, ends or fails; returns what stopped it and
/// how many items came out.
fn drain(dec: &mut impl Poller, mode: PollMode, out: &mut Outcome) -> (Step, usize) {
    let mut items = 0;
    loop {
        match poll_into(dec, mode, out) {
            Polled::Records => items += 1,
            Polled::Metadata(m) => {
                take_metadata(out, *m);
                items += 1;
            }
            Polled::NeedInput(n) => {
                assert!(n >= 1, "NeedInput(0) asks for nothing");
                return (Step::NeedInput, items);
            }
            Polled::End => {
                // `End` is final: it stays.
                assert!(
                    matches!(dec.poll_one(), Ok(Decoded::End)),
                    "a poll after End did not return End"
                );
                return (Step::End, items);
            }
            Polled::Failed(err) => {
                assert_eq!(
                    dec.poll_one().err().as_ref(),
                    Some(&err),
                    "errors are sticky"
                );
                out.error = Some(err);
                return (Step::Failed, items);
            }
        }
    }
}

/// Bookkeeping of the feed loops: stop on end or failure, detect stalls.
struct Loop {
    idle: usize,
}

impl Loop {
    /// Returns `true` when the run is over.
    fn after_drain(&mut self, step: Step, progressed: bool, out: &mut Outcome, what: &str) -> bool {
        match step {
            Step::End => {
                assert!(out.finish.is_some(), "{what}: End before finish()");
                out.ended = true;
                return true;
            }
            Step::Failed => return true,
            Step::NeedInput => assert!(
                out.finish.is_none(),
                "{what}: NeedInput after finish(); the decoder must end or fail"
            ),
        }
        if progressed {
            self.idle = 0;
        } else {
            self.idle += 1;
            assert!(
                self.idle < 3,
                "{what}: stalled, no input taken and nothing handed out"
            );
        }
        false
    }
}

/// Feeds `input` to a [`StreamDecoder`] in chunks, re-offering what it does not take.
fn run_stream(
    input: &[u8],
    plain_len: usize,
    config: StreamConfig,
    chunking: Chunking,
    mode: PollMode,
) -> Outcome {
    let what = format!("StreamDecoder {chunking:?} {mode:?}");
    let mut out = Outcome::new(plain_len);
    let mut dec = match StreamDecoder::new(config) {
        Ok(dec) => dec,
        Err(err) => {
            out.error = Some(err);
            return out;
        }
    };
    let mut sizes = chunking.sizes();
    let mut pos = 0;
    let mut pending: &[u8] = &[];
    let mut state = Loop { idle: 0 };
    loop {
        let mut progressed = false;
        if pending.is_empty() {
            if pos < input.len() {
                let n = sizes().clamp(1, input.len() - pos);
                pending = &input[pos..pos + n];
                pos += n;
            } else if out.finish.is_none() {
                out.finish = Some(dec.finish());
                progressed = true;
            }
        }
        // Only bytes are offered, as a driver would after a read: decompressed
        // output the zstd layer still holds must come out through polling alone.
        if !pending.is_empty() {
            let taken = dec.handle_input(pending);
            assert!(taken <= pending.len(), "{what}: took more than offered");
            pending = &pending[taken..];
            progressed |= taken > 0;
        }
        let (step, items) = drain(&mut dec, mode, &mut out);
        if state.after_drain(step, progressed || items > 0, &mut out, &what) {
            return out;
        }
    }
}

/// Writes `input` straight into a [`DbnDecoder`]'s buffer with `space`/`fill`.
fn run_space_fill(
    input: &[u8],
    config: DecoderConfig,
    chunking: Chunking,
    mode: PollMode,
) -> Outcome {
    let what = format!("DbnDecoder space/fill {chunking:?} {mode:?}");
    let mut out = Outcome::new(input.len());
    let mut dec = match DbnDecoder::new(config) {
        Ok(dec) => dec,
        Err(err) => {
            out.error = Some(err);
            return out;
        }
    };
    let mut sizes = chunking.sizes();
    let mut pos = 0;
    let mut state = Loop { idle: 0 };
    loop {
        let mut progressed = false;
        if pos < input.len() {
            let space = dec.space();
            if !space.is_empty() {
                let n = sizes().clamp(1, space.len().min(input.len() - pos));
                space[..n].copy_from_slice(&input[pos..pos + n]);
                dec.fill(n);
                pos += n;
                progressed = true;
            }
        } else if out.finish.is_none() {
            out.finish = Some(dec.finish());
            progressed = true;
        }
        let (step, items) = drain(&mut dec, mode, &mut out);
        if state.after_drain(step, progressed || items > 0, &mut out, &what) {
            return out;
        }
    }
}

// ---------------------------------------------------------------------------------
// Expectations
// ---------------------------------------------------------------------------------

/// What a file under a policy must give.
#[derive(Debug)]
enum Expected {
    /// Exactly this metadata and these records, then a clean end.
    Decoded {
        metadata: Box<Option<Metadata>>,
        records: Vec<Vec<u8>>,
    },
    /// `Error::PolicyConflict` for this version, and no record.
    PolicyConflict { version: u8 },
    /// `Error::LegacyDbz`, and no record.
    LegacyDbz,
}

/// Classifies a file/policy combination from the oracle's verdict. Panics when the
/// oracle refuses a combination for a reason this suite does not account for.
fn expectation(fixture: &Fixture, policy: UpgradePolicy) -> Expected {
    let fragment_version = match fixture.kind {
        Kind::Fragment { version } => Some(version),
        Kind::Stream => None,
        Kind::LegacyDbz => {
            assert!(
                oracle(&fixture.plain, policy, None).is_err(),
                "{}: the oracle accepts a DBZ file",
                fixture.name
            );
            return Expected::LegacyDbz;
        }
    };
    match oracle(&fixture.plain, policy, fragment_version) {
        Ok((metadata, records)) => {
            assert_eq!(
                metadata.is_some(),
                fixture.kind == Kind::Stream,
                "{}: the oracle's metadata presence",
                fixture.name
            );
            Expected::Decoded {
                metadata: Box::new(metadata),
                records,
            }
        }
        Err(reason) => {
            let version = fixture.version().expect("DBN fixtures have a version");
            assert!(
                policy == UpgradePolicy::UpgradeToV2 && version == 3,
                "{} under {policy:?}: the oracle refuses it for a reason this suite does not \
                 classify: {reason}",
                fixture.name
            );
            Expected::PolicyConflict { version }
        }
    }
}

fn first_difference(ours: &[Vec<u8>], theirs: &[Vec<u8>]) -> String {
    match ours.iter().zip(theirs).position(|(a, b)| a != b) {
        Some(i) => format!(
            "record {i} differs (ours {} bytes, rtype {:#04x}; oracle {} bytes, rtype {:#04x})",
            ours[i].len(),
            ours[i].get(1).copied().unwrap_or(0),
            theirs[i].len(),
            theirs[i].get(1).copied().unwrap_or(0)
        ),
        None => format!(
            "ours has {} records, the oracle {}",
            ours.len(),
            theirs.len()
        ),
    }
}

fn check(outcome: &Outcome, expected: &Expected, what: &str) {
    match expected {
        Expected::Decoded { metadata, records } => {
            assert_eq!(outcome.error, None, "{what}: unexpected error");
            assert_eq!(
                outcome.finish,
                Some(Ok(())),
                "{what}: finish() must succeed"
            );
            assert!(outcome.ended, "{what}: no Decoded::End");
            assert_eq!(
                outcome.metadata, **metadata,
                "{what}: metadata differs from dbn's"
            );
            assert!(
                outcome.records == *records,
                "{what}: {}",
                first_difference(&outcome.records, records)
            );
        }
        Expected::PolicyConflict { version } => {
            assert_eq!(
                outcome.error,
                Some(Error::PolicyConflict {
                    policy: "UpgradeToV2",
                    version: *version,
                }),
                "{what}: expected a policy conflict"
            );
            assert_eq!(
                outcome.error.as_ref().map(Error::kind),
                Some(ErrorKind::Format)
            );
            assert!(
                outcome.records.is_empty(),
                "{what}: records before the rejection"
            );
            assert!(
                outcome.metadata.is_none(),
                "{what}: metadata before the rejection"
            );
        }
        Expected::LegacyDbz => {
            assert_eq!(
                outcome.error,
                Some(Error::LegacyDbz { offset: 0 }),
                "{what}: expected the legacy DBZ error"
            );
            assert_eq!(
                outcome.error.as_ref().map(Error::kind),
                Some(ErrorKind::Format)
            );
            assert!(
                outcome.records.is_empty(),
                "{what}: records from a DBZ file"
            );
            assert!(
                outcome.metadata.is_none(),
                "{what}: metadata from a DBZ file"
            );
        }
    }
}

fn stream_config(decoder: DecoderConfig) -> StreamConfig {
    StreamConfig {
        decoder,
        ..StreamConfig::default()
    }
}

/// Decodes a fixture whole with `poll`, as the simplest user would.
fn decode_whole(fixture: &Fixture, policy: UpgradePolicy) -> Outcome {
    run_stream(
        &fixture.raw,
        fixture.plain.len(),
        stream_config(fixture.decoder_config(policy)),
        Chunking::Whole,
        PollMode::One,
    )
}

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------

/// Every fixture, every policy, every way of feeding and polling: same metadata and
/// records as `dbn`, or the documented rejection.
#[test]
fn every_fixture_matches_the_dbn_oracle_under_every_policy_and_chunking() {
    let Some(dir) = fixture_dir() else { return };
    let fixtures = load_fixtures(&dir);
    let mut verdicts: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut runs = 0usize;
    for fixture in &fixtures {
        for policy in POLICIES {
            let expected = expectation(fixture, policy);
            *verdicts
                .entry(match expected {
                    Expected::Decoded { .. } => "decoded like dbn",
                    Expected::PolicyConflict { .. } => "policy conflict",
                    Expected::LegacyDbz => "legacy DBZ",
                })
                .or_default() += 1;

            let mut chunkings = vec![Chunking::Whole, Chunking::Fixed(1), Chunking::Fixed(7)];
            chunkings.extend(SEEDS.map(Chunking::Random));
            for chunking in chunkings {
                // Byte-by-byte feeding is slow in debug builds: two poll modes suffice.
                let modes: &[PollMode] = if let Chunking::Fixed(1) = chunking {
                    &[PollMode::One, PollMode::Batch(usize::MAX)]
                } else {
                    &POLL_MODES
                };
                // A minimum-size buffer makes the decoder take less than offered
                // (backpressure) on every file larger than it.
                let buffers: &[usize] = match chunking {
                    Chunking::Whole | Chunking::Random(_) => &[
                        DecoderConfig::DEFAULT_BUFFER_SIZE,
                        DecoderConfig::MIN_BUFFER_SIZE,
                    ],
                    Chunking::Fixed(_) => &[DecoderConfig::DEFAULT_BUFFER_SIZE],
                };
                for &mode in modes {
                    for &buffer in buffers {
                        let config = fixture.decoder_config(policy).buffer_size(buffer);
                        let outcome = run_stream(
                            &fixture.raw,
                            fixture.plain.len(),
                            stream_config(config),
                            chunking,
                            mode,
                        );
                        let what = format!(
                            "{} {policy:?} StreamDecoder {chunking:?} {mode:?} buffer {buffer}",
                            fixture.name
                        );
                        check(&outcome, &expected, &what);
                        runs += 1;
                    }
                }
            }

            // The copy-free path, on the DBN bytes (decompressed for zstd files).
            for chunking in [
                Chunking::Whole,
                Chunking::Fixed(7),
                Chunking::Random(SEEDS[0]),
            ] {
                for mode in [
                    PollMode::One,
                    PollMode::Batch(usize::MAX),
                    PollMode::BatchTake(2),
                ] {
                    for buffer in [
                        DecoderConfig::DEFAULT_BUFFER_SIZE,
                        DecoderConfig::MIN_BUFFER_SIZE,
                    ] {
                        let config = fixture.decoder_config(policy).buffer_size(buffer);
                        let outcome = run_space_fill(&fixture.plain, config, chunking, mode);
                        let what = format!(
                            "{} {policy:?} space/fill {chunking:?} {mode:?} buffer {buffer}",
                            fixture.name
                        );
                        check(&outcome, &expected, &what);
                        runs += 1;
                    }
                }
            }
        }
    }
    let classified: usize = verdicts.values().sum();
    assert_eq!(
        classified,
        fixtures.len() * POLICIES.len(),
        "every file/policy combination is classified"
    );
    let dbz = fixtures
        .iter()
        .filter(|f| f.kind == Kind::LegacyDbz)
        .count();
    let v3 = fixtures
        .iter()
        .filter(|f| f.kind != Kind::LegacyDbz && f.version() == Some(3))
        .count();
    assert_eq!(verdicts.get("legacy DBZ").copied().unwrap_or(0), dbz * 3);
    assert_eq!(verdicts.get("policy conflict").copied().unwrap_or(0), v3);
    assert!(
        fixtures.iter().any(|f| f.is_zstd()) && fixtures.iter().any(|f| !f.is_zstd()),
        "the fixtures cover plain and zstd files"
    );
    let _ = writeln!(
        std::io::stderr(),
        "conformance: {} files x {} policies, {runs} decoder runs: {verdicts:?}",
        fixtures.len(),
        POLICIES.len()
    );
}

/// `test_data.mbo.v3.dbn`: the metadata and both records, field by field.
#[test]
fn mbo_v3_ground_truth() {
    use dbn::{MboMsg, SType, Schema};
    let Some(dir) = fixture_dir() else { return };
    let fixture = load(&dir, "test_data.mbo.v3.dbn");
    assert_eq!(fixture.raw.len(), 472, "file size");
    for policy in [UpgradePolicy::AsIs, UpgradePolicy::UpgradeToV3] {
        // Decode by hand to watch the stream offsets too.
        let mut dec = StreamDecoder::new(stream_config(fixture.decoder_config(policy)))
            .expect("default config is valid");
        assert_eq!(dec.handle_input(&fixture.raw), fixture.raw.len());
        dec.finish().expect("the file is complete");
        let metadata = match dec.poll().expect("metadata") {
            Decoded::Metadata(m) => m,
            other => panic!("expected metadata first, got {other:?}"),
        };
        assert_eq!(dec.dbn().input_version(), Some(3));
        assert_eq!(dec.dbn().ts_out(), Some(false));
        assert_eq!(
            dec.dbn().bytes_delivered(),
            360,
            "records start at offset 360"
        );
        assert_eq!(metadata.version, 3);
        assert_eq!(metadata.dataset, "GLBX.MDP3");
        assert_eq!(metadata.schema, Some(Schema::Mbo));
        assert_eq!(metadata.start, 1_609_160_400_000_000_000);
        assert_eq!(
            metadata.end.map(|e| e.get()),
            Some(1_609_200_000_000_000_000)
        );
        assert_eq!(metadata.limit.map(|l| l.get()), Some(2));
        assert_eq!(metadata.stype_out, SType::InstrumentId);
        assert!(!metadata.ts_out);
        assert_eq!(metadata.symbols, ["ESH1"]);
        assert_eq!(metadata.mappings.len(), 1);
        let mapping = &metadata.mappings[0];
        assert_eq!(mapping.raw_symbol, "ESH1");
        assert_eq!(mapping.intervals.len(), 1);
        let interval = &mapping.intervals[0];
        assert_eq!(interval.symbol, "5482");
        assert_eq!(interval.start_date.to_string(), "2020-12-28");
        assert_eq!(interval.end_date.to_string(), "2020-12-29");

        let mut records = Vec::new();
        loop {
            match dec.poll().expect("records decode") {
                Decoded::Record(rec) => {
                    let mbo = rec.get::<MboMsg>().expect("an MBO record");
                    assert_eq!(rec.as_ref().len(), 56);
                    records.push(mbo.clone());
                }
                Decoded::End => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(dec.dbn().bytes_delivered(), 472, "every byte delivered");
        assert_eq!(records.len(), 2);
        let r0 = &records[0];
        assert_eq!(r0.hd.record_size(), 56);
        assert_eq!(r0.hd.rtype, 0xA0);
        assert_eq!(r0.hd.publisher_id, 1);
        assert_eq!(r0.hd.instrument_id, 5482);
        assert_eq!(r0.hd.ts_event, 1_609_160_400_000_429_831);
        assert_eq!(r0.order_id, 647_784_973_705);
        assert_eq!(r0.price, 3_722_750_000_000);
        assert_eq!(r0.size, 1);
        assert_eq!(r0.action as u8, b'C');
        assert_eq!(r0.side as u8, b'A');
        assert_eq!(r0.ts_recv, 1_609_160_400_000_704_060);
        assert_eq!(r0.sequence, 1_170_352);
        let r1 = &records[1];
        assert_eq!(r1.order_id, 647_784_973_631);
        assert_eq!(r1.price, 3_723_000_000_000);
        assert_eq!(r1.sequence, 1_170_353);
    }
    // No downgrade exists: the file is refused under UpgradeToV2, before any output.
    let outcome = decode_whole(&fixture, UpgradePolicy::UpgradeToV2);
    assert_eq!(
        outcome.error,
        Some(Error::PolicyConflict {
            policy: "UpgradeToV2",
            version: 3
        })
    );
    assert!(outcome.metadata.is_none() && outcome.records.is_empty());
}

/// `test_data.trades.v3.dbn.zst`, record 0.
#[test]
fn trades_v3_zst_ground_truth() {
    let Some(dir) = fixture_dir() else { return };
    let fixture = load(&dir, "test_data.trades.v3.dbn.zst");
    assert!(fixture.is_zstd());
    for policy in [UpgradePolicy::AsIs, UpgradePolicy::UpgradeToV3] {
        let outcome = decode_whole(&fixture, policy);
        assert_eq!(outcome.error, None);
        assert!(outcome.ended);
        let metadata = outcome.metadata.as_ref().expect("metadata");
        assert_eq!(metadata.schema, Some(dbn::Schema::Trades));
        let mut buf: dbn::RecordBuf = dbn::RecordBuf::from(dbn::TradeMsg::default());
        let first = &outcome.records[0];
        buf.raw_buf_mut()[..first.len()].copy_from_slice(first);
        let trade = buf.get::<dbn::TradeMsg>().expect("a trade record");
        assert_eq!(trade.price, 3_720_250_000_000);
        assert_eq!(trade.size, 5);
        assert_eq!(trade.action as u8, b'T');
        assert_eq!(trade.side as u8, b'A');
        assert_eq!(trade.sequence, 1_170_380);
    }
}

/// Record counts per schema file: 2, except bbo-1s, bbo-1m and status (4) and
/// ohlcv-1d (0); the multi-frame fragment holds 8 definitions.
#[test]
fn record_counts_per_schema() {
    let Some(dir) = fixture_dir() else { return };
    let mut checked = 0;
    for fixture in load_fixtures(&dir) {
        if fixture.kind == Kind::LegacyDbz {
            continue;
        }
        let expected = if fixture.name == "multi-frame.definition.v1.dbn.frag.zst" {
            8
        } else if fixture.kind != Kind::Stream {
            continue;
        } else {
            match fixture
                .schema()
                .expect("stream fixtures are test_data.<schema>")
            {
                "bbo-1s" | "bbo-1m" | "status" => 4,
                "ohlcv-1d" => 0,
                _ => 2,
            }
        };
        for policy in [UpgradePolicy::AsIs, UpgradePolicy::UpgradeToV3] {
            let outcome = decode_whole(&fixture, policy);
            assert_eq!(outcome.error, None, "{} {policy:?}", fixture.name);
            assert!(outcome.ended, "{} {policy:?}: clean end", fixture.name);
            assert_eq!(
                outcome.records.len(),
                expected,
                "{} {policy:?}: record count",
                fixture.name
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no schema file was checked");
}

/// The multi-frame fragment really is several zstd frames, and they decode into 8 v1
/// definitions (upgraded to v3 by default).
#[test]
fn multi_frame_fragment_holds_eight_definitions() {
    let Some(dir) = fixture_dir() else { return };
    let fixture = load(&dir, "multi-frame.definition.v1.dbn.frag.zst");
    // Decompressing only the first frame must leave records out.
    let mut first_frame = zstd::stream::read::Decoder::new(&fixture.raw[..])
        .expect("zstd decoder")
        .single_frame();
    let mut one = Vec::new();
    std::io::Read::read_to_end(&mut first_frame, &mut one).expect("first frame decodes");
    assert!(
        one.len() < fixture.plain.len(),
        "the file holds more than one zstd frame"
    );
    for (policy, size) in [
        (UpgradePolicy::AsIs, 360),
        (UpgradePolicy::UpgradeToV2, 400),
        (UpgradePolicy::UpgradeToV3, 520),
    ] {
        let outcome = decode_whole(&fixture, policy);
        assert_eq!(outcome.error, None);
        assert!(outcome.ended);
        assert!(outcome.metadata.is_none(), "fragments have no metadata");
        assert_eq!(outcome.records.len(), 8);
        for rec in &outcome.records {
            assert_eq!(rec.len(), size, "{policy:?}");
            assert_eq!(rec[1], dbn::rtype::INSTRUMENT_DEF);
        }
    }
}

/// Definition records are 360 (v1), 400 (v2) and 520 (v3) bytes as they are, 520
/// after an upgrade to v3 and 400 after an upgrade of v1 to v2.
#[test]
fn definition_record_sizes() {
    let Some(dir) = fixture_dir() else { return };
    let mut versions_seen = [false; 3];
    for fixture in load_fixtures(&dir) {
        if fixture.kind == Kind::LegacyDbz || !fixture.name.contains("definition") {
            continue;
        }
        let version = fixture.version().expect("a DBN version");
        versions_seen[usize::from(version) - 1] = true;
        let native = [360, 400, 520][usize::from(version) - 1];
        let mut cases = vec![
            (UpgradePolicy::AsIs, native),
            (UpgradePolicy::UpgradeToV3, 520),
        ];
        if version < 3 {
            cases.push((UpgradePolicy::UpgradeToV2, 400));
        }
        for (policy, size) in cases {
            let outcome = decode_whole(&fixture, policy);
            assert_eq!(outcome.error, None, "{} {policy:?}", fixture.name);
            assert!(!outcome.records.is_empty(), "{}: no record", fixture.name);
            for rec in &outcome.records {
                assert_eq!(rec[1], dbn::rtype::INSTRUMENT_DEF, "{}", fixture.name);
                assert_eq!(rec.len(), size, "{} {policy:?}", fixture.name);
                assert_eq!(usize::from(rec[0]) * 4, size, "header length field");
            }
            if let Some(metadata) = &outcome.metadata {
                let out_version = match policy {
                    UpgradePolicy::AsIs => version,
                    UpgradePolicy::UpgradeToV2 => 2,
                    UpgradePolicy::UpgradeToV3 => 3,
                };
                assert_eq!(metadata.version, out_version, "{} {policy:?}", fixture.name);
            }
        }
    }
    assert_eq!(
        versions_seen, [true; 3],
        "definitions of every version were checked"
    );
}

/// Every `.dbz` file is refused as legacy DBZ, with no record, however it is fed.
#[test]
fn legacy_dbz_is_refused() {
    let Some(dir) = fixture_dir() else { return };
    let fixtures: Vec<_> = load_fixtures(&dir)
        .into_iter()
        .filter(|f| f.kind == Kind::LegacyDbz)
        .collect();
    assert!(!fixtures.is_empty(), "the fixtures include DBZ files");
    for fixture in fixtures {
        for chunking in [Chunking::Whole, Chunking::Fixed(1)] {
            let outcome = run_stream(
                &fixture.raw,
                fixture.plain.len(),
                StreamConfig::default(),
                chunking,
                PollMode::One,
            );
            let err = outcome.error.expect("a DBZ file is refused");
            assert_eq!(err, Error::LegacyDbz { offset: 0 }, "{}", fixture.name);
            assert_eq!(err.kind(), ErrorKind::Format);
            assert!(outcome.records.is_empty() && outcome.metadata.is_none());
        }
    }
}
