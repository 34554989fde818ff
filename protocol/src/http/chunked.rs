//! The chunked transfer coding (RFC 9112 section 7.1): size lines, data, the CRLF after
//! each chunk, the last chunk and the trailer section.
//!
//! Chunk data is handed out as it arrives, also in the middle of a chunk, as a slice of
//! the caller's input (h11 does the same). Size lines are parsed by
//! [`httparse::parse_chunk_size`] in place, or from a small buffer when one is split
//! across inputs. Extensions are ignored; trailers are scanned for their end and
//! discarded without being stored.

use super::blank_line::BlankLineScanner;
use crate::Error;

/// What one call of [`ChunkedDecoder::decode`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkStep<'a> {
    /// All input was used; more is needed.
    NeedInput,
    /// Chunk data (never empty), a subslice of the input, not yet consumed: report
    /// what was taken with [`ChunkedDecoder::data_consumed`].
    Data(&'a [u8]),
    /// The last chunk and the trailer section were read: the body is complete.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk size line (buffered in `line` when split across inputs).
    SizeLine,
    /// Inside chunk data, with this many bytes still to come.
    Data { remaining: u64 },
    /// After chunk data: the CR, then the LF that must follow it.
    DataEnd { seen_cr: bool },
    /// After the last chunk: the trailer section, this many bytes of it seen.
    Trailers {
        scanner: BlankLineScanner,
        seen: usize,
    },
    /// The body is complete.
    Done,
}

/// Removes chunked framing from a body, one input slice at a time.
#[derive(Debug, Clone)]
pub(crate) struct ChunkedDecoder {
    state: State,
    /// The start of a size line split across inputs; never above `max_line` bytes.
    line: Vec<u8>,
    /// Connection offset of the size line or trailer section being read.
    part_offset: u64,
    max_line: usize,
    max_trailers: usize,
}

impl ChunkedDecoder {
    /// A decoder that refuses size lines (with extensions and CRLF) longer than
    /// `max_line` bytes and trailer sections longer than `max_trailers` bytes.
    pub(crate) fn new(max_line: usize, max_trailers: usize) -> Self {
        Self {
            state: State::SizeLine,
            line: Vec::new(),
            part_offset: 0,
            max_line,
            max_trailers,
        }
    }

    /// Reads framing from `input`, whose first byte is at connection offset `offset`,
    /// up to the next data, the end of the body, or the end of the input. Returns how
    /// many bytes were consumed before the step's data (all of `input` on
    /// [`ChunkStep::NeedInput`]).
    pub(crate) fn decode<'a>(
        &mut self,
        input: &'a [u8],
        offset: u64,
    ) -> Result<(usize, ChunkStep<'a>), Error> {
        let mut pos = 0;
        loop {
            let rest = input.get(pos..).unwrap_or_default();
            let here = offset + pos as u64;
            match &mut self.state {
                State::SizeLine => {
                    if self.line.is_empty() {
                        self.part_offset = here;
                    }
                    let budget = self.max_line.saturating_sub(self.line.len());
                    let window = &rest[..budget.min(rest.len())];
                    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
                        if rest.len() > window.len() {
                            return Err(self.malformed(format!(
                                "chunk size line exceeds {} bytes",
                                self.max_line
                            )));
                        }
                        self.line.extend_from_slice(window);
                        return Ok((input.len(), ChunkStep::NeedInput));
                    };
                    let parsed = if self.line.is_empty() {
                        parse_size_line(&window[..=lf])
                    } else {
                        self.line.extend_from_slice(&window[..=lf]);
                        let parsed = parse_size_line(&self.line);
                        self.line.clear();
                        parsed
                    };
                    let size = parsed.map_err(|reason| self.malformed(reason))?;
                    pos += lf + 1;
                    self.state = if size == 0 {
                        self.part_offset = offset + pos as u64;
                        State::Trailers {
                            scanner: BlankLineScanner::LineStart,
                            seen: 0,
                        }
                    } else {
                        State::Data { remaining: size }
                    };
                }
                State::Data { remaining } => {
                    if rest.is_empty() {
                        return Ok((pos, ChunkStep::NeedInput));
                    }
                    let take = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(rest.len());
                    return Ok((pos, ChunkStep::Data(&rest[..take])));
                }
                State::DataEnd { seen_cr } => {
                    let Some(&b) = rest.first() else {
                        return Ok((pos, ChunkStep::NeedInput));
                    };
                    if b != if *seen_cr { b'\n' } else { b'\r' } {
                        return Err(Error::HttpMalformed {
                            offset: here,
                            reason: "chunk data is not followed by CRLF".into(),
                        });
                    }
                    pos += 1;
                    if *seen_cr {
                        self.state = State::SizeLine;
                    } else {
                        *seen_cr = true;
                    }
                }
                State::Trailers { scanner, seen } => {
                    let budget = self.max_trailers.saturating_sub(*seen);
                    let window = &rest[..budget.min(rest.len())];
                    if let Some(end) = scanner.scan(window) {
                        self.state = State::Done;
                        return Ok((pos + end, ChunkStep::Done));
                    }
                    *seen += window.len();
                    if rest.len() > window.len() {
                        return Err(self.malformed(format!(
                            "trailer section exceeds the head limit of {} bytes",
                            self.max_trailers
                        )));
                    }
                    return Ok((input.len(), ChunkStep::NeedInput));
                }
                State::Done => return Ok((pos, ChunkStep::Done)),
            }
        }
    }

    /// Records that `n` bytes of the last [`ChunkStep::Data`] were taken (at most its
    /// length; the codec checks that).
    pub(crate) fn data_consumed(&mut self, n: usize) {
        if let State::Data { remaining } = &mut self.state {
            *remaining = remaining.saturating_sub(n as u64);
            if *remaining == 0 {
                self.state = State::DataEnd { seen_cr: false };
            }
        }
    }

    fn malformed(&self, reason: String) -> Error {
        Error::HttpMalformed {
            offset: self.part_offset,
            reason,
        }
    }
}

