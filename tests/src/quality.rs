//! Speech quality of a recording: PESQ-WB (ITU-T P.862.2) from the PyPI
//! `pesq` package, run by `tests/pesq_wb.py` after aligning the recording
//! with the reference by cross-correlation.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;

use crate::HarnessError;

/// How a recording compares with what was said.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Quality {
    /// PESQ-WB MOS-LQO, 1.0 (bad) to about 4.6 (transparent).
    pub mos_lqo: f64,
    /// Where the speech starts in the recording, in ms.
    pub lag_ms: f64,
    /// Normalised correlation of the aligned recording with the reference.
    pub correlation: f64,
}

/// Scores `recording` against `reference` (both WAV, any rate).
pub fn pesq_wb(reference: &Path, recording: &Path) -> Result<Quality, HarnessError> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pesq_wb.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(reference)
        .arg(recording)
        .output()
        .map_err(|e| HarnessError::NotInstalled(format!("python3: {e}")))?;
    if !output.status.success() {
        return Err(HarnessError::NotInstalled(format!(
            "scoring failed ({}); install with: python3 -m pip install pesq numpy scipy\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| HarnessError::Audio(format!("unreadable score from pesq_wb.py: {e}")))
}
