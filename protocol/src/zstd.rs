//! Sans-IO zstd decompression on the `zstd` crate's raw streaming API.

use zstd::stream::raw::{DParameter, Decoder, InBuffer, Operation, OutBuffer};

use crate::zstd_blocks::BlockWalker;
use crate::{Error, TruncatedPart};

/// The magic number that starts every zstd frame.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// The longest zstd frame header (ZSTD_FRAMEHEADERSIZE_MAX).
const FRAME_HEADER_MAX: usize = 18;

/// How far one call of [`ZstdDecoder::decompress`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Compressed bytes taken from the input.
    pub consumed: usize,
    /// Decompressed bytes written to the output.
    pub produced: usize,
}

/// A streaming zstd decompressor: compressed bytes in, decompressed bytes written into
/// a caller's buffer, any number of concatenated frames.
///
/// Input is consumed only as far as the output has room (backpressure reaches the
/// input), so memory stays at the zstd context plus its window, which is capped
/// ([`ZstdDecoder::DEFAULT_WINDOW_LOG_MAX`] unless configured).
pub struct ZstdDecoder {
    decoder: Decoder<'static>,
    window_log_max: u32,
    /// Compressed bytes consumed so far.
    consumed: u64,
    /// Input was taken since the last frame ended.
    in_frame: bool,
    /// Compressed offset where the current (or next) frame starts.
    frame_start: u64,
    /// The first bytes of the current frame (its header is at most 18 bytes).
    header: [u8; FRAME_HEADER_MAX],
    header_len: usize,
    /// Decompressed bytes the current frame produced so far.
    frame_produced: u64,
    /// The current frame's block structure, followed in the compressed bytes.
    blocks: BlockWalker,
    /// The last call filled the output: zstd may hold more decompressed bytes.
    output_pending: bool,
    /// An error met after the call that found it had already produced or consumed
    /// bytes: that call returned its progress, the next call returns this.
    failed: Option<Error>,
}

