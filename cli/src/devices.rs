//! `locus devices`: the audio devices the sound-card backend sees.

use std::io::Write as _;

use locus_core::audio::sound_card::list_devices;
use serde_json::json;

use crate::CliError;

/// Lists the devices: one line each, or one JSON object each with `--json`.
pub fn run(json: bool) -> Result<(), CliError> {
    let devices = list_devices().map_err(|e| CliError::Failed(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    if devices.is_empty() && !json {
        let _ = writeln!(out, "no audio devices found");
    }
    for d in devices {
        let line = if json {
            json!({
                "event": "device",
                "t": 0.0,
                "name": d.name,
                "input": d.input,
                "output": d.output,
                "default": d.default,
            })
            .to_string()
        } else {
            let roles = match (d.input, d.output) {
                (true, true) => "in/out",
                (true, false) => "in",
                (false, true) => "out",
                (false, false) => "-",
            };
            let default = if d.default { " (default)" } else { "" };
            format!("{roles:7} {}{default}", d.name)
        };
        let _ = writeln!(out, "{line}");
    }
    Ok(())
}
