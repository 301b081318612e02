//! The adaptive jitter buffer, sans-IO: packets go in with their arrival
//! time, and the playout clock takes one frame out every frame period.
//!
//! Algorithm (after WebRTC NetEq's delay manager):
//!
//! - Every packet's *relative delay* is its arrival time minus the arrival
//!   time its RTP timestamp predicts from the fastest packet seen recently:
//!   `(arrival − first_arrival) − (ts − first_ts) / rate − baseline`. The
//!   baseline is the minimum relative delay, allowed to creep upwards slowly
//!   so that a sender clock running slower than ours (drift) does not read
//!   as ever-growing jitter.
//! - Relative delays go into a histogram of 10 ms buckets that forgets
//!   (each packet scales the old mass by 0.9993, about a 30 s memory at
//!   50 packets/s). The target buffer level is the upper edge of the 97th
//!   percentile bucket (newer NetEq's quantile), at least one frame (the
//!   one about to play): on a clean path a packet plays as it arrives.
//!   Past 1 % recent loss the target holds one frame more, so that a lost
//!   frame's FEC (in the next packet) is there when its turn comes.
//! - Playout takes the next sequence number. Missing while later packets are
//!   present, it is lost: concealed with Opus FEC from the next packet when
//!   that packet is here, else with codec PLC. Missing with nothing later
//!   buffered, it is an underrun: a concealment frame is played *without*
//!   consuming the sequence number (NetEq's "expand"), for at most the
//!   target's worth of frames, after which the packet counts as lost. Delay
//!   grows only as much as the network needs, never by a reset.
//! - The buffer level, smoothed over about 32 frames, is steered to the
//!   target: half a frame under, a concealment frame is played without
//!   consuming a packet (NetEq's "preemptive expand"); a frame over, one
//!   frame is dropped (NetEq's "accelerate"); at most one step every four
//!   frames. Both work on whole frames. Dropping speech is audible and
//!   dropping a pause is not, so the frame to drop is offered to the
//!   decoding stage ([`Playout::Excess`]), which drops it only inside a
//!   pause, then frame after frame while the pause and the excess last;
//!   after [`EXCESS_OFFERS`] kept offers in a row one goes anyway.
//! - Whole frames are too coarse for the last few milliseconds: on a clean
//!   path, where the target is one frame, a packet whose arrival falls just
//!   before its turn misses it whenever either end's scheduling wobbles,
//!   and each miss stretches the audio by a frame. So the buffer keeps the
//!   smallest recent time between a packet's arrival and its turn, and, on
//!   a path clean enough for a one-frame target, asks
//!   ([`JitterBuffer::realign`]) for a few milliseconds of silence inside a
//!   pause when that falls under [`PLAYOUT_MARGIN_MS`], which moves every
//!   later turn that much after the arrivals.
//! - A packet arriving after its turn is late: dropped and counted. A
//!   duplicate is dropped. A new SSRC, or a sequence or timestamp jump far
//!   beyond any jitter, starts the stream afresh.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// One RTP packet's payload and ordering fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Encoded audio.
    pub payload: Bytes,
}

/// What to play for one frame period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Decode this packet.
    Packet(Bytes),
    /// The packet is lost; decode the in-band FEC of this next packet.
    Fec(Bytes),
    /// Nothing to decode: run the codec's concealment.
    Conceal,
    /// Before the stream starts: play silence.
    Silence,
    /// A packet the buffer holds too much of. Decode it (the decoder's
    /// state must follow the stream); if it is quiet, call
    /// [`JitterBuffer::dropped_excess`] and pop again, else play it.
    Excess(Bytes),
}

/// Running figures of the buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets that arrived.
    pub received: u64,
    /// Packets played from the buffer.
    pub played: u64,
    /// Packets that arrived after their turn.
    pub late: u64,
    /// Packets that never arrived (concealed).
    pub lost: u64,
    /// Losses recovered from the next packet's FEC.
    pub fec_recovered: u64,
    /// Duplicate packets dropped.
    pub duplicates: u64,
    /// Frames played during underruns (delay growth).
    pub expanded: u64,
    /// Frames dropped to bring delay down.
    pub accelerated: u64,
    /// Times the stream started afresh.
    pub resets: u64,
}

