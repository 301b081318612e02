//! Answering a 401/407 challenge to a request (RFC 3261 §22.2): the same
//! request again with credentials and the next CSeq, ready for a new
//! transaction.

use rand::Rng;

use super::digest::{Challenge, DigestClient, Password};
use super::message::{Request, Response};

/// An agent's credentials and digest state (nonce counts), for answering
/// the challenges its requests meet.
#[derive(Debug)]
pub struct Authenticator {
    username: String,
    password: Password,
    digest: DigestClient,
}

impl Authenticator {
    /// Credentials for `username`.
    pub fn new(username: String, password: Password) -> Authenticator {
        Authenticator {
            username,
            password,
            digest: DigestClient::default(),
        }
    }

    /// `request` again, answering the challenge in `response` (see
    /// [`answer_challenge`]).
    pub fn answer(
        &mut self,
        request: &Request,
        response: &Response,
        rng: &mut impl Rng,
    ) -> Result<Request, String> {
        let cnonce = format!("{:016x}", rng.random::<u64>());
        answer_challenge(
            request,
            response,
            &mut self.digest,
            &self.username,
            &self.password,
            &cnonce,
        )
    }
}

/// `request` again with credentials for the challenge in `response`, its
/// CSeq one higher and its Via gone (the new transaction adds one).
pub fn answer_challenge(
    request: &Request,
    response: &Response,
    digest: &mut DigestClient,
    username: &str,
    password: &Password,
    cnonce: &str,
) -> Result<Request, String> {
    let proxy = response.status == 407;
    let (challenge_header, answer_header) = if proxy {
        ("Proxy-Authenticate", "Proxy-Authorization")
    } else {
        ("WWW-Authenticate", "Authorization")
    };
    let challenge =
        Challenge::choose(response.headers.get_all(challenge_header)).map_err(|e| e.to_string())?;
    let value = digest.authorize(
        &challenge,
        username,
        password,
        request.method.as_str(),
        &request.uri.to_string(),
        cnonce,
    );
    let mut again = request.clone();
    let seq = again.headers.cseq().map(|c| c.seq).unwrap_or(1) + 1;
    again
        .headers
        .set("CSeq", format!("{seq} {}", request.method.as_str()));
    again.headers.set(answer_header, value);
    again.headers.remove("Via");
    Ok(again)
}
