//! Presence through Kamailio's presence server (presence + presence_xml on
//! sqlite): our PUBLISH, with its refreshes and entity tags.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::time::{Duration, Instant};

use locus_core::location::sharing::Sharing;
use locus_core::location::{Location, Timestamp};
use locus_core::Transport;
use locus_tests::phones::{account, init_logging, registered_as};
use locus_tests::{Kamailio, KamailioConfig};

async fn until(limit: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if pred() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn our_presence_and_position_reach_the_presence_server() {
    init_logging();
    let k = Kamailio::start(KamailioConfig {
        presence: true,
        ..KamailioConfig::default()
    })
    .unwrap();
    let (alice, _events) =
        registered_as(account(&k, "alice", "alice-secret", Transport::Tcp)).await;

    // Sharing off: the status, no position.
    alice
        .set_location(Some(
            Location::new(48.2085, 16.3721, 20.0, Some(Timestamp::now())).unwrap(),
        ))
        .unwrap();
    alice.publish_presence(true).unwrap();
    let published = until(Duration::from_secs(5), || {
        k.presentity("alice")
            .is_ok_and(|docs| docs.iter().any(|d| d.contains("<basic>open</basic>")))
    })
    .await;
    assert!(published, "{:?}", k.presentity("alice"));
    assert!(!k
        .presentity("alice")
        .unwrap()
        .iter()
        .any(|d| d.contains("gml:pos")));

    // Sharing on: the new document replaces the old under its entity tag.
    alice
        .set_sharing(Sharing::with(["bob@example.test".to_owned()], None))
        .unwrap();
    alice.publish_presence(false).unwrap();
    let replaced = until(Duration::from_secs(5), || {
        k.presentity("alice").is_ok_and(|docs| {
            docs.len() == 1
                && docs[0].contains("<basic>closed</basic>")
                && docs[0].contains("<gml:pos>48.2085 16.3721</gml:pos>")
        })
    })
    .await;
    assert!(replaced, "{:?}", k.presentity("alice"));

    // Stopping removes it.
    alice.shutdown().await;
    let removed = until(Duration::from_secs(5), || {
        k.presentity("alice").is_ok_and(|docs| docs.is_empty())
    })
    .await;
    assert!(removed, "{:?}", k.presentity("alice"));
}
