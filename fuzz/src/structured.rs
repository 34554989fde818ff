//! Target `structured`: valid DBN streams built with the `dbn` crate's types
//! (versions 1 to 3, several record types, `ts_out`, whole or record-only, optionally
//! zstd in one or more frames), then mutated (record lengths, rtypes, bytes,
//! truncation, insertion, the metadata length) and cut at chosen split points.
//!
//! The input is decoded with [`arbitrary`] into a [`Spec`].
//!
//! Checks: those of [`dbn_decoder::check_splits`] (no panic, any split gives the
//! same outcome, consumed counts bounded, aligned records, no stall, sticky errors);
//! an unmutated stream decodes cleanly to exactly the records and metadata of `dbn`'s
//! `DbnFsm` (or is refused by both, for a v3 stream under `UpgradeToV2`); a mutated
//! stream we accept is accepted alike by the oracle, and whatever we delivered before
//! an error matches the oracle's records as far as both got; an error is typed and
//! names an offset within the stream (or none).

use arbitrary::{Arbitrary, Unstructured};
use dbn::encode::dbn::Encoder;
use dbn::{
    BboMsg, Cmbp1Msg, ImbalanceMsg, MboMsg, Mbp1Msg, Mbp10Msg, MetadataBuilder, OhlcvMsg, SType,
    Schema, StatusMsg, TradeMsg,
};
use dbn_pipe_protocol::{DecoderConfig, FragmentFormat};

use crate::dbn_decoder::{Choice, Outcome, PollMode, check_splits, policy_from_bits};
use crate::oracle;

/// A record to build.
#[derive(Debug, Clone, Arbitrary)]
pub struct RecordSpec {
    /// Which type (modulo the number of types).
    pub kind: u8,
    /// Its instrument id.
    pub instrument_id: u32,
    /// Its `ts_event`.
    pub ts_event: u64,
    /// A price-like field.
    pub value: i64,
}

/// A change to the built stream.
#[derive(Debug, Clone, Arbitrary)]
pub enum Mutation {
    /// Sets the length byte of record `record` (modulo the count).
    Length {
        /// Record index.
        record: u16,
        /// New length in 4-byte words.
        words: u8,
    },
    /// Sets the rtype byte of record `record`.
    Rtype {
        /// Record index.
        record: u16,
        /// New rtype.
        rtype: u8,
    },
    /// Sets one byte of the plain stream.
    Byte {
        /// Position (modulo the length).
        pos: u32,
        /// New value.
        value: u8,
    },
    /// Cuts the plain stream at `at` (modulo the length plus one).
    Truncate {
        /// Where.
        at: u32,
    },
    /// Inserts bytes into the plain stream.
    Insert {
        /// Where (modulo the length plus one).
        pos: u32,
        /// What (at most 64 bytes are used).
        bytes: Vec<u8>,
    },
    /// Sets the metadata length field (whole streams).
    MetadataLength(u32),
    /// Sets the version byte of the prelude (whole streams).
    Version(u8),
    /// Sets one byte of the compressed stream (zstd only).
    CompressedByte {
        /// Position (modulo the length).
        pos: u32,
        /// New value.
        value: u8,
    },
}

/// What to build and how to decode it.
#[derive(Debug, Clone, Arbitrary)]
pub struct Spec {
    /// DBN version (modulo 3, plus 1).
    pub version: u8,
    /// Records carry `ts_out`.
    pub ts_out: bool,
    /// A record-only fragment instead of a whole stream.
    pub fragment: bool,
    /// zstd with this many frames (modulo 4; 0 = plain).
    pub zstd_frames: u8,
    /// Upgrade policy bits.
    pub policy: u8,
    /// Poll mode bits.
    pub poll: u8,
    /// The smallest decoder buffer.
    pub small_buffer: bool,
    /// A symbol for the metadata.
    pub symbol: String,
    /// The records (at most 64 are used).
    pub records: Vec<RecordSpec>,
    /// Mutations (at most 4 are used).
    pub mutations: Vec<Mutation>,
    /// Split points of the final bytes.
    pub splits: Vec<u16>,
}

