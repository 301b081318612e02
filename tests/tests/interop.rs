//! Calls between Locus and baresip, an independent SIP phone, through a
//! real Kamailio: both directions, Opus and G.711, cancel, busy, hold,
//! DTMF, hang-up from each side, and the audio scored with PESQ-WB.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::path::Path;
use std::time::Duration;

use locus_core::{CallAudio, CallState, Event, Events, Transport};
use locus_tests::baresip::{Baresip, BaresipAccount};
use locus_tests::phones::{init_logging, reach, registered, wait_for};
use locus_tests::quality::pesq_wb;
use locus_tests::voice::Speech;
use locus_tests::{DigestAlgorithm, Kamailio, KamailioConfig};

/// baresip 1.0 only answers MD5 challenges.
fn kamailio() -> Kamailio {
    Kamailio::start(KamailioConfig {
        algorithm: DigestAlgorithm::Md5,
        ..KamailioConfig::default()
    })
    .unwrap()
}

async fn baresip_bob(k: &Kamailio, speech: &Speech, codecs: &[&str], auto_answer: bool) -> Baresip {
    Baresip::start(
        k,
        BaresipAccount {
            user: "bob".into(),
            password: "bob-secret".into(),
            audio_in: speech.send.clone(),
            codecs: codecs.iter().map(|c| (*c).to_owned()).collect(),
            auto_answer,
        },
    )
    .await
    .unwrap()
}

const EVENT_LIMIT: Duration = Duration::from_secs(10);

/// The codec a call's last statistics name.
async fn codec_of(events: &mut Events) -> String {
    let (stats, _) = wait_for(events, Duration::from_secs(5), |e| {
        matches!(e, Event::CallStats { .. })
    })
    .await
    .unwrap();
    let Event::CallStats { codec, .. } = stats else {
        unreachable!()
    };
    codec
}

