//! RTCP sender and receiver reports for one stream (RFC 3550 §6.4, A.3,
//! A.8), sans-IO, on the `rtcp` crate's packets; and the call statistics
//! they yield: loss, jitter, round-trip time and an estimated MOS.
//!
//! Round-trip time needs only our own clock: the peer echoes the middle 32
//! bits of our SR's NTP timestamp (LSR) and how long it held it (DLSR), so
//! the NTP timeline here is the monotonic clock since the stream started.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rtcp::receiver_report::ReceiverReport;
use rtcp::reception_report::ReceptionReport;
use rtcp::sender_report::SenderReport;

use super::sdp::Codec;

/// The RTCP report interval before randomisation (RFC 3550 §6.2 minimum).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Why an RTCP datagram was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed RTCP: {0}")]
pub struct RtcpError(pub String);

/// What a call shows about its quality (the CLI's `call_stats`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallStats {
    /// Packets from the peer that never arrived.
    pub packets_lost: u64,
    /// Their share of the packets expected, in %.
    pub loss_pct: f64,
    /// Interarrival jitter, in ms.
    pub jitter_ms: f64,
    /// Round-trip time, once the peer has reported on our packets.
    pub rtt_ms: Option<f64>,
    /// Estimated listening quality, 1 to 4.5 (ITU-T G.107 E-model).
    pub mos: f64,
}

/// Reception statistics of the peer's source (RFC 3550 A.1, A.3, A.8).
#[derive(Debug, Clone)]
struct Reception {
    ssrc: u32,
    base_seq: i64,
    max_seq: i64,
    received: u64,
    expected_prior: i64,
    received_prior: u64,
    /// Interarrival jitter in timestamp units, scaled by 16 as in A.8.
    jitter_x16: i64,
    last_transit: Option<i64>,
}

impl Reception {
    fn new(ssrc: u32, seq: u16) -> Reception {
        Reception {
            ssrc,
            base_seq: i64::from(seq),
            max_seq: i64::from(seq),
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            jitter_x16: 0,
            last_transit: None,
        }
    }

    fn extend(&self, seq: u16) -> i64 {
        let base = self.max_seq & !0xffff;
        [base - 0x10000, base, base + 0x10000]
            .map(|b| b + i64::from(seq))
            .into_iter()
            .min_by_key(|c| (c - self.max_seq).abs())
            .unwrap_or(i64::from(seq))
    }

    fn expected(&self) -> i64 {
        self.max_seq - self.base_seq + 1
    }

    fn lost(&self) -> i64 {
        (self.expected() - i64::try_from(self.received).unwrap_or(i64::MAX)).max(0)
    }
}

/// RTCP for one stream.
#[derive(Debug)]
pub struct RtcpSession {
    ssrc: u32,
    codec: Codec,
    epoch: Instant,
    rng: StdRng,
    reception: Option<Reception>,
    sent_packets: u32,
    sent_octets: u32,
    last_rtp_timestamp: u32,
    /// Middle 32 bits of the peer's last SR NTP time, and when it came.
    last_sr: Option<(u32, Instant)>,
    rtt: Option<Duration>,
    remote_fraction_lost: Option<u8>,
    next_report: Instant,
}

impl RtcpSession {
    /// RTCP for our source `ssrc` sending `codec`.
    pub fn new(now: Instant, ssrc: u32, codec: Codec, seed: u64) -> RtcpSession {
        let mut rng = StdRng::seed_from_u64(seed);
        // The first report comes after half an interval (RFC 3550 §6.2).
        let first = REPORT_INTERVAL.mul_f64(rng.random_range(0.25..0.75));
        RtcpSession {
            ssrc,
            codec,
            epoch: now,
            rng,
            reception: None,
            sent_packets: 0,
            sent_octets: 0,
            last_rtp_timestamp: 0,
            last_sr: None,
            rtt: None,
            remote_fraction_lost: None,
            next_report: now + first,
        }
    }

