//! locus-core: everything a Locus phone does, with no UI.
//!
//! Protocol logic lives in sans-IO state machines under [`sip`]; the tokio
//! driver and the [`Phone`] facade in [`phone`] own sockets and timers. The CLI
//! and the bindings use only [`Phone`], [`Events`] and [`Event`].

pub mod audio;
pub mod discovery;
pub mod location;
pub mod media;
pub mod phone;
pub mod sip;

pub use phone::{
    AccountConfig, CallAudio, CallId, CallState, Event, Events, FailureReason, PendingCall, Phone,
    PhoneError, RegistrationState, ServerTarget,
};
pub use sip::Transport;
