//! HTTP Digest authentication as SIP uses it (RFC 3261 §22, RFC 8760):
//! MD5 and SHA-256, `qop=auth`, per-nonce hex `nc` counting, `stale=true`.

use std::collections::HashMap;
use std::fmt;

use md5::Md5;
use sha2::{Digest as _, Sha256};

use super::uri::{split_outside_quotes, unquote};

/// Why a challenge cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Not a Digest challenge (e.g. Basic).
    #[error("unsupported authentication scheme {0:?}")]
    Scheme(String),
    /// The challenge names an algorithm we do not implement.
    #[error("unsupported digest algorithm {0:?}")]
    Algorithm(String),
    /// The challenge offers qop values, none of them `auth`.
    #[error("challenge offers no qop=auth")]
    Qop,
    /// realm or nonce missing, or a parameter is malformed.
    #[error("malformed challenge: {0}")]
    Malformed(String),
}

/// A digest hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Algorithm {
    /// MD5 (RFC 2617), the historic default.
    Md5,
    /// SHA-256 (RFC 8760), preferred when offered.
    Sha256,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn hash(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => hex::encode(Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => hex::encode(Sha256::digest(data.as_bytes())),
        }
    }
}

/// A parsed WWW-Authenticate or Proxy-Authenticate challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Protection realm.
    pub realm: String,
    /// Server nonce.
    pub nonce: String,
    /// Opaque value to echo back.
    pub opaque: Option<String>,
    /// Hash algorithm.
    pub algorithm: Algorithm,
    /// Whether the server offered qop (and so we answer with qop=auth).
    pub qop_auth: bool,
    /// The previous credentials were right but the nonce had expired.
    pub stale: bool,
}

