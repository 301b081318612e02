//! Session timers (RFC 4028), sans-IO: a call that the peer asks to keep
//! alive is refreshed by one side (a re-INVITE every half interval), and
//! the other side ends it with a BYE when no refresh comes in time. This
//! is how servers and PBXs clean up calls whose phone vanished.

use std::time::{Duration, Instant};

use super::message::{Headers, Request, Response};

/// The shortest interval we accept (RFC 4028's minimum).
pub const MIN_SE: u32 = 90;

/// Who sends the refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// We re-INVITE every half interval.
    Us,
    /// The peer does; we end the call if it stops.
    Them,
}

/// What the timer wants done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Send a refresh re-INVITE now.
    Refresh,
    /// The peer did not refresh: end the call.
    Expired,
}

/// Why an INVITE's session timer cannot be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Session-Expires below our minimum of {min_se} s")]
pub struct TooSmall {
    /// Our minimum, for the 422's Min-SE header.
    pub min_se: u32,
}

/// A header our response or request carries for the timer: (name, value).
pub type TimerHeader = (&'static str, String);

/// A running session timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    interval: u32,
    refresher: Refresher,
    refreshed_at: Instant,
    /// A refresh we sent is in flight: do not send another.
    refreshing: bool,
}

/// `Session-Expires` (or its compact `x`): the interval and the
/// `refresher` parameter (`uac` or `uas`), if any.
fn session_expires(headers: &Headers) -> Option<(u32, Option<String>)> {
    let value = headers.get("Session-Expires")?;
    let mut parts = value.split(';');
    let interval = parts.next()?.trim().parse().ok()?;
    let refresher = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("refresher")
            .then(|| v.trim().to_ascii_lowercase())
    });
    Some((interval, refresher))
}

impl SessionTimer {
    /// UAS: the timer an INVITE asks for, and the headers our 2xx carries
    /// for it; `Ok(None)` when it asks for none.
    pub fn for_invite(
        invite: &Request,
        now: Instant,
    ) -> Result<Option<(SessionTimer, Vec<TimerHeader>)>, TooSmall> {
        let Some((interval, refresher)) = session_expires(&invite.headers) else {
            return Ok(None);
        };
        if interval < MIN_SE {
            return Err(TooSmall { min_se: MIN_SE });
        }
        let uac_supports =
            invite.headers.lists("Supported", "timer") || invite.headers.lists("Require", "timer");
        // §9: the UAC's choice stands; without one, it refreshes if it can.
        let uac_refreshes = match refresher.as_deref() {
            Some("uac") => true,
            Some("uas") => false,
            _ => uac_supports,
        };
        let timer = SessionTimer {
            interval,
            refresher: if uac_refreshes {
                Refresher::Them
            } else {
                Refresher::Us
            },
            refreshed_at: now,
            refreshing: false,
        };
        let side = if uac_refreshes { "uac" } else { "uas" };
        let mut headers = vec![("Session-Expires", format!("{interval};refresher={side}"))];
        if uac_supports {
            headers.push(("Require", "timer".to_owned()));
        }
        Ok(Some((timer, headers)))
    }

    /// UAC: the timer a 2xx to our INVITE sets, if any.
    pub fn from_response(response: &Response, now: Instant) -> Option<SessionTimer> {
        let (interval, refresher) = session_expires(&response.headers)?;
        Some(SessionTimer {
            interval: interval.max(MIN_SE),
            // §7.2: a 2xx without a refresher leaves it to the UAC (us).
            refresher: if refresher.as_deref() == Some("uas") {
                Refresher::Them
            } else {
                Refresher::Us
            },
            refreshed_at: now,
            refreshing: false,
        })
    }

    /// Who refreshes.
    pub fn refresher(&self) -> Refresher {
        self.refresher
    }

    /// The headers a refresh re-INVITE of ours carries.
    pub fn refresh_headers(&self) -> Vec<TimerHeader> {
        vec![
            (
                "Session-Expires",
                format!("{};refresher=uac", self.interval),
            ),
            ("Supported", "timer".to_owned()),
        ]
    }

