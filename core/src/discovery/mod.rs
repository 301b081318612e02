//! Finding the SIP server to use: the discovery service's list (fetched
//! and watched), the list remembered from the last run, DNS (RFC 3263) as
//! the fallback, and the choice among servers.

pub mod choice;
pub mod client;
pub mod dns;
pub mod list;
pub mod remembered;

pub use client::DiscoveryClient;
pub use list::{Health, ServerEntry, ServerList, ServerState};

/// Why no usable server list could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// The service (or the DNS server) could not be reached in time.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The service answered with an HTTP error.
    #[error("HTTP {status}: {message}")]
    Http {
        /// The status code.
        status: u16,
        /// What the body said, shortened.
        message: String,
    },
    /// The answer is not a usable server list.
    #[error("not a usable server list: {0}")]
    Garbage(String),
    /// DNS had no SIP server for the domain.
    #[error("DNS: {0}")]
    Dns(String),
    /// The settings are unusable (bad URL).
    #[error("invalid setting: {0}")]
    Invalid(String),
}
