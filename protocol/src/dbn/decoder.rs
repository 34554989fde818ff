//! The sans-IO DBN decoder.

use dbn::{Metadata, RecordRef};

use super::aligned_buf::{AlignedBuf, round_up_8};
use super::config::DecoderConfig;
use super::header::HeaderReader;
use super::layout::{FieldCheck, Layout, Upgrade, invalid_field};
use super::record_cast::{HEADER_LEN, RECORD_ALIGN, Run, record_at};
use super::upgrade;
use crate::{Error, TruncatedPart};

/// The largest record DBN framing can express: 255 four-byte words.
const MAX_FRAME_LEN: usize = 255 * 4;

/// Size of the scratch area for converted and realigned records: several of the
/// largest records (a batch whose scratch is full ends; the next poll continues). It
/// is smaller than the record buffer because such records are rare (conversions of
/// old definitions and statistics, records after one whose length is not a multiple
/// of 8), and the decoder zeroes it when it is created.
const SCRATCH_LEN: usize = 8 * 1024;

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
    layout: &'static Layout,
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
/// The record buffer (default 64 KiB), an 8 KiB scratch area for converted and
/// realigned records and a 1 KiB staging area are allocated once in
/// [`new`](Self::new). The metadata block is held only until it is
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
    /// The length of the last batch handed out (0 when none is pending): its
    /// deliveries are folded into `delivered` by the next mutation.
    batch_len: usize,
    /// The last batch's yielded bytes, kept up to date by the batch as two parts: the
    /// offset where its current run starts, and the run's bytes yielded.
    batch_yielded: [usize; 2],
    /// The header bytes (length byte and `rtype`, little-endian) and length of the last
    /// record [`poll`](Self::poll) framed in full and handed out in place, unconverted
    /// and without field checks: a record repeating those two bytes passes the same
    /// framing (as in a batch's run), so `poll` and `peek_rtype` take it after
    /// comparing them and checking it is whole and aligned.
    repeat: Option<(u16, usize)>,
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

/// Where a complete, valid record sits in the buffer.
#[derive(Debug, Clone, Copy)]
struct Frame {
    len: usize,
    upgrade: Upgrade,
    /// The record's enum fields were checked (it cannot join an unchecked run).
    checked: bool,
}

/// What [`DbnDecoder::start_batch`] found.
enum BatchStart {
    /// A batch starts: whether its first record may lead a run, and the scratch bytes
    /// holding it when it was placed.
    Records {
        run: bool,
        prepared: usize,
    },
    /// Not a batch: what [`DbnDecoder::poll_batch`] returns instead.
    Metadata(Box<Metadata>),
    NeedInput(usize),
    End,
}

/// Why the record at some position fails framing (the decoder adds the offset and
/// the stream's version to make an [`Error`]).
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The header announces fewer than 16 bytes.
    Length,
    /// Shorter than the struct of its `rtype` (`min` bytes).
    TooShort { min: usize },
    /// An enum field holds a byte its enum does not define.
    Field { field: &'static str, value: u8 },
}

/// Frames the record at the start of `rest` (the buffered bytes from its position
/// on): `Ok(None)` when it is not complete yet. Shared by every poll, so that a batch
/// accepts exactly the records that [`DbnDecoder::poll`] accepts.
#[inline]
fn frame(rest: &[u8], layout: &Layout) -> Result<Option<Frame>, Fault> {
    let Some(&[length_words, rtype]) = rest.get(..2) else {
        return Ok(None);
    };
    if rest.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = usize::from(length_words) * 4;
    if len < HEADER_LEN {
        return Err(Fault::Length);
    }
    let entry = layout.entry(rtype);
    if len < usize::from(entry.min_len) {
        return Err(Fault::TooShort {
            min: usize::from(entry.min_len),
        });
    }
    let Some(record) = rest.get(..len) else {
        return Ok(None);
    };
    let checked = entry.fields != FieldCheck::None;
    if checked {
        check_fields(record, entry.fields)?;
    }
    Ok(Some(Frame {
        len,
        upgrade: entry.upgrade,
        checked,
    }))
}

