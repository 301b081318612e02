//! Non-INVITE client and server transactions (RFC 3261 §17.1.2, §17.2.2).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{ClientFailure, ClientOutcome, Timers};
use crate::sip::message::{Request, Response};
use crate::sip::transport::{Transmit, Transport};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// A non-INVITE client transaction.
#[derive(Debug)]
pub struct ClientTransaction {
    transport: Transport,
    destination: SocketAddr,
    request: Vec<u8>,
    state: ClientState,
    timers: Timers,
    /// Timer E: next retransmission and the interval that led to it.
    retransmit: Option<(Instant, Duration)>,
    /// Timer F.
    timeout_at: Instant,
    /// Timer K.
    linger_until: Option<Instant>,
    transmits: VecDeque<Transmit>,
}

impl ClientTransaction {
    /// Starts the transaction and queues the first transmission.
    pub fn new(
        now: Instant,
        request: &Request,
        transport: Transport,
        destination: SocketAddr,
        timers: Timers,
    ) -> Self {
        let bytes = request.to_bytes();
        let mut tx = ClientTransaction {
            transport,
            destination,
            request: bytes,
            state: ClientState::Trying,
            timers,
            retransmit: (!transport.is_reliable()).then(|| (now + timers.t1, timers.t1)),
            timeout_at: now + timers.t1 * 64,
            linger_until: None,
            transmits: VecDeque::new(),
        };
        tx.queue_request();
        tx
    }

    fn queue_request(&mut self) {
        self.transmits.push_back(Transmit {
            transport: self.transport,
            destination: self.destination,
            payload: self.request.clone(),
        });
    }

    /// Where the request goes.
    pub fn destination(&self) -> (Transport, SocketAddr) {
        (self.transport, self.destination)
    }

    /// Feeds a response matched to this transaction.
    pub fn handle_response(&mut self, now: Instant, response: Response) -> Option<ClientOutcome> {
        match self.state {
            ClientState::Trying | ClientState::Proceeding => {
                if response.status < 200 {
                    self.state = ClientState::Proceeding;
                } else {
                    self.state = ClientState::Completed;
                    self.retransmit = None;
                    let k = if self.transport.is_reliable() {
                        Duration::ZERO
                    } else {
                        self.timers.t4
                    };
                    self.linger_until = Some(now + k);
                }
                Some(ClientOutcome::Response(response))
            }
            // Retransmitted finals are absorbed.
            ClientState::Completed | ClientState::Terminated => None,
        }
    }

    /// Advances timers E, F and K.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<ClientOutcome> {
        if let Some(until) = self.linger_until {
            if now >= until {
                self.state = ClientState::Terminated;
                self.linger_until = None;
            }
            return None;
        }
        if matches!(self.state, ClientState::Trying | ClientState::Proceeding)
            && now >= self.timeout_at
        {
            self.state = ClientState::Terminated;
            self.retransmit = None;
            return Some(ClientOutcome::Failed(ClientFailure::Timeout));
        }
        if let Some((at, interval)) = self.retransmit {
            if now >= at {
                self.queue_request();
                // In Proceeding the interval is T2; in Trying it doubles up to T2.
                let next = if self.state == ClientState::Proceeding {
                    self.timers.t2
                } else {
                    (interval * 2).min(self.timers.t2)
                };
                self.retransmit = Some((now + next, next));
            }
        }
        None
    }

    /// The transport could not deliver the request (§17.1.4).
    pub fn handle_transport_error(&mut self, reason: &str) -> Option<ClientOutcome> {
        match self.state {
            ClientState::Trying | ClientState::Proceeding => {
                self.state = ClientState::Terminated;
                self.retransmit = None;
                Some(ClientOutcome::Failed(ClientFailure::Transport(
                    reason.to_owned(),
                )))
            }
            ClientState::Completed | ClientState::Terminated => None,
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
            ClientState::Completed => self.linger_until,
            ClientState::Trying | ClientState::Proceeding => Some(
                self.retransmit
                    .map_or(self.timeout_at, |(at, _)| at.min(self.timeout_at)),
            ),
        }
    }

    /// Whether the transaction is over and can be dropped.
    pub fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// A non-INVITE server transaction.
