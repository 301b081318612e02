//! Keeping one contact registered with a registrar (RFC 3261 §10, RFC 5626).
//!
//! The agent builds REGISTER requests (the endpoint adds Via and runs them as
//! transactions) and reacts to what comes back:
//!
//! - 2xx: registered for the granted time; refreshes at a random point
//!   between 80 % and 90 % of it, so a fleet of phones does not refresh in step.
//! - 401/407: answered once with digest credentials. A second challenge that
//!   is not `stale=true` means the credentials are wrong: a final `auth`
//!   failure with no retry, so a wrong password never causes a retry storm.
//! - 423: asks again with the server's Min-Expires.
//! - timeouts, transport errors, 408, 480 and 5xx: retried with exponential
//!   backoff and jitter, honouring Retry-After.
//! - other 3xx-6xx: a final `rejected` failure.
//!
//! Losing the flow to the registrar (a TCP/TLS connection closing) while
//! registered triggers an immediate re-registration: the binding is tied to
//! that flow, so waiting for the next refresh would leave the phone
//! unreachable for most of an expiry period.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::digest::{Challenge, DigestClient, Password};
use super::header::{Contact, NameAddr};
use super::message::{Method, Request, Response};
use super::transaction::ClientFailure;
use super::uri::Uri;

/// Why a registration attempt failed (the CLI's `reason` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// Credentials refused, or a challenge we cannot answer.
    Auth,
    /// No final response in time.
    Timeout,
    /// The registrar answered with an error.
    Rejected,
    /// The registrar could not be reached (refused, connection lost).
    Unreachable,
}

impl FailureReason {
    /// The name used in events: `auth`, `timeout`, `rejected`, `unreachable`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Auth => "auth",
            FailureReason::Timeout => "timeout",
            FailureReason::Rejected => "rejected",
            FailureReason::Unreachable => "unreachable",
        }
    }
}

/// What the agent reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationEvent {
    /// The registrar accepted the binding for `expires` seconds.
    Registered {
        /// Granted lifetime in seconds.
        expires: u32,
    },
    /// An attempt failed; `retry_at` is when the next one happens, `None`
    /// when the failure is final.
    Failed {
        /// Classification.
        reason: FailureReason,
        /// The SIP status, when there was a response.
        status: Option<u16>,
        /// Human-readable detail.
        message: String,
        /// When the agent tries again, if it does.
        retry_at: Option<Instant>,
    },
    /// The binding was removed (or there was none to remove).
    Unregistered,
}

/// Backoff after failed attempts.
///
/// A server that went away during a live migration is back within a few
/// seconds, so for `fast_window` after the first failure the agent retries
/// every `fast` (jittered); only then does it back off exponentially, so a
/// server that stays down is not hammered by its whole fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first failure once the fast window is over.
    pub base: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
    /// Delay between attempts inside the fast window.
    pub fast: Duration,
    /// How long after the first failure the fast retries go on.
    pub fast_window: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(120),
            fast: Duration::from_millis(500),
            fast_window: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `failures + 1`: doubling from `base`, capped
    /// at `max`, scaled by a random factor in [0.5, 1.0] (RFC 5626 §4.5 style
    /// jitter). A Retry-After from the server takes precedence.
    fn delay(
        &self,
        failures: u32,
        failing_for: Duration,
        retry_after: Option<u32>,
        rng: &mut StdRng,
    ) -> Duration {
        if let Some(secs) = retry_after {
            return Duration::from_secs(u64::from(secs)).max(self.fast);
        }
        if failing_for < self.fast_window {
            return self.fast.mul_f64(rng.random_range(0.5..=1.0));
        }
        let exp = failures.saturating_sub(1).min(20);
        let full = self.base.saturating_mul(1u32 << exp).min(self.max);
        full.mul_f64(rng.random_range(0.5..=1.0))
    }
}

