//! Replays network traces through the jitter buffer and prints, per trace,
//! the delay it adds and the packets it loses, plus its cost per frame.
//! Run: `cargo bench -p locus-core --bench jitter`.

use std::time::{Duration, Instant};

use locus_core::media::network_trace::{generate, replay, Network};

fn main() {
    let frames = 15_000; // five minutes of 20 ms frames
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let traces = [
        ("clean 40 ms path", Network::Clean),
        (
            "jitter 0-30 ms",
            Network::Jitter {
                max: Duration::from_millis(30),
            },
        ),
        (
            "jitter 0-60 ms",
            Network::Jitter {
                max: Duration::from_millis(60),
            },
        ),
        (
            "jitter 0-120 ms",
            Network::Jitter {
                max: Duration::from_millis(120),
            },
        ),
        ("loss 3 %", Network::Loss { rate: 0.03 }),
        ("loss 10 %", Network::Loss { rate: 0.10 }),
        (
            "bursts of 4, 2 %",
            Network::BurstLoss {
                rate: 0.02,
                length: 4,
            },
        ),
        (
            "jitter 60 ms + loss 10 %",
            Network::JitterLoss {
                max: Duration::from_millis(60),
                rate: 0.10,
            },
        ),
        ("reorder 5 %", Network::Reorder { rate: 0.05 }),
        ("duplicates 5 %", Network::Duplicates { rate: 0.05 }),
        (
            "spike 300 ms",
            Network::Spike {
                gap: Duration::from_millis(300),
            },
        ),
        ("drift +1000 ppm", Network::Drift { ppm: 1000.0 }),
        ("drift -1000 ppm", Network::Drift { ppm: -1000.0 }),
    ];
    println!(
        "{:<26} {:>9} {:>9} {:>8} {:>10} {:>7} {:>6} {:>9}",
        "trace", "mean ms", "p95 ms", "late %", "conceal %", "fec %", "accel", "target ms"
    );
    for (name, network) in traces {
        let arrivals = generate(network, frames, 48_000, 42);
        let r = replay(&arrivals, frames, 48_000);
        println!(
            "{:<26} {:>9.1} {:>9.1} {:>8.2} {:>10.2} {:>7.2} {:>6} {:>9.0}",
            name,
            ms(r.mean_added),
            ms(r.p95_added),
            r.late_pct,
            r.concealed_pct,
            r.fec_pct,
            r.accelerated,
            ms(r.final_target)
        );
    }
    let arrivals = generate(
        Network::JitterLoss {
            max: Duration::from_millis(60),
            rate: 0.05,
        },
        frames,
        48_000,
        7,
    );
    let runs = 20;
    let started = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(replay(&arrivals, frames, 48_000));
    }
    let per_frame = started.elapsed() / (runs * frames);
    println!(
        "\ncost: {:.2} µs per frame (push + pop, replay bookkeeping included)",
        per_frame.as_secs_f64() * 1e6
    );
}
