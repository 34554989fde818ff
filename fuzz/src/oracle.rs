//! The `dbn` crate's own sans-IO decoder (`DbnFsm`), used as the reference for our
//! records wherever a stream is valid.
//!
//! `DbnFsm` has debug assertions of its own that some malformed streams trip (for
//! example "unaligned buffer passed to `RecordRef::new`" on a v1 record longer than
//! its type, see FUZZING.md). Such a panic is caught and reported as
//! [`OracleOutput::panicked`]: the oracle cannot judge that stream, and the targets
//! then skip the comparison instead of reporting the oracle's bug as ours.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use dbn::Metadata;
use dbn::decode::dbn::fsm::{DbnFsm, ProcessResult};
use dbn_pipe_protocol::{FragmentFormat, UpgradePolicy};

/// What the oracle decoded from a whole plain (decompressed) stream.
#[derive(Debug, Clone, PartialEq)]
pub struct OracleOutput {
    /// The metadata (whole streams only).
    pub metadata: Option<Metadata>,
    /// Every record, as the bytes `DbnFsm` hands out (upgraded per the policy).
    pub records: Vec<Vec<u8>>,
    /// Why the oracle refused the stream (after `records`), `None` when it accepted
    /// all of it.
    pub error: Option<String>,
    /// The oracle panicked (a `dbn` crate assertion on input it does not expect):
    /// it cannot judge this stream.
    pub panicked: bool,
}

thread_local! {
    /// Set while the oracle runs on this thread: its panics are expected.
    static IN_ORACLE: Cell<bool> = const { Cell::new(false) };
}

/// Wraps the panic hook in force (libFuzzer's, which aborts) so that a panic inside
/// the oracle unwinds quietly to [`decode`] instead of counting as a crash.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_ORACLE.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Decodes `plain` with `DbnFsm`: the metadata and records it handed out, and its
/// error if it refused the stream, including when bytes are left over at the end (a
/// truncated record).
pub fn decode(
    plain: &[u8],
    policy: UpgradePolicy,
    fragment: Option<FragmentFormat>,
) -> OracleOutput {
    install_hook();
    let mut out = OracleOutput {
        metadata: None,
        records: Vec::new(),
        error: None,
        panicked: false,
    };
    IN_ORACLE.with(|flag| flag.set(true));
    let result = catch_unwind(AssertUnwindSafe(|| {
        decode_into(plain, policy, fragment, &mut out)
    }));
    IN_ORACLE.with(|flag| flag.set(false));
    match result {
        Ok(verdict) => out.error = verdict.err(),
        Err(_) => {
            out.panicked = true;
            out.error = Some("the oracle panicked".into());
        }
    }
    out
}

fn decode_into(
    plain: &[u8],
    policy: UpgradePolicy,
    fragment: Option<FragmentFormat>,
    out: &mut OracleOutput,
) -> Result<(), String> {
    let mut builder = DbnFsm::builder().upgrade_policy(policy.to_dbn());
    if let Some(fragment) = fragment {
        builder = builder
            .skip_metadata(true)
            .input_dbn_version(Some(fragment.version))
            .map_err(|e| e.to_string())?
            .ts_out(fragment.ts_out);
    }
    let mut fsm = builder.build().map_err(|e| e.to_string())?;
    fsm.write_all(plain);
    loop {
        match fsm.process() {
            ProcessResult::ReadMore(_) => break,
            ProcessResult::Metadata(m) => out.metadata = Some(m),
            ProcessResult::Record(()) => match fsm.last_record() {
                Some(rec) => out.records.push(rec.as_ref().to_vec()),
                None => return Err("the oracle reported a record it does not hold".into()),
            },
            ProcessResult::Err(e) => return Err(e.to_string()),
        }
    }
    if !fsm.data().is_empty() {
        return Err(format!("{} trailing bytes undecoded", fsm.data().len()));
    }
    if fragment.is_none() && out.metadata.is_none() {
        return Err("no metadata".into());
    }
    Ok(())
}
