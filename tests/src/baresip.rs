//! baresip as an independent SIP peer: a real baresip (Debian's
//! `baresip-core`) on its own loopback address, registered with the test
//! Kamailio, driven over its `ctrl_tcp` interface (netstring-framed JSON
//! commands and events). It sends a WAV file (`aufile`) and records what it
//! hears (`sndfile`, the decoded stream as `dump-…-dec.wav`).

use std::collections::VecDeque;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use crate::loopback;
use crate::process::{which, Daemon};
use crate::{HarnessError, Kamailio};

const INSTALL_HINT: &str = "install it with: apt-get install baresip-core";

/// The port baresip's control interface listens on, at its own address.
const CTRL_PORT: u16 = 4444;

/// How a baresip account is set up.
#[derive(Debug, Clone)]
pub struct BaresipAccount {
    /// User name (its password is looked up by the caller).
    pub user: String,
    /// Password.
    pub password: String,
    /// 48 kHz mono WAV file it sends in every call; when it ends, baresip
    /// hangs up.
    pub audio_in: PathBuf,
    /// Codecs in baresip's order, e.g. `opus/48000/2` or `PCMU/8000/1`;
    /// empty for its defaults (Opus, PCMU, PCMA).
    pub codecs: Vec<String>,
    /// Whether it answers incoming calls by itself.
    pub auto_answer: bool,
}

/// An event baresip reported.
#[derive(Debug, Clone)]
pub struct BaresipEvent {
    /// Its type, e.g. `CALL_ESTABLISHED`, `CALL_CLOSED`, `CALL_INCOMING`.
    pub kind: String,
    /// The peer's URI, for call events.
    pub peer: Option<String>,
    /// The event's parameter (for `CALL_CLOSED`, the reason).
    pub param: Option<String>,
}

/// One message on the control connection: an event or a command's response.
#[derive(Debug, Deserialize)]
struct CtrlMessage {
    #[serde(default)]
    event: bool,
    #[serde(default)]
    response: bool,
    #[serde(default)]
    ok: bool,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default, rename = "peeruri")]
    peer: Option<String>,
    #[serde(default)]
    param: Option<String>,
}

impl CtrlMessage {
    /// The event it carries, if it is one.
    fn into_event(self) -> Option<BaresipEvent> {
        let kind = self.kind.filter(|_| self.event)?;
        Some(BaresipEvent {
            kind,
            peer: self.peer,
            param: self.param,
        })
    }
}

/// A running baresip.
#[derive(Debug)]
pub struct Baresip {
    daemon: Daemon,
    dir: tempfile::TempDir,
    ctrl: BufReader<TcpStream>,
    events: VecDeque<BaresipEvent>,
    next_token: u32,
    /// The loopback address it uses for SIP and RTP.
    pub ip: IpAddr,
    /// Its SIP port.
    pub port: u16,
}

