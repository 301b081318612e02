//! Keepalives towards the registrar (RFC 5626 §4.4): a CRLF ping on
//! TCP/TLS answered by a CRLF pong, an OPTIONS on UDP answered by any
//! response. A pong that does not come back in time means the server (or
//! the path to it) is gone, which a paused or moved server gives no other
//! sign of.
//!
//! Also the OPTIONS request itself, which the discovery service's health
//! checks send too.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::message::{Method, Request};
use super::uri::Uri;
use super::Transport;

/// The CRLF ping of RFC 5626 §3.5.1.
pub const PING: &[u8] = b"\r\n\r\n";

/// What the keepalive wants done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepaliveAction {
    /// Send a ping (CRLF on a stream, OPTIONS on UDP).
    Ping,
    /// No pong in time: the server is unreachable.
    Lost,
}

/// Pings at an interval (randomised between 80 % and 100 % of it, as
/// RFC 5626 §4.4.1 asks) and waits `timeout` for each pong.
#[derive(Debug)]
pub struct Keepalive {
    interval: Duration,
    timeout: Duration,
    next_ping: Option<Instant>,
    pong_due: Option<Instant>,
}

impl Keepalive {
    /// A stopped keepalive.
    pub fn new(interval: Duration, timeout: Duration) -> Keepalive {
        Keepalive {
            interval,
            timeout,
            next_ping: None,
            pong_due: None,
        }
    }

    /// Starts (or restarts) pinging; `jitter` in [0, 1] picks the point in
    /// the interval's last fifth.
    pub fn start(&mut self, now: Instant, jitter: f64) {
        self.pong_due = None;
        self.next_ping = Some(now + self.interval.mul_f64(1.0 - 0.2 * jitter.clamp(0.0, 1.0)));
    }

    /// Stops pinging (unregistered, or moving to another server).
    pub fn stop(&mut self) {
        self.next_ping = None;
        self.pong_due = None;
    }

    /// Whether pings are being sent.
    pub fn is_running(&self) -> bool {
        self.next_ping.is_some() || self.pong_due.is_some()
    }

    /// Anything from the server proves it alive.
    pub fn handle_pong(&mut self) {
        self.pong_due = None;
    }

    /// What is due at `now`, if anything.
    pub fn handle_timeout(&mut self, now: Instant, jitter: f64) -> Option<KeepaliveAction> {
        if self.pong_due.is_some_and(|t| now >= t) {
            self.stop();
            return Some(KeepaliveAction::Lost);
        }
        if self.next_ping.is_some_and(|t| now >= t) {
            self.start(now, jitter);
            // An unanswered earlier ping keeps its own deadline.
            self.pong_due.get_or_insert(now + self.timeout);
            return Some(KeepaliveAction::Ping);
        }
        None
    }

    /// When [`Self::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_ping.into_iter().chain(self.pong_due).min()
    }
}

/// An OPTIONS to `target` from `local` (without Via, which the transaction
/// layer adds), for keepalives and health checks.
pub fn options_request(
    target: &Uri,
    local: SocketAddr,
    transport: Transport,
    seed: u64,
) -> Request {
    let mut request = Request::new(Method::Options, target.clone());
    let host = match local {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    request.headers.push("Max-Forwards", "70");
    request
        .headers
        .push("From", format!("<sip:ping@{host}>;tag={seed:016x}"));
    request.headers.push("To", format!("<{target}>"));
    request.headers.push(
        "Call-ID",
        format!("{seed:016x}-{}@{host}", transport.param()),
    );
    request.headers.push("CSeq", "1 OPTIONS");
    request.headers.push("Content-Length", "0");
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_at_the_interval_and_loses_after_the_timeout() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(Duration::from_secs(30), Duration::from_secs(3));
        assert_eq!(k.poll_timeout(), None);
        k.start(t0, 0.0);
        let first = k.poll_timeout().unwrap();
        assert_eq!(first - t0, Duration::from_secs(30));
        assert_eq!(k.handle_timeout(first, 1.0), Some(KeepaliveAction::Ping));
        k.handle_pong();
        // The next ping somewhere in the last fifth of the interval.
        let second = k.poll_timeout().unwrap();
        assert_eq!(second - first, Duration::from_secs(24));
        assert_eq!(k.handle_timeout(second, 0.5), Some(KeepaliveAction::Ping));
        assert_eq!(k.poll_timeout(), Some(second + Duration::from_secs(3)));
        assert_eq!(k.handle_timeout(second + Duration::from_secs(2), 0.5), None);
        assert_eq!(
            k.handle_timeout(second + Duration::from_secs(3), 0.5),
            Some(KeepaliveAction::Lost)
        );
        assert!(!k.is_running());
    }

    #[test]
    fn options_is_a_complete_request() {
        let target = Uri::parse("sip:127.0.0.2:5060").unwrap();
        let r = options_request(
            &target,
            "127.0.0.1:5070".parse().unwrap(),
            Transport::Udp,
            9,
        );
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(
            text.starts_with("OPTIONS sip:127.0.0.2:5060 SIP/2.0\r\n"),
            "{text}"
        );
        assert!(text.contains("CSeq: 1 OPTIONS\r\n") && text.contains("To: <sip:127.0.0.2:5060>"));
    }
}