/// The number of record kinds [`record_bytes`] builds.
const KINDS: u8 = 14;

/// Sets the common header fields of a record built from its default.
macro_rules! with_header {
    ($rec:expr, $spec:expr) => {{
        let mut rec = $rec;
        rec.hd.instrument_id = $spec.instrument_id;
        rec.hd.ts_event = $spec.ts_event;
        rec.as_ref().to_vec()
    }};
}

/// The bytes of one record of `version` as the `dbn` crate lays it out.
pub fn record_bytes(spec: &RecordSpec, version: u8) -> Vec<u8> {
    match spec.kind % KINDS {
        0 => with_header!(
            MboMsg {
                price: spec.value,
                order_id: spec.value as u64,
                ..MboMsg::default()
            },
            spec
        ),
        1 => with_header!(
            Mbp1Msg {
                price: spec.value,
                ..Mbp1Msg::default()
            },
            spec
        ),
        2 => with_header!(
            TradeMsg {
                price: spec.value,
                ..TradeMsg::default()
            },
            spec
        ),
        3 => with_header!(OhlcvMsg::default_for_schema(Schema::Ohlcv1S), spec),
        4 => with_header!(StatusMsg::default(), spec),
        5 => with_header!(ImbalanceMsg::default(), spec),
        6 => with_header!(BboMsg::default_for_schema(Schema::Bbo1S), spec),
        7 => with_header!(Mbp10Msg::default(), spec),
        8 => with_header!(Cmbp1Msg::default_for_schema(Schema::Cmbp1), spec),
        9 => match version {
            1 => with_header!(dbn::v1::SymbolMappingMsg::default(), spec),
            _ => with_header!(dbn::v3::SymbolMappingMsg::default(), spec),
        },
        10 => match version {
            1 => with_header!(dbn::v1::InstrumentDefMsg::default(), spec),
            2 => with_header!(dbn::v2::InstrumentDefMsg::default(), spec),
            _ => with_header!(dbn::v3::InstrumentDefMsg::default(), spec),
        },
        11 => match version {
            1 => with_header!(dbn::v1::ErrorMsg::default(), spec),
            _ => with_header!(dbn::v3::ErrorMsg::default(), spec),
        },
        12 => match version {
            1 => with_header!(dbn::v1::SystemMsg::default(), spec),
            _ => with_header!(dbn::v3::SystemMsg::default(), spec),
        },
        _ => match version {
            1 | 2 => with_header!(dbn::v1::StatMsg::default(), spec),
            _ => with_header!(dbn::v3::StatMsg::default(), spec),
        },
    }
}

/// The plain stream `spec` describes (before mutations) and each record's offset.
pub fn build(spec: &Spec) -> Option<(Vec<u8>, Vec<usize>)> {
    let version = spec.version % 3 + 1;
    let mut out = Vec::new();
    if !spec.fragment {
        let symbol: String = spec
            .symbol
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(16)
            .collect();
        let metadata = MetadataBuilder::new()
            .dataset("GLBX.MDP3".to_owned())
            .schema(None)
            .start(1_609_160_400_000_000_000)
            .stype_in(Some(SType::RawSymbol))
            .stype_out(SType::InstrumentId)
            .version(version)
            .ts_out(spec.ts_out)
            .symbols(if symbol.is_empty() {
                Vec::new()
            } else {
                vec![symbol]
            })
            .build();
        // The encoder writes the prelude and metadata at once.
        Encoder::new(&mut out, &metadata).ok()?;
    }
    let mut offsets = Vec::new();
    for rec in spec.records.iter().take(64) {
        offsets.push(out.len());
        let mut bytes = record_bytes(rec, version);
        if spec.ts_out {
            bytes[0] = bytes[0].checked_add(2)?;
            bytes.extend_from_slice(&rec.ts_event.wrapping_add(1).to_le_bytes());
        }
        out.extend_from_slice(&bytes);
    }
    Some((out, offsets))
}

