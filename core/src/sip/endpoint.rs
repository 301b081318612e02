//! The user agent as one sans-IO state machine: it parses what arrives,
//! matches responses to client transactions, answers requests through server
//! transactions, and runs the registration agent and the calls.
//!
//! A driver feeds it bytes, transport events and the time, and drains
//! [`Endpoint::poll_transmit`], [`Endpoint::poll_event`] and
//! [`Endpoint::poll_timeout`]. Nothing here performs I/O.
//!
//! Every request goes to the configured server (the registrar acting as
//! outbound proxy); responses go back where their request came from.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::call::{Body, Call, CallAction, CallConfig, CallEvent, ALLOW};
use super::framing::Frame;
use super::geolocation;
use super::header::{NameAddr, Via};
use super::keepalive::{options_request, Keepalive, KeepaliveAction, PING};
use super::message::{self, Message, Method, Request, Response};
use super::publication::{Publication, PublicationConfig, PublicationEvent};
use super::registration::{Registration, RegistrationConfig, RegistrationEvent};
use super::subscription::{Subscription, SubscriptionConfig, SubscriptionEvent};
use super::transaction::{
    ClientOutcome, ClientTransaction, InviteClientTransaction, InviteServerTransaction,
    ServerTransaction, Timers, TransactionKey,
};
use super::transport::{Transmit, Transport};
use super::uri::{Host, Uri};

/// Identifies a call within one endpoint.
pub type CallId = u64;

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
    /// Keepalive interval while registered (RFC 5626 §4.4); `None` sends none.
    pub keepalive: Option<Duration>,
    /// How long a keepalive's pong may take before the server counts as gone.
    pub keepalive_timeout: Duration,
    /// Seed for branch ids, tags and jitter.
    pub seed: u64,
}

/// What the endpoint reports to the phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointEvent {
    /// A registration state change.
    Registration(RegistrationEvent),
    /// Our presence publication changed state.
    Publication(PublicationEvent),
    /// A subscription of ours heard something.
    Subscription {
        /// Which ([`Endpoint::subscribe`]'s id).
        id: u64,
        /// What.
        event: SubscriptionEvent,
    },
    /// The flow to the registrar was lost.
    FlowLost {
        /// What happened.
        reason: String,
    },
    /// A keepalive to the registrar went unanswered (or was refused).
    KeepaliveLost {
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
    /// Someone is calling; answer with [`Endpoint::answer`].
    IncomingCall {
        /// The new call.
        call: CallId,
        /// The caller.
        from: Box<NameAddr>,
        /// The caller's offer, if the INVITE had one.
        offer: Option<Body>,
        /// The location the caller sent by value (RFC 6442), still encoded.
        location: Option<Body>,
    },
    /// A call changed state.
    Call {
        /// Which call.
        call: CallId,
        /// What happened.
        event: CallEvent,
    },
}

/// Who is waiting for a client transaction's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    /// The registration of this generation (see [`Binding`]).
    Registration(u64),
    Keepalive,
    Publication,
    /// The removal of our document at the server of this binding generation.
    LeavingPublication(u64),
    Subscription(u64),
    Call(CallId, Method),
}

/// A registration with one server. Moving to another server makes a new
/// binding; the old one lingers only to be removed from its server.
#[derive(Debug)]
struct Binding {
    generation: u64,
    transport: Transport,
    server: SocketAddr,
    registration: Registration,
}

/// A request to start as a client transaction: for whom, and where to.
type OwnedRequest = (Request, Owner, Transport, SocketAddr);

impl Binding {
    /// The REGISTERs its agent queued, addressed to its server.
    fn take_requests(&mut self) -> Vec<OwnedRequest> {
        let owner = Owner::Registration(self.generation);
        std::iter::from_fn(|| self.registration.poll_request())
            .map(|r| (r, owner.clone(), self.transport, self.server))
            .collect()
    }
}

/// What we leave behind at a server we moved away from: our binding, and
/// the presence document we published there, both being removed.
#[derive(Debug)]
struct Leaving {
    binding: Binding,
    /// Make-before-break: removed only once the new binding is registered.
    until_registered: bool,
    publication: Option<Publication>,
}

/// The sans-IO user agent.
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    rng: StdRng,
    binding: Binding,
    leaving: Vec<Leaving>,
    keepalive: Keepalive,
    publication: Publication,
    subscriptions: HashMap<u64, Subscription>,
    next_subscription: u64,
    clients: HashMap<TransactionKey, (ClientTransaction, Owner)>,
    servers: HashMap<TransactionKey, ServerTransaction>,
    invite_clients: HashMap<TransactionKey, (InviteClientTransaction, CallId)>,
    /// Requests sent over TCP only for their size, kept (without our Via)
    /// to go over UDP after all if TCP is refused (RFC 3261 §18.1.1).
    upgraded: HashMap<TransactionKey, (Request, Owner)>,
    invite_servers: HashMap<TransactionKey, InviteServerTransaction>,
    calls: HashMap<CallId, Call>,
    next_call: CallId,
    transmits: VecDeque<Transmit>,
    events: VecDeque<EndpointEvent>,
}

