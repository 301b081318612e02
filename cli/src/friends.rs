//! `locus friends`: publishes our presence and watches our friends'.

use locus_core::location::Location;
use locus_core::AccountConfig;

use crate::output::Output;
use crate::register::{deadline, shutdown, start_registered, until};
use crate::sharing::share_with;
use crate::CliError;

/// Registers, publishes our presence (our position too when given, shared
/// with `friends`), watches each friend, and prints what happens until
/// `duration` passes or Ctrl-C.
pub async fn run(
    config: AccountConfig,
    friends: &[String],
    location: Option<Location>,
    duration: Option<f64>,
    out: &Output,
) -> Result<(), CliError> {
    let (phone, mut events) = start_registered(config, out).await?;
    if let Some(location) = location {
        share_with(&phone, location, friends)?;
    }
    phone.publish_presence(true)?;
    for friend in friends {
        phone.watch(friend)?;
    }
    let end = deadline(duration);
    loop {
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                out.event(None, &ev);
            }
            () = until(end) => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    shutdown(phone, &mut events, None, out).await;
    Ok(())
}
