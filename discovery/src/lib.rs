//! locus-discovery: the "front end" that tells phones which SIP server to
//! use — which servers exist, their priority and weight, whether they are
//! healthy, and which are draining before a live migration — and lets
//! phones watch the list with long-polls. Stateless apart from its
//! configuration, so it scales out behind any HTTP load balancer.

pub mod api;
pub mod config;
pub mod health;
pub mod registry;
