//! A fixed-size byte buffer whose first byte is 8-byte aligned.

/// A heap buffer of a fixed size, allocated once, whose start is aligned for any DBN
/// record (8 bytes). It never grows.
#[derive(Debug)]
pub(crate) struct AlignedBuf {
    words: Box<[u64]>,
}

impl AlignedBuf {
    /// Allocates `len` bytes (rounded up to a multiple of 8), zeroed.
    pub(crate) fn new(len: usize) -> Self {
        Self {
            words: vec![0u64; len.div_ceil(8)].into_boxed_slice(),
        }
    }

    /// The whole buffer as bytes.
    #[inline]
    pub(crate) fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.words)
    }

    /// The whole buffer as mutable bytes.
    #[inline]
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(&mut self.words)
    }

    /// Capacity in bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.words.len() * 8
    }
}

/// Rounds `n` up to the next multiple of 8.
#[inline]
pub(crate) const fn round_up_8(n: usize) -> usize {
    (n + 7) & !7
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_is_aligned_and_size_rounds_up() {
        let buf = AlignedBuf::new(13);
        assert_eq!(buf.len(), 16);
        assert_eq!(buf.bytes().as_ptr() as usize % 8, 0);
        assert_eq!(round_up_8(0), 0);
        assert_eq!(round_up_8(1), 8);
        assert_eq!(round_up_8(56), 56);
        assert_eq!(round_up_8(60), 64);
    }
}
