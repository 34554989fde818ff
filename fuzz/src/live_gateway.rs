//! Target `live_gateway`: a [`LiveSession`] authenticated by a scripted handshake
//! (greeting, challenge, `success=1`), then fuzz bytes as the gateway's DBN stream,
//! cut at fuzzer-chosen split points.
//!
//! Input ([`Framed`]): `flags` bits 0-1 records taken per batch before it is dropped
//! (all, 1, 2, 3), bit 2 zstd compression, bit 3 `ts_out`, bits 4-5 upgrade policy,
//! bit 6 the smallest decoder buffer, bit 7 a second connection after the first ends
//! ([`LiveSession::reconnect`], `aux` bit 0 picks `GapFill` or `Resubscribe`) that
//! replays the same bytes.
//!
//! Checks ([`drive`]): no panic; `handle_input` never takes more than offered; no
//! stall (input refused while no event comes); after `handle_eof` a `Closed` event or
//! an error always comes; errors are sticky; metadata at most once per connection;
//! records aligned and sized per their header; the API key never appears in what is
//! sent; the chosen split gives the same events, records and verdict as the whole
//! input.

use std::time::{Duration, Instant};

use dbn::Schema;
use dbn_pipe_protocol::live::{
    ApiKey, LiveCompression, LiveConfig, LiveEvent, LiveSession, ReconnectPolicy, Subscription,
};
use dbn_pipe_protocol::{DecoderConfig, ErrorKind};

use crate::dbn_decoder::{check_record, policy_from_bits};
use crate::input::Framed;

/// The fake API key every target uses.
pub const KEY: &str = "db-0123456789abcdefghijklmnABCDE";

/// The gateway's handshake lines before the DBN stream.
pub const HANDSHAKE: [&[u8]; 3] = [
    b"lsg_version=0.4.2\n",
    b"cram=t7kNhwj4xqR0QYjzFKtBEG2ec2pXJ4FK\n",
    b"success=1|session_id=fuzz-1|\n",
];

/// The session settings a target chose.
#[derive(Debug, Clone)]
pub struct LiveChoice {
    /// zstd stream.
    pub zstd: bool,
    /// `ts_out` requested.
    pub ts_out: bool,
    /// Upgrade policy bits.
    pub policy: u8,
    /// The smallest decoder buffer.
    pub small_buffer: bool,
    /// Call `start` (else the session stays authenticated without streaming).
    pub start: bool,
    /// Records taken from each batch before it is dropped.
    pub take: usize,
    /// A second connection with this policy after the first ends.
    pub reconnect: Option<ReconnectPolicy>,
}

impl LiveChoice {
    /// The session this choice describes, subscribed (and started if chosen).
    pub fn session(&self, now: Instant) -> LiveSession {
        let key = ApiKey::new(KEY).unwrap_or_else(|e| panic!("the fake key is refused: {e}"));
        let mut config = LiveConfig::new(key, "GLBX.MDP3")
            .ts_out(self.ts_out)
            .upgrade_policy(policy_from_bits(self.policy))
            .compression(if self.zstd {
                LiveCompression::Zstd
            } else {
                LiveCompression::None
            });
        if self.small_buffer {
            config = config.buffer_size(DecoderConfig::MIN_BUFFER_SIZE);
        }
        let mut session = LiveSession::new(config, now)
            .unwrap_or_else(|e| panic!("a valid configuration is refused: {e}"));
        session
            .subscribe(Subscription::new(Schema::Mbo, ["ESH1"]))
            .unwrap_or_else(|e| panic!("a valid subscription is refused: {e}"));
        if self.start {
            session
                .start(now)
                .unwrap_or_else(|e| panic!("start is refused: {e}"));
        }
        session
    }
}

/// One event, owned, for comparing runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// `Authenticated` with the session id.
    Authenticated(String),
    /// `Reconnected`.
    Reconnected(ReconnectPolicy, Option<u64>),
    /// `Metadata`.
    Metadata(Box<dbn::Metadata>),
    /// Records of one batch.
    Records(Vec<Vec<u8>>),
    /// A gateway notice record.
    Gateway(Vec<u8>),
    /// `Closed`: bytes received and the truncation kind.
    Closed(u64, Option<ErrorKind>),
    /// An error: kind and offset.
    Error(ErrorKind, Option<u64>),
}

