//! What a phone reports: the public event stream.

use crate::location::Location;
use crate::media::rtcp_report::CallStats;
use crate::sip::registration::FailureReason;
use crate::sip::Transport;

/// Identifies a call of a phone.
pub type CallId = u64;

/// Where a call stands (the CLI's `call_state` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// We are calling; no answer yet.
    Calling,
    /// The callee is alerting.
    Ringing,
    /// Talking.
    Connected,
    /// On hold (either side).
    Held,
    /// Over.
    Ended,
}

impl CallState {
    /// The name used in events.
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Calling => "calling",
            CallState::Ringing => "ringing",
            CallState::Connected => "connected",
            CallState::Held => "held",
            CallState::Ended => "ended",
        }
    }
}

/// Where the registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationState {
    /// No binding and none being made.
    Unregistered,
    /// A REGISTER is in flight or a retry is scheduled.
    Registering,
    /// The registrar holds our binding.
    Registered,
    /// Registration failed for good (wrong credentials, refused).
    Failed,
}

/// A state change of the phone.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Registered with `server`.
    Registered {
        /// The server URI.
        server: String,
        /// Transport of the flow.
        transport: Transport,
        /// Granted lifetime in seconds.
        expires: u32,
    },
    /// A registration attempt failed.
    RegistrationFailed {
        /// Classification.
        reason: FailureReason,
        /// SIP status when the registrar answered.
        status: Option<u16>,
        /// Human-readable detail.
        message: String,
        /// Whether the phone will try again by itself.
        will_retry: bool,
    },
    /// The binding is gone (after unregistering).
    Unregistered,
    /// The current server stopped answering or its flow closed.
    Unreachable {
        /// The server URI.
        server: String,
        /// What happened.
        reason: String,
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
    /// A friend's presence changed.
    Friend {
        /// The friend's address.
        uri: String,
        /// `open`, `closed`, `pending` (not allowed yet), `terminated`, or
        /// `unknown` (nothing published).
        status: String,
        /// Where the friend is, when they share it.
        location: Option<Location>,
    },
    /// Something went wrong that is not a registration failure.
    Error {
        /// What happened.
        message: String,
    },
    /// Someone calls: answer, reject or hang up with its id.
    IncomingCall {
        /// The call.
        call: CallId,
        /// The caller's address.
        from: String,
        /// Where the caller is, when they shared it (RFC 6442).
        location: Option<Location>,
    },
    /// The peer of a call told us where it is (RFC 6442): the callee, after
    /// answering, or the caller with an update.
    CallLocation {
        /// The call.
        call: CallId,
        /// Where the peer is.
        location: Location,
    },
    /// A call changed state.
    CallState {
        /// The call.
        call: CallId,
        /// Its new state.
        state: CallState,
        /// Why it ended, when it did.
        reason: Option<String>,
    },
    /// A call's quality figures (every few seconds, and at its end).
    CallStats {
        /// The call.
        call: CallId,
        /// The codec in use.
        codec: String,
        /// Loss, jitter, round-trip time, MOS.
        stats: CallStats,
    },
    /// The peer pressed a key (RFC 4733).
    Dtmf {
        /// The call.
        call: CallId,
        /// The key.
        digit: char,
    },
}

impl Event {
    /// The registration state this event leaves the phone in, if it changes it.
    pub fn registration_state(&self) -> Option<RegistrationState> {
        match self {
            Event::Registered { .. } => Some(RegistrationState::Registered),
            Event::RegistrationFailed {
                will_retry: true, ..
            }
            | Event::Unreachable { .. } => Some(RegistrationState::Registering),
            Event::RegistrationFailed {
                will_retry: false, ..
            } => Some(RegistrationState::Failed),
            Event::Unregistered => Some(RegistrationState::Unregistered),
            Event::Error { .. }
            | Event::ServerChanged { .. }
            | Event::Friend { .. }
            | Event::IncomingCall { .. }
            | Event::CallLocation { .. }
            | Event::CallState { .. }
            | Event::CallStats { .. }
            | Event::Dtmf { .. } => None,
        }
    }
}
