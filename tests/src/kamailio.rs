//! A real Kamailio registrar on a loopback address, configured from a file
//! written into a temporary directory, with digest auth against a sqlite
//! subscriber table. Stopped by process group when dropped, also when a test
//! panics.

use std::fs;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use locus_core::Transport;
use nix::sys::signal::Signal;

use crate::certs::TestPki;
use crate::loopback;
use crate::process::{which, Daemon};
use crate::HarnessError;

/// The digest algorithm Kamailio challenges with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    /// MD5.
    Md5,
    /// SHA-256 (RFC 8760).
    Sha256,
}

/// How to set up a Kamailio instance.
#[derive(Debug, Clone)]
pub struct KamailioConfig {
    /// The SIP domain (also the realm).
    pub domain: String,
    /// Accounts as (user, password).
    pub users: Vec<(String, String)>,
    /// Challenge algorithm.
    pub algorithm: DigestAlgorithm,
    /// Shortest registration Kamailio accepts (423 below it).
    pub min_expires: u32,
    /// Longest registration Kamailio grants.
    pub max_expires: u32,
    /// Whether to listen on TLS as well.
    pub tls: bool,
    /// Whether to run the presence server (presence + presence_xml on
    /// sqlite): PUBLISH and SUBSCRIBE for `Event: presence`.
    pub presence: bool,
}

impl Default for KamailioConfig {
    fn default() -> Self {
        KamailioConfig {
            domain: "example.test".into(),
            users: vec![
                ("alice".into(), "alice-secret".into()),
                ("bob".into(), "bob-secret".into()),
            ],
            algorithm: DigestAlgorithm::Sha256,
            min_expires: 1,
            max_expires: 3600,
            tls: true,
            presence: false,
        }
    }
}

/// A running Kamailio.
#[derive(Debug)]
pub struct Kamailio {
    daemon: Option<Daemon>,
    dir: tempfile::TempDir,
    config: KamailioConfig,
    /// The loopback address it listens on.
    pub ip: IpAddr,
    /// UDP and TCP port.
    pub port: u16,
    /// TLS port.
    pub tls_port: u16,
    pki: Option<TestPki>,
    /// The sibling server calls are handed to (re-applied after restarts).
    sibling: Option<String>,
}

const INSTALL_HINT: &str = "install it with: apt-get install kamailio kamailio-sqlite-modules \
     kamailio-tls-modules kamailio-presence-modules";

/// Kamailio's own sqlite schema for the presence tables.
const PRESENCE_SCHEMA: &str = "/usr/share/kamailio/db_sqlite/presence-create.sql";

