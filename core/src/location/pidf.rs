//! PIDF-LO (RFC 4119) with RFC 5491's shapes: a presence document whose
//! tuple carries a `geopriv` element with a Point or a Circle in WGS 84,
//! the usage rules, the method and a timestamp.
//!
//! Decoding is strict, because the document comes from strangers: a size
//! and a nesting limit, no DTD and no entity references (so nothing can
//! expand), namespaces checked (a `Circle` in the wrong namespace is not a
//! circle), coordinates in range.

use quick_xml::escape::escape;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use super::{Location, LocationError, Timestamp};

/// The largest document accepted.
pub const MAX_BYTES: usize = 16 * 1024;
/// The deepest element nesting accepted (a real document needs 7).
pub const MAX_DEPTH: usize = 16;

/// The MIME type of a PIDF(-LO) body.
pub const CONTENT_TYPE: &str = "application/pidf+xml";

const NS_PIDF: &[u8] = b"urn:ietf:params:xml:ns:pidf";
const NS_GEOPRIV: &[u8] = b"urn:ietf:params:xml:ns:pidf:geopriv10";
const NS_GML: &[u8] = b"http://www.opengis.net/gml";
const NS_SHAPES: &[u8] = b"http://www.opengis.net/pidflo/1.0";
/// WGS 84, 2-D (RFC 5491 §3).
const WGS84: &str = "urn:ogc:def:crs:EPSG::4326";
/// Metres (RFC 5491 §5.2.3).
const METRES: &str = "urn:ogc:def:uom:EPSG::9001";

/// What a presence document says (RFC 3863 basic status, RFC 4119
/// location).
#[derive(Debug, Clone, PartialEq)]
pub struct Presence {
    /// Whose presence, `sip:alice@example.test`.
    pub entity: String,
    /// `open` (true) or `closed` (false), if given.
    pub open: Option<bool>,
    /// The location, if the document has one.
    pub location: Option<Location>,
    /// How it was determined (`GPS`, `Manual`, ...).
    pub method: Option<String>,
    /// Whether the recipient may pass it on (RFC 4119 §2.2.1).
    pub retransmission_allowed: bool,
    /// Until when the recipient may keep it.
    pub retention_expiry: Option<Timestamp>,
}

