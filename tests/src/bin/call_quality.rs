//! Speech quality and delay of the media path over impaired networks:
//! espeak-ng speech goes through a sending and a receiving `MediaStream`
//! (Opus with FEC, RTP, the adaptive jitter buffer, concealment) over a
//! simulated path in virtual time — 40 ms one way, plus jitter and loss —
//! and what comes out is scored with PESQ-WB. RTCP's loss feedback to the
//! encoder is modelled every 5 s, as the phone does it.
//!
//! Run: `cargo run --release -p locus-tests --bin call-quality [-- SEEDS]`.
//! Mouth-to-ear here is codec + network + jitter buffer; sound-card
//! buffers come on top on a real device.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use locus_core::media::sdp::{Codec, Direction, Negotiated};
use locus_core::media::stream::MediaStream;
use locus_tests::quality::pesq_wb;
use locus_tests::voice::{read_wav_at, write_wav, Speech};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ONE_WAY: Duration = Duration::from_millis(40);
const FRAME: Duration = Duration::from_millis(20);
const RTCP_EVERY: u32 = 250;

struct Path {
    name: &'static str,
    loss: f64,
    jitter: Duration,
}

struct Outcome {
    pesq: f64,
    mouth_to_ear_ms: f64,
    late_pct: f64,
    lost_pct: f64,
}

fn negotiated(remote: SocketAddr) -> Negotiated {
    Negotiated {
        remote_rtp: remote,
        codec: Codec::Opus,
        payload_type: 111,
        telephone_event: None,
        direction: Direction::SendRecv,
        remote_ptime: Some(20),
    }
}

fn run(
    path: &Path,
    speech: &Speech,
    said: &[i16],
    seed: u64,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let alice_addr: SocketAddr = ([127, 0, 0, 1], 40_000).into();
    let bob_addr: SocketAddr = ([127, 0, 0, 1], 50_000).into();
    let t0 = Instant::now();
    let mut alice = MediaStream::new(t0, &negotiated(bob_addr), 1, 100, 1000)?;
    let mut bob = MediaStream::new(t0, &negotiated(alice_addr), 2, 200, 2000)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let n = alice.frame_samples();
    // Packets in flight, by arrival time (ns from t0) then send order.
    let mut in_flight: BTreeMap<(u128, usize), Vec<u8>> = BTreeMap::new();
    let mut heard = Vec::with_capacity(said.len());
    let frames = said.len() / n + 20;
    let mut last_report = (0u64, 0u64);
    for f in 0..frames {
        let now = t0 + FRAME * u32::try_from(f)?;
        let pcm: Vec<i16> = said
            .get(f * n..(f + 1) * n)
            .map_or_else(|| vec![0; n], <[i16]>::to_vec);
        let packet = alice.send_frame(&pcm)?;
        if !rng.random_bool(path.loss) {
            let extra = path.jitter.mul_f64(rng.random::<f64>());
            let arrival = (now + ONE_WAY + extra).duration_since(t0).as_nanos();
            in_flight.insert((arrival, f), packet.to_vec());
        }
        let due = now.duration_since(t0).as_nanos();
        while let Some(entry) = in_flight.first_entry() {
            if entry.key().0 > due {
                break;
            }
            let ((at, _), bytes) = entry.remove_entry();
            let at = t0 + Duration::from_nanos(u64::try_from(at)?);
            bob.handle_datagram(at, alice_addr, &bytes);
        }
        heard.extend(bob.play_frame(now));
        if f > 0 && f % RTCP_EVERY as usize == 0 {
            // The receiver report's fraction lost, fed to the encoder.
            let s = bob.stats().jitter;
            let (lost, got) = (s.lost - last_report.0, s.received - last_report.1);
            last_report = (s.lost, s.received);
            let pct = 100 * lost / (lost + got).max(1);
            alice.set_expected_loss(u8::try_from(pct.min(100))?)?;
        }
    }
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("heard.wav");
    write_wav(&out, 48_000, &heard)?;
    let q = pesq_wb(&speech.reference, &out)?;
    let s = bob.stats().jitter;
    let sent = frames as f64;
    Ok(Outcome {
        pesq: q.mos_lqo,
        mouth_to_ear_ms: q.lag_ms - Speech::LEAD.as_secs_f64() * 1000.0,
        late_pct: 100.0 * s.late as f64 / sent,
        lost_pct: 100.0 * s.lost as f64 / sent,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seeds: u64 = std::env::args().nth(1).map_or(Ok(3), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let speech = Speech::generate(dir.path())?;
    let said = read_wav_at(&speech.send, 48_000)?;
    let paths = [
        Path {
            name: "clean",
            loss: 0.0,
            jitter: Duration::ZERO,
        },
        Path {
            name: "3% loss",
            loss: 0.03,
            jitter: Duration::ZERO,
        },
        Path {
            name: "10% loss",
            loss: 0.10,
            jitter: Duration::ZERO,
        },
        Path {
            name: "60 ms jitter",
            loss: 0.0,
            jitter: Duration::from_millis(60),
        },
        Path {
            name: "10% loss + 60 ms jitter",
            loss: 0.10,
            jitter: Duration::from_millis(60),
        },
    ];
    println!("Opus 48 kbit/s + FEC, 40 ms one way, {seeds} seeds each; mean (worst)");
    println!(
        "{:<26} {:>14} {:>18} {:>10} {:>10}",
        "path", "PESQ-WB", "mouth-to-ear ms", "late %", "lost %"
    );
    for path in &paths {
        let outcomes = (0..seeds)
            .map(|seed| run(path, &speech, &said, seed))
            .collect::<Result<Vec<_>, _>>()?;
        let mean =
            |f: fn(&Outcome) -> f64| outcomes.iter().map(f).sum::<f64>() / outcomes.len() as f64;
        let worst_pesq = outcomes.iter().map(|o| o.pesq).fold(f64::MAX, f64::min);
        let worst_delay = outcomes
            .iter()
            .map(|o| o.mouth_to_ear_ms)
            .fold(f64::MIN, f64::max);
        println!(
            "{:<26} {:>6.2} ({:>4.2}) {:>9.0} ({:>4.0}) {:>10.2} {:>10.2}",
            path.name,
            mean(|o| o.pesq),
            worst_pesq,
            mean(|o| o.mouth_to_ear_ms),
            worst_delay,
            mean(|o| o.late_pct),
            mean(|o| o.lost_pct),
        );
    }
    Ok(())
}