impl std::fmt::Debug for ZstdDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZstdDecoder")
            .field("window_log_max", &self.window_log_max)
            .field("consumed", &self.consumed)
            .field("in_frame", &self.in_frame)
            .field("output_pending", &self.output_pending)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl ZstdDecoder {
    /// Default window limit: 2^27 bytes (128 MiB), zstd's own default cap.
    pub const DEFAULT_WINDOW_LOG_MAX: u32 = 27;

    /// Creates a decoder that rejects frames asking for a window above
    /// 2^`window_log_max` bytes.
    ///
    /// # Errors
    /// [`Error::Config`] when `window_log_max` is outside 10..=31 or zstd cannot create
    /// its context.
    pub fn new(window_log_max: u32) -> Result<Self, Error> {
        if !(10..=31).contains(&window_log_max) {
            return Err(Error::Config(format!(
                "zstd window_log_max {window_log_max} is outside 10..=31"
            )));
        }
        let mut decoder =
            Decoder::new().map_err(|e| Error::Config(format!("zstd context: {e}")))?;
        decoder
            .set_parameter(DParameter::WindowLogMax(window_log_max))
            .map_err(|e| Error::Config(format!("zstd window limit: {e}")))?;
        Ok(Self {
            decoder,
            window_log_max,
            consumed: 0,
            in_frame: false,
            frame_start: 0,
            header: [0; FRAME_HEADER_MAX],
            header_len: 0,
            frame_produced: 0,
            blocks: BlockWalker::default(),
            output_pending: false,
            failed: None,
        })
    }

    /// Decompresses from `input` into `output` until the input is used up or the
    /// output is full.
    ///
    /// # Errors
    /// [`Error::WindowTooLarge`] for a frame over the window limit,
    /// [`Error::Decompression`] for anything else zstd rejects. When zstd fails after
    /// this call already produced or consumed bytes (a bad frame after a good one),
    /// the call returns that progress and sets [`output_pending`](Self::output_pending);
    /// the next call returns the error. After an error the decoder must not be used
    /// again.
    pub fn decompress(&mut self, input: &[u8], output: &mut [u8]) -> Result<Progress, Error> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let mut inb = InBuffer::around(input);
        let mut outb = OutBuffer::around(output);
        loop {
            let before = (inb.pos(), outb.pos());
            let hint = match self.decoder.run(&mut inb, &mut outb) {
                Ok(hint) => hint,
                Err(e) if inb.pos() == 0 && outb.pos() == 0 => return Err(self.error(&e)),
                Err(e) => {
                    // Keep what this call decompressed before the failure.
                    self.failed = Some(self.error(&e));
                    self.output_pending = true;
                    break;
                }
            };
            if inb.pos() > before.0 {
                self.in_frame = true;
                let taken = &input[before.0..inb.pos()];
                let room = FRAME_HEADER_MAX - self.header_len;
                let copy = room.min(taken.len());
                self.header[self.header_len..self.header_len + copy]
                    .copy_from_slice(&taken[..copy]);
                self.header_len += copy;
                // What libzstd lets through depending on the cut, the walker refuses
                // for every cut.
                if let Err(why) = self.blocks.advance(taken) {
                    // This call took input: it returns its progress, the next the error.
                    self.failed = Some(Error::Decompression {
                        offset: self.frame_start,
                        reason: format!("corrupt frame: {why}"),
                    });
                    self.output_pending = true;
                    break;
                }
            }
            self.frame_produced += (outb.pos() - before.1) as u64;
            if hint == 0 {
                // A frame ended and its output is flushed: it must have produced the
                // content size its header declares (zstd does not always check it).
                if let Err(err) = self.check_content_size() {
                    if inb.pos() == 0 && outb.pos() == 0 {
                        self.failed = Some(err.clone());
                        return Err(err);
                    }
                    self.failed = Some(err);
                    self.output_pending = true;
                    break;
                }
                self.in_frame = false;
                self.frame_start = self.consumed + inb.pos() as u64;
                self.header_len = 0;
                self.frame_produced = 0;
                self.blocks.reset();
            }
            let full = outb.pos() == outb.capacity();
            let stalled = (inb.pos(), outb.pos()) == before;
            if full || inb.pos() == input.len() || stalled {
                self.output_pending = full;
                break;
            }
        }
        let progress = Progress {
            consumed: inb.pos(),
            produced: outb.pos(),
        };
        self.consumed += progress.consumed as u64;
        Ok(progress)
    }

    /// Whether zstd may still hold decompressed bytes that did not fit the last output,
    /// or an error waits to be reported (call [`decompress`](Self::decompress) again,
    /// even with no input).
    pub fn output_pending(&self) -> bool {
        self.output_pending
    }

    /// Whether the input so far ends inside a frame.
    pub fn in_frame(&self) -> bool {
        self.in_frame
    }

    /// Compressed bytes consumed so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Checks, at the end of the input, that no frame was left unfinished.
    ///
    /// # Errors
    /// [`Error::Truncated`] with part [`TruncatedPart::ZstdFrame`] when the input ended
    /// inside a frame; the decompression error not yet returned, if any.
    pub fn finish(&self) -> Result<(), Error> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        if self.in_frame {
            return Err(Error::Truncated {
                part: TruncatedPart::ZstdFrame,
                offset: self.frame_start,
                have: usize::try_from(self.consumed - self.frame_start).unwrap_or(usize::MAX),
                need: None,
            });
        }
        Ok(())
    }

    /// Compares the content size the finished frame's header declares (if it does)
    /// with what it produced.
    fn check_content_size(&self) -> Result<(), Error> {
        let declared = zstd::zstd_safe::get_frame_content_size(&self.header[..self.header_len]);
        match declared {
            Ok(Some(size)) if size != self.frame_produced => Err(Error::Decompression {
                offset: self.frame_start,
                reason: format!(
                    "the frame declares {size} bytes of content but decompressed to {}",
                    self.frame_produced
                ),
            }),
            _ => Ok(()),
        }
    }

    /// The error for a zstd failure, at the offset of the frame (or of the bytes that
    /// should have started one) where it happened: the same whatever the chunking.
    fn error(&self, err: &std::io::Error) -> Error {
        let reason = err.to_string();
        if reason.contains("too much memory") || reason.contains("window") {
            Error::WindowTooLarge {
                offset: self.frame_start,
                window_log_max: self.window_log_max,
            }
        } else {
            Error::Decompression {
                offset: self.frame_start,
                reason,
            }
        }
    }
}
