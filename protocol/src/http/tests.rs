//! Tests of the whole codec: conversations on one connection, any split of the
//! server's bytes, backpressure, truncation, limits, and arbitrary input.

use super::*;
use crate::{Error, TruncatedPart};
use proptest::prelude::*;

const HOST: &str = "hist.databento.com";

/// An event with body slices copied, adjacent bodies merged.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Head(ResponseHead),
    Body(Vec<u8>),
    End,
}

fn push(events: &mut Vec<Ev>, ev: Ev) {
    if let (Ev::Body(more), Some(Ev::Body(body))) = (&ev, events.last_mut()) {
        body.extend_from_slice(more);
    } else {
        events.push(ev);
    }
}

/// How much of each offered body the next layer takes.
type Take<'t> = &'t mut dyn FnMut(usize) -> usize;

fn take_all() -> impl FnMut(usize) -> usize {
    |len| len
}

/// A downstream that takes a pseudo-random part of each offer, from `seed`; never two
/// zeros in a row, so the conversation progresses.
fn take_some(seed: Vec<u16>) -> impl FnMut(usize) -> usize {
    let mut i = 0;
    let mut last_zero = false;
    move |len| {
        let pick = seed.get(i % seed.len().max(1)).copied().unwrap_or(u16::MAX);
        i += 1;
        let mut n = usize::from(pick) % (len + 1);
        if n == 0 && last_zero {
            n = 1;
        }
        last_zero = n == 0;
        n
    }
}

/// Sends `requests` one after the other (the next after each `End`), feeds `chunks`,
/// then ends the input with `eof` (`Some(clean_close)`). Returns the events, and the
/// error that stopped the conversation if one did.
fn converse(
    codec: &mut ClientCodec,
    requests: &[Request],
    chunks: &[&[u8]],
    take: Take<'_>,
    eof: Option<bool>,
) -> (Vec<Ev>, Option<Error>) {
    let mut events = Vec::new();
    let mut requests = requests.iter();
    let mut out = Vec::new();
    let result = (|| -> Result<(), Error> {
        if let Some(req) = requests.next() {
            codec.send_request(req, HOST, &mut out)?;
        }
        for chunk in chunks {
            let mut input = *chunk;
            loop {
                let (consumed, event) = codec.decode(input)?;
                match event {
                    ResponseEvent::NeedInput => {
                        assert_eq!(consumed, input.len(), "NeedInput consumes everything");
                        break;
                    }
                    ResponseEvent::Head(head) => {
                        push(&mut events, Ev::Head(head));
                        input = &input[consumed..];
                    }
                    ResponseEvent::Body(data) => {
                        assert!(!data.is_empty(), "no empty bodies");
                        assert_eq!(data.as_ptr(), input[consumed..].as_ptr(), "zero-copy");
                        let n = take(data.len());
                        codec.body_consumed(n)?;
                        push(&mut events, Ev::Body(data[..n].to_vec()));
                        input = &input[consumed + n..];
                    }
                    ResponseEvent::End => {
                        push(&mut events, Ev::End);
                        input = &input[consumed..];
                        if let Some(req) = requests.next() {
                            codec.send_request(req, HOST, &mut out)?;
                        }
                    }
                }
            }
        }
        if let Some(clean_close) = eof {
            if let Some(ResponseEvent::End) = codec.finish(clean_close)? {
                push(&mut events, Ev::End);
            }
        }
        Ok(())
    })();
    (events, result.err())
}

fn converse_ok(requests: &[Request], chunks: &[&[u8]], eof: Option<bool>) -> Vec<Ev> {
    let mut codec = ClientCodec::default();
    let (events, error) = converse(&mut codec, requests, chunks, &mut take_all(), eof);
    assert_eq!(error, None, "events so far: {events:?}");
    events
}

fn converse_err(requests: &[Request], chunks: &[&[u8]], eof: Option<bool>) -> Error {
    let mut codec = ClientCodec::default();
    let (events, error) = converse(&mut codec, requests, chunks, &mut take_all(), eof);
    error.unwrap_or_else(|| panic!("expected an error, got {events:?}"))
}

