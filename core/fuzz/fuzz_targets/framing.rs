//! Any bytes, split at an arbitrary point, into the stream framer: frames or
//! an error, never a panic, and never more buffered than the limit allows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use locus_core::sip::framing::StreamFramer;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut framer = StreamFramer::new(4096);
    for chunk in [&data[..split], &data[split..]] {
        framer.push(chunk);
        loop {
            match framer.next_frame() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    assert!(framer.buffered() <= data.len());
});
