//! Converts 20 ms frames between two sample rates with rubato's FFT
//! resampler, for any pair of rates: a rate whose 20 ms is not a whole
//! number of samples (11025 Hz) is handled by queueing on both sides.

use std::collections::VecDeque;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use super::AudioError;

/// Frame-by-frame resampling from one rate to another.
pub struct FrameResampler {
    from: u32,
    to: u32,
    inner: Option<Fft<f32>>,
    input: Vec<f32>,
    output: VecDeque<i16>,
}

impl std::fmt::Debug for FrameResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameResampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl FrameResampler {
    /// A resampler from `from` Hz to `to` Hz (a pass-through when equal).
    pub fn new(from: u32, to: u32) -> Result<FrameResampler, AudioError> {
        let err = |why: String| AudioError::Resample { from, to, why };
        if from == 0 || to == 0 {
            return Err(err("a rate of 0".into()));
        }
        let inner = if from == to {
            None
        } else {
            let chunk = (from as usize / 50).max(64);
            Some(
                Fft::<f32>::new(from as usize, to as usize, chunk, 1, FixedSync::Input)
                    .map_err(|e| err(e.to_string()))?,
            )
        };
        Ok(FrameResampler {
            from,
            to,
            inner,
            input: Vec::new(),
            output: VecDeque::new(),
        })
    }

    /// Samples in 20 ms at the output rate (rounded down).
    pub fn output_frame(&self) -> usize {
        self.to as usize / 50
    }

    /// Feeds input samples and returns exactly `out_len` output samples,
    /// padded with silence while the resampler fills (its start-up delay).
    pub fn process(&mut self, input: &[i16], out_len: usize) -> Vec<i16> {
        let Some(inner) = self.inner.as_mut() else {
            let mut v = input.to_vec();
            v.resize(out_len, 0);
            return v;
        };
        self.input
            .extend(input.iter().map(|s| f32::from(*s) / 32768.0));
        loop {
            let need = inner.input_frames_next();
            if self.input.len() < need {
                break;
            }
            let Ok(adapter) = InterleavedSlice::new(&self.input[..need], 1, need) else {
                break;
            };
            match inner.process(&adapter, None) {
                Ok(out) => {
                    let samples = out.take_data();
                    self.output.extend(
                        samples
                            .iter()
                            .map(|s| (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16),
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "resampling failed; dropping a chunk");
                }
            }
            self.input.drain(..need);
        }
        let available = self.output.len().min(out_len);
        let mut frame: Vec<i16> = vec![0; out_len - available];
        frame.extend(self.output.drain(..available));
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, freq: f64, samples: usize) -> Vec<i16> {
        (0..samples)
            .map(|i| {
                (10_000.0 * (i as f64 / f64::from(rate) * freq * std::f64::consts::TAU).sin())
                    as i16
            })
            .collect()
    }

    /// Peak of the normalised cross-correlation over small lags.
    fn best_correlation(a: &[i16], b: &[i16], max_lag: usize) -> f64 {
        (0..max_lag)
            .map(|lag| {
                let n = a.len().min(b.len().saturating_sub(lag));
                let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
                for i in 0..n {
                    let (x, y) = (f64::from(a[i]), f64::from(b[i + lag]));
                    ab += x * y;
                    aa += x * x;
                    bb += y * y;
                }
                ab / (aa.sqrt() * bb.sqrt()).max(1.0)
            })
            .fold(f64::MIN, f64::max)
    }

    #[test]
    fn frames_have_exact_sizes_for_awkward_rates() {
        for (from, to) in [
            (8_000, 48_000),
            (44_100, 48_000),
            (11_025, 48_000),
            (48_000, 8_000),
            (16_000, 16_000),
        ] {
            let mut r = FrameResampler::new(from, to).unwrap();
            let mut carry = 0.0;
            for _ in 0..100 {
                let exact = f64::from(from) / 50.0 + carry;
                let n = exact.floor() as usize;
                carry = exact - n as f64;
                let out = r.process(&vec![0; n], r.output_frame());
                assert_eq!(out.len(), to as usize / 50, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn a_tone_survives_up_and_down_sampling() {
        let input = sine(8_000, 400.0, 8_000);
        let mut up = FrameResampler::new(8_000, 48_000).unwrap();
        let mut down = FrameResampler::new(48_000, 8_000).unwrap();
        let mut out = Vec::new();
        for frame in input.chunks(160) {
            let hi = up.process(frame, 960);
            out.extend(down.process(&hi, 160));
        }
        let corr = best_correlation(&input[..6_000], &out, 1_000);
        assert!(corr > 0.98, "correlation {corr:.3}");
    }

    #[test]
    fn zero_rate_is_an_error() {
        assert!(FrameResampler::new(0, 8_000).is_err());
    }
}
