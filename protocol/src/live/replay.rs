//! What has been delivered, and which replayed records to drop after a gap-filling
//! reconnect.

use dbn::{Record, RecordRef, rtype};

/// Tracks the index timestamp (`ts_recv` where the record has one) of the last
/// delivered market-data record and how many were delivered at that exact timestamp.
/// Gateway notices and symbol mappings are not market data: they are neither tracked
/// nor dropped.
#[derive(Debug, Clone, Default)]
pub(crate) struct Delivery {
    /// `(timestamp, records delivered at it)` of the last delivered record.
    last: Option<(u64, u64)>,
    /// After a gap-filling reconnect: drop records before this timestamp and the first
    /// `n` at it.
    replayed: Option<(u64, u64)>,
}

/// Offset of `ts_recv` in an `Mbp1Msg`.
const MBP1_TS_RECV: std::ops::Range<usize> = 32..40;

/// The record's index timestamp. dbn's `raw_index_ts` panics on TBBO (0xC5) records,
/// which it dispatches as `Mbp1Msg` without `Mbp1Msg` claiming the rtype; the decoder
/// guarantees such records are at least an `Mbp1Msg` long, so `ts_recv` is read
/// where that struct has it.
fn index_ts(rec: &RecordRef<'_>) -> u64 {
    if rec.header().rtype == dbn::RType::Tbbo as u8 {
        if let Some(bytes) = rec.as_ref().get(MBP1_TS_RECV) {
            let mut ts = [0; 8];
            ts.copy_from_slice(bytes);
            return u64::from_le_bytes(ts);
        }
        return rec.header().ts_event;
    }
    rec.raw_index_ts()
}

impl Delivery {
    /// Whether `rec` is delivered (true) or is a replayed duplicate (false); counts it
    /// when delivered.
    #[inline]
    pub(crate) fn admit(&mut self, rec: &RecordRef<'_>) -> bool {
        if matches!(
            rec.header().rtype,
            rtype::SYSTEM | rtype::ERROR | rtype::SYMBOL_MAPPING
        ) {
            return true;
        }
        let ts = index_ts(rec);
        if let Some((replay_ts, skip)) = &mut self.replayed {
            if ts < *replay_ts {
                return false;
            }
            if ts == *replay_ts && *skip > 0 {
                *skip -= 1;
                return false;
            }
            self.replayed = None;
        }
        match &mut self.last {
            Some((last_ts, count)) if *last_ts == ts => *count += 1,
            _ => self.last = Some((ts, 1)),
        }
        true
    }

    /// The index timestamp of the last delivered market-data record.
    pub(crate) fn last_ts(&self) -> Option<u64> {
        self.last.map(|(ts, _)| ts)
    }

    /// Starts dropping what a replay from [`last_ts`](Self::last_ts) re-sends.
    pub(crate) fn expect_replay(&mut self) {
        self.replayed = self.last;
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
}
