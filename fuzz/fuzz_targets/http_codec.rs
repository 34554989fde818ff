//! libFuzzer entry point of the `http_codec` target; the logic is
//! [`dbn_pipe_fuzz::http_codec::run`], which the seed replay tests call too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dbn_pipe_fuzz::http_codec::run(data));
