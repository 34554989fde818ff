//! Reading the gateway's `key=value|...` control lines from split input.

use crate::Error;

/// Collects bytes up to a `\n`, across any number of inputs, never more than `limit`.
#[derive(Debug)]
pub(crate) struct LineReader {
    partial: Vec<u8>,
    limit: usize,
}

impl LineReader {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            partial: Vec::new(),
            limit,
        }
    }

    /// Takes bytes from `input` up to and including the first `\n`. Returns how many
    /// were taken and the line (without `\n` or a trailing `\r`) once complete.
    /// `offset` is the connection offset of `input[0]`, for errors.
    pub(crate) fn read(
        &mut self,
        input: &[u8],
        offset: u64,
    ) -> Result<(usize, Option<String>), Error> {
        let line_start = offset - self.partial.len() as u64;
        match input.iter().position(|&b| b == b'\n') {
            Some(end) => {
                if self.partial.len() + end > self.limit {
                    return Err(Error::LineTooLong {
                        offset: line_start,
                        limit: self.limit,
                    });
                }
                self.partial.extend_from_slice(&input[..end]);
                if self.partial.last() == Some(&b'\r') {
                    self.partial.pop();
                }
                let line = String::from_utf8_lossy(&self.partial).into_owned();
                self.partial = Vec::new();
                Ok((end + 1, Some(line)))
            }
            None => {
                if self.partial.len() + input.len() > self.limit {
                    return Err(Error::LineTooLong {
                        offset: line_start,
                        limit: self.limit,
                    });
                }
                self.partial.extend_from_slice(input);
                Ok((input.len(), None))
            }
        }
    }
}

/// The `key=value` fields of a control line; empty fields (a trailing `|`) are skipped.
pub(crate) fn fields(line: &str) -> impl Iterator<Item = (&str, &str)> {
    line.split('|').filter_map(|field| field.split_once('='))
}

/// The value of `key` in `line`, if present.
pub(crate) fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    fields(line).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// `line` cut to at most 256 bytes (on a character boundary), for error messages.
pub(crate) fn excerpt(line: &str) -> String {
    let mut end = line.len().min(256);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_inputs_and_several_in_one() {
        let mut reader = LineReader::new(64);
        assert_eq!(reader.read(b"lsg_ver", 0).unwrap(), (7, None));
        let (used, line) = reader.read(b"sion=0.4.2\ncram=abc\n", 7).unwrap();
        assert_eq!((used, line.as_deref()), (11, Some("lsg_version=0.4.2")));
        let (used, line) = reader.read(b"cram=abc\n", 18).unwrap();
        assert_eq!((used, line.as_deref()), (9, Some("cram=abc")));
    }

    #[test]
    fn a_line_over_the_limit_is_an_error_naming_its_start() {
        let mut reader = LineReader::new(8);
        assert_eq!(reader.read(b"12345", 10).unwrap(), (5, None));
        let err = reader.read(b"6789", 15).unwrap_err();
        assert_eq!(
            err,
            Error::LineTooLong {
                offset: 10,
                limit: 8
            }
        );
        let mut reader = LineReader::new(8);
        assert!(reader.read(b"123456789\n", 0).is_err());
        let mut reader = LineReader::new(8);
        assert_eq!(
            reader.read(b"12345678\n", 0).unwrap().1.as_deref(),
            Some("12345678")
        );
    }

    #[test]
    fn fields_accept_a_trailing_pipe() {
        let line = "success=1|session_id=mock-3|";
        assert_eq!(field(line, "success"), Some("1"));
        assert_eq!(field(line, "session_id"), Some("mock-3"));
        assert_eq!(fields(line).count(), 2);
        assert_eq!(field(line, "error"), None);
    }
}
