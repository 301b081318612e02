//! The phone: a [`Phone`] handle (commands in) and an [`Events`] stream
//! (state out), over one tokio driver task that owns sockets and timers and
//! feeds the sans-IO [`crate::sip::Endpoint`].

mod call_media;
mod config;
mod connection;
mod datagram;
mod driver;
mod event;
pub mod instance_id;
mod migration;
mod presence;
mod server;
mod server_source;
mod tls;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rand::Rng;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::sip::endpoint::{Endpoint, EndpointConfig};
use crate::sip::registration::{RegistrationConfig, RetryPolicy};
use crate::sip::transaction::Timers;
use crate::sip::uri::{Host, Uri};
use crate::sip::Transport;

pub use crate::sip::registration::FailureReason;
pub use call_media::CallAudio;
pub use config::{
    AccountConfig, DEFAULT_DATAGRAM_KEEPALIVE, DEFAULT_EXPIRES, DEFAULT_STREAM_KEEPALIVE,
    KEEPALIVE_TIMEOUT,
};
pub use event::{CallId, CallState, Event, RegistrationState};
pub use server::{resolve_uri, ServerTarget};

use call_media::MediaCommand;
use connection::TlsSetup;
use driver::{Command, Driver, MediaSettings, Servers, Sockets};
use migration::Migration;
use server_source::Sources;

use crate::discovery::{remembered, DiscoveryClient};
use crate::location::sharing::Sharing;
use crate::location::Location;

/// Why a phone could not start or take a command.
#[derive(Debug, thiserror::Error)]
pub enum PhoneError {
    /// The account settings are unusable.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The server name did not resolve.
    #[error("cannot resolve server: {0}")]
    Resolve(String),
    /// A local socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// What we tried to bind.
        addr: SocketAddr,
        /// Why it failed.
        source: io::Error,
    },
    /// TLS settings are unusable (bad CA file, bad server name).
    #[error("TLS: {0}")]
    Tls(String),
    /// The state directory could not be used.
    #[error("state file: {0}")]
    State(io::Error),
    /// The phone has shut down.
    #[error("the phone has stopped")]
    Stopped,
    /// A call's target is not a SIP address or user name.
    #[error("bad call target {0:?}")]
    InvalidTarget(String),
    /// Session descriptions could not be agreed on.
    #[error("media: {0}")]
    Media(String),
}

/// The stream of [`Event`]s from a running phone.
#[derive(Debug)]
pub struct Events(mpsc::UnboundedReceiver<Event>);

impl Events {
    /// The next event; `None` once the phone has stopped.
    pub async fn recv(&mut self) -> Option<Event> {
        self.0.recv().await
    }
}

/// A call being placed; its id comes once the phone has sent the INVITE.
#[derive(Debug)]
pub struct PendingCall(oneshot::Receiver<Result<CallId, PhoneError>>);

impl PendingCall {
    /// The call's id, or why it could not be placed.
    pub async fn id(self) -> Result<CallId, PhoneError> {
        self.0.await.map_err(|_| PhoneError::Stopped)?
    }
}

/// A running phone. Dropping it shuts the phone down in the background.
#[derive(Debug)]
pub struct Phone {
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
    server: ServerTarget,
    local: SocketAddr,
    domain: Host,
}

