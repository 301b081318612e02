//! A WAV file as an audio device, for headless runs and tests: capture
//! plays the input file (16-bit PCM, any rate, stereo mixed to mono) and
//! playout is recorded to the output file, both paced by a real clock on
//! their own thread, 5 ms at a time, as a sound card would. (The ALSA null
//! device is not paced, so it cannot stand in for this.) The file is
//! written by a thread of its own: a write that waits for the disk would
//! stop the device's clock, which a sound card's never does.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{rings, AudioDevice, AudioError, AudioIo, DeviceIo};

/// Ring size, in 20 ms frames.
const RING_FRAMES: usize = 10;

/// How much audio moves per tick: 5 ms, as a low-latency sound card's
/// period (a 20 ms period alone would add up to 20 ms of delay).
const PERIOD: Duration = Duration::from_millis(5);

/// Plays one WAV file and records another, in real time.
#[derive(Debug)]
pub struct WavDevice {
    input: Vec<i16>,
    output: Option<PathBuf>,
    rate: u32,
    stop: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
    thread: Option<WavThread>,
    recorder: Option<WavThread>,
}

impl WavDevice {
    /// A device reading `input` (if any) and writing `output` (if any). The
    /// device's rate is the input file's, else 48 kHz.
    pub fn open(input: Option<&Path>, output: Option<&Path>) -> Result<WavDevice, AudioError> {
        let (samples, rate) = match input {
            Some(path) => read_mono(path)?,
            None => (Vec::new(), 48_000),
        };
        Ok(WavDevice {
            finished: Arc::new(AtomicBool::new(input.is_none())),
            input: samples,
            output: output.map(Path::to_path_buf),
            rate,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
            recorder: None,
        })
    }
}

fn wav_error(path: &Path) -> impl Fn(hound::Error) -> AudioError + '_ {
    move |source| AudioError::Wav {
        path: path.display().to_string(),
        source,
    }
}

/// Reads a 16-bit PCM file, mixing its channels to mono.
fn read_mono(path: &Path) -> Result<(Vec<i16>, u32), AudioError> {
    let mut reader = hound::WavReader::open(path).map_err(wav_error(path))?;
    let spec = reader.spec();
    if spec.bits_per_sample != 16
        || spec.sample_format != hound::SampleFormat::Int
        || spec.channels == 0
    {
        return Err(AudioError::Format(path.display().to_string()));
    }
    let interleaved: Vec<i16> = reader
        .samples::<i16>()
        .collect::<Result<_, _>>()
        .map_err(wav_error(path))?;
    let channels = usize::from(spec.channels);
    let mono = interleaved
        .chunks(channels)
        .map(|frame| (frame.iter().map(|s| i32::from(*s)).sum::<i32>() / channels as i32) as i16)
        .collect();
    Ok((mono, spec.sample_rate))
}

impl AudioDevice for WavDevice {
    fn sample_rate(&self) -> u32 {
        self.rate
    }

    fn start(&mut self) -> Result<AudioIo, AudioError> {
        let (io, device) = rings(self.rate, RING_FRAMES);
        let recording = match &self.output {
            Some(path) => {
                let (chunks, recorder) = record(path, self.rate)?;
                self.recorder = Some(recorder);
                Some(chunks)
            }
            None => None,
        };
        let input = std::mem::take(&mut self.input);
        let rate = self.rate;
        let stop = Arc::clone(&self.stop);
        let finished = Arc::clone(&self.finished);
        let thread = std::thread::Builder::new()
            .name("locus-wav".into())
            .spawn(move || {
                super::priority::raise_current_thread();
                run(input, recording, rate, device, &stop, &finished)
            })
            .map_err(AudioError::Thread)?;
        self.thread = Some(thread);
        Ok(io)
    }

    fn capture_finished(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }

    fn acoustic_echo(&self) -> bool {
        false
    }

    fn stop(&mut self) -> Result<(), AudioError> {
        self.stop.store(true, Ordering::Relaxed);
        // The device thread first: its end closes the recorder's queue.
        let played = join(self.thread.take());
        let recorded = join(self.recorder.take());
        played.and(recorded)
    }
}

impl Drop for WavDevice {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The device's and the recorder's threads.
type WavThread = JoinHandle<Result<(), AudioError>>;

/// Waits for a device or recorder thread and returns its result.
fn join(thread: Option<WavThread>) -> Result<(), AudioError> {
    match thread.map(JoinHandle::join) {
        Some(Ok(result)) => result,
        Some(Err(_)) => Err(AudioError::Thread(std::io::Error::other(
            "a WAV thread panicked",
        ))),
        None => Ok(()),
    }
}

/// Creates `path` and starts the thread that writes the chunks sent to it,
/// finishing the file when the sender is dropped.
fn record(path: &Path, rate: u32) -> Result<(mpsc::Sender<Vec<i16>>, WavThread), AudioError> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).map_err(wav_error(path))?;
    let path = path.to_path_buf();
    let (chunks, received) = mpsc::channel::<Vec<i16>>();
    let thread = std::thread::Builder::new()
        .name("locus-wav-record".into())
        .spawn(move || {
            for chunk in received {
                for sample in chunk {
                    writer.write_sample(sample).map_err(wav_error(&path))?;
                }
            }
            writer.finalize().map_err(wav_error(&path))
        })
        .map_err(AudioError::Thread)?;
    Ok((chunks, thread))
}

