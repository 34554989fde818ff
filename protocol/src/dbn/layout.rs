//! Per-version facts about record types: how long a record of each known `rtype` must
//! be, and which conversion (if any) the upgrade policy applies to it.

use std::mem::size_of;
use std::sync::OnceLock;

use dbn::{HasRType, rtype};

use super::UpgradePolicy;

/// A conversion from an older record struct to a newer one, as the `dbn` crate's `From`
/// impls define them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upgrade {
    /// Passed through unchanged.
    None,
    /// `v1::InstrumentDefMsg` to `v2::InstrumentDefMsg`.
    DefV1ToV2,
    /// `v1::InstrumentDefMsg` to `v3::InstrumentDefMsg`.
    DefV1ToV3,
    /// `v2::InstrumentDefMsg` to `v3::InstrumentDefMsg`.
    DefV2ToV3,
    /// `v1::StatMsg` (also the v2 layout) to `v3::StatMsg`.
    StatV1ToV3,
    /// `v1::SymbolMappingMsg` to `v2::SymbolMappingMsg` (also the v3 layout).
    SymbolMappingV1ToV2,
    /// `v1::ErrorMsg` to `v2::ErrorMsg` (also the v3 layout).
    ErrorV1ToV2,
    /// `v1::SystemMsg` to `v2::SystemMsg` (also the v3 layout).
    SystemV1ToV2,
}

/// What the decoder needs to know about one record type in one stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    /// Minimum record length in bytes (0 for unknown record types: any length framed
    /// by the header is passed through).
    pub(crate) min_len: u16,
    /// The conversion applied to records of this type.
    pub(crate) upgrade: Upgrade,
    /// Fields whose bytes must be checked before the record may be viewed as its
    /// struct (they are Rust enums in the `dbn` crate's struct of this version).
    pub(crate) fields: FieldCheck,
}

/// Record types whose struct holds Rust enums read straight from the wire: any byte
/// outside the enum's values makes even a shared reference to the struct undefined
/// behaviour, so such records are rejected before they are handed out or converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldCheck {
    /// Nothing to check.
    None,
    /// `v1::InstrumentDefMsg`: `security_update_action` and `user_defined_instrument`.
    DefV1,
    /// `v2::InstrumentDefMsg`: `user_defined_instrument`.
    DefV2,
}

/// The first enum field of `record` holding a byte its enum does not define, with that
/// byte. `record` is a whole record of the checked type (its minimum length is
/// enforced before this is called).
pub(crate) fn invalid_field(check: FieldCheck, record: &[u8]) -> Option<(&'static str, u8)> {
    use std::mem::offset_of;

    use dbn::{SecurityUpdateAction, UserDefinedInstrument};
    let byte = |offset: usize| record.get(offset).copied().unwrap_or_default();
    let (action, user_defined) = match check {
        FieldCheck::None => return None,
        FieldCheck::DefV1 => (
            Some(offset_of!(
                dbn::v1::InstrumentDefMsg,
                security_update_action
            )),
            offset_of!(dbn::v1::InstrumentDefMsg, user_defined_instrument),
        ),
        FieldCheck::DefV2 => (
            None,
            offset_of!(dbn::v2::InstrumentDefMsg, user_defined_instrument),
        ),
    };
    if let Some(offset) = action {
        let value = byte(offset);
        if SecurityUpdateAction::try_from(value).is_err() {
            return Some(("security_update_action", value));
        }
    }
    let value = byte(user_defined);
    if UserDefinedInstrument::try_from(value).is_err() {
        return Some(("user_defined_instrument", value));
    }
    None
}

/// The table for one (input version, `ts_out`, policy) combination, indexed by `rtype`.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    entries: [Entry; 256],
}

