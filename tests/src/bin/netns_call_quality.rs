//! A real call over an impaired network: two Locus phones in two network
//! namespaces made for the run, joined by a user-space "wire" (one TUN
//! device in each namespace, packets carried between them with 40 ms of
//! one-way delay plus jitter and loss), the speech each way scored with
//! PESQ-WB. Everything real: the phones' sockets, timers, jitter buffer,
//! WAV devices paced by the clock and resampling.
//!
//! Run as root: `cargo run --release -p locus-tests --bin netns-call-quality`.
//! The phones call each other directly (each is the other's outbound
//! proxy): the figures are about media, and a registrar adds nothing.

use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use locus_core::{AccountConfig, CallAudio, CallState, Event, Phone};
use locus_tests::quality::pesq_wb;
use locus_tests::voice::Speech;
use nix::sched::{setns, CloneFlags};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type Error = Box<dyn std::error::Error + Send + Sync>;

const ALICE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const BOB: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const ONE_WAY: Duration = Duration::from_millis(40);

/// How the wire treats packets (both directions alike, as netem would).
#[derive(Debug, Clone, Copy)]
struct Impairment {
    loss: f64,
    jitter: Duration,
}

/// Two network namespaces, deleted when dropped.
struct Namespaces {
    names: [String; 2],
}

impl Namespaces {
    fn create() -> Result<Namespaces, Error> {
        let pid = std::process::id();
        let names = [format!("locus-q{pid}-a"), format!("locus-q{pid}-b")];
        for name in &names {
            run(Command::new("ip").args(["netns", "add", name]))?;
            run(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]))?;
        }
        Ok(Namespaces { names })
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn run(command: &mut Command) -> Result<(), Error> {
    let status = command.status()?;
    if !status.success() {
        return Err(format!("{command:?} failed with {status}").into());
    }
    Ok(())
}

/// Creates a TUN device with `ip/24` inside namespace `ns`.
fn tun_in(ns: &str, ip: Ipv4Addr) -> Result<tun::Device, Error> {
    let ns = ns.to_owned();
    std::thread::spawn(move || -> Result<tun::Device, Error> {
        // Only this short-lived thread moves into the namespace; the
        // device stays there when it ends.
        setns(
            File::open(format!("/var/run/netns/{ns}"))?,
            CloneFlags::CLONE_NEWNET,
        )?;
        let mut config = tun::Configuration::default();
        config
            .tun_name("wire0")
            .address(ip)
            .netmask((255, 255, 255, 0))
            .mtu(1400)
            .up();
        Ok(tun::create(&config)?)
    })
    .join()
    .map_err(|_| "TUN thread panicked")?
}

/// A packet waiting for its delivery time.
struct Pending {
    due: Instant,
    order: u64,
    bytes: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    // Earliest first out of the max-heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.order).cmp(&(self.due, self.order))
    }
}

/// The user-space wire: carries every packet from one TUN to the other
/// after the delay, or drops it.
struct Wire {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Wire {
    fn start(ns: &Namespaces, impairment: Impairment, seed: u64) -> Result<Wire, Error> {
        let a = Arc::new(tun_in(&ns.names[0], ALICE)?);
        let b = Arc::new(tun_in(&ns.names[1], BOB)?);
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (i, (from, to)) in [(Arc::clone(&a), Arc::clone(&b)), (b, a)]
            .into_iter()
            .enumerate()
        {
            let queue = Arc::new(Mutex::new(BinaryHeap::<Pending>::new()));
            let (q, s) = (Arc::clone(&queue), Arc::clone(&stop));
            let mut rng = StdRng::seed_from_u64(seed + i as u64);
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 2048];
                let mut order = 0;
                while !s.load(Ordering::Relaxed) {
                    let Ok(n) = from.recv_timeout(&mut buf, Duration::from_millis(50)) else {
                        continue;
                    };
                    if n == 0 || rng.random_bool(impairment.loss) {
                        continue;
                    }
                    let due = Instant::now() + ONE_WAY + impairment.jitter.mul_f64(rng.random());
                    order += 1;
                    if let Ok(mut q) = q.lock() {
                        q.push(Pending {
                            due,
                            order,
                            bytes: buf[..n].to_vec(),
                        });
                    }
                }
            }));
            let s = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    let next = queue.lock().ok().and_then(|mut q| {
                        (q.peek().is_some_and(|p| p.due <= Instant::now()))
                            .then(|| q.pop())
                            .flatten()
                    });
                    match next {
                        Some(p) => {
                            let _ = to.send(&p.bytes);
                        }
                        None => std::thread::sleep(Duration::from_micros(500)),
                    }
                }
            }));
        }
        Ok(Wire { stop, threads })
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// One side of the call, run inside its namespace by the parent: prints
/// `media_start <unix ms>` and the last `stats ...` line on stdout.
async fn phone(role: &str, audio: &Path, seconds: f64) -> Result<(), Error> {
    let (me, peer) = if role == "alice" {
        (ALICE, BOB)
    } else {
        (BOB, ALICE)
    };
    let state = tempfile::tempdir()?;
    let mut account = AccountConfig::new(role, "example.test", "unused");
    account.server = Some(format!("sip:{peer}:5060;transport=udp"));
    account.listen = Some(SocketAddr::from((me, 5060)));
    account.state_dir = Some(state.path().to_owned());
    let (phone, mut events) = Phone::start(account).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(seconds + 20.0);
    let mut last = None;
    if role == "alice" {
        let audio = CallAudio::files(Some(audio.to_owned()), None);
        phone.call("bob", audio)?.id().await?;
    }
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| format!("{role}: the call did not end in time"))?
            .ok_or("events ended")?;
        match event {
            Event::IncomingCall { call: id, .. } => {
                phone.answer(id, CallAudio::files(None, Some(audio.to_owned())))?;
                println!("media_start {}", unix_ms());
            }
            Event::CallState {
                state: CallState::Connected,
                call: id,
                ..
            } if role == "alice" => {
                println!("media_start {}", unix_ms());
                tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
                phone.hangup(id)?;
            }
            Event::CallState {
                state: CallState::Ended,
                ..
            } => break,
            Event::CallStats { stats, .. } => last = Some(stats),
            _ => {}
        }
    }
    // The media's closing statistics follow the end.
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(1), events.recv()).await {
        if let Event::CallStats { stats, .. } = event {
            last = Some(stats);
        }
    }
    if let Some(stats) = last {
        println!(
            "stats lost={} jitter_ms={:.1}",
            stats.packets_lost, stats.jitter_ms
        );
    }
    phone.shutdown().await;
    Ok(())
}

