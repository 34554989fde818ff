//! Target `zstd_layer`: arbitrary bytes into [`ZstdDecoder`], input cut at
//! fuzzer-chosen split points, output into buffers of a fuzzer-chosen size.
//!
//! Input ([`Framed`]): `flags` bits 0-3 the window limit (`10 + bits`, so at most 2^25
//! bytes: memory stays bounded), bits 4-7 the output buffer size (`1 << bits`, 1 byte
//! to 32 KiB). `aux` is unused.
//!
//! Checks: no panic; consumed counts never exceed the input offered and produced
//! counts never exceed the output room; no stall (input left and output room, yet
//! nothing consumed or produced and no error; a call without input may find that the
//! pending output was already all delivered); the chosen split and output size give the same
//! bytes and the same error (kind) as the whole input into a 64 KiB buffer (before an
//! error, one output is a prefix of the other: how much unverified output precedes a
//! bad checksum depends on the output room); every
//! error is `Decompression` or (from `finish`) `Truncated`; a stream we decompress
//! cleanly equals what the `zstd` crate's one-shot decoder produces, and a frame over
//! the window limit is refused.

use dbn_pipe_protocol::{ErrorKind, ZstdDecoder};

use crate::input::Framed;

/// Decompressed bytes are never collected beyond this: the window limit bounds one
/// frame's memory, this bounds the check's own.
const MAX_OUTPUT: usize = 8 << 20;

/// What one run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZstdOutcome {
    /// Decompressed bytes (at most [`MAX_OUTPUT`], then the run stops).
    pub output: Vec<u8>,
    /// The error (from `decompress` or `finish`), `None` for a clean end.
    pub error: Option<ErrorKind>,
    /// Whether the run stopped at [`MAX_OUTPUT`].
    pub capped: bool,
}

/// Decompresses `chunks` with a decoder capped at 2^`window_log_max` into `out_len`
/// buffers, as a driver would.
///
/// # Panics
/// On a broken invariant.
pub fn drive(window_log_max: u32, chunks: &[&[u8]], out_len: usize) -> ZstdOutcome {
    let mut decoder = match ZstdDecoder::new(window_log_max) {
        Ok(d) => d,
        Err(err) => panic!("window_log_max {window_log_max} refused: {err}"),
    };
    let mut buf = vec![0u8; out_len];
    let mut output = Vec::new();
    let mut consumed_total = 0u64;
    for chunk in chunks {
        let mut rest: &[u8] = chunk;
        while !rest.is_empty() || decoder.output_pending() {
            match decoder.decompress(rest, &mut buf) {
                Ok(progress) => {
                    assert!(
                        progress.consumed <= rest.len(),
                        "consumed more than offered"
                    );
                    assert!(progress.produced <= buf.len(), "produced more than room");
                    assert!(
                        progress.consumed > 0 || progress.produced > 0 || rest.is_empty(),
                        "stalled: input and room, nothing consumed or produced"
                    );
                    rest = &rest[progress.consumed..];
                    consumed_total += progress.consumed as u64;
                    assert_eq!(decoder.consumed(), consumed_total, "consumed count drifts");
                    output.extend_from_slice(&buf[..progress.produced]);
                    if output.len() > MAX_OUTPUT {
                        return ZstdOutcome {
                            output,
                            error: None,
                            capped: true,
                        };
                    }
                }
                Err(err) => {
                    assert_eq!(err.kind(), ErrorKind::Decompression, "{err}");
                    return ZstdOutcome {
                        output,
                        error: Some(err.kind()),
                        capped: false,
                    };
                }
            }
        }
    }
    let error = match decoder.finish() {
        Ok(()) => None,
        Err(err) => {
            assert!(
                matches!(err.kind(), ErrorKind::Truncated | ErrorKind::Decompression),
                "{err}"
            );
            Some(err.kind())
        }
    };
    ZstdOutcome {
        output,
        error,
        capped: false,
    }
}

/// What the `zstd` crate decodes from `input` with the same window limit.
fn reference(input: &[u8], window_log_max: u32) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut decoder = zstd::stream::read::Decoder::new(input).ok()?;
    decoder.window_log_max(window_log_max).ok()?;
    let mut out = Vec::new();
    decoder
        .take(MAX_OUTPUT as u64 + 1)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// The target: see the module docs.
pub fn run(data: &[u8]) {
    let framed = Framed::parse(data);
    let window_log_max = 10 + u32::from(framed.flags & 0x0F);
    let out_len = 1usize << (framed.flags >> 4).min(15);
    let whole = drive(window_log_max, &[framed.payload], 64 * 1024);
    let split = drive(window_log_max, &framed.chunks(), out_len);
    if whole.capped || split.capped {
        let n = whole.output.len().min(split.output.len());
        assert!(
            whole.output[..n] == split.output[..n],
            "a split changed the bytes"
        );
        return;
    }
    assert_eq!(whole.error, split.error, "a split changed the verdict");
    if whole.error.is_some() {
        // How much unverified output comes before a corruption is found (a bad
        // checksum, a corrupt block) depends on the output room: one must be a prefix
        // of the other.
        let n = whole.output.len().min(split.output.len());
        assert!(
            whole.output[..n] == split.output[..n],
            "a split changed the bytes before the error"
        );
    } else {
        assert!(whole.output == split.output, "a split changed the bytes");
    }
    if whole.error.is_none() && !framed.payload.is_empty() {
        match reference(framed.payload, window_log_max) {
            Some(expected) => assert!(
                expected == whole.output,
                "bytes differ from the zstd crate's ({} vs {})",
                whole.output.len(),
                expected.len()
            ),
            None => panic!("we decompressed a stream the zstd crate refuses"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbn_pipe_protocol::doc_support::{sample_dbn, sample_dbn_zst};

    #[test]
    fn a_frame_decompresses_alike_into_any_buffer() {
        let zst = sample_dbn_zst();
        for out_len in [1, 7, 64 * 1024] {
            let out = drive(17, &[&zst[..3], &zst[3..]], out_len);
            assert_eq!(out.error, None);
            assert_eq!(out.output, sample_dbn());
        }
        let cut = drive(17, &[&zst[..zst.len() - 2]], 100);
        assert_eq!(cut.error, Some(ErrorKind::Truncated));
    }
}
