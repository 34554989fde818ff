//! Sample streams for the documentation examples. Not part of the API.

use ::dbn::encode::{DbnEncodable, EncodeRecord, dbn::Encoder};
use ::dbn::{MboMsg, MetadataBuilder, SType, Schema};

/// A small DBN v3 stream: metadata and two MBO records.
pub fn sample_dbn() -> Vec<u8> {
    let metadata = MetadataBuilder::new()
        .dataset("GLBX.MDP3".to_owned())
        .schema(Some(Schema::Mbo))
        .start(1_609_160_400_000_000_000)
        .stype_in(Some(SType::RawSymbol))
        .stype_out(SType::InstrumentId)
        .build();
    let mut out = Vec::new();
    if let Ok(mut encoder) = Encoder::new(&mut out, &metadata) {
        for i in 0..2u64 {
            let mut rec = MboMsg::default();
            rec.hd.instrument_id = 5482;
            rec.hd.ts_event = 1_609_160_400_000_000_000 + i;
            rec.order_id = 647_784_973_705 + i;
            encode(&mut encoder, &rec);
        }
    }
    out
}

/// [`sample_dbn`] compressed with zstd.
pub fn sample_dbn_zst() -> Vec<u8> {
    zstd::bulk::compress(&sample_dbn(), 3).unwrap_or_default()
}

fn encode<W: std::io::Write, R: DbnEncodable>(encoder: &mut Encoder<W>, rec: &R) {
    let _ = encoder.encode_record(rec);
}
