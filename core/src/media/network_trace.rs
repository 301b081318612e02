//! Synthetic network traces for the jitter buffer and their replay in
//! virtual time: what the tests assert on and the benchmark prints.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::jitter::{JitterBuffer, Packet, Playout};

/// One packet's arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// When it arrived, from the start of the trace.
    pub at: Duration,
    /// Its sequence number.
    pub seq: u16,
    /// Its RTP timestamp.
    pub timestamp: u32,
}

/// A kind of network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Network {
    /// Constant delay, nothing lost.
    Clean,
    /// Each packet delayed by a random 0..max.
    Jitter {
        /// Largest extra delay.
        max: Duration,
    },
    /// Independent random loss.
    Loss {
        /// Fraction lost.
        rate: f64,
    },
    /// Loss in bursts of `length` packets.
    BurstLoss {
        /// Fraction of packets that start a burst.
        rate: f64,
        /// Packets per burst.
        length: u32,
    },
    /// Jitter with loss.
    JitterLoss {
        /// Largest extra delay.
        max: Duration,
        /// Fraction lost.
        rate: f64,
    },
    /// Some packets swapped with their successor.
    Reorder {
        /// Fraction swapped.
        rate: f64,
    },
    /// Some packets delivered twice.
    Duplicates {
        /// Fraction duplicated.
        rate: f64,
    },
    /// The path stalls for `gap` once, then delivers the backlog at once.
    Spike {
        /// How long the stall lasts.
        gap: Duration,
    },
    /// The sender's clock runs fast or slow by `ppm` parts per million.
    Drift {
        /// Parts per million (negative: slower).
        ppm: f64,
    },
}

/// `frames` packets of 20 ms at `clock_rate` through `network`, with a
/// constant 40 ms one-way delay underneath.
pub fn generate(network: Network, frames: u32, clock_rate: u32, seed: u64) -> Vec<Arrival> {
    let mut rng = StdRng::seed_from_u64(seed);
    let frame = Duration::from_millis(20);
    let base = Duration::from_millis(40);
    let samples = clock_rate / 50;
    let mut out = Vec::with_capacity(frames as usize);
    let mut burst_left = 0u32;
    for i in 0..frames {
        let seq = (i % 65_536) as u16;
        let timestamp = i.wrapping_mul(samples);
        let sent = match network {
            Network::Drift { ppm } => frame.mul_f64(f64::from(i) * (1.0 - ppm / 1e6)),
            _ => frame * i,
        };
        let extra = match network {
            Network::Jitter { max } | Network::JitterLoss { max, .. } => {
                max.mul_f64(rng.random::<f64>())
            }
            Network::Spike { gap } => {
                let stall_start = frame * (frames / 2);
                let t = frame * i;
                if t >= stall_start && t < stall_start + gap {
                    stall_start + gap - t
                } else {
                    Duration::ZERO
                }
            }
            _ => Duration::ZERO,
        };
        let lost = match network {
            Network::Loss { rate } | Network::JitterLoss { rate, .. } => rng.random::<f64>() < rate,
            Network::BurstLoss { rate, length } => {
                if burst_left == 0 && rng.random::<f64>() < rate {
                    burst_left = length;
                }
                let l = burst_left > 0;
                burst_left = burst_left.saturating_sub(1);
                l
            }
            _ => false,
        };
        if lost {
            continue;
        }
        let arrival = Arrival {
            at: sent + base + extra,
            seq,
            timestamp,
        };
        out.push(arrival);
        if let Network::Duplicates { rate } = network {
            if rng.random::<f64>() < rate {
                out.push(Arrival {
                    at: arrival.at + Duration::from_millis(5),
                    ..arrival
                });
            }
        }
    }
    if let Network::Reorder { rate } = network {
        for i in 1..out.len() {
            if rng.random::<f64>() < rate {
                let (a, b) = (out[i - 1].at, out[i].at);
                out[i - 1].at = b + Duration::from_millis(1);
                out[i].at = a;
            }
        }
    }
    out.sort_by_key(|a| a.at);
    out
}

