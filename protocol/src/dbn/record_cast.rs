//! The crate's one audited `unsafe` operation: viewing buffered bytes as a
//! [`RecordRef`].
//!
//! Every record handed to a caller goes through [`record_at`] or, within a run of
//! records with known header bytes, [`Run::next`]; both check the two
//! conditions `RecordRef` relies on instead of trusting their callers: the slice starts
//! on an 8-byte boundary (the alignment of every DBN record struct) and holds the whole
//! record its header announces, at least the 16-byte header. A slice that fails either
//! check yields `None`; no misaligned or short `RecordRef` is ever built.
#![allow(unsafe_code)]

use dbn::RecordRef;

/// Alignment every DBN record struct needs.
pub(crate) const RECORD_ALIGN: usize = 8;

/// Size of the DBN record header (versions 1 to 3).
pub(crate) const HEADER_LEN: usize = 16;

/// Views the record at the start of `bytes`, or `None` when `bytes` is misaligned or
/// shorter than the record (or its header) says.
#[inline]
pub(crate) fn record_at(bytes: &[u8]) -> Option<RecordRef<'_>> {
    if bytes.len() < HEADER_LEN || bytes.as_ptr().align_offset(RECORD_ALIGN) != 0 {
        return None;
    }
    let len = usize::from(bytes[0]) * 4;
    if len < HEADER_LEN || len > bytes.len() {
        return None;
    }
    // SAFETY: `RecordRef::new` needs a buffer that starts with a record header and is
    // aligned for it. The slice is 8-byte aligned (checked above; the header's and every
    // record struct's alignment is 8), it holds at least the 16-byte header, and every
    // bit pattern is a valid header (plain integers). It spans the whole record the
    // header announces (`len <= bytes.len()`), so `RecordRef::as_ref` stays in bounds.
    // Typed access through `RecordRef::get` additionally asserts the record is at least
    // as long as the requested struct, and the decoder rejects known record types
    // shorter than their struct before calling this.
    Some(unsafe { RecordRef::new(&bytes[..len]) })
}

/// A cursor over buffered bytes that hands out, without framing them again, the
/// records repeating the first two header bytes (length byte and `rtype`) of a record
/// the decoder framed in full: such records pass the same framing checks.
///
/// Invariant (established by [`Run::new`] and [`Run::none`], kept by [`Run::next`],
/// the only place that advances `pos`): `pos <= end <= bytes.len()`. Inside a run
/// (`pos < end`), `bytes` starts 8-byte aligned, `len` (the length the header bytes
/// announce) is a multiple of 8 of at least 16, and `pos` and `end` are multiples of
/// `len`: the bytes from `pos` to `end` are whole records of `len` bytes, each
/// starting aligned. So handing one out needs no bounds check: only `pos` against `end`
/// and the two header bytes are compared, and only `pos` changes in the caller's loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run<'a> {
    /// The bytes from the run's first record on.
    bytes: &'a [u8],
    /// Offset in `bytes` of the next record.
    pos: usize,
    /// Offset in `bytes` where the run's records end.
    end: usize,
    /// The run's header bytes as a little-endian `u16`.
    header: u16,
    /// The length of every record of the run.
    len: usize,
}

impl<'a> Run<'a> {
    /// A cursor at `rest` outside any run.
    #[inline]
    pub(crate) fn none(rest: &'a [u8]) -> Self {
        Self {
            bytes: rest,
            pos: 0,
            end: 0,
            header: 0,
            len: usize::MAX,
        }
    }

    /// A cursor at `rest` in a run of at most `max` records whose first two bytes are
    /// `header` (length byte, `rtype`); outside a run when `rest` is misaligned or the
    /// announced length is not a multiple of 8 of at least 16. The run covers the
    /// whole records `rest` holds, up to `max`; [`count`](Self::count) says how many.
    #[inline]
    pub(crate) fn new(rest: &'a [u8], header: [u8; 2], max: usize) -> Self {
        let len = usize::from(header[0]) * 4;
        if len < HEADER_LEN
            || len % RECORD_ALIGN != 0
            || rest.as_ptr().align_offset(RECORD_ALIGN) != 0
        {
            return Self::none(rest);
        }
        Self {
            bytes: rest,
            pos: 0,
            end: (rest.len() / len).min(max) * len,
            header: u16::from_le_bytes(header),
            len,
        }
    }

