//! Reliable provisional responses (RFC 3262, "100rel"), sans-IO: the
//! callee side retransmits its 180 until the caller's PRACK confirms it;
//! the caller side answers each new one with a PRACK.

use std::time::{Duration, Instant};

use super::message::{Headers, Response};

/// The option tag.
pub const TAG: &str = "100rel";

/// Callee: a provisional response sent reliably, until it is PRACKed.
#[derive(Debug, Clone)]
pub struct ReliableProvisional {
    response: Response,
    rseq: u32,
    invite_seq: u32,
    interval: Duration,
    next: Instant,
    give_up: Instant,
}

/// What a pending reliable provisional needs at some moment.
#[derive(Debug, Clone, PartialEq)]
pub enum Due {
    /// Send it again.
    Resend(Response),
    /// 64·T1 without a PRACK: the INVITE should be refused (5xx).
    GiveUp,
}

impl ReliableProvisional {
    /// Makes `response` reliable: `Require: 100rel` and `RSeq`, first sent
    /// at `now`, resent every T1 doubling, given up after 64·T1.
    pub fn new(
        mut response: Response,
        rseq: u32,
        invite_seq: u32,
        now: Instant,
        t1: Duration,
    ) -> Self {
        response.headers.push("Require", TAG);
        response.headers.push("RSeq", rseq.to_string());
        ReliableProvisional {
            response,
            rseq,
            invite_seq,
            interval: t1,
            next: now + t1,
            give_up: now + t1 * 64,
        }
    }

    /// The response to send now.
    pub fn response(&self) -> &Response {
        &self.response
    }

    /// Whether a PRACK's `RAck` (`rseq cseq INVITE`) confirms this one.
    pub fn acknowledged_by(&self, rack: &str) -> bool {
        let mut parts = rack.split_whitespace();
        parts.next().and_then(|r| r.parse::<u32>().ok()) == Some(self.rseq)
            && parts.next().and_then(|c| c.parse::<u32>().ok()) == Some(self.invite_seq)
            && parts
                .next()
                .is_some_and(|m| m.eq_ignore_ascii_case("INVITE"))
    }

    /// When [`ReliableProvisional::due`] has something next.
    pub fn deadline(&self) -> Instant {
        self.next.min(self.give_up)
    }

    /// What is due at `now`; resending doubles the interval.
    pub fn due(&mut self, now: Instant) -> Option<Due> {
        if now >= self.give_up {
            return Some(Due::GiveUp);
        }
        if now < self.next {
            return None;
        }
        self.interval *= 2;
        self.next = now + self.interval;
        Some(Due::Resend(self.response.clone()))
    }
}

/// Caller: the `RSeq` of a provisional response sent reliably, if it is.
pub fn rseq(headers: &Headers) -> Option<u32> {
    if !headers.lists("Require", TAG) {
        return None;
    }
    headers.get("RSeq")?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{self, Message};

    fn ringing() -> Response {
        let text = "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
                    From: <sip:alice@example.test>;tag=a\r\nTo: <sip:bob@example.test>;tag=b\r\n\
                    Call-ID: c\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n";
        match message::parse(text.as_bytes()).unwrap() {
            Message::Response(r) => r,
            Message::Request(_) => unreachable!(),
        }
    }

    #[test]
    fn resent_with_doubling_intervals_until_given_up() {
        let t0 = Instant::now();
        let t1 = Duration::from_millis(500);
        let mut p = ReliableProvisional::new(ringing(), 1, 7, t0, t1);
        assert_eq!(rseq(&p.response().headers), Some(1));
        assert_eq!(p.due(t0 + Duration::from_millis(499)), None);
        let mut resent = Vec::new();
        let mut now = t0;
        while now < t0 + t1 * 64 {
            now += Duration::from_millis(100);
            if let Some(Due::Resend(_)) = p.due(now) {
                resent.push((now - t0).as_millis());
            }
        }
        assert_eq!(resent, [500, 1500, 3500, 7500, 15_500, 31_500]);
        assert_eq!(p.due(t0 + t1 * 64), Some(Due::GiveUp));
    }

    #[test]
    fn only_the_matching_rack_acknowledges() {
        let p =
            ReliableProvisional::new(ringing(), 1, 7, Instant::now(), Duration::from_millis(500));
        assert!(p.acknowledged_by("1 7 INVITE"));
        assert!(!p.acknowledged_by("2 7 INVITE"));
        assert!(!p.acknowledged_by("1 8 INVITE"));
        assert!(!p.acknowledged_by("garbage"));
        assert_eq!(
            rseq(&ringing().headers),
            None,
            "not reliable without Require: 100rel"
        );
    }
}
