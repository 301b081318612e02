//! Calls between Locus and baresip, an independent SIP phone, through a
//! real Kamailio: both directions, Opus and G.711, cancel, busy, hold,
//! DTMF, hang-up from each side, and the audio scored with PESQ-WB.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::path::{Path, PathBuf};
use std::time::Duration;

use locus_core::location::sharing::Sharing;
use locus_core::location::{Location, Timestamp};
use locus_core::{CallAudio, CallId, CallState, Event, Events, Phone, Transport};
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

/// Kamailio, espeak speech, baresip as Bob and Locus as Alice.
struct Scene {
    kamailio: Kamailio,
    dir: tempfile::TempDir,
    speech: Speech,
    bob: Baresip,
    alice: Phone,
    events: Events,
}

impl Scene {
    async fn new(codecs: &[&str], auto_answer: bool) -> Scene {
        init_logging();
        let k = kamailio();
        let dir = tempfile::tempdir().unwrap();
        let speech = Speech::generate(dir.path()).unwrap();
        let bob = Baresip::start(
            &k,
            BaresipAccount {
                user: "bob".into(),
                password: "bob-secret".into(),
                audio_in: speech.send.clone(),
                codecs: codecs.iter().map(|c| (*c).to_owned()).collect(),
                auto_answer,
            },
        )
        .await
        .unwrap();
        let (alice, events) = registered(&k, "alice", "alice-secret", Transport::Udp).await;
        Scene {
            kamailio: k,
            dir,
            speech,
            bob,
            alice,
            events,
        }
    }

    /// Where Alice records what she hears.
    fn heard(&self) -> PathBuf {
        self.dir.path().join("alice-heard.wav")
    }

