//! Runs the migration scenarios S1–S4 over UDP and TCP several times and
//! prints the unreachable windows (median, min–max), failed probes and
//! dropped calls; then the load run at 20 and 40 calls/s through a
//! Kamailio paused for 3 s.
//!
//! Run: `cargo run --release -p locus-tests --bin migration-report [RUNS]`
//! (RUNS defaults to 5; `--load-only` / `--scenarios-only` pick a part).

use std::time::Duration;

use locus_core::Transport;
use locus_tests::migration::{self, Scenario};
use locus_tests::{load, HarnessError};

#[tokio::main]
async fn main() -> Result<(), HarnessError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(5).max(1);
    let load_only = args.iter().any(|a| a == "--load-only");
    let scenarios_only = args.iter().any(|a| a == "--scenarios-only");
    if !load_only {
        scenarios(runs).await?;
    }
    if !scenarios_only {
        load_runs().await?;
    }
    Ok(())
}

async fn scenarios(runs: usize) -> Result<(), HarnessError> {
    println!(
        "Unreachable window: from the first failed probe (alice calls bob every {} ms, \
         {} s to connect) to the first that connects; {runs} runs each.\n",
        migration::PROBE_EVERY.as_millis(),
        migration::PROBE_TIMEOUT.as_secs()
    );
    println!(
        "| scenario | transport | server down | window median | window min–max | failed probes (median) | calls dropped |"
    );
    println!("|---|---|---|---|---|---|---|");
    for scenario in Scenario::ALL {
        for transport in [Transport::Udp, Transport::Tcp] {
            let mut outcomes = Vec::new();
            for _ in 0..runs {
                match migration::run(scenario, transport).await {
                    Ok(o) => outcomes.push(o),
                    Err(e) => eprintln!("{} over {transport}: {e}", scenario.label()),
                }
            }
            if outcomes.is_empty() {
                println!("| {} | {transport} | — | failed | | | |", scenario.label());
                continue;
            }
            let mut windows: Vec<Duration> = outcomes.iter().map(|o| o.window).collect();
            windows.sort();
            let mut failed: Vec<usize> = outcomes.iter().map(|o| o.failed_probes).collect();
            failed.sort_unstable();
            let mut down: Vec<Duration> = outcomes.iter().map(|o| o.downtime).collect();
            down.sort();
            let dropped: usize = outcomes.iter().map(|o| o.calls_dropped).sum();
            let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
            let down_text = match scenario {
                Scenario::FailoverDiscovery | Scenario::FailoverDns => "for good".into(),
                Scenario::Drain => "3 s, after the drain".into(),
                _ => secs(down[down.len() / 2]),
            };
            println!(
                "| {} | {transport} | {down_text} | {} | {}–{} | {} | {dropped}{} |",
                scenario.label(),
                secs(windows[windows.len() / 2]),
                secs(windows[0]),
                secs(windows[windows.len() - 1]),
                failed[failed.len() / 2],
                if scenario == Scenario::PauseDuringCall {
                    format!(" of {}", outcomes.len())
                } else {
                    String::new()
                },
            );
        }
    }
    println!();
    Ok(())
}

async fn load_runs() -> Result<(), HarnessError> {
    println!(
        "Load: 10 callers and 10 callees in this process, calls of 0.5 s for 15 s; \
         Kamailio paused for 3 s at 5 s.\n"
    );
    println!("| calls/s | transport | placed | completed | incomplete | slowest setup |");
    println!("|---|---|---|---|---|---|");
    for rate in [20, 40] {
        for transport in [Transport::Udp, Transport::Tcp] {
            let o = load::run(rate, transport).await?;
            let incomplete: usize = o.incomplete.values().sum();
            let detail = if o.incomplete.is_empty() {
                String::new()
            } else {
                format!(" ({:?})", o.incomplete)
            };
            println!(
                "| {rate} | {transport} | {} | {} | {incomplete}{detail} | {:.2} s |",
                o.placed,
                o.completed,
                o.slowest_setup.as_secs_f64()
            );
        }
    }
    Ok(())
}
