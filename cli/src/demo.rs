//! `locus demo`: the main job on local defaults. Starts a Kamailio
//! registrar on loopback, registers two phones (alice over UDP, bob over
//! TLS), keeps them registered for a while, then unregisters and stops.

use std::time::Duration;

use locus_core::{Event, Events, Phone, Transport};
use locus_tests::phones::account;
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
        Phone::start(account(kamailio, "bob", "bob-secret", Transport::Tls)).await?;
    alice.register()?;
    bob.register()?;
    let (a, b) = tokio::join!(
        until_registered("alice", &mut alice_events, out),
        until_registered("bob", &mut bob_events, out)
    );
    if a && b {
        let contacts = kamailio.contacts("alice").unwrap_or_default().len()
            + kamailio.contacts("bob").unwrap_or_default().len();
        out.note(&format!(
            "Both phones are registered; Kamailio's location table holds {contacts} bindings."
        ));
        tokio::time::sleep(Duration::from_secs_f64(duration.max(0.0))).await;
    }
    let (a_done, b_done) = tokio::join!(
        shutdown(alice, &mut alice_events, Some("alice"), out),
        shutdown(bob, &mut bob_events, Some("bob"), out)
    );
    match (a && b, a_done && b_done) {
        (true, true) => Ok(()),
        (false, _) => Err(CliError::Failed("a demo phone did not register".into())),
        (true, false) => Err(CliError::Failed("a demo phone did not unregister".into())),
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
