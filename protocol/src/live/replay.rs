//! What has been delivered, and which replayed records to drop after a gap-filling
//! reconnect.

use std::mem::offset_of;

use dbn::{Record, RecordHeader, RecordRef, rtype};

/// Tracks the index timestamp (`ts_recv` where the record has one) of the last
/// delivered market-data record and how many were delivered at that exact timestamp.
/// Gateway notices and symbol mappings are not market data: they are neither tracked
/// nor dropped.
#[derive(Debug, Clone, Default)]
pub(crate) struct Delivery {
    /// The timestamp of the last delivered record (meaningless while `count` is 0).
    ts: u64,
    /// Records delivered at `ts`; 0 when none was delivered yet.
    count: u64,
    /// After a gap-filling reconnect: drop records before this timestamp and the first
    /// `n` at it.
    replayed: Option<(u64, u64)>,
}

/// What the live session does with a record, by its `rtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// A gateway `SystemMsg` or `ErrorMsg`: it ends a batch and comes as its own event.
    Notice,
    /// Not market data (a symbol mapping): delivered, never tracked or dropped.
    Untracked,
    /// Market data whose index timestamp is the `u64` at this byte offset: `ts_recv`
    /// of the struct `dbn` views it as, or `header.ts_event` (offset 8) when that
    /// struct has no `ts_recv` or `dbn` knows no struct for the `rtype`.
    At(u8),
    /// Market data whose `ts_recv` moves between the struct versions `dbn` picks by
    /// the record's length: `dbn`'s own dispatch finds it. (No record type of the
    /// `dbn` version in use is in this class; it keeps the table right if one moves.)
    Dispatch,
}

impl Class {
    /// The class of records of type `rtype`.
    #[inline(always)]
    pub(crate) fn of(rtype: u8) -> Self {
        CLASSES[usize::from(rtype)]
    }
}

/// Offset of `header.ts_event`: the index timestamp of records without `ts_recv`.
const TS_EVENT: usize = offset_of!(RecordHeader, ts_event);

/// [`Class::At`] for a timestamp at `offset`, checked at compile time to lie past the
/// length and `rtype` bytes and to fit a `u8`.
const fn at(offset: usize) -> Class {
    assert!(offset >= TS_EVENT && offset <= u8::MAX as usize && offset % 8 == 0);
    Class::At(offset as u8)
}

/// [`Class::At`] when every struct version `dbn` may view a record as (by its length)
/// has `ts_recv` at the same offset, [`Class::Dispatch`] otherwise.
const fn at_all(offsets: &[usize]) -> Class {
    let mut i = 1;
    while i < offsets.len() {
        if offsets[i] != offsets[0] {
            return Class::Dispatch;
        }
        i += 1;
    }
    at(offsets[0])
}

