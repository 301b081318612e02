//! SDP offer/answer for one audio stream (RFC 3264), on the `sdp` crate's
//! parser and writer.
//!
//! We offer Opus (48000/2, in-band FEC), PCMU and PCMA in the configured
//! order, plus telephone-event (RFC 4733). Answering, we pick the first codec
//! of *our* order that the offer also has: the user's preference decides,
//! and any pick from the offer is valid for the offerer. Direction follows
//! RFC 3264 §6.1 (sendonly is answered recvonly, and so on), which is how
//! hold and resume travel.

use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};

use sdp::description::common::{Address, Attribute, ConnectionInformation};
use sdp::description::media::{MediaDescription, MediaName, RangedPort};
use sdp::description::session::{Origin, SessionDescription, TimeDescription, Timing};

/// An audio codec we can send and receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Opus, 48 kHz, with in-band FEC.
    Opus,
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
}

impl Codec {
    /// Every codec, in the default order of preference.
    pub const ALL: [Codec; 3] = [Codec::Opus, Codec::Pcmu, Codec::Pcma];

    /// The codec of a name as users write it (`opus`, `pcmu`, `pcma`, or
    /// the G.711 aliases `ulaw`/`alaw`), in any case.
    pub fn from_name(name: &str) -> Option<Codec> {
        match name.trim().to_ascii_lowercase().as_str() {
            "opus" => Some(Codec::Opus),
            "pcmu" | "ulaw" | "g711u" => Some(Codec::Pcmu),
            "pcma" | "alaw" | "g711a" => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// The payload type we offer it with.
    pub fn default_payload_type(self) -> u8 {
        match self {
            Codec::Opus => 111,
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The rtpmap encoding (name/clock[/channels]).
    fn rtpmap(self) -> &'static str {
        match self {
            Codec::Opus => "opus/48000/2",
            Codec::Pcmu => "PCMU/8000",
            Codec::Pcma => "PCMA/8000",
        }
    }

    /// The RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            Codec::Pcmu | Codec::Pcma => 8_000,
        }
    }

    /// The name used in statistics and events.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Opus => "opus",
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }
}

/// Which way media flows, from the describing side's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both ways.
    SendRecv,
    /// We send only (we put the peer on hold).
    SendOnly,
    /// We receive only.
    RecvOnly,
    /// Neither.
    Inactive,
}

impl Direction {
    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an answer may take for this offered direction, given
    /// what we want ourselves.
    fn answer_to(offered: Direction, wanted: Direction) -> Direction {
        let (peer_sends, peer_receives) = match offered {
            Direction::SendRecv => (true, true),
            Direction::SendOnly => (true, false),
            Direction::RecvOnly => (false, true),
            Direction::Inactive => (false, false),
        };
        let (we_send, we_receive) = match wanted {
            Direction::SendRecv => (true, true),
            Direction::SendOnly => (true, false),
            Direction::RecvOnly => (false, true),
            Direction::Inactive => (false, false),
        };
        match (we_send && peer_receives, we_receive && peer_sends) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }
}

/// Why a session description cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// Not parseable as SDP.
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// No audio stream in it.
    #[error("no audio stream offered")]
    NoAudio,
    /// No codec in common (answer with 488 Not Acceptable Here).
    #[error("no codec in common")]
    NoCommonCodec,
    /// No usable connection address or port.
    #[error("no usable connection address")]
    NoAddress,
}

/// What we bring to a negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    /// Where we receive RTP.
    pub rtp: SocketAddr,
    /// Codecs in order of preference.
    pub codecs: Vec<Codec>,
    /// Which way we want media to flow.
    pub direction: Direction,
    /// Packet time in ms.
    pub ptime: u32,
    /// `o=` session id, stable for the call.
    pub session_id: u64,
    /// `o=` version, incremented for each new offer or answer.
    pub session_version: u64,
}

/// The result of a negotiation: how to send and what to expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Where the peer receives RTP (port 0: the stream is rejected).
    pub remote_rtp: SocketAddr,
    /// The codec both sides use.
    pub codec: Codec,
    /// Its payload type on the wire.
    pub payload_type: u8,
    /// The telephone-event payload type, if both sides have it.
    pub telephone_event: Option<u8>,
    /// Our direction after the negotiation.
    pub direction: Direction,
    /// Packet time the peer asked for, if any.
    pub remote_ptime: Option<u32>,
}

const TELEPHONE_EVENT_PT: u8 = 101;