const BUCKET_MS: u32 = 10;
const BUCKETS: usize = 100;
const FORGET: f64 = 0.9993;
const QUANTILE: f64 = 0.97;
/// Baseline creep: 1 ms of drift allowance per second of packets.
const BASELINE_CREEP_MS_PER_PACKET: f64 = 0.02;
/// A timestamp this far from where arrival times put it is a new clock.
const TIMESTAMP_JUMP_MS: f64 = 10_000.0;
/// Fewest frames between two level adjustments (accelerate or expand).
const ADJUST_EVERY: u32 = 4;
/// Recent loss rate above which one more frame is buffered for FEC.
const LOSSY: f64 = 0.01;
/// Weight of each played or lost frame in the recent loss rate (a memory
/// of about 200 frames, 4 s).
const LOSS_SMOOTHING: f64 = 1.0 / 200.0;
/// Frames in a row the decoding stage may keep before one is dropped
/// regardless (a second: speech pauses more often than that).
pub const EXCESS_OFFERS: u32 = 50;
/// A sequence or timestamp jump beyond this many frames restarts the stream.
const RESET_FRAMES: i64 = 500;
/// Time a packet should be here before its turn: room for the wobble of
/// both ends' 5 ms media polls, which the 10 ms histogram buckets miss.
pub const PLAYOUT_MARGIN_MS: f64 = 4.0;
/// The smallest recent arrival-to-turn time forgets at 1 ms per second of
/// packets, as the baseline does.
const SLACK_CREEP_MS_PER_PACKET: f64 = 0.02;
/// Packets the histogram needs before its target tells a clean path (a
/// second's worth).
const SETTLED_PACKETS: u32 = 50;

/// A packet waiting for its turn, with when it came.
#[derive(Debug)]
struct Buffered {
    arrived: Instant,
    packet: Packet,
}

/// The adaptive jitter buffer.
#[derive(Debug)]
pub struct JitterBuffer {
    clock_rate: u32,
    frame: Duration,
    ssrc: Option<u32>,
    /// Extended sequence of the next frame to play.
    next: Option<i64>,
    last_ext_seq: Option<i64>,
    packets: BTreeMap<i64, Buffered>,
    first: Option<(Instant, u32)>,
    baseline_ms: f64,
    histogram: [f64; BUCKETS],
    target: Duration,
    start_at: Option<Instant>,
    /// Sequence numbers played most recently, to tell a duplicate of a
    /// played packet from a late one.
    played: std::collections::VecDeque<i64>,
    /// Buffer level smoothed over about 32 frames, in ms.
    filtered_level_ms: f64,
    /// Frames since the last accelerate or preemptive expand.
    since_adjust: u32,
    /// Consecutive frames spent waiting for a missing packet.
    underrun_frames: u32,
    /// Excess frames offered and kept in a row.
    excess_offers: u32,
    /// Fraction of recent frames lost, smoothed.
    loss_rate: f64,
    /// Smallest recent time from a packet's arrival to its turn, in ms.
    slack_ms: Option<f64>,
    /// Packets in the delay histogram since the stream (re)started.
    timed_seen: u32,
    /// The stream's first margin has been given (its phase is set).
    phase_set: bool,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer for a stream with this RTP clock rate and frame length.
    pub fn new(clock_rate: u32, frame: Duration) -> JitterBuffer {
        JitterBuffer {
            clock_rate,
            frame,
            ssrc: None,
            next: None,
            last_ext_seq: None,
            packets: BTreeMap::new(),
            first: None,
            baseline_ms: 0.0,
            histogram: [0.0; BUCKETS],
            target: frame,
            start_at: None,
            played: std::collections::VecDeque::with_capacity(64),
            filtered_level_ms: 0.0,
            since_adjust: 0,
            underrun_frames: 0,
            excess_offers: 0,
            loss_rate: 0.0,
            slack_ms: None,
            timed_seen: 0,
            phase_set: false,
            stats: JitterStats::default(),
        }
    }

