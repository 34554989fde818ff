//! The contenders: one function per client that connects to the bench servers, asks
//! for a stream (by its bench symbol) and hands every record to a callback, as an
//! application's loop would. Each uses the client's default buffers and documented
//! loop; the tokio-based ones run on a current-thread runtime created by the caller
//! (outside any timing window).

use std::io;
use std::ops::ControlFlow;
use std::time::Instant;

use dbn::{RecordRef, Schema};
use dbn_pipe_protocol::historical::GetRangeParams;
use dbn_pipe_protocol::live::{ApiKey, LiveCompression, Subscription};
use dbn_pipe_protocol::tls::TlsConfig;
use dbn_pipe_tests::generate::START_NS;
use mio::{Events, Poll, Token};

use crate::common::{DATASET, TEST_KEY};

/// A client under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Contender {
    /// `dbn_pipe_mio` on a `mio::Poll`.
    Mio,
    /// `dbn_pipe_tokio`.
    Tokio,
    /// `dbn_pipe_mio` pulling whole batches (`next_batch`, then `next_event`).
    MioBatch,
    /// `dbn_pipe_tokio` pulling whole batches (`next_batch`, then `next_event`).
    TokioBatch,
    /// The official `databento` crate (feature `official`).
    Official,
}

impl Contender {
    /// Parses a name from the command line: `mio`, `tokio`, `mio-batch`,
    /// `tokio-batch`, `official`.
    pub(crate) fn parse(name: &str) -> io::Result<Self> {
        match name {
            "mio" => Ok(Self::Mio),
            "tokio" => Ok(Self::Tokio),
            "mio-batch" => Ok(Self::MioBatch),
            "tokio-batch" => Ok(Self::TokioBatch),
            "official" => Ok(Self::Official),
            other => Err(io::Error::other(format!("unknown contender {other:?}"))),
        }
    }

    /// Whether it needs a tokio runtime.
    pub(crate) fn needs_runtime(self) -> bool {
        !matches!(self, Self::Mio | Self::MioBatch)
    }
}

