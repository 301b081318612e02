//! Health checks: an OPTIONS to each server at an interval, through
//! locus-core's SIP transaction layer, with up/down hysteresis so one lost
//! datagram does not send every phone elsewhere.
//!
//! Over UDP the transaction retransmits within the timeout (its T1 is the
//! timeout / 64, so Timer F fires exactly at the timeout) and an ICMP
//! "port unreachable" ends the check at once; over TCP the request goes on
//! a fresh connection. A paused server still completes TCP handshakes in
//! its kernel, so only an answer counts as up. Servers reached over TLS
//! are not checked (their health stays `unknown`): the service holds no
//! trust anchors for them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use locus_core::discovery::Health;
use locus_core::sip::framing::{Frame, StreamFramer};
use locus_core::sip::keepalive::options_request;
use locus_core::sip::message::{self, Message};
use locus_core::sip::transaction::{ClientOutcome, ClientTransaction, Timers};
use locus_core::sip::uri::Uri;
use locus_core::Transport;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::config::ServerConfig;
use crate::registry::Registry;

/// How often and how strictly servers are checked (`[health]` in the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// Time between checks of one server, in milliseconds.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// How long a check waits for the answer, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Failed checks in a row before a server is `down`.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// Answered checks in a row before a `down` server is `up` again.
    #[serde(default = "default_rise")]
    pub rise: u32,
}

fn default_interval_ms() -> u64 {
    1000
}
fn default_timeout_ms() -> u64 {
    1000
}
fn default_fall() -> u32 {
    2
}
fn default_rise() -> u32 {
    1
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            interval_ms: default_interval_ms(),
            timeout_ms: default_timeout_ms(),
            fall: default_fall(),
            rise: default_rise(),
        }
    }
}

/// The verdict so far for one server: the current health and how many
/// results in a row disagree with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    health: Health,
    against: u32,
}

impl Verdict {
    /// Not checked yet.
    pub fn new() -> Verdict {
        Verdict {
            health: Health::Unknown,
            against: 0,
        }
    }

    /// Takes one check's result; returns the health when it changes. The
    /// first result decides at once (nothing to be steady against).
    pub fn record(&mut self, answered: bool, settings: &HealthSettings) -> Option<Health> {
        let observed = if answered { Health::Up } else { Health::Down };
        if observed == self.health {
            self.against = 0;
            return None;
        }
        self.against += 1;
        let needed = match (self.health, observed) {
            (Health::Unknown, _) => 1,
            (_, Health::Up) => settings.rise.max(1),
            _ => settings.fall.max(1),
        };
        if self.against >= needed {
            self.health = observed;
            self.against = 0;
            return Some(observed);
        }
        None
    }
}

impl Default for Verdict {
    fn default() -> Self {
        Verdict::new()
    }
}

/// Starts one checking task per server; they run until the runtime stops.
pub fn spawn(registry: Arc<Registry>, servers: &[ServerConfig], settings: HealthSettings) {
    for server in servers {
        let registry = Arc::clone(&registry);
        let server = server.clone();
        tokio::spawn(async move { watch(registry, server, settings).await });
    }
}

async fn watch(registry: Arc<Registry>, server: ServerConfig, settings: HealthSettings) {
    let target = match locus_core::phone::resolve_uri(&server.uri, "").await {
        Ok(t) if t.transport == Transport::Tls => {
            tracing::info!(id = %server.id, "TLS server: not health-checked");
            return;
        }
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(id = %server.id, error = %e, "cannot health-check");
            return;
        }
    };
    let Ok(uri) = Uri::parse(&server.uri) else {
        return;
    };
    let interval = Duration::from_millis(settings.interval_ms.max(10));
    let timeout = Duration::from_millis(settings.timeout_ms.max(10));
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut verdict = Verdict::new();
    let mut seed = 0u64;
    loop {
        ticks.tick().await;
        seed += 1;
        let result = check(target.transport, target.addr, &uri, timeout, seed).await;
        if let Err(why) = &result {
            tracing::debug!(id = %server.id, %why, "health check failed");
        }
        if let Some(health) = verdict.record(result.is_ok(), &settings) {
            tracing::info!(id = %server.id, health = health.as_str(), "health changed");
            let _ = registry.set_health(&server.id, health);
        }
    }
}