    /// We sent an RTP packet.
    pub fn on_rtp_sent(&mut self, timestamp: u32, payload_len: usize) {
        self.sent_packets = self.sent_packets.wrapping_add(1);
        self.sent_octets = self
            .sent_octets
            .wrapping_add(u32::try_from(payload_len).unwrap_or(u32::MAX));
        self.last_rtp_timestamp = timestamp;
    }

    /// An RTP packet from the peer was accepted.
    pub fn on_rtp_received(&mut self, now: Instant, ssrc: u32, seq: u16, timestamp: u32) {
        if self.reception.as_ref().is_none_or(|r| r.ssrc != ssrc) {
            self.reception = Some(Reception::new(ssrc, seq));
        }
        let rate = i64::from(self.codec.clock_rate());
        let arrival = i64::try_from(now.saturating_duration_since(self.epoch).as_micros())
            .unwrap_or(i64::MAX)
            * rate
            / 1_000_000;
        let Some(r) = self.reception.as_mut() else {
            return;
        };
        let ext = r.extend(seq);
        r.max_seq = r.max_seq.max(ext);
        r.received += 1;
        let transit = arrival - i64::from(timestamp);
        if let Some(last) = r.last_transit {
            // Differences of 32-bit timestamps wrap; keep them small.
            let d = i64::from(transit.wrapping_sub(last) as i32).abs();
            r.jitter_x16 += d - ((r.jitter_x16 + 8) >> 4);
        }
        r.last_transit = Some(transit);
    }

    /// An RTCP datagram from the peer: reads SRs (for our next LSR) and
    /// report blocks about us (round-trip time, the loss the peer sees).
    pub fn handle_rtcp(&mut self, now: Instant, bytes: &[u8]) -> Result<(), RtcpError> {
        let mut buf = bytes;
        let packets = rtcp::packet::unmarshal(&mut buf).map_err(|e| RtcpError(e.to_string()))?;
        for p in &packets {
            let any = p.as_any();
            let blocks = if let Some(sr) = any.downcast_ref::<SenderReport>() {
                self.last_sr = Some(((sr.ntp_time >> 16) as u32, now));
                &sr.reports
            } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                &rr.reports
            } else {
                continue;
            };
            for block in blocks.iter().filter(|b| b.ssrc == self.ssrc) {
                self.remote_fraction_lost = Some(block.fraction_lost);
                if block.last_sender_report != 0 {
                    let a = self.ntp_middle(now);
                    let rtt = a
                        .wrapping_sub(block.last_sender_report)
                        .wrapping_sub(block.delay);
                    // Units of 1/65536 s; a wrapped (negative) value is noise.
                    if rtt < 0x8000_0000 {
                        self.rtt = Some(Duration::from_secs_f64(f64::from(rtt) / 65_536.0));
                    }
                }
            }
        }
        Ok(())
    }

    /// The loss fraction (0–255) the peer last reported about our packets,
    /// for the encoder's FEC setting.
    pub fn remote_fraction_lost(&self) -> Option<u8> {
        self.remote_fraction_lost
    }

    /// When the next report is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_report
    }

    /// The report to send when it is due: an SR if we have sent media, else
    /// an RR; either carries our reception report about the peer.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Bytes> {
        if now < self.next_report {
            return None;
        }
        self.next_report = now + REPORT_INTERVAL.mul_f64(self.rng.random_range(0.5..1.5));
        let reports: Vec<ReceptionReport> = self.reception_block(now).into_iter().collect();
        let packet: Box<dyn rtcp::packet::Packet + Send + Sync> = if self.sent_packets > 0 {
            Box::new(SenderReport {
                ssrc: self.ssrc,
                ntp_time: self.ntp(now),
                rtp_time: self.last_rtp_timestamp,
                packet_count: self.sent_packets,
                octet_count: self.sent_octets,
                reports,
                profile_extensions: Bytes::new(),
            })
        } else {
            Box::new(ReceiverReport {
                ssrc: self.ssrc,
                reports,
                profile_extensions: Bytes::new(),
            })
        };
        rtcp::packet::marshal(&[packet]).ok()
    }

    fn reception_block(&mut self, now: Instant) -> Option<ReceptionReport> {
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => (
                lsr,
                (now.saturating_duration_since(at).as_secs_f64() * 65_536.0) as u32,
            ),
            None => (0, 0),
        };
        let r = self.reception.as_mut()?;
        let expected = r.expected();
        let expected_interval = expected - r.expected_prior;
        let received_interval = i64::try_from(r.received - r.received_prior).unwrap_or(0);
        r.expected_prior = expected;
        r.received_prior = r.received;
        let lost_interval = expected_interval - received_interval;
        let fraction_lost = if expected_interval <= 0 || lost_interval <= 0 {
            0
        } else {
            u8::try_from((lost_interval << 8) / expected_interval).unwrap_or(u8::MAX)
        };
        Some(ReceptionReport {
            ssrc: r.ssrc,
            fraction_lost,
            total_lost: u32::try_from(r.lost()).unwrap_or(0x7f_ffff).min(0x7f_ffff),
            last_sequence_number: (r.max_seq & 0xffff_ffff) as u32,
            jitter: u32::try_from(r.jitter_x16 >> 4).unwrap_or(u32::MAX),
            last_sender_report: lsr,
            delay: dlsr,
        })
    }

    /// Loss, jitter, RTT and MOS so far.
    pub fn stats(&self) -> CallStats {
        let (lost, expected, jitter_units) = self
            .reception
            .as_ref()
            .map_or((0, 0, 0), |r| (r.lost(), r.expected(), r.jitter_x16 >> 4));
        let loss_pct = if expected > 0 {
            100.0 * lost as f64 / expected as f64
        } else {
            0.0
        };
        let jitter_ms = jitter_units as f64 * 1000.0 / f64::from(self.codec.clock_rate());
        let rtt_ms = self.rtt.map(|d| d.as_secs_f64() * 1000.0);
        CallStats {
            packets_lost: u64::try_from(lost).unwrap_or(0),
            loss_pct,
            jitter_ms,
            rtt_ms,
            mos: estimate_mos(
                self.codec,
                loss_pct,
                rtt_ms.unwrap_or(0.0) / 2.0 + 2.0 * jitter_ms + 40.0,
            ),
        }
    }

    fn ntp(&self, now: Instant) -> u64 {
        let d = now.saturating_duration_since(self.epoch);
        (d.as_secs() << 32) | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
    }

    fn ntp_middle(&self, now: Instant) -> u32 {
        (self.ntp(now) >> 16) as u32
    }
}

