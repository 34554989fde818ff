//! Follows the block structure of zstd frames in the compressed bytes, to catch what
//! libzstd's streaming decoder lets through depending on how its input was cut.
//!
//! libzstd 1.5.7 treats a compressed block whose size field is 0 as the end of the
//! frame when the block header arrives in a separate piece of input, but rejects it
//! as corrupt when the frame arrives whole. This walker sees every compressed byte in
//! order, whatever the pieces, and refuses such a block in both cases.

/// The part of a frame (RFC 8878) the next byte belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The frame header: its first bytes (`have` of them) until its length is known.
    Header { have: usize, len: Option<usize> },
    /// A 3-byte block header (`have` bytes of it seen).
    BlockHeader { have: usize },
    /// The body of a block; `last` when it is the frame's last block.
    BlockBody { left: usize, last: bool },
    /// The frame's 4-byte content checksum.
    Checksum { left: usize },
    /// The content of a skippable frame.
    Skipped { left: usize },
    /// The frame is complete (until the decoder starts the next one).
    Done,
}

/// Walks the block structure of one frame at a time.
#[derive(Debug, Clone)]
pub(crate) struct BlockWalker {
    part: Part,
    /// The frame header's bytes (at most 18) and the current block header's.
    bytes: [u8; 18],
    block: [u8; 3],
    checksum: bool,
}

impl Default for BlockWalker {
    fn default() -> Self {
        Self {
            part: Part::Header { have: 0, len: None },
            bytes: [0; 18],
            block: [0; 3],
            checksum: false,
        }
    }
}

/// zstd's frame and skippable-frame magic numbers.
const MAGIC: u32 = 0xFD2F_B528;
const SKIPPABLE_MASK: u32 = 0xFFFF_FFF0;
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;
/// Block type 2 in a block header: a compressed block.
const COMPRESSED: u32 = 2;

