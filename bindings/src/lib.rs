//! locus-ffi: the uniffi surface of locus-core.
//!
//! A small, stable API for Kotlin: a [`Phone`] object, a [`PhoneListener`]
//! foreign trait that receives events, and plain records and enums. Each
//! `Phone` owns a small tokio runtime, so the foreign side needs none; events
//! are delivered on that runtime's thread and listeners should return quickly.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

uniffi::setup_scaffolding!();

/// Account settings, as the UI collects them.
#[derive(Debug, Clone, uniffi::Record)]
pub struct AccountSettings {
    /// SIP user name.
    pub user: String,
    /// SIP domain.
    pub domain: String,
    /// Password.
    pub password: String,
    /// A fixed server URI; `None` resolves the domain.
    pub server: Option<String>,
    /// Local `addr:port` for SIP; `None` lets the system choose.
    pub listen: Option<String>,
    /// Extra trusted CA certificates (PEM file path).
    pub ca_file: Option<String>,
    /// Registration lifetime to ask for, seconds; `None` for the default.
    pub expires: Option<u32>,
    /// Directory for the phone's small state files (the app's files dir).
    pub state_dir: Option<String>,
    /// Codecs to offer and accept, most preferred first (`opus`, `pcmu`,
    /// `pcma`); `None` for all, Opus first.
    #[uniffi(default = None)]
    pub codecs: Option<Vec<String>>,
    /// Base URL of a discovery service; `None` uses `server` or DNS.
    #[uniffi(default = None)]
    pub discovery: Option<String>,
    /// Keepalive interval in seconds; `None` for the transport's default.
    #[uniffi(default = None)]
    pub keepalive_secs: Option<u32>,
}

/// A position in WGS 84.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct GeoLocation {
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Uncertainty in metres (0 for a point).
    pub radius_m: f64,
    /// When it was determined (RFC 3339), if known.
    pub timestamp: Option<String>,
}

impl From<locus_core::location::Location> for GeoLocation {
    fn from(l: locus_core::location::Location) -> Self {
        GeoLocation {
            lat: l.lat,
            lon: l.lon,
            radius_m: l.radius_m,
            timestamp: l.timestamp.map(|t| t.as_str().to_owned()),
        }
    }
}

impl TryFrom<GeoLocation> for locus_core::location::Location {
    type Error = LocusError;

    fn try_from(g: GeoLocation) -> Result<Self, LocusError> {
        let invalid = |e: locus_core::location::LocationError| LocusError::InvalidSettings {
            message: e.to_string(),
        };
        let timestamp = match g.timestamp {
            Some(t) => locus_core::location::Timestamp::parse(&t).map_err(invalid)?,
            None => locus_core::location::Timestamp::now(),
        };
        locus_core::location::Location::new(g.lat, g.lon, g.radius_m, Some(timestamp))
            .map_err(invalid)
    }
}

/// Where a call's audio comes from and goes to.
#[derive(Debug, Clone, Default, uniffi::Record)]
pub struct CallAudioSettings {
    /// WAV file to send (silence when absent).
    pub input: Option<String>,
    /// WAV file to record what is heard (dropped when absent).
    pub output: Option<String>,
    /// Use the microphone and loudspeaker (with echo cancellation) instead
    /// of the files.
    pub sound_card: bool,
}

impl From<CallAudioSettings> for locus_core::CallAudio {
    fn from(a: CallAudioSettings) -> Self {
        locus_core::CallAudio {
            input: a.input.map(PathBuf::from),
            output: a.output.map(PathBuf::from),
            sound_card: a.sound_card,
        }
    }
}

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS.
    Tls,
}

/// Why a registration failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum FailureReason {
    /// Wrong credentials.
    Auth,
    /// No answer in time.
    Timeout,
    /// The registrar refused.
    Rejected,
    /// The registrar could not be reached.
    Unreachable,
}

/// Where the registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum RegistrationState {
    /// Not registered.
    Unregistered,
    /// Registering or retrying.
    Registering,
    /// Registered.
    Registered,
    /// Failed for good.
    Failed,
}

