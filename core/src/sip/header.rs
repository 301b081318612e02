//! Typed forms of the headers a user agent reads: Via, the name-addr headers
//! (From, To, Contact, Route) and CSeq.

use std::fmt;

use super::message::{Method, ParseError};
use super::uri::{parse_host_port, split_outside_quotes, Host, Params, Uri};

/// A Via header value (RFC 3261 §20.42).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Transport token, upper-cased: `UDP`, `TCP`, `TLS`, ...
    pub transport: String,
    /// The sent-by host.
    pub host: Host,
    /// The sent-by port, if written.
    pub port: Option<u16>,
    /// Parameters: branch, received, rport, ...
    pub params: Params,
}

impl Via {
    /// Parses `SIP/2.0/UDP host:port;params` (spaces around `/` allowed).
    pub fn parse(s: &str) -> Result<Via, ParseError> {
        let bad = || ParseError::BadHeader(format!("bad Via {s:?}"));
        let s = s.trim();
        let mut parts = s.splitn(3, '/');
        let name = parts.next().ok_or_else(bad)?.trim();
        let version = parts.next().ok_or_else(bad)?.trim();
        let rest = parts.next().ok_or_else(bad)?.trim_start();
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" {
            return Err(bad());
        }
        let split = rest
            .find(|c: char| c.is_ascii_whitespace())
            .ok_or_else(bad)?;
        let transport = rest[..split].to_ascii_uppercase();
        let sent_by_and_params = rest[split..].trim_start();
        let (sent_by, params) = match sent_by_and_params.split_once(';') {
            Some((sb, p)) => (sb, Params::parse(p)?),
            None => (sent_by_and_params, Params::default()),
        };
        let (host, port) = parse_host_port(sent_by).map_err(|_| bad())?;
        Ok(Via {
            transport,
            host,
            port,
            params,
        })
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&str> {
        self.params.get("branch")
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write!(f, "{}", self.params)
    }
}

/// A name-addr or addr-spec with header parameters: From, To, Contact, Route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name, unquoted.
    pub display_name: Option<String>,
    /// The address.
    pub uri: Uri,
    /// Header parameters (after the `>`), such as `tag` or `expires`.
    pub params: Params,
}

impl NameAddr {
    /// An address in angle brackets with no display name or parameters.
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr {
            display_name: None,
            uri,
            params: Params::default(),
        }
    }

    /// Parses `"Name" <uri>;params`, `Name <uri>;params` or `uri;params`.
    pub fn parse(s: &str) -> Result<NameAddr, ParseError> {
        let s = s.trim();
        let bad = |why: &str| ParseError::BadHeader(format!("{why} in {s:?}"));
        let (display_name, after_name) = if let Some(rest) = s.strip_prefix('"') {
            let end = closing_quote(rest).ok_or_else(|| bad("unclosed quote"))?;
            let name = unescape(&rest[..end]);
            (Some(name), rest[end + 1..].trim_start())
        } else {
            match s.find('<') {
                Some(lt) => {
                    let name = s[..lt].trim();
                    ((!name.is_empty()).then(|| name.to_owned()), &s[lt..])
                }
                None => (None, s),
            }
        };
        if let Some(rest) = after_name.strip_prefix('<') {
            let gt = rest.find('>').ok_or_else(|| bad("unclosed <"))?;
            let uri = Uri::parse(&rest[..gt])?;
            let params = parse_trailing_params(&rest[gt + 1..])?;
            Ok(NameAddr {
                display_name,
                uri,
                params,
            })
        } else if display_name.is_some() {
            Err(bad("display name without <uri>"))
        } else {
            // addr-spec form: everything after the first ';' belongs to the header.
            let (uri, params) = match after_name.split_once(';') {
                Some((u, p)) => (u, Params::parse(p)?),
                None => (after_name, Params::default()),
            };
            Ok(NameAddr {
                display_name: None,
                uri: Uri::parse(uri)?,
                params,
            })
        }
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.params.get("tag")
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = &self.display_name {
            write!(
                f,
                "\"{}\" ",
                name.replace('\\', "\\\\").replace('"', "\\\"")
            )?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

fn parse_trailing_params(s: &str) -> Result<Params, ParseError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Params::default());
    }
    let p = s
        .strip_prefix(';')
        .ok_or_else(|| ParseError::BadHeader(format!("junk after address: {s:?}")))?;
    Params::parse(p)
}

