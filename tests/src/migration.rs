//! The migration scenarios (S1–S4): real Kamailio servers on two loopback
//! addresses, the discovery service (or dnsmasq for DNS SRV), a tested
//! phone ("bob", auto-answering) and a prober ("alice") that calls bob every
//! 200 ms through the server that stays up. The unreachable window runs
//! from the first probe that fails to the first after it that connects.
//!
//! The two Kamailios share no location table; each hands a call for
//! someone it does not know to the other (see `kamailio.rs`), as servers of
//! one cluster route between them. So the prober reaches bob wherever bob
//! is registered, and the window measures bob alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use locus_core::discovery::ServerState;
use locus_core::{AccountConfig, CallAudio, CallId, CallState, Event, Phone, Transport};

use crate::discovery::{free_port, DiscoveryService, Listed};
use crate::dns::{DnsServer, SrvTarget};
use crate::phones::wait_for;
use crate::{HarnessError, Kamailio, KamailioConfig};

/// How often the prober calls.
pub const PROBE_EVERY: Duration = Duration::from_millis(200);
/// How long a probe may take to connect before it counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a server is paused (a live migration's pause).
pub const PAUSE: Duration = Duration::from_secs(3);
/// How long a killed server stays down before it starts again (S2).
pub const RESTART_AFTER: Duration = Duration::from_secs(2);
/// The longest a run waits for bob to be reachable again.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);

/// What happens to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// S1: paused for 3 s while bob is idle.
    PauseIdle,
    /// S1: paused for 3 s across bob's registration refresh.
    PauseDuringRefresh,
    /// S1: paused for 3 s during a call between alice and bob.
    PauseDuringCall,
    /// S2: killed, started again 2 s later with an empty location table.
    Restart,
    /// S2 with a fixed server and no discovery service: only the phone's
    /// own keepalives can find out.
    RestartFixedServer,
    /// S3: the primary dies; the discovery service sends bob to the secondary.
    FailoverDiscovery,
    /// S3: the primary dies; the discovery service is down, DNS SRV lists both.
    FailoverDns,
    /// S4: the primary is drained through the discovery service, then paused.
    Drain,
}

impl Scenario {
    /// Every scenario, in the order.
    pub const ALL: [Scenario; 8] = [
        Scenario::PauseIdle,
        Scenario::PauseDuringRefresh,
        Scenario::PauseDuringCall,
        Scenario::Restart,
        Scenario::RestartFixedServer,
        Scenario::FailoverDiscovery,
        Scenario::FailoverDns,
        Scenario::Drain,
    ];

    /// A short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Scenario::PauseIdle => "S1 pause 3 s, idle",
            Scenario::PauseDuringRefresh => "S1 pause 3 s, during refresh",
            Scenario::PauseDuringCall => "S1 pause 3 s, during a call",
            Scenario::Restart => "S2 restart, state lost (2 s down)",
            Scenario::RestartFixedServer => "S2 restart, fixed server, no discovery",
            Scenario::FailoverDiscovery => "S3 primary dies, via discovery",
            Scenario::FailoverDns => "S3 primary dies, via DNS SRV",
            Scenario::Drain => "S4 planned migration (drain)",
        }
    }

    fn two_servers(self) -> bool {
        matches!(
            self,
            Scenario::FailoverDiscovery | Scenario::FailoverDns | Scenario::Drain
        )
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// From the first failed probe to the first that connected after it;
    /// zero when no probe failed.
    pub window: Duration,
    /// How long the server was paused or down (zero for a drain; for a
    /// server that dies, until bob was reachable).
    pub downtime: Duration,
    /// Probes placed and probes failed.
    pub probes: usize,
    /// Probes that did not connect in time.
    pub failed_probes: usize,
    /// Calls in progress that ended without anyone hanging up.
    pub calls_dropped: usize,
    /// bob's server changes, as (from, to, reason).
    pub moves: Vec<(String, String, String)>,
}

/// Per-call states seen by a phone, with when.
pub(crate) type CallLog = Arc<Mutex<HashMap<CallId, Vec<(CallState, Instant, Option<String>)>>>>;

