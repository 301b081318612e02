//! INVITE client and server transactions (RFC 3261 §17.1.1, §17.2.1) with
//! the Accepted state of RFC 6026.
//!
//! A 2xx ends neither transaction at once: the client stays Accepted for
//! 64*T1 (Timer M) so that retransmitted or forked 2xx still reach the
//! transaction user, which ACKs each; the server stays Accepted for 64*T1
//! (Timer L) absorbing INVITE retransmissions while its user retransmits the
//! 2xx until the ACK arrives. ACKs for non-2xx finals belong to the
//! transactions and are built and matched here.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{ClientFailure, ClientOutcome, Timers};
use crate::sip::message::{Method, Request, Response};
use crate::sip::transport::{Transmit, Transport};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    Calling,
    Proceeding,
    Completed,
    Accepted,
    Terminated,
}

/// An INVITE client transaction.
#[derive(Debug)]
pub struct InviteClientTransaction {
    transport: Transport,
    destination: SocketAddr,
    invite: Request,
    bytes: Vec<u8>,
    state: ClientState,
    timers: Timers,
    /// Timer A: next retransmission and the interval that led to it.
    retransmit: Option<(Instant, Duration)>,
    /// Timer B.
    timeout_at: Instant,
    /// Timer D (Completed) or Timer M (Accepted).
    end_at: Option<Instant>,
    /// The ACK for a non-2xx final, resent when that final is retransmitted.
    ack: Option<Vec<u8>>,
    transmits: VecDeque<Transmit>,
}

impl InviteClientTransaction {
    /// Starts the transaction and queues the INVITE.
    pub fn new(
        now: Instant,
        invite: Request,
        transport: Transport,
        destination: SocketAddr,
        timers: Timers,
    ) -> Self {
        let bytes = invite.to_bytes();
        let mut tx = InviteClientTransaction {
            transport,
            destination,
            invite,
            bytes,
            state: ClientState::Calling,
            timers,
            retransmit: (!transport.is_reliable()).then(|| (now + timers.t1, timers.t1)),
            timeout_at: now + timers.t1 * 64,
            end_at: None,
            ack: None,
            transmits: VecDeque::new(),
        };
        tx.queue(tx.bytes.clone());
        tx
    }

    fn queue(&mut self, payload: Vec<u8>) {
        self.transmits.push_back(Transmit {
            transport: self.transport,
            destination: self.destination,
            payload,
        });
    }

    /// Where the INVITE goes.
    pub fn destination(&self) -> (Transport, SocketAddr) {
        (self.transport, self.destination)
    }

    /// The INVITE this transaction sent (for CANCEL and ACK building).
    pub fn invite(&self) -> &Request {
        &self.invite
    }

    /// Whether a provisional response has arrived (a CANCEL may be sent only
    /// then, RFC 3261 §9.1).
    pub fn has_provisional(&self) -> bool {
        self.state == ClientState::Proceeding
    }

    /// Feeds a response matched to this transaction.
    pub fn handle_response(&mut self, now: Instant, response: Response) -> Option<ClientOutcome> {
        match (self.state, response.status) {
            (ClientState::Calling | ClientState::Proceeding, 100..=199) => {
                self.state = ClientState::Proceeding;
                self.retransmit = None;
                Some(ClientOutcome::Response(response))
            }
            (ClientState::Calling | ClientState::Proceeding | ClientState::Accepted, 200..=299) => {
                if self.state != ClientState::Accepted {
                    self.state = ClientState::Accepted;
                    self.retransmit = None;
                    self.end_at = Some(now + self.timers.t1 * 64);
                }
                // Every 2xx goes up: the user ACKs retransmissions and forks.
                Some(ClientOutcome::Response(response))
            }
            (ClientState::Calling | ClientState::Proceeding, _) => {
                self.state = ClientState::Completed;
                self.retransmit = None;
                let ack = non_2xx_ack(&self.invite, &response).to_bytes();
                self.queue(ack.clone());
                self.ack = Some(ack);
                let d = if self.transport.is_reliable() {
                    Duration::ZERO
                } else {
                    Duration::from_secs(32)
                };
                self.end_at = Some(now + d);
                Some(ClientOutcome::Response(response))
            }
            (ClientState::Completed, 300..=699) => {
                if let Some(ack) = self.ack.clone() {
                    self.queue(ack);
                }
                None
            }
            _ => None,
        }
    }

