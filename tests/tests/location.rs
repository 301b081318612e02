//! Location in calls (RFC 6442): the caller's position travels in its
//! INVITE as PIDF-LO, only to contacts it is shared with; a peer that
//! cannot take it gets the call without it; a bad one never stops a call.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::time::Duration;

use locus_core::location::sharing::Sharing;
use locus_core::location::{Location, Timestamp};
use locus_core::{AccountConfig, CallAudio, CallState, Event, Phone, Transport};
use locus_tests::phones::{init_logging, reach, registered, wait_for};
use locus_tests::{Kamailio, KamailioConfig};
use tokio::net::UdpSocket;

fn vienna() -> Location {
    Location::new(48.2085, 16.3721, 10.0, Some(Timestamp::now())).unwrap()
}

async fn incoming(events: &mut locus_core::Events) -> (u64, Option<Location>, Vec<Event>) {
    let (ev, before) = wait_for(events, Duration::from_secs(10), |e| {
        matches!(e, Event::IncomingCall { .. })
    })
    .await
    .expect("an incoming call");
    let Event::IncomingCall { call, location, .. } = ev else {
        unreachable!()
    };
    (call, location, before)
}

/// Alice calls Bob; his incoming call, and the position it carries.
async fn alice_calls_bob(alice: &Phone, bob: &mut locus_core::Events) -> (u64, Option<Location>) {
    alice
        .call("bob", CallAudio::default())
        .unwrap()
        .id()
        .await
        .unwrap();
    let (call, location, _) = incoming(bob).await;
    (call, location)
}

#[tokio::test]
async fn the_callee_sees_where_the_caller_is_only_when_shared() {
    init_logging();
    let k = Kamailio::start(KamailioConfig::default()).unwrap();
    let (alice, _alice_events) = registered(&k, "alice", "alice-secret", Transport::Udp).await;
    let (bob, mut bob_events) = registered(&k, "bob", "bob-secret", Transport::Udp).await;
    alice.set_location(Some(vienna())).unwrap();

    // Off by default: nothing.
    let (call, location) = alice_calls_bob(&alice, &mut bob_events).await;
    assert_eq!(location, None);
    bob.reject(call, true).unwrap();

    // Shared with bob, to about a kilometre.
    alice
        .set_sharing(Sharing::with(["bob@example.test".to_owned()], Some(1000.0)))
        .unwrap();
    let (call, location) = alice_calls_bob(&alice, &mut bob_events).await;
    let seen = location.expect("bob sees alice's location");
    let metres = |a: f64, b: f64| (a - b).abs() * 111_320.0;
    assert!(metres(seen.lat, 48.2085) < 1000.0, "{seen:?}");
    assert!(
        metres(seen.lon, 16.3721) * 48.2_f64.to_radians().cos() < 1000.0,
        "{seen:?}"
    );
    assert_eq!(seen.radius_m, 1000.0);
    assert!(seen.timestamp.is_some());
    bob.reject(call, true).unwrap();
    alice.shutdown().await;
    bob.shutdown().await;
}

#[tokio::test]
async fn a_moving_caller_keeps_the_callee_up_to_date_but_not_with_every_fix() {
    init_logging();
    let k = Kamailio::start(KamailioConfig::default()).unwrap();
    let (alice, mut alice_events) = registered(&k, "alice", "alice-secret", Transport::Udp).await;
    let (bob, mut bob_events) = registered(&k, "bob", "bob-secret", Transport::Udp).await;
    alice
        .set_sharing(Sharing::with(["bob@example.test".to_owned()], None))
        .unwrap();
    alice.set_location(Some(vienna())).unwrap();
    let (call, location) = alice_calls_bob(&alice, &mut bob_events).await;
    assert_eq!(location.map(|l| l.lat), Some(48.2085));
    bob.answer(call, CallAudio::default()).unwrap();
    reach(&mut alice_events, "alice", CallState::Connected).await;
    reach(&mut bob_events, "bob", CallState::Connected).await;

    // A fix 11 m off, inside the first one's 10 m radius but under 25 m:
    // not news. Then 560 m north: news, in an UPDATE.
    let at = |lat| Location::new(lat, 16.3721, 10.0, Some(Timestamp::now())).unwrap();
    alice.set_location(Some(at(48.2086))).unwrap();
    alice.set_location(Some(at(48.2135))).unwrap();
    let (moved, before) = wait_for(&mut bob_events, Duration::from_secs(5), |e| {
        matches!(e, Event::CallLocation { .. })
    })
    .await
    .expect("bob hears that alice moved");
    let Event::CallLocation { call: c, location } = moved else {
        unreachable!()
    };
    assert_eq!((c, location.lat), (call, 48.2135));
    assert!(
        !before
            .iter()
            .any(|e| matches!(e, Event::CallLocation { .. })),
        "{before:?}"
    );
    bob.hangup(call).unwrap();
    reach(&mut alice_events, "alice", CallState::Ended).await;
    alice.shutdown().await;
    bob.shutdown().await;
}