/// The device thread: every period, the next samples of the file into the
/// capture ring and as many from the playout ring to the recorder.
fn run(
    input: Vec<i16>,
    mut recording: Option<mpsc::Sender<Vec<i16>>>,
    rate: u32,
    mut io: DeviceIo,
    stop: &AtomicBool,
    finished: &AtomicBool,
) -> Result<(), AudioError> {
    let period = PERIOD;
    let mut next = Instant::now();
    let mut position = 0usize;
    // Rates whose 20 ms is not whole samples alternate frame lengths.
    let mut carry = 0.0f64;
    while !stop.load(Ordering::Relaxed) {
        let exact = f64::from(rate) * PERIOD.as_secs_f64() + carry;
        let n = exact.floor() as usize;
        carry = exact - n as f64;
        for _ in 0..n {
            let sample = input.get(position).copied().unwrap_or(0);
            position += 1;
            // A full ring means the media thread is behind: drop, as a device would.
            let _ = io.capture.push(sample);
        }
        if position >= input.len() {
            finished.store(true, Ordering::Relaxed);
        }
        let played: Vec<i16> = (0..n).map(|_| io.playout.pop().unwrap_or(0)).collect();
        if let Some(chunks) = &recording {
            if chunks.send(played).is_err() {
                // The recorder stopped on an error; `stop` reports it.
                recording = None;
            }
        }
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > period * 5 {
            // Far behind (a suspended process): skip ahead, don't burst.
            next = now;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_stereo(path: &Path, rate: u32, frames: usize) {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for i in 0..frames {
            let v = (i % 1000) as i16;
            w.write_sample(v * 2).unwrap();
            w.write_sample(0).unwrap();
        }
        w.finalize().unwrap();
    }

    #[test]
    fn plays_and_records_in_real_time() {
        let dir = std::env::temp_dir().join(format!("locus-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("in.wav");
        let output = dir.join("out.wav");
        write_stereo(&input, 16_000, 16_000);
        let mut dev = WavDevice::open(Some(&input), Some(&output)).unwrap();
        assert_eq!(dev.sample_rate(), 16_000);
        let mut io = dev.start().unwrap();
        // Paced, not instant: an unpaced device would fill the 10-frame ring
        // at once; this one has a frame or so (slack for a loaded machine).
        let at_start = io.capture.slots();
        assert!(at_start <= 4 * 320, "{at_start} samples at once");
        // Drained as a media thread would, every frame: sleeping the ring's
        // whole 200 ms at once lets a loaded machine overflow it, and the
        // device then drops samples, as a sound card would.
        let mut captured = Vec::new();
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(20));
            while let Ok(s) = io.capture.pop() {
                captured.push(s);
            }
        }
        assert!(captured.len() > at_start, "more arrives as time passes");
        assert!(
            captured
                .iter()
                .enumerate()
                .all(|(i, s)| *s == (i % 1000) as i16),
            "stereo mixed to mono, in order"
        );
        for i in 0..3200 {
            io.playout.push(i as i16).unwrap_or(());
        }
        std::thread::sleep(Duration::from_millis(300));
        dev.stop().unwrap();
        let (recorded, rate) = read_mono(&output).unwrap();
        assert_eq!(rate, 16_000);
        assert!(
            recorded.len() >= 6_400,
            "{} samples recorded",
            recorded.len()
        );
        let start = recorded.iter().position(|s| *s == 1).unwrap() - 1;
        assert!(
            recorded[start..start + 3200]
                .iter()
                .enumerate()
                .all(|(i, s)| *s == i as i16),
            "playout written in order"
        );
        assert!(
            !dev.capture_finished(),
            "one second of input is not over yet"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unsupported_or_missing_files_are_clear_errors() {
        let dir = std::env::temp_dir().join(format!("locus-wav-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let float = dir.join("float.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut w = hound::WavWriter::create(&float, spec).unwrap();
        w.write_sample(0.5f32).unwrap();
        w.finalize().unwrap();
        assert!(matches!(
            WavDevice::open(Some(&float), None),
            Err(AudioError::Format(_))
        ));
        let garbage = dir.join("garbage.wav");
        std::fs::write(&garbage, b"RIFF\x10\x00\x00\x00WAVEjunk").unwrap();
        assert!(matches!(
            WavDevice::open(Some(&garbage), None),
            Err(AudioError::Wav { .. })
        ));
        assert!(matches!(
            WavDevice::open(Some(&dir.join("missing.wav")), None),
            Err(AudioError::Wav { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
