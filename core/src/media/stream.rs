//! One RTP audio stream of a call, sans-IO: outgoing frames are encoded and
//! packetised; incoming datagrams are checked, buffered and decoded.
//!
//! RTP is symmetric (RFC 4961): we send from the port we receive on and
//! accept packets from the address the peer's session description named.
//! A peer behind NAT, or on a host with several addresses, sends from
//! somewhere else: until anything has come from the named address, RTP
//! from any source is played, and a source that sends [`LATCH_AFTER`]
//! packets in sequence with one SSRC and a negotiated payload type becomes
//! the remote ("latching", as RTP proxies and PBXs do). Once media flows,
//! strangers cannot inject audio into the call. Anything malformed,
//! foreign or of an unexpected payload type is counted and dropped; the
//! call goes on.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtp::header::Header;
use rtp::packet::Packet as RtpPacket;
use webrtc_util::marshal::{Marshal, Unmarshal};

use super::codec::{frame_samples, CodecError, Decoder, Encoder, FRAME_MS};
use super::dtmf::{DtmfReceiver, DtmfSender};
use super::jitter::{JitterBuffer, JitterStats, Packet, Playout};
use super::sdp::{Codec, Negotiated};

/// How long without any packet before [`MediaEvent::NoMedia`].
pub const DEFAULT_MEDIA_TIMEOUT: Duration = Duration::from_secs(10);

/// What a stream reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// No RTP from the peer for this long.
    NoMedia {
        /// Time since the last packet (or the start).
        silent_for: Duration,
    },
    /// Packets flow again after [`MediaEvent::NoMedia`].
    MediaResumed,
    /// The peer sent a DTMF digit (RFC 4733).
    Dtmf(char),
    /// The peer's media comes from this address, not the one it named;
    /// the stream sends there now.
    Latched(SocketAddr),
}

/// Why digits cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    /// The peer did not accept telephone-event in the session description.
    #[error("the peer does not take DTMF events")]
    NotNegotiated,
    /// Characters that are not DTMF digits.
    #[error("not DTMF digits: {0:?}")]
    NotDigits(String),
}

/// Counters of a stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// RTP packets sent.
    pub sent: u64,
    /// RTP packets accepted.
    pub received: u64,
    /// Datagrams from an address other than the peer's.
    pub foreign: u64,
    /// Datagrams that were not RTP.
    pub malformed: u64,
    /// RTP packets with a payload type we did not negotiate.
    pub unexpected_payload_type: u64,
    /// Frames whose decoding failed and was concealed instead.
    pub decode_errors: u64,
    /// The jitter buffer's figures.
    pub jitter: JitterStats,
}

/// Below this level (RMS, about −50 dBFS) a frame is a pause, which the
/// jitter buffer may drop to shorten the delay without it being heard.
/// Soft consonants reach −40 dBFS, so the line sits well under them.
const QUIET_RMS: f64 = 104.0;

/// Quiet frames in a row that make a pause (40 ms: longer than the
/// closure of a plosive).
const PAUSE_FRAMES: u32 = 2;

/// Whether a decoded frame is quiet enough to drop unheard.
fn is_quiet(frame: &[i16]) -> bool {
    let energy: f64 = frame.iter().map(|s| f64::from(*s).powi(2)).sum();
    energy <= QUIET_RMS * QUIET_RMS * frame.len() as f64
}

/// In-sequence packets from one other source that move the stream there,
/// as long as the named address has sent nothing.
pub const LATCH_AFTER: u32 = 4;

/// A source that may become the remote: where it sends from, its SSRC, its
/// last sequence number and how many it sent in order.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    from: SocketAddr,
    ssrc: u32,
    seq: u16,
    run: u32,
}

/// An RTP audio stream.
#[derive(Debug)]
pub struct MediaStream {
    codec: Codec,
    payload_type: u8,
    remote: SocketAddr,
    /// Whether anything has been accepted from `remote` (ends latching).
    heard_remote: bool,
    candidate: Option<Candidate>,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    first_packet: bool,
    encoder: Encoder,
    decoder: Decoder,
    jitter: JitterBuffer,
    /// The telephone-event payload type and the sender using it.
    dtmf_out: Option<(u8, DtmfSender)>,
    dtmf_in: DtmfReceiver,
    last_received: Instant,
    media_timeout: Duration,
    silent: bool,
    /// Quiet frames played in a row, to find pauses.
    quiet_run: u32,
    /// Whether the frame before the last one played was quiet.
    quiet_before: bool,
    events: Vec<MediaEvent>,
    stats: StreamStats,
}