/// The value of `name` in a SIP message's text, if present.
fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
}

/// A response to `request` (its Via, From, To with a tag, Call-ID, CSeq).
fn reply(request: &str, status: &str) -> String {
    let mut r = format!("SIP/2.0 {status}\r\n");
    for name in ["Via", "From", "Call-ID", "CSeq"] {
        r.push_str(&format!("{name}: {}\r\n", header(request, name).unwrap()));
    }
    r.push_str(&format!(
        "To: {};tag=srv\r\nContent-Length: 0\r\n\r\n",
        header(request, "To").unwrap()
    ));
    r
}

/// Alice, sending every request to `server`, with her position set (and
/// not shared).
async fn alice_at(server: std::net::SocketAddr) -> (Phone, locus_core::Events) {
    let mut config = AccountConfig::new("alice", "example.test", "alice-secret");
    config.server = Some(format!("sip:{server}"));
    config.listen = "127.0.0.1:0".parse().ok();
    let (alice, events) = Phone::start(config).await.unwrap();
    alice.set_location(Some(vienna())).unwrap();
    (alice, events)
}

/// Waits for the call to end busy (the only call these tests answer).
async fn ends_busy(events: &mut locus_core::Events) {
    wait_for(
        events,
        Duration::from_secs(5),
        |e| matches!(e, Event::CallState { reason: Some(r), .. } if r == "busy"),
    )
    .await
    .expect("the call ends busy");
}

/// Reads requests until an INVITE; answers anything else it reads with 200.
async fn next_invite(sip: &UdpSocket) -> (String, std::net::SocketAddr) {
    let mut buf = vec![0u8; 8192];
    loop {
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), sip.recv_from(&mut buf))
            .await
            .expect("an INVITE within 5 s")
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("INVITE ") {
            return (text, from);
        }
    }
}

#[tokio::test]
async fn on_the_wire_only_when_shared_and_dropped_after_a_415() {
    init_logging();
    // A bare server on loopback: alice sends every request here.
    let sip = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (alice, mut events) = alice_at(sip.local_addr().unwrap()).await;

    alice.call("bob", CallAudio::default()).unwrap();
    let (plain, from) = next_invite(&sip).await;
    assert!(header(&plain, "Geolocation").is_none(), "{plain}");
    assert!(
        !plain.contains("pidf") && !plain.contains("48.2085"),
        "{plain}"
    );
    sip.send_to(reply(&plain, "486 Busy Here").as_bytes(), from)
        .await
        .unwrap();

    alice
        .set_sharing(Sharing::with(["sip:bob@example.test".to_owned()], None))
        .unwrap();
    alice.call("bob", CallAudio::default()).unwrap();
    // Too large for UDP (RFC 3261 §18.1.1): tried over TCP first; with no
    // TCP listener here, sent over UDP after all.
    let (located, from) = next_invite(&sip).await;
    let geolocation = header(&located, "Geolocation").expect("a Geolocation header");
    assert!(geolocation.starts_with("<cid:"), "{located}");
    assert_eq!(header(&located, "Geolocation-Routing"), Some("no"));
    assert!(header(&located, "Content-Type")
        .unwrap()
        .starts_with("multipart/mixed;boundary="));
    let cid = geolocation
        .trim_start_matches("<cid:")
        .trim_end_matches('>');
    assert!(
        located.contains(&format!("Content-ID: <{cid}>")),
        "{located}"
    );
    assert!(
        located.contains("application/pidf+xml")
            && located.contains("<gml:pos>48.2085 16.3721</gml:pos>")
    );
    eprintln!(
        "INVITE without location: {} bytes; with: {} bytes (+{})",
        plain.len(),
        located.len(),
        located.len() - plain.len()
    );
    // A peer that cannot take multipart bodies.
    sip.send_to(
        reply(&located, "415 Unsupported Media Type").as_bytes(),
        from,
    )
    .await
    .unwrap();
    let (retry, from) = next_invite(&sip).await;
    assert_eq!(header(&retry, "CSeq"), Some("2 INVITE"), "{retry}");
    assert_eq!(header(&retry, "Call-ID"), header(&located, "Call-ID"));
    assert!(header(&retry, "Geolocation").is_none(), "{retry}");
    assert_eq!(header(&retry, "Content-Type"), Some("application/sdp"));
    sip.send_to(reply(&retry, "486 Busy Here").as_bytes(), from)
        .await
        .unwrap();
    ends_busy(&mut events).await;
    alice.shutdown().await;
}

