//! Watching someone's state with SUBSCRIBE/NOTIFY (RFC 6665; presence:
//! RFC 3856). One agent per watched address: it subscribes, refreshes at
//! 80-90 % of the granted time within the dialog, takes the notifier's
//! NOTIFYs (active, pending, terminated, each with a document or none),
//! subscribes afresh when the server forgot the dialog (481) or ended the
//! subscription with a reason that allows it, and gives up on 489 (the
//! server does not know the event package). Sans-IO.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::auth::Authenticator;
use super::call::Body;
use super::dialog::Dialog;
use super::digest::Password;
use super::header::NameAddr;
use super::message::{Method, Request, Response};
use super::transaction::ClientFailure;
use super::uri::Uri;

/// The longest wait before subscribing again after a failure.
const RETRY: Duration = Duration::from_secs(5);

/// Whom to watch, for which package, and as whom.
#[derive(Debug, Clone)]
pub struct SubscriptionConfig {
    /// Our address of record (From).
    pub local: Uri,
    /// Where NOTIFYs reach us (Contact).
    pub contact: Uri,
    /// The watched address of record.
    pub target: Uri,
    /// The event package, `presence`.
    pub event: String,
    /// What documents we take.
    pub accept: String,
    /// Requested lifetime in seconds.
    pub expires: u32,
    /// Authentication user name.
    pub username: String,
    /// Password.
    pub password: Password,
    /// User-Agent header value.
    pub user_agent: String,
}

/// Where the subscription stands, as the last NOTIFY said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionState {
    /// Authorised: documents follow.
    Active,
    /// Waiting for the watched person to allow us.
    Pending,
    /// Over, with the notifier's reason.
    Terminated(Option<String>),
}

/// What the agent reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionEvent {
    /// A NOTIFY: the state, and the document when it had one.
    Notified {
        /// The subscription's state.
        state: SubscriptionState,
        /// The watched state (a PIDF document for presence).
        body: Option<Body>,
    },
    /// A SUBSCRIBE failed; with `will_retry` the agent subscribes again.
    Failed {
        /// The SIP status, when there was a response.
        status: Option<u16>,
        /// Why.
        message: String,
        /// Whether it tries again.
        will_retry: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Subscribing,
    Subscribed,
    WaitingRetry,
    Unsubscribing,
}

/// One subscription (sans-IO).
#[derive(Debug)]
pub struct Subscription {
    config: SubscriptionConfig,
    rng: StdRng,
    call_id: String,
    from_tag: String,
    cseq: u32,
    auth: Authenticator,
    answered_challenge: bool,
    expires: u32,
    dialog: Option<Dialog>,
    state: State,
    in_flight: Option<Request>,
    wake_at: Option<Instant>,
    requests: VecDeque<Request>,
    responses: VecDeque<Response>,
    events: VecDeque<SubscriptionEvent>,
}

impl Subscription {
    /// An idle subscription; `seed` makes its tags reproducible.
    pub fn new(config: SubscriptionConfig, seed: u64) -> Subscription {
        let rng = StdRng::seed_from_u64(seed);
        let mut s = Subscription {
            expires: config.expires,
            auth: Authenticator::new(config.username.clone(), config.password.clone()),
            config,
            rng,
            call_id: String::new(),
            from_tag: String::new(),
            cseq: 0,
            answered_challenge: false,
            dialog: None,
            state: State::Idle,
            in_flight: None,
            wake_at: None,
            requests: VecDeque::new(),
            responses: VecDeque::new(),
            events: VecDeque::new(),
        };
        s.new_identity();
        s
    }

    /// Subscribes (again, from scratch: a new dialog).
    pub fn start(&mut self) {
        self.new_identity();
        self.dialog = None;
        self.send_initial();
    }

    /// Subscribes afresh with `contact` (we moved to another server).
    pub fn restart(&mut self, contact: Uri) {
        self.config.contact = contact;
        if self.state != State::Idle && self.state != State::Unsubscribing {
            self.start();
        }
    }