#[derive(Debug)]
pub struct ServerTransaction {
    transport: Transport,
    reply_to: SocketAddr,
    state: ServerState,
    last_response: Option<Vec<u8>>,
    timers: Timers,
    /// Timer J.
    linger_until: Option<Instant>,
    transmits: VecDeque<Transmit>,
}

impl ServerTransaction {
    /// A transaction for a request that arrived from `reply_to`.
    pub fn new(transport: Transport, reply_to: SocketAddr, timers: Timers) -> Self {
        ServerTransaction {
            transport,
            reply_to,
            state: ServerState::Trying,
            last_response: None,
            timers,
            linger_until: None,
            transmits: VecDeque::new(),
        }
    }

    /// Sends a response from the transaction user.
    pub fn respond(&mut self, now: Instant, response: &Response) {
        if matches!(self.state, ServerState::Completed | ServerState::Terminated) {
            return;
        }
        let bytes = response.to_bytes();
        self.queue(bytes.clone());
        self.last_response = Some(bytes);
        if response.status < 200 {
            self.state = ServerState::Proceeding;
        } else {
            self.state = ServerState::Completed;
            let j = if self.transport.is_reliable() {
                Duration::ZERO
            } else {
                self.timers.t1 * 64
            };
            self.linger_until = Some(now + j);
        }
    }

    /// The same request arrived again: resend the last response, if any.
    pub fn handle_retransmission(&mut self) {
        if matches!(self.state, ServerState::Proceeding | ServerState::Completed) {
            if let Some(bytes) = self.last_response.clone() {
                self.queue(bytes);
            }
        }
    }

    fn queue(&mut self, payload: Vec<u8>) {
        self.transmits.push_back(Transmit {
            transport: self.transport,
            destination: self.reply_to,
            payload,
        });
    }