/// Index of the closing `"` in a quoted string body, honouring `\` escapes.
fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

/// The Contact header's value: a list of addresses, or `*` (remove all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contact {
    /// `Contact: *`
    Wildcard,
    /// One address of a possibly comma-joined list.
    Address(NameAddr),
}

impl Contact {
    /// Parses one Contact value (lists were split into separate values).
    pub fn parse(s: &str) -> Result<Contact, ParseError> {
        if s.trim() == "*" {
            Ok(Contact::Wildcard)
        } else {
            NameAddr::parse(s).map(Contact::Address)
        }
    }
}

/// A CSeq header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number.
    pub seq: u32,
    /// Method.
    pub method: Method,
}

impl CSeq {
    /// Parses `4711 INVITE`.
    pub fn parse(s: &str) -> Result<CSeq, ParseError> {
        let bad = || ParseError::BadHeader(format!("bad CSeq {s:?}"));
        let mut parts = s.split_ascii_whitespace();
        let seq = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let method = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(CSeq { seq, method })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// Splits a comma-joined header value into its elements, respecting quotes
/// and angle brackets (`Via: a, b` is two Vias).
pub(crate) fn split_list(value: &str) -> impl Iterator<Item = &str> {
    split_outside_quotes(value, ',')
        .into_iter()
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn via_with_ipv6_sent_by() -> Result<(), ParseError> {
        let via = Via::parse("SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1;rport")?;
        assert_eq!(via.transport, "UDP");
        assert_eq!(
            via.host,
            Host::Ip(
                "2001:db8::1"
                    .parse::<IpAddr>()
                    .map_err(|_| ParseError::Empty)?
            )
        );
        assert_eq!(via.port, Some(5060));
        assert_eq!(via.branch(), Some("z9hG4bK1"));
        assert!(via.params.contains("rport"));
        Ok(())
    }

    #[test]
    fn via_with_spaces_around_slashes() -> Result<(), ParseError> {
        let via = Via::parse("SIP / 2.0 / tcp host.example.test;branch=z9hG4bKx")?;
        assert_eq!(via.transport, "TCP");
        assert_eq!(via.port, None);
        Ok(())
    }

    #[test]
    fn contact_with_sip_instance_and_reg_id() -> Result<(), ParseError> {
        let value = "<sip:a@127.0.0.1:5060>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1";
        let Contact::Address(addr) = Contact::parse(value)? else {
            return Err(ParseError::Empty);
        };
        assert_eq!(
            addr.params.get("+sip.instance"),
            Some("<urn:uuid:00000000-0000-1000-8000-000A95A0E128>")
        );
        assert_eq!(addr.params.get("reg-id"), Some("1"));
        assert_eq!(addr.to_string(), value);
        Ok(())
    }

    #[test]
    fn contact_with_ipv6_and_display_name() -> Result<(), ParseError> {
        let Contact::Address(addr) =
            Contact::parse("\"Bob \\\"B\\\"\" <sip:b@[::1]:5070>;expires=60")?
        else {
            return Err(ParseError::Empty);
        };
        assert_eq!(addr.display_name.as_deref(), Some("Bob \"B\""));
        assert_eq!(addr.uri.port, Some(5070));
        assert_eq!(addr.params.get("expires"), Some("60"));
        Ok(())
    }

    #[test]
    fn addr_spec_params_belong_to_header() -> Result<(), ParseError> {
        let addr = NameAddr::parse("sip:a@example.test;tag=abc")?;
        assert_eq!(addr.tag(), Some("abc"));
        assert!(addr.uri.params.iter().next().is_none());
        Ok(())
    }

    #[test]
    fn wildcard_contact() -> Result<(), ParseError> {
        assert_eq!(Contact::parse(" * ")?, Contact::Wildcard);
        Ok(())
    }

    #[test]
    fn list_split_respects_quotes() {
        let parts: Vec<_> = split_list("\"A, B\" <sip:a@x>, <sip:b@y>").collect();
        assert_eq!(parts, ["\"A, B\" <sip:a@x>", "<sip:b@y>"]);
    }

    #[test]
    fn bad_cseq_and_via() {
        assert!(CSeq::parse("x REGISTER").is_err());
        assert!(CSeq::parse("1").is_err());
        assert!(CSeq::parse("1 REGISTER extra").is_err());
        assert!(Via::parse("SIP/2.0/UDP").is_err());
        assert!(Via::parse("HTTP/1.1/TCP a").is_err());
    }
}