impl MediaStream {
    /// A stream for a negotiated session; `ssrc`, `seq` and `timestamp`
    /// start values should be random (RFC 3550 §5.1).
    pub fn new(
        now: Instant,
        negotiated: &Negotiated,
        ssrc: u32,
        seq: u16,
        timestamp: u32,
    ) -> Result<MediaStream, CodecError> {
        Ok(MediaStream {
            codec: negotiated.codec,
            payload_type: negotiated.payload_type,
            remote: negotiated.remote_rtp,
            heard_remote: false,
            candidate: None,
            ssrc,
            seq,
            timestamp,
            first_packet: true,
            encoder: Encoder::new(negotiated.codec)?,
            decoder: Decoder::new(negotiated.codec)?,
            jitter: JitterBuffer::new(
                negotiated.codec.clock_rate(),
                Duration::from_millis(u64::from(FRAME_MS)),
            ),
            dtmf_out: negotiated.telephone_event.map(|pt| {
                let samples = u16::try_from(frame_samples(negotiated.codec)).unwrap_or(u16::MAX);
                (pt, DtmfSender::new(samples))
            }),
            dtmf_in: DtmfReceiver::default(),
            last_received: now,
            media_timeout: DEFAULT_MEDIA_TIMEOUT,
            silent: false,
            quiet_run: 0,
            quiet_before: false,
            events: Vec::new(),
            stats: StreamStats::default(),
        })
    }

    /// Changes how long silence lasts before [`MediaEvent::NoMedia`].
    pub fn set_media_timeout(&mut self, timeout: Duration) {
        self.media_timeout = timeout;
    }

    /// Where packets go (and come from): the negotiated address, or the
    /// source the stream latched on to.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// Samples per 20 ms frame at the codec's rate.
    pub fn frame_samples(&self) -> usize {
        frame_samples(self.codec)
    }

    /// The counters so far.
    pub fn stats(&self) -> StreamStats {
        StreamStats {
            jitter: self.jitter.stats(),
            ..self.stats
        }
    }

    /// Passes the loss the peer reports (RTCP) to the encoder's FEC.
    pub fn set_expected_loss(&mut self, percent: u8) -> Result<(), CodecError> {
        self.encoder.set_expected_loss(percent)
    }

    /// Queues DTMF digits; they replace the audio of the next frames.
    pub fn send_dtmf(&mut self, digits: &str) -> Result<(), DtmfError> {
        let (_, sender) = self.dtmf_out.as_mut().ok_or(DtmfError::NotNegotiated)?;
        let rejected = sender.send(digits);
        if rejected.is_empty() {
            Ok(())
        } else {
            Err(DtmfError::NotDigits(rejected.into_iter().collect()))
        }
    }

