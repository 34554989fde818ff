//! The sans-IO DBN decoder.

use dbn::{Metadata, RecordRef};

use super::aligned_buf::{AlignedBuf, round_up_8};
use super::config::DecoderConfig;
use super::header::HeaderReader;
use super::layout::{FieldCheck, Layout, Upgrade, invalid_field};
use super::record_cast::{HEADER_LEN, RECORD_ALIGN, record_at};
use super::upgrade;
use crate::{Error, TruncatedPart};

/// The largest record DBN framing can express: 255 four-byte words.
const MAX_FRAME_LEN: usize = 255 * 4;

/// What a poll of a decoder produced.
#[derive(Debug)]
#[must_use = "a decoded item must be handled"]
pub enum Decoded<R> {
    /// The stream's metadata, once, before any record (whole streams only).
    Metadata(Box<Metadata>),
    /// A record, or a batch of records, borrowed from the decoder.
    Record(R),
    /// No complete item is buffered: feed at least this many more bytes (a hint; more
    /// is better).
    NeedInput(usize),
    /// [`finish`](DbnDecoder::finish) was called and every record has been handed
    /// out: the stream ended cleanly.
    End,
}

/// The stream's format, known after the prelude (or from the fragment configuration).
#[derive(Debug, Clone)]
struct Format {
    version: u8,
    ts_out: bool,
    layout: Layout,
}

/// A sans-IO decoder of DBN byte streams: whole streams (prelude, metadata, records)
/// or record-only fragments, versions 1 to 3.
///
/// # Contract
///
/// - **Input** goes in by copy with [`handle_input`](Self::handle_input), which returns
///   how many bytes it took (fewer than offered means the buffer is full: keep the rest
///   and offer it again after polling), or without a copy by writing into
///   [`space`](Self::space) and committing with [`fill`](Self::fill).
/// - **Output** is pulled with [`poll`](Self::poll) (one record) or
///   [`poll_batch`](Self::poll_batch) (many). Records are `dbn::RecordRef`s borrowed
///   from an 8-byte-aligned internal buffer; nothing is allocated per record. A record
///   counts as delivered once it has been returned (or yielded by a batch); the next
///   mutation frees its bytes.
/// - **End of input** is explicit: [`finish`](Self::finish). Afterwards the remaining
///   records are still delivered, then [`Decoded::End`] for a clean end or
///   [`Error::Truncated`] naming what was left unfinished.
/// - **Errors** carry the stream offset and are sticky: records before the bad one are
///   all delivered first, then every poll returns the error.
///
/// # Memory
///
/// The record buffer (default 64 KiB) and a scratch area of the same size are
/// allocated once in [`new`](Self::new). The metadata block is held only until it is
/// decoded and is capped (default 16 MiB). Nothing else grows with the stream.
///
/// # Alignment and conversion
///
/// A record is handed out in place when it starts on an 8-byte boundary and needs no
/// version conversion. Otherwise it is copied (or converted with the `dbn` crate's
/// `From` impls) into the aligned scratch area first: DBN v1 and v2 metadata is not
/// padded, and a record whose length is a multiple of 4 but not of 8 is legal framing
/// that shifts every later record. No misaligned `RecordRef` is ever built.
///
/// # Example
///
/// ```
/// use dbn_pipe_protocol::{DbnDecoder, Decoded, DecoderConfig};
///
/// # fn main() -> Result<(), dbn_pipe_protocol::Error> {
/// # let bytes = dbn_pipe_protocol::doc_support::sample_dbn();
/// let mut decoder = DbnDecoder::new(DecoderConfig::default())?;
/// let mut input: &[u8] = &bytes; // what a socket or file gave us
/// let mut records = 0;
/// loop {
///     let taken = decoder.handle_input(input);
///     input = &input[taken..];
///     if input.is_empty() {
///         decoder.finish()?; // end of input; also reports a truncated tail
///     }
///     loop {
///         match decoder.poll_batch(usize::MAX)? {
///             Decoded::Metadata(metadata) => println!("dataset {}", metadata.dataset),
///             Decoded::Record(batch) => records += batch.count(),
///             Decoded::NeedInput(_) | Decoded::End => break,
///         }
///     }
///     if input.is_empty() {
///         break;
///     }
/// }
/// assert_eq!(records, 2);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct DbnDecoder {
    config: DecoderConfig,
    /// Prelude and metadata collector; `None` once they are decoded (or for fragments).
    header: Option<HeaderReader>,
    format: Option<Format>,
    /// Metadata decoded but not yet handed out.
    metadata: Option<Box<Metadata>>,
    /// Record bytes live in `buf[head..tail]`.
    buf: AlignedBuf,
    head: usize,
    tail: usize,
    /// Stream offset of `buf[head]`.
    head_offset: u64,
    /// Bytes at `head` already delivered, freed on the next mutation.
    delivered: usize,
    /// Aligned scratch space for converted and realigned records.
    scratch: AlignedBuf,
    /// Aligned staging area for a misaligned record that must be converted.
    stage: AlignedBuf,
    /// The sticky error.
    failure: Option<Error>,
    /// An error from the layer that feeds this decoder, reported once the records
    /// buffered before it are delivered.
    upstream_failure: Option<Error>,
    /// [`finish`](Self::finish) was called.
    eof: bool,
}

