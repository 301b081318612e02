//! Calls between Locus phones through a real Kamailio: signalling, SDP,
//! RTP with Opus, and the audio itself, checked end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::time::Duration;

use locus_core::media::sdp::Codec;
use locus_core::{CallAudio, CallId, CallState, Event, Events, Phone, Transport};
use locus_tests::phones::{account, init_logging, reach, registered, registered_as, wait_for};
use locus_tests::quality::pesq_wb;
use locus_tests::voice::Speech;
use locus_tests::{Kamailio, KamailioConfig};

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
        ..
    } = incoming
    else {
        unreachable!()
    };
    assert!(from.starts_with("sip:alice@"), "{from}");
    (call, bob_call)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_hears_what_the_other_says() {
    init_logging();
    let k = Kamailio::start(KamailioConfig::default()).unwrap();
    let (alice, mut alice_events) = registered(&k, "alice", "alice-secret", Transport::Udp).await;
    let (bob, mut bob_events) = registered(&k, "bob", "bob-secret", Transport::Udp).await;
    let dir = tempfile::tempdir().unwrap();
    let speech = Speech::generate(dir.path()).unwrap();
    let heard = |who: &str| dir.path().join(format!("{who}-heard.wav"));
    let audio = |who: &str| CallAudio::files(Some(speech.send.clone()), Some(heard(who)));

    let (call, bob_call) = ring(&alice, &mut bob_events, "bob", audio("alice")).await;
    bob.answer(bob_call, audio("bob")).unwrap();
    reach(&mut alice_events, "alice", CallState::Connected).await;
    reach(&mut bob_events, "bob", CallState::Connected).await;
    tokio::time::sleep(speech.duration + Duration::from_secs(1)).await;
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

    // Give the WAV writers their last tick, then score both directions.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for who in ["alice", "bob"] {
        let quality = pesq_wb(&speech.reference, &heard(who)).unwrap();
        eprintln!("{who} heard the other with PESQ-WB {quality:?}");
        // Opus at 48 kbit/s over loopback scores 4.2 (measured 4.16-4.23);
        // a broken path (gaps, wrong rate, noise) scores below 3.
        assert!(quality.mos_lqo > 4.0, "{who}: {quality:?}");
    }
    alice.shutdown().await;
    bob.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_resume_by_reinvite_through_kamailio() {
    init_logging();
    let k = Kamailio::start(KamailioConfig::default()).unwrap();
    let (alice, mut alice_events) = registered(&k, "alice", "alice-secret", Transport::Udp).await;
    let (bob, mut bob_events) = registered(&k, "bob", "bob-secret", Transport::Udp).await;
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
async fn phones_on_tcp_and_tls_receive_calls_over_their_own_connection() {
    init_logging();
    let k = Kamailio::start(KamailioConfig::default()).unwrap();
    let (alice, mut alice_events) = registered(&k, "alice", "alice-secret", Transport::Udp).await;
    for transport in [Transport::Tcp, Transport::Tls] {
        let (bob, mut bob_events) = registered(&k, "bob", "bob-secret", transport).await;
        // Bob listens on no TLS port: the INVITE can only come back over
        // the connection Bob opened (Kamailio reuses it by its alias).
        let (call, bob_call) = ring(&alice, &mut bob_events, "bob", CallAudio::default()).await;
        bob.answer(bob_call, CallAudio::default()).unwrap();
        reach(&mut alice_events, "alice", CallState::Connected).await;
        reach(&mut bob_events, "bob", CallState::Connected).await;
        alice.hangup(call).unwrap();
        reach(&mut bob_events, "bob", CallState::Ended).await;
        bob.shutdown().await;
    }
    alice.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codec_order_is_the_users_and_nothing_in_common_is_refused() {
    init_logging();
    let k = Kamailio::start(KamailioConfig::default()).unwrap();
    let phone = |user: &str, password: &str, codecs: &[Codec]| {
        let mut config = account(&k, user, password, Transport::Udp);
        config.codecs = codecs.to_vec();
        config
    };
    // Alice prefers A-law; Bob takes what she prefers among his codecs.
    let (alice, mut alice_events) =
        registered_as(phone("alice", "alice-secret", &[Codec::Pcma, Codec::Opus])).await;
    let (bob, mut bob_events) = registered_as(phone("bob", "bob-secret", &Codec::ALL)).await;
    let (call, bob_call) = ring(&alice, &mut bob_events, "bob", CallAudio::default()).await;
    bob.answer(bob_call, CallAudio::default()).unwrap();
    reach(&mut alice_events, "alice", CallState::Connected).await;
    alice.hangup(call).unwrap();
    let (stats, _) = wait_for(&mut alice_events, Duration::from_secs(5), |e| {
        matches!(e, Event::CallStats { .. })
    })
    .await
    .unwrap();
    assert!(
        matches!(&stats, Event::CallStats { codec, .. } if codec == "PCMA"),
        "{stats:?}"
    );
    bob.shutdown().await;

    // Carol speaks only µ-law: Alice's offer is refused with 488.
    let (carol, mut carol_events) = registered_as(phone("bob", "bob-secret", &[Codec::Pcmu])).await;
    alice.call("bob", CallAudio::default()).unwrap();
    let ended = reach(&mut alice_events, "alice", CallState::Ended).await;
    assert!(
        matches!(&ended, Event::CallState { reason: Some(r), .. } if r == "rejected (488)"),
        "{ended:?}"
    );
    assert!(
        wait_for(&mut carol_events, Duration::from_millis(500), |e| matches!(
            e,
            Event::CallState {
                state: CallState::Connected,
                ..
            }
        ))
        .await
        .is_err()
    );
    carol.shutdown().await;
    alice.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_callee_ends_the_call_for_the_caller() {
    init_logging();
    let k = Kamailio::start(KamailioConfig::default()).unwrap();
    let (alice, mut alice_events) = registered(&k, "alice", "alice-secret", Transport::Udp).await;
    let (bob, mut bob_events) = registered(&k, "bob", "bob-secret", Transport::Udp).await;
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

/// The value of `name` in a SIP message's text.
fn header<'a>(message: &'a str, name: &str) -> &'a str {
    message
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {message}"))
}

/// Reads SIP messages from `sip` until one starts with `start`.
async fn receive(sip: &tokio::net::UdpSocket, start: &str) -> String {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), sip.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {start} within 5 s"))
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with(start) {
            return text;
        }
    }
}

