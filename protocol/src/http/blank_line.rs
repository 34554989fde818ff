//! Finding the blank line that ends a header or trailer section, incrementally.
//!
//! The scanner keeps its position between inputs, so a section that arrives in many
//! small pieces is looked at once, byte by byte, never rescanned (h11 remembers how far
//! it searched for the same reason).

/// Where the scanner stands: inside a line, or at the start of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlankLineScanner {
    /// Inside a line: only a line feed can change anything.
    InLine,
    /// Right after a line feed: a line feed (or CR LF) here is the blank line.
    LineStart,
    /// After a line feed and a carriage return.
    LineStartCr,
}

impl BlankLineScanner {
    /// Scans `bytes`, the next bytes of the section. Returns how many of them end with
    /// the blank line (`\n\n` or `\n\r\n`), or `None` when all were scanned and the
    /// blank line has not come yet. Every byte is looked at once over all calls.
    pub(crate) fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            match *self {
                Self::InLine => match bytes[i..].iter().position(|&b| b == b'\n') {
                    Some(p) => {
                        i += p + 1;
                        *self = Self::LineStart;
                    }
                    None => return None,
                },
                Self::LineStart | Self::LineStartCr => {
                    i += 1;
                    match b {
                        b'\n' => {
                            *self = Self::InLine;
                            return Some(i);
                        }
                        b'\r' if *self == Self::LineStart => *self = Self::LineStartCr,
                        _ => *self = Self::InLine,
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::BlankLineScanner;

    fn whole(bytes: &[u8], start: BlankLineScanner) -> Option<usize> {
        let mut s = start;
        s.scan(bytes)
    }

    #[test]
    fn finds_crlf_and_bare_lf_blank_lines() {
        let b = BlankLineScanner::InLine;
        assert_eq!(whole(b"HTTP/1.1 200 OK\r\n\r\nbody", b), Some(19));
        assert_eq!(whole(b"HTTP/1.1 200 OK\n\nbody", b), Some(17));
        assert_eq!(whole(b"A: b\r\n\r\r\n", b), None);
        assert_eq!(whole(b"A: b\r\n", b), None);
        assert_eq!(whole(b"\r\n", BlankLineScanner::LineStart), Some(2));
        assert_eq!(whole(b"X: y\r\n\r\n", BlankLineScanner::LineStart), Some(8));
    }

    #[test]
    fn any_split_gives_the_same_end() {
        let text = b"HTTP/1.1 200 OK\r\nA: b\r\nC: d\r\n\r\nrest";
        for cut in 0..=text.len() {
            let mut s = BlankLineScanner::InLine;
            let found = match s.scan(&text[..cut]) {
                Some(n) => Some(n),
                None => s.scan(&text[cut..]).map(|n| n + cut),
            };
            assert_eq!(found, Some(text.len() - 4), "cut {cut}");
        }
    }
}