/// A run of at least this many equal-length records ends a batch by itself (the
/// records after it start the next batch) rather than being framed again one by one
/// together with what follows.
const MIN_RUN: usize = 32;

/// What [`DbnDecoder::scan_batch`] found.
#[derive(Debug, Clone, Copy, Default)]
struct Scan {
    /// Buffer end of the batch.
    end: usize,
    /// Records in the batch.
    count: usize,
    /// The length of every record when the batch is a run of equal-length records
    /// handed out in place; 0 otherwise.
    stride: usize,
    /// Whether any record of the batch was converted or realigned into scratch.
    placed: bool,
}

/// Where a complete record sits in the buffer.
#[derive(Debug, Clone, Copy)]
struct Frame {
    len: usize,
    upgrade: Upgrade,
    /// The record's enum fields were checked (it cannot join an unchecked run).
    checked: bool,
}

impl DbnDecoder {
    /// Creates a decoder, allocating its buffers once.
    ///
    /// # Errors
    /// [`Error::Config`] when the buffer size is outside
    /// [`DecoderConfig::MIN_BUFFER_SIZE`]`..=`[`DecoderConfig::MAX_BUFFER_SIZE`] or a
    /// fragment version is not 1 to 3; [`Error::PolicyConflict`] for a version 3
    /// fragment under `UpgradeToV2`.
    pub fn new(config: DecoderConfig) -> Result<Self, Error> {
        config.validate()?;
        let (header, format) = match config.fragment {
            Some(fragment) => (
                None,
                Some(Format {
                    version: fragment.version,
                    ts_out: fragment.ts_out,
                    layout: Layout::new(fragment.version, fragment.ts_out, config.upgrade_policy),
                }),
            ),
            None => (Some(HeaderReader::default()), None),
        };
        Ok(Self {
            buf: AlignedBuf::new(config.buffer_size),
            scratch: AlignedBuf::new(config.buffer_size),
            stage: AlignedBuf::new(MAX_FRAME_LEN),
            config,
            header,
            format,
            metadata: None,
            head: 0,
            tail: 0,
            head_offset: 0,
            delivered: 0,
            failure: None,
            upstream_failure: None,
            eof: false,
        })
    }

    /// The configuration this decoder was built with.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// The DBN version of the input, once the prelude has been read (immediately for
    /// fragments).
    pub fn input_version(&self) -> Option<u8> {
        self.format.as_ref().map(|f| f.version)
    }

    /// Whether records carry a trailing `ts_out`, once known.
    pub fn ts_out(&self) -> Option<bool> {
        self.format.as_ref().map(|f| f.ts_out)
    }

    /// Stream bytes taken in so far (delivered or still buffered).
    pub fn bytes_received(&self) -> u64 {
        self.head_offset + (self.tail - self.head) as u64
    }

    /// Stream bytes fully delivered (header plus records handed out).
    pub fn bytes_delivered(&self) -> u64 {
        self.head_offset + self.delivered as u64
    }

    /// Whether [`finish`](Self::finish) has been called.
    pub fn is_finished(&self) -> bool {
        self.eof
    }