fn score(who: &str, speech: &Speech, recording: &Path, at_least: f64) {
    let quality = pesq_wb(&speech.reference, recording).unwrap();
    eprintln!("{who}: PESQ-WB {quality:?}");
    assert!(quality.mos_lqo >= at_least, "{who}: {quality:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locus_calls_baresip_with_opus_and_baresip_hangs_up() {
    init_logging();
    let k = kamailio();
    let dir = tempfile::tempdir().unwrap();
    let speech = Speech::generate(dir.path()).unwrap();
    let mut bob = baresip_bob(&k, &speech, &[], true).await;
    let (alice, mut events) = registered(&k, "alice", "alice-secret", Transport::Udp).await;
    let heard = dir.path().join("alice-heard.wav");
    let audio = CallAudio::files(Some(speech.send.clone()), Some(heard.clone()));

    alice.call("bob", audio).unwrap().id().await.unwrap();
    reach(&mut events, "alice", CallState::Connected).await;
    let established = bob
        .wait_event("CALL_ESTABLISHED", EVENT_LIMIT)
        .await
        .unwrap();
    assert!(
        established
            .peer
            .as_deref()
            .is_some_and(|p| p.starts_with("sip:alice@")),
        "{established:?}"
    );
    // baresip hangs up when its file (speech, then silence) ends.
    let ended = wait_for(&mut events, speech.duration + EVENT_LIMIT, |e| {
        matches!(
            e,
            Event::CallState {
                state: CallState::Ended,
                ..
            }
        )
    })
    .await
    .unwrap()
    .0;
    assert!(
        matches!(&ended, Event::CallState { reason: Some(r), .. } if r == "remote hangup"),
        "{ended:?}"
    );
    assert_eq!(codec_of(&mut events).await, "opus");
    bob.wait_event("CALL_CLOSED", EVENT_LIMIT).await.unwrap();
    alice.shutdown().await;

    // Opus both ways over loopback: measured 4.2 each way. baresip starts
    // with a 220 ms burst, which Locus's jitter buffer sheds in a pause.
    score(
        "baresip heard locus",
        &speech,
        &bob.recording().unwrap(),
        3.8,
    );
    score("locus heard baresip", &speech, &heard, 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_calls_locus_with_pcmu_dtmf_and_locus_hangs_up() {
    init_logging();
    let k = kamailio();
    let dir = tempfile::tempdir().unwrap();
    let speech = Speech::generate(dir.path()).unwrap();
    let mut bob = baresip_bob(&k, &speech, &["PCMU/8000/1"], false).await;
    let (alice, mut events) = registered(&k, "alice", "alice-secret", Transport::Udp).await;
    let heard = dir.path().join("alice-heard.wav");

    bob.command("dial", &format!("sip:alice@{}", k.domain()))
        .await
        .unwrap();
    let (incoming, _) = wait_for(&mut events, EVENT_LIMIT, |e| {
        matches!(e, Event::IncomingCall { .. })
    })
    .await
    .unwrap();
    let Event::IncomingCall { call, from } = incoming else {
        unreachable!()
    };
    assert!(from.starts_with("sip:bob@"), "{from}");
    alice
        .answer(
            call,
            CallAudio::files(Some(speech.send.clone()), Some(heard.clone())),
        )
        .unwrap();
    reach(&mut events, "alice", CallState::Connected).await;
    bob.wait_event("CALL_ESTABLISHED", EVENT_LIMIT)
        .await
        .unwrap();

    // After the speech (so as not to cut into it), DTMF both ways by
    // RFC 4733, then hang up before baresip's file and its call end.
    tokio::time::sleep(speech.duration + Duration::from_millis(300)).await;
    alice.send_dtmf(call, "5").unwrap();
    let dtmf = bob
        .wait_event("CALL_DTMF_START", EVENT_LIMIT)
        .await
        .unwrap();
    assert_eq!(dtmf.param.as_deref(), Some("5"), "{dtmf:?}");
    bob.command("sndcode", "7").await.unwrap();
    let (digit, _) = wait_for(&mut events, EVENT_LIMIT, |e| {
        matches!(e, Event::Dtmf { .. })
    })
    .await
    .unwrap();
    assert!(matches!(digit, Event::Dtmf { digit: '7', .. }), "{digit:?}");
    alice.hangup(call).unwrap();
    let ended = reach(&mut events, "alice", CallState::Ended).await;
    assert!(
        matches!(&ended, Event::CallState { reason: Some(r), .. } if r == "local hangup"),
        "{ended:?}"
    );
    assert_eq!(codec_of(&mut events).await, "PCMU");
    bob.wait_event("CALL_CLOSED", EVENT_LIMIT).await.unwrap();
    alice.shutdown().await;

    // G.711 is narrowband: this speech through µ-law alone scores 2.76
    // in PESQ-WB, the ceiling for this call (measured 2.77 both ways).
    score(
        "baresip heard locus",
        &speech,
        &bob.recording().unwrap(),
        2.5,
    );
    score("locus heard baresip", &speech, &heard, 2.5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_busy_and_hold_with_baresip() {
    init_logging();
    let k = kamailio();
    let dir = tempfile::tempdir().unwrap();
    let speech = Speech::generate(dir.path()).unwrap();
    let mut bob = baresip_bob(&k, &speech, &[], false).await;
    let (alice, mut events) = registered(&k, "alice", "alice-secret", Transport::Udp).await;

    // Cancelled before baresip answers.
    let call = alice
        .call("bob", CallAudio::default())
        .unwrap()
        .id()
        .await
        .unwrap();
    bob.wait_event("CALL_INCOMING", EVENT_LIMIT).await.unwrap();
    reach(&mut events, "alice", CallState::Ringing).await;
    alice.hangup(call).unwrap();
    reach(&mut events, "alice", CallState::Ended).await;
    bob.wait_event("CALL_CLOSED", EVENT_LIMIT).await.unwrap();

    // Rejected by baresip: it answers 486 Busy Here.
    alice.call("bob", CallAudio::default()).unwrap();
    bob.wait_event("CALL_INCOMING", EVENT_LIMIT).await.unwrap();
    bob.command("hangup", "").await.unwrap();
    let ended = reach(&mut events, "alice", CallState::Ended).await;
    assert!(
        matches!(&ended, Event::CallState { reason: Some(r), .. } if r == "busy"),
        "{ended:?}"
    );

    // Answered, held and resumed by re-INVITE, hung up by Locus.
    let call = alice
        .call("bob", CallAudio::default())
        .unwrap()
        .id()
        .await
        .unwrap();
    bob.wait_event("CALL_INCOMING", EVENT_LIMIT).await.unwrap();
    bob.command("accept", "").await.unwrap();
    reach(&mut events, "alice", CallState::Connected).await;
    alice.hold(call).unwrap();
    reach(&mut events, "alice", CallState::Held).await;
    alice.resume(call).unwrap();
    reach(&mut events, "alice", CallState::Connected).await;
    alice.hangup(call).unwrap();
    bob.wait_event("CALL_CLOSED", EVENT_LIMIT).await.unwrap();
    alice.shutdown().await;
}
