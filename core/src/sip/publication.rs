//! Publishing our state with PUBLISH (RFC 3903): the first PUBLISH carries
//! the document and gets an entity tag; refreshes (at 80-90 % of the
//! granted time) carry only `SIP-If-Match`; a new document replaces the
//! old under the same tag; a 412 (the server forgot the tag) starts over
//! with the document. Sans-IO, like the registration agent.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::auth::Authenticator;
use super::call::Body;
use super::digest::Password;
use super::message::{Method, Request, Response};
use super::transaction::ClientFailure;
use super::uri::Uri;

/// The longest wait before trying again after a failure.
const RETRY: Duration = Duration::from_secs(5);

/// Whose state, for which event package, and how to authenticate.
#[derive(Debug, Clone)]
pub struct PublicationConfig {
    /// Our address of record (Request-URI, From and To).
    pub aor: Uri,
    /// The event package, `presence`.
    pub event: String,
    /// Requested lifetime in seconds.
    pub expires: u32,
    /// Authentication user name.
    pub username: String,
    /// Password.
    pub password: Password,
    /// User-Agent header value.
    pub user_agent: String,
}

/// What the agent reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicationEvent {
    /// The server holds our document for `expires` seconds.
    Published {
        /// Granted lifetime in seconds.
        expires: u32,
    },
    /// A PUBLISH failed; with `will_retry` the agent tries again by itself.
    Failed {
        /// The SIP status, when there was a response.
        status: Option<u16>,
        /// Why.
        message: String,
        /// Whether it tries again.
        will_retry: bool,
    },
    /// The document was removed.
    Unpublished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Publishing,
    Published,
    WaitingRetry,
    Removing,
}

/// The publication agent (sans-IO).
#[derive(Debug)]
pub struct Publication {
    config: PublicationConfig,
    rng: StdRng,
    call_id: String,
    from_tag: String,
    cseq: u32,
    auth: Authenticator,
    answered_challenge: bool,
    expires: u32,
    etag: Option<String>,
    document: Option<Body>,
    /// A new document arrived while a PUBLISH was in flight.
    changed: bool,
    state: State,
    in_flight: Option<Request>,
    wake_at: Option<Instant>,
    requests: VecDeque<Request>,
    events: VecDeque<PublicationEvent>,
}

