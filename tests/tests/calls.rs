//! Calls between Locus phones through a real Kamailio: signalling, SDP,
//! RTP with Opus, and the audio itself, checked end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::path::Path;
use std::time::Duration;

use locus_core::{CallAudio, CallId, CallState, Event, Events, Phone, Transport};
use locus_tests::phones::{account, init_logging, wait_for};
use locus_tests::voice::write_voice_wav;
use locus_tests::{Kamailio, KamailioConfig};

/// The best normalised cross-correlation of `probe` within `signal`:
/// a coarse search every 8 samples, refined around the best coarse lag.
fn best_match(probe: &[i16], signal: &[i16]) -> f64 {
    let norm = |v: &[i16]| {
        v.iter()
            .map(|s| f64::from(*s).powi(2))
            .sum::<f64>()
            .sqrt()
            .max(1.0)
    };
    let p = norm(probe);
    let score = |lag: usize| {
        let window = &signal[lag..lag + probe.len()];
        let dot: f64 = probe
            .iter()
            .zip(window)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        dot / (p * norm(window))
    };
    let last = signal.len().saturating_sub(probe.len());
    let coarse = (0..last)
        .step_by(8)
        .max_by(|a, b| score(*a).total_cmp(&score(*b)))
        .unwrap_or(0);
    (coarse.saturating_sub(8)..(coarse + 8).min(last))
        .map(score)
        .fold(f64::MIN, f64::max)
}

/// A recording brought to 16 kHz with the phone's own resampler.
fn at_16k(path: &Path) -> Vec<i16> {
    let mut reader = hound::WavReader::open(path).unwrap();
    let rate = reader.spec().sample_rate;
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let mut resampler = locus_core::audio::resample::FrameResampler::new(rate, 16_000).unwrap();
    samples
        .chunks(rate as usize / 50)
        .flat_map(|frame| resampler.process(frame, 320))
        .collect()
}

async fn registered(k: &Kamailio, user: &str, password: &str) -> (Phone, Events) {
    let (phone, mut events) = Phone::start(account(k, user, password, Transport::Udp))
        .await
        .unwrap();
    phone.register().unwrap();
    wait_for(&mut events, Duration::from_secs(10), |e| {
        matches!(e, Event::Registered { .. })
    })
    .await
    .unwrap_or_else(|seen| panic!("{user} not registered: {seen:?}"));
    (phone, events)
}

fn state(e: &Event, wanted: CallState) -> bool {
    matches!(e, Event::CallState { state, .. } if *state == wanted)
}

/// Waits for a call to reach `wanted`; returns the event (its reason).
async fn reach(events: &mut Events, who: &str, wanted: CallState) -> Event {
    wait_for(events, Duration::from_secs(10), |e| state(e, wanted))
        .await
        .unwrap_or_else(|seen| panic!("{who} not {wanted:?}: {seen:?}"))
        .0
}