/// Checks the enum fields of a whole record (only old instrument definitions have
/// any). Out of line, so that [`frame`] stays small enough to be inlined on the path
/// every other record takes.
#[cold]
#[inline(never)]
fn check_fields(record: &[u8], check: FieldCheck) -> Result<(), Fault> {
    match invalid_field(check, record) {
        Some((field, value)) => Err(Fault::Field { field, value }),
        None => Ok(()),
    }
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
                    layout: Layout::shared(
                        fragment.version,
                        fragment.ts_out,
                        config.upgrade_policy,
                    ),
                }),
            ),
            None => (Some(HeaderReader::default()), None),
        };
        Ok(Self {
            buf: AlignedBuf::new(config.buffer_size),
            scratch: AlignedBuf::new(SCRATCH_LEN),
            stage: AlignedBuf::new(MAX_FRAME_LEN),
            config,
            header,
            format,
            metadata: None,
            head: 0,
            tail: 0,
            head_offset: 0,
            delivered: 0,
            batch_len: 0,
            batch_yielded: [0; 2],
            repeat: None,
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
        self.head_offset + (self.delivered + self.batch_yielded[0] + self.batch_yielded[1]) as u64
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
        while taken < input.len() && self.make_space() {
            // Past the buffer's initialised prefix the copy initialises it: a new
            // decoder fed by copy never zeroes its buffer first.
            let n = self.buf.write_at(self.tail, &input[taken..]);
            if n == 0 {
                break;
            }
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
        if !self.make_space() {
            return &mut [];
        }
        let tail = self.tail;
        &mut self.buf.bytes_mut()[tail..]
    }

    /// The length of the record after those delivered when it repeats the header
    /// bytes of [`repeat`](Self::repeat), is whole and starts aligned, with no batch
    /// pending and no error; `None` otherwise (the full path decides).
    #[inline(always)]
    fn repeated_next(&self) -> Option<usize> {
        let (header, len) = self.repeat?;
        if self.batch_len != 0 || self.failure.is_some() {
            return None;
        }
        let next = self.head + self.delivered;
        if next + len > self.tail || next % RECORD_ALIGN != 0 {
            return None;
        }
        let bytes = self.buf.bytes();
        (u16::from_le_bytes([bytes[next], bytes[next + 1]]) == header).then_some(len)
    }

    /// Frees delivered records and compacts; `false` when no input may be taken
    /// (after an error or [`finish`](Self::finish)).
    fn make_space(&mut self) -> bool {
        self.release();
        if self.failure.is_some() || self.eof {
            return false;
        }
        self.compact();
        true
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
    // Inlined, with the step for a repeated record; the rest is `poll_framed`.
    #[inline]
    pub fn poll(&mut self) -> Result<Decoded<RecordRef<'_>>, Error> {
        if let Some(len) = self.repeated_next() {
            // What `release` does, knowing that no batch is pending and a record
            // follows the delivered bytes.
            let next = self.head + self.delivered;
            self.head_offset += self.delivered as u64;
            self.head = next;
            self.delivered = len;
            let offset = self.head_offset;
            // `record_at` cannot refuse a whole, aligned record (`repeated_next`).
            return record_at(&self.buf.bytes()[next..next + len])
                .map(Decoded::Record)
                .ok_or_else(|| repeated_error(offset, len));
        }
        self.poll_framed()
    }

    /// [`poll`](Self::poll) for everything but a repeated record: the prologue, then
    /// the record at the head framed in full.
    #[inline(never)]
    fn poll_framed(&mut self) -> Result<Decoded<RecordRef<'_>>, Error> {
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
        if placed.is_none() && joins_run(frame) {
            let bytes = self.buf.bytes();
            self.repeat = Some((
                u16::from_le_bytes([bytes[head], bytes[head + 1]]),
                frame.len,
            ));
        }
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
    /// The batch frames its records one by one as it yields them, with the same checks
    /// as [`poll`](Self::poll), so the first record is handed out without waiting for
    /// the others to be checked. It ends after `max` records, at the end of the
    /// buffered complete records, or before the first record that fails framing.
    ///
    /// # Errors
    /// As [`poll`](Self::poll). An error found after the first record of a batch ends
    /// the batch; the next poll returns it (with its offset), once every record before
    /// it has been yielded.
    #[must_use = "a polled batch or error must be handled"]
    // Inlined, so that the batch is built in the caller's frame, where its fields can
    // live in registers while the caller loops over it; the work is in `start_batch`.
    #[inline]
    pub fn poll_batch(&mut self, max: usize) -> Result<Decoded<RecordBatch<'_>>, Error> {
        let (run, prepared) = match self.start_batch()? {
            BatchStart::Records { run, prepared } => (run, prepared),
            BatchStart::Metadata(metadata) => return Ok(Decoded::Metadata(metadata)),
            BatchStart::NeedInput(n) => return Ok(Decoded::NeedInput(n)),
            BatchStart::End => return Ok(Decoded::End),
        };
        let Self {
            buf,
            scratch,
            stage,
            format,
            head,
            tail,
            batch_len,
            batch_yielded,
            ..
        } = self;
        let Some(format) = format.as_ref() else {
            // `start_batch` framed a record, so the format is known.
            return Ok(Decoded::NeedInput(1));
        };
        let data = &buf.bytes()[*head..*tail];
        // Nothing is delivered until the batch yields (`release` folds what it did).
        *batch_len = data.len();
        *batch_yielded = [0; 2];
        let max = max.max(1);
        let run = if run {
            Run::new(data, [data[0], data[1]], max)
        } else {
            Run::none(data)
        };
        Ok(Decoded::Record(RecordBatch {
            remaining: max - run.count(),
            run,
            len: data.len(),
            yielded: batch_yielded,
            placer: Placer {
                framing: Framing {
                    base: *head,
                    layout: format.layout,
                    ts_out: format.ts_out,
                },
                space: Space {
                    scratch: scratch.bytes_mut(),
                    stage: stage.bytes_mut(),
                    prepared,
                },
            },
        }))
    }

    /// Everything [`poll_batch`](Self::poll_batch) does before it builds the batch:
    /// the prologue, framing the first record, placing it when it must be placed.
    fn start_batch(&mut self) -> Result<BatchStart, Error> {
        if let Some(step) = self.poll_prologue::<()>() {
            return step.map(|decoded| match decoded {
                Decoded::Metadata(metadata) => BatchStart::Metadata(metadata),
                Decoded::NeedInput(n) => BatchStart::NeedInput(n),
                Decoded::End | Decoded::Record(()) => BatchStart::End,
            });
        }
        let first = match self.frame_at(self.head) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                return self.starved::<()>().map(|decoded| match decoded {
                    Decoded::Metadata(metadata) => BatchStart::Metadata(metadata),
                    Decoded::NeedInput(n) => BatchStart::NeedInput(n),
                    Decoded::End | Decoded::Record(()) => BatchStart::End,
                });
            }
            Err(err) => return Err(self.fail(err)),
        };
        // `poll_prologue` released what earlier batches delivered: the batch counts
        // its deliveries from zero.
        debug_assert_eq!((self.delivered, self.batch_len), (0, 0));
        let head = self.head;
        let ts_out = self.format.as_ref().is_some_and(|f| f.ts_out);
        // The first record must come out of the batch: one that needs placing is
        // placed now, so that a failure (which framing rules out) is reported here
        // rather than as an empty batch.
        let prepared = if needs_placing(first.upgrade, head) {
            let src = &self.buf.bytes()[head..head + first.len];
            let out = self.scratch.bytes_mut();
            match place(src, first.upgrade, ts_out, out, self.stage.bytes_mut()) {
                Some(n) => n,
                None => return Err(self.fail_internal(first)),
            }
        } else {
            0
        };
        let run = joins_run(first) && !needs_placing(first.upgrade, head);
        Ok(BatchStart::Records { run, prepared })
    }

    /// The `rtype` of the next record when a complete one is buffered and nothing
    /// (metadata, an error) comes before it; lets a caller route a record before
    /// taking it.
    #[inline]
    pub fn peek_rtype(&mut self) -> Option<u8> {
        if self.repeated_next().is_some() {
            return self.repeat.map(|(header, _)| header.to_le_bytes()[1]);
        }
        self.peek_framed()
    }

    /// [`peek_rtype`](Self::peek_rtype) for everything but a repeated record.
    #[inline(never)]
    fn peek_framed(&mut self) -> Option<u8> {
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
        // A repeated record is ready (the zstd layer asks before every poll while it
        // holds output).
        if self.repeated_next().is_some() {
            return false;
        }
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
    #[inline(always)]
    fn frame_at(&self, pos: usize) -> Result<Option<Frame>, Error> {
        let Some(format) = &self.format else {
            return Ok(None);
        };
        match frame(&self.buf.bytes()[pos..self.tail], format.layout) {
            Ok(frame) => Ok(frame),
            Err(fault) => Err(self.fault_error(pos, fault)),
        }
    }

    /// The error for the record at `pos` failing framing with `fault`. Out of line, so
    /// that [`frame_at`](Self::frame_at) stays small on the path every record takes.
    #[cold]
    #[inline(never)]
    fn fault_error(&self, pos: usize, fault: Fault) -> Error {
        let bytes = self.buf.bytes();
        let (length_words, rtype) = (bytes[pos], bytes[pos + 1]);
        let offset = self.head_offset + (pos - self.head) as u64;
        let version = self.format.as_ref().map_or(0, |f| f.version);
        match fault {
            Fault::Length => Error::RecordLength {
                offset,
                length_words,
                rtype,
            },
            Fault::TooShort { min } => Error::RecordTooShort {
                offset,
                rtype,
                length: usize::from(length_words) * 4,
                min,
                version,
            },
            Fault::Field { field, value } => Error::InvalidRecordField {
                offset,
                rtype,
                field,
                value,
            },
        }
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
                        layout: Layout::shared(header.version, header.ts_out, policy),
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
        if self.batch_len > 0 {
            self.delivered += self.batch_yielded[0] + self.batch_yielded[1];
            self.batch_len = 0;
            self.batch_yielded = [0; 2];
        }
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
            self.buf
                .initialised_mut()
                .copy_within(self.head..self.tail, 0);
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

/// [`internal_error`] for a repeated record of `len` bytes at `offset`.
#[cold]
#[inline(never)]
fn repeated_error(offset: u64, len: usize) -> Error {
    internal_error(
        offset,
        Frame {
            len,
            upgrade: Upgrade::None,
            checked: false,
        },
    )
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

/// Whether records with the same two header bytes as this one, following it, may be
/// handed out without framing them again: they pass the same framing checks, need no
/// conversion and no field check. ([`Run::new`] adds the alignment conditions.)
#[inline]
fn joins_run(frame: Frame) -> bool {
    !frame.checked && frame.upgrade == Upgrade::None
}

/// The bytes a record takes in scratch space once placed.
fn placed_len(frame: Frame, ts_out: bool) -> usize {
    match frame.upgrade {
        Upgrade::None => frame.len,
        upgrade => upgrade::converted_len(upgrade, ts_out),
    }
}

/// Records decoded together by [`DbnDecoder::poll_batch`], yielded in stream order.
///
/// Each yielded record counts as delivered; records not yet yielded when the batch is
/// dropped stay in the decoder for the next poll.
///
/// The batch checks each record as it yields it (one pass over the buffer), exactly as
/// [`DbnDecoder::poll`] would: how many records it yields is not known in advance, and
/// [`size_hint`](Iterator::size_hint) gives bounds (at least one record before the
/// first is taken, at most `max`). The batch ends after `max` records, at the end of
/// the complete records buffered, before a record that fails framing (the next poll
/// reports the error at its offset), or when its scratch space for converted and
/// realigned records is full (the next poll continues).
///
/// Within a run of records with the same length byte and `rtype` as a record framed in
/// full and handed out in place, each record is handed out after comparing its two
/// header bytes with the run's: equal bytes pass the same length and minimum-size
/// checks, and a length that is a multiple of 8 keeps the next record aligned. Every
/// record is still viewed through the audited check of alignment and bounds.
pub struct RecordBatch<'a> {
    /// The cursor over the unconsumed bytes, in a run or not.
    run: Run<'a>,
    /// Bytes from the batch's first record to the buffer's tail.
    len: usize,
    /// Records the batch may still yield beyond those the run may hand out (`max`
    /// minus those yielded minus `run.count()`).
    remaining: usize,
    /// The decoder's count of this batch's bytes yielded (delivered), kept up to date
    /// as records are yielded, in two parts: the offset where `run` starts (written
    /// when a run starts) and `run`'s position (written per record: a plain store).
    yielded: &'a mut [usize; 2],
    /// What framing and placing a record outside a run needs (kept apart, so that the
    /// fields above can live in registers in the caller's loop).
    placer: Placer<'a>,
}

/// The state [`RecordBatch`] needs only for records it frames in full.
struct Placer<'a> {
    /// What framing needs (copied, never borrowed, by the out-of-line step).
    framing: Framing<'a>,
    /// Where converted and realigned records go.
    space: Space<'a>,
}

/// The read-only part of a [`Placer`].
#[derive(Clone, Copy)]
struct Framing<'a> {
    /// Buffer position of the batch's `data[0]` (for alignment).
    base: usize,
    layout: &'a Layout,
    ts_out: bool,
}