    /// Advances timers A, B, D and M.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<ClientOutcome> {
        if let Some(end) = self.end_at {
            if now >= end {
                self.state = ClientState::Terminated;
                self.end_at = None;
            }
            return None;
        }
        if self.state == ClientState::Calling && now >= self.timeout_at {
            self.state = ClientState::Terminated;
            self.retransmit = None;
            return Some(ClientOutcome::Failed(ClientFailure::Timeout));
        }
        if let Some((at, interval)) = self.retransmit {
            if now >= at {
                self.queue(self.bytes.clone());
                // Timer A doubles without the T2 cap non-INVITE requests have.
                let next = interval * 2;
                self.retransmit = Some((now + next, next));
            }
        }
        None
    }

    /// The transport could not deliver the INVITE.
    pub fn handle_transport_error(&mut self, reason: &str) -> Option<ClientOutcome> {
        match self.state {
            ClientState::Calling | ClientState::Proceeding => {
                self.state = ClientState::Terminated;
                self.retransmit = None;
                Some(ClientOutcome::Failed(ClientFailure::Transport(
                    reason.to_owned(),
                )))
            }
            _ => None,
        }
    }

    /// The next bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When to call [`Self::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ClientState::Terminated => None,
            ClientState::Completed | ClientState::Accepted => self.end_at,
            ClientState::Calling => Some(
                self.retransmit
                    .map_or(self.timeout_at, |(at, _)| at.min(self.timeout_at)),
            ),
            // In Proceeding only the user's own timer (Timer C) applies.
            ClientState::Proceeding => None,
        }
    }

    /// Whether the transaction is over and can be dropped.
    pub fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }
}

/// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3): the INVITE's
/// Request-URI, top Via, From, Call-ID, Route and CSeq number, and the
/// response's To (with its tag).
fn non_2xx_ack(invite: &Request, response: &Response) -> Request {
    let mut ack = Request::new(Method::Ack, invite.uri.clone());
    if let Some(via) = invite.headers.get("Via") {
        ack.headers.push("Via", via);
    }
    ack.headers.push("Max-Forwards", "70");
    for name in ["From", "Call-ID"] {
        if let Some(v) = invite.headers.get(name) {
            ack.headers.push(name, v);
        }
    }
    if let Some(to) = response
        .headers
        .get("To")
        .or_else(|| invite.headers.get("To"))
    {
        ack.headers.push("To", to);
    }
    let seq = invite.headers.cseq().map(|c| c.seq).unwrap_or_default();
    ack.headers.push("CSeq", format!("{seq} ACK"));
    for route in invite.headers.get_all("Route") {
        ack.headers.push("Route", route);
    }
    ack
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
    Terminated,
}

/// How an INVITE server transaction ended badly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFailure {
    /// Timer H: no ACK for a non-2xx final response.
    NoAck,
    /// The response could not be delivered.
    Transport(String),
}

/// An INVITE server transaction.
#[derive(Debug)]
pub struct InviteServerTransaction {
    transport: Transport,
    reply_to: SocketAddr,
    state: ServerState,
    timers: Timers,
    last_response: Option<Vec<u8>>,
    /// Timer G.
    retransmit: Option<(Instant, Duration)>,
    /// Timer H (Completed) or Timer L (Accepted).
    timeout_at: Option<Instant>,
    /// Timer I.
    end_at: Option<Instant>,
    transmits: VecDeque<Transmit>,
}

impl InviteServerTransaction {
    /// A transaction for an INVITE from `reply_to`; sends 100 Trying at once
    /// so the client stops retransmitting while the user decides.
    pub fn new(
        invite: &Request,
        transport: Transport,
        reply_to: SocketAddr,
        timers: Timers,
    ) -> Self {
        let mut tx = InviteServerTransaction {
            transport,
            reply_to,
            state: ServerState::Proceeding,
            timers,
            last_response: None,
            retransmit: None,
            timeout_at: None,
            end_at: None,
            transmits: VecDeque::new(),
        };
        let trying = invite.response(100, "Trying").to_bytes();
        tx.queue(trying.clone());
        tx.last_response = Some(trying);
        tx
    }