/// Encodes `presence` as PIDF-LO.
pub fn encode(presence: &Presence) -> String {
    let mut status = String::new();
    if let Some(open) = presence.open {
        status.push_str(&format!(
            "<basic>{}</basic>",
            if open { "open" } else { "closed" }
        ));
    }
    let mut timestamp = String::new();
    if let Some(l) = &presence.location {
        let shape = if l.radius_m > 0.0 {
            format!(
                "<gs:Circle srsName=\"{WGS84}\"><gml:pos>{} {}</gml:pos>\
                 <gs:radius uom=\"{METRES}\">{}</gs:radius></gs:Circle>",
                l.lat, l.lon, l.radius_m
            )
        } else {
            format!(
                "<gml:Point srsName=\"{WGS84}\"><gml:pos>{} {}</gml:pos></gml:Point>",
                l.lat, l.lon
            )
        };
        let expiry = presence
            .retention_expiry
            .as_ref()
            .map(|t| format!("<gp:retention-expiry>{}</gp:retention-expiry>", t.as_str()))
            .unwrap_or_default();
        let method = presence
            .method
            .as_ref()
            .map(|m| format!("<gp:method>{}</gp:method>", escape(m.as_str())))
            .unwrap_or_default();
        status.push_str(&format!(
            "<gp:geopriv><gp:location-info>{shape}</gp:location-info>\
             <gp:usage-rules><gp:retransmission-allowed>{}</gp:retransmission-allowed>{expiry}\
             </gp:usage-rules>{method}</gp:geopriv>",
            if presence.retransmission_allowed {
                "yes"
            } else {
                "no"
            },
        ));
        if let Some(t) = &l.timestamp {
            timestamp = format!("<timestamp>{}</timestamp>", t.as_str());
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
         xmlns:gp=\"urn:ietf:params:xml:ns:pidf:geopriv10\" \
         xmlns:gml=\"http://www.opengis.net/gml\" \
         xmlns:gs=\"http://www.opengis.net/pidflo/1.0\" entity=\"{}\">\
         <tuple id=\"locus\"><status>{status}</status>{timestamp}</tuple></presence>\n",
        escape(presence.entity.as_str())
    )
}

/// The parts of a document we read, by where they are.
#[derive(Debug, Default)]
struct Found {
    entity: Option<String>,
    basic: Option<String>,
    pos: Option<String>,
    radius: Option<String>,
    shape: Option<Shape>,
    method: Option<String>,
    retransmission: Option<String>,
    expiry: Option<String>,
    timestamp: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Point,
    Circle,
}

/// One open element: its namespace and local name.
type Element = (Vec<u8>, Vec<u8>);

/// Decodes a PIDF(-LO) document.
pub fn decode(bytes: &[u8]) -> Result<Presence, LocationError> {
    if bytes.len() > MAX_BYTES {
        return Err(LocationError::TooLarge(bytes.len()));
    }
    let bad = |why: String| LocationError::Malformed(why);
    let mut reader = NsReader::from_reader(bytes);
    let mut path: Vec<Element> = Vec::new();
    let mut found = Found::default();
    let mut text = String::new();
    loop {
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|e| bad(e.to_string()))?;
        let ns = match ns {
            ResolveResult::Bound(n) => n.as_ref().to_vec(),
            ResolveResult::Unbound => Vec::new(),
            ResolveResult::Unknown(p) => {
                return Err(bad(format!(
                    "unknown namespace prefix {:?}",
                    String::from_utf8_lossy(&p)
                )))
            }
        };
        let (element, empty) = match event {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(_) => {
                if let Some((ns, name)) = path.pop() {
                    store(&mut found, &ns, &name, std::mem::take(&mut text));
                }
                continue;
            }
            Event::Text(t) => {
                let piece = t.decode().map_err(|e| bad(e.to_string()))?;
                if text.len() + piece.len() > MAX_BYTES {
                    return Err(LocationError::TooLarge(text.len() + piece.len()));
                }
                text.push_str(&piece);
                continue;
            }
            Event::CData(t) => {
                text.push_str(&String::from_utf8_lossy(&t));
                continue;
            }
            Event::DocType(_) => return Err(bad("a DTD is not accepted".into())),
            Event::GeneralRef(_) => return Err(bad("entity references are not accepted".into())),
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => continue,
        };
        let name = element.local_name().as_ref().to_vec();
        if path.is_empty() {
            if ns != NS_PIDF || name != b"presence" {
                return Err(LocationError::WrongNamespace(
                    "the root is not a PIDF <presence>".into(),
                ));
            }
            found.entity = attribute(&element, b"entity")?;
        }
        match (ns.as_slice(), name.as_slice()) {
            (NS_GML, b"Point") => set_shape(&mut found, Shape::Point, &element)?,
            (NS_SHAPES, b"Circle") => set_shape(&mut found, Shape::Circle, &element)?,
            (NS_SHAPES, b"radius") => {
                let uom = attribute(&element, b"uom")?;
                if uom.as_deref() != Some(METRES) {
                    return Err(bad(format!("radius in {uom:?}, not metres")));
                }
            }
            (_, b"Point" | b"Circle" | b"Polygon" | b"Ellipse" | b"Sphere") => {
                return Err(LocationError::Unsupported(format!(
                    "shape {} in namespace {:?}",
                    String::from_utf8_lossy(&name),
                    String::from_utf8_lossy(&ns)
                )))
            }
            _ => {}
        }
        text.clear();
        if empty {
            store(&mut found, &ns, &name, String::new());
        } else {
            path.push((ns, name));
            if path.len() > MAX_DEPTH {
                return Err(LocationError::TooDeep);
            }
        }
    }
    if !path.is_empty() {
        return Err(bad("the document ends inside an element".into()));
    }
    finish(found)
}