/// The class of every `rtype`, built at compile time. The structs are those `dbn`'s
/// record dispatch (`RecordRef::raw_index_ts`) views each `rtype` as; the unit tests
/// check every `rtype` against it for every version and record length the decoder
/// hands out.
static CLASSES: [Class; 256] = {
    use dbn::{BboMsg, CbboMsg, Cmbp1Msg, ImbalanceMsg, MboMsg, Mbp1Msg, Mbp10Msg, StatusMsg};
    use dbn::{TradeMsg, v1, v2, v3};

    // Unknown record types and those without `ts_recv` (OHLCV): `ts_event`.
    let mut table = [at(TS_EVENT); 256];
    table[rtype::SYSTEM as usize] = Class::Notice;
    table[rtype::ERROR as usize] = Class::Notice;
    table[rtype::SYMBOL_MAPPING as usize] = Class::Untracked;
    table[rtype::MBP_0 as usize] = at(offset_of!(TradeMsg, ts_recv));
    // dbn views TBBO as `Mbp1Msg` (whose `has_rtype` does not claim it, so dbn's own
    // `raw_index_ts` panics on it); the decoder makes TBBO records that long.
    table[rtype::MBP_1 as usize] = at(offset_of!(Mbp1Msg, ts_recv));
    table[rtype::TBBO as usize] = at(offset_of!(Mbp1Msg, ts_recv));
    table[rtype::MBP_10 as usize] = at(offset_of!(Mbp10Msg, ts_recv));
    table[rtype::STATUS as usize] = at(offset_of!(StatusMsg, ts_recv));
    table[rtype::IMBALANCE as usize] = at(offset_of!(ImbalanceMsg, ts_recv));
    table[rtype::MBO as usize] = at(offset_of!(MboMsg, ts_recv));
    table[rtype::CMBP_1 as usize] = at(offset_of!(Cmbp1Msg, ts_recv));
    table[rtype::TCBBO as usize] = at(offset_of!(Cmbp1Msg, ts_recv));
    table[rtype::BBO_1S as usize] = at(offset_of!(BboMsg, ts_recv));
    table[rtype::BBO_1M as usize] = at(offset_of!(BboMsg, ts_recv));
    table[rtype::CBBO_1S as usize] = at(offset_of!(CbboMsg, ts_recv));
    table[rtype::CBBO_1M as usize] = at(offset_of!(CbboMsg, ts_recv));
    // Versioned structs: dbn picks the version by the record's length.
    table[rtype::INSTRUMENT_DEF as usize] = at_all(&[
        offset_of!(v1::InstrumentDefMsg, ts_recv),
        offset_of!(v2::InstrumentDefMsg, ts_recv),
        offset_of!(v3::InstrumentDefMsg, ts_recv),
    ]);
    table[rtype::STATISTICS as usize] = at_all(&[
        offset_of!(v1::StatMsg, ts_recv),
        offset_of!(v2::StatMsg, ts_recv),
        offset_of!(v3::StatMsg, ts_recv),
    ]);
    table
};

/// The `u64` at byte `offset` of `rec`, or `header.ts_event` if the record is too short
/// to hold it (the decoder rules that out: records of a type with `ts_recv` are at
/// least as long as their struct).
#[inline(always)]
fn u64_at(rec: &RecordRef<'_>, offset: u8) -> u64 {
    let at = usize::from(offset);
    match rec.as_ref().get(at..at + 8) {
        // The bytes of the struct field (dbn views records in native byte order).
        Some(&[b0, b1, b2, b3, b4, b5, b6, b7]) => {
            u64::from_ne_bytes([b0, b1, b2, b3, b4, b5, b6, b7])
        }
        _ => rec.header().ts_event,
    }
}

/// The index timestamp of a market-data record of class `class` (neither a notice nor
/// a symbol mapping): what `dbn`'s `raw_index_ts` returns, read from its table offset.
#[inline(always)]
fn index_ts(class: Class, rec: &RecordRef<'_>) -> Option<u64> {
    match class {
        Class::At(offset) => Some(u64_at(rec, offset)),
        Class::Dispatch => Some(dispatched_index_ts(rec)),
        Class::Notice | Class::Untracked => None,
    }
}

/// `dbn`'s own `raw_index_ts`, for [`Class::Dispatch`] (which never holds TBBO).
#[cold]
#[inline(never)]
fn dispatched_index_ts(rec: &RecordRef<'_>) -> u64 {
    rec.raw_index_ts()
}

impl Delivery {
    /// [`admit_as`](Self::admit_as) with the class looked up from `rec` (the session
    /// classifies records before taking them and calls `admit_as` itself).
    #[cfg(test)]
    pub(crate) fn admit(&mut self, rec: &RecordRef<'_>) -> bool {
        self.admit_as(Class::of(rec.header().rtype), rec)
    }

    /// Whether `rec`, whose class (by its `rtype`) is `class`, is delivered (true) or is
    /// a replayed duplicate (false); counts it when delivered. Notices and symbol
    /// mappings are always delivered and never counted.
    #[inline(always)]
    pub(crate) fn admit_as(&mut self, class: Class, rec: &RecordRef<'_>) -> bool {
        match index_ts(class, rec) {
            Some(ts) => self.admit_ts(ts),
            None => true,
        }
    }