/// The scratch space of a [`Placer`].
#[derive(Default)]
struct Space<'a> {
    /// Unused scratch space for converted and realigned records; yielded placed
    /// records borrow the part split off before it.
    scratch: &'a mut [u8],
    /// Staging area for a misaligned record that must be converted.
    stage: &'a mut [u8],
    /// Bytes at the start of `scratch` already holding the first record, placed by
    /// `poll_batch` (0 when it is handed out in place or was taken).
    prepared: usize,
}

impl<'a> Framing<'a> {
    /// Frames the record at the start of `rest` (at batch position `pos`) in full and
    /// hands it out, in place or placed into `space`; returns it with its frame.
    /// `None` ends the batch.
    ///
    /// Takes and returns the space by value: a pointer into the batch would pin every
    /// field of the batch to memory in the caller's loop.
    #[inline(never)]
    fn next_framed(
        self,
        mut space: Space<'a>,
        rest: &'a [u8],
        pos: usize,
    ) -> (Space<'a>, Option<(RecordRef<'a>, Frame)>) {
        let next = self.frame_and_place(&mut space, rest, pos);
        (space, next)
    }

    /// The body of [`next_framed`](Self::next_framed).
    #[inline(always)]
    fn frame_and_place(
        self,
        space: &mut Space<'a>,
        rest: &'a [u8],
        pos: usize,
    ) -> Option<(RecordRef<'a>, Frame)> {
        let frame = frame(rest, self.layout).ok()??;
        let rec = if needs_placing(frame.upgrade, self.base + pos) {
            let n = if space.prepared != 0 {
                std::mem::take(&mut space.prepared)
            } else {
                if placed_len(frame, self.ts_out) > space.scratch.len() {
                    return None;
                }
                let src = &rest[..frame.len];
                place(src, frame.upgrade, self.ts_out, space.scratch, space.stage)?
            };
            let scratch = std::mem::take(&mut space.scratch);
            let (placed, unused) = scratch.split_at_mut(round_up_8(n).min(scratch.len()));
            space.scratch = unused;
            let placed: &'a [u8] = placed;
            record_at(placed.get(..n)?)?
        } else {
            record_at(&rest[..frame.len])?
        };
        Some((rec, frame))
    }

    /// Whether the record at the start of `rest` (at batch position `pos`) is one
    /// [`next_framed`](Self::next_framed) hands out.
    fn would_yield(self, space: &Space<'_>, rest: &[u8], pos: usize) -> bool {
        match frame(rest, self.layout) {
            Ok(Some(frame)) => {
                !needs_placing(frame.upgrade, self.base + pos)
                    || space.prepared != 0
                    || placed_len(frame, self.ts_out) <= space.scratch.len()
            }
            _ => false,
        }
    }
}

