//! The one task that owns the sockets and the clock and feeds the sans-IO
//! endpoint. It decides nothing about SIP: every choice is the endpoint's.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::discovery::ServerList;
use crate::location::sharing::Sharing;
use crate::location::Location;
use crate::media::sdp::{self, Codec, Direction, LocalMedia};
use crate::sip::call::{Body, CallEvent};
use crate::sip::endpoint::{Endpoint, EndpointEvent};
use crate::sip::framing::Frame;
use crate::sip::message;
use crate::sip::publication::PublicationEvent;
use crate::sip::registration::{FailureReason, RegistrationEvent};
use crate::sip::uri::Uri;
use crate::sip::{Transmit, Transport};

use super::call_media::{self, CallAudio, MediaCommand, MediaHandle, RtpSockets};
use super::connection::{spawn_accepted, spawn_outgoing, ConnectionHandle, Inbound, TlsSetup};
use super::datagram::DatagramSocket;
use super::event::{CallId, CallState, Event};
use super::migration::{Decision, Known, Migration};
use super::presence::{self, Whereabouts};
use super::server::ServerTarget;
use super::server_source::{SourceUpdate, Sources};
use super::{config, contact_ip, contact_uri, tls, PhoneError};

/// How long shutting down waits for the unregistration and the calls' BYEs
/// to be answered.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long the phone waits for the media threads of ended calls to stop
/// (a WAV recording is finished by then; each stops within a few ms).
const MEDIA_STOP_LIMIT: Duration = Duration::from_secs(2);

/// Commands from the facade.
#[derive(Debug)]
pub(crate) enum Command {
    Register,
    Unregister,
    Shutdown(oneshot::Sender<()>),
    Call {
        target: Uri,
        audio: CallAudio,
        reply: oneshot::Sender<Result<CallId, PhoneError>>,
    },
    Answer {
        call: CallId,
        audio: CallAudio,
    },
    Reject {
        call: CallId,
        status: u16,
    },
    Hangup {
        call: CallId,
    },
    /// Something for the call's running media (DTMF, mute).
    Media {
        call: CallId,
        command: MediaCommand,
    },
    Hold {
        call: CallId,
        hold: bool,
    },
    NetworkChanged,
    /// Our position (or none), for calls to contacts we share it with.
    SetLocation(Option<Location>),
    /// With whom we share it, and how precisely.
    SetSharing(Sharing),
    /// Publish our presence: open (available) or closed.
    Publish {
        open: bool,
    },
    /// Watch a friend's presence.
    Watch {
        friend: Uri,
    },
}

/// Everything about choosing and changing servers.
#[derive(Debug)]
pub(crate) struct Servers {
    pub migration: Migration,
    /// The list the first server was chosen from.
    pub first_list: Option<(ServerList, Vec<Known>)>,
    pub sources: Sources,
    /// For our Contact at a new server.
    pub user: String,
    /// For TLS to a new server.
    pub ca_file: Option<PathBuf>,
    /// The address our SIP sockets are bound to.
    pub bound: SocketAddr,
    /// Our address of record, as the entity of our location documents.
    pub aor: String,
    /// The user's keepalive interval, if they set one.
    pub keepalive: Option<Duration>,
}

/// Where calls' media runs and what it may use.
#[derive(Debug, Clone)]
pub(crate) struct MediaSettings {
    /// The address RTP sockets bind to and SDP names.
    pub ip: std::net::IpAddr,
    /// Codecs to offer and accept, most preferred first.
    pub codecs: Vec<Codec>,
}

/// The media side of one call, as the driver tracks it.
#[derive(Debug, Default)]
struct CallSlot {
    audio: CallAudio,
    /// Bound before our offer or answer names them.
    sockets: Option<RtpSockets>,
    local: Option<LocalMedia>,
    /// What the caller's INVITE brought, until we answer.
    incoming: Option<Incoming>,
    /// Who is at the other end (the callee we called, or who called us),
    /// to share our position with.
    peer: Option<Uri>,
    /// The position this call's peer has from us (coarsened), so that an
    /// unchanged one is not sent again.
    shared: Option<Location>,
    media: Option<MediaHandle>,
}

/// An incoming call's INVITE, as far as media goes.
#[derive(Debug)]
enum Incoming {
    /// It offered this session description; our 200 answers it.
    Offer(String),
    /// It offered nothing (RFC 3261 §13.2.1): our 200 offers, the ACK answers.
    NoOffer,
}

