//! Record conversions between DBN versions, written into caller-provided aligned space.

use std::mem::size_of;

use dbn::{HasRType, RecordHeader, RecordMut, RecordRef, WithTsOut};

use super::layout::Upgrade;

/// Converts `rec` as `upgrade` says and writes the new record to the start of `out`.
/// Returns the bytes written, or `None` when `out` is too small or `rec` is not the
/// type the conversion expects (the decoder checks both before calling).
pub(crate) fn convert(
    upgrade: Upgrade,
    ts_out: bool,
    rec: RecordRef<'_>,
    out: &mut [u8],
) -> Option<usize> {
    use dbn::{v1, v2, v3};
    match upgrade {
        Upgrade::None => None,
        Upgrade::DefV1ToV2 => {
            convert_as::<v1::InstrumentDefMsg, v2::InstrumentDefMsg>(ts_out, rec, out)
        }
        Upgrade::DefV1ToV3 => {
            convert_as::<v1::InstrumentDefMsg, v3::InstrumentDefMsg>(ts_out, rec, out)
        }
        Upgrade::DefV2ToV3 => {
            convert_as::<v2::InstrumentDefMsg, v3::InstrumentDefMsg>(ts_out, rec, out)
        }
        Upgrade::StatV1ToV3 => convert_as::<v1::StatMsg, v3::StatMsg>(ts_out, rec, out),
        Upgrade::SymbolMappingV1ToV2 => {
            convert_as::<v1::SymbolMappingMsg, v2::SymbolMappingMsg>(ts_out, rec, out)
        }
        Upgrade::ErrorV1ToV2 => convert_as::<v1::ErrorMsg, v2::ErrorMsg>(ts_out, rec, out),
        Upgrade::SystemV1ToV2 => convert_as::<v1::SystemMsg, v2::SystemMsg>(ts_out, rec, out),
    }
}

/// The size of the record `upgrade` produces, with `ts_out` appended when on.
pub(crate) fn converted_len(upgrade: Upgrade, ts_out: bool) -> usize {
    use dbn::{v2, v3};
    let ts_out_len = if ts_out { size_of::<u64>() } else { 0 };
    ts_out_len
        + match upgrade {
            Upgrade::None => 0,
            Upgrade::DefV1ToV2 => size_of::<v2::InstrumentDefMsg>(),
            Upgrade::DefV1ToV3 | Upgrade::DefV2ToV3 => size_of::<v3::InstrumentDefMsg>(),
            Upgrade::StatV1ToV3 => size_of::<v3::StatMsg>(),
            Upgrade::SymbolMappingV1ToV2 => size_of::<v2::SymbolMappingMsg>(),
            Upgrade::ErrorV1ToV2 => size_of::<v2::ErrorMsg>(),
            Upgrade::SystemV1ToV2 => size_of::<v2::SystemMsg>(),
        }
}

fn convert_as<T, U>(ts_out: bool, rec: RecordRef<'_>, out: &mut [u8]) -> Option<usize>
where
    T: HasRType<Header = RecordHeader>,
    U: HasRType<Header = RecordHeader> + RecordMut + for<'a> From<&'a T>,
{
    if ts_out {
        let old = rec.try_get::<WithTsOut<T>>().ok()?;
        write(&WithTsOut::new(U::from(&old.rec), old.ts_out), out)
    } else {
        let old = rec.try_get::<T>().ok()?;
        write(&U::from(old), out)
    }
}

fn write<R: AsRef<[u8]>>(rec: &R, out: &mut [u8]) -> Option<usize> {
    let bytes = rec.as_ref();
    out.get_mut(..bytes.len())?.copy_from_slice(bytes);
    Some(bytes.len())
}
