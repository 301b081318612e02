//! The Locus test bed: real Kamailio registrars on loopback addresses, a test
//! PKI made at run time, and helpers for driving phones in tests.
//!
//! Everything listens on 127.0.0.0/8 only, and every process started here is
//! stopped by process id when its handle is dropped.

pub mod baresip;
pub mod certs;
pub mod discovery;
pub mod dns;
pub mod kamailio;
pub mod load;
pub mod loopback;
pub mod migration;

pub use kamailio::{DigestAlgorithm, Kamailio, KamailioConfig};

/// Why the test bed could not do something.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A program the test bed needs is missing.
    #[error("{0}")]
    NotInstalled(String),
    /// Kamailio failed to start or answer.
    #[error("kamailio: {0}")]
    Kamailio(String),
    /// File or socket trouble.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The subscriber database could not be written.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Certificate generation failed.
    #[error("certificates: {0}")]
    Certs(#[from] rcgen::Error),
    /// A WAV file could not be written.
    #[error("wav: {0}")]
    Wav(#[from] hound::Error),
    /// Audio could not be converted or scored.
    #[error("audio: {0}")]
    Audio(String),
    /// The discovery service failed to start or answer.
    #[error("discovery service: {0}")]
    Discovery(String),
    /// baresip failed to start or misbehaved.
    #[error("baresip: {0}")]
    Baresip(String),
}

pub mod phones;
pub mod process;
pub mod quality;
pub mod voice;