    /// The current target delay.
    pub fn target_delay(&self) -> Duration {
        self.target
    }

    /// Figures so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Audio buffered ahead of the playout point.
    pub fn buffered(&self) -> Duration {
        match (self.next, self.packets.keys().next_back()) {
            (Some(next), Some(last)) if *last >= next => {
                self.frame * u32::try_from(last - next + 1).unwrap_or(u32::MAX)
            }
            _ => Duration::ZERO,
        }
    }

    /// A packet arrived at `now`.
    pub fn push(&mut self, now: Instant, packet: Packet) {
        self.insert(now, packet, true);
    }

    /// A packet arrived at `now` whose timestamp is not its media time
    /// (a DTMF event holding its sequence number): buffered, but kept out
    /// of the delay estimate.
    pub fn push_untimed(&mut self, now: Instant, packet: Packet) {
        self.insert(now, packet, false);
    }

    fn insert(&mut self, now: Instant, packet: Packet, timed: bool) {
        if self.ssrc.is_some_and(|s| s != packet.ssrc) {
            self.reset();
        }
        let ext = self.extend(packet.seq);
        if let (Some(next), Some(last)) = (self.next, self.last_ext_seq) {
            if (ext - last).abs() > RESET_FRAMES || (ext - next).abs() > RESET_FRAMES {
                self.reset();
                return self.insert(now, packet, timed);
            }
        }
        self.ssrc = Some(packet.ssrc);
        self.stats.received += 1;
        self.last_ext_seq = Some(self.last_ext_seq.map_or(ext, |l| l.max(ext)));
        if timed {
            self.observe(now, packet.timestamp);
        }
        let playing = self.next.is_some() && self.start_at.is_none();
        match self.next {
            Some(next) if ext < next && playing => {
                if self.played.contains(&ext) {
                    self.stats.duplicates += 1;
                } else {
                    self.stats.late += 1;
                }
                return;
            }
            _ if self.packets.contains_key(&ext) => {
                self.stats.duplicates += 1;
                return;
            }
            // Before playout starts, an earlier (reordered) packet goes first.
            Some(next) if ext < next => self.next = Some(ext),
            Some(_) => {}
            None => {
                self.next = Some(ext);
                // The target counts the frame about to play: one frame of
                // target means play on arrival, with no wait before it.
                self.start_at = Some(now + self.target.saturating_sub(self.frame));
            }
        }
        self.packets.insert(
            ext,
            Buffered {
                arrived: now,
                packet,
            },
        );
    }

    /// The frame to play now; call once per frame period.
    pub fn pop(&mut self, now: Instant) -> Playout {
        let Some(next) = self.next else {
            return Playout::Silence;
        };
        if self.start_at.is_some_and(|t| now < t) {
            return Playout::Silence;
        }
        if self.start_at.take().is_some() {
            self.filtered_level_ms = self.buffered().as_secs_f64() * 1000.0;
        }
        if let Some(adjusted) = self.adapt() {
            return adjusted;
        }
        let next = self.next.unwrap_or(next);
        if let Some(b) = self.packets.remove(&next) {
            self.next = Some(next + 1);
            self.mark_played(next);
            let slack = now.saturating_duration_since(b.arrived).as_secs_f64() * 1000.0;
            self.slack_ms = Some(
                self.slack_ms
                    .map_or(slack, |s| (s + SLACK_CREEP_MS_PER_PACKET).min(slack)),
            );
            return Playout::Packet(b.packet.payload);
        }
        let later_buffered = self
            .packets
            .keys()
            .next_back()
            .is_some_and(|last| *last > next);
        let patience =
            u32::try_from(self.target.as_millis() / self.frame.as_millis().max(1)).unwrap_or(1);
        if !later_buffered && self.underrun_frames < patience {
            // Underrun: wait for the packet by stretching, as long as the
            // target allows; past that it is more likely lost than late.
            self.underrun_frames += 1;
            self.stats.expanded += 1;
            return Playout::Conceal;
        }
        // Patience is per underrun, not per missing packet: a burst of
        // losses waits once, not once for each of its packets.
        if later_buffered {
            self.underrun_frames = 0;
        }
        self.next = Some(next + 1);
        self.stats.lost += 1;
        self.loss_rate += (1.0 - self.loss_rate) * LOSS_SMOOTHING;
        match self.packets.get(&(next + 1)) {
            Some(b) => {
                self.stats.fec_recovered += 1;
                Playout::Fec(b.packet.payload.clone())
            }
            None => Playout::Conceal,
        }
    }

