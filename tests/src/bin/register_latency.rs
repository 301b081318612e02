//! Time from `Phone::register()` to the `registered` event against a local
//! Kamailio (digest challenge included: two round trips, plus the TCP
//! connect and TLS handshake on those transports).
//!
//! Run: `cargo run --release -p locus-tests --bin register-latency [RUNS]`.

use std::time::{Duration, Instant};

use locus_core::{Event, Phone, Transport};
use locus_tests::phones::{account, wait_for};
use locus_tests::{Kamailio, KamailioConfig};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20);
    let kamailio = Kamailio::start(KamailioConfig::default())?;
    println!(
        "register() -> registered, {runs} runs each, Kamailio {} on loopback",
        kamailio.ip
    );
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>10}",
        "transport", "median ms", "p90 ms", "min ms", "max ms"
    );
    for transport in [Transport::Udp, Transport::Tcp, Transport::Tls] {
        let mut samples = Vec::with_capacity(runs);
        for _ in 0..runs {
            let (phone, mut events) =
                Phone::start(account(&kamailio, "alice", "alice-secret", transport)).await?;
            let started = Instant::now();
            phone.register()?;
            wait_for(&mut events, Duration::from_secs(10), |e| {
                matches!(e, Event::Registered { .. })
            })
            .await
            .map_err(|seen| format!("not registered over {transport}: {seen:?}"))?;
            samples.push(started.elapsed());
            phone.shutdown().await;
        }
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{:<10} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
            transport.param(),
            ms(samples[samples.len() / 2]),
            ms(samples[samples.len() * 9 / 10]),
            ms(samples[0]),
            ms(samples[samples.len() - 1])
        );
    }
    Ok(())
}