#[tokio::test]
async fn an_invite_too_large_for_udp_goes_over_tcp() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    init_logging();
    // One server address taking both UDP and TCP, as SIP servers do.
    let sip = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = tokio::net::TcpListener::bind(sip.local_addr().unwrap())
        .await
        .unwrap();
    let (alice, mut events) = alice_at(sip.local_addr().unwrap()).await;
    alice
        .set_sharing(Sharing::with(["bob@example.test".to_owned()], None))
        .unwrap();
    alice.call("bob", CallAudio::default()).unwrap();
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(5), tcp.accept())
        .await
        .expect("a TCP connection for the INVITE")
        .unwrap();
    let mut received = Vec::new();
    let mut buf = vec![0u8; 8192];
    let invite = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("the INVITE")
            .unwrap();
        assert!(n > 0, "closed before a whole INVITE");
        received.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&received).into_owned();
        let length: usize = header(&text, "Content-Length").map_or(0, |l| l.parse().unwrap());
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            if body.len() >= length {
                break format!("{head}\r\n\r\n{body}");
            }
        }
    };
    assert!(invite.starts_with("INVITE "), "{invite}");
    assert!(invite.len() > 1300, "{} bytes", invite.len());
    assert!(header(&invite, "Via").unwrap().starts_with("SIP/2.0/TCP "));
    assert!(header(&invite, "Geolocation").is_some());
    stream
        .write_all(reply(&invite, "486 Busy Here").as_bytes())
        .await
        .unwrap();
    ends_busy(&mut events).await;
    alice.shutdown().await;
}

#[tokio::test]
async fn a_bad_location_never_stops_a_call() {
    init_logging();
    let k = Kamailio::start(KamailioConfig::default()).unwrap();
    let (bob, mut events) = registered(&k, "bob", "bob-secret", Transport::Udp).await;
    let sip = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (me, phone) = (sip.local_addr().unwrap(), bob.local_addr());
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    // North of the North Pole.
    let pidf = "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
                xmlns:gp=\"urn:ietf:params:xml:ns:pidf:geopriv10\" xmlns:gml=\"http://www.opengis.net/gml\" \
                entity=\"sip:carol@example.test\"><tuple id=\"t\"><status><gp:geopriv><gp:location-info>\
                <gml:Point srsName=\"urn:ogc:def:crs:EPSG::4326\"><gml:pos>95.0 10.0</gml:pos></gml:Point>\
                </gp:location-info></gp:geopriv></status></tuple></presence>";
    let body = format!(
        "--b1\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--b1\r\nContent-Type: application/pidf+xml\r\n\
         Content-ID: <loc@example.test>\r\n\r\n{pidf}\r\n--b1--\r\n"
    );
    let invite = format!(
        "INVITE sip:bob@{phone} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKbadloc;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:carol@example.test>;tag=c1\r\nTo: <sip:bob@example.test>\r\n\
         Call-ID: badloc-1\r\nCSeq: 1 INVITE\r\nContact: <sip:carol@{me}>\r\n\
         Geolocation: <cid:loc@example.test>\r\nGeolocation-Routing: no\r\n\
         Content-Type: multipart/mixed;boundary=b1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    sip.send_to(invite.as_bytes(), phone).await.unwrap();
    let (call, location, before) = incoming(&mut events).await;
    assert_eq!(location, None);
    let warned = before
        .iter()
        .any(|e| matches!(e, Event::Error { message } if message.contains("location is ignored")));
    assert!(warned, "{before:?}");
    bob.answer(call, CallAudio::default()).unwrap();
    let mut buf = vec![0u8; 8192];
    let answered = async {
        loop {
            let (n, _) = sip.recv_from(&mut buf).await.unwrap();
            if buf[..n].starts_with(b"SIP/2.0 200") {
                return String::from_utf8_lossy(&buf[..n]).into_owned();
            }
        }
    };
    let ok = tokio::time::timeout(Duration::from_secs(5), answered)
        .await
        .expect("a 200");
    assert!(ok.contains("PCMU/8000"), "{ok}");
    bob.hangup(call).unwrap();
    bob.shutdown().await;
}
