//! The directories tokens are confined to: resolving a `path_prefix` to an
//! open directory, and keeping recently used ones open.
//!
//! A prefix is itself resolved by the kernel beneath the configured root
//! that contains it (`openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`), so
//! a symlink inside `/srv` cannot make a token for `/srv/data` serve `/etc`:
//! the roots are a boundary of the same strength as the prefixes.
//!
//! Opening the prefix costs a path walk on every path request, so the open
//! directory is kept for [`REVALIDATE_AFTER`]. The trade-off: if the prefix
//! directory is renamed or replaced on disk, requests in that window still
//! resolve beneath the directory that *was* at the prefix when it was opened.
//! That is never an escape — `RESOLVE_BENEATH` confines resolution to the
//! held directory's subtree, which is exactly what the prefix named when it
//! was checked — only a short delay before fs follows the replacement.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rustix::fs::OFlags;
use rustix::io::Errno;
use strata_shared::paths;
use strata_shared::wire::Error;

use crate::config::FsConfig;

/// How long an open prefix directory is reused before it is opened again.
pub const REVALIDATE_AFTER: Duration = Duration::from_secs(1);
/// Most prefixes kept open at once.
pub const MAX_CACHED: usize = 1024;

struct Entry {
    dir: Arc<OwnedFd>,
    opened: Instant,
}

/// Open prefix directories, by prefix.
#[derive(Default)]
pub struct PrefixDirs {
    open: RwLock<HashMap<Box<str>, Entry>>,
}

impl PrefixDirs {
    /// The open directory (an `O_PATH` descriptor) of `prefix`: code 3 when
    /// the prefix is not a normalised path under one of the roots or
    /// resolves outside them, code 4 when it is not a directory here.
    pub fn get(&self, config: &FsConfig, prefix: &str) -> Result<Arc<OwnedFd>, Error> {
        if let Some(e) = self.open.read().expect("prefix lock").get(prefix) {
            if e.opened.elapsed() < REVALIDATE_AFTER {
                return Ok(e.dir.clone());
            }
        }
        let dir = Arc::new(resolve(config, prefix)?);
        let mut open = self.open.write().expect("prefix lock");
        if open.len() >= MAX_CACHED && !open.contains_key(prefix) {
            open.clear();
        }
        open.insert(
            prefix.into(),
            Entry {
                dir: dir.clone(),
                opened: Instant::now(),
            },
        );
        Ok(dir)
    }
}

/// Opens `prefix` beneath its root, with the kernel's confinement.
pub fn resolve(config: &FsConfig, prefix: &str) -> Result<OwnedFd, Error> {
    if paths::check_prefix(prefix).is_err() {
        return Err(Error::denied(format!(
            "the token's path_prefix {prefix:?} is not a normalised absolute path"
        )));
    }
    let root = config.root_of(prefix).ok_or_else(|| {
        Error::denied(format!(
            "the token's path_prefix {prefix:?} is outside the directories this fs serves \
             ({}; see STRATA_FS_ROOTS)",
            config.roots.join(":")
        ))
    })?;
    let root_dir = paths::open_prefix(root).map_err(|e| {
        Error::new(
            e.code,
            format!(
                "fs root {root:?} (STRATA_FS_ROOTS) cannot be opened: {}",
                e.message
            ),
        )
    })?;
    let rel = paths::relative_to_prefix(root, prefix)?;
    paths::open_beneath(&root_dir, &rel, OFlags::PATH | OFlags::DIRECTORY).map_err(|e| match e {
        Errno::NOENT | Errno::NOTDIR => Error::not_found(format!(
            "the token's path_prefix {prefix:?} is not a directory on this host"
        )),
        Errno::XDEV | Errno::LOOP => Error::denied(format!(
            "the token's path_prefix {prefix:?} resolves outside {root:?} (STRATA_FS_ROOTS)"
        )),
        other => paths::errno_to_error(other, &format!("the token's path_prefix {prefix:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use strata_shared::wire::ErrorCode;

    #[test]
    fn prefixes_resolve_beneath_their_root() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().to_str().unwrap().to_string();
        std::fs::create_dir_all(t.path().join("root/data")).unwrap();
        std::fs::create_dir_all(t.path().join("outside")).unwrap();
        std::fs::write(t.path().join("root/file"), "x").unwrap();
        symlink(t.path().join("outside"), t.path().join("root/escape")).unwrap();
        symlink("data", t.path().join("root/inner")).unwrap();
        let config = FsConfig {
            roots: vec![format!("{base}/root")],
            ..FsConfig::default()
        };
        let dirs = PrefixDirs::default();
        assert!(dirs.get(&config, &format!("{base}/root")).is_ok());
        assert!(dirs.get(&config, &format!("{base}/root/data")).is_ok());
        assert!(dirs.get(&config, &format!("{base}/root/inner")).is_ok());
        let code = |p: &str| dirs.get(&config, p).unwrap_err().code;
        assert_eq!(
            code(&format!("{base}/root/escape")),
            ErrorCode::PermissionDenied
        );
        assert_eq!(
            code(&format!("{base}/outside")),
            ErrorCode::PermissionDenied
        );
        assert_eq!(code(&format!("{base}/root2")), ErrorCode::PermissionDenied);
        assert_eq!(
            code(&format!("{base}/root/../outside")),
            ErrorCode::PermissionDenied
        );
        assert_eq!(code(&format!("{base}/root/missing")), ErrorCode::NotFound);
        assert_eq!(code(&format!("{base}/root/file")), ErrorCode::NotFound);
        assert_eq!(code("relative"), ErrorCode::PermissionDenied);
    }
}
