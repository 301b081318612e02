//! Command-line arguments and the TOML file that may hold the same keys.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use locus_core::location::{Location, Timestamp};
use locus_core::media::sdp::Codec;
use locus_core::AccountConfig;
use serde::Deserialize;

/// The Locus softphone.
#[derive(Debug, Parser)]
#[command(
    name = "locus",
    version,
    about = "The Locus softphone: SIP that stays reachable through server migrations."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Events as JSON lines on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log level on stderr (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "warn")]
    pub log: String,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register, stay registered until SECONDS pass or Ctrl-C, then unregister.
    Register {
        /// The account.
        #[command(flatten)]
        account: Box<AccountArgs>,
        /// How long to stay registered, in seconds (default: until Ctrl-C).
        #[arg(long = "for", value_name = "SECONDS")]
        duration: Option<f64>,
    },
    /// Place a call; hang up after SECONDS of connected time, or when the
    /// far end hangs up.
    Call {
        /// Whom to call: a SIP URI, or a user name in the account's domain.
        target: String,
        /// The account.
        #[command(flatten)]
        account: Box<AccountArgs>,
        /// Connected time before hanging up, in seconds (default: until the
        /// far end hangs up or Ctrl-C).
        #[arg(long = "for", value_name = "SECONDS")]
        duration: Option<f64>,
        /// Audio to send.
        #[command(flatten)]
        audio: AudioArgs,
        /// DTMF digits to send once connected.
        #[arg(long, value_name = "DIGITS")]
        dtmf: Option<String>,
        /// Share this position with the callee (RFC 6442): degrees, and an
        /// uncertainty in metres.
        #[arg(long, value_name = "LAT,LON[,RADIUS_M]", value_parser = parse_location, allow_hyphen_values = true)]
        location: Option<Location>,
    },
    /// Register and wait for calls.
    Answer {
        /// The account.
        #[command(flatten)]
        account: Box<AccountArgs>,
        /// Answer every call.
        #[arg(long)]
        auto: bool,
        /// How long to wait for calls, in seconds (default: until Ctrl-C).
        #[arg(long = "for", value_name = "SECONDS")]
        duration: Option<f64>,
        /// Audio of the calls.
        #[command(flatten)]
        audio: AudioArgs,
        /// Share this position with each caller we answer (RFC 6442, in an
        /// UPDATE once the call is up): degrees, and an uncertainty in metres.
        #[arg(long, value_name = "LAT,LON[,RADIUS_M]", value_parser = parse_location, allow_hyphen_values = true)]
        location: Option<Location>,
    },
    /// Start two local Kamailios, a discovery service and two phones; call,
    /// drain the primary mid-call, and show what happens.
    Demo {
        /// How long the phones stay registered, in seconds.
        #[arg(long = "for", value_name = "SECONDS", default_value = "3")]
        duration: f64,
    },
    /// Publish our presence (with our position when given, shared with the
    /// friends listed) and watch each friend's.
    Friends {
        /// The friends: SIP URIs, or user names in the account's domain.
        #[arg(required = true)]
        friends: Vec<String>,
        /// The account.
        #[command(flatten)]
        account: Box<AccountArgs>,
        /// Our position: degrees, and an uncertainty in metres.
        #[arg(long, value_name = "LAT,LON[,RADIUS_M]", value_parser = parse_location, allow_hyphen_values = true)]
        location: Option<Location>,
        /// How long to stay, in seconds (default: until Ctrl-C).
        #[arg(long = "for", value_name = "SECONDS")]
        duration: Option<f64>,
    },
    /// List the audio devices.
    Devices,
}

/// Where a call's audio comes from and goes to.
#[derive(Debug, Default, Clone, Args)]
pub struct AudioArgs {
    /// WAV file to send (16-bit PCM, any rate, mono or stereo).
    #[arg(long, value_name = "WAV")]
    pub audio_in: Option<PathBuf>,
    /// WAV file to record what is heard.
    #[arg(long, value_name = "WAV")]
    pub audio_out: Option<PathBuf>,
}

impl AudioArgs {
    /// The phone's form: the WAV files when either is given, else the
    /// default sound card (CLI.md).
    pub fn into_call_audio(self) -> locus_core::CallAudio {
        if self.audio_in.is_none() && self.audio_out.is_none() {
            locus_core::CallAudio::sound_card()
        } else {
            locus_core::CallAudio::files(self.audio_in, self.audio_out)
        }
    }
}