impl Kamailio {
    /// Writes the configuration and starts Kamailio, waiting until it answers.
    pub fn start(config: KamailioConfig) -> Result<Kamailio, HarnessError> {
        let binary = which("kamailio").ok_or_else(|| {
            HarnessError::NotInstalled(format!("kamailio not found; {INSTALL_HINT}"))
        })?;
        let modules = module_dir().ok_or_else(|| {
            HarnessError::NotInstalled(format!("kamailio modules not found; {INSTALL_HINT}"))
        })?;
        let mut needed = vec!["db_sqlite.so", "tls.so"];
        if config.presence {
            needed.extend(["presence.so", "presence_xml.so"]);
        }
        for needed in needed {
            if !modules.join(needed).exists() {
                return Err(HarnessError::NotInstalled(format!(
                    "kamailio module {needed} missing; {INSTALL_HINT}"
                )));
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("locus-kamailio-")
            .tempdir()?;
        let (ip, port, tls_port) = loopback::free_sip_address()?;
        let pki = if config.tls {
            Some(TestPki::create(dir.path(), &config.domain, ip)?)
        } else {
            None
        };
        create_database(&dir.path().join("kamailio.db"), &config)?;
        if config.presence {
            create_presence_database(&dir.path().join("presence.db"))?;
        }
        fs::write(
            dir.path().join("kamailio.cfg"),
            render_config(&config, dir.path(), &modules, ip, port, tls_port),
        )?;
        if let Some(pki) = &pki {
            fs::write(dir.path().join("tls.cfg"), render_tls(pki))?;
        }
        let mut k = Kamailio {
            daemon: None,
            dir,
            config,
            ip,
            port,
            tls_port,
            pki,
            sibling: None,
        };
        k.spawn(&binary)?;
        Ok(k)
    }

    fn spawn(&mut self, binary: &Path) -> Result<(), HarnessError> {
        let dir = self.dir.path();
        self.daemon = Some(Daemon::spawn(
            Command::new(binary)
                .arg("-f")
                .arg(dir.join("kamailio.cfg"))
                .args(["-DD", "-E", "-m", "32", "-M", "8"])
                .arg("-Y")
                .arg(dir)
                .arg("-w")
                .arg(dir),
            &dir.join("kamailio.log"),
        )?);
        self.wait_ready(Duration::from_secs(15))?;
        if let Some(uri) = self.sibling.clone() {
            self.kamcmd(&["pv.shvSet", "sibling", "str", &uri])?;
        }
        Ok(())
    }

    /// Hands calls for users not registered here to `other` (see the
    /// configuration's request route).
    pub fn set_sibling(&mut self, other: &Kamailio) -> Result<(), HarnessError> {
        let uri = format!("sip:{}:{}", other.ip, other.port);
        self.kamcmd(&["pv.shvSet", "sibling", "str", &uri])?;
        self.sibling = Some(uri);
        Ok(())
    }

    /// Kills every Kamailio process at once (SIGKILL), as a crashed host
    /// would: no goodbyes on its connections beyond the kernel's.
    pub fn kill(&mut self) {
        if let Some(daemon) = &self.daemon {
            let _ = daemon.signal(Signal::SIGKILL);
        }
        self.daemon = None;
    }

    /// Starts again at the same address after [`Kamailio::kill`] or
    /// [`Kamailio::stop`], with an empty location table.
    pub fn start_again(&mut self) -> Result<(), HarnessError> {
        let binary =
            which("kamailio").ok_or_else(|| HarnessError::NotInstalled(INSTALL_HINT.into()))?;
        self.spawn(&binary)
    }

    /// Waits until Kamailio answers an OPTIONS over UDP.
    fn wait_ready(&mut self, limit: Duration) -> Result<(), HarnessError> {
        let deadline = Instant::now() + limit;
        let sock = UdpSocket::bind((self.ip, 0))?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let target = SocketAddr::new(self.ip, self.port);
        let local = sock.local_addr()?;
        let probe = format!(
            "OPTIONS sip:{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKready\r\nFrom: <sip:probe@{ip}>;tag=1\r\n\
             To: <sip:{target}>\r\nCall-ID: ready\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            ip = self.ip
        );
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            if let Some(daemon) = &mut self.daemon {
                if let Some(status) = daemon.try_wait()? {
                    return Err(HarnessError::Kamailio(format!(
                        "exited with {status} during start:\n{}",
                        self.log_tail()
                    )));
                }
            }
            let _ = sock.send_to(probe.as_bytes(), target);
            if matches!(sock.recv_from(&mut buf), Ok((n, _)) if buf[..n].starts_with(b"SIP/2.0 ")) {
                return Ok(());
            }
        }
        Err(HarnessError::Kamailio(format!(
            "not answering after {limit:?}:\n{}",
            self.log_tail()
        )))
    }

    /// The server URI to give a phone for `transport`.
    pub fn server_uri(&self, transport: Transport) -> String {
        match transport {
            Transport::Tls => format!("sip:{}:{};transport=tls", self.ip, self.tls_port),
            t => format!("sip:{}:{};transport={}", self.ip, self.port, t.param()),
        }
    }

    /// The SIP domain.
    pub fn domain(&self) -> &str {
        &self.config.domain
    }

    /// The test CA certificate, for a phone's `ca_file`.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.pki.as_ref().map(|p| p.ca_cert.clone())
    }

