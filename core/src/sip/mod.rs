//! SIP: messages, digest authentication, transactions and registration.
//!
//! Everything here is sans-IO: functions take bytes, values and the current
//! time and return what to send and when to wake up. Nothing opens a socket,
//! spawns a task or reads a clock, so every timer path is unit-tested with a
//! simulated clock.
//!
//! The message layer is our own rather than rsip's: rsip 0.4 rejects any
//! request whose Request-URI has an IPv6 host (the start line itself fails to
//! parse), so no normalisation in front of it could make it usable; and its
//! typed Via, Contact, URI and WWW-Authenticate parsing fail on the other
//! cases we must handle. Rather than keep two parsers, `message` is one small,
//! strict parser with the framing, normalisation and typed headers a UA needs.

pub mod auth;
pub mod call;
pub mod dialog;
pub mod digest;
pub mod endpoint;
pub mod framing;
pub mod geolocation;
pub mod header;
pub mod keepalive;
pub mod message;
pub mod multipart;
pub mod publication;
pub mod registration;
pub mod reliable_provisional;
pub mod session_timer;
pub mod subscription;
pub mod transaction;
pub mod transport;
pub mod uri;

pub use endpoint::{Endpoint, EndpointConfig, EndpointEvent};
pub use message::{Headers, Message, Method, ParseError, Request, Response};
pub use transport::{Transmit, Transport};
pub use uri::{Host, Uri};