fn get() -> Request {
    Request::get("/v0/x")
}

fn statuses_and_bodies(events: &[Ev]) -> Vec<(u16, Vec<u8>)> {
    let mut out: Vec<(u16, Vec<u8>)> = Vec::new();
    for ev in events {
        match ev {
            Ev::Head(head) => out.push((head.status, Vec::new())),
            Ev::Body(b) => out.last_mut().unwrap().1.extend_from_slice(b),
            Ev::End => {}
        }
    }
    out
}

// ---- A model of server responses -------------------------------------------------

#[derive(Debug, Clone)]
enum Kind {
    Length,
    Chunked {
        sizes: Vec<usize>,
        ext: bool,
        trailers: bool,
        upper: bool,
    },
    NoContent,
    NotModified,
    Head,
    UntilClose,
}

#[derive(Debug, Clone)]
struct Resp {
    kind: Kind,
    body: Vec<u8>,
    interim: bool,
}

impl Resp {
    fn request(&self) -> Request {
        match self.kind {
            Kind::Head => Request::head("/v0/x"),
            _ => Request::post_form("/v0/timeseries.get_range", "dataset=GLBX.MDP3".into()),
        }
    }

    fn status(&self) -> u16 {
        match self.kind {
            Kind::NoContent => 204,
            Kind::NotModified => 304,
            _ => 200,
        }
    }

    fn expected_body(&self) -> &[u8] {
        match self.kind {
            Kind::Length | Kind::Chunked { .. } | Kind::UntilClose => &self.body,
            Kind::NoContent | Kind::NotModified | Kind::Head => &[],
        }
    }

