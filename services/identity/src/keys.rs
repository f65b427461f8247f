//! The signing key: created once, kept in the state directory, read once at
//! start. Restarts therefore keep every issued token valid.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_compact::KeyPair;
use strata_shared::{random, token};

use crate::store::write_atomic;

/// The key file's name inside the state directory.
pub const KEY_FILE: &str = "signing.key";

/// Why the key could not be loaded. Identity refuses to start rather than
/// replace a key it cannot read: replacing it would invalidate every token.
#[derive(Debug)]
pub enum KeyError {
    Io(PathBuf, io::Error),
    Malformed(PathBuf),
    Exposed(PathBuf, u32),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            KeyError::Malformed(p) => write!(
                f,
                "{} is not a base64 32-byte Ed25519 seed; restore it from backup, or remove it to \
                 create a new key (which invalidates every token issued so far)",
                p.display()
            ),
            KeyError::Exposed(p, mode) => write!(
                f,
                "{} has mode {mode:o}: other users could have read the signing key; \
                 `chmod 600` it if it was never exposed, otherwise remove it to rotate the key",
                p.display()
            ),
        }
    }
}

impl std::error::Error for KeyError {}

/// Loads `dir/signing.key`, creating the directory (0700) and a fresh key
/// (0600) on first start.
pub fn load_or_create(dir: &Path) -> Result<(KeyPair, bool), KeyError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| KeyError::Io(dir.to_path_buf(), e))?;
    let path = dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(text) => {
            let meta = std::fs::metadata(&path).map_err(|e| KeyError::Io(path.clone(), e))?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Exposed(path, mode));
            }
            let seed = STANDARD
                .decode(text.trim_ascii())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| KeyError::Malformed(path.clone()))?;
            Ok((token::keypair_from_seed(&seed), false))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let seed = random::seed();
            let text = format!("{}\n", STANDARD.encode(seed));
            write_atomic(&path, text.as_bytes(), 0o600).map_err(|e| KeyError::Io(path, e))?;
            Ok((token::keypair_from_seed(&seed), true))
        }
        Err(e) => Err(KeyError::Io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_and_reloaded() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        let (a, created) = load_or_create(&dir).unwrap();
        assert!(created);
        let (b, created) = load_or_create(&dir).unwrap();
        assert!(!created);
        assert_eq!(a.pk, b.pk);
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn exposed_or_corrupt_keys_stop_the_start() {
        let d = tempfile::tempdir().unwrap();
        load_or_create(d.path()).unwrap();
        let path = d.path().join(KEY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_or_create(d.path()),
            Err(KeyError::Exposed(..))
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            load_or_create(d.path()),
            Err(KeyError::Malformed(_))
        ));
    }
}
