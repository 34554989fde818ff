//! Writes the committed seed corpora, `corpus/<target>/`: small DBN fixtures from
//! `../shared/fixtures/dbn` (or `$DBN_FIXTURES`), generated streams and handcrafted
//! edge cases. Run from the repository root:
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example make_corpus
//! ```
//!
//! Existing files of the same name are overwritten; nothing else is touched.

use std::path::{Path, PathBuf};

use dbn::encode::DbnEncodable;
use dbn::{ErrorMsg, SystemMsg};
use dbn_pipe_fuzz::input::Framed;
use dbn_pipe_fuzz::structured::{RecordSpec, Spec, build};
use dbn_pipe_protocol::doc_support::{sample_dbn, sample_dbn_zst, scripted_gateway};

/// Fixtures larger than this are not copied.
const MAX_FIXTURE: u64 = 16 * 1024;

struct Corpus {
    root: PathBuf,
    written: usize,
    bytes: usize,
}

impl Corpus {
    fn put(&mut self, target: &str, name: &str, data: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("create the corpus folder");
        std::fs::write(dir.join(name), data).expect("write a seed");
        self.written += 1;
        self.bytes += data.len();
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn bytes_of<R: DbnEncodable>(rec: &R) -> Vec<u8> {
    rec.as_ref().to_vec()
}

/// A v3 stream (metadata, a few MBO records) built by the structured target's builder.
fn stream(version: u8, ts_out: bool, fragment: bool, kinds: &[u8]) -> Vec<u8> {
    let spec = Spec {
        version: version - 1,
        ts_out,
        fragment,
        zstd_frames: 0,
        policy: 2,
        poll: 0,
        small_buffer: false,
        symbol: "ESH1".into(),
        records: kinds
            .iter()
            .enumerate()
            .map(|(i, &kind)| RecordSpec {
                kind,
                instrument_id: 5482,
                ts_event: 1_609_160_400_000_000_000 + i as u64,
                value: 4_000_000_000_000 + i as i64,
            })
            .collect(),
        mutations: Vec::new(),
        splits: Vec::new(),
    };
    build(&spec).expect("a valid spec builds").0
}

fn dbn_decoder(c: &mut Corpus, fixtures: &Path) {
    const T: &str = "dbn_decoder";
    match std::fs::read_dir(fixtures) {
        Ok(entries) => {
            let mut names: Vec<_> = entries.filter_map(Result::ok).collect();
            names.sort_by_key(|e| e.file_name());
            for entry in names {
                let name = entry.file_name().to_string_lossy().into_owned();
                let small = entry
                    .metadata()
                    .map(|m| m.len() <= MAX_FIXTURE)
                    .unwrap_or(false);
                if name == "LICENSE" || name.ends_with(".md") || !small {
                    continue;
                }
                let data = std::fs::read(entry.path()).expect("read a fixture");
                let zst = name.ends_with(".zst");
                let mut flags = if zst { 0x80 } else { 0x00 } | (2 << 2);
                if name.contains(".frag") {
                    let version = if name.contains(".v1.") || !name.contains(".v") {
                        1
                    } else if name.contains(".v2.") {
                        2
                    } else {
                        3
                    };
                    flags |= 0x10 | (version << 5);
                }
                c.put(
                    T,
                    &format!("fixture-{name}"),
                    &Framed::encode(flags, 0, &[], &data),
                );
            }
        }
        Err(_) => println!(
            "note: {} is missing: the dbn_decoder corpus gets no fixture",
            fixtures.display()
        ),
    }
    let sample = sample_dbn();
    // Every poll mode and policy, split inside the prelude, metadata and a record.
    for flags in 0..16u8 {
        c.put(
            T,
            &format!("sample-flags{flags:02}"),
            &Framed::encode(flags, 0, &[3, 9, 150, 190], &sample),
        );
    }
    c.put(
        T,
        "sample-small-buffer",
        &Framed::encode(1, 1, &[1], &sample),
    );
    c.put(
        T,
        "sample-zst",
        &Framed::encode(0x80, 0, &[2, 5], &sample_dbn_zst()),
    );
    c.put(
        T,
        "sample-meta-cap-100",
        &Framed::encode(0, 1 << 2, &[], &sample),
    );
    c.put(T, "empty", &Framed::encode(0, 0, &[], b""));
    c.put(T, "truncated-prelude", &Framed::encode(0, 0, &[], b"DBN"));
    c.put(
        T,
        "prelude-len-0",
        &Framed::encode(0, 0, &[], b"DBN\x03\0\0\0\0"),
    );
    c.put(
        T,
        "metadata-len-huge",
        &Framed::encode(0, 0, &[], b"DBN\x03\xff\xff\xff\xff"),
    );
    c.put(
        T,
        "version-4",
        &Framed::encode(0, 0, &[], b"DBN\x04\x64\0\0\0"),
    );
    c.put(
        T,
        "legacy-dbz",
        &Framed::encode(0, 0, &[], &[0x50, 0x2A, 0x4D, 0x18, 0, 0, 0, 0]),
    );
    c.put(
        T,
        "not-dbn",
        &Framed::encode(0, 0, &[], b"HTTP/1.1 200 OK\r\n"),
    );
    // Records cut short, of length 0, misaligned and too short, in a v3 stream.
    let mut zero = sample.clone();
    let first = sample.len() - 2 * 56;
    zero[first] = 0;
    c.put(T, "record-length-0", &Framed::encode(0, 0, &[], &zero));
    let mut odd = sample.clone();
    odd[first] = 13; // 52 bytes: a multiple of 4, not of 8
    c.put(
        T,
        "record-length-misaligned",
        &Framed::encode(5, 0, &[], &odd),
    );
    let mut short = sample.clone();
    short[first] = 3;
    c.put(T, "record-too-short", &Framed::encode(0, 0, &[], &short));
    c.put(
        T,
        "record-truncated",
        &Framed::encode(0, 0, &[], &sample[..sample.len() - 7]),
    );
    let frag = stream(1, false, true, &[0, 9, 10, 11, 12, 13]);
    c.put(
        T,
        "fragment-v1-mixed",
        &Framed::encode(0x10 | (1 << 5) | 0x08, 0, &[17], &frag),
    );
    let frag = stream(2, true, true, &[1, 2, 10, 13]);
    c.put(
        T,
        "fragment-v2-ts-out",
        &Framed::encode(0x10 | (2 << 5) | 0x04, 2, &[64], &frag),
    );
    let whole = stream(1, true, false, &[0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
    c.put(
        T,
        "v1-all-kinds-ts-out",
        &Framed::encode(0x08 | 1, 0, &[100, 101], &whole),
    );
    let whole = stream(2, false, false, &[10, 9, 13, 0]);
    c.put(T, "v2-mixed-asis", &Framed::encode(2, 0, &[], &whole));
}

fn zstd_layer(c: &mut Corpus, fixtures: &Path) {
    const T: &str = "zstd_layer";
    let window = 17; // flags low nibble: 10 + 7 = 2^17
    c.put(
        T,
        "sample",
        &Framed::encode(window | 0x40, 0, &[3, 20], &sample_dbn_zst()),
    );
    c.put(
        T,
        "sample-out-1-byte",
        &Framed::encode(window, 0, &[], &sample_dbn_zst()),
    );
    if let Ok(multi) = std::fs::read(fixtures.join("multi-frame.definition.v1.dbn.frag.zst")) {
        c.put(
            T,
            "fixture-multi-frame",
            &Framed::encode(window | 0xA0, 0, &[40], &multi),
        );
    } else {
        println!(
            "note: {} is missing: no multi-frame fixture seed",
            fixtures.display()
        );
    }
    // Two frames back to back, and a skippable frame between them.
    let frame = sample_dbn_zst();
    let mut two = frame.clone();
    two.extend_from_slice(&frame);
    c.put(
        T,
        "two-frames",
        &Framed::encode(
            window | 0x30,
            0,
            &[u16::try_from(frame.len()).unwrap_or(0)],
            &two,
        ),
    );
    let mut skippable = frame.clone();
    skippable.extend_from_slice(&[0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 1, 2, 3, 4]);
    skippable.extend_from_slice(&frame);
    c.put(
        T,
        "skippable-frame",
        &Framed::encode(window | 0x50, 0, &[], &skippable),
    );
    c.put(
        T,
        "truncated-frame",
        &Framed::encode(window, 0, &[], &frame[..frame.len() - 3]),
    );
    c.put(
        T,
        "magic-only",
        &Framed::encode(window, 0, &[], &frame[..4]),
    );
    c.put(
        T,
        "garbage-after-frame",
        &Framed::encode(window | 0xF0, 0, &[], &[&frame[..], b"garbage"].concat()),
    );
    c.put(T, "empty", &Framed::encode(window, 0, &[], b""));
    // A frame that asks for a 2^24 window, over a 2^17 limit (flags 7) and within
    // 2^25 (flags 15).
    let big: Vec<u8> = {
        let mut state = 7;
        (0..64 * 1024)
            .map(|_| (splitmix(&mut state) % 4) as u8)
            .collect()
    };
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 1).expect("zstd encoder");
    encoder
        .set_parameter(zstd::stream::raw::CParameter::WindowLog(24))
        .expect("window log");
    std::io::Write::write_all(&mut encoder, &big).expect("compress");
    let wide = encoder.finish().expect("finish");
    c.put(
        T,
        "window-too-large",
        &Framed::encode(window, 0, &[], &wide),
    );
    c.put(
        T,
        "window-2-24-allowed",
        &Framed::encode(15 | 0xF0, 0, &[9], &wide),
    );
    let mut corrupt = frame.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xFF;
    c.put(
        T,
        "corrupt-block",
        &Framed::encode(window, 0, &[], &corrupt),
    );
}

fn gateway_records() -> Vec<u8> {
    let mut dbn = sample_dbn();
    let system = SystemMsg::new(1, None, "Heartbeat").expect("a system message");
    let error = ErrorMsg::new(2, None, "Slow reader", true);
    dbn.extend_from_slice(&bytes_of(&system));
    dbn.extend_from_slice(&bytes_of(&error));
    dbn
}

fn live_gateway(c: &mut Corpus) {
    const T: &str = "live_gateway";
    let dbn = sample_dbn();
    c.put(T, "sample", &Framed::encode(0, 0, &[], &dbn));
    c.put(
        T,
        "sample-split-take-1",
        &Framed::encode(1, 0, &[1, 8, 99, 150], &dbn),
    );
    c.put(
        T,
        "sample-zstd",
        &Framed::encode(4, 0, &[5], &sample_dbn_zst()),
    );
    c.put(
        T,
        "sample-reconnect-gapfill",
        &Framed::encode(0x80, 1, &[160], &dbn),
    );
    c.put(
        T,
        "sample-reconnect-resubscribe",
        &Framed::encode(0x82, 0, &[], &dbn),
    );
    c.put(
        T,
        "gateway-notices",
        &Framed::encode(0x40, 0, &[200], &gateway_records()),
    );
    c.put(
        T,
        "ts-out",
        &Framed::encode(8, 0, &[], &stream(3, true, false, &[0, 2, 12])),
    );
    c.put(
        T,
        "v1-upgraded",
        &Framed::encode(0, 0, &[], &stream(1, false, false, &[0, 9, 10])),
    );
    c.put(
        T,
        "truncated-record",
        &Framed::encode(0, 0, &[], &dbn[..dbn.len() - 5]),
    );
    c.put(T, "empty-stream", &Framed::encode(0, 0, &[], b""));
    c.put(
        T,
        "text-instead-of-dbn",
        &Framed::encode(0, 0, &[], b"success=1|session_id=again|\n"),
    );
}

fn live_handshake(c: &mut Corpus) {
    const T: &str = "live_handshake";
    let script: Vec<u8> = scripted_gateway().concat();
    c.put(T, "scripted", &Framed::encode(0, 0, &[], &script));
    c.put(
        T,
        "scripted-bytewise",
        &Framed::encode(0, 0, &[1, 2, 3, 18, 19, 20, 56, 57], &script),
    );
    c.put(
        T,
        "scripted-not-started",
        &Framed::encode(1, 0, &[], &script),
    );
    c.put(T, "scripted-reconnect", &Framed::encode(8, 0, &[], &script));
    let crlf = b"lsg_version=0.4.2\r\ncram=abc\r\nsuccess=1|session_id=7|\r\n";
    c.put(T, "crlf", &Framed::encode(0, 0, &[], crlf));
    c.put(
        T,
        "auth-rejected",
        &Framed::encode(
            0,
            0,
            &[],
            b"lsg_version=0.4.2\ncram=abc\nsuccess=0|error=Authentication failed.|\n",
        ),
    );
    c.put(
        T,
        "no-challenge",
        &Framed::encode(0, 0, &[], b"lsg_version=0.4.2\nhello\n"),
    );
    c.put(
        T,
        "cram-first",
        &Framed::encode(0, 0, &[], b"cram=abc\nsuccess=1|session_id=1|\n"),
    );
    c.put(
        T,
        "closed-mid-line",
        &Framed::encode(0, 0, &[], b"lsg_version=0.4.2\ncram=ab"),
    );
    let mut long = b"lsg_version=0.4.2\n".to_vec();
    long.extend(std::iter::repeat_n(b'a', 64 * 1024 + 10));
    long.push(b'\n');
    c.put(
        T,
        "line-too-long",
        &Framed::encode(0, 0, &[1000, 40000], &long),
    );
    let mut exact = b"lsg_version=0.4.2\ncram=".to_vec();
    exact.extend(std::iter::repeat_n(b'b', 64 * 1024 - 5));
    exact.push(b'\n');
    c.put(T, "line-at-limit", &Framed::encode(0, 0, &[], &exact));
    c.put(
        T,
        "binary-greeting",
        &Framed::encode(0, 0, &[], &[0xFF, 0xFE, 0, b'\n', 0x80, b'\n']),
    );
}

fn http_codec(c: &mut Corpus) {
    const T: &str = "http_codec";
    let seeds: &[(&str, u8, &[u8])] = &[
        ("content-length", 0, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
        ("chunked", 4, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\n"),
        ("chunked-overflow", 0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\n"),
        ("chunked-size-max", 0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\nab"),
        ("chunk-line-long", 0x10, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;aaaaaaaaaaaaaaaaaaaaaaaaa\r\nhello\r\n0\r\n\r\n"),
        ("keep-alive-two", 8, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno!"),
        ("interim-100", 0, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"),
        ("switching-101", 0, b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
        ("close-delimited-clean", 2, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"),
        ("close-delimited-unclean", 0, b"HTTP/1.0 200 OK\r\n\r\nbody"),
        ("head-request", 1, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"),
        ("head-too-large", 0x10, b"HTTP/1.1 200 OK\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n"),
        ("too-many-headers", 0x10, b"HTTP/1.1 200 OK\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\ne: 5\r\nContent-Length: 0\r\n\r\n"),
        ("length-and-chunked", 0, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("two-lengths", 0, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
        ("negative-length", 0, b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
        ("bad-status", 0, b"HTTP/1.1 2000 OK\r\n\r\n"),
        ("lf-only", 0, b"HTTP/1.1 204 No Content\n\n"),
        ("truncated-body", 0, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
        ("bytes-after-end", 0, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\nextra"),
        ("empty", 0, b""),
    ];
    for (name, flags, bytes) in seeds {
        c.put(T, name, &Framed::encode(*flags, 0, &[7, 30], bytes));
    }
}

fn historical(c: &mut Corpus) {
    const T: &str = "historical";
    let zst = sample_dbn_zst();
    let mut chunked = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nX-Warning: [\"deprecated\"]\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in zst.chunks(40) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    c.put(
        T,
        "range-chunked",
        &Framed::encode(0, 0, &[50, 200], &chunked),
    );
    c.put(
        T,
        "range-copy-chunked",
        &Framed::encode(1 | 4, 0, &[], &chunked),
    );
    c.put(
        T,
        "range-two-requests",
        &Framed::encode(8, 0, &[], &chunked),
    );
    let mut length =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", zst.len()).into_bytes();
    length.extend_from_slice(&zst);
    c.put(T, "range-length", &Framed::encode(0, 0, &[], &length));
    c.put(
        T,
        "range-truncated",
        &Framed::encode(0, 0, &[], &length[..length.len() - 9]),
    );
    let plain = sample_dbn();
    let mut close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
    close.extend_from_slice(&plain);
    c.put(T, "range-plain-close", &Framed::encode(4, 0, &[], &close));
    let json: &[(&str, u8, &[u8])] = &[
        ("json-datasets", 2, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 25\r\n\r\n[\"GLBX.MDP3\",\"XNAS.ITCH\"]"),
        ("json-range", 3, b"HTTP/1.1 200 OK\r\nContent-Length: 69\r\n\r\n{\"start\":\"2017-05-21T00:00:00.000000000Z\",\"end\":\"2024-01-01T00:00:00Z\"}"),
        ("json-not-json", 2, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{x]"),
        ("error-401", 0, b"HTTP/1.1 401 Unauthorized\r\nRequest-Id: abc-123\r\nContent-Length: 35\r\n\r\n{\"detail\":\"Authentication failed.\"}"),
        ("error-422-detail-object", 0, b"HTTP/1.1 422 Unprocessable Entity\r\nContent-Length: 62\r\n\r\n{\"detail\":{\"case\":\"symbology_invalid_symbol\",\"message\":\"bad\"}}"),
        ("error-500-text", 2, b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n4\r\noops\r\n0\r\n\r\n"),
        ("empty", 0, b""),
        ("garbage", 0, b"\x16\x03\x01 not http at all"),
    ];
    for (name, flags, bytes) in json {
        c.put(T, name, &Framed::encode(*flags, 0, &[], bytes));
    }
}

fn structured(c: &mut Corpus) {
    const T: &str = "structured";
    // Random bytes of several sizes: `arbitrary` turns any bytes into a spec.
    for (i, len) in [32usize, 64, 128, 256, 512, 1024, 2048, 4096]
        .into_iter()
        .enumerate()
    {
        let mut state = i as u64 + 1;
        let bytes: Vec<u8> = (0..len).map(|_| splitmix(&mut state) as u8).collect();
        c.put(T, &format!("random-{len}"), &bytes);
    }
    c.put(T, "zeros-256", &[0u8; 256]);
    c.put(T, "ones-256", &[0xFFu8; 256]);
}

fn main() {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fixtures = std::env::var_os("DBN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| here.join("../../shared/fixtures/dbn"));
    let mut corpus = Corpus {
        root: here.join("corpus"),
        written: 0,
        bytes: 0,
    };
    dbn_decoder(&mut corpus, &fixtures);
    zstd_layer(&mut corpus, &fixtures);
    live_gateway(&mut corpus);
    live_handshake(&mut corpus);
    http_codec(&mut corpus);
    historical(&mut corpus);
    structured(&mut corpus);
    println!(
        "wrote {} seeds, {} bytes, under {}",
        corpus.written,
        corpus.bytes,
        corpus.root.display()
    );
}
