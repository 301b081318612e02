//! Registration against a real Kamailio over UDP, TCP and TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::time::Duration;

use locus_core::{Event, FailureReason, Phone, Transport};
use locus_tests::phones::{account, init_logging, next_failure, wait_for};
use locus_tests::{DigestAlgorithm, Kamailio, KamailioConfig};

async fn register_and_unregister(transport: Transport, algorithm: DigestAlgorithm) {
    init_logging();
    let k = Kamailio::start(KamailioConfig {
        algorithm,
        ..Default::default()
    })
    .expect("kamailio starts");
    let (phone, mut events) = Phone::start(account(&k, "alice", "alice-secret", transport))
        .await
        .expect("phone starts");
    phone.register().expect("register command");
    let (ev, before) = wait_for(&mut events, Duration::from_secs(10), |e| {
        matches!(e, Event::Registered { .. })
    })
    .await
    .unwrap_or_else(|seen| {
        panic!(
            "not registered over {transport}: {seen:?}\n{}",
            k.log_tail()
        )
    });
    assert!(before.is_empty(), "no failures on the way: {before:?}");
    let Event::Registered {
        server,
        transport: t,
        expires,
    } = ev
    else {
        unreachable!()
    };
    assert_eq!(t, transport);
    assert_eq!(server, k.server_uri(transport));
    assert!(expires > 0);

    let contacts = k.contacts("alice").expect("ul.dump");
    assert_eq!(contacts.len(), 1, "one binding: {contacts:?}");
    assert!(
        contacts[0].contains(&phone.local_addr().port().to_string()),
        "{contacts:?}"
    );

    phone.unregister().expect("unregister command");
    wait_for(&mut events, Duration::from_secs(10), |e| {
        *e == Event::Unregistered
    })
    .await
    .unwrap_or_else(|seen| panic!("not unregistered: {seen:?}"));
    assert!(
        k.contacts("alice").expect("ul.dump").is_empty(),
        "binding removed in Kamailio"
    );
    phone.shutdown().await;
}

#[tokio::test]
async fn registers_over_udp_with_sha256() {
    register_and_unregister(Transport::Udp, DigestAlgorithm::Sha256).await;
}

#[tokio::test]
async fn registers_over_tcp_with_md5() {
    register_and_unregister(Transport::Tcp, DigestAlgorithm::Md5).await;
}

#[tokio::test]
async fn registers_over_tls() {
    register_and_unregister(Transport::Tls, DigestAlgorithm::Sha256).await;
}

#[tokio::test]
async fn wrong_password_fails_once_with_auth() {
    init_logging();
    let k = Kamailio::start(KamailioConfig::default()).expect("kamailio starts");
    let (phone, mut events) = Phone::start(account(&k, "alice", "wrong", Transport::Udp))
        .await
        .expect("phone starts");
    phone.register().expect("register command");
    let failure = next_failure(&mut events, Duration::from_secs(10))
        .await
        .expect("a failure event");
    assert_eq!(failure.reason, FailureReason::Auth);
    assert_eq!(failure.status, Some(401));
    assert!(!failure.will_retry);
    // No retry storm: nothing else happens.
    let more = wait_for(&mut events, Duration::from_secs(3), |_| true).await;
    assert!(more.is_err(), "unexpected further events: {more:?}");
    assert!(k.contacts("alice").expect("ul.dump").is_empty());
    phone.shutdown().await;
}

#[tokio::test]
async fn tls_server_with_untrusted_certificate_is_a_clear_error() {
    init_logging();
    let k = Kamailio::start(KamailioConfig::default()).expect("kamailio starts");
    let mut cfg = account(&k, "alice", "alice-secret", Transport::Tls);
    cfg.ca_file = None;
    let (phone, mut events) = Phone::start(cfg).await.expect("phone starts");
    phone.register().expect("register command");
    let failure = next_failure(&mut events, Duration::from_secs(10))
        .await
        .expect("a failure event");
    assert_eq!(failure.reason, FailureReason::Unreachable);
    assert!(
        failure.message.contains("certificate"),
        "says why: {}",
        failure.message
    );
    assert!(k.contacts("alice").expect("ul.dump").is_empty());
    phone.shutdown().await;
}
