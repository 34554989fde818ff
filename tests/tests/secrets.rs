//! The API key never leaks: a global `tracing` subscriber (written here, on
//! `tracing::Subscriber` and `tracing::field::Visit`) captures every event and span
//! at TRACE level, with all fields, while both drivers run successful, rejected,
//! reconnecting, failing and timing-out sessions; then neither the captured text nor
//! any error's `Display` or `Debug` may hold the key, its secret part, the CRAM hash
//! input `"<challenge>|<key>"` or the HTTP Basic credentials.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::Duration;

use dbn::{SType, Schema};
use dbn_pipe_protocol::historical::GetRangeParams;
use dbn_pipe_protocol::live::{
    ApiKey, AutoReconnect, LiveCompression, ReconnectPolicy, Subscription,
};
use dbn_pipe_tests::generate;
use dbn_pipe_tests::mock_gateway::{Behavior, ConnectionLog, MockGateway, Script};
use dbn_pipe_tests::mock_historical::{self, MockHistorical, Reply};
use dbn_pipe_tests::scenario::{Driver, Failure, KEY, LiveRun, RangeRun};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

const DATASET: &str = "GLBX.MDP3";

dbn_pipe_tests::for_each_driver!(no_secret_in_logs_or_errors);

// ---------------------------------------------------------------------------------
// The capturing subscriber
// ---------------------------------------------------------------------------------

/// Everything every event and span said, one line each.
static CAPTURED: Mutex<String> = Mutex::new(String::new());

fn captured() -> MutexGuard<'static, String> {
    CAPTURED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes every field (the message included) as ` name=value`.
struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        // Both forms: a secret must not appear escaped or raw.
        let _ = write!(self.0, " {}={value} ({value:?})", field.name());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let _ = write!(self.0, " {}={value} ({value:?})", field.name());
    }
}

/// A subscriber that keeps everything at every level in [`CAPTURED`].
struct Capture {
    next_span: AtomicU64,
}

impl Capture {
    fn line(kind: &str, metadata: &Metadata<'_>, fields: impl FnOnce(&mut Fields<'_>)) {
        let mut line = format!(
            "{kind} {} {} {}:",
            metadata.level(),
            metadata.target(),
            metadata.name()
        );
        fields(&mut Fields(&mut line));
        line.push('\n');
        captured().push_str(&line);
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        Self::line("span", span.metadata(), |f| span.record(f));
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut line = format!("span-record {}:", span.into_u64());
        values.record(&mut Fields(&mut line));
        line.push('\n');
        captured().push_str(&line);
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        Self::line("event", event.metadata(), |f| event.record(f));
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// Installs [`Capture`] as the process's subscriber (once).
fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(Capture {
            next_span: AtomicU64::new(1),
        })
        .expect("no other global subscriber");
    });
}

// ---------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------

fn gateway(script: Script) -> MockGateway {
    MockGateway::start(script).expect("start the mock gateway")
}

fn run_for(gw: &MockGateway) -> LiveRun {
    LiveRun::new(
        gw.addr().to_string(),
        DATASET,
        Subscription::new(Schema::Mbo, ["ESH1"]),
    )
}

fn ended(gw: &MockGateway, n: usize) -> Vec<ConnectionLog> {
    gw.ended_connections(n, Duration::from_secs(20))
}

fn range_run(server: &MockHistorical) -> RangeRun {
    RangeRun {
        base_url: server.base_url(),
        root_pem: server.root_pem(),
        params: GetRangeParams::new(DATASET, Schema::Mbo, ["ESH1"], generate::START_NS)
            .stype_in(SType::RawSymbol),
        keep_records: false,
        read_timeout: Some(Duration::from_secs(10)),
    }
}

/// What a driver's runs left behind: error texts and the challenges answered.
#[derive(Default)]
struct Seen {
    /// `(what, Display, Debug)` of every failure.
    errors: Vec<(String, String, String)>,
    challenges: Vec<String>,
}

impl Seen {
    fn failure(&mut self, what: &str, failure: Option<&Failure>, kind: Option<&str>) {
        match (failure, kind) {
            (Some(f), Some(kind)) => assert_eq!(f.kind, kind, "{what}: {f:?}"),
            (Some(f), None) => panic!("{what}: unexpected failure {f:?}"),
            (None, Some(kind)) => panic!("{what}: expected a {kind} failure"),
            (None, None) => {}
        }
        if let Some(f) = failure {
            self.errors
                .push((what.to_owned(), f.message.clone(), f.debug.clone()));
        }
    }

    fn gateway(&mut self, gw: &MockGateway, n: usize) {
        self.challenges
            .extend(ended(gw, n).into_iter().map(|log| log.challenge));
    }
}