    /// Ends the subscription (SUBSCRIBE with Expires: 0).
    pub fn stop(&mut self) {
        match (&mut self.dialog, self.state) {
            (Some(dialog), State::Subscribed | State::Subscribing) => {
                let mut request = dialog.request(Method::Subscribe);
                self.decorate(&mut request, 0);
                self.state = State::Unsubscribing;
                self.cseq = request.headers.cseq().map_or(self.cseq, |c| c.seq);
                self.queue(request);
            }
            _ => {
                self.state = State::Idle;
                self.wake_at = None;
            }
        }
    }

    /// Whether an unsubscription is in flight.
    pub fn is_ending(&self) -> bool {
        self.state == State::Unsubscribing
    }

    /// Whether `request` (a NOTIFY) belongs to this subscription: its
    /// Call-ID and our tag, and the notifier's tag once we know it.
    pub fn matches(&self, request: &Request) -> bool {
        if let Some(dialog) = &self.dialog {
            return dialog.matches(request);
        }
        let (Ok(call_id), Ok(to)) = (request.headers.call_id(), request.headers.to()) else {
            return false;
        };
        call_id == self.call_id && to.tag() == Some(self.from_tag.as_str())
    }

    /// A NOTIFY for this subscription; the answer is in
    /// [`Self::poll_response`].
    pub fn handle_notify(&mut self, now: Instant, notify: &Request) {
        let header = notify.headers.get("Subscription-State").unwrap_or("");
        let mut fields = header.split(';').map(str::trim);
        let value = fields.next().unwrap_or("").to_ascii_lowercase();
        let param = |name: &str| {
            header
                .split(';')
                .skip(1)
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
        };
        let state = match value.as_str() {
            "active" => SubscriptionState::Active,
            "pending" => SubscriptionState::Pending,
            "terminated" => SubscriptionState::Terminated(param("reason")),
            _ => {
                self.responses
                    .push_back(notify.response(400, "Bad Subscription-State"));
                return;
            }
        };
        if let Some(dialog) = &mut self.dialog {
            if dialog.handle_remote_request(notify).is_err() {
                self.responses
                    .push_back(notify.response(500, "Request Out Of Order"));
                return;
            }
        }
        self.responses.push_back(notify.response(200, "OK"));
        let body = (!notify.body.is_empty()).then(|| Body {
            content_type: notify
                .headers
                .get("Content-Type")
                .unwrap_or("application/octet-stream")
                .to_owned(),
            bytes: notify.body.clone(),
        });
        if let SubscriptionState::Terminated(reason) = &state {
            // RFC 6665 §4.1.3: these reasons invite a new subscription.
            let again = matches!(
                reason.as_deref(),
                None | Some("deactivated" | "timeout" | "probation")
            );
            self.dialog = None;
            if self.state == State::Unsubscribing || !again {
                self.state = State::Idle;
                self.wake_at = None;
            } else {
                let retry_after = param("retry-after").and_then(|s| s.parse::<u64>().ok());
                self.state = State::WaitingRetry;
                self.wake_at = Some(now + retry_after.map_or(Duration::ZERO, Duration::from_secs));
            }
        } else if let Some(expires) = param("expires").and_then(|s| s.parse::<u32>().ok()) {
            // The notifier may shorten the subscription.
            if self.state == State::Subscribed && expires > 0 {
                self.schedule_refresh(now, expires);
            }
        }
        self.events
            .push_back(SubscriptionEvent::Notified { state, body });
    }