fn attribute(
    e: &quick_xml::events::BytesStart<'_>,
    name: &[u8],
) -> Result<Option<String>, LocationError> {
    for a in e.attributes() {
        let a = a.map_err(|e| LocationError::Malformed(e.to_string()))?;
        if a.key.local_name().as_ref() == name {
            let v = a
                .unescape_value()
                .map_err(|e| LocationError::Malformed(e.to_string()))?;
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

fn set_shape(
    found: &mut Found,
    shape: Shape,
    e: &quick_xml::events::BytesStart<'_>,
) -> Result<(), LocationError> {
    let srs = attribute(e, b"srsName")?;
    if srs.as_deref() != Some(WGS84) {
        return Err(LocationError::Unsupported(format!(
            "coordinate reference system {srs:?} (only WGS 84, {WGS84})"
        )));
    }
    found.shape.get_or_insert(shape);
    Ok(())
}

/// Keeps the first value of each element we read.
fn store(found: &mut Found, ns: &[u8], name: &[u8], text: String) {
    let text = text.trim().to_owned();
    let slot = match (ns, name) {
        (NS_PIDF, b"basic") => &mut found.basic,
        (NS_PIDF, b"timestamp") => &mut found.timestamp,
        (NS_GML, b"pos") => &mut found.pos,
        (NS_SHAPES, b"radius") => &mut found.radius,
        (NS_GEOPRIV, b"method") => &mut found.method,
        (NS_GEOPRIV, b"retransmission-allowed") => &mut found.retransmission,
        (NS_GEOPRIV, b"retention-expiry") => &mut found.expiry,
        _ => return,
    };
    slot.get_or_insert(text);
}

fn finish(found: Found) -> Result<Presence, LocationError> {
    let bad = |why: String| LocationError::Malformed(why);
    let entity = found
        .entity
        .ok_or_else(|| bad("<presence> has no entity".into()))?;
    let open = match found.basic.as_deref() {
        None => None,
        Some("open") => Some(true),
        Some("closed") => Some(false),
        Some(other) => return Err(bad(format!("basic status {other:?}"))),
    };
    let location = match (found.shape, found.pos) {
        (None, _) => None,
        (Some(_), None) => return Err(bad("a shape without <gml:pos>".into())),
        (Some(shape), Some(pos)) => {
            let mut numbers = pos.split_whitespace().map(str::parse::<f64>);
            let (Some(Ok(lat)), Some(Ok(lon)), None) =
                (numbers.next(), numbers.next(), numbers.next())
            else {
                return Err(bad(format!("position {pos:?} is not \"lat lon\"")));
            };
            let radius_m = match (shape, found.radius) {
                (Shape::Point, _) => 0.0,
                (Shape::Circle, None) => return Err(bad("a circle without a radius".into())),
                (Shape::Circle, Some(r)) => r
                    .parse::<f64>()
                    .map_err(|_| bad(format!("radius {r:?} is not a number")))?,
            };
            let timestamp = found
                .timestamp
                .as_deref()
                .map(Timestamp::parse)
                .transpose()?;
            Some(Location::new(lat, lon, radius_m, timestamp)?)
        }
    };
    let retransmission_allowed = match found.retransmission.as_deref() {
        None | Some("no" | "false" | "0") => false,
        Some("yes" | "true" | "1") => true,
        Some(other) => return Err(bad(format!("retransmission-allowed {other:?}"))),
    };
    let retention_expiry = found.expiry.as_deref().map(Timestamp::parse).transpose()?;
    Ok(Presence {
        entity,
        open,
        location,
        method: found.method,
        retransmission_allowed,
        retention_expiry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice(location: Option<Location>) -> Presence {
        Presence {
            entity: "sip:alice@example.test".into(),
            open: Some(true),
            location,
            method: Some("GPS".into()),
            retransmission_allowed: false,
            retention_expiry: Some(Timestamp::parse("2026-11-23T00:00:00Z").unwrap()),
        }
    }

    fn here(radius: f64) -> Location {
        Location::new(
            48.2085,
            16.3721,
            radius,
            Some(Timestamp::parse("2026-11-22T04:00:00Z").unwrap()),
        )
        .unwrap()
    }

    #[test]
    fn circles_and_points_round_trip() {
        for radius in [0.0, 25.5] {
            let p = alice(Some(here(radius)));
            let xml = encode(&p);
            assert_eq!(decode(xml.as_bytes()).unwrap(), p, "{xml}");
        }
        let closed = Presence {
            open: Some(false),
            location: None,
            method: None,
            retention_expiry: None,
            ..alice(None)
        };
        assert_eq!(decode(encode(&closed).as_bytes()).unwrap(), closed);
    }

    #[test]
    fn reads_what_other_implementations_write() {
        // RFC 5491 §5.2.3's example, prefixes and all, inside RFC 4119's.
        let doc = r#"<?xml version="1.0"?>
<p:presence xmlns:p="urn:ietf:params:xml:ns:pidf"
    xmlns:g="urn:ietf:params:xml:ns:pidf:geopriv10"
    xmlns:gml="http://www.opengis.net/gml"
    xmlns:shape="http://www.opengis.net/pidflo/1.0"
    entity="pres:bob@example.test">
  <p:tuple id="sg89ae">
    <p:status>
      <g:geopriv>
        <g:location-info>
          <shape:Circle srsName="urn:ogc:def:crs:EPSG::4326">
            <gml:pos>42.5463 -73.2512</gml:pos>
            <shape:radius uom="urn:ogc:def:uom:EPSG::9001">850.24</shape:radius>
          </shape:Circle>
        </g:location-info>
        <g:usage-rules>
          <g:retransmission-allowed>yes</g:retransmission-allowed>
        </g:usage-rules>
        <g:method>Wiremap</g:method>
      </g:geopriv>
    </p:status>
    <p:timestamp>2003-06-22T20:57:29Z</p:timestamp>
  </p:tuple>
</p:presence>"#;
        let p = decode(doc.as_bytes()).unwrap();
        let l = p.location.unwrap();
        assert_eq!((l.lat, l.lon, l.radius_m), (42.5463, -73.2512, 850.24));
        assert!(p.retransmission_allowed);
        assert_eq!(p.method.as_deref(), Some("Wiremap"));
        assert_eq!(l.timestamp.unwrap().as_str(), "2003-06-22T20:57:29Z");
    }

    #[test]
    fn hostile_documents_are_refused() {
        let good = encode(&alice(Some(here(10.0))));
        let billion_laughs = format!(
            "<?xml version=\"1.0\"?><!DOCTYPE presence [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;\">]>{}",
            good.replace("GPS", "&b;").trim_start_matches("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
        );
        assert!(matches!(
            decode(billion_laughs.as_bytes()),
            Err(LocationError::Malformed(_))
        ));
        let entity = good.replace("GPS", "&ext;");
        assert!(decode(entity.as_bytes()).is_err());
        let huge = good.replace("GPS", &"x".repeat(MAX_BYTES));
        assert!(matches!(
            decode(huge.as_bytes()),
            Err(LocationError::TooLarge(_))
        ));
        let deep = good.replace(
            "<gp:method>",
            &format!("{}<gp:method>", "<x:a xmlns:x=\"urn:x\">".repeat(MAX_DEPTH)),
        );
        let deep = deep.replace(
            "</gp:method>",
            &format!("</gp:method>{}", "</x:a>".repeat(MAX_DEPTH)),
        );
        assert!(matches!(
            decode(deep.as_bytes()),
            Err(LocationError::TooDeep)
        ));
        let north_of_north = good.replace("<gml:pos>48.2085 ", "<gml:pos>91.5 ");
        assert!(matches!(
            decode(north_of_north.as_bytes()),
            Err(LocationError::OutOfRange(_))
        ));
        let wrong_ns = good.replace(
            "http://www.opengis.net/pidflo/1.0",
            "http://example.com/shapes",
        );
        assert!(decode(wrong_ns.as_bytes()).is_err());
        let not_pidf = good.replace("urn:ietf:params:xml:ns:pidf\"", "urn:example:presence\"");
        assert!(matches!(
            decode(not_pidf.as_bytes()),
            Err(LocationError::WrongNamespace(_))
        ));
        let other_crs = good.replace("EPSG::4326", "EPSG::3857");
        assert!(matches!(
            decode(other_crs.as_bytes()),
            Err(LocationError::Unsupported(_))
        ));
        for cut in [10, good.len() / 2, good.len() - 12] {
            assert!(decode(&good.as_bytes()[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(b"\xff\xfe<presence/>").is_err());
    }
}
