//! Collects and checks the DBN prelude and metadata block.

use dbn::Metadata;

use super::UpgradePolicy;
use crate::{Error, TruncatedPart};

/// Length of the prelude: `DBN`, the version byte, the u32 metadata length.
pub(crate) const PRELUDE_LEN: usize = 8;
/// Fixed part of every metadata block.
const METADATA_FIXED_LEN: u32 = 100;
/// First four bytes of a legacy DBZ stream (a zstd skippable frame).
pub(crate) const DBZ_MAGIC: [u8; 4] = [0x50, 0x2A, 0x4D, 0x18];

/// What the prelude and metadata told the decoder.
#[derive(Debug)]
pub(crate) struct Header {
    /// The stream's DBN version.
    pub(crate) version: u8,
    /// Whether records carry `ts_out`.
    pub(crate) ts_out: bool,
    /// The decoded (and, per policy, upgraded) metadata.
    pub(crate) metadata: Metadata,
    /// Bytes of prelude and metadata: the stream offset of the first record.
    pub(crate) len: u64,
}

/// Accumulates prelude and metadata bytes; memory grows with the bytes received, never
/// past the configured cap.
#[derive(Debug, Default)]
pub(crate) struct HeaderReader {
    bytes: Vec<u8>,
    /// Total length (prelude plus metadata) once the prelude is known.
    total: Option<usize>,
}

impl HeaderReader {
    /// Takes bytes from `input`, returning how many it consumed and the header once
    /// complete.
    pub(crate) fn absorb(
        &mut self,
        input: &[u8],
        policy: UpgradePolicy,
        max_metadata_len: usize,
    ) -> Result<(usize, Option<Header>), Error> {
        let mut used = 0;
        if self.total.is_none() {
            let want = PRELUDE_LEN - self.bytes.len();
            let take = want.min(input.len());
            self.bytes.extend_from_slice(&input[..take]);
            used = take;
            if self.bytes.len() < PRELUDE_LEN {
                return Ok((used, None));
            }
            let meta_len = check_prelude(&self.bytes, policy, max_metadata_len)?;
            self.total = Some(PRELUDE_LEN + meta_len as usize);
        }
        let total = self.total.unwrap_or(PRELUDE_LEN);
        let take = (total - self.bytes.len()).min(input.len() - used);
        // Grow by doubling as `Vec` does, but never past the declared total (which is
        // within the cap): `extend_from_slice` alone could double past it.
        let want = self.bytes.len() + take;
        if want > self.bytes.capacity() {
            let target = want.max(self.bytes.capacity() * 2).min(total);
            self.bytes.reserve_exact(target - self.bytes.len());
        }
        self.bytes.extend_from_slice(&input[used..used + take]);
        used += take;
        if self.bytes.len() < total {
            return Ok((used, None));
        }
        let version = self.bytes[3];
        let metadata = decode_metadata(&self.bytes, policy).map_err(|reason| Error::Metadata {
            offset: PRELUDE_LEN as u64,
            reason,
        })?;
        let header = Header {
            version,
            ts_out: metadata.ts_out,
            metadata,
            len: total as u64,
        };
        self.bytes = Vec::new();
        Ok((used, Some(header)))
    }

    /// The truncation error for a stream that ended before the header was complete.
    pub(crate) fn truncation(&self) -> Error {
        match self.total {
            None => Error::Truncated {
                part: TruncatedPart::Prelude,
                offset: 0,
                have: self.bytes.len(),
                need: Some(PRELUDE_LEN),
            },
            Some(total) => Error::Truncated {
                part: TruncatedPart::Metadata,
                offset: PRELUDE_LEN as u64,
                have: self.bytes.len() - PRELUDE_LEN,
                need: Some(total - PRELUDE_LEN),
            },
        }
    }

    /// Bytes still missing before the header is complete (at least 1).
    pub(crate) fn missing(&self) -> usize {
        self.total.unwrap_or(PRELUDE_LEN) - self.bytes.len()
    }
}

/// Checks the 8-byte prelude and returns the declared metadata length.
fn check_prelude(prelude: &[u8], policy: UpgradePolicy, max: usize) -> Result<u32, Error> {
    let magic = [prelude[0], prelude[1], prelude[2], prelude[3]];
    if magic == DBZ_MAGIC {
        return Err(Error::LegacyDbz { offset: 0 });
    }
    if &magic[..3] != b"DBN" {
        return Err(Error::NotDbn {
            offset: 0,
            found: magic,
        });
    }
    let version = magic[3];
    if !(1..=3).contains(&version) {
        return Err(Error::UnsupportedVersion { offset: 3, version });
    }
    if !policy.accepts(version) {
        return Err(Error::PolicyConflict {
            policy: policy.name(),
            version,
        });
    }
    let length = u32::from_le_bytes([prelude[4], prelude[5], prelude[6], prelude[7]]);
    if length < METADATA_FIXED_LEN {
        return Err(Error::MetadataTooShort { offset: 4, length });
    }
    if length as usize > max {
        return Err(Error::MetadataTooLarge {
            offset: 4,
            length,
            cap: max,
        });
    }
    Ok(length)
}
/// Decodes a complete prelude and metadata block with the `dbn` crate's own state
/// machine, sized to exactly these bytes (its `MetadataDecoder` would allocate and
/// zero a 64 KiB record buffer for every stream).
fn decode_metadata(bytes: &[u8], policy: UpgradePolicy) -> Result<Metadata, String> {
    use dbn::decode::dbn::fsm::{DbnFsm, ProcessResult};
    let mut fsm = DbnFsm::builder()
        .buffer_size(bytes.len())
        .compat_size(0)
        .upgrade_policy(policy.to_dbn())
        .build()
        .map_err(|e| e.to_string())?;
    fsm.write_all(bytes);
    match fsm.process() {
        ProcessResult::Metadata(metadata) => Ok(metadata),
        ProcessResult::Err(e) => Err(e.to_string()),
        ProcessResult::ReadMore(_) | ProcessResult::Record(()) => {
            Err("the metadata block is incomplete".to_owned())
        }
    }
}