    /// A response to our SUBSCRIBE.
    pub fn handle_response(&mut self, now: Instant, response: &Response) {
        if response.status < 200 {
            return;
        }
        let current = response.headers.cseq().is_ok_and(|c| c.seq == self.cseq);
        let busy = matches!(self.state, State::Subscribing | State::Unsubscribing);
        if !current || !busy {
            return;
        }
        if self.state == State::Unsubscribing {
            self.state = State::Idle;
            self.wake_at = None;
            return;
        }
        match response.status {
            200..=299 => {
                if self.dialog.is_none() {
                    if let Some(request) = &self.in_flight {
                        self.dialog = Dialog::from_uac(request, response).ok();
                    }
                }
                self.state = State::Subscribed;
                self.answered_challenge = false;
                let granted = response.headers.seconds("Expires").unwrap_or(self.expires);
                self.schedule_refresh(now, granted.max(1));
            }
            401 | 407 if !self.answered_challenge => self.answer(response),
            // The notifier forgot the dialog: a new subscription.
            481 => self.start(),
            423 => match response.headers.seconds("Min-Expires") {
                Some(min) if min > self.expires => {
                    self.expires = min;
                    self.start();
                }
                _ => self.fail(now, Some(423), "423 without a usable Min-Expires", false),
            },
            489 => self.fail(
                now,
                Some(489),
                "the server does not know this event package",
                false,
            ),
            status => {
                let transient = response.is_transient_failure();
                self.fail(now, Some(status), &response.summary(), transient);
            }
        }
    }

    /// Our SUBSCRIBE got no final response.
    pub fn handle_failure(&mut self, now: Instant, failure: &ClientFailure) {
        match self.state {
            State::Subscribing => self.fail(now, None, &format!("{failure:?}"), true),
            State::Unsubscribing => self.state = State::Idle,
            State::Idle | State::Subscribed | State::WaitingRetry => {}
        }
    }

