//! `locus register`: register, stay registered, unregister on the way out.

use std::time::Duration;

use locus_core::{AccountConfig, Event, Events, Phone};
use tokio::time::Instant;

use crate::output::Output;
use crate::CliError;

/// Runs the command until `duration` passes or Ctrl-C.
pub async fn run(
    config: AccountConfig,
    duration: Option<f64>,
    out: &Output,
) -> Result<(), CliError> {
    let (phone, mut events) = Phone::start(config).await?;
    phone.register()?;
    let deadline = duration.map(|d| Instant::now() + Duration::from_secs_f64(d.max(0.0)));
    let mut registered = false;
    let mut last_failure: Option<String> = None;
    loop {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
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
            () = until_deadline => break,
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
