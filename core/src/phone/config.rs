//! What a phone needs to know about its account.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::media::sdp::Codec;
use crate::sip::digest::Password;

/// Default registration lifetime asked of the registrar, in seconds.
///
/// Ten minutes keeps a phone's radio mostly idle; a lost TCP/TLS flow is
/// noticed at once and re-registered without waiting for the refresh.
pub const DEFAULT_EXPIRES: u32 = 600;

/// Default keepalive interval on TCP/TLS: RFC 5626 §4.4.1's 95–120 s
/// range, under the two minutes after which many NATs drop an idle TCP
/// mapping. Each ping wakes a phone's radio, so it is as long as that
/// allows; a server vanishing is mostly noticed by other means (the flow
/// closing, the discovery service).
pub const DEFAULT_STREAM_KEEPALIVE: Duration = Duration::from_secs(110);

/// Default keepalive interval on UDP: NATs forget UDP mappings after as
/// little as 30 s, so the ping must come sooner.
pub const DEFAULT_DATAGRAM_KEEPALIVE: Duration = Duration::from_secs(25);

/// How long a keepalive's answer may take (RFC 5626 §4.4.1 allows 10 s;
/// half that notices a dead server sooner and still spans a pause).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The keepalive interval on `transport`: the user's, else the default.
pub(crate) fn keepalive_interval(
    configured: Option<Duration>,
    transport: crate::sip::Transport,
) -> Duration {
    configured.unwrap_or(match transport {
        crate::sip::Transport::Udp => DEFAULT_DATAGRAM_KEEPALIVE,
        crate::sip::Transport::Tcp | crate::sip::Transport::Tls => DEFAULT_STREAM_KEEPALIVE,
    })
}

/// An account and the local settings to run it with.
#[derive(Debug, Clone)]
pub struct AccountConfig {
    /// SIP user name, e.g. `alice`.
    pub user: String,
    /// SIP domain, e.g. `example.test`.
    pub domain: String,
    /// Password for digest authentication.
    pub password: Password,
    /// A fixed server URI such as `sip:127.0.0.2:5060;transport=tcp`; without
    /// one, the discovery service or DNS (RFC 3263) chooses.
    pub server: Option<String>,
    /// Base URL of a discovery service, e.g. `http://127.0.0.1:8080`.
    pub discovery: Option<String>,
    /// The DNS server for RFC 3263 lookups; `None` uses the system's.
    pub dns_server: Option<SocketAddr>,
    /// Keepalive interval; `None` picks one for the transport
    /// ([`DEFAULT_STREAM_KEEPALIVE`], [`DEFAULT_DATAGRAM_KEEPALIVE`]).
    pub keepalive: Option<Duration>,
    /// Local address for SIP; port 0 lets the system choose.
    pub listen: Option<SocketAddr>,
    /// Extra trusted CA certificates (PEM) for TLS.
    pub ca_file: Option<PathBuf>,
    /// Requested registration lifetime in seconds.
    pub expires: u32,
    /// Directory for small state files (the RFC 5626 instance id); `None`
    /// gives the phone a new instance id each run.
    pub state_dir: Option<PathBuf>,
    /// First retry delay after a failed registration.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Codecs to offer and accept, most preferred first.
    pub codecs: Vec<Codec>,
}

impl AccountConfig {
    /// An account with default settings.
    pub fn new(
        user: impl Into<String>,
        domain: impl Into<String>,
        password: impl Into<String>,
    ) -> AccountConfig {
        AccountConfig {
            user: user.into(),
            domain: domain.into(),
            password: Password::new(password),
            server: None,
            discovery: None,
            dns_server: None,
            keepalive: None,
            listen: None,
            ca_file: None,
            expires: DEFAULT_EXPIRES,
            state_dir: None,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(120),
            codecs: Codec::ALL.to_vec(),
        }
    }
}