impl Phone {
    /// Resolves the server, binds sockets and starts the driver on the
    /// current tokio runtime. Nothing is sent until [`Phone::register`].
    pub async fn start(config: AccountConfig) -> Result<(Phone, Events), PhoneError> {
        if config.user.is_empty() || config.domain.is_empty() {
            return Err(PhoneError::InvalidConfig(
                "user and domain are required".into(),
            ));
        }
        if config.codecs.is_empty() {
            return Err(PhoneError::InvalidConfig("no codec to offer".into()));
        }
        let aor_host = Host::parse(&config.domain)
            .map_err(|e| PhoneError::InvalidConfig(format!("domain: {e}")))?;
        let aor_domain = aor_host.clone();
        let sources = Sources {
            client: config
                .discovery
                .as_deref()
                .map(DiscoveryClient::new)
                .transpose()
                .map_err(|e| PhoneError::InvalidConfig(e.to_string()))?,
            remembered: config
                .discovery
                .as_ref()
                .and(config.state_dir.as_deref())
                .map(remembered::path),
            domain: config.domain.clone(),
            nameserver: config.dns_server,
        };
        let seed: u64 = rand::rng().random();
        let (server, first_list) = match &config.server {
            Some(_) => (server::resolve(&config).await?, None),
            None => {
                let (list, known) = sources
                    .first()
                    .await
                    .map_err(|e| PhoneError::Resolve(e.to_string()))?;
                let best = Migration::best(&list, &known, seed).ok_or_else(|| {
                    PhoneError::Resolve("no usable server in the server list".into())
                })?;
                (best, Some((list, known)))
            }
        };
        let sockets = bind(config.listen, server.addr).await?;
        let bound = sockets
            .tcp
            .local_addr()
            .map_err(|source| PhoneError::Bind {
                addr: config.listen.unwrap_or(server.addr),
                source,
            })?;
        let local = SocketAddr::new(contact_ip(bound.ip(), server.addr), bound.port());
        let tls = match server.transport {
            Transport::Tls => {
                let cfg = tls::client_config(config.ca_file.as_deref())?;
                Some(TlsSetup::new(cfg, &server.tls_name).map_err(PhoneError::Tls)?)
            }
            Transport::Udp | Transport::Tcp => None,
        };
        let instance_id = match &config.state_dir {
            Some(dir) => instance_id::load_or_create(dir, &config.user, &config.domain)
                .map_err(PhoneError::State)?,
            None => instance_id::ephemeral(),
        };
        let contact = contact_uri(&config.user, local, server.transport);
        let keepalive = config::keepalive_interval(config.keepalive, server.transport);
        let endpoint = Endpoint::new(EndpointConfig {
            transport: server.transport,
            server: server.addr,
            local,
            registration: RegistrationConfig {
                aor: Uri::new(Some(&config.user), aor_host.clone(), None),
                registrar: Uri::new(None, aor_host, None),
                contact,
                instance_id,
                reg_id: 1,
                expires: config.expires,
                username: config.user.clone(),
                password: config.password.clone(),
                user_agent: format!("Locus/{}", env!("CARGO_PKG_VERSION")),
                retry: RetryPolicy {
                    base: config.retry_base,
                    max: config.retry_max,
                    ..RetryPolicy::default()
                },
            },
            timers: Timers::default(),
            keepalive: Some(keepalive),
            keepalive_timeout: KEEPALIVE_TIMEOUT,
            seed,
        });
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        tracing::info!(server = %server.label, %local, "phone started");
        let driver = Driver::new(
            endpoint,
            sockets,
            tls,
            cmd_rx,
            ev_tx,
            MediaSettings {
                ip: local.ip(),
                codecs: config.codecs.clone(),
            },
            Servers {
                migration: Migration::new(server.clone(), seed),
                first_list,
                sources,
                user: config.user.clone(),
                ca_file: config.ca_file.clone(),
                bound,
                aor: format!("sip:{}@{}", config.user, config.domain),
                keepalive: config.keepalive,
            },
        );
        let task = tokio::spawn(driver.run());
        Ok((
            Phone {
                commands: cmd_tx,
                task,
                server,
                local,
                domain: aor_domain,
            },
            Events(ev_rx),
        ))
    }

    /// The server this phone started with (later moves are reported as
    /// [`Event::ServerChanged`]).
    pub fn server(&self) -> &ServerTarget {
        &self.server
    }

    /// The local SIP address (as written in Via and Contact).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Starts registering; progress arrives as events.
    pub fn register(&self) -> Result<(), PhoneError> {
        self.commands
            .send(Command::Register)
            .map_err(|_| PhoneError::Stopped)
    }

