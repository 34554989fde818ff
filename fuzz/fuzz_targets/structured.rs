//! libFuzzer entry point of the `structured` target; the logic is
//! [`dbn_pipe_fuzz::structured::run`], which the seed replay tests call too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dbn_pipe_fuzz::structured::run(data));