/// Sockets bound before the driver starts, so binding errors reach the caller.
#[derive(Debug)]
pub(crate) struct Sockets {
    pub udp: DatagramSocket,
    pub tcp: TcpListener,
}

pub(crate) struct Driver {
    endpoint: Endpoint,
    sockets: Sockets,
    tls: Option<TlsSetup>,
    connections: HashMap<(Transport, SocketAddr), ConnectionHandle>,
    next_connection_id: u64,
    inbound_tx: mpsc::UnboundedSender<Inbound>,
    inbound_rx: mpsc::UnboundedReceiver<Inbound>,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    shutdown: Option<(oneshot::Sender<()>, Instant)>,
    /// Our address, for media.
    media: MediaSettings,
    calls: HashMap<CallId, CallSlot>,
    servers: Servers,
    updates_tx: mpsc::UnboundedSender<SourceUpdate>,
    updates_rx: mpsc::UnboundedReceiver<SourceUpdate>,
    restart_watch: Arc<Notify>,
    watcher: Option<JoinHandle<()>>,
    /// Media threads of ended calls, joined before the driver stops.
    media_ending: Vec<std::thread::JoinHandle<()>>,
    /// Our position and the user's sharing rules.
    whereabouts: Whereabouts,
    /// Watched friends by subscription id.
    friends: HashMap<u64, String>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("server", self.servers.migration.current())
            .finish_non_exhaustive()
    }
}

impl Driver {
    pub(crate) fn new(
        endpoint: Endpoint,
        sockets: Sockets,
        tls: Option<TlsSetup>,
        commands: mpsc::UnboundedReceiver<Command>,
        events: mpsc::UnboundedSender<Event>,
        media: MediaSettings,
        servers: Servers,
    ) -> Driver {
        let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
        let (updates_tx, updates_rx) = mpsc::unbounded_channel();
        let whereabouts = Whereabouts {
            aor: servers.aor.clone(),
            location: None,
            sharing: Sharing::default(),
        };
        Driver {
            endpoint,
            sockets,
            tls,
            connections: HashMap::new(),
            next_connection_id: 0,
            inbound_tx,
            inbound_rx,
            commands,
            events,
            shutdown: None,
            media,
            calls: HashMap::new(),
            servers,
            updates_tx,
            updates_rx,
            restart_watch: Arc::new(Notify::new()),
            watcher: None,
            media_ending: Vec::new(),
            whereabouts,
            friends: HashMap::new(),
        }
    }

