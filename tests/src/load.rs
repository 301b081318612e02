//! The carrier-grade study's load run: many phones in one process place
//! calls at a steady rate through one Kamailio that is paused for 3 s,
//! and we count the calls that did not complete.
//!
//! A call completes when it connects and, hung up half a second later,
//! ends cleanly. Calls placed during the pause must wait for it: their
//! INVITEs are retransmitted (UDP) or queued (TCP) and answered after it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use locus_core::media::sdp::Codec;
use locus_core::{AccountConfig, CallAudio, CallState, Event, Phone, Transport};

use crate::migration::{log_calls, wait_until, CallLog, PAUSE};
use crate::{HarnessError, Kamailio, KamailioConfig};

/// Phones on each side.
const PAIRS: usize = 10;
/// How long the load runs.
const RUN: Duration = Duration::from_secs(15);
/// When in the run the server pauses.
const PAUSE_AT: Duration = Duration::from_secs(5);
/// How long a connected call lasts.
const TALK: Duration = Duration::from_millis(500);
/// How long a call may take to connect: INVITE's Timer B.
const SETUP_LIMIT: Duration = Duration::from_secs(32);

/// What a load run counted.
#[derive(Debug, Clone)]
pub struct LoadOutcome {
    /// Calls placed.
    pub placed: usize,
    /// Calls that connected and ended cleanly.
    pub completed: usize,
    /// The others, by why they failed.
    pub incomplete: BTreeMap<String, usize>,
    /// The slowest setup among completed calls (those caught by the pause).
    pub slowest_setup: Duration,
}

/// Places `rate` calls per second for 15 s over `transport` through one
/// Kamailio, paused for 3 s at 5 s.
pub async fn run(rate: u32, transport: Transport) -> Result<LoadOutcome, HarnessError> {
    let k = Kamailio::start(KamailioConfig {
        users: (0..PAIRS)
            .flat_map(|i| [format!("caller{i}"), format!("callee{i}")])
            .map(|u| (u.clone(), format!("{u}-secret")))
            .collect(),
        ..KamailioConfig::default()
    })?;
    let account = |user: &str| {
        let mut c = AccountConfig::new(user, k.domain(), format!("{user}-secret"));
        c.server = Some(k.server_uri(transport));
        c.listen = "127.0.0.1:0".parse().ok();
        // G.711 keeps the media of 40 calls a second affordable on 2 cores.
        c.codecs = vec![Codec::Pcmu];
        c
    };
    let mut callees = Vec::new();
    for i in 0..PAIRS {
        let (phone, mut events) = Phone::start(account(&format!("callee{i}")))
            .await
            .map_err(|e| HarnessError::Discovery(e.to_string()))?;
        phone
            .register()
            .map_err(|e| HarnessError::Discovery(e.to_string()))?;
        let phone = Arc::new(phone);
        let answerer = Arc::clone(&phone);
        let (registered_tx, registered_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut registered = Some(registered_tx);
            while let Some(ev) = events.recv().await {
                match ev {
                    Event::Registered { .. } => {
                        if let Some(tx) = registered.take() {
                            let _ = tx.send(());
                        }
                    }
                    Event::IncomingCall { call, .. } => {
                        let _ = answerer.answer(call, CallAudio::files(None, None));
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), registered_rx)
            .await
            .map_err(|_| HarnessError::Discovery(format!("callee{i} did not register")))?
            .map_err(|_| HarnessError::Discovery(format!("callee{i} stopped")))?;
        callees.push((phone, task));
    }
    let mut callers = Vec::new();
    for i in 0..PAIRS {
        let (phone, events) = Phone::start(account(&format!("caller{i}")))
            .await
            .map_err(|e| HarnessError::Discovery(e.to_string()))?;
        let log: CallLog = Arc::default();
        let task = tokio::spawn(log_calls(events, Arc::clone(&log)));
        callers.push((Arc::new(phone), log, task));
    }

    let started = Instant::now();
    let (mut paused, mut resumed) = (false, false);
    let every = Duration::from_secs(1) / rate.max(1);
    let mut ticks = tokio::time::interval(every);
    let mut calls = Vec::new();
    let mut n = 0usize;
    while started.elapsed() < RUN {
        ticks.tick().await;
        if !paused && started.elapsed() >= PAUSE_AT {
            k.pause()?;
            paused = true;
        }
        if paused && !resumed && started.elapsed() >= PAUSE_AT + PAUSE {
            k.resume()?;
            resumed = true;
        }
        let (caller, log, _) = &callers[n % PAIRS];
        let (caller, log) = (Arc::clone(caller), Arc::clone(log));
        let callee = format!("callee{}", n % PAIRS);
        calls.push(tokio::spawn(async move {
            one_call(&caller, &log, &callee).await
        }));
        n += 1;
    }
    let mut outcome = LoadOutcome {
        placed: calls.len(),
        completed: 0,
        incomplete: BTreeMap::new(),
        slowest_setup: Duration::ZERO,
    };
    for call in calls {
        match call.await {
            Ok(Ok(setup)) => {
                outcome.completed += 1;
                outcome.slowest_setup = outcome.slowest_setup.max(setup);
            }
            Ok(Err(why)) => *outcome.incomplete.entry(why).or_default() += 1,
            Err(e) => *outcome.incomplete.entry(e.to_string()).or_default() += 1,
        }
    }
    for (phone, _, task) in callers {
        task.abort();
        if let Ok(phone) = Arc::try_unwrap(phone) {
            phone.shutdown().await;
        }
    }
    for (phone, task) in callees {
        task.abort();
        if let Ok(phone) = Arc::try_unwrap(phone) {
            phone.shutdown().await;
        }
    }
    Ok(outcome)
}

/// One call: connect, talk, hang up, end. `Ok` with its setup time, or why
/// it did not complete.
async fn one_call(caller: &Phone, log: &CallLog, callee: &str) -> Result<Duration, String> {
    let placed = Instant::now();
    let id = caller
        .call(callee, CallAudio::files(None, None))
        .map_err(|e| e.to_string())?
        .id()
        .await
        .map_err(|e| e.to_string())?;
    let state = |wanted: CallState| {
        log.lock().ok().and_then(|c| {
            c.get(&id).and_then(|states| {
                states
                    .iter()
                    .find(|(s, _, _)| *s == wanted)
                    .map(|(_, t, reason)| (*t, reason.clone()))
            })
        })
    };
    wait_until(SETUP_LIMIT, || {
        state(CallState::Connected).is_some() || state(CallState::Ended).is_some()
    })
    .await;
    let Some((connected, _)) = state(CallState::Connected) else {
        let _ = caller.hangup(id);
        return Err(match state(CallState::Ended) {
            Some((_, Some(reason))) => reason,
            _ => "no answer within Timer B".into(),
        });
    };
    tokio::time::sleep(TALK).await;
    if let Some((_, reason)) = state(CallState::Ended) {
        return Err(format!(
            "dropped: {}",
            reason.unwrap_or_else(|| "no reason".into())
        ));
    }
    let _ = caller.hangup(id);
    let ended = wait_until(SETUP_LIMIT, || state(CallState::Ended).is_some()).await;
    if !ended {
        return Err("hang-up never completed".into());
    }
    Ok(connected.duration_since(placed))
}
