//! The user agent as one sans-IO state machine: it parses what arrives,
//! matches responses to client transactions, answers requests through server
//! transactions, and runs the registration agent.
//!
//! A driver feeds it bytes, transport events and the time, and drains
//! [`Endpoint::poll_transmit`], [`Endpoint::poll_event`] and
//! [`Endpoint::poll_timeout`]. Nothing here performs I/O.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::framing::Frame;
use super::header::Via;
use super::message::{self, Message, Method, Request, Response};
use super::registration::{Registration, RegistrationConfig, RegistrationEvent};
use super::transaction::{
    ClientOutcome, ClientTransaction, ServerTransaction, Timers, TransactionKey,
};
use super::transport::{Transmit, Transport};
use super::uri::Host;

/// Methods this endpoint answers; advertised in Allow.
const ALLOW: &str = "OPTIONS";

/// Static configuration of an endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// The transport to the registrar.
    pub transport: Transport,
    /// The registrar's (or outbound proxy's) address.
    pub server: SocketAddr,
    /// The address written in Via sent-by (our listening address).
    pub local: SocketAddr,
    /// Registration settings (Contact is derived by the caller from `local`).
    pub registration: RegistrationConfig,
    /// Transaction timers.
    pub timers: Timers,
    /// Seed for branch ids, tags and jitter.
    pub seed: u64,
}

/// What the endpoint reports to the phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointEvent {
    /// A registration state change.
    Registration(RegistrationEvent),
    /// The flow to the registrar was lost.
    FlowLost {
        /// What happened.
        reason: String,
    },
    /// Something arrived that could not be used (logged, then dropped).
    Malformed {
        /// Where it came from.
        from: SocketAddr,
        /// Why it was dropped.
        reason: String,
    },
}

/// Who is waiting for a client transaction's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Registration,
}

/// The sans-IO user agent.
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    rng: StdRng,
    registration: Registration,
    clients: HashMap<TransactionKey, (ClientTransaction, Owner)>,
    servers: HashMap<TransactionKey, ServerTransaction>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<EndpointEvent>,
}

impl Endpoint {
    /// A new endpoint; nothing is sent until [`Endpoint::register`].
    pub fn new(config: EndpointConfig) -> Endpoint {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let registration = Registration::new(config.registration.clone(), rng.random());
        Endpoint {
            config,
            rng,
            registration,
            clients: HashMap::new(),
            servers: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Whether the registrar currently holds our binding.
    pub fn is_registered(&self) -> bool {
        self.registration.is_registered()
    }

    /// Whether an unregistration is in flight.
    pub fn is_unregistering(&self) -> bool {
        self.registration.is_unregistering()
    }

    /// Starts registering.
    pub fn register(&mut self, now: Instant) {
        self.registration.start();
        self.pump(now);
    }

    /// Removes our binding.
    pub fn unregister(&mut self, now: Instant) {
        self.registration.stop(now);
        self.pump(now);
    }

    /// A datagram arrived.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        match message::parse(bytes) {
            Ok(msg) => self.handle_message(now, Transport::Udp, from, msg),
            // Stray keepalives on UDP are harmless.
            Err(message::ParseError::Empty) => {}
            Err(e) => self.malformed(from, e.to_string()),
        }
    }