impl Layout {
    /// Builds the table. `version` must be 1, 2 or 3.
    pub(crate) fn new(version: u8, ts_out: bool, policy: UpgradePolicy) -> Self {
        let mut entries = [Entry {
            min_len: 0,
            upgrade: Upgrade::None,
            fields: FieldCheck::None,
        }; 256];
        let ts_out_len = if ts_out { size_of::<u64>() } else { 0 };
        for (rtype, entry) in entries.iter_mut().enumerate() {
            let rtype = rtype as u8;
            let min = struct_len(version, rtype);
            if min > 0 {
                entry.min_len = u16::try_from(min + ts_out_len).unwrap_or(u16::MAX);
            }
            entry.upgrade = upgrade_for(version, policy, rtype);
            entry.fields = match (version, rtype) {
                (1, rtype::INSTRUMENT_DEF) => FieldCheck::DefV1,
                (2, rtype::INSTRUMENT_DEF) => FieldCheck::DefV2,
                _ => FieldCheck::None,
            };
        }
        Self { entries }
    }

    /// The table for one combination, built on first use and shared by every decoder
    /// of the process (building it costs more than decoding a small stream's records).
    /// `version` is 1, 2 or 3 (validated by the caller; anything above 3 reads as 3).
    pub(crate) fn shared(version: u8, ts_out: bool, policy: UpgradePolicy) -> &'static Self {
        static TABLES: [OnceLock<Layout>; 18] = [const { OnceLock::new() }; 18];
        let version_index = match version {
            0 | 1 => 0,
            2 => 1,
            _ => 2,
        };
        let policy_index = match policy {
            UpgradePolicy::AsIs => 0,
            UpgradePolicy::UpgradeToV2 => 1,
            UpgradePolicy::UpgradeToV3 => 2,
        };
        let index = (version_index * 2 + usize::from(ts_out)) * 3 + policy_index;
        TABLES[index].get_or_init(|| Self::new(version.clamp(1, 3), ts_out, policy))
    }

    /// The entry for `rtype`.
    #[inline]
    pub(crate) fn entry(&self, rtype: u8) -> Entry {
        self.entries[usize::from(rtype)]
    }
}

/// The conversion `policy` applies to `rtype` records of a version `version` stream.
/// Mirrors the `dbn` crate's own decoder so that both yield the same bytes.
fn upgrade_for(version: u8, policy: UpgradePolicy, rtype: u8) -> Upgrade {
    use UpgradePolicy::{AsIs, UpgradeToV2, UpgradeToV3};
    match (version, policy, rtype) {
        (_, AsIs, _) => Upgrade::None,
        (1, UpgradeToV2, rtype::INSTRUMENT_DEF) => Upgrade::DefV1ToV2,
        (1, UpgradeToV3, rtype::INSTRUMENT_DEF) => Upgrade::DefV1ToV3,
        (2, UpgradeToV3, rtype::INSTRUMENT_DEF) => Upgrade::DefV2ToV3,
        (1 | 2, UpgradeToV3, rtype::STATISTICS) => Upgrade::StatV1ToV3,
        (1, UpgradeToV2 | UpgradeToV3, rtype::SYMBOL_MAPPING) => Upgrade::SymbolMappingV1ToV2,
        (1, UpgradeToV2 | UpgradeToV3, rtype::ERROR) => Upgrade::ErrorV1ToV2,
        (1, UpgradeToV2 | UpgradeToV3, rtype::SYSTEM) => Upgrade::SystemV1ToV2,
        _ => Upgrade::None,
    }
}

