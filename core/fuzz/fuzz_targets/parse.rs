//! Any bytes into the datagram parser: an error or a message, never a panic;
//! and whatever parses must survive being written and parsed again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use locus_core::sip::message::parse;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = parse(data) {
        let _ = msg.headers().via();
        let _ = msg.headers().from();
        let _ = msg.headers().contacts();
        let _ = msg.headers().cseq();
        for value in msg.headers().get_all("WWW-Authenticate") {
            let _ = locus_core::sip::digest::Challenge::parse(value);
        }
        let again = parse(&msg.to_bytes());
        assert!(again.is_ok(), "written message does not parse: {again:?}");
    }
});