    /// Copies as much of `input` as fits and returns how many bytes were taken. Fewer
    /// than `input.len()` means the buffer is full: poll, then offer the rest again.
    /// Returns 0 after an error or after [`finish`](Self::finish).
    pub fn handle_input(&mut self, input: &[u8]) -> usize {
        let mut taken = 0;
        while taken < input.len() {
            let space = self.space();
            if space.is_empty() {
                break;
            }
            let n = space.len().min(input.len() - taken);
            space[..n].copy_from_slice(&input[taken..taken + n]);
            self.fill(n);
            taken += n;
        }
        taken
    }

    /// Free space to write input into directly (then call [`fill`](Self::fill)). Frees
    /// delivered records and compacts the buffer when that gains room. Empty after an
    /// error or after [`finish`](Self::finish), or when the buffer is full of
    /// undelivered records.
    pub fn space(&mut self) -> &mut [u8] {
        self.release();
        if self.failure.is_some() || self.eof {
            return &mut [];
        }
        self.compact();
        let tail = self.tail;
        &mut self.buf.bytes_mut()[tail..]
    }

    /// Commits `n` bytes written at the start of [`space`](Self::space).
    ///
    /// # Panics
    /// When `n` is larger than the space last returned (a caller bug, never input).
    pub fn fill(&mut self, n: usize) {
        assert!(
            n <= self.buf.len() - self.tail,
            "fill({n}) exceeds the {} bytes of space offered",
            self.buf.len() - self.tail
        );
        self.tail += n;
        if self.header.is_some() {
            self.absorb_header();
        }
    }

    /// Marks the end of input and reports whether the stream is complete.
    ///
    /// Records still buffered stay available to [`poll`](Self::poll); the verdict on
    /// the bytes after them is returned here and again by the poll that follows the
    /// last record.
    ///
    /// # Errors
    /// [`Error::Truncated`] naming the unfinished prelude, metadata block or record and
    /// how many of its bytes arrived; any framing error among the buffered bytes; the
    /// sticky error if one was already reported.
    pub fn finish(&mut self) -> Result<(), Error> {
        self.eof = true;
        self.release();
        if let Some(err) = &self.failure {
            return Err(err.clone());
        }
        // Same order as the polls: a framing error among the buffered records comes
        // before an upstream error, which comes before a truncation.
        if let Some(header) = &self.header {
            return Err(self
                .upstream_failure
                .clone()
                .unwrap_or_else(|| header.truncation()));
        }
        // Walk the complete records still buffered; what follows them decides.
        let mut pos = self.head;
        loop {
            match self.frame_at(pos) {
                Ok(Some(frame)) => pos += frame.len,
                Ok(None) => break,
                Err(err) => return Err(err),
            }
        }
        if let Some(err) = &self.upstream_failure {
            return Err(err.clone());
        }
        match self.truncation_at(pos) {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Returns the next item: the metadata (once), a record, or what is missing.
    ///
    /// # Errors
    /// The first framing, format, metadata or truncation error, after every record
    /// before it was delivered. Errors are sticky.
    #[must_use = "a polled record or error must be handled"]
    pub fn poll(&mut self) -> Result<Decoded<RecordRef<'_>>, Error> {
        if let Some(step) = self.poll_prologue() {
            return step;
        }
        let frame = match self.frame_at(self.head) {
            Ok(Some(frame)) => frame,
            Ok(None) => return self.starved(),
            Err(err) => return Err(self.fail(err)),
        };
        let ts_out = self.format.as_ref().is_some_and(|f| f.ts_out);
        let head = self.head;
        let placed = if needs_placing(frame.upgrade, head) {
            let src = &self.buf.bytes()[head..head + frame.len];
            let out = self.scratch.bytes_mut();
            match place(src, frame.upgrade, ts_out, out, self.stage.bytes_mut()) {
                Some(n) => Some(n),
                None => return Err(self.fail_internal(frame)),
            }
        } else {
            None
        };
        self.delivered = frame.len;
        let rec = match placed {
            Some(n) => record_at(&self.scratch.bytes()[..n]),
            None => record_at(&self.buf.bytes()[head..head + frame.len]),
        };
        // `record_at` cannot refuse what framing and placing accepted (aligned, whole).
        rec.map(Decoded::Record)
            .ok_or_else(|| internal_error(self.head_offset, frame))
    }

    /// Returns up to `max` buffered records at once (at least one), the metadata, or
    /// what is missing. Records count as delivered as the batch yields them: a batch
    /// dropped early leaves the rest for the next poll.
    ///
    /// # Errors
    /// As [`poll`](Self::poll). An error found after the first record of a batch ends
    /// the batch; the next poll returns it.
    #[must_use = "a polled batch or error must be handled"]
    pub fn poll_batch(&mut self, max: usize) -> Result<Decoded<RecordBatch<'_>>, Error> {
        if let Some(step) = self.poll_prologue() {
            return step;
        }
        let scan = match self.scan_batch(max.max(1)) {
            Ok(scan) if scan.count == 0 => return self.starved(),
            Ok(scan) => scan,
            Err(err) => return Err(self.fail(err)),
        };
        // `poll_prologue` released what earlier batches delivered: the batch counts
        // its deliveries from zero.
        debug_assert_eq!(self.delivered, 0);
        let Self {
            buf,
            scratch,
            format,
            head,
            delivered,
            ..
        } = self;
        let Some(format) = format.as_ref() else {
            return Ok(Decoded::NeedInput(1));
        };
        Ok(Decoded::Record(RecordBatch {
            data: &buf.bytes()[*head..scan.end],
            base: *head,
            pos: 0,
            scratch: scratch.bytes(),
            scratch_pos: 0,
            placed: scan.placed,
            stride: scan.stride,
            layout: &format.layout,
            remaining: scan.count,
            delivered,
        }))
    }