    /// Refreshes or retries when their time has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.wake_at.is_none_or(|t| now < t) {
            return;
        }
        self.wake_at = None;
        match (self.state, &mut self.dialog) {
            (State::Subscribed, Some(dialog)) => {
                let mut request = dialog.request(Method::Subscribe);
                self.decorate(&mut request, self.expires);
                self.cseq = request.headers.cseq().map_or(self.cseq, |c| c.seq);
                self.state = State::Subscribing;
                self.queue(request);
            }
            (State::Subscribed | State::WaitingRetry, _) => self.start(),
            _ => {}
        }
    }

    /// When [`Self::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wake_at
    }

    /// The next SUBSCRIBE to send (without Via).
    pub fn poll_request(&mut self) -> Option<Request> {
        self.requests.pop_front()
    }

    /// The next answer to a NOTIFY.
    pub fn poll_response(&mut self) -> Option<Response> {
        self.responses.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<SubscriptionEvent> {
        self.events.pop_front()
    }

    fn new_identity(&mut self) {
        self.call_id = format!(
            "{:016x}{:016x}",
            self.rng.random::<u64>(),
            self.rng.random::<u64>()
        );
        self.from_tag = format!("{:08x}", self.rng.random::<u32>());
        self.cseq = 0;
    }

    fn send_initial(&mut self) {
        self.cseq += 1;
        let c = &self.config;
        let mut request = Request::out_of_dialog(
            Method::Subscribe,
            c.target.clone(),
            (&c.local, &self.from_tag),
            &c.target,
            &self.call_id,
            self.cseq,
        );
        self.decorate(&mut request, self.expires);
        self.state = State::Subscribing;
        self.queue(request);
    }

    /// The headers every SUBSCRIBE of ours carries.
    fn decorate(&self, request: &mut Request, expires: u32) {
        let c = &self.config;
        let h = &mut request.headers;
        h.push("Contact", NameAddr::new(c.contact.clone()).to_string());
        h.push("Event", c.event.clone());
        h.push("Accept", c.accept.clone());
        h.push("Expires", expires.to_string());
        h.push("User-Agent", c.user_agent.clone());
    }

    fn schedule_refresh(&mut self, now: Instant, granted: u32) {
        let refresh =
            Duration::from_secs(u64::from(granted)).mul_f64(self.rng.random_range(0.8..0.9));
        self.wake_at = Some(now + refresh);
    }

    fn answer(&mut self, response: &Response) {
        let Some(request) = self.in_flight.clone() else {
            return;
        };
        match self.auth.answer(&request, response, &mut self.rng) {
            Ok(again) => {
                self.cseq = again.headers.cseq().map_or(self.cseq + 1, |c| c.seq);
                if let Some(dialog) = &mut self.dialog {
                    dialog.set_local_seq(self.cseq);
                }
                self.answered_challenge = true;
                self.queue(again);
            }
            Err(e) => {
                let message = format!("cannot answer the challenge: {e}");
                self.fail(Instant::now(), Some(response.status), &message, false);
            }
        }
    }

    fn fail(&mut self, now: Instant, status: Option<u16>, message: &str, retry: bool) {
        self.answered_challenge = false;
        if retry {
            self.state = State::WaitingRetry;
            self.wake_at = Some(now + RETRY.mul_f64(self.rng.random_range(0.5..=1.0)));
        } else {
            self.state = State::Idle;
            self.wake_at = None;
        }
        self.events.push_back(SubscriptionEvent::Failed {
            status,
            message: message.to_owned(),
            will_retry: retry,
        });
    }

    fn queue(&mut self, request: Request) {
        if request.headers.get("Authorization").is_none()
            && request.headers.get("Proxy-Authorization").is_none()
        {
            self.answered_challenge = false;
        }
        self.in_flight = Some(request.clone());
        self.requests.push_back(request);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watcher() -> Subscription {
        Subscription::new(
            SubscriptionConfig {
                local: Uri::parse("sip:alice@example.test").unwrap(),
                contact: Uri::parse("sip:alice@127.0.0.1:5070").unwrap(),
                target: Uri::parse("sip:bob@example.test").unwrap(),
                event: "presence".into(),
                accept: "application/pidf+xml".into(),
                expires: 600,
                username: "alice".into(),
                password: Password::new("pw"),
                user_agent: "test".into(),
            },
            4,
        )
    }

    fn answer(request: &Request, status: u16, extra: &[(&str, &str)]) -> Response {
        let mut with_via = request.clone();
        with_via
            .headers
            .push_front("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx");
        let mut r = with_via.response(status, "X");
        if (200..300).contains(&status) {
            let to = r.headers.get("To").unwrap().to_owned();
            r.headers.set("To", format!("{to};tag=srv"));
        }
        for (k, v) in extra {
            r.headers.push(k, *v);
        }
        r
    }

    /// A NOTIFY from the server in `subscribe`'s dialog.
    fn notify(subscribe: &Request, seq: u32, state: &str, body: &str) -> Request {
        let mut n = Request::new(
            Method::Notify,
            Uri::parse("sip:alice@127.0.0.1:5070").unwrap(),
        );
        let from_tag = subscribe.headers.from().unwrap().tag().unwrap().to_owned();
        n.headers
            .push("Via", "SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKn");
        n.headers.push("From", "<sip:bob@example.test>;tag=srv");
        n.headers
            .push("To", format!("<sip:alice@example.test>;tag={from_tag}"));
        n.headers
            .push("Call-ID", subscribe.headers.call_id().unwrap());
        n.headers.push("CSeq", format!("{seq} NOTIFY"));
        n.headers.push("Event", "presence");
        n.headers.push("Subscription-State", state);
        if !body.is_empty() {
            n.headers.push("Content-Type", "application/pidf+xml");
            n.body = body.to_owned().into();
        }
        n
    }

    #[test]
    fn subscribe_authenticate_notify_and_refresh_in_the_dialog() {
        let t0 = Instant::now();
        let mut s = watcher();
        s.start();
        let first = s.poll_request().unwrap();
        assert_eq!(first.method, Method::Subscribe);
        assert_eq!(first.headers.get("Event"), Some("presence"));
        assert_eq!(first.headers.get("Accept"), Some("application/pidf+xml"));
        s.handle_response(
            t0,
            &answer(
                &first,
                407,
                &[(
                    "Proxy-Authenticate",
                    "Digest realm=\"example.test\", nonce=\"n\"",
                )],
            ),
        );
        let authed = s.poll_request().unwrap();
        assert!(authed.headers.get("Proxy-Authorization").is_some());
        // The NOTIFY may come before the 2xx.
        let early = notify(&authed, 1, "pending;expires=600", "");
        assert!(s.matches(&early));
        s.handle_notify(t0, &early);
        assert_eq!(s.poll_response().unwrap().status, 200);
        assert_eq!(
            s.poll_event(),
            Some(SubscriptionEvent::Notified {
                state: SubscriptionState::Pending,
                body: None
            })
        );
        s.handle_response(
            t0,
            &answer(
                &authed,
                202,
                &[("Expires", "100"), ("Contact", "<sip:127.0.0.2:5060>")],
            ),
        );
        let active = notify(&authed, 2, "active;expires=100", "<presence/>");
        assert!(s.matches(&active));
        s.handle_notify(t0, &active);
        assert_eq!(s.poll_response().unwrap().status, 200);
        assert!(matches!(
            s.poll_event(),
            Some(SubscriptionEvent::Notified {
                state: SubscriptionState::Active,
                body: Some(_)
            })
        ));
        let due = s.poll_timeout().unwrap();
        assert!(due - t0 >= Duration::from_secs(80) && due - t0 <= Duration::from_secs(90));
        s.handle_timeout(due);
        let refresh = s.poll_request().unwrap();
        assert_eq!(refresh.uri.to_string(), "sip:127.0.0.2:5060");
        assert!(refresh.headers.get("To").unwrap().contains("tag=srv"));
        assert_eq!(refresh.headers.cseq().unwrap().seq, 3);
        // The server forgot the dialog: a new subscription, new Call-ID.
        s.handle_response(due, &answer(&refresh, 481, &[]));
        let fresh = s.poll_request().unwrap();
        assert_ne!(
            fresh.headers.call_id().unwrap(),
            refresh.headers.call_id().unwrap()
        );
        assert!(!fresh.headers.get("To").unwrap().contains("tag="));
    }

    #[test]
    fn terminations_and_unknown_packages_end_it() {
        let t0 = Instant::now();
        let mut s = watcher();
        s.start();
        let sub = s.poll_request().unwrap();
        s.handle_response(t0, &answer(&sub, 489, &[]));
        assert!(matches!(
            s.poll_event(),
            Some(SubscriptionEvent::Failed {
                status: Some(489),
                will_retry: false,
                ..
            })
        ));
        assert_eq!(s.poll_timeout(), None);

        let mut s = watcher();
        s.start();
        let sub = s.poll_request().unwrap();
        s.handle_response(
            t0,
            &answer(
                &sub,
                200,
                &[("Expires", "600"), ("Contact", "<sip:127.0.0.2:5060>")],
            ),
        );
        s.handle_notify(t0, &notify(&sub, 1, "terminated;reason=noresource", ""));
        assert_eq!(s.poll_timeout(), None, "noresource: no new subscription");
        // A stranger's NOTIFY is not ours.
        let mut other = notify(&sub, 2, "active", "");
        other.headers.set("Call-ID", "someone-else");
        assert!(!s.matches(&other));

        let mut s = watcher();
        s.start();
        let sub = s.poll_request().unwrap();
        s.handle_response(
            t0,
            &answer(&sub, 200, &[("Contact", "<sip:127.0.0.2:5060>")]),
        );
        s.handle_notify(t0, &notify(&sub, 1, "terminated;reason=timeout", ""));
        assert_eq!(
            s.poll_timeout(),
            Some(t0),
            "timeout: subscribe again at once"
        );
        s.handle_timeout(t0);
        assert_eq!(s.poll_request().unwrap().method, Method::Subscribe);
    }
}
