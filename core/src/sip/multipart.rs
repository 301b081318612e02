//! `multipart/mixed` bodies (RFC 2046 §5.1, as RFC 5621 uses them in
//! SIP): an INVITE carrying both its SDP offer and a PIDF-LO location.
//! Parsing is strict and bounded; anything odd is an error, and the caller
//! goes on without the parts it cannot read.

use bytes::Bytes;

/// The most parts a body may have; an INVITE needs two.
pub const MAX_PARTS: usize = 8;

/// Why a multipart body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    /// The Content-Type names no boundary.
    #[error("multipart body without a boundary")]
    NoBoundary,
    /// The body does not follow the multipart syntax.
    #[error("malformed multipart body: {0}")]
    Malformed(&'static str),
    /// More parts than we accept.
    #[error("more than {MAX_PARTS} body parts")]
    TooManyParts,
}

/// One body part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Its headers (Content-Type, Content-ID, ...).
    pub headers: Vec<(String, String)>,
    /// Its content.
    pub body: Bytes,
}

impl Part {
    /// A part of `content_type`, with a Content-ID when given.
    pub fn new(content_type: &str, content_id: Option<&str>, body: impl Into<Bytes>) -> Part {
        let mut headers = vec![("Content-Type".to_owned(), content_type.to_owned())];
        if let Some(id) = content_id {
            headers.push(("Content-ID".to_owned(), format!("<{id}>")));
        }
        Part {
            headers,
            body: body.into(),
        }
    }

    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The media type, lower case, without parameters.
    pub fn media_type(&self) -> String {
        media_type(self.header("Content-Type").unwrap_or("text/plain"))
    }

    /// The Content-ID without its angle brackets.
    pub fn content_id(&self) -> Option<&str> {
        self.header("Content-ID")
            .map(|v| v.trim().trim_start_matches('<').trim_end_matches('>'))
    }
}

/// `type/subtype` of a Content-Type value, lower case.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Builds a `multipart/mixed` body; returns its Content-Type and bytes.
pub fn build(parts: &[Part], boundary: &str) -> (String, Bytes) {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        for (name, value) in &part.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&part.body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/mixed;boundary={boundary}"),
        Bytes::from(out),
    )
}

/// Splits a `multipart/*` body of `content_type` into its parts.
pub fn parse(content_type: &str, body: &[u8]) -> Result<Vec<Part>, MultipartError> {
    let boundary = content_type
        .split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"'))
        .filter(|b| !b.is_empty() && b.len() <= 70)
        .ok_or(MultipartError::NoBoundary)?;
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut at = find(body, delimiter, 0).ok_or(MultipartError::Malformed("no first boundary"))?;
    let mut parts = Vec::new();
    loop {
        at += delimiter.len();
        if body[at..].starts_with(b"--") {
            return Ok(parts);
        }
        // The rest of the boundary line (transport padding), then CRLF.
        let line_end = find(body, b"\n", at).ok_or(MultipartError::Malformed("boundary line"))?;
        let start = line_end + 1;
        let next =
            find(body, delimiter, start).ok_or(MultipartError::Malformed("no closing boundary"))?;
        // The CRLF before a delimiter belongs to the delimiter.
        let mut end = next;
        if end > start && body[end - 1] == b'\n' {
            end -= 1;
            if end > start && body[end - 1] == b'\r' {
                end -= 1;
            }
        }
        parts.push(part(&body[start..end])?);
        if parts.len() > MAX_PARTS {
            return Err(MultipartError::TooManyParts);
        }
        at = next;
    }
}

fn part(bytes: &[u8]) -> Result<Part, MultipartError> {
    let (head, body) = match find(bytes, b"\r\n\r\n", 0) {
        Some(i) => (&bytes[..i], &bytes[i + 4..]),
        None => match find(bytes, b"\n\n", 0) {
            Some(i) => (&bytes[..i], &bytes[i + 2..]),
            // No headers at all: RFC 2046 allows it (text/plain).
            None if bytes.starts_with(b"\r\n") => (&bytes[..0], &bytes[2..]),
            None => return Err(MultipartError::Malformed("part without a blank line")),
        },
    };
    let head = std::str::from_utf8(head)
        .map_err(|_| MultipartError::Malformed("part headers are not UTF-8"))?;
    let mut headers = Vec::new();
    for line in head.lines().filter(|l| !l.trim().is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or(MultipartError::Malformed("part header without a colon"))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(Part {
        headers,
        body: Bytes::copy_from_slice(body),
    })
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses_sdp_with_a_location() {
        let parts = vec![
            Part::new(
                "application/sdp",
                None,
                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n",
            ),
            Part::new(
                "application/pidf+xml",
                Some("loc@example.test"),
                "<presence/>",
            ),
        ];
        let (content_type, body) = build(&parts, "locus-b0undary");
        assert_eq!(content_type, "multipart/mixed;boundary=locus-b0undary");
        let back = parse(&content_type, &body).unwrap();
        assert_eq!(back, parts);
        assert_eq!(back[1].content_id(), Some("loc@example.test"));
        assert_eq!(back[1].media_type(), "application/pidf+xml");
    }

    #[test]
    fn reads_rfc6442_style_bodies_and_refuses_broken_ones() {
        let body = "--boundary1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n\r\n--boundary1\r\n\
                    Content-Type: application/pidf+xml\r\nContent-ID: <target123@atlanta.example.com>\r\n\r\n\
                    <presence/>\r\n--boundary1--\r\n";
        let parts = parse("multipart/mixed; boundary=\"boundary1\"", body.as_bytes()).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(&parts[0].body[..], b"v=0\r\n");
        assert_eq!(parts[1].content_id(), Some("target123@atlanta.example.com"));
        assert_eq!(
            parse("multipart/mixed", body.as_bytes()),
            Err(MultipartError::NoBoundary)
        );
        assert!(parse("multipart/mixed;boundary=other", body.as_bytes()).is_err());
        let unclosed = &body[..body.len() - 16];
        assert!(parse("multipart/mixed;boundary=boundary1", unclosed.as_bytes()).is_err());
        let many = format!("{}--b--", "--b\r\n\r\nx\r\n".repeat(MAX_PARTS + 1));
        assert_eq!(
            parse("multipart/mixed;boundary=b", many.as_bytes()),
            Err(MultipartError::TooManyParts)
        );
    }
}
