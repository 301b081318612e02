//! A DNS server for the RFC 3263 tests: dnsmasq on a loopback port,
//! serving only the records given (no upstream, no hosts file).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use locus_core::Transport;

use crate::process::{which, Daemon};
use crate::HarnessError;

/// One SRV record's target.
#[derive(Debug, Clone)]
pub struct SrvTarget {
    /// The transport (selects `_sip._udp`, `_sip._tcp`, `_sips._tcp`).
    pub transport: Transport,
    /// The server's address.
    pub addr: SocketAddr,
    /// SRV priority.
    pub priority: u16,
}

/// A running dnsmasq.
#[derive(Debug)]
pub struct DnsServer {
    _daemon: Daemon,
    _dir: tempfile::TempDir,
    /// Where it answers.
    pub addr: SocketAddr,
}

impl DnsServer {
    /// Serves SRV (and the targets' A) records for `domain`, and a NAPTR
    /// per transport pointing at them.
    pub fn start(domain: &str, targets: &[SrvTarget]) -> Result<DnsServer, HarnessError> {
        let binary = which("dnsmasq").ok_or_else(|| {
            HarnessError::NotInstalled("dnsmasq not found; apt-get install dnsmasq-base".into())
        })?;
        let dir = tempfile::Builder::new().prefix("locus-dns-").tempdir()?;
        let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port);
        let mut command = Command::new(binary);
        command.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--log-queries",
            "--log-facility=-",
            "--cache-size=0",
            "--user=root",
        ]);
        command.arg(format!("--port={port}"));
        command.arg(format!(
            "--pid-file={}",
            dir.path().join("dnsmasq.pid").display()
        ));
        let mut naptr_order = 10;
        for (i, t) in targets.iter().enumerate() {
            let host = format!("sip{i}.{domain}");
            let (service, srv) = match t.transport {
                Transport::Udp => ("SIP+D2U", format!("_sip._udp.{domain}")),
                Transport::Tcp => ("SIP+D2T", format!("_sip._tcp.{domain}")),
                Transport::Tls => ("SIPS+D2T", format!("_sips._tcp.{domain}")),
            };
            command.arg(format!("--host-record={host},{}", t.addr.ip()));
            command.arg(format!(
                "--srv-host={srv},{host},{},{},100",
                t.addr.port(),
                t.priority
            ));
            if !targets[..i].iter().any(|o| o.transport == t.transport) {
                command.arg(format!(
                    "--naptr-record={domain},{naptr_order},10,S,{service},,{srv}"
                ));
                naptr_order += 10;
            }
        }
        let daemon = Daemon::spawn(&mut command, &dir.path().join("dnsmasq.log"))?;
        wait_ready(addr)?;
        Ok(DnsServer {
            _daemon: daemon,
            _dir: dir,
            addr,
        })
    }
}

/// Waits until something answers DNS on `addr` (a query for the root).
fn wait_ready(addr: SocketAddr) -> Result<(), HarnessError> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    // ID 1, RD, one question: ". IN NS".
    let query = [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        let _ = sock.send_to(&query, addr);
        if sock.recv_from(&mut buf).is_ok() {
            return Ok(());
        }
    }
    Err(HarnessError::NotInstalled(format!(
        "dnsmasq not answering on {addr}"
    )))
}
