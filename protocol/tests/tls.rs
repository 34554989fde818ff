//! The TLS layer, in memory against a rustls server with an rcgen certificate (no
//! sockets): the handshake completes, bytes flow both ways, an untrusted root and a
//! wrong host name are rejected with clear errors, and a close without close_notify is
//! told apart from a clean one.

use std::io::{Read, Write};
use std::sync::Arc;

use dbn_pipe_protocol::ErrorKind;
use dbn_pipe_protocol::tls::{Plaintext, TlsConfig, TlsSession};
use rustls::ServerConnection;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A server certificate for `names` and the rustls server config using it.
fn server(names: &[&str]) -> (String, Arc<rustls::ServerConfig>) {
    let key = rcgen::generate_simple_self_signed(
        names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
    )
    .unwrap();
    let pem = key.cert.pem();
    let cert: CertificateDer<'static> = key.cert.der().clone();
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], private)
        .unwrap();
    (pem, Arc::new(config))
}

/// Moves bytes between client and server until neither has anything to send.
/// Returns the first client error.
fn pump(
    client: &mut TlsSession,
    server: &mut ServerConnection,
) -> Result<(), dbn_pipe_protocol::Error> {
    for _ in 0..100 {
        let mut to_server = Vec::new();
        let _ = client.poll_transmit(&mut to_server);
        let mut progressed = !to_server.is_empty();
        let mut rest = &to_server[..];
        while !rest.is_empty() {
            server.read_tls(&mut rest).unwrap();
            if server.process_new_packets().is_err() {
                // The server saw the client's alert; let the client's error surface.
                break;
            }
        }
        let mut to_client = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut to_client).unwrap();
        }
        progressed |= !to_client.is_empty();
        let mut offset = 0;
        while offset < to_client.len() {
            let taken = client.handle_input(&to_client[offset..])?;
            if taken == 0 {
                break;
            }
            offset += taken;
        }
        if !progressed {
            return Ok(());
        }
    }
    panic!("the handshake did not settle");
}

fn read_all_plaintext(client: &mut TlsSession) -> (Vec<u8>, Option<bool>) {
    let mut got = Vec::new();
    loop {
        let (n, closed) = match client.plaintext() {
            Plaintext::Data(data) => {
                got.extend_from_slice(data);
                (data.len(), None)
            }
            Plaintext::Pending => return (got, None),
            Plaintext::Closed { clean } => (0, Some(clean)),
        };
        if let Some(clean) = closed {
            return (got, Some(clean));
        }
        client.consume(n);
    }
}

fn connect(names: &[&str], host: &str) -> (TlsSession, ServerConnection) {
    let (pem, config) = server(names);
    let tls = TlsConfig::builder()
        .without_webpki_roots()
        .add_pem(pem.as_bytes())
        .unwrap()
        .build()
        .unwrap();
    let client = TlsSession::new(&tls, host).unwrap();
    let mut server = ServerConnection::new(config).unwrap();
    server.set_buffer_limit(None);
    (client, server)
}

#[test]
fn handshake_and_data_both_ways() {
    let (mut client, mut server) = connect(&["localhost"], "localhost");
    assert!(client.is_handshaking());
    client
        .send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    pump(&mut client, &mut server).unwrap();
    assert!(!client.is_handshaking());
    let mut request = vec![0; 64];
    let n = server.reader().read(&mut request).unwrap();
    assert_eq!(&request[..n], b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");

    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    server.writer().write_all(&body).unwrap();
    server.send_close_notify();
    let mut to_client = Vec::new();
    while server.wants_write() {
        server.write_tls(&mut to_client).unwrap();
    }
    // Feed in odd chunks, draining plaintext as the session pushes back.
    let mut received = Vec::new();
    let mut offset = 0;
    let mut clean = None;
    while clean.is_none() {
        let end = (offset + 7_919).min(to_client.len());
        let taken = client.handle_input(&to_client[offset..end]).unwrap();
        offset += taken;
        let (data, closed) = read_all_plaintext(&mut client);
        received.extend_from_slice(&data);
        clean = closed;
        assert!(
            taken > 0 || !data.is_empty() || closed.is_some(),
            "no progress"
        );
    }
    assert_eq!(received, body);
    assert_eq!(clean, Some(true), "close_notify was sent");
}

#[test]
fn plaintext_backpressure_stops_the_input() {
    let (mut client, mut server) = connect(&["localhost"], "localhost");
    pump(&mut client, &mut server).unwrap();
    let body = vec![7u8; 1_000_000];
    server.writer().write_all(&body).unwrap();
    let mut to_client = Vec::new();
    while server.wants_write() {
        server.write_tls(&mut to_client).unwrap();
    }
    // Never consume: the session must stop taking ciphertext near its limit.
    let mut offset = 0;
    loop {
        let taken = client.handle_input(&to_client[offset..]).unwrap();
        if taken == 0 {
            break;
        }
        offset += taken;
    }
    assert!(
        offset < to_client.len() / 4,
        "took {offset} of {} bytes",
        to_client.len()
    );
    let Plaintext::Data(data) = client.plaintext() else {
        panic!("plaintext is buffered");
    };
    assert!(!data.is_empty());
}

#[test]
fn untrusted_root_is_rejected() {
    let (_, config) = server(&["localhost"]);
    let (other_pem, _) = server(&["localhost"]);
    let tls = TlsConfig::builder()
        .without_webpki_roots()
        .add_pem(other_pem.as_bytes())
        .unwrap()
        .build()
        .unwrap();
    let mut client = TlsSession::new(&tls, "localhost").unwrap();
    let mut server = ServerConnection::new(config).unwrap();
    let err = pump(&mut client, &mut server).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls);
    assert!(
        err.to_string().contains("not signed by a trusted root"),
        "{err}"
    );
    // Sticky.
    assert_eq!(client.handle_input(b"x").unwrap_err(), err);
}

#[test]
fn wrong_host_name_is_rejected() {
    let (mut client, mut server) = connect(&["hist.example.test"], "localhost");
    let err = pump(&mut client, &mut server).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls);
    assert!(
        err.to_string().contains("not valid for the host name"),
        "{err}"
    );
}

#[test]
fn close_without_close_notify_is_unclean() {
    let (mut client, mut server) = connect(&["localhost"], "localhost");
    pump(&mut client, &mut server).unwrap();
    server.writer().write_all(b"partial body").unwrap();
    let mut to_client = Vec::new();
    while server.wants_write() {
        server.write_tls(&mut to_client).unwrap();
    }
    assert_eq!(client.handle_input(&to_client).unwrap(), to_client.len());
    client.handle_eof().unwrap();
    let (data, closed) = read_all_plaintext(&mut client);
    assert_eq!(data, b"partial body");
    assert_eq!(closed, Some(false), "TCP EOF without close_notify");
}

#[test]
fn bad_configuration_is_a_config_error() {
    assert_eq!(
        TlsConfig::builder()
            .without_webpki_roots()
            .build()
            .unwrap_err()
            .kind(),
        ErrorKind::Config
    );
    assert!(TlsConfig::builder().add_pem(b"not a pem").is_err());
    let tls = TlsConfig::builder().build().unwrap();
    assert_eq!(
        TlsSession::new(&tls, "bad name!").unwrap_err().kind(),
        ErrorKind::Config
    );
}
