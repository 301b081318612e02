//! SIP and SIPS URIs (RFC 3261 §19.1) and the `;name=value` parameter lists
//! that URIs and headers share.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::message::ParseError;

/// The scheme of a SIP URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `sip:`
    Sip,
    /// `sips:` (TLS on every hop)
    Sips,
}

/// The host part of a URI or Via: a domain name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A DNS name, kept as written.
    Domain(String),
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
}

impl Host {
    /// Parses a host as it appears in a URI or Via: IPv6 inside brackets.
    pub fn parse(s: &str) -> Result<Host, ParseError> {
        if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            return Ipv6Addr::from_str(inner)
                .map(|ip| Host::Ip(IpAddr::V6(ip)))
                .map_err(|_| ParseError::BadUri(format!("bad IPv6 reference {s:?}")));
        }
        if let Ok(ip) = Ipv4Addr::from_str(s) {
            return Ok(Host::Ip(IpAddr::V4(ip)));
        }
        let valid = !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if valid {
            Ok(Host::Domain(s.to_owned()))
        } else {
            Err(ParseError::BadUri(format!("bad host {s:?}")))
        }
    }

    /// The IP address, when the host is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Ip(ip) => Some(*ip),
            Host::Domain(_) => None,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

/// Splits `host[:port]`, where host may be a bracketed IPv6 reference.
pub(crate) fn parse_host_port(s: &str) -> Result<(Host, Option<u16>), ParseError> {
    let s = s.trim();
    let (host, port) = if s.starts_with('[') {
        let end = s
            .find(']')
            .ok_or_else(|| ParseError::BadUri(format!("unclosed IPv6 reference in {s:?}")))?;
        let rest = &s[end + 1..];
        let port = match rest.strip_prefix(':') {
            Some(p) => Some(p),
            None if rest.is_empty() => None,
            None => return Err(ParseError::BadUri(format!("junk after host in {s:?}"))),
        };
        (&s[..=end], port)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = port
        .map(|p| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| ParseError::BadUri(format!("bad port in {s:?}")))
        })
        .transpose()?;
    Ok((Host::parse(host.trim())?, port))
}

/// One `name[=value]` parameter; the value is kept as written (quotes included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Parameter name, as written.
    pub name: String,
    /// Raw value, quotes included, or `None` for a flag such as `;lr`.
    pub value: Option<String>,
}

/// An ordered list of `;name=value` parameters; names compare case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<Param>);

impl Params {
    /// Parses what follows a `;` (the leading `;` already removed).
    pub fn parse(s: &str) -> Result<Params, ParseError> {
        let mut params = Vec::new();
        for part in split_outside_quotes(s, ';') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().to_owned())),
                None => (part, None),
            };
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return Err(ParseError::BadHeader(format!("bad parameter {part:?}")));
            }
            params.push(Param {
                name: name.to_owned(),
                value,
            });
        }
        Ok(Params(params))
    }

    /// Whether a parameter with this name is present (with or without value).
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// The value of a parameter with surrounding quotes removed.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .and_then(|p| p.value.as_deref())
            .map(unquote)
    }

    /// Sets (replacing) a parameter; `value` is written as given.
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        self.remove(name);
        self.0.push(Param {
            name: name.to_owned(),
            value: value.map(str::to_owned),
        });
    }

    /// Removes every parameter with this name.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|p| !p.name.eq_ignore_ascii_case(name));
    }

    /// The parameters in order.
    pub fn iter(&self) -> impl Iterator<Item = &Param> {
        self.0.iter()
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            match &p.value {
                Some(v) => write!(f, ";{}={}", p.name, v)?,
                None => write!(f, ";{}", p.name)?,
            }
        }
        Ok(())
    }
}

/// RFC 3261 `token` characters, plus `+` which feature tags such as
/// `+sip.instance` use.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Removes one level of double quotes and backslash escapes.
pub(crate) fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(s)
}

