//! Target `live_handshake`: a fresh [`LiveSession`](dbn_pipe_protocol::live::LiveSession)
//! fed fuzz bytes from the first byte on (greeting, challenge, authentication
//! response, then whatever follows), cut at fuzzer-chosen split points.
//!
//! Input ([`Framed`]): `flags` bit 0 the session is *not* started (it stays
//! authenticated without streaming, so any data is unexpected), bit 1 zstd, bit 2
//! `ts_out`, bit 3 a second connection after the first ends (`GapFill` reconnect)
//! replaying the same bytes. `aux` is unused.
//!
//! Checks: those of [`live_gateway::drive`](crate::live_gateway::drive) (no panic, no
//! stall, a verdict after end of input, sticky errors, the key never sent in clear,
//! the same events for any split).

use dbn_pipe_protocol::live::ReconnectPolicy;

use crate::input::Framed;
use crate::live_gateway::{LiveChoice, check_splits};

/// The target: see the module docs.
pub fn run(data: &[u8]) {
    let framed = Framed::parse(data);
    let choice = LiveChoice {
        zstd: framed.flags & 2 != 0,
        ts_out: framed.flags & 4 != 0,
        policy: 2,
        small_buffer: false,
        start: framed.flags & 1 == 0,
        take: usize::MAX,
        reconnect: (framed.flags & 8 != 0).then_some(ReconnectPolicy::GapFill),
    };
    check_splits(&choice, &[], framed.payload, &framed.chunks());
}