    /// The `rtype` of the next record when a complete one is buffered and nothing
    /// (metadata, an error) comes before it; lets a caller route a record before
    /// taking it.
    pub fn peek_rtype(&mut self) -> Option<u8> {
        self.release();
        if self.failure.is_some() || self.metadata.is_some() || self.header.is_some() {
            return None;
        }
        match self.frame_at(self.head) {
            Ok(Some(_)) => Some(self.buf.bytes()[self.head + 1]),
            _ => None,
        }
    }

    /// Whether a (sticky) error has been reported.
    pub(crate) fn has_failed(&self) -> bool {
        self.failure.is_some()
    }

    /// Records an error from the layer feeding this decoder (for example a corrupt
    /// zstd frame); it is reported once every record buffered before it is delivered.
    pub(crate) fn set_upstream_failure(&mut self, err: Error) {
        if self.upstream_failure.is_none() {
            self.upstream_failure = Some(err);
        }
    }

    /// Whether a poll now would only ask for more input (no record, metadata or error
    /// is ready).
    pub(crate) fn wants_input(&mut self) -> bool {
        self.release();
        if self.failure.is_some() || self.metadata.is_some() || self.upstream_failure.is_some() {
            return false;
        }
        if self.header.is_some() {
            return true;
        }
        !matches!(self.frame_at(self.head), Ok(Some(_)) | Err(_))
    }

    /// Shared start of every poll: frees delivered bytes; returns `Some` with the
    /// result when it is not a record (sticky error, metadata, incomplete header).
    fn poll_prologue<R>(&mut self) -> Option<Result<Decoded<R>, Error>> {
        self.release();
        if let Some(err) = &self.failure {
            return Some(Err(err.clone()));
        }
        if let Some(metadata) = self.metadata.take() {
            return Some(Ok(Decoded::Metadata(metadata)));
        }
        if self.header.is_some() {
            return Some(self.starved());
        }
        None
    }

    /// What to return when no complete record is buffered.
    fn starved<R>(&mut self) -> Result<Decoded<R>, Error> {
        if let Some(err) = self.upstream_failure.take() {
            return Err(self.fail(err));
        }
        if let Some(header) = &self.header {
            if self.eof {
                let err = header.truncation();
                return Err(self.fail(err));
            }
            return Ok(Decoded::NeedInput(header.missing()));
        }
        if self.eof {
            return match self.truncation_at(self.head) {
                Some(err) => Err(self.fail(err)),
                None => Ok(Decoded::End),
            };
        }
        let avail = self.tail - self.head;
        let need = if avail < HEADER_LEN {
            HEADER_LEN - avail
        } else {
            (usize::from(self.buf.bytes()[self.head]) * 4)
                .saturating_sub(avail)
                .max(1)
        };
        Ok(Decoded::NeedInput(need))
    }