/// Everything the agent needs to know about the account and this device.
#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    /// Address of record, `sip:alice@example.test`.
    pub aor: Uri,
    /// Request-URI of REGISTER, `sip:example.test`.
    pub registrar: Uri,
    /// Where this device is reached.
    pub contact: Uri,
    /// `urn:uuid:…` kept per account across runs (RFC 5626 §4.1).
    pub instance_id: String,
    /// RFC 5626 reg-id of this flow.
    pub reg_id: u32,
    /// Requested lifetime in seconds.
    pub expires: u32,
    /// Authentication user name.
    pub username: String,
    /// Password.
    pub password: Password,
    /// User-Agent header value.
    pub user_agent: String,
    /// Backoff after failures.
    pub retry: RetryPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Registering,
    Registered,
    WaitingRetry,
    Unregistering,
    Failed,
}

/// The registration agent (sans-IO).
#[derive(Debug)]
pub struct Registration {
    config: RegistrationConfig,
    rng: StdRng,
    call_id: String,
    from_tag: String,
    cseq: u32,
    digest: DigestClient,
    challenge: Option<(Challenge, bool)>,
    /// Whether the request in flight carried credentials for a fresh challenge.
    answered_challenge: bool,
    expires: u32,
    state: State,
    wake_at: Option<Instant>,
    registered_until: Option<Instant>,
    failures: u32,
    /// When the current run of failures began.
    failing_since: Option<Instant>,
    unregister_pending: bool,
    requests: VecDeque<Request>,
    events: VecDeque<RegistrationEvent>,
}

impl Registration {
    /// A new agent; `seed` makes its randomness (tags, jitter) reproducible.
    pub fn new(config: RegistrationConfig, seed: u64) -> Registration {
        let mut rng = StdRng::seed_from_u64(seed);
        let call_id = format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>());
        let from_tag = format!("{:08x}", rng.random::<u32>());
        Registration {
            expires: config.expires,
            config,
            rng,
            call_id,
            from_tag,
            cseq: 0,
            digest: DigestClient::default(),
            challenge: None,
            answered_challenge: false,
            state: State::Idle,
            wake_at: None,
            registered_until: None,
            failures: 0,
            failing_since: None,
            unregister_pending: false,
            requests: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Whether a binding is currently believed to exist.
    pub fn is_registered(&self) -> bool {
        self.state == State::Registered
    }

    /// Whether an unregistration is in flight.
    pub fn is_unregistering(&self) -> bool {
        self.state == State::Unregistering
            || (self.state == State::Registering && self.unregister_pending)
    }

    /// Starts (or restarts after a final failure) registering.
    pub fn start(&mut self) {
        match self.state {
            State::Idle | State::Failed | State::WaitingRetry => {
                self.failures = 0;
                self.failing_since = None;
                self.unregister_pending = false;
                self.send_register(false);
            }
            State::Unregistering => self.unregister_pending = false,
            State::Registering | State::Registered => {}
        }
    }

    /// Removes the binding (REGISTER with Expires: 0).
    pub fn stop(&mut self, now: Instant) {
        match self.state {
            State::Registered => self.send_register(true),
            State::Registering => self.unregister_pending = true,
            State::WaitingRetry if self.registered_until.is_some_and(|t| t > now) => {
                self.send_register(true)
            }
            State::Idle | State::Failed | State::WaitingRetry => {
                self.state = State::Idle;
                self.wake_at = None;
                self.events.push_back(RegistrationEvent::Unregistered);
            }
            State::Unregistering => {}
        }
    }

    /// The flow the binding used has gone: register again at once.
    pub fn handle_flow_lost(&mut self) {
        if matches!(self.state, State::Registered | State::WaitingRetry) {
            self.registered_until = None;
            self.send_register(false);
        }
    }

    /// Registers again now rather than at the refresh time or the next
    /// retry: the server may have lost our binding (it came back from
    /// being down), or our address changed.
    pub fn refresh(&mut self) {
        if matches!(self.state, State::Registered | State::WaitingRetry) {
            self.send_register(false);
        }
    }

    /// Whether the agent has nothing left to do (never started, removed,
    /// or failed for good).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle | State::Failed)
    }