impl Endpoint {
    /// A new endpoint; nothing is sent until asked.
    pub fn new(config: EndpointConfig) -> Endpoint {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let binding = Binding {
            generation: 0,
            transport: config.transport,
            server: config.server,
            registration: Registration::new(config.registration.clone(), rng.random()),
        };
        let keepalive = Keepalive::new(
            config.keepalive.unwrap_or(Duration::from_secs(86_400)),
            config.keepalive_timeout,
        );
        let r = &config.registration;
        let publication = Publication::new(
            PublicationConfig {
                aor: r.aor.clone(),
                event: "presence".into(),
                expires: r.expires,
                username: r.username.clone(),
                password: r.password.clone(),
                user_agent: r.user_agent.clone(),
            },
            rng.random(),
        );
        Endpoint {
            config,
            rng,
            binding,
            leaving: Vec::new(),
            keepalive,
            publication,
            subscriptions: HashMap::new(),
            next_subscription: 0,
            clients: HashMap::new(),
            servers: HashMap::new(),
            invite_clients: HashMap::new(),
            upgraded: HashMap::new(),
            invite_servers: HashMap::new(),
            calls: HashMap::new(),
            next_call: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Whether the registrar currently holds our binding.
    pub fn is_registered(&self) -> bool {
        self.binding.registration.is_registered()
    }

    /// Whether an unregistration is in flight (here or at a server we left).
    pub fn is_unregistering(&self) -> bool {
        self.binding.registration.is_unregistering()
            || self
                .leaving
                .iter()
                .any(|l| l.binding.registration.is_unregistering())
    }

    /// Sets the keepalive interval (another transport wants another one);
    /// it takes effect at the next registration.
    pub fn set_keepalive_interval(&mut self, interval: Duration) {
        self.config.keepalive = Some(interval);
        self.keepalive = Keepalive::new(interval, self.config.keepalive_timeout);
    }

    /// The address our Contact names.
    pub fn contact_addr(&self) -> Option<SocketAddr> {
        match (
            &self.config.registration.contact.host,
            self.config.registration.contact.port,
        ) {
            (Host::Ip(ip), Some(port)) => Some(SocketAddr::new(*ip, port)),
            _ => None,
        }
    }

    /// The server requests go to.
    pub fn server(&self) -> (Transport, SocketAddr) {
        (self.config.transport, self.config.server)
    }

    /// Starts registering.
    pub fn register(&mut self, now: Instant) {
        self.binding.registration.start();
        self.pump(now);
    }

    /// Removes our binding.
    pub fn unregister(&mut self, now: Instant) {
        self.keepalive.stop();
        self.binding.registration.stop(now);
        self.pump(now);
    }

    /// Publishes our presence document (PIDF), replacing the last one.
    pub fn publish(&mut self, now: Instant, document: Body) {
        self.publication.publish(document);
        self.pump(now);
    }

    /// Removes our published presence.
    pub fn unpublish(&mut self, now: Instant) {
        self.publication.unpublish();
        self.pump(now);
    }

    /// Whether a PUBLISH, or a SUBSCRIBE ending a subscription, is in flight
    /// (shutting down waits for them).
    pub fn has_presence_ending(&self) -> bool {
        self.publication.is_busy() || self.subscriptions.values().any(Subscription::is_ending)
    }

    /// Watches `target`'s presence; NOTIFYs arrive as
    /// [`EndpointEvent::Subscription`] with the returned id.
    pub fn subscribe(&mut self, now: Instant, target: Uri) -> u64 {
        self.next_subscription += 1;
        let id = self.next_subscription;
        let r = &self.config.registration;
        let mut subscription = Subscription::new(
            SubscriptionConfig {
                local: r.aor.clone(),
                contact: r.contact.clone(),
                target,
                event: "presence".into(),
                accept: "application/pidf+xml".into(),
                expires: r.expires,
                username: r.username.clone(),
                password: r.password.clone(),
                user_agent: r.user_agent.clone(),
            },
            self.rng.random(),
        );
        subscription.start();
        self.subscriptions.insert(id, subscription);
        self.pump(now);
        id
    }

    /// Ends every subscription.
    pub fn unsubscribe_all(&mut self, now: Instant) {
        for s in self.subscriptions.values_mut() {
            s.stop();
        }
        self.pump(now);
    }

    /// Registers again at once with the current server (it may have lost
    /// our binding, or our address changed).
    pub fn refresh(&mut self, now: Instant) {
        self.binding.registration.refresh();
        self.pump(now);
    }

    /// Moves to another server: registers there with `contact` and sends
    /// every new request there. With `make_before_break` the old binding is
    /// removed only once the new one is registered (a planned migration);
    /// without, it is removed at once, where the old server still answers.
    /// Calls keep their dialogs; their requests follow the new server and
    /// the route set they recorded.
    pub fn move_to(
        &mut self,
        now: Instant,
        transport: Transport,
        server: SocketAddr,
        local: SocketAddr,
        contact: Uri,
        make_before_break: bool,
    ) {
        self.config.transport = transport;
        self.config.server = server;
        self.config.local = local;
        self.config.registration.contact = contact;
        self.keepalive.stop();
        let fresh = Binding {
            generation: self.binding.generation + 1,
            transport,
            server,
            registration: Registration::new(self.config.registration.clone(), self.rng.random()),
        };
        let mut old = std::mem::replace(&mut self.binding, fresh);
        let active = !old.registration.is_idle();
        if active {
            self.binding.registration.start();
        }
        let until_registered = make_before_break && old.registration.is_registered();
        if !until_registered {
            old.registration.stop(now);
        }
        // Our entity tag and our subscriptions mean nothing at the new server.
        let publication = self.publication.restart_elsewhere();
        self.leaving.push(Leaving {
            binding: old,
            until_registered,
            publication,
        });
        let contact = self.config.registration.contact.clone();
        for s in self.subscriptions.values_mut() {
            s.restart(contact.clone());
        }
        self.pump(now);
    }

    /// Places a call to `target` with an optional session offer and an
    /// optional location (a PIDF-LO body) for the callee.
    pub fn place_call(
        &mut self,
        now: Instant,
        target: Uri,
        offer: Option<Body>,
        location: Option<Body>,
    ) -> CallId {
        let id = self.new_call_id();
        let call = Call::outgoing(
            self.call_config(),
            target,
            offer,
            location,
            self.rng.random(),
        );
        self.calls.insert(id, call);
        self.pump(now);
        id
    }

    /// Answers an incoming call.
    pub fn answer(&mut self, now: Instant, call: CallId, body: Option<Body>) {
        self.with_call(now, call, |c| c.answer(now, body));
    }

    /// Refuses an incoming call (486 busy, 603 decline, ...).
    pub fn reject(&mut self, now: Instant, call: CallId, status: u16) {
        self.with_call(now, call, |c| c.reject(status));
    }

    /// Ends a call, whatever its state.
    pub fn hangup(&mut self, now: Instant, call: CallId) {
        self.with_call(now, call, |c| c.hangup(now));
    }

    /// Tells the peer of a call where we are (a PIDF-LO body), in an UPDATE
    /// once the call is confirmed.
    pub fn send_location(&mut self, now: Instant, call: CallId, location: Body) {
        self.with_call(now, call, |c| c.send_location(location));
    }

    /// Offers a new session description in a call (hold, resume).
    pub fn update(&mut self, now: Instant, call: CallId, body: Option<Body>) {
        self.with_call(now, call, |c| c.update(now, body));
    }

    /// Accepts the peer's new session description with our answer.
    pub fn accept_update(&mut self, now: Instant, call: CallId, body: Option<Body>) {
        self.with_call(now, call, |c| c.accept_update(now, body));
    }

    /// Whether a call still has protocol work to finish (a BYE or CANCEL
    /// waiting for its answer, a 2xx for its ACK).
    pub fn has_calls_ending(&self) -> bool {
        self.calls.values().any(|c| !c.is_ended())
    }

    /// Whether `call` is still known (ended calls are forgotten).
    pub fn has_call(&self, call: CallId) -> bool {
        self.calls.contains_key(&call)
    }

    fn with_call(&mut self, now: Instant, call: CallId, f: impl FnOnce(&mut Call)) {
        if let Some(c) = self.calls.get_mut(&call) {
            f(c);
        }
        self.pump(now);
    }

    fn new_call_id(&mut self) -> CallId {
        self.next_call += 1;
        self.next_call
    }

    fn call_config(&self) -> CallConfig {
        let r = &self.config.registration;
        CallConfig {
            local: r.aor.clone(),
            contact: r.contact.clone(),
            username: r.username.clone(),
            password: r.password.clone(),
            user_agent: r.user_agent.clone(),
            timers: self.config.timers,
        }
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
            Frame::Pong if (transport, from) == self.server() => self.keepalive.handle_pong(),
            // Pings are answered by the driver.
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
        if (transport, from) == self.server() {
            // Whatever the server sends proves it is there.
            self.keepalive.handle_pong();
        }
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
        let target = (transport, destination);
        let mut outcomes = Vec::new();
        for (tx, owner) in self
            .clients
            .values_mut()
            .filter(|(tx, _)| tx.destination() == target)
        {
            if let Some(o) = tx.handle_transport_error(reason) {
                outcomes.push((owner.clone(), o));
            }
        }
        for (tx, call) in self
            .invite_clients
            .values_mut()
            .filter(|(tx, _)| tx.destination() == target)
        {
            if let Some(o) = tx.handle_transport_error(reason) {
                outcomes.push((Owner::Call(*call, Method::Invite), o));
            }
        }
        let lost_keepalive = outcomes.iter().any(|(o, _)| *o == Owner::Keepalive);
        for (owner, outcome) in outcomes {
            self.deliver(now, owner, outcome);
        }
        if lost_keepalive && self.keepalive.is_running() {
            self.keepalive.stop();
            self.events.push_back(EndpointEvent::KeepaliveLost {
                reason: format!("keepalive refused: {reason}"),
            });
        }
        self.pump(now);
    }

    /// A connection could not be opened: requests sent over TCP only for
    /// their size go over UDP after all (§18.1.1), the others fail.
    pub fn handle_connect_failed(
        &mut self,
        now: Instant,
        transport: Transport,
        remote: SocketAddr,
        reason: &str,
    ) {
        self.downgrade(now, (transport, remote));
        self.handle_transport_error(now, transport, remote, reason);
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
        if (transport, remote) == self.server() && self.binding.registration.is_registered() {
            self.keepalive.stop();
            self.events.push_back(EndpointEvent::FlowLost {
                reason: reason.to_owned(),
            });
            self.binding.registration.handle_flow_lost();
            self.pump(now);
        }
    }

    /// Advances every timer that is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut outcomes = Vec::new();
        for (tx, owner) in self.clients.values_mut() {
            if tx.poll_timeout().is_some_and(|t| t <= now) {
                if let Some(o) = tx.handle_timeout(now) {
                    outcomes.push((owner.clone(), o));
                }
            }
        }
        for (tx, call) in self.invite_clients.values_mut() {
            if tx.poll_timeout().is_some_and(|t| t <= now) {
                if let Some(o) = tx.handle_timeout(now) {
                    outcomes.push((Owner::Call(*call, Method::Invite), o));
                }
            }
        }
        for (owner, outcome) in outcomes {
            self.deliver(now, owner, outcome);
        }
        for tx in self.servers.values_mut() {
            tx.handle_timeout(now);
        }
        for tx in self.invite_servers.values_mut() {
            if let Some(failure) = tx.handle_timeout(now) {
                tracing::debug!(?failure, "INVITE server transaction ended without ACK");
            }
        }
        for call in self.calls.values_mut() {
            call.handle_timeout(now);
        }
        self.binding.registration.handle_timeout(now);
        self.publication.handle_timeout(now);
        for s in self.subscriptions.values_mut() {
            s.handle_timeout(now);
        }
        for l in &mut self.leaving {
            l.binding.registration.handle_timeout(now);
        }
        let jitter = self.rng.random();
        match self.keepalive.handle_timeout(now, jitter) {
            Some(KeepaliveAction::Ping) => self.ping(now),
            Some(KeepaliveAction::Lost) => self.events.push_back(EndpointEvent::KeepaliveLost {
                reason: "no answer to keepalive".into(),
            }),
            None => {}
        }
        self.pump(now);
    }

    /// A CRLF on a stream, an OPTIONS on UDP (RFC 5626 §4.4).
    fn ping(&mut self, now: Instant) {
        let (transport, server) = self.server();
        if transport.is_reliable() {
            self.transmits.push_back(Transmit {
                transport,
                destination: server,
                payload: PING.to_vec(),
            });
        } else {
            // To our own address of record: the registrar routes it back
            // to us while it holds our binding, and answers 404 once it has
            // lost it (a restart), which nothing else on UDP would tell us.
            let aor = self.config.registration.aor.clone();
            let request = options_request(&aor, self.config.local, transport, self.rng.random());
            self.start_client(now, request, Owner::Keepalive);
        }
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
        let invite_clients = self
            .invite_clients
            .values()
            .filter_map(|(tx, _)| tx.poll_timeout());
        let invite_servers = self
            .invite_servers
            .values()
            .filter_map(InviteServerTransaction::poll_timeout);
        let calls = self.calls.values().filter_map(Call::poll_timeout);
        clients
            .chain(servers)
            .chain(invite_clients)
            .chain(invite_servers)
            .chain(calls)
            .chain(self.binding.registration.poll_timeout())
            .chain(
                self.leaving
                    .iter()
                    .filter_map(|l| l.binding.registration.poll_timeout()),
            )
            .chain(self.keepalive.poll_timeout())
            .chain(self.publication.poll_timeout())
            .chain(
                self.subscriptions
                    .values()
                    .filter_map(Subscription::poll_timeout),
            )
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
        if let Some((tx, call)) = self.invite_clients.get_mut(&key) {
            let call = *call;
            if let Some(outcome) = tx.handle_response(now, response) {
                self.deliver(now, Owner::Call(call, Method::Invite), outcome);
            }
            return;
        }
        let Some((tx, owner)) = self.clients.get_mut(&key) else {
            tracing::debug!(%from, status = response.status, "response matches no transaction");
            return;
        };
        let owner = owner.clone();
        if let Some(outcome) = tx.handle_response(now, response) {
            self.deliver(now, owner, outcome);
        }
    }

    fn deliver(&mut self, now: Instant, owner: Owner, outcome: ClientOutcome) {
        match (owner, outcome) {
            (Owner::Registration(generation), outcome) => {
                let binding = std::iter::once(&mut self.binding)
                    .chain(self.leaving.iter_mut().map(|l| &mut l.binding))
                    .find(|b| b.generation == generation);
                if let Some(b) = binding {
                    match outcome {
                        ClientOutcome::Response(r) => b.registration.handle_response(now, &r),
                        ClientOutcome::Failed(f) => b.registration.handle_failure(now, &f),
                    }
                }
            }
            (Owner::Publication, ClientOutcome::Response(r)) => {
                self.publication.handle_response(now, &r)
            }
            (Owner::Publication, ClientOutcome::Failed(f)) => {
                self.publication.handle_failure(now, &f)
            }
            (Owner::LeavingPublication(generation), outcome) => {
                let publication = self
                    .leaving
                    .iter_mut()
                    .find(|l| l.binding.generation == generation)
                    .and_then(|l| l.publication.as_mut());
                if let Some(p) = publication {
                    match outcome {
                        ClientOutcome::Response(r) => p.handle_response(now, &r),
                        ClientOutcome::Failed(f) => p.handle_failure(now, &f),
                    }
                }
            }
            (Owner::Subscription(id), outcome) => {
                if let Some(s) = self.subscriptions.get_mut(&id) {
                    match outcome {
                        ClientOutcome::Response(r) => s.handle_response(now, &r),
                        ClientOutcome::Failed(f) => s.handle_failure(now, &f),
                    }
                }
            }
            (Owner::Keepalive, ClientOutcome::Response(r)) => {
                self.keepalive.handle_pong();
                if matches!(r.status, 404 | 410 | 480) && self.binding.registration.is_registered()
                {
                    tracing::info!(
                        status = r.status,
                        "the registrar lost our binding; registering again"
                    );
                    self.binding.registration.refresh();
                }
            }
            // A timed-out keepalive is the keepalive's own deadline's business.
            (Owner::Keepalive, ClientOutcome::Failed(_)) => {}
            (Owner::Call(id, _), ClientOutcome::Response(r)) => {
                if let Some(call) = self.calls.get_mut(&id) {
                    call.handle_response(now, &r);
                }
            }
            (Owner::Call(id, method), ClientOutcome::Failed(f)) => {
                if let Some(call) = self.calls.get_mut(&id) {
                    call.handle_failure(&method, &f);
                }
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
            // Without a usable Via there is nowhere to send a 400.
            (Err(e), _) | (_, Err(e)) => {
                return self.malformed(from, format!("unusable request: {e}"))
            }
        };
        let branch = via.branch().unwrap_or_default().to_owned();
        let key = |method: Method| TransactionKey {
            branch: branch.clone(),
            method,
        };
        if request.method == Method::Ack {
            // A non-2xx ACK ends its INVITE transaction; a 2xx ACK is the call's.
            let absorbed = self
                .invite_servers
                .get_mut(&key(Method::Invite))
                .is_some_and(|tx| tx.handle_ack(now));
            if !absorbed {
                if let Some(call) = self.calls.values_mut().find(|c| c.matches(&request)) {
                    call.handle_request(now, &request);
                }
            }
            return;
        }
        if request.method == Method::Invite {
            if let Some(tx) = self.invite_servers.get_mut(&key(Method::Invite)) {
                tx.handle_retransmission();
                return;
            }
            self.invite_servers.insert(
                key(Method::Invite),
                InviteServerTransaction::new(&request, transport, from, self.config.timers),
            );
        } else {
            if let Some(tx) = self.servers.get_mut(&key(request.method.clone())) {
                tx.handle_retransmission();
                return;
            }
            self.servers.insert(
                key(request.method.clone()),
                ServerTransaction::new(transport, from, self.config.timers),
            );
        }
        let valid = request.headers.from().is_ok()
            && request.headers.to().is_ok()
            && request.headers.call_id().is_ok();
        if !valid || cseq.method != request.method {
            return self.respond(now, request.response(400, "Bad Request"));
        }
        if request.method == Method::Notify {
            if let Some(s) = self
                .subscriptions
                .values_mut()
                .find(|s| s.matches(&request))
            {
                return s.handle_notify(now, &request);
            }
        }
        if let Some(call) = self.calls.values_mut().find(|c| c.matches(&request)) {
            call.handle_request(now, &request);
            return;
        }
        let in_dialog = request
            .headers
            .to()
            .ok()
            .and_then(|t| t.tag().map(str::to_owned))
            .is_some();
        let response = match request.method {
            Method::Invite if !in_dialog => return self.incoming_call(now, request),
            Method::Options => {
                let mut r = request.response(200, "OK");
                r.headers.push("Allow", ALLOW);
                r.headers.push("Accept", "application/sdp");
                r
            }
            Method::Cancel | Method::Bye | Method::Invite => {
                request.response(481, "Call/Transaction Does Not Exist")
            }
            _ => {
                let mut r = request.response(501, "Not Implemented");
                r.headers.push("Allow", ALLOW);
                r
            }
        };
        self.respond(now, response);
    }

    fn incoming_call(&mut self, now: Instant, invite: Request) {
        let (offer, location) = match geolocation::split(&invite) {
            Ok(parts) => parts,
            Err(e) => {
                tracing::info!(error = %e, "refusing an INVITE whose body we cannot read");
                return self.respond(now, invite.response(400, "Bad Multipart Body"));
            }
        };
        let id = self.new_call_id();
        let from = invite.headers.from().ok();
        let call = Call::incoming(self.call_config(), invite, now, self.rng.random());
        let rejected = call.is_ended();
        self.calls.insert(id, call);
        if let (Some(from), false) = (from, rejected) {
            self.events.push_back(EndpointEvent::IncomingCall {
                call: id,
                from: Box::new(from),
                offer,
                location,
            });
        }
    }

    /// Sends a response through the server transaction of its request.
    fn respond(&mut self, now: Instant, response: Response) {
        let response = self.with_to_tag(response);
        let (Ok(via), Ok(cseq)) = (response.headers.via(), response.headers.cseq()) else {
            return;
        };
        let key = TransactionKey {
            branch: via.branch().unwrap_or_default().to_owned(),
            method: cseq.method.clone(),
        };
        if cseq.method == Method::Invite {
            if let Some(tx) = self.invite_servers.get_mut(&key) {
                tx.respond(now, &response);
            }
        } else if let Some(tx) = self.servers.get_mut(&key) {
            tx.respond(now, &response);
        }
    }

    /// Final responses outside a dialog get a To tag (RFC 3261 §8.2.6.2).
    fn with_to_tag(&mut self, mut response: Response) -> Response {
        if response.status > 100 {
            if let Some(to) = response.headers.get("To") {
                if !to.contains("tag=") {
                    let tagged = format!("{to};tag={:08x}", self.rng.random::<u32>());
                    response.headers.set("To", tagged);
                }
            }
        }
        response
    }

    /// Moves what the agents queued into transactions and collects what to send.
    fn pump(&mut self, now: Instant) {
        let mut requests = self.binding.take_requests();
        let mut registered = false;
        while let Some(ev) = self.binding.registration.poll_event() {
            match ev {
                RegistrationEvent::Registered { .. } => {
                    registered = true;
                    if self.config.keepalive.is_some() {
                        let jitter = self.rng.random();
                        self.keepalive.start(now, jitter);
                    }
                }
                RegistrationEvent::Unregistered | RegistrationEvent::Failed { .. } => {
                    self.keepalive.stop()
                }
            }
            self.events.push_back(EndpointEvent::Registration(ev));
        }
        requests.extend(self.pump_leaving(now, registered));
        let (transport, server) = self.server();
        requests.extend(
            std::iter::from_fn(|| self.publication.poll_request())
                .map(|r| (r, Owner::Publication, transport, server)),
        );
        while let Some(ev) = self.publication.poll_event() {
            self.events.push_back(EndpointEvent::Publication(ev));
        }
        let mut answers = Vec::new();
        for (id, s) in &mut self.subscriptions {
            requests.extend(
                std::iter::from_fn(|| s.poll_request())
                    .map(|r| (r, Owner::Subscription(*id), transport, server)),
            );
            answers.extend(std::iter::from_fn(|| s.poll_response()));
            self.events.extend(
                std::iter::from_fn(|| s.poll_event())
                    .map(|event| EndpointEvent::Subscription { id: *id, event }),
            );
        }
        for (request, owner, transport, server) in requests {
            self.start_client_to(now, request, owner, transport, server);
        }
        for answer in answers {
            self.respond(now, answer);
        }
        let mut actions = Vec::new();
        let mut call_events = Vec::new();
        for (id, call) in &mut self.calls {
            actions.extend(std::iter::from_fn(|| call.poll_action()).map(|a| (*id, a)));
            call_events.extend(std::iter::from_fn(|| call.poll_event()).map(|e| (*id, e)));
        }
        for (id, action) in actions {
            self.act(now, id, action);
        }
        self.events.extend(
            call_events
                .into_iter()
                .map(|(call, event)| EndpointEvent::Call { call, event }),
        );
        for (tx, _) in self.clients.values_mut() {
            self.transmits
                .extend(std::iter::from_fn(|| tx.poll_transmit()));
        }
        for tx in self.servers.values_mut() {
            self.transmits
                .extend(std::iter::from_fn(|| tx.poll_transmit()));
        }
        for (tx, _) in self.invite_clients.values_mut() {
            self.transmits
                .extend(std::iter::from_fn(|| tx.poll_transmit()));
        }
        for tx in self.invite_servers.values_mut() {
            self.transmits
                .extend(std::iter::from_fn(|| tx.poll_transmit()));
        }
        self.clients.retain(|_, (tx, _)| !tx.is_terminated());
        self.servers.retain(|_, tx| !tx.is_terminated());
        self.invite_servers.retain(|_, tx| !tx.is_terminated());
        self.calls.retain(|_, c| !c.is_ended());
        // A Proceeding INVITE of a call that is over (given up after CANCEL)
        // has no timer of its own; it goes with its call.
        let calls = &self.calls;
        self.invite_clients.retain(|_, (tx, call)| {
            !tx.is_terminated() && (calls.contains_key(call) || tx.poll_timeout().is_some())
        });
        let (clients, invites) = (&self.clients, &self.invite_clients);
        self.upgraded
            .retain(|key, _| clients.contains_key(key) || invites.contains_key(key));
    }

    fn act(&mut self, now: Instant, id: CallId, action: CallAction) {
        match action {
            CallAction::Request(request) => {
                let method = request.method.clone();
                self.start_client(now, request, Owner::Call(id, method));
            }
            CallAction::Ack(ack) => {
                let (ack, _) = self.with_new_via(ack, self.config.transport);
                self.transmits.push_back(Transmit {
                    transport: self.config.transport,
                    destination: self.config.server,
                    payload: ack.to_bytes(),
                });
            }
            CallAction::Cancel => {
                // The newest INVITE: one answered by a challenge lingers
                // in its Completed state, and a CANCEL for it matches nothing.
                let invite = self
                    .invite_clients
                    .values()
                    .filter(|(_, c)| *c == id)
                    .map(|(tx, _)| (tx.invite(), tx.destination()))
                    .max_by_key(|(invite, _)| invite.headers.cseq().map_or(0, |c| c.seq))
                    .map(|(invite, to)| (invite.clone(), to));
                if let Some((invite, to)) = invite {
                    self.start_cancel(now, &invite, to, id);
                }
            }
            CallAction::Respond(response) => self.respond(now, response),
        }
    }

    /// CANCEL (RFC 3261 §9.1): the INVITE's Request-URI, Call-ID, From, To,
    /// Route and CSeq number, and its very Via, so it matches the INVITE's
    /// transaction at the next hop, where the INVITE went.
    fn start_cancel(
        &mut self,
        now: Instant,
        invite: &Request,
        (transport, destination): (Transport, SocketAddr),
        id: CallId,
    ) {
        let mut cancel = Request::new(Method::Cancel, invite.uri.clone());
        for name in ["Via", "From", "To", "Call-ID"] {
            if let Some(v) = invite.headers.get(name) {
                cancel.headers.push(name, v);
            }
        }
        cancel.headers.push("Max-Forwards", "70");
        let seq = invite.headers.cseq().map(|c| c.seq).unwrap_or(1);
        cancel.headers.push("CSeq", format!("{seq} CANCEL"));
        for route in invite.headers.get_all("Route") {
            cancel.headers.push("Route", route);
        }
        let Ok(branch) = invite
            .headers
            .via()
            .map(|v| v.branch().unwrap_or_default().to_owned())
        else {
            return;
        };
        let key = TransactionKey {
            branch,
            method: Method::Cancel,
        };
        let tx = ClientTransaction::new(now, &cancel, transport, destination, self.config.timers);
        self.clients
            .insert(key, (tx, Owner::Call(id, Method::Cancel)));
    }

    /// Puts our Via for `transport` with a fresh branch on top of `request`.
    fn with_new_via(
        &mut self,
        mut request: Request,
        transport: Transport,
    ) -> (Request, TransactionKey) {
        let branch = format!("z9hG4bK{:016x}", self.rng.random::<u64>());
        let mut via = Via {
            transport: transport.via_token().to_owned(),
            host: Host::Ip(self.config.local.ip()),
            port: Some(self.config.local.port()),
            params: Default::default(),
        };
        via.params.set("branch", Some(&branch));
        if transport == Transport::Udp {
            via.params.set("rport", None);
        } else {
            // RFC 5923: the server may send requests for our address over
            // this connection, which is how it reaches us behind TLS.
            via.params.set("alias", None);
        }
        request.headers.push_front("Via", via.to_string());
        let key = TransactionKey {
            branch,
            method: request.method.clone(),
        };
        (request, key)
    }

    fn start_client(&mut self, now: Instant, request: Request, owner: Owner) {
        let (transport, server) = self.server();
        self.start_client_to(now, request, owner, transport, server);
    }

    /// Starts a client transaction for `request` to `server`; over TCP
    /// instead of UDP when it is too large for a datagram (§18.1.1).
    fn start_client_to(
        &mut self,
        now: Instant,
        request: Request,
        owner: Owner,
        transport: Transport,
        server: SocketAddr,
    ) {
        let hop = hop_transport(&request, transport);
        let original = (hop != transport).then(|| (request.clone(), owner.clone()));
        let key = self.start_client_over(now, request, owner, hop, server);
        if let Some(original) = original {
            tracing::debug!(method = %original.0.method, "too large for UDP: sending it over TCP");
            self.upgraded.insert(key, original);
        }
    }

    /// Starts a client transaction over exactly `transport`.
    fn start_client_over(
        &mut self,
        now: Instant,
        request: Request,
        owner: Owner,
        transport: Transport,
        server: SocketAddr,
    ) -> TransactionKey {
        let (request, key) = self.with_new_via(request, transport);
        let timers = self.config.timers;
        match owner {
            Owner::Call(id, Method::Invite) => {
                let tx = InviteClientTransaction::new(now, request, transport, server, timers);
                self.invite_clients.insert(key.clone(), (tx, id));
            }
            owner => {
                let tx = ClientTransaction::new(now, &request, transport, server, timers);
                self.clients.insert(key.clone(), (tx, owner));
            }
        }
        key
    }

    /// Sends over UDP what went to `destination` over TCP only for its size.
    fn downgrade(&mut self, now: Instant, (transport, destination): (Transport, SocketAddr)) {
        if transport != Transport::Tcp {
            return;
        }
        let failed: Vec<TransactionKey> = self
            .upgraded
            .keys()
            .filter(|key| {
                let invite = self.invite_clients.get(key).map(|(tx, _)| tx.destination());
                let other = self.clients.get(key).map(|(tx, _)| tx.destination());
                invite.or(other) == Some((transport, destination))
            })
            .cloned()
            .collect();
        for key in failed {
            self.invite_clients.remove(&key);
            self.clients.remove(&key);
            if let Some((request, owner)) = self.upgraded.remove(&key) {
                tracing::debug!(method = %request.method, "TCP refused: sending it over UDP after all");
                self.start_client_over(now, request, owner, Transport::Udp, destination);
            }
        }
    }

    /// Unregisters from servers we left once that is due (at once, or for
    /// make-before-break when the new binding is up) and forgets them when
    /// done. What they report is only logged: the phone's state is the
    /// current binding's.
    fn pump_leaving(&mut self, now: Instant, new_binding_registered: bool) -> Vec<OwnedRequest> {
        let mut requests = Vec::new();
        for l in &mut self.leaving {
            if l.until_registered && new_binding_registered {
                l.until_registered = false;
                l.binding.registration.stop(now);
            }
            requests.extend(l.binding.take_requests());
            while let Some(ev) = l.binding.registration.poll_event() {
                tracing::debug!(server = %l.binding.server, ?ev, "binding at a server we left");
            }
            if let Some(p) = &mut l.publication {
                let b = &l.binding;
                let owner = Owner::LeavingPublication(b.generation);
                requests.extend(
                    std::iter::from_fn(|| p.poll_request())
                        .map(|r| (r, owner.clone(), b.transport, b.server)),
                );
                while let Some(ev) = p.poll_event() {
                    tracing::debug!(server = %b.server, ?ev, "presence at a server we left");
                }
            }
        }
        self.leaving.retain(|l| {
            l.until_registered
                || !l.binding.registration.is_idle()
                || l.publication.as_ref().is_some_and(Publication::is_busy)
        });
        requests
    }
}

/// RFC 3261 §18.1.1: a request larger than this that would go over UDP
/// goes over TCP, since IP fragments of a large datagram are often lost.
const UDP_REQUEST_LIMIT: usize = 1300;

/// Room for the Via we put on top of a request (an IPv6 address, a port,
/// a branch, `rport`).
const VIA_ALLOWANCE: usize = 120;

/// The transport to send `request` over where `transport` is the usual.
fn hop_transport(request: &Request, transport: Transport) -> Transport {
    if transport == Transport::Udp && request.to_bytes().len() + VIA_ALLOWANCE > UDP_REQUEST_LIMIT {
        Transport::Tcp
    } else {
        transport
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
            keepalive: Some(Duration::from_secs(30)),
            keepalive_timeout: Duration::from_secs(5),
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

    /// What was sent, with where it went.
    fn sent_to(ep: &mut Endpoint) -> Vec<(SocketAddr, Vec<u8>)> {
        std::iter::from_fn(|| ep.poll_transmit())
            .map(|t| (t.destination, t.payload))
            .collect()
    }

    fn register_over(ep: &mut Endpoint, t: Instant, transport: Transport, server: SocketAddr) {
        let (dest, bytes) = sent_to(ep).remove(0);
        assert_eq!(dest, server);
        let req = message::parse(&bytes).unwrap();
        let frame = Frame::Message(message::parse(&answer(&req, 200, "Expires: 60")).unwrap());
        ep.handle_frame(t, transport, server, frame);
    }

    #[test]
    fn a_planned_move_registers_at_the_new_server_before_leaving_the_old() {
        let t0 = Instant::now();
        let old: SocketAddr = "127.0.0.2:5060".parse().unwrap();
        let new: SocketAddr = "127.0.0.3:5060".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        let mut ep = endpoint(Transport::Tcp);
        ep.register(t0);
        register_over(&mut ep, t0, Transport::Tcp, old);
        assert!(ep.is_registered());
        let contact = Uri::parse("sip:alice@127.0.0.1:5070;transport=tcp").unwrap();
        ep.move_to(t0, Transport::Tcp, new, local, contact, true);
        let out = sent_to(&mut ep);
        assert_eq!(out.len(), 1, "only the new REGISTER");
        assert_eq!(out[0].0, new);
        let req = message::parse(&out[0].1).unwrap();
        assert_eq!(req.headers().get("Expires"), Some("60"));
        let frame = Frame::Message(message::parse(&answer(&req, 200, "Expires: 60")).unwrap());
        ep.handle_frame(t0, Transport::Tcp, new, frame);
        // Now, and only now, the old binding goes.
        let out = sent_to(&mut ep);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, old);
        let unregister = message::parse(&out[0].1).unwrap();
        assert_eq!(unregister.headers().get("Expires"), Some("0"));
        assert!(ep.is_unregistering());
        let frame = Frame::Message(message::parse(&answer(&unregister, 200, "")).unwrap());
        ep.handle_frame(t0, Transport::Tcp, old, frame);
        assert!(!ep.is_unregistering() && ep.is_registered());
        // Its events were the old binding's business, not the phone's.
        let events: Vec<_> = std::iter::from_fn(|| ep.poll_event()).collect();
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(
                    e,
                    EndpointEvent::Registration(RegistrationEvent::Unregistered)
                ))
                .count(),
            0
        );
    }