    /// The truncation error for bytes left at `pos` at end of input, if any.
    fn truncation_at(&self, pos: usize) -> Option<Error> {
        let have = self.tail - pos;
        if have == 0 {
            return None;
        }
        Some(Error::Truncated {
            part: TruncatedPart::Record,
            offset: self.head_offset + (pos - self.head) as u64,
            have,
            need: Some(usize::from(self.buf.bytes()[pos]) * 4).filter(|&n| n >= HEADER_LEN),
        })
    }

    /// Frames the record at `pos`: `Ok(None)` when it is not complete yet.
    #[inline]
    fn frame_at(&self, pos: usize) -> Result<Option<Frame>, Error> {
        let Some(format) = &self.format else {
            return Ok(None);
        };
        let avail = self.tail - pos;
        if avail < HEADER_LEN {
            return Ok(None);
        }
        let bytes = self.buf.bytes();
        let (length_words, rtype) = (bytes[pos], bytes[pos + 1]);
        let len = usize::from(length_words) * 4;
        let offset = || self.head_offset + (pos - self.head) as u64;
        if len < HEADER_LEN {
            return Err(Error::RecordLength {
                offset: offset(),
                length_words,
                rtype,
            });
        }
        let entry = format.layout.entry(rtype);
        if len < usize::from(entry.min_len) {
            return Err(Error::RecordTooShort {
                offset: offset(),
                rtype,
                length: len,
                min: usize::from(entry.min_len),
                version: format.version,
            });
        }
        if avail < len {
            return Ok(None);
        }
        let checked = entry.fields != FieldCheck::None;
        if checked {
            self.check_fields(pos, len, entry.fields)?;
        }
        Ok(Some(Frame {
            len,
            upgrade: entry.upgrade,
            checked,
        }))
    }

    /// Checks the enum fields of the complete record at `pos` (only old instrument
    /// definitions have any). Out of line, so that `frame_at` stays small enough to be
    /// inlined on the path every other record takes.
    #[cold]
    #[inline(never)]
    fn check_fields(&self, pos: usize, len: usize, check: FieldCheck) -> Result<(), Error> {
        let record = &self.buf.bytes()[pos..pos + len];
        match invalid_field(check, record) {
            Some((field, value)) => Err(Error::InvalidRecordField {
                offset: self.head_offset + (pos - self.head) as u64,
                rtype: record[1],
                field,
                value,
            }),
            None => Ok(()),
        }
    }

