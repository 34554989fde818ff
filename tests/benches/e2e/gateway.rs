//! The bench's live gateway: the CRAM handshake, then a pre-encoded DBN stream in large
//! writes (no checks, logs or hashing on the way: it must not be the bottleneck).
//!
//! What a connection gets is chosen by the symbol of its subscription:
//! - `FULL`: the whole pre-encoded stream (plain, or the pre-compressed one with
//!   `compression=zstd`);
//! - `COUNT_<n>`: the metadata and the first `n` records (compressed on the fly with
//!   `compression=zstd`);
//! - `PACED_<rate>_<n>`: `n` records at `rate` records per second, each write's records
//!   stamped with the write time in `ts_recv` (`CLOCK_REALTIME`, nanoseconds).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use dbn_pipe_tests::generate::mbo_record;

use crate::common::{MBO_SIZE, TS_RECV_OFFSET, realtime_ns};
use crate::server::Data;

/// The largest handshake line the gateway reads.
const MAX_LINE: usize = 64 * 1024;

/// Accepts connections on `listener` until the process ends, one thread each.
pub(crate) fn run(listener: TcpListener, data: Arc<Data>) {
    thread::spawn(move || {
        for (index, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let data = data.clone();
            let _ = thread::Builder::new()
                .name(format!("gateway-{index}"))
                .spawn(move || {
                    if let Err(err) = serve(stream, index, &data) {
                        // A client that stops early (time to first record) resets.
                        if !matches!(
                            err.kind(),
                            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                        ) {
                            eprintln!("gateway connection {index}: {err}");
                        }
                    }
                });
        }
    });
}

/// Reads one `\n`-terminated line byte by byte (the handshake is a few short lines;
/// nothing after `start_session` is read).
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
        if line.len() >= MAX_LINE {
            return Err(io::Error::other("handshake line too long"));
        }
        line.push(byte[0]);
    }
}

/// The value of `key` in a `key=value|...` line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split('|')
        .find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == key))
        .map(|(_, v)| v)
}

/// What a subscription asked for.
enum Mode {
    Full,
    Count(u64),
    Paced { rate: u64, count: u64 },
}

fn parse_mode(symbols: &str) -> io::Result<Mode> {
    let bad = || io::Error::other(format!("unknown bench symbol {symbols:?}"));
    if symbols == "FULL" {
        return Ok(Mode::Full);
    }
    if let Some(n) = symbols.strip_prefix("COUNT_") {
        return Ok(Mode::Count(n.parse().map_err(|_| bad())?));
    }
    if let Some(rest) = symbols.strip_prefix("PACED_") {
        let (rate, count) = rest.split_once('_').ok_or_else(bad)?;
        return Ok(Mode::Paced {
            rate: rate.parse().map_err(|_| bad())?,
            count: count.parse().map_err(|_| bad())?,
        });
    }
    Err(bad())
}

fn serve(mut stream: TcpStream, index: usize, data: &Data) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let challenge = format!("bench{index}");
    stream.write_all(format!("lsg-test\ncram={challenge}\n").as_bytes())?;
    let auth = read_line(&mut stream)?;
    if field(&auth, "auth").is_none() {
        stream.write_all(b"success=0|error=no auth field\n")?;
        return Ok(());
    }
    let zstd = field(&auth, "compression") == Some("zstd");
    stream.write_all(format!("success=1|session_id=bench-{index}\n").as_bytes())?;
    let mut symbols = None;
    loop {
        let line = read_line(&mut stream)?;
        if line.starts_with("start_session") {
            break;
        }
        if let Some(s) = field(&line, "symbols") {
            symbols = Some(s.to_owned());
        }
    }
    let mode = parse_mode(symbols.as_deref().unwrap_or(""))?;
    match mode {
        Mode::Full if zstd => stream.write_all(&data.zst)?,
        Mode::Full => stream.write_all(&data.plain)?,
        Mode::Count(n) => {
            let end = data.meta_len + (n.min(data.records) * MBO_SIZE) as usize;
            let prefix = &data.plain[..end];
            if zstd {
                stream.write_all(&zstd::bulk::compress(prefix, 3)?)?;
            } else {
                stream.write_all(prefix)?;
            }
        }
        Mode::Paced { rate, count } => {
            if zstd {
                return Err(io::Error::other("paced streams are uncompressed"));
            }
            paced(&mut stream, data, rate, count)?;
        }
    }
    stream.shutdown(Shutdown::Write)?;
    // Wait for the client to close, so that its last bytes are not reset.
    let mut sink = [0u8; 256];
    while stream.read(&mut sink).unwrap_or(0) > 0 {}
    Ok(())
}

/// Writes `count` records at `rate` per second: every write carries the records due
/// by then, stamped with the time just before the write.
fn paced(stream: &mut TcpStream, data: &Data, rate: u64, count: u64) -> io::Result<()> {
    stream.write_all(&data.plain[..data.meta_len])?;
    let period_ns = 1_000_000_000 / rate.max(1);
    let mut buf = Vec::with_capacity(64 * MBO_SIZE as usize);
    let t0 = Instant::now();
    let mut next = 0u64;
    while next < count {
        let elapsed = t0.elapsed().as_nanos() as u64;
        let due = (elapsed / period_ns + 1).min(count);
        if due > next {
            buf.clear();
            for i in next..due {
                let rec = mbo_record(i);
                let bytes: &[u8] = rec.as_ref();
                buf.extend_from_slice(bytes);
            }
            let stamp = realtime_ns().to_le_bytes();
            for rec in buf.chunks_exact_mut(MBO_SIZE as usize) {
                rec[TS_RECV_OFFSET..TS_RECV_OFFSET + 8].copy_from_slice(&stamp);
            }
            stream.write_all(&buf)?;
            next = due;
        }
        let wake = t0 + Duration::from_nanos(period_ns * next);
        let now = Instant::now();
        if wake > now {
            thread::sleep(wake - now);
        }
    }
    Ok(())
}