impl std::fmt::Debug for RecordBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBatch")
            .field("base", &self.placer.framing.base)
            .field("pos", &(self.len - self.run.rest_len()))
            .field("buffered", &self.run.rest_len())
            .field("remaining", &(self.remaining + self.run.count()))
            .field("run", &self.run)
            .field("scratch_free", &self.placer.space.scratch.len())
            .finish_non_exhaustive()
    }
}

impl<'a> RecordBatch<'a> {
    /// The next record with what `classify` makes of its `rtype`, when `classify`
    /// returns `Some`; when it returns `None` the batch ends before that record, which
    /// stays buffered for the next poll (as after [`peek_rtype`](Self::peek_rtype)
    /// returned its `rtype` and the caller dropped the batch). `None` also when the
    /// batch ends as [`next`](Iterator::next) would.
    ///
    /// Routing records by type (a caller that hands some types out and stops before
    /// others) costs one framing per record this way, not two as `peek_rtype` then
    /// `next` do.
    #[inline(always)]
    pub fn next_classified<T>(
        &mut self,
        mut classify: impl FnMut(u8) -> Option<T>,
    ) -> Option<(RecordRef<'a>, T)> {
        let before = self.run;
        if let Some(rec) = self.run.next() {
            let Some(class) = classify(rec.header().rtype) else {
                self.run = before;
                return None;
            };
            self.yielded[1] = self.run.pos();
            return Some((rec, class));
        }
        let class = classify(self.peek_rtype()?)?;
        Some((self.next()?, class))
    }

