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
    /// one, the domain itself is resolved.
    pub server: Option<String>,
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
