//! `locus demo`: the main job on local defaults. Starts a Kamailio
//! registrar and proxy on loopback, registers two phones (alice over UDP,
//! bob over TCP), has alice call bob with a few seconds of speech-like
//! audio that bob records, then hangs up, unregisters and stops.

use std::time::Duration;

use locus_core::{CallAudio, CallState, Event, Events, Phone, Transport};
use locus_tests::phones::account;
use locus_tests::voice::write_voice_wav;
use locus_tests::{Kamailio, KamailioConfig};

use crate::output::Output;
use crate::register::shutdown;
use crate::CliError;

/// How long the phones get to register.
const REGISTER_LIMIT: Duration = Duration::from_secs(15);

/// Runs the demo.
pub async fn run(duration: f64, out: &Output) -> Result<(), CliError> {
    out.note("Starting a local Kamailio registrar on loopback...");
    let kamailio = tokio::task::spawn_blocking(|| Kamailio::start(KamailioConfig::default()))
        .await
        .map_err(|e| CliError::Failed(format!("starting Kamailio: {e}")))??;
    out.note(&format!(
        "Kamailio (pid {}) is serving {} on {} (UDP and TCP port {}, TLS port {}).",
        kamailio.pid().unwrap_or_default(),
        kamailio.domain(),
        kamailio.ip,
        kamailio.port,
        kamailio.tls_port
    ));
    let result = two_phones(&kamailio, duration, out).await;
    drop(kamailio);
    out.note("Kamailio stopped.");
    result
}

async fn two_phones(kamailio: &Kamailio, duration: f64, out: &Output) -> Result<(), CliError> {
    let (alice, mut alice_events) =
        Phone::start(account(kamailio, "alice", "alice-secret", Transport::Udp)).await?;
    let (bob, mut bob_events) =
        Phone::start(account(kamailio, "bob", "bob-secret", Transport::Tcp)).await?;
    alice.register()?;
    bob.register()?;
    let (a, b) = tokio::join!(
        until_registered("alice", &mut alice_events, out),
        until_registered("bob", &mut bob_events, out)
    );
    let result = if a && b {
        let contacts = kamailio.contacts("alice").unwrap_or_default().len()
            + kamailio.contacts("bob").unwrap_or_default().len();
        out.note(&format!(
            "Both phones are registered; Kamailio's location table holds {contacts} bindings."
        ));
        call(
            &alice,
            &mut alice_events,
            &bob,
            &mut bob_events,
            duration,
            out,
        )
        .await
    } else {
        Err(CliError::Failed("a demo phone did not register".into()))
    };
    let (a_done, b_done) = tokio::join!(
        shutdown(alice, &mut alice_events, Some("alice"), out),
        shutdown(bob, &mut bob_events, Some("bob"), out)
    );
    match (result, a_done && b_done) {
        (Ok(()), true) => Ok(()),
        (Ok(()), false) => Err(CliError::Failed("a demo phone did not unregister".into())),
        (Err(e), _) => Err(e),
    }
}

/// Alice calls bob, who answers and records; alice hangs up after `duration`.
async fn call(
    alice: &Phone,
    alice_events: &mut Events,
    bob: &Phone,
    bob_events: &mut Events,
    duration: f64,
    out: &Output,
) -> Result<(), CliError> {
    let dir = std::env::temp_dir().join(format!("locus-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::Failed(format!("{}: {e}", dir.display())))?;
    let said = dir.join("alice-says.wav");
    let heard = dir.join("bob-hears.wav");
    let seconds = duration.ceil().max(1.0) as u32;
    write_voice_wav(&said, seconds + 1).map_err(locus_tests::HarnessError::from)?;
    out.note(&format!("alice calls bob, sending {} ...", said.display()));
    let call = alice
        .call("bob", CallAudio::files(Some(said), None))?
        .id()
        .await?;
    let mut connected = false;
    let deadline = tokio::time::Instant::now() + REGISTER_LIMIT;
    let mut hang_up_at = None;
    loop {
        let hang_up = async {
            match hang_up_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => tokio::time::sleep_until(deadline).await,
            }
        };
        tokio::select! {
            Some(ev) = alice_events.recv() => {
                out.event(Some("alice"), &ev);
                match ev {
                    Event::CallState { state: CallState::Connected, .. } if !connected => {
                        connected = true;
                        hang_up_at = Some(tokio::time::Instant::now() + Duration::from_secs_f64(duration.max(0.5)));
                    }
                    Event::CallState { state: CallState::Ended, .. } => break,
                    _ => {}
                }
            }
            Some(ev) = bob_events.recv() => {
                out.event(Some("bob"), &ev);
                if let Event::IncomingCall { call, .. } = ev {
                    bob.answer(call, CallAudio::files(None, Some(heard.clone())))?;
                }
            }
            () = hang_up => alice.hangup(call)?,
        }
    }
    // Let bob's side finish its call and its recording.
    while let Ok(Some(ev)) =
        tokio::time::timeout(Duration::from_millis(300), bob_events.recv()).await
    {
        out.event(Some("bob"), &ev);
    }
    if connected {
        out.note(&format!("bob's recording of the call: {}", heard.display()));
        Ok(())
    } else {
        Err(CliError::Failed("the demo call was not answered".into()))
    }
}

async fn until_registered(name: &str, events: &mut Events, out: &Output) -> bool {
    let deadline = tokio::time::Instant::now() + REGISTER_LIMIT;
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.recv()).await {
        out.event(Some(name), &ev);
        match ev {
            Event::Registered { .. } => return true,
            Event::RegistrationFailed {
                will_retry: false, ..
            } => return false,
            _ => {}
        }
    }
    false
}