/// Size of the largest struct of DBN version `version` whose rtype is `rtype`, or 0
/// when no struct of that version has this rtype.
fn struct_len(version: u8, rtype: u8) -> usize {
    /// The largest size among the listed record structs that claim `rtype`.
    macro_rules! largest {
        ($rtype:expr; $($ty:ty),+ $(,)?) => {{
            let mut len = 0usize;
            $( if <$ty as HasRType>::has_rtype(u16::from($rtype)) { len = len.max(size_of::<$ty>()); } )+
            len
        }};
    }
    use dbn::{
        BboMsg, CbboMsg, Cmbp1Msg, ImbalanceMsg, MboMsg, Mbp1Msg, Mbp10Msg, OhlcvMsg, StatusMsg,
        TradeMsg,
    };
    let common = largest!(rtype; TradeMsg, Mbp1Msg, Mbp10Msg, OhlcvMsg, StatusMsg, ImbalanceMsg,
        MboMsg, Cmbp1Msg, CbboMsg, BboMsg);
    let versioned = match version {
        1 => {
            use dbn::v1::{ErrorMsg, InstrumentDefMsg, StatMsg, SymbolMappingMsg, SystemMsg};
            largest!(rtype; InstrumentDefMsg, ErrorMsg, SymbolMappingMsg, SystemMsg, StatMsg)
        }
        2 => {
            use dbn::v2::{ErrorMsg, InstrumentDefMsg, StatMsg, SymbolMappingMsg, SystemMsg};
            largest!(rtype; InstrumentDefMsg, ErrorMsg, SymbolMappingMsg, SystemMsg, StatMsg)
        }
        _ => {
            use dbn::v3::{ErrorMsg, InstrumentDefMsg, StatMsg, SymbolMappingMsg, SystemMsg};
            largest!(rtype; InstrumentDefMsg, ErrorMsg, SymbolMappingMsg, SystemMsg, StatMsg)
        }
    };
    // dbn views TBBO (0xC5, a v4 rtype) as `Mbp1Msg`, whose `has_rtype` does not
    // claim it: a shorter record would be read out of bounds by dbn's dispatch.
    let dispatched = if rtype == dbn::RType::Tbbo as u8 {
        size_of::<Mbp1Msg>()
    } else {
        0
    };
    common.max(versioned).max(dispatched)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rtype that dbn's record dispatch views as a struct needs that struct's
    /// size (found by fuzzing: TBBO had none).
    #[test]
    fn shared_tables_equal_freshly_built_ones() {
        use UpgradePolicy::{AsIs, UpgradeToV2, UpgradeToV3};
        for version in 1..=3 {
            for ts_out in [false, true] {
                for policy in [AsIs, UpgradeToV2, UpgradeToV3] {
                    let shared = Layout::shared(version, ts_out, policy);
                    let fresh = Layout::new(version, ts_out, policy);
                    for rtype in 0..=255u8 {
                        let (a, b) = (shared.entry(rtype), fresh.entry(rtype));
                        assert_eq!(
                            (a.min_len, a.upgrade, a.fields),
                            (b.min_len, b.upgrade, b.fields),
                            "v{version} ts_out {ts_out} {policy:?} rtype {rtype:#x}"
                        );
                    }
                    assert!(std::ptr::eq(
                        shared,
                        Layout::shared(version, ts_out, policy)
                    ));
                }
            }
        }
    }

    #[test]
    fn tbbo_needs_the_size_of_mbp1() {
        for version in 1..=3 {
            assert_eq!(struct_len(version, 0xC5), 80, "v{version}");
        }
    }

    /// Sizes from the wire facts (PROTOCOL.md section 3), version by version.
    #[test]
    fn struct_sizes_match_the_wire_facts() {
        let per_version = [
            (rtype::MBP_0, [48, 48, 48]),
            (rtype::MBP_1, [80, 80, 80]),
            (rtype::BBO_1S, [80, 80, 80]),
            (rtype::CBBO_1S, [80, 80, 80]),
            (rtype::CMBP_1, [80, 80, 80]),
            (rtype::MBP_10, [368, 368, 368]),
            (rtype::OHLCV_1D, [56, 56, 56]),
            (rtype::STATUS, [40, 40, 40]),
            (rtype::MBO, [56, 56, 56]),
            (rtype::IMBALANCE, [112, 112, 112]),
            (rtype::INSTRUMENT_DEF, [360, 400, 520]),
            (rtype::ERROR, [80, 320, 320]),
            (rtype::SYMBOL_MAPPING, [80, 176, 176]),
            (rtype::SYSTEM, [80, 320, 320]),
            (rtype::STATISTICS, [64, 64, 80]),
        ];
        for (rtype, sizes) in per_version {
            for (i, size) in sizes.into_iter().enumerate() {
                let version = i as u8 + 1;
                assert_eq!(
                    struct_len(version, rtype),
                    size,
                    "rtype {rtype:#x} v{version}"
                );
            }
        }
        assert_eq!(struct_len(3, 0xEE), 0, "unknown rtypes have no minimum");
    }

    #[test]
    fn enum_fields_of_old_definitions_are_checked() {
        let v1 = dbn::v1::InstrumentDefMsg {
            security_update_action: dbn::SecurityUpdateAction::Add,
            ..Default::default()
        };
        let mut bytes = v1.as_ref().to_vec();
        assert_eq!(invalid_field(FieldCheck::DefV1, &bytes), None);
        let at = std::mem::offset_of!(dbn::v1::InstrumentDefMsg, security_update_action);
        bytes[at] = b'X';
        assert_eq!(
            invalid_field(FieldCheck::DefV1, &bytes),
            Some(("security_update_action", b'X'))
        );
        let v2 = dbn::v2::InstrumentDefMsg::default();
        let mut bytes = v2.as_ref().to_vec();
        assert_eq!(invalid_field(FieldCheck::DefV2, &bytes), None);
        bytes[std::mem::offset_of!(dbn::v2::InstrumentDefMsg, user_defined_instrument)] = 0;
        assert_eq!(
            invalid_field(FieldCheck::DefV2, &bytes),
            Some(("user_defined_instrument", 0))
        );
        assert_eq!(
            Layout::new(3, false, UpgradePolicy::AsIs)
                .entry(rtype::INSTRUMENT_DEF)
                .fields,
            FieldCheck::None
        );
        assert_eq!(
            Layout::new(1, true, UpgradePolicy::AsIs)
                .entry(rtype::INSTRUMENT_DEF)
                .fields,
            FieldCheck::DefV1
        );
    }

    #[test]
    fn ts_out_adds_eight_bytes_to_known_types_only() {
        let layout = Layout::new(3, true, UpgradePolicy::AsIs);
        assert_eq!(layout.entry(rtype::MBO).min_len, 64);
        assert_eq!(layout.entry(0xEE).min_len, 0);
    }

    #[test]
    fn upgrades_follow_the_policy() {
        let v1_to_v3 = Layout::new(1, false, UpgradePolicy::UpgradeToV3);
        assert_eq!(
            v1_to_v3.entry(rtype::INSTRUMENT_DEF).upgrade,
            Upgrade::DefV1ToV3
        );
        assert_eq!(
            v1_to_v3.entry(rtype::STATISTICS).upgrade,
            Upgrade::StatV1ToV3
        );
        assert_eq!(v1_to_v3.entry(rtype::MBO).upgrade, Upgrade::None);
        let v1_to_v2 = Layout::new(1, false, UpgradePolicy::UpgradeToV2);
        assert_eq!(v1_to_v2.entry(rtype::STATISTICS).upgrade, Upgrade::None);
        assert_eq!(v1_to_v2.entry(rtype::ERROR).upgrade, Upgrade::ErrorV1ToV2);
        let v3 = Layout::new(3, false, UpgradePolicy::UpgradeToV3);
        let as_is = Layout::new(1, false, UpgradePolicy::AsIs);
        for rtype in 0..=255u8 {
            assert_eq!(
                v3.entry(rtype).upgrade,
                Upgrade::None,
                "v3 input is never converted"
            );
            assert_eq!(
                as_is.entry(rtype).upgrade,
                Upgrade::None,
                "AsIs converts nothing"
            );
        }
    }
}
