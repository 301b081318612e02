//! The HTTP API.
//!
//! - `GET /v1/servers[?since=VERSION&wait=SECONDS]`: the list as JSON; with
//!   `since`, a long-poll that answers as soon as the version passes it (or
//!   after `wait` seconds, at most [`MAX_WAIT`], with the same version).
//! - `GET /v1/servers.xml`: the same list as XML (what the original front
//!   end answered).
//! - `PUT /v1/admin/servers/{id}/state` with `{"state": "draining"}` and
//!   `Authorization: Bearer TOKEN`: what a migration hook calls before and
//!   after a live migration.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::registry::{Registry, ServerState};

/// The longest a long-poll waits.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// What the handlers share.
#[derive(Debug)]
pub struct AppState {
    /// The server list.
    pub registry: Arc<Registry>,
    /// The admin bearer token; `None` closes the admin endpoints.
    pub admin_token: Option<String>,
}

/// The service's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/servers", get(servers))
        .route("/v1/servers.xml", get(servers_xml))
        .route("/v1/admin/servers/{id}/state", put(set_state))
        .with_state(state)
}

/// A 4xx (or 5xx) with a JSON body saying why.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Poll {
    since: Option<u64>,
    wait: Option<u64>,
}

async fn servers(
    AxumState(app): AxumState<Arc<AppState>>,
    query: Result<Query<Poll>, QueryRejection>,
) -> Response {
    let Query(poll) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let list = match poll.since {
        Some(since) => {
            let wait = Duration::from_secs(poll.wait.unwrap_or(30)).min(MAX_WAIT);
            app.registry.wait_past(since, wait).await
        }
        None if poll.wait.is_some() => {
            return error(StatusCode::BAD_REQUEST, "wait needs since=VERSION")
        }
        None => app.registry.snapshot(),
    };
    Json(list).into_response()
}

async fn servers_xml(AxumState(app): AxumState<Arc<AppState>>) -> Response {
    let xml = app.registry.snapshot().to_xml();
    ([(header::CONTENT_TYPE, "application/xml")], xml).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateChange {
    state: ServerState,
}

async fn set_state(
    AxumState(app): AxumState<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<StateChange>, JsonRejection>,
) -> Response {
    let Some(token) = app.admin_token.as_deref() else {
        return error(
            StatusCode::FORBIDDEN,
            "the admin endpoints are closed (no admin token configured)",
        );
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented != Some(token) {
        return error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
    }
    let Json(change) = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{}; expected {{\"state\": \"active\" | \"draining\" | \"down\"}}",
                    e.body_text()
                ),
            )
        }
    };
    match app.registry.set_state(&id, change.state) {
        Ok(version) => {
            tracing::info!(%id, state = ?change.state, version, "server state set");
            Json(json!({ "id": id, "state": change.state, "version": version })).into_response()
        }
        Err(e) => error(StatusCode::NOT_FOUND, e.to_string()),
    }
}
