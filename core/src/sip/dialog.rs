//! SIP dialogs (RFC 3261 §12): what two user agents share once an INVITE is
//! answered, how requests inside it are built, and how incoming in-dialog
//! requests are checked.

use super::header::{Contact, NameAddr};
use super::message::{Headers, Method, ParseError, Request, Response};
use super::uri::Uri;

/// Why a message cannot create or continue a dialog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    /// From or To has no tag where one is required.
    #[error("{0} has no tag")]
    MissingTag(&'static str),
    /// No usable Contact to send later requests to.
    #[error("no Contact to reach the peer at")]
    MissingContact,
    /// A header the dialog needs is malformed.
    #[error(transparent)]
    Header(#[from] ParseError),
    /// An in-dialog request came with a CSeq lower than an earlier one
    /// (RFC 3261 §12.2.2: answer 500).
    #[error("CSeq {got} is lower than {last}")]
    OutOfOrder {
        /// The CSeq received.
        got: u32,
        /// The highest seen before.
        last: u32,
    },
}

/// Call-ID plus both tags: what identifies a dialog.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// Call-ID.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// The peer's tag.
    pub remote_tag: String,
}

/// One dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    id: DialogId,
    /// Our address with our tag (From of our requests).
    local: NameAddr,
    /// The peer's address with its tag (To of our requests).
    remote: NameAddr,
    local_seq: u32,
    remote_seq: Option<u32>,
    remote_target: Uri,
    route_set: Vec<NameAddr>,
}

impl Dialog {
    /// The dialog a caller gets from its INVITE and a 2xx (or a 1xx with a
    /// To tag): route set is the response's Record-Route reversed.
    pub fn from_uac(invite: &Request, response: &Response) -> Result<Dialog, DialogError> {
        let local = invite.headers.from()?;
        let remote = response.headers.to()?;
        let local_tag = local
            .tag()
            .ok_or(DialogError::MissingTag("From"))?
            .to_owned();
        let remote_tag = remote
            .tag()
            .ok_or(DialogError::MissingTag("To"))?
            .to_owned();
        let mut route_set = record_route(&response.headers)?;
        route_set.reverse();
        Ok(Dialog {
            id: DialogId {
                call_id: invite.headers.call_id()?.to_owned(),
                local_tag,
                remote_tag,
            },
            local,
            remote,
            local_seq: invite.headers.cseq()?.seq,
            remote_seq: None,
            remote_target: contact_uri(response.headers.contacts()?)?,
            route_set,
        })
    }

    /// The dialog a callee gets when it answers `invite`, choosing
    /// `local_tag` for its To: route set is the Record-Route in order.
    pub fn from_uas(invite: &Request, local_tag: &str) -> Result<Dialog, DialogError> {
        let remote = invite.headers.from()?;
        let remote_tag = remote
            .tag()
            .ok_or(DialogError::MissingTag("From"))?
            .to_owned();
        let mut local = invite.headers.to()?;
        local.params.set("tag", Some(local_tag));
        Ok(Dialog {
            id: DialogId {
                call_id: invite.headers.call_id()?.to_owned(),
                local_tag: local_tag.to_owned(),
                remote_tag,
            },
            local,
            remote,
            local_seq: 0,
            remote_seq: Some(invite.headers.cseq()?.seq),
            remote_target: contact_uri(invite.headers.contacts()?)?,
            route_set: record_route(&invite.headers)?,
        })
    }

    /// Call-ID and tags.
    pub fn id(&self) -> &DialogId {
        &self.id
    }

    /// Where in-dialog requests are addressed.
    pub fn remote_target(&self) -> &Uri {
        &self.remote_target
    }

    /// The CSeq of our last request.
    pub fn local_seq(&self) -> u32 {
        self.local_seq
    }

    /// Moves our CSeq on to `seq` (a request of ours was re-sent outside
    /// [`Dialog::request`], e.g. with credentials).
    pub fn set_local_seq(&mut self, seq: u32) {
        self.local_seq = self.local_seq.max(seq);
    }

    /// Whether `request` belongs to this dialog (Call-ID, and the tags seen
    /// from the other side).
    pub fn matches(&self, request: &Request) -> bool {
        let (Ok(call_id), Ok(from), Ok(to)) = (
            request.headers.call_id(),
            request.headers.from(),
            request.headers.to(),
        ) else {
            return false;
        };
        call_id == self.id.call_id
            && from.tag() == Some(self.id.remote_tag.as_str())
            && to.tag() == Some(self.id.local_tag.as_str())
    }

    /// A new request in the dialog (CSeq incremented; Via left to the
    /// transaction layer). ACK and CANCEL are not built here.
    pub fn request(&mut self, method: Method) -> Request {
        self.local_seq += 1;
        self.build(method, self.local_seq)
    }

