//! Target `dbn_decoder`: arbitrary bytes into [`DbnDecoder`] or [`StreamDecoder`],
//! cut at fuzzer-chosen split points.
//!
//! Input ([`Framed`]): `flags` bits 0-1 poll mode (`poll`, `poll_batch(MAX)`,
//! `poll_batch(3)`, batches dropped after 2 records), bits 2-3 upgrade policy (`AsIs`,
//! `UpgradeToV2`, `UpgradeToV3`, `UpgradeToV3`), bit 4 record-only fragment, bits 5-6
//! fragment version (0 reads as 1), bit 7 [`StreamDecoder`] with zstd detection
//! (window capped at 2^20) instead of the plain decoder. `aux` bit 0 the smallest
//! buffer (4 KiB, so backpressure happens), bit 1 fragment `ts_out`, bits 2-3 the
//! metadata cap (16 MiB, 100, 1000, 64 KiB).
//!
//! Checks: no panic; the chosen split and poll mode give the same metadata, records
//! and error (kind and offset) as the whole input polled in batches (for a zstd
//! decompression error: both fail, records prefix-related, see [`check_splits`]); consumed counts
//! never exceed what was offered; every record is 8-byte aligned and as long as its
//! header says; the decoder never stalls (input refused while nothing comes out); the
//! error is sticky; a stream we accept whole is accepted by `dbn`'s `DbnFsm` with the
//! same records and metadata.

use dbn::{Metadata, RecordRef};
use dbn_pipe_protocol::{
    Compression, DbnDecoder, Decoded, DecoderConfig, Error, ErrorKind, FragmentFormat, RecordBatch,
    StreamConfig, StreamDecoder, UpgradePolicy,
};

use crate::input::Framed;
use crate::oracle;

/// How records are pulled from the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollMode {
    /// `poll`, one record at a time.
    One,
    /// `poll_batch(max)`, every batch drained.
    Batch(usize),
    /// `poll_batch(usize::MAX)`, each batch dropped after this many records.
    BatchTake(usize),
}

impl PollMode {
    /// The mode chosen by two bits.
    pub fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            0 => Self::One,
            1 => Self::Batch(usize::MAX),
            2 => Self::Batch(3),
            _ => Self::BatchTake(2),
        }
    }
}

/// The policy chosen by two bits.
pub fn policy_from_bits(bits: u8) -> UpgradePolicy {
    match bits & 3 {
        0 => UpgradePolicy::AsIs,
        1 => UpgradePolicy::UpgradeToV2,
        _ => UpgradePolicy::UpgradeToV3,
    }
}

/// Either decoder, driven the same way.
#[derive(Debug)]
pub enum AnyDecoder {
    /// Plain DBN.
    Plain(DbnDecoder),
    /// Plain or zstd, detected.
    Stream(StreamDecoder),
}

impl AnyDecoder {
    fn handle_input(&mut self, input: &[u8]) -> usize {
        match self {
            Self::Plain(d) => d.handle_input(input),
            Self::Stream(d) => d.handle_input(input),
        }
    }

    fn finish(&mut self) -> Result<(), Error> {
        match self {
            Self::Plain(d) => d.finish(),
            Self::Stream(d) => d.finish(),
        }
    }

    fn poll(&mut self) -> Result<Decoded<RecordRef<'_>>, Error> {
        match self {
            Self::Plain(d) => d.poll(),
            Self::Stream(d) => d.poll(),
        }
    }

    fn poll_batch(&mut self, max: usize) -> Result<Decoded<RecordBatch<'_>>, Error> {
        match self {
            Self::Plain(d) => d.poll_batch(max),
            Self::Stream(d) => d.poll_batch(max),
        }
    }

    /// `(bytes_received, bytes_delivered)` of the DBN layer.
    fn counts(&self) -> (u64, u64) {
        let d = match self {
            Self::Plain(d) => d,
            Self::Stream(d) => d.dbn(),
        };
        (d.bytes_received(), d.bytes_delivered())
    }
}

/// Everything one run of a decoder produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// The metadata, if handed out.
    pub metadata: Option<Metadata>,
    /// Every record handed out, in order.
    pub records: Vec<Vec<u8>>,
    /// The error that ended the stream (kind and offset), `None` for a clean end.
    pub error: Option<(ErrorKind, Option<u64>)>,
    /// The full error, for messages.
    pub error_text: Option<String>,
}

impl Outcome {
    /// Whether the stream ended cleanly ([`Decoded::End`]).
    pub fn is_clean(&self) -> bool {
        self.error.is_none()
    }
}

/// Checks a record handed out: 8-byte aligned, as long as its header says.
pub fn check_record(rec: &RecordRef<'_>) -> Vec<u8> {
    let bytes = rec.as_ref();
    assert_eq!(
        bytes.as_ptr() as usize % 8,
        0,
        "a record was handed out misaligned"
    );
    assert_eq!(
        bytes.len(),
        rec.header().record_size(),
        "a record's bytes differ from its header length"
    );
    bytes.to_vec()
}