/// The chunk size of a complete size line (hex digits, optional extensions, CRLF).
fn parse_size_line(line: &[u8]) -> Result<u64, String> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        let shown = String::from_utf8_lossy(&line[..line.len().min(32)]).into_owned();
        return Err(format!(
            "chunk size line {shown:?} does not start with a hex number"
        ));
    }
    if digits > 16 {
        return Err(format!("chunk size of {digits} hex digits overflows u64"));
    }
    match httparse::parse_chunk_size(line) {
        Ok(httparse::Status::Complete((len, size))) if len == line.len() => Ok(size),
        Ok(_) => Err("chunk size line does not end with CRLF".into()),
        Err(httparse::InvalidChunkSize) => Err("invalid chunk size line".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `parts` in order, taking all data offered; returns the data and whether
    /// the body completed, and the bytes of the last part left after `Done`.
    fn run(parts: &[&[u8]]) -> Result<(Vec<u8>, bool, usize), Error> {
        let mut dec = ChunkedDecoder::new(64, 64);
        let (mut data, mut offset) = (Vec::new(), 0u64);
        for (i, part) in parts.iter().enumerate() {
            let mut input = *part;
            loop {
                let (used, step) = dec.decode(input, offset)?;
                offset += used as u64;
                match step {
                    ChunkStep::NeedInput => break,
                    ChunkStep::Data(d) => {
                        data.extend_from_slice(d);
                        dec.data_consumed(d.len());
                        offset += d.len() as u64;
                        input = &input[used + d.len()..];
                    }
                    ChunkStep::Done => {
                        let later: usize = parts[i + 1..].iter().map(|p| p.len()).sum();
                        return Ok((data, true, input.len() - used + later));
                    }
                }
            }
        }
        Ok((data, false, 0))
    }

    #[test]
    fn decodes_chunks_extensions_trailers() {
        let body = b"5;name=value;q=\"x\"\r\nhello\r\n1\r\n \r\nA \r\n0123456789\r\n0;last\r\nX-Checksum: 1\r\nY: 2\r\n\r\nNEXT";
        let (data, done, left) = run(&[body]).unwrap();
        assert_eq!(data, b"hello 0123456789");
        assert!(done);
        assert_eq!(left, 4);
        for cut in 0..body.len() {
            let (data, done, left) = run(&[&body[..cut], &body[cut..]]).unwrap();
            assert_eq!(
                (data.as_slice(), done, left),
                (&b"hello 0123456789"[..], true, 4),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn empty_body_and_data_offered_mid_chunk() {
        assert_eq!(run(&[b"0\r\n\r\n"]).unwrap(), (Vec::new(), true, 0));
        let mut dec = ChunkedDecoder::new(64, 64);
        let (used, step) = dec.decode(b"10\r\nabc", 0).unwrap();
        assert_eq!((used, step), (4, ChunkStep::Data(b"abc")));
        dec.data_consumed(1);
        assert_eq!(dec.decode(b"bc", 5).unwrap(), (0, ChunkStep::Data(b"bc")));
    }

    #[test]
    fn rejects_bad_framing() {
        let bad: [(&[u8], u64); 10] = [
            (b"zz\r\n", 0),
            (b"\r\n", 0),
            (b" 5\r\n", 0),
            (b";x\r\n", 0),
            (b"5\n", 0),
            (b"5;a\n", 0),
            (b"5\r\nhelloX", 8),
            (b"5\r\nhello\rX", 9),
            (b"1\r\na\r\n10000000000000000\r\n", 6),
            (b"00000000000000001\r\n", 0),
        ];
        for (input, offset) in bad {
            let err = run(&[input]).unwrap_err();
            assert!(
                matches!(err, Error::HttpMalformed { offset: o, .. } if o == offset),
                "{:?}: {err}",
                String::from_utf8_lossy(input)
            );
        }
        let err = run(&[b"10000000000000000\r\n"]).unwrap_err();
        assert!(err.to_string().contains("overflows u64"), "{err}");
        assert_eq!(
            run(&[b"ffffffffffffffff\r\nab"]).unwrap(),
            (b"ab".to_vec(), false, 0)
        );
    }

    #[test]
    fn bounds_size_lines_and_trailers() {
        let mut long = b"5;".to_vec();
        long.resize(61, b'x');
        long.extend_from_slice(b"\r\n");
        assert_eq!(long.len(), 63);
        assert!(run(&[&long]).is_ok());
        long.insert(3, b'x');
        assert!(run(&[&long]).is_ok(), "exactly 64 bytes fits");
        long.insert(3, b'x');
        for cut in 0..long.len() {
            let err = run(&[&long[..cut], &long[cut..]]).unwrap_err();
            assert!(err.to_string().contains("exceeds 64 bytes"), "{err}");
        }
        let mut trailers = b"0\r\n".to_vec();
        trailers.extend_from_slice(&[b'x'; 60]);
        trailers.extend_from_slice(b"\r\n\r\n");
        assert!(run(&[&trailers]).is_ok(), "64 bytes of trailers fit");
        trailers.insert(5, b'x');
        let err = run(&[&trailers]).unwrap_err();
        assert_eq!(err.offset(), Some(3));
        assert!(err.to_string().contains("trailer section exceeds"), "{err}");
    }
}