/// Writes an offer.
pub fn offer(local: &LocalMedia) -> String {
    let formats: Vec<(u8, Codec)> = local
        .codecs
        .iter()
        .map(|c| (c.default_payload_type(), *c))
        .collect();
    describe(local, &formats, Some(TELEPHONE_EVENT_PT), local.direction)
}

/// Whether `offer` is one we can answer with `codecs` (checked before the
/// user is asked, so an unusable call is refused at once).
pub fn check_offer(offer: &str, codecs: &[Codec]) -> Result<(), SdpError> {
    Remote::parse(offer)?
        .first_of(codecs)
        .map(|_| ())
        .ok_or(SdpError::NoCommonCodec)
}

/// Answers `offer`: the answer to send and the negotiated media.
pub fn answer(offer: &str, local: &LocalMedia) -> Result<(String, Negotiated), SdpError> {
    let remote = Remote::parse(offer)?;
    // RFC 3264 §6.1 recommends the offerer's order; ours says what we take.
    let (payload_type, codec) = remote
        .first_of(&local.codecs)
        .ok_or(SdpError::NoCommonCodec)?;
    let direction = Direction::answer_to(remote.direction, local.direction);
    let telephone_event = remote.telephone_event;
    let text = describe(local, &[(payload_type, codec)], telephone_event, direction);
    let negotiated = Negotiated {
        remote_rtp: remote.rtp,
        codec,
        payload_type,
        telephone_event,
        direction,
        remote_ptime: remote.ptime,
    };
    Ok((text, negotiated))
}

/// Reads the answer to our offer.
pub fn accept_answer(answer: &str, local: &LocalMedia) -> Result<Negotiated, SdpError> {
    let remote = Remote::parse(answer)?;
    // The answerer lists what it will use; its first codec that we offered wins.
    let (payload_type, codec) = remote
        .first_of(&local.codecs)
        .ok_or(SdpError::NoCommonCodec)?;
    let direction = Direction::answer_to(remote.direction, local.direction);
    Ok(Negotiated {
        remote_rtp: remote.rtp,
        codec,
        payload_type,
        telephone_event: remote.telephone_event,
        direction,
        remote_ptime: remote.ptime,
    })
}

fn describe(
    local: &LocalMedia,
    formats: &[(u8, Codec)],
    telephone_event: Option<u8>,
    direction: Direction,
) -> String {
    let (addr_type, addr) = match local.rtp.ip() {
        IpAddr::V4(ip) => ("IP4", ip.to_string()),
        IpAddr::V6(ip) => ("IP6", ip.to_string()),
    };
    let mut attributes: Vec<Attribute> = Vec::new();
    let mut attr = |key: &str, value: Option<String>| {
        attributes.push(Attribute {
            key: key.to_owned(),
            value,
        })
    };
    for (pt, codec) in formats {
        attr("rtpmap", Some(format!("{pt} {}", codec.rtpmap())));
        if *codec == Codec::Opus {
            attr("fmtp", Some(format!("{pt} useinbandfec=1;minptime=10")));
        }
    }
    if let Some(pt) = telephone_event {
        attr("rtpmap", Some(format!("{pt} telephone-event/8000")));
        attr("fmtp", Some(format!("{pt} 0-16")));
    }
    attr("ptime", Some(local.ptime.to_string()));
    attr(direction.attribute(), None);
    let mut format_list: Vec<String> = formats.iter().map(|(pt, _)| pt.to_string()).collect();
    format_list.extend(telephone_event.map(|pt| pt.to_string()));
    let connection = ConnectionInformation {
        network_type: "IN".into(),
        address_type: addr_type.into(),
        address: Some(Address {
            address: addr.clone(),
            ttl: None,
            range: None,
        }),
    };
    let session = SessionDescription {
        version: 0,
        origin: Origin {
            username: "locus".into(),
            session_id: local.session_id,
            session_version: local.session_version,
            network_type: "IN".into(),
            address_type: addr_type.into(),
            unicast_address: addr,
        },
        session_name: "-".into(),
        connection_information: Some(connection),
        time_descriptions: vec![TimeDescription {
            timing: Timing {
                start_time: 0,
                stop_time: 0,
            },
            repeat_times: vec![],
        }],
        media_descriptions: vec![MediaDescription {
            media_name: MediaName {
                media: "audio".into(),
                port: RangedPort {
                    value: isize::try_from(local.rtp.port()).unwrap_or_default(),
                    range: None,
                },
                protos: vec!["RTP".into(), "AVP".into()],
                formats: format_list,
            },
            attributes,
            ..Default::default()
        }],
        ..Default::default()
    };
    session.marshal()
}