    /// Encodes one frame (or sends the DTMF event due instead) and returns
    /// the RTP packet to send to [`Self::remote`].
    pub fn send_frame(&mut self, pcm: &[i16]) -> Result<Bytes, CodecError> {
        let timestamp = self.timestamp;
        let event = self
            .dtmf_out
            .as_mut()
            .and_then(|(pt, s)| s.next_packet(timestamp).map(|p| (*pt, p)));
        let (payload_type, marker, timestamp, payload) = match event {
            Some((pt, p)) => (
                pt,
                p.marker,
                p.timestamp,
                Bytes::copy_from_slice(&p.event.to_bytes()),
            ),
            None => {
                let payload = Bytes::from(self.encoder.encode(pcm)?);
                (
                    self.payload_type,
                    std::mem::take(&mut self.first_packet),
                    timestamp,
                    payload,
                )
            }
        };
        let packet = RtpPacket {
            header: Header {
                version: 2,
                marker,
                payload_type,
                sequence_number: self.seq,
                timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload,
        };
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self
            .timestamp
            .wrapping_add(u32::try_from(pcm.len()).unwrap_or(0));
        self.stats.sent += 1;
        // Marshalling a packet we built cannot fail; map it anyway.
        packet
            .marshal()
            .map_err(|e| CodecError::Opus(format!("RTP: {e}")))
    }

    /// The RTP timestamp the next frame will carry.
    pub fn rtp_timestamp(&self) -> u32 {
        self.timestamp
    }

    /// A datagram arrived on the stream's port; returns the accepted
    /// packet's (SSRC, sequence, timestamp) for RTCP statistics.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Option<(u32, u16, u32)> {
        if from != self.remote && self.heard_remote {
            self.stats.foreign += 1;
            return None;
        }
        let mut buf = bytes;
        let packet = match RtpPacket::unmarshal(&mut buf) {
            Ok(p) if p.header.version == 2 => p,
            _ => {
                self.stats.malformed += 1;
                return None;
            }
        };
        let is_event = self
            .dtmf_out
            .as_ref()
            .is_some_and(|(pt, _)| *pt == packet.header.payload_type);
        if packet.header.payload_type != self.payload_type && !is_event {
            self.stats.unexpected_payload_type += 1;
            return None;
        }
        if from != self.remote {
            // Before the peer's first packet, its media may come from
            // anywhere: play it, and move there once it proves steady.
            self.latch(from, &packet.header);
        } else {
            self.heard_remote = true;
        }
        let info = (
            packet.header.ssrc,
            packet.header.sequence_number,
            packet.header.timestamp,
        );
        self.stats.received += 1;
        self.last_received = now;
        if std::mem::take(&mut self.silent) {
            self.events.push(MediaEvent::MediaResumed);
        }
        let payload = if is_event {
            if let Some(d) = self
                .dtmf_in
                .handle(packet.header.timestamp, &packet.payload)
            {
                self.events.push(MediaEvent::Dtmf(d));
            }
            // The event took an audio frame's sequence number: an empty
            // payload plays as concealment, not as a loss to wait for.
            Bytes::new()
        } else {
            packet.payload
        };
        let packet = Packet {
            seq: packet.header.sequence_number,
            timestamp: packet.header.timestamp,
            ssrc: packet.header.ssrc,
            payload,
        };
        if is_event {
            // An event's packets all carry its start time (RFC 4733 §2.5.1.2),
            // which says nothing about network delay.
            self.jitter.push_untimed(now, packet);
        } else {
            self.jitter.push(now, packet);
        }
        Some(info)
    }

    /// Counts a packet from a source other than the remote, and moves the
    /// stream there after [`LATCH_AFTER`] in sequence.
    fn latch(&mut self, from: SocketAddr, header: &Header) {
        let run = match self.candidate {
            Some(c)
                if c.from == from
                    && c.ssrc == header.ssrc
                    && header.sequence_number == c.seq.wrapping_add(1) =>
            {
                c.run + 1
            }
            _ => 1,
        };
        self.candidate = Some(Candidate {
            from,
            ssrc: header.ssrc,
            seq: header.sequence_number,
            run,
        });
        if run >= LATCH_AFTER {
            tracing::info!(named = %self.remote, actual = %from, "RTP latched to the source the peer sends from");
            self.remote = from;
            self.heard_remote = true;
            self.candidate = None;
            self.events.push(MediaEvent::Latched(from));
        }
    }

