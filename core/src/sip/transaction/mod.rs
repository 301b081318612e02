//! SIP transactions (RFC 3261 §17, RFC 6026): small state machines driven
//! by the current time and by messages. Each queues what to (re)send and
//! reports when it next needs to be woken; retransmissions happen only on
//! unreliable transports.

mod invite;
mod non_invite;

use std::time::Duration;

use super::message::{Method, Response};

pub use invite::{InviteClientTransaction, InviteServerTransaction, ServerFailure};
pub use non_invite::{ClientTransaction, ServerTransaction};

/// RFC 3261 timer base values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate, 500 ms.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests, 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network, 5 s.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// What identifies a transaction: the top Via branch and the method
/// (RFC 3261 §17.1.3, §17.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransactionKey {
    /// The branch parameter.
    pub branch: String,
    /// The method (CSeq method for responses).
    pub method: Method,
}

/// How a client transaction ended without a final response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFailure {
    /// Timer F fired: no final response in 64*T1.
    Timeout,
    /// The transport reported an error (refused, connection closed).
    Transport(String),
}

/// What a client transaction reports to its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOutcome {
    /// A response to pass up (provisional or final, retransmissions absorbed).
    Response(Response),
    /// No final response will come.
    Failed(ClientFailure),
}
