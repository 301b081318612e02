//! The server list as the discovery service publishes it, in JSON and in
//! the XML of the original front end, with the checks an answer must pass
//! before a phone believes it.

use std::collections::HashSet;

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, Event};
use serde::{Deserialize, Serialize};

use crate::sip::uri::Uri;

use super::DiscoveryError;

/// The largest answer accepted; a real list is a few kilobytes.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// The most servers one list may name.
pub const MAX_SERVERS: usize = 256;

/// What the operator says about a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerState {
    /// In service.
    Active,
    /// About to be migrated: phones should move away now.
    Draining,
    /// Out of service.
    Down,
}

/// What health checks say about a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not checked yet.
    Unknown,
    /// Answering.
    Up,
    /// Not answering.
    Down,
}

impl ServerState {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Active => "active",
            ServerState::Draining => "draining",
            ServerState::Down => "down",
        }
    }

    fn parse(s: &str) -> Option<ServerState> {
        [
            ServerState::Active,
            ServerState::Draining,
            ServerState::Down,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

impl Health {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }

    fn parse(s: &str) -> Option<Health> {
        [Health::Unknown, Health::Up, Health::Down]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// One server in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerEntry {
    /// Its id.
    pub id: String,
    /// Its SIP URI, with transport.
    pub uri: String,
    /// Lower is preferred (DNS SRV semantics).
    pub priority: u16,
    /// Share among equal priorities.
    pub weight: u16,
    /// Region label.
    #[serde(default)]
    pub region: String,
    /// Operator state.
    pub state: ServerState,
    /// Health-check verdict.
    pub health: Health,
}

/// The list at one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerList {
    /// Grows with every change (0 for lists not from the service).
    pub version: u64,
    /// The servers.
    pub servers: Vec<ServerEntry>,
}

impl ServerList {
    /// Parses and checks a JSON answer (`GET /v1/servers`).
    pub fn from_json(bytes: &[u8]) -> Result<ServerList, DiscoveryError> {
        check_size(bytes)?;
        let list: ServerList = serde_json::from_slice(bytes)
            .map_err(|e| DiscoveryError::Garbage(format!("JSON: {e}")))?;
        list.checked()
    }

    /// Parses and checks an XML answer (`GET /v1/servers.xml`). DTDs and
    /// entity references are refused rather than expanded.
    pub fn from_xml(bytes: &[u8]) -> Result<ServerList, DiscoveryError> {
        check_size(bytes)?;
        let garbage = |why: String| DiscoveryError::Garbage(format!("XML: {why}"));
        let mut reader = quick_xml::Reader::from_reader(bytes);
        let mut version = None;
        let mut servers = Vec::new();
        // Open elements: <servers> then <server>; nothing nests deeper.
        let mut depth = 0usize;
        loop {
            let (element, empty) = match reader.read_event().map_err(|e| garbage(e.to_string()))? {
                Event::Start(e) => (e, false),
                Event::Empty(e) => (e, true),
                Event::End(_) => {
                    depth = depth.saturating_sub(1);
                    continue;
                }
                Event::DocType(_) => return Err(garbage("a DTD is not accepted".into())),
                Event::GeneralRef(_) => {
                    return Err(garbage("entity references are not accepted".into()))
                }
                Event::Eof => break,
                Event::Text(_)
                | Event::CData(_)
                | Event::Comment(_)
                | Event::Decl(_)
                | Event::PI(_) => continue,
            };
            let attrs = attributes(&element).map_err(garbage)?;
            match (depth, element.name().as_ref()) {
                (0, b"servers") if version.is_none() => {
                    let v = lookup(&attrs, "version").map_err(garbage)?;
                    version = Some(v.parse().map_err(|_| garbage(format!("version {v:?}")))?);
                }
                (1, b"server") => {
                    servers.push(server_from_attributes(&attrs).map_err(garbage)?);
                    if servers.len() > MAX_SERVERS {
                        return Err(garbage(format!("more than {MAX_SERVERS} servers")));
                    }
                }
                (0, _) => return Err(garbage("the root element is not <servers>".into())),
                (1, _) => return Err(garbage("only <server> elements belong in <servers>".into())),
                _ => return Err(garbage("unexpected nested element".into())),
            }
            if !empty {
                depth += 1;
            }
        }
        let version = version.ok_or_else(|| garbage("no <servers> element".into()))?;
        ServerList { version, servers }.checked()
    }

    /// `<servers version="N"><server id=".." uri=".." .../></servers>`.
    pub fn to_xml(&self) -> String {
        let mut w = quick_xml::Writer::new(Vec::new());
        // Writing into a Vec cannot fail.
        let _ = w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
        let version = self.version.to_string();
        let _ = w.write_event(Event::Start(
            BytesStart::new("servers").with_attributes([("version", version.as_str())]),
        ));
        for s in &self.servers {
            let (priority, weight) = (s.priority.to_string(), s.weight.to_string());
            let _ = w.write_event(Event::Empty(BytesStart::new("server").with_attributes([
                ("id", s.id.as_str()),
                ("uri", s.uri.as_str()),
                ("priority", priority.as_str()),
                ("weight", weight.as_str()),
                ("region", s.region.as_str()),
                ("state", s.state.as_str()),
                ("health", s.health.as_str()),
            ])));
        }
        let _ = w.write_event(Event::End(BytesEnd::new("servers")));
        String::from_utf8_lossy(&w.into_inner()).into_owned()
    }

    /// The entry with this id.
    pub fn get(&self, id: &str) -> Option<&ServerEntry> {
        self.servers.iter().find(|s| s.id == id)
    }

    /// Refuses lists a phone must not act on: no servers, too many,
    /// duplicate ids, URIs that are not SIP URIs.
    fn checked(self) -> Result<ServerList, DiscoveryError> {
        if self.servers.is_empty() {
            return Err(DiscoveryError::Garbage("the list names no server".into()));
        }
        if self.servers.len() > MAX_SERVERS {
            return Err(DiscoveryError::Garbage(format!(
                "more than {MAX_SERVERS} servers"
            )));
        }
        let mut ids = HashSet::new();
        for s in &self.servers {
            if s.id.is_empty() || !ids.insert(s.id.as_str()) {
                return Err(DiscoveryError::Garbage(format!(
                    "empty or duplicate server id {:?}",
                    s.id
                )));
            }
            Uri::parse(&s.uri).map_err(|e| {
                DiscoveryError::Garbage(format!("server {:?}: uri {:?}: {e}", s.id, s.uri))
            })?;
        }
        Ok(self)
    }
}

fn check_size(bytes: &[u8]) -> Result<(), DiscoveryError> {
    if bytes.len() > MAX_ANSWER_BYTES {
        return Err(DiscoveryError::Garbage(format!(
            "answer of {} bytes is over the {MAX_ANSWER_BYTES}-byte limit",
            bytes.len()
        )));
    }
    Ok(())
}

fn attributes(e: &BytesStart<'_>) -> Result<Vec<(String, String)>, String> {
    e.attributes()
        .map(|a| {
            let a = a.map_err(|e| e.to_string())?;
            let value = a.unescape_value().map_err(|e| e.to_string())?;
            Ok((
                String::from_utf8_lossy(a.key.as_ref()).into_owned(),
                value.into_owned(),
            ))
        })
        .collect()
}

fn lookup<'a>(attrs: &'a [(String, String)], name: &str) -> Result<&'a str, String> {
    attrs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| format!("missing attribute {name:?}"))
}

