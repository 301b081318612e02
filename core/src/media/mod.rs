//! Call media: session descriptions and the jitter buffer now; RTP, codecs and
//! echo cancellation join here. Nothing in `media` knows SIP: the phone
//! passes session descriptions between the two as text.

pub mod codec;
pub mod jitter;
pub mod network_trace;
pub mod sdp;