/// Runs one scenario over `transport`.
pub async fn run(scenario: Scenario, transport: Transport) -> Result<Outcome, HarnessError> {
    let mut primary = Kamailio::start(KamailioConfig::default())?;
    let mut secondary = if scenario.two_servers() {
        let mut s = Kamailio::start(KamailioConfig::default())?;
        s.set_sibling(&primary)?;
        primary.set_sibling(&s)?;
        Some(s)
    } else {
        None
    };
    let mut listed = vec![Listed::new("primary", primary.server_uri(transport), 10)];
    if let Some(s) = &secondary {
        listed.push(Listed::new("secondary", s.server_uri(transport), 20));
    }
    let state_dir = tempfile::Builder::new().prefix("locus-bob-").tempdir()?;
    let mut bob_config = AccountConfig::new("bob", primary.domain(), "bob-secret");
    bob_config.listen = "127.0.0.1:0".parse().ok();
    bob_config.state_dir = Some(state_dir.path().to_path_buf());
    if scenario == Scenario::PauseDuringRefresh {
        bob_config.expires = 10;
    }
    let mut service = None;
    let mut _dns = None;
    if scenario == Scenario::RestartFixedServer {
        bob_config.server = Some(primary.server_uri(transport));
    } else if scenario == Scenario::FailoverDns {
        let targets: Vec<SrvTarget> = [Some(&primary), secondary.as_ref()]
            .into_iter()
            .flatten()
            .zip([10, 20])
            .map(|(k, priority)| SrvTarget {
                transport,
                addr: std::net::SocketAddr::new(k.ip, k.port),
                priority,
            })
            .collect();
        let dns = DnsServer::start(primary.domain(), &targets)?;
        bob_config.dns_server = Some(dns.addr);
        // Nothing listens there: the service is down.
        bob_config.discovery = Some(format!("http://{}", free_port()?));
        _dns = Some(dns);
    } else {
        let s = DiscoveryService::start_healthy(&listed).await?;
        bob_config.discovery = Some(s.url.clone());
        service = Some(s);
    }
    let survivor = secondary.as_ref().unwrap_or(&primary);
    let mut alice_config = AccountConfig::new("alice", primary.domain(), "alice-secret");
    alice_config.server = Some(survivor.server_uri(transport));
    alice_config.listen = "127.0.0.1:0".parse().ok();

    let (bob, bob_events) = start_registered(bob_config).await?;
    let bob = Arc::new(bob);
    let bob_log = Arc::new(Mutex::new(BobLog::default()));
    let bob_task = tokio::spawn(answer_everything(
        Arc::clone(&bob),
        bob_events,
        Arc::clone(&bob_log),
    ));
    let (alice, alice_events) = Phone::start(alice_config)
        .await
        .map_err(|e| HarnessError::Discovery(format!("alice: {e}")))?;
    let alice = Arc::new(alice);
    let alice_calls: CallLog = Arc::default();
    let alice_task = tokio::spawn(log_calls(alice_events, Arc::clone(&alice_calls)));

    let prober = Prober::start(Arc::clone(&alice), Arc::clone(&alice_calls));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let baseline = prober.results();
    if baseline.iter().any(|(_, ok)| !ok) || baseline.is_empty() {
        return Err(HarnessError::Discovery(format!(
            "probes failed before anything happened: {baseline:?}"
        )));
    }
    let baseline_len = baseline.len();

    let mut long_call = None;
    if scenario == Scenario::PauseDuringCall {
        let id = place(&alice, &alice_calls, Duration::from_secs(5))
            .await
            .ok_or_else(|| HarnessError::Discovery("the long call did not connect".into()))?;
        long_call = Some(id);
    }
    let disrupted = Instant::now();
    let downtime = match scenario {
        Scenario::PauseIdle | Scenario::PauseDuringCall => {
            primary.pause()?;
            tokio::time::sleep(PAUSE).await;
            primary.resume()?;
            PAUSE
        }
        Scenario::PauseDuringRefresh => {
            // bob refreshes at 80-90 % of 10 s after registering; pause
            // across that.
            let registered = bob_log
                .lock()
                .ok()
                .and_then(|l| l.registered.last().map(|(t, _)| *t))
                .unwrap_or(disrupted);
            let start = registered + Duration::from_millis(7500);
            tokio::time::sleep_until(start.into()).await;
            primary.pause()?;
            tokio::time::sleep(PAUSE).await;
            primary.resume()?;
            PAUSE
        }
        Scenario::Restart | Scenario::RestartFixedServer => {
            primary.kill();
            let killed = Instant::now();
            tokio::time::sleep(RESTART_AFTER).await;
            primary.start_again()?;
            killed.elapsed()
        }
        Scenario::FailoverDiscovery | Scenario::FailoverDns => {
            primary.kill();
            Duration::ZERO
        }
        Scenario::Drain => {
            let service = service
                .as_ref()
                .ok_or_else(|| HarnessError::Discovery("no service".into()))?;
            service.set_state("primary", ServerState::Draining).await?;
            // The hook waits for the phones to leave, then migrates.
            let left = wait_until(Duration::from_secs(10), || {
                bob_log.lock().is_ok_and(|l| {
                    l.registered.last().is_some_and(|(t, server)| {
                        *t > disrupted && !server.contains(&primary.ip.to_string())
                    })
                })
            })
            .await;
            if !left {
                return Err(HarnessError::Discovery(
                    "bob did not leave the draining server".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            primary.pause()?;
            tokio::time::sleep(PAUSE).await;
            primary.resume()?;
            service.set_state("primary", ServerState::Active).await?;
            Duration::ZERO
        }
    };
    // Probe until bob is reachable again and has stayed so for 3 s.
    let deadline = disrupted + RECOVERY_LIMIT;
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let results = prober.results();
        let after = &results[baseline_len..];
        let recovered_at = first_recovery(after);
        let settled = match recovered_at {
            Some(i) => after[i].0.elapsed() > Duration::from_secs(3),
            None => {
                !after.iter().any(|(_, ok)| !ok)
                    && disrupted.elapsed() > downtime + Duration::from_secs(3)
            }
        };
        if settled || Instant::now() > deadline {
            break;
        }
    }
    let results = prober.stop().await;
    let after = &results[baseline_len..];
    let first_failure = after.iter().find(|(_, ok)| !ok).map(|(t, _)| *t);
    let window = match (first_failure, first_recovery(after)) {
        (None, _) => Duration::ZERO,
        (Some(f), Some(i)) => after[i].0.duration_since(f),
        (Some(f), None) => Instant::now().duration_since(f),
    };
    let mut calls_dropped = 0;
    if let Some(id) = long_call {
        let ended_early = ended(&alice_calls, id);
        if ended_early {
            calls_dropped += 1;
        } else {
            // Still up: it must end cleanly when hung up, by either side
            // (bob over TCP, alice over UDP, so both are exercised).
            let bobs = bob_log
                .lock()
                .map(|l| l.open_calls.clone())
                .unwrap_or_default();
            match (transport, bobs.as_slice()) {
                (Transport::Tcp, [only]) => {
                    tracing::info!("bob hangs up the call that lived through the pause");
                    let _ = bob.hangup(*only);
                }
                _ => {
                    tracing::info!("alice hangs up the call that lived through the pause");
                    let _ = alice.hangup(id);
                }
            }
            let clean = wait_until(Duration::from_secs(10), || ended(&alice_calls, id)).await;
            if !clean {
                calls_dropped += 1;
            }
        }
    }
    let downtime = if matches!(
        scenario,
        Scenario::FailoverDiscovery | Scenario::FailoverDns
    ) {
        window
    } else {
        downtime
    };
    let moves = bob_log.lock().map(|l| l.moves.clone()).unwrap_or_default();
    bob_task.abort();
    alice_task.abort();
    if let Ok(bob) = Arc::try_unwrap(bob) {
        bob.shutdown().await;
    }
    if let Ok(alice) = Arc::try_unwrap(alice) {
        alice.shutdown().await;
    }
    drop(service);
    secondary.take();
    Ok(Outcome {
        window,
        downtime,
        probes: after.len(),
        failed_probes: after.iter().filter(|(_, ok)| !ok).count(),
        calls_dropped,
        moves,
    })
}

/// The index of the first successful probe after the first failure.
fn first_recovery(results: &[(Instant, bool)]) -> Option<usize> {
    let failed = results.iter().position(|(_, ok)| !ok)?;
    results[failed..]
        .iter()
        .position(|(_, ok)| *ok)
        .map(|i| failed + i)
}

pub(crate) fn ended(calls: &CallLog, id: CallId) -> bool {
    calls.lock().is_ok_and(|c| {
        c.get(&id)
            .is_some_and(|states| states.iter().any(|(s, _, _)| *s == CallState::Ended))
    })
}

pub(crate) async fn wait_until(limit: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if pred() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pred()
}

async fn start_registered(
    config: AccountConfig,
) -> Result<(Phone, locus_core::Events), HarnessError> {
    let user = config.user.clone();
    let (phone, mut events) = Phone::start(config)
        .await
        .map_err(|e| HarnessError::Discovery(format!("{user}: {e}")))?;
    phone
        .register()
        .map_err(|e| HarnessError::Discovery(format!("{user}: {e}")))?;
    wait_for(&mut events, Duration::from_secs(10), |e| {
        matches!(e, Event::Registered { .. })
    })
    .await
    .map_err(|seen| HarnessError::Discovery(format!("{user} not registered: {seen:?}")))?;
    Ok((phone, events))
}

/// What bob went through.
#[derive(Debug, Default)]
struct BobLog {
    registered: Vec<(Instant, String)>,
    moves: Vec<(String, String, String)>,
    /// Calls answered and not ended yet.
    open_calls: Vec<CallId>,
}

/// Answers every call bob gets, and notes registrations and moves.
async fn answer_everything(
    bob: Arc<Phone>,
    mut events: locus_core::Events,
    log: Arc<Mutex<BobLog>>,
) {
    if let Ok(mut l) = log.lock() {
        l.registered.push((Instant::now(), String::new()));
    }
    while let Some(ev) = events.recv().await {
        match ev {
            Event::IncomingCall { call, .. } => {
                let _ = bob.answer(call, CallAudio::files(None, None));
                if let Ok(mut l) = log.lock() {
                    l.open_calls.push(call);
                }
            }
            Event::CallState {
                call,
                state: CallState::Ended,
                ..
            } => {
                if let Ok(mut l) = log.lock() {
                    l.open_calls.retain(|c| *c != call);
                }
            }
            Event::Registered { server, .. } => {
                if let Ok(mut l) = log.lock() {
                    l.registered.push((Instant::now(), server));
                }
            }
            Event::ServerChanged { from, to, reason } => {
                tracing::info!(%from, %to, %reason, "bob moved");
                if let Ok(mut l) = log.lock() {
                    l.moves.push((from, to, reason));
                }
            }
            _ => {}
        }
    }
}

pub(crate) async fn log_calls(mut events: locus_core::Events, calls: CallLog) {
    while let Some(ev) = events.recv().await {
        if let Event::CallState {
            call,
            state,
            reason,
        } = ev
        {
            if let Ok(mut c) = calls.lock() {
                c.entry(call)
                    .or_default()
                    .push((state, Instant::now(), reason));
            }
        }
    }
}

/// Places a call and waits up to `limit` for it to connect; hangs up
/// (or cancels) one that does not.
async fn place(alice: &Phone, calls: &CallLog, limit: Duration) -> Option<CallId> {
    let pending = alice.call("bob", CallAudio::files(None, None)).ok()?;
    let id = tokio::time::timeout(limit, pending.id()).await.ok()?.ok()?;
    let connected = wait_until(limit, || {
        calls.lock().is_ok_and(|c| {
            c.get(&id)
                .is_some_and(|states| states.iter().any(|(s, _, _)| *s == CallState::Connected))
        })
    })
    .await;
    if connected {
        Some(id)
    } else {
        let _ = alice.hangup(id);
        None
    }
}

/// Calls bob every [`PROBE_EVERY`]; each probe connects within
/// [`PROBE_TIMEOUT`] or fails, and is hung up either way.
struct Prober {
    results: Arc<Mutex<Vec<(Instant, bool)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Prober {
    fn start(alice: Arc<Phone>, calls: CallLog) -> Prober {
        let results: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
        let task = {
            let results = Arc::clone(&results);
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(PROBE_EVERY);
                loop {
                    ticks.tick().await;
                    let (alice, calls, results) =
                        (Arc::clone(&alice), Arc::clone(&calls), Arc::clone(&results));
                    let sent = Instant::now();
                    let index = results.lock().map_or(0, |mut r| {
                        r.push((sent, false));
                        r.len() - 1
                    });
                    tokio::spawn(async move {
                        if let Some(id) = place(&alice, &calls, PROBE_TIMEOUT).await {
                            if let Ok(mut r) = results.lock() {
                                r[index].1 = true;
                            }
                            let _ = alice.hangup(id);
                        }
                    });
                }
            })
        };
        Prober { results, task }
    }

    /// The probes so far, as (sent, connected); the last second's may
    /// still be pending.
    fn results(&self) -> Vec<(Instant, bool)> {
        let cutoff = Instant::now() - PROBE_TIMEOUT - Duration::from_millis(100);
        self.results
            .lock()
            .map(|r| r.iter().copied().filter(|(t, _)| *t < cutoff).collect())
            .unwrap_or_default()
    }

    /// Stops probing and waits for the last probes to finish.
    async fn stop(self) -> Vec<(Instant, bool)> {
        self.task.abort();
        tokio::time::sleep(PROBE_TIMEOUT + Duration::from_millis(200)).await;
        self.results.lock().map(|r| r.clone()).unwrap_or_default()
    }
}