    /// A session refresh succeeded (either side's re-INVITE got its 2xx).
    pub fn refreshed(&mut self, now: Instant) {
        self.refreshed_at = now;
        self.refreshing = false;
    }

    /// A refresh of ours is on its way.
    pub fn refresh_sent(&mut self) {
        self.refreshing = true;
    }

    /// When something is due: our refresh at half the interval, or the
    /// peer's deadline (the interval less a third of it, at most 32 s, §10).
    pub fn deadline(&self) -> Option<Instant> {
        let interval = Duration::from_secs(u64::from(self.interval));
        match self.refresher {
            Refresher::Us if self.refreshing => None,
            Refresher::Us => Some(self.refreshed_at + interval / 2),
            Refresher::Them => {
                Some(self.refreshed_at + interval - (interval / 3).min(Duration::from_secs(32)))
            }
        }
    }

    /// What is due at `now`, if anything.
    pub fn due(&self, now: Instant) -> Option<Due> {
        self.deadline()
            .filter(|d| now >= *d)
            .map(|_| match self.refresher {
                Refresher::Us => Due::Refresh,
                Refresher::Them => Due::Expired,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{self, Message};

    fn invite(extra: &str) -> Request {
        let text = format!(
            "INVITE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
             From: <sip:alice@example.test>;tag=a\r\nTo: <sip:bob@example.test>\r\nCall-ID: c\r\n\
             CSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match message::parse(text.as_bytes()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!(),
        }
    }

    #[test]
    fn uas_follows_the_callers_choice_and_its_support() {
        let t0 = Instant::now();
        let (timer, headers) = SessionTimer::for_invite(
            &invite("Supported: timer, 100rel\r\nSession-Expires: 1800;refresher=uac\r\n"),
            t0,
        )
        .unwrap()
        .unwrap();
        assert_eq!(timer.refresher(), Refresher::Them);
        assert_eq!(
            headers,
            [
                ("Session-Expires", "1800;refresher=uac".to_owned()),
                ("Require", "timer".to_owned())
            ]
        );
        // The peer has until 1800 − 32 s.
        assert_eq!(timer.deadline(), Some(t0 + Duration::from_secs(1768)));
        assert_eq!(timer.due(t0 + Duration::from_secs(1767)), None);
        assert_eq!(
            timer.due(t0 + Duration::from_secs(1768)),
            Some(Due::Expired)
        );

        // A caller without timer support leaves the refreshing to us.
        let (timer, headers) = SessionTimer::for_invite(&invite("x: 300\r\n"), t0)
            .unwrap()
            .unwrap();
        assert_eq!(timer.refresher(), Refresher::Us);
        assert_eq!(
            headers,
            [("Session-Expires", "300;refresher=uas".to_owned())]
        );
        assert_eq!(timer.due(t0 + Duration::from_secs(150)), Some(Due::Refresh));

        assert_eq!(SessionTimer::for_invite(&invite(""), t0), Ok(None));
        assert_eq!(
            SessionTimer::for_invite(&invite("Session-Expires: 60\r\n"), t0),
            Err(TooSmall { min_se: 90 })
        );
    }

    #[test]
    fn a_refresh_in_flight_is_not_repeated_and_resets_the_clock() {
        let t0 = Instant::now();
        let mut timer = SessionTimer {
            interval: 120,
            refresher: Refresher::Us,
            refreshed_at: t0,
            refreshing: false,
        };
        assert_eq!(timer.due(t0 + Duration::from_secs(60)), Some(Due::Refresh));
        timer.refresh_sent();
        assert_eq!(timer.due(t0 + Duration::from_secs(61)), None);
        timer.refreshed(t0 + Duration::from_secs(61));
        assert_eq!(timer.deadline(), Some(t0 + Duration::from_secs(121)));
    }
}