    /// Removes the registration; [`Event::Unregistered`] follows.
    pub fn unregister(&self) -> Result<(), PhoneError> {
        self.commands
            .send(Command::Unregister)
            .map_err(|_| PhoneError::Stopped)
    }

    /// Calls `target` (`sip:bob@example.test`, or a user name in our
    /// domain); await [`PendingCall::id`] for the call's id. Progress
    /// arrives as [`Event::CallState`].
    pub fn call(&self, target: &str, audio: CallAudio) -> Result<PendingCall, PhoneError> {
        let uri = self.address_of(target)?;
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Call {
                target: uri,
                audio,
                reply,
            })
            .map_err(|_| PhoneError::Stopped)?;
        Ok(PendingCall(answer))
    }

    /// The address `target` names: `sip:bob@example.test` as it is, `bob`
    /// in our domain.
    pub fn address_of(&self, target: &str) -> Result<Uri, PhoneError> {
        if target.contains(':') {
            Uri::parse(target).map_err(|e| PhoneError::InvalidTarget(format!("{target}: {e}")))
        } else if !target.is_empty() && !target.contains(['@', ' ', '<', '>']) {
            Ok(Uri::new(Some(target), self.domain.clone(), None))
        } else {
            Err(PhoneError::InvalidTarget(target.to_owned()))
        }
    }

    /// Answers an incoming call.
    pub fn answer(&self, call: CallId, audio: CallAudio) -> Result<(), PhoneError> {
        self.commands
            .send(Command::Answer { call, audio })
            .map_err(|_| PhoneError::Stopped)
    }

    /// Refuses an incoming call: busy (486) or declined (603).
    pub fn reject(&self, call: CallId, busy: bool) -> Result<(), PhoneError> {
        let status = if busy { 486 } else { 603 };
        self.commands
            .send(Command::Reject { call, status })
            .map_err(|_| PhoneError::Stopped)
    }

    /// Ends a call, whatever its state.
    pub fn hangup(&self, call: CallId) -> Result<(), PhoneError> {
        self.commands
            .send(Command::Hangup { call })
            .map_err(|_| PhoneError::Stopped)
    }

    /// Puts a call on hold: we offer `sendonly` (RFC 3264), so the peer
    /// stops sending while we may still send, e.g. music on hold.
    pub fn hold(&self, call: CallId) -> Result<(), PhoneError> {
        self.commands
            .send(Command::Hold { call, hold: true })
            .map_err(|_| PhoneError::Stopped)
    }

    /// Takes a call off hold.
    pub fn resume(&self, call: CallId) -> Result<(), PhoneError> {
        self.commands
            .send(Command::Hold { call, hold: false })
            .map_err(|_| PhoneError::Stopped)
    }

    /// Sends DTMF digits in a connected call.
    pub fn send_dtmf(&self, call: CallId, digits: &str) -> Result<(), PhoneError> {
        self.media(call, MediaCommand::Dtmf(digits.to_owned()))
    }

    /// Mutes or unmutes the microphone in a call: while muted, silence is
    /// sent (the peer keeps receiving RTP, so nothing looks broken).
    pub fn mute(&self, call: CallId, muted: bool) -> Result<(), PhoneError> {
        self.media(call, MediaCommand::Mute(muted))
    }

    fn media(&self, call: CallId, command: MediaCommand) -> Result<(), PhoneError> {
        self.commands
            .send(Command::Media { call, command })
            .map_err(|_| PhoneError::Stopped)
    }

    /// Sets our position (`None` forgets it). It leaves the phone only for
    /// contacts [`Phone::set_sharing`] allows: in the INVITEs of our calls
    /// to them, and in an UPDATE to the peer of a call under way when it
    /// moved beyond what that peer knows ([`Location::moved_from`]).
    pub fn set_location(&self, location: Option<Location>) -> Result<(), PhoneError> {
        self.commands
            .send(Command::SetLocation(location))
            .map_err(|_| PhoneError::Stopped)
    }

    /// Sets with whom our position is shared, and how precisely (off until
    /// called).
    pub fn set_sharing(&self, sharing: Sharing) -> Result<(), PhoneError> {
        self.commands
            .send(Command::SetSharing(sharing))
            .map_err(|_| PhoneError::Stopped)
    }

    /// Publishes our presence (PIDF with a basic status, and our position
    /// when sharing is on) and keeps it published, also across moves to
    /// other servers, until the phone stops.
    pub fn publish_presence(&self, open: bool) -> Result<(), PhoneError> {
        self.commands
            .send(Command::Publish { open })
            .map_err(|_| PhoneError::Stopped)
    }

    /// Watches a friend's presence (`sip:bob@example.test` or `bob`):
    /// [`Event::Friend`] follows each change; the subscription is renewed,
    /// and made again at a new server after a move.
    pub fn watch(&self, friend: &str) -> Result<(), PhoneError> {
        let friend = self.address_of(friend)?;
        self.commands
            .send(Command::Watch { friend })
            .map_err(|_| PhoneError::Stopped)
    }

    /// Tells the phone the network changed (another Wi-Fi, mobile data):
    /// it re-checks its address, reconnects and registers again at once.
    pub fn network_changed(&self) -> Result<(), PhoneError> {
        self.commands
            .send(Command::NetworkChanged)
            .map_err(|_| PhoneError::Stopped)
    }

    /// Unregisters if registered (waiting a few seconds at most for the
    /// answer), then stops the driver.
    pub async fn shutdown(self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Shutdown(done)).is_ok() {
            let _ = wait.await;
        }
        let _ = self.task.await;
    }
}