/// The parts of a peer's description we use.
struct Remote {
    rtp: SocketAddr,
    formats: Vec<(u8, Option<Codec>)>,
    telephone_event: Option<u8>,
    direction: Direction,
    ptime: Option<u32>,
}

impl Remote {
    fn parse(text: &str) -> Result<Remote, SdpError> {
        let session = SessionDescription::unmarshal(&mut Cursor::new(text.as_bytes()))
            .map_err(|e| SdpError::Malformed(e.to_string()))?;
        let media = session
            .media_descriptions
            .iter()
            .find(|m| m.media_name.media == "audio")
            .ok_or(SdpError::NoAudio)?;
        let connection = media
            .connection_information
            .as_ref()
            .or(session.connection_information.as_ref())
            .and_then(|c| c.address.as_ref())
            .ok_or(SdpError::NoAddress)?;
        let ip: IpAddr = connection
            .address
            .parse()
            .map_err(|_| SdpError::NoAddress)?;
        let port = u16::try_from(media.media_name.port.value).map_err(|_| SdpError::NoAddress)?;
        let rtpmaps: Vec<(u8, String)> = media
            .attributes
            .iter()
            .filter(|a| a.key == "rtpmap")
            .filter_map(|a| {
                let (pt, enc) = a.value.as_deref()?.split_once(' ')?;
                Some((pt.trim().parse().ok()?, enc.trim().to_ascii_lowercase()))
            })
            .collect();
        let encoding = |pt: u8| {
            rtpmaps
                .iter()
                .find(|(p, _)| *p == pt)
                .map(|(_, e)| e.as_str())
        };
        let mut formats = Vec::new();
        let mut telephone_event = None;
        for f in &media.media_name.formats {
            let Ok(pt) = f.parse::<u8>() else { continue };
            let codec = match (pt, encoding(pt)) {
                (_, Some(e)) if e.starts_with("opus/48000") => Some(Codec::Opus),
                (_, Some("pcmu/8000" | "pcmu/8000/1")) | (0, None) => Some(Codec::Pcmu),
                (_, Some("pcma/8000" | "pcma/8000/1")) | (8, None) => Some(Codec::Pcma),
                (_, Some("telephone-event/8000")) => {
                    telephone_event = telephone_event.or(Some(pt));
                    None
                }
                _ => None,
            };
            if codec.is_some() {
                formats.push((pt, codec));
            }
        }
        let direction = [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|d| media.has_attribute(d.attribute()))
        .unwrap_or(Direction::SendRecv);
        // A zero port or a null address means the peer is not receiving.
        let direction = if port == 0 {
            Direction::Inactive
        } else {
            direction
        };
        let ptime = media
            .attribute("ptime")
            .flatten()
            .and_then(|p| p.trim().parse().ok());
        Ok(Remote {
            rtp: SocketAddr::new(ip, port),
            formats,
            telephone_event,
            direction,
            ptime,
        })
    }

