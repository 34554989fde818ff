//! Socket helpers shared by the live and historical clients: resolve on every
//! attempt, connect within a deadline, `TCP_NODELAY`, and cancel-safe writes.

use std::io;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::Error;

/// Splits `host:port` (IPv6 literals in brackets), checking both parts.
pub(crate) fn split_addr(addr: &str) -> Result<(String, u16), Error> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| Error::Config(format!("address {addr:?} is not host:port")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| Error::Config(format!("address {addr:?} has an invalid port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(Error::Config(format!("address {addr:?} has no host")));
    }
    Ok((host.to_owned(), port))
}

/// Resolves `host` (every call: DNS changes are followed) and connects to the first
/// address that accepts, all within `timeout`. Sets `TCP_NODELAY`.
pub(crate) async fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, Error> {
    let display = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let attempt = async {
        let addrs = tokio::net::lookup_host((host, port))
            .await
            .map_err(|source| Error::Dns {
                host: display.clone(),
                source,
            })?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    stream.set_nodelay(true).map_err(Error::io)?;
                    return Ok(stream);
                }
                Err(source) => {
                    tracing::debug!(%addr, error = %source, "connect attempt failed");
                    last = Some(Error::Connect {
                        addr: addr.to_string(),
                        source,
                    });
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Dns {
            host: display.clone(),
            source: io::Error::new(io::ErrorKind::NotFound, "no address found"),
        }))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(Error::ConnectTimeout {
            addr: display,
            after: timeout,
        }),
    }
}

/// Bytes waiting for the socket, written with progress kept here so that a cancelled
/// write loses nothing and repeats nothing.
#[derive(Debug, Default)]
pub(crate) struct Outgoing {
    pub(crate) buf: Vec<u8>,
    pos: usize,
}

impl Outgoing {
    /// Whether everything was written.
    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Forgets what was not written (the connection is gone).
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.pos = 0;
    }

    /// Writes everything queued. Cancel-safe: each completed `write` is recorded
    /// before the next await.
    pub(crate) async fn flush(&mut self, socket: &mut TcpStream) -> io::Result<()> {
        while self.pos < self.buf.len() {
            let n = socket.write(&self.buf[self.pos..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.pos += n;
        }
        self.clear();
        Ok(())
    }
}