    /// Steers the smoothed buffer level towards the target: drops a frame
    /// when it is half a frame over (accelerate), plays a concealment frame
    /// without consuming one when it is half a frame under (preemptive
    /// expand); at most one step every few frames.
    fn adapt(&mut self) -> Option<Playout> {
        let frame_ms = self.frame.as_secs_f64() * 1000.0;
        let level_ms = self.buffered().as_secs_f64() * 1000.0;
        self.filtered_level_ms += (level_ms - self.filtered_level_ms) / 32.0;
        self.since_adjust = self.since_adjust.saturating_add(1);
        if self.since_adjust < ADJUST_EVERY {
            return None;
        }
        let target_ms = self.target.as_secs_f64() * 1000.0;
        let next = self.next?;
        // Dropping a frame discards audio, so it takes a full frame of excess:
        // the one frame an isolated loss adds is cheaper kept than dropped.
        if self.filtered_level_ms > target_ms + frame_ms && level_ms > target_ms {
            if let Some(b) = self.packets.remove(&next) {
                self.next = Some(next + 1);
                if self.excess_offers >= EXCESS_OFFERS {
                    self.shorten();
                    return None;
                }
                self.excess_offers += 1;
                self.mark_played(next);
                // Offer again next frame unless this one is dropped.
                self.since_adjust = ADJUST_EVERY - 1;
                return Some(Playout::Excess(b.packet.payload));
            }
        }
        self.excess_offers = 0;
        if self.filtered_level_ms + frame_ms / 2.0 < target_ms {
            self.stats.expanded += 1;
            self.since_adjust = 0;
            self.filtered_level_ms += frame_ms;
            return Some(Playout::Conceal);
        }
        None
    }

    /// How much silence to play now so that packets keep
    /// [`PLAYOUT_MARGIN_MS`] between their arrival and their turn, in whole
    /// milliseconds; counted as played once asked. Ask only in a pause.
    pub fn realign(&mut self) -> Duration {
        // The first packet sets the phase for the whole stream, so it gets
        // its margin at once. After that, only once the histogram has seen
        // enough to tell a clean path (a one-frame target) from a jittery
        // one: there the target already holds the jitter's quantile, and a
        // margin on top would only add delay for the few packets it lets go.
        let clean = self.timed_seen >= SETTLED_PACKETS && self.target <= self.frame;
        let Some(slack) = self.slack_ms.filter(|_| !self.phase_set || clean) else {
            return Duration::ZERO;
        };
        self.phase_set = true;
        let short = (PLAYOUT_MARGIN_MS - slack).ceil();
        if short <= 0.0 {
            return Duration::ZERO;
        }
        self.slack_ms = Some(slack + short);
        Duration::from_millis(short as u64)
    }

    /// The decoding stage dropped the [`Playout::Excess`] frame it was
    /// offered (or the buffer dropped one itself): the delay is one frame
    /// shorter.
    pub fn dropped_excess(&mut self) {
        self.stats.played = self.stats.played.saturating_sub(1);
        self.shorten();
        // Inside a pause the next frame may go too, while excess remains.
        self.since_adjust = ADJUST_EVERY - 1;
    }

    fn shorten(&mut self) {
        self.stats.accelerated += 1;
        self.excess_offers = 0;
        self.since_adjust = 0;
        self.filtered_level_ms -= self.frame.as_secs_f64() * 1000.0;
    }

