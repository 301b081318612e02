//! The sound card through cpal: the default microphone and loudspeaker
//! (ALSA on Linux, AAudio on Android, CoreAudio, WASAPI).
//!
//! cpal's streams are not `Send`, so they live on a thread of their own,
//! which opens them, reports the rate, and keeps them until told to stop.
//! The callbacks run on the audio system's real-time threads: they only
//! mix channels down or up and move samples through the lock-free rings —
//! no locks, no allocation; a full or empty ring drops or pads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{
    FromSample, Sample, SampleFormat, SizedSample, StreamConfig, SupportedStreamConfigRange,
};
use rtrb::{Consumer, Producer};

use super::{rings, AudioDevice, AudioError, AudioIo};

/// The rate asked for first: Opus and the echo canceller run at it, so no
/// resampling is needed when the card offers it (nearly all do).
const PREFERRED_RATE: u32 = 48_000;

/// Ring capacity in 20 ms frames.
const RING_FRAMES: usize = 10;

/// One audio device as the system lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The name the system gives it.
    pub name: String,
    /// Whether it can capture.
    pub input: bool,
    /// Whether it can play.
    pub output: bool,
    /// Whether it is the default for what it does.
    pub default: bool,
}

/// Lists the audio devices of the default host.
pub fn list_devices() -> Result<Vec<DeviceInfo>, AudioError> {
    let host = cpal::default_host();
    let name_of = |d: Option<cpal::Device>| d.and_then(|d| d.name().ok());
    let default_in = name_of(host.default_input_device());
    let default_out = name_of(host.default_output_device());
    let devices = host
        .devices()
        .map_err(|e| AudioError::Device(e.to_string()))?;
    Ok(devices
        .filter_map(|d| {
            let name = d.name().ok()?;
            let input = d
                .supported_input_configs()
                .is_ok_and(|mut c| c.next().is_some());
            let output = d
                .supported_output_configs()
                .is_ok_and(|mut c| c.next().is_some());
            let default = default_in.as_ref() == Some(&name) || default_out.as_ref() == Some(&name);
            Some(DeviceInfo {
                name,
                input,
                output,
                default,
            })
        })
        .collect())
}

/// The default microphone and loudspeaker.
#[derive(Debug, Default)]
pub struct SoundCard {
    rate: u32,
    thread: Option<(JoinHandle<()>, mpsc::Sender<()>)>,
    /// Samples dropped because the media thread fell behind (capture) or
    /// did not deliver in time (playout).
    glitches: Arc<AtomicU64>,
}

impl AudioDevice for SoundCard {
    fn sample_rate(&self) -> u32 {
        self.rate
    }