    /// A response to the REGISTER in flight.
    pub fn handle_response(&mut self, now: Instant, response: &Response) {
        if response.status < 200 {
            return;
        }
        let current = response
            .headers
            .cseq()
            .map(|c| c.seq == self.cseq)
            .unwrap_or(false);
        if !current || !matches!(self.state, State::Registering | State::Unregistering) {
            return;
        }
        let unregistering = self.state == State::Unregistering;
        match response.status {
            200..=299 if unregistering => self.finish_unregister(),
            200..=299 => self.registered(now, response),
            401 | 407 => self.challenged(now, response, unregistering),
            423 => match response.headers.seconds("Min-Expires") {
                Some(min) if min > self.expires && !unregistering => {
                    self.expires = min;
                    self.send_register(false);
                }
                _ => self.fail(
                    now,
                    FailureReason::Rejected,
                    Some(response),
                    "423 without a usable Min-Expires",
                    false,
                ),
            },
            408 => self.fail(
                now,
                FailureReason::Timeout,
                Some(response),
                "registrar timed out",
                true,
            ),
            480 | 500..=599 => self.fail(
                now,
                FailureReason::Rejected,
                Some(response),
                "registrar temporarily unavailable",
                true,
            ),
            _ => self.fail(
                now,
                FailureReason::Rejected,
                Some(response),
                "registration refused",
                false,
            ),
        }
    }

    /// The REGISTER in flight got no final response.
    pub fn handle_failure(&mut self, now: Instant, failure: &ClientFailure) {
        if !matches!(self.state, State::Registering | State::Unregistering) {
            return;
        }
        match failure {
            ClientFailure::Timeout => self.fail(
                now,
                FailureReason::Timeout,
                None,
                "no response from registrar",
                true,
            ),
            ClientFailure::Transport(why) => {
                let message = format!("registrar unreachable: {why}");
                self.fail(now, FailureReason::Unreachable, None, &message, true);
            }
        }
    }