    fn mark_played(&mut self, ext: i64) {
        self.loss_rate -= self.loss_rate * LOSS_SMOOTHING;
        self.underrun_frames = 0;
        self.stats.played += 1;
        if self.played.len() == 64 {
            self.played.pop_front();
        }
        self.played.push_back(ext);
    }

    /// Tracks relative delay and updates the target.
    fn observe(&mut self, now: Instant, timestamp: u32) {
        let (t0, ts0) = *self.first.get_or_insert((now, timestamp));
        let elapsed_ms = now.saturating_duration_since(t0).as_secs_f64() * 1000.0;
        let media_ms =
            f64::from(timestamp.wrapping_sub(ts0) as i32) * 1000.0 / f64::from(self.clock_rate);
        let relative = elapsed_ms - media_ms;
        if (relative - self.baseline_ms).abs() > TIMESTAMP_JUMP_MS {
            // A timestamp jump far beyond any jitter (the sender restarted
            // its clock): measure from this packet on.
            self.first = Some((now, timestamp));
            self.baseline_ms = 0.0;
            return;
        }
        if relative < self.baseline_ms {
            self.baseline_ms = relative;
        } else {
            self.baseline_ms += BASELINE_CREEP_MS_PER_PACKET;
        }
        self.timed_seen = self.timed_seen.saturating_add(1);
        let jitter_ms = (relative - self.baseline_ms).max(0.0);
        for h in &mut self.histogram {
            *h *= FORGET;
        }
        let bucket = ((jitter_ms / f64::from(BUCKET_MS)) as usize).min(BUCKETS - 1);
        self.histogram[bucket] += 1.0 - FORGET;
        let total: f64 = self.histogram.iter().sum();
        let mut acc = 0.0;
        let mut quantile_ms = 0u32;
        for (i, h) in self.histogram.iter().enumerate() {
            acc += h;
            if acc >= QUANTILE * total {
                // The bucket's upper edge: the delay that covers the quantile.
                quantile_ms = (u32::try_from(i).unwrap_or(0) + 1) * BUCKET_MS;
                break;
            }
        }
        // The buffer level counts the frame about to play, so a target of
        // one frame means "play on arrival".
        self.target = Duration::from_millis(u64::from(quantile_ms)).max(self.frame);
        if self.loss_rate > LOSSY && quantile_ms < 2 * BUCKET_MS.max(self.frame.as_millis() as u32)
        {
            // On a lossy path, hold the next packet when a frame plays, so
            // that a loss is repaired from its FEC in place instead of
            // being stretched over and later cut back.
            self.target += self.frame;
        }
    }

    /// Extends a 16-bit sequence number to a monotonic 64-bit one.
    fn extend(&self, seq: u16) -> i64 {
        let Some(reference) = self.last_ext_seq else {
            return i64::from(seq);
        };
        let base = reference & !0xffff;
        let candidates = [base - 0x10000, base, base + 0x10000].map(|b| b + i64::from(seq));
        candidates
            .into_iter()
            .min_by_key(|c| (c - reference).abs())
            .unwrap_or(i64::from(seq))
    }

