//! One decoder for a `.dbn` or `.dbn.zst` byte stream: detects zstd by its magic
//! number and pipes decompressed bytes straight into the DBN decoder's buffer.

use dbn::RecordRef;

use crate::Error;
use crate::dbn::{DbnDecoder, Decoded, DecoderConfig, RecordBatch};
use crate::zstd::{ZSTD_MAGIC, ZstdDecoder};

/// Whether the byte stream is zstd-compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Decide from the first four bytes: the zstd frame magic means zstd. The default.
    #[default]
    Detect,
    /// Plain DBN.
    None,
    /// zstd-compressed DBN (one or more concatenated frames).
    Zstd,
}

/// Configuration of a [`StreamDecoder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// The DBN decoder's configuration.
    pub decoder: DecoderConfig,
    /// Plain, zstd, or detect.
    pub compression: Compression,
    /// Largest zstd window accepted, as a power of two (default 27: 128 MiB).
    pub zstd_window_log_max: u32,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            decoder: DecoderConfig::default(),
            compression: Compression::Detect,
            zstd_window_log_max: ZstdDecoder::DEFAULT_WINDOW_LOG_MAX,
        }
    }
}

#[derive(Debug)]
enum Mode {
    /// Collecting the first bytes to recognise the zstd magic.
    Detect {
        prefix: [u8; 4],
        len: usize,
    },
    Plain,
    Zstd(Box<ZstdDecoder>),
    /// The zstd layer failed; the DBN decoder reports it after its records.
    Failed,
}

/// Decodes a DBN stream that may be zstd-compressed, with the same sans-IO contract as
/// [`DbnDecoder`]: bytes in with [`handle_input`](Self::handle_input) (returns how many
/// were taken), records out with [`poll`](Self::poll) / [`poll_batch`](Self::poll_batch),
/// end of input with [`finish`](Self::finish).
///
/// Compressed input is taken only as far as the DBN buffer has room for its
/// decompressed bytes, so a consumer that stops polling stops the input too.
///
/// # Example
///
/// ```
/// use dbn_pipe_protocol::{Decoded, StreamConfig, StreamDecoder};
///
/// # fn main() -> Result<(), dbn_pipe_protocol::Error> {
/// # let compressed = dbn_pipe_protocol::doc_support::sample_dbn_zst();
/// let mut decoder = StreamDecoder::new(StreamConfig::default())?;
/// let mut records = 0;
/// for chunk in compressed.chunks(7) {
///     let mut chunk = chunk;
///     while !chunk.is_empty() {
///         let taken = decoder.handle_input(chunk);
///         chunk = &chunk[taken..];
///         while let Decoded::Record(_) | Decoded::Metadata(_) = decoder.poll()? {
///             records += 1;
///         }
///     }
/// }
/// decoder.finish()?;
/// while let Decoded::Record(_) = decoder.poll()? {
///     records += 1;
/// }
/// assert_eq!(records, 1 + 2); // metadata, then two records
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct StreamDecoder {
    dbn: DbnDecoder,
    mode: Mode,
    window_log_max: u32,
    /// [`finish`](Self::finish) was called; the DBN decoder is told once the zstd
    /// layer has nothing more to give it.
    eof: bool,
}

impl StreamDecoder {
    /// Creates the decoder.
    ///
    /// # Errors
    /// As [`DbnDecoder::new`] and [`ZstdDecoder::new`].
    pub fn new(config: StreamConfig) -> Result<Self, Error> {
        let dbn = DbnDecoder::new(config.decoder)?;
        let mode = match config.compression {
            Compression::Detect => Mode::Detect {
                prefix: [0; 4],
                len: 0,
            },
            Compression::None => Mode::Plain,
            Compression::Zstd => {
                Mode::Zstd(Box::new(ZstdDecoder::new(config.zstd_window_log_max)?))
            }
        };
        if let Mode::Detect { .. } = mode {
            // Validate the window limit now rather than on the first zstd byte.
            ZstdDecoder::new(config.zstd_window_log_max)?;
        }
        Ok(Self {
            dbn,
            mode,
            window_log_max: config.zstd_window_log_max,
            eof: false,
        })
    }

    /// The DBN decoder underneath (version, `ts_out`, byte counts).
    pub fn dbn(&self) -> &DbnDecoder {
        &self.dbn
    }

    /// Whether the stream turned out to be zstd-compressed (`None` while undecided).
    pub fn is_zstd(&self) -> Option<bool> {
        match self.mode {
            Mode::Detect { .. } => None,
            Mode::Plain => Some(false),
            Mode::Zstd(_) | Mode::Failed => Some(true),
        }
    }

    /// Takes as much of `input` as the DBN buffer has room for (after decompression)
    /// and returns how many bytes were taken. Fewer than offered means: poll, then
    /// offer the rest again.
    pub fn handle_input(&mut self, input: &[u8]) -> usize {
        if self.eof {
            return 0;
        }
        let mut taken = 0;
        if let Mode::Detect { prefix, len } = &mut self.mode {
            let n = (4 - *len).min(input.len());
            prefix[*len..*len + n].copy_from_slice(&input[..n]);
            *len += n;
            taken = n;
            if *len < 4 {
                return taken;
            }
            let prefix = *prefix;
            self.decide(&prefix);
        }
        taken + self.feed(&input[taken..])
    }

