//! TLS over byte slices: rustls's `ClientConnection` fed from `&[u8]`, ciphertext out
//! into a caller's `Vec<u8>`, plaintext handed out borrowed.

use std::io::{self, BufRead, Write};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::Error;

/// Trust roots and protocol settings for [`TlsSession`]s, built once and shared.
///
/// Always built on rustls's `ring` provider named explicitly, so another crate in the
/// same program enabling a second provider cannot make construction panic. TLS 1.2 is
/// the minimum; SNI and host name verification are always on.
///
/// ```
/// use dbn_pipe_protocol::tls::TlsConfig;
///
/// // Mozilla's roots (webpki-roots), as for hist.databento.com:
/// let public = TlsConfig::builder().build()?;
/// // Only a private root, e.g. a test server's:
/// # let pem = dbn_pipe_protocol::doc_support::test_root_pem();
/// let private = TlsConfig::builder().without_webpki_roots().add_pem(pem.as_bytes())?.build()?;
/// # Ok::<(), dbn_pipe_protocol::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct TlsConfig {
    config: Arc<ClientConfig>,
}

/// Builds a [`TlsConfig`].
#[derive(Debug)]
pub struct TlsConfigBuilder {
    roots: RootCertStore,
    webpki_roots: bool,
}

impl TlsConfig {
    /// A builder that trusts the webpki (Mozilla) roots unless told otherwise.
    pub fn builder() -> TlsConfigBuilder {
        TlsConfigBuilder {
            roots: RootCertStore::empty(),
            webpki_roots: true,
        }
    }
}

impl TlsConfigBuilder {
    /// Does not trust the webpki roots: only roots added with
    /// [`add_pem`](Self::add_pem) or [`add_der`](Self::add_der).
    #[must_use]
    pub fn without_webpki_roots(mut self) -> Self {
        self.webpki_roots = false;
        self
    }

    /// Trusts every certificate in `pem` (the contents of a PEM file).
    ///
    /// # Errors
    /// [`Error::Config`] when the PEM holds no certificate or one that is invalid.
    pub fn add_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| Error::Config(format!("PEM trust root: {e}")))?;
            self.roots
                .add(cert)
                .map_err(|e| Error::Config(format!("PEM trust root: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(Error::Config("the PEM holds no certificate".to_owned()));
        }
        Ok(self)
    }

    /// Trusts one DER-encoded certificate.
    ///
    /// # Errors
    /// [`Error::Config`] when the certificate is invalid.
    pub fn add_der(mut self, der: &[u8]) -> Result<Self, Error> {
        self.roots
            .add(CertificateDer::from(der.to_vec()))
            .map_err(|e| Error::Config(format!("DER trust root: {e}")))?;
        Ok(self)
    }

    /// Builds the configuration.
    ///
    /// # Errors
    /// [`Error::Config`] when no root is trusted or rustls rejects the settings.
    pub fn build(mut self) -> Result<TlsConfig, Error> {
        if self.webpki_roots {
            self.roots
                .extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        if self.roots.is_empty() {
            return Err(Error::Config("no TLS trust root configured".to_owned()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Error::Config(format!("TLS settings: {e}")))?
            .with_root_certificates(self.roots)
            .with_no_client_auth();
        Ok(TlsConfig {
            config: Arc::new(config),
        })
    }
}

/// What the TLS layer holds for the application.
#[derive(Debug, PartialEq, Eq)]
pub enum Plaintext<'a> {
    /// Decrypted bytes; call [`TlsSession::consume`] with how many were used.
    Data(&'a [u8]),
    /// Nothing decrypted yet: feed more ciphertext.
    Pending,
    /// The peer closed: `clean` when it sent close_notify first, otherwise the stream
    /// may be truncated (a TCP close without close_notify).
    Closed {
        /// Whether close_notify was received.
        clean: bool,
    },
}

/// One TLS client connection as a sans-IO state machine.
///
/// Ciphertext from the socket goes in with [`handle_input`](Self::handle_input)
/// (which takes nothing while decrypted bytes wait: that is backpressure), ciphertext
/// to send comes out of [`poll_transmit`](Self::poll_transmit), plaintext to send goes
/// in with [`send`](Self::send) and received plaintext is borrowed with
/// [`plaintext`](Self::plaintext) and released with [`consume`](Self::consume).
#[derive(Debug)]
pub struct TlsSession {
    conn: ClientConnection,
    failure: Option<Error>,
    received: u64,
    records: RecordFraming,
}

/// Where the ciphertext stream stands in TLS record framing (a 5-byte header whose
/// last two bytes give the body length), so that a connection that ends inside a
/// record is reported as a cut TLS record rather than only as what it carried.
#[derive(Debug, Default)]
struct RecordFraming {
    /// Ciphertext offset where the current record starts.
    start: u64,
    /// Header bytes of the current record received so far (0 to 4; 5 completes it).
    header: [u8; 5],
    header_have: usize,
    /// Body length of the current record, once its header is complete.
    body_len: usize,
    /// Body bytes of the current record still to come.
    body_left: usize,
}

impl RecordFraming {
    const HEADER_LEN: usize = 5;

    /// Accounts for `bytes`, the ciphertext that follows what was seen before.
    fn advance(&mut self, mut bytes: &[u8], mut offset: u64) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                offset += n as u64;
                bytes = &bytes[n..];
                continue;
            }
            if self.header_have == 0 {
                self.start = offset;
            }
            let n = (Self::HEADER_LEN - self.header_have).min(bytes.len());
            self.header[self.header_have..self.header_have + n].copy_from_slice(&bytes[..n]);
            self.header_have += n;
            offset += n as u64;
            bytes = &bytes[n..];
            if self.header_have == Self::HEADER_LEN {
                self.body_len = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                self.body_left = self.body_len;
                self.header_have = 0;
            }
        }
    }

    /// The record the stream is inside of: its offset, the bytes of it received and
    /// its whole length (unknown while the header is incomplete).
    fn unfinished(&self, received: u64) -> Option<(u64, usize, Option<usize>)> {
        let have = usize::try_from(received - self.start).unwrap_or(usize::MAX);
        if self.header_have > 0 {
            Some((self.start, have, None))
        } else if self.body_left > 0 {
            Some((self.start, have, Some(Self::HEADER_LEN + self.body_len)))
        } else {
            None
        }
    }
}