    fn queue(&mut self, payload: Vec<u8>) {
        self.transmits.push_back(Transmit {
            transport: self.transport,
            destination: self.reply_to,
            payload,
        });
    }

    /// Sends a response from the transaction user.
    pub fn respond(&mut self, now: Instant, response: &Response) {
        let bytes = response.to_bytes();
        match (self.state, response.status) {
            (ServerState::Proceeding, 100..=199) => {
                self.queue(bytes.clone());
                self.last_response = Some(bytes);
            }
            (ServerState::Proceeding, 200..=299) => {
                self.queue(bytes);
                self.state = ServerState::Accepted;
                self.timeout_at = Some(now + self.timers.t1 * 64);
            }
            // The user retransmits its 2xx through the transaction.
            (ServerState::Accepted, 200..=299) => self.queue(bytes),
            (ServerState::Proceeding, _) => {
                self.queue(bytes.clone());
                self.last_response = Some(bytes);
                self.state = ServerState::Completed;
                if !self.transport.is_reliable() {
                    self.retransmit = Some((now + self.timers.t1, self.timers.t1));
                }
                self.timeout_at = Some(now + self.timers.t1 * 64);
            }
            _ => {}
        }
    }

    /// The INVITE arrived again: resend the last provisional or final.
    pub fn handle_retransmission(&mut self) {
        if matches!(self.state, ServerState::Proceeding | ServerState::Completed) {
            if let Some(bytes) = self.last_response.clone() {
                self.queue(bytes);
            }
        }
    }

    /// An ACK matching this transaction arrived. Returns whether the
    /// transaction absorbed it (the ACK of a non-2xx final); an ACK in the
    /// Accepted state belongs to the user (RFC 6026 §8.7), as some proxies
    /// forward the 2xx's ACK with the INVITE's branch.
    pub fn handle_ack(&mut self, now: Instant) -> bool {
        match self.state {
            ServerState::Completed => {
                self.state = ServerState::Confirmed;
                self.retransmit = None;
                self.timeout_at = None;
                let i = if self.transport.is_reliable() {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                self.end_at = Some(now + i);
                true
            }
            ServerState::Confirmed => true,
            ServerState::Proceeding | ServerState::Accepted | ServerState::Terminated => false,
        }
    }

    /// Advances timers G, H, I and L.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<ServerFailure> {
        if self.end_at.is_some_and(|t| now >= t) {
            self.state = ServerState::Terminated;
            self.end_at = None;
            return None;
        }
        if self.timeout_at.is_some_and(|t| now >= t) {
            let failed = self.state == ServerState::Completed;
            self.state = ServerState::Terminated;
            self.timeout_at = None;
            self.retransmit = None;
            return failed.then_some(ServerFailure::NoAck);
        }
        if let Some((at, interval)) = self.retransmit {
            if now >= at {
                if let Some(bytes) = self.last_response.clone() {
                    self.queue(bytes);
                }
                let next = (interval * 2).min(self.timers.t2);
                self.retransmit = Some((now + next, next));
            }
        }
        None
    }

    /// A response could not be delivered.
    pub fn handle_transport_error(&mut self, reason: &str) -> Option<ServerFailure> {
        if self.state == ServerState::Terminated {
            return None;
        }
        self.state = ServerState::Terminated;
        Some(ServerFailure::Transport(reason.to_owned()))
    }

