//! Which SIP server to talk to, and how.

use std::net::SocketAddr;

use crate::sip::uri::{Host, Scheme, Uri};
use crate::sip::Transport;

use super::{AccountConfig, PhoneError};

/// A resolved server: where to connect and what to call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTarget {
    /// Transport to use.
    pub transport: Transport,
    /// Socket address to reach.
    pub addr: SocketAddr,
    /// The server as a URI, for events and logs.
    pub label: String,
    /// The name a TLS certificate must carry: the URI's host when it is a
    /// name, else the account's SIP domain (RFC 5922 §7.2 identifies a SIP
    /// server by its domain).
    pub tls_name: String,
}

/// Resolves the account's server: the fixed `server` URI if given, else the
/// SIP domain's address records on the default port.
pub async fn resolve(config: &AccountConfig) -> Result<ServerTarget, PhoneError> {
    match &config.server {
        Some(s) => resolve_uri(s, &config.domain).await,
        None => resolve_uri(&format!("sip:{}", config.domain), &config.domain).await,
    }
}

/// Resolves one server URI (`sip:host[:port][;transport=x]`, `sips:...`);
/// `domain` names TLS peers given by address. A host name is looked up with
/// the system's resolver; discovery's own lists carry addresses.
pub async fn resolve_uri(server: &str, domain: &str) -> Result<ServerTarget, PhoneError> {
    let uri = Uri::parse(server)
        .map_err(|e| PhoneError::InvalidConfig(format!("server {server:?}: {e}")))?;
    let transport = match (uri.scheme, uri.transport_param()) {
        (Scheme::Sips, _) => Transport::Tls,
        (Scheme::Sip, Some(t)) => t
            .parse()
            .map_err(|e| PhoneError::InvalidConfig(format!("server: {e}")))?,
        (Scheme::Sip, None) => Transport::Udp,
    };
    let port = uri.port.unwrap_or(transport.default_port());
    let addr = match &uri.host {
        Host::Ip(ip) => SocketAddr::new(*ip, port),
        Host::Domain(name) => tokio::net::lookup_host((name.as_str(), port))
            .await
            .map_err(|e| PhoneError::Resolve(format!("{name}: {e}")))?
            .next()
            .ok_or_else(|| PhoneError::Resolve(format!("{name}: no address")))?,
    };
    let tls_name = match &uri.host {
        Host::Domain(name) => name.clone(),
        Host::Ip(_) => domain.to_owned(),
    };
    let label = format!("sip:{}:{port};transport={transport}", uri.host);
    Ok(ServerTarget {
        transport,
        addr,
        label,
        tls_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn target(server: &str) -> Result<ServerTarget, PhoneError> {
        let mut c = AccountConfig::new("a", "example.test", "p");
        c.server = Some(server.into());
        resolve(&c).await
    }

    #[tokio::test]
    async fn transport_and_port_from_the_uri() {
        let t = target("sip:127.0.0.2;transport=TCP").await.unwrap();
        assert_eq!(
            (t.transport, t.addr.to_string()),
            (Transport::Tcp, "127.0.0.2:5060".into())
        );
        assert_eq!(t.tls_name, "example.test");
        let t = target("sips:[::1]").await.unwrap();
        assert_eq!((t.transport, t.addr.port()), (Transport::Tls, 5061));
        assert_eq!(t.label, "sip:[::1]:5061;transport=tls");
    }

    #[tokio::test]
    async fn bad_server_is_a_config_error() {
        assert!(matches!(
            target("http://x").await,
            Err(PhoneError::InvalidConfig(_))
        ));
        assert!(matches!(
            target("sip:1.2.3.4;transport=sctp").await,
            Err(PhoneError::InvalidConfig(_))
        ));
    }
}
