//! The HTTP API on a real socket on loopback, through a real HTTP client.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::sync::Arc;
use std::time::{Duration, Instant};

use locus_discovery::api::{router, AppState};
use locus_discovery::config::Config;
use locus_discovery::registry::{Registry, ServerList, ServerState};
use reqwest::StatusCode;

const CONFIG: &str = r#"
[[server]]
id = "sip-a"
uri = "sip:127.0.0.2:5060;transport=udp"
priority = 10
region = "eu-west"

[[server]]
id = "sip-b"
uri = "sip:127.0.0.3:5060;transport=tcp"
priority = 20
"#;

/// A client that never goes through a proxy from the environment: every
/// request here is for loopback.
fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The JSON list at `url`.
async fn fetch_list(url: &str) -> ServerList {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Serves the API on 127.0.0.1 and returns its base URL.
async fn serve(token: Option<&str>) -> String {
    let config = Config::parse(CONFIG).unwrap();
    let state = Arc::new(AppState {
        registry: std::sync::Arc::new(Registry::new(&config.servers)),
        admin_token: token.map(str::to_owned),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    base
}

async fn set_state(base: &str, id: &str, body: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = client()
        .put(format!("{base}/v1/admin/servers/{id}/state"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn lists_servers_as_json_and_xml() {
    let base = serve(None).await;
    let list = fetch_list(&format!("{base}/v1/servers")).await;
    assert_eq!(list.version, 1);
    assert_eq!(list.servers.len(), 2);
    assert_eq!(list.servers[0].uri, "sip:127.0.0.2:5060;transport=udp");
    assert_eq!(list.servers[1].state, ServerState::Active);

    let xml = client()
        .get(format!("{base}/v1/servers.xml"))
        .send()
        .await
        .unwrap();
    assert_eq!(xml.headers()["content-type"], "application/xml");
    let text = xml.text().await.unwrap();
    assert!(text.contains(r#"<servers version="1">"#), "{text}");
    assert!(
        text.contains(r#"<server id="sip-a" uri="sip:127.0.0.2:5060;transport=udp" priority="10" weight="100" region="eu-west" state="active" health="unknown"/>"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_watcher_hears_of_a_drain_at_once() {
    let base = serve(Some("secret")).await;
    let watch = {
        let base = base.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            let list = fetch_list(&format!("{base}/v1/servers?since=1&wait=30")).await;
            (list, t0.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let set = set_state(&base, "sip-a", r#"{"state": "draining"}"#, Some("secret")).await;
    assert_eq!(set.status(), StatusCode::OK);
    let (list, waited) = watch.await.unwrap();
    assert_eq!(list.version, 2);
    assert_eq!(list.servers[0].state, ServerState::Draining);
    assert!(
        waited < Duration::from_secs(5),
        "answered at the change: {waited:?}"
    );

    // Nothing new: the long-poll ends at its limit with the same version.
    let t0 = Instant::now();
    let same = fetch_list(&format!("{base}/v1/servers?since=2&wait=1")).await;
    assert_eq!(same.version, 2);
    assert!(t0.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn bad_requests_get_clear_4xx_answers() {
    let base = serve(Some("secret")).await;
    let status = |r: reqwest::Response| r.status();
    assert_eq!(
        status(set_state(&base, "sip-a", r#"{"state":"down"}"#, None).await),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(set_state(&base, "sip-a", r#"{"state":"down"}"#, Some("wrong")).await),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(set_state(&base, "nope", r#"{"state":"down"}"#, Some("secret")).await),
        StatusCode::NOT_FOUND
    );
    let bad = set_state(&base, "sip-a", r#"{"state":"asleep"}"#, Some("secret")).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("draining"),
        "{body}"
    );
    assert_eq!(
        status(set_state(&base, "sip-a", "not json", Some("secret")).await),
        StatusCode::BAD_REQUEST
    );
    for query in ["since=abc", "wait=5", "since=1&colour=red"] {
        let r = client()
            .get(format!("{base}/v1/servers?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
    }
    let closed = serve(None).await;
    assert_eq!(
        status(set_state(&closed, "sip-a", r#"{"state":"down"}"#, Some("x")).await),
        StatusCode::FORBIDDEN
    );
}