    pub(crate) async fn run(mut self) {
        let mut buf = vec![0u8; 65_536];
        if let Some((list, known)) = self.servers.first_list.take() {
            self.servers.migration.handle_list(now(), list, known);
            self.watcher = self.servers.sources.clone().watch(
                0,
                self.updates_tx.clone(),
                Arc::clone(&self.restart_watch),
            );
        }
        loop {
            self.flush();
            if let Some((_, deadline)) = &self.shutdown {
                // Done when the registration is removed and every call's
                // BYE (or CANCEL) is answered, or when the grace is over.
                let busy = self.endpoint.is_unregistering()
                    || self.endpoint.has_calls_ending()
                    || self.endpoint.has_presence_ending();
                if !busy || Instant::now() >= *deadline {
                    break;
                }
            }
            let wake = self.next_wake();
            tokio::select! {
                cmd = self.commands.recv() => self.handle_command(cmd),
                recv = self.sockets.udp.recv_from(&mut buf) => match recv {
                    Ok((n, from)) => {
                        tracing::trace!(%from, "received over UDP\n{}", message::loggable(&buf[..n]));
                        self.endpoint.handle_datagram(now(), from, &buf[..n]);
                    }
                    Err(e) => self.udp_error(&e),
                },
                Some(inbound) = self.inbound_rx.recv() => self.handle_inbound(inbound),
                Some(update) = self.updates_rx.recv() => self.handle_source(update),
                accepted = self.sockets.tcp.accept() => match accepted {
                    Ok((stream, remote)) => {
                        let handle = spawn_accepted(self.connection_id(), stream, remote, self.inbound_tx.clone());
                        self.connections.insert((Transport::Tcp, remote), handle);
                    }
                    Err(e) => tracing::warn!(error = %e, "accepting a TCP connection failed"),
                },
                () = tokio::time::sleep_until(wake) => self.endpoint.handle_timeout(now()),
            }
        }
        self.flush();
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
        let media = std::mem::take(&mut self.media_ending);
        let joined = tokio::task::spawn_blocking(move || {
            for thread in media {
                if thread.join().is_err() {
                    tracing::error!("a call media thread panicked");
                }
            }
        });
        // A device that never lets go (a wedged sound card driver) must not
        // keep the phone from stopping: its thread is left behind.
        match tokio::time::timeout(MEDIA_STOP_LIMIT, joined).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "joining the call media threads failed"),
            Err(_) => tracing::error!("a call media thread did not stop; left behind"),
        }
        if let Some((done, _)) = self.shutdown.take() {
            let _ = done.send(());
        }
        tracing::debug!("phone driver stopped");
    }

    fn next_wake(&self) -> Instant {
        let endpoint = self.endpoint.poll_timeout().map(Instant::from_std);
        let shutdown = self.shutdown.as_ref().map(|(_, d)| *d);
        // With nothing scheduled, wake rarely just to keep the select simple.
        let idle = Instant::now() + Duration::from_secs(3600);
        [endpoint, shutdown]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(idle)
    }

    fn connection_id(&mut self) -> u64 {
        self.next_connection_id += 1;
        self.next_connection_id
    }

    fn handle_command(&mut self, cmd: Option<Command>) {
        match cmd {
            Some(Command::Register) => self.endpoint.register(now()),
            Some(Command::Unregister) => self.endpoint.unregister(now()),
            Some(Command::Shutdown(done)) => self.begin_shutdown(done),
            Some(Command::Call {
                target,
                audio,
                reply,
            }) => {
                let _ = reply.send(self.place_call(target, audio));
            }
            Some(Command::Answer { call, audio }) => self.answer(call, audio),
            Some(Command::Reject { call, status }) => self.endpoint.reject(now(), call, status),
            Some(Command::Hangup { call }) => self.endpoint.hangup(now(), call),
            Some(Command::Hold { call, hold }) => self.hold(call, hold),
            Some(Command::NetworkChanged) => self.network_changed(),
            Some(Command::SetLocation(location)) => {
                self.whereabouts.location = location;
                self.share_with_calls();
            }
            Some(Command::SetSharing(sharing)) => {
                self.whereabouts.sharing = sharing;
                self.share_with_calls();
            }
            Some(Command::Publish { open }) => {
                let document = self.whereabouts.presence(open);
                self.endpoint.publish(now(), document);
            }
            Some(Command::Watch { friend }) => {
                let uri = friend.to_string();
                let id = self.endpoint.subscribe(now(), friend);
                self.friends.insert(id, uri);
            }
            Some(Command::Media { call, command }) => {
                match self.calls.get(&call).and_then(|c| c.media.as_ref()) {
                    Some(media) => {
                        let _ = media.commands.send(command);
                    }
                    None => self.emit(Event::Error {
                        message: format!("call {call} has no media for {command:?}"),
                    }),
                }
            }
            // Every facade handle is gone: nobody can listen any more.
            None => {
                let (done, _) = oneshot::channel();
                self.begin_shutdown(done);
            }
        }
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// RTP sockets and the media description naming them.
    fn prepare_media(&self) -> Result<(RtpSockets, LocalMedia), PhoneError> {
        let sockets = RtpSockets::bind(self.media.ip)?;
        let local = LocalMedia {
            rtp: sockets.rtp_addr()?,
            codecs: self.media.codecs.clone(),
            direction: Direction::SendRecv,
            ptime: 20,
            session_id: rand::random::<u32>().into(),
            session_version: 1,
        };
        Ok((sockets, local))
    }

    fn place_call(&mut self, target: Uri, audio: CallAudio) -> Result<CallId, PhoneError> {
        let (sockets, local) = self.prepare_media()?;
        let offer = sdp::offer(&local);
        let shared = self.whereabouts.shared_with(&target);
        let location = shared.clone().map(|l| self.whereabouts.for_call(l));
        let call =
            self.endpoint
                .place_call(now(), target.clone(), Some(Body::sdp(offer)), location);
        let slot = CallSlot {
            audio,
            sockets: Some(sockets),
            local: Some(local),
            peer: Some(target),
            shared,
            ..Default::default()
        };
        self.calls.insert(call, slot);
        self.emit(Event::CallState {
            call,
            state: CallState::Calling,
            reason: None,
        });
        Ok(call)
    }

    fn incoming_call(
        &mut self,
        call: CallId,
        from: Uri,
        offer: Option<Body>,
        location: Option<Body>,
    ) {
        let incoming = match offer {
            Some(body) => {
                let offer = String::from_utf8_lossy(&body.bytes).into_owned();
                if let Err(e) = sdp::check_offer(&offer, &self.media.codecs) {
                    // Nothing to ring the user for (RFC 3261 §13.3.1.3).
                    tracing::info!(call, error = %e, "refusing an offer we cannot answer");
                    return self.endpoint.reject(now(), call, 488);
                }
                Incoming::Offer(offer)
            }
            None => Incoming::NoOffer,
        };
        self.calls.insert(
            call,
            CallSlot {
                incoming: Some(incoming),
                peer: Some(from.clone()),
                ..Default::default()
            },
        );
        let location = location.and_then(|body| self.peer_location(call, &body));
        self.emit(Event::IncomingCall {
            call,
            from: from.to_string(),
            location,
        });
    }

    fn answer(&mut self, call: CallId, audio: CallAudio) {
        let offer = match self.calls.get_mut(&call).and_then(|c| c.incoming.take()) {
            Some(Incoming::Offer(offer)) => offer,
            Some(Incoming::NoOffer) => return self.answer_with_offer(call, audio),
            None => {
                return self.emit(Event::Error {
                    message: format!("call {call} is not waiting to be answered"),
                })
            }
        };
        let answered = self.prepare_media().and_then(|(sockets, local)| {
            Ok((
                sdp::answer(&offer, &local).map_err(|e| PhoneError::Media(e.to_string()))?,
                sockets,
                local,
            ))
        });
        match answered {
            Ok(((text, negotiated), sockets, local)) => {
                self.send_answer(call, Body::sdp(text));
                let media =
                    call_media::spawn(call, negotiated, sockets, audio, self.events.clone());
                if let Some(slot) = self.calls.get_mut(&call) {
                    slot.local = Some(local);
                    slot.media = Some(media);
                }
            }
            Err(e) => {
                // No codec in common, or an offer we cannot use: 488.
                self.endpoint.reject(now(), call, 488);
                self.emit(Event::Error {
                    message: format!("call {call}: {e}"),
                });
            }
        }
    }

    /// Our 200; then our position, when the user shares it with the caller
    /// (it goes in an UPDATE once the ACK comes, RFC 6442).
    fn send_answer(&mut self, call: CallId, body: Body) {
        self.endpoint.answer(now(), call, Some(body));
        self.share_with_call(call);
    }

    /// Our position changed, or whom we share it with: each answered call's
    /// peer who may see it gets the new one.
    fn share_with_calls(&mut self) {
        let answered: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, slot)| slot.media.is_some())
            .map(|(call, _)| *call)
            .collect();
        for call in answered {
            self.share_with_call(call);
        }
    }

    /// Sends our position to `call`'s peer in an UPDATE (the call paces
    /// them, one per round trip), when the user shares it with them and it
    /// tells them something new ([`Location::moved_from`]). A position no
    /// longer shared is not taken back: RFC 6442 has no way to.
    fn share_with_call(&mut self, call: CallId) {
        let Some(slot) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(shared) = slot
            .peer
            .as_ref()
            .and_then(|p| self.whereabouts.shared_with(p))
        else {
            return;
        };
        if slot
            .shared
            .as_ref()
            .is_some_and(|before| !shared.moved_from(before))
        {
            return;
        }
        slot.shared = Some(shared.clone());
        let location = self.whereabouts.for_call(shared);
        self.endpoint.send_location(now(), call, location);
    }

    /// A location the peer of a call sent, or `None` and a warning event
    /// when it cannot be read: the call goes on without it.
    fn peer_location(&self, call: CallId, body: &Body) -> Option<Location> {
        match presence::peer_location(body) {
            Ok(location) => location,
            Err(e) => {
                self.emit(Event::Error {
                    message: format!("call {call}: the peer's location is ignored: {e}"),
                });
                None
            }
        }
    }

    /// Answers an INVITE that had no offer: our 200 offers, and the media
    /// starts when the ACK brings the answer.
    fn answer_with_offer(&mut self, call: CallId, audio: CallAudio) {
        match self.prepare_media() {
            Ok((sockets, local)) => {
                self.send_answer(call, Body::sdp(sdp::offer(&local)));
                if let Some(slot) = self.calls.get_mut(&call) {
                    slot.audio = audio;
                    slot.sockets = Some(sockets);
                    slot.local = Some(local);
                }
            }
            Err(e) => {
                self.endpoint.reject(now(), call, 500);
                self.emit(Event::Error {
                    message: format!("call {call}: {e}"),
                });
            }
        }
    }

    /// Turns a call's protocol event into media actions and public events.
    fn call_event(&mut self, call: CallId, event: CallEvent) {
        match event {
            CallEvent::Ringing { .. } => self.emit(Event::CallState {
                call,
                state: CallState::Ringing,
                reason: None,
            }),
            CallEvent::Connected { body } => {
                if let Err(why) = self.start_media_on_answer(call, body) {
                    self.endpoint.hangup(now(), call);
                    return self.emit(Event::Error {
                        message: format!("call {call}: {why}"),
                    });
                }
                self.emit(Event::CallState {
                    call,
                    state: CallState::Connected,
                    reason: None,
                });
            }
            CallEvent::Updated { body } => self.remote_update(call, body),
            CallEvent::UpdateAccepted { body } => self.update_accepted(call, body),
            CallEvent::Location { body } => {
                if let Some(location) = self.peer_location(call, &body) {
                    self.emit(Event::CallLocation { call, location });
                }
            }
            CallEvent::Ended { reason } => {
                // A call refused before the user saw it (488, 422, 420) has
                // no slot and no story to tell.
                let Some(slot) = self.calls.remove(&call) else {
                    return;
                };
                self.emit(Event::CallState {
                    call,
                    state: CallState::Ended,
                    reason: Some(end_reason(&reason)),
                });
                // After `ended`: the media thread's last statistics follow it.
                if let Some(thread) = slot.media.and_then(MediaHandle::stop) {
                    self.media_ending.retain(|t| !t.is_finished());
                    self.media_ending.push(thread);
                }
            }
        }
    }

    /// When we offered (placing the call, or answering an INVITE without an
    /// offer), the 2xx or the ACK carries the answer; when we answered an
    /// offer, the media already runs.
    fn start_media_on_answer(&mut self, call: CallId, answer: Option<Body>) -> Result<(), String> {
        let slot = self.calls.entry(call).or_default();
        if slot.media.is_some() {
            return Ok(());
        }
        let local = slot.local.as_ref().ok_or("no local media")?;
        let answer = answer.ok_or("the answer has no session description")?;
        let negotiated = sdp::accept_answer(&String::from_utf8_lossy(&answer.bytes), local)
            .map_err(|e| e.to_string())?;
        let sockets = slot.sockets.take().ok_or("no RTP socket")?;
        slot.media = Some(call_media::spawn(
            call,
            negotiated,
            sockets,
            slot.audio.clone(),
            self.events.clone(),
        ));
        Ok(())
    }

    /// Offers a new session to hold (we only send) or resume the call.
    fn hold(&mut self, call: CallId, hold: bool) {
        let Some(local) = self.calls.get_mut(&call).and_then(|c| c.local.as_mut()) else {
            return self.emit(Event::Error {
                message: format!("call {call} has no media to hold"),
            });
        };
        local.direction = if hold {
            Direction::SendOnly
        } else {
            Direction::SendRecv
        };
        local.session_version += 1;
        let offer = sdp::offer(local);
        self.endpoint.update(now(), call, Some(Body::sdp(offer)));
    }

    /// The peer accepted our re-INVITE: follow the answer's direction.
    fn update_accepted(&mut self, call: CallId, answer: Option<Body>) {
        let Some(slot) = self.calls.get(&call) else {
            return;
        };
        let negotiated = slot.local.as_ref().zip(answer).and_then(|(local, b)| {
            sdp::accept_answer(&String::from_utf8_lossy(&b.bytes), local).ok()
        });
        let Some(negotiated) = negotiated else {
            return self.emit(Event::Error {
                message: format!("call {call}: unusable answer to our re-INVITE"),
            });
        };
        self.follow_direction(call, negotiated.direction);
    }

    /// After a re-INVITE either way: the media sends or not, and the call
    /// is held unless media flows both ways.
    fn follow_direction(&mut self, call: CallId, direction: Direction) {
        if let Some(media) = self.calls.get(&call).and_then(|c| c.media.as_ref()) {
            let _ = media.commands.send(MediaCommand::Direction(direction));
        }
        let state = if direction == Direction::SendRecv {
            CallState::Connected
        } else {
            CallState::Held
        };
        self.emit(Event::CallState {
            call,
            state,
            reason: None,
        });
    }

    /// The peer sent a re-INVITE (hold or resume): answer it and follow.
    fn remote_update(&mut self, call: CallId, offer: Option<Body>) {
        let local = self.calls.get(&call).and_then(|c| c.local.clone());
        let answered = local
            .zip(offer)
            .map(|(local, b)| sdp::answer(&String::from_utf8_lossy(&b.bytes), &local));
        let Some(Ok((text, negotiated))) = answered else {
            return self.endpoint.accept_update(now(), call, None);
        };
        self.endpoint
            .accept_update(now(), call, Some(Body::sdp(text)));
        self.follow_direction(call, negotiated.direction);
    }

    fn begin_shutdown(&mut self, done: oneshot::Sender<()>) {
        if self.shutdown.is_none() {
            let calls: Vec<CallId> = self.calls.keys().copied().collect();
            for call in calls {
                self.endpoint.hangup(now(), call);
            }
            if self.endpoint.is_registered() {
                self.endpoint.unregister(now());
            }
            self.endpoint.unpublish(now());
            self.endpoint.unsubscribe_all(now());
            self.shutdown = Some((done, Instant::now() + SHUTDOWN_GRACE));
        }
    }

    fn handle_inbound(&mut self, inbound: Inbound) {
        match inbound {
            Inbound::Frame {
                transport,
                remote,
                frame,
            } => {
                if let Frame::Message(msg) = &frame {
                    // Evaluated only when trace logging is on.
                    tracing::trace!(%remote, %transport, "received\n{}", message::loggable(&msg.to_bytes()));
                }
                self.endpoint.handle_frame(now(), transport, remote, frame);
            }
            Inbound::ConnectFailed {
                id,
                transport,
                remote,
                reason,
            } => {
                let _ = self.forget_connection(id, transport, remote);
                self.endpoint
                    .handle_connect_failed(now(), transport, remote, &reason);
            }
            Inbound::Closed {
                id,
                transport,
                remote,
                reason,
            } => {
                tracing::info!(%remote, %transport, %reason, "connection closed");
                // One we dropped ourselves (a lost keepalive, a network
                // change) was replaced already: its end is no news.
                if self.forget_connection(id, transport, remote) {
                    self.endpoint
                        .handle_flow_closed(now(), transport, remote, &reason);
                }
            }
        }
    }

    /// Drops the map entry only if it is still the connection that ended;
    /// says whether it was.
    fn forget_connection(&mut self, id: u64, transport: Transport, remote: SocketAddr) -> bool {
        let current = self
            .connections
            .get(&(transport, remote))
            .is_some_and(|h| h.id == id);
        if current {
            self.connections.remove(&(transport, remote));
        }
        current
    }

    fn flush(&mut self) {
        loop {
            while let Some(t) = self.endpoint.poll_transmit() {
                self.send(t);
            }
            let Some(ev) = self.endpoint.poll_event() else {
                break;
            };
            match ev {
                EndpointEvent::IncomingCall {
                    call,
                    from,
                    offer,
                    location,
                } => {
                    self.incoming_call(call, from.uri, offer, location);
                    continue;
                }
                EndpointEvent::Call { call, event } => {
                    self.call_event(call, event);
                    continue;
                }
                _ => {}
            }
            self.notice_failure(&ev);
            if let Some(ev) = self.public_event(ev) {
                let _ = self.events.send(ev);
            }
            self.carry_out_decisions();
        }
    }

    /// Tells the migration logic what the endpoint's events say about the
    /// current server.
    fn notice_failure(&mut self, ev: &EndpointEvent) {
        let (reason, retry_after) = match ev {
            EndpointEvent::FlowLost { reason } => (format!("flow closed: {reason}"), None),
            EndpointEvent::KeepaliveLost { reason } => {
                // A half-dead connection would carry the next REGISTER
                // nowhere: drop it so the next request opens a new one.
                let key = self.endpoint.server();
                self.connections.remove(&key);
                (reason.clone(), None)
            }
            EndpointEvent::Registration(RegistrationEvent::Failed {
                reason,
                status,
                message,
                retry_at: Some(at),
            }) if matches!(reason, FailureReason::Timeout | FailureReason::Unreachable)
                || status.is_some_and(|s| s >= 500) =>
            {
                let retry_after =
                    (*status == Some(503)).then(|| at.saturating_duration_since(now()));
                (message.clone(), retry_after)
            }
            _ => return,
        };
        let before = self.servers.migration.current().clone();
        self.servers
            .migration
            .handle_failure(now(), &reason, retry_after);
        if matches!(ev, EndpointEvent::KeepaliveLost { .. }) {
            // Staying: ask the server directly whether it still has us.
            if self.servers.migration.current() == &before {
                self.endpoint.refresh(now());
            }
        }
    }

    /// A receive failed: with ICMP errors reported, that is a datagram of
    /// ours refused or undeliverable; its destination's transactions fail
    /// now rather than at their timeout.
    fn udp_error(&mut self, e: &io::Error) {
        tracing::debug!(error = %e, "UDP receive error");
        self.report_icmp_errors();
    }

    /// Fails the transactions whose datagrams came back as ICMP errors;
    /// returns how many there were.
    fn report_icmp_errors(&mut self) -> usize {
        let errors = self.sockets.udp.unreachable_destinations();
        for (destination, why) in &errors {
            tracing::info!(%destination, error = %why, "ICMP error for a datagram we sent");
            self.endpoint.handle_transport_error(
                now(),
                Transport::Udp,
                *destination,
                &why.to_string(),
            );
        }
        errors.len()
    }

    fn handle_source(&mut self, update: SourceUpdate) {
        match update {
            SourceUpdate::List(list, known) => {
                tracing::debug!(version = list.version, "server list");
                self.servers.migration.handle_list(now(), list, known);
            }
            SourceUpdate::Unavailable(why) => self.emit(Event::Error {
                message: format!("discovery service unavailable ({why}); using the last list"),
            }),
        }
        self.carry_out_decisions();
    }

    fn network_changed(&mut self) {
        tracing::info!("network changed");
        // Every flow may be dead; new ones open on demand.
        self.connections.clear();
        self.restart_watch.notify_one();
        let target = self.servers.migration.current().clone();
        let local = self.local_towards(&target);
        if Some(local) != self.endpoint.contact_addr() {
            self.move_to(target, false, "the network changed".into());
        } else {
            self.servers.migration.handle_network_changed();
        }
        self.carry_out_decisions();
    }

    /// Our SIP address as seen on the route to `target`.
    fn local_towards(&self, target: &ServerTarget) -> SocketAddr {
        let bound = self.servers.bound;
        SocketAddr::new(contact_ip(bound.ip(), target.addr), bound.port())
    }

    fn carry_out_decisions(&mut self) {
        while let Some(decision) = self.servers.migration.poll_decision() {
            match decision {
                Decision::MoveTo {
                    target,
                    make_before_break,
                    reason,
                } => self.move_to(target, make_before_break, reason),
                Decision::Refresh { reason } => {
                    tracing::info!(server = %self.servers.migration.current().label, %reason, "registering again");
                    self.endpoint.refresh(now());
                }
            }
        }
    }

    fn move_to(&mut self, target: ServerTarget, make_before_break: bool, reason: String) {
        if target.transport == Transport::Tls {
            // Trust anchors are read once; only the name changes.
            let setup = match &self.tls {
                Some(known) => known.for_name(&target.tls_name).map_err(PhoneError::Tls),
                None => tls::client_config(self.servers.ca_file.as_deref())
                    .and_then(|c| TlsSetup::new(c, &target.tls_name).map_err(PhoneError::Tls)),
            };
            match setup {
                Ok(setup) => self.tls = Some(setup),
                Err(e) => {
                    return self.emit(Event::Error {
                        message: format!("cannot move to {}: {e}", target.label),
                    })
                }
            }
        }
        let local = self.local_towards(&target);
        let contact = contact_uri(&self.servers.user, local, target.transport);
        self.endpoint
            .set_keepalive_interval(config::keepalive_interval(
                self.servers.keepalive,
                target.transport,
            ));
        self.endpoint.move_to(
            now(),
            target.transport,
            target.addr,
            local,
            contact,
            make_before_break,
        );
        let from = self.servers.migration.current().label.clone();
        let to = target.label.clone();
        self.servers.migration.moved(target);
        if from != to {
            self.emit(Event::ServerChanged { from, to, reason });
        }
    }

    fn send(&mut self, t: Transmit) {
        tracing::trace!(dest = %t.destination, transport = %t.transport, "sending\n{}", message::loggable(&t.payload));
        match t.transport {
            Transport::Udp => {
                let mut result = self.sockets.udp.send_to(&t.payload, t.destination);
                if result.is_err() && self.report_icmp_errors() > 0 {
                    // The error was an earlier datagram's ICMP error, and
                    // this one was not sent: try again.
                    result = self.sockets.udp.send_to(&t.payload, t.destination);
                }
                if let Err(e) = result {
                    // A full socket buffer drops the datagram like the network
                    // would; the transaction retransmits.
                    tracing::warn!(dest = %t.destination, error = %e, "UDP send failed");
                    if e.kind() != io::ErrorKind::WouldBlock {
                        self.endpoint.handle_transport_error(
                            now(),
                            Transport::Udp,
                            t.destination,
                            &e.to_string(),
                        );
                    }
                }
            }
            Transport::Tcp | Transport::Tls => {
                let key = (t.transport, t.destination);
                let payload = match self.connections.get(&key) {
                    Some(handle) => match handle.writer.send(t.payload) {
                        Ok(()) => return,
                        Err(returned) => returned.0,
                    },
                    None => t.payload,
                };
                let tls = (t.transport == Transport::Tls)
                    .then(|| self.tls.clone())
                    .flatten();
                let handle = spawn_outgoing(
                    self.connection_id(),
                    t.transport,
                    t.destination,
                    tls,
                    self.inbound_tx.clone(),
                );
                let _ = handle.writer.send(payload);
                self.connections.insert(key, handle);
            }
        }
    }

    fn public_event(&self, ev: EndpointEvent) -> Option<Event> {
        let current = self.servers.migration.current();
        let server = current.label.clone();
        Some(match ev {
            EndpointEvent::Registration(RegistrationEvent::Registered { expires }) => {
                Event::Registered {
                    server,
                    transport: current.transport,
                    expires,
                }
            }
            EndpointEvent::Registration(RegistrationEvent::Failed {
                reason,
                status,
                message,
                retry_at,
            }) => Event::RegistrationFailed {
                reason,
                status,
                message,
                will_retry: retry_at.is_some(),
            },
            EndpointEvent::Registration(RegistrationEvent::Unregistered) => Event::Unregistered,
            EndpointEvent::FlowLost { reason } | EndpointEvent::KeepaliveLost { reason } => {
                Event::Unreachable { server, reason }
            }
            EndpointEvent::Malformed { from, reason } if from == current.addr => Event::Error {
                message: format!("malformed message from {}: {reason}", current.label),
            },
            EndpointEvent::Publication(PublicationEvent::Failed {
                status, message, ..
            }) => Event::Error {
                message: match status {
                    Some(s) => format!("publishing presence failed ({s}): {message}"),
                    None => format!("publishing presence failed: {message}"),
                },
            },
            EndpointEvent::Subscription { id, event } => {
                let uri = self.friends.get(&id).cloned().unwrap_or_default();
                let mut events = presence::friend_events(uri, event);
                let last = events.pop();
                for e in events {
                    self.emit(e);
                }
                return last;
            }
            EndpointEvent::Publication(
                PublicationEvent::Published { .. } | PublicationEvent::Unpublished,
            )
            | EndpointEvent::Malformed { .. }
            | EndpointEvent::IncomingCall { .. }
            | EndpointEvent::Call { .. } => return None,
        })
    }
}

/// The CLI's words for why a call ended.
fn end_reason(reason: &crate::sip::call::EndReason) -> String {
    use crate::sip::call::EndReason as R;
    match reason {
        R::LocalHangup => "local hangup".into(),
        R::RemoteHangup => "remote hangup".into(),
        R::Cancelled => "cancelled".into(),
        R::RemoteCancelled => "cancelled by caller".into(),
        R::Busy => "busy".into(),
        R::Declined => "declined".into(),
        R::Rejected(status) => format!("rejected ({status})"),
        R::Timeout => "timeout".into(),
        R::NoAck => "no ACK".into(),
        R::Unreachable(why) => format!("unreachable: {why}"),
        R::DialogGone => "dialog gone".into(),
        R::SessionExpired => "session expired".into(),
    }
}

fn now() -> std::time::Instant {
    std::time::Instant::now()
}