impl BlockWalker {
    /// Starts over at the beginning of a frame.
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }

    /// Accounts for `bytes`, the compressed input that follows what was seen before.
    /// Returns why the frame is corrupt when its structure says so; anything else
    /// (including what libzstd will reject itself) is left to libzstd.
    pub(crate) fn advance(&mut self, mut bytes: &[u8]) -> Result<(), &'static str> {
        while let Some((&byte, rest)) = bytes.split_first() {
            match self.part {
                Part::Header { have, len } => {
                    self.bytes[have] = byte;
                    let have = have + 1;
                    let len = len.or_else(|| self.header_len(have));
                    self.part = match len {
                        Some(len) if have >= len => self.after_header(),
                        _ if have >= self.bytes.len() => Part::Done,
                        _ => Part::Header { have, len },
                    };
                    bytes = rest;
                }
                Part::BlockHeader { have } => {
                    self.block[have] = byte;
                    bytes = rest;
                    if have + 1 < 3 {
                        self.part = Part::BlockHeader { have: have + 1 };
                        continue;
                    }
                    let value =
                        u32::from_le_bytes([self.block[0], self.block[1], self.block[2], 0]);
                    let last = value & 1 == 1;
                    let kind = (value >> 1) & 3;
                    let size = (value >> 3) as usize;
                    if kind == COMPRESSED && size == 0 {
                        return Err("a compressed block of 0 bytes");
                    }
                    // An RLE block's body is one byte; raw and compressed ones `size`.
                    let left = if kind == 1 { 1 } else { size };
                    self.part = self.after_block_header(left, last);
                }
                Part::BlockBody { left, last } => {
                    let n = left.min(bytes.len());
                    bytes = &bytes[n..];
                    self.part = if n < left {
                        Part::BlockBody {
                            left: left - n,
                            last,
                        }
                    } else {
                        self.after_block(last)
                    };
                }
                Part::Checksum { left } | Part::Skipped { left } => {
                    let n = left.min(bytes.len());
                    bytes = &bytes[n..];
                    self.part = match self.part {
                        _ if n == left => Part::Done,
                        Part::Checksum { .. } => Part::Checksum { left: left - n },
                        _ => Part::Skipped { left: left - n },
                    };
                }
                Part::Done => return Ok(()),
            }
        }
        Ok(())
    }

    /// The frame header's length once enough of it is known (magic and descriptor).
    fn header_len(&self, have: usize) -> Option<usize> {
        if have < 4 {
            return None;
        }
        let magic =
            u32::from_le_bytes([self.bytes[0], self.bytes[1], self.bytes[2], self.bytes[3]]);
        if magic & SKIPPABLE_MASK == SKIPPABLE_MAGIC {
            return Some(8);
        }
        if have < 5 {
            return None;
        }
        let descriptor = self.bytes[4];
        let single_segment = descriptor & 0x20 != 0;
        let window = usize::from(!single_segment);
        let dictionary = [0, 1, 2, 4][usize::from(descriptor & 3)];
        let content_size = match descriptor >> 6 {
            0 => usize::from(single_segment),
            1 => 2,
            2 => 4,
            _ => 8,
        };
        Some(5 + window + dictionary + content_size)
    }

    fn after_header(&mut self) -> Part {
        let magic =
            u32::from_le_bytes([self.bytes[0], self.bytes[1], self.bytes[2], self.bytes[3]]);
        if magic & SKIPPABLE_MASK == SKIPPABLE_MAGIC {
            let size =
                u32::from_le_bytes([self.bytes[4], self.bytes[5], self.bytes[6], self.bytes[7]]);
            return Part::Skipped {
                left: size as usize,
            };
        }
        if magic != MAGIC {
            // Not a frame: libzstd reports it.
            return Part::Done;
        }
        self.checksum = self.bytes[4] & 0x04 != 0;
        Part::BlockHeader { have: 0 }
    }

    fn after_block_header(&self, left: usize, last: bool) -> Part {
        if left == 0 {
            self.after_block(last)
        } else {
            Part::BlockBody { left, last }
        }
    }

    fn after_block(&self, last: bool) -> Part {
        match (last, self.checksum) {
            (false, _) => Part::BlockHeader { have: 0 },
            (true, true) => Part::Checksum { left: 4 },
            (true, false) => Part::Done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk_in_pieces(frame: &[u8], piece: usize) -> Result<(), &'static str> {
        let mut walker = BlockWalker::default();
        for chunk in frame.chunks(piece) {
            walker.advance(chunk)?;
        }
        Ok(())
    }

    #[test]
    fn refuses_an_empty_compressed_block_in_any_pieces() {
        // Magic, descriptor 0x80 (4-byte content size, window byte), window 0,
        // content size 0, then a last compressed block of size 0.
        let frame = [0x28, 0xB5, 0x2F, 0xFD, 0x80, 0, 0, 0, 0, 0, 0x05, 0, 0];
        for piece in 1..=frame.len() {
            assert_eq!(
                walk_in_pieces(&frame, piece),
                Err("a compressed block of 0 bytes"),
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn accepts_real_frames_with_checksums_and_skippable_frames() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut stream = Vec::new();
        // A skippable frame of 5 bytes first.
        stream.extend_from_slice(&[0x50, 0x2A, 0x4D, 0x18, 5, 0, 0, 0, 1, 2, 3, 4, 5]);
        for level in [1, 19] {
            let mut encoder = zstd::stream::Encoder::new(Vec::new(), level).unwrap();
            encoder.include_checksum(true).unwrap();
            std::io::Write::write_all(&mut encoder, &data).unwrap();
            stream.extend_from_slice(&encoder.finish().unwrap());
        }
        stream.extend_from_slice(&zstd::bulk::compress(b"", 3).unwrap());
        // The walker is reset at each frame end by its owner; here frames are walked
        // one at a time by finding their ends with zstd itself.
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let len = zstd::zstd_safe::find_frame_compressed_size(rest).unwrap();
            for piece in [1, 7, 4096, len] {
                let mut walker = BlockWalker::default();
                for chunk in rest[..len].chunks(piece) {
                    walker.advance(chunk).unwrap();
                }
                assert_eq!(
                    walker.part,
                    Part::Done,
                    "frame of {len} bytes in pieces of {piece}"
                );
            }
            rest = &rest[len..];
        }
    }
}