/// Something the phone reports.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum PhoneEvent {
    /// Registered with `server`.
    Registered {
        /// Server URI.
        server: String,
        /// Transport.
        transport: Transport,
        /// Granted lifetime, seconds.
        expires: u32,
    },
    /// A registration attempt failed.
    RegistrationFailed {
        /// Classification.
        reason: FailureReason,
        /// SIP status, when the registrar answered.
        status: Option<u16>,
        /// Detail for people.
        message: String,
        /// Whether the phone retries by itself.
        will_retry: bool,
    },
    /// The registration was removed.
    Unregistered,
    /// The server stopped answering or its connection closed.
    Unreachable {
        /// Server URI.
        server: String,
        /// What happened.
        reason: String,
    },
    /// A friend's presence changed.
    Friend {
        /// The friend's address.
        uri: String,
        /// `open`, `closed`, `pending`, `terminated` or `unknown`.
        status: String,
        /// Where the friend is, when shared.
        location: Option<GeoLocation>,
    },
    /// The phone moved to another server.
    ServerChanged {
        /// The server left.
        from: String,
        /// The server now used.
        to: String,
        /// Why.
        reason: String,
    },
    /// Any other problem.
    Error {
        /// What happened.
        message: String,
    },
    /// Someone calls.
    IncomingCall {
        /// The call.
        call: u64,
        /// The caller.
        from: String,
        /// Where the caller is, when they shared it.
        location: Option<GeoLocation>,
    },
    /// The peer of a call told us where it is (the callee, once it answered).
    CallLocation {
        /// The call.
        call: u64,
        /// Where the peer is.
        location: GeoLocation,
    },
    /// A call changed state: calling, ringing, connected, held or ended.
    CallState {
        /// The call.
        call: u64,
        /// The state's name.
        state: String,
        /// Why it ended, when it did.
        reason: Option<String>,
    },
    /// A call's quality figures.
    CallStats {
        /// The call.
        call: u64,
        /// Codec in use.
        codec: String,
        /// Packets lost.
        packets_lost: u64,
        /// Loss in %.
        loss_pct: f64,
        /// Jitter in ms.
        jitter_ms: f64,
        /// Round-trip time in ms, once known.
        rtt_ms: Option<f64>,
        /// Estimated MOS.
        mos: f64,
    },
    /// The peer pressed a key.
    Dtmf {
        /// The call.
        call: u64,
        /// The key.
        digit: String,
    },
}

/// Receives a phone's events; implemented in Kotlin.
#[uniffi::export(with_foreign)]
pub trait PhoneListener: Send + Sync {
    /// Every event, in order.
    fn on_event(&self, event: PhoneEvent);
    /// The registration state after an event changed it.
    fn on_registration_state(&self, state: RegistrationState);
}

/// Why a call into the phone failed.
///
/// Flat on the foreign side: Kotlin gets the variant and its `message`.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum LocusError {
    /// The settings are unusable.
    #[error("invalid settings: {message}")]
    InvalidSettings {
        /// Detail.
        message: String,
    },
    /// The phone could not start (resolve, bind, TLS, state files).
    #[error("cannot start: {message}")]
    Start {
        /// Detail.
        message: String,
    },
    /// The phone has shut down.
    #[error("the phone has stopped")]
    Stopped,
    /// A call could not be placed or answered.
    #[error("call: {message}")]
    Call {
        /// Detail.
        message: String,
    },
}

impl From<locus_core::PhoneError> for LocusError {
    fn from(e: locus_core::PhoneError) -> Self {
        match e {
            locus_core::PhoneError::InvalidConfig(message) => {
                LocusError::InvalidSettings { message }
            }
            locus_core::PhoneError::Stopped => LocusError::Stopped,
            e @ (locus_core::PhoneError::InvalidTarget(_) | locus_core::PhoneError::Media(_)) => {
                LocusError::Call {
                    message: e.to_string(),
                }
            }
            other => LocusError::Start {
                message: other.to_string(),
            },
        }
    }
}

/// A SIP phone for one account.
#[derive(Debug, uniffi::Object)]
pub struct Phone {
    // Dropped after `inner`, so the driver task can finish inside it.
    runtime: tokio::runtime::Runtime,
    inner: Mutex<Option<locus_core::Phone>>,
}

#[uniffi::export]
impl Phone {
    /// Starts a phone (sockets bound, nothing sent yet); events go to `listener`.
    #[uniffi::constructor]
    pub fn new(
        settings: AccountSettings,
        listener: Arc<dyn PhoneListener>,
    ) -> Result<Arc<Phone>, LocusError> {
        let config = account_config(settings)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("locus-phone")
            .enable_all()
            .build()
            .map_err(|e| LocusError::Start {
                message: e.to_string(),
            })?;
        let (phone, mut events) = runtime.block_on(locus_core::Phone::start(config))?;
        runtime.spawn(async move {
            while let Some(event) = events.recv().await {
                let state = event.registration_state();
                listener.on_event(event.into());
                if let Some(state) = state {
                    listener.on_registration_state(state.into());
                }
            }
        });
        Ok(Arc::new(Phone {
            runtime,
            inner: Mutex::new(Some(phone)),
        }))
    }

