//! Registration when things go wrong: no server, a restarted server, short
//! expiries, 423, and peers that answer with garbage.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::net::SocketAddr;
use std::time::Duration;

use locus_core::{AccountConfig, Event, FailureReason, Phone, Transport};
use locus_tests::loopback::free_sip_address;
use locus_tests::phones::{account, init_logging, next_failure, wait_for};
use locus_tests::{Kamailio, KamailioConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

fn is_registered(e: &Event) -> bool {
    matches!(e, Event::Registered { .. })
}

fn account_at(server: &str) -> AccountConfig {
    let mut c = AccountConfig::new("alice", "example.test", "pw");
    c.server = Some(server.into());
    c.listen = Some("127.0.0.1:0".parse().unwrap());
    c
}

#[tokio::test]
async fn no_server_over_tcp_is_unreachable_with_bounded_retries() {
    init_logging();
    let (ip, port, _) = free_sip_address().unwrap();
    let (phone, mut events) = Phone::start(account_at(&format!("sip:{ip}:{port};transport=tcp")))
        .await
        .unwrap();
    phone.register().unwrap();
    let first = next_failure(&mut events, Duration::from_secs(5))
        .await
        .expect("a failure");
    assert_eq!(first.reason, FailureReason::Unreachable);
    assert!(first.will_retry);
    assert!(
        first.message.contains("refused"),
        "clear reason: {}",
        first.message
    );
    // A migrating server is back within seconds: retries come every
    // 0.25-0.5 s for the first 10 s (the exponential backoff after that is
    // unit-tested in the registration agent).
    let window = tokio::time::Instant::now() + Duration::from_secs(9);
    let mut at = vec![tokio::time::Instant::now()];
    while let Ok(Some(ev)) = tokio::time::timeout_at(window, events.recv()).await {
        if matches!(ev, Event::RegistrationFailed { .. }) {
            at.push(tokio::time::Instant::now());
        }
    }
    let gaps: Vec<f64> = at.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
    assert!(gaps.len() >= 15, "retries in 9 s: {gaps:?}");
    for gap in &gaps {
        // The margin absorbs scheduling delay on a loaded machine.
        assert!((0.22..=0.9).contains(gap), "gap {gap:.2} s in {gaps:?}");
    }
    phone.shutdown().await;
}

#[tokio::test]
async fn a_closed_udp_port_is_refused_at_once() {
    init_logging();
    let (ip, port, _) = free_sip_address().unwrap();
    let (phone, mut events) = Phone::start(account_at(&format!("sip:{ip}:{port}")))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    phone.register().unwrap();
    // The kernel's ICMP "port unreachable" reaches the phone: no 32 s wait.
    let failure = next_failure(&mut events, Duration::from_secs(5))
        .await
        .expect("refused");
    assert_eq!(failure.reason, FailureReason::Unreachable);
    assert!(failure.message.contains("refused"), "{}", failure.message);
    assert!(started.elapsed() < Duration::from_secs(2));
    phone.shutdown().await;
}

#[tokio::test]
async fn a_silent_udp_server_times_out_after_timer_f() {
    init_logging();
    let (ip, port, _) = free_sip_address().unwrap();
    // Bound but never read: no answer and no ICMP error.
    let _black_hole = std::net::UdpSocket::bind((ip, port)).unwrap();
    let (phone, mut events) = Phone::start(account_at(&format!("sip:{ip}:{port}")))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    phone.register().unwrap();
    let failure = next_failure(&mut events, Duration::from_secs(40))
        .await
        .expect("a timeout");
    assert_eq!(failure.reason, FailureReason::Timeout);
    assert!(failure.will_retry);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(31) && took < Duration::from_secs(36),
        "Timer F is 32 s, took {took:?}"
    );
    phone.shutdown().await;
}