    fn reset(&mut self) {
        self.stats.resets += 1;
        self.ssrc = None;
        self.next = None;
        self.last_ext_seq = None;
        self.packets.clear();
        self.first = None;
        self.baseline_ms = 0.0;
        self.start_at = None;
        self.played.clear();
        self.filtered_level_ms = 0.0;
        self.since_adjust = 0;
        self.excess_offers = 0;
        self.slack_ms = None;
        self.timed_seen = 0;
        self.phase_set = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::network_trace::{generate, replay, Network, Report};
    use rand::{Rng, SeedableRng};

    const FRAMES: u32 = 3000;

    fn run(network: Network) -> Report {
        replay(&generate(network, FRAMES, 48_000, 7), FRAMES, 48_000)
    }

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn clean_path_adds_one_frame_and_loses_nothing() {
        let r = run(Network::Clean);
        assert!(ms(r.mean_added) <= 40, "{r:?}");
        assert_eq!(
            (r.late_pct, r.concealed_pct, r.resets),
            (0.0, 0.0, 0),
            "{r:?}"
        );
        assert_eq!(ms(r.final_target), 20);
    }

    #[test]
    fn sixty_ms_of_jitter_costs_under_one_percent_late_loss() {
        let r = run(Network::Jitter {
            max: Duration::from_millis(60),
        });
        assert!(r.late_pct < 1.0, "{r:?}");
        assert!(ms(r.p95_added) <= 100, "{r:?}");
        assert_eq!(r.resets, 0);
    }

    #[test]
    fn isolated_losses_are_mostly_recovered_from_fec() {
        let r = run(Network::Loss { rate: 0.10 });
        assert!(r.concealed_pct > 8.0 && r.concealed_pct < 12.0, "{r:?}");
        assert!(
            r.fec_pct > 0.8 * r.concealed_pct,
            "FEC from the next packet: {r:?}"
        );
        assert_eq!(r.late_pct, 0.0);
    }

    #[test]
    fn bursts_fall_back_to_concealment() {
        let r = run(Network::BurstLoss {
            rate: 0.02,
            length: 4,
        });
        assert!(
            r.fec_pct < r.concealed_pct / 2.0,
            "only a burst's last loss has FEC: {r:?}"
        );
    }

    #[test]
    fn reordering_and_duplicates_lose_nothing() {
        // Reordering is learnt: the first swaps come late, then the buffer
        // holds enough to absorb them.
        let r = run(Network::Reorder { rate: 0.05 });
        assert!(r.late_pct < 1.0, "{r:?}");
        let r = run(Network::Duplicates { rate: 0.05 });
        assert_eq!(r.late_pct, 0.0, "{r:?}");
        assert!(r.concealed_pct < 1.0, "{r:?}");
    }

    #[test]
    fn a_spike_costs_a_few_frames_not_lasting_delay_or_a_reset() {
        // Waiting out a 300 ms stall would leave 300 ms to play down; the
        // buffer waits its target's worth, then gives the stalled frames up.
        let r = run(Network::Spike {
            gap: Duration::from_millis(300),
        });
        assert_eq!(r.resets, 0, "{r:?}");
        assert!(r.late_pct < 1.0, "{r:?}");
        assert!(ms(r.mean_added) <= 25, "no lasting delay: {r:?}");
        assert_eq!(ms(r.final_target), 20, "{r:?}");
    }

    #[test]
    fn clock_drift_either_way_keeps_delay_bounded() {
        for ppm in [-1000.0, 1000.0] {
            let frames = 30_000;
            let r = replay(
                &generate(Network::Drift { ppm }, frames, 48_000, 1),
                frames,
                48_000,
            );
            assert_eq!(r.resets, 0, "{ppm}: {r:?}");
            assert!(ms(r.p95_added) <= 80, "{ppm} ppm: {r:?}");
            assert!(r.late_pct < 0.5, "{ppm} ppm: {r:?}");
        }
    }

    fn packet(seq: u16, ssrc: u32) -> Packet {
        Packet {
            seq,
            timestamp: u32::from(seq).wrapping_mul(960),
            ssrc,
            payload: Bytes::copy_from_slice(&seq.to_be_bytes()),
        }
    }

    #[test]
    fn sequence_wrap_late_packets_and_fec() {
        let t0 = Instant::now();
        let frame = Duration::from_millis(20);
        let mut jb = JitterBuffer::new(48_000, frame);
        assert_eq!(jb.pop(t0), Playout::Silence, "nothing yet");
        jb.push(t0, packet(65_534, 9));
        assert!(
            matches!(jb.pop(t0), Playout::Packet(p) if p[..] == 65_534u16.to_be_bytes()),
            "a one-frame target plays on arrival"
        );
        let t = t0 + frame;
        jb.push(t, packet(65_535, 9));
        assert!(matches!(jb.pop(t), Playout::Packet(p) if p[..] == 65_535u16.to_be_bytes()));
        // 0 lost, 1 arrives: 0 is recovered from 1's FEC.
        jb.push(t + frame, packet(1, 9));
        assert!(matches!(jb.pop(t + frame), Playout::Fec(p) if p[..] == 1u16.to_be_bytes()));
        let t = t0;
        jb.push(t + frame * 3, packet(0, 9));
        assert_eq!(jb.stats().late, 1, "0 came after its turn");
        assert!(
            jb.target_delay() > frame,
            "the late arrival raised the target"
        );
        // The raised target may first stretch (concealment), then 1 plays.
        let mut k = 3;
        let played = loop {
            match jb.pop(t + frame * k) {
                Playout::Conceal if k < 6 => k += 1,
                other => break other,
            }
        };
        assert!(matches!(played, Playout::Packet(p) if p[..] == 1u16.to_be_bytes()));
        assert_eq!(
            jb.pop(t + frame * (k + 1)),
            Playout::Conceal,
            "underrun conceals while waiting"
        );
        assert_eq!(jb.stats().lost, 1, "waiting is not losing");
        assert!(jb.stats().expanded >= 1);
    }

    #[test]
    fn dtmf_events_hold_their_place_without_raising_the_target() {
        let t0 = Instant::now();
        let frame = Duration::from_millis(20);
        let mut jb = JitterBuffer::new(48_000, frame);
        for seq in 0..100u16 {
            let now = t0 + frame * u32::from(seq);
            let mut p = packet(seq, 1);
            if (20..30).contains(&seq) {
                // One 200 ms event: every packet carries its start time.
                p.timestamp = 20 * 960;
                jb.push_untimed(now, p);
            } else {
                jb.push(now, p);
            }
            jb.pop(now);
        }
        assert_eq!(jb.target_delay(), frame, "{:?}", jb.stats());
        assert_eq!(jb.stats().played, 100, "each on arrival");
    }

    #[test]
    fn new_ssrc_and_big_jumps_restart_the_stream() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(48_000, Duration::from_millis(20));
        jb.push(t0, packet(10, 1));
        jb.push(t0, packet(500, 2));
        assert_eq!(jb.stats().resets, 1);
        jb.push(t0, packet(40_000, 2));
        assert_eq!(jb.stats().resets, 2);
        assert_eq!(jb.buffered(), Duration::from_millis(20));
    }