    /// Whether a market-data record with index timestamp `ts` is delivered; counts it
    /// when delivered.
    #[inline(always)]
    fn admit_ts(&mut self, ts: u64) -> bool {
        if self.replayed.is_some() && self.drops_replayed(ts) {
            return false;
        }
        // With nothing delivered yet `count` is 0: the first record counts 1 whatever
        // its timestamp.
        self.count = if ts == self.ts {
            self.count.saturating_add(1)
        } else {
            1
        };
        self.ts = ts;
        true
    }

    /// `(timestamp, records delivered at it)` of the last delivered record.
    fn last(&self) -> Option<(u64, u64)> {
        (self.count > 0).then_some((self.ts, self.count))
    }

    /// While a replay is pending: whether the record at `ts` is a duplicate to drop.
    /// Ends the replay at the first record that is not.
    #[cold]
    #[inline(never)]
    fn drops_replayed(&mut self, ts: u64) -> bool {
        if let Some((replay_ts, skip)) = &mut self.replayed {
            if ts < *replay_ts {
                return true;
            }
            if ts == *replay_ts && *skip > 0 {
                *skip -= 1;
                return true;
            }
            self.replayed = None;
        }
        false
    }

    /// The index timestamp of the last delivered market-data record.
    pub(crate) fn last_ts(&self) -> Option<u64> {
        self.last().map(|(ts, _)| ts)
    }

    /// Starts dropping what a replay from [`last_ts`](Self::last_ts) re-sends.
    pub(crate) fn expect_replay(&mut self) {
        self.replayed = self.last();
    }

    /// Whether replayed duplicates may still be dropped (a gap-filling reconnect's
    /// replay has not reached a new record yet).
    pub(crate) fn replay_pending(&self) -> bool {
        self.replayed.is_some()
    }

    /// Stops dropping (a reconnect without replay).
    pub(crate) fn no_replay(&mut self) {
        self.replayed = None;
    }
}

#[cfg(test)]
mod tests {
    use dbn::{MboMsg, RecordRef};

    use super::*;
    use crate::{DbnDecoder, Decoded, DecoderConfig, Error, FragmentFormat, UpgradePolicy};

    fn mbo(ts_recv: u64, order_id: u64) -> MboMsg {
        MboMsg {
            ts_recv,
            order_id,
            ..MboMsg::default()
        }
    }

    #[test]
    fn a_replay_drops_exactly_what_was_delivered() {
        let mut delivery = Delivery::default();
        let first = [mbo(10, 1), mbo(20, 2), mbo(20, 3)];
        assert!(first.iter().all(|r| delivery.admit(&RecordRef::from(r))));
        assert_eq!(delivery.last_ts(), Some(20));
        delivery.expect_replay();
        // The gateway replays from ts 20 (inclusive), plus older noise.
        let replay = [mbo(15, 0), mbo(20, 2), mbo(20, 3), mbo(20, 4), mbo(21, 5)];
        let admitted: Vec<u64> = replay
            .iter()
            .filter(|r| delivery.admit(&RecordRef::from(*r)))
            .map(|r| r.order_id)
            .collect();
        assert_eq!(admitted, [4, 5]);
    }

    #[test]
    fn notices_are_never_dropped_or_counted() {
        let mut delivery = Delivery::default();
        assert!(delivery.admit(&RecordRef::from(&mbo(50, 1))));
        delivery.expect_replay();
        let heartbeat = dbn::SystemMsg::heartbeat(1);
        assert!(delivery.admit(&RecordRef::from(&heartbeat)));
        assert_eq!(delivery.last_ts(), Some(50));
    }

    #[test]
    fn a_symbol_mapping_during_a_replay_is_delivered_and_not_counted() {
        let mut delivery = Delivery::default();
        assert!(delivery.admit(&RecordRef::from(&mbo(50, 1))));
        delivery.expect_replay();
        let mapping = dbn::SymbolMappingMsg::default();
        assert!(delivery.admit(&RecordRef::from(&mapping)));
        // The replayed record at 50 is still dropped: the mapping did not end the replay.
        assert!(!delivery.admit(&RecordRef::from(&mbo(50, 1))));
        assert!(delivery.admit(&RecordRef::from(&mbo(50, 2))));
        assert_eq!(delivery.last_ts(), Some(50));
    }