#[tokio::test]
async fn tcp_flow_loss_reregisters_when_the_server_returns() {
    init_logging();
    let mut k = Kamailio::start(KamailioConfig::default()).unwrap();
    let (phone, mut events) = Phone::start(account(&k, "alice", "alice-secret", Transport::Tcp))
        .await
        .unwrap();
    phone.register().unwrap();
    wait_for(&mut events, Duration::from_secs(10), is_registered)
        .await
        .expect("registered");
    k.stop();
    let (ev, _) = wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, Event::Unreachable { .. })
    })
    .await
    .expect("flow loss noticed");
    assert!(matches!(ev, Event::Unreachable { .. }));
    k.restart().unwrap();
    let (_, between) = wait_for(&mut events, Duration::from_secs(10), is_registered)
        .await
        .unwrap_or_else(|seen| panic!("not registered again: {seen:?}"));
    assert!(
        between.iter().all(|e| matches!(
            e,
            Event::RegistrationFailed {
                will_retry: true,
                ..
            }
        )),
        "only retryable failures while down: {between:?}"
    );
    assert_eq!(
        k.contacts("alice").unwrap().len(),
        1,
        "binding is back in the restarted Kamailio"
    );
    phone.shutdown().await;
}

#[tokio::test]
async fn udp_refresh_restores_binding_lost_in_a_restart() {
    init_logging();
    let mut k = Kamailio::start(KamailioConfig::default()).unwrap();
    let mut cfg = account(&k, "alice", "alice-secret", Transport::Udp);
    cfg.expires = 4;
    let (phone, mut events) = Phone::start(cfg).await.unwrap();
    phone.register().unwrap();
    let (ev, _) = wait_for(&mut events, Duration::from_secs(10), is_registered)
        .await
        .expect("registered");
    assert!(matches!(ev, Event::Registered { expires: 4, .. }), "{ev:?}");
    // A refresh comes before the 4 s binding expires.
    wait_for(&mut events, Duration::from_secs(4), is_registered)
        .await
        .expect("refreshed");
    // The restart empties Kamailio's in-memory location table; the next
    // refresh must put the binding back.
    k.restart().unwrap();
    wait_for(&mut events, Duration::from_secs(6), is_registered)
        .await
        .expect("registered again at refresh");
    assert_eq!(k.contacts("alice").unwrap().len(), 1);
    phone.shutdown().await;
    assert!(
        k.contacts("alice").unwrap().is_empty(),
        "shutdown unregisters"
    );
}

#[tokio::test]
async fn interval_too_brief_takes_min_expires() {
    init_logging();
    let k = Kamailio::start(KamailioConfig {
        min_expires: 120,
        ..Default::default()
    })
    .unwrap();
    let mut cfg = account(&k, "alice", "alice-secret", Transport::Udp);
    cfg.expires = 60;
    let (phone, mut events) = Phone::start(cfg).await.unwrap();
    phone.register().unwrap();
    let (ev, before) = wait_for(&mut events, Duration::from_secs(10), is_registered)
        .await
        .expect("registered");
    assert!(
        matches!(ev, Event::Registered { expires: 120, .. }),
        "{ev:?}"
    );
    assert!(
        before.is_empty(),
        "423 is handled without a failure event: {before:?}"
    );
    phone.shutdown().await;
}

/// Answers every REGISTER with the next of `replies` (with the request's
/// Via, Call-ID and CSeq filled in where the reply has `{via}` etc.).
fn fill(reply: &str, request: &str) -> String {
    let header = |name: &str| {
        request
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_default()
            .to_owned()
    };
    reply
        .replace("{via}", &header("Via"))
        .replace("{callid}", &header("Call-ID"))
        .replace("{cseq}", &header("CSeq"))
}