    fn start(&mut self) -> Result<AudioIo, AudioError> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let glitches = Arc::clone(&self.glitches);
        let thread = std::thread::Builder::new()
            .name("locus-sound-card".into())
            .spawn(move || match open_streams(&glitches) {
                Ok((rate, io, streams)) => {
                    let _ = ready_tx.send(Ok((rate, io)));
                    // Keep the streams alive until stop() (or the device is dropped).
                    let _ = stop_rx.recv();
                    drop(streams);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(AudioError::Thread)?;
        let opened = ready_rx
            .recv()
            .map_err(|_| AudioError::Device("the sound card thread ended".into()));
        match opened {
            Ok(Ok((rate, io))) => {
                self.rate = rate;
                self.thread = Some((thread, stop_tx));
                Ok(io)
            }
            Ok(Err(e)) | Err(e) => {
                let _ = thread.join();
                Err(e)
            }
        }
    }

    fn capture_finished(&self) -> bool {
        false
    }

    fn acoustic_echo(&self) -> bool {
        true
    }

    fn stop(&mut self) -> Result<(), AudioError> {
        if let Some((thread, stop)) = self.thread.take() {
            drop(stop);
            thread
                .join()
                .map_err(|_| AudioError::Device("the sound card thread panicked".into()))?;
            tracing::info!(
                samples_dropped_or_padded = self.glitches.load(Ordering::Relaxed),
                "sound card stopped"
            );
        }
        Ok(())
    }
}

impl Drop for SoundCard {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Opens and starts both streams at one common rate.
fn open_streams(
    glitches: &Arc<AtomicU64>,
) -> Result<(u32, AudioIo, (cpal::Stream, cpal::Stream)), AudioError> {
    let host = cpal::default_host();
    let mic = host
        .default_input_device()
        .ok_or_else(|| AudioError::Device("no microphone".into()))?;
    let speaker = host
        .default_output_device()
        .ok_or_else(|| AudioError::Device("no loudspeaker".into()))?;
    let device_err = |e: &dyn std::fmt::Display| AudioError::Device(e.to_string());
    let inputs: Vec<_> = mic
        .supported_input_configs()
        .map_err(|e| device_err(&e))?
        .collect();
    let outputs: Vec<_> = speaker
        .supported_output_configs()
        .map_err(|e| device_err(&e))?
        .collect();
    let rate =
        common_rate(&inputs, &outputs, speaker.default_output_config().ok()).ok_or_else(|| {
            AudioError::Device("microphone and loudspeaker share no sample rate".into())
        })?;
    let (input, output) = (pick(&inputs, rate), pick(&outputs, rate));
    let (Some(input), Some(output)) = (input, output) else {
        return Err(AudioError::Device(format!("no usable format at {rate} Hz")));
    };
    let (io, device) = rings(rate, RING_FRAMES);
    let capture = match input.sample_format() {
        SampleFormat::I16 => capture_stream::<i16>(&mic, &input.config(), device.capture, glitches),
        SampleFormat::F32 => capture_stream::<f32>(&mic, &input.config(), device.capture, glitches),
        other => {
            return Err(AudioError::Device(format!(
                "capture format {other} unsupported"
            )))
        }
    }?;
    let playout = match output.sample_format() {
        SampleFormat::I16 => {
            playout_stream::<i16>(&speaker, &output.config(), device.playout, glitches)
        }
        SampleFormat::F32 => {
            playout_stream::<f32>(&speaker, &output.config(), device.playout, glitches)
        }
        other => {
            return Err(AudioError::Device(format!(
                "playout format {other} unsupported"
            )))
        }
    }?;
    capture.play().map_err(|e| device_err(&e))?;
    playout.play().map_err(|e| device_err(&e))?;
    Ok((rate, io, (capture, playout)))
}

fn supports(range: &SupportedStreamConfigRange, rate: u32) -> bool {
    (range.min_sample_rate().0..=range.max_sample_rate().0).contains(&rate)
        && matches!(range.sample_format(), SampleFormat::I16 | SampleFormat::F32)
}

/// 48 kHz when both sides offer it, else the loudspeaker's default rate
/// when the microphone offers that too.
fn common_rate(
    inputs: &[SupportedStreamConfigRange],
    outputs: &[SupportedStreamConfigRange],
    default_output: Option<cpal::SupportedStreamConfig>,
) -> Option<u32> {
    let both = |rate: u32| {
        inputs.iter().any(|r| supports(r, rate)) && outputs.iter().any(|r| supports(r, rate))
    };
    std::iter::once(PREFERRED_RATE)
        .chain(default_output.map(|c| c.sample_rate().0))
        .find(|r| both(*r))
}

/// The format to open at `rate`: mono if offered, 16-bit if offered.
fn pick(ranges: &[SupportedStreamConfigRange], rate: u32) -> Option<cpal::SupportedStreamConfig> {
    ranges
        .iter()
        .filter(|r| supports(r, rate))
        .min_by_key(|r| (r.channels(), r.sample_format() != SampleFormat::I16))
        .map(|r| r.with_sample_rate(cpal::SampleRate(rate)))
}

fn capture_stream<T>(
    device: &cpal::Device,
    config: &StreamConfig,
    mut ring: Producer<i16>,
    glitches: &Arc<AtomicU64>,
) -> Result<cpal::Stream, AudioError>
where
    T: SizedSample,
    i16: FromSample<T>,
{
    let channels = usize::from(config.channels.max(1));
    let glitches = Arc::clone(glitches);
    device
        .build_input_stream(
            config,
            move |data: &[T], _| {
                for frame in data.chunks(channels) {
                    let sum: i32 = frame.iter().map(|s| i32::from(i16::from_sample(*s))).sum();
                    let mono = (sum / frame.len().max(1) as i32) as i16;
                    if ring.push(mono).is_err() {
                        glitches.fetch_add(1, Ordering::Relaxed);
                    }
                }
            },
            |e| tracing::warn!(error = %e, "microphone stream error"),
            None,
        )
        .map_err(|e| AudioError::Device(e.to_string()))
}

fn playout_stream<T>(
    device: &cpal::Device,
    config: &StreamConfig,
    mut ring: Consumer<i16>,
    glitches: &Arc<AtomicU64>,
) -> Result<cpal::Stream, AudioError>
where
    T: SizedSample + FromSample<i16>,
{
    let channels = usize::from(config.channels.max(1));
    let glitches = Arc::clone(glitches);
    device
        .build_output_stream(
            config,
            move |data: &mut [T], _| {
                for frame in data.chunks_mut(channels) {
                    let sample = ring.pop().unwrap_or_else(|_| {
                        glitches.fetch_add(1, Ordering::Relaxed);
                        0
                    });
                    frame.fill(T::from_sample(sample));
                }
            },
            |e| tracing::warn!(error = %e, "loudspeaker stream error"),
            None,
        )
        .map_err(|e| AudioError::Device(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpal::{SampleRate, SupportedBufferSize};

    fn range(
        channels: u16,
        min: u32,
        max: u32,
        format: SampleFormat,
    ) -> SupportedStreamConfigRange {
        SupportedStreamConfigRange::new(
            channels,
            SampleRate(min),
            SampleRate(max),
            SupportedBufferSize::Unknown,
            format,
        )
    }

    #[test]
    fn prefers_48k_mono_16_bit_and_falls_back_to_the_speakers_rate() {
        let mic = [
            range(2, 8_000, 48_000, SampleFormat::F32),
            range(1, 8_000, 48_000, SampleFormat::I16),
        ];
        let speaker = [range(2, 44_100, 48_000, SampleFormat::F32)];
        assert_eq!(common_rate(&mic, &speaker, None), Some(48_000));
        let picked = pick(&mic, 48_000).unwrap();
        assert_eq!(
            (picked.channels(), picked.sample_format()),
            (1, SampleFormat::I16)
        );

        let speaker_44k = [range(2, 44_100, 44_100, SampleFormat::F32)];
        let default = speaker_44k[0].with_sample_rate(SampleRate(44_100));
        assert_eq!(
            common_rate(&mic, &speaker_44k, Some(default.clone())),
            Some(44_100)
        );
        let mic_16k = [range(1, 16_000, 16_000, SampleFormat::I16)];
        assert_eq!(common_rate(&mic_16k, &speaker_44k, Some(default)), None);
        let odd_format = [range(1, 48_000, 48_000, SampleFormat::U8)];
        assert_eq!(common_rate(&odd_format, &speaker, None), None);
    }
}
