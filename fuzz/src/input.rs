//! The framing every byte-level target reads its input with, and the split helper.
//!
//! Layout: `[flags][aux][n × u16 LE split points][payload]` where `n` is the low four
//! bits of `aux`. `flags` and the high bits of `aux` choose the configuration (each
//! target documents its bits). Missing bytes read as zero, so any input is valid; the
//! seed files of `corpus/<target>/` start with the two bytes `0 0` (defaults, payload
//! in one piece) unless they say otherwise.

/// A target input split into its configuration and its payload.
#[derive(Debug, Clone)]
pub struct Framed<'a> {
    /// Configuration bits, per target.
    pub flags: u8,
    /// The high four bits of the second byte, per target.
    pub aux: u8,
    /// Raw split points (not yet reduced to the payload length).
    pub splits: Vec<usize>,
    /// The bytes under test.
    pub payload: &'a [u8],
}

impl<'a> Framed<'a> {
    /// Parses `data`; never fails (short input reads as zeros and an empty payload).
    pub fn parse(data: &'a [u8]) -> Self {
        let flags = data.first().copied().unwrap_or(0);
        let second = data.get(1).copied().unwrap_or(0);
        let count = usize::from(second & 0x0F);
        let mut rest = data.get(2..).unwrap_or(&[]);
        let mut splits = Vec::with_capacity(count);
        for _ in 0..count {
            let (point, tail) = match rest {
                [a, b, tail @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), tail),
                [a] => (usize::from(*a), &[][..]),
                [] => break,
            };
            splits.push(point);
            rest = tail;
        }
        Self {
            flags,
            aux: second >> 4,
            splits,
            payload: rest,
        }
    }

    /// The payload cut at the split points (reduced modulo its length plus one).
    pub fn chunks(&self) -> Vec<&'a [u8]> {
        split_at_points(self.payload, &self.splits)
    }

    /// Encodes a seed: `flags`, `aux` (high four bits used), split points, payload.
    pub fn encode(flags: u8, aux: u8, splits: &[u16], payload: &[u8]) -> Vec<u8> {
        let count = splits.len().min(15);
        // `count` is at most 15: it fits the low four bits.
        let second = (aux << 4) | u8::try_from(count).unwrap_or(15);
        let mut out = vec![flags, second];
        for point in &splits[..count] {
            out.extend_from_slice(&point.to_le_bytes());
        }
        out.extend_from_slice(payload);
        out
    }
}

/// Cuts `bytes` at `points` (each taken modulo `bytes.len() + 1`, then sorted and
/// deduplicated). Empty pieces are dropped; the pieces concatenate to `bytes`.
pub fn split_at_points<'a>(bytes: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = points.iter().map(|p| p % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for cut in cuts.into_iter().chain(std::iter::once(bytes.len())) {
        if cut > start {
            pieces.push(&bytes[start..cut]);
            start = cut;
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_flags_splits_and_payload() {
        let data = Framed::encode(7, 0xA, &[3, 1], b"hello");
        let framed = Framed::parse(&data);
        assert_eq!(framed.flags, 7);
        assert_eq!(framed.aux, 0xA);
        assert_eq!(framed.splits, vec![3, 1]);
        assert_eq!(framed.payload, b"hello");
        assert_eq!(framed.chunks(), vec![&b"h"[..], b"el", b"lo"]);
    }

    #[test]
    fn short_inputs_parse_as_defaults() {
        let framed = Framed::parse(&[]);
        assert_eq!((framed.flags, framed.aux), (0, 0));
        assert!(framed.payload.is_empty() && framed.chunks().is_empty());
        let framed = Framed::parse(&[1, 2, 9]);
        assert_eq!(framed.splits, vec![9]);
        assert!(framed.payload.is_empty());
    }

    #[test]
    fn pieces_concatenate_to_the_input() {
        let bytes: Vec<u8> = (0..=255).collect();
        let pieces = split_at_points(&bytes, &[1000, 0, 5, 5, 256, 257]);
        assert_eq!(pieces.concat(), bytes);
        assert!(pieces.iter().all(|p| !p.is_empty()));
    }
}
