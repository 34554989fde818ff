//! Deterministic DBN streams written with the `dbn` crate's encoder.

use dbn::encode::{EncodeRecord, dbn::Encoder};
use dbn::{FlagSet, MboMsg, Metadata, MetadataBuilder, SType, Schema, rtype};

/// First `ts_event` of generated streams (2020-12-28 13:00 UTC, as in the fixtures).
pub const START_NS: u64 = 1_609_160_400_000_000_000;

/// Metadata of a generated v3 MBO stream.
pub fn mbo_metadata(symbols: &[&str]) -> Metadata {
    MetadataBuilder::new()
        .dataset("GLBX.MDP3".to_owned())
        .schema(Some(Schema::Mbo))
        .start(START_NS)
        .stype_in(Some(SType::RawSymbol))
        .stype_out(SType::InstrumentId)
        .symbols(symbols.iter().map(|s| (*s).to_owned()).collect())
        .build()
}

/// The `i`-th generated MBO record: every field is a cheap function of `i`, so a
/// decoder's output can be checked without keeping the records.
pub fn mbo_record(i: u64) -> MboMsg {
    let mut rec = MboMsg::default();
    rec.hd.rtype = rtype::MBO;
    rec.hd.publisher_id = 1;
    rec.hd.instrument_id = 5482 + (i % 4) as u32;
    rec.hd.ts_event = START_NS + i * 1_000;
    rec.order_id = 647_784_973_705 + i;
    rec.price = 3_722_750_000_000 + ((i % 64) as i64) * 250_000_000;
    rec.size = 1 + (i % 10) as u32;
    rec.flags = FlagSet::empty();
    rec.channel_id = 0;
    rec.action = if i % 3 == 0 { b'A' } else { b'C' } as std::ffi::c_char;
    rec.side = if i % 2 == 0 { b'B' } else { b'A' } as std::ffi::c_char;
    rec.ts_recv = rec.hd.ts_event + 275;
    rec.ts_in_delta = 1_000;
    rec.sequence = 1_170_352 + i as u32;
    rec
}

/// A plain DBN v3 stream of `count` generated MBO records.
pub fn mbo_stream(count: u64) -> Vec<u8> {
    let metadata = mbo_metadata(&["ESH1"]);
    let mut out = Vec::with_capacity(count as usize * 56 + 256);
    {
        let mut encoder = Encoder::new(&mut out, &metadata).expect("writing to a Vec cannot fail");
        for i in 0..count {
            encoder
                .encode_record(&mbo_record(i))
                .expect("writing to a Vec cannot fail");
        }
    }
    out
}

/// `plain` compressed as several concatenated zstd frames of about `frame_len` input
/// bytes each (what Databento's servers may send).
pub fn zstd_frames(plain: &[u8], frame_len: usize, level: i32) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in plain.chunks(frame_len.max(1)) {
        out.extend_from_slice(&zstd::bulk::compress(chunk, level).expect("zstd compresses"));
    }
    out
}
