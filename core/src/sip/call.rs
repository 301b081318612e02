//! One INVITE session (RFC 3261 §13–15), caller or callee, sans-IO.
//!
//! The call queues [`CallAction`]s for the endpoint: requests to run as
//! client transactions, ACKs for 2xx (sent without a transaction), a CANCEL
//! of its INVITE, and responses for the server transaction of the request
//! they answer. It consumes responses, requests, transaction failures and
//! the time, and reports [`CallEvent`]s. Session descriptions travel as
//! opaque [`Body`] values: offer/answer is the media layer's business.
//!
//! The hard cases it handles: a 2xx retransmitted by a callee until the ACK
//! comes (and a BYE when it never does); a caller's ACK for every 2xx
//! retransmission; a CANCEL racing the 200 (the late 200 is ACKed and the
//! call ended with BYE); a CANCEL sent only once a provisional response has
//! arrived (RFC 3261 §9.1); and re-INVITE glare (491, then a retry after
//! 2.1–4 s if we own the Call-ID, else 0–2 s, §14.1).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::auth;
use super::dialog::Dialog;
use super::digest::{DigestClient, Password};
use super::geolocation;
use super::header::NameAddr;
use super::message::{Method, Request, Response};
use super::reliable_provisional::{self, ReliableProvisional};
use super::session_timer::{Due, SessionTimer, TimerHeader, MIN_SE};
use super::transaction::{ClientFailure, Timers};
use super::uri::Uri;

/// A message body and its type (an SDP offer or answer, usually).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// Content-Type.
    pub content_type: String,
    /// The bytes.
    pub bytes: Bytes,
}

impl Body {
    /// An `application/sdp` body.
    pub fn sdp(text: impl Into<Bytes>) -> Body {
        Body {
            content_type: "application/sdp".into(),
            bytes: text.into(),
        }
    }

    fn of(headers: &super::message::Headers, bytes: &Bytes) -> Option<Body> {
        (!bytes.is_empty()).then(|| Body {
            content_type: headers
                .get("Content-Type")
                .unwrap_or("application/octet-stream")
                .to_owned(),
            bytes: bytes.clone(),
        })
    }
}

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// We hung up.
    LocalHangup,
    /// The peer hung up.
    RemoteHangup,
    /// We cancelled before an answer.
    Cancelled,
    /// The caller cancelled before we answered.
    RemoteCancelled,
    /// 486 or 600.
    Busy,
    /// 603.
    Declined,
    /// Another final response.
    Rejected(u16),
    /// No answer from the network (Timer B or F).
    Timeout,
    /// Our 2xx was never ACKed.
    NoAck,
    /// The transport failed.
    Unreachable(String),
    /// The peer no longer knows the dialog (481).
    DialogGone,
    /// The peer stopped refreshing the session (RFC 4028).
    SessionExpired,
}

/// What the call reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// The callee is alerting (180/183), with early media description if any.
    Ringing {
        /// An SDP in the provisional response.
        body: Option<Body>,
    },
    /// The call is established; `body` is the peer's session description.
    Connected {
        /// The answer (caller), the offer (callee, when the INVITE had one)
        /// or the answer in the ACK (callee of an INVITE without an offer).
        body: Option<Body>,
    },
    /// The peer changed the session (re-INVITE or UPDATE): hold, resume,
    /// new media.
    Updated {
        /// The peer's new session description.
        body: Option<Body>,
    },
    /// Our re-INVITE was accepted.
    UpdateAccepted {
        /// The peer's answer.
        body: Option<Body>,
    },
    /// The peer told us where it is (RFC 6442) in a re-INVITE or UPDATE.
    Location {
        /// The PIDF-LO, still encoded.
        body: Body,
    },
    /// The call is over.
    Ended {
        /// Why.
        reason: EndReason,
    },
}

/// What the endpoint must do for the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallAction {
    /// Run as a new client transaction (Via added by the endpoint).
    Request(Request),
    /// Send without a transaction, with a fresh branch: the ACK for a 2xx.
    Ack(Request),
    /// CANCEL the INVITE transaction this call started.
    Cancel,
    /// Send through the server transaction of the request it answers.
    Respond(Response),
}

/// Settings of the local side.
#[derive(Debug, Clone)]
pub struct CallConfig {
    /// Our address of record (From of a call we place).
    pub local: Uri,
    /// Where we are reached (Contact).
    pub contact: Uri,
    /// Digest credentials.
    pub username: String,
    /// Password.
    pub password: Password,
    /// User-Agent header value.
    pub user_agent: String,
    /// Timer values.
    pub timers: Timers,
}

/// The methods we take (the Allow header).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Caller: INVITE sent, no final response.
    Calling,
    /// Callee: INVITE received, not answered.
    Incoming,
    /// Callee: answered, waiting for the ACK.
    Answered,
    Connected,
    /// Caller: hung up before an answer; CANCEL sent or waiting to be.
    Cancelling,
    /// BYE sent.
    Ending,
    Ended,
}

/// One call.
#[derive(Debug)]
pub struct Call {
    config: CallConfig,
    rng: StdRng,
    state: State,
    is_caller: bool,
    invite: Option<Request>,
    dialog: Option<Dialog>,
    digest: DigestClient,
    answered_challenge: bool,
    got_provisional: bool,
    /// Our INVITE carries a location (RFC 6442); a 415 or 400 makes us try
    /// again without.
    location_sent: bool,
    cancel_sent: bool,
    /// §9.1: with no final response this long after CANCEL, give up.
    cancel_deadline: Option<Instant>,
    /// Callee: our 2xx and its retransmission timer (interval, next, give-up).
    pending_2xx: Option<(Response, Duration, Instant, Instant)>,
    /// Our re-INVITE in flight, and the body to offer again after glare.
    reinvite: Option<(u32, Option<Body>)>,
    reinvite_retry: Option<(Instant, Option<Body>)>,
    /// The peer's re-INVITE or UPDATE with an offer, which the user must answer.
    remote_offer: Option<Request>,
    /// The peer listed UPDATE in its Allow header (RFC 3311 §5.1).
    peer_takes_update: bool,
    /// Our location, to go in an UPDATE once the ACK confirms the call
    /// (callee) or once the UPDATE before it is answered (either side).
    pending_location: Option<Body>,
    /// Our location UPDATE is in flight: a newer position waits for its
    /// answer, so a moving phone sends at most one UPDATE per round trip.
    location_in_flight: bool,
    /// Whether `Ended` has been reported (it is, once, when the call ends
    /// for the user, even while its BYE is still in flight).
    end_reported: bool,
    /// RFC 4028, when the peer asked for it; it runs once connected.
    session_timer: Option<SessionTimer>,
    /// Callee: what our 2xx says about the session timer.
    session_timer_headers: Vec<TimerHeader>,
    /// Our latest session description, which a refresh offers again.
    local_body: Option<Body>,
    /// Caller: the last reliable provisional we PRACKed (RFC 3262).
    last_rseq: Option<u32>,
    /// Callee: our 180, sent reliably because the caller requires it.
    reliable_180: Option<ReliableProvisional>,
    actions: VecDeque<CallAction>,
    events: VecDeque<CallEvent>,
}