    /// Advances timer J.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.linger_until.is_some_and(|until| now >= until) {
            self.state = ServerState::Terminated;
            self.linger_until = None;
        }
    }

    /// The next bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When to call [`Self::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.linger_until
    }

    /// Whether the transaction is over and can be dropped.
    pub fn is_terminated(&self) -> bool {
        self.state == ServerState::Terminated
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Method;
    use crate::sip::uri::Uri;

    fn request() -> Request {
        let mut r = Request::new(
            Method::Options,
            Uri::new(None, crate::sip::Host::Domain("example.test".into()), None),
        );
        r.headers
            .push("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKt");
        r.headers.push("CSeq", "1 OPTIONS");
        r
    }

    fn dest() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 2], 5060))
    }

    fn response(status: u16) -> Response {
        request().response(status, "X")
    }

    /// Runs the transaction to `until`, returning when each transmit happened.
    fn run(
        tx: &mut ClientTransaction,
        start: Instant,
        until: Duration,
    ) -> (Vec<Duration>, Vec<(Duration, ClientOutcome)>) {
        let mut sends = Vec::new();
        let mut outcomes = Vec::new();
        let mut now = start;
        loop {
            while tx.poll_transmit().is_some() {
                sends.push(now - start);
            }
            match tx.poll_timeout() {
                Some(t) if t - start <= until => {
                    now = t;
                    if let Some(o) = tx.handle_timeout(now) {
                        outcomes.push((now - start, o));
                    }
                }
                _ => break,
            }
        }
        (sends, outcomes)
    }

    #[test]
    fn udp_retransmits_on_timer_e_and_times_out_on_timer_f() {
        let start = Instant::now();
        let mut tx =
            ClientTransaction::new(start, &request(), Transport::Udp, dest(), Timers::default());
        let (sends, outcomes) = run(&mut tx, start, Duration::from_secs(60));
        let ms: Vec<u128> = sends.iter().map(Duration::as_millis).collect();
        // 0, then T1 doubling to T2 (500, 1000, 2000, 4000, 4000, ...) until 32 s.
        assert_eq!(
            ms,
            [0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        assert_eq!(
            outcomes,
            [(
                Duration::from_secs(32),
                ClientOutcome::Failed(ClientFailure::Timeout)
            )]
        );
        assert!(tx.is_terminated());
    }

    #[test]
    fn provisional_response_switches_to_t2_interval() {
        let start = Instant::now();
        let mut tx =
            ClientTransaction::new(start, &request(), Transport::Udp, dest(), Timers::default());
        tx.poll_transmit();
        let got = tx.handle_response(start + Duration::from_millis(100), response(100));
        assert!(matches!(got, Some(ClientOutcome::Response(r)) if r.status == 100));
        // Timer E was armed for 500 ms; after it fires the interval is T2.
        assert!(tx
            .handle_timeout(start + Duration::from_millis(500))
            .is_none());
        assert!(tx.poll_transmit().is_some());
        assert_eq!(tx.poll_timeout(), Some(start + Duration::from_millis(4500)));
    }

    #[test]
    fn final_response_absorbs_retransmissions_then_lingers_t4() {
        let start = Instant::now();
        let mut tx =
            ClientTransaction::new(start, &request(), Transport::Udp, dest(), Timers::default());
        let t = start + Duration::from_millis(200);
        assert!(tx.handle_response(t, response(200)).is_some());
        assert!(
            tx.handle_response(t, response(200)).is_none(),
            "duplicate 200 absorbed"
        );
        assert!(
            tx.handle_response(t, response(100)).is_none(),
            "late 100 absorbed"
        );
        assert_eq!(tx.poll_timeout(), Some(t + Duration::from_secs(5)));
        tx.handle_timeout(t + Duration::from_secs(5));
        assert!(tx.is_terminated());
    }

    #[test]
    fn reliable_transport_sends_once_and_ends_at_once() {
        let start = Instant::now();
        let mut tx =
            ClientTransaction::new(start, &request(), Transport::Tcp, dest(), Timers::default());
        let (sends, outcomes) = run(&mut tx, start, Duration::from_secs(31));
        assert_eq!(sends, [Duration::ZERO]);
        assert!(outcomes.is_empty());
        let t = start + Duration::from_secs(1);
        assert!(tx.handle_response(t, response(404)).is_some());
        tx.handle_timeout(t);
        assert!(tx.is_terminated());
    }

    #[test]
    fn late_response_after_timeout_is_ignored() {
        let start = Instant::now();
        let mut tx =
            ClientTransaction::new(start, &request(), Transport::Udp, dest(), Timers::default());
        run(&mut tx, start, Duration::from_secs(40));
        assert!(tx
            .handle_response(start + Duration::from_secs(41), response(200))
            .is_none());
    }

    #[test]
    fn transport_error_fails_once() {
        let start = Instant::now();
        let mut tx =
            ClientTransaction::new(start, &request(), Transport::Tcp, dest(), Timers::default());
        assert!(matches!(
            tx.handle_transport_error("refused"),
            Some(ClientOutcome::Failed(ClientFailure::Transport(_)))
        ));
        assert!(tx.handle_transport_error("again").is_none());
        assert_eq!(tx.poll_timeout(), None);
    }

    #[test]
    fn server_resends_last_response_for_duplicates_until_timer_j() {
        let start = Instant::now();
        let mut st = ServerTransaction::new(Transport::Udp, dest(), Timers::default());
        st.handle_retransmission();
        assert!(
            st.poll_transmit().is_none(),
            "nothing to resend while Trying"
        );
        st.respond(start, &response(200));
        assert!(st.poll_transmit().is_some());
        st.handle_retransmission();
        assert!(
            st.poll_transmit().is_some(),
            "duplicate request answered again"
        );
        st.respond(start, &response(500));
        assert!(st.poll_transmit().is_none(), "no second final response");
        assert_eq!(st.poll_timeout(), Some(start + Duration::from_secs(32)));
        st.handle_timeout(start + Duration::from_secs(32));
        assert!(st.is_terminated());
    }

    #[test]
    fn server_over_tcp_terminates_immediately() {
        let start = Instant::now();
        let mut st = ServerTransaction::new(Transport::Tcp, dest(), Timers::default());
        st.respond(start, &response(200));
        st.handle_timeout(start);
        assert!(st.is_terminated());
    }
}
