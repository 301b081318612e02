//! SIP requests and responses: parsing (with normalisation) and writing.
//!
//! Parsing normalises what RFC 3261 allows senders to vary, so that the rest
//! of the stack sees one form: compact header names (`v:`, `f:`, ...) are
//! expanded, folded header lines are joined, LF-only line ends are accepted,
//! and comma-joined list headers (`Via: a, b`) become one entry per element.
//! Content-Length decides where the body ends and is not kept as a header;
//! writing always emits CRLF and a Content-Length computed from the body.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

use super::header::{split_list, CSeq, Contact, NameAddr, Via};
use super::uri::Uri;

/// Largest message we accept, on any transport.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// Most header entries we accept in one message, counting each element of
/// a comma-joined list, so one line cannot expand without bound.
pub const MAX_HEADERS: usize = 256;

/// Why bytes are not a SIP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing but whitespace.
    #[error("empty message")]
    Empty,
    /// The header section is not UTF-8.
    #[error("header section is not UTF-8")]
    NotUtf8,
    /// No blank line ends the header section.
    #[error("header section not terminated")]
    Unterminated,
    /// The first line is neither a request line nor a status line.
    #[error("bad start line: {0}")]
    BadStartLine(String),
    /// A header line or value is malformed.
    #[error("bad header: {0}")]
    BadHeader(String),
    /// A URI is malformed.
    #[error("bad URI: {0}")]
    BadUri(String),
    /// A mandatory header is missing.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// Content-Length is not a number, or disagrees with itself.
    #[error("bad Content-Length")]
    BadContentLength,
    /// The body is shorter than Content-Length says.
    #[error("body truncated: Content-Length {expected}, {got} bytes present")]
    Truncated {
        /// What Content-Length announced.
        expected: usize,
        /// What arrived.
        got: usize,
    },
    /// Over [`MAX_MESSAGE_SIZE`].
    #[error("message larger than {MAX_MESSAGE_SIZE} bytes")]
    TooLarge,
    /// Over [`MAX_HEADERS`].
    #[error("more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    /// A control character (other than tab) in the header section.
    #[error("control character in header section")]
    ControlCharacter,
}

/// A SIP method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// REGISTER
    Register,
    /// OPTIONS
    Options,
    /// INFO
    Info,
    /// UPDATE
    Update,
    /// PRACK
    Prack,
    /// SUBSCRIBE
    Subscribe,
    /// NOTIFY
    Notify,
    /// PUBLISH
    Publish,
    /// REFER
    Refer,
    /// MESSAGE
    Message,
    /// Any other token (methods are case-sensitive).
    Other(String),
}

impl Method {
    /// The method as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Publish => "PUBLISH",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Other(m) => m,
        }
    }
}

impl FromStr for Method {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Method, ParseError> {
        Ok(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "PUBLISH" => Method::Publish,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            other
                if !other.is_empty()
                    && other
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)) =>
            {
                Method::Other(other.to_owned())
            }
            other => return Err(ParseError::BadStartLine(format!("bad method {other:?}"))),
        })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One header line: canonical name and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Canonical name for known headers (`Call-ID`), else as written.
    pub name: String,
    /// The value, trimmed, folding removed.
    pub value: String,
}

/// Headers in order; lookups ignore case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

impl Headers {
    /// The first value of a header.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Every value of a header, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Whether an option-tag list header (`Supported`, `Require`, …)
    /// names `option`, in any of its values.
    pub fn lists(&self, name: &str, option: &str) -> bool {
        self.get_all(name)
            .flat_map(|v| v.split(','))
            .any(|o| o.trim().eq_ignore_ascii_case(option))
    }