fn server_from_attributes(attrs: &[(String, String)]) -> Result<ServerEntry, String> {
    let number = |name: &str| -> Result<u16, String> {
        let v = lookup(attrs, name)?;
        v.parse()
            .map_err(|_| format!("{name} {v:?} is not a number"))
    };
    let state = lookup(attrs, "state")?;
    let health = lookup(attrs, "health")?;
    Ok(ServerEntry {
        id: lookup(attrs, "id")?.to_owned(),
        uri: lookup(attrs, "uri")?.to_owned(),
        priority: number("priority")?,
        weight: number("weight")?,
        region: lookup(attrs, "region").unwrap_or_default().to_owned(),
        state: ServerState::parse(state).ok_or_else(|| format!("state {state:?}"))?,
        health: Health::parse(health).ok_or_else(|| format!("health {health:?}"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn entry(
        id: &str,
        priority: u16,
        state: ServerState,
        health: Health,
    ) -> ServerEntry {
        ServerEntry {
            id: id.into(),
            uri: format!("sip:127.0.0.{}:5060;transport=tcp", id.len() + 1),
            priority,
            weight: 100,
            region: "eu".into(),
            state,
            health,
        }
    }

    fn list() -> ServerList {
        ServerList {
            version: 7,
            servers: vec![
                entry("a", 10, ServerState::Active, Health::Up),
                entry("bb", 20, ServerState::Draining, Health::Unknown),
            ],
        }
    }

    #[test]
    fn json_and_xml_round_trip() {
        let json = serde_json::to_vec(&list()).unwrap();
        assert_eq!(ServerList::from_json(&json).unwrap(), list());
        let xml = list().to_xml();
        assert!(xml.contains(r#"<server id="a" uri="sip:127.0.0.2:5060;transport=tcp""#));
        assert_eq!(ServerList::from_xml(xml.as_bytes()).unwrap(), list());
        let open = xml.replace(r#"health="up"/>"#, r#"health="up"><note>x</note></server>"#);
        assert!(ServerList::from_xml(open.as_bytes()).is_err());
        let open = xml.replace(r#"health="up"/>"#, r#"health="up"></server>"#);
        assert_eq!(ServerList::from_xml(open.as_bytes()).unwrap(), list());
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let cases: &[&[u8]] = &[
            b"",
            b"<html>502 Bad Gateway</html>",
            b"{\"version\": 1, \"servers\": []}",
            b"{\"version\": 1}",
            b"{\"version\": -1, \"servers\": []}",
            br#"{"version":1,"servers":[{"id":"a","uri":"http://x","priority":1,"weight":1,"state":"active","health":"up"}]}"#,
            br#"{"version":1,"servers":[{"id":"a","uri":"sip:x","priority":1,"weight":1,"state":"paused","health":"up"}]}"#,
            br#"{"version":1,"servers":[{"id":"a","uri":"sip:x","priority":1,"weight":1,"state":"active","health":"up"},{"id":"a","uri":"sip:y","priority":1,"weight":1,"state":"active","health":"up"}]}"#,
            b"\xff\xfe garbage",
        ];
        for case in cases {
            let e = ServerList::from_json(case).unwrap_err();
            assert!(matches!(e, DiscoveryError::Garbage(_)), "{e}");
        }
        let xml_cases: &[&str] = &[
            "",
            "<servers/>",
            r#"<list version="1"/>"#,
            r#"<!DOCTYPE servers [<!ENTITY a "x">]><servers version="1"/>"#,
            r#"<servers version="1"><server id="&a;" uri="sip:x" priority="1" weight="1" state="active" health="up"/></servers>"#,
            r#"<servers version="1"><server id="a" uri="sip:x" priority="big" weight="1" state="active" health="up"/></servers>"#,
            r#"<servers version="1"><server id="a" uri="sip:x" priority="1" weight="1" state="active" health="up""#,
        ];
        for case in xml_cases {
            assert!(ServerList::from_xml(case.as_bytes()).is_err(), "{case}");
        }
        let huge = vec![b' '; MAX_ANSWER_BYTES + 1];
        assert!(ServerList::from_json(&huge).is_err());
    }
}