/// A current-thread tokio runtime, for the contenders that need one.
pub(crate) fn runtime(contender: Contender) -> io::Result<Option<tokio::runtime::Runtime>> {
    if !contender.needs_runtime() {
        return Ok(None);
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(Some)
}

fn other(err: impl std::fmt::Display) -> io::Error {
    io::Error::other(err.to_string())
}

/// What a record callback returns: go on, or stop (the client is dropped).
pub(crate) type Flow = ControlFlow<()>;

/// A live stream: gateway port, compression, bench symbol.
#[derive(Debug, Clone)]
pub(crate) struct LiveTarget {
    /// The gateway's port on 127.0.0.1.
    pub(crate) port: u16,
    /// `compression=zstd`.
    pub(crate) zstd: bool,
    /// What the gateway sends (see the gateway module).
    pub(crate) symbol: String,
}

/// Streams `target` with `contender`, calling `f` with every record until it breaks
/// or the stream ends.
pub(crate) fn live(
    contender: Contender,
    rt: Option<&tokio::runtime::Runtime>,
    target: &LiveTarget,
    f: impl FnMut(RecordRef<'_>) -> Flow,
) -> io::Result<()> {
    match (contender, rt) {
        (Contender::Mio, _) => live_mio(target, f),
        (Contender::MioBatch, _) => live_mio_batches(target, f),
        (Contender::Tokio, Some(rt)) => rt.block_on(live_tokio(target, f)),
        (Contender::TokioBatch, Some(rt)) => rt.block_on(live_tokio_batches(target, f)),
        #[cfg(feature = "official")]
        (Contender::Official, Some(rt)) => rt.block_on(official::live(target, f)),
        #[cfg(not(feature = "official"))]
        (Contender::Official, Some(_)) => Err(other("built without the `official` feature")),
        (_, None) => Err(other("no runtime")),
    }
}

/// A started `dbn_pipe_mio` live connection to `target`.
fn connect_mio(poll: &Poll, target: &LiveTarget) -> io::Result<dbn_pipe_mio::LiveConnection> {
    use dbn_pipe_mio::{LiveConnection, LiveOptions};
    let key = ApiKey::new(TEST_KEY).map_err(other)?;
    let mut options = LiveOptions::new(key, DATASET).addr(format!("127.0.0.1:{}", target.port));
    if target.zstd {
        options = options.compression(LiveCompression::Zstd);
    }
    let now = Instant::now();
    let mut live =
        LiveConnection::connect(poll.registry(), Token(0), options, now).map_err(other)?;
    live.subscribe(Subscription::new(Schema::Mbo, target.symbol.as_str()))
        .map_err(other)?;
    live.start(now).map_err(other)?;
    Ok(live)
}

/// Waits for readiness or the next deadline and hands both to `live`.
fn wait_mio(
    poll: &mut Poll,
    events: &mut Events,
    live: &mut dbn_pipe_mio::LiveConnection,
) -> io::Result<()> {
    let timeout = live
        .poll_timeout()
        .map(|at| at.saturating_duration_since(Instant::now()));
    poll.poll(events, timeout)?;
    let now = Instant::now();
    for event in events.iter() {
        live.handle_event(event, now);
    }
    live.handle_timeout(now);
    Ok(())
}

/// The documented batch loop: whole batches until `Ok(None)`, then one `next_event`
/// (notices are records to `f`, as `next_record` hands them out).
fn live_mio_batches(
    target: &LiveTarget,
    mut f: impl FnMut(RecordRef<'_>) -> Flow,
) -> io::Result<()> {
    use dbn_pipe_mio::LiveItem;
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(64);
    let mut live = connect_mio(&poll, target)?;
    loop {
        while let Some(batch) = live.next_batch().map_err(other)? {
            for record in batch {
                if f(record).is_break() {
                    return Ok(());
                }
            }
        }
        match live.next_event().map_err(other)? {
            Some(LiveItem::Record(record) | LiveItem::Gateway { record, .. }) => {
                if f(record).is_break() {
                    return Ok(());
                }
            }
            Some(_) => {}
            None => {
                if live.is_finished() {
                    return Ok(());
                }
                wait_mio(&mut poll, &mut events, &mut live)?;
            }
        }
    }
}

fn live_mio(target: &LiveTarget, mut f: impl FnMut(RecordRef<'_>) -> Flow) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(64);
    let mut live = connect_mio(&poll, target)?;
    loop {
        while let Some(record) = live.next_record().map_err(other)? {
            if f(record).is_break() {
                return Ok(());
            }
        }
        if live.is_finished() {
            return Ok(());
        }
        wait_mio(&mut poll, &mut events, &mut live)?;
    }
}

/// A started `dbn_pipe_tokio` live client on `target`.
async fn connect_tokio(target: &LiveTarget) -> io::Result<dbn_pipe_tokio::LiveClient> {
    use dbn_pipe_tokio::LiveOptions;
    let key = ApiKey::new(TEST_KEY).map_err(other)?;
    let mut options = LiveOptions::new(key, DATASET).addr(format!("127.0.0.1:{}", target.port));
    if target.zstd {
        options = options.compression(LiveCompression::Zstd);
    }
    let mut client = options.connect().await.map_err(other)?;
    client
        .subscribe(Subscription::new(Schema::Mbo, target.symbol.as_str()))
        .await
        .map_err(other)?;
    client.start().await.map_err(other)?;
    Ok(client)
}

/// The documented batch loop: `next_batch` until `Ok(None)`, then one `next_event`
/// (notices are records to `f`, as `next_record` hands them out).
async fn live_tokio_batches(
    target: &LiveTarget,
    mut f: impl FnMut(RecordRef<'_>) -> Flow,
) -> io::Result<()> {
    use dbn_pipe_tokio::Event;
    let mut client = connect_tokio(target).await?;
    loop {
        if let Some(batch) = client.next_batch().await.map_err(other)? {
            for record in batch {
                if f(record).is_break() {
                    return Ok(());
                }
            }
            continue;
        }
        match client.next_event().await.map_err(other)? {
            Some(Event::Record(record) | Event::Gateway { record, .. }) => {
                if f(record).is_break() {
                    return Ok(());
                }
            }
            Some(_) => {}
            None => return Ok(()),
        }
    }
}

async fn live_tokio(
    target: &LiveTarget,
    mut f: impl FnMut(RecordRef<'_>) -> Flow,
) -> io::Result<()> {
    let mut client = connect_tokio(target).await?;
    while let Some(record) = client.next_record().await.map_err(other)? {
        if f(record).is_break() {
            break;
        }
    }
    Ok(())
}

/// A historical request: server port, bench symbol (the framing), trusted root.
#[derive(Debug, Clone)]
pub(crate) struct HistTarget {
    /// The HTTPS server's port on 127.0.0.1.
    pub(crate) port: u16,
    /// `CL`, `CHUNKED`, `CLOSE` or `SMALL` (see the https module).
    pub(crate) symbol: String,
    /// The server certificate (PEM), the only trusted root.
    pub(crate) pem: Vec<u8>,
    /// The same certificate (DER).
    pub(crate) der: Vec<u8>,
}

impl HistTarget {
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn params(&self) -> GetRangeParams {
        GetRangeParams::new(DATASET, Schema::Mbo, self.symbol.as_str(), START_NS)
    }

    fn tls(&self) -> io::Result<TlsConfig> {
        TlsConfig::builder()
            .without_webpki_roots()
            .add_pem(&self.pem)
            .map_err(other)?
            .build()
            .map_err(other)
    }
}

/// Runs `timeseries.get_range` on `target` with `contender`, calling `f` with every
/// record until it breaks or the body ends. The client is built inside (its TLS
/// configuration included).
pub(crate) fn historical(
    contender: Contender,
    rt: Option<&tokio::runtime::Runtime>,
    target: &HistTarget,
    f: impl FnMut(RecordRef<'_>) -> Flow,
) -> io::Result<()> {
    match (contender, rt) {
        (Contender::Mio, _) => hist_mio(target, f, false),
        (Contender::MioBatch, _) => hist_mio(target, f, true),
        (Contender::Tokio, Some(rt)) => rt.block_on(hist_tokio(target, f, false)),
        (Contender::TokioBatch, Some(rt)) => rt.block_on(hist_tokio(target, f, true)),
        #[cfg(feature = "official")]
        (Contender::Official, Some(rt)) => rt.block_on(official::historical(target, f)),
        #[cfg(not(feature = "official"))]
        (Contender::Official, Some(_)) => Err(other("built without the `official` feature")),
        (_, None) => Err(other("no runtime")),
    }
}

/// `batches`: whole batches (`next_batch`), else `next_record`.
fn hist_mio(
    target: &HistTarget,
    mut f: impl FnMut(RecordRef<'_>) -> Flow,
    batches: bool,
) -> io::Result<()> {
    use dbn_pipe_mio::{HistoricalConnection, HistoricalOptions};
    let key = ApiKey::new(TEST_KEY).map_err(other)?;
    let options = HistoricalOptions::new(key)
        .base_url(&target.url())
        .tls(target.tls()?);
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(64);
    let mut conn =
        HistoricalConnection::connect(poll.registry(), Token(0), options, Instant::now())
            .map_err(other)?;
    conn.get_range(&target.params()).map_err(other)?;
    loop {
        if batches {
            while let Some(batch) = conn.next_batch().map_err(other)? {
                for record in batch {
                    if f(record).is_break() {
                        return Ok(());
                    }
                }
            }
            // Metadata, warnings and the end come as items (records too, if any).
            match conn.next_event().map_err(other)? {
                Some(dbn_pipe_mio::HistoricalItem::Record(record)) => {
                    if f(record).is_break() {
                        return Ok(());
                    }
                    continue;
                }
                Some(_) => continue,
                None => {}
            }
        } else {
            while let Some(record) = conn.next_record().map_err(other)? {
                if f(record).is_break() {
                    return Ok(());
                }
            }
        }
        if conn.is_idle() {
            return Ok(());
        }
        let timeout = conn
            .poll_timeout()
            .map(|at| at.saturating_duration_since(Instant::now()));
        poll.poll(&mut events, timeout)?;
        let now = Instant::now();
        for event in &events {
            conn.handle_event(event, now);
        }
        conn.handle_timeout(now);
    }
}

/// `batches`: whole batches (`next_batch`), else `next_record`.
async fn hist_tokio(
    target: &HistTarget,
    mut f: impl FnMut(RecordRef<'_>) -> Flow,
    batches: bool,
) -> io::Result<()> {
    use dbn_pipe_tokio::{HistoricalClient, HistoricalOptions};
    let key = ApiKey::new(TEST_KEY).map_err(other)?;
    let options = HistoricalOptions::new(key)
        .base_url(&target.url())
        .tls(target.tls()?);
    let mut client = HistoricalClient::new(options).map_err(other)?;
    let mut stream = client
        .timeseries_get_range(&target.params())
        .await
        .map_err(other)?;
    if batches {
        while let Some(batch) = stream.next_batch().await.map_err(other)? {
            for record in batch {
                if f(record).is_break() {
                    return Ok(());
                }
            }
        }
        return Ok(());
    }
    while let Some(record) = stream.next_record().await.map_err(other)? {
        if f(record).is_break() {
            break;
        }
    }
    Ok(())
}

/// The official `databento` clients, configured for the loopback servers.
#[cfg(feature = "official")]
mod official {
    use std::io;
    use std::sync::Arc;

    use dbn::{RecordRef, Schema};
    use rustls::RootCertStore;
    use rustls::pki_types::CertificateDer;

    use super::{Flow, HistTarget, LiveTarget, other};
    use crate::common::{DATASET, TEST_KEY};

    /// `databento::LiveClient`: `next_record` until the stream ends.
    pub(super) async fn live(
        target: &LiveTarget,
        mut f: impl FnMut(RecordRef<'_>) -> Flow,
    ) -> io::Result<()> {
        let mut builder = databento::LiveClient::builder()
            .addr(("127.0.0.1", target.port))
            .await
            .map_err(other)?
            .key(TEST_KEY)
            .map_err(other)?
            .dataset(DATASET);
        if target.zstd {
            builder = builder.compression(dbn::Compression::Zstd);
        }
        let mut client = builder.build().await.map_err(other)?;
        let subscription = databento::live::Subscription::builder()
            .symbols(target.symbol.as_str())
            .schema(Schema::Mbo)
            .build();
        client.subscribe(subscription).await.map_err(other)?;
        client.start().await.map_err(other)?;
        while let Some(record) = client.next_record().await.map_err(other)? {
            if f(record).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// `databento::HistoricalClient` with the base URL of the loopback server and a
    /// reqwest client whose rustls configuration (ring, like ours) trusts only the
    /// server's certificate: `timeseries().get_range`, then `decode_record_ref`.
    pub(super) async fn historical(
        target: &HistTarget,
        mut f: impl FnMut(RecordRef<'_>) -> Flow,
    ) -> io::Result<()> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(target.der.clone()))
            .map_err(other)?;
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let http = reqwest::ClientBuilder::new().tls_backend_preconfigured(tls);
        let url = reqwest::Url::parse(&target.url()).map_err(other)?;
        let mut client = databento::HistoricalClient::builder()
            .key(TEST_KEY)
            .map_err(other)?
            .base_url(url)
            .http_client_builder(http)
            .build()
            .map_err(other)?;
        let day = time::Date::from_calendar_date(2020, time::Month::December, 28).map_err(other)?;
        let params = databento::historical::timeseries::GetRangeParams::builder()
            .dataset(DATASET)
            .symbols(target.symbol.as_str())
            .schema(Schema::Mbo)
            .date_time_range(day)
            .build();
        let mut decoder = client
            .timeseries()
            .get_range(&params)
            .await
            .map_err(other)?;
        while let Some(record) = decoder.decode_record_ref().await.map_err(other)? {
            if f(record).is_break() {
                break;
            }
        }
        Ok(())
    }
}