impl Call {
    /// Places a call to `target` with an optional offer.
    ///
    /// With a `location` (a PIDF-LO body) and an offer, the INVITE carries
    /// both in a multipart/mixed body, points at the location with
    /// `Geolocation: <cid:...>` and forbids routing on it (RFC 6442); a peer
    /// refusing it (415 or 400, or 488, 500, 501, 606 from peers that know
    /// no better) gets the INVITE again without it.
    pub fn outgoing(
        config: CallConfig,
        target: Uri,
        offer: Option<Body>,
        location: Option<Body>,
        seed: u64,
    ) -> Call {
        let mut rng = StdRng::seed_from_u64(seed);
        let call_id = format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>());
        let tag = format!("{:08x}", rng.random::<u32>());
        let mut invite = Request::out_of_dialog(
            Method::Invite,
            target.clone(),
            (&config.local, &tag),
            &target,
            &call_id,
            1,
        );
        let h = &mut invite.headers;
        h.push("Contact", NameAddr::new(config.contact.clone()).to_string());
        h.push("Allow", ALLOW);
        h.push("Supported", "timer, 100rel");
        h.push("User-Agent", config.user_agent.clone());
        let with_location = match (&offer, location) {
            (Some(sdp), Some(pidf)) => Some(geolocation::attach(
                &mut invite.headers,
                Some(sdp),
                &pidf,
                &config.local.host.to_string(),
                &mut rng,
            )),
            _ => None,
        };
        let location_sent = with_location.is_some();
        set_body(&mut invite, with_location.or_else(|| offer.clone()));
        let mut call = Call::new(config, rng, true, State::Calling);
        call.location_sent = location_sent;
        call.local_body = offer;
        call.actions.push_back(CallAction::Request(invite.clone()));
        call.invite = Some(invite);
        call
    }

    /// A call for an INVITE that arrived; answers 180 at once (or 422 when
    /// the session timer it asks for is too short).
    pub fn incoming(config: CallConfig, invite: Request, now: Instant, seed: u64) -> Call {
        let mut rng = StdRng::seed_from_u64(seed);
        let tag = format!("{:08x}", rng.random::<u32>());
        let mut call = Call::new(config, rng, false, State::Incoming);
        call.peer_takes_update = invite.headers.lists("Allow", "UPDATE");
        let timer = SessionTimer::for_invite(&invite, now);
        let unsupported: Vec<&str> = invite
            .headers
            .get_all("Require")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|o| {
                !o.eq_ignore_ascii_case(reliable_provisional::TAG)
                    && !o.eq_ignore_ascii_case("timer")
            })
            .collect();
        match Dialog::from_uas(&invite, &tag) {
            Ok(_) if !unsupported.is_empty() => {
                let mut r = invite.response(420, "Bad Extension");
                r.headers.push("Unsupported", unsupported.join(", "));
                call.actions.push_back(CallAction::Respond(r));
                call.finish(EndReason::Rejected(420));
            }
            Ok(_) if timer.is_err() => {
                let mut r = invite.response(422, "Session Interval Too Small");
                r.headers.push("Min-SE", MIN_SE.to_string());
                call.actions.push_back(CallAction::Respond(r));
                call.finish(EndReason::Rejected(422));
            }
            Ok(dialog) => {
                if let Ok(Some((timer, headers))) = timer {
                    call.session_timer = Some(timer);
                    call.session_timer_headers = headers;
                }
                call.dialog = Some(dialog);
                let mut ringing = call.answer_with(&invite, 180, "Ringing", None);
                if invite.headers.lists("Require", reliable_provisional::TAG) {
                    let seq = invite.headers.cseq().map_or(1, |c| c.seq);
                    let reliable =
                        ReliableProvisional::new(ringing, 1, seq, now, call.config.timers.t1);
                    ringing = reliable.response().clone();
                    call.reliable_180 = Some(reliable);
                }
                call.actions.push_back(CallAction::Respond(ringing));
                call.invite = Some(invite);
            }
            Err(e) => {
                let mut r = invite.response(400, "Bad Request");
                r.headers.push("Warning", format!("399 locus \"{e}\""));
                call.actions.push_back(CallAction::Respond(r));
                call.finish(EndReason::Rejected(400));
            }
        }
        call
    }

    fn new(config: CallConfig, rng: StdRng, is_caller: bool, state: State) -> Call {
        Call {
            config,
            rng,
            state,
            is_caller,
            invite: None,
            dialog: None,
            digest: DigestClient::default(),
            answered_challenge: false,
            got_provisional: false,
            location_sent: false,
            cancel_sent: false,
            cancel_deadline: None,
            pending_2xx: None,
            reinvite: None,
            reinvite_retry: None,
            remote_offer: None,
            peer_takes_update: false,
            pending_location: None,
            location_in_flight: false,
            end_reported: false,
            session_timer: None,
            session_timer_headers: Vec::new(),
            local_body: None,
            last_rseq: None,
            reliable_180: None,
            actions: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The initial INVITE (sent or received).
    pub fn invite(&self) -> Option<&Request> {
        self.invite.as_ref()
    }

    /// Whether the call is over.
    pub fn is_ended(&self) -> bool {
        self.state == State::Ended
    }

    /// Whether `request` belongs to this call: an in-dialog request, or a
    /// CANCEL or retransmission of the INVITE it started with.
    pub fn matches(&self, request: &Request) -> bool {
        if self.dialog.as_ref().is_some_and(|d| d.matches(request)) {
            return true;
        }
        let Some(invite) = &self.invite else {
            return false;
        };
        let same = |name| {
            request.headers.get(name).is_some()
                && request.headers.get(name) == invite.headers.get(name)
        };
        !self.is_caller
            && same("Call-ID")
            && same("From")
            && request.headers.cseq().ok().map(|c| c.seq)
                == invite.headers.cseq().ok().map(|c| c.seq)
    }

    /// Callee: accept with an optional answer (or offer, if the INVITE had none).
    pub fn answer(&mut self, now: Instant, body: Option<Body>) {
        if self.state != State::Incoming {
            return;
        }
        let Some(invite) = self.invite.clone() else {
            return;
        };
        // A final response ends the provisional's retransmission (§3).
        self.reliable_180 = None;
        let mut ok = self.answer_with(&invite, 200, "OK", body.clone());
        for (name, value) in &self.session_timer_headers {
            ok.headers.push(name, value.clone());
        }
        if let Some(timer) = &mut self.session_timer {
            timer.refreshed(now);
        }
        self.local_body = body;
        let t1 = self.config.timers.t1;
        self.pending_2xx = Some((ok.clone(), t1, now + t1, now + t1 * 64));
        self.actions.push_back(CallAction::Respond(ok));
        self.state = State::Answered;
    }

    /// Callee: refuse with 486 Busy Here or 603 Decline (or another code).
    pub fn reject(&mut self, status: u16) {
        if self.state != State::Incoming {
            return;
        }
        let Some(invite) = self.invite.clone() else {
            return;
        };
        let reason = match status {
            486 => "Busy Here",
            603 => "Decline",
            _ => "Rejected",
        };
        let r = self.answer_with(&invite, status, reason, None);
        self.actions.push_back(CallAction::Respond(r));
        self.finish(match status {
            486 | 600 => EndReason::Busy,
            603 => EndReason::Declined,
            s => EndReason::Rejected(s),
        });
    }

    /// Ends the call from our side: CANCEL, BYE or 603, as the state needs.
    pub fn hangup(&mut self, now: Instant) {
        match self.state {
            State::Calling => {
                self.state = State::Cancelling;
                // A CANCEL may go only after a provisional response (§9.1).
                if self.got_provisional {
                    self.send_cancel(now);
                }
            }
            State::Incoming => self.reject(603),
            State::Answered | State::Connected => self.send_bye(EndReason::LocalHangup),
            State::Cancelling | State::Ending | State::Ended => {}
        }
    }

    /// Sends a re-INVITE with a new session description (hold, resume); if
    /// one is already in progress either way, it goes when that one is done.
    pub fn update(&mut self, now: Instant, body: Option<Body>) {
        if self.state == State::Connected && self.reinvite.is_none() && self.remote_offer.is_none()
        {
            self.send_reinvite(body);
        } else if matches!(self.state, State::Answered | State::Connected) {
            self.reinvite_retry = Some((now, body));
        }
    }

    /// Callee of a re-INVITE or UPDATE: accept it with our answer. It
    /// refreshes the session (and may reset its timer, RFC 4028 §9).
    pub fn accept_update(&mut self, now: Instant, body: Option<Body>) {
        if let Some(req) = self.remote_offer.take() {
            let ok = self.accept_refresh(now, &req, body.clone());
            self.local_body = body;
            self.actions.push_back(CallAction::Respond(ok));
        }
    }

    /// The 200 to an in-dialog INVITE or UPDATE, which refreshes the session.
    fn accept_refresh(&mut self, now: Instant, req: &Request, body: Option<Body>) -> Response {
        let mut ok = req.response(200, "OK");
        if let Some(d) = &self.dialog {
            ok.headers.set("To", to_with_tag(req, &d.id().local_tag));
        }
        ok.headers.push(
            "Contact",
            NameAddr::new(self.config.contact.clone()).to_string(),
        );
        match SessionTimer::for_invite(req, now) {
            Ok(Some((timer, headers))) => {
                for (name, value) in headers {
                    ok.headers.push(name, value);
                }
                self.session_timer = Some(timer);
            }
            _ => {
                if let Some(timer) = &mut self.session_timer {
                    timer.refreshed(now);
                }
            }
        }
        set_body_response(&mut ok, body);
        ok
    }

    /// Tells the peer where we are in an UPDATE without an offer (RFC 6442
    /// §4, RFC 3311): the callee's way to share its position, since no
    /// response may carry one. Waits for the ACK if the call is not
    /// confirmed yet; not sent to a peer that takes no UPDATE.
    pub fn send_location(&mut self, location: Body) {
        if !self.peer_takes_update {
            tracing::info!("the peer takes no UPDATE; our location stays with us");
            return;
        }
        match self.state {
            State::Answered => self.pending_location = Some(location),
            State::Connected if self.location_in_flight => self.pending_location = Some(location),
            State::Connected => self.send_location_update(&location),
            _ => {}
        }
    }

    /// The answer to our location UPDATE came (or never will): the newest
    /// position that waited for it goes now.
    fn location_update_done(&mut self) {
        self.location_in_flight = false;
        if self.state == State::Connected {
            if let Some(location) = self.pending_location.take() {
                self.send_location_update(&location);
            }
        }
    }

    fn send_location_update(&mut self, location: &Body) {
        let Some(d) = &mut self.dialog else { return };
        let mut req = d.request(Method::Update);
        req.headers.push(
            "Contact",
            NameAddr::new(self.config.contact.clone()).to_string(),
        );
        let host = self.config.local.host.to_string();
        let body = geolocation::attach(&mut req.headers, None, location, &host, &mut self.rng);
        set_body(&mut req, Some(body));
        self.location_in_flight = true;
        self.actions.push_back(CallAction::Request(req));
    }

    fn send_cancel(&mut self, now: Instant) {
        if !self.cancel_sent {
            self.cancel_sent = true;
            self.cancel_deadline = Some(now + self.config.timers.t1 * 64);
            self.actions.push_back(CallAction::Cancel);
        }
    }

    /// Sends BYE; the call has ended for the user from here on.
    fn send_bye(&mut self, reason: EndReason) {
        let Some(d) = &mut self.dialog else {
            self.finish(reason);
            return;
        };
        let bye = d.request(Method::Bye);
        self.actions.push_back(CallAction::Request(bye));
        self.report_end(reason);
        self.state = State::Ending;
    }

    fn send_reinvite(&mut self, body: Option<Body>) {
        let Some(d) = &mut self.dialog else { return };
        let mut req = d.request(Method::Invite);
        req.headers.push(
            "Contact",
            NameAddr::new(self.config.contact.clone()).to_string(),
        );
        let seq = d.local_seq();
        if let Some(timer) = &mut self.session_timer {
            for (name, value) in timer.refresh_headers() {
                req.headers.push(name, value);
            }
            // Any re-INVITE of ours refreshes; no second one on its heels.
            timer.refresh_sent();
        }
        set_body(&mut req, body.clone());
        self.local_body = body.clone();
        self.reinvite = Some((seq, body));
        self.actions.push_back(CallAction::Request(req));
    }

    /// A response to one of this call's requests.
    pub fn handle_response(&mut self, now: Instant, response: &Response) {
        let Ok(cseq) = response.headers.cseq() else {
            return;
        };
        match cseq.method {
            Method::Invite if self.reinvite.as_ref().is_some_and(|(s, _)| *s == cseq.seq) => {
                self.reinvite_response(now, response, cseq.seq);
            }
            Method::Invite => self.invite_response(now, response),
            Method::Bye if response.status >= 200 && self.state == State::Ending => {
                self.state = State::Ended
            }
            // §12.2.1.2: a 481 to any request in the dialog ends it.
            Method::Update if response.status == 481 => self.finish(EndReason::DialogGone),
            Method::Update if response.status >= 200 => {
                if response.status >= 300 {
                    tracing::info!(status = response.status, "the peer refused our location");
                }
                self.location_update_done();
            }
            _ => {}
        }
    }

    fn invite_response(&mut self, now: Instant, response: &Response) {
        let body = Body::of(&response.headers, &response.body);
        match response.status {
            // Any provisional, 100 included, allows a CANCEL (§9.1).
            100..=199 => {
                if let Some(rseq) = reliable_provisional::rseq(&response.headers) {
                    if self.last_rseq.is_some_and(|last| rseq <= last) {
                        return; // a retransmission, already PRACKed
                    }
                    self.last_rseq = Some(rseq);
                    self.send_prack(response, rseq);
                }
                self.got_provisional = true;
                match self.state {
                    State::Cancelling => self.send_cancel(now),
                    State::Calling if response.status > 100 => {
                        self.events.push_back(CallEvent::Ringing { body })
                    }
                    _ => {}
                }
            }
            200..=299 => self.invite_accepted(now, response, body),
            401 | 407 if self.state == State::Calling && !self.answered_challenge => {
                self.retry_with_credentials(response)
            }
            // RFC 6442 expects 415 or 400 from a peer that cannot take the
            // multipart body; baresip says 500, others 488 or 501. One retry
            // without the location costs little if the reason was another.
            400 | 415 | 488 | 500 | 501 | 606
                if self.state == State::Calling && self.location_sent =>
            {
                self.retry_without_location(response.status)
            }
            status => {
                let reason = match (self.state, status) {
                    (State::Cancelling, 487) => EndReason::Cancelled,
                    (_, 486 | 600) => EndReason::Busy,
                    (_, 603) => EndReason::Declined,
                    (_, 408) => EndReason::Timeout,
                    (_, s) => EndReason::Rejected(s),
                };
                if matches!(self.state, State::Calling | State::Cancelling) {
                    self.finish(reason);
                }
            }
        }
    }

    /// PRACKs a reliable provisional in the early dialog it forms.
    fn send_prack(&mut self, response: &Response, rseq: u32) {
        let Some(invite) = &self.invite else { return };
        if self.dialog.is_none() {
            match Dialog::from_uac(invite, response) {
                Ok(d) => self.dialog = Some(d),
                Err(e) => {
                    tracing::warn!(error = %e, "a reliable provisional without a dialog");
                    return;
                }
            }
        }
        let seq = invite.headers.cseq().map_or(1, |c| c.seq);
        if let Some(d) = &mut self.dialog {
            let mut prack = d.request(Method::Prack);
            prack.headers.push("RAck", format!("{rseq} {seq} INVITE"));
            self.actions.push_back(CallAction::Request(prack));
        }
    }

    fn invite_accepted(&mut self, now: Instant, response: &Response, body: Option<Body>) {
        let Some(invite) = self.invite.clone() else {
            return;
        };
        match &mut self.dialog {
            // The early dialog of a reliable provisional: the 2xx may bring
            // a new remote target.
            Some(d) => d.handle_target_refresh_response(response),
            None => match Dialog::from_uac(&invite, response) {
                Ok(d) => self.dialog = Some(d),
                Err(e) => {
                    tracing::warn!(error = %e, "2xx cannot form a dialog; ending the call");
                    self.finish(EndReason::Rejected(response.status));
                    return;
                }
            },
        }
        let seq = invite.headers.cseq().map(|c| c.seq).unwrap_or(1);
        if let Some(d) = &self.dialog {
            // Every 2xx, retransmitted or not, gets its ACK.
            self.actions.push_back(CallAction::Ack(d.ack(seq)));
        }
        match self.state {
            State::Calling => {
                self.state = State::Connected;
                self.peer_takes_update = response.headers.lists("Allow", "UPDATE");
                self.session_timer = SessionTimer::from_response(response, now);
                self.events.push_back(CallEvent::Connected { body });
            }
            // The 200 won the race with our CANCEL: ACK it, then BYE.
            State::Cancelling => self.send_bye(EndReason::Cancelled),
            _ => {}
        }
    }

    fn retry_with_credentials(&mut self, response: &Response) {
        let Some(invite) = &self.invite else {
            return;
        };
        let cnonce = format!("{:016x}", self.rng.random::<u64>());
        let answered = auth::answer_challenge(
            invite,
            response,
            &mut self.digest,
            &self.config.username,
            &self.config.password,
            &cnonce,
        );
        match answered {
            Ok(invite) => {
                self.answered_challenge = true;
                self.got_provisional = false;
                self.actions.push_back(CallAction::Request(invite.clone()));
                self.invite = Some(invite);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot answer the INVITE's challenge");
                self.finish(EndReason::Rejected(response.status));
            }
        }
    }

    /// The peer cannot take our multipart INVITE: the same call again with
    /// the SDP alone. Credentials go too; a fresh challenge is answered with
    /// a fresh nonce count.
    fn retry_without_location(&mut self, status: u16) {
        let Some(mut invite) = self.invite.clone() else {
            return;
        };
        tracing::info!(
            status,
            "the peer refused our location; calling again without it"
        );
        let seq = invite.headers.cseq().map(|c| c.seq).unwrap_or(1) + 1;
        invite.headers.set("CSeq", format!("{seq} INVITE"));
        for name in ["Via", "Authorization", "Proxy-Authorization"]
            .into_iter()
            .chain(geolocation::HEADERS)
        {
            invite.headers.remove(name);
        }
        set_body(&mut invite, self.local_body.clone());
        self.location_sent = false;
        self.answered_challenge = false;
        self.got_provisional = false;
        self.actions.push_back(CallAction::Request(invite.clone()));
        self.invite = Some(invite);
    }

    fn reinvite_response(&mut self, now: Instant, response: &Response, seq: u32) {
        if response.status < 200 {
            return;
        }
        let body = self.reinvite.take().and_then(|(_, b)| b);
        if let Some(timer) = &mut self.session_timer {
            // Refreshed on success; on failure, tried again in half an
            // interval (the peer's deadline still stands).
            timer.refreshed(now);
            if let Some(renewed) = SessionTimer::from_response(response, now) {
                *timer = renewed;
            }
        }
        match response.status {
            200..=299 => {
                if let Some(d) = &mut self.dialog {
                    d.handle_target_refresh_response(response);
                    self.actions.push_back(CallAction::Ack(d.ack(seq)));
                }
                let body = Body::of(&response.headers, &response.body);
                self.events.push_back(CallEvent::UpdateAccepted { body });
            }
            491 => {
                // §14.1: the Call-ID owner waits 2.1–4 s, the other 0–2 s.
                let ms = if self.is_caller {
                    self.rng.random_range(2100..=4000)
                } else {
                    self.rng.random_range(0..=2000)
                };
                self.reinvite_retry = Some((now + Duration::from_millis(ms), body));
            }
            // §14.1: the dialog is gone (481), or should be ended (408).
            481 => self.finish(EndReason::DialogGone),
            408 => self.send_bye(EndReason::Timeout),
            // Any other failure leaves the session as it was.
            _ => {}
        }
    }

    /// A request within this call (matched with [`Call::matches`]).
    pub fn handle_request(&mut self, now: Instant, request: &Request) {
        if request.method == Method::Cancel {
            self.handle_cancel(request);
            return;
        }
        let to_tag = request
            .headers
            .to()
            .ok()
            .and_then(|t| t.tag().map(str::to_owned));
        if request.method == Method::Invite && to_tag.is_none() {
            // A retransmitted initial INVITE (no To tag yet) is the
            // transaction's business; a re-INVITE always has our tag.
            return;
        }
        if let Some(d) = &mut self.dialog {
            if let Err(e) = d.handle_remote_request(request) {
                tracing::warn!(error = %e, "rejecting an in-dialog request");
                if request.method != Method::Ack {
                    self.actions.push_back(CallAction::Respond(
                        request.response(500, "Server Internal Error"),
                    ));
                }
                return;
            }
        }
        match request.method {
            Method::Ack => {
                if self.state == State::Answered {
                    self.pending_2xx = None;
                    self.state = State::Connected;
                    // The INVITE's offer; or, when it had none, the answer
                    // to our offer in the 200, which the ACK carries.
                    let body = self
                        .invite
                        .as_ref()
                        .and_then(|i| Body::of(&i.headers, &i.body))
                        .or_else(|| Body::of(&request.headers, &request.body));
                    self.events.push_back(CallEvent::Connected { body });
                    if let Some(location) = self.pending_location.take() {
                        self.send_location_update(&location);
                    }
                }
            }
            Method::Bye => {
                self.actions
                    .push_back(CallAction::Respond(request.response(200, "OK")));
                self.pending_2xx = None;
                self.finish(EndReason::RemoteHangup);
            }
            Method::Prack => {
                let confirms = self.reliable_180.as_ref().is_some_and(|p| {
                    request
                        .headers
                        .get("RAck")
                        .is_some_and(|rack| p.acknowledged_by(rack))
                });
                let r = if confirms {
                    self.reliable_180 = None;
                    request.response(200, "OK")
                } else {
                    request.response(481, "Call/Transaction Does Not Exist")
                };
                self.actions.push_back(CallAction::Respond(r));
            }
            Method::Invite | Method::Update => self.remote_refresh(now, request),
            _ => {
                let mut r = request.response(405, "Method Not Allowed");
                r.headers.push("Allow", ALLOW);
                self.actions.push_back(CallAction::Respond(r));
            }
        }
    }

    /// A re-INVITE, or an UPDATE: with an offer the user must answer it;
    /// without, it only refreshes the session or tells where the peer is.
    fn remote_refresh(&mut self, now: Instant, request: &Request) {
        let (sdp, location) = match geolocation::split(request) {
            Ok(parts) => parts,
            Err(e) => {
                let mut r = request.response(400, "Bad Multipart Body");
                r.headers.push("Warning", format!("399 locus \"{e}\""));
                self.actions.push_back(CallAction::Respond(r));
                return;
            }
        };
        if request.method == Method::Update && sdp.is_none() {
            let ok = self.accept_refresh(now, request, None);
            self.actions.push_back(CallAction::Respond(ok));
        } else if self.reinvite.is_some() || self.remote_offer.is_some() {
            let r = request.response(491, "Request Pending");
            self.actions.push_back(CallAction::Respond(r));
            return;
        } else {
            self.remote_offer = Some(request.clone());
            self.events.push_back(CallEvent::Updated { body: sdp });
        }
        if let Some(body) = location {
            self.events.push_back(CallEvent::Location { body });
        }
    }

    fn handle_cancel(&mut self, cancel: &Request) {
        self.actions
            .push_back(CallAction::Respond(cancel.response(200, "OK")));
        if self.state == State::Incoming {
            if let Some(invite) = self.invite.clone() {
                let r = self.answer_with(&invite, 487, "Request Terminated", None);
                self.actions.push_back(CallAction::Respond(r));
            }
            self.finish(EndReason::RemoteCancelled);
        }
    }

    /// A client transaction of this call failed.
    pub fn handle_failure(&mut self, method: &Method, failure: &ClientFailure) {
        let reason = match failure {
            ClientFailure::Timeout => EndReason::Timeout,
            ClientFailure::Transport(why) => EndReason::Unreachable(why.clone()),
        };
        match (method, self.state) {
            (Method::Invite, State::Calling) => self.finish(reason),
            (Method::Invite, State::Cancelling) => self.finish(EndReason::Cancelled),
            (Method::Invite, _) if self.reinvite.is_some() => {
                self.reinvite = None;
                self.send_bye(reason);
            }
            (Method::Bye, State::Ending) => self.state = State::Ended,
            (Method::Update, _) => {
                // Unanswered: the position that waited for it is stale by
                // now; the next move is sent afresh.
                self.location_in_flight = false;
                self.pending_location = None;
            }
            _ => {}
        }
    }

    /// Runs the call's own timers: 2xx retransmission, the wait after
    /// CANCEL, the glare retry and the session timer.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Incoming {
            match self.reliable_180.as_mut().and_then(|p| p.due(now)) {
                Some(reliable_provisional::Due::Resend(r)) => {
                    self.actions.push_back(CallAction::Respond(r))
                }
                Some(reliable_provisional::Due::GiveUp) => {
                    // §3: no PRACK in 64·T1 refuses the INVITE.
                    self.reliable_180 = None;
                    if let Some(invite) = self.invite.clone() {
                        let r = self.answer_with(&invite, 500, "No PRACK", None);
                        self.actions.push_back(CallAction::Respond(r));
                    }
                    return self.finish(EndReason::Timeout);
                }
                None => {}
            }
        }
        if self.state == State::Connected {
            match self.session_timer.and_then(|t| t.due(now)) {
                Some(Due::Expired) => return self.send_bye(EndReason::SessionExpired),
                Some(Due::Refresh) if self.reinvite.is_none() && self.remote_offer.is_none() => {
                    self.send_reinvite(self.local_body.clone());
                }
                _ => {}
            }
        }
        if self.state == State::Cancelling && self.cancel_deadline.is_some_and(|t| now >= t) {
            self.finish(EndReason::Cancelled);
            return;
        }
        if let Some((ok, interval, next, give_up)) = self.pending_2xx.clone() {
            if now >= give_up {
                // §13.3.1.4: no ACK in 64*T1 ends the call with a BYE.
                self.pending_2xx = None;
                self.send_bye(EndReason::NoAck);
                return;
            }
            if now >= next {
                let interval = (interval * 2).min(self.config.timers.t2);
                self.pending_2xx = Some((ok.clone(), interval, now + interval, give_up));
                self.actions.push_back(CallAction::Respond(ok));
            }
        }
        if let Some((at, _)) = &self.reinvite_retry {
            if now >= *at
                && self.state == State::Connected
                && self.reinvite.is_none()
                && self.remote_offer.is_none()
            {
                if let Some((_, body)) = self.reinvite_retry.take() {
                    self.send_reinvite(body);
                }
            }
        }
    }

    /// When to call [`Call::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let resend = self
            .pending_2xx
            .as_ref()
            .map(|(_, _, next, give_up)| (*next).min(*give_up));
        let retry = self.reinvite_retry.as_ref().map(|(at, _)| *at);
        let cancel = self
            .cancel_deadline
            .filter(|_| self.state == State::Cancelling);
        let session = self
            .session_timer
            .and_then(|t| t.deadline())
            .filter(|_| self.state == State::Connected);
        let provisional = self
            .reliable_180
            .as_ref()
            .map(ReliableProvisional::deadline)
            .filter(|_| self.state == State::Incoming);
        resend
            .into_iter()
            .chain(retry)
            .chain(cancel)
            .chain(session)
            .chain(provisional)
            .min()
    }

    /// The next thing for the endpoint to do.
    pub fn poll_action(&mut self) -> Option<CallAction> {
        self.actions.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    fn finish(&mut self, reason: EndReason) {
        self.report_end(reason);
        self.state = State::Ended;
    }

    fn report_end(&mut self, reason: EndReason) {
        self.pending_2xx = None;
        self.reinvite_retry = None;
        if !std::mem::replace(&mut self.end_reported, true) {
            self.events.push_back(CallEvent::Ended { reason });
        }
    }

    /// A response to the initial INVITE carrying our To tag and Contact.
    fn answer_with(
        &self,
        invite: &Request,
        status: u16,
        reason: &str,
        body: Option<Body>,
    ) -> Response {
        let mut r = invite.response(status, reason);
        if let Some(d) = &self.dialog {
            r.headers.set("To", to_with_tag(invite, &d.id().local_tag));
        }
        if (101..300).contains(&status) {
            // A dialog-forming response carries the Record-Route of the
            // request (RFC 3261 §12.1.1), so the caller routes through the
            // same proxies.
            for rr in invite.headers.get_all("Record-Route") {
                r.headers.push("Record-Route", rr);
            }
            r.headers.push(
                "Contact",
                NameAddr::new(self.config.contact.clone()).to_string(),
            );
            r.headers.push("Allow", ALLOW);
        }
        set_body_response(&mut r, body);
        r
    }
}