    /// The next 20 ms of audio to play; call once per frame period.
    pub fn play_frame(&mut self, now: Instant) -> Vec<i16> {
        if !self.silent && now.saturating_duration_since(self.last_received) >= self.media_timeout {
            self.silent = true;
            self.events.push(MediaEvent::NoMedia {
                silent_for: now.saturating_duration_since(self.last_received),
            });
        }
        let mut playout = self.jitter.pop(now);
        if let Playout::Excess(p) = &playout {
            // Decoded either way, so the decoder's state follows the stream.
            let frame = if p.is_empty() {
                Ok(Vec::new())
            } else {
                self.decoder.decode(p)
            };
            match frame {
                // Only inside a pause: a quiet frame alone may be the
                // closure of a plosive, and cutting it warps the word.
                Ok(f) if !is_quiet(&f) || self.quiet_run < PAUSE_FRAMES => return self.fit(f),
                _ => {
                    self.jitter.dropped_excess();
                    playout = self.jitter.pop(now);
                }
            }
        }
        let decoded = match playout {
            Playout::Packet(p) | Playout::Excess(p) if p.is_empty() => self.decoder.conceal(),
            Playout::Excess(p) => self.decoder.decode(&p),
            Playout::Packet(p) => self.decoder.decode(&p),
            Playout::Fec(next) => self.decoder.decode_fec(&next),
            Playout::Conceal => self.decoder.conceal(),
            Playout::Silence => return self.fit(Vec::new()),
        };
        let frame = match decoded {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, "undecodable frame concealed");
                self.stats.decode_errors += 1;
                self.decoder.conceal().unwrap_or_default()
            }
        };
        self.fit(frame)
    }

    /// Silence to play *before* the frame just taken, so that packets keep
    /// their margin before their turn ([`JitterBuffer::realign`]); only
    /// when the frame before it was quiet, where a few milliseconds more of
    /// pause are not heard. The silence before a stream's first packet
    /// counts, so a call starts with the margin.
    pub fn playout_pad(&mut self) -> Duration {
        if !self.quiet_before {
            return Duration::ZERO;
        }
        self.jitter.realign()
    }

    /// A decoded frame at exactly one frame's length, counted into the
    /// run of quiet frames.
    fn fit(&mut self, mut frame: Vec<i16>) -> Vec<i16> {
        frame.resize(self.frame_samples(), 0);
        self.quiet_before = self.quiet_run > 0;
        self.quiet_run = if is_quiet(&frame) {
            self.quiet_run.saturating_add(1)
        } else {
            0
        };
        frame
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        (!self.events.is_empty()).then(|| self.events.remove(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::sdp::Direction;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const ALICE: &str = "127.0.0.1:40000";
    const BOB: &str = "127.0.0.1:50000";

    fn negotiated(codec: Codec, remote: &str) -> Negotiated {
        Negotiated {
            remote_rtp: remote.parse().unwrap(),
            codec,
            payload_type: codec.default_payload_type(),
            telephone_event: None,
            direction: Direction::SendRecv,
            remote_ptime: Some(20),
        }
    }

    /// Alice talks to Bob for `seconds` over a link with `loss`; returns
    /// Bob's stream (for its stats) and the energy ratio out/in in dB.
    fn talk(codec: Codec, seconds: u32, loss: f64, seed: u64) -> (MediaStream, f64) {
        let t0 = Instant::now();
        let mut alice = MediaStream::new(t0, &negotiated(codec, BOB), 1, 100, 1000).unwrap();
        let mut bob = MediaStream::new(t0, &negotiated(codec, ALICE), 2, 200, 2000).unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let n = alice.frame_samples();
        let frames = (seconds * 50) as usize;
        let signal = crate::media::test_signal::voice(codec.clock_rate(), frames * n);
        let (mut energy_in, mut energy_out) = (0.0, 0.0);
        for (f, pcm) in signal.chunks(n).enumerate() {
            let now = t0 + Duration::from_millis(20 * f as u64);
            energy_in += pcm.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>();
            let packet = alice.send_frame(pcm).unwrap();
            if rng.random::<f64>() >= loss {
                bob.handle_datagram(
                    now + Duration::from_millis(30),
                    ALICE.parse().unwrap(),
                    &packet,
                );
            }
            let out = bob.play_frame(now + Duration::from_millis(30));
            assert_eq!(out.len(), n);
            energy_out += out.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>();
        }
        (bob, 10.0 * (energy_out / energy_in).log10())
    }

    #[test]
    fn clean_call_delivers_every_frame() {
        for codec in [Codec::Opus, Codec::Pcmu, Codec::Pcma] {
            let (bob, level_db) = talk(codec, 5, 0.0, 1);
            let s = bob.stats();
            assert_eq!(s.received, 250, "{codec:?}: {s:?}");
            assert_eq!(s.jitter.lost + s.jitter.late, 0, "{codec:?}: {s:?}");
            assert!(
                level_db.abs() < 2.0,
                "{codec:?}: level changed by {level_db:.1} dB"
            );
        }
    }

    #[test]
    fn opus_recovers_isolated_losses_with_fec() {
        let (bob, level_db) = talk(Codec::Opus, 10, 0.10, 2);
        let s = bob.stats();
        assert!(s.jitter.lost > 20, "{s:?}");
        assert!(
            s.jitter.fec_recovered * 10 >= s.jitter.lost * 8,
            "most losses are single and recovered: {s:?}"
        );
        assert!(
            level_db.abs() < 3.0,
            "audio keeps its level through loss: {level_db:.1} dB"
        );
    }

    #[test]
    fn strangers_and_garbage_are_dropped_and_the_call_goes_on() {
        let t0 = Instant::now();
        let mut bob = MediaStream::new(t0, &negotiated(Codec::Pcmu, ALICE), 2, 200, 2000).unwrap();
        let mut alice = MediaStream::new(t0, &negotiated(Codec::Pcmu, BOB), 1, 100, 1000).unwrap();
        let good = alice.send_frame(&vec![1000; 160]).unwrap();
        // Media flows: from now on only Alice's address counts.
        bob.handle_datagram(t0, ALICE.parse().unwrap(), &good);
        let good = alice.send_frame(&vec![1000; 160]).unwrap();
        let stranger: SocketAddr = "127.0.0.9:40000".parse().unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        for i in 0..1000 {
            bob.handle_datagram(t0, stranger, &good);
            // Random bytes, but never version 2, so none can pass for RTP.
            let len = rng.random_range(0..40);
            let mut junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if let Some(first) = junk.first_mut() {
                *first &= 0x3f;
            }
            bob.handle_datagram(t0, ALICE.parse().unwrap(), &junk);
            if i % 100 == 0 {
                bob.handle_datagram(t0, ALICE.parse().unwrap(), &good[..good.len().min(5)]);
            }
        }
        let mut other_pt = good.to_vec();
        other_pt[1] = 96;
        bob.handle_datagram(t0, ALICE.parse().unwrap(), &other_pt);
        bob.handle_datagram(t0, ALICE.parse().unwrap(), &good);
        let s = bob.stats();
        assert_eq!(s.foreign, 1000);
        assert_eq!(s.malformed, 1010, "{s:?}");
        assert_eq!(s.unexpected_payload_type, 1);
        assert_eq!(s.received, 2, "the real packets still get through: {s:?}");
        assert!(
            bob.play_frame(t0 + Duration::from_millis(40))
                .iter()
                .any(|x| *x != 0),
            "and plays"
        );
    }

    #[test]
    fn a_peer_sending_from_another_address_is_latched_on_to() {
        let t0 = Instant::now();
        let mut bob = MediaStream::new(t0, &negotiated(Codec::Pcmu, ALICE), 2, 200, 2000).unwrap();
        let mut alice = MediaStream::new(t0, &negotiated(Codec::Pcmu, BOB), 1, 100, 1000).unwrap();
        // Alice's packets leave from another address of hers (or a NAT).
        let actual: SocketAddr = "127.0.0.7:41000".parse().unwrap();
        for i in 1..=LATCH_AFTER {
            let packet = alice.send_frame(&[1000; 160]).unwrap();
            assert!(
                bob.handle_datagram(t0, actual, &packet).is_some(),
                "packet {i} plays"
            );
            assert_eq!(bob.remote() == actual, i == LATCH_AFTER, "packet {i}");
        }
        assert_eq!(bob.remote(), actual, "bob now sends there too");
        assert_eq!(bob.poll_event(), Some(MediaEvent::Latched(actual)));

        // Once media flows, an in-sequence flood from a stranger is ignored.
        let mut mallory = MediaStream::new(t0, &negotiated(Codec::Pcmu, BOB), 9, 0, 0).unwrap();
        let stranger: SocketAddr = "127.0.0.9:40000".parse().unwrap();
        for _ in 0..100 {
            let packet = mallory.send_frame(&[5000; 160]).unwrap();
            assert_eq!(bob.handle_datagram(t0, stranger, &packet), None);
        }
        assert_eq!(bob.remote(), actual);
        assert_eq!(bob.stats().foreign, 100);
    }

    #[test]
    fn delay_is_shortened_in_pauses_not_in_speech() {
        let t0 = Instant::now();
        let mut bob = MediaStream::new(t0, &negotiated(Codec::Pcmu, ALICE), 2, 200, 2000).unwrap();
        let mut alice = MediaStream::new(t0, &negotiated(Codec::Pcmu, BOB), 1, 100, 1000).unwrap();
        let tone: Vec<i16> = (0..160)
            .map(|i| (8000.0 * (f64::from(i) * 0.3).sin()) as i16)
            .collect();
        let quiet = vec![0i16; 160];
        // 200 ms of talk arrives in one burst (as when a peer starts
        // sending before we read), then talk and pauses arrive on time.
        let script: Vec<&[i16]> = (0..210)
            .map(|f| {
                if f < 10 || (f / 25) % 2 == 1 {
                    &tone[..]
                } else {
                    &quiet[..]
                }
            })
            .collect();
        let loud_sent = script.iter().filter(|f| !is_quiet(f)).count();
        let mut loud_heard = 0;
        for (f, frame) in script.iter().enumerate() {
            let packet = alice.send_frame(frame).unwrap();
            let arrival = t0 + Duration::from_millis(20 * (f.saturating_sub(9) as u64));
            bob.handle_datagram(arrival, ALICE.parse().unwrap(), &packet);
            if f >= 9 {
                loud_heard += usize::from(!is_quiet(&bob.play_frame(arrival)));
            }
        }
        for f in 0..20 {
            let now = t0 + Duration::from_millis(20 * (201 + f));
            loud_heard += usize::from(!is_quiet(&bob.play_frame(now)));
        }
        let s = bob.stats().jitter;
        assert_eq!(loud_heard, loud_sent, "no speech dropped: {s:?}");
        assert!(
            s.accelerated >= 5,
            "the burst's delay went in pauses: {s:?}"
        );
        assert!(bob.jitter.buffered() <= Duration::from_millis(60), "{s:?}");
    }

    #[test]
    fn silence_on_the_wire_is_reported_then_cleared() {
        let t0 = Instant::now();
        let mut bob = MediaStream::new(t0, &negotiated(Codec::Pcma, ALICE), 2, 200, 2000).unwrap();
        bob.set_media_timeout(Duration::from_secs(2));
        bob.play_frame(t0 + Duration::from_secs(1));
        assert_eq!(bob.poll_event(), None);
        bob.play_frame(t0 + Duration::from_secs(2));
        assert_eq!(
            bob.poll_event(),
            Some(MediaEvent::NoMedia {
                silent_for: Duration::from_secs(2)
            })
        );
        bob.play_frame(t0 + Duration::from_secs(3));
        assert_eq!(bob.poll_event(), None, "reported once");
        let mut alice = MediaStream::new(t0, &negotiated(Codec::Pcma, BOB), 1, 100, 1000).unwrap();
        let p = alice.send_frame(&vec![0; 160]).unwrap();
        bob.handle_datagram(t0 + Duration::from_secs(4), ALICE.parse().unwrap(), &p);
        assert_eq!(bob.poll_event(), Some(MediaEvent::MediaResumed));
    }

    #[test]
    fn dtmf_digits_reach_the_peer_once_each() {
        let t0 = Instant::now();
        let mut with_events = negotiated(Codec::Opus, BOB);
        with_events.telephone_event = Some(101);
        let mut alice = MediaStream::new(t0, &with_events, 1, 100, 1000).unwrap();
        with_events.remote_rtp = ALICE.parse().unwrap();
        let mut bob = MediaStream::new(t0, &with_events, 2, 200, 2000).unwrap();
        assert_eq!(
            alice.send_dtmf("12x"),
            Err(DtmfError::NotDigits("x".into()))
        );
        alice.send_dtmf("#0").unwrap();
        let silence = vec![0i16; 960];
        let mut digits = String::new();
        for f in 0..60u64 {
            let now = t0 + Duration::from_millis(20 * f);
            let packet = alice.send_frame(&silence).unwrap();
            bob.handle_datagram(now, ALICE.parse().unwrap(), &packet);
            bob.play_frame(now);
            while let Some(e) = bob.poll_event() {
                if let MediaEvent::Dtmf(d) = e {
                    digits.push(d);
                }
            }
        }
        assert_eq!(digits, "#0", "nothing of the rejected string was sent");
        let s = bob.stats();
        assert_eq!((s.unexpected_payload_type, s.jitter.lost), (0, 0), "{s:?}");
        let mut plain = MediaStream::new(t0, &negotiated(Codec::Pcmu, BOB), 3, 0, 0).unwrap();
        assert_eq!(plain.send_dtmf("1"), Err(DtmfError::NotNegotiated));
    }

    #[test]
    fn packets_carry_rtp_fields() {
        let t0 = Instant::now();
        let mut alice = MediaStream::new(
            t0,
            &negotiated(Codec::Pcmu, BOB),
            0xabcd,
            65_535,
            u32::MAX - 100,
        )
        .unwrap();
        let first = alice.send_frame(&vec![0; 160]).unwrap();
        let second = alice.send_frame(&vec![0; 160]).unwrap();
        let parse = |b: &Bytes| RtpPacket::unmarshal(&mut &b[..]).unwrap();
        let (a, b) = (parse(&first), parse(&second));
        assert!(
            a.header.marker && !b.header.marker,
            "marker on the first packet only"
        );
        assert_eq!(
            (a.header.sequence_number, b.header.sequence_number),
            (65_535, 0)
        );
        assert_eq!(b.header.timestamp, (u32::MAX - 100).wrapping_add(160));
        assert_eq!(
            (a.header.ssrc, a.header.payload_type, a.payload.len()),
            (0xabcd, 0, 160)
        );
    }
}