    #[test]
    fn keepalives_are_crlf_on_streams_options_on_udp_and_their_loss_is_reported() {
        let t0 = Instant::now();
        let server: SocketAddr = "127.0.0.2:5060".parse().unwrap();
        let mut ep = endpoint(Transport::Tcp);
        ep.register(t0);
        register_over(&mut ep, t0, Transport::Tcp, server);
        ep.handle_timeout(t0 + Duration::from_secs(23));
        assert!(
            sent_to(&mut ep).is_empty(),
            "not before 80 % of the interval"
        );
        let due = t0 + Duration::from_secs(30);
        ep.handle_timeout(due);
        let out = sent_to(&mut ep);
        assert_eq!(out, vec![(server, PING.to_vec())]);
        ep.handle_frame(due, Transport::Tcp, server, Frame::Pong);
        let next = due + Duration::from_secs(30);
        ep.handle_timeout(next);
        // (with the registration's refresh, due by now too)
        assert!(sent_to(&mut ep).contains(&(server, PING.to_vec())));
        let _ = std::iter::from_fn(|| ep.poll_event()).count();
        ep.handle_timeout(next + Duration::from_secs(5));
        assert!(matches!(
            ep.poll_event(),
            Some(EndpointEvent::KeepaliveLost { .. })
        ));

        let mut ep = endpoint(Transport::Udp);
        ep.register(t0);
        register_over(&mut ep, t0, Transport::Udp, server);
        let due = t0 + Duration::from_secs(30);
        ep.handle_timeout(due);
        let out = sent(&mut ep);
        assert!(matches!(&out[0], Message::Request(r)
            if r.method == Method::Options && r.uri.to_string() == "sip:alice@example.test"));
        // The registrar answering 404 for our own address: it lost us.
        ep.handle_datagram(due, server, &answer(&out[0], 404, ""));
        let again = sent(&mut ep);
        assert!(matches!(&again[0], Message::Request(r) if r.method == Method::Register));
        let due = due + Duration::from_secs(30);
        ep.handle_timeout(due);
        assert!(sent(&mut ep)
            .iter()
            .any(|m| matches!(m, Message::Request(r) if r.method == Method::Options)));
        // An ICMP "port unreachable" for it is a loss at once.
        let _ = std::iter::from_fn(|| ep.poll_event()).count();
        ep.handle_transport_error(due, Transport::Udp, server, "connection refused");
        assert!(matches!(
            ep.poll_event(),
            Some(EndpointEvent::KeepaliveLost { .. })
        ));
    }