fn no_secret_in_logs_or_errors<D: Driver>() {
    install();
    let mut seen = Seen::default();

    // Live success, plain and zstd.
    for compression in [LiveCompression::None, LiveCompression::Zstd] {
        let gw = gateway(Script::new().generated_records(100));
        let mut run = run_for(&gw);
        run.compression = compression;
        let out = D::live(&run);
        seen.failure("live success", out.failure.as_ref(), None);
        assert_eq!(out.records.count(), 100);
        seen.gateway(&gw, 1);
    }

    // A rejected key.
    let gw = gateway(
        Script::new()
            .generated_records(10)
            .behavior(Behavior::new().reject_auth("API key deactivated")),
    );
    let out = D::live(&run_for(&gw));
    seen.failure("rejected key", out.failure.as_ref(), Some("auth"));
    seen.gateway(&gw, 1);

    // A key the gateway does not know (its CRAM check fails).
    let gw = gateway(
        Script::new()
            .key("db-ZYXWVUTSRQPONMLKJIHGFEDCBA987")
            .generated_records(10),
    );
    let out = D::live(&run_for(&gw));
    seen.failure("wrong key", out.failure.as_ref(), Some("auth"));
    seen.gateway(&gw, 1);

    // A reconnect after a cut.
    let gw = gateway(
        Script::new()
            .generated_records(300)
            .on_connection(0, Behavior::new().cut_mid_record_after(100)),
    );
    let mut run = run_for(&gw);
    run.auto_reconnect = Some(
        AutoReconnect::new(ReconnectPolicy::Resubscribe)
            .max_attempts(3)
            .delays(Duration::from_millis(10), Duration::from_millis(50)),
    );
    run.max_records = Some(300);
    let out = D::live(&run);
    seen.failure("reconnect", out.failure.as_ref(), None);
    assert_eq!(out.reconnects.len(), 1);
    seen.gateway(&gw, 2);

    // A timeout: the gateway goes quiet after authentication.
    let gw = gateway(
        Script::new()
            .generated_records(10)
            .behavior(Behavior::new().stall_after_auth()),
    );
    let mut run = run_for(&gw);
    run.silence_timeout = Some(Duration::from_millis(300));
    let out = D::live(&run);
    seen.failure("timeout", out.failure.as_ref(), Some("timeout"));
    seen.gateway(&gw, 1);

    // Historical: success, a 422 and a 401.
    let body = mock_historical::mbo_body(1_000, 16 * 1024);
    let server = MockHistorical::builder()
        .get_range(Reply::dbn_zst(body.clone()).warnings(["a warning"]))
        .start()
        .expect("a mock server");
    let out = D::range(&range_run(&server));
    seen.failure("historical success", out.failure.as_ref(), None);
    assert_eq!(out.records.count(), 1_000);
    let server = MockHistorical::builder()
        .get_range(Reply::detail(422, "symbol ESZ9 not found").request_id("req-1"))
        .start()
        .expect("a mock server");
    let out = D::range(&range_run(&server));
    seen.failure("historical 422", out.failure.as_ref(), Some("http status"));
    let server = MockHistorical::builder()
        .key("db-ZYXWVUTSRQPONMLKJIHGFEDCBA987")
        .get_range(Reply::dbn_zst(body))
        .start()
        .expect("a mock server");
    let out = D::range(&range_run(&server));
    seen.failure("historical 401", out.failure.as_ref(), Some("http status"));
    // A read timeout on the historical side too.
    let server = MockHistorical::builder()
        .get_range(Reply::dbn_zst(Vec::new()).fault(mock_historical::Fault::StallBeforeHead))
        .start()
        .expect("a mock server");
    let mut run = range_run(&server);
    run.read_timeout = Some(Duration::from_millis(300));
    let out = D::range(&run);
    seen.failure("historical timeout", out.failure.as_ref(), Some("timeout"));

    // The key's own Debug, and the options that hold it.
    let key = ApiKey::new(KEY).expect("a valid key");
    let debug_texts = [
        format!("{key:?}"),
        format!("{:?}", dbn_pipe_mio::LiveOptions::new(key.clone(), DATASET)),
        format!("{:?}", dbn_pipe_mio::HistoricalOptions::new(key.clone())),
        format!(
            "{:?}",
            dbn_pipe_tokio::LiveOptions::new(key.clone(), DATASET)
        ),
        format!("{:?}", dbn_pipe_tokio::HistoricalOptions::new(key)),
    ];

    // What must never appear.
    let basic = mock_historical::basic_auth(KEY);
    let mut secrets = vec![
        KEY.to_owned(),
        // The key without its public bucket id (the last 5 characters).
        KEY[..KEY.len() - 5].to_owned(),
        basic.trim_start_matches("Basic ").to_owned(),
    ];
    assert!(seen.challenges.len() >= 7 && seen.challenges.iter().all(|c| !c.is_empty()));
    secrets.extend(seen.challenges.iter().map(|c| format!("{c}|{KEY}")));

    let logs = captured().clone();
    let name = D::NAME;
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "{name}: the captured logs hold a secret ({} bytes of log)",
            logs.len()
        );
        for (what, display, debug) in &seen.errors {
            assert!(
                !display.contains(secret.as_str()),
                "{name}: {what}: Display holds a secret"
            );
            assert!(
                !debug.contains(secret.as_str()),
                "{name}: {what}: Debug holds a secret"
            );
        }
        for text in &debug_texts {
            assert!(
                !text.contains(secret.as_str()),
                "{name}: an options Debug holds a secret"
            );
        }
    }

    // The subscriber really saw the drivers' events.
    let target = format!("dbn_pipe_{name}");
    let from_driver: Vec<&str> = logs.lines().filter(|l| l.contains(&target)).collect();
    assert!(
        !from_driver.is_empty(),
        "{name}: no event from {target} was captured"
    );
    assert!(
        from_driver.iter().any(|l| l.contains("authenticated")),
        "{name}: no authentication event captured:\n{}",
        from_driver.join("\n")
    );
    assert_eq!(seen.errors.len(), 6, "{name}: the failures checked");
    println!(
        "{name}: {} captured lines ({} from the driver), {} error texts and {} Debug \
         texts checked against {} secrets",
        logs.lines().count(),
        from_driver.len(),
        seen.errors.len() * 2,
        debug_texts.len(),
        secrets.len()
    );
}