    /// The main process id.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Daemon::id)
    }

    /// Runs `kamcmd` against this instance's control socket.
    pub fn kamcmd(&self, args: &[&str]) -> Result<String, HarnessError> {
        let out = Command::new("kamcmd")
            .arg("-s")
            .arg(format!(
                "unix:{}",
                self.dir.path().join("kamailio_ctl").display()
            ))
            .args(args)
            .output()?;
        if !out.status.success() {
            return Err(HarnessError::Kamailio(format!(
                "kamcmd {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The contacts Kamailio's location table holds for `user`, read with
    /// `kamcmd ul.dump`.
    pub fn contacts(&self, user: &str) -> Result<Vec<String>, HarnessError> {
        let dump = self.kamcmd(&["ul.dump"])?;
        let aor = format!("{user}@{}", self.config.domain);
        let mut in_aor = false;
        let mut contacts = Vec::new();
        for line in dump.lines() {
            let line = line.trim();
            if let Some(v) = line.strip_prefix("AoR:") {
                in_aor = v.trim() == aor || v.trim() == user;
            } else if let Some(v) = line.strip_prefix("Address:") {
                if in_aor {
                    contacts.push(v.trim().to_owned());
                }
            }
        }
        Ok(contacts)
    }

    /// The presence documents Kamailio's presence server holds for `user`
    /// (its presentity table).
    pub fn presentity(&self, user: &str) -> Result<Vec<String>, HarnessError> {
        let db = rusqlite::Connection::open(self.dir.path().join("presence.db"))?;
        let mut query =
            db.prepare("SELECT body FROM presentity WHERE username = ?1 AND event = 'presence'")?;
        let rows = query.query_map([user], |row| row.get::<_, Vec<u8>>(0))?;
        rows.map(|r| Ok(String::from_utf8_lossy(&r?).into_owned()))
            .collect()
    }

    /// Stops Kamailio (SIGTERM to its process group, SIGKILL after 3 s).
    pub fn stop(&mut self) {
        self.daemon = None;
    }

    /// Stops and starts again at the same address with an empty location
    /// table (usrloc keeps it in memory only).
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop();
        self.start_again()
    }

    /// Pauses every Kamailio process (as a live migration does).
    pub fn pause(&self) -> Result<(), HarnessError> {
        self.signal(Signal::SIGSTOP)
    }

    /// Resumes after [`Kamailio::pause`].
    pub fn resume(&self) -> Result<(), HarnessError> {
        self.signal(Signal::SIGCONT)
    }

    fn signal(&self, signal: Signal) -> Result<(), HarnessError> {
        self.daemon
            .as_ref()
            .ok_or_else(|| HarnessError::Kamailio("not running".into()))?
            .signal(signal)
            .map_err(|e| HarnessError::Kamailio(format!("{signal}: {e}")))
    }

    /// Kamailio's errors and last log lines, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default();
        // Its TLS module logs a burst of harmless double-free notices on exit.
        let lines: Vec<_> = text.lines().filter(|l| !l.contains("qm_free")).collect();
        let errors = lines
            .iter()
            .filter(|l| l.contains("ERROR"))
            .take(20)
            .copied();
        let tail = lines[lines.len().saturating_sub(20)..].iter().copied();
        errors
            .chain(std::iter::once("..."))
            .chain(tail)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn module_dir() -> Option<PathBuf> {
    let mut candidates = vec![
        PathBuf::from("/usr/lib/kamailio/modules"),
        PathBuf::from("/usr/local/lib64/kamailio/modules"),
    ];
    if let Ok(entries) = fs::read_dir("/usr/lib") {
        candidates.extend(entries.flatten().map(|e| e.path().join("kamailio/modules")));
    }
    candidates.into_iter().find(|d| d.join("tm.so").exists())
}

fn create_database(path: &Path, config: &KamailioConfig) -> Result<(), HarnessError> {
    let db = rusqlite::Connection::open(path)?;
    db.execute_batch(
        "CREATE TABLE version (id INTEGER PRIMARY KEY NOT NULL, table_name VARCHAR(32) NOT NULL,
             table_version INTEGER DEFAULT 0 NOT NULL, CONSTRAINT version_table_name_idx UNIQUE (table_name));
         INSERT INTO version (table_name, table_version) VALUES ('version', 1);
         CREATE TABLE subscriber (id INTEGER PRIMARY KEY NOT NULL, username VARCHAR(64) DEFAULT '' NOT NULL,
             domain VARCHAR(64) DEFAULT '' NOT NULL, password VARCHAR(64) DEFAULT '' NOT NULL,
             ha1 VARCHAR(128) DEFAULT '' NOT NULL, ha1b VARCHAR(128) DEFAULT '' NOT NULL,
             CONSTRAINT subscriber_account_idx UNIQUE (username, domain));
         INSERT INTO version (table_name, table_version) VALUES ('subscriber', 7);",
    )?;
    for (user, password) in &config.users {
        db.execute(
            "INSERT INTO subscriber (username, domain, password) VALUES (?1, ?2, ?3)",
            (user, &config.domain, password),
        )?;
    }
    Ok(())
}

/// The presence server's own database, apart from the subscribers: sqlite
/// locks a whole file while one worker writes, and digest checks reading
/// the subscriber table then fail with "database is locked". WAL (kept in
/// the file) lets readers through a writer.
fn create_presence_database(path: &Path) -> Result<(), HarnessError> {
    let schema = fs::read_to_string(PRESENCE_SCHEMA).map_err(|e| {
        HarnessError::NotInstalled(format!("{PRESENCE_SCHEMA}: {e}; {INSTALL_HINT}"))
    })?;
    let db = rusqlite::Connection::open(path)?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.execute_batch(
        "CREATE TABLE version (id INTEGER PRIMARY KEY NOT NULL, table_name VARCHAR(32) NOT NULL,
             table_version INTEGER DEFAULT 0 NOT NULL, CONSTRAINT version_table_name_idx UNIQUE (table_name));
         INSERT INTO version (table_name, table_version) VALUES ('version', 1);",
    )?;
    db.execute_batch(&schema)?;
    Ok(())
}

fn render_config(
    config: &KamailioConfig,
    dir: &Path,
    modules: &Path,
    ip: IpAddr,
    port: u16,
    tls_port: u16,
) -> String {
    let algorithm = match config.algorithm {
        DigestAlgorithm::Md5 => "MD5",
        DigestAlgorithm::Sha256 => "SHA-256",
    };
    let mut cfg = String::new();
    let _ = write!(
        cfg,
        r#"#!KAMAILIO
debug=2
log_stderror=yes
children=2
tcp_children=2
auto_aliases=no
alias="{domain}"
listen=udp:{ip}:{port}
listen=tcp:{ip}:{port}
"#,
        domain = config.domain
    );
    if config.tls {
        let _ = writeln!(cfg, "listen=tls:{ip}:{tls_port}\nenable_tls=yes");
    }
    let _ = write!(
        cfg,
        r#"tcp_connection_lifetime=3605
# Phones behind NAT or on TCP/TLS put ;alias in their Via (RFC 5923): the
# connection they opened then carries requests to their Contact.
tcp_accept_aliases=yes
mpath="{modules}"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "ctl.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "db_sqlite.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
loadmodule "nathelper.so"
"#,
        modules = modules.display()
    );
    if config.tls {
        let _ = writeln!(
            cfg,
            "loadmodule \"tls.so\"\nmodparam(\"tls\", \"config\", \"{}\")",
            dir.join("tls.cfg").display()
        );
    }
    if config.presence {
        let _ = write!(
            cfg,
            r#"loadmodule "presence.so"
loadmodule "presence_xml.so"
modparam("presence", "db_url", "sqlite:///{db}")
modparam("presence", "server_address", "sip:{ip}:{port}")
# Watchers in memory: only PUBLISH writes to the database.
modparam("presence", "subs_db_mode", 0)
modparam("presence_xml", "db_url", "sqlite:///{db}")
# No XCAP server: every watcher is allowed (the phones decide what to share).
modparam("presence_xml", "force_active", 1)
"#,
            db = dir.join("presence.db").display(),
        );
    }
    let _ = write!(
        cfg,
        r#"modparam("ctl", "binrpc", "unix:{ctl}")
# The sibling server (set at run time with `pv.shvSet sibling`): a call for
# someone not registered here is tried there, as a cluster whose servers
# share no location table routes between them.
modparam("pv", "shvset", "sibling=s:")
modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", {min})
modparam("registrar", "max_expires", {max})
modparam("registrar", "default_expires", {max})
modparam("auth_db", "db_url", "sqlite:///{db}")
modparam("auth_db", "calculate_ha1", yes)
modparam("auth_db", "password_column", "password")
modparam("auth_db", "load_credentials", "")
modparam("auth", "algorithm", "{algorithm}")
modparam("auth", "nonce_count", 1)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (!sanity_check("17895", "7")) {{
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (has_totag()) {{
        # In-dialog: follow the Route we record-routed.
        if (loose_route()) {{
            t_relay();
            exit;
        }}
        if (is_method("ACK")) {{
            if (t_check_trans()) {{
                t_relay();
            }}
            exit;
        }}
        sl_send_reply("404", "Not Here");
        exit;
    }}
    t_check_trans();
    if (is_method("REGISTER")) {{
        if (!auth_check("$fd", "subscriber", "1")) {{
            auth_challenge("$fd", "1");
            exit;
        }}
        consume_credentials();
        if (!save("location")) {{
            sl_reply_error();
        }}
        exit;
    }}
    if (is_method("OPTIONS") && $rU == $null) {{
        sl_send_reply("200", "Alive");
        exit;
    }}
    if (is_method("PUBLISH|SUBSCRIBE")) {{
        route(PRESENCE);
        exit;
    }}
    if (is_method("INVITE") && !is_present_hf("X-Locus-Sibling")) {{
        # Only our subscribers place calls (407 Proxy-Authenticate); the
        # sibling has checked the calls it hands over.
        if (!auth_check("$fd", "subscriber", "1")) {{
            auth_challenge("$fd", "1");
            exit;
        }}
        consume_credentials();
    }}
    if (is_method("INVITE")) {{
        record_route();
    }}
    if (!lookup("location")) {{
        if ($shv(sibling) != "" && !is_present_hf("X-Locus-Sibling")) {{
            append_hf("X-Locus-Sibling: 1\r\n");
            $du = $shv(sibling);
            t_set_fr(1500, 1500);
            t_relay();
            exit;
        }}
        sl_send_reply("404", "Not Found");
        exit;
    }}
    t_relay();
}}

route[PRESENCE] {{
    if (!auth_check("$fd", "subscriber", "1")) {{
        auth_challenge("$fd", "1");
        exit;
    }}
    consume_credentials();
{presence}
}}
"#,
        presence = if config.presence {
            "    if (!t_newtran()) {\n        sl_reply_error();\n        exit;\n    }\n    \
             if (is_method(\"PUBLISH\")) {\n        handle_publish();\n    } else {\n        \
             handle_subscribe();\n    }\n    t_release();"
        } else {
            "    sl_send_reply(\"501\", \"Not Implemented\");"
        },
        ctl = dir.join("kamailio_ctl").display(),
        min = config.min_expires,
        max = config.max_expires,
        db = dir.join("kamailio.db").display(),
    );
    cfg
}

fn render_tls(pki: &TestPki) -> String {
    format!(
        "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\nprivate_key = {}\ncertificate = {}\n\n\
         [client:default]\nverify_certificate = no\nrequire_certificate = no\n",
        pki.server_key.display(),
        pki.server_cert.display()
    )
}

use std::fmt::Write as _;

/// Writes `text` to a file in one go (used for generated keys and certs).
pub(crate) fn write_file(path: &Path, text: &str) -> Result<(), HarnessError> {
    let mut f = fs::File::create(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}