/// What a replay measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    /// Packets sent.
    pub sent: u32,
    /// Mean time a played packet waited in the buffer.
    pub mean_added: Duration,
    /// 95th percentile of that wait.
    pub p95_added: Duration,
    /// Packets that arrived too late to play, as % of sent.
    pub late_pct: f64,
    /// Frames concealed (lost, late or underrun), as % of sent.
    pub concealed_pct: f64,
    /// Losses recovered from FEC, as % of sent.
    pub fec_pct: f64,
    /// Frames dropped to cut delay.
    pub accelerated: u64,
    /// Stream restarts.
    pub resets: u64,
    /// Target delay at the end.
    pub final_target: Duration,
}

/// Replays `arrivals` into a buffer, popping every 20 ms from the first
/// arrival on; packets carry their sequence number as payload so the wait
/// of each played packet can be measured.
pub fn replay(arrivals: &[Arrival], sent: u32, clock_rate: u32) -> Report {
    let frame = Duration::from_millis(20);
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(clock_rate, frame);
    // First arrival of each sequence number (traces here are < 65536 long).
    let mut arrived_at = vec![None; 65_536];
    for a in arrivals.iter().rev() {
        arrived_at[usize::from(a.seq)] = Some(a.at);
    }
    let first = arrivals.first().map_or(Duration::ZERO, |a| a.at);
    let give_up = arrivals.last().map_or(Duration::ZERO, |a| a.at) + Duration::from_secs(5);
    let mut next_arrival = 0;
    let mut waits: Vec<Duration> = Vec::new();
    let mut concealed = 0u32;
    let mut tick = first;
    while (next_arrival < arrivals.len() || jb.buffered() > Duration::ZERO) && tick <= give_up {
        while next_arrival < arrivals.len() && arrivals[next_arrival].at <= tick {
            let a = arrivals[next_arrival];
            let payload = Bytes::copy_from_slice(&a.seq.to_be_bytes());
            jb.push(
                t0 + a.at,
                Packet {
                    seq: a.seq,
                    timestamp: a.timestamp,
                    ssrc: 1,
                    payload,
                },
            );
            next_arrival += 1;
        }
        let mut playout = jb.pop(t0 + tick);
        if matches!(playout, Playout::Excess(_)) {
            // A trace carries no audio: every excess frame counts as quiet.
            jb.dropped_excess();
            playout = jb.pop(t0 + tick);
        }
        match playout {
            Playout::Packet(p) | Playout::Excess(p) => {
                let seq = u16::from_be_bytes([
                    p.first().copied().unwrap_or(0),
                    p.get(1).copied().unwrap_or(0),
                ]);
                if let Some(at) = arrived_at[usize::from(seq)] {
                    waits.push(tick.saturating_sub(at));
                }
            }
            Playout::Fec(_) | Playout::Conceal => concealed += 1,
            Playout::Silence => {}
        }
        // A trace carries no audio: every frame is a pause to realign in.
        tick += frame + jb.realign();
    }
    waits.sort();
    let stats = jb.stats();
    let pct = |n: f64| 100.0 * n / f64::from(sent.max(1));
    let mean = if waits.is_empty() {
        Duration::ZERO
    } else {
        waits.iter().sum::<Duration>() / u32::try_from(waits.len()).unwrap_or(1)
    };
    Report {
        sent,
        mean_added: mean,
        p95_added: waits
            .get(waits.len() * 95 / 100)
            .copied()
            .unwrap_or_default(),
        late_pct: pct(stats.late as f64),
        concealed_pct: pct(f64::from(concealed)),
        fec_pct: pct(stats.fec_recovered as f64),
        accelerated: stats.accelerated,
        resets: stats.resets,
        final_target: jb.target_delay(),
    }
}
