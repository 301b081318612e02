//! Malformed input never panics: random bytes and random damage to valid
//! messages go through the parser, the stream framer and the endpoint.

use std::net::SocketAddr;
use std::time::Instant;

use locus_core::location::{pidf, Location, Timestamp};
use locus_core::media::sdp::{self, Codec, Direction, LocalMedia};
use locus_core::sip::digest::{Challenge, Password};
use locus_core::sip::endpoint::{Endpoint, EndpointConfig};
use locus_core::sip::framing::StreamFramer;
use locus_core::sip::message::parse;
use locus_core::sip::registration::{RegistrationConfig, RetryPolicy};
use locus_core::sip::transaction::Timers;
use locus_core::sip::{Transport, Uri};
use proptest::prelude::*;

const VALID: &[&str] = &[
    "REGISTER sip:example.test SIP/2.0\r\nv: SIP/2.0/UDP [::1]:5060;branch=z9hG4bK1;rport\r\nf: <sip:a@example.test>;tag=1\r\nt: <sip:a@example.test>\r\ni: c1\r\nCSeq: 1 REGISTER\r\nm: <sip:a@[::1]:5060>;+sip.instance=\"<urn:uuid:1>\";reg-id=1\r\nl: 0\r\n\r\n",
    "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1, SIP/2.0/TCP 10.0.0.1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:a@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nWWW-Authenticate: Digest realm=\"x\", nonce=\"n\", qop=\"auth,auth-int\", algorithm=SHA-256\r\nContent-Length: 0\r\n\r\n",
    "OPTIONS sip:a@127.0.0.1:5070 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.2:5060\n ;branch=z9hG4bKo\nFrom: <sip:p@x>;tag=9\nTo: <sip:a@x>\nCall-ID: o\nCSeq: 5 OPTIONS\nContent-Length: 4\n\nbody",
];

fn endpoint() -> Endpoint {
    let uri = |s: &str| Uri::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    Endpoint::new(EndpointConfig {
        transport: Transport::Udp,
        server: SocketAddr::from(([127, 0, 0, 2], 5060)),
        local: SocketAddr::from(([127, 0, 0, 1], 5070)),
        registration: RegistrationConfig {
            aor: uri("sip:a@x"),
            registrar: uri("sip:x"),
            contact: uri("sip:a@127.0.0.1:5070"),
            instance_id: "urn:uuid:00000000-0000-4000-8000-000000000000".into(),
            reg_id: 1,
            expires: 60,
            username: "a".into(),
            password: Password::new("p"),
            user_agent: "t".into(),
            retry: RetryPolicy::default(),
        },
        timers: Timers::default(),
        keepalive: None,
        keepalive_timeout: std::time::Duration::from_secs(5),
        seed: 1,
    })
}

/// A valid message with `edits` bytes overwritten, inserted or removed.
fn damaged() -> impl Strategy<Value = Vec<u8>> {
    (
        0..VALID.len(),
        prop::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 0..8),
    )
        .prop_map(|(i, edits)| {
            let mut bytes = VALID[i].as_bytes().to_vec();
            for (pos, byte, op) in edits {
                let at = usize::from(pos) % (bytes.len() + 1);
                match op {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => {}
                }
            }
            bytes
        })
}

fn exercise(bytes: &[u8]) {
    if let Ok(msg) = parse(bytes) {
        let h = msg.headers();
        let _ = (
            h.via(),
            h.from(),
            h.to(),
            h.cseq(),
            h.contacts(),
            h.call_id(),
        );
        for value in h.get_all("WWW-Authenticate") {
            let _ = Challenge::parse(value);
        }
        assert!(
            parse(&msg.to_bytes()).is_ok(),
            "a parsed message must survive a round trip"
        );
    }
    let mut framer = StreamFramer::new(2048);
    let mid = bytes.len() / 2;
    for chunk in [&bytes[..mid], &bytes[mid..]] {
        framer.push(chunk);
        while let Ok(Some(_)) = framer.next_frame() {}
    }
    let mut ep = endpoint();
    let now = Instant::now();
    ep.register(now);
    ep.handle_datagram(now, SocketAddr::from(([127, 0, 0, 2], 5060)), bytes);
    while ep.poll_transmit().is_some() {}
    while ep.poll_event().is_some() {}
}

const OFFER: &str = "v=0\r\no=- 123 456 IN IP4 127.0.0.5\r\ns=-\r\nc=IN IP4 127.0.0.5\r\nt=0 0\r\n\
    m=audio 10000 RTP/AVP 96 0 8 97\r\na=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1\r\n\
    a=rtpmap:97 telephone-event/8000\r\na=ptime:20\r\na=sendonly\r\n";

fn damaged_sdp() -> impl Strategy<Value = String> {
    prop::collection::vec((any::<u16>(), any::<char>(), any::<bool>()), 0..6).prop_map(|edits| {
        let mut chars: Vec<char> = OFFER.chars().collect();
        for (pos, c, insert) in edits {
            let at = usize::from(pos) % (chars.len() + 1);
            if insert || at == chars.len() {
                chars.insert(at, c);
            } else {
                chars[at] = c;
            }
        }
        chars.into_iter().collect()
    })
}

/// A PIDF-LO document with characters replaced, dropped or doubled.
fn damaged_pidf() -> impl Strategy<Value = String> {
    let doc = pidf::encode(&pidf::Presence {
        entity: "sip:alice@example.test".into(),
        open: Some(true),
        location: Location::new(
            48.2,
            16.37,
            30.0,
            Timestamp::parse("2026-11-22T04:00:00Z").ok(),
        )
        .ok(),
        method: Some("GPS".into()),
        retransmission_allowed: false,
        retention_expiry: None,
    });
    let chars: Vec<char> = doc.chars().collect();
    let n = chars.len();
    prop::collection::vec((0..n, any::<char>(), 0u8..3), 1..8).prop_map(move |edits| {
        let mut out = chars.clone();
        for (at, c, kind) in edits {
            let at = at.min(out.len().saturating_sub(1));
            match kind {
                0 if !out.is_empty() => {
                    out.remove(at);
                }
                1 => out.insert(at, c),
                _ if !out.is_empty() => out[at] = c,
                _ => {}
            }
        }
        out.into_iter().collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn damaged_pidf_lo_never_panics(text in damaged_pidf()) {
        if let Ok(p) = pidf::decode(text.as_bytes()) {
            if let Some(l) = &p.location {
                prop_assert!((-90.0..=90.0).contains(&l.lat) && (-180.0..=180.0).contains(&l.lon));
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        exercise(&bytes);
    }

    #[test]
    fn damaged_messages_never_panic(bytes in damaged()) {
        exercise(&bytes);
    }

    #[test]
    fn damaged_sdp_never_panics(text in damaged_sdp()) {
        let local = LocalMedia {
            rtp: SocketAddr::from(([127, 0, 0, 1], 40000)),
            codecs: vec![Codec::Opus, Codec::Pcmu],
            direction: Direction::SendRecv,
            ptime: 20,
            session_id: 1,
            session_version: 1,
        };
        let _ = sdp::answer(&text, &local);
        let _ = sdp::accept_answer(&text, &local);
    }
}
