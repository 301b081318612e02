//! Our position and presence as documents for the wire, and what the
//! documents others send us say — the driver's translation between the
//! user's sharing rules, PIDF-LO bodies and public events.

use crate::location::sharing::Sharing;
use crate::location::{pidf, Location, LocationError};
use crate::sip::call::Body;
use crate::sip::subscription::{SubscriptionEvent, SubscriptionState};
use crate::sip::uri::Uri;

use super::event::Event;

/// Where we are and with whom we share it.
#[derive(Debug)]
pub(crate) struct Whereabouts {
    /// Our address of record, the documents' entity.
    pub aor: String,
    /// Our position, as the user last set it.
    pub location: Option<Location>,
    /// The user's sharing rules.
    pub sharing: Sharing,
}

impl Whereabouts {
    /// Our position as `peer` may see it, if the user shares it with them
    /// (coarsened as the user asked).
    pub fn shared_with(&self, peer: &Uri) -> Option<Location> {
        let location = self.location.as_ref()?;
        self.sharing
            .allows(&peer.to_string())
            .then(|| self.sharing.reduce(location))
    }

    /// A position from [`Whereabouts::shared_with`] as PIDF-LO for a call.
    pub fn for_call(&self, shared: Location) -> Body {
        self.document(None, Some(shared))
    }

    /// Our presence: the basic status, and our position when the user
    /// shares it at all. The presence server hands it to every watcher it
    /// authorises; which ones is the server's rule (XCAP), not ours.
    pub fn presence(&self, open: bool) -> Body {
        let location = self
            .location
            .as_ref()
            .filter(|_| self.sharing.is_on())
            .map(|l| self.sharing.reduce(l));
        self.document(Some(open), location)
    }

    fn document(&self, open: Option<bool>, location: Option<Location>) -> Body {
        let text = pidf::encode(&pidf::Presence {
            entity: self.aor.clone(),
            open,
            location,
            method: None,
            retransmission_allowed: false,
            retention_expiry: None,
        });
        Body {
            content_type: pidf::CONTENT_TYPE.into(),
            bytes: text.into(),
        }
    }
}

/// The position in a PIDF-LO a call's peer sent (RFC 6442); a document
/// without one is no position.
pub(crate) fn peer_location(body: &Body) -> Result<Option<Location>, LocationError> {
    pidf::decode(&body.bytes).map(|presence| presence.location)
}

/// A friend's NOTIFY (or failed SUBSCRIBE) as events: the `friend` event
/// with a status (`open`, `closed`, `pending`, `terminated`, `unknown`)
/// and position, after a warning when the document could not be read.
pub(crate) fn friend_events(uri: String, event: SubscriptionEvent) -> Vec<Event> {
    let mut events = Vec::new();
    let (status, location) = match event {
        SubscriptionEvent::Notified {
            state: SubscriptionState::Active,
            body: Some(body),
        } => match pidf::decode(&body.bytes) {
            Ok(presence) => {
                let status = match presence.open {
                    Some(true) => "open",
                    Some(false) => "closed",
                    None => "unknown",
                };
                (status, presence.location)
            }
            Err(e) => {
                events.push(Event::Error {
                    message: format!("{uri}: unreadable presence ignored: {e}"),
                });
                ("unknown", None)
            }
        },
        SubscriptionEvent::Notified {
            state: SubscriptionState::Active,
            body: None,
        } => ("unknown", None),
        SubscriptionEvent::Notified {
            state: SubscriptionState::Pending,
            ..
        } => ("pending", None),
        SubscriptionEvent::Notified {
            state: SubscriptionState::Terminated(_),
            ..
        } => ("terminated", None),
        SubscriptionEvent::Failed {
            status, message, ..
        } => {
            events.push(Event::Error {
                message: match status {
                    Some(s) => format!("watching {uri} failed ({s}): {message}"),
                    None => format!("watching {uri} failed: {message}"),
                },
            });
            return events;
        }
    };
    events.push(Event::Friend {
        uri,
        status: status.to_owned(),
        location,
    });
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::Timestamp;

    fn here() -> Location {
        Location::new(
            48.2085,
            16.3721,
            10.0,
            Timestamp::parse("2026-11-22T04:00:00Z").ok(),
        )
        .unwrap()
    }

    #[test]
    fn calls_carry_a_position_only_to_the_allowed() {
        let mut w = Whereabouts {
            aor: "sip:alice@example.test".into(),
            location: Some(here()),
            sharing: Sharing::default(),
        };
        let bob = Uri::parse("sip:bob@example.test").unwrap();
        assert!(w.shared_with(&bob).is_none());
        assert!(!String::from_utf8_lossy(&w.presence(true).bytes).contains("gml:pos"));
        w.sharing = Sharing::with(["bob@example.test".to_owned()], None);
        let body = w.for_call(w.shared_with(&bob).unwrap());
        assert_eq!(pidf::decode(&body.bytes).unwrap().location, Some(here()));
        assert!(w
            .shared_with(&Uri::parse("sip:carol@example.test").unwrap())
            .is_none());
    }

    #[test]
    fn notifies_become_friend_events() {
        let uri = "sip:bob@example.test".to_owned();
        let doc = |open| Body {
            content_type: pidf::CONTENT_TYPE.into(),
            bytes: pidf::encode(&pidf::Presence {
                entity: uri.clone(),
                open: Some(open),
                location: Some(here()),
                method: None,
                retransmission_allowed: false,
                retention_expiry: None,
            })
            .into(),
        };
        let active = |body| SubscriptionEvent::Notified {
            state: SubscriptionState::Active,
            body,
        };
        assert_eq!(
            friend_events(uri.clone(), active(Some(doc(false)))),
            vec![Event::Friend {
                uri: uri.clone(),
                status: "closed".into(),
                location: Some(here()),
            }]
        );
        let garbage = Body {
            content_type: pidf::CONTENT_TYPE.into(),
            bytes: "<presence".into(),
        };
        let events = friend_events(uri.clone(), active(Some(garbage)));
        assert!(
            matches!(&events[..], [Event::Error { .. }, Event::Friend { status, location: None, .. }] if status == "unknown")
        );
        let pending = SubscriptionEvent::Notified {
            state: SubscriptionState::Pending,
            body: None,
        };
        assert!(
            matches!(&friend_events(uri, pending)[..], [Event::Friend { status, .. }] if status == "pending")
        );
    }
}