/// Applies the plain-stream mutations; returns whether any applied.
fn mutate_plain(spec: &Spec, plain: &mut Vec<u8>, offsets: &[usize]) -> bool {
    let mut changed = false;
    for mutation in spec.mutations.iter().take(4) {
        let len = plain.len();
        match mutation {
            Mutation::Length { record, words } if !offsets.is_empty() => {
                let at = offsets[usize::from(*record) % offsets.len()];
                if let Some(b) = plain.get_mut(at) {
                    *b = *words;
                    changed = true;
                }
            }
            Mutation::Rtype { record, rtype } if !offsets.is_empty() => {
                let at = offsets[usize::from(*record) % offsets.len()] + 1;
                if let Some(b) = plain.get_mut(at) {
                    *b = *rtype;
                    changed = true;
                }
            }
            Mutation::Byte { pos, value } if len > 0 => {
                plain[*pos as usize % len] = *value;
                changed = true;
            }
            Mutation::Truncate { at } => {
                plain.truncate(*at as usize % (len + 1));
                changed = true;
            }
            Mutation::Insert { pos, bytes } => {
                let at = *pos as usize % (len + 1);
                let bytes = &bytes[..bytes.len().min(64)];
                plain.splice(at..at, bytes.iter().copied());
                changed |= !bytes.is_empty();
            }
            Mutation::MetadataLength(n) if !spec.fragment && len >= 8 => {
                plain[4..8].copy_from_slice(&n.to_le_bytes());
                changed = true;
            }
            Mutation::Version(v) if !spec.fragment && len >= 4 => {
                plain[3] = *v;
                changed = true;
            }
            _ => {}
        }
    }
    changed
}

/// The target: see the module docs.
pub fn run(data: &[u8]) {
    let Ok(spec) = Spec::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let _ = check(&spec);
}