    /// Finds how many complete records from `head` fit one batch, converting or
    /// realigning into scratch those that cannot be handed out in place.
    ///
    /// A batch that starts with a run of records of one length and `rtype`, handed out
    /// in place, is framed by comparing each record's first two bytes (length words and
    /// `rtype`) with those of the first record, which `frame_at` checked in full: equal
    /// bytes pass the same length and minimum-size checks, and a length that is a
    /// multiple of 8 keeps every record aligned. Walking record by record, each position
    /// waits for the length byte just read; these comparisons are independent of one
    /// another, so the processor overlaps them.
    #[inline]
    fn scan_batch(&mut self, max: usize) -> Result<Scan, Error> {
        let head = self.head;
        let first = match self.frame_at(head) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(Scan::default()),
            Err(err) => return Err(err),
        };
        let mut pos = head;
        let mut count = 0;
        // Records whose fields need checking are framed one by one.
        if !first.checked && !needs_placing(first.upgrade, head) && first.len % RECORD_ALIGN == 0 {
            let stride = first.len;
            let bytes = &self.buf.bytes()[head..self.tail];
            let complete = (bytes.len() / stride).min(max);
            let key = [bytes[0], bytes[1]];
            let run = bytes[..complete * stride]
                .chunks_exact(stride)
                .take_while(|rec| rec[..2] == key)
                .count();
            if run == complete || run >= MIN_RUN {
                return Ok(Scan {
                    end: head + run * stride,
                    count: run,
                    stride,
                    placed: false,
                });
            }
            // A short run: frame the rest of the batch record by record.
            pos += run * stride;
            count = run;
        }
        self.scan_records(pos, count, max)
    }

    /// Frames records from `pos` (after `count` already framed at `head..pos`), one by
    /// one, for [`scan_batch`](Self::scan_batch).
    fn scan_records(
        &mut self,
        mut pos: usize,
        mut count: usize,
        max: usize,
    ) -> Result<Scan, Error> {
        let ts_out = self.format.as_ref().is_some_and(|f| f.ts_out);
        let mut scratch_pos = 0;
        let mut placed = false;
        while count < max {
            let frame = match self.frame_at(pos) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                // Deliver what precedes the error; the next poll reports it.
                Err(_) if count > 0 => break,
                Err(err) => return Err(err),
            };
            if needs_placing(frame.upgrade, pos) {
                let out_len = match frame.upgrade {
                    Upgrade::None => frame.len,
                    upgrade => upgrade::converted_len(upgrade, ts_out),
                };
                let scratch = self.scratch.bytes_mut();
                if scratch_pos + out_len > scratch.len() {
                    break;
                }
                let src = &self.buf.bytes()[pos..pos + frame.len];
                let out = &mut scratch[scratch_pos..];
                match place(src, frame.upgrade, ts_out, out, self.stage.bytes_mut()) {
                    Some(n) => scratch_pos += round_up_8(n),
                    None if count > 0 => break,
                    None => return Err(self.fail_internal(frame)),
                }
                placed = true;
            }
            pos += frame.len;
            count += 1;
        }
        Ok(Scan {
            end: pos,
            count,
            stride: 0,
            placed,
        })
    }

    /// Moves header bytes from the buffer into the header reader.
    fn absorb_header(&mut self) {
        let Some(reader) = self.header.as_mut() else {
            return;
        };
        let input = &self.buf.bytes()[self.head..self.tail];
        let policy = self.config.upgrade_policy;
        match reader.absorb(input, policy, self.config.max_metadata_len) {
            Ok((used, header)) => {
                self.head += used;
                self.head_offset += used as u64;
                if let Some(header) = header {
                    self.format = Some(Format {
                        version: header.version,
                        ts_out: header.ts_out,
                        layout: Layout::new(header.version, header.ts_out, policy),
                    });
                    debug_assert_eq!(self.head_offset, header.len);
                    self.metadata = Some(Box::new(header.metadata));
                    self.header = None;
                    // Start the records on an aligned boundary.
                    self.compact();
                }
            }
            Err(err) => {
                self.fail(err);
            }
        }
    }

    /// Frees the bytes of records already delivered.
    #[inline]
    fn release(&mut self) {
        if self.delivered > 0 {
            self.head += self.delivered;
            self.head_offset += self.delivered as u64;
            self.delivered = 0;
        }
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        }
    }

    /// Moves buffered bytes to the start of the buffer when that is cheap relative to
    /// the room gained, or needed to fit the largest possible record.
    fn compact(&mut self) {
        if self.head == 0 {
            return;
        }
        let data_len = self.tail - self.head;
        let end_space = self.buf.len() - self.tail;
        let misaligned = self.head % RECORD_ALIGN != 0;
        if data_len <= self.head || end_space < MAX_FRAME_LEN || misaligned {
            self.buf.bytes_mut().copy_within(self.head..self.tail, 0);
            self.head = 0;
            self.tail = data_len;
        }
    }

    /// Makes `err` sticky and returns it.
    fn fail(&mut self, err: Error) -> Error {
        self.failure = Some(err.clone());
        err
    }

    /// A record that passed framing but could not be placed: unreachable by the
    /// framing checks, reported as a sticky framing error rather than a panic.
    fn fail_internal(&mut self, frame: Frame) -> Error {
        let err = internal_error(self.head_offset, frame);
        self.fail(err)
    }
}

/// The error for a record that passed framing yet could not be handed out (no input
/// reaches this; it stands in for a panic).
fn internal_error(offset: u64, frame: Frame) -> Error {
    Error::RecordLength {
        offset,
        length_words: u8::try_from(frame.len / 4).unwrap_or(u8::MAX),
        rtype: 0,
    }
}

