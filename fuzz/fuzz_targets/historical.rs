//! libFuzzer entry point of the `historical` target; the logic is
//! [`dbn_pipe_fuzz::historical::run`], which the seed replay tests call too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dbn_pipe_fuzz::historical::run(data));
