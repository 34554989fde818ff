//! The socket half shared by the live and historical connections: resolution, a
//! non-blocking connect with a deadline, reads into one fixed buffer, writes with
//! WRITABLE interest only while bytes wait.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::Error;

/// Resolves `host` (`host:port`) with the system resolver. Blocks the calling thread.
pub(crate) fn resolve(host: &str) -> Result<Vec<SocketAddr>, Error> {
    let addrs: Vec<SocketAddr> = host
        .to_socket_addrs()
        .map_err(|source| Error::Dns {
            host: host.to_owned(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(Error::Dns {
            host: host.to_owned(),
            source: io::Error::new(io::ErrorKind::NotFound, "no address"),
        });
    }
    Ok(addrs)
}

/// Whether a read or write error means the peer went away (handled as end of input).
pub(crate) fn is_disconnect(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// What a read step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadOutcome {
    /// Bytes are in the buffer.
    Data,
    /// The socket has nothing now: wait for the next readable edge.
    WouldBlock,
    /// The peer closed (or reset) the connection.
    Eof,
}

/// One TCP connection in progress or established, registered under the user's token.
#[derive(Debug)]
pub(crate) struct Socket {
    stream: TcpStream,
    addr: SocketAddr,
    /// Addresses still to try when this one fails to connect (next last).
    rest: Vec<SocketAddr>,
    /// `Some` while connecting.
    connect_deadline: Option<Instant>,
    connect_timeout: Duration,
    interest: Interest,
    /// The last read returned `WouldBlock`: only a new edge brings more.
    drained: bool,
    eof: bool,
    buf: Box<[u8]>,
    /// Bytes read and not yet taken by the session.
    pending: Range<usize>,
    outgoing: Vec<u8>,
    written: usize,
}

impl Socket {
    /// Starts a non-blocking connect to the first of `addrs` and registers it for
    /// READABLE | WRITABLE (connect completion is writability).
    pub(crate) fn connect(
        registry: &Registry,
        token: Token,
        mut addrs: Vec<SocketAddr>,
        connect_timeout: Duration,
        read_buffer: usize,
        now: Instant,
    ) -> Result<Self, Error> {
        addrs.reverse();
        let mut last = None;
        while let Some(addr) = addrs.pop() {
            match start_connect(registry, token, addr) {
                Ok(stream) => {
                    return Ok(Self {
                        stream,
                        addr,
                        rest: addrs,
                        connect_deadline: Some(now + connect_timeout),
                        connect_timeout,
                        interest: Interest::READABLE | Interest::WRITABLE,
                        drained: false,
                        eof: false,
                        buf: vec![0; read_buffer.max(1)].into_boxed_slice(),
                        pending: 0..0,
                        outgoing: Vec::new(),
                        written: 0,
                    });
                }
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| Error::Config("no address to connect to".to_owned())))
    }

    /// Whether the TCP handshake completed.
    pub(crate) fn is_connected(&self) -> bool {
        self.connect_deadline.is_none()
    }

    /// The connect deadline while connecting.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.connect_deadline
    }

    /// Marks the socket readable (a readiness edge came).
    pub(crate) fn set_readable(&mut self) {
        self.drained = false;
    }

    /// Checks a connect in progress after a readiness event or at `now`: `Ok(true)`
    /// once connected, `Ok(false)` while pending, an error when every address failed
    /// or the deadline passed.
    pub(crate) fn check_connect(
        &mut self,
        registry: &Registry,
        token: Token,
        now: Instant,
    ) -> Result<bool, Error> {
        let Some(deadline) = self.connect_deadline else {
            return Ok(true);
        };
        let failure = match self.stream.take_error() {
            Ok(Some(err)) | Err(err) => Some(err),
            Ok(None) => match self.stream.peer_addr() {
                Ok(_) => None,
                Err(err)
                    if err.kind() == io::ErrorKind::NotConnected
                        || err.raw_os_error() == Some(EINPROGRESS) =>
                {
                    if now >= deadline {
                        return Err(Error::ConnectTimeout {
                            addr: self.addr.to_string(),
                            after: self.connect_timeout,
                        });
                    }
                    return Ok(false);
                }
                Err(err) => Some(err),
            },
        };
        match failure {
            None => {
                self.connect_deadline = None;
                self.drained = false;
                self.stream.set_nodelay(true)?;
                self.update_interest(registry, token)?;
                tracing::debug!(addr = %self.addr, "connected");
                Ok(true)
            }
            Some(source) => {
                let err = Error::Connect {
                    addr: self.addr.to_string(),
                    source,
                };
                // Try the next address, within the same deadline.
                while let Some(addr) = self.rest.pop() {
                    let _ = registry.deregister(&mut self.stream);
                    match start_connect(registry, token, addr) {
                        Ok(stream) => {
                            self.stream = stream;
                            self.addr = addr;
                            self.interest = Interest::READABLE | Interest::WRITABLE;
                            return Ok(false);
                        }
                        Err(_) => continue,
                    }
                }
                Err(err)
            }
        }
    }

    /// Bytes read and not yet taken.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.pending.clone()]
    }

    /// The session took `n` bytes of [`pending`](Self::pending).
    pub(crate) fn consume(&mut self, n: usize) {
        self.pending.start = (self.pending.start + n).min(self.pending.end);
    }

    /// Whether reading could bring bytes without a new readiness edge.
    pub(crate) fn can_read(&self) -> bool {
        self.is_connected() && !self.drained && !self.eof
    }

    /// Reads once into the (empty) buffer.
    pub(crate) fn read(&mut self) -> Result<ReadOutcome, io::Error> {
        if !self.pending.is_empty() {
            return Ok(ReadOutcome::Data);
        }
        if !self.can_read() {
            return Ok(if self.eof {
                ReadOutcome::Eof
            } else {
                ReadOutcome::WouldBlock
            });
        }
        loop {
            match self.stream.read(&mut self.buf) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(ReadOutcome::Eof);
                }
                Ok(n) => {
                    self.pending = 0..n;
                    return Ok(ReadOutcome::Data);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.drained = true;
                    return Ok(ReadOutcome::WouldBlock);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    self.eof = true;
                    return Err(err);
                }
            }
        }
    }

    /// Queues `bytes` and writes as much as the socket takes; WRITABLE interest is
    /// registered only while bytes remain.
    pub(crate) fn send(
        &mut self,
        registry: &Registry,
        token: Token,
        fill: impl FnOnce(&mut Vec<u8>) -> usize,
    ) -> Result<(), io::Error> {
        let _ = fill(&mut self.outgoing);
        self.flush(registry, token)
    }

    /// Writes queued bytes until done or `WouldBlock`.
    pub(crate) fn flush(&mut self, registry: &Registry, token: Token) -> Result<(), io::Error> {
        if !self.is_connected() {
            return Ok(());
        }
        while self.written < self.outgoing.len() {
            match self.stream.write(&self.outgoing[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        if self.written == self.outgoing.len() {
            self.outgoing.clear();
            self.written = 0;
        }
        self.update_interest(registry, token)
    }

    fn update_interest(&mut self, registry: &Registry, token: Token) -> Result<(), io::Error> {
        let want = if !self.is_connected() || !self.outgoing.is_empty() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if want != self.interest {
            registry.reregister(&mut self.stream, token, want)?;
            self.interest = want;
        }
        Ok(())
    }

    /// Deregisters and closes the socket.
    pub(crate) fn close(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }
}

fn start_connect(registry: &Registry, token: Token, addr: SocketAddr) -> Result<TcpStream, Error> {
    let mut stream = TcpStream::connect(addr).map_err(|source| Error::Connect {
        addr: addr.to_string(),
        source,
    })?;
    registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
    Ok(stream)
}

/// `EINPROGRESS` (`WSAEINPROGRESS` on Windows): `peer_addr` may report it while the
/// connect is in progress, as mio's documentation says.
const EINPROGRESS: i32 = if cfg!(target_os = "linux") {
    115
} else if cfg!(windows) {
    10036
} else {
    36
};