/// Whether the record at buffer position `pos` must be copied or converted into
/// scratch space before it can be handed out.
#[inline]
fn needs_placing(upgrade: Upgrade, pos: usize) -> bool {
    upgrade != Upgrade::None || pos % RECORD_ALIGN != 0
}

/// Writes the record `src` in its handed-out form to the start of `out`: converted per
/// `upgrade`, or copied as is (to realign it). Returns the bytes written.
fn place(
    src: &[u8],
    upgrade: Upgrade,
    ts_out: bool,
    out: &mut [u8],
    stage: &mut [u8],
) -> Option<usize> {
    if upgrade == Upgrade::None {
        out.get_mut(..src.len())?.copy_from_slice(src);
        return Some(src.len());
    }
    let rec = if src.as_ptr().align_offset(RECORD_ALIGN) == 0 {
        record_at(src)?
    } else {
        let staged = stage.get_mut(..src.len())?;
        staged.copy_from_slice(src);
        record_at(staged)?
    };
    upgrade::convert(upgrade, ts_out, rec, out)
}

/// Records decoded together by [`DbnDecoder::poll_batch`], yielded in stream order.
///
/// Each yielded record counts as delivered; records not yet yielded when the batch is
/// dropped stay in the decoder for the next poll.
#[derive(Debug)]
pub struct RecordBatch<'a> {
    /// The batch's bytes in the record buffer.
    data: &'a [u8],
    /// Buffer position of `data[0]` (for alignment).
    base: usize,
    pos: usize,
    /// Converted and realigned records, in order.
    scratch: &'a [u8],
    scratch_pos: usize,
    /// Whether any record is in `scratch`.
    placed: bool,
    /// The length of every record, when all have one length and are in place (else
    /// 0): positions then advance without waiting for each record's length byte.
    stride: usize,
    layout: &'a Layout,
    remaining: usize,
    delivered: &'a mut usize,
}

impl RecordBatch<'_> {
    /// The `rtype` of the record the next call to `next` yields, if any.
    #[inline]
    pub fn peek_rtype(&self) -> Option<u8> {
        if self.remaining == 0 {
            return None;
        }
        self.data.get(self.pos + 1).copied()
    }
}

impl<'a> Iterator for RecordBatch<'a> {
    type Item = RecordRef<'a>;

    #[inline]
    fn next(&mut self) -> Option<RecordRef<'a>> {
        if self.remaining == 0 {
            return None;
        }
        let rec = if self.stride != 0 {
            // The position advances by the stride without waiting for the length
            // byte; `record_at` still checks every record (alignment, header length).
            let end = self.pos + self.stride;
            let rec = record_at(self.data.get(self.pos..end)?)?;
            self.pos = end;
            rec
        } else {
            let header = self.data.get(self.pos..self.pos + 2)?;
            let len = usize::from(header[0]) * 4;
            let rec = if self.placed
                && needs_placing(self.layout.entry(header[1]).upgrade, self.base + self.pos)
            {
                let rec = record_at(self.scratch.get(self.scratch_pos..)?)?;
                self.scratch_pos += round_up_8(usize::from(self.scratch[self.scratch_pos]) * 4);
                rec
            } else {
                record_at(self.data.get(self.pos..self.pos + len)?)?
            };
            self.pos += len;
            rec
        };
        // Delivered bytes count from the batch's start (the decoder released the
        // earlier ones before creating it).
        *self.delivered = self.pos;
        self.remaining -= 1;
        Some(rec)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for RecordBatch<'_> {}

#[cfg(test)]
mod tests {
    use dbn::{MboMsg, TradeMsg, rtype};

    use super::*;
    use crate::FragmentFormat;

    fn mbo(i: u64) -> Vec<u8> {
        let mut rec = MboMsg::default();
        rec.hd.rtype = rtype::MBO;
        rec.hd.ts_event = i;
        rec.as_ref().to_vec()
    }

    fn trade(i: u64) -> Vec<u8> {
        let mut rec = TradeMsg::default();
        rec.hd.rtype = rtype::MBP_0;
        rec.hd.ts_event = i;
        rec.as_ref().to_vec()
    }

