//! Helpers for driving `locus_core::Phone`s in tests.

use std::time::Duration;

use locus_core::{AccountConfig, CallState, Event, Events, FailureReason, Phone, Transport};

use crate::Kamailio;

/// An account on `k` for `user` (its password from the Kamailio config),
/// talking `transport`, with a fresh state directory.
pub fn account(k: &Kamailio, user: &str, password: &str, transport: Transport) -> AccountConfig {
    let mut c = AccountConfig::new(user, k.domain(), password);
    c.server = Some(k.server_uri(transport));
    c.ca_file = k.ca_file();
    c.listen = Some(
        "127.0.0.1:0"
            .parse()
            .unwrap_or_else(|_| unreachable!("literal address")),
    );
    c
}

/// Waits up to `limit` for an event matching `pred`, returning it and every
/// event seen before it.
pub async fn wait_for(
    events: &mut Events,
    limit: Duration,
    mut pred: impl FnMut(&Event) -> bool,
) -> Result<(Event, Vec<Event>), Vec<Event>> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(ev)) if pred(&ev) => return Ok((ev, seen)),
            Ok(Some(ev)) => seen.push(ev),
            Ok(None) | Err(_) => return Err(seen),
        }
    }
}

/// Installs a test log subscriber once (`RUST_LOG` selects the level).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A `registration_failed` event as tests read it, with what came before.
#[derive(Debug)]
pub struct Failure {
    /// Classification.
    pub reason: FailureReason,
    /// SIP status, when there was a response.
    pub status: Option<u16>,
    /// The message for people.
    pub message: String,
    /// Whether the phone retries by itself.
    pub will_retry: bool,
    /// Events seen before the failure.
    pub before: Vec<Event>,
}

/// Waits up to `limit` for the next `registration_failed` event.
pub async fn next_failure(events: &mut Events, limit: Duration) -> Result<Failure, Vec<Event>> {
    let (ev, before) = wait_for(events, limit, |e| {
        matches!(e, Event::RegistrationFailed { .. })
    })
    .await?;
    match ev {
        Event::RegistrationFailed {
            reason,
            status,
            message,
            will_retry,
        } => Ok(Failure {
            reason,
            status,
            message,
            will_retry,
            before,
        }),
        other => Err(vec![other]),
    }
}

/// Starts a phone for `user` and waits until it is registered.
///
/// # Panics
/// When it is not registered within 10 s (this is for tests).
pub async fn registered(
    k: &Kamailio,
    user: &str,
    password: &str,
    transport: Transport,
) -> (Phone, Events) {
    registered_as(account(k, user, password, transport)).await
}

/// Starts a phone with `config` and waits until it is registered.
///
/// # Panics
/// When it is not registered within 10 s (this is for tests).
pub async fn registered_as(config: AccountConfig) -> (Phone, Events) {
    let user = config.user.clone();
    let (phone, mut events) = Phone::start(config)
        .await
        .unwrap_or_else(|e| panic!("{user} cannot start: {e}"));
    phone
        .register()
        .unwrap_or_else(|e| panic!("{user} cannot register: {e}"));
    wait_for(&mut events, Duration::from_secs(10), |e| {
        matches!(e, Event::Registered { .. })
    })
    .await
    .unwrap_or_else(|seen| panic!("{user} not registered: {seen:?}"));
    (phone, events)
}

/// Waits for a call to reach `wanted`; returns the event (with its reason).
///
/// # Panics
/// When it does not within 10 s (this is for tests).
pub async fn reach(events: &mut Events, who: &str, wanted: CallState) -> Event {
    wait_for(
        events,
        Duration::from_secs(10),
        |e| matches!(e, Event::CallState { state, .. } if *state == wanted),
    )
    .await
    .unwrap_or_else(|seen| panic!("{who} not {wanted:?}: {seen:?}"))
    .0
}
