//! How events are shown: JSON lines (the scripting contract in CLI.md) or
//! one readable line each.

use std::io::Write as _;
use std::time::Instant;

use locus_core::Event;
use serde_json::{json, Map, Value};

/// Writes events to stdout in the chosen format.
#[derive(Debug)]
pub struct Output {
    json: bool,
    started: Instant,
}

impl Output {
    /// An output whose `t` counts from now.
    pub fn new(json: bool) -> Output {
        Output {
            json,
            started: Instant::now(),
        }
    }

    /// Prints one event; `phone` names the phone when several run at once.
    pub fn event(&self, phone: Option<&str>, event: &Event) {
        let t = self.started.elapsed().as_secs_f64();
        let line = if self.json {
            let mut obj = event_json(event);
            obj.insert("t".into(), json!((t * 1000.0).round() / 1000.0));
            if let Some(p) = phone {
                obj.insert("phone".into(), json!(p));
            }
            Value::Object(obj).to_string()
        } else {
            let prefix = phone.map(|p| format!("[{p}] ")).unwrap_or_default();
            format!("{t:7.3}s {prefix}{}", event_text(event))
        };
        let mut out = std::io::stdout().lock();
        // A closed stdout (e.g. piped into `head`) is not worth a panic.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    /// Prints a plain message in text mode (nothing in JSON mode, where
    /// stdout carries events only).
    pub fn note(&self, text: &str) {
        if !self.json {
            let _ = writeln!(std::io::stdout().lock(), "{text}");
        }
    }
}

/// The JSON object for an event, without `t`.
pub fn event_json(event: &Event) -> Map<String, Value> {
    let value = match event {
        Event::Registered {
            server,
            transport,
            expires,
        } => json!({
            "event": "registered", "server": server, "transport": transport.param(), "expires": expires,
        }),
        Event::RegistrationFailed {
            reason,
            status,
            message,
            ..
        } => {
            let mut v = json!({"event": "registration_failed", "reason": reason.as_str(), "message": message});
            if let (Some(status), Value::Object(m)) = (status, &mut v) {
                m.insert("status".into(), json!(status));
            }
            v
        }
        Event::Unregistered => json!({"event": "unregistered"}),
        Event::Unreachable { server, reason } => {
            json!({"event": "unreachable", "server": server, "reason": reason})
        }
        Event::ServerChanged { from, to, reason } => {
            json!({"event": "server_changed", "from": from, "to": to, "reason": reason})
        }
        Event::Friend {
            uri,
            status,
            location,
        } => {
            json!({"event": "friend", "uri": uri, "status": status, "location": location_json(location.as_ref())})
        }
        Event::Error { message } => json!({"event": "error", "message": message}),
        Event::IncomingCall {
            call,
            from,
            location,
        } => {
            json!({"event": "incoming_call", "call": call, "from": from, "location": location_json(location.as_ref())})
        }
        Event::CallLocation { call, location } => {
            json!({"event": "call_location", "call": call, "location": location_json(Some(location))})
        }
        Event::CallState {
            call,
            state,
            reason,
        } => {
            let mut v = json!({"event": "call_state", "call": call, "state": state.as_str()});
            if let (Some(reason), Value::Object(m)) = (reason, &mut v) {
                m.insert("reason".into(), json!(reason));
            }
            v
        }
        Event::CallStats { call, codec, stats } => json!({
            "event": "call_stats", "call": call, "codec": codec,
            "packets_lost": stats.packets_lost, "loss_pct": round2(stats.loss_pct),
            "jitter_ms": round2(stats.jitter_ms), "rtt_ms": stats.rtt_ms.map(round2), "mos": round2(stats.mos),
        }),
        Event::Dtmf { call, digit } => {
            json!({"event": "dtmf", "call": call, "digit": digit.to_string()})
        }
    };
    match value {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn event_text(event: &Event) -> String {
    match event {
        Event::Registered {
            server,
            transport,
            expires,
        } => format!("registered with {server} over {transport}, expires in {expires} s"),
        Event::RegistrationFailed {
            reason,
            message,
            will_retry,
            ..
        } => {
            let then = if *will_retry { "; retrying" } else { "" };
            format!("registration failed ({}): {message}{then}", reason.as_str())
        }
        Event::Unregistered => "unregistered".into(),
        Event::Unreachable { server, reason } => format!("{server} unreachable: {reason}"),
        Event::ServerChanged { from, to, reason } => {
            format!("moved from {from} to {to}: {reason}")
        }
        Event::Friend {
            uri,
            status,
            location: None,
        } => format!("{uri}: {status}"),
        Event::Friend {
            uri,
            status,
            location: Some(l),
        } => format!("{uri}: {status}, {}", place(l)),
        Event::Error { message } => format!("error: {message}"),
        Event::IncomingCall {
            call,
            from,
            location: None,
        } => format!("call {call}: incoming from {from}"),
        Event::IncomingCall {
            call,
            from,
            location: Some(l),
        } => format!("call {call}: incoming from {from}, {}", place(l)),
        Event::CallLocation { call, location } => {
            format!("call {call}: the peer is {}", place(location))
        }
        Event::CallState {
            call,
            state,
            reason,
        } => match reason {
            Some(r) => format!("call {call}: {} ({r})", state.as_str()),
            None => format!("call {call}: {}", state.as_str()),
        },
        Event::CallStats { call, codec, stats } => format!(
            "call {call}: {codec}, {} lost ({:.1} %), jitter {:.1} ms, rtt {}, MOS {:.2}",
            stats.packets_lost,
            stats.loss_pct,
            stats.jitter_ms,
            stats
                .rtt_ms
                .map_or_else(|| "?".to_owned(), |r| format!("{r:.0} ms")),
            stats.mos
        ),
        Event::Dtmf { call, digit } => format!("call {call}: DTMF {digit}"),
    }
}

/// A location for people to read.
fn place(l: &locus_core::location::Location) -> String {
    format!("at {:.5}, {:.5} (± {:.0} m)", l.lat, l.lon, l.radius_m)
}

/// A location as CLI.md writes it, or null.
fn location_json(location: Option<&locus_core::location::Location>) -> Value {
    location.map_or(Value::Null, |l| {
        json!({"lat": l.lat, "lon": l.lon, "radius_m": l.radius_m,
               "timestamp": l.timestamp.as_ref().map(|t| t.as_str())})
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use locus_core::{FailureReason, Transport};

    #[test]
    fn json_keys_follow_cli_md() {
        let ev = Event::Registered {
            server: "sip:127.0.0.2:5060;transport=udp".into(),
            transport: Transport::Udp,
            expires: 600,
        };
        assert_eq!(
            Value::Object(event_json(&ev)),
            json!({"event": "registered", "server": "sip:127.0.0.2:5060;transport=udp", "transport": "udp", "expires": 600})
        );
        let ev = Event::RegistrationFailed {
            reason: FailureReason::Auth,
            status: Some(401),
            message: "credentials rejected".into(),
            will_retry: false,
        };
        assert_eq!(
            Value::Object(event_json(&ev)),
            json!({"event": "registration_failed", "reason": "auth", "status": 401, "message": "credentials rejected"})
        );
        let ev = Event::RegistrationFailed {
            reason: FailureReason::Timeout,
            status: None,
            message: "m".into(),
            will_retry: true,
        };
        assert!(!event_json(&ev).contains_key("status"));
        let ev = Event::ServerChanged {
            from: "sip:127.0.0.2:5060;transport=tcp".into(),
            to: "sip:127.0.0.3:5060;transport=tcp".into(),
            reason: "the server is draining for a migration".into(),
        };
        assert_eq!(
            Value::Object(event_json(&ev)),
            json!({"event": "server_changed", "from": "sip:127.0.0.2:5060;transport=tcp",
                   "to": "sip:127.0.0.3:5060;transport=tcp",
                   "reason": "the server is draining for a migration"})
        );
        let ev = Event::Unreachable {
            server: "sip:127.0.0.2:5060;transport=tcp".into(),
            reason: "flow closed".into(),
        };
        assert_eq!(
            Value::Object(event_json(&ev)),
            json!({"event": "unreachable", "server": "sip:127.0.0.2:5060;transport=tcp", "reason": "flow closed"})
        );
    }
}
