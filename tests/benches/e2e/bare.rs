//! The ceilings: what the machine does with the same bytes and no client at all.
//!
//! - a bare socket reader that does the CRAM handshake by hand and then only counts
//!   bytes;
//! - bare zstd decompression of the compressed stream from memory;
//! - bare TLS + zstd: rustls (ring) over a blocking socket, the HTTP head skipped, the
//!   body de-chunked when chunked, decompressed, bytes counted.
//!
//! Each reads into one 64 KiB buffer, as the clients do.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use sha2::{Digest, Sha256};
use zstd::stream::raw::{Decoder as RawZstd, InBuffer, Operation, OutBuffer};

use crate::common::{DATASET, MBO_SIZE, Meter, TEST_KEY};

/// Read and output buffer size.
const BUF: usize = 64 * 1024;

/// How a stream's bytes map to records: `plain_bytes` of plain DBN hold `records`
/// records after the metadata.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    /// Bytes of the plain DBN stream.
    pub(crate) plain_bytes: u64,
    /// Records in it.
    pub(crate) records: u64,
}

impl Shape {
    /// Whole records within the first `plain` bytes of the stream.
    fn records_in(self, plain: u64) -> u64 {
        let meta = self.plain_bytes.saturating_sub(self.records * MBO_SIZE);
        plain.saturating_sub(meta) / MBO_SIZE
    }
}

fn read_line(stream: &mut TcpStream) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if stream.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if byte[0] == b'\n' {
            return String::from_utf8(line).map_err(io::Error::other);
        }
        line.push(byte[0]);
    }
}

/// The bare socket reader: handshake by hand, then count bytes until EOF.
pub(crate) fn socket(port: u16, shape: Shape, meter: &mut Meter) -> io::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    let _greeting = read_line(&mut stream)?;
    let cram = read_line(&mut stream)?;
    let challenge = cram
        .strip_prefix("cram=")
        .ok_or_else(|| io::Error::other("no challenge"))?;
    let digest = Sha256::digest(format!("{challenge}|{TEST_KEY}").as_bytes());
    let bucket = &TEST_KEY[TEST_KEY.len() - 5..];
    let auth = format!(
        "auth={}-{bucket}|dataset={DATASET}|encoding=dbn|compression=none|ts_out=0|client=bare\n",
        hex::encode(digest)
    );
    stream.write_all(auth.as_bytes())?;
    let reply = read_line(&mut stream)?;
    if !reply.starts_with("success=1") {
        return Err(io::Error::other(format!("auth failed: {reply}")));
    }
    stream.write_all(b"schema=mbo|stype_in=raw_symbol|symbols=FULL\nstart_session\n")?;
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        meter.raw(n as u64, shape.records_in(total));
    }
    if total != shape.plain_bytes {
        return Err(io::Error::other(format!(
            "read {total} bytes, expected {}",
            shape.plain_bytes
        )));
    }
    Ok(())
}

/// zstd decompression of `compressed` (from memory) into a 64 KiB buffer.
pub(crate) fn zstd_memory(compressed: &[u8], shape: Shape, meter: &mut Meter) -> io::Result<()> {
    let mut inflate = Inflate::new()?;
    inflate.feed(compressed, shape, meter)?;
    inflate.check(shape)
}

/// A streaming zstd decoder that counts what it produces.
struct Inflate {
    zstd: RawZstd<'static>,
    out: Vec<u8>,
    total: u64,
}

impl Inflate {
    fn new() -> io::Result<Self> {
        Ok(Self {
            zstd: RawZstd::new()?,
            out: vec![0u8; BUF],
            total: 0,
        })
    }

    /// Decompresses all of `input`.
    fn feed(&mut self, input: &[u8], shape: Shape, meter: &mut Meter) -> io::Result<()> {
        let mut src = InBuffer::around(input);
        while src.pos < input.len() {
            let mut dst = OutBuffer::around(&mut self.out[..]);
            self.zstd.run(&mut src, &mut dst)?;
            let n = dst.pos() as u64;
            self.total += n;
            meter.raw(n, shape.records_in(self.total));
        }
        // Flush what the decoder still holds for this input.
        loop {
            let mut dst = OutBuffer::around(&mut self.out[..]);
            let mut empty = InBuffer::around(&[][..]);
            self.zstd.run(&mut empty, &mut dst)?;
            let n = dst.pos() as u64;
            if n == 0 {
                return Ok(());
            }
            self.total += n;
            meter.raw(n, shape.records_in(self.total));
        }
    }

