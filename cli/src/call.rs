//! `locus call` and `locus answer`.

use locus_core::location::Location;
use locus_core::{AccountConfig, CallAudio, CallState, Event};

use crate::output::Output;
use crate::register::{deadline, shutdown, start_registered, until};
use crate::sharing::share_with;
use crate::CliError;

/// Places a call; hangs up after `duration` of connected time, or when the
/// far end does. Succeeds if the call was answered.
pub async fn call(
    config: AccountConfig,
    target: &str,
    duration: Option<f64>,
    audio: CallAudio,
    dtmf: Option<String>,
    location: Option<Location>,
    out: &Output,
) -> Result<(), CliError> {
    let (phone, mut events) = start_registered(config, out).await?;
    if let Some(location) = location {
        share_with(&phone, location, &[target])?;
    }
    let placed = match phone.call(target, audio) {
        Ok(pending) => pending.id().await,
        Err(e) => Err(e),
    };
    let call = match placed {
        Ok(call) => call,
        Err(e) => {
            shutdown(phone, &mut events, None, out).await;
            return Err(e.into());
        }
    };
    let mut answered = false;
    let mut hang_up_at = None;
    let mut end_reason = None;
    loop {
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                out.event(None, &ev);
                match ev {
                    Event::CallState { call: c, state: CallState::Connected, .. } if c == call && !answered => {
                        answered = true;
                        hang_up_at = deadline(duration);
                        if let Some(digits) = &dtmf {
                            phone.send_dtmf(call, digits)?;
                        }
                    }
                    Event::CallState { call: c, state: CallState::Ended, reason, .. } if c == call => {
                        end_reason = reason;
                        break;
                    }
                    _ => {}
                }
            }
            () = until(hang_up_at) => phone.hangup(call)?,
            _ = tokio::signal::ctrl_c() => phone.hangup(call)?,
        }
    }
    shutdown(phone, &mut events, None, out).await;
    if answered {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "the call was not answered: {}",
            end_reason.unwrap_or_else(|| "no answer".into())
        )))
    }
}

/// Registers and waits for calls, answering each with `auto`; with a
/// `location`, shares it with each caller answered.
pub async fn answer(
    config: AccountConfig,
    auto: bool,
    duration: Option<f64>,
    audio: CallAudio,
    location: Option<Location>,
    out: &Output,
) -> Result<(), CliError> {
    let (phone, mut events) = start_registered(config, out).await?;
    let mut callers = Vec::new();
    let end = deadline(duration);
    loop {
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                out.event(None, &ev);
                if let (Event::IncomingCall { call, from, .. }, true) = (&ev, auto) {
                    if let Some(location) = &location {
                        // Whom we answer learns where we are; nobody else.
                        callers.push(from.clone());
                        share_with(&phone, location.clone(), &callers)?;
                    }
                    phone.answer(*call, audio.clone())?;
                }
            }
            () = until(end) => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    shutdown(phone, &mut events, None, out).await;
    Ok(())
}