    /// Marks the end of input and reports whether the stream is complete, as
    /// [`DbnDecoder::finish`]; a stream that ends inside a zstd frame is reported as
    /// [`Error::Truncated`] with part `ZstdFrame`. When the zstd layer still holds
    /// decompressed bytes, the verdict comes from the poll after the last record.
    ///
    /// # Errors
    /// The truncation, framing or decompression error that ends the stream.
    pub fn finish(&mut self) -> Result<(), Error> {
        if self.dbn.is_finished() {
            // Called again: repeat the DBN decoder's verdict (a sticky error stays one).
            return self.dbn.finish();
        }
        if let Mode::Detect { prefix, len } = self.mode {
            // Too short to hold a zstd magic: whatever it is, it is not zstd.
            self.mode = Mode::Plain;
            let fed = self.dbn.handle_input(&prefix[..len]);
            debug_assert_eq!(fed, len);
        }
        self.eof = true;
        self.settle_eof().unwrap_or(Ok(()))
    }

    /// Returns the next item, as [`DbnDecoder::poll`].
    ///
    /// # Errors
    /// As [`DbnDecoder::poll`], plus decompression errors after the records before them.
    #[must_use = "a polled record or error must be handled"]
    pub fn poll(&mut self) -> Result<Decoded<RecordRef<'_>>, Error> {
        self.pump();
        self.dbn.poll()
    }

    /// Returns up to `max` records at once, as [`DbnDecoder::poll_batch`].
    ///
    /// # Errors
    /// As [`poll`](Self::poll).
    #[must_use = "a polled batch or error must be handled"]
    pub fn poll_batch(&mut self, max: usize) -> Result<Decoded<RecordBatch<'_>>, Error> {
        self.pump();
        self.dbn.poll_batch(max)
    }

    /// The `rtype` of the next record when a complete one is ready, as
    /// [`DbnDecoder::peek_rtype`].
    pub fn peek_rtype(&mut self) -> Option<u8> {
        self.pump();
        self.dbn.peek_rtype()
    }

    /// Whether a poll now returns something other than `NeedInput` (a record, the
    /// metadata, an error, or the end after [`finish`](Self::finish)).
    pub(crate) fn has_output(&mut self) -> bool {
        self.pump();
        self.dbn.is_finished() || !self.dbn.wants_input()
    }

    fn decide(&mut self, prefix: &[u8; 4]) {
        if *prefix == ZSTD_MAGIC {
            match ZstdDecoder::new(self.window_log_max) {
                Ok(zstd) => self.mode = Mode::Zstd(Box::new(zstd)),
                Err(err) => {
                    self.dbn.set_upstream_failure(err);
                    self.mode = Mode::Failed;
                    return;
                }
            }
        } else {
            self.mode = Mode::Plain;
        }
        let fed = self.feed(prefix);
        debug_assert_eq!(fed, 4, "an empty decoder takes its first four bytes");
    }

    /// Passes `input` down, decompressing when zstd; returns bytes taken.
    fn feed(&mut self, input: &[u8]) -> usize {
        match &mut self.mode {
            Mode::Detect { .. } | Mode::Failed => 0,
            Mode::Plain => self.dbn.handle_input(input),
            Mode::Zstd(zstd) => {
                let mut taken = 0;
                loop {
                    let space = self.dbn.space();
                    if space.is_empty() {
                        break;
                    }
                    match zstd.decompress(&input[taken..], space) {
                        Ok(progress) => {
                            self.dbn.fill(progress.produced);
                            taken += progress.consumed;
                            let idle = progress.consumed == 0 && progress.produced == 0;
                            if idle || (taken == input.len() && !zstd.output_pending()) {
                                break;
                            }
                        }
                        Err(err) => {
                            self.dbn.set_upstream_failure(err);
                            self.mode = Mode::Failed;
                            break;
                        }
                    }
                }
                taken
            }
        }
    }

    /// Moves decompressed bytes zstd still holds into the DBN decoder once it has no
    /// complete record left, then settles the end of input if it was reached.
    // Inlined: every poll passes here, and on plain input before the end it does
    // nothing but these two tests.
    #[inline]
    fn pump(&mut self) {
        if let Mode::Zstd(zstd) = &self.mode {
            if zstd.output_pending() && self.dbn.wants_input() {
                let fed = self.feed(&[]);
                debug_assert_eq!(fed, 0);
            }
        }
        if self.eof {
            if let Some(Err(_)) = self.settle_eof() {
                // The error is now sticky in the DBN decoder; the poll returns it in
                // order.
            }
        }
    }

    /// Once input has ended and zstd holds nothing more, tells the DBN decoder.
    /// Returns `None` while zstd still holds output, else the DBN verdict.
    fn settle_eof(&mut self) -> Option<Result<(), Error>> {
        if !self.eof || self.dbn.is_finished() {
            return None;
        }
        if let Mode::Zstd(zstd) = &self.mode {
            // What zstd still holds is moot once the DBN decoder has failed.
            if zstd.output_pending() && !self.dbn.has_failed() {
                return None;
            }
            if let Err(err) = zstd.finish() {
                self.dbn.set_upstream_failure(err);
            }
        }
        Some(self.dbn.finish())
    }
}