/// Alice calls `target`; returns her call id and Bob's once he is rung.
async fn ring(
    alice: &Phone,
    bob_events: &mut Events,
    target: &str,
    audio: CallAudio,
) -> (CallId, CallId) {
    let call = alice.call(target, audio).unwrap().id().await.unwrap();
    let (incoming, _) = wait_for(bob_events, Duration::from_secs(10), |e| {
        matches!(e, Event::IncomingCall { .. })
    })
    .await
    .unwrap_or_else(|seen| panic!("bob is not called: {seen:?}"));
    let Event::IncomingCall {
        call: bob_call,
        from,
    } = incoming
    else {
        unreachable!()
    };
    assert!(from.starts_with("sip:alice@"), "{from}");
    (call, bob_call)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_hears_what_alice_says() {
    init_logging();
    let k = Kamailio::start(KamailioConfig::default()).unwrap();
    let (alice, mut alice_events) = registered(&k, "alice", "alice-secret").await;
    let (bob, mut bob_events) = registered(&k, "bob", "bob-secret").await;
    let dir = tempfile::tempdir().unwrap();
    let spoken = write_voice_wav(&dir.path().join("alice.wav"), 3).unwrap();
    let heard_path = dir.path().join("bob.wav");

    let said = CallAudio {
        input: Some(dir.path().join("alice.wav")),
        output: None,
    };
    let (call, bob_call) = ring(&alice, &mut bob_events, "bob", said).await;
    bob.answer(
        bob_call,
        CallAudio {
            input: None,
            output: Some(heard_path.clone()),
        },
    )
    .unwrap();
    reach(&mut alice_events, "alice", CallState::Connected).await;
    reach(&mut bob_events, "bob", CallState::Connected).await;

    tokio::time::sleep(Duration::from_millis(3500)).await;
    alice.hangup(call).unwrap();
    let ended = reach(&mut alice_events, "alice", CallState::Ended).await;
    assert!(matches!(ended, Event::CallState { reason: Some(r), .. } if r == "local hangup"));
    let ended = reach(&mut bob_events, "bob", CallState::Ended).await;
    assert!(matches!(ended, Event::CallState { reason: Some(r), .. } if r == "remote hangup"));
    let (stats, _) = wait_for(&mut bob_events, Duration::from_secs(5), |e| {
        matches!(e, Event::CallStats { .. })
    })
    .await
    .unwrap();
    let Event::CallStats { codec, stats, .. } = stats else {
        unreachable!()
    };
    assert_eq!(codec, "opus");
    assert_eq!(stats.packets_lost, 0, "{stats:?}");

    // Give the WAV writer its last tick, then compare what was said with
    // what was heard: one second from the middle of the speech.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let heard = at_16k(&heard_path);
    // Alice's 1.0-1.5 s, somewhere in the first 2.5 s of what Bob recorded.
    let probe = &spoken[16_000..24_000];
    let score = best_match(probe, &heard[..heard.len().min(40_000)]);
    eprintln!("correlation of what bob heard with what alice said: {score:.3}");
    // Opus is perceptual and the path resamples twice, so a faithful call
    // scores about 0.8; a wrong or silent recording scores near 0.
    assert!(
        score > 0.6,
        "bob's recording matches alice's speech with correlation {score:.3}"
    );
    alice.shutdown().await;
    bob.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_resume_by_reinvite_through_kamailio() {
    init_logging();
    let k = Kamailio::start(KamailioConfig::default()).unwrap();
    let (alice, mut alice_events) = registered(&k, "alice", "alice-secret").await;
    let (bob, mut bob_events) = registered(&k, "bob", "bob-secret").await;
    let (call, bob_call) = ring(&alice, &mut bob_events, "bob", CallAudio::default()).await;
    bob.answer(bob_call, CallAudio::default()).unwrap();
    reach(&mut alice_events, "alice", CallState::Connected).await;
    reach(&mut bob_events, "bob", CallState::Connected).await;
    for (action, expected) in [(true, CallState::Held), (false, CallState::Connected)] {
        if action {
            alice.hold(call).unwrap();
        } else {
            alice.resume(call).unwrap();
        }
        reach(&mut alice_events, "alice", expected).await;
        reach(&mut bob_events, "bob", expected).await;
    }
    alice.hangup(call).unwrap();
    reach(&mut bob_events, "bob", CallState::Ended).await;
    alice.shutdown().await;
    bob.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_callee_ends_the_call_for_the_caller() {
    init_logging();
    let k = Kamailio::start(KamailioConfig::default()).unwrap();
    let (alice, mut alice_events) = registered(&k, "alice", "alice-secret").await;
    let (bob, mut bob_events) = registered(&k, "bob", "bob-secret").await;
    let (_, call) = ring(
        &alice,
        &mut bob_events,
        "sip:bob@example.test",
        CallAudio::default(),
    )
    .await;
    reach(&mut alice_events, "alice", CallState::Ringing).await;
    bob.reject(call, true).unwrap();
    let ended = reach(&mut alice_events, "alice", CallState::Ended).await;
    assert!(
        matches!(&ended, Event::CallState { reason: Some(r), .. } if r == "busy"),
        "{ended:?}"
    );
    assert!(matches!(
        alice.call("not a target", CallAudio::default()),
        Err(locus_core::PhoneError::InvalidTarget(_))
    ));
    alice.shutdown().await;
    bob.shutdown().await;
}
