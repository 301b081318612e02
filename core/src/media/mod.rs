//! Call media: session descriptions and the jitter buffer now; RTP, codecs and
//! echo cancellation join here. Nothing in `media` knows SIP: the phone
//! passes session descriptions between the two as text.

pub mod codec;
pub mod dtmf;
pub mod jitter;
pub mod network_trace;
pub mod rtcp_report;
pub mod sdp;
pub mod stream;

#[cfg(test)]
pub(crate) mod test_signal {
    //! A speech-like test signal shared by the media tests.

    use std::f64::consts::TAU;

    /// `samples` of a voiced-speech-like signal at `rate`: a harmonic series
    /// whose pitch glides between 100 and 200 Hz (phase accumulated, so it
    /// is a glide and not a chirp) under a 4 Hz syllable envelope, which
    /// codecs' voice activity detection treats as speech.
    pub(crate) fn voice(rate: u32, samples: usize) -> Vec<i16> {
        let rate = f64::from(rate);
        let mut phase = 0.0f64;
        (0..samples)
            .map(|i| {
                let t = i as f64 / rate;
                let f0 = 150.0 + 50.0 * (t * 1.3 * TAU).sin();
                phase += f0 / rate * TAU;
                let envelope = 0.55 + 0.45 * (t * 4.0 * TAU).sin();
                let voiced: f64 = (1..=12)
                    .map(|h| (phase * f64::from(h)).sin() / f64::from(h))
                    .sum();
                (6000.0 * envelope * voiced) as i16
            })
            .collect()
    }
}