/// MOS from the ITU-T G.107 E-model with default values, for a one-way
/// mouth-to-ear delay in ms and random packet loss in %. Codec figures (Ie,
/// Bpl) are G.113's for G.711 with concealment; Opus, which G.113 does not
/// list, is given G.711's Ie with the better loss robustness FEC brings.
pub fn estimate_mos(codec: Codec, loss_pct: f64, one_way_delay_ms: f64) -> f64 {
    let (ie, bpl) = match codec {
        Codec::Pcmu | Codec::Pcma => (0.0, 25.1),
        Codec::Opus => (0.0, 35.0),
    };
    let ppl = loss_pct.clamp(0.0, 100.0);
    let ie_eff = ie + (95.0 - ie) * ppl / (ppl + bpl);
    let d = one_way_delay_ms.max(0.0);
    let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    let r = (93.2 - id - ie_eff).clamp(0.0, 100.0);
    (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6).clamp(1.0, 4.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_sequence_wrap_are_counted() {
        let t0 = Instant::now();
        let mut s = RtcpSession::new(t0, 1, Codec::Pcmu, 1);
        let mut ts = 0u32;
        for i in 0..200u32 {
            let seq = (65_500 + i) as u16;
            ts = ts.wrapping_add(160);
            if i % 10 != 3 {
                s.on_rtp_received(t0 + Duration::from_millis(20 * u64::from(i)), 77, seq, ts);
            }
        }
        let st = s.stats();
        assert_eq!(st.packets_lost, 20);
        assert!((st.loss_pct - 10.0).abs() < 0.01, "{st:?}");
        assert!(st.jitter_ms < 0.5, "constant spacing has no jitter: {st:?}");
        let report = s
            .handle_timeout(t0 + Duration::from_secs(5))
            .expect("a report is due");
        let mut buf = &report[..];
        let packets = rtcp::packet::unmarshal(&mut buf).unwrap();
        let rr = packets[0]
            .as_any()
            .downcast_ref::<ReceiverReport>()
            .expect("an RR, nothing sent yet");
        let block = &rr.reports[0];
        assert_eq!((block.ssrc, block.total_lost), (77, 20));
        assert_eq!(block.fraction_lost, 25, "10 % of 256");
        assert_eq!(
            block.last_sequence_number,
            0x1_0000 + u32::from((65_500u32 + 199) as u16)
        );
    }

    #[test]
    fn jitter_follows_rfc3550_a8() {
        let t0 = Instant::now();
        let mut s = RtcpSession::new(t0, 1, Codec::Pcmu, 2);
        // Every other packet 10 ms late: |D| alternates 80 timestamp units.
        for i in 0..2000u32 {
            let late = if i % 2 == 1 { 10 } else { 0 };
            s.on_rtp_received(
                t0 + Duration::from_millis(20 * u64::from(i) + late),
                5,
                i as u16,
                i * 160,
            );
        }
        let jitter = s.stats().jitter_ms;
        assert!(
            (jitter - 10.0).abs() < 0.5,
            "the A.8 estimate converges to |D| = 10 ms: {jitter}"
        );
    }

    #[test]
    fn round_trip_time_from_lsr_and_dlsr() {
        let t0 = Instant::now();
        let mut alice = RtcpSession::new(t0, 1, Codec::Opus, 3);
        let mut bob = RtcpSession::new(t0 + Duration::from_millis(500), 2, Codec::Opus, 4);
        alice.on_rtp_sent(960, 80);
        bob.on_rtp_received(t0 + Duration::from_millis(40), 1, 1, 960);
        let sent_at = alice.poll_timeout();
        let sr = alice.handle_timeout(sent_at).unwrap();
        let one_way = Duration::from_millis(40);
        bob.handle_rtcp(sent_at + one_way, &sr).unwrap();
        // Bob holds the SR 700 ms before his own report goes out.
        let rr_at = bob
            .poll_timeout()
            .max(sent_at + one_way + Duration::from_millis(700));
        let rr = bob.handle_timeout(rr_at).unwrap();
        alice.handle_rtcp(rr_at + one_way, &rr).unwrap();
        let rtt = alice.stats().rtt_ms.expect("an RTT");
        assert!((rtt - 80.0).abs() < 1.0, "rtt {rtt} ms");
        assert_eq!(alice.remote_fraction_lost(), Some(0));
    }

    #[test]
    fn mos_falls_with_loss_and_delay() {
        let clean = estimate_mos(Codec::Pcmu, 0.0, 60.0);
        assert!(clean > 4.3, "{clean}");
        let lossy = estimate_mos(Codec::Pcmu, 5.0, 60.0);
        let opus_lossy = estimate_mos(Codec::Opus, 5.0, 60.0);
        let late = estimate_mos(Codec::Pcmu, 0.0, 400.0);
        assert!(
            lossy < clean && opus_lossy > lossy && late < clean,
            "{lossy} {opus_lossy} {late}"
        );
        assert!((1.0..=4.5).contains(&estimate_mos(Codec::Pcma, 100.0, 10_000.0)));
    }

    #[test]
    fn garbage_rtcp_is_an_error() {
        let t0 = Instant::now();
        let mut s = RtcpSession::new(t0, 1, Codec::Pcmu, 5);
        for junk in [&b""[..], b"\x80", b"\x81\xc9\x00\x07garbage", &[0xff; 64]] {
            assert!(s.handle_rtcp(t0, junk).is_err(), "{junk:?}");
        }
        assert_eq!(s.stats().rtt_ms, None);
    }
}
