//! Load run of the discovery service on loopback: many phones watching the
//! list with long-polls while an operator flips a server between active
//! and draining, plus plain list fetches from many clients at once.
//!
//! Run: `cargo run --release -p locus-discovery --bin discovery-load [-- WATCHERS]`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use locus_discovery::api::{router, AppState};
use locus_discovery::config::Config;
use locus_discovery::registry::{Registry, ServerList, ServerState};

type Error = Box<dyn std::error::Error + Send + Sync>;

const CONFIG: &str = "[[server]]\nid = \"a\"\nuri = \"sip:127.0.0.2\"\n[[server]]\nid = \"b\"\nuri = \"sip:127.0.0.3\"\n";
const CHANGES: u32 = 50;
const CHANGE_EVERY: Duration = Duration::from_millis(100);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let watchers: usize = std::env::args().nth(1).map_or(Ok(500), |s| s.parse())?;
    let config = Config::parse(CONFIG)?;
    let app = Arc::new(AppState {
        registry: std::sync::Arc::new(Registry::new(&config.servers)),
        admin_token: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let served = Arc::clone(&app);
    tokio::spawn(async move { axum::serve(listener, router(served)).await });
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(watchers)
        .build()?;

    // Each change's time, by version, so watchers can time their news.
    let changed_at: Arc<std::sync::Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let delays: Arc<std::sync::Mutex<Vec<Duration>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let (client, base) = (client.clone(), base.clone());
        let (changed_at, delays) = (Arc::clone(&changed_at), Arc::clone(&delays));
        tasks.push(tokio::spawn(async move {
            let mut since = 1;
            while since < 1 + u64::from(CHANGES) {
                let url = format!("{base}/v1/servers?since={since}&wait=30");
                let Ok(response) = client.get(url).send().await else {
                    continue;
                };
                let Ok(list) = response.json::<ServerList>().await else {
                    continue;
                };
                let now = Instant::now();
                if list.version > since {
                    if let (Ok(at), Ok(mut d)) = (changed_at.lock(), delays.lock()) {
                        if let Some((_, t)) = at.iter().find(|(v, _)| *v == list.version) {
                            d.push(now.saturating_duration_since(*t));
                        }
                    }
                    since = list.version;
                }
            }
        }));
    }
    // Let every watcher park its long-poll, then change the list.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..CHANGES {
        let state = if i % 2 == 0 {
            ServerState::Draining
        } else {
            ServerState::Active
        };
        let t = Instant::now();
        let version = app.registry.set_state("a", state)?;
        if let Ok(mut at) = changed_at.lock() {
            at.push((version, t));
        }
        tokio::time::sleep(CHANGE_EVERY).await;
    }
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let mut d = delays.lock().map(|d| d.clone()).unwrap_or_default();
    d.sort();
    println!(
        "{watchers} watchers, {CHANGES} changes {} ms apart: {} notifications; change -> watcher p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        CHANGE_EVERY.as_millis(),
        d.len(),
        percentile(&d, 0.5).as_secs_f64() * 1000.0,
        percentile(&d, 0.99).as_secs_f64() * 1000.0,
        d.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
    );

    // Plain fetches: 64 clients for 5 s.
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(5);
    let mut fetchers = Vec::new();
    for _ in 0..64 {
        let (client, base, done) = (client.clone(), base.clone(), Arc::clone(&done));
        fetchers.push(tokio::spawn(async move {
            while Instant::now() < until {
                if let Ok(r) = client.get(format!("{base}/v1/servers")).send().await {
                    if r.bytes().await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for f in fetchers {
        let _ = f.await;
    }
    println!(
        "GET /v1/servers, 64 concurrent clients: {:.0} requests/s",
        done.load(Ordering::Relaxed) as f64 / 5.0
    );
    Ok(())
}
