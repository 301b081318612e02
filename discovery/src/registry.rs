//! The server list as the service knows it: each configured server with
//! its operator state and its health, under a version that grows with
//! every change. Watchers wait on a `watch` channel for the next version,
//! so hundreds of long-polls cost one wake-up each per change.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::ServerConfig;

pub use locus_core::discovery::{Health, ServerEntry, ServerList, ServerState};

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No server has this id.
    #[error("no server {0:?}")]
    UnknownServer(String),
}

/// The shared, versioned list.
#[derive(Debug)]
pub struct Registry {
    list: Mutex<ServerList>,
    changes: watch::Sender<u64>,
}

impl Registry {
    /// A registry of `servers`, all active and not yet checked.
    pub fn new(servers: &[ServerConfig]) -> Registry {
        let list = ServerList {
            version: 1,
            servers: servers
                .iter()
                .map(|s| ServerEntry {
                    id: s.id.clone(),
                    uri: s.uri.clone(),
                    priority: s.priority,
                    weight: s.weight,
                    region: s.region.clone(),
                    state: ServerState::Active,
                    health: Health::Unknown,
                })
                .collect(),
        };
        let (changes, _) = watch::channel(list.version);
        Registry {
            list: Mutex::new(list),
            changes,
        }
    }

    /// The list now.
    pub fn snapshot(&self) -> ServerList {
        match self.list.lock() {
            Ok(list) => list.clone(),
            // A panic while holding the lock left a consistent list behind
            // (every change is a single assignment).
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The list once its version is past `since`, or as it is after
    /// `wait` (a long-poll).
    pub async fn wait_past(&self, since: u64, wait: Duration) -> ServerList {
        let mut changes = self.changes.subscribe();
        let _ = tokio::time::timeout(wait, changes.wait_for(|v| *v > since)).await;
        self.snapshot()
    }

    /// Sets a server's operator state; returns the new version (unchanged
    /// when the state already was `state`).
    pub fn set_state(&self, id: &str, state: ServerState) -> Result<u64, RegistryError> {
        self.change(id, |s| std::mem::replace(&mut s.state, state) != state)
    }

    /// Records a health verdict; returns the new version.
    pub fn set_health(&self, id: &str, health: Health) -> Result<u64, RegistryError> {
        self.change(id, |s| std::mem::replace(&mut s.health, health) != health)
    }

    fn change(
        &self,
        id: &str,
        apply: impl FnOnce(&mut ServerEntry) -> bool,
    ) -> Result<u64, RegistryError> {
        let mut list = match self.list.lock() {
            Ok(list) => list,
            Err(poisoned) => poisoned.into_inner(),
        };
        let server = list
            .servers
            .iter_mut()
            .find(|s| s.id == id)
            .ok_or_else(|| RegistryError::UnknownServer(id.to_owned()))?;
        if apply(server) {
            list.version += 1;
            self.changes.send_replace(list.version);
        }
        Ok(list.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        let server = |id: &str| ServerConfig {
            id: id.into(),
            uri: format!("sip:{id}.example.test"),
            priority: 10,
            weight: 100,
            region: String::new(),
        };
        Registry::new(&[server("a"), server("b")])
    }

    #[test]
    fn changes_bump_the_version_and_repeats_do_not() {
        let r = registry();
        assert_eq!(r.snapshot().version, 1);
        assert_eq!(r.set_state("a", ServerState::Draining), Ok(2));
        assert_eq!(r.set_state("a", ServerState::Draining), Ok(2));
        assert_eq!(r.set_health("b", Health::Up), Ok(3));
        assert_eq!(
            r.set_state("c", ServerState::Down),
            Err(RegistryError::UnknownServer("c".into()))
        );
        let list = r.snapshot();
        assert_eq!(
            (list.servers[0].state, list.servers[1].health),
            (ServerState::Draining, Health::Up)
        );
    }

    #[tokio::test]
    async fn a_long_poll_answers_at_the_change_or_at_its_limit() {
        let r = std::sync::Arc::new(registry());
        let t0 = tokio::time::Instant::now();
        let same = r.wait_past(1, Duration::from_millis(50)).await;
        assert_eq!(same.version, 1);
        assert!(t0.elapsed() >= Duration::from_millis(50));

        let waiter = {
            let r = std::sync::Arc::clone(&r);
            tokio::spawn(async move { r.wait_past(1, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        r.set_state("b", ServerState::Down).unwrap();
        let changed = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(changed.version, 2);
        // Already past: no wait at all.
        let t1 = tokio::time::Instant::now();
        assert_eq!(r.wait_past(1, Duration::from_secs(10)).await.version, 2);
        assert!(t1.elapsed() < Duration::from_secs(1));
    }
}