    fn check(&self, shape: Shape) -> io::Result<()> {
        if self.total != shape.plain_bytes {
            return Err(io::Error::other(format!(
                "decompressed {} bytes, expected {}",
                self.total, shape.plain_bytes
            )));
        }
        Ok(())
    }
}

/// A minimal `Transfer-Encoding: chunked` decoder: hands out data bytes.
#[derive(Debug, Default)]
struct Dechunk {
    /// Data bytes left in the current chunk.
    left: u64,
    /// Reading a size line (or the CRLF after a chunk's data).
    line: Vec<u8>,
    /// The CRLF after the current chunk's data is still to skip.
    after_data: bool,
    done: bool,
}

impl Dechunk {
    /// Feeds `input`, calling `data` with every run of body bytes.
    fn feed(
        &mut self,
        mut input: &[u8],
        mut data: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        while !input.is_empty() && !self.done {
            if self.left > 0 {
                let n = (self.left as usize).min(input.len());
                data(&input[..n])?;
                self.left -= n as u64;
                input = &input[n..];
                if self.left == 0 {
                    self.after_data = true;
                }
                continue;
            }
            // A line: the CRLF after data, or a size line.
            let Some(end) = input.iter().position(|&b| b == b'\n') else {
                self.line.extend_from_slice(input);
                return Ok(());
            };
            self.line.extend_from_slice(&input[..end]);
            input = &input[end + 1..];
            let line = std::mem::take(&mut self.line);
            if std::mem::take(&mut self.after_data) {
                continue;
            }
            let text = std::str::from_utf8(&line).map_err(io::Error::other)?;
            let size = text.trim().split(';').next().unwrap_or("");
            let size = u64::from_str_radix(size, 16).map_err(io::Error::other)?;
            if size == 0 {
                self.done = true;
            }
            self.left = size;
        }
        Ok(())
    }
}

/// Body framing announced by a response head.
enum Framing {
    Length(u64),
    Chunked,
    Close,
}

/// Bare TLS + zstd: one `POST` for `symbol`, the body decompressed and counted.
pub(crate) fn tls_zstd(
    port: u16,
    symbol: &str,
    der: &[u8],
    shape: Shape,
    meter: &mut Meter,
) -> io::Result<()> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(der.to_vec()))
        .map_err(io::Error::other)?;
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1")
        .map_err(io::Error::other)?
        .to_owned();
    let conn = ClientConnection::new(Arc::new(config), name).map_err(io::Error::other)?;
    let sock = TcpStream::connect(("127.0.0.1", port))?;
    sock.set_nodelay(true)?;
    let mut tls = StreamOwned::new(conn, sock);
    let body = format!("symbols={symbol}");
    let request = format!(
        "POST /v0/timeseries.get_range HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes())?;

    let mut buf = vec![0u8; BUF];
    let mut head = Vec::new();
    // The head, then whatever body bytes came with it.
    let (framing, mut first) = loop {
        let n = tls.read(&mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
            if !text.starts_with("http/1.1 200") {
                return Err(io::Error::other(format!("status line: {text}")));
            }
            let framing =
                if let Some(len) = text.lines().find_map(|l| l.strip_prefix("content-length:")) {
                    Framing::Length(len.trim().parse().map_err(io::Error::other)?)
                } else if text.contains("transfer-encoding: chunked") {
                    Framing::Chunked
                } else {
                    Framing::Close
                };
            break (framing, head.split_off(end + 4));
        }
    };
    let mut inflate = Inflate::new()?;
    let mut dechunk = Dechunk::default();
    let mut received = 0u64;
    loop {
        let chunk: &[u8] = if first.is_empty() {
            // A close without close_notify is an error here (the server sends it).
            let n = tls.read(&mut buf)?;
            if n == 0 {
                break;
            }
            &buf[..n]
        } else {
            &first[..]
        };
        received += chunk.len() as u64;
        match framing {
            Framing::Chunked => dechunk.feed(chunk, |data| inflate.feed(data, shape, meter))?,
            Framing::Length(_) | Framing::Close => inflate.feed(chunk, shape, meter)?,
        }
        first.clear();
        let finished = match framing {
            Framing::Length(len) => received >= len,
            Framing::Chunked => dechunk.done,
            Framing::Close => false,
        };
        if finished {
            break;
        }
    }
    inflate.check(shape)
}
