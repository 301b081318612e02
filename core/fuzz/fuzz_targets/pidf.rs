//! Any bytes into the PIDF-LO decoder: a presence or an error, never a
//! panic; and whatever decodes survives a round trip through the encoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use locus_core::location::pidf;

fuzz_target!(|data: &[u8]| {
    if let Ok(presence) = pidf::decode(data) {
        let again = pidf::decode(pidf::encode(&presence).as_bytes());
        assert_eq!(again.ok().map(|p| p.location), Some(presence.location));
    }
});
