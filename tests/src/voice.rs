//! Test speech as WAV files: a synthetic voiced signal that needs nothing
//! installed, and real synthesised speech from espeak-ng for quality scores.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use locus_core::audio::resample::FrameResampler;

use crate::HarnessError;

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
    write_wav(path, rate, &samples)?;
    Ok(samples)
}

/// Writes mono 16-bit samples at `rate` as a WAV file.
pub fn write_wav(path: &Path, rate: u32, samples: &[i16]) -> Result<(), hound::Error> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec)?;
    for s in samples {
        writer.write_sample(*s)?;
    }
    writer.finalize()
}

/// Reads a mono or stereo 16-bit WAV file as mono samples at `rate`,
/// resampled with the phone's own resampler.
pub fn read_wav_at(path: &Path, rate: u32) -> Result<Vec<i16>, HarnessError> {
    let mut reader = hound::WavReader::open(path)?;
    let spec = reader.spec();
    let samples = reader.samples::<i16>().collect::<Result<Vec<i16>, _>>()?;
    let channels = usize::from(spec.channels.max(1));
    let mono: Vec<i16> = samples
        .chunks(channels)
        .map(|c| (c.iter().map(|s| i32::from(*s)).sum::<i32>() / c.len() as i32) as i16)
        .collect();
    resample(&mono, spec.sample_rate, rate)
}

fn resample(samples: &[i16], from: u32, to: u32) -> Result<Vec<i16>, HarnessError> {
    if from == to {
        return Ok(samples.to_vec());
    }
    let mut resampler =
        FrameResampler::new(from, to).map_err(|e| HarnessError::Audio(e.to_string()))?;
    let out_frame = to as usize / 50;
    Ok(samples
        .chunks(from as usize / 50)
        .flat_map(|frame| resampler.process(frame, out_frame))
        .collect())
}

/// English sentences, about ten seconds of them: long enough for PESQ, and
/// with the pauses and plosives that show concealment at work.
const SENTENCES: &str = "The quick brown fox jumps over the lazy dog. \
    A softphone should sound clear on a bad network, and these words are here to prove it. \
    Please call me back at six, when the meeting is over.";

/// Synthesised speech in the two forms the tests need.
#[derive(Debug)]
pub struct Speech {
    /// 48 kHz mono, [`Speech::LEAD`] of silence, the speech, then
    /// [`Speech::TAIL`] of silence: what a phone sends (baresip's file
    /// source wants 48 kHz, and hangs up when its file ends).
    pub send: PathBuf,
    /// 16 kHz mono: the reference a recording is scored against.
    pub reference: PathBuf,
    /// How long the file lasts up to the end of the speech (lead included).
    pub duration: Duration,
}

impl Speech {
    /// The silence before the speech in [`Speech::send`]: calls start
    /// quietly, and baresip sends its first 200+ ms in one burst, which a
    /// jitter buffer may only shed in a pause.
    pub const LEAD: Duration = Duration::from_secs(1);
    /// The silence after the speech in [`Speech::send`].
    pub const TAIL: Duration = Duration::from_secs(3);

    /// Synthesises the test sentences with espeak-ng into `dir`.
    pub fn generate(dir: &Path) -> Result<Speech, HarnessError> {
        let raw = dir.join("speech-espeak.wav");
        let status = Command::new("espeak-ng")
            .args(["-v", "en-us", "-s", "150", "-w"])
            .arg(&raw)
            .arg(SENTENCES)
            .status()
            .map_err(|e| {
                HarnessError::NotInstalled(format!(
                    "espeak-ng: {e}; install it with: apt-get install espeak-ng"
                ))
            })?;
        if !status.success() {
            return Err(HarnessError::NotInstalled(format!(
                "espeak-ng exited with {status}"
            )));
        }
        let reference = read_wav_at(&raw, 16_000)?;
        let silence = |d: Duration| vec![0i16; 48 * d.as_millis() as usize];
        let mut send = silence(Speech::LEAD);
        send.extend(read_wav_at(&raw, 48_000)?);
        let speech = Speech {
            send: dir.join("speech-48k.wav"),
            reference: dir.join("speech-16k.wav"),
            duration: Speech::LEAD + Duration::from_secs_f64(reference.len() as f64 / 16_000.0),
        };
        send.extend(silence(Speech::TAIL));
        write_wav(&speech.send, 48_000, &send)?;
        write_wav(&speech.reference, 16_000, &reference)?;
        Ok(speech)
    }
}