    /// Appends a header.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push(Header {
            name: name.to_owned(),
            value: value.into(),
        });
    }

    /// Puts a header before all others (as a proxy does with Via).
    pub fn push_front(&mut self, name: &str, value: impl Into<String>) {
        self.0.insert(
            0,
            Header {
                name: name.to_owned(),
                value: value.into(),
            },
        );
    }

    /// Replaces every value of a header with one.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.remove(name);
        self.push(name, value);
    }

    /// Removes every value of a header.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|h| !h.name.eq_ignore_ascii_case(name));
    }

    /// The headers in order.
    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }

    fn required(&self, name: &'static str) -> Result<&str, ParseError> {
        self.get(name).ok_or(ParseError::MissingHeader(name))
    }

    /// The topmost Via.
    pub fn via(&self) -> Result<Via, ParseError> {
        Via::parse(self.required("Via")?)
    }

    /// The From header.
    pub fn from(&self) -> Result<NameAddr, ParseError> {
        NameAddr::parse(self.required("From")?)
    }

    /// The To header.
    pub fn to(&self) -> Result<NameAddr, ParseError> {
        NameAddr::parse(self.required("To")?)
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Result<&str, ParseError> {
        self.required("Call-ID")
    }

    /// The CSeq header.
    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        CSeq::parse(self.required("CSeq")?)
    }

    /// Every Contact, in order.
    pub fn contacts(&self) -> Result<Vec<Contact>, ParseError> {
        self.get_all("Contact").map(Contact::parse).collect()
    }

    /// A header whose value is a number of seconds (Expires, Min-Expires,
    /// Retry-After), ignoring comments and parameters after the number.
    pub fn seconds(&self, name: &str) -> Option<u32> {
        let value = self.get(name)?;
        let digits = value
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .filter(|d| !d.is_empty())?;
        digits.parse().ok()
    }
}

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// Request-URI.
    pub uri: Uri,
    /// Headers.
    pub headers: Headers,
    /// Body.
    pub body: Bytes,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code, 100 to 699.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Headers.
    pub headers: Headers,
    /// Body.
    pub body: Bytes,
}

impl Request {
    /// A request with no headers or body yet.
    pub fn new(method: Method, uri: Uri) -> Request {
        Request {
            method,
            uri,
            headers: Headers::default(),
            body: Bytes::new(),
        }
    }

    /// A request outside any dialog (REGISTER, PUBLISH, an initial
    /// SUBSCRIBE or INVITE) to `to` at `uri`: Max-Forwards, From with our
    /// tag, To, Call-ID and CSeq; the caller adds the rest.
    pub fn out_of_dialog(
        method: Method,
        uri: Uri,
        (from, from_tag): (&Uri, &str),
        to: &Uri,
        call_id: &str,
        cseq: u32,
    ) -> Request {
        let cseq = format!("{cseq} {}", method.as_str());
        let mut request = Request::new(method, uri);
        let h = &mut request.headers;
        h.push("Max-Forwards", "70");
        h.push(
            "From",
            format!("{};tag={from_tag}", NameAddr::new(from.clone())),
        );
        h.push("To", NameAddr::new(to.clone()).to_string());
        h.push("Call-ID", call_id);
        h.push("CSeq", cseq);
        request
    }

    /// The bytes to put on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        write_message(
            &format!("{} {} SIP/2.0", self.method, self.uri),
            &self.headers,
            &self.body,
        )
    }

    /// A response to this request copying Via, From, To, Call-ID and CSeq
    /// (RFC 3261 §8.2.6.2); the caller adds a To tag where one is needed.
    pub fn response(&self, status: u16, reason: &str) -> Response {
        let mut headers = Headers::default();
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            for value in self.headers.get_all(name) {
                headers.push(name, value);
            }
        }
        Response {
            status,
            reason: reason.to_owned(),
            headers,
            body: Bytes::new(),
        }
    }
}

impl Response {
    /// Whether this failure may pass if the request is tried again later:
    /// a timeout, a temporarily unavailable user, a server error.
    pub fn is_transient_failure(&self) -> bool {
        matches!(self.status, 408 | 480 | 500..=599)
    }

    /// `486 Busy Here`: the status and its reason, for messages.
    pub fn summary(&self) -> String {
        format!("{} {}", self.status, self.reason)
    }

