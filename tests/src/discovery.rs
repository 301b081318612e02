//! The project's own discovery service, run as a process for tests: a
//! configuration written into a temporary directory, a loopback port, and
//! the admin calls a migration hook makes.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use locus_core::discovery::{DiscoveryClient, Health, ServerList, ServerState};

use crate::process::Daemon;
use crate::HarnessError;

/// How often [`DiscoveryService::start_healthy`]'s service checks servers.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);

/// The admin token the test service accepts.
pub const TOKEN: &str = "test-migration-hook";

/// One server for the service's list.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its id.
    pub id: String,
    /// Its SIP URI.
    pub uri: String,
    /// Lower is preferred.
    pub priority: u16,
}

impl Listed {
    /// Server `id` at `uri` with `priority`.
    pub fn new(id: &str, uri: String, priority: u16) -> Listed {
        Listed {
            id: id.to_owned(),
            uri,
            priority,
        }
    }
}

/// A running discovery service.
#[derive(Debug)]
pub struct DiscoveryService {
    daemon: Option<Daemon>,
    dir: tempfile::TempDir,
    /// Its base URL.
    pub url: String,
}

impl DiscoveryService {
    /// Starts the service for `servers`, health-checking every
    /// `check_every` (a check waits as long for its answer).
    pub async fn start(servers: &[Listed], check_every: Duration) -> Result<Self, HarnessError> {
        let binary = binary()?;
        let dir = tempfile::Builder::new()
            .prefix("locus-discovery-")
            .tempdir()?;
        let addr = free_port()?;
        let ms = check_every.as_millis();
        let mut toml = format!(
            "listen = \"{addr}\"\nadmin_token = \"{TOKEN}\"\n\n[health]\ninterval_ms = {ms}\ntimeout_ms = {ms}\nfall = 2\nrise = 1\n"
        );
        for s in servers {
            let _ = write!(
                toml,
                "\n[[server]]\nid = \"{}\"\nuri = \"{}\"\npriority = {}\n",
                s.id, s.uri, s.priority
            );
        }
        let config = dir.path().join("servers.toml");
        std::fs::write(&config, toml)?;
        let daemon = Daemon::spawn(
            Command::new(binary)
                .arg("--config")
                .arg(&config)
                .env("RUST_LOG", "info"),
            &dir.path().join("discovery.log"),
        )?;
        let service = DiscoveryService {
            daemon: Some(daemon),
            dir,
            url: format!("http://{addr}"),
        };
        service.wait_ready().await?;
        Ok(service)
    }

    /// Starts the service (checks every 250 ms) and waits until every
    /// server has passed a health check, so phones choose as in production.
    pub async fn start_healthy(servers: &[Listed]) -> Result<Self, HarnessError> {
        let service = DiscoveryService::start(servers, CHECK_EVERY).await?;
        service
            .wait_until(Duration::from_secs(5), |l| {
                l.servers.iter().all(|s| s.health == Health::Up)
            })
            .await?;
        Ok(service)
    }

    async fn wait_ready(&self) -> Result<(), HarnessError> {
        let client = self.client()?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match client.fetch().await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(HarnessError::Discovery(format!(
                        "not answering: {e}\n{}",
                        self.log()
                    )))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn client(&self) -> Result<DiscoveryClient, HarnessError> {
        DiscoveryClient::new(&self.url).map_err(|e| HarnessError::Discovery(e.to_string()))
    }

    /// The list now.
    pub async fn list(&self) -> Result<ServerList, HarnessError> {
        self.client()?
            .fetch()
            .await
            .map_err(|e| HarnessError::Discovery(e.to_string()))
    }

    /// Waits until `pred` holds for the list (e.g. health checks saw a
    /// server come up).
    pub async fn wait_until(
        &self,
        limit: Duration,
        pred: impl Fn(&ServerList) -> bool,
    ) -> Result<ServerList, HarnessError> {
        let deadline = Instant::now() + limit;
        loop {
            let list = self.list().await?;
            if pred(&list) {
                return Ok(list);
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Discovery(format!(
                    "list never as expected: {list:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What a cloud manager's migration hook does: sets a server's state.
    pub async fn set_state(&self, id: &str, state: ServerState) -> Result<(), HarnessError> {
        let response = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| HarnessError::Discovery(e.to_string()))?
            .put(format!("{}/v1/admin/servers/{id}/state", self.url))
            .bearer_auth(TOKEN)
            .header("Content-Type", "application/json")
            .body(format!("{{\"state\": \"{}\"}}", state.as_str()))
            .send()
            .await
            .map_err(|e| HarnessError::Discovery(e.to_string()))?;
        if !response.status().is_success() {
            return Err(HarnessError::Discovery(format!(
                "set_state {id}: {}",
                response.status()
            )));
        }
        Ok(())
    }

    /// Stops the service.
    pub fn stop(&mut self) {
        self.daemon = None;
    }

    /// The service's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("discovery.log")).unwrap_or_default()
    }
}

/// A loopback address with a free TCP port. The port is released before
/// the service binds it; nothing else on this machine races for it.
pub fn free_port() -> Result<SocketAddr, HarnessError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The `locus-discovery` binary of this build profile, built (or brought
/// up to date) once per process.
fn binary() -> Result<PathBuf, HarnessError> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build().map_err(|e| e.to_string()))
        .clone()
        .map_err(HarnessError::Discovery)
}

fn build() -> Result<PathBuf, HarnessError> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    let mut dir = exe
        .parent()
        .ok_or_else(|| HarnessError::Discovery("no target directory".into()))?
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let release = dir.ends_with("release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args([
        "build",
        "--quiet",
        "-p",
        "locus-discovery",
        "--bin",
        "locus-discovery",
    ]);
    if release {
        command.arg("--release");
    }
    let status = command.status()?;
    if !status.success() {
        return Err(HarnessError::Discovery(format!(
            "cargo build -p locus-discovery failed: {status}"
        )));
    }
    Ok(dir.join("locus-discovery"))
}