impl TlsSession {
    /// Most decrypted bytes buffered before the session stops taking ciphertext.
    pub const PLAINTEXT_LIMIT: usize = 64 * 1024;

    /// Starts a handshake with `server_name` (SNI and the name verified against the
    /// certificate). The ClientHello is ready in [`poll_transmit`](Self::poll_transmit).
    ///
    /// # Errors
    /// [`Error::Config`] when `server_name` is not a valid DNS name or IP address.
    pub fn new(config: &TlsConfig, server_name: &str) -> Result<Self, Error> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| Error::Config(format!("TLS server name {server_name:?}: {e}")))?;
        let mut conn =
            ClientConnection::new(Arc::clone(&config.config), name).map_err(|e| Error::Tls {
                reason: e.to_string(),
            })?;
        conn.set_buffer_limit(Some(Self::PLAINTEXT_LIMIT));
        Ok(Self {
            conn,
            failure: None,
            received: 0,
            records: RecordFraming::default(),
        })
    }

    /// Whether the handshake is still running.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Ciphertext bytes taken so far.
    pub fn bytes_received(&self) -> u64 {
        self.received
    }

    /// Takes ciphertext; returns how many bytes were taken (0 while decrypted bytes
    /// wait to be consumed, or after the peer's close_notify).
    ///
    /// # Errors
    /// [`Error::Tls`] for a failed handshake (untrusted certificate, wrong host name,
    /// no common protocol) or a corrupt record. rustls may have queued an alert: drain
    /// [`poll_transmit`](Self::poll_transmit). The error is sticky.
    pub fn handle_input(&mut self, input: &[u8]) -> Result<usize, Error> {
        if let Some(err) = &self.failure {
            return Err(err.clone());
        }
        // Records read earlier may still wait for plaintext room: decrypt them first.
        if let Err(err) = self.conn.process_new_packets() {
            return Err(self.fail(&err));
        }
        let mut rest = input;
        while !rest.is_empty() && self.conn.wants_read() {
            match self.conn.read_tls(&mut rest) {
                Ok(0) => break,
                Ok(_) => {}
                // "received plaintext buffer full": backpressure, not an error.
                Err(_) => break,
            }
            if let Err(err) = self.conn.process_new_packets() {
                return Err(self.fail(&err));
            }
        }
        let taken = input.len() - rest.len();
        self.records.advance(&input[..taken], self.received);
        self.received += taken as u64;
        Ok(taken)
    }

    /// The TCP connection reached end of input.
    ///
    /// # Errors
    /// As [`handle_input`](Self::handle_input).
    pub fn handle_eof(&mut self) -> Result<(), Error> {
        if let Some(err) = &self.failure {
            return Err(err.clone());
        }
        let _ = self.conn.read_tls(&mut io::empty());
        if let Err(err) = self.conn.process_new_packets() {
            return Err(self.fail(&err));
        }
        Ok(())
    }

    /// When the ciphertext taken so far ends inside a TLS record: the truncation
    /// error naming that record ([`TruncatedPart::Tls`](crate::TruncatedPart::Tls),
    /// its offset, the bytes of it received and its length when known).
    pub fn unfinished_record(&self) -> Option<Error> {
        let (offset, have, need) = self.records.unfinished(self.received)?;
        Some(Error::Truncated {
            part: crate::TruncatedPart::Tls,
            offset,
            have,
            need,
        })
    }

    /// Queues application bytes to encrypt (held until the handshake completes).
    ///
    /// # Errors
    /// [`Error::Tls`] when the connection can no longer send.
    pub fn send(&mut self, plaintext: &[u8]) -> Result<(), Error> {
        self.conn
            .writer()
            .write_all(plaintext)
            .map_err(|e| Error::Tls {
                reason: format!("cannot send: {e}"),
            })
    }

    /// Sends close_notify (then drain [`poll_transmit`](Self::poll_transmit)).
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }

    /// Appends ciphertext to send to `out`; returns how many bytes.
    #[must_use = "the bytes must be written to the socket"]
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let mut total = 0;
        while self.conn.wants_write() {
            match self.conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        total
    }

    /// Whether ciphertext waits in [`poll_transmit`](Self::poll_transmit).
    pub fn wants_transmit(&self) -> bool {
        self.conn.wants_write()
    }

    /// The decrypted bytes available now, borrowed.
    #[must_use = "plaintext must be consumed or it blocks the input"]
    pub fn plaintext(&mut self) -> Plaintext<'_> {
        // Records read earlier may wait for plaintext room: decrypt them now. A failure
        // is kept (sticky) for `handle_input` and `failure`.
        if self.failure.is_none() {
            if let Err(err) = self.conn.process_new_packets() {
                let _ = self.fail(&err);
            }
        }
        match self.conn.reader().into_first_chunk() {
            Ok([]) => Plaintext::Closed { clean: true },
            Ok(data) => Plaintext::Data(data),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Plaintext::Closed { clean: false }
            }
            Err(_) => Plaintext::Pending,
        }
    }

    /// The sticky TLS error, if the connection failed.
    pub fn failure(&self) -> Option<&Error> {
        self.failure.as_ref()
    }

    /// Releases `n` bytes of the last [`plaintext`](Self::plaintext).
    pub fn consume(&mut self, n: usize) {
        self.conn.reader().consume(n);
    }

    fn fail(&mut self, err: &rustls::Error) -> Error {
        use rustls::CertificateError;
        let reason = match err {
            rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
            | rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                ..
            }) => {
                format!("the server certificate is not valid for the host name ({err})")
            }
            rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature,
            ) => format!("the server certificate is not signed by a trusted root ({err})"),
            rustls::Error::InvalidCertificate(_) => {
                format!("the server certificate was rejected ({err})")
            }
            _ => err.to_string(),
        };
        let error = Error::Tls { reason };
        self.failure = Some(error.clone());
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_framing_knows_when_the_stream_stops_inside_a_record() {
        // Two records whose 5-byte headers announce 3 and 0 body bytes, then a third
        // announcing 4 of which 1 arrives.
        let wire = [
            23, 3, 3, 0, 3, b'a', b'b', b'c', 21, 3, 3, 0, 0, 23, 3, 3, 0, 4, b'x',
        ];
        for split in 0..=wire.len() {
            let mut framing = RecordFraming::default();
            framing.advance(&wire[..split], 0);
            framing.advance(&wire[split..], split as u64);
            assert_eq!(
                framing.unfinished(wire.len() as u64),
                Some((13, 6, Some(9))),
                "split at {split}"
            );
        }
        let mut framing = RecordFraming::default();
        framing.advance(&wire[..8], 0);
        assert_eq!(framing.unfinished(8), None, "at a record boundary");
        framing.advance(&wire[8..13], 8);
        assert_eq!(framing.unfinished(13), None, "an empty record is whole");
        framing.advance(&wire[13..15], 13);
        assert_eq!(
            framing.unfinished(15),
            Some((13, 2, None)),
            "inside a header"
        );
    }
}
