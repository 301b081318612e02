//! What a phone reports: the public event stream.

use crate::sip::registration::FailureReason;
use crate::sip::Transport;

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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Something went wrong that is not a registration failure.
    Error {
        /// What happened.
        message: String,
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
            Event::Error { .. } => None,
        }
    }
}
