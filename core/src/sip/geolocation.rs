//! Location by value in SIP requests (RFC 6442): a PIDF-LO body part, beside
//! the session description if there is one, that a `Geolocation: <cid:…>`
//! header points at. An INVITE carries the caller's position this way, an
//! in-dialog UPDATE the callee's.

use rand::Rng;

use super::call::Body;
use super::message::{Headers, Request};
use super::multipart::{self, MultipartError, Part};

/// Headers [`attach`] adds, which a request without the location must lose.
pub const HEADERS: [&str; 2] = ["Geolocation", "Geolocation-Routing"];

/// The body of a request carrying `location` (and `sdp`, when given) as
/// multipart/mixed; adds the Geolocation header naming the location part and
/// `Geolocation-Routing: no`, since the position is for the peer, not for
/// proxies to route on. `host` makes the Content-ID globally unique.
pub fn attach(
    headers: &mut Headers,
    sdp: Option<&Body>,
    location: &Body,
    host: &str,
    rng: &mut impl Rng,
) -> Body {
    let cid = format!("{:016x}@{host}", rng.random::<u64>());
    let mut parts: Vec<Part> = sdp
        .map(|s| Part::new(&s.content_type, None, s.bytes.clone()))
        .into_iter()
        .collect();
    parts.push(Part::new(
        &location.content_type,
        Some(&cid),
        location.bytes.clone(),
    ));
    let (content_type, bytes) =
        multipart::build(&parts, &format!("locus-{:016x}", rng.random::<u64>()));
    headers.push(HEADERS[0], format!("<cid:{cid}>"));
    headers.push(HEADERS[1], "no");
    Body {
        content_type,
        bytes,
    }
}

/// The session description and the location (by value) a request carries:
/// its body itself, or the parts of a multipart body — the SDP one, and the
/// one the Geolocation header points at. A location by reference (an http or
/// sip URI) would need fetching and dereferencing rights; it is ignored.
pub fn split(request: &Request) -> Result<(Option<Body>, Option<Body>), MultipartError> {
    if request.body.is_empty() {
        return Ok((None, None));
    }
    let content_type = request
        .headers
        .get("Content-Type")
        .unwrap_or("application/sdp");
    if !multipart::media_type(content_type).starts_with("multipart/") {
        let body = Body {
            content_type: content_type.to_owned(),
            bytes: request.body.clone(),
        };
        return Ok((Some(body), None));
    }
    let parts = multipart::parse(content_type, &request.body)?;
    let body = |p: &Part| Body {
        content_type: p.header("Content-Type").unwrap_or("text/plain").to_owned(),
        bytes: p.body.clone(),
    };
    let sdp = parts
        .iter()
        .find(|p| p.media_type() == "application/sdp")
        .map(body);
    let cids: Vec<String> = request
        .headers
        .get_all(HEADERS[0])
        .flat_map(|v| v.split(','))
        .filter_map(|v| {
            let uri = v.trim().trim_start_matches('<').split('>').next()?;
            uri.strip_prefix("cid:").map(str::to_owned)
        })
        .collect();
    let location = parts
        .iter()
        .find(|p| {
            p.content_id()
                .is_some_and(|id| cids.iter().any(|c| c == id))
        })
        .map(body);
    Ok((sdp, location))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Method;
    use crate::sip::uri::Uri;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn request() -> Request {
        Request::new(Method::Update, Uri::parse("sip:bob@example.test").unwrap())
    }

    fn pidf() -> Body {
        Body {
            content_type: "application/pidf+xml".into(),
            bytes: "<presence/>".into(),
        }
    }

    #[test]
    fn what_attach_puts_in_split_takes_out() {
        let mut rng = StdRng::seed_from_u64(7);
        for sdp in [None, Some(Body::sdp("v=0\r\n"))] {
            let mut r = request();
            let body = attach(
                &mut r.headers,
                sdp.as_ref(),
                &pidf(),
                "example.test",
                &mut rng,
            );
            r.headers.set("Content-Type", body.content_type);
            r.body = body.bytes;
            assert_eq!(r.headers.get("Geolocation-Routing"), Some("no"));
            let (got_sdp, location) = split(&r).unwrap();
            assert_eq!(got_sdp, sdp);
            assert_eq!(location, Some(pidf()));
        }
    }

    #[test]
    fn a_part_the_header_does_not_name_is_no_location() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut r = request();
        let body = attach(&mut r.headers, None, &pidf(), "example.test", &mut rng);
        r.headers
            .set("Geolocation", "<cid:someone-else@example.test>");
        r.headers.set("Content-Type", body.content_type);
        r.body = body.bytes;
        assert_eq!(split(&r).unwrap(), (None, None));
    }

    #[test]
    fn a_plain_body_is_the_session_description() {
        let mut r = request();
        r.body = "v=0\r\n".into();
        assert_eq!(split(&r).unwrap(), (Some(Body::sdp("v=0\r\n")), None));
        assert_eq!(split(&request()).unwrap(), (None, None));
    }

    #[test]
    fn a_broken_multipart_body_is_an_error() {
        let mut r = request();
        r.headers.set("Content-Type", "multipart/mixed;boundary=x");
        r.body = "no boundary here".into();
        assert!(split(&r).is_err());
    }
}
