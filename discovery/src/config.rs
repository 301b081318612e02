//! The service's configuration file (TOML): where it listens, the admin
//! token, and the SIP servers it knows.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! admin_token = "secret"          # or LOCUS_DISCOVERY_TOKEN
//!
//! [[server]]
//! id = "sip-a"
//! uri = "sip:127.0.0.2:5060;transport=udp"
//! priority = 10                   # lower is preferred (as in DNS SRV)
//! weight = 100                    # share among equal priorities
//! region = "eu-west"
//!
//! [health]                        # optional; these are the defaults
//! interval_ms = 1000
//! timeout_ms = 1000
//! fall = 2                        # failed checks in a row before `down`
//! rise = 1                        # answered checks in a row before `up`
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use locus_core::sip::uri::Uri;
use serde::Deserialize;

use crate::health::HealthSettings;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It is not valid TOML for these keys.
    #[error("{0}")]
    Parse(#[from] Box<toml::de::Error>),
    /// A server entry is unusable.
    #[error("server {id:?}: {why}")]
    Server {
        /// The entry's id.
        id: String,
        /// What is wrong with it.
        why: String,
    },
    /// No servers at all.
    #[error("no [[server]] entries")]
    Empty,
}

/// One SIP server as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// A short unique name, used by the admin endpoints.
    pub id: String,
    /// Its SIP URI with transport, e.g. `sip:127.0.0.2:5060;transport=tcp`.
    pub uri: String,
    /// Lower is preferred (DNS SRV semantics).
    #[serde(default = "default_priority")]
    pub priority: u16,
    /// Share of traffic among servers of equal priority.
    #[serde(default = "default_weight")]
    pub weight: u16,
    /// A region label, e.g. `eu-west`.
    #[serde(default)]
    pub region: String,
}

fn default_priority() -> u16 {
    10
}

fn default_weight() -> u16 {
    100
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to listen for HTTP (default 127.0.0.1:8080).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Bearer token for the admin endpoints; without one they are closed.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// How servers are health-checked.
    #[serde(default)]
    pub health: HealthSettings,
    /// The servers.
    #[serde(default, rename = "server")]
    pub servers: Vec<ServerConfig>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl Config {
    /// Parses and checks a configuration.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(Box::new)?;
        if config.servers.is_empty() {
            return Err(ConfigError::Empty);
        }
        let mut ids = HashSet::new();
        for server in &config.servers {
            let bad = |why: String| ConfigError::Server {
                id: server.id.clone(),
                why,
            };
            if server.id.is_empty()
                || !server
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(bad("the id must be letters, digits, '-', '_' or '.'".into()));
            }
            if !ids.insert(server.id.as_str()) {
                return Err(bad("the id is used twice".into()));
            }
            Uri::parse(&server.uri).map_err(|e| bad(format!("uri {:?}: {e}", server.uri)))?;
        }
        Ok(config)
    }

    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_and_its_defaults() {
        let c = Config::parse(
            "admin_token = \"t\"\n[[server]]\nid = \"a\"\nuri = \"sip:127.0.0.2:5060;transport=tcp\"\n\
             priority = 1\nweight = 5\nregion = \"eu\"\n[[server]]\nid = \"b\"\nuri = \"sip:127.0.0.3\"\n",
        )
        .unwrap();
        assert_eq!(c.listen, default_listen());
        assert_eq!(c.admin_token.as_deref(), Some("t"));
        assert_eq!((c.servers[0].priority, c.servers[0].weight), (1, 5));
        assert_eq!((c.servers[1].priority, c.servers[1].weight), (10, 100));
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        for (text, expected) in [
            ("", "no [[server]]"),
            ("[[server]]\nid = \"a\"\nuri = \"http://x\"\n", "server \"a\": uri"),
            (
                "[[server]]\nid = \"a\"\nuri = \"sip:h\"\n[[server]]\nid = \"a\"\nuri = \"sip:h\"\n",
                "used twice",
            ),
            ("[[server]]\nid = \"a b\"\nuri = \"sip:h\"\n", "the id must be"),
            ("[[server]]\nid = \"a\"\nuri = \"sip:h\"\ncolour = 1\n", "unknown field"),
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }
}
