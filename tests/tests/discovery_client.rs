//! The phone's discovery client against the real discovery service and a
//! real DNS server (dnsmasq) on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::time::Duration;

use locus_core::discovery::{dns, DiscoveryClient, DiscoveryError, Health, ServerState};
use locus_core::{AccountConfig, Event, Phone, Transport};
use locus_tests::discovery::{free_port, DiscoveryService, Listed};
use locus_tests::dns::{DnsServer, SrvTarget};
use locus_tests::phones::{init_logging, registered_as, wait_for};
use locus_tests::{Kamailio, KamailioConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn rfc3263_follows_naptr_then_srv_priorities() {
    init_logging();
    let dns = DnsServer::start(
        "example.test",
        &[
            SrvTarget {
                transport: Transport::Tcp,
                addr: "127.0.0.3:5070".parse().unwrap(),
                priority: 20,
            },
            SrvTarget {
                transport: Transport::Tcp,
                addr: "127.0.0.2:5060".parse().unwrap(),
                priority: 10,
            },
            SrvTarget {
                transport: Transport::Udp,
                addr: "127.0.0.4:5060".parse().unwrap(),
                priority: 1,
            },
        ],
    )
    .unwrap();
    let list = dns::resolve("example.test", None, Some(dns.addr))
        .await
        .unwrap();
    let uris: Vec<&str> = list.servers.iter().map(|s| s.uri.as_str()).collect();
    // NAPTR orders TCP (first record) before UDP; SRV priority within.
    let mut by_priority = list.servers.clone();
    by_priority.sort_by_key(|s| s.priority);
    let ordered: Vec<&str> = by_priority.iter().map(|s| s.uri.as_str()).collect();
    assert_eq!(
        ordered,
        [
            "sip:127.0.0.2:5060;transport=tcp",
            "sip:127.0.0.3:5070;transport=tcp",
            "sip:127.0.0.4:5060;transport=udp"
        ],
        "{uris:?}"
    );
    let udp = dns::resolve("example.test", Some(Transport::Udp), Some(dns.addr))
        .await
        .unwrap();
    assert_eq!(udp.servers.len(), 1);
    let e = dns::resolve("nowhere.test", None, Some(dns.addr))
        .await
        .unwrap_err();
    assert!(matches!(e, DiscoveryError::Dns(_)), "{e}");
}

#[tokio::test]
async fn the_service_lists_health_checked_servers_and_long_polls() {
    init_logging();
    // One address with a SIP responder, one where nothing listens.
    let sip_addr = responder("200 OK\r\n");
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let service = DiscoveryService::start(
        &[
            Listed {
                id: "live".into(),
                uri: format!("sip:{sip_addr}"),
                priority: 10,
            },
            Listed {
                id: "dead".into(),
                uri: format!("sip:{dead}"),
                priority: 20,
            },
        ],
        Duration::from_millis(200),
    )
    .await
    .unwrap();
    let list = service
        .wait_until(Duration::from_secs(5), |l| {
            l.get("live").is_some_and(|s| s.health == Health::Up)
                && l.get("dead").is_some_and(|s| s.health == Health::Down)
        })
        .await
        .unwrap();
    let client = DiscoveryClient::new(&service.url).unwrap();
    // The XML list of the original front end says the same.
    let xml = client.fetch_xml().await.unwrap();
    assert_eq!(xml.servers, client.fetch().await.unwrap().servers);
    let watcher = {
        let client = client.clone();
        let since = list.version;
        tokio::spawn(async move { client.watch(since, Duration::from_secs(20)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let asked = std::time::Instant::now();
    service
        .set_state("live", ServerState::Draining)
        .await
        .unwrap();
    let changed = watcher.await.unwrap().unwrap();
    assert!(asked.elapsed() < Duration::from_secs(1));
    assert_eq!(changed.get("live").unwrap().state, ServerState::Draining);
}

/// A UDP SIP responder on loopback answering every request with
/// `SIP/2.0 {status_and_headers}` (its Via, From, To, Call-ID, CSeq echoed).
fn responder(status_and_headers: &'static str) -> std::net::SocketAddr {
    let sip = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sip.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = sip.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            let echoed: String = text
                .lines()
                .filter(|l| {
                    ["Via:", "From:", "To:", "Call-ID:", "CSeq:"]
                        .iter()
                        .any(|h| l.starts_with(h))
                })
                .map(|l| format!("{l}\r\n"))
                .collect();
            let reply = format!("SIP/2.0 {status_and_headers}{echoed}Content-Length: 0\r\n\r\n");
            let _ = sip.send_to(reply.as_bytes(), from);
        }
    });
    addr
}

/// An HTTP server that answers every request with `body`.
async fn garbage_server(body: &'static str) -> String {
    let addr = free_port().unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf).await;
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(reply.as_bytes()).await;
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn garbage_from_the_service_is_a_clear_error() {
    init_logging();
    for body in [
        "<html>oops</html>",
        "{\"version\": 1, \"servers\": []}",
        "{\"version\": 1, \"servers\": [{\"id\": \"a\", \"uri\": \"mailto:x\", \"priority\": 1, \"weight\": 1, \"state\": \"active\", \"health\": \"up\"}]}",
    ] {
        let client = DiscoveryClient::new(&garbage_server(body).await).unwrap();
        let e = client.fetch().await.unwrap_err();
        assert!(matches!(e, DiscoveryError::Garbage(_)), "{body}: {e}");
    }
}

#[tokio::test]
async fn a_remembered_list_carries_the_phone_past_a_garbage_answer() {
    init_logging();
    let k = Kamailio::start(KamailioConfig::default()).unwrap();
    let service = DiscoveryService::start(
        &[Listed {
            id: "only".into(),
            uri: k.server_uri(Transport::Tcp),
            priority: 10,
        }],
        Duration::from_millis(250),
    )
    .await
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let config = |discovery: String| {
        let mut c = AccountConfig::new("alice", k.domain(), "alice-secret");
        c.discovery = Some(discovery);
        c.state_dir = Some(state.path().to_path_buf());
        c.listen = "127.0.0.1:0".parse().ok();
        c
    };
    let (phone, _events) = registered_as(config(service.url.clone())).await;
    phone.shutdown().await;
    assert!(state.path().join("servers.json").exists());

    // The service now answers garbage: the phone says so and uses what it
    // remembered.
    let garbage = garbage_server("{\"version\": 1, \"servers\": \"none\"}").await;
    let (phone, mut events) = Phone::start(config(garbage)).await.unwrap();
    assert_eq!(phone.server().label, k.server_uri(Transport::Tcp));
    phone.register().unwrap();
    let (_, seen) = wait_for(&mut events, Duration::from_secs(10), |e| {
        matches!(e, Event::Registered { .. })
    })
    .await
    .expect("registered through the remembered list");
    // The warning comes from the service watch, which may report after the
    // registration from the remembered list went through.
    let garbage_said = |e: &Event| matches!(e, Event::Error { message } if message.contains("not a usable server list"));
    if !seen.iter().any(garbage_said) {
        wait_for(&mut events, Duration::from_secs(5), garbage_said)
            .await
            .unwrap_or_else(|seen| panic!("the garbage answer was not reported: {seen:?}"));
    }
    phone.shutdown().await;
}

#[tokio::test]
async fn a_503_with_retry_after_sends_the_phone_to_the_next_server() {
    init_logging();
    let k = Kamailio::start(KamailioConfig::default()).unwrap();
    // The preferred server answers every request 503 Retry-After: 120.
    let busy_addr = responder("503 Service Unavailable\r\nRetry-After: 120\r\n");
    // Both answer OPTIONS (the busy one with 503): both count as up.
    let service = DiscoveryService::start_healthy(&[
        Listed::new("busy", format!("sip:{busy_addr}"), 10),
        Listed::new("kamailio", k.server_uri(Transport::Udp), 20),
    ])
    .await
    .unwrap();
    let mut config = AccountConfig::new("alice", k.domain(), "alice-secret");
    config.discovery = Some(service.url.clone());
    config.listen = "127.0.0.1:0".parse().ok();
    let started = std::time::Instant::now();
    let (phone, mut events) = Phone::start(config).await.unwrap();
    assert_eq!(phone.server().addr, busy_addr);
    phone.register().unwrap();
    let (registered, seen) = wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, Event::Registered { .. })
    })
    .await
    .expect("registered at the next server");
    assert!(
        matches!(&registered, Event::Registered { server, .. } if *server == k.server_uri(Transport::Udp)),
        "{registered:?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::ServerChanged { .. })),
        "{seen:?}"
    );
    // Not after the 120 s the busy server asked for, nor a backoff.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    phone.shutdown().await;
}
