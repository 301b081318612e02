//! `locus register`: register, stay registered, unregister on the way out.

use std::time::Duration;

use locus_core::{AccountConfig, Event, Events, Phone};
use tokio::time::Instant;

use crate::output::Output;
use crate::CliError;

/// Starts a phone and waits until it is registered (printing events).
pub async fn start_registered(
    config: AccountConfig,
    out: &Output,
) -> Result<(Phone, Events), CliError> {
    let (phone, mut events) = Phone::start(config).await?;
    phone.register()?;
    while let Some(ev) = events.recv().await {
        out.event(None, &ev);
        match ev {
            Event::Registered { .. } => return Ok((phone, events)),
            Event::RegistrationFailed {
                will_retry: false,
                message,
                ..
            } => {
                phone.shutdown().await;
                return Err(CliError::Failed(message));
            }
            _ => {}
        }
    }
    Err(CliError::Failed("the phone stopped".into()))
}

/// A deadline `seconds` from now, or never.
pub fn deadline(seconds: Option<f64>) -> Option<Instant> {
    seconds.map(|d| Instant::now() + Duration::from_secs_f64(d.max(0.0)))
}

/// Sleeps until `deadline`, or forever without one.
pub async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Runs the command until `duration` passes or Ctrl-C.
pub async fn run(
    config: AccountConfig,
    duration: Option<f64>,
    out: &Output,
) -> Result<(), CliError> {
    let (phone, mut events) = Phone::start(config).await?;
    phone.register()?;
    let deadline = deadline(duration);
    let mut registered = false;
    let mut last_failure: Option<String> = None;
    loop {
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                out.event(None, &ev);
                match ev {
                    Event::Registered { .. } => registered = true,
                    Event::RegistrationFailed { will_retry: false, message, .. } => {
                        phone.shutdown().await;
                        return Err(CliError::Failed(message));
                    }
                    Event::RegistrationFailed { message, .. } => last_failure = Some(message),
                    _ => {}
                }
            }
            () = until(deadline) => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let unregistered = shutdown(phone, &mut events, None, out).await;
    match (registered, unregistered) {
        (true, true) => Ok(()),
        (false, _) => Err(CliError::Failed(format!(
            "not registered: {}",
            last_failure.unwrap_or_else(|| "no answer yet".into())
        ))),
        (true, false) => Err(CliError::Failed("unregistration was not confirmed".into())),
    }
}

/// Shuts `phone` down while printing its last events; true if the phone
/// reported that it unregistered.
pub async fn shutdown(phone: Phone, events: &mut Events, name: Option<&str>, out: &Output) -> bool {
    let drain = async {
        let mut unregistered = false;
        while let Some(ev) = events.recv().await {
            out.event(name, &ev);
            unregistered |= ev == Event::Unregistered;
        }
        unregistered
    };
    let ((), unregistered) = tokio::join!(phone.shutdown(), drain);
    unregistered
}