    #[test]
    fn nothing_delivered_means_no_last_timestamp_even_at_zero() {
        let mut delivery = Delivery::default();
        assert_eq!(delivery.last_ts(), None);
        delivery.expect_replay();
        // A record at timestamp 0 is not taken for a replay of nothing.
        assert!(delivery.admit(&RecordRef::from(&mbo(0, 1))));
        assert_eq!(delivery.last_ts(), Some(0));
        delivery.expect_replay();
        assert!(!delivery.admit(&RecordRef::from(&mbo(0, 1))));
        assert!(delivery.admit(&RecordRef::from(&mbo(0, 2))));
    }

    #[test]
    fn only_system_and_error_records_are_notices_and_only_mappings_untracked() {
        for rtype in 0..=255u8 {
            let want_notice = matches!(rtype, rtype::SYSTEM | rtype::ERROR);
            let want_untracked = rtype == rtype::SYMBOL_MAPPING;
            let class = Class::of(rtype);
            assert_eq!(class == Class::Notice, want_notice, "rtype {rtype:#04x}");
            assert_eq!(
                class == Class::Untracked,
                want_untracked,
                "rtype {rtype:#04x}"
            );
            if dbn::RType::try_from(rtype).is_err() {
                // dbn's `raw_index_ts` falls back to `ts_event` for rtypes it does not know.
                assert_eq!(class, Class::At(8), "unknown rtype {rtype:#04x}");
            }
        }
    }

    #[test]
    fn differing_offsets_across_versions_fall_back_to_dbns_dispatch() {
        assert_eq!(at_all(&[16, 16, 16]), Class::At(16));
        assert_eq!(at_all(&[16, 24]), Class::Dispatch);
        assert_eq!(at_all(&[24, 16, 24]), Class::Dispatch);
        let def = dbn::v3::InstrumentDefMsg {
            ts_recv: 7,
            ..Default::default()
        };
        assert_eq!(dispatched_index_ts(&RecordRef::from(&def)), 7);
    }

    /// The bytes of a `len`-byte record of type `rtype` whose every aligned 8-byte word
    /// differs from every other (reading the wrong one shows), with valid bytes in the
    /// enum fields of the instrument definitions of every version (dbn may view a record
    /// as any of them, by its length).
    fn patterned(rtype: u8, len: usize) -> Vec<u8> {
        let mut bytes: Vec<u8> = (0..len / 2)
            .flat_map(|i| (0x4000 + i as u16).to_le_bytes())
            .collect();
        bytes[0] = u8::try_from(len / 4).expect("a framable length");
        bytes[1] = rtype;
        if rtype == rtype::INSTRUMENT_DEF {
            for (at, value) in [
                (
                    offset_of!(dbn::v1::InstrumentDefMsg, security_update_action),
                    b'A',
                ),
                (
                    offset_of!(dbn::v1::InstrumentDefMsg, user_defined_instrument),
                    b'N',
                ),
                (
                    offset_of!(dbn::v2::InstrumentDefMsg, user_defined_instrument),
                    b'N',
                ),
            ] {
                if let Some(byte) = bytes.get_mut(at) {
                    *byte = value;
                }
            }
        }
        bytes
    }

