//! Replays every seed of `corpus/<target>/` (and fixed regressions of
//! `regressions/<target>/`) through the target's logic on stable Rust, so the
//! properties the fuzzers check hold for every committed input on every test run.
//! Open regressions (bugs found and not yet fixed) live in `regressions-open/` and are
//! replayed by the ignored test [`open_regressions`].

use std::path::{Path, PathBuf};

use dbn_pipe_fuzz::{TARGETS, run_target};

/// The files of `dir` (none when it does not exist), sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `target` on every file of `dirs`; panics naming every file that failed.
/// Returns how many files ran.
fn replay(target: &str, dirs: &[PathBuf]) -> usize {
    let mut failures = Vec::new();
    let mut count = 0;
    for dir in dirs {
        for file in files(dir) {
            let data = std::fs::read(&file).expect("read a seed");
            count += 1;
            let outcome = std::panic::catch_unwind(|| run_target(target, &data));
            match outcome {
                Ok(true) => {}
                Ok(false) => panic!("no target named {target}"),
                Err(_) => failures.push(file.display().to_string()),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: {} of {count} seeds failed: {failures:?}",
        failures.len()
    );
    count
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Replays the committed corpus and fixed regressions of `target`, which must have
/// seeds.
fn seeds(target: &str) {
    let dirs = [
        root().join("corpus").join(target),
        root().join("regressions").join(target),
    ];
    let count = replay(target, &dirs);
    assert!(count > 0, "{target} has no seed in corpus/{target}/");
    println!("{target}: {count} seeds replayed");
}

#[test]
fn dbn_decoder_seeds() {
    seeds("dbn_decoder");
}

#[test]
fn zstd_layer_seeds() {
    seeds("zstd_layer");
}

#[test]
fn live_gateway_seeds() {
    seeds("live_gateway");
}

#[test]
fn live_handshake_seeds() {
    seeds("live_handshake");
}

#[test]
fn http_codec_seeds() {
    seeds("http_codec");
}

#[test]
fn historical_seeds() {
    seeds("historical");
}

#[test]
fn structured_seeds() {
    seeds("structured");
}

/// Every target has a replay test above and a corpus folder.
#[test]
fn every_target_has_a_corpus() {
    for target in TARGETS {
        assert!(
            root().join("corpus").join(target).is_dir(),
            "corpus/{target}/ is missing"
        );
    }
}

/// Inputs that still crash a target, one folder per target: each is a bug in the
/// protocol crate described in FUZZING.md. Move a file to `regressions/<target>/` once
/// its bug is fixed, so the normal replay keeps it fixed.
#[test]
#[ignore = "open bugs found by fuzzing (see FUZZING.md, section Open findings); un-ignore once fixed"]
fn open_regressions() {
    let failed: Vec<&str> = TARGETS
        .into_iter()
        .filter(|target| {
            let dir = root().join("regressions-open").join(target);
            std::panic::catch_unwind(|| replay(target, &[dir])).is_err()
        })
        .collect();
    assert!(
        failed.is_empty(),
        "open regressions still fail in {failed:?}"
    );
}