    /// Refreshes or retries when their time has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.wake_at.is_some_and(|t| now >= t) {
            self.wake_at = None;
            if matches!(self.state, State::Registered | State::WaitingRetry) {
                self.send_register(false);
            }
        }
    }

    /// When to call [`Self::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wake_at
    }

    /// The next REGISTER to send (without Via).
    pub fn poll_request(&mut self) -> Option<Request> {
        self.requests.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<RegistrationEvent> {
        self.events.pop_front()
    }

    fn registered(&mut self, now: Instant, response: &Response) {
        let granted = self.granted_expires(response).unwrap_or(self.expires);
        if granted == 0 {
            self.fail(
                now,
                FailureReason::Rejected,
                Some(response),
                "registrar granted no lifetime",
                false,
            );
            return;
        }
        self.state = State::Registered;
        self.failures = 0;
        self.failing_since = None;
        self.registered_until = Some(now + Duration::from_secs(u64::from(granted)));
        let refresh =
            Duration::from_secs(u64::from(granted)).mul_f64(self.rng.random_range(0.8..0.9));
        self.wake_at = Some(now + refresh);
        self.events
            .push_back(RegistrationEvent::Registered { expires: granted });
        if std::mem::take(&mut self.unregister_pending) {
            self.send_register(true);
        }
    }

    /// Our binding's lifetime from a 2xx: the `expires` parameter of the
    /// Contact with our instance id (or URI), else the Expires header.
    fn granted_expires(&self, response: &Response) -> Option<u32> {
        let ours = |addr: &NameAddr| {
            addr.params.get("+sip.instance") == Some(self.instance_param().as_str())
                || (addr.uri.host == self.config.contact.host
                    && addr.uri.port == self.config.contact.port
                    && addr.uri.user == self.config.contact.user)
        };
        let contacts = response.headers.contacts().unwrap_or_default();
        contacts
            .iter()
            .filter_map(|c| match c {
                Contact::Address(a) if ours(a) => {
                    a.params.get("expires").and_then(|e| e.parse().ok())
                }
                _ => None,
            })
            .max()
            .or_else(|| response.headers.seconds("Expires"))
    }

    fn challenged(&mut self, now: Instant, response: &Response, unregistering: bool) {
        let proxy = response.status == 407;
        let header = if proxy {
            "Proxy-Authenticate"
        } else {
            "WWW-Authenticate"
        };
        let challenge = match Challenge::choose(response.headers.get_all(header)) {
            Ok(c) => c,
            Err(e) => {
                let message = format!("cannot answer challenge: {e}");
                self.fail(now, FailureReason::Auth, Some(response), &message, false);
                return;
            }
        };
        if self.answered_challenge && !challenge.stale {
            self.fail(
                now,
                FailureReason::Auth,
                Some(response),
                "credentials rejected",
                false,
            );
            return;
        }
        self.challenge = Some((challenge, proxy));
        self.send_register(unregistering);
        self.answered_challenge = true;
    }

    fn fail(
        &mut self,
        now: Instant,
        reason: FailureReason,
        response: Option<&Response>,
        message: &str,
        retry: bool,
    ) {
        let status = response.map(|r| r.status);
        let message = match response {
            Some(r) => format!("{message} ({} {})", r.status, r.reason),
            None => message.to_owned(),
        };
        self.answered_challenge = false;
        if self.state == State::Unregistering {
            self.state = State::Idle;
            self.wake_at = None;
            self.registered_until = None;
            self.events.push_back(RegistrationEvent::Failed {
                reason,
                status,
                message,
                retry_at: None,
            });
            return;
        }
        let retry_at = retry.then(|| {
            let since = *self.failing_since.get_or_insert(now);
            if now.duration_since(since) >= self.config.retry.fast_window {
                self.failures += 1;
            }
            let retry_after = response.and_then(|r| r.headers.seconds("Retry-After"));
            now + self.config.retry.delay(
                self.failures,
                now.duration_since(since),
                retry_after,
                &mut self.rng,
            )
        });
        self.state = if retry_at.is_some() {
            State::WaitingRetry
        } else {
            State::Failed
        };
        self.wake_at = retry_at;
        self.events.push_back(RegistrationEvent::Failed {
            reason,
            status,
            message,
            retry_at,
        });
        if retry_at.is_none() && std::mem::take(&mut self.unregister_pending) {
            self.state = State::Idle;
            self.events.push_back(RegistrationEvent::Unregistered);
        }
    }

    fn finish_unregister(&mut self) {
        self.state = State::Idle;
        self.wake_at = None;
        self.registered_until = None;
        self.answered_challenge = false;
        self.events.push_back(RegistrationEvent::Unregistered);
    }

    fn instance_param(&self) -> String {
        format!("<{}>", self.config.instance_id)
    }

    /// Queues a REGISTER. Each request may be challenged once; `challenged`
    /// marks the answer to a challenge after calling this.
    fn send_register(&mut self, unregister: bool) {
        self.answered_challenge = false;
        self.state = if unregister {
            State::Unregistering
        } else {
            State::Registering
        };
        self.wake_at = None;
        self.cseq += 1;
        let c = &self.config;
        let mut req = Request::out_of_dialog(
            Method::Register,
            c.registrar.clone(),
            (&c.aor, &self.from_tag),
            &c.aor,
            &self.call_id,
            self.cseq,
        );
        let h = &mut req.headers;
        h.push(
            "Contact",
            format!(
                "<{}>;+sip.instance=\"<{}>\";reg-id={}",
                c.contact, c.instance_id, c.reg_id
            ),
        );
        h.push(
            "Expires",
            if unregister { 0 } else { self.expires }.to_string(),
        );
        h.push("Supported", "path, outbound");
        h.push("Allow", "OPTIONS");
        h.push("User-Agent", c.user_agent.clone());
        if let Some((challenge, proxy)) = &self.challenge {
            let cnonce = format!("{:016x}", self.rng.random::<u64>());
            let value = self.digest.authorize(
                challenge,
                &c.username,
                &c.password,
                "REGISTER",
                &c.registrar.to_string(),
                &cnonce,
            );
            h.push(
                if *proxy {
                    "Proxy-Authorization"
                } else {
                    "Authorization"
                },
                value,
            );
        }
        self.requests.push_back(req);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{parse, Message};

    fn config() -> RegistrationConfig {
        RegistrationConfig {
            aor: Uri::parse("sip:alice@example.test").unwrap(),
            registrar: Uri::parse("sip:example.test").unwrap(),
            contact: Uri::parse("sip:alice@127.0.0.1:5070;transport=tcp").unwrap(),
            instance_id: "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6".into(),
            reg_id: 1,
            expires: 600,
            username: "alice".into(),
            password: Password::new("secret"),
            user_agent: "Locus-test".into(),
            retry: RetryPolicy::default(),
        }
    }

    /// A response to `req` built the way a registrar writes one.
    fn reply(req: &Request, status: u16, extra: &[(&str, &str)]) -> Response {
        let mut text = format!(
            "SIP/2.0 {status} X\r\nVia: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bKx\r\nCall-ID: {}\r\nCSeq: {}\r\n",
            req.headers.call_id().unwrap_or_default(),
            req.headers.get("CSeq").unwrap_or_default()
        );
        for (k, v) in extra {
            text.push_str(&format!("{k}: {v}\r\n"));
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        match parse(text.as_bytes()) {
            Ok(Message::Response(r)) => r,
            other => panic!("test response did not parse: {other:?}"),
        }
    }

    fn next(reg: &mut Registration) -> Request {
        reg.poll_request()
            .unwrap_or_else(|| panic!("expected a REGISTER"))
    }

    fn events(reg: &mut Registration) -> Vec<RegistrationEvent> {
        std::iter::from_fn(|| reg.poll_event()).collect()
    }

    const OK_CONTACT: &str = "<sip:alice@127.0.0.1:5070;transport=tcp>;expires=300;+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\";reg-id=1, <sip:alice@10.0.0.9>;expires=3600";

    #[test]
    fn registers_with_instance_id_and_refreshes_at_80_to_90_percent() {
        let t0 = Instant::now();
        let mut reg = Registration::new(config(), 1);
        reg.start();
        let req = next(&mut reg);
        let contact = req.headers.get("Contact").unwrap_or_default();
        assert!(
            contact.contains("+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\""),
            "{contact}"
        );
        assert!(contact.contains("reg-id=1"));
        assert_eq!(req.headers.get("Expires"), Some("600"));
        reg.handle_response(t0, &reply(&req, 200, &[("Contact", OK_CONTACT)]));
        assert_eq!(
            events(&mut reg),
            [RegistrationEvent::Registered { expires: 300 }]
        );
        let wake = reg.poll_timeout().unwrap_or(t0) - t0;
        assert!(
            wake >= Duration::from_secs(240) && wake < Duration::from_secs(270),
            "{wake:?}"
        );
        reg.handle_timeout(t0 + wake);
        let refresh = next(&mut reg);
        assert_eq!(
            refresh.headers.call_id().ok(),
            req.headers.call_id().ok(),
            "same Call-ID"
        );
        assert_eq!(refresh.headers.cseq().map(|c| c.seq).ok(), Some(2));
    }

    #[test]
    fn answers_a_challenge_once_then_fails_for_good_on_wrong_password() {
        let t0 = Instant::now();
        let mut reg = Registration::new(config(), 2);
        reg.start();
        let first = next(&mut reg);
        let challenge = [(
            "WWW-Authenticate",
            "Digest realm=\"example.test\", nonce=\"n1\", qop=\"auth\"",
        )];
        reg.handle_response(t0, &reply(&first, 401, &challenge));
        let second = next(&mut reg);
        let auth = second.headers.get("Authorization").unwrap_or_default();
        assert!(
            auth.contains("nc=00000001") && auth.contains("username=\"alice\""),
            "{auth}"
        );
        assert!(!auth.contains("secret"), "password never on the wire");
        reg.handle_response(
            t0,
            &reply(
                &second,
                401,
                &[(
                    "WWW-Authenticate",
                    "Digest realm=\"example.test\", nonce=\"n2\"",
                )],
            ),
        );
        let evs = events(&mut reg);
        assert!(
            matches!(
                &evs[..],
                [RegistrationEvent::Failed {
                    reason: FailureReason::Auth,
                    status: Some(401),
                    retry_at: None,
                    ..
                }]
            ),
            "{evs:?}"
        );
        assert!(reg.poll_request().is_none(), "no retry storm");
        assert_eq!(reg.poll_timeout(), None);
    }

    #[test]
    fn proxy_challenge_is_answered_with_proxy_authorization() {
        let t0 = Instant::now();
        let mut reg = Registration::new(config(), 12);
        reg.start();
        let r1 = next(&mut reg);
        let challenge = [(
            "Proxy-Authenticate",
            "Digest realm=\"proxy.test\", nonce=\"p1\", qop=\"auth\", opaque=\"o\"",
        )];
        reg.handle_response(t0, &reply(&r1, 407, &challenge));
        let r2 = next(&mut reg);
        assert!(r2.headers.get("Authorization").is_none());
        let auth = r2.headers.get("Proxy-Authorization").unwrap();
        assert!(
            auth.contains("realm=\"proxy.test\"") && auth.contains("opaque=\"o\""),
            "{auth}"
        );
        reg.handle_response(t0, &reply(&r2, 200, &[("Expires", "60")]));
        assert_eq!(
            events(&mut reg),
            [RegistrationEvent::Registered { expires: 60 }]
        );
    }

    #[test]
    fn stale_nonce_is_retried_without_counting_as_failure() {
        let t0 = Instant::now();
        let mut reg = Registration::new(config(), 3);
        reg.start();
        let r1 = next(&mut reg);
        reg.handle_response(
            t0,
            &reply(
                &r1,
                401,
                &[(
                    "WWW-Authenticate",
                    "Digest realm=\"r\", nonce=\"n1\", qop=auth",
                )],
            ),
        );
        let r2 = next(&mut reg);
        reg.handle_response(
            t0,
            &reply(
                &r2,
                401,
                &[(
                    "WWW-Authenticate",
                    "Digest realm=\"r\", nonce=\"n2\", qop=auth, stale=true",
                )],
            ),
        );
        let r3 = next(&mut reg);
        assert!(r3
            .headers
            .get("Authorization")
            .unwrap_or_default()
            .contains("nonce=\"n2\""));
        reg.handle_response(t0, &reply(&r3, 200, &[("Expires", "120")]));
        assert_eq!(
            events(&mut reg),
            [RegistrationEvent::Registered { expires: 120 }]
        );
    }

    #[test]
    fn interval_too_brief_uses_min_expires() {
        let t0 = Instant::now();
        let mut reg = Registration::new(config(), 4);
        reg.start();
        let r1 = next(&mut reg);
        reg.handle_response(t0, &reply(&r1, 423, &[("Min-Expires", "1800")]));
        let r2 = next(&mut reg);
        assert_eq!(r2.headers.get("Expires"), Some("1800"));
        reg.handle_response(t0, &reply(&r2, 423, &[("Min-Expires", "1800")]));
        assert!(matches!(
            &events(&mut reg)[..],
            [RegistrationEvent::Failed {
                reason: FailureReason::Rejected,
                retry_at: None,
                ..
            }]
        ));
    }

    #[test]
    fn timeouts_back_off_exponentially_with_jitter() {
        let t0 = Instant::now();
        let mut reg = Registration::new(config(), 5);
        reg.start();
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..50 {
            next(&mut reg);
            reg.handle_failure(now, &ClientFailure::Timeout);
            let Some(RegistrationEvent::Failed {
                reason: FailureReason::Timeout,
                retry_at: Some(at),
                ..
            }) = reg.poll_event()
            else {
                panic!("expected a timeout failure with a retry");
            };
            delays.push((now - t0, at - now));
            now = at;
            reg.handle_timeout(now);
        }
        // Fast retries while a migrating server may come back, then
        // exponential backoff from the base.
        let fast: Vec<_> = delays
            .iter()
            .take_while(|(t, _)| t.as_secs() < 10)
            .collect();
        assert!(fast.len() >= 20, "{}", fast.len());
        for (_, d) in &fast {
            assert!(
                *d >= Duration::from_millis(250) && *d <= Duration::from_millis(500),
                "{d:?}"
            );
        }
        for (i, (_, d)) in delays[fast.len()..].iter().enumerate() {
            let full = Duration::from_secs(1 << i.min(20)).min(Duration::from_secs(120));
            assert!(
                *d >= full / 2 && *d <= full,
                "attempt {i}: {d:?} not within [{:?}, {full:?}]",
                full / 2
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_on_503() {
        let t0 = Instant::now();
        let mut reg = Registration::new(config(), 6);
        reg.start();
        let r1 = next(&mut reg);
        reg.handle_response(t0, &reply(&r1, 503, &[("Retry-After", "30")]));
        assert!(matches!(
            reg.poll_event(),
            Some(RegistrationEvent::Failed { reason: FailureReason::Rejected, status: Some(503), retry_at: Some(at), .. }) if at == t0 + Duration::from_secs(30)
        ));
    }

    #[test]
    fn forbidden_is_final() {
        let t0 = Instant::now();
        let mut reg = Registration::new(config(), 7);
        reg.start();
        let r1 = next(&mut reg);
        reg.handle_response(t0, &reply(&r1, 403, &[]));
        assert!(matches!(
            reg.poll_event(),
            Some(RegistrationEvent::Failed {
                retry_at: None,
                status: Some(403),
                ..
            })
        ));
        assert_eq!(reg.poll_timeout(), None);
    }

    #[test]
    fn unregister_sends_expires_zero_and_reports() {
        let t0 = Instant::now();
        let mut reg = Registration::new(config(), 8);
        reg.start();
        let r1 = next(&mut reg);
        reg.handle_response(t0, &reply(&r1, 200, &[("Expires", "60")]));
        reg.stop(t0);
        let r2 = next(&mut reg);
        assert_eq!(r2.headers.get("Expires"), Some("0"));
        reg.handle_response(t0, &reply(&r2, 200, &[]));
        assert_eq!(
            events(&mut reg),
            [
                RegistrationEvent::Registered { expires: 60 },
                RegistrationEvent::Unregistered
            ]
        );
        assert_eq!(reg.poll_timeout(), None);
    }

    #[test]
    fn unregister_while_registering_waits_for_the_answer() {
        let t0 = Instant::now();
        let mut reg = Registration::new(config(), 9);
        reg.start();
        let r1 = next(&mut reg);
        reg.stop(t0);
        assert!(reg.poll_request().is_none());
        reg.handle_response(t0, &reply(&r1, 200, &[("Expires", "60")]));
        let r2 = next(&mut reg);
        assert_eq!(r2.headers.get("Expires"), Some("0"));
    }

    #[test]
    fn flow_loss_while_registered_reregisters_at_once() {
        let t0 = Instant::now();
        let mut reg = Registration::new(config(), 10);
        reg.start();
        let r1 = next(&mut reg);
        reg.handle_response(t0, &reply(&r1, 200, &[("Expires", "600")]));
        events(&mut reg);
        reg.handle_flow_lost();
        assert!(reg.poll_request().is_some());
    }

    #[test]
    fn stray_and_provisional_responses_are_ignored() {
        let t0 = Instant::now();
        let mut reg = Registration::new(config(), 11);
        reg.start();
        let r1 = next(&mut reg);
        reg.handle_response(t0, &reply(&r1, 100, &[]));
        let mut old = r1.clone();
        old.headers.set("CSeq", "99 REGISTER");
        reg.handle_response(t0, &reply(&old, 200, &[]));
        assert!(reg.poll_event().is_none());
        assert!(!reg.is_registered());
    }
}
