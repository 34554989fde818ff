//! Built-in loops for simple programs: each owns its own `Poll` and runs one
//! connection to the end.

use std::io;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use dbn_pipe_protocol::historical::{GetRangeParams, JsonRequest, JsonResponse};
use dbn_pipe_protocol::live::Subscription;
use mio::{Events, Poll, Token};

use crate::{
    Error, FileProgress, HistoricalConnection, HistoricalItem, HistoricalOptions, LiveConnection,
    LiveItem, LiveOptions,
};

const TOKEN: Token = Token(0);

/// Waits for readiness or the deadline and hands both to the connection.
fn wait(
    poll: &mut Poll,
    events: &mut Events,
    deadline: Option<Instant>,
    mut handle: impl FnMut(&mio::event::Event, Instant),
) -> Result<Instant, Error> {
    let wait = deadline.map(|at| at.saturating_duration_since(Instant::now()));
    match poll.poll(events, wait) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
        Err(source) => return Err(Error::Io { source }),
    }
    let now = Instant::now();
    for event in events.iter() {
        handle(event, now);
    }
    Ok(now)
}

/// Connects, subscribes, starts and calls `f` with every [`LiveItem`] (records
/// borrowed, gateway notices, metadata, reconnects, then [`LiveItem::End`]) until `f`
/// breaks or the stream ends. Blocks the calling thread (it owns its own `Poll`).
///
/// # Errors
/// What [`LiveConnection::connect`] and [`LiveConnection::next_event`] report.
pub fn run_live<F>(
    options: LiveOptions,
    subscriptions: impl IntoIterator<Item = Subscription>,
    mut f: F,
) -> Result<(), Error>
where
    F: FnMut(LiveItem<'_>) -> ControlFlow<()>,
{
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(16);
    let now = Instant::now();
    let mut conn = LiveConnection::connect(poll.registry(), TOKEN, options, now)?;
    for subscription in subscriptions {
        conn.subscribe(subscription)?;
    }
    conn.start(now)?;
    loop {
        while let Some(item) = conn.next_event()? {
            if f(item).is_break() {
                return Ok(());
            }
        }
        if conn.is_finished() {
            return Ok(());
        }
        let deadline = conn.poll_timeout();
        let now = wait(&mut poll, &mut events, deadline, |event, now| {
            conn.handle_event(event, now);
        })?;
        conn.handle_timeout(now);
    }
}

/// Runs one request on a fresh historical connection and calls `f` with each item
/// until the request ends or `f` breaks.
fn run_historical<F>(
    options: HistoricalOptions,
    send: impl FnOnce(&mut HistoricalConnection) -> Result<(), Error>,
    mut f: F,
) -> Result<(), Error>
where
    F: FnMut(HistoricalItem<'_>) -> ControlFlow<()>,
{
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(16);
    let mut conn = HistoricalConnection::connect(poll.registry(), TOKEN, options, Instant::now())?;
    send(&mut conn)?;
    loop {
        while let Some(item) = conn.next_event()? {
            if f(item).is_break() {
                return Ok(());
            }
        }
        if conn.is_idle() {
            return Ok(());
        }
        let deadline = conn.poll_timeout();
        let now = wait(&mut poll, &mut events, deadline, |event, now| {
            conn.handle_event(event, now);
        })?;
        conn.handle_timeout(now);
    }
}

/// Runs `timeseries.get_range` and calls `f` with every item (metadata, records
/// borrowed, warnings, then [`HistoricalItem::Done`]) until it ends or `f` breaks.
/// Blocks the calling thread.
///
/// # Errors
/// What [`HistoricalConnection`] reports: HTTP status, TLS, truncation, timeouts,
/// transport.
pub fn run_get_range<F>(
    options: HistoricalOptions,
    params: &GetRangeParams,
    f: F,
) -> Result<(), Error>
where
    F: FnMut(HistoricalItem<'_>) -> ControlFlow<()>,
{
    run_historical(options, |conn| conn.get_range(params), f)
}

/// Downloads `timeseries.get_range` into `path` (the `.dbn.zst` body as served),
/// calling `progress` after every write; returns the final progress. Blocks.
///
/// # Errors
/// As [`run_get_range`], and [`Error::File`] when writing fails.
pub fn get_range_to_file(
    options: HistoricalOptions,
    params: &GetRangeParams,
    path: &Path,
    mut progress: impl FnMut(FileProgress),
) -> Result<FileProgress, Error> {
    let mut last = FileProgress::default();
    run_historical(
        options,
        |conn| conn.get_range_to_file(params, path),
        |item| {
            match item {
                HistoricalItem::Progress(p) => {
                    last = p;
                    progress(p);
                }
                HistoricalItem::Done { file: Some(p) } => last = p,
                _ => {}
            }
            ControlFlow::Continue(())
        },
    )?;
    Ok(last)
}

/// Runs one JSON endpoint request and returns its result. Blocks.
///
/// # Errors
/// As [`run_get_range`].
pub fn request_json(
    options: HistoricalOptions,
    request: JsonRequest,
) -> Result<JsonResponse, Error> {
    let mut result = None;
    run_historical(
        options,
        |conn| conn.request_json(request),
        |item| match item {
            HistoricalItem::Json(json) => {
                result = Some(json);
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        },
    )?;
    result.ok_or_else(|| Error::Usage("the server sent no JSON result".to_owned()))
}