/// Drains every event the session has into `seen`; returns whether one was an error
/// or `Closed` (the connection's verdict), and how many events came.
fn drain(session: &mut LiveSession, choice: &LiveChoice, seen: &mut Vec<Seen>) -> (bool, usize) {
    let mut count = 0;
    loop {
        let event = match session.poll_event() {
            Ok(Some(event)) => event,
            Ok(None) => return (false, count),
            Err(err) => {
                seen.push(Seen::Error(err.kind(), err.offset()));
                return (true, count + 1);
            }
        };
        count += 1;
        match event {
            LiveEvent::Authenticated { session_id } => {
                seen.push(Seen::Authenticated(session_id.to_owned()));
            }
            LiveEvent::Reconnected { policy, gap_from } => {
                seen.push(Seen::Reconnected(policy, gap_from));
            }
            LiveEvent::Metadata(m) => {
                assert!(
                    !seen
                        .iter()
                        .rev()
                        .take_while(|s| !matches!(s, Seen::Authenticated(_)))
                        .any(|s| matches!(s, Seen::Metadata(_))),
                    "metadata twice on one connection"
                );
                seen.push(Seen::Metadata(m));
            }
            LiveEvent::Records(batch) => {
                let records: Vec<Vec<u8>> =
                    batch.take(choice.take).map(|r| check_record(&r)).collect();
                // A batch whose records were all replays yields none: that is fine,
                // but it must have made progress (checked by the stall guard).
                if !records.is_empty() {
                    seen.push(Seen::Records(records));
                }
            }
            LiveEvent::Gateway { record, .. } => seen.push(Seen::Gateway(check_record(&record))),
            LiveEvent::Closed(closed) => {
                seen.push(Seen::Closed(
                    closed.bytes_received,
                    closed.truncated.as_ref().map(|e| e.kind()),
                ));
                return (true, count);
            }
        }
        if count > 1_000_000 {
            panic!("more than a million events from a bounded input");
        }
    }
}

/// Runs one or two connections of `choice`, each fed `prefix` then `chunks`, and
/// returns every event.
///
/// # Panics
/// On a broken invariant (see the module docs).
pub fn drive(choice: &LiveChoice, prefix: &[&[u8]], chunks: &[&[u8]]) -> Vec<Seen> {
    let mut now = Instant::now();
    let mut session = choice.session(now);
    let mut seen = Vec::new();
    let mut sent = Vec::new();
    let connections = if choice.reconnect.is_some() { 2 } else { 1 };
    for connection in 0..connections {
        if connection == 1 {
            let policy = choice.reconnect.unwrap_or(ReconnectPolicy::Resubscribe);
            match session.reconnect(now, policy) {
                Ok(()) => {}
                Err(err) => panic!("reconnect refused after a drained connection: {err}"),
            }
        }
        let mut ended = false;
        for chunk in prefix.iter().chain(chunks) {
            let mut rest: &[u8] = chunk;
            while !rest.is_empty() && !ended {
                let _ = session.poll_transmit(&mut sent);
                let taken = session.handle_input(now, rest);
                assert!(taken <= rest.len(), "handle_input took more than offered");
                rest = &rest[taken..];
                let (verdict, events) = drain(&mut session, choice, &mut seen);
                ended |= verdict;
                assert!(
                    taken > 0 || events > 0 || ended || session.is_ended(),
                    "stalled: input refused while no event comes"
                );
                if session.is_ended() && taken == 0 && events == 0 {
                    // The session takes nothing more on an ended connection.
                    break;
                }
            }
            now += Duration::from_millis(1);
            session.handle_timeout(now);
        }
        session.handle_eof();
        let mut rounds = 0;
        while !ended {
            let (verdict, events) = drain(&mut session, choice, &mut seen);
            ended = verdict;
            assert!(
                ended || events > 0,
                "no Closed event nor error after handle_eof"
            );
            rounds += 1;
            assert!(rounds < 1_000_000, "endless events after handle_eof");
        }
        if let Some(Seen::Error(kind, offset)) = seen.last().cloned() {
            match session.poll_event() {
                Err(again) => assert_eq!(
                    (again.kind(), again.offset()),
                    (kind, offset),
                    "the error is not sticky"
                ),
                Ok(_) => panic!("the error is not sticky"),
            }
        }
        let _ = session.poll_transmit(&mut sent);
        assert!(
            !sent.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
            "the API key was sent in clear"
        );
    }
    seen
}

/// Checks that `chunks` give the same events as the whole `payload`.
pub fn check_splits(choice: &LiveChoice, prefix: &[&[u8]], payload: &[u8], chunks: &[&[u8]]) {
    let whole = drive(choice, prefix, &[payload]);
    let split = drive(choice, prefix, chunks);
    // Batches may be cut differently: compare the records as one sequence.
    let (whole, split) = (flatten(&whole), flatten(&split));
    if whole != split && has_decompression_error(&whole, &split) {
        // zstd finds corruption (a bad checksum, a corrupt block) after more or less
        // unverified output depending on how its input was cut, so the decoder behind
        // it may reject that output first (a format or framing error) or never see it:
        // as in the `dbn_decoder` target, both must fail at the same point of the event
        // sequence, and the records of one must be a prefix of the other's.
        assert!(
            agree_up_to_corruption(&whole, &split),
            "a split changed the events beyond a decompression error:\n whole {whole:?}\n split {split:?}"
        );
        return;
    }
    assert_eq!(whole, split, "a split changed the events");
}

fn has_decompression_error(a: &[Seen], b: &[Seen]) -> bool {
    a.iter()
        .chain(b)
        .any(|s| matches!(s, Seen::Error(ErrorKind::Decompression, _)))
}