    /// Packets arriving 0-3 ms after a turn 1 ms past the nominal one: a
    /// frame-only buffer misses about every other turn by a hair.
    fn arrivals_at_the_edge(realign: bool) -> (JitterStats, Duration) {
        let t0 = Instant::now();
        let frame = Duration::from_millis(20);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let arrivals: Vec<Instant> = (0..500u32)
            .map(|k| t0 + frame * k + Duration::from_millis(rng.random_range(0..=3)))
            .collect();
        let mut jb = JitterBuffer::new(48_000, frame);
        let mut turn = t0 + Duration::from_millis(1);
        let mut pushed = 0;
        let mut padded = Duration::ZERO;
        for _ in 0..500 {
            while pushed < arrivals.len() && arrivals[pushed] <= turn {
                jb.push(arrivals[pushed], packet(pushed as u16, 1));
                pushed += 1;
            }
            jb.pop(turn);
            let pad = if realign {
                jb.realign()
            } else {
                Duration::ZERO
            };
            padded += pad;
            turn += frame + pad;
        }
        (jb.stats(), padded)
    }

    #[test]
    fn packets_arriving_at_their_turn_are_given_a_margin_once() {
        let (without, _) = arrivals_at_the_edge(false);
        assert!(without.expanded > 0, "{without:?}");
        let (with, padded) = arrivals_at_the_edge(true);
        // One wobble may be missed before the first realignment; then the
        // turns sit the margin past the latest arrivals, for a few ms.
        assert!(with.expanded <= 1, "{with:?}");
        assert!(padded <= Duration::from_millis(10), "{padded:?}");
    }
}
