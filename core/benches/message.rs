//! Throughput of the SIP message layer: parsing (with normalisation) and
//! writing a REGISTER, a 401 challenge and an INVITE with SDP.
//! Run: `cargo bench -p locus-core --bench message`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use locus_core::sip::framing::StreamFramer;
use locus_core::sip::message::parse;
use std::hint::black_box;

const REGISTER: &str = "REGISTER sip:example.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.test>;tag=49583\r\n\
To: <sip:alice@example.test>\r\n\
Call-ID: 843817637684230@998sdasdh09\r\n\
CSeq: 1826 REGISTER\r\n\
Contact: <sip:alice@192.0.2.10:5060>;+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\";reg-id=1\r\n\
Expires: 600\r\n\
Supported: path, outbound\r\n\
User-Agent: Locus/0.1.0\r\n\
Content-Length: 0\r\n\r\n";

const CHALLENGE: &str = "SIP/2.0 401 Unauthorized\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport=5060;received=192.0.2.10\r\n\
From: <sip:alice@example.test>;tag=49583\r\n\
To: <sip:alice@example.test>;tag=b27e1a1d33761e85846fc98f5f3a7e58.ad1c\r\n\
Call-ID: 843817637684230@998sdasdh09\r\n\
CSeq: 1826 REGISTER\r\n\
WWW-Authenticate: Digest realm=\"example.test\", nonce=\"ZYQ3xWWENp0uS5fS3ESZpHfc2WmEkh2C\", qop=\"auth\", algorithm=SHA-256\r\n\
Server: kamailio (5.6.3 (x86_64/linux))\r\n\
Content-Length: 0\r\n\r\n";

const INVITE: &str = "INVITE sip:bob@example.test SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bKnashds8\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@example.test>\r\n\
From: \"Alice\" <sip:alice@example.test>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.test\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@192.0.2.10:5060;transport=tcp;ob>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE\r\n\
Supported: 100rel, timer, outbound\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 244\r\n\r\n\
v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 111 0 8 101\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 useinbandfec=1\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

fn messages(c: &mut Criterion) {
    for (name, text) in [
        ("register", REGISTER),
        ("401", CHALLENGE),
        ("invite", INVITE),
    ] {
        let bytes = text.as_bytes();
        assert!(parse(bytes).is_ok(), "{name} must parse");
        let mut check = StreamFramer::default();
        check.push(bytes);
        assert!(
            matches!(check.next_frame(), Ok(Some(_))) && check.buffered() == 0,
            "{name} must frame exactly"
        );
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(1));
        group.bench_function("parse", |b| b.iter(|| parse(black_box(bytes))));
        group.bench_function("parse+write", |b| {
            b.iter(|| parse(black_box(bytes)).map(|m| m.to_bytes()))
        });
        group.bench_function("stream-frame", |b| {
            let mut framer = StreamFramer::default();
            b.iter(|| {
                framer.push(black_box(bytes));
                match framer.next_frame() {
                    Ok(Some(frame)) => frame,
                    other => panic!("{name} did not frame: {other:?}"),
                }
            })
        });
        group.finish();
    }
}

criterion_group!(benches, messages);
criterion_main!(benches);
