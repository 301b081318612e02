//! `locus demo`: the main job on local defaults. Starts two Kamailio
//! servers on loopback and a discovery service listing them, registers
//! two phones through discovery, has alice call bob with a few seconds of
//! speech-like audio that bob records, and halfway through drains the
//! primary server as a cloud manager does before a live migration: both
//! phones move to the secondary (make-before-break) and the call goes on.
//! Then it hangs up, unregisters and stops everything.

use std::sync::Arc;
use std::time::Duration;

use locus_core::discovery::{Health, ServerState};
use locus_core::{AccountConfig, CallAudio, CallState, Event, Events, Phone, Transport};
use locus_discovery::config::Config;
use locus_discovery::registry::Registry;
use locus_tests::voice::write_voice_wav;
use locus_tests::{Kamailio, KamailioConfig};

use crate::output::Output;
use crate::register::shutdown;
use crate::CliError;

/// How long the phones get to register.
const REGISTER_LIMIT: Duration = Duration::from_secs(15);

/// The servers and the discovery service the demo runs.
struct Servers {
    primary: Kamailio,
    secondary: Kamailio,
    registry: Arc<Registry>,
    url: String,
    service: tokio::task::JoinHandle<()>,
}

/// Runs the demo.
pub async fn run(duration: f64, out: &Output) -> Result<(), CliError> {
    out.note("Starting two Kamailio servers and a discovery service on loopback...");
    let servers = start_servers().await?;
    for (name, k) in [
        ("primary", &servers.primary),
        ("secondary", &servers.secondary),
    ] {
        out.note(&format!(
            "Kamailio {name} (pid {}) serves {} on {}:{} (UDP, TCP).",
            k.pid().unwrap_or_default(),
            k.domain(),
            k.ip,
            k.port,
        ));
    }
    out.note(&format!(
        "The discovery service at {} lists both and health-checks them.",
        servers.url
    ));
    let state = tempfile::Builder::new()
        .prefix("locus-demo-")
        .tempdir()
        .map_err(|e| CliError::Failed(format!("state directory: {e}")))?;
    let result = two_phones(&servers, state.path(), duration, out).await;
    servers.service.abort();
    drop(servers);
    out.note("Kamailio servers and discovery service stopped.");
    result
}

async fn start_servers() -> Result<Servers, CliError> {
    let (mut primary, mut secondary) = tokio::task::spawn_blocking(|| {
        Ok::<_, locus_tests::HarnessError>((
            Kamailio::start(KamailioConfig::default())?,
            Kamailio::start(KamailioConfig::default())?,
        ))
    })
    .await
    .map_err(|e| CliError::Failed(format!("starting Kamailio: {e}")))??;
    primary.set_sibling(&secondary)?;
    secondary.set_sibling(&primary)?;
    let toml = format!(
        "[health]\ninterval_ms = 500\ntimeout_ms = 500\n\n\
         [[server]]\nid = \"primary\"\nuri = \"{}\"\npriority = 10\n\n\
         [[server]]\nid = \"secondary\"\nuri = \"{}\"\npriority = 20\n",
        primary.server_uri(Transport::Tcp),
        secondary.server_uri(Transport::Tcp),
    );
    let config = Config::parse(&toml).map_err(|e| CliError::Failed(e.to_string()))?;
    let registry = Arc::new(Registry::new(&config.servers));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| CliError::Failed(format!("discovery service: {e}")))?;
    let url = format!(
        "http://{}",
        listener
            .local_addr()
            .map_err(|e| CliError::Failed(e.to_string()))?
    );
    let service = {
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            if let Err(e) = locus_discovery::serve(listener, config, registry).await {
                tracing::error!(error = %e, "discovery service stopped");
            }
        })
    };
    // Phones choose by health: wait for the first checks.
    let deadline = tokio::time::Instant::now() + REGISTER_LIMIT;
    while registry
        .snapshot()
        .servers
        .iter()
        .any(|s| s.health != Health::Up)
    {
        if tokio::time::Instant::now() > deadline {
            return Err(CliError::Failed(
                "the servers never passed a health check".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Servers {
        primary,
        secondary,
        registry,
        url,
        service,
    })
}

fn account(servers: &Servers, user: &str, state: &std::path::Path) -> AccountConfig {
    let mut c = AccountConfig::new(user, servers.primary.domain(), format!("{user}-secret"));
    c.discovery = Some(servers.url.clone());
    c.listen = "127.0.0.1:0".parse().ok();
    c.state_dir = Some(state.join(user));
    c
}

async fn two_phones(
    servers: &Servers,
    state: &std::path::Path,
    duration: f64,
    out: &Output,
) -> Result<(), CliError> {
    let (alice, mut alice_events) = Phone::start(account(servers, "alice", state)).await?;
    let (bob, mut bob_events) = Phone::start(account(servers, "bob", state)).await?;
    alice.register()?;
    bob.register()?;
    let (a, b) = tokio::join!(
        until_registered("alice", &mut alice_events, out),
        until_registered("bob", &mut bob_events, out)
    );
    let result = if a && b {
        let contacts = servers.primary.contacts("alice").unwrap_or_default().len()
            + servers.primary.contacts("bob").unwrap_or_default().len();
        out.note(&format!(
            "Both phones are registered; the primary's location table holds {contacts} bindings."
        ));
        call(
            &alice,
            &mut alice_events,
            &bob,
            &mut bob_events,
            duration,
            &servers.registry,
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

/// Alice calls bob, who answers and records; halfway through, the primary
/// is drained; alice hangs up after `duration`.
async fn call(
    alice: &Phone,
    alice_events: &mut Events,
    bob: &Phone,
    bob_events: &mut Events,
    duration: f64,
    registry: &Registry,
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
    let mut drain_at = None;
    let mut moves = 0;
    loop {
        let hang_up = async {
            match hang_up_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => tokio::time::sleep_until(deadline).await,
            }
        };
        let drain = async {
            match drain_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(ev) = alice_events.recv() => {
                out.event(Some("alice"), &ev);
                match ev {
                    Event::CallState { state: CallState::Connected, .. } if !connected => {
                        connected = true;
                        let now = tokio::time::Instant::now();
                        let talk = Duration::from_secs_f64(duration.max(1.0));
                        hang_up_at = Some(now + talk);
                        drain_at = Some(now + talk / 2);
                    }
                    Event::ServerChanged { .. } => moves += 1,
                    Event::CallState { state: CallState::Ended, .. } => break,
                    _ => {}
                }
            }
            Some(ev) = bob_events.recv() => {
                out.event(Some("bob"), &ev);
                match ev {
                    Event::IncomingCall { call, .. } => {
                        bob.answer(call, CallAudio::files(None, Some(heard.clone())))?;
                    }
                    Event::ServerChanged { .. } => moves += 1,
                    _ => {}
                }
            }
            () = drain => {
                drain_at = None;
                out.note("The cloud manager drains the primary before migrating it (PUT .../servers/primary/state draining); the phones move, the call goes on.");
                registry
                    .set_state("primary", ServerState::Draining)
                    .map_err(|e| CliError::Failed(e.to_string()))?;
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
    if connected && moves < 2 {
        Err(CliError::Failed(format!(
            "only {moves} of the two phones moved off the draining server"
        )))
    } else if connected {
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
