//! S1–S4: bob stays reachable while his server pauses, restarts, dies or
//! is migrated, over UDP and TCP (see `locus_tests::migration`). Bounds are
//! generous; `cargo run --release -p locus-tests --bin migration-report`
//! measures the windows properly.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::time::Duration;

use locus_core::Transport;
use locus_tests::migration::{run, Outcome, Scenario, PAUSE};
use locus_tests::phones::init_logging;

async fn both(scenario: Scenario) -> Vec<(Transport, Outcome)> {
    init_logging();
    let mut outcomes = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        let outcome = run(scenario, transport)
            .await
            .unwrap_or_else(|e| panic!("{} over {transport}: {e}", scenario.label()));
        eprintln!("{} over {transport}: {outcome:?}", scenario.label());
        outcomes.push((transport, outcome));
    }
    outcomes
}

fn within(outcomes: &[(Transport, Outcome)], bound: impl Fn(Transport, &Outcome) -> Duration) {
    for (transport, o) in outcomes {
        let limit = bound(*transport, o);
        assert!(
            o.window <= limit,
            "over {transport}: unreachable {:?}, bound {limit:?}: {o:?}",
            o.window
        );
        assert_eq!(o.calls_dropped, 0, "over {transport}: {o:?}");
    }
}

#[tokio::test]
async fn s1_pause_while_idle() {
    let outcomes = both(Scenario::PauseIdle).await;
    within(&outcomes, |_, o| o.downtime + Duration::from_secs(3));
}

#[tokio::test]
async fn s1_pause_during_a_refresh() {
    let outcomes = both(Scenario::PauseDuringRefresh).await;
    within(&outcomes, |_, o| o.downtime + Duration::from_secs(3));
}

#[tokio::test]
async fn s1_pause_during_a_call_keeps_the_call() {
    let outcomes = both(Scenario::PauseDuringCall).await;
    within(&outcomes, |_, _| PAUSE + Duration::from_secs(3));
}

#[tokio::test]
async fn s2_restart_with_lost_state() {
    let outcomes = both(Scenario::Restart).await;
    within(&outcomes, |_, o| o.downtime + Duration::from_secs(3));
}

#[tokio::test]
async fn s2_restart_without_discovery() {
    let outcomes = both(Scenario::RestartFixedServer).await;
    // Over UDP the next keepalive (25 s by default, an OPTIONS to our own
    // address) hears the 404 of the binding lost; over TCP the closing
    // connection says so at once.
    within(&outcomes, |t, o| match t {
        Transport::Udp => o.downtime + Duration::from_secs(30),
        _ => o.downtime + Duration::from_secs(3),
    });
}

#[tokio::test]
async fn s3_failover_driven_by_discovery() {
    let outcomes = both(Scenario::FailoverDiscovery).await;
    within(&outcomes, |_, _| Duration::from_secs(5));
    for (_, o) in &outcomes {
        assert_eq!(o.moves.len(), 1, "{o:?}");
    }
}

#[tokio::test]
async fn s3_failover_by_dns_srv_with_discovery_down() {
    let outcomes = both(Scenario::FailoverDns).await;
    // Over UDP only the next keepalive (25 s by default) finds the dead
    // server; over TCP the closing connection says so at once.
    within(&outcomes, |t, _| match t {
        Transport::Udp => Duration::from_secs(32),
        _ => Duration::from_secs(5),
    });
}

#[tokio::test]
async fn s4_planned_migration_loses_no_call() {
    let outcomes = both(Scenario::Drain).await;
    for (transport, o) in &outcomes {
        assert_eq!(o.failed_probes, 0, "over {transport}: {o:?}");
        assert_eq!(o.moves.len(), 1, "{o:?}");
    }
}
