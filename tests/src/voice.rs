//! A speech-like test signal as a WAV file, for demos and tests.

use std::path::Path;

/// Writes `seconds` of a voiced-speech-like signal (a harmonic series whose
/// pitch glides between 100 and 200 Hz under a 4 Hz syllable envelope) as a
/// 16 kHz mono WAV file, and returns the samples.
pub fn write_voice_wav(path: &Path, seconds: u32) -> Result<Vec<i16>, hound::Error> {
    let rate = 16_000u32;
    let mut phase = 0.0f64;
    let samples: Vec<i16> = (0..rate * seconds)
        .map(|i| {
            let t = f64::from(i) / f64::from(rate);
            let f0 = 150.0 + 50.0 * (t * 1.3 * std::f64::consts::TAU).sin();
            phase += f0 / f64::from(rate) * std::f64::consts::TAU;
            let envelope = 0.55 + 0.45 * (t * 4.0 * std::f64::consts::TAU).sin();
            let voiced: f64 = (1..=10)
                .map(|h| (phase * f64::from(h)).sin() / f64::from(h))
                .sum();
            (6000.0 * envelope * voiced) as i16
        })
        .collect();
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec)?;
    for s in &samples {
        writer.write_sample(*s)?;
    }
    writer.finalize()?;
    Ok(samples)
}
