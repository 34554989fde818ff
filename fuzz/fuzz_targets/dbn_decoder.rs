//! libFuzzer entry point of the `dbn_decoder` target; the logic is
//! [`dbn_pipe_fuzz::dbn_decoder::run`], which the seed replay tests call too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dbn_pipe_fuzz::dbn_decoder::run(data));
