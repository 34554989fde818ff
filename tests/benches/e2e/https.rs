//! The bench's historical server: rustls (ring) with an rcgen certificate for
//! `127.0.0.1`, HTTP/1.1 keep-alive, and the pre-compressed `.dbn.zst` body written in
//! large pieces.
//!
//! The framing is chosen by the request's `symbols` form field:
//! - `CL`: `Content-Length`;
//! - `CHUNKED`: `Transfer-Encoding: chunked`, [`CHUNK`]-byte chunks;
//! - `CLOSE`: no length, TLS `close_notify` then TCP close after the body;
//! - `SMALL`: `Content-Length`, a body of [`SMALL_RECORDS`] records (time to first
//!   record).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection};

use crate::server::Data;

/// Body bytes per chunk of the chunked framing.
pub(crate) const CHUNK: usize = 64 * 1024;

/// Records in the `SMALL` body.
pub(crate) const SMALL_RECORDS: u64 = 1_000;

/// Plaintext handed to rustls per step (it encrypts in 16 KiB TLS records).
const PIECE: usize = 256 * 1024;

/// The largest request head plus body the server reads.
const MAX_REQUEST: usize = 64 * 1024;

/// A self-signed certificate for `127.0.0.1` and `localhost`.
pub(crate) struct Identity {
    /// The server's TLS configuration.
    pub(crate) config: Arc<ServerConfig>,
    /// The certificate the clients trust, PEM.
    pub(crate) pem: String,
    /// The same, DER.
    pub(crate) der: Vec<u8>,
}

/// Generates the server's certificate and configuration.
pub(crate) fn identity() -> io::Result<Identity> {
    let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).map_err(io::Error::other)?;
    let der: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .map_err(io::Error::other)?;
    Ok(Identity {
        config: Arc::new(config),
        pem: certified.cert.pem(),
        der: der.to_vec(),
    })
}

/// Accepts connections on `listener` until the process ends, one thread each.
pub(crate) fn run(listener: TcpListener, config: Arc<ServerConfig>, data: Arc<Data>) {
    thread::spawn(move || {
        for (index, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let data = data.clone();
            let config = config.clone();
            let _ = thread::Builder::new()
                .name(format!("https-{index}"))
                .spawn(move || {
                    if let Err(err) = serve(stream, config, &data) {
                        if !matches!(
                            err.kind(),
                            io::ErrorKind::BrokenPipe
                                | io::ErrorKind::ConnectionReset
                                | io::ErrorKind::UnexpectedEof
                        ) {
                            eprintln!("https connection {index}: {err}");
                        }
                    }
                });
        }
    });
}

/// One TLS connection: the socket and the rustls state.
struct Tls {
    sock: TcpStream,
    conn: ServerConnection,
}

impl Tls {
    /// Writes every TLS byte rustls holds.
    fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(())
    }

    /// Encrypts and writes `plain`.
    fn send(&mut self, plain: &[u8]) -> io::Result<()> {
        for piece in plain.chunks(PIECE) {
            self.conn.writer().write_all(piece)?;
            self.flush()?;
        }
        Ok(())
    }

    /// Reads plaintext; `Ok(0)` at the end of the stream.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
            self.flush()?;
            if self.conn.read_tls(&mut self.sock)? == 0 {
                return Ok(0);
            }
            self.conn.process_new_packets().map_err(io::Error::other)?;
        }
    }
}

/// Reads one request (head and `Content-Length` body); `None` at a clean end.
fn read_request(tls: &mut Tls, buf: &mut Vec<u8>) -> io::Result<Option<String>> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(head) = req.parse(buf).map_err(io::Error::other)? {
            let length = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .unwrap_or(0usize);
            if buf.len() >= head + length {
                let body = &buf[head..head + length];
                let symbols = form_urlencoded::parse(body)
                    .find(|(k, _)| k == "symbols")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                buf.drain(..head + length);
                return Ok(Some(symbols));
            }
        }
        if buf.len() > MAX_REQUEST {
            return Err(io::Error::other("request too large"));
        }
        let n = tls.read(&mut chunk)?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn serve(sock: TcpStream, config: Arc<ServerConfig>, data: &Data) -> io::Result<()> {
    sock.set_nodelay(true)?;
    let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
    conn.set_buffer_limit(None);
    let mut tls = Tls { sock, conn };
    let mut buf = Vec::new();
    while let Some(symbols) = read_request(&mut tls, &mut buf)? {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n";
        match symbols.as_str() {
            "CL" | "SMALL" => {
                let body: &[u8] = if symbols == "CL" {
                    &data.zst
                } else {
                    &data.small_zst
                };
                tls.send(format!("{head}Content-Length: {}\r\n\r\n", body.len()).as_bytes())?;
                tls.send(body)?;
            }
            "CHUNKED" => {
                tls.send(format!("{head}Transfer-Encoding: chunked\r\n\r\n").as_bytes())?;
                let mut framed = Vec::with_capacity(PIECE + 64);
                for group in data.zst.chunks(PIECE) {
                    framed.clear();
                    for chunk in group.chunks(CHUNK) {
                        framed.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                        framed.extend_from_slice(chunk);
                        framed.extend_from_slice(b"\r\n");
                    }
                    tls.send(&framed)?;
                }
                tls.send(b"0\r\n\r\n")?;
            }
            "CLOSE" => {
                tls.send(format!("{head}Connection: close\r\n\r\n").as_bytes())?;
                tls.send(&data.zst)?;
                tls.conn.send_close_notify();
                tls.flush()?;
                tls.sock.shutdown(Shutdown::Write)?;
                let mut sink = [0u8; 4096];
                while tls.sock.read(&mut sink).unwrap_or(0) > 0 {}
                return Ok(());
            }
            other => {
                let msg = format!("{{\"detail\": \"unknown bench symbol {other:?}\"}}");
                tls.send(
                    format!(
                        "HTTP/1.1 422 Unprocessable Entity\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{msg}",
                        msg.len()
                    )
                    .as_bytes(),
                )?;
            }
        }
    }
    Ok(())
}