    /// Alice's call ended for `reason` with `codec`; baresip saw it close.
    /// Then each side's recording must score at least `floor`.
    async fn finish(mut self, ended: Event, reason: &str, codec: &str, floor: f64) {
        assert!(
            matches!(&ended, Event::CallState { reason: Some(r), .. } if r == reason),
            "{ended:?}"
        );
        assert_eq!(codec_of(&mut self.events).await, codec);
        self.bob
            .wait_event("CALL_CLOSED", EVENT_LIMIT)
            .await
            .unwrap();
        let heard = self.heard();
        self.alice.shutdown().await;
        let recording = self.bob.recording().unwrap();
        score("baresip heard locus", &self.speech, &recording, floor);
        score("locus heard baresip", &self.speech, &heard, floor);
    }
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
    let mut s = Scene::new(&[], true).await;
    let audio = CallAudio::files(Some(s.speech.send.clone()), Some(s.heard()));
    s.alice.call("bob", audio).unwrap().id().await.unwrap();
    reach(&mut s.events, "alice", CallState::Connected).await;
    let established = s
        .bob
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
    let ended = wait_for(&mut s.events, s.speech.duration + EVENT_LIMIT, |e| {
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
    // Opus both ways over loopback: measured 4.2 and 4.4. baresip starts
    // with a 220 ms burst, which Locus's jitter buffer sheds in a pause.
    s.finish(ended, "remote hangup", "opus", 4.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_calls_locus_with_pcmu_dtmf_and_locus_hangs_up() {
    let mut s = Scene::new(&["PCMU/8000/1"], false).await;
    let alice_uri = format!("sip:alice@{}", s.kamailio.domain());
    s.bob.command("dial", &alice_uri).await.unwrap();
    let (incoming, _) = wait_for(&mut s.events, EVENT_LIMIT, |e| {
        matches!(e, Event::IncomingCall { .. })
    })
    .await
    .unwrap();
    let Event::IncomingCall { call, from, .. } = incoming else {
        unreachable!()
    };
    assert!(from.starts_with("sip:bob@"), "{from}");
    // Alice shares where she is with the caller. Her position would follow
    // the answer in an UPDATE (RFC 6442), but baresip 1.0 allows no UPDATE,
    // so nothing is sent and the call goes on as without it.
    let here = Location::new(-33.8688, 151.2093, 50.0, Some(Timestamp::now())).unwrap();
    s.alice.set_location(Some(here)).unwrap();
    s.alice
        .set_sharing(Sharing::with([from.clone()], None))
        .unwrap();
    let audio = CallAudio::files(Some(s.speech.send.clone()), Some(s.heard()));
    s.alice.answer(call, audio).unwrap();
    reach(&mut s.events, "alice", CallState::Connected).await;
    s.bob
        .wait_event("CALL_ESTABLISHED", EVENT_LIMIT)
        .await
        .unwrap();

    // After the speech (so as not to cut into it), DTMF both ways by
    // RFC 4733, then hang up before baresip's file and its call end.
    tokio::time::sleep(s.speech.duration + Duration::from_millis(300)).await;
    s.alice.send_dtmf(call, "5").unwrap();
    let dtmf = s
        .bob
        .wait_event("CALL_DTMF_START", EVENT_LIMIT)
        .await
        .unwrap();
    assert_eq!(dtmf.param.as_deref(), Some("5"), "{dtmf:?}");
    s.bob.command("sndcode", "7").await.unwrap();
    let (digit, _) = wait_for(&mut s.events, EVENT_LIMIT, |e| {
        matches!(e, Event::Dtmf { .. })
    })
    .await
    .unwrap();
    assert!(matches!(digit, Event::Dtmf { digit: '7', .. }), "{digit:?}");
    s.alice.hangup(call).unwrap();
    let ended = reach(&mut s.events, "alice", CallState::Ended).await;
    // G.711 is narrowband: this speech through µ-law alone scores 2.76
    // in PESQ-WB, the ceiling for this call (measured 2.77 and 2.94).
    s.finish(ended, "local hangup", "PCMU", 2.5).await;
}

/// Alice calls Bob (without audio) until baresip reports the call.
async fn ring_bob(alice: &Phone, bob: &mut Baresip) -> CallId {
    let call = alice
        .call("bob", CallAudio::default())
        .unwrap()
        .id()
        .await
        .unwrap();
    bob.wait_event("CALL_INCOMING", EVENT_LIMIT).await.unwrap();
    call
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_busy_and_hold_with_baresip() {
    // Named, not `..`: Kamailio and the speech files must live to the end.
    let Scene {
        kamailio: _kamailio,
        dir: _dir,
        speech: _speech,
        mut bob,
        alice,
        mut events,
    } = Scene::new(&[], false).await;

    // Cancelled before baresip answers.
    let call = ring_bob(&alice, &mut bob).await;
    reach(&mut events, "alice", CallState::Ringing).await;
    alice.hangup(call).unwrap();
    reach(&mut events, "alice", CallState::Ended).await;
    bob.wait_event("CALL_CLOSED", EVENT_LIMIT).await.unwrap();

    // Rejected by baresip: it answers 486 Busy Here.
    ring_bob(&alice, &mut bob).await;
    bob.command("hangup", "").await.unwrap();
    let ended = reach(&mut events, "alice", CallState::Ended).await;
    assert!(
        matches!(&ended, Event::CallState { reason: Some(r), .. } if r == "busy"),
        "{ended:?}"
    );

    // Answered, held and resumed by re-INVITE, hung up by Locus.
    let call = ring_bob(&alice, &mut bob).await;
    bob.command("accept", "").await.unwrap();
    reach(&mut events, "alice", CallState::Connected).await;
    alice.hold(call).unwrap();
    reach(&mut events, "alice", CallState::Held).await;
    alice.resume(call).unwrap();
    reach(&mut events, "alice", CallState::Connected).await;
    alice.hangup(call).unwrap();
    bob.wait_event("CALL_CLOSED", EVENT_LIMIT).await.unwrap();

    // With alice's location in the INVITE (multipart SDP + PIDF-LO): baresip
    // knows nothing of RFC 6442, and the call still connects.
    let here = Location::new(48.2085, 16.3721, 50.0, Some(Timestamp::now())).unwrap();
    alice.set_location(Some(here)).unwrap();
    alice
        .set_sharing(Sharing::with(["bob@example.test".to_owned()], None))
        .unwrap();
    let call = ring_bob(&alice, &mut bob).await;
    bob.command("accept", "").await.unwrap();
    reach(&mut events, "alice", CallState::Connected).await;
    alice.hangup(call).unwrap();
    bob.wait_event("CALL_CLOSED", EVENT_LIMIT).await.unwrap();
    alice.shutdown().await;
}
