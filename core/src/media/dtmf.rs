//! DTMF as RTP telephone-events (RFC 4733), sans-IO.
//!
//! Sending: each digit is an event of 100 ms, one packet per 20 ms frame
//! with a growing duration and the event's start timestamp; the final
//! packet (E bit) goes three times, as §2.5.1.4 recommends for loss; 60 ms
//! of audio separate digits. Receiving: an event is reported once, when
//! its first packet arrives, however many packets (or retransmissions of
//! the end) follow.

use std::collections::VecDeque;

/// An RFC 4733 telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code: 0–9, 10 `*`, 11 `#`, 12–15 `A`–`D`.
    pub event: u8,
    /// Whether this is the end of the event.
    pub end: bool,
    /// Power level in -dBm0 (0–63).
    pub volume: u8,
    /// Duration so far, in timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// The 4-byte payload.
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3f),
            d[0],
            d[1],
        ]
    }

    /// Parses a payload; `None` if it is shorter than 4 bytes.
    pub fn parse(bytes: &[u8]) -> Option<TelephoneEvent> {
        let [event, flags, d0, d1, ..] = *bytes else {
            return None;
        };
        Some(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3f,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }
}

/// The event code of a DTMF character.
pub fn event_code(digit: char) -> Option<u8> {
    match digit.to_ascii_uppercase() {
        d @ '0'..='9' => Some(d as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        d @ 'A'..='D' => Some(d as u8 - b'A' + 12),
        _ => None,
    }
}

/// The DTMF character of an event code.
pub fn digit(code: u8) -> Option<char> {
    match code {
        0..=9 => Some(char::from(b'0' + code)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + code - 12)),
        _ => None,
    }
}

/// A packet the sender wants to go out instead of this frame's audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// The payload.
    pub event: TelephoneEvent,
    /// RTP timestamp: the event's start.
    pub timestamp: u32,
    /// RTP marker: set on an event's first packet.
    pub marker: bool,
}

const EVENT_FRAMES: u16 = 5;
const END_REPEATS: u8 = 3;
const GAP_FRAMES: u8 = 3;
const VOLUME: u8 = 10;

#[derive(Debug, Clone, Copy)]
struct Current {
    code: u8,
    start: u32,
    frames: u16,
    end_sent: u8,
}

/// Turns digits into telephone-event packets, frame by frame.
#[derive(Debug)]
pub struct DtmfSender {
    samples_per_frame: u16,
    queue: VecDeque<u8>,
    current: Option<Current>,
    gap: u8,
}

impl DtmfSender {
    /// A sender for frames of `samples_per_frame` timestamp units.
    pub fn new(samples_per_frame: u16) -> DtmfSender {
        DtmfSender {
            samples_per_frame,
            queue: VecDeque::new(),
            current: None,
            gap: 0,
        }
    }

    /// Queues digits, or none of them if any character is not DTMF; returns
    /// those characters.
    pub fn send(&mut self, digits: &str) -> Vec<char> {
        let rejected: Vec<char> = digits
            .chars()
            .filter(|c| event_code(*c).is_none())
            .collect();
        if rejected.is_empty() {
            self.queue.extend(digits.chars().filter_map(event_code));
        }
        rejected
    }

    /// Whether digits are queued or being sent.
    pub fn is_busy(&self) -> bool {
        self.current.is_some() || !self.queue.is_empty()
    }

    /// For the frame whose audio would carry `timestamp`: the event packet
    /// to send instead, or `None` to send audio.
    pub fn next_packet(&mut self, timestamp: u32) -> Option<EventPacket> {
        if self.current.is_none() {
            if self.gap > 0 {
                self.gap -= 1;
                return None;
            }
            let code = self.queue.pop_front()?;
            self.current = Some(Current {
                code,
                start: timestamp,
                frames: 0,
                end_sent: 0,
            });
        }
        let cur = self.current.as_mut()?;
        let first = cur.frames == 0;
        cur.frames = cur.frames.saturating_add(1).min(EVENT_FRAMES);
        let end = cur.frames >= EVENT_FRAMES;
        if end {
            cur.end_sent += 1;
        }
        let packet = EventPacket {
            event: TelephoneEvent {
                event: cur.code,
                end,
                volume: VOLUME,
                duration: cur.frames.saturating_mul(self.samples_per_frame),
            },
            timestamp: cur.start,
            marker: first,
        };
        if cur.end_sent >= END_REPEATS {
            self.current = None;
            self.gap = GAP_FRAMES;
        }
        Some(packet)
    }
}