    /// The `rtype` of the record the next call to `next` yields; `None` when the batch
    /// ends there.
    #[inline]
    pub fn peek_rtype(&self) -> Option<u8> {
        let rest = self.run.rest();
        let mut probe = self.run;
        if probe.next().is_some() {
            return Some(rest[1]);
        }
        if self.remaining + self.run.count() == 0 {
            return None;
        }
        let pos = self.len - rest.len();
        if self
            .placer
            .framing
            .would_yield(&self.placer.space, rest, pos)
        {
            return Some(rest[1]);
        }
        None
    }
}

/// Frames the record at the end of `run` in full, yields it and starts the next run
/// (the slow step of [`RecordBatch::next`], when the run hands out nothing more);
/// `len` is the batch's length, `remaining` the records the batch may yield beyond
/// the run's. `None` ends the batch.
#[inline(always)]
fn step<'a>(
    run: &mut Run<'a>,
    remaining: &mut usize,
    len: usize,
    placer: &mut Placer<'a>,
    yielded: &mut [usize; 2],
) -> Option<RecordRef<'a>> {
    // What the run could still have handed out goes back to the batch.
    *remaining += run.stop();
    if *remaining == 0 {
        return None;
    }
    let rest = run.rest();
    let pos = len - rest.len();
    let space = std::mem::take(&mut placer.space);
    let (space, next) = placer.framing.next_framed(space, rest, pos);
    placer.space = space;
    let (rec, frame) = next?;
    *remaining -= 1;
    let after = &rest[frame.len..];
    *run = if joins_run(frame) {
        let run = Run::new(after, [rest[0], rest[1]], *remaining);
        *remaining -= run.count();
        run
    } else {
        Run::none(after)
    };
    *yielded = [len - after.len(), 0];
    Some(rec)
}