/// Splits on `sep` where it is outside double quotes and angle brackets.
pub(crate) fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut in_quotes = false;
    let mut escaped = false;
    let mut angle = 0u32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if in_quotes {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_quotes = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            '<' => angle += 1,
            '>' => angle = angle.saturating_sub(1),
            c if c == sep && angle == 0 => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A `sip:` or `sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    /// `sip` or `sips`.
    pub scheme: Scheme,
    /// The user part (may carry `;` user parameters), without a password.
    pub user: Option<String>,
    /// Host name or address.
    pub host: Host,
    /// Explicit port, if any.
    pub port: Option<u16>,
    /// URI parameters such as `transport` and `lr`.
    pub params: Params,
    /// The `?headers` part, kept raw.
    pub headers: Option<String>,
}

impl Uri {
    /// A plain `sip:` URI with a host and no other parts.
    pub fn new(user: Option<&str>, host: Host, port: Option<u16>) -> Uri {
        Uri {
            scheme: Scheme::Sip,
            user: user.map(str::to_owned),
            host,
            port,
            params: Params::default(),
            headers: None,
        }
    }

    /// Parses a URI such as `sip:alice@[2001:db8::1]:5060;transport=tcp`.
    pub fn parse(s: &str) -> Result<Uri, ParseError> {
        let s = s.trim();
        let (scheme, rest) = s
            .split_once(':')
            .ok_or_else(|| ParseError::BadUri(format!("no scheme in {s:?}")))?;
        let scheme = if scheme.eq_ignore_ascii_case("sip") {
            Scheme::Sip
        } else if scheme.eq_ignore_ascii_case("sips") {
            Scheme::Sips
        } else {
            return Err(ParseError::BadUri(format!("unsupported scheme {scheme:?}")));
        };
        let (rest, headers) = match rest.split_once('?') {
            Some((r, h)) => (r, Some(h.to_owned())),
            None => (rest, None),
        };
        // A user part may contain ';' (user parameters), so '@' decides where
        // the host begins; a user part never holds an unescaped '@'.
        let (user, host_and_params) = match rest.find('@') {
            Some(at) => {
                let userinfo = &rest[..at];
                // Passwords in URIs are deprecated (RFC 3261 §19.1.1); drop them.
                let user = userinfo.split(':').next().unwrap_or(userinfo);
                if user.is_empty() {
                    return Err(ParseError::BadUri(format!("empty user in {s:?}")));
                }
                (Some(user.to_owned()), &rest[at + 1..])
            }
            None => (None, rest),
        };
        let (host_port, params) = match host_and_params.split_once(';') {
            Some((hp, p)) => (hp, Params::parse(p)?),
            None => (host_and_params, Params::default()),
        };
        let (host, port) = parse_host_port(host_port)?;
        Ok(Uri {
            scheme,
            user,
            host,
            port,
            params,
            headers,
        })
    }

    /// The `transport` parameter, lower-cased, if present.
    pub fn transport_param(&self) -> Option<String> {
        self.params.get("transport").map(str::to_ascii_lowercase)
    }
}

impl FromStr for Uri {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Uri, ParseError> {
        Uri::parse(s)
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.scheme {
            Scheme::Sip => "sip:",
            Scheme::Sips => "sips:",
        })?;
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write!(f, "{}", self.params)?;
        if let Some(h) = &self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_host_with_port_and_params() -> Result<(), ParseError> {
        let uri = Uri::parse("sip:alice@[2001:db8::1]:5060;transport=tcp")?;
        assert_eq!(uri.user.as_deref(), Some("alice"));
        assert_eq!(
            uri.host,
            Host::Ip("2001:db8::1".parse().map_err(|_| ParseError::Empty)?)
        );
        assert_eq!(uri.port, Some(5060));
        assert_eq!(uri.transport_param().as_deref(), Some("tcp"));
        assert_eq!(
            uri.to_string(),
            "sip:alice@[2001:db8::1]:5060;transport=tcp"
        );
        Ok(())
    }

    #[test]
    fn user_parameters_and_headers_survive_round_trip() -> Result<(), ParseError> {
        let text = "sips:+4930123;phone-context=example.test@gw.example.test;lr?Subject=hi";
        let uri = Uri::parse(text)?;
        assert_eq!(uri.scheme, Scheme::Sips);
        assert_eq!(
            uri.user.as_deref(),
            Some("+4930123;phone-context=example.test")
        );
        assert!(uri.params.contains("lr"));
        assert_eq!(uri.to_string(), text);
        Ok(())
    }

    #[test]
    fn rejects_bad_uris() {
        for bad in [
            "alice@example.test",
            "tel:+123",
            "sip:",
            "sip:a@[::1",
            "sip:a@host:99999",
            "sip:a@ho st",
            "sip:@host",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn quoted_parameter_values_keep_semicolons() -> Result<(), ParseError> {
        let params = Params::parse("a=\"x;y\";b;c=3")?;
        assert_eq!(params.get("a"), Some("x;y"));
        assert!(params.contains("B"));
        assert_eq!(params.get("c"), Some("3"));
        Ok(())
    }
}
