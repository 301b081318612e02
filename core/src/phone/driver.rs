//! The one task that owns the sockets and the clock and feeds the sans-IO
//! endpoint. It decides nothing about SIP: every choice is the endpoint's.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::sip::endpoint::{Endpoint, EndpointEvent};
use crate::sip::framing::Frame;
use crate::sip::message;
use crate::sip::registration::RegistrationEvent;
use crate::sip::{Transmit, Transport};

use super::connection::{spawn_accepted, spawn_outgoing, ConnectionHandle, Inbound, TlsSetup};
use super::event::Event;
use super::server::ServerTarget;

/// How long shutting down waits for the unregistration to be answered.
const UNREGISTER_GRACE: Duration = Duration::from_secs(5);

/// Commands from the facade.
#[derive(Debug)]
pub(crate) enum Command {
    Register,
    Unregister,
    Shutdown(oneshot::Sender<()>),
}

/// Sockets bound before the driver starts, so binding errors reach the caller.
#[derive(Debug)]
pub(crate) struct Sockets {
    pub udp: UdpSocket,
    pub tcp: TcpListener,
}

pub(crate) struct Driver {
    endpoint: Endpoint,
    server: ServerTarget,
    sockets: Sockets,
    tls: Option<TlsSetup>,
    connections: HashMap<(Transport, SocketAddr), ConnectionHandle>,
    next_connection_id: u64,
    inbound_tx: mpsc::UnboundedSender<Inbound>,
    inbound_rx: mpsc::UnboundedReceiver<Inbound>,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    shutdown: Option<(oneshot::Sender<()>, Instant)>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Driver {
    pub(crate) fn new(
        endpoint: Endpoint,
        server: ServerTarget,
        sockets: Sockets,
        tls: Option<TlsSetup>,
        commands: mpsc::UnboundedReceiver<Command>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Driver {
        let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
        Driver {
            endpoint,
            server,
            sockets,
            tls,
            connections: HashMap::new(),
            next_connection_id: 0,
            inbound_tx,
            inbound_rx,
            commands,
            events,
            shutdown: None,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut buf = vec![0u8; 65_536];
        loop {
            self.flush();
            if let Some((_, deadline)) = &self.shutdown {
                if !self.endpoint.is_unregistering() || Instant::now() >= *deadline {
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
                    Err(e) => log_udp_error(&e),
                },
                Some(inbound) = self.inbound_rx.recv() => self.handle_inbound(inbound),
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
            // Every facade handle is gone: nobody can listen any more.
            None => {
                let (done, _) = oneshot::channel();
                self.begin_shutdown(done);
            }
        }
    }

    fn begin_shutdown(&mut self, done: oneshot::Sender<()>) {
        if self.shutdown.is_none() {
            if self.endpoint.is_registered() {
                self.endpoint.unregister(now());
            }
            self.shutdown = Some((done, Instant::now() + UNREGISTER_GRACE));
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
                self.forget_connection(id, transport, remote);
                self.endpoint
                    .handle_transport_error(now(), transport, remote, &reason);
            }
            Inbound::Closed {
                id,
                transport,
                remote,
                reason,
            } => {
                tracing::info!(%remote, %transport, %reason, "connection closed");
                self.forget_connection(id, transport, remote);
                self.endpoint
                    .handle_flow_closed(now(), transport, remote, &reason);
            }
        }
    }

    /// Drops the map entry only if it is still the connection that ended.
    fn forget_connection(&mut self, id: u64, transport: Transport, remote: SocketAddr) {
        if self
            .connections
            .get(&(transport, remote))
            .is_some_and(|h| h.id == id)
        {
            self.connections.remove(&(transport, remote));
        }
    }

    fn flush(&mut self) {
        loop {
            while let Some(t) = self.endpoint.poll_transmit() {
                self.send(t);
            }
            let Some(ev) = self.endpoint.poll_event() else {
                break;
            };
            if let EndpointEvent::IncomingCall { call, .. } = ev {
                // The phone has no media engine yet, so it cannot take a
                // call: refuse honestly rather than ring forever.
                self.endpoint.reject(now(), call, 480);
                continue;
            }
            if let Some(ev) = self.public_event(ev) {
                let _ = self.events.send(ev);
            }
        }
    }

    fn send(&mut self, t: Transmit) {
        tracing::trace!(dest = %t.destination, transport = %t.transport, "sending\n{}", message::loggable(&t.payload));
        match t.transport {
            Transport::Udp => {
                if let Err(e) = self.sockets.udp.try_send_to(&t.payload, t.destination) {
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
        let server = self.server.label.clone();
        Some(match ev {
            EndpointEvent::Registration(RegistrationEvent::Registered { expires }) => {
                Event::Registered {
                    server,
                    transport: self.server.transport,
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
            EndpointEvent::FlowLost { reason } => Event::Unreachable { server, reason },
            EndpointEvent::Malformed { from, reason } if from == self.server.addr => Event::Error {
                message: format!("malformed message from {}: {reason}", self.server.label),
            },
            EndpointEvent::Malformed { .. }
            | EndpointEvent::IncomingCall { .. }
            | EndpointEvent::Call { .. } => return None,
        })
    }
}

fn now() -> std::time::Instant {
    std::time::Instant::now()
}

fn log_udp_error(e: &io::Error) {
    // Linux reports an ICMP port-unreachable for an earlier send as an error
    // on a later receive; the transaction's own timer handles the loss.
    tracing::debug!(error = %e, "UDP receive error");
}