    fn wire(&self) -> Vec<u8> {
        let mut w = Vec::new();
        if self.interim {
            w.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let len = self.body.len();
        match &self.kind {
            Kind::Length => {
                w.extend_from_slice(
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\nRequest-Id: r1\r\n\r\n")
                        .as_bytes(),
                );
                w.extend_from_slice(&self.body);
            }
            Kind::Chunked {
                sizes,
                ext,
                trailers,
                upper,
            } => {
                w.extend_from_slice(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Warning: []\r\n\r\n",
                );
                let mut rest = &self.body[..];
                let mut i = 0;
                while !rest.is_empty() {
                    let size = sizes
                        .get(i % sizes.len().max(1))
                        .copied()
                        .unwrap_or(rest.len())
                        .clamp(1, rest.len());
                    i += 1;
                    let line = if *upper {
                        format!("{size:X}")
                    } else {
                        format!("{size:x}")
                    };
                    w.extend_from_slice(line.as_bytes());
                    if *ext {
                        w.extend_from_slice(b";name=\"v;x\" ; flag");
                    }
                    w.extend_from_slice(b"\r\n");
                    w.extend_from_slice(&rest[..size]);
                    w.extend_from_slice(b"\r\n");
                    rest = &rest[size..];
                }
                w.extend_from_slice(if *ext { &b"0;end=1\r\n"[..] } else { b"0\r\n" });
                if *trailers {
                    w.extend_from_slice(b"X-Checksum: abc\r\nX-Other: 1\r\n");
                }
                w.extend_from_slice(b"\r\n");
            }
            Kind::NoContent => {
                w.extend_from_slice(b"HTTP/1.1 204 No Content\r\nRequest-Id: r2\r\n\r\n")
            }
            Kind::NotModified => {
                w.extend_from_slice(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n")
            }
            Kind::Head => w.extend_from_slice(
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", len + 7).as_bytes(),
            ),
            Kind::UntilClose => {
                w.extend_from_slice(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n",
                );
                w.extend_from_slice(&self.body);
            }
        }
        w
    }
}

fn kind_strategy() -> impl Strategy<Value = Kind> {
    prop_oneof![
        3 => Just(Kind::Length),
        3 => (prop::collection::vec(1usize..40, 0..6), any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(sizes, ext, trailers, upper)| Kind::Chunked { sizes, ext, trailers, upper }),
        1 => Just(Kind::NoContent),
        1 => Just(Kind::NotModified),
        1 => Just(Kind::Head),
    ]
}

fn resp_strategy(kind: impl Strategy<Value = Kind>) -> impl Strategy<Value = Resp> {
    (
        kind,
        prop::collection::vec(any::<u8>(), 0..120),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(kind, body, interim)| Resp {
            kind,
            body,
            interim,
        })
}

/// One to four keep-alive responses, the last sometimes close-delimited.
fn conversation_strategy() -> impl Strategy<Value = Vec<Resp>> {
    (
        prop::collection::vec(resp_strategy(kind_strategy()), 1..4),
        prop::option::weighted(0.3, resp_strategy(Just(Kind::UntilClose))),
    )
        .prop_map(|(mut resps, last)| {
            resps.extend(last);
            resps
        })
}

fn wire_of(resps: &[Resp]) -> Vec<u8> {
    resps.iter().flat_map(Resp::wire).collect()
}

fn requests_of(resps: &[Resp]) -> Vec<Request> {
    resps.iter().map(Resp::request).collect()
}

/// Splits `bytes` at the given points (taken modulo its length, sorted).
fn split<'b>(bytes: &'b [u8], points: &[usize]) -> Vec<&'b [u8]> {
    let mut cuts: Vec<usize> = points.iter().map(|p| p % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts {
        chunks.push(&bytes[start..cut]);
        start = cut;
    }
    chunks.push(&bytes[start..]);
    chunks
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any split of the same server bytes, and any downstream appetite, gives the same
    /// heads, bodies and events as the whole bytes at once, and those match the model.
    #[test]
    fn any_split_and_any_backpressure_give_the_same_events(
        resps in conversation_strategy(),
        points in prop::collection::vec(any::<usize>(), 0..12),
        seed in prop::collection::vec(any::<u16>(), 1..16),
    ) {
        let wire = wire_of(&resps);
        let requests = requests_of(&resps);
        let reference = converse_ok(&requests, &[&wire], Some(true));
        let expected: Vec<(u16, Vec<u8>)> =
            resps.iter().map(|r| (r.status(), r.expected_body().to_vec())).collect();
        prop_assert_eq!(statuses_and_bodies(&reference), expected);
        prop_assert_eq!(reference.iter().filter(|e| **e == Ev::End).count(), resps.len());

        let chunks = split(&wire, &points);
        let mut codec = ClientCodec::default();
        let (events, error) = converse(&mut codec, &requests, &chunks, &mut take_some(seed), Some(true));
        prop_assert_eq!(error, None);
        prop_assert_eq!(&events, &reference);
        prop_assert_eq!(codec.bytes_received(), wire.len() as u64);
        let close_delimited = matches!(resps.last().map(|r| &r.kind), Some(Kind::UntilClose));
        prop_assert!(!codec.is_ready());
        prop_assert_eq!(codec.close_reason().is_some(), true);
        if !close_delimited {
            // Before `finish`, a keep-alive conversation leaves the codec ready.
            let mut codec = ClientCodec::default();
            let (_, error) = converse(&mut codec, &requests, &chunks, &mut take_all(), None);
            prop_assert_eq!(error, None);
            prop_assert!(codec.is_ready());
        }
    }

    /// Arbitrary bytes after a request never panic, whatever the split, appetite and
    /// end of input.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        points in prop::collection::vec(any::<usize>(), 0..8),
        seed in prop::collection::vec(any::<u16>(), 1..8),
        clean in any::<bool>(),
        head in any::<bool>(),
    ) {
        let request = if head { Request::head("/") } else { get() };
        let config = CodecConfig::default().max_head_bytes(128).max_headers(4).max_chunk_line(16);
        let mut codec = ClientCodec::new(config).unwrap();
        let chunks = split(&bytes, &points);
        let (_, _) = converse(&mut codec, &[request.clone(), request], &chunks, &mut take_some(seed), Some(clean));
    }