impl Baresip {
    /// Writes its configuration, starts it, and waits until Kamailio holds
    /// its registration and its control interface answers.
    pub async fn start(k: &Kamailio, account: BaresipAccount) -> Result<Baresip, HarnessError> {
        let binary = which("baresip")
            .ok_or_else(|| HarnessError::NotInstalled(format!("baresip: {INSTALL_HINT}")))?;
        let modules = Path::new("/usr/lib/baresip/modules");
        if !modules.join("aufile.so").exists() {
            return Err(HarnessError::NotInstalled(format!(
                "baresip modules missing in {}; {INSTALL_HINT}",
                modules.display()
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix("locus-baresip-")
            .tempdir()?;
        let (ip, port, _) = loopback::free_sip_address()?;
        fs::create_dir(dir.path().join("recordings"))?;
        fs::write(
            dir.path().join("config"),
            render_config(ip, port, modules, dir.path(), &account),
        )?;
        fs::write(dir.path().join("accounts"), render_account(k, &account))?;
        let mut daemon = Daemon::spawn(
            Command::new(binary).arg("-4").arg("-f").arg(dir.path()),
            &dir.path().join("baresip.log"),
        )?;
        let log = dir.path().join("baresip.log");
        let ctrl = connect(&mut daemon, SocketAddr::new(ip, CTRL_PORT), &log).await?;
        let mut baresip = Baresip {
            daemon,
            dir,
            ctrl: BufReader::new(ctrl),
            events: VecDeque::new(),
            next_token: 0,
            ip,
            port,
        };
        baresip.wait_registered(k, &account.user).await?;
        Ok(baresip)
    }

    async fn wait_registered(&mut self, k: &Kamailio, user: &str) -> Result<(), HarnessError> {
        let marker = format!("@{}:{}", self.ip, self.port);
        for _ in 0..100 {
            if k.contacts(user)?.iter().any(|c| c.contains(&marker)) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(HarnessError::Baresip(format!(
            "{user} did not register within 10 s:\n{}",
            self.log_tail()
        )))
    }

    /// Runs a control command (`dial`, `hangup`, `accept`, `sndcode`, …)
    /// and returns its response text.
    pub async fn command(&mut self, command: &str, params: &str) -> Result<String, HarnessError> {
        self.next_token += 1;
        let token = self.next_token.to_string();
        let body =
            serde_json::json!({ "command": command, "params": params, "token": token }).to_string();
        let frame = format!("{}:{body},", body.len());
        self.ctrl.get_mut().write_all(frame.as_bytes()).await?;
        loop {
            let message = self.read_message(Duration::from_secs(5)).await?;
            if message.response && message.token.as_deref() == Some(token.as_str()) {
                let data = message.data.unwrap_or_default();
                return if message.ok {
                    Ok(data)
                } else {
                    Err(HarnessError::Baresip(format!("{command} {params}: {data}")))
                };
            }
            self.events.extend(message.into_event());
        }
    }

    /// Waits up to `limit` for an event of `kind`; events of other kinds
    /// before it are dropped.
    pub async fn wait_event(
        &mut self,
        kind: &str,
        limit: Duration,
    ) -> Result<BaresipEvent, HarnessError> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            while let Some(event) = self.events.pop_front() {
                if event.kind == kind {
                    return Ok(event);
                }
                seen.push(event.kind);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = self.read_message(left).await.map_err(|e| {
                HarnessError::Baresip(format!("no {kind} event ({e}); saw {seen:?}"))
            })?;
            self.events.extend(message.into_event());
        }
    }

    /// Reads and parses one netstring (`<length>:<json>,`) from the control
    /// connection.
    async fn read_message(&mut self, limit: Duration) -> Result<CtrlMessage, HarnessError> {
        let read = async {
            let mut length = Vec::new();
            self.ctrl.read_until(b':', &mut length).await?;
            let length: usize = std::str::from_utf8(length.strip_suffix(b":").unwrap_or(&[]))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| HarnessError::Baresip("bad netstring length".into()))?;
            if length > 1 << 20 {
                return Err(HarnessError::Baresip(format!(
                    "netstring of {length} bytes"
                )));
            }
            let mut body = vec![0u8; length + 1];
            self.ctrl.read_exact(&mut body).await?;
            body.pop();
            Ok(body)
        };
        let body = tokio::time::timeout(limit, read)
            .await
            .map_err(|_| HarnessError::Baresip(format!("nothing within {limit:?}")))??;
        serde_json::from_slice(&body)
            .map_err(|e| HarnessError::Baresip(format!("unreadable control message: {e}")))
    }

    /// The newest recording of what it heard in a call (16-bit WAV).
    pub fn recording(&self) -> Result<PathBuf, HarnessError> {
        let mut found: Vec<PathBuf> = fs::read_dir(self.dir.path().join("recordings"))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .collect();
        found.sort();
        found
            .pop()
            .ok_or_else(|| HarnessError::Baresip("no recording written".into()))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.daemon.id()
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.path().join("baresip.log")).unwrap_or_default();
        let lines: Vec<_> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Connects to the control port, waiting while baresip starts up.
async fn connect(
    daemon: &mut Daemon,
    addr: SocketAddr,
    log: &Path,
) -> Result<TcpStream, HarnessError> {
    for _ in 0..100 {
        if let Some(status) = daemon.try_wait()? {
            return Err(HarnessError::Baresip(format!(
                "exited with {status} during start:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            )));
        }
        if let Ok(stream) = TcpStream::connect(addr).await {
            return Ok(stream);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(HarnessError::Baresip(format!(
        "control port {addr} not answering:\n{}",
        fs::read_to_string(log).unwrap_or_default()
    )))
}

fn render_config(
    ip: IpAddr,
    port: u16,
    modules: &Path,
    dir: &Path,
    account: &BaresipAccount,
) -> String {
    // No sound card here: the player is ALSA's null device, and the audio
    // that matters is what `sndfile` records from the decoder.
    format!(
        "poll_method epoll\n\
         net_interface {ip}\n\
         sip_listen {ip}:{port}\n\
         audio_source aufile,{input}\n\
         audio_player alsa,null\n\
         audio_alert alsa,null\n\
         ausrc_srate 48000\n\
         auplay_srate 48000\n\
         ausrc_channels 1\n\
         auplay_channels 1\n\
         snd_path {recordings}\n\
         ctrl_tcp_listen {ip}:{CTRL_PORT}\n\
         module_path {modules}\n\
         module ctrl_tcp.so\n\
         module opus.so\n\
         module g711.so\n\
         module aufile.so\n\
         module alsa.so\n\
         module sndfile.so\n\
         module_tmp account.so\n\
         module_app menu.so\n",
        input = account.audio_in.display(),
        recordings = dir.join("recordings").display(),
        modules = modules.display(),
    )
}

fn render_account(k: &Kamailio, account: &BaresipAccount) -> String {
    let mut line = format!(
        "<sip:{user}@{domain};transport=udp>;auth_pass={password};outbound=\"sip:{ip}:{port};transport=udp\";regint=600;answermode={mode}",
        user = account.user,
        domain = k.domain(),
        password = account.password,
        ip = k.ip,
        port = k.port,
        mode = if account.auto_answer { "auto" } else { "manual" },
    );
    if !account.codecs.is_empty() {
        line.push_str(";audio_codecs=");
        line.push_str(&account.codecs.join(","));
    }
    line.push('\n');
    line
}