    /// Starts registering.
    pub fn register(&self) -> Result<(), LocusError> {
        self.with_phone(|p| p.register())
    }

    /// Removes the registration.
    pub fn unregister(&self) -> Result<(), LocusError> {
        self.with_phone(|p| p.unregister())
    }

    /// Calls `target` (a SIP URI or a user name in the account's domain);
    /// returns the call's id. Progress arrives as call events.
    pub async fn call(&self, target: String, audio: CallAudioSettings) -> Result<u64, LocusError> {
        let pending = self.with_phone(|p| p.call(&target, audio.into()))?;
        Ok(pending.id().await?)
    }

    /// Answers an incoming call.
    pub fn answer(&self, call: u64, audio: CallAudioSettings) -> Result<(), LocusError> {
        self.with_phone(|p| p.answer(call, audio.into()))
    }

    /// Refuses an incoming call: busy, or declined.
    pub fn reject(&self, call: u64, busy: bool) -> Result<(), LocusError> {
        self.with_phone(|p| p.reject(call, busy))
    }

    /// Ends a call, whatever its state.
    pub fn hangup(&self, call: u64) -> Result<(), LocusError> {
        self.with_phone(|p| p.hangup(call))
    }

    /// Puts a call on hold.
    pub fn hold(&self, call: u64) -> Result<(), LocusError> {
        self.with_phone(|p| p.hold(call))
    }

    /// Takes a call off hold.
    pub fn resume(&self, call: u64) -> Result<(), LocusError> {
        self.with_phone(|p| p.resume(call))
    }

    /// Sends DTMF digits in a connected call.
    pub fn send_dtmf(&self, call: u64, digits: String) -> Result<(), LocusError> {
        self.with_phone(|p| p.send_dtmf(call, &digits))
    }

    /// Mutes or unmutes the microphone in a call (silence is sent).
    pub fn mute(&self, call: u64, muted: bool) -> Result<(), LocusError> {
        self.with_phone(|p| p.mute(call, muted))
    }

    /// Sets our position (`None` forgets it); it is sent only to contacts
    /// [`Phone::share_location`] allows, in new calls and to the peer of a
    /// call under way once we moved beyond what it knows.
    pub fn set_location(&self, location: Option<GeoLocation>) -> Result<(), LocusError> {
        let location = location.map(TryInto::try_into).transpose()?;
        self.with_phone(|p| p.set_location(location))
    }

    /// Shares our position with `contacts` (`bob@example.test`), coarsened
    /// to about `precision_m` metres when given. Sharing is off until this
    /// is called.
    pub fn share_location(
        &self,
        contacts: Vec<String>,
        precision_m: Option<f64>,
    ) -> Result<(), LocusError> {
        let sharing = locus_core::location::sharing::Sharing::with(contacts, precision_m);
        self.with_phone(|p| p.set_sharing(sharing))
    }

    /// Publishes our presence (available or not), with our position when
    /// sharing is on; kept published until the phone stops.
    pub fn publish_presence(&self, open: bool) -> Result<(), LocusError> {
        self.with_phone(|p| p.publish_presence(open))
    }

    /// Watches a friend's presence; `Friend` events follow.
    pub fn watch(&self, friend: String) -> Result<(), LocusError> {
        self.with_phone(|p| p.watch(&friend))
    }

    /// Stops sharing our position with anyone.
    pub fn stop_sharing_location(&self) -> Result<(), LocusError> {
        self.with_phone(|p| p.set_sharing(Default::default()))
    }

    /// Tells the phone the network changed (call it from Android's
    /// `ConnectivityManager.NetworkCallback`): it registers again at once.
    pub fn network_changed(&self) -> Result<(), LocusError> {
        self.with_phone(|p| p.network_changed())
    }

    /// The local SIP address, `ip:port`.
    pub fn local_address(&self) -> Result<String, LocusError> {
        self.with_phone(|p| Ok(p.local_addr().to_string()))
    }

    /// Unregisters (waiting a few seconds at most) and stops the phone.
    pub async fn shutdown(&self) {
        let phone = self.inner.lock().ok().and_then(|mut g| g.take());
        if let Some(phone) = phone {
            // The phone's futures use only runtime-agnostic channels, so they
            // can be awaited from the foreign executor.
            phone.shutdown().await;
        }
    }
}