    /// The bytes to put on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        write_message(
            &format!("SIP/2.0 {} {}", self.status, self.reason),
            &self.headers,
            &self.body,
        )
    }
}

fn write_message(start_line: &str, headers: &Headers, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(512 + body.len());
    out.extend_from_slice(start_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers.iter() {
        if h.name.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

/// A request or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

impl Message {
    /// The headers of either kind.
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }

    /// The bytes to put on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }
}

/// A message as text for logs, with credential header values replaced: a
/// digest response allows an offline guess at the password.
pub fn loggable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let name = line.split(':').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("Authorization")
            || name.eq_ignore_ascii_case("Proxy-Authorization")
        {
            out.push_str(name);
            out.push_str(": <redacted>\n");
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Full names of the compact forms (RFC 3261 §7.3.3 and later RFCs).
fn expand_compact(name: &str) -> Option<&'static str> {
    let [b] = name.as_bytes() else { return None };
    Some(match b.to_ascii_lowercase() {
        b'a' => "Accept-Contact",
        b'b' => "Referred-By",
        b'c' => "Content-Type",
        b'd' => "Request-Disposition",
        b'e' => "Content-Encoding",
        b'f' => "From",
        b'i' => "Call-ID",
        b'j' => "Reject-Contact",
        b'k' => "Supported",
        b'l' => "Content-Length",
        b'm' => "Contact",
        b'o' => "Event",
        b'r' => "Refer-To",
        b's' => "Subject",
        b't' => "To",
        b'u' => "Allow-Events",
        b'v' => "Via",
        b'x' => "Session-Expires",
        _ => return None,
    })
}

/// Canonical spelling of the headers we look up most, so that written
/// messages look conventional whatever case the sender used.
fn canonical_name(name: &str) -> String {
    const KNOWN: &[&str] = &[
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Content-Length",
        "Content-Type",
        "Max-Forwards",
        "Route",
        "Record-Route",
        "Expires",
        "Min-Expires",
        "Retry-After",
        "WWW-Authenticate",
        "Proxy-Authenticate",
        "Authorization",
        "Proxy-Authorization",
        "Supported",
        "Require",
        "Allow",
        "User-Agent",
        "Server",
    ];
    if let Some(full) = expand_compact(name) {
        return full.to_owned();
    }
    KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_owned(), |k| (*k).to_owned())
}

/// Headers whose comma-joined values are separate elements (RFC 3261 §7.3.1).
/// Authentication headers are not: their commas separate parameters.
fn is_list_header(name: &str) -> bool {
    [
        "Via",
        "Contact",
        "Route",
        "Record-Route",
        "Path",
        "Service-Route",
        "Allow",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
    ]
    .iter()
    .any(|n| n.eq_ignore_ascii_case(name))
}

/// Where the header section ends: (end of header text, start of body).
/// Accepts CRLF and bare LF line ends.
pub(crate) fn find_header_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(nl) = bytes[i..].iter().position(|&b| b == b'\n') {
        let line_end = i + nl;
        let line = &bytes[i..line_end];
        if line.is_empty() || line == b"\r" {
            return Some((i, line_end + 1));
        }
        i = line_end + 1;
    }
    None
}