/// Whether two event sequences are equal but for what a zstd corruption error makes
/// split-dependent. Both are cut at their errors into segments; the sequences must
/// have as many errors, and each pair of segments must be equal, except that before
/// an error where either side's is `Decompression`, the events (metadata and single
/// records) of one segment may be a prefix of the other's and the error kinds differ.
fn agree_up_to_corruption(a: &[Seen], b: &[Seen]) -> bool {
    let (a, b) = (segments(a), segments(b));
    if a.len() != b.len() {
        return false;
    }
    // After a corruption that one cut reached with more records than the other, the
    // reconnect's gap start (the last record delivered) differs with them.
    let mut diverged = false;
    for ((ea, ra), (eb, rb)) in a.iter().zip(&b) {
        let (ra, rb) = if diverged {
            (without_gap_starts(ra), without_gap_starts(rb))
        } else {
            (ra.clone(), rb.clone())
        };
        let corrupt = [ea, eb]
            .iter()
            .any(|e| matches!(e, Some(Seen::Error(ErrorKind::Decompression, _))));
        if !corrupt {
            if ea != eb || ra != rb {
                return false;
            }
            continue;
        }
        let n = ra.len().min(rb.len());
        let both_failed = matches!((ea, eb), (Some(Seen::Error(..)), Some(Seen::Error(..))));
        if !both_failed || ra[..n] != rb[..n] {
            return false;
        }
        diverged |= ra.len() != rb.len();
    }
    true
}

/// The events with every reconnect's gap start cleared.
fn without_gap_starts(events: &[Seen]) -> Vec<Seen> {
    events
        .iter()
        .map(|e| match e {
            Seen::Reconnected(policy, _) => Seen::Reconnected(*policy, None),
            other => other.clone(),
        })
        .collect()
}

/// The events cut at each error: (the error, or `None` for the tail after the last
/// one; the events before it, with record batches split into single records).
fn segments(seen: &[Seen]) -> Vec<(Option<Seen>, Vec<Seen>)> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    for item in seen {
        match item {
            Seen::Error(..) => out.push((Some(item.clone()), std::mem::take(&mut current))),
            Seen::Records(records) => current.extend(
                records
                    .iter()
                    .map(|record| Seen::Records(vec![record.clone()])),
            ),
            other => current.push(other.clone()),
        }
    }
    out.push((None, current));
    out
}

/// The events with record batches merged into one record sequence per run of
/// batches.
fn flatten(seen: &[Seen]) -> Vec<Seen> {
    let mut out: Vec<Seen> = Vec::with_capacity(seen.len());
    for item in seen {
        match (out.last_mut(), item) {
            (Some(Seen::Records(all)), Seen::Records(more)) => all.extend(more.iter().cloned()),
            _ => out.push(item.clone()),
        }
    }
    out
}

/// The target: see the module docs.
pub fn run(data: &[u8]) {
    let framed = Framed::parse(data);
    let choice = LiveChoice {
        zstd: framed.flags & 4 != 0,
        ts_out: framed.flags & 8 != 0,
        policy: framed.flags >> 4,
        small_buffer: framed.flags & 0x40 != 0,
        start: true,
        take: [usize::MAX, 1, 2, 3][usize::from(framed.flags & 3)],
        reconnect: (framed.flags & 0x80 != 0).then_some(if framed.aux & 1 != 0 {
            ReconnectPolicy::GapFill
        } else {
            ReconnectPolicy::Resubscribe
        }),
    };
    check_splits(&choice, &HANDSHAKE, framed.payload, &framed.chunks());
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbn_pipe_protocol::doc_support::sample_dbn;

    fn choice() -> LiveChoice {
        LiveChoice {
            zstd: false,
            ts_out: false,
            policy: 2,
            small_buffer: false,
            start: true,
            take: 1,
            reconnect: None,
        }
    }

    #[test]
    fn a_scripted_session_delivers_every_record_then_closes() {
        let dbn = sample_dbn();
        let seen = flatten(&drive(&choice(), &HANDSHAKE, &[&dbn[..50], &dbn[50..]]));
        assert!(
            matches!(&seen[0], Seen::Authenticated(id) if id == "fuzz-1"),
            "{seen:?}"
        );
        assert!(matches!(&seen[1], Seen::Metadata(_)));
        assert!(matches!(&seen[2], Seen::Records(r) if r.len() == 2));
        assert!(matches!(&seen[3], Seen::Closed(_, None)));
    }

    #[test]
    fn a_gap_fill_reconnect_drops_the_replayed_records() {
        let dbn = sample_dbn();
        let mut choice = choice();
        choice.reconnect = Some(ReconnectPolicy::GapFill);
        let seen = flatten(&drive(&choice, &HANDSHAKE, &[&dbn]));
        let records: usize = seen
            .iter()
            .map(|s| match s {
                Seen::Records(r) => r.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(records, 2, "{seen:?}");
        assert!(
            seen.iter()
                .any(|s| matches!(s, Seen::Reconnected(ReconnectPolicy::GapFill, _)))
        );
    }
}