/// Feeds `chunks` to `decoder` as a driver would (offering the rest again after a
/// partial take, polling after every mutation, `finish` at the end) and collects
/// what it produced.
///
/// # Panics
/// On a broken invariant (see the module docs).
pub fn drive(mut decoder: AnyDecoder, chunks: &[&[u8]], mode: PollMode) -> Outcome {
    let plain = matches!(decoder, AnyDecoder::Plain(_));
    let mut out = Outcome::default();
    let mut chunks = chunks.iter();
    let mut pending: &[u8] = &[];
    let mut fed: u64 = 0;
    let mut finished = false;
    loop {
        if pending.is_empty() && !finished {
            match chunks.next() {
                Some(chunk) => pending = chunk,
                None => {
                    finished = true;
                    // The verdict also comes from the poll after the last record.
                    let _ = decoder.finish();
                }
            }
        }
        let taken = decoder.handle_input(pending);
        assert!(
            taken <= pending.len(),
            "handle_input took more than offered"
        );
        pending = &pending[taken..];
        fed += taken as u64;
        let mut progressed = taken > 0;
        loop {
            let (received, delivered) = decoder.counts();
            assert!(delivered <= received, "delivered more bytes than received");
            if plain {
                assert!(received <= fed, "received more bytes than were fed");
            }
            let step = match mode {
                PollMode::One => match decoder.poll() {
                    Ok(Decoded::Record(rec)) => {
                        out.records.push(check_record(&rec));
                        Ok(Decoded::Record(()))
                    }
                    Ok(Decoded::Metadata(m)) => Ok(Decoded::Metadata(m)),
                    Ok(Decoded::NeedInput(n)) => Ok(Decoded::NeedInput(n)),
                    Ok(Decoded::End) => Ok(Decoded::End),
                    Err(e) => Err(e),
                },
                PollMode::Batch(max) | PollMode::BatchTake(max) => {
                    let (max, take) = match mode {
                        PollMode::BatchTake(take) => (usize::MAX, take),
                        _ => (max, usize::MAX),
                    };
                    match decoder.poll_batch(max) {
                        Ok(Decoded::Record(batch)) => {
                            let before = out.records.len();
                            out.records
                                .extend(batch.take(take).map(|rec| check_record(&rec)));
                            assert!(out.records.len() > before, "an empty record batch");
                            assert!(
                                out.records.len() - before <= max,
                                "a batch yielded more than its max"
                            );
                            Ok(Decoded::Record(()))
                        }
                        Ok(Decoded::Metadata(m)) => Ok(Decoded::Metadata(m)),
                        Ok(Decoded::NeedInput(n)) => Ok(Decoded::NeedInput(n)),
                        Ok(Decoded::End) => Ok(Decoded::End),
                        Err(e) => Err(e),
                    }
                }
            };
            match step {
                Ok(Decoded::Metadata(m)) => {
                    assert!(out.metadata.is_none(), "metadata handed out twice");
                    assert!(out.records.is_empty(), "metadata after records");
                    out.metadata = Some(*m);
                    progressed = true;
                }
                Ok(Decoded::Record(())) => progressed = true,
                Ok(Decoded::NeedInput(_)) => break,
                Ok(Decoded::End) => {
                    assert!(finished, "End before finish");
                    assert!(pending.is_empty(), "End with input not taken");
                    assert!(
                        matches!(decoder.poll(), Ok(Decoded::End)),
                        "End is not repeated"
                    );
                    return out;
                }
                Err(err) => {
                    let again = decoder.poll().err().map(|e| (e.kind(), e.offset()));
                    assert_eq!(
                        again,
                        Some((err.kind(), err.offset())),
                        "the error is not sticky"
                    );
                    out.error = Some((err.kind(), err.offset()));
                    out.error_text = Some(err.to_string());
                    return out;
                }
            }
        }
        assert!(
            progressed || !pending.is_empty() || !finished,
            "stalled: finished, nothing buffered comes out, no End and no error"
        );
        assert!(
            progressed || pending.is_empty(),
            "stalled: input refused while nothing comes out"
        );
    }
}

/// The decoder configuration chosen by the input's bits.
#[derive(Debug, Clone)]
pub struct Choice {
    /// Plain or stream decoder.
    pub stream: bool,
    /// The DBN decoder configuration.
    pub config: DecoderConfig,
    /// The fragment format, if record-only.
    pub fragment: Option<FragmentFormat>,
    /// The policy.
    pub policy: UpgradePolicy,
    /// How records are pulled.
    pub mode: PollMode,
}

impl Choice {
    /// Reads the choice from `flags` and `aux` (see the module docs).
    pub fn from_bits(flags: u8, aux: u8) -> Self {
        let policy = policy_from_bits(flags >> 2);
        let fragment = (flags & 0x10 != 0).then(|| FragmentFormat {
            version: ((flags >> 5) & 3).max(1),
            ts_out: aux & 2 != 0,
        });
        let mut config = DecoderConfig::default().upgrade_policy(policy);
        if aux & 1 != 0 {
            config = config.buffer_size(DecoderConfig::MIN_BUFFER_SIZE);
        }
        config = config.max_metadata_len(match (aux >> 2) & 3 {
            0 => DecoderConfig::DEFAULT_MAX_METADATA_LEN,
            1 => 100,
            2 => 1000,
            _ => 64 * 1024,
        });
        if let Some(fragment) = fragment {
            config = config.fragment(fragment);
        }
        Self {
            stream: flags & 0x80 != 0,
            config,
            fragment,
            policy,
            mode: PollMode::from_bits(flags),
        }
    }