impl<'a> Iterator for RecordBatch<'a> {
    type Item = RecordRef<'a>;

    #[inline(always)]
    fn next(&mut self) -> Option<RecordRef<'a>> {
        let rec = match self.run.next() {
            // The same length byte and `rtype` as the record that started the run: it
            // passes the same framing checks; the run holds it whole.
            Some(rec) => rec,
            None => step(
                &mut self.run,
                &mut self.remaining,
                self.len,
                &mut self.placer,
                self.yielded,
            )?,
        };
        self.yielded[1] = self.run.pos();
        Some(rec)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // `poll_batch` checked the first record; every record is at least a header.
        let rest = self.run.rest().len();
        let remaining = self.remaining + self.run.count();
        let first = usize::from(rest == self.len && remaining > 0);
        let most = remaining.min(rest / HEADER_LEN);
        (first, Some(most))
    }
}

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
    /// returns the `ts_event`s in order, how many records each batch yielded, and the
    /// error. Checks every batch's `size_hint` and `peek_rtype` against what it yields.
    fn drain(
        dec: &mut DbnDecoder,
        max: usize,
        take: usize,
    ) -> (Vec<u64>, Vec<usize>, Option<Error>) {
        let (mut seen, mut lens) = (Vec::new(), Vec::new());
        loop {
            match dec.poll_batch(max) {
                Ok(Decoded::Record(mut batch)) => {
                    let mut yielded = 0;
                    while yielded < take {
                        let (low, high) = batch.size_hint();
                        let high = high.expect("an upper bound");
                        assert!(low <= high && high <= max, "{low}..={high}, max {max}");
                        assert_eq!(low, usize::from(yielded == 0), "only the first is sure");
                        let peeked = batch.peek_rtype();
                        let Some(rec) = batch.next() else {
                            assert_eq!(peeked, None, "peek saw a record next did not yield");
                            break;
                        };
                        assert_eq!(peeked, Some(rec.header().rtype));
                        assert!(high >= 1);
                        assert_eq!(rec.as_ref().as_ptr() as usize % RECORD_ALIGN, 0);
                        seen.push(rec.header().ts_event);
                        yielded += 1;
                    }
                    assert!(yielded >= 1, "an empty batch was handed out");
                    lens.push(yielded);
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
                // One pass: runs and mixed records come out of one batch.
                assert_eq!(lens, [80]);
            }
        }
    }

    #[test]
    fn next_classified_stops_before_the_first_refused_record_and_keeps_it() {
        // Runs of MBO records broken by pairs of trades. The caller refuses a trade
        // unless it is the first record of its batch: each trade ends a batch and
        // starts the next. The second trade of a pair comes from the run the first
        // started, the others from full framing.
        let stream: Vec<u8> = (0..60)
            .flat_map(|i| if i % 13 >= 11 { trade(i) } else { mbo(i) })
            .collect();
        for max in [usize::MAX, 5, 1] {
            let mut dec = fragment_decoder();
            assert_eq!(dec.handle_input(&stream), stream.len());
            dec.finish().expect("complete records");
            let (mut seen, mut lens) = (Vec::new(), Vec::new());
            loop {
                let mut batch = match dec.poll_batch(max) {
                    Ok(Decoded::Record(batch)) => batch,
                    Ok(Decoded::End) => break,
                    other => panic!("max {max}: unexpected {other:?}"),
                };
                let mut yielded = 0;
                loop {
                    let first = yielded == 0;
                    let Some((rec, class)) = batch
                        .next_classified(|rtype| (rtype != rtype::MBP_0 || first).then_some(rtype))
                    else {
                        break;
                    };
                    assert_eq!(class, rec.header().rtype);
                    seen.push(rec.header().ts_event);
                    yielded += 1;
                }
                assert!((1..=max).contains(&yielded), "max {max}: {yielded}");
                if yielded < max && seen.len() < 60 {
                    // Stopped by the caller: the refused trade is next, still buffered.
                    assert_eq!(batch.peek_rtype(), Some(rtype::MBP_0), "max {max}");
                }
                lens.push(yielded);
            }
            assert_eq!(seen, (0..60).collect::<Vec<_>>(), "max {max}");
            if max == usize::MAX {
                assert_eq!(lens, [11, 1, 12, 1, 12, 1, 12, 1, 9]);
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
    fn a_batch_whose_scratch_is_full_ends_and_the_next_poll_continues() {
        // v1 definitions (360 bytes) converted to v3 (520 bytes): 45 fit a 16 KiB
        // buffer, 15 the 8 KiB scratch area.
        let def = |i: u64| {
            let mut rec = dbn::v1::InstrumentDefMsg {
                security_update_action: dbn::SecurityUpdateAction::Add,
                ..Default::default()
            };
            rec.hd.ts_event = i;
            rec.as_ref().to_vec()
        };
        let stream: Vec<u8> = (0..100).flat_map(def).collect();
        let config = DecoderConfig::default()
            .buffer_size(16 * 1024)
            .fragment(FragmentFormat {
                version: 1,
                ts_out: false,
            });
        let mut dec = DbnDecoder::new(config).expect("valid config");
        let mut input = &stream[..];
        let (mut seen, mut lens) = (Vec::new(), Vec::new());
        while !input.is_empty() {
            let taken = dec.handle_input(input);
            input = &input[taken..];
            if input.is_empty() {
                dec.finish().expect("complete records");
            }
            let (batch_seen, batch_lens, err) = drain(&mut dec, usize::MAX, usize::MAX);
            assert!(err.is_none(), "{err:?}");
            seen.extend(batch_seen);
            lens.extend(batch_lens);
        }
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        assert_eq!(SCRATCH_LEN / 520, 15);
        assert_eq!(lens.iter().max(), Some(&15), "{lens:?}");
    }

    #[test]
    fn records_of_a_dropped_batch_and_a_later_error_come_in_order() {
        // A run, a record that breaks it, then a bad length: every good record comes
        // out (across dropped batches) before the error, at the bad record's offset.
        let mut stream: Vec<u8> = (0..10).flat_map(mbo).collect();
        stream.extend(trade(10));
        stream.extend((11..20).flat_map(mbo));
        let bad = stream.len() as u64;
        stream.extend([2u8, rtype::MBO, 0, 0]);
        stream.resize(stream.len() + 60, 0);
        let mut dec = fragment_decoder();
        assert_eq!(dec.handle_input(&stream), stream.len());
        let (seen, lens, err) = drain(&mut dec, usize::MAX, 4);
        assert_eq!(seen, (0..20).collect::<Vec<_>>());
        assert_eq!(lens, [4, 4, 4, 4, 4]);
        match err {
            Some(Error::RecordLength {
                offset,
                length_words,
                ..
            }) => assert_eq!((offset, length_words), (bad, 2)),
            other => panic!("expected RecordLength, got {other:?}"),
        }
        assert!(
            matches!(dec.poll_batch(1), Err(Error::RecordLength { .. })),
            "sticky"
        );
    }

    /// `poll` one record at a time: repeated records are taken after the two-byte
    /// compare, and everything that is not one (another type, a short record, a
    /// misaligned one, one cut off) goes through full framing with its own result.
    #[test]
    fn poll_hands_out_repeated_records_and_frames_the_rest_in_full() {
        let mut stream: Vec<u8> = (0..10).flat_map(mbo).collect();
        stream.extend(trade(10));
        stream.extend((11..20).flat_map(mbo));
        // 20 bytes of an unknown type: the next records start off the 8-byte grid.
        let mut odd = vec![5u8, 0xEE, 0, 0];
        odd.resize(20, 0);
        stream.extend(&odd);
        stream.extend((21..25).flat_map(mbo));
        let mut short = trade(25);
        short[1] = rtype::MBO; // 48 bytes: shorter than an MBO record
        stream.extend(&short);
        for piece in [1usize, 7, 56, 57, usize::MAX] {
            let mut dec = fragment_decoder();
            let mut seen = Vec::new();
            let mut fed = 0;
            let err = loop {
                match dec.poll() {
                    Ok(Decoded::Record(rec)) => {
                        assert_eq!(rec.as_ref().as_ptr() as usize % 8, 0, "aligned");
                        assert_eq!(rec.as_ref().len(), rec.header().record_size());
                        seen.push((rec.header().rtype, rec.header().ts_event));
                    }
                    Ok(Decoded::NeedInput(_)) if fed < stream.len() => {
                        let end = fed.saturating_add(piece).min(stream.len());
                        fed += dec.handle_input(&stream[fed..end]);
                    }
                    Ok(other) => panic!("piece {piece}: unexpected {other:?}"),
                    Err(err) => break err,
                }
            };
            let expected: Vec<(u8, u64)> = (0..25)
                .map(|i| match i {
                    10 => (rtype::MBP_0, 10),
                    20 => (0xEE, 0),
                    i => (rtype::MBO, i),
                })
                .collect();
            assert_eq!(seen, expected, "piece {piece}");
            match err {
                Error::RecordTooShort { offset, .. } => {
                    assert_eq!(offset, 23 * 56 + 48 + 20, "piece {piece}");
                }
                other => panic!("piece {piece}: expected RecordTooShort, got {other:?}"),
            }
            // The error is sticky: no repeated record is taken after it.
            assert!(dec.poll().is_err());
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