fn to_with_tag(request: &Request, tag: &str) -> String {
    match request.headers.to() {
        Ok(mut to) if to.tag().is_none() => {
            to.params.set("tag", Some(tag));
            to.to_string()
        }
        Ok(to) => to.to_string(),
        Err(_) => request.headers.get("To").unwrap_or_default().to_owned(),
    }
}

fn set_body(request: &mut Request, body: Option<Body>) {
    if let Some(b) = body {
        request.headers.set("Content-Type", b.content_type);
        request.body = b.bytes;
    }
}

fn set_body_response(response: &mut Response, body: Option<Body>) {
    if let Some(b) = body {
        response.headers.set("Content-Type", b.content_type);
        response.body = b.bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(user: &str, port: u16) -> CallConfig {
        CallConfig {
            local: Uri::parse(&format!("sip:{user}@example.test")).unwrap(),
            contact: Uri::parse(&format!("sip:{user}@127.0.0.1:{port}")).unwrap(),
            username: user.into(),
            password: Password::new("pw"),
            user_agent: "test".into(),
            timers: Timers::default(),
        }
    }

    /// Alice calling Bob without an offer.
    fn dial(seed: u64) -> Call {
        Call::outgoing(
            config("alice", 5070),
            Uri::parse("sip:bob@example.test").unwrap(),
            None,
            None,
            seed,
        )
    }

    /// What a transaction layer would do to a request: add a Via.
    fn with_via(mut r: Request, n: &mut u32) -> Request {
        *n += 1;
        r.headers.push_front(
            "Via",
            format!("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKt{n}"),
        );
        r
    }

    fn actions(call: &mut Call) -> Vec<CallAction> {
        std::iter::from_fn(|| call.poll_action()).collect()
    }

    fn events(call: &mut Call) -> Vec<CallEvent> {
        std::iter::from_fn(|| call.poll_event()).collect()
    }

    fn only_request(call: &mut Call, n: &mut u32) -> Request {
        match &actions(call)[..] {
            [CallAction::Request(r)] => with_via(r.clone(), n),
            other => panic!("expected one request, got {other:?}"),
        }
    }

    fn responses(call: &mut Call) -> Vec<Response> {
        actions(call)
            .into_iter()
            .map(|a| match a {
                CallAction::Respond(r) => r,
                other => panic!("expected responses, got {other:?}"),
            })
            .collect()
    }

    /// A caller and a callee up to the callee ringing.
    fn ringing(t0: Instant) -> (Call, Call, u32) {
        let mut n = 0;
        let target = Uri::parse("sip:bob@example.test").unwrap();
        let mut alice = Call::outgoing(
            config("alice", 5070),
            target,
            Some(Body::sdp("offer")),
            None,
            1,
        );
        let invite = only_request(&mut alice, &mut n);
        let mut bob = Call::incoming(config("bob", 5080), invite, t0, 2);
        let ringing = responses(&mut bob);
        assert_eq!(ringing.iter().map(|r| r.status).collect::<Vec<_>>(), [180]);
        alice.handle_response(t0, &ringing[0]);
        assert_eq!(events(&mut alice), [CallEvent::Ringing { body: None }]);
        (alice, bob, n)
    }

    fn ack_of(call: &mut Call, n: &mut u32) -> Request {
        match &actions(call)[..] {
            [CallAction::Ack(a)] => with_via(a.clone(), n),
            other => panic!("expected an ACK, got {other:?}"),
        }
    }

    #[test]
    fn call_answer_and_hang_up() {
        let t0 = Instant::now();
        let (mut alice, mut bob, mut n) = ringing(t0);
        bob.answer(t0, Some(Body::sdp("answer")));
        let ok = responses(&mut bob).remove(0);
        assert_eq!(ok.status, 200);
        assert!(ok.headers.to().unwrap().tag().is_some());
        alice.handle_response(t0, &ok);
        assert_eq!(
            events(&mut alice),
            [CallEvent::Connected {
                body: Some(Body::sdp("answer"))
            }]
        );
        let ack = ack_of(&mut alice, &mut n);
        assert_eq!(ack.headers.get("CSeq"), Some("1 ACK"));
        assert!(bob.matches(&ack));
        bob.handle_request(t0, &ack);
        assert_eq!(
            events(&mut bob),
            [CallEvent::Connected {
                body: Some(Body::sdp("offer"))
            }]
        );
        assert_eq!(bob.poll_timeout(), None, "no more 2xx retransmission");

        alice.hangup(t0);
        let bye = only_request(&mut alice, &mut n);
        assert_eq!(
            events(&mut alice),
            [CallEvent::Ended {
                reason: EndReason::LocalHangup
            }]
        );
        assert!(bob.matches(&bye));
        bob.handle_request(t0, &bye);
        let bye_ok = responses(&mut bob).remove(0);
        assert_eq!(
            events(&mut bob),
            [CallEvent::Ended {
                reason: EndReason::RemoteHangup
            }]
        );
        assert!(bob.is_ended());
        alice.handle_response(t0, &bye_ok);
        assert!(alice.is_ended());
        assert!(events(&mut alice).is_empty(), "Ended reported once");
    }

    #[test]
    fn callee_responses_copy_record_route_so_the_caller_routes_back() {
        let t0 = Instant::now();
        let mut n = 0;
        let mut alice = dial(9);
        let mut invite = only_request(&mut alice, &mut n);
        invite
            .headers
            .push("Record-Route", "<sip:proxy.example.test;lr>");
        let mut bob = Call::incoming(config("bob", 5080), invite, t0, 10);
        let ringing = responses(&mut bob).remove(0);
        assert_eq!(
            ringing.headers.get("Record-Route"),
            Some("<sip:proxy.example.test;lr>")
        );
        bob.answer(t0, None);
        let ok = responses(&mut bob).remove(0);
        alice.handle_response(t0, &ok);
        let ack = ack_of(&mut alice, &mut n);
        assert_eq!(
            ack.headers.get("Route"),
            Some("<sip:proxy.example.test;lr>"),
            "the ACK goes back through the proxy"
        );
    }

    #[test]
    fn callee_retransmits_2xx_until_ack_then_gives_up_with_bye() {
        let t0 = Instant::now();
        let (_alice, mut bob, _) = ringing(t0);
        bob.answer(t0, Some(Body::sdp("answer")));
        responses(&mut bob);
        let mut resent = Vec::new();
        while let Some(at) = bob.poll_timeout() {
            bob.handle_timeout(at);
            for a in actions(&mut bob) {
                match a {
                    CallAction::Respond(r) if r.status == 200 => resent.push((at - t0).as_millis()),
                    CallAction::Request(r) => {
                        assert_eq!(r.method, Method::Bye);
                        assert_eq!(at - t0, Duration::from_secs(32));
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(
            resent,
            [500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        assert_eq!(
            events(&mut bob),
            [CallEvent::Ended {
                reason: EndReason::NoAck
            }]
        );
    }

    #[test]
    fn caller_acks_every_2xx_retransmission() {
        let t0 = Instant::now();
        let (mut alice, mut bob, _) = ringing(t0);
        bob.answer(t0, None);
        let ok = responses(&mut bob).remove(0);
        for _ in 0..3 {
            alice.handle_response(t0, &ok);
            assert!(matches!(&actions(&mut alice)[..], [CallAction::Ack(_)]));
        }
        assert_eq!(events(&mut alice).len(), 1, "connected once");
    }

    #[test]
    fn cancel_waits_for_a_provisional_then_ends_on_487() {
        let t0 = Instant::now();
        let mut n = 0;
        let mut alice = dial(3);
        let invite = only_request(&mut alice, &mut n);
        alice.hangup(t0);
        assert!(
            actions(&mut alice).is_empty(),
            "no CANCEL before a provisional"
        );
        let trying = invite.response(100, "Trying");
        alice.handle_response(t0, &trying);
        assert_eq!(
            actions(&mut alice),
            [CallAction::Cancel],
            "100 Trying is a provisional response too"
        );
        let mut ringing = invite.response(180, "Ringing");
        ringing.headers.set("To", "<sip:bob@example.test>;tag=b");
        alice.handle_response(t0, &ringing);
        assert!(actions(&mut alice).is_empty(), "one CANCEL only");
        let mut terminated = invite.response(487, "Request Terminated");
        terminated.headers.set("To", "<sip:bob@example.test>;tag=b");
        alice.handle_response(t0, &terminated);
        assert_eq!(
            events(&mut alice),
            [CallEvent::Ended {
                reason: EndReason::Cancelled
            }]
        );
    }

    #[test]
    fn cancel_without_final_response_gives_up_after_64_t1() {
        let t0 = Instant::now();
        let (mut alice, _bob, _) = ringing(t0);
        alice.hangup(t0);
        assert_eq!(actions(&mut alice), [CallAction::Cancel]);
        assert_eq!(alice.poll_timeout(), Some(t0 + Duration::from_secs(32)));
        alice.handle_timeout(t0 + Duration::from_secs(32));
        assert_eq!(
            events(&mut alice),
            [CallEvent::Ended {
                reason: EndReason::Cancelled
            }]
        );
        assert!(alice.is_ended());
    }

    #[test]
    fn cancel_racing_200_is_acked_and_ended_with_bye() {
        let t0 = Instant::now();
        let (mut alice, mut bob, _) = ringing(t0);
        alice.hangup(t0);
        assert_eq!(actions(&mut alice), [CallAction::Cancel]);
        bob.answer(t0, None);
        let ok = responses(&mut bob).remove(0);
        alice.handle_response(t0, &ok);
        let acts = actions(&mut alice);
        assert!(
            matches!(&acts[..], [CallAction::Ack(_), CallAction::Request(bye)] if bye.method == Method::Bye),
            "{acts:?}"
        );
        assert_eq!(
            events(&mut alice),
            [CallEvent::Ended {
                reason: EndReason::Cancelled
            }]
        );
    }

    #[test]
    fn callee_answers_cancel_with_200_and_487() {
        let t0 = Instant::now();
        let (_alice, mut bob, _) = ringing(t0);
        let invite = bob.invite().unwrap().clone();
        let mut cancel = Request::new(Method::Cancel, invite.uri.clone());
        for h in ["Via", "From", "To", "Call-ID"] {
            cancel.headers.push(h, invite.headers.get(h).unwrap());
        }
        cancel.headers.push("CSeq", "1 CANCEL");
        assert!(bob.matches(&cancel));
        bob.handle_request(t0, &cancel);
        let statuses: Vec<_> = responses(&mut bob)
            .iter()
            .map(|r| (r.status, r.headers.cseq().unwrap().method))
            .collect();
        assert_eq!(statuses, [(200, Method::Cancel), (487, Method::Invite)]);
        assert_eq!(
            events(&mut bob),
            [CallEvent::Ended {
                reason: EndReason::RemoteCancelled
            }]
        );
    }

    #[test]
    fn busy_and_decline_reach_the_caller() {
        for (status, reason) in [(486, EndReason::Busy), (603, EndReason::Declined)] {
            let t0 = Instant::now();
            let (mut alice, mut bob, _) = ringing(t0);
            bob.reject(status);
            let r = responses(&mut bob).remove(0);
            assert_eq!(r.status, status);
            alice.handle_response(t0, &r);
            assert_eq!(events(&mut alice), [CallEvent::Ended { reason }]);
        }
    }

    #[test]
    fn invite_challenge_is_answered_once() {
        let t0 = Instant::now();
        let mut n = 0;
        let mut alice = dial(4);
        let invite = only_request(&mut alice, &mut n);
        let mut challenge = invite.response(407, "Proxy Authentication Required");
        challenge.headers.set("To", "<sip:bob@example.test>;tag=p");
        challenge.headers.push(
            "Proxy-Authenticate",
            "Digest realm=\"example.test\", nonce=\"n\", qop=\"auth\"",
        );
        alice.handle_response(t0, &challenge);
        let retry = only_request(&mut alice, &mut n);
        assert_eq!(retry.headers.get("CSeq"), Some("2 INVITE"));
        assert!(retry
            .headers
            .get("Proxy-Authorization")
            .unwrap()
            .contains("uri=\"sip:bob@example.test\""));
        assert_eq!(retry.headers.get("Call-ID"), invite.headers.get("Call-ID"));
        let mut again = retry.response(407, "Proxy Authentication Required");
        again.headers.push(
            "Proxy-Authenticate",
            "Digest realm=\"example.test\", nonce=\"m\"",
        );
        alice.handle_response(t0, &again);
        assert_eq!(
            events(&mut alice),
            [CallEvent::Ended {
                reason: EndReason::Rejected(407)
            }]
        );
    }

    fn connected(t0: Instant) -> (Call, Call, u32) {
        let (mut alice, mut bob, mut n) = ringing(t0);
        bob.answer(t0, Some(Body::sdp("answer")));
        let ok = responses(&mut bob).remove(0);
        alice.handle_response(t0, &ok);
        let ack = ack_of(&mut alice, &mut n);
        bob.handle_request(t0, &ack);
        events(&mut alice);
        events(&mut bob);
        (alice, bob, n)
    }

    #[test]
    fn session_timer_refreshed_by_the_caller_and_enforced_by_the_callee() {
        let t0 = Instant::now();
        let secs = |s: u64| t0 + Duration::from_secs(s);
        let mut n = 0;
        let target = Uri::parse("sip:bob@example.test").unwrap();
        let mut alice = Call::outgoing(
            config("alice", 5070),
            target,
            Some(Body::sdp("offer")),
            None,
            1,
        );
        let mut invite = only_request(&mut alice, &mut n);
        assert!(invite.headers.lists("Supported", "timer"));
        // As a server on the way (or a peer) would ask for it.
        invite.headers.push("Session-Expires", "120;refresher=uac");
        let mut bob = Call::incoming(config("bob", 5080), invite, t0, 2);
        responses(&mut bob);
        bob.answer(t0, Some(Body::sdp("answer")));
        let ok = responses(&mut bob).remove(0);
        assert_eq!(ok.headers.get("Session-Expires"), Some("120;refresher=uac"));
        assert_eq!(ok.headers.get("Require"), Some("timer"));
        alice.handle_response(t0, &ok);
        bob.handle_request(t0, &ack_of(&mut alice, &mut n));
        events(&mut alice);
        events(&mut bob);

        // Alice refreshes at half the interval, offering the same session.
        assert_eq!(alice.poll_timeout(), Some(secs(60)));
        alice.handle_timeout(secs(60));
        let refresh = only_request(&mut alice, &mut n);
        assert_eq!(
            refresh.headers.get("Session-Expires"),
            Some("120;refresher=uac")
        );
        assert_eq!(&refresh.body[..], b"offer");
        bob.handle_request(t0, &refresh);
        events(&mut bob);
        bob.accept_update(secs(60), Some(Body::sdp("answer")));
        alice.handle_response(secs(60), &responses(&mut bob).remove(0));
        actions(&mut alice);
        assert_eq!(alice.poll_timeout(), Some(secs(120)));

        // Then Alice falls silent: Bob waits 120 − 32 s from the refresh.
        assert_eq!(bob.poll_timeout(), Some(secs(148)));
        bob.handle_timeout(secs(147));
        assert!(actions(&mut bob).is_empty());
        bob.handle_timeout(secs(148));
        assert!(
            matches!(&actions(&mut bob)[..], [CallAction::Request(r)] if r.method == Method::Bye)
        );
        assert_eq!(
            events(&mut bob),
            [CallEvent::Ended {
                reason: EndReason::SessionExpired
            }]
        );
    }

    #[test]
    fn reliable_ringing_is_pracked_once_and_resent_until_then() {
        let t0 = Instant::now();
        let mut n = 0;
        let target = Uri::parse("sip:bob@example.test").unwrap();
        let mut alice = Call::outgoing(
            config("alice", 5070),
            target,
            Some(Body::sdp("offer")),
            None,
            1,
        );
        let mut invite = only_request(&mut alice, &mut n);
        assert!(invite.headers.lists("Supported", "100rel"));
        // A caller that requires 100rel (Alice only supports it).
        invite.headers.push("Require", "100rel");
        let mut bob = Call::incoming(config("bob", 5080), invite, t0, 2);
        let ringing = responses(&mut bob).remove(0);
        assert_eq!(
            (ringing.headers.get("Require"), ringing.headers.get("RSeq")),
            (Some("100rel"), Some("1"))
        );
        // Unconfirmed, it goes again after T1.
        let t1 = Timers::default().t1;
        assert_eq!(bob.poll_timeout(), Some(t0 + t1));
        bob.handle_timeout(t0 + t1);
        assert_eq!(responses(&mut bob), std::slice::from_ref(&ringing));

        alice.handle_response(t0, &ringing);
        let prack = only_request(&mut alice, &mut n);
        assert_eq!(prack.method, Method::Prack);
        assert_eq!(prack.headers.get("RAck"), Some("1 1 INVITE"));
        assert_eq!(prack.headers.get("CSeq"), Some("2 PRACK"));
        assert_eq!(events(&mut alice), [CallEvent::Ringing { body: None }]);
        alice.handle_response(t0, &ringing);
        assert!(
            actions(&mut alice).is_empty(),
            "a retransmission is not PRACKed again"
        );

        assert!(bob.matches(&prack));
        bob.handle_request(t0, &prack);
        assert_eq!(responses(&mut bob)[0].status, 200);
        assert_eq!(bob.poll_timeout(), None, "confirmed: no more resending");

        bob.answer(t0, Some(Body::sdp("answer")));
        alice.handle_response(t0, &responses(&mut bob).remove(0));
        assert_eq!(
            ack_of(&mut alice, &mut n).headers.get("CSeq"),
            Some("1 ACK")
        );
        alice.hangup(t0);
        assert_eq!(
            only_request(&mut alice, &mut n).headers.get("CSeq"),
            Some("3 BYE")
        );
    }

    #[test]
    fn no_prack_in_64_t1_refuses_the_call() {
        let t0 = Instant::now();
        let mut n = 0;
        let mut invite = only_request(&mut dial(5), &mut n);
        invite.headers.push("Require", "100rel");
        let mut bob = Call::incoming(config("bob", 5080), invite, t0, 6);
        responses(&mut bob);
        bob.handle_timeout(t0 + Timers::default().t1 * 64);
        assert_eq!(responses(&mut bob)[0].status, 500);
        assert_eq!(
            events(&mut bob),
            [CallEvent::Ended {
                reason: EndReason::Timeout
            }]
        );

        let mut invite = only_request(&mut dial(7), &mut n);
        invite.headers.push("Require", "100rel, foo");
        let mut carol = Call::incoming(config("carol", 5090), invite, t0, 8);
        let refused = responses(&mut carol).remove(0);
        assert_eq!(
            (refused.status, refused.headers.get("Unsupported")),
            (420, Some("foo"))
        );
    }

    #[test]
    fn a_session_timer_below_90_s_is_refused_with_422() {
        let t0 = Instant::now();
        let mut n = 0;
        let mut invite = only_request(&mut dial(3), &mut n);
        invite.headers.push("Session-Expires", "30");
        let mut bob = Call::incoming(config("bob", 5080), invite, t0, 4);
        let refused = responses(&mut bob).remove(0);
        assert_eq!(refused.status, 422);
        assert_eq!(refused.headers.get("Min-SE"), Some("90"));
        assert!(bob.is_ended());
    }

    #[test]
    fn hold_by_reinvite() {
        let t0 = Instant::now();
        let (mut alice, mut bob, mut n) = connected(t0);
        alice.update(t0, Some(Body::sdp("sendonly")));
        let reinvite = only_request(&mut alice, &mut n);
        assert_eq!(reinvite.headers.get("CSeq"), Some("2 INVITE"));
        assert!(bob.matches(&reinvite));
        bob.handle_request(t0, &reinvite);
        assert_eq!(
            events(&mut bob),
            [CallEvent::Updated {
                body: Some(Body::sdp("sendonly"))
            }]
        );
        bob.accept_update(t0, Some(Body::sdp("recvonly")));
        let ok = responses(&mut bob).remove(0);
        alice.handle_response(t0, &ok);
        assert!(
            matches!(&actions(&mut alice)[..], [CallAction::Ack(a)] if a.headers.get("CSeq") == Some("2 ACK"))
        );
        assert_eq!(
            events(&mut alice),
            [CallEvent::UpdateAccepted {
                body: Some(Body::sdp("recvonly"))
            }]
        );
    }

    #[test]
    fn reinvite_glare_gets_491_and_retries_after_the_right_delay() {
        let t0 = Instant::now();
        let (mut alice, mut bob, mut n) = connected(t0);
        alice.update(t0, Some(Body::sdp("a-hold")));
        bob.update(t0, Some(Body::sdp("b-hold")));
        let from_alice = only_request(&mut alice, &mut n);
        let from_bob = only_request(&mut bob, &mut n);
        alice.handle_request(t0, &from_bob);
        bob.handle_request(t0, &from_alice);
        let to_bob = responses(&mut alice).remove(0);
        let to_alice = responses(&mut bob).remove(0);
        assert_eq!((to_bob.status, to_alice.status), (491, 491));
        alice.handle_response(t0, &to_alice);
        bob.handle_response(t0, &to_bob);
        let alice_retry = alice.poll_timeout().unwrap() - t0;
        let bob_retry = bob.poll_timeout().unwrap() - t0;
        assert!(
            alice_retry >= Duration::from_millis(2100) && alice_retry <= Duration::from_secs(4),
            "owner waits 2.1-4 s: {alice_retry:?}"
        );
        assert!(
            bob_retry <= Duration::from_secs(2),
            "the other waits 0-2 s: {bob_retry:?}"
        );
        bob.handle_timeout(t0 + bob_retry);
        let retried = only_request(&mut bob, &mut n);
        assert_eq!(retried.body, Bytes::from("b-hold"));
    }

    #[test]
    fn out_of_order_request_gets_500() {
        let t0 = Instant::now();
        let (mut alice, mut bob, mut n) = connected(t0);
        alice.hangup(t0);
        let mut bye = only_request(&mut alice, &mut n);
        bye.headers.set("CSeq", "0 BYE");
        bob.handle_request(t0, &bye);
        assert_eq!(responses(&mut bob).remove(0).status, 500);
        assert!(!bob.is_ended());
    }

    fn pidf() -> Body {
        Body {
            content_type: "application/pidf+xml".into(),
            bytes: "<presence/>".into(),
        }
    }

    #[test]
    fn the_callee_sends_its_location_in_an_update_once_the_ack_comes() {
        let t0 = Instant::now();
        let (mut alice, mut bob, mut n) = ringing(t0);
        bob.answer(t0, Some(Body::sdp("answer")));
        bob.send_location(pidf());
        let ok = responses(&mut bob).remove(0);
        assert!(ok.headers.lists("Allow", "UPDATE"));
        assert!(actions(&mut bob).is_empty(), "nothing before the ACK");
        alice.handle_response(t0, &ok);
        let ack = ack_of(&mut alice, &mut n);
        events(&mut alice);
        bob.handle_request(t0, &ack);
        let update = only_request(&mut bob, &mut n);
        assert_eq!(update.method, Method::Update);
        assert!(update
            .headers
            .get("Geolocation")
            .unwrap()
            .starts_with("<cid:"));
        assert!(alice.matches(&update));
        alice.handle_request(t0, &update);
        assert_eq!(
            responses(&mut alice)
                .iter()
                .map(|r| r.status)
                .collect::<Vec<_>>(),
            [200]
        );
        assert_eq!(events(&mut alice), [CallEvent::Location { body: pidf() }]);
    }

    #[test]
    fn a_moving_phone_sends_one_update_per_round_trip_with_its_newest_position() {
        let t0 = Instant::now();
        let (mut alice, mut bob, mut n) = connected(t0);
        let at = |place: &str| Body {
            content_type: "application/pidf+xml".into(),
            bytes: format!("<presence>{place}</presence>").into(),
        };
        alice.send_location(at("first"));
        let first = only_request(&mut alice, &mut n);
        assert_eq!(first.method, Method::Update);
        alice.send_location(at("second"));
        alice.send_location(at("third"));
        assert!(actions(&mut alice).is_empty(), "one UPDATE at a time");
        bob.handle_request(t0, &first);
        let ok = responses(&mut bob).remove(0);
        assert_eq!(
            events(&mut bob),
            [CallEvent::Location { body: at("first") }]
        );
        alice.handle_response(t0, &ok);
        let newest = only_request(&mut alice, &mut n);
        bob.handle_request(t0, &newest);
        responses(&mut bob);
        assert_eq!(
            events(&mut bob),
            [CallEvent::Location { body: at("third") }]
        );
    }

    #[test]
    fn no_update_goes_to_a_peer_that_does_not_allow_it() {
        let t0 = Instant::now();
        let mut n = 0;
        let mut alice = Call::outgoing(
            config("alice", 5070),
            Uri::parse("sip:bob@example.test").unwrap(),
            Some(Body::sdp("offer")),
            None,
            1,
        );
        let mut invite = only_request(&mut alice, &mut n);
        invite.headers.set("Allow", "INVITE, ACK, CANCEL, BYE");
        let mut bob = Call::incoming(config("bob", 5080), invite, t0, 2);
        responses(&mut bob);
        bob.answer(t0, Some(Body::sdp("answer")));
        let ok = responses(&mut bob).remove(0);
        alice.handle_response(t0, &ok);
        bob.handle_request(t0, &ack_of(&mut alice, &mut n));
        bob.send_location(pidf());
        assert!(actions(&mut bob).is_empty());
    }

    #[test]
    fn an_update_without_a_body_refreshes_and_a_broken_one_is_refused() {
        let t0 = Instant::now();
        let (mut alice, mut bob, mut n) = connected(t0);
        let Some(d) = &mut bob.dialog else {
            panic!("no dialog")
        };
        let mut bare = with_via(d.request(Method::Update), &mut n);
        alice.handle_request(t0, &bare);
        assert_eq!(responses(&mut alice)[0].status, 200);
        assert!(events(&mut alice).is_empty());

        bare.headers.set("CSeq", "3 UPDATE");
        bare.headers
            .set("Content-Type", "multipart/mixed;boundary=x");
        bare.body = "not multipart at all".into();
        alice.handle_request(t0, &bare);
        assert_eq!(responses(&mut alice)[0].status, 400);
        assert!(events(&mut alice).is_empty());
        alice.hangup(t0);
        assert_eq!(only_request(&mut alice, &mut n).method, Method::Bye);
    }
}
