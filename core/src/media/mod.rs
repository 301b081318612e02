//! Call media: session descriptions now; RTP, codecs, the jitter buffer and
//! echo cancellation join here. Nothing in `media` knows SIP: the phone
//! passes session descriptions between the two as text.

pub mod sdp;