    /// The bytes from the next record on.
    #[inline]
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }

    /// How many bytes from the next record on the cursor's buffer holds (the length
    /// of [`rest`](Self::rest)).
    #[inline]
    pub(crate) fn rest_len(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// How many bytes the cursor has advanced past since it was made.
    #[inline]
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Records the run may still hand out (whether they repeat its header bytes is
    /// checked as each is handed out).
    #[inline]
    pub(crate) fn count(&self) -> usize {
        (self.end - self.pos) / self.len
    }

    /// Ends the run where it is: returns how many records it could still have handed
    /// out, and hands out none afterwards.
    #[inline]
    pub(crate) fn stop(&mut self) -> usize {
        let count = self.count();
        self.end = self.pos;
        count
    }

    /// Hands out the next record when the run has one left and it repeats the run's
    /// header bytes, and advances past it; `None` (nothing consumed) otherwise.
    #[inline]
    pub(crate) fn next(&mut self) -> Option<RecordRef<'a>> {
        // `pos <= end` by the invariant.
        if self.pos == self.end {
            return None;
        }
        let next = self.pos + self.len;
        // SAFETY: `pos < end`, so by the invariant the run holds a whole record of `len`
        // bytes at `pos`: `pos + len <= end <= bytes.len()`.
        let rec = unsafe { self.bytes.get_unchecked(self.pos..next) };
        // SAFETY: `pos < end`, so the run exists, and `Run::new` accepted its `len` only
        // at 16 or more. (Tells the compiler that `rec` has a header's two bytes.)
        unsafe { std::hint::assert_unchecked(self.len >= HEADER_LEN) };
        let &[length_words, rtype] = rec.first_chunk::<2>()?;
        if u16::from_le_bytes([length_words, rtype]) != self.header {
            return None;
        }
        self.pos = next;
        // SAFETY: `RecordRef::new` needs an aligned buffer starting with a record header.
        // `pos < end`, so the run exists (`Run::new` accepted it): `bytes` starts 8-byte
        // aligned and `pos` is a multiple of `len`, itself a multiple of 8, so `rec`
        // starts aligned. `rec` holds `len >= 16` bytes, and its header announces
        // exactly `len` (its length byte is the run's), so `RecordRef::as_ref` stays in
        // bounds. Every bit pattern is a valid header. The invariant holds after the
        // step: the new `pos` is the next multiple of `len`, at most `end`.
        Some(unsafe { RecordRef::new(rec) })
    }
}

#[cfg(test)]
mod tests {
    use dbn::Record;

    use super::*;
    use crate::dbn::aligned_buf::AlignedBuf;

    fn buf_with_header(len_words: u8) -> AlignedBuf {
        let mut buf = AlignedBuf::new(64);
        buf.bytes_mut()[0] = len_words;
        buf.bytes_mut()[1] = 0xA0;
        buf
    }

    #[test]
    fn views_an_aligned_whole_record() {
        let buf = buf_with_header(14);
        let rec = record_at(buf.bytes()).expect("aligned and whole");
        assert_eq!(rec.record_size(), 56);
        assert_eq!(rec.as_ref().len(), 56);
    }

    #[test]
    fn a_run_hands_out_only_aligned_whole_records_with_its_header() {
        let mut buf = AlignedBuf::new(200);
        for at in [0, 56, 112] {
            buf.bytes_mut()[at] = 14;
            buf.bytes_mut()[at + 1] = 0xA0;
        }
        buf.bytes_mut()[169] = 0xA1; // a fourth record of another rtype
        buf.bytes_mut()[168] = 4;
        let bytes = &buf.bytes()[..160]; // the third record is cut short
        let mut run = Run::new(bytes, [14, 0xA0], usize::MAX);
        let first = run.next().expect("first");
        assert_eq!(first.as_ref().len(), 56);
        assert_eq!(
            run.next().expect("second").as_ref().as_ptr() as usize % 8,
            0
        );
        assert_eq!(
            run.count(),
            0,
            "the third record is cut short: not in the run"
        );
        assert!(run.next().is_none(), "incomplete");
        assert_eq!(run.rest().len(), 48, "nothing consumed by a refusal");
        let mut capped = Run::new(bytes, [14, 0xA0], 1);
        assert!(capped.next().is_some());
        assert!(capped.next().is_none(), "at most `max` records");
        assert_eq!(capped.rest().len(), 104, "nothing consumed past the cap");
        let mut stopped = Run::new(bytes, [14, 0xA0], usize::MAX);
        assert_eq!(stopped.stop(), 2, "two whole records were left");
        assert!(stopped.next().is_none(), "a stopped run hands out nothing");
        let mut other = Run::new(&buf.bytes()[168..], [4, 0xA0], usize::MAX);
        assert_eq!(other.count(), 2, "two 16-byte records fit");
        assert!(other.next().is_none(), "other header bytes");
        assert!(Run::none(buf.bytes()).next().is_none(), "outside a run");
        assert!(
            Run::new(&buf.bytes()[4..], [14, 0xA0], usize::MAX)
                .next()
                .is_none(),
            "misaligned"
        );
        let mut odd = AlignedBuf::new(64);
        odd.bytes_mut()[..2].copy_from_slice(&[5, 0xEE]);
        assert!(
            Run::new(odd.bytes(), [5, 0xEE], usize::MAX)
                .next()
                .is_none(),
            "20 bytes"
        );
        odd.bytes_mut()[..2].copy_from_slice(&[2, 0xEE]);
        assert!(
            Run::new(odd.bytes(), [2, 0xEE], usize::MAX)
                .next()
                .is_none(),
            "under a header"
        );
        odd.bytes_mut()[..2].copy_from_slice(&[0, 0]);
        assert!(
            Run::new(odd.bytes(), [0, 0], usize::MAX).next().is_none(),
            "zero length"
        );
    }

    #[test]
    fn refuses_misaligned_short_and_overlong() {
        let buf = buf_with_header(4);
        assert!(record_at(&buf.bytes()[4..]).is_none(), "misaligned start");
        assert!(
            record_at(&buf.bytes()[..8]).is_none(),
            "shorter than a header"
        );
        let zero = buf_with_header(0);
        assert!(record_at(zero.bytes()).is_none(), "zero length");
        let long = buf_with_header(17);
        assert!(
            record_at(long.bytes()).is_none(),
            "announces more than the slice holds"
        );
    }
}