/// Reads Content-Length (or its compact form `l`) from a raw header section.
pub(crate) fn scan_content_length(head: &str) -> Result<Option<usize>, ParseError> {
    let mut found: Option<usize> = None;
    for line in head.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l") {
            let n: usize = value
                .trim()
                .parse()
                .map_err(|_| ParseError::BadContentLength)?;
            if found.is_some_and(|f| f != n) {
                return Err(ParseError::BadContentLength);
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Parses one complete message, as a datagram carries it.
///
/// Where Content-Length is present the body ends there (extra datagram bytes
/// are ignored, as RFC 3261 §18.3 says); where it is absent the body is the
/// rest of the datagram.
pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(ParseError::TooLarge);
    }
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .ok_or(ParseError::Empty)?;
    let bytes = &bytes[start..];
    let (head_end, body_start) = find_header_end(bytes).ok_or(ParseError::Unterminated)?;
    let head = std::str::from_utf8(&bytes[..head_end]).map_err(|_| ParseError::NotUtf8)?;
    if head
        .bytes()
        .any(|b| (b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n')) || b == 0x7f)
    {
        return Err(ParseError::ControlCharacter);
    }
    let available = &bytes[body_start..];
    let body = match scan_content_length(head)? {
        Some(len) if len > available.len() => {
            return Err(ParseError::Truncated {
                expected: len,
                got: available.len(),
            })
        }
        Some(len) => &available[..len],
        None => available,
    };

    let mut lines = unfold(head);
    let start_line = lines.next().ok_or(ParseError::Empty)?;
    let mut headers = Headers::default();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| ParseError::BadHeader(format!("no colon in {line:?}")))?;
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(ParseError::BadHeader(format!("bad header name {name:?}")));
        }
        let name = canonical_name(name);
        let value = value.trim();
        // Content-Length is framing: the body's length says it, and writing
        // always emits the true value.
        if name == "Content-Length" {
            continue;
        }
        if is_list_header(&name) && value != "*" {
            for element in split_list(value) {
                headers.push(&name, element);
            }
        } else {
            headers.push(&name, value);
        }
        if headers.0.len() > MAX_HEADERS {
            return Err(ParseError::TooManyHeaders);
        }
    }
    let body = Bytes::copy_from_slice(body);
    if let Some(rest) = start_line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let status: u16 = code
            .parse()
            .ok()
            .filter(|s| (100..700).contains(s))
            .ok_or_else(|| ParseError::BadStartLine(start_line.to_owned()))?;
        Ok(Message::Response(Response {
            status,
            reason: reason.trim().to_owned(),
            headers,
            body,
        }))
    } else {
        let mut parts = start_line.split(' ');
        let (Some(method), Some(uri), Some("SIP/2.0"), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ParseError::BadStartLine(start_line.to_owned()));
        };
        Ok(Message::Request(Request {
            method: method.parse()?,
            uri: Uri::parse(uri)?,
            headers,
            body,
        }))
    }
}

