//! Cost of one 20 ms frame through the media path: encode, RTP, jitter
//! buffer, decode, and echo cancellation (which runs at the 48 kHz device
//! rate whatever the codec: the played frame in, the captured frame out).
//! Run: `cargo bench -p locus-core --bench frame`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use locus_core::audio::echo::{EchoCanceller, RATE};
use locus_core::media::sdp::{Codec, Direction, Negotiated};
use locus_core::media::stream::MediaStream;

fn negotiated(codec: Codec, remote: SocketAddr) -> Negotiated {
    Negotiated {
        remote_rtp: remote,
        codec,
        payload_type: codec.default_payload_type(),
        telephone_event: None,
        direction: Direction::SendRecv,
        remote_ptime: Some(20),
    }
}

fn frame(c: &mut Criterion) {
    let a: SocketAddr = ([127, 0, 0, 1], 40_000).into();
    let b: SocketAddr = ([127, 0, 0, 1], 50_000).into();
    for codec in [Codec::Opus, Codec::Pcmu] {
        let t0 = Instant::now();
        let mut alice =
            MediaStream::new(t0, &negotiated(codec, b), 1, 0, 0).unwrap_or_else(|e| panic!("{e}"));
        let mut bob =
            MediaStream::new(t0, &negotiated(codec, a), 2, 0, 0).unwrap_or_else(|e| panic!("{e}"));
        let n = alice.frame_samples();
        let pcm: Vec<i16> = (0..n)
            .map(|i| ((i as f64 * 0.05).sin() * 8000.0) as i16)
            .collect();
        let mut aec = EchoCanceller::new().unwrap_or_else(|e| panic!("{e}"));
        let device: Vec<i16> = (0..RATE as usize / 50)
            .map(|i| ((i as f64 * 0.01).sin() * 8000.0) as i16)
            .collect();
        let mut tick = 0u64;
        // One frame through the media path, and optionally the canceller.
        let mut one_frame = |with_aec: bool| {
            tick += 1;
            let now = t0 + Duration::from_millis(20 * tick);
            let packet = alice.send_frame(&pcm).unwrap_or_default();
            bob.handle_datagram(now, a, &packet);
            let played = bob.play_frame(now);
            let captured = with_aec.then(|| {
                let _ = aec.render(&device);
                let mut captured = device.clone();
                let _ = aec.capture(&mut captured);
                captured
            });
            (played, captured)
        };
        c.bench_function(
            &format!("{}: encode+rtp+jitter+decode per 20 ms frame", codec.name()),
            |bench| bench.iter(|| one_frame(false)),
        );
        c.bench_function(
            &format!("{}: ... + echo cancellation per 20 ms frame", codec.name()),
            |bench| bench.iter(|| one_frame(true)),
        );
    }
}

criterion_group!(benches, frame);
criterion_main!(benches);
