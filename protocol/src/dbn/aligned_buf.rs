//! A fixed-size byte buffer whose first byte is 8-byte aligned.

/// A heap buffer of a fixed size, allocated once, whose start is aligned for any DBN
/// record (8 bytes). It never grows past its size and never reallocates.
///
/// Memory is initialised lazily: a prefix of the buffer is initialised (first by the
/// bytes written into it with [`write_at`](Self::write_at), or by zeroes when
/// [`bytes_mut`](Self::bytes_mut) needs the whole buffer), and only that prefix is
/// visible through [`bytes`](Self::bytes). A decoder fed by copy therefore never pays
/// for zeroing memory it is about to overwrite.
#[derive(Debug)]
pub(crate) struct AlignedBuf {
    /// The initialised words; the allocation holds `size_words`.
    words: Vec<u64>,
    /// The fixed size in words.
    size_words: usize,
}

impl AlignedBuf {
    /// Allocates `len` bytes (rounded up to a multiple of 8), none initialised yet.
    pub(crate) fn new(len: usize) -> Self {
        let size_words = len.div_ceil(8);
        Self {
            words: Vec::with_capacity(size_words),
            size_words,
        }
    }

    /// The initialised prefix of the buffer as bytes (everything ever written).
    #[inline]
    pub(crate) fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.words)
    }

    /// The whole buffer as mutable bytes, zeroing the part never written first.
    #[inline]
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        if self.words.len() < self.size_words {
            self.words.resize(self.size_words, 0);
        }
        bytemuck::cast_slice_mut(&mut self.words)
    }

    /// The initialised prefix as mutable bytes.
    #[inline]
    pub(crate) fn initialised_mut(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(&mut self.words)
    }

    /// Copies as much of `src` as fits from byte `at` on (`at` must not be past the
    /// initialised prefix) and returns how many bytes it copied. Bytes beyond the
    /// initialised prefix are initialised by this copy (the last word's unused bytes
    /// with zeroes), so nothing is zeroed first.
    ///
    /// # Panics
    /// When `at` is past the initialised prefix (a decoder bug, never input).
    pub(crate) fn write_at(&mut self, at: usize, src: &[u8]) -> usize {
        let initialised = self.words.len() * 8;
        assert!(at <= initialised, "write at {at} past {initialised}");
        let n = src.len().min(self.len() - at);
        let (inside, beyond) = src[..n].split_at(n.min(initialised - at));
        self.initialised_mut()[at..at + inside.len()].copy_from_slice(inside);
        if !beyond.is_empty() {
            let whole = beyond.chunks_exact(8);
            let last = whole.remainder();
            self.words
                .extend(whole.map(|w| u64::from_ne_bytes(w.try_into().unwrap_or([0; 8]))));
            if !last.is_empty() {
                let mut word = [0u8; 8];
                word[..last.len()].copy_from_slice(last);
                self.words.push(u64::from_ne_bytes(word));
            }
        }
        n
    }

    /// Capacity in bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.size_words * 8
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

    #[test]
    fn writes_initialise_lazily_and_never_grow_the_allocation() {
        let mut buf = AlignedBuf::new(32);
        let ptr = buf.words.as_ptr();
        assert!(buf.bytes().is_empty(), "nothing initialised yet");
        assert_eq!(buf.write_at(0, b"0123456789"), 10);
        assert_eq!(&buf.bytes()[..10], b"0123456789");
        assert_eq!(buf.bytes().len(), 16, "whole words, the rest zero");
        assert_eq!(&buf.bytes()[10..], &[0; 6]);
        // Overwrites inside the prefix and extends past it in one call.
        assert_eq!(buf.write_at(4, b"abcdefghijklmnop"), 16);
        assert_eq!(&buf.bytes()[..20], b"0123abcdefghijklmnop");
        // Only what fits is taken.
        assert_eq!(buf.write_at(20, &[7; 40]), 12);
        assert_eq!(buf.bytes().len(), 32);
        assert_eq!(buf.write_at(32, b"x"), 0);
        assert_eq!(buf.words.as_ptr(), ptr, "no reallocation");
        assert_eq!(buf.bytes().as_ptr() as usize % 8, 0);
        // `bytes_mut` zeroes what was never written.
        let mut fresh = AlignedBuf::new(24);
        fresh.write_at(0, b"abc");
        assert_eq!(
            fresh.bytes_mut(),
            b"abc\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
        );
    }
}