    #[test]
    fn cancel_after_a_challenge_matches_the_authorised_invite() {
        let t0 = Instant::now();
        let server: SocketAddr = "127.0.0.2:5060".parse().unwrap();
        let mut ep = endpoint(Transport::Udp);
        let call = ep.place_call(t0, Uri::parse("sip:bob@example.test").unwrap(), None, None);
        let first = sent(&mut ep).remove(0);
        ep.handle_datagram(
            t0,
            server,
            &answer(
                &first,
                407,
                "Proxy-Authenticate: Digest realm=\"example.test\", nonce=\"n\", qop=\"auth\"",
            ),
        );
        let out = sent(&mut ep);
        let second = out
            .iter()
            .find(|m| m.headers().get("Proxy-Authorization").is_some())
            .unwrap();
        ep.handle_datagram(t0, server, &answer(second, 180, ""));
        ep.hangup(t0, call);
        let cancel = sent(&mut ep).remove(0);
        let Message::Request(cancel) = cancel else {
            panic!("not a request")
        };
        assert_eq!(cancel.method, Method::Cancel);
        assert_eq!(
            cancel.headers.via().unwrap().branch(),
            second.headers().via().unwrap().branch()
        );
        assert_eq!(
            cancel.headers.cseq().unwrap().seq,
            second.headers().cseq().unwrap().seq
        );
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

    #[test]
    fn a_large_request_goes_over_tcp_and_over_udp_if_tcp_is_refused() {
        let t0 = Instant::now();
        let server: SocketAddr = "127.0.0.2:5060".parse().unwrap();
        let mut ep = endpoint(Transport::Udp);
        let target = Uri::parse("sip:bob@example.test").unwrap();
        ep.place_call(t0, target.clone(), Some(Body::sdp("v=0\r\n")), None);
        let small: Vec<Transmit> = std::iter::from_fn(|| ep.poll_transmit()).collect();
        assert_eq!(small[0].transport, Transport::Udp);

        let big = Body::sdp(format!("v=0\r\n{}", "a=x\r\n".repeat(250)));
        ep.place_call(t0, target, Some(big), None);
        let out: Vec<Transmit> = std::iter::from_fn(|| ep.poll_transmit()).collect();
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].transport, out[0].destination),
            (Transport::Tcp, server)
        );
        let invite = message::parse(&out[0].payload).unwrap();
        assert_eq!(invite.headers().via().unwrap().transport, "TCP");

        ep.handle_connect_failed(t0, Transport::Tcp, server, "connection refused");
        let out: Vec<Transmit> = std::iter::from_fn(|| ep.poll_transmit()).collect();
        assert_eq!(out.len(), 1, "the INVITE again, and no failure");
        assert_eq!(
            (out[0].transport, out[0].destination),
            (Transport::Udp, server)
        );
        let again = message::parse(&out[0].payload).unwrap();
        assert_eq!(again.headers().via().unwrap().transport, "UDP");
        assert_eq!(
            again.headers().get("Call-ID"),
            invite.headers().get("Call-ID")
        );
        assert!(!std::iter::from_fn(|| ep.poll_event()).any(|e| matches!(
            e,
            EndpointEvent::Call {
                event: CallEvent::Ended { .. },
                ..
            }
        )));
    }
}