    /// The ACK for a 2xx to the INVITE with CSeq `invite_seq` (RFC 3261
    /// §13.2.2.4): a new request with the INVITE's CSeq number.
    pub fn ack(&self, invite_seq: u32) -> Request {
        self.build(Method::Ack, invite_seq)
    }

    fn build(&self, method: Method, seq: u32) -> Request {
        let loose = self
            .route_set
            .first()
            .is_none_or(|r| r.uri.params.contains("lr"));
        let (uri, routes): (Uri, Vec<String>) = if loose {
            let routes = self.route_set.iter().map(ToString::to_string).collect();
            (self.remote_target.clone(), routes)
        } else {
            // Strict routing (RFC 2543 proxies): the first route becomes the
            // Request-URI and the remote target goes last in Route.
            let mut first = self.route_set[0].uri.clone();
            first.params.remove("lr");
            first.params.remove("maddr");
            first.params.remove("ttl");
            let mut routes: Vec<String> = self.route_set[1..]
                .iter()
                .map(ToString::to_string)
                .collect();
            routes.push(NameAddr::new(self.remote_target.clone()).to_string());
            (first, routes)
        };
        let mut req = Request::new(method.clone(), uri);
        let h = &mut req.headers;
        h.push("Max-Forwards", "70");
        h.push("From", self.local.to_string());
        h.push("To", self.remote.to_string());
        h.push("Call-ID", self.id.call_id.clone());
        h.push("CSeq", format!("{seq} {method}"));
        for route in routes {
            h.push("Route", route);
        }
        req
    }

    /// Checks an incoming in-dialog request and applies it: CSeq must not go
    /// back, and an INVITE or UPDATE with a Contact refreshes the target.
    pub fn handle_remote_request(&mut self, request: &Request) -> Result<(), DialogError> {
        let cseq = request.headers.cseq()?;
        // ACK and CANCEL reuse the INVITE's number; they neither advance nor
        // violate the order.
        if !matches!(request.method, Method::Ack | Method::Cancel) {
            if let Some(last) = self.remote_seq {
                if cseq.seq < last || (cseq.seq == last && request.method != Method::Invite) {
                    return Err(DialogError::OutOfOrder {
                        got: cseq.seq,
                        last,
                    });
                }
            }
            self.remote_seq = Some(cseq.seq);
        }
        if matches!(request.method, Method::Invite | Method::Update) {
            if let Ok(uri) = contact_uri(request.headers.contacts()?) {
                self.remote_target = uri;
            }
        }
        Ok(())
    }

    /// A 2xx to our re-INVITE or UPDATE may move the peer's target.
    pub fn handle_target_refresh_response(&mut self, response: &Response) {
        if let Ok(uri) = response
            .headers
            .contacts()
            .map_err(DialogError::from)
            .and_then(contact_uri)
        {
            self.remote_target = uri;
        }
    }
}

fn contact_uri(contacts: Vec<Contact>) -> Result<Uri, DialogError> {
    contacts
        .into_iter()
        .find_map(|c| match c {
            Contact::Address(a) => Some(a.uri),
            Contact::Wildcard => None,
        })
        .ok_or(DialogError::MissingContact)
}

