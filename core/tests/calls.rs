//! Calls between two endpoints over a simulated network (delay, loss) with a
//! simulated clock: the whole INVITE/ACK/CANCEL/BYE machinery, exactly and
//! quickly, including hundreds of runs on a lossy link.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use locus_core::sip::call::{Body, CallEvent, EndReason};
use locus_core::sip::digest::Password;
use locus_core::sip::endpoint::{CallId, Endpoint, EndpointConfig, EndpointEvent};
use locus_core::sip::registration::{RegistrationConfig, RetryPolicy};
use locus_core::sip::transaction::Timers;
use locus_core::sip::{Transport, Uri};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ALICE: &str = "127.0.0.1:5070";
const BOB: &str = "127.0.0.2:5080";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn endpoint(user: &str, local: &str, peer: &str, seed: u64) -> Endpoint {
    let uri = |s: String| Uri::parse(&s).unwrap();
    Endpoint::new(EndpointConfig {
        transport: Transport::Udp,
        server: addr(peer),
        local: addr(local),
        registration: RegistrationConfig {
            aor: uri(format!("sip:{user}@example.test")),
            registrar: uri("sip:example.test".into()),
            contact: uri(format!("sip:{user}@{local}")),
            instance_id: format!("urn:uuid:00000000-0000-4000-8000-00000000000{}", seed % 10),
            reg_id: 1,
            expires: 600,
            username: user.into(),
            password: Password::new("pw"),
            user_agent: "test".into(),
            retry: RetryPolicy::default(),
        },
        timers: Timers::default(),
        keepalive: None,
        keepalive_timeout: std::time::Duration::from_secs(5),
        seed,
    })
}

/// Which phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Alice,
    Bob,
}

/// Two endpoints and the link between them.
struct Net {
    alice: Endpoint,
    bob: Endpoint,
    now: Instant,
    start: Instant,
    rng: StdRng,
    loss: f64,
    delay: Duration,
    in_flight: Vec<(Instant, Side, Vec<u8>)>,
    events: Vec<(Duration, Side, EndpointEvent)>,
}

impl Net {
    fn new(seed: u64, loss: f64) -> Net {
        let start = Instant::now();
        Net {
            alice: endpoint("alice", ALICE, BOB, seed * 2 + 1),
            bob: endpoint("bob", BOB, ALICE, seed * 2 + 2),
            now: start,
            start,
            rng: StdRng::seed_from_u64(seed),
            loss,
            delay: Duration::from_millis(20),
            in_flight: Vec::new(),
            events: Vec::new(),
        }
    }

    fn side(&mut self, side: Side) -> &mut Endpoint {
        match side {
            Side::Alice => &mut self.alice,
            Side::Bob => &mut self.bob,
        }
    }

    /// Moves transmits onto the link and events into the log.
    fn collect(&mut self) {
        for side in [Side::Alice, Side::Bob] {
            while let Some(t) = self.side(side).poll_transmit() {
                if self.rng.random::<f64>() >= self.loss {
                    let to = if side == Side::Alice {
                        Side::Bob
                    } else {
                        Side::Alice
                    };
                    self.in_flight.push((self.now + self.delay, to, t.payload));
                }
            }
            while let Some(ev) = self.side(side).poll_event() {
                self.events.push((self.now - self.start, side, ev));
            }
        }
    }