    /// Valid conversations with a few bytes changed never panic either (this reaches
    /// deeper states than random bytes).
    #[test]
    fn mutated_conversations_never_panic(
        resps in conversation_strategy(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        points in prop::collection::vec(any::<usize>(), 0..6),
        clean in any::<bool>(),
    ) {
        let mut wire = wire_of(&resps);
        for (at, byte) in edits {
            let len = wire.len();
            wire[at % len] = byte;
        }
        let mut codec = ClientCodec::default();
        let chunks = split(&wire, &points);
        let (_, _) = converse(&mut codec, &requests_of(&resps), &chunks, &mut take_some(vec![3, 0, 9]), Some(clean));
    }
}

// ---- Splits and truncation, exhaustively for small conversations ------------------

fn small_conversation() -> Vec<Resp> {
    vec![
        Resp {
            kind: Kind::Length,
            body: b"hello".to_vec(),
            interim: true,
        },
        Resp {
            kind: Kind::Chunked {
                sizes: vec![3, 1],
                ext: true,
                trailers: true,
                upper: false,
            },
            body: b"chunked!".to_vec(),
            interim: false,
        },
        Resp {
            kind: Kind::Head,
            body: Vec::new(),
            interim: false,
        },
        Resp {
            kind: Kind::NoContent,
            body: Vec::new(),
            interim: false,
        },
        Resp {
            kind: Kind::UntilClose,
            body: b"to the end".to_vec(),
            interim: false,
        },
    ]
}

#[test]
fn split_at_every_byte_position_and_byte_by_byte() {
    let resps = small_conversation();
    let wire = wire_of(&resps);
    let requests = requests_of(&resps);
    let reference = converse_ok(&requests, &[&wire], Some(true));
    assert_eq!(
        statuses_and_bodies(&reference),
        [
            (200, b"hello".to_vec()),
            (200, b"chunked!".to_vec()),
            (200, Vec::new()),
            (204, Vec::new()),
            (200, b"to the end".to_vec())
        ]
    );
    for cut in 0..=wire.len() {
        let events = converse_ok(&requests, &[&wire[..cut], &wire[cut..]], Some(true));
        assert_eq!(events, reference, "cut at {cut}");
    }
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(converse_ok(&requests, &bytes, Some(true)), reference);
    for second in 1..wire.len() {
        let first = second / 2;
        let chunks = [&wire[..first], &wire[first..second], &wire[second..]];
        assert_eq!(
            converse_ok(&requests, &chunks, Some(true)),
            reference,
            "cuts {first} {second}"
        );
    }
}

/// Where each part of a one-response wire starts: (head length, body end).
fn truncation_cases() -> Vec<(Resp, usize)> {
    let mut cases = Vec::new();
    for kind in [
        Kind::Length,
        Kind::Chunked {
            sizes: vec![2, 5],
            ext: true,
            trailers: true,
            upper: true,
        },
        Kind::Chunked {
            sizes: vec![],
            ext: false,
            trailers: false,
            upper: false,
        },
        Kind::UntilClose,
    ] {
        let resp = Resp {
            kind,
            body: b"0123456789".to_vec(),
            interim: false,
        };
        let wire = resp.wire();
        let head_len = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        cases.push((resp, head_len));
    }
    cases
}

#[test]
fn truncation_in_each_framing_at_every_cut_point() {
    for (resp, head_len) in truncation_cases() {
        let wire = resp.wire();
        for cut in 0..=wire.len() {
            for clean in [false, true] {
                let mut codec = ClientCodec::default();
                let (events, error) = converse(
                    &mut codec,
                    &[resp.request()],
                    &[&wire[..cut]],
                    &mut take_all(),
                    Some(clean),
                );
                let until_close = matches!(resp.kind, Kind::UntilClose);
                let ctx = format!("{:?} cut {cut} clean {clean}: {events:?}", resp.kind);
                if cut < head_len {
                    let Some(Error::Truncated {
                        part,
                        offset,
                        have,
                        need,
                    }) = error
                    else {
                        panic!("{ctx}: {error:?}");
                    };
                    assert_eq!(
                        (part, offset, have, need),
                        (TruncatedPart::HttpHead, 0, cut, None),
                        "{ctx}"
                    );
                } else if cut == wire.len() && (!until_close || clean) {
                    assert_eq!(error, None, "{ctx}");
                    assert_eq!(events.last(), Some(&Ev::End), "{ctx}");
                } else if until_close && clean {
                    assert_eq!(error, None, "{ctx}");
                    assert_eq!(
                        statuses_and_bodies(&events),
                        [(200, wire[head_len..cut].to_vec())]
                    );
                } else {
                    let Some(Error::Truncated {
                        part,
                        offset,
                        have,
                        need,
                    }) = error
                    else {
                        panic!("{ctx}: {error:?}");
                    };
                    let expected_part = if matches!(resp.kind, Kind::Chunked { .. }) {
                        TruncatedPart::HttpChunkedBody
                    } else {
                        TruncatedPart::HttpBody
                    };
                    assert_eq!((part, offset), (expected_part, head_len as u64), "{ctx}");
                    let received = statuses_and_bodies(&events)[0].1.len();
                    assert_eq!(have, received, "{ctx}");
                    let expected_need = matches!(resp.kind, Kind::Length).then_some(10);
                    assert_eq!(need, expected_need, "{ctx}");
                }
            }
        }
    }
}

#[test]
fn truncation_of_a_later_response_names_its_offset() {
    let first = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab";
    let mut wire = first.to_vec();
    wire.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc");
    let err = converse_err(&[get(), get()], &[&wire], Some(true));
    let body_offset = (wire.len() - 3) as u64;
    assert_eq!(
        err,
        Error::Truncated {
            part: TruncatedPart::HttpBody,
            offset: body_offset,
            have: 3,
            need: Some(9)
        }
    );
    let err = converse_err(&[get(), get()], &[first], Some(true));
    assert_eq!(
        err,
        Error::Truncated {
            part: TruncatedPart::HttpHead,
            offset: first.len() as u64,
            have: 0,
            need: None
        }
    );
}

// ---- Limits and malformed responses ----------------------------------------------

#[test]
fn head_over_the_limit() {
    let config = CodecConfig::default().max_head_bytes(64);
    let make = |len: usize| {
        let mut head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: ".to_vec();
        head.resize(len - 4, b'x');
        head.extend_from_slice(b"\r\n\r\n");
        head
    };
    for (len, fits) in [(64, true), (65, false), (1000, false)] {
        let head = make(len);
        for cut in [0, 1, 30, 63, 64, len] {
            let cut = cut.min(len);
            let mut codec = ClientCodec::new(config.clone()).unwrap();
            let (_, error) = converse(
                &mut codec,
                &[get()],
                &[&head[..cut], &head[cut..]],
                &mut take_all(),
                Some(true),
            );
            if fits {
                assert_eq!(error, None, "len {len} cut {cut}");
            } else {
                assert_eq!(
                    error,
                    Some(Error::HttpHeadTooLarge { limit: 64 }),
                    "len {len} cut {cut}"
                );
            }
        }
    }
    // A codec takes a 60 KiB head byte by byte in linear time.
    let filler = format!("X-Filler: {}\r\n", "f".repeat(88));
    let mut big = b"HTTP/1.1 204 No Content\r\n".to_vec();
    while big.len() < 60 * 1024 {
        big.extend_from_slice(filler.as_bytes());
    }
    let mut huge = big.clone();
    big.extend_from_slice(b"\r\n");
    let mut codec = ClientCodec::new(CodecConfig::default().max_headers(1024)).unwrap();
    let bytes: Vec<&[u8]> = big.chunks(1).collect();
    let (events, error) = converse(&mut codec, &[get()], &bytes, &mut take_all(), None);
    assert_eq!(error, None);
    assert_eq!(events.len(), 2);
    while huge.len() <= 64 * 1024 {
        huge.extend_from_slice(filler.as_bytes());
    }
    huge.extend_from_slice(b"\r\n");
    let chunks: Vec<&[u8]> = huge.chunks(1000).collect();
    assert_eq!(
        converse_err(&[get()], &chunks, None),
        Error::HttpHeadTooLarge { limit: 64 * 1024 }
    );
}

#[test]
fn too_many_headers() {
    let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..64 {
        head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    let mut with_64 = head.clone();
    with_64.extend_from_slice(b"\r\n");
    assert_eq!(converse_ok(&[get()], &[&with_64], Some(true)).len(), 2);
    head.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    assert_eq!(
        converse_err(&[get()], &[&head], None),
        Error::HttpTooManyHeaders { limit: 64 }
    );
    let codec = ClientCodec::new(CodecConfig::default().max_headers(65));
    let (_, error) = converse(
        &mut codec.unwrap(),
        &[get()],
        &[&head],
        &mut take_all(),
        None,
    );
    assert_eq!(error, None);
}

#[test]
fn chunk_size_overflow_names_its_offset() {
    let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut wire = head.to_vec();
    wire.extend_from_slice(b"2\r\nab\r\n1ffffffffffffffff\r\n");
    let err = converse_err(&[get()], &[&wire], Some(true));
    let Error::HttpMalformed { offset, reason } = &err else {
        panic!("{err}")
    };
    assert_eq!(*offset, (head.len() + 7) as u64);
    assert!(reason.contains("overflows u64"), "{reason}");
    // The largest u64 is a valid size: the body is then truncated, not malformed.
    let mut wire = head.to_vec();
    wire.extend_from_slice(b"FFFFFFFFFFFFFFFF\r\nab");
    let err = converse_err(&[get()], &[&wire], Some(true));
    assert!(
        matches!(
            err,
            Error::Truncated {
                part: TruncatedPart::HttpChunkedBody,
                have: 2,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn garbage_status_lines() {
    for garbage in [
        &b"HTTP/1.1 abc OK\r\n\r\n"[..],
        b"HTTP/1.1 99 Odd\r\n\r\n",
        b"HTTP/1.1 700 Odd\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n",
        b"\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
    ] {
        let mut codec = ClientCodec::default();
        let (_, error) = converse(&mut codec, &[get()], &[garbage], &mut take_all(), None);
        assert!(
            matches!(error, Some(Error::HttpMalformed { offset: 0, .. })),
            "{:?}: {error:?}",
            String::from_utf8_lossy(garbage)
        );
        // Sticky, and the connection is done.
        assert_eq!(codec.decode(b"").map(|_| ()), Err(error.clone().unwrap()));
        assert_eq!(codec.finish(true), Err(error.unwrap()));
        assert!(matches!(
            codec.send_request(&get(), HOST, &mut Vec::new()),
            Err(Error::InvalidRequest(_))
        ));
    }
}

#[test]
fn interim_responses_before_the_final_one() {
    let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
                 HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let events = converse_ok(&[Request::post_form("/p", "a=1".into())], &[wire], None);
    assert_eq!(statuses_and_bodies(&events), [(200, b"ok".to_vec())]);
    let Ev::Head(head) = &events[0] else { panic!() };
    assert_eq!(head.header("content-length"), Some("2"));
    assert_eq!(head.header("link"), None);
    // Truncated after an interim response: the final head is missing.
    let err = converse_err(&[get()], &[&wire[..25]], Some(true));
    assert_eq!(
        err,
        Error::Truncated {
            part: TruncatedPart::HttpHead,
            offset: 25,
            have: 0,
            need: None
        }
    );
}

#[test]
fn no_body_for_204_304_and_head() {
    let wire = b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n\
                 HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n\
                 HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n\
                 HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nend";
    let events = converse_ok(
        &[get(), get(), Request::head("/"), get()],
        &[wire],
        Some(false),
    );
    assert_eq!(
        statuses_and_bodies(&events),
        [
            (204, vec![]),
            (304, vec![]),
            (200, vec![]),
            (200, b"end".to_vec())
        ]
    );
    let heads: Vec<BodyFraming> = events
        .iter()
        .filter_map(|e| {
            if let Ev::Head(h) = e {
                Some(h.framing())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        heads,
        [
            BodyFraming::Empty,
            BodyFraming::Empty,
            BodyFraming::Empty,
            BodyFraming::Length(3)
        ]
    );
}

// ---- Connection reuse -------------------------------------------------------------

#[test]
fn connection_close_refuses_the_next_request() {
    let wire = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
    let mut codec = ClientCodec::default();
    let (events, error) = converse(&mut codec, &[get()], &[wire], &mut take_all(), None);
    assert_eq!((events.len(), error), (3, None));
    assert!(!codec.is_ready());
    assert_eq!(
        codec.close_reason(),
        Some("the server sent Connection: close")
    );
    let mut out = Vec::new();
    let err = codec.send_request(&get(), HOST, &mut out).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidRequest(m) if m.contains("Connection: close")),
        "{err}"
    );
    assert!(out.is_empty());
    // Bytes after the last response are an error; the end of input is not.
    let end = wire.len() as u64;
    assert!(
        matches!(codec.clone().decode(b"x"), Err(Error::HttpMalformed { offset, .. }) if offset == end)
    );
    assert_eq!(codec.finish(false), Ok(None));

    for (wire, request) in [
        (&b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"[..], get()),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            get().header("Connection", "close"),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            get(),
        ),
    ] {
        let mut codec = ClientCodec::default();
        let (events, error) = converse(&mut codec, &[request], &[wire], &mut take_all(), None);
        assert_eq!((events.len(), error), (2, None));
        assert!(codec.close_reason().is_some() && !codec.is_ready());
        assert!(codec.send_request(&get(), HOST, &mut Vec::new()).is_err());
    }
}

#[test]
fn close_delimited_body_needs_a_clean_close() {
    let wire = b"HTTP/1.1 200 OK\r\n\r\npartial?";
    let mut codec = ClientCodec::default();
    let (events, error) = converse(&mut codec, &[get()], &[wire], &mut take_all(), None);
    assert_eq!(error, None);
    assert_eq!(events.len(), 2, "no End before the close");
    assert!(codec.is_in_flight());
    assert_eq!(codec.finish(true), Ok(Some(ResponseEvent::End)));
    assert!(codec.send_request(&get(), HOST, &mut Vec::new()).is_err());
    assert_eq!(codec.finish(true), Ok(None));
    let err = converse_err(&[get()], &[wire], Some(false));
    assert_eq!(
        err,
        Error::Truncated {
            part: TruncatedPart::HttpBody,
            offset: 19,
            have: 8,
            need: None
        }
    );
}

#[test]
fn one_request_at_a_time() {
    let mut codec = ClientCodec::default();
    let mut out = Vec::new();
    assert!(codec.is_ready() && !codec.is_in_flight());
    codec.send_request(&get(), HOST, &mut out).unwrap();
    let sent = out.len();
    assert!(codec.is_in_flight() && !codec.is_ready());
    let err = codec.send_request(&get(), HOST, &mut out).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidRequest(m) if m.contains("in flight")),
        "{err}"
    );
    assert_eq!(out.len(), sent);
    let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
    let (consumed, event) = codec.decode(wire).unwrap();
    assert!(matches!(event, ResponseEvent::Head(_)));
    assert!(
        codec.send_request(&get(), HOST, &mut out).is_err(),
        "body still to come"
    );
    let (at, event) = codec.decode(&wire[consumed..]).unwrap();
    assert_eq!((at, event), (0, ResponseEvent::Body(&b"abc"[..])));
    codec.body_consumed(3).unwrap();
    assert!(
        codec.send_request(&get(), HOST, &mut out).is_err(),
        "End not yet returned"
    );
    assert_eq!(codec.decode(b"").unwrap(), (0, ResponseEvent::End));
    codec.send_request(&get(), HOST, &mut out).unwrap();
    // A rejected request leaves the codec as it was.
    let mut other = ClientCodec::default();
    assert!(
        other
            .send_request(&get().header("X", "a\r\nb"), HOST, &mut out)
            .is_err()
    );
    assert!(other.is_ready());
}

#[test]
fn bytes_without_a_request_are_refused() {
    let mut codec = ClientCodec::default();
    assert_eq!(codec.decode(b"").unwrap(), (0, ResponseEvent::NeedInput));
    let err = codec
        .decode(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        .unwrap_err();
    assert!(matches!(err, Error::HttpMalformed { offset: 0, .. }));
    let mut codec = ClientCodec::default();
    assert_eq!(codec.finish(false), Ok(None));
    assert!(codec.send_request(&get(), HOST, &mut Vec::new()).is_err());
}

#[test]
fn body_consumed_is_checked_and_may_be_split() {
    let mut codec = ClientCodec::default();
    codec.send_request(&get(), HOST, &mut Vec::new()).unwrap();
    let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabcdef";
    let (consumed, _) = codec.decode(wire).unwrap();
    let rest = &wire[consumed..];
    assert_eq!(
        codec.decode(rest).unwrap(),
        (0, ResponseEvent::Body(&b"abcdef"[..]))
    );
    assert!(matches!(
        codec.body_consumed(7),
        Err(Error::InvalidRequest(_))
    ));
    codec.body_consumed(2).unwrap();
    codec.body_consumed(0).unwrap();
    codec.body_consumed(1).unwrap();
    assert!(codec.body_consumed(4).is_err());
    assert_eq!(codec.bytes_received(), (consumed + 3) as u64);
    // What was not taken is offered again.
    assert_eq!(
        codec.decode(&rest[3..]).unwrap(),
        (0, ResponseEvent::Body(&b"def"[..]))
    );
    assert_eq!(
        codec.decode(&rest[3..]).unwrap(),
        (0, ResponseEvent::Body(&b"def"[..]))
    );
    codec.body_consumed(3).unwrap();
    // A complete body whose End was not yet returned ends at `finish`.
    assert_eq!(codec.finish(false), Ok(Some(ResponseEvent::End)));
}

#[test]
fn config_is_validated() {
    for config in [
        CodecConfig::default().max_headers(0),
        CodecConfig::default().max_headers(100_000),
        CodecConfig::default().max_head_bytes(8),
        CodecConfig::default().max_head_bytes(usize::MAX),
        CodecConfig::default().max_chunk_line(2),
        CodecConfig::default().max_chunk_line(64 * 1024 + 1),
    ] {
        assert!(matches!(ClientCodec::new(config), Err(Error::Config(_))));
    }
    let config = CodecConfig::default().max_headers(8);
    assert_eq!(ClientCodec::new(config.clone()).unwrap().config(), &config);
}

#[test]
fn the_request_goes_out_encoded() {
    let mut codec = ClientCodec::default();
    let mut out = Vec::new();
    let req = Request::post_form("/v0/timeseries.get_range", "schema=mbo".into())
        .header("Authorization", "Basic ZGItYWJjOg==")
        .header("Accept", "application/octet-stream");
    codec.send_request(&req, HOST, &mut out).unwrap();
    let mut expected = Vec::new();
    encode_request(&req, HOST, &mut expected).unwrap();
    assert_eq!(out, expected);
    assert!(
        out.starts_with(b"POST /v0/timeseries.get_range HTTP/1.1\r\nHost: hist.databento.com\r\n")
    );
    assert!(out.ends_with(b"Content-Length: 10\r\n\r\nschema=mbo"));
}
