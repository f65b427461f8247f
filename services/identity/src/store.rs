//! Durable files: written whole or not at all.
//!
//! Every state file is written to a temporary file in the same directory,
//! `fsync`ed, renamed over the old one, and the directory is `fsync`ed, so a
//! crash at any point leaves either the old file or the new one — never a
//! truncated mix — and an acknowledged write survives power loss.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Atomically and durably replaces `path` with `bytes`, created with `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    replace(path, bytes, mode, true)
}

/// Atomically replaces `path`, without waiting for the disk: for files that
/// are rewritten at every start anyway (`identity.pub` on a tmpfs), where a
/// crash can lose nothing but an fsync would delay the first answer.
pub fn write_replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    replace(path, bytes, mode, false)
}

fn replace(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        // The mode given to open() is reduced by the umask (the unit sets
        // UMask=0077); set it explicitly so identity.pub really is 0644.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if durable {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes the temporary files a crash between write and rename left in
/// `dir` (named `.<name>.tmp-<pid>`). They are never read, but each can be
/// as large as the revocation list, and a process killed in a loop would
/// pile them up. Called once at start, before anything is written.
pub fn remove_temporaries(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(".tmp-") && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_file_with_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn stale_temporaries_are_removed_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(".revocations.json.tmp-4242"), b"half").unwrap();
        std::fs::write(d.path().join("revocations.json"), b"{}").unwrap();
        std::fs::write(d.path().join("signing.key"), b"k").unwrap();
        assert_eq!(remove_temporaries(d.path()).unwrap(), 1);
        let mut left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["revocations.json", "signing.key"]);
    }

    #[test]
    #[allow(unsafe_code)]
    fn mode_is_not_reduced_by_the_umask() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pub");
        // SAFETY: umask has no preconditions; restored right after.
        let old = unsafe { libc::umask(0o077) };
        let r = write_atomic(&p, b"k", 0o644);
        // SAFETY: as above; puts back the mask this test replaced.
        unsafe { libc::umask(old) };
        r.unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }
}