impl Phone {
    fn with_phone<T>(
        &self,
        f: impl FnOnce(&locus_core::Phone) -> Result<T, locus_core::PhoneError>,
    ) -> Result<T, LocusError> {
        let guard = self.inner.lock().map_err(|_| LocusError::Stopped)?;
        let phone = guard.as_ref().ok_or(LocusError::Stopped)?;
        let _enter = self.runtime.enter();
        Ok(f(phone)?)
    }
}

fn account_config(s: AccountSettings) -> Result<locus_core::AccountConfig, LocusError> {
    let mut c = locus_core::AccountConfig::new(s.user, s.domain, s.password);
    c.server = s.server;
    c.discovery = s.discovery;
    c.keepalive = s
        .keepalive_secs
        .map(|secs| std::time::Duration::from_secs(u64::from(secs)));
    c.listen = s
        .listen
        .map(|l| {
            l.parse().map_err(|e| LocusError::InvalidSettings {
                message: format!("listen {l:?}: {e}"),
            })
        })
        .transpose()?;
    c.ca_file = s.ca_file.map(PathBuf::from);
    if let Some(expires) = s.expires {
        c.expires = expires;
    }
    c.state_dir = s.state_dir.map(PathBuf::from);
    if let Some(names) = s.codecs {
        c.codecs = names
            .iter()
            .map(|n| {
                locus_core::media::sdp::Codec::from_name(n).ok_or_else(|| {
                    LocusError::InvalidSettings {
                        message: format!("unknown codec {n:?} (known: opus, pcmu, pcma)"),
                    }
                })
            })
            .collect::<Result<_, _>>()?;
    }
    Ok(c)
}

impl From<locus_core::Transport> for Transport {
    fn from(t: locus_core::Transport) -> Self {
        match t {
            locus_core::Transport::Udp => Transport::Udp,
            locus_core::Transport::Tcp => Transport::Tcp,
            locus_core::Transport::Tls => Transport::Tls,
        }
    }
}

impl From<locus_core::FailureReason> for FailureReason {
    fn from(r: locus_core::FailureReason) -> Self {
        match r {
            locus_core::FailureReason::Auth => FailureReason::Auth,
            locus_core::FailureReason::Timeout => FailureReason::Timeout,
            locus_core::FailureReason::Rejected => FailureReason::Rejected,
            locus_core::FailureReason::Unreachable => FailureReason::Unreachable,
        }
    }
}

impl From<locus_core::RegistrationState> for RegistrationState {
    fn from(s: locus_core::RegistrationState) -> Self {
        match s {
            locus_core::RegistrationState::Unregistered => RegistrationState::Unregistered,
            locus_core::RegistrationState::Registering => RegistrationState::Registering,
            locus_core::RegistrationState::Registered => RegistrationState::Registered,
            locus_core::RegistrationState::Failed => RegistrationState::Failed,
        }
    }
}

impl From<locus_core::Event> for PhoneEvent {
    fn from(e: locus_core::Event) -> Self {
        use locus_core::Event as E;
        match e {
            E::Registered {
                server,
                transport,
                expires,
            } => PhoneEvent::Registered {
                server,
                transport: transport.into(),
                expires,
            },
            E::RegistrationFailed {
                reason,
                status,
                message,
                will_retry,
            } => PhoneEvent::RegistrationFailed {
                reason: reason.into(),
                status,
                message,
                will_retry,
            },
            E::Unregistered => PhoneEvent::Unregistered,
            E::Unreachable { server, reason } => PhoneEvent::Unreachable { server, reason },
            E::ServerChanged { from, to, reason } => PhoneEvent::ServerChanged { from, to, reason },
            E::Friend {
                uri,
                status,
                location,
            } => PhoneEvent::Friend {
                uri,
                status,
                location: location.map(GeoLocation::from),
            },
            E::Error { message } => PhoneEvent::Error { message },
            E::IncomingCall {
                call,
                from,
                location,
            } => PhoneEvent::IncomingCall {
                call,
                from,
                location: location.map(GeoLocation::from),
            },
            E::CallLocation { call, location } => PhoneEvent::CallLocation {
                call,
                location: location.into(),
            },
            E::CallState {
                call,
                state,
                reason,
            } => PhoneEvent::CallState {
                call,
                state: state.as_str().to_owned(),
                reason,
            },
            E::CallStats { call, codec, stats } => PhoneEvent::CallStats {
                call,
                codec,
                packets_lost: stats.packets_lost,
                loss_pct: stats.loss_pct,
                jitter_ms: stats.jitter_ms,
                rtt_ms: stats.rtt_ms,
                mos: stats.mos,
            },
            E::Dtmf { call, digit } => PhoneEvent::Dtmf {
                call,
                digit: digit.to_string(),
            },
        }
    }
}