/// Builds, mutates and checks one [`Spec`]; returns our decoder's outcome on the
/// whole input (`None` when the spec cannot be built or the configuration is refused).
///
/// # Panics
/// On a broken invariant (see the module docs).
pub fn check(spec: &Spec) -> Option<Outcome> {
    let (mut plain, offsets) = build(spec)?;
    let version = spec.version % 3 + 1;
    let policy = policy_from_bits(spec.policy);
    let fragment = spec.fragment.then_some(FragmentFormat {
        version,
        ts_out: spec.ts_out,
    });
    let mut mutated = mutate_plain(spec, &mut plain, &offsets);
    let frames = usize::from(spec.zstd_frames % 4);
    let bytes = if frames == 0 {
        plain.clone()
    } else {
        let frame_len = plain.len().div_ceil(frames).max(1);
        let mut compressed: Vec<u8> = plain
            .chunks(frame_len)
            .flat_map(|c| zstd::bulk::compress(c, 1).unwrap_or_default())
            .collect();
        for mutation in spec.mutations.iter().take(4) {
            if let Mutation::CompressedByte { pos, value } = mutation
                && !compressed.is_empty()
            {
                let len = compressed.len();
                compressed[*pos as usize % len] = *value;
                mutated = true;
            }
        }
        compressed
    };
    let mut config = DecoderConfig::default().upgrade_policy(policy);
    if spec.small_buffer {
        config = config.buffer_size(DecoderConfig::MIN_BUFFER_SIZE);
    }
    if let Some(fragment) = fragment {
        config = config.fragment(fragment);
    }
    let choice = Choice {
        stream: frames > 0,
        config: config.clone(),
        fragment,
        policy,
        mode: PollMode::from_bits(spec.poll),
    };
    let points: Vec<usize> = spec
        .splits
        .iter()
        .take(16)
        .map(|&p| usize::from(p))
        .collect();
    let chunks = crate::input::split_at_points(&bytes, &points);
    let Some(ours) = check_splits(&choice, &bytes, &chunks) else {
        // The configuration was refused: only a v3 fragment under UpgradeToV2.
        assert!(
            fragment.is_some() && version == 3,
            "a valid configuration was refused"
        );
        return None;
    };
    if let Some((_, Some(offset))) = ours.error {
        // Errors name an offset inside the (decompressed) stream or at its end.
        let limit = if frames == 0 { bytes.len() } else { usize::MAX };
        assert!(
            offset as usize <= limit.max(plain.len()),
            "error offset {offset} past the stream"
        );
    }
    // Only a stream whose decompression fully succeeded is compared with the oracle.
    if frames > 0 && mutated {
        let decoded = zstd::stream::decode_all(&bytes[..]);
        if decoded.as_deref().ok() != Some(&plain[..]) {
            return Some(ours);
        }
    }
    let reference = oracle::decode(&plain, policy, fragment);
    if reference.panicked {
        // A `dbn` crate assertion: only malformed (mutated) streams may trip it.
        assert!(
            mutated,
            "the dbn oracle panicked on a stream built with dbn's types"
        );
        return Some(ours);
    }
    if !mutated {
        match &reference.error {
            None => {
                assert!(
                    ours.is_clean(),
                    "a valid stream was refused: {:?}",
                    ours.error_text
                );
                assert!(
                    reference.records == ours.records,
                    "records differ from the dbn oracle's ({} vs {})",
                    ours.records.len(),
                    reference.records.len()
                );
                assert_eq!(reference.metadata, ours.metadata, "metadata differs");
            }
            Some(why) => {
                assert!(
                    !ours.is_clean(),
                    "the oracle refuses a built stream we accept: {why}"
                );
            }
        }
        return Some(ours);
    }
    if ours.is_clean() {
        if let Some(why) = &reference.error {
            panic!("we accepted a mutated stream the dbn oracle refuses: {why}");
        }
        assert!(
            reference.records == ours.records,
            "records differ from the dbn oracle's"
        );
    } else {
        let n = ours.records.len().min(reference.records.len());
        assert!(
            ours.records[..n] == reference.records[..n],
            "records before the error differ from the dbn oracle's"
        );
    }
    if let (Some(a), Some(b)) = (&ours.metadata, &reference.metadata) {
        assert_eq!(a, b, "metadata differs from the dbn oracle's");
    }
    Some(ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(version: u8, ts_out: bool, fragment: bool, zstd_frames: u8) -> Spec {
        Spec {
            version: version - 1,
            ts_out,
            fragment,
            zstd_frames,
            policy: 2,
            poll: 3,
            small_buffer: true,
            symbol: "ESH1".into(),
            records: (0..KINDS * 2)
                .map(|kind| RecordSpec {
                    kind,
                    instrument_id: u32::from(kind),
                    ts_event: u64::from(kind) * 1000,
                    value: i64::from(kind),
                })
                .collect(),
            mutations: Vec::new(),
            splits: vec![5, 77, 300, 1001],
        }
    }

    #[test]
    fn every_version_and_kind_matches_the_oracle() {
        for version in 1..=3 {
            for (ts_out, fragment, frames) in [(false, false, 0), (true, false, 2), (true, true, 0)]
            {
                let out = check(&spec(version, ts_out, fragment, frames)).expect("builds");
                assert!(out.is_clean(), "v{version}: {:?}", out.error_text);
                assert_eq!(out.records.len(), usize::from(KINDS) * 2);
            }
        }
    }

    #[test]
    fn a_mutated_length_is_a_typed_error_after_the_records_before_it() {
        let mut spec = spec(3, false, false, 0);
        spec.mutations = vec![Mutation::Length {
            record: 3,
            words: 1,
        }];
        let out = check(&spec).expect("builds");
        assert_eq!(out.records.len(), 3);
        assert_eq!(
            out.error.map(|e| e.0),
            Some(dbn_pipe_protocol::ErrorKind::Framing)
        );
    }
}