#[tokio::test]
async fn hostile_udp_peer_gets_clear_errors_and_no_panic() {
    init_logging();
    let (ip, port, _) = free_sip_address().unwrap();
    let server = UdpSocket::bind((ip, port)).await.unwrap();
    let (phone, mut events) = Phone::start(account_at(&format!("sip:{ip}:{port}")))
        .await
        .unwrap();
    phone.register().unwrap();
    let replies = [
        "\u{0}\u{1}\u{2} not sip at all".to_owned(),
        "SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n".to_owned(),
        "SIP/2.0 200 OK\r\nVia: {via}\r\nCall-ID: {callid}\r\nCSeq: {cseq}\r\nContent-Length: 99999\r\n\r\n".to_owned(),
        format!("SIP/2.0 401 Unauthorized\r\nVia: {{via}}\r\nCall-ID: {{callid}}\r\nCSeq: {{cseq}}\r\nWWW-Authenticate: Digest realm=\"x\", qop=\"auth\"\r\n{}Content-Length: 0\r\n\r\n", "X-Pad: y\r\n".repeat(3)),
    ];
    let mut buf = vec![0u8; 65536];
    let (n, from) = server.recv_from(&mut buf).await.unwrap();
    let request = String::from_utf8_lossy(&buf[..n]).into_owned();
    for reply in &replies {
        server
            .send_to(fill(reply, &request).as_bytes(), from)
            .await
            .unwrap();
    }
    let failure = next_failure(&mut events, Duration::from_secs(5))
        .await
        .expect("a failure");
    assert_eq!(failure.reason, FailureReason::Auth);
    assert!(!failure.will_retry);
    assert!(failure.message.contains("no nonce"), "{}", failure.message);
    let before = failure.before;
    let errors: Vec<_> = before
        .iter()
        .filter(|e| matches!(e, Event::Error { .. }))
        .collect();
    assert_eq!(
        errors.len(),
        3,
        "each malformed reply is reported: {before:?}"
    );
    phone.shutdown().await;
}

#[tokio::test]
async fn hostile_tcp_peer_is_disconnected_with_a_clear_reason() {
    init_logging();
    let (ip, port, _) = free_sip_address().unwrap();
    let listener = TcpListener::bind(SocketAddr::new(ip, port)).await.unwrap();
    let (phone, mut events) = Phone::start(account_at(&format!("sip:{ip}:{port};transport=tcp")))
        .await
        .unwrap();
    phone.register().unwrap();
    let (mut conn, _) = listener.accept().await.unwrap();
    let mut buf = [0u8; 4096];
    let _ = conn.read(&mut buf).await.unwrap();
    conn.write_all(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n")
        .await
        .unwrap();
    let failure = next_failure(&mut events, Duration::from_secs(5))
        .await
        .expect("a failure");
    assert_eq!(failure.reason, FailureReason::Unreachable);
    assert!(failure.will_retry);
    assert!(
        failure.message.contains("without Content-Length"),
        "{}",
        failure.message
    );
    phone.shutdown().await;
}

#[tokio::test]
async fn network_changed_registers_again_on_a_new_connection() {
    init_logging();
    let k = Kamailio::start(KamailioConfig::default()).unwrap();
    let (phone, mut events) = Phone::start(account(&k, "alice", "alice-secret", Transport::Tcp))
        .await
        .unwrap();
    phone.register().unwrap();
    wait_for(&mut events, Duration::from_secs(10), is_registered)
        .await
        .expect("registered");
    phone.network_changed().unwrap();
    let (_, before) = wait_for(&mut events, Duration::from_secs(5), is_registered)
        .await
        .expect("registered again at once");
    // Dropping the old connection is not a server going away.
    assert!(
        !before
            .iter()
            .any(|e| matches!(e, Event::Unreachable { .. } | Event::ServerChanged { .. })),
        "{before:?}"
    );
    let quiet = wait_for(&mut events, Duration::from_secs(2), |e| {
        matches!(
            e,
            Event::Unreachable { .. } | Event::RegistrationFailed { .. }
        )
    })
    .await;
    assert!(quiet.is_err(), "{quiet:?}");
    assert_eq!(k.contacts("alice").unwrap().len(), 1);
    phone.shutdown().await;
}
