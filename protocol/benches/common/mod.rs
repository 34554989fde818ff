//! What both protocol benches share: the generated v3 MBO stream and the checksum
//! every contender computes. (Each bench uses part of it.)
#![allow(dead_code)]

use dbn::encode::{EncodeRecord, dbn::Encoder};
use dbn::{FlagSet, MboMsg, Metadata, MetadataBuilder, RecordRef, SType, Schema, rtype};

// ---------------------------------------------------------------------------------
// Input generation (the same scheme as the workspace's test fixtures).

/// First `ts_event` of the generated stream.
pub(crate) const START_NS: u64 = 1_609_160_400_000_000_000;

/// The metadata of the generated stream.
pub(crate) fn mbo_metadata() -> Metadata {
    MetadataBuilder::new()
        .dataset("GLBX.MDP3".to_owned())
        .schema(Some(Schema::Mbo))
        .start(START_NS)
        .stype_in(Some(SType::RawSymbol))
        .stype_out(SType::InstrumentId)
        .symbols(vec!["ESH1".to_owned()])
        .build()
}

/// The `i`-th generated MBO record.
pub(crate) fn mbo_record(i: u64) -> MboMsg {
    let mut rec = MboMsg::default();
    rec.hd.rtype = rtype::MBO;
    rec.hd.publisher_id = 1;
    rec.hd.instrument_id = 5482 + (i % 4) as u32;
    rec.hd.ts_event = START_NS + i * 1_000;
    rec.order_id = 647_784_973_705 + i;
    rec.price = 3_722_750_000_000 + ((i % 64) as i64) * 250_000_000;
    rec.size = 1 + (i % 10) as u32;
    rec.flags = FlagSet::empty();
    rec.action = if i % 3 == 0 { b'A' } else { b'C' } as std::ffi::c_char;
    rec.side = if i % 2 == 0 { b'B' } else { b'A' } as std::ffi::c_char;
    rec.ts_recv = rec.hd.ts_event + 275;
    rec.ts_in_delta = 1_000;
    rec.sequence = 1_170_352 + i as u32;
    rec
}

/// A whole DBN v3 stream (prelude, metadata, records) of `count` MBO records.
pub(crate) fn mbo_stream(count: u64) -> Vec<u8> {
    let metadata = mbo_metadata();
    let mut out = Vec::with_capacity(count as usize * size_of::<MboMsg>() + 1024);
    {
        let mut encoder = Encoder::new(&mut out, &metadata).expect("encode metadata");
        for i in 0..count {
            encoder
                .encode_record(&mbo_record(i))
                .expect("encode record");
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// What every contender computes.

/// Record count plus a sum over every record of `ts_event` and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Checksum {
    pub(crate) records: u64,
    pub(crate) sum: u64,
}

impl Checksum {
    #[inline(always)]
    pub(crate) fn add(&mut self, rec: RecordRef<'_>) {
        self.records += 1;
        self.sum = self
            .sum
            .wrapping_add(rec.header().ts_event)
            .wrapping_add(rec.header().record_size() as u64);
    }

    /// Adds every record of a batch, accumulating in registers (a store through
    /// `&mut self` per record could not be kept out of the loop).
    #[inline(always)]
    pub(crate) fn add_all<'a>(&mut self, records: impl IntoIterator<Item = RecordRef<'a>>) {
        let mut local = *self;
        for rec in records {
            local.add(rec);
        }
        *self = local;
    }
}