/// Reports each received event once.
#[derive(Debug, Default)]
pub struct DtmfReceiver {
    last_start: Option<u32>,
}

impl DtmfReceiver {
    /// A telephone-event packet with RTP `timestamp` arrived; returns the
    /// digit if this is a new event.
    pub fn handle(&mut self, timestamp: u32, payload: &[u8]) -> Option<char> {
        let event = TelephoneEvent::parse(payload)?;
        if self.last_start == Some(timestamp) {
            return None;
        }
        self.last_start = Some(timestamp);
        digit(event.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_rfc4733_layout() {
        let e = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 800,
        };
        assert_eq!(e.to_bytes(), [11, 0x8a, 0x03, 0x20]);
        assert_eq!(TelephoneEvent::parse(&e.to_bytes()), Some(e));
        assert_eq!(TelephoneEvent::parse(&[1, 2, 3]), None);
    }

    #[test]
    fn digits_map_both_ways() {
        for (c, code) in [
            ('0', 0),
            ('9', 9),
            ('*', 10),
            ('#', 11),
            ('a', 12),
            ('D', 15),
        ] {
            assert_eq!(event_code(c), Some(code));
            assert_eq!(
                digit(code).map(|d| d.to_ascii_uppercase()),
                Some(c.to_ascii_uppercase())
            );
        }
        assert_eq!(event_code('x'), None);
        assert_eq!(digit(16), None);
    }

    #[test]
    fn a_digit_is_five_frames_then_two_more_ends_then_a_gap() {
        let mut s = DtmfSender::new(160);
        assert_eq!(s.send("1x#"), ['x']);
        assert!(!s.is_busy(), "nothing of a bad string is sent");
        assert!(s.send("1#").is_empty());
        let mut ts = 1000u32;
        let mut packets = Vec::new();
        for _ in 0..30 {
            packets.push(s.next_packet(ts));
            ts += 160;
        }
        let first: Vec<_> = packets[..7]
            .iter()
            .map(|p| p.expect("event packets"))
            .collect();
        assert!(first
            .iter()
            .all(|p| p.timestamp == 1000 && p.event.event == 1));
        assert!(first[0].marker && !first[1].marker);
        assert_eq!(
            first.iter().map(|p| p.event.duration).collect::<Vec<_>>(),
            [160, 320, 480, 640, 800, 800, 800]
        );
        assert_eq!(
            first.iter().filter(|p| p.event.end).count(),
            3,
            "the end goes three times"
        );
        assert!(
            packets[7..10].iter().all(Option::is_none),
            "a 60 ms gap of audio"
        );
        let hash = packets[10].expect("then #");
        assert_eq!(
            (hash.event.event, hash.timestamp, hash.marker),
            (11, 1000 + 160 * 10, true)
        );
    }

    #[test]
    fn receiver_reports_each_event_once() {
        let mut s = DtmfSender::new(160);
        s.send("55");
        let mut r = DtmfReceiver::default();
        let mut got = String::new();
        let mut ts = 0u32;
        while s.is_busy() {
            if let Some(p) = s.next_packet(ts) {
                got.extend(r.handle(p.timestamp, &p.event.to_bytes()));
            }
            ts += 160;
        }
        assert_eq!(got, "55", "two events of the same digit are two digits");
        assert_eq!(
            r.handle(0, &[99, 0, 0, 0]),
            None,
            "an unknown event is not a digit"
        );
    }
}
