//! The crate's one audited `unsafe` operation: viewing buffered bytes as a
//! [`RecordRef`].
//!
//! Every record handed to a caller goes through [`record_at`], which checks the two
//! conditions `RecordRef` relies on instead of trusting its callers: the slice starts
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