/// Binds UDP and a TCP listener on the same port, so one Contact address
/// reaches us over either transport.
async fn bind(listen: Option<SocketAddr>, server: SocketAddr) -> Result<Sockets, PhoneError> {
    let unspecified = match server {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    let requested = listen.unwrap_or(SocketAddr::new(unspecified, 0));
    // With port 0 the UDP port the system picks may be taken for TCP; retry.
    let attempts = if requested.port() == 0 { 10 } else { 1 };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = datagram::DatagramSocket::bind(requested).map_err(|source| PhoneError::Bind {
            addr: requested,
            source,
        })?;
        let addr = udp.local_addr().map_err(|source| PhoneError::Bind {
            addr: requested,
            source,
        })?;
        if let Err(e) = udp.report_unreachable() {
            tracing::debug!(error = %e, "ICMP errors will not be reported");
        }
        match listen_tcp(addr) {
            Ok(tcp) => return Ok(Sockets { udp, tcp }),
            Err(source) if attempt >= attempts => return Err(PhoneError::Bind { addr, source }),
            Err(e) => tracing::debug!(%addr, error = %e, "TCP port taken; trying another"),
        }
    }
}

fn listen_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(64)
}

/// Our Contact: the advertised address, with the transport when not UDP.
pub(crate) fn contact_uri(user: &str, local: SocketAddr, transport: Transport) -> Uri {
    let mut contact = Uri::new(Some(user), Host::Ip(local.ip()), Some(local.port()));
    if transport != Transport::Udp {
        contact.params.set("transport", Some(transport.param()));
    }
    contact
}

/// The address to advertise: the bound one, or when bound to "any", the
/// source address the system would use towards the server (a route lookup;
/// nothing is sent).
pub(crate) fn contact_ip(bound: IpAddr, server: SocketAddr) -> IpAddr {
    if !bound.is_unspecified() {
        return bound;
    }
    let probe = || {
        let s = std::net::UdpSocket::bind(SocketAddr::new(bound, 0))?;
        s.connect(server)?;
        s.local_addr()
    };
    match probe() {
        Ok(addr) => addr.ip(),
        Err(e) => {
            tracing::warn!(error = %e, "no route to the server; advertising loopback");
            if server.is_ipv4() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
            }
        }
    }
}
