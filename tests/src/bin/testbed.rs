//! Starts the test bed's Kamailio and keeps it running until Ctrl-C, for
//! trying Locus by hand against other SIP phones (baresip, linphone).
//! `testbed --md5` challenges with MD5 instead of SHA-256.

use locus_core::Transport;
use locus_tests::{DigestAlgorithm, Kamailio, KamailioConfig};
use nix::sys::signal::{SigSet, Signal};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Older peers (baresip 1.0) only know MD5 digests.
    let algorithm = if std::env::args().any(|a| a == "--md5") {
        DigestAlgorithm::Md5
    } else {
        DigestAlgorithm::Sha256
    };
    let kamailio = Kamailio::start(KamailioConfig {
        algorithm,
        ..KamailioConfig::default()
    })?;
    println!("domain   {}", kamailio.domain());
    for t in [Transport::Udp, Transport::Tcp, Transport::Tls] {
        println!("server   {}", kamailio.server_uri(t));
    }
    println!("accounts alice/alice-secret bob/bob-secret");
    println!("pid      {}", kamailio.pid().unwrap_or_default());
    // Wait for Ctrl-C or a TERM so that dropping `kamailio` stops it.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block()?;
    signals.wait()?;
    Ok(())
}
