//! Where server lists come from, as I/O: the discovery service (fetched
//! at start, then watched by long-poll), the list remembered on disk, and
//! DNS (RFC 3263). Lists reach the driver resolved to addresses; what to do
//! with them is [`super::migration`]'s business.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::discovery::{dns, remembered, DiscoveryClient, DiscoveryError, ServerList};

use super::migration::Known;
use super::server::resolve_uri;

/// How long a long-poll waits for a change before asking again.
const WATCH_WAIT: Duration = Duration::from_secs(30);

/// What the sources tell the driver.
#[derive(Debug)]
pub(crate) enum SourceUpdate {
    /// A list, with its servers' addresses.
    List(ServerList, Vec<Known>),
    /// The discovery service stopped answering (said once per outage).
    Unavailable(String),
}

/// Where to look for servers.
#[derive(Debug, Clone)]
pub(crate) struct Sources {
    pub client: Option<DiscoveryClient>,
    pub remembered: Option<PathBuf>,
    pub domain: String,
    pub nameserver: Option<SocketAddr>,
}

impl Sources {
    /// The first list: the service's; else the remembered one; else DNS.
    pub async fn first(&self) -> Result<(ServerList, Vec<Known>), DiscoveryError> {
        if let Some(client) = &self.client {
            match client.fetch().await {
                Ok(list) => {
                    self.remember(&list);
                    return Ok(self.resolved(list).await);
                }
                Err(e) => tracing::warn!(error = %e, "discovery service: using the fallbacks"),
            }
        }
        if let Some(list) = self.remembered() {
            return Ok(self.resolved(list).await);
        }
        self.dns().await
    }

    /// The list DNS gives for the domain.
    pub async fn dns(&self) -> Result<(ServerList, Vec<Known>), DiscoveryError> {
        let list = dns::resolve(&self.domain, None, self.nameserver).await?;
        Ok(self.resolved(list).await)
    }

    fn remembered(&self) -> Option<ServerList> {
        let path = self.remembered.as_ref()?;
        match remembered::load(path) {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the remembered server list");
                None
            }
        }
    }

    fn remember(&self, list: &ServerList) {
        if let Some(path) = &self.remembered {
            if let Err(e) = remembered::save(path, list) {
                tracing::warn!(error = %e, "cannot remember the server list");
            }
        }
    }

    /// Resolves each server's URI; entries that do not resolve are left
    /// out (and logged).
    async fn resolved(&self, list: ServerList) -> (ServerList, Vec<Known>) {
        let mut known = Vec::new();
        for entry in &list.servers {
            match resolve_uri(&entry.uri, &self.domain).await {
                Ok(target) => known.push(Known {
                    entry: entry.clone(),
                    target,
                }),
                Err(e) => tracing::warn!(id = %entry.id, error = %e, "unusable server entry"),
            }
        }
        (list, known)
    }

    /// Watches the service from `since` until the task is aborted; a
    /// `restart` notification cuts a long-poll short (the network changed
    /// and its connection may be dead).
    pub fn watch(
        self,
        since: u64,
        updates: mpsc::UnboundedSender<SourceUpdate>,
        restart: Arc<Notify>,
    ) -> Option<JoinHandle<()>> {
        let client = self.client.clone()?;
        Some(tokio::spawn(async move {
            let mut version = since;
            let mut down = false;
            loop {
                let answer = tokio::select! {
                    a = client.watch(version, WATCH_WAIT) => a,
                    () = restart.notified() => continue,
                };
                match answer {
                    Ok(list) => {
                        down = false;
                        if list.version != version {
                            version = list.version;
                            self.remember(&list);
                            let (list, known) = self.resolved(list).await;
                            if updates.send(SourceUpdate::List(list, known)).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        if !down {
                            down = true;
                            tracing::warn!(error = %e, "discovery service unavailable");
                            if updates
                                .send(SourceUpdate::Unavailable(e.to_string()))
                                .is_err()
                            {
                                return;
                            }
                        }
                        // Its version may restart from 1 when it comes back.
                        version = 0;
                        let pause = Duration::from_millis(rand::rng().random_range(250..=1000));
                        tokio::select! {
                            () = tokio::time::sleep(pause) => {}
                            () = restart.notified() => {}
                        }
                    }
                }
            }
        }))
    }
}