    /// Runs until `until` (simulated), or until nothing is left to do.
    fn run_for(&mut self, span: Duration) {
        let until = self.now + span;
        loop {
            self.collect();
            let next = [
                self.in_flight.iter().map(|(t, _, _)| *t).min(),
                self.alice.poll_timeout(),
                self.bob.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next.filter(|t| *t <= until) else {
                self.now = self.now.max(until);
                return;
            };
            self.now = self.now.max(next);
            let now = self.now;
            let due: Vec<_> = self
                .in_flight
                .iter()
                .filter(|(t, _, _)| *t <= now)
                .cloned()
                .collect();
            self.in_flight.retain(|(t, _, _)| *t > now);
            for (_, to, bytes) in due {
                let from = addr(if to == Side::Alice { BOB } else { ALICE });
                self.side(to).handle_datagram(now, from, &bytes);
            }
            self.alice.handle_timeout(now);
            self.bob.handle_timeout(now);
        }
    }

    fn call_events(&self, side: Side) -> Vec<CallEvent> {
        self.events
            .iter()
            .filter(|(_, s, _)| *s == side)
            .filter_map(|(_, _, e)| match e {
                EndpointEvent::Call { event, .. } => Some(event.clone()),
                _ => None,
            })
            .collect()
    }

    fn incoming(&self) -> Option<CallId> {
        self.events.iter().find_map(|(_, s, e)| match (s, e) {
            (Side::Bob, EndpointEvent::IncomingCall { call, .. }) => Some(*call),
            _ => None,
        })
    }

    fn idle(&self) -> bool {
        self.alice.poll_timeout().is_none()
            && self.bob.poll_timeout().is_none()
            && self.in_flight.is_empty()
    }
}

fn target() -> Uri {
    Uri::parse("sip:bob@example.test").unwrap()
}

fn ended(events: &[CallEvent]) -> Vec<EndReason> {
    events
        .iter()
        .filter_map(|e| match e {
            CallEvent::Ended { reason } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn call_connects_and_hangs_up_cleanly() {
    let mut net = Net::new(1, 0.0);
    let now = net.now;
    let call = net
        .alice
        .place_call(now, target(), Some(Body::sdp("v=0 offer")), None);
    net.run_for(Duration::from_millis(100));
    let incoming = net.incoming().expect("bob is called");
    assert_eq!(
        net.call_events(Side::Alice),
        [CallEvent::Ringing { body: None }]
    );
    let now = net.now;
    net.bob.answer(now, incoming, Some(Body::sdp("v=0 answer")));
    net.run_for(Duration::from_millis(100));
    assert_eq!(
        net.call_events(Side::Alice).last(),
        Some(&CallEvent::Connected {
            body: Some(Body::sdp("v=0 answer"))
        })
    );
    assert_eq!(
        net.call_events(Side::Bob),
        [CallEvent::Connected {
            body: Some(Body::sdp("v=0 offer"))
        }]
    );
    let now = net.now;
    net.alice.hangup(now, call);
    net.run_for(Duration::from_secs(60));
    assert_eq!(
        ended(&net.call_events(Side::Alice)),
        [EndReason::LocalHangup]
    );
    assert_eq!(
        ended(&net.call_events(Side::Bob)),
        [EndReason::RemoteHangup]
    );
    assert!(
        !net.alice.has_call(call) && !net.bob.has_call(incoming),
        "ended calls are forgotten"
    );
    assert!(net.idle(), "no transaction or timer left behind");
}

#[test]
fn caller_cancels_before_answer() {
    let mut net = Net::new(2, 0.0);
    let now = net.now;
    let call = net.alice.place_call(now, target(), None, None);
    net.run_for(Duration::from_secs(2));
    let now = net.now;
    net.alice.hangup(now, call);
    net.run_for(Duration::from_secs(60));
    assert_eq!(ended(&net.call_events(Side::Alice)), [EndReason::Cancelled]);
    assert_eq!(
        ended(&net.call_events(Side::Bob)),
        [EndReason::RemoteCancelled]
    );
    assert!(net.idle());
}

#[test]
fn callee_busy_and_decline() {
    for (status, reason) in [(486, EndReason::Busy), (603, EndReason::Declined)] {
        let mut net = Net::new(3, 0.0);
        let now = net.now;
        net.alice.place_call(now, target(), None, None);
        net.run_for(Duration::from_millis(100));
        let incoming = net.incoming().unwrap();
        let now = net.now;
        net.bob.reject(now, incoming, status);
        net.run_for(Duration::from_secs(60));
        assert_eq!(ended(&net.call_events(Side::Alice)), [reason]);
        assert!(net.idle());
    }
}

#[test]
fn callee_hangs_up_and_unknown_dialogs_get_481() {
    let mut net = Net::new(4, 0.0);
    let now = net.now;
    let call = net.alice.place_call(now, target(), None, None);
    net.run_for(Duration::from_millis(100));
    let incoming = net.incoming().unwrap();
    let now = net.now;
    net.bob.answer(now, incoming, None);
    net.run_for(Duration::from_millis(100));
    let now = net.now;
    net.bob.hangup(now, incoming);
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        ended(&net.call_events(Side::Alice)),
        [EndReason::RemoteHangup]
    );
    // Alice has forgotten the call: a second hang-up does nothing.
    let now = net.now;
    net.alice.hangup(now, call);
    net.run_for(Duration::from_secs(1));
    assert_eq!(ended(&net.call_events(Side::Alice)).len(), 1);

    let stray = "BYE sip:alice@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5080;branch=z9hG4bKstray\r\n\
        From: <sip:bob@example.test>;tag=x\r\nTo: <sip:alice@example.test>;tag=y\r\nCall-ID: nope\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n";
    let now = net.now;
    net.alice.handle_datagram(now, addr(BOB), stray.as_bytes());
    let reply = net.alice.poll_transmit().expect("a response");
    assert!(String::from_utf8_lossy(&reply.payload).starts_with("SIP/2.0 481 "));
}

/// On a link that loses a quarter of all packets, every call still ends
/// on both sides, at most once, and leaves nothing running behind it.
#[test]
fn lossy_link_never_leaves_a_call_hanging() {
    let mut connected_both = 0;
    for seed in 0..300 {
        let mut net = Net::new(seed, 0.25);
        let now = net.now;
        let call = net
            .alice
            .place_call(now, target(), Some(Body::sdp("offer")), None);
        net.run_for(Duration::from_secs(1));
        if let Some(incoming) = net.incoming() {
            let now = net.now;
            net.bob.answer(now, incoming, Some(Body::sdp("answer")));
        }
        net.run_for(Duration::from_secs(3));
        let now = net.now;
        net.alice.hangup(now, call);
        net.run_for(Duration::from_secs(300));
        let alice = net.call_events(Side::Alice);
        let bob = net.call_events(Side::Bob);
        assert_eq!(ended(&alice).len(), 1, "seed {seed}: alice {alice:?}");
        assert!(ended(&bob).len() <= 1, "seed {seed}: bob {bob:?}");
        if net.incoming().is_some() {
            assert_eq!(
                ended(&bob).len(),
                1,
                "seed {seed}: bob was called, so his call ends: {bob:?}"
            );
        }
        let both = alice.contains(&CallEvent::Connected {
            body: Some(Body::sdp("answer")),
        }) && bob.iter().any(|e| matches!(e, CallEvent::Connected { .. }));
        connected_both += usize::from(both);
        assert!(net.idle(), "seed {seed}: something still runs");
    }
    // Retransmission makes most calls connect despite the loss.
    assert!(
        connected_both > 200,
        "only {connected_both} of 300 calls connected on both sides"
    );
}
