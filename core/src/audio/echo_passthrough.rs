//! The echo canceller of a build without the `echo-cancellation` feature
//! (the fuzz targets: the bundled WebRTC library carries a C `main` that
//! would replace libFuzzer's). Audio passes through unchanged.

use super::AudioError;

/// Passes audio through: this build has no echo canceller.
#[derive(Debug)]
pub struct DeviceEchoCanceller;

impl DeviceEchoCanceller {
    /// A pass-through for a device at any rate.
    pub fn new(_rate: u32) -> Result<DeviceEchoCanceller, AudioError> {
        tracing::warn!("built without echo cancellation");
        Ok(DeviceEchoCanceller)
    }

    /// Ignores the loudspeaker's frame.
    pub fn render(&mut self, _played: &[i16]) -> Result<(), AudioError> {
        Ok(())
    }

    /// Returns the microphone's frame as it is.
    pub fn capture(&mut self, captured: &[i16]) -> Result<Vec<i16>, AudioError> {
        Ok(captured.to_vec())
    }

    /// Nothing is removed.
    pub fn echo_return_loss_enhancement(&self) -> Option<f64> {
        None
    }
}