/// One OPTIONS; `Ok` when any response came back within `timeout`.
pub async fn check(
    transport: Transport,
    addr: SocketAddr,
    uri: &Uri,
    timeout: Duration,
    seed: u64,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let attempt = async {
        match transport {
            Transport::Udp => check_udp(addr, uri, timeout, seed).await,
            Transport::Tcp | Transport::Tls => check_tcp(addr, uri, seed).await,
        }
    };
    tokio::time::timeout_at(deadline, attempt)
        .await
        .map_err(|_| format!("no answer in {timeout:?}"))?
}

async fn check_udp(
    addr: SocketAddr,
    uri: &Uri,
    timeout: Duration,
    seed: u64,
) -> Result<(), String> {
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(|e| format!("{e}"))?;
    let socket = UdpSocket::bind(local).await.map_err(|e| e.to_string())?;
    // Connected, so an ICMP "port unreachable" comes back as an error.
    socket.connect(addr).await.map_err(|e| e.to_string())?;
    let from = socket.local_addr().map_err(|e| e.to_string())?;
    let mut request = options_request(uri, from, Transport::Udp, seed);
    request.headers.push_front(
        "Via",
        format!("SIP/2.0/UDP {from};branch=z9hG4bKhealth{seed:x};rport"),
    );
    let timers = Timers {
        t1: timeout / 64,
        t2: timeout / 4,
        t4: timeout / 4,
    };
    let mut tx = ClientTransaction::new(Instant::now(), &request, Transport::Udp, addr, timers);
    let mut buf = vec![0u8; 65_536];
    loop {
        while let Some(t) = tx.poll_transmit() {
            socket.send(&t.payload).await.map_err(|e| e.to_string())?;
        }
        let wake = tx
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + timeout);
        let outcome = tokio::select! {
            received = socket.recv(&mut buf) => {
                let n = received.map_err(|e| e.to_string())?;
                match message::parse(&buf[..n]) {
                    Ok(Message::Response(r)) => tx.handle_response(Instant::now(), r),
                    _ => None,
                }
            }
            () = tokio::time::sleep_until(wake) => tx.handle_timeout(Instant::now()),
        };
        match outcome {
            Some(ClientOutcome::Response(_)) => return Ok(()),
            Some(ClientOutcome::Failed(f)) => return Err(format!("{f:?}")),
            None => {}
        }
    }
}

async fn check_tcp(addr: SocketAddr, uri: &Uri, seed: u64) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let from = stream.local_addr().map_err(|e| e.to_string())?;
    let mut request = options_request(uri, from, Transport::Tcp, seed);
    request.headers.push_front(
        "Via",
        format!("SIP/2.0/TCP {from};branch=z9hG4bKhealth{seed:x}"),
    );
    stream
        .write_all(&request.to_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut framer = StreamFramer::new(65_536);
    let mut buf = vec![0u8; 16_384];
    loop {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        framer.push(&buf[..n]);
        while let Some(frame) = framer.next_frame().map_err(|e| e.to_string())? {
            if let Frame::Message(Message::Response(_)) = frame {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_needs_fall_failures_and_rise_answers() {
        let s = HealthSettings {
            fall: 2,
            rise: 2,
            ..HealthSettings::default()
        };
        let mut v = Verdict::new();
        assert_eq!(v.record(true, &s), Some(Health::Up));
        assert_eq!(v.record(false, &s), None);
        assert_eq!(v.record(true, &s), None);
        assert_eq!(v.record(false, &s), None);
        assert_eq!(v.record(false, &s), Some(Health::Down));
        assert_eq!(v.record(true, &s), None);
        assert_eq!(v.record(true, &s), Some(Health::Up));
    }

    #[tokio::test]
    async fn a_closed_udp_port_fails_at_once() {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let uri = Uri::parse(&format!("sip:{addr}")).unwrap();
        let started = Instant::now();
        let r = check(Transport::Udp, addr, &uri, Duration::from_secs(5), 1).await;
        assert!(r.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
}