impl Challenge {
    /// Parses one challenge header value.
    pub fn parse(value: &str) -> Result<Challenge, DigestError> {
        let value = value.trim();
        let (scheme, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("digest") {
            return Err(DigestError::Scheme(scheme.to_owned()));
        }
        let mut realm = None;
        let mut nonce = None;
        let mut opaque = None;
        let mut algorithm = Algorithm::Md5;
        let mut qop = None;
        let mut stale = false;
        for param in split_outside_quotes(rest, ',') {
            let param = param.trim();
            if param.is_empty() {
                continue;
            }
            let (name, raw) = param.split_once('=').ok_or_else(|| {
                DigestError::Malformed(format!("parameter without value: {param:?}"))
            })?;
            let v = unquote(raw.trim()).to_owned();
            match name.trim().to_ascii_lowercase().as_str() {
                "realm" => realm = Some(v),
                "nonce" => nonce = Some(v),
                "opaque" => opaque = Some(v),
                "stale" => stale = v.eq_ignore_ascii_case("true"),
                "qop" => qop = Some(v),
                "algorithm" => {
                    algorithm = if v.eq_ignore_ascii_case("md5") {
                        Algorithm::Md5
                    } else if v.eq_ignore_ascii_case("sha-256") {
                        Algorithm::Sha256
                    } else {
                        return Err(DigestError::Algorithm(v));
                    }
                }
                _ => {}
            }
        }
        let qop_auth = match qop {
            None => false,
            Some(list)
                if list
                    .split(',')
                    .any(|q| q.trim().eq_ignore_ascii_case("auth")) =>
            {
                true
            }
            Some(_) => return Err(DigestError::Qop),
        };
        Ok(Challenge {
            realm: realm.ok_or_else(|| DigestError::Malformed("no realm".into()))?,
            nonce: nonce.ok_or_else(|| DigestError::Malformed("no nonce".into()))?,
            opaque,
            algorithm,
            qop_auth,
            stale,
        })
    }

    /// The best challenge we can answer among several: SHA-256 over MD5.
    pub fn choose<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Challenge, DigestError> {
        let mut best: Option<Challenge> = None;
        let mut last_err = DigestError::Malformed("no challenge".into());
        for v in values {
            match Challenge::parse(v) {
                Ok(c) if best.as_ref().is_none_or(|b| c.algorithm > b.algorithm) => best = Some(c),
                Ok(_) => {}
                Err(e) => last_err = e,
            }
        }
        best.ok_or(last_err)
    }
}

/// A password that never shows up in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(p: impl Into<String>) -> Password {
        Password(p.into())
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// Answers challenges for one account, counting nonce uses.
#[derive(Debug, Default)]
pub struct DigestClient {
    nonce_counts: HashMap<String, u32>,
}

impl DigestClient {
    /// The Authorization (or Proxy-Authorization) header value answering
    /// `challenge` for a request with `method` and Request-URI `uri`.
    pub fn authorize(
        &mut self,
        challenge: &Challenge,
        username: &str,
        password: &Password,
        method: &str,
        uri: &str,
        cnonce: &str,
    ) -> String {
        let alg = challenge.algorithm;
        let ha1 = alg.hash(&format!("{username}:{}:{}", challenge.realm, password.0));
        let ha2 = alg.hash(&format!("{method}:{uri}"));
        let mut header = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\"",
            quote(username),
            quote(&challenge.realm),
            quote(&challenge.nonce),
            quote(uri)
        );
        let response = if challenge.qop_auth {
            // A new nonce starts counting at 1; the map is bounded by keeping
            // only the current nonce (servers issue one at a time).
            self.nonce_counts.retain(|n, _| *n == challenge.nonce);
            let nc = self
                .nonce_counts
                .entry(challenge.nonce.clone())
                .or_insert(0);
            *nc = nc.wrapping_add(1);
            let nc = format!("{:08x}", *nc);
            let response = alg.hash(&format!(
                "{ha1}:{}:{nc}:{cnonce}:auth:{ha2}",
                challenge.nonce
            ));
            header.push_str(&format!(
                ", cnonce=\"{}\", nc={nc}, qop=auth",
                quote(cnonce)
            ));
            response
        } else {
            alg.hash(&format!("{ha1}:{}:{ha2}", challenge.nonce))
        };
        header.push_str(&format!(
            ", response=\"{response}\", algorithm={}",
            alg.name()
        ));
        if let Some(opaque) = &challenge.opaque {
            header.push_str(&format!(", opaque=\"{}\"", quote(opaque)));
        }
        header
    }
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param<'a>(header: &'a str, name: &str) -> Option<&'a str> {
        split_outside_quotes(header.trim_start_matches("Digest "), ',')
            .into_iter()
            .filter_map(|p| p.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| unquote(v))
    }

    #[test]
    fn rfc2617_md5_vector() -> Result<(), DigestError> {
        let c = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )?;
        let h = DigestClient::default().authorize(
            &c,
            "Mufasa",
            &Password::new("Circle Of Life"),
            "GET",
            "/dir/index.html",
            "0a4f113b",
        );
        assert_eq!(
            param(&h, "response"),
            Some("6629fae49393a05397450978507c4ef1")
        );
        assert_eq!(param(&h, "nc"), Some("00000001"));
        assert_eq!(
            param(&h, "opaque"),
            Some("5ccc069c403ebaf9f0171e9517f40e41")
        );
        Ok(())
    }

    #[test]
    fn rfc7616_sha256_vector_with_lowercase_scheme() -> Result<(), DigestError> {
        let c = Challenge::parse(
            "digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm=SHA-256, \
             nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
        )?;
        assert_eq!(c.algorithm, Algorithm::Sha256);
        let h = DigestClient::default().authorize(
            &c,
            "Mufasa",
            &Password::new("Circle of Life"),
            "GET",
            "/dir/index.html",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        );
        assert_eq!(
            param(&h, "response"),
            Some("753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")
        );
        assert_eq!(param(&h, "algorithm"), Some("SHA-256"));
        Ok(())
    }

    #[test]
    fn nc_counts_in_hex_per_nonce() -> Result<(), DigestError> {
        let c = Challenge::parse("Digest realm=\"r\", nonce=\"n1\", qop=\"auth\"")?;
        let mut client = DigestClient::default();
        let pw = Password::new("p");
        let mut last = String::new();
        for _ in 0..10 {
            last = client.authorize(&c, "u", &pw, "REGISTER", "sip:r", "c");
        }
        assert_eq!(param(&last, "nc"), Some("0000000a"));
        let c2 = Challenge::parse("Digest realm=\"r\", nonce=\"n2\", qop=auth")?;
        let h = client.authorize(&c2, "u", &pw, "REGISTER", "sip:r", "c");
        assert_eq!(param(&h, "nc"), Some("00000001"));
        Ok(())
    }

    #[test]
    fn without_qop_there_is_no_nc_or_cnonce() -> Result<(), DigestError> {
        let c = Challenge::parse("Digest realm=\"r\", nonce=\"n\"")?;
        let h = DigestClient::default().authorize(
            &c,
            "u",
            &Password::new("p"),
            "REGISTER",
            "sip:r",
            "c",
        );
        assert_eq!(param(&h, "nc"), None);
        assert_eq!(param(&h, "cnonce"), None);
        Ok(())
    }

    #[test]
    fn prefers_sha256_among_several() -> Result<(), DigestError> {
        let c = Challenge::choose([
            "Digest realm=\"r\", nonce=\"a\", algorithm=MD5",
            "Digest realm=\"r\", nonce=\"b\", algorithm=SHA-256",
            "Digest realm=\"r\", nonce=\"c\", algorithm=SHA-512-256",
        ])?;
        assert_eq!(c.nonce, "b");
        Ok(())
    }

    #[test]
    fn stale_and_unsupported() {
        assert!(
            matches!(Challenge::parse("Digest realm=\"r\", nonce=\"n\", stale=TRUE"), Ok(c) if c.stale)
        );
        assert!(matches!(
            Challenge::parse("Basic realm=\"r\""),
            Err(DigestError::Scheme(_))
        ));
        assert!(matches!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\""),
            Err(DigestError::Qop)
        ));
        assert!(matches!(
            Challenge::parse("Digest realm=\"r\""),
            Err(DigestError::Malformed(_))
        ));
        assert!(matches!(
            Challenge::parse("Digest realm"),
            Err(DigestError::Malformed(_))
        ));
    }

    #[test]
    fn password_is_redacted_in_debug() {
        assert_eq!(format!("{:?}", Password::new("hunter2")), "Password(***)");
    }
}