struct Outcome {
    pesq: f64,
    mouth_to_ear_ms: f64,
    stats: String,
}

fn measure(ns: &Namespaces, speech: &Speech, dir: &Path) -> Result<Outcome, Error> {
    let me = std::env::current_exe()?;
    let heard = dir.join("bob-heard.wav");
    let seconds = speech.duration.as_secs_f64() + 1.0;
    let spawn = |ns: &str, role: &str, audio: &Path| {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(&me)
            .args(["--phone", role])
            .arg(audio)
            .arg(seconds.to_string())
            .stdout(Stdio::piped())
            .spawn()
    };
    let bob = spawn(&ns.names[1], "bob", &heard)?;
    // Bob's phone is listening before Alice calls.
    std::thread::sleep(Duration::from_millis(300));
    let alice = spawn(&ns.names[0], "alice", &speech.send)?;
    let lines = |child: std::process::Child| -> Result<Vec<String>, Error> {
        let out = child.wait_with_output()?;
        Ok(BufReader::new(&out.stdout[..])
            .lines()
            .map_while(Result::ok)
            .collect())
    };
    let (alice, bob) = (lines(alice)?, lines(bob)?);
    let start = |lines: &[String]| -> Result<f64, Error> {
        lines
            .iter()
            .find_map(|l| l.strip_prefix("media_start ")?.parse().ok())
            .ok_or_else(|| format!("no media start in {lines:?}").into())
    };
    let quality = pesq_wb(&speech.reference, &heard)?;
    // Bob records from his media start; Alice's file starts at hers.
    let offset = start(&alice)? - start(&bob)?;
    Ok(Outcome {
        pesq: quality.mos_lqo,
        mouth_to_ear_ms: quality.lag_ms - Speech::LEAD.as_secs_f64() * 1000.0 - offset,
        stats: bob
            .iter()
            .find(|l| l.starts_with("stats "))
            .cloned()
            .unwrap_or_default(),
    })
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--phone") {
        let (role, audio, seconds) = match &args[2..] {
            [role, audio, seconds] => (role.as_str(), PathBuf::from(audio), seconds.parse()?),
            _ => return Err("usage: --phone ROLE WAV SECONDS".into()),
        };
        // The media's closing figures (jitter buffer included) on stderr.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("locus_core::phone::call_media=info")
            .with_writer(std::io::stderr)
            .try_init();
        let result = tokio::runtime::Runtime::new()?.block_on(phone(role, &audio, seconds));
        if let Err(e) = &result {
            eprintln!("{role}: {e}");
        }
        return result;
    }
    let dir = tempfile::tempdir()?;
    let speech = Speech::generate(dir.path())?;
    let paths = [
        (
            "clean",
            Impairment {
                loss: 0.0,
                jitter: Duration::ZERO,
            },
        ),
        (
            "3% loss",
            Impairment {
                loss: 0.03,
                jitter: Duration::ZERO,
            },
        ),
        (
            "10% loss",
            Impairment {
                loss: 0.10,
                jitter: Duration::ZERO,
            },
        ),
        (
            "60 ms jitter",
            Impairment {
                loss: 0.0,
                jitter: Duration::from_millis(60),
            },
        ),
        (
            "10% loss + 60 ms jitter",
            Impairment {
                loss: 0.10,
                jitter: Duration::from_millis(60),
            },
        ),
    ];
    println!("Opus, two namespaces, 40 ms one way each direction; Bob's recording of Alice");
    println!(
        "{:<26} {:>8} {:>16}   bob's last RTCP view",
        "path", "PESQ-WB", "mouth-to-ear ms"
    );
    // An argument picks the paths whose names contain it.
    let only = args.get(1).cloned().unwrap_or_default();
    for (i, (name, impairment)) in paths.into_iter().enumerate() {
        if !name.contains(&only) {
            continue;
        }
        let ns = Namespaces::create()?;
        let _wire = Wire::start(&ns, impairment, i as u64)?;
        let outcome = measure(&ns, &speech, dir.path())?;
        println!(
            "{name:<26} {:>8.2} {:>16.0}   {}",
            outcome.pesq, outcome.mouth_to_ear_ms, outcome.stats
        );
    }
    Ok(())
}
