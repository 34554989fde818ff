//! libFuzzer entry point of the `live_handshake` target; the logic is
//! [`dbn_pipe_fuzz::live_handshake::run`], which the seed replay tests call too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dbn_pipe_fuzz::live_handshake::run(data));
