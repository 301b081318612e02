//! CPU and memory of the two `locus` processes during a file-audio call
//! through a local Kamailio: bob answers and records, alice sends speech
//! for SECONDS (default 30). Reads /proc for each process.
//!
//! Run: `cargo build --release -p locus-cli && cargo run --release -p locus-tests --bin call-cost [SECONDS]`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use locus_core::Transport;
use locus_tests::voice::write_voice_wav;
use locus_tests::{Kamailio, KamailioConfig};
use nix::unistd::{sysconf, SysconfVar};

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// A field of /proc/PID/status in kB (VmRSS, VmHWM).
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(field)?
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .ok()
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u32 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(30);
    let locus: PathBuf = std::env::current_exe()?.with_file_name("locus");
    if !locus.exists() {
        return Err(format!(
            "{} not found: run `cargo build --release -p locus-cli` first",
            locus.display()
        )
        .into());
    }
    let ticks_per_second = sysconf(SysconfVar::CLK_TCK)?.ok_or("no CLK_TCK")? as f64;
    let k = Kamailio::start(KamailioConfig::default())?;
    let dir = tempfile::tempdir()?;
    let said = dir.path().join("said.wav");
    write_voice_wav(&said, seconds + 2)?;
    let server = k.server_uri(Transport::Udp);
    let account = |user: &str| {
        let password = format!("{user}-secret");
        [
            "--user",
            user,
            "--domain",
            k.domain(),
            "--password",
            &password,
            "--server",
            &server,
            "--listen",
            "127.0.0.1:0",
        ]
        .map(str::to_owned)
    };
    let state = dir.path().to_string_lossy().into_owned();
    let heard = dir.path().join("heard.wav");
    let mut bob = Command::new(&locus)
        .args([
            "answer",
            "--auto",
            "--for",
            &(seconds + 15).to_string(),
            "--audio-out",
        ])
        .arg(&heard)
        .args(["--state-dir", &state])
        .args(account("bob"))
        .stdout(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while k.contacts("bob")?.is_empty() {
        if Instant::now() > deadline {
            return Err("bob did not register".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut alice = Command::new(&locus)
        .args(["call", "bob", "--for", &seconds.to_string(), "--audio-in"])
        .arg(&said)
        .args(["--state-dir", &state])
        .args(account("alice"))
        .stdout(Stdio::null())
        .spawn()?;
    // Measure over the middle of the call, away from set-up and tear-down.
    std::thread::sleep(Duration::from_secs(2));
    let pids = [("caller (alice)", alice.id()), ("callee (bob)", bob.id())];
    let start: Vec<Option<u64>> = pids.iter().map(|(_, p)| cpu_ticks(*p)).collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(
        u64::from(seconds.saturating_sub(4)).max(1),
    ));
    let elapsed = started.elapsed().as_secs_f64();
    println!("{seconds} s Opus call with WAV audio through Kamailio on loopback, measured over {elapsed:.1} s");
    println!(
        "{:<16} {:>8} {:>12} {:>12}",
        "process", "CPU %", "RSS MiB", "peak MiB"
    );
    for ((name, pid), before) in pids.iter().zip(start) {
        let cpu = match (before, cpu_ticks(*pid)) {
            (Some(a), Some(b)) => 100.0 * (b - a) as f64 / ticks_per_second / elapsed,
            _ => f64::NAN,
        };
        let rss = status_kb(*pid, "VmRSS:").map_or(f64::NAN, |kb| kb as f64 / 1024.0);
        let peak = status_kb(*pid, "VmHWM:").map_or(f64::NAN, |kb| kb as f64 / 1024.0);
        println!("{name:<16} {cpu:>8.2} {rss:>12.1} {peak:>12.1}");
    }
    let call_ok = alice.wait()?.success();
    let _ = bob.kill();
    let _ = bob.wait();
    println!("call answered and completed: {call_ok}");
    Ok(())
}