fn record_route(headers: &Headers) -> Result<Vec<NameAddr>, DialogError> {
    headers
        .get_all("Record-Route")
        .map(|v| NameAddr::parse(v).map_err(DialogError::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{parse, Message};

    const INVITE: &str = "INVITE sip:bob@example.test SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv1\r\n\
        Record-Route: <sip:p2.example.test;lr>, <sip:p1.example.test;lr>\r\n\
        From: \"Alice\" <sip:alice@example.test>;tag=a1\r\n\
        To: <sip:bob@example.test>\r\n\
        Call-ID: call-1\r\n\
        CSeq: 7 INVITE\r\n\
        Contact: <sip:alice@127.0.0.1:5070>\r\n\
        Content-Length: 0\r\n\r\n";

    fn invite() -> Request {
        match parse(INVITE.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn ok(invite: &Request, record_route: &[&str]) -> Response {
        let mut r = invite.response(200, "OK");
        r.headers.set("To", "<sip:bob@example.test>;tag=b1");
        r.headers
            .push("Contact", "<sip:bob@[2001:db8::2]:5080;transport=tcp>");
        for rr in record_route {
            r.headers.push("Record-Route", *rr);
        }
        r
    }

    #[test]
    fn caller_routes_through_reversed_record_route() {
        let inv = invite();
        let mut d = Dialog::from_uac(
            &inv,
            &ok(
                &inv,
                &["<sip:p2.example.test;lr>", "<sip:p1.example.test;lr>"],
            ),
        )
        .unwrap();
        assert_eq!(d.id().remote_tag, "b1");
        let bye = d.request(Method::Bye);
        assert_eq!(
            bye.uri.to_string(),
            "sip:bob@[2001:db8::2]:5080;transport=tcp"
        );
        let routes: Vec<_> = bye.headers.get_all("Route").collect();
        assert_eq!(
            routes,
            ["<sip:p1.example.test;lr>", "<sip:p2.example.test;lr>"]
        );
        assert_eq!(bye.headers.get("CSeq"), Some("8 BYE"));
        assert_eq!(bye.headers.from().unwrap().tag(), Some("a1"));
        assert_eq!(bye.headers.to().unwrap().tag(), Some("b1"));
        assert_eq!(
            d.ack(7).headers.get("CSeq"),
            Some("7 ACK"),
            "ACK keeps the INVITE's number"
        );
        assert_eq!(
            d.request(Method::Invite).headers.get("CSeq"),
            Some("9 INVITE")
        );
    }

    #[test]
    fn strict_route_becomes_the_request_uri() {
        let inv = invite();
        let mut d = Dialog::from_uac(
            &inv,
            &ok(
                &inv,
                &[
                    "<sip:p2.example.test>",
                    "<sip:old.example.test;maddr=10.0.0.1>",
                ],
            ),
        )
        .unwrap();
        let bye = d.request(Method::Bye);
        assert_eq!(bye.uri.to_string(), "sip:old.example.test");
        let routes: Vec<_> = bye.headers.get_all("Route").collect();
        assert_eq!(
            routes,
            [
                "<sip:p2.example.test>",
                "<sip:bob@[2001:db8::2]:5080;transport=tcp>"
            ]
        );
    }

    #[test]
    fn callee_keeps_record_route_order_and_checks_cseq() {
        let inv = invite();
        let mut d = Dialog::from_uas(&inv, "b1").unwrap();
        assert_eq!(d.id().remote_tag, "a1");
        let bye = d.request(Method::Bye);
        assert_eq!(bye.uri.to_string(), "sip:alice@127.0.0.1:5070");
        assert_eq!(
            bye.headers.get_all("Route").collect::<Vec<_>>(),
            ["<sip:p2.example.test;lr>", "<sip:p1.example.test;lr>"]
        );
        assert_eq!(bye.headers.get("CSeq"), Some("1 BYE"));
        assert_eq!(
            bye.headers.to().unwrap().display_name.as_deref(),
            Some("Alice")
        );

        let mut reinvite = inv.clone();
        reinvite.headers.set("To", "<sip:bob@example.test>;tag=b1");
        reinvite.headers.set("CSeq", "8 INVITE");
        reinvite
            .headers
            .set("Contact", "<sip:alice@127.0.0.9:6000>");
        assert!(d.matches(&reinvite));
        d.handle_remote_request(&reinvite).unwrap();
        assert_eq!(
            d.remote_target().to_string(),
            "sip:alice@127.0.0.9:6000",
            "target refresh"
        );

        let mut stale = reinvite.clone();
        stale.method = Method::Bye;
        stale.headers.set("CSeq", "5 BYE");
        assert_eq!(
            d.handle_remote_request(&stale),
            Err(DialogError::OutOfOrder { got: 5, last: 8 })
        );
        let mut ack = reinvite.clone();
        ack.method = Method::Ack;
        ack.headers.set("CSeq", "8 ACK");
        assert!(
            d.handle_remote_request(&ack).is_ok(),
            "ACK reuses the INVITE's CSeq"
        );
    }

    #[test]
    fn responses_without_tag_or_contact_cannot_make_a_dialog() {
        let inv = invite();
        let mut no_tag = ok(&inv, &[]);
        no_tag.headers.set("To", "<sip:bob@example.test>");
        assert_eq!(
            Dialog::from_uac(&inv, &no_tag),
            Err(DialogError::MissingTag("To"))
        );
        let mut no_contact = ok(&inv, &[]);
        no_contact.headers.remove("Contact");
        assert_eq!(
            Dialog::from_uac(&inv, &no_contact),
            Err(DialogError::MissingContact)
        );
        let mut anonymous = inv.clone();
        anonymous.headers.set("From", "<sip:alice@example.test>");
        assert_eq!(
            Dialog::from_uas(&anonymous, "x"),
            Err(DialogError::MissingTag("From"))
        );
    }

    #[test]
    fn requests_from_other_dialogs_do_not_match() {
        let inv = invite();
        let d = Dialog::from_uas(&inv, "b1").unwrap();
        let mut other = inv.clone();
        other.headers.set("To", "<sip:bob@example.test>;tag=zz");
        assert!(!d.matches(&other));
    }
}