    /// Decodes `bytes` (one whole record) with `dec` and calls `f` with the record it
    /// hands out; `None` when the decoder refuses it as too short for its type (then
    /// `dec` is replaced by a fresh decoder from `config`).
    fn with_decoded<T>(
        dec: &mut DbnDecoder,
        config: &DecoderConfig,
        bytes: &[u8],
        f: impl FnOnce(&RecordRef<'_>) -> T,
    ) -> Option<T> {
        assert_eq!(dec.handle_input(bytes), bytes.len());
        match dec.poll() {
            Ok(Decoded::Record(rec)) => Some(f(&rec)),
            Ok(other) => panic!("a whole record was buffered, got {other:?}"),
            Err(Error::RecordTooShort { .. }) => {
                *dec = DbnDecoder::new(config.clone()).expect("valid config");
                None
            }
            Err(err) => panic!("unexpected error {err}"),
        }
    }

    /// The table gives, for every rtype, every input version, `ts_out` and upgrade
    /// policy, and every record length the decoder hands out, the timestamp dbn's
    /// `raw_index_ts` returns (for TBBO, which dbn's own call panics on, that of the
    /// same bytes as an `MBP_1` record: dbn views TBBO as `Mbp1Msg`).
    #[test]
    fn table_reads_what_dbns_raw_index_ts_returns_for_every_record_the_decoder_yields() {
        use UpgradePolicy::{AsIs, UpgradeToV2, UpgradeToV3};
        let mut checked = 0usize;
        for version in 1..=3u8 {
            for policy in [AsIs, UpgradeToV2, UpgradeToV3] {
                if version == 3 && policy == UpgradeToV2 {
                    continue; // a configuration error
                }
                for ts_out in [false, true] {
                    let config = DecoderConfig::default()
                        .upgrade_policy(policy)
                        .fragment(FragmentFormat { version, ts_out });
                    let fresh = || DbnDecoder::new(config.clone()).expect("valid config");
                    let (mut dec, mut mbp1_dec) = (fresh(), fresh());
                    for rtype in 0..=255u8 {
                        let class = Class::of(rtype);
                        if matches!(class, Class::Notice | Class::Untracked) {
                            continue; // no index timestamp is read
                        }
                        let mut yielded = 0;
                        for len in (16..=1020).step_by(4) {
                            let bytes = patterned(rtype, len);
                            let got = with_decoded(&mut dec, &config, &bytes, |rec| {
                                let got = index_ts(class, rec).expect("market data");
                                let want = if rtype == rtype::TBBO {
                                    None
                                } else {
                                    Some(rec.raw_index_ts())
                                };
                                (got, want, rec.header().ts_event)
                            });
                            let Some((got, want, ts_event)) = got else {
                                continue;
                            };
                            let want = want.unwrap_or_else(|| {
                                let mut as_mbp1 = bytes.clone();
                                as_mbp1[1] = rtype::MBP_1;
                                with_decoded(&mut mbp1_dec, &config, &as_mbp1, |rec| {
                                    rec.raw_index_ts()
                                })
                                .expect("TBBO and MBP_1 have the same minimum length")
                            });
                            assert_eq!(
                                got, want,
                                "v{version} {policy:?} ts_out {ts_out} rtype {rtype:#04x} \
                                 len {len} (ts_event {ts_event})"
                            );
                            yielded += 1;
                        }
                        assert!(yielded > 0, "v{version} rtype {rtype:#04x}: none decoded");
                        checked += yielded;
                    }
                }
            }
        }
        assert!(checked > 16 * 250 * 200, "{checked} records checked");
    }

    /// Records with `ts_recv` read it, not `ts_event` (the test above would not tell if
    /// dbn and the table both fell back to `ts_event`).
    #[test]
    fn market_data_with_ts_recv_is_indexed_by_it() {
        let mut mbo = mbo(20, 1);
        mbo.hd.ts_event = 10;
        assert_eq!(
            index_ts(Class::of(rtype::MBO), &RecordRef::from(&mbo)),
            Some(20)
        );
        let mut def = dbn::v1::InstrumentDefMsg {
            ts_recv: 30,
            ..Default::default()
        };
        def.hd.ts_event = 10;
        assert_eq!(
            index_ts(Class::of(rtype::INSTRUMENT_DEF), &RecordRef::from(&def)),
            Some(30)
        );
        let mut tbbo = dbn::Mbp1Msg {
            ts_recv: 40,
            ..Default::default()
        };
        tbbo.hd.ts_event = 10;
        tbbo.hd.rtype = rtype::TBBO;
        assert_eq!(
            index_ts(Class::of(rtype::TBBO), &RecordRef::from(&tbbo)),
            Some(40)
        );
        let ohlcv = dbn::OhlcvMsg::default_for_schema(dbn::Schema::Ohlcv1S);
        assert_eq!(
            index_ts(Class::of(rtype::OHLCV_1S), &RecordRef::from(&ohlcv)),
            Some(ohlcv.hd.ts_event)
        );
    }
}