    /// The first of its formats, in its order, that is one of `codecs`.
    fn first_of(&self, codecs: &[Codec]) -> Option<(u8, Codec)> {
        self.formats
            .iter()
            .find_map(|(pt, c)| c.filter(|c| codecs.contains(c)).map(|c| (*pt, c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(codecs: &[Codec], direction: Direction) -> LocalMedia {
        LocalMedia {
            rtp: "127.0.0.1:40000".parse().unwrap(),
            codecs: codecs.to_vec(),
            direction,
            ptime: 20,
            session_id: 42,
            session_version: 1,
        }
    }

    #[test]
    fn offer_lists_codecs_in_order_with_fec_and_dtmf() {
        let text = offer(&local(
            &[Codec::Opus, Codec::Pcmu, Codec::Pcma],
            Direction::SendRecv,
        ));
        assert!(
            text.contains("m=audio 40000 RTP/AVP 111 0 8 101\r\n"),
            "{text}"
        );
        assert!(text.contains("a=rtpmap:111 opus/48000/2\r\n"));
        assert!(text.contains("a=fmtp:111 useinbandfec=1"));
        assert!(text.contains("a=rtpmap:101 telephone-event/8000\r\n"));
        assert!(text.contains("c=IN IP4 127.0.0.1\r\n"));
        assert!(text.contains("a=sendrecv"));
    }

    #[test]
    fn two_locus_phones_agree_on_opus() {
        let alice = local(&[Codec::Opus, Codec::Pcmu], Direction::SendRecv);
        let mut bob = local(&[Codec::Pcma, Codec::Opus], Direction::SendRecv);
        bob.rtp = "[::1]:50000".parse().unwrap();
        let (text, at_bob) = answer(&offer(&alice), &bob).unwrap();
        assert_eq!(
            at_bob.codec,
            Codec::Opus,
            "bob prefers PCMA but alice did not offer it"
        );
        assert_eq!(at_bob.remote_rtp, "127.0.0.1:40000".parse().unwrap());
        assert!(text.contains("c=IN IP6 ::1"), "{text}");
        let at_alice = accept_answer(&text, &alice).unwrap();
        assert_eq!((at_alice.codec, at_alice.payload_type), (Codec::Opus, 111));
        assert_eq!(at_alice.remote_rtp, "[::1]:50000".parse().unwrap());
        assert_eq!(at_alice.telephone_event, Some(101));
    }

    #[test]
    fn answers_a_baresip_style_offer_with_its_payload_types() {
        let offer = "v=0\r\no=- 123 456 IN IP4 127.0.0.5\r\ns=-\r\nc=IN IP4 127.0.0.5\r\nt=0 0\r\n\
            m=audio 10000 RTP/AVP 96 0 8 97\r\nb=AS:128\r\na=rtpmap:96 opus/48000/2\r\n\
            a=fmtp:96 stereo=1;sprop-stereo=1\r\na=rtpmap:97 telephone-event/8000\r\na=fmtp:97 0-15\r\n\
            a=ptime:20\r\na=sendrecv\r\na=label:1\r\na=ssrc:1234 cname:x\r\n";
        let (text, n) = answer(offer, &local(&[Codec::Opus], Direction::SendRecv)).unwrap();
        assert_eq!(
            (n.codec, n.payload_type, n.telephone_event),
            (Codec::Opus, 96, Some(97))
        );
        assert!(text.contains("m=audio 40000 RTP/AVP 96 97\r\n"), "{text}");
        assert_eq!(n.remote_ptime, Some(20));
    }

    #[test]
    fn hold_and_resume_directions() {
        for (offered, wanted, answered) in [
            (
                Direction::SendOnly,
                Direction::SendRecv,
                Direction::RecvOnly,
            ),
            (
                Direction::RecvOnly,
                Direction::SendRecv,
                Direction::SendOnly,
            ),
            (
                Direction::Inactive,
                Direction::SendRecv,
                Direction::Inactive,
            ),
            (
                Direction::SendRecv,
                Direction::SendOnly,
                Direction::SendOnly,
            ),
            (
                Direction::SendRecv,
                Direction::SendRecv,
                Direction::SendRecv,
            ),
        ] {
            let mut o = local(&[Codec::Pcmu], offered);
            o.rtp = "127.0.0.2:4000".parse().unwrap();
            let (text, n) = answer(&offer(&o), &local(&[Codec::Pcmu], wanted)).unwrap();
            assert_eq!(
                n.direction, answered,
                "{offered:?} offered, {wanted:?} wanted"
            );
            assert!(text.contains(&format!("a={}", answered.attribute())));
        }
    }

    #[test]
    fn nothing_in_common_is_488() {
        let o = offer(&local(&[Codec::Pcma], Direction::SendRecv));
        assert_eq!(
            answer(&o, &local(&[Codec::Opus, Codec::Pcmu], Direction::SendRecv)).err(),
            Some(SdpError::NoCommonCodec)
        );
        let g729 = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 127.0.0.5\r\nt=0 0\r\nm=audio 10000 RTP/AVP 18\r\n";
        assert_eq!(
            answer(g729, &local(&[Codec::Pcmu], Direction::SendRecv)).err(),
            Some(SdpError::NoCommonCodec)
        );
    }

    #[test]
    fn malformed_and_incomplete_descriptions_are_errors() {
        let l = local(&[Codec::Pcmu], Direction::SendRecv);
        assert!(matches!(answer("garbage", &l), Err(SdpError::Malformed(_))));
        let video = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=video 10000 RTP/AVP 96\r\n";
        assert_eq!(answer(video, &l).err(), Some(SdpError::NoAudio));
        let no_c = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 10000 RTP/AVP 0\r\n";
        assert_eq!(answer(no_c, &l).err(), Some(SdpError::NoAddress));
        let bad_port = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 99999 RTP/AVP 0\r\n";
        assert!(
            matches!(answer(bad_port, &l), Err(SdpError::Malformed(_))),
            "the parser refuses ports over 65535"
        );
    }

    #[test]
    fn a_rejected_stream_is_inactive() {
        let zero = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n";
        let n = accept_answer(zero, &local(&[Codec::Pcmu], Direction::SendRecv)).unwrap();
        assert_eq!(n.direction, Direction::Inactive);
    }
}
