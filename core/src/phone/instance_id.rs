//! The RFC 5626 instance id: one UUID per account and device, kept across
//! runs in a small file so the registrar sees the same device each time.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use uuid::Uuid;

fn file_for(dir: &Path, user: &str, domain: &str) -> PathBuf {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    dir.join(format!("{}@{}.instance-id", safe(user), safe(domain)))
}

/// The account's instance id as a `urn:uuid:` URN, created on first use.
///
/// A file that does not hold a UUID is replaced (with a warning) rather than
/// stopping the phone: the cost is one stale binding that expires by itself.
pub fn load_or_create(dir: &Path, user: &str, domain: &str) -> io::Result<String> {
    let path = file_for(dir, user, domain);
    match fs::read_to_string(&path) {
        Ok(text) => match Uuid::parse_str(text.trim()) {
            Ok(id) => return Ok(id.urn().to_string()),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "instance id file is corrupt; replacing it")
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = Uuid::new_v4();
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, format!("{id}\n"))?;
    fs::rename(&tmp, &path)?;
    Ok(id.urn().to_string())
}

/// A fresh id for a phone with nowhere to keep one.
pub fn ephemeral() -> String {
    Uuid::new_v4().urn().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_stable_across_loads_and_survives_corruption() {
        let dir = std::env::temp_dir().join(format!("locus-instance-{}", Uuid::new_v4()));
        let a = load_or_create(&dir, "alice", "example.test").unwrap();
        assert!(a.starts_with("urn:uuid:"));
        assert_eq!(load_or_create(&dir, "alice", "example.test").unwrap(), a);
        assert_ne!(load_or_create(&dir, "bob", "example.test").unwrap(), a);
        fs::write(file_for(&dir, "alice", "example.test"), "not a uuid").unwrap();
        let b = load_or_create(&dir, "alice", "example.test").unwrap();
        assert_ne!(a, b);
        assert_eq!(load_or_create(&dir, "alice", "example.test").unwrap(), b);
        fs::remove_dir_all(&dir).unwrap();
    }
}