    /// A fresh decoder of this choice; `None` when the configuration is refused (a
    /// v3 fragment under `UpgradeToV2`), which must be a typed error.
    pub fn decoder(&self) -> Option<AnyDecoder> {
        let made = if self.stream {
            StreamDecoder::new(StreamConfig {
                decoder: self.config.clone(),
                compression: Compression::Detect,
                zstd_window_log_max: 20,
            })
            .map(AnyDecoder::Stream)
        } else {
            DbnDecoder::new(self.config.clone()).map(AnyDecoder::Plain)
        };
        match made {
            Ok(decoder) => Some(decoder),
            Err(err) => {
                assert!(
                    matches!(err.kind(), ErrorKind::Format | ErrorKind::Config),
                    "unexpected constructor error {err}"
                );
                None
            }
        }
    }
}

/// Runs `payload` through the decoder of `choice` twice (whole, then in `chunks` with
/// the chosen poll mode), checks the outcomes agree, and returns the whole-input one.
pub fn check_splits(choice: &Choice, payload: &[u8], chunks: &[&[u8]]) -> Option<Outcome> {
    let whole_decoder = choice.decoder()?;
    let whole = drive(whole_decoder, &[payload], PollMode::Batch(usize::MAX));
    let split = drive(choice.decoder()?, chunks, choice.mode);
    let corrupt = |o: &Outcome| matches!(o.error, Some((ErrorKind::Decompression, _)));
    if corrupt(&whole) || corrupt(&split) {
        // zstd finds corruption (a bad checksum, a corrupt block) after more or less
        // unverified output depending on how its input was cut: both must fail, and
        // the records of one must be a prefix of the other's.
        assert!(
            whole.error.is_some() && split.error.is_some(),
            "a split hid a decompression error: whole {:?}, split {:?}",
            whole.error_text,
            split.error_text
        );
        let n = whole.records.len().min(split.records.len());
        assert!(
            whole.records[..n] == split.records[..n],
            "a split changed the records before a decompression error"
        );
        return Some(whole);
    }
    assert_eq!(
        (&whole.error, whole.records.len(), &whole.metadata),
        (&split.error, split.records.len(), &split.metadata),
        "a split changed the outcome: whole {:?}, split {:?}",
        whole.error_text,
        split.error_text
    );
    assert!(
        whole.records == split.records,
        "a split changed the records"
    );
    Some(whole)
}

/// The target: see the module docs.
pub fn run(data: &[u8]) {
    let framed = Framed::parse(data);
    let choice = Choice::from_bits(framed.flags, framed.aux);
    let chunks = framed.chunks();
    let Some(whole) = check_splits(&choice, framed.payload, &chunks) else {
        return;
    };
    // A plain stream we accept must be one the reference decoder accepts alike.
    if whole.is_clean() && !choice.stream {
        let reference = oracle::decode(framed.payload, choice.policy, choice.fragment);
        if reference.panicked {
            return;
        }
        if let Some(why) = reference.error {
            panic!("we accepted a stream the dbn oracle refuses: {why}");
        }
        assert!(
            reference.records == whole.records,
            "records differ from the dbn oracle's ({} vs {})",
            whole.records.len(),
            reference.records.len()
        );
        assert_eq!(
            reference.metadata, whole.metadata,
            "metadata differs from the dbn oracle's"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbn_pipe_protocol::doc_support::{sample_dbn, sample_dbn_zst};

    #[test]
    fn a_sample_decodes_alike_in_any_split_and_mode() {
        let sample = sample_dbn();
        for flags in [0u8, 1, 2, 3, 0x80] {
            let choice = Choice::from_bits(flags, 1);
            let chunks = crate::input::split_at_points(&sample, &[1, 9, 100, 101]);
            let out = check_splits(&choice, &sample, &chunks).expect("a valid configuration");
            assert!(out.is_clean(), "{:?}", out.error_text);
            assert_eq!(out.records.len(), 2);
            assert_eq!(out.metadata.expect("metadata").dataset, "GLBX.MDP3");
        }
        let zst = sample_dbn_zst();
        let out = check_splits(&Choice::from_bits(0x80, 0), &zst, &[&zst[..5], &zst[5..]])
            .expect("a valid configuration");
        assert_eq!(out.records.len(), 2);
    }

    #[test]
    fn a_cut_record_is_a_truncation_error() {
        let sample = sample_dbn();
        let cut = &sample[..sample.len() - 3];
        let out = check_splits(&Choice::from_bits(0, 0), cut, &[cut]).expect("valid");
        assert_eq!(out.records.len(), 1);
        assert_eq!(out.error.map(|e| e.0), Some(ErrorKind::Truncated));
    }
}
