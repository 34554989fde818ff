//! The historical client's own checks: options, connect errors and the read timeout
//! (the cross-driver suite runs it against a TLS mock server).
#![forbid(unsafe_code)]

use std::net::TcpListener;
use std::time::Duration;

use dbn::Schema;
use dbn_pipe_protocol::historical::GetRangeParams;
use dbn_pipe_protocol::live::ApiKey;
use dbn_pipe_tokio::{ErrorKind, HistoricalClient, HistoricalOptions};

const KEY: &str = "db-0123456789abcdefghijklmnABCDE";

fn options() -> HistoricalOptions {
    HistoricalOptions::new(ApiKey::new(KEY).expect("key"))
}

fn params() -> GetRangeParams {
    GetRangeParams::new(
        "GLBX.MDP3",
        Schema::Trades,
        ["ESM4"],
        1_704_067_200_000_000_000u64,
    )
}

#[test]
fn base_urls_other_than_https_host_port_are_refused() {
    for bad in [
        "http://hist.databento.com",
        "https://hist.databento.com/v0",
        "not a url",
        "https://hist.databento.com/?x=1",
    ] {
        let err = HistoricalClient::new(options().base_url(bad)).expect_err(bad);
        assert_eq!(err.kind(), ErrorKind::Config, "{bad}: {err}");
    }
    assert!(HistoricalClient::new(options().base_url("https://localhost:8443")).is_ok());
    let err =
        HistoricalClient::new(options().add_root_pem(b"not a certificate")).expect_err("bad pem");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let root = dbn_pipe_protocol::doc_support::test_root_pem();
    assert!(HistoricalClient::new(options().add_root_pem(root.as_bytes())).is_ok());
}

#[tokio::test(flavor = "current_thread")]
async fn a_closed_port_is_a_connect_error() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let mut client =
        HistoricalClient::new(options().base_url(&format!("https://127.0.0.1:{port}")))
            .expect("client");
    let err = client
        .get_record_count(&params())
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    assert!(!client.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // The kernel accepts; nobody ever answers the TLS handshake.
    let mut client = HistoricalClient::new(
        options()
            .base_url(&format!("https://127.0.0.1:{port}"))
            .read_timeout(Duration::from_millis(200)),
    )
    .expect("client");
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        client.timeseries_get_range(&params()),
    )
    .await
    .expect("in time")
    .expect_err("no answer");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    drop(listener);
}

#[tokio::test(flavor = "current_thread")]
async fn invalid_parameters_are_usage_errors_before_any_byte_is_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut client =
        HistoricalClient::new(options().base_url(&format!("https://127.0.0.1:{port}")))
            .expect("client");
    let empty = GetRangeParams::new("GLBX.MDP3", Schema::Trades, Vec::<String>::new(), 0u64);
    let err = client.get_cost(&empty).await.expect_err("no symbols");
    assert_eq!(err.kind(), ErrorKind::Usage, "{err}");
}