    /// A frame arrived on a stream connection.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        transport: Transport,
        from: SocketAddr,
        frame: Frame,
    ) {
        match frame {
            Frame::Message(msg) => self.handle_message(now, transport, from, msg),
            // Pings are answered by the driver; pongs matter to keepalive.
            Frame::Ping | Frame::Pong => {}
        }
    }

    /// A complete message arrived.
    pub fn handle_message(
        &mut self,
        now: Instant,
        transport: Transport,
        from: SocketAddr,
        msg: Message,
    ) {
        match msg {
            Message::Response(r) => self.handle_response(now, from, r),
            Message::Request(r) => self.handle_request(now, transport, from, r),
        }
        self.pump(now);
    }

    /// Sending to `destination` failed (refused, unreachable, TLS failure).
    pub fn handle_transport_error(
        &mut self,
        now: Instant,
        transport: Transport,
        destination: SocketAddr,
        reason: &str,
    ) {
        let keys: Vec<_> = self
            .clients
            .iter()
            .filter(|(_, (tx, _))| tx.destination() == (transport, destination))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if let Some((tx, owner)) = self.clients.get_mut(&key) {
                let owner = *owner;
                if let Some(outcome) = tx.handle_transport_error(reason) {
                    self.deliver(now, owner, outcome);
                }
            }
        }
        self.pump(now);
    }

    /// A stream connection closed. If it was the flow to the registrar, the
    /// registration is renewed at once.
    pub fn handle_flow_closed(
        &mut self,
        now: Instant,
        transport: Transport,
        remote: SocketAddr,
        reason: &str,
    ) {
        self.handle_transport_error(now, transport, remote, reason);
        if transport == self.config.transport
            && remote == self.config.server
            && self.registration.is_registered()
        {
            self.events.push_back(EndpointEvent::FlowLost {
                reason: reason.to_owned(),
            });
            self.registration.handle_flow_lost();
            self.pump(now);
        }
    }

    /// Advances every timer that is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut outcomes = Vec::new();
        for (tx, owner) in self.clients.values_mut() {
            if tx.poll_timeout().is_some_and(|t| t <= now) {
                if let Some(o) = tx.handle_timeout(now) {
                    outcomes.push((*owner, o));
                }
            }
        }
        for (owner, outcome) in outcomes {
            self.deliver(now, owner, outcome);
        }
        for tx in self.servers.values_mut() {
            tx.handle_timeout(now);
        }
        self.registration.handle_timeout(now);
        self.pump(now);
    }

    /// The earliest time [`Endpoint::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let clients = self
            .clients
            .values()
            .filter_map(|(tx, _)| tx.poll_timeout());
        let servers = self
            .servers
            .values()
            .filter_map(ServerTransaction::poll_timeout);
        clients
            .chain(servers)
            .chain(self.registration.poll_timeout())
            .min()
    }

    /// The next bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.events.pop_front()
    }

    fn malformed(&mut self, from: SocketAddr, reason: String) {
        tracing::warn!(%from, %reason, "dropped malformed SIP message");
        self.events
            .push_back(EndpointEvent::Malformed { from, reason });
    }

    fn handle_response(&mut self, now: Instant, from: SocketAddr, response: Response) {
        let key = match (response.headers.via(), response.headers.cseq()) {
            (Ok(via), Ok(cseq)) => match via.branch() {
                Some(branch) => TransactionKey {
                    branch: branch.to_owned(),
                    method: cseq.method,
                },
                None => return self.malformed(from, "response Via has no branch".into()),
            },
            (Err(e), _) | (_, Err(e)) => {
                return self.malformed(from, format!("unusable response: {e}"))
            }
        };
        let Some((tx, owner)) = self.clients.get_mut(&key) else {
            tracing::debug!(%from, status = response.status, "response matches no transaction");
            return;
        };
        let owner = *owner;
        if let Some(outcome) = tx.handle_response(now, response) {
            self.deliver(now, owner, outcome);
        }
    }

    fn deliver(&mut self, now: Instant, owner: Owner, outcome: ClientOutcome) {
        match (owner, outcome) {
            (Owner::Registration, ClientOutcome::Response(r)) => {
                self.registration.handle_response(now, &r)
            }
            (Owner::Registration, ClientOutcome::Failed(f)) => {
                self.registration.handle_failure(now, &f)
            }
        }
    }

    fn handle_request(
        &mut self,
        now: Instant,
        transport: Transport,
        from: SocketAddr,
        request: Request,
    ) {
        let (via, cseq) = match (request.headers.via(), request.headers.cseq()) {
            (Ok(via), Ok(cseq)) => (via, cseq),
            (Err(e), _) | (_, Err(e)) => {
                // Without a usable Via there is nowhere to send a 400.
                return self.malformed(from, format!("unusable request: {e}"));
            }
        };
        if request.method == Method::Ack {
            return;
        }
        let key = TransactionKey {
            branch: via.branch().unwrap_or_default().to_owned(),
            method: request.method.clone(),
        };
        if let Some(tx) = self.servers.get_mut(&key) {
            tx.handle_retransmission();
            return;
        }
        let mut tx = ServerTransaction::new(transport, from, self.config.timers);
        let valid = request.headers.from().is_ok()
            && request.headers.to().is_ok()
            && request.headers.call_id().is_ok();
        let response = if !valid || cseq.method != request.method {
            request.response(400, "Bad Request")
        } else {
            match request.method {
                Method::Options => {
                    let mut r = request.response(200, "OK");
                    r.headers.push("Allow", ALLOW);
                    r.headers.push("Accept", "application/sdp");
                    r
                }
                _ => {
                    let mut r = request.response(501, "Not Implemented");
                    r.headers.push("Allow", ALLOW);
                    r
                }
            }
        };
        tx.respond(now, &self.with_to_tag(response));
        self.servers.insert(key, tx);
    }

    /// Final responses outside a dialog get a To tag (RFC 3261 §8.2.6.2).
    fn with_to_tag(&mut self, mut response: Response) -> Response {
        if let Some(to) = response.headers.get("To") {
            if !to.contains("tag=") {
                let tagged = format!("{to};tag={:08x}", self.rng.random::<u32>());
                response.headers.set("To", tagged);
            }
        }
        response
    }

    /// Moves queued requests into transactions and collects what to send.
    fn pump(&mut self, now: Instant) {
        while let Some(request) = self.registration.poll_request() {
            self.start_client(now, request, Owner::Registration);
        }
        while let Some(ev) = self.registration.poll_event() {
            self.events.push_back(EndpointEvent::Registration(ev));
        }
        for (tx, _) in self.clients.values_mut() {
            while let Some(t) = tx.poll_transmit() {
                self.transmits.push_back(t);
            }
        }
        for tx in self.servers.values_mut() {
            while let Some(t) = tx.poll_transmit() {
                self.transmits.push_back(t);
            }
        }
        self.clients.retain(|_, (tx, _)| !tx.is_terminated());
        self.servers.retain(|_, tx| !tx.is_terminated());
    }

    fn start_client(&mut self, now: Instant, mut request: Request, owner: Owner) {
        let branch = format!("z9hG4bK{:016x}", self.rng.random::<u64>());
        let mut via = Via {
            transport: self.config.transport.via_token().to_owned(),
            host: Host::Ip(self.config.local.ip()),
            port: Some(self.config.local.port()),
            params: Default::default(),
        };
        via.params.set("branch", Some(&branch));
        if self.config.transport == Transport::Udp {
            via.params.set("rport", None);
        }
        request.headers.push_front("Via", via.to_string());
        let key = TransactionKey {
            branch,
            method: request.method.clone(),
        };
        let tx = ClientTransaction::new(
            now,
            &request,
            self.config.transport,
            self.config.server,
            self.config.timers,
        );
        self.clients.insert(key, (tx, owner));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::digest::Password;
    use crate::sip::registration::{FailureReason, RetryPolicy};
    use crate::sip::uri::Uri;
    use std::time::Duration;

    fn endpoint(transport: Transport) -> Endpoint {
        let local: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        Endpoint::new(EndpointConfig {
            transport,
            server: "127.0.0.2:5060".parse().unwrap(),
            local,
            registration: RegistrationConfig {
                aor: Uri::parse("sip:alice@example.test").unwrap(),
                registrar: Uri::parse("sip:example.test").unwrap(),
                contact: Uri::parse("sip:alice@127.0.0.1:5070").unwrap(),
                instance_id: "urn:uuid:00000000-0000-4000-8000-000000000001".into(),
                reg_id: 1,
                expires: 60,
                username: "alice".into(),
                password: Password::new("pw"),
                user_agent: "test".into(),
                retry: RetryPolicy::default(),
            },
            timers: Timers::default(),
            seed: 7,
        })
    }

    fn sent(ep: &mut Endpoint) -> Vec<Message> {
        std::iter::from_fn(|| ep.poll_transmit())
            .map(|t| message::parse(&t.payload).unwrap())
            .collect()
    }

    fn answer(req: &Message, status: u16, extra: &str) -> Vec<u8> {
        let Message::Request(req) = req else {
            panic!("not a request")
        };
        let mut r = req.response(status, "X");
        for line in extra.lines().filter(|l| !l.is_empty()) {
            let (k, v) = line.split_once(':').unwrap();
            r.headers.push(k, v.trim());
        }
        r.to_bytes()
    }

    #[test]
    fn registers_through_a_challenge_over_udp() {
        let t0 = Instant::now();
        let server: SocketAddr = "127.0.0.2:5060".parse().unwrap();
        let mut ep = endpoint(Transport::Udp);
        ep.register(t0);
        let out = sent(&mut ep);
        assert_eq!(out.len(), 1);
        let via = out[0].headers().via().unwrap();
        assert!(via.params.contains("rport") && via.branch().unwrap().starts_with("z9hG4bK"));
        ep.handle_datagram(t0, server, &answer(&out[0], 401, "WWW-Authenticate: Digest realm=\"example.test\", nonce=\"abc\", qop=\"auth\", algorithm=SHA-256"));
        let out2 = sent(&mut ep);
        assert_eq!(out2.len(), 1);
        assert!(out2[0]
            .headers()
            .get("Authorization")
            .unwrap()
            .contains("algorithm=SHA-256"));
        assert_ne!(
            out2[0].headers().via().unwrap().branch(),
            via.branch(),
            "new transaction, new branch"
        );
        ep.handle_datagram(t0, server, &answer(&out2[0], 200, "Expires: 60"));
        assert_eq!(
            ep.poll_event(),
            Some(EndpointEvent::Registration(RegistrationEvent::Registered {
                expires: 60
            }))
        );
        assert!(ep.is_registered());
    }

    #[test]
    fn retransmissions_over_udp_then_timeout_event() {
        let t0 = Instant::now();
        let mut ep = endpoint(Transport::Udp);
        ep.register(t0);
        let mut sends = 0;
        let mut now = t0;
        while now < t0 + Duration::from_secs(33) {
            sends += std::iter::from_fn(|| ep.poll_transmit()).count();
            now = ep.poll_timeout().unwrap();
            ep.handle_timeout(now);
            if let Some(EndpointEvent::Registration(RegistrationEvent::Failed { reason, .. })) =
                ep.poll_event()
            {
                assert_eq!(reason, FailureReason::Timeout);
                assert_eq!(sends, 11);
                return;
            }
        }
        panic!("no timeout reported");
    }

    #[test]
    fn transport_error_fails_registration_as_unreachable() {
        let t0 = Instant::now();
        let mut ep = endpoint(Transport::Tcp);
        ep.register(t0);
        sent(&mut ep);
        ep.handle_transport_error(
            t0,
            Transport::Tcp,
            "127.0.0.2:5060".parse().unwrap(),
            "connection refused",
        );
        assert!(matches!(
            ep.poll_event(),
            Some(EndpointEvent::Registration(RegistrationEvent::Failed {
                reason: FailureReason::Unreachable,
                retry_at: Some(_),
                ..
            }))
        ));
    }

    #[test]
    fn answers_options_and_absorbs_duplicates() {
        let t0 = Instant::now();
        let from: SocketAddr = "127.0.0.2:5060".parse().unwrap();
        let mut ep = endpoint(Transport::Udp);
        let options = "OPTIONS sip:alice@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKo1\r\n\
            From: <sip:ping@example.test>;tag=9\r\nTo: <sip:alice@example.test>\r\nCall-ID: o1\r\nCSeq: 5 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        ep.handle_datagram(t0, from, options.as_bytes());
        let out: Vec<_> = std::iter::from_fn(|| ep.poll_transmit()).collect();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].destination, from);
        let Message::Response(r) = message::parse(&out[0].payload).unwrap() else {
            panic!()
        };
        assert_eq!(r.status, 200);
        assert!(r.headers.to().unwrap().tag().is_some());
        ep.handle_datagram(t0, from, options.as_bytes());
        let again: Vec<_> = std::iter::from_fn(|| ep.poll_transmit()).collect();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].payload, out[0].payload, "same response resent");
    }

    #[test]
    fn malformed_input_is_reported_not_fatal() {
        let t0 = Instant::now();
        let from: SocketAddr = "127.0.0.9:5060".parse().unwrap();
        let mut ep = endpoint(Transport::Udp);
        ep.register(t0);
        sent(&mut ep);
        for junk in [&b"\x00\x01garbage"[..], b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKnope\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"] {
            ep.handle_datagram(t0, from, junk);
        }
        let events: Vec<_> = std::iter::from_fn(|| ep.poll_event()).collect();
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, EndpointEvent::Malformed { .. }))
                .count(),
            2
        );
        assert!(!ep.is_registered());
    }
}
