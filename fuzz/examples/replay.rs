//! Runs one target on files (a crash artifact, a seed) on stable Rust, printing each
//! file's name first, so a crash found by the fuzzer can be debugged with a normal
//! build:
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example replay -- TARGET FILE...
//! ```

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(target) = args.next() else {
        eprintln!("usage: replay TARGET FILE...");
        std::process::exit(2);
    };
    for file in args {
        let data = std::fs::read(&file).unwrap_or_else(|e| panic!("read {file}: {e}"));
        println!("{target}: {file} ({} bytes)", data.len());
        if !dbn_pipe_fuzz::run_target(&target, &data) {
            eprintln!(
                "no target named {target}; targets: {:?}",
                dbn_pipe_fuzz::TARGETS
            );
            std::process::exit(2);
        }
    }
    println!("ok");
}
