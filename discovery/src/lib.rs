//! locus-discovery: the "front end" that tells phones which SIP server to
//! use — which servers exist, their priority and weight, whether they are
//! healthy, and which are draining before a live migration — and lets
//! phones watch the list with long-polls. Stateless apart from its
//! configuration, so it scales out behind any HTTP load balancer.

pub mod api;
pub mod config;
pub mod health;
pub mod registry;

use std::sync::Arc;

use api::{router, AppState};
use config::Config;
use registry::Registry;

/// Serves the API on `listener` and health-checks `config`'s servers until
/// the future is dropped. `registry` is the list it serves (made from the
/// same `config`); a caller keeping a handle can change states directly,
/// as the admin endpoints do.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
    registry: Arc<Registry>,
) -> std::io::Result<()> {
    health::spawn(Arc::clone(&registry), &config.servers, config.health);
    let state = Arc::new(AppState {
        registry,
        admin_token: config.admin_token,
    });
    axum::serve(listener, router(state)).await
}
