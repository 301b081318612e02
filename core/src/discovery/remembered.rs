//! The last server list seen, kept on disk so a phone starting while the
//! discovery service is unreachable still knows where to go.

use std::io;
use std::path::{Path, PathBuf};

use super::list::ServerList;
use super::DiscoveryError;

/// Where the list lives inside a phone's state directory.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("servers.json")
}

/// The remembered list, `Ok(None)` when there is none yet. A damaged file
/// is an error (the caller logs it and goes on without).
pub fn load(file: &Path) -> Result<Option<ServerList>, DiscoveryError> {
    match std::fs::read(file) {
        Ok(bytes) => ServerList::from_json(&bytes).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DiscoveryError::Invalid(format!("{}: {e}", file.display()))),
    }
}

/// Stores `list`, replacing the file atomically so a crash mid-write never
/// leaves half a list behind.
pub fn save(file: &Path, list: &ServerList) -> io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_vec_pretty(list).map_err(io::Error::other)?;
    let temporary = file.with_extension("json.new");
    std::fs::write(&temporary, json)?;
    std::fs::rename(&temporary, file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::list::{Health, ServerEntry, ServerState};

    #[test]
    fn saved_lists_come_back_and_damage_is_an_error() {
        let dir = std::env::temp_dir().join(format!("locus-remembered-{}", std::process::id()));
        let file = path(&dir);
        let _ = std::fs::remove_file(&file);
        assert_eq!(load(&file).unwrap(), None);
        let list = ServerList {
            version: 3,
            servers: vec![ServerEntry {
                id: "a".into(),
                uri: "sip:127.0.0.2;transport=tcp".into(),
                priority: 1,
                weight: 1,
                region: String::new(),
                state: ServerState::Active,
                health: Health::Up,
            }],
        };
        save(&file, &list).unwrap();
        assert_eq!(load(&file).unwrap(), Some(list));
        std::fs::write(&file, b"{\"version\": 3, \"serv").unwrap();
        assert!(matches!(load(&file), Err(DiscoveryError::Garbage(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
