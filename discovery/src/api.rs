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
use quick_xml::events::{BytesDecl, BytesStart, Event};
use quick_xml::Writer;
use serde::Deserialize;
use serde_json::json;

use crate::registry::{Registry, ServerList, State};

/// The longest a long-poll waits.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// What the handlers share.
#[derive(Debug)]
pub struct AppState {
    /// The server list.
    pub registry: Registry,
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
    match to_xml(&app.registry.snapshot()) {
        Ok(xml) => ([(header::CONTENT_TYPE, "application/xml")], xml).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `<servers version="N"><server id=".." uri=".." .../></servers>`.
pub fn to_xml(list: &ServerList) -> Result<String, quick_xml::Error> {
    let mut w = Writer::new(Vec::new());
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let version = list.version.to_string();
    w.write_event(Event::Start(
        BytesStart::new("servers").with_attributes([("version", version.as_str())]),
    ))?;
    for s in &list.servers {
        let (priority, weight) = (s.priority.to_string(), s.weight.to_string());
        let state = json_name(&s.state);
        let health = json_name(&s.health);
        w.write_event(Event::Empty(BytesStart::new("server").with_attributes([
            ("id", s.id.as_str()),
            ("uri", s.uri.as_str()),
            ("priority", priority.as_str()),
            ("weight", weight.as_str()),
            ("region", s.region.as_str()),
            ("state", state.as_str()),
            ("health", health.as_str()),
        ])))?;
    }
    w.write_event(Event::End(quick_xml::events::BytesEnd::new("servers")))?;
    Ok(String::from_utf8_lossy(&w.into_inner()).into_owned())
}

/// The lower-case name serde gives a unit variant.
fn json_name(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateChange {
    state: State,
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