/// Header lines with continuation lines (starting with space or tab) joined
/// to the line before by a single space (RFC 3261 §7.3.1).
fn unfold(head: &str) -> impl Iterator<Item = String> + '_ {
    let mut lines = head.lines().peekable();
    std::iter::from_fn(move || {
        let mut line = lines.next()?.trim_end().to_owned();
        while let Some(next) = lines.next_if(|l| l.starts_with([' ', '\t'])) {
            line.push(' ');
            line.push_str(next.trim());
        }
        Some(line)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> Result<Request, ParseError> {
        match parse(text.as_bytes())? {
            Message::Request(r) => Ok(r),
            Message::Response(_) => Err(ParseError::Empty),
        }
    }

    fn response(text: &str) -> Result<Response, ParseError> {
        match parse(text.as_bytes())? {
            Message::Response(r) => Ok(r),
            Message::Request(_) => Err(ParseError::Empty),
        }
    }

    #[test]
    fn compact_header_names_are_expanded() -> Result<(), ParseError> {
        let r = request(
            "REGISTER sip:example.test SIP/2.0\r\n\
             v: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n\
             f: <sip:a@example.test>;tag=1\r\n\
             t: <sip:a@example.test>\r\n\
             i: c1\r\n\
             CSeq: 1 REGISTER\r\n\
             m: <sip:a@127.0.0.1:5060>\r\n\
             k: outbound\r\n\
             c: text/plain\r\n\
             s: hi\r\n\
             e: gzip\r\n\
             l: 0\r\n\r\n",
        )?;
        assert_eq!(r.headers.via()?.branch(), Some("z9hG4bK1"));
        assert_eq!(r.headers.from()?.tag(), Some("1"));
        assert_eq!(r.headers.to()?.uri.to_string(), "sip:a@example.test");
        assert_eq!(r.headers.call_id()?, "c1");
        assert_eq!(r.headers.contacts()?.len(), 1);
        assert_eq!(r.headers.get("Supported"), Some("outbound"));
        assert_eq!(r.headers.get("Content-Type"), Some("text/plain"));
        assert_eq!(r.headers.get("Subject"), Some("hi"));
        assert_eq!(r.headers.get("Content-Encoding"), Some("gzip"));
        Ok(())
    }

    #[test]
    fn ipv6_request_uri_via_and_contact() -> Result<(), ParseError> {
        let r = request(
            "REGISTER sip:[2001:db8::1]:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1\r\n\
             From: <sip:a@example.test>;tag=1\r\n\
             To: <sip:a@example.test>\r\n\
             Call-ID: c1\r\n\
             CSeq: 1 REGISTER\r\n\
             Contact: <sip:a@[2001:db8::1]:5060>\r\n\
             Content-Length: 0\r\n\r\n",
        )?;
        assert_eq!(r.uri.host.to_string(), "[2001:db8::1]");
        assert_eq!(r.headers.via()?.host.to_string(), "[2001:db8::1]");
        let contacts = r.headers.contacts()?;
        assert!(matches!(&contacts[0], Contact::Address(a) if a.uri.port == Some(5060)));
        Ok(())
    }

    #[test]
    fn comma_joined_via_becomes_two_entries() -> Result<(), ParseError> {
        let r = response(
            "SIP/2.0 200 OK\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK2\r\n\
             From: <sip:a@example.test>;tag=1\r\n\
             To: <sip:a@example.test>\r\n\
             Call-ID: c1\r\n\
             CSeq: 1 REGISTER\r\n\
             Content-Length: 0\r\n\r\n",
        )?;
        let vias: Vec<_> = r.headers.get_all("Via").collect();
        assert_eq!(vias.len(), 2);
        assert_eq!(Via::parse(vias[1])?.branch(), Some("z9hG4bK2"));
        Ok(())
    }

    #[test]
    fn contact_with_instance_id_parses() -> Result<(), ParseError> {
        let r = request(
            "REGISTER sip:example.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n\
             Call-ID: c1\r\n\
             CSeq: 1 REGISTER\r\n\
             Contact: <sip:a@127.0.0.1:5060>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1\r\n\
             Content-Length: 0\r\n\r\n",
        )?;
        let Contact::Address(c) = &r.headers.contacts()?[0] else {
            return Err(ParseError::Empty);
        };
        assert_eq!(c.params.get("reg-id"), Some("1"));
        Ok(())
    }

    #[test]
    fn www_authenticate_is_kept_whole() -> Result<(), ParseError> {
        let r = response(
            "SIP/2.0 401 Unauthorized\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n\
             CSeq: 1 REGISTER\r\n\
             WWW-Authenticate: Digest realm=\"example.test\", nonce=\"abc\", qop=\"auth,auth-int\", algorithm=SHA-256\r\n\
             Content-Length: 0\r\n\r\n",
        )?;
        assert_eq!(
            r.headers.get("www-authenticate"),
            Some("Digest realm=\"example.test\", nonce=\"abc\", qop=\"auth,auth-int\", algorithm=SHA-256")
        );
        Ok(())
    }

    #[test]
    fn folding_and_lf_only_line_ends() -> Result<(), ParseError> {
        let r = request(
            "REGISTER sip:example.test SIP/2.0\n\
             Via: SIP/2.0/UDP 127.0.0.1:5060\n \t;branch=z9hG4bK1\n\
             From: <sip:a@example.test>;tag=1\n\
             Subject: one\n\ttwo\n\
             Call-ID: c1\n\
             CSeq: 1 REGISTER\n\
             Content-Length: 0\n\n",
        )?;
        assert_eq!(r.headers.via()?.branch(), Some("z9hG4bK1"));
        assert_eq!(r.headers.get("Subject"), Some("one two"));
        Ok(())
    }

    #[test]
    fn content_length_ends_the_body() -> Result<(), ParseError> {
        let r = request(
            "MESSAGE sip:example.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n\
             Call-ID: c1\r\n\
             CSeq: 1 MESSAGE\r\n\
             Content-Length: 5\r\n\r\n\
             helloREGISTER sip:x SIP/2.0\r\n",
        )?;
        assert_eq!(&r.body[..], b"hello");
        Ok(())
    }

    #[test]
    fn truncated_body_and_bad_length_are_errors() {
        let short = "MESSAGE sip:x SIP/2.0\r\nContent-Length: 10\r\n\r\nhello";
        assert_eq!(
            parse(short.as_bytes()),
            Err(ParseError::Truncated {
                expected: 10,
                got: 5
            })
        );
        let bad = "MESSAGE sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n";
        assert_eq!(parse(bad.as_bytes()), Err(ParseError::BadContentLength));
        let conflict = "MESSAGE sip:x SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nab";
        assert_eq!(
            parse(conflict.as_bytes()),
            Err(ParseError::BadContentLength)
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"\r\n\r\n",
            b"hello",
            b"SIP/2.0 99 Too Low\r\n\r\n",
            b"SIP/2.0 abc\r\n\r\n",
            b"REGISTER sip:x\r\n\r\n",
            b"REGISTER sip:x SIP/3.0\r\n\r\n",
            b"REGISTER sip:x SIP/2.0\r\nno colon\r\n\r\n",
            b"REGISTER sip:x SIP/2.0\r\n: empty\r\n\r\n",
            b"\xff\xfe SIP/2.0\r\n\r\n",
            b"REG\0ISTER sip:x SIP/2.0\r\n\r\n",
            b"OPTIONS sip:x SIP/2.0\r\nSubject: a\x00b\r\n\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn written_message_parses_back_identically() -> Result<(), ParseError> {
        let mut req = Request::new(Method::Register, Uri::parse("sip:example.test")?);
        req.headers
            .push("Via", "SIP/2.0/TCP [::1]:5070;branch=z9hG4bKabc");
        req.headers.push("Call-ID", "x@y");
        req.headers.push("CSeq", "7 REGISTER");
        req.headers.push("Content-Length", "999");
        req.body = Bytes::from_static(b"body");
        let bytes = req.to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("Content-Length: 4\r\n"), "{text}");
        let Message::Request(back) = parse(&bytes)? else {
            return Err(ParseError::Empty);
        };
        assert_eq!(back.headers.cseq()?.seq, 7);
        assert_eq!(&back.body[..], b"body");
        Ok(())
    }

    #[test]
    fn a_long_list_counts_against_the_header_limit() {
        let vias = vec!["SIP/2.0/UDP h"; MAX_HEADERS + 1].join(", ");
        let text = format!("SIP/2.0 200 OK\r\nVia: {vias}\r\n\r\n");
        assert_eq!(parse(text.as_bytes()), Err(ParseError::TooManyHeaders));
    }

    #[test]
    fn loggable_text_hides_credentials() {
        let text = "REGISTER sip:x SIP/2.0\r\nauthorization: Digest username=\"a\", response=\"abc123\"\r\n\
                    Proxy-Authorization: Digest response=\"def456\"\r\nCall-ID: c\r\n\r\n";
        let logged = loggable(text.as_bytes());
        assert!(
            !logged.contains("abc123") && !logged.contains("def456"),
            "{logged}"
        );
        assert!(logged.contains("Call-ID: c"));
    }

    #[test]
    fn seconds_ignores_comments() {
        let mut h = Headers::default();
        h.push("Retry-After", "18000;duration=3600 (in maintenance)");
        h.push("Expires", "abc");
        assert_eq!(h.seconds("Retry-After"), Some(18000));
        assert_eq!(h.seconds("Expires"), None);
        assert_eq!(h.seconds("Min-Expires"), None);
    }
}