/// The account options every SIP command takes.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountArgs {
    /// SIP user name, e.g. alice.
    #[arg(long)]
    pub user: Option<String>,
    /// SIP domain, e.g. example.test.
    #[arg(long)]
    pub domain: Option<String>,
    /// Password (or the environment variable LOCUS_PASSWORD).
    #[arg(long, env = "LOCUS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// A fixed SIP server, e.g. sip:127.0.0.2:5060;transport=tcp.
    #[arg(long, value_name = "URI")]
    pub server: Option<String>,
    /// Base URL of a discovery service, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    pub discovery: Option<String>,
    /// DNS server for RFC 3263 lookups (default: the system's).
    #[arg(long, value_name = "ADDR:PORT")]
    pub dns_server: Option<SocketAddr>,
    /// Keepalive interval towards the server, in seconds (default: 110 on
    /// TCP/TLS, 25 on UDP).
    #[arg(long, value_name = "SECONDS")]
    pub keepalive: Option<f64>,
    /// Local address and port for SIP (default: chosen by the system).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Extra trusted CA (PEM) for TLS.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Registration lifetime to ask for, in seconds.
    #[arg(long, value_name = "SECONDS")]
    pub expires: Option<u32>,
    /// Directory for state files (default: $XDG_STATE_HOME/locus).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Codecs to offer and accept, most preferred first (default: opus,pcmu,pcma).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub codecs: Option<Vec<String>>,
    /// TOML file with the same keys (flags win).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

/// A problem with the arguments or the configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these keys.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A required setting is missing.
    #[error("missing --{0} (or `{0}` in --config)")]
    Missing(&'static str),
    /// A keepalive interval that is not a duration.
    #[error("--keepalive {0}: expected a positive number of seconds")]
    Keepalive(f64),
    /// A codec name we do not know.
    #[error("unknown codec {0:?} (known: opus, pcmu, pcma)")]
    Codec(String),
}

impl AccountArgs {
    /// Flags over file values over defaults.
    pub fn into_config(self) -> Result<AccountConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<AccountArgs>(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source: Box::new(source),
                })?
            }
            None => AccountArgs::default(),
        };
        let user = self
            .user
            .or(file.user)
            .ok_or(ConfigError::Missing("user"))?;
        let domain = self
            .domain
            .or(file.domain)
            .ok_or(ConfigError::Missing("domain"))?;
        let password = self
            .password
            .or(file.password)
            .ok_or(ConfigError::Missing("password"))?;
        let mut config = AccountConfig::new(user, domain, password);
        config.server = self.server.or(file.server);
        config.discovery = self.discovery.or(file.discovery);
        config.dns_server = self.dns_server.or(file.dns_server);
        if let Some(secs) = self.keepalive.or(file.keepalive) {
            config.keepalive = Some(
                std::time::Duration::try_from_secs_f64(secs)
                    .map_err(|_| ConfigError::Keepalive(secs))?,
            );
        }
        config.listen = self.listen.or(file.listen);
        config.ca_file = self.ca_file.or(file.ca_file);
        if let Some(expires) = self.expires.or(file.expires) {
            config.expires = expires;
        }
        config.state_dir = self.state_dir.or(file.state_dir).or_else(default_state_dir);
        if let Some(names) = self.codecs.or(file.codecs) {
            config.codecs = names
                .iter()
                .map(|n| Codec::from_name(n).ok_or_else(|| ConfigError::Codec(n.clone())))
                .collect::<Result<_, _>>()?;
        }
        Ok(config)
    }
}

/// `LAT,LON[,RADIUS_M]` as a location taken now.
pub fn parse_location(text: &str) -> Result<Location, String> {
    let numbers: Vec<f64> = text
        .split(',')
        .map(|n| {
            n.trim()
                .parse::<f64>()
                .map_err(|_| format!("{n:?} is not a number"))
        })
        .collect::<Result<_, _>>()?;
    let (lat, lon, radius) = match numbers[..] {
        [lat, lon] => (lat, lon, 0.0),
        [lat, lon, radius] => (lat, lon, radius),
        _ => return Err("expected LAT,LON[,RADIUS_M]".into()),
    };
    Location::new(lat, lon, radius, Some(Timestamp::now())).map_err(|e| e.to_string())
}

/// `$XDG_STATE_HOME/locus`, else `~/.local/state/locus`.
fn default_state_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("locus"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_are_checked() {
        let l = parse_location("48.2085, 16.3721,25").unwrap();
        assert_eq!((l.lat, l.lon, l.radius_m), (48.2085, 16.3721, 25.0));
        assert_eq!(parse_location("1,2").unwrap().radius_m, 0.0);
        for bad in ["", "48.2", "1,2,3,4", "north,south", "95,0", "0,0,-5"] {
            assert!(parse_location(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locus.toml");
        std::fs::write(
            &path,
            "user = \"file-user\"\ndomain = \"example.test\"\npassword = \"pw\"\nexpires = 90\n",
        )
        .unwrap();
        let args = AccountArgs {
            user: Some("flag-user".into()),
            config: Some(path),
            ..Default::default()
        };
        let config = args.into_config().unwrap();
        assert_eq!(config.user, "flag-user");
        assert_eq!(config.domain, "example.test");
        assert_eq!(config.expires, 90);
    }

    #[test]
    fn unknown_keys_and_missing_user_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locus.toml");
        std::fs::write(&path, "usr = \"typo\"\n").unwrap();
        let err = AccountArgs {
            config: Some(path),
            ..Default::default()
        }
        .into_config()
        .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = AccountArgs::default().into_config().unwrap_err();
        assert_eq!(err.to_string(), "missing --user (or `user` in --config)");
    }
}
