//! The server role: a child process that generates the workload once, serves it on
//! loopback (live gateway, HTTPS), prints one `READY` line and runs until its standard
//! input closes (the parent ended).

use std::io::{self, BufRead, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use dbn_pipe_tests::generate::{mbo_stream, zstd_frames};

use crate::common::{Args, MBO_SIZE};
use crate::{gateway, https};

/// zstd level of the compressed stream and body (as in `protocol/benches/decode.rs`).
pub(crate) const ZSTD_LEVEL: i32 = 3;

/// Decompressed bytes per zstd frame.
pub(crate) const ZSTD_FRAME: usize = 16 * 1024 * 1024;

/// The workload, generated once.
#[derive(Debug)]
pub(crate) struct Data {
    /// Generated records.
    pub(crate) records: u64,
    /// A DBN v3 stream: metadata, then `records` MBO records.
    pub(crate) plain: Vec<u8>,
    /// Bytes of the prelude and metadata at the start of `plain`.
    pub(crate) meta_len: usize,
    /// `plain` as concatenated zstd frames.
    pub(crate) zst: Vec<u8>,
    /// The metadata and the first [`https::SMALL_RECORDS`] records, compressed.
    pub(crate) small_zst: Vec<u8>,
}

impl Data {
    /// Generates `records` records and compresses them (two threads).
    pub(crate) fn generate(records: u64) -> io::Result<Self> {
        let plain = mbo_stream(records);
        let meta_len = plain.len() - (records * MBO_SIZE) as usize;
        let zst = compress_parallel(&plain);
        let small_end = meta_len + (https::SMALL_RECORDS.min(records) * MBO_SIZE) as usize;
        let small_zst = zstd::bulk::compress(&plain[..small_end], ZSTD_LEVEL)?;
        Ok(Self {
            records,
            plain,
            meta_len,
            zst,
            small_zst,
        })
    }
}

/// `plain` in [`ZSTD_FRAME`] frames, the two halves compressed on two threads.
fn compress_parallel(plain: &[u8]) -> Vec<u8> {
    let frames: Vec<&[u8]> = plain.chunks(ZSTD_FRAME).collect();
    let (left, right) = frames.split_at(frames.len().div_ceil(2));
    let compress = |part: &[&[u8]]| -> Vec<u8> {
        let mut out = Vec::new();
        for frame in part {
            out.extend_from_slice(&zstd_frames(frame, ZSTD_FRAME, ZSTD_LEVEL));
        }
        out
    };
    thread::scope(|scope| {
        let handle = scope.spawn(|| compress(right));
        let mut out = compress(left);
        out.extend(
            handle
                .join()
                .expect("the compression thread does not panic"),
        );
        out
    })
}

/// Runs the server role: `records=<n> dir=<path>`.
pub(crate) fn main(args: &Args) -> io::Result<()> {
    let records: u64 = args.num("records")?;
    let dir = PathBuf::from(args.get("dir")?);
    let t0 = Instant::now();
    let data = Arc::new(Data::generate(records)?);
    let identity = https::identity()?;
    std::fs::write(dir.join("cert.pem"), &identity.pem)?;
    std::fs::write(dir.join("cert.der"), &identity.der)?;
    std::fs::write(dir.join("stream.dbn.zst"), &data.zst)?;
    let live = TcpListener::bind("127.0.0.1:0")?;
    let hist = TcpListener::bind("127.0.0.1:0")?;
    let live_port = live.local_addr()?.port();
    let hist_port = hist.local_addr()?.port();
    gateway::run(live, data.clone());
    https::run(hist, identity.config.clone(), data.clone());
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "READY live={live_port} https={hist_port} plain_bytes={} zst_bytes={} gen_s={:.1}",
        data.plain.len(),
        data.zst.len(),
        t0.elapsed().as_secs_f64()
    )?;
    out.flush()?;
    drop(out);
    // Until the parent closes our standard input (it ended or is done).
    let mut line = String::new();
    while io::stdin().lock().read_line(&mut line)? > 0 {
        line.clear();
    }
    Ok(())
}
