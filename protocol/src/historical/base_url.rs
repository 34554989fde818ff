//! The Historical API server a driver connects to, from a base URL.

use crate::Error;

/// `https://host[:port]` checked and split: the host (also the TLS server name and
/// the HTTP `Host`) and the TCP port (443 unless given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// Domain name or IP address, without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl BaseUrl {
    /// Parses `url`: only the `https` scheme, a host and an optional port. Host names
    /// are ASCII (this workspace builds `url` without a Unicode IDNA back end); upper
    /// case is folded to lower case.
    ///
    /// # Errors
    /// [`Error::Config`] naming the URL and what is wrong with it.
    ///
    /// ```
    /// use dbn_pipe_protocol::historical::BaseUrl;
    /// let url = BaseUrl::parse("https://127.0.0.1:8443").unwrap();
    /// assert_eq!((url.host.as_str(), url.port), ("127.0.0.1", 8443));
    /// assert!(BaseUrl::parse("http://hist.databento.com").is_err());
    /// ```
    pub fn parse(url: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::Config(format!("base URL {url:?}: {why}"));
        let parsed = url::Url::parse(url).map_err(|err| bad(&err.to_string()))?;
        if parsed.scheme() != "https" {
            return Err(bad("only https is supported"));
        }
        if !matches!(parsed.path(), "" | "/")
            || parsed.query().is_some()
            || parsed.fragment().is_some()
            || !parsed.username().is_empty()
            || parsed.password().is_some()
        {
            return Err(bad("give only the scheme, host and port"));
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(domain)) => domain.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(bad("no host")),
        };
        let port = parsed.port_or_known_default().unwrap_or(443);
        Ok(Self { host, port })
    }

    /// `host:port` for resolving, with an IPv6 host in brackets.
    pub fn socket_addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_with_defaults_and_ipv6() {
        let url = BaseUrl::parse("https://hist.databento.com").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("hist.databento.com", 443));
        assert_eq!(url.socket_addr(), "hist.databento.com:443");
        let url = BaseUrl::parse("https://[::1]:9443/").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 9443));
        assert_eq!(url.socket_addr(), "[::1]:9443");
        let url = BaseUrl::parse("https://HIST.Databento.com:443").unwrap();
        assert_eq!(url.host, "hist.databento.com");
    }

    #[test]
    fn anything_but_scheme_host_and_port_is_refused_by_name() {
        for (url, says) in [
            ("http://hist.databento.com", "only https"),
            ("https://hist.databento.com/v0", "only the scheme"),
            ("https://user@hist.databento.com", "only the scheme"),
            ("https://hist.databento.com/?a=1", "only the scheme"),
            ("not a url", "base URL"),
            ("https://bücher.example", "base URL"),
        ] {
            let err = BaseUrl::parse(url).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config);
            assert!(err.to_string().contains(says), "{url}: {err}");
        }
    }
}