impl Publication {
    /// An idle agent; `seed` makes its tags reproducible.
    pub fn new(config: PublicationConfig, seed: u64) -> Publication {
        let mut rng = StdRng::seed_from_u64(seed);
        Publication {
            call_id: format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>()),
            from_tag: format!("{:08x}", rng.random::<u32>()),
            expires: config.expires,
            auth: Authenticator::new(config.username.clone(), config.password.clone()),
            config,
            rng,
            cseq: 0,
            answered_challenge: false,
            etag: None,
            document: None,
            changed: false,
            state: State::Idle,
            in_flight: None,
            wake_at: None,
            requests: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Publishes `document`, replacing what we published before.
    pub fn publish(&mut self, document: Body) {
        self.document = Some(document);
        match self.state {
            State::Publishing | State::Removing => self.changed = true,
            State::Idle | State::Published | State::WaitingRetry => self.send(true),
        }
    }

    /// Removes our document (Expires: 0).
    pub fn unpublish(&mut self) {
        self.document = None;
        self.changed = false;
        if self.etag.is_some() && self.state != State::Removing {
            self.send_removal();
        } else {
            self.state = State::Idle;
            self.wake_at = None;
            self.events.push_back(PublicationEvent::Unpublished);
        }
    }

    /// Publishes again from scratch at another server, where our tag means
    /// nothing; returns an agent that removes what we published at the old
    /// one, which would otherwise show watchers still there a stale
    /// document until it expires.
    pub fn restart_elsewhere(&mut self) -> Option<Publication> {
        let leftover = self.etag.take().map(|etag| {
            let mut old = Publication::new(self.config.clone(), self.rng.random());
            old.call_id = self.call_id.clone();
            old.from_tag = self.from_tag.clone();
            old.cseq = self.cseq;
            old.etag = Some(etag);
            old.unpublish();
            old
        });
        if self.document.is_some() && self.state != State::Removing {
            self.send(true);
        }
        leftover
    }

    /// Whether a PUBLISH is in flight.
    pub fn is_busy(&self) -> bool {
        matches!(self.state, State::Publishing | State::Removing)
    }

    /// A response to the PUBLISH in flight.
    pub fn handle_response(&mut self, now: Instant, response: &Response) {
        if response.status < 200 {
            return;
        }
        let current = response.headers.cseq().is_ok_and(|c| c.seq == self.cseq);
        if !current || !self.is_busy() {
            return;
        }
        let removing = self.state == State::Removing;
        match response.status {
            200..=299 if removing => {
                self.etag = None;
                self.state = State::Idle;
                self.wake_at = None;
                self.events.push_back(PublicationEvent::Unpublished);
            }
            200..=299 => self.published(now, response),
            401 | 407 if !self.answered_challenge => self.answer(response),
            412 if !removing => {
                // The server lost our entity: the document again, afresh.
                self.etag = None;
                self.send(true);
            }
            423 => match response.headers.seconds("Min-Expires") {
                Some(min) if min > self.expires => {
                    self.expires = min;
                    self.send(true);
                }
                _ => self.fail(
                    now,
                    Some(response.status),
                    "423 without a usable Min-Expires",
                    false,
                ),
            },
            status => {
                let transient = response.is_transient_failure();
                self.fail(now, Some(status), &response.summary(), transient);
            }
        }
    }

    /// The PUBLISH in flight got no final response.
    pub fn handle_failure(&mut self, now: Instant, failure: &ClientFailure) {
        if self.is_busy() {
            self.fail(now, None, &format!("{failure:?}"), true);
        }
    }

    /// Refreshes or retries when their time has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.wake_at.is_some_and(|t| now >= t) {
            self.wake_at = None;
            match self.state {
                State::Published => self.send(false),
                State::WaitingRetry => self.send(true),
                State::Idle | State::Publishing | State::Removing => {}
            }
        }
    }

    /// When [`Self::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wake_at
    }

    /// The next PUBLISH to send (without Via).
    pub fn poll_request(&mut self) -> Option<Request> {
        self.requests.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<PublicationEvent> {
        self.events.pop_front()
    }

    fn published(&mut self, now: Instant, response: &Response) {
        if let Some(tag) = response.headers.get("SIP-ETag") {
            self.etag = Some(tag.trim().to_owned());
        }
        let granted = response
            .headers
            .seconds("Expires")
            .unwrap_or(self.expires)
            .max(1);
        self.state = State::Published;
        self.answered_challenge = false;
        let refresh =
            Duration::from_secs(u64::from(granted)).mul_f64(self.rng.random_range(0.8..0.9));
        self.wake_at = Some(now + refresh);
        self.events
            .push_back(PublicationEvent::Published { expires: granted });
        if std::mem::take(&mut self.changed) {
            self.send(true);
        }
    }

    fn answer(&mut self, response: &Response) {
        let Some(request) = self.in_flight.clone() else {
            return;
        };
        match self.auth.answer(&request, response, &mut self.rng) {
            Ok(again) => {
                self.cseq += 1;
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
        let will_retry = retry && self.document.is_some() && self.state != State::Removing;
        if will_retry {
            self.state = State::WaitingRetry;
            self.wake_at = Some(now + RETRY.mul_f64(self.rng.random_range(0.5..=1.0)));
        } else {
            self.state = State::Idle;
            self.wake_at = None;
        }
        self.events.push_back(PublicationEvent::Failed {
            status,
            message: message.to_owned(),
            will_retry,
        });
    }

    /// A PUBLISH: with the document when `with_document` (first, changed,
    /// or after a failure), else a refresh under our tag.
    fn send(&mut self, with_document: bool) {
        let document = if with_document || self.etag.is_none() {
            self.document.clone()
        } else {
            None
        };
        if document.is_none() && self.etag.is_none() {
            return;
        }
        let mut request = self.request(self.expires);
        if let Some(body) = document {
            request.headers.push("Content-Type", body.content_type);
            request.body = body.bytes;
        }
        self.state = State::Publishing;
        self.changed = false;
        self.queue(request);
    }

    fn send_removal(&mut self) {
        let request = self.request(0);
        self.state = State::Removing;
        self.queue(request);
    }

    fn request(&mut self, expires: u32) -> Request {
        self.cseq += 1;
        let c = &self.config;
        let mut request = Request::out_of_dialog(
            Method::Publish,
            c.aor.clone(),
            (&c.aor, &self.from_tag),
            &c.aor,
            &self.call_id,
            self.cseq,
        );
        let h = &mut request.headers;
        h.push("Event", c.event.clone());
        h.push("Expires", expires.to_string());
        if let Some(tag) = &self.etag {
            h.push("SIP-If-Match", tag.clone());
        }
        h.push("User-Agent", c.user_agent.clone());
        request
    }

    fn queue(&mut self, request: Request) {
        self.answered_challenge &= request.headers.get("Authorization").is_some()
            || request.headers.get("Proxy-Authorization").is_some();
        self.in_flight = Some(request.clone());
        self.requests.push_back(request);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> Publication {
        Publication::new(
            PublicationConfig {
                aor: Uri::parse("sip:alice@example.test").unwrap(),
                event: "presence".into(),
                expires: 600,
                username: "alice".into(),
                password: Password::new("pw"),
                user_agent: "test".into(),
            },
            3,
        )
    }

    fn doc(text: &str) -> Body {
        Body {
            content_type: "application/pidf+xml".into(),
            bytes: text.to_owned().into(),
        }
    }

    fn answer(request: &Request, status: u16, extra: &[(&str, &str)]) -> Response {
        let mut with_via = request.clone();
        with_via
            .headers
            .push_front("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx");
        let mut r = with_via.response(status, "X");
        for (k, v) in extra {
            r.headers.push(k, *v);
        }
        r
    }

    #[test]
    fn publish_refresh_modify_and_remove_under_one_tag() {
        let t0 = Instant::now();
        let mut p = agent();
        p.publish(doc("<one/>"));
        let first = p.poll_request().unwrap();
        assert_eq!(first.headers.get("Event"), Some("presence"));
        assert_eq!(first.headers.get("SIP-If-Match"), None);
        assert_eq!(&first.body[..], b"<one/>");
        // A challenge is answered once.
        p.handle_response(
            t0,
            &answer(
                &first,
                407,
                &[(
                    "Proxy-Authenticate",
                    "Digest realm=\"example.test\", nonce=\"n\", qop=\"auth\"",
                )],
            ),
        );
        let authed = p.poll_request().unwrap();
        assert!(authed.headers.get("Proxy-Authorization").is_some());
        assert_eq!(authed.headers.cseq().unwrap().seq, 2);
        p.handle_response(
            t0,
            &answer(&authed, 200, &[("SIP-ETag", "e1"), ("Expires", "100")]),
        );
        assert_eq!(
            p.poll_event(),
            Some(PublicationEvent::Published { expires: 100 })
        );
        // The refresh: tag, no document, at 80-90 s.
        let due = p.poll_timeout().unwrap();
        assert!(due - t0 >= Duration::from_secs(80) && due - t0 <= Duration::from_secs(90));
        p.handle_timeout(due);
        let refresh = p.poll_request().unwrap();
        assert_eq!(refresh.headers.get("SIP-If-Match"), Some("e1"));
        assert!(refresh.body.is_empty() && refresh.headers.get("Content-Type").is_none());
        p.handle_response(
            due,
            &answer(&refresh, 200, &[("SIP-ETag", "e2"), ("Expires", "100")]),
        );
        // A new document under the tag.
        p.publish(doc("<two/>"));
        let modify = p.poll_request().unwrap();
        assert_eq!(modify.headers.get("SIP-If-Match"), Some("e2"));
        assert_eq!(&modify.body[..], b"<two/>");
        // The server forgot the tag: start over with the document.
        p.handle_response(due, &answer(&modify, 412, &[]));
        let fresh = p.poll_request().unwrap();
        assert_eq!(fresh.headers.get("SIP-If-Match"), None);
        assert_eq!(&fresh.body[..], b"<two/>");
        p.handle_response(due, &answer(&fresh, 200, &[("SIP-ETag", "e3")]));
        let _ = std::iter::from_fn(|| p.poll_event()).count();
        p.unpublish();
        let remove = p.poll_request().unwrap();
        assert_eq!(remove.headers.get("Expires"), Some("0"));
        assert_eq!(remove.headers.get("SIP-If-Match"), Some("e3"));
        p.handle_response(due, &answer(&remove, 200, &[]));
        assert_eq!(p.poll_event(), Some(PublicationEvent::Unpublished));
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn failures_retry_and_a_new_server_gets_the_document_again() {
        let t0 = Instant::now();
        let mut p = agent();
        p.publish(doc("<one/>"));
        let first = p.poll_request().unwrap();
        p.handle_failure(t0, &ClientFailure::Timeout);
        assert!(matches!(
            p.poll_event(),
            Some(PublicationEvent::Failed {
                will_retry: true,
                ..
            })
        ));
        let due = p.poll_timeout().unwrap();
        assert!(due - t0 <= RETRY);
        p.handle_timeout(due);
        let again = p.poll_request().unwrap();
        assert_eq!(&again.body[..], &first.body[..]);
        p.handle_response(due, &answer(&again, 200, &[("SIP-ETag", "e1")]));
        let mut old = p.restart_elsewhere().expect("a removal at the old server");
        let removal = old.poll_request().unwrap();
        assert_eq!(removal.headers.get("SIP-If-Match"), Some("e1"));
        assert_eq!(removal.headers.get("Expires"), Some("0"));
        assert!(removal.body.is_empty());
        old.handle_response(due, &answer(&removal, 200, &[]));
        assert_eq!(old.poll_event(), Some(PublicationEvent::Unpublished));
        assert!(!old.is_busy());
        let moved = p.poll_request().unwrap();
        assert_eq!(moved.headers.get("SIP-If-Match"), None);
        assert_eq!(&moved.body[..], b"<one/>");
        p.handle_response(due, &answer(&moved, 403, &[]));
        assert!(matches!(
            p.poll_event(),
            Some(PublicationEvent::Published { .. })
        ));
        assert!(matches!(
            p.poll_event(),
            Some(PublicationEvent::Failed {
                will_retry: false,
                status: Some(403),
                ..
            })
        ));
    }
}
