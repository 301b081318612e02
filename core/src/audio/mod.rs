//! Audio devices: one trait for real devices and WAV files alike.
//!
//! A device runs on its own real-time thread (the sound card's callback, or
//! a clock-paced thread for files) and meets the media thread in two
//! lock-free ring buffers of mono 16-bit samples at the device's rate: the
//! device pushes what it captures and pops what it plays. Neither side
//! blocks or allocates on the other's account; a full or empty ring drops
//! or pads samples, and both sides count that.

#[cfg(feature = "echo-cancellation")]
pub mod echo;
#[cfg(not(feature = "echo-cancellation"))]
#[path = "echo_passthrough.rs"]
pub mod echo;
pub mod priority;
pub mod resample;
pub mod sound_card;
pub mod wav;

use rtrb::{Consumer, Producer, RingBuffer};

/// Why a device cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// A WAV file could not be read or written.
    #[error("{path}: {source}")]
    Wav {
        /// The file.
        path: String,
        /// Why.
        source: hound::Error,
    },
    /// The WAV file's format is not 16-bit PCM.
    #[error("{0}: only 16-bit PCM WAV files are supported")]
    Format(String),
    /// Sample rates the resampler cannot convert between.
    #[error("cannot resample {from} Hz to {to} Hz: {why}")]
    Resample {
        /// Input rate.
        from: u32,
        /// Output rate.
        to: u32,
        /// Why.
        why: String,
    },
    /// The device's thread could not start.
    #[error("audio thread: {0}")]
    Thread(std::io::Error),
    /// The sound card could not be opened or used.
    #[error("sound card: {0}")]
    Device(String),
    /// Echo cancellation failed.
    #[error("audio processing: {0}")]
    Processing(String),
}

/// The media thread's ends of a running device.
#[derive(Debug)]
pub struct AudioIo {
    /// Captured samples, mono, at the device's rate.
    pub capture: Consumer<i16>,
    /// Samples to play, mono, at the device's rate.
    pub playout: Producer<i16>,
}

/// The device's ends, handed to its real-time thread.
#[derive(Debug)]
pub struct DeviceIo {
    /// Where captured samples go.
    pub capture: Producer<i16>,
    /// Where samples to play come from.
    pub playout: Consumer<i16>,
}

/// A pair of rings holding `frames` 20 ms frames each at `rate`.
pub fn rings(rate: u32, frames: usize) -> (AudioIo, DeviceIo) {
    let capacity = (rate as usize / 50).max(1) * frames.max(1);
    let (capture_tx, capture_rx) = RingBuffer::new(capacity);
    let (playout_tx, playout_rx) = RingBuffer::new(capacity);
    (
        AudioIo {
            capture: capture_rx,
            playout: playout_tx,
        },
        DeviceIo {
            capture: capture_tx,
            playout: playout_rx,
        },
    )
}

/// Something that captures and plays audio.
pub trait AudioDevice: Send {
    /// The rate of the samples in the rings.
    fn sample_rate(&self) -> u32;
    /// Starts the device's thread; audio flows through the returned rings.
    fn start(&mut self) -> Result<AudioIo, AudioError>;
    /// Whether the capture side has nothing more to give (a file that ended).
    fn capture_finished(&self) -> bool;
    /// Whether the microphone hears the loudspeaker, so that calls need
    /// echo cancellation (a sound card: yes; files: no).
    fn acoustic_echo(&self) -> bool;
    /// Stops the device and finishes what it writes.
    fn stop(&mut self) -> Result<(), AudioError>;
}