/// A bare caller that requires 100rel, asks for session timers and makes
/// no offer: Locus's 180 comes reliably and is PRACKed, its 200 offers
/// and grants the timer, and the ACK's answer sets the media.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_without_an_offer_gets_one_and_the_ack_answers() {
    init_logging();
    let k = Kamailio::start(KamailioConfig::default()).unwrap();
    let (bob, mut events) = registered(&k, "bob", "bob-secret", Transport::Udp).await;
    // A bare UAC on loopback, sending straight to Bob's phone.
    let sip = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rtp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (me, phone) = (sip.local_addr().unwrap(), bob.local_addr());
    let invite = format!(
        "INVITE sip:bob@{phone} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKofferless;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:carol@example.test>;tag=c1\r\nTo: <sip:bob@example.test>\r\n\
         Call-ID: offerless-1\r\nCSeq: 1 INVITE\r\nContact: <sip:carol@{me}>\r\n\
         Require: 100rel\r\nSupported: timer\r\nSession-Expires: 1800;refresher=uac\r\nContent-Length: 0\r\n\r\n"
    );
    sip.send_to(invite.as_bytes(), phone).await.unwrap();
    let ringing = receive(&sip, "SIP/2.0 180").await;
    assert_eq!(header(&ringing, "RSeq"), "1", "{ringing}");
    let prack = format!(
        "PRACK sip:bob@{phone} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKprack;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:carol@example.test>;tag=c1\r\nTo: {to}\r\n\
         Call-ID: offerless-1\r\nCSeq: 2 PRACK\r\nRAck: 1 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        to = header(&ringing, "To")
    );
    sip.send_to(prack.as_bytes(), phone).await.unwrap();
    let prack_ok = receive(&sip, "SIP/2.0 200").await;
    assert_eq!(header(&prack_ok, "CSeq"), "2 PRACK");
    let (incoming, _) = wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, Event::IncomingCall { .. })
    })
    .await
    .unwrap();
    let Event::IncomingCall { call, .. } = incoming else {
        unreachable!()
    };
    bob.answer(call, CallAudio::default()).unwrap();
    let ok = receive(&sip, "SIP/2.0 200").await;
    assert!(
        ok.contains("m=audio ") && ok.contains("opus/48000/2"),
        "{ok}"
    );
    assert_eq!(header(&ok, "Session-Expires"), "1800;refresher=uac");
    assert_eq!(header(&ok, "Require"), "timer");
    // Answer the offer in the ACK: PCMU only, to our RTP socket.
    let rtp_port = rtp.local_addr().unwrap().port();
    let answer = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    );
    let ack = format!(
        "ACK sip:bob@{phone} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKack;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:carol@example.test>;tag=c1\r\nTo: {to}\r\n\
         Call-ID: offerless-1\r\nCSeq: 1 ACK\r\nContent-Type: application/sdp\r\n\
         Content-Length: {len}\r\n\r\n{answer}",
        to = header(&ok, "To"),
        len = answer.len()
    );
    sip.send_to(ack.as_bytes(), phone).await.unwrap();
    reach(&mut events, "bob", CallState::Connected).await;
    // Bob's media follows the answer: PCMU (payload type 0) to our port.
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), rtp.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(n > 12 && buf[1] & 0x7f == 0, "RTP with payload type 0");
    bob.hangup(call).unwrap();
    bob.shutdown().await;
}