    /// The next bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When to call [`Self::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.retransmit.map(|(t, _)| t),
            self.timeout_at,
            self.end_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether the transaction is over and can be dropped.
    pub fn is_terminated(&self) -> bool {
        self.state == ServerState::Terminated
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{parse, Message};

    const INVITE: &str = "INVITE sip:bob@example.test SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv1\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:alice@example.test>;tag=a1\r\n\
        To: <sip:bob@example.test>\r\n\
        Call-ID: call-1\r\n\
        CSeq: 7 INVITE\r\n\
        Route: <sip:proxy.example.test;lr>\r\n\
        Contact: <sip:alice@127.0.0.1:5070>\r\n\
        Content-Length: 0\r\n\r\n";

    fn invite() -> Request {
        match parse(INVITE.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn response(status: u16) -> Response {
        let mut r = invite().response(status, "X");
        if status > 100 {
            r.headers.set("To", "<sip:bob@example.test>;tag=b1");
        }
        r
    }

    fn dest() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 2], 5060))
    }

    fn drain(tx: &mut InviteClientTransaction) -> Vec<Message> {
        std::iter::from_fn(|| tx.poll_transmit())
            .map(|t| parse(&t.payload).unwrap())
            .collect()
    }

    #[test]
    fn timer_a_doubles_without_cap_until_timer_b() {
        let t0 = Instant::now();
        let mut tx =
            InviteClientTransaction::new(t0, invite(), Transport::Udp, dest(), Timers::default());
        let mut sends = vec![t0; drain(&mut tx).len()];
        let mut outcome = None;
        while let Some(at) = tx.poll_timeout() {
            if let Some(o) = tx.handle_timeout(at) {
                outcome = Some((at - t0, o));
            }
            sends.extend(std::iter::repeat_n(at, drain(&mut tx).len()));
        }
        let ms: Vec<u128> = sends.iter().map(|t| (*t - t0).as_millis()).collect();
        assert_eq!(ms, [0, 500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(
            outcome,
            Some((
                Duration::from_secs(32),
                ClientOutcome::Failed(ClientFailure::Timeout)
            ))
        );
    }

    #[test]
    fn provisional_stops_retransmission_and_timer_b() {
        let t0 = Instant::now();
        let mut tx =
            InviteClientTransaction::new(t0, invite(), Transport::Udp, dest(), Timers::default());
        drain(&mut tx);
        assert!(matches!(
            tx.handle_response(t0, response(180)),
            Some(ClientOutcome::Response(_))
        ));
        assert!(tx.has_provisional());
        assert_eq!(
            tx.poll_timeout(),
            None,
            "only the user's Timer C runs in Proceeding"
        );
        assert!(tx.handle_timeout(t0 + Duration::from_secs(60)).is_none());
        assert!(drain(&mut tx).is_empty());
    }

    #[test]
    fn non_2xx_final_is_acked_by_the_transaction_and_retransmissions_re_acked() {
        let t0 = Instant::now();
        let mut tx =
            InviteClientTransaction::new(t0, invite(), Transport::Udp, dest(), Timers::default());
        drain(&mut tx);
        assert!(tx.handle_response(t0, response(486)).is_some());
        let sent = drain(&mut tx);
        let [Message::Request(ack)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(ack.uri.to_string(), "sip:bob@example.test");
        assert_eq!(ack.headers.get("CSeq"), Some("7 ACK"));
        assert_eq!(
            ack.headers.via().unwrap().branch(),
            Some("z9hG4bKinv1"),
            "same branch as the INVITE"
        );
        assert_eq!(ack.headers.to().unwrap().tag(), Some("b1"));
        assert_eq!(
            ack.headers.get("Route"),
            Some("<sip:proxy.example.test;lr>")
        );
        assert!(
            tx.handle_response(t0, response(486)).is_none(),
            "retransmitted final absorbed"
        );
        assert_eq!(drain(&mut tx).len(), 1, "and ACKed again");
        assert_eq!(
            tx.poll_timeout(),
            Some(t0 + Duration::from_secs(32)),
            "Timer D"
        );
    }

    #[test]
    fn every_2xx_reaches_the_user_until_timer_m() {
        let t0 = Instant::now();
        let mut tx =
            InviteClientTransaction::new(t0, invite(), Transport::Udp, dest(), Timers::default());
        drain(&mut tx);
        assert!(tx.handle_response(t0, response(200)).is_some());
        assert!(
            drain(&mut tx).is_empty(),
            "the user ACKs a 2xx, not the transaction"
        );
        let retransmitted = tx.handle_response(t0 + Duration::from_secs(1), response(200));
        assert!(matches!(retransmitted, Some(ClientOutcome::Response(r)) if r.status == 200));
        assert_eq!(
            tx.poll_timeout(),
            Some(t0 + Duration::from_secs(32)),
            "Timer M"
        );
        tx.handle_timeout(t0 + Duration::from_secs(32));
        assert!(tx.is_terminated());
    }

    #[test]
    fn reliable_transport_never_retransmits() {
        let t0 = Instant::now();
        let mut tx =
            InviteClientTransaction::new(t0, invite(), Transport::Tcp, dest(), Timers::default());
        assert_eq!(drain(&mut tx).len(), 1);
        assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_secs(32)));
        tx.handle_response(t0, response(404));
        drain(&mut tx);
        tx.handle_timeout(t0);
        assert!(tx.is_terminated(), "Timer D is zero on TCP");
    }

    fn server_sent(tx: &mut InviteServerTransaction) -> Vec<u16> {
        std::iter::from_fn(|| tx.poll_transmit())
            .map(|t| match parse(&t.payload) {
                Ok(Message::Response(r)) => r.status,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn server_sends_trying_and_answers_retransmitted_invites() {
        let t0 = Instant::now();
        let mut tx =
            InviteServerTransaction::new(&invite(), Transport::Udp, dest(), Timers::default());
        assert_eq!(server_sent(&mut tx), [100]);
        tx.respond(t0, &response(180));
        tx.handle_retransmission();
        assert_eq!(server_sent(&mut tx), [180, 180]);
    }

    #[test]
    fn server_retransmits_non_2xx_on_timer_g_until_ack() {
        let t0 = Instant::now();
        let mut tx =
            InviteServerTransaction::new(&invite(), Transport::Udp, dest(), Timers::default());
        server_sent(&mut tx);
        tx.respond(t0, &response(603));
        let mut times = vec![Duration::ZERO];
        server_sent(&mut tx);
        for _ in 0..5 {
            let at = tx.poll_timeout().unwrap();
            tx.handle_timeout(at);
            if !server_sent(&mut tx).is_empty() {
                times.push(at - t0);
            }
        }
        let ms: Vec<u128> = times.iter().map(Duration::as_millis).collect();
        assert_eq!(
            ms,
            [0, 500, 1500, 3500, 7500, 11500],
            "T1 doubling, capped at T2"
        );
        let now = t0 + Duration::from_secs(12);
        assert!(tx.handle_ack(now), "absorbed");
        assert_eq!(
            tx.poll_timeout(),
            Some(now + Duration::from_secs(5)),
            "Timer I"
        );
        tx.handle_timeout(now + Duration::from_secs(5));
        assert!(tx.is_terminated());
    }

    #[test]
    fn server_reports_missing_ack_on_timer_h() {
        let t0 = Instant::now();
        let mut tx =
            InviteServerTransaction::new(&invite(), Transport::Tcp, dest(), Timers::default());
        tx.respond(t0, &response(486));
        assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_secs(32)));
        assert_eq!(
            tx.handle_timeout(t0 + Duration::from_secs(32)),
            Some(ServerFailure::NoAck)
        );
        assert!(tx.is_terminated());
    }

    #[test]
    fn server_accepted_absorbs_invite_retransmissions_and_passes_user_2xx() {
        let t0 = Instant::now();
        let mut tx =
            InviteServerTransaction::new(&invite(), Transport::Udp, dest(), Timers::default());
        server_sent(&mut tx);
        tx.respond(t0, &response(200));
        assert_eq!(server_sent(&mut tx), [200]);
        tx.handle_retransmission();
        assert!(server_sent(&mut tx).is_empty(), "absorbed in Accepted");
        assert!(!tx.handle_ack(t0), "an ACK in Accepted goes to the user");
        tx.respond(t0 + Duration::from_millis(500), &response(200));
        assert_eq!(
            server_sent(&mut tx),
            [200],
            "user's 2xx retransmission goes out"
        );
        assert_eq!(
            tx.handle_timeout(t0 + Duration::from_secs(32)),
            None,
            "Timer L ends quietly"
        );
        assert!(tx.is_terminated());
    }
}