    fn fragment_decoder() -> DbnDecoder {
        let config = DecoderConfig::default().fragment(FragmentFormat {
            version: 3,
            ts_out: false,
        });
        DbnDecoder::new(config).expect("valid config")
    }

    /// Drains `dec` with `poll_batch(max)`, taking at most `take` records of each batch;
    /// returns the `ts_event`s in order, every batch's announced length, and the error.
    fn drain(
        dec: &mut DbnDecoder,
        max: usize,
        take: usize,
    ) -> (Vec<u64>, Vec<usize>, Option<Error>) {
        let (mut seen, mut lens) = (Vec::new(), Vec::new());
        loop {
            match dec.poll_batch(max) {
                Ok(Decoded::Record(batch)) => {
                    lens.push(batch.len());
                    for rec in batch.take(take) {
                        assert_eq!(rec.as_ref().as_ptr() as usize % RECORD_ALIGN, 0);
                        seen.push(rec.header().ts_event);
                    }
                }
                Ok(Decoded::Metadata(_)) => unreachable!("fragments have no metadata"),
                Ok(Decoded::NeedInput(_) | Decoded::End) => return (seen, lens, None),
                Err(err) => return (seen, lens, Some(err)),
            }
        }
    }

    #[test]
    fn runs_of_one_length_and_mixed_records_come_out_in_order() {
        // A long run, a different record, a short run, then alternating types.
        let mut stream = Vec::new();
        let mut want = Vec::new();
        let mut push = |bytes: Vec<u8>, i: u64| {
            stream.extend_from_slice(&bytes);
            want.push(i);
        };
        for i in 0..50 {
            push(mbo(i), i);
        }
        push(trade(50), 50);
        for i in 51..54 {
            push(mbo(i), i);
        }
        for i in 54..80 {
            push(if i % 2 == 0 { trade(i) } else { mbo(i) }, i);
        }
        for (max, take) in [
            (usize::MAX, usize::MAX),
            (7, usize::MAX),
            (usize::MAX, 3),
            (1, 1),
        ] {
            let mut dec = fragment_decoder();
            assert_eq!(dec.handle_input(&stream), stream.len());
            dec.finish().expect("complete records");
            let (seen, lens, err) = drain(&mut dec, max, take);
            assert!(err.is_none(), "{err:?}");
            assert_eq!(seen, want, "max {max}, take {take}");
            assert!(lens.iter().all(|&n| (1..=max).contains(&n)), "{lens:?}");
            if (max, take) == (usize::MAX, usize::MAX) {
                // The long run is a batch by itself; the short run joins what follows.
                assert_eq!(lens, [50, 30]);
            }
        }
    }

    #[test]
    fn a_short_record_after_a_run_is_reported_at_its_offset() {
        let mut stream: Vec<u8> = (0..40).flat_map(mbo).collect();
        let mut short = trade(40);
        short[1] = rtype::MBO; // 48 bytes: shorter than an MBO record
        stream.extend_from_slice(&short);
        stream.extend_from_slice(&mbo(41));
        let mut dec = fragment_decoder();
        assert_eq!(dec.handle_input(&stream), stream.len());
        let (seen, _, err) = drain(&mut dec, usize::MAX, usize::MAX);
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
        match err {
            Some(Error::RecordTooShort {
                offset,
                length,
                min,
                ..
            }) => assert_eq!((offset, length, min), (40 * 56, 48, 56)),
            other => panic!("expected RecordTooShort, got {other:?}"),
        }
    }

    #[test]
    fn a_misaligned_run_is_realigned() {
        // A 20-byte record of an unknown type shifts every later record off the
        // 8-byte grid: they are copied to scratch, never handed out misaligned.
        let mut stream = vec![5u8, 0xEE, 0, 0];
        stream.resize(20, 0);
        stream.extend((0..40).flat_map(mbo));
        let mut dec = fragment_decoder();
        assert_eq!(dec.handle_input(&stream), stream.len());
        let (seen, _, err) = drain(&mut dec, usize::MAX, usize::MAX);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(seen.len(), 41);
        assert_eq!(&seen[1..], (0..40).collect::<Vec<_>>());
    }
}
