//! The directories tokens are confined to: resolving a `path_prefix` to an
//! open directory, and keeping recently used ones open. Only the policy
//! step ([`crate::policy`]) asks for them.
//!
//! A prefix names a directory, not a path to follow. It is resolved by the
//! kernel beneath the configured root that contains it with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS)`:
//! no symlink anywhere between the root and the prefix is followed, so
//! whoever may write to a directory on that path cannot point the prefix
//! elsewhere by swapping a component for a link.
//!
//! A capability is also pinned to the directory (device and inode) its
//! prefix resolved to the first time fs served it. If the directory at the
//! prefix is later a different one — moved away and recreated, renamed over,
//! mounted over — requests of that capability are refused (code 3) rather
//! than served from the new directory. Tokens first used afterwards pin the
//! new one.
//!
//! Opening the prefix costs a path walk on every path request, so the open
//! directory is kept for [`REVALIDATE_AFTER`]: within that window requests
//! resolve beneath the directory that was at the prefix when it was opened,
//! the one the capability is pinned to.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rustix::fs::OFlags;
use rustix::io::Errno;
use strata_shared::paths;
use strata_shared::wire::Error;

use crate::config::FsConfig;
use strata_shared::capability::Capability;

/// How long an open prefix directory is reused before it is opened again.
pub const REVALIDATE_AFTER: Duration = Duration::from_secs(1);
/// Most prefixes kept open at once.
pub const MAX_CACHED: usize = 1024;
/// Most capabilities whose prefix directory is remembered. Past it, expired
/// pins are dropped; if that is not enough, a capability not pinned yet is
/// refused with code 6 until pins expire. A pin is never dropped while its
/// capability lives: that would let it follow a replaced directory.
pub const MAX_PINNED: usize = 65536;
/// Most pins of one delegation tree (a token and everything delegated from
/// it): a holder minting children cannot fill the table for everyone.
pub const MAX_PINNED_PER_TREE: usize = 1024;

/// A directory's identity: device and inode.
type DirId = (u64, u64);

struct Entry {
    dir: Arc<OwnedFd>,
    id: DirId,
    opened: Instant,
}

/// The directory a capability's prefix resolved to first, and when the
/// capability expires (after which the pin is useless).
struct Pin {
    id: DirId,
    expires: i64,
    /// The `jti` of its delegation tree's root.
    root: u128,
}

/// The pins, and how many each delegation tree holds.
#[derive(Default)]
struct Pins {
    by_cap: HashMap<u128, Pin>,
    per_tree: HashMap<u128, usize>,
}

impl Pins {
    /// Drops the pins of capabilities expired at `now`.
    fn prune(&mut self, now: i64) {
        let per_tree = &mut self.per_tree;
        self.by_cap.retain(|_, p| {
            let live = p.expires > now;
            if !live {
                if let Some(n) = per_tree.get_mut(&p.root) {
                    *n -= 1;
                }
            }
            live
        });
        per_tree.retain(|_, n| *n > 0);
    }
}

/// Open prefix directories, by prefix, and the directory each capability
/// was first served from.
#[derive(Default)]
pub struct PrefixDirs {
    open: RwLock<HashMap<Box<str>, Entry>>,
    pins: RwLock<Pins>,
}

impl PrefixDirs {
    /// The open directory (an `O_PATH` descriptor) of `cap`'s `prefix`:
    /// code 3 when the prefix is not a normalised path under one of the
    /// roots, passes through a symlink, or is no longer the directory `cap`
    /// was first served from; code 4 when it is not a directory here.
    pub fn get(
        &self,
        config: &FsConfig,
        cap: &Capability,
        prefix: &str,
    ) -> Result<Arc<OwnedFd>, Error> {
        let (dir, id) = self.open_dir(config, prefix)?;
        self.check_pin(cap, prefix, id)?;
        Ok(dir)
    }

    fn open_dir(&self, config: &FsConfig, prefix: &str) -> Result<(Arc<OwnedFd>, DirId), Error> {
        if let Some(e) = self.open.read().expect("prefix lock").get(prefix) {
            if e.opened.elapsed() < REVALIDATE_AFTER {
                return Ok((e.dir.clone(), e.id));
            }
        }
        let fd = resolve(config, prefix)?;
        let st = rustix::fs::fstat(&fd).map_err(|e| {
            paths::errno_to_error(e, &format!("the token's path_prefix {prefix:?}"))
        })?;
        let id = (st.st_dev, st.st_ino);
        let dir = Arc::new(fd);
        let mut open = self.open.write().expect("prefix lock");
        if open.len() >= MAX_CACHED && !open.contains_key(prefix) {
            open.clear();
        }
        open.insert(
            prefix.into(),
            Entry {
                dir: dir.clone(),
                id,
                opened: Instant::now(),
            },
        );
        Ok((dir, id))
    }

    fn check_pin(&self, cap: &Capability, prefix: &str, id: DirId) -> Result<(), Error> {
        if let Some(pin) = self.pins.read().expect("pin lock").by_cap.get(&cap.id) {
            return if pin.id == id {
                Ok(())
            } else {
                Err(replaced(prefix))
            };
        }
        let root = cap.ancestors.first().copied().unwrap_or(cap.id);
        let mut pins = self.pins.write().expect("pin lock");
        if let Some(pin) = pins.by_cap.get(&cap.id) {
            return if pin.id == id {
                Ok(())
            } else {
                Err(replaced(prefix))
            };
        }
        let full = |p: &Pins| {
            p.by_cap.len() >= MAX_PINNED
                || p.per_tree
                    .get(&root)
                    .is_some_and(|n| *n >= MAX_PINNED_PER_TREE)
        };
        if full(&pins) {
            pins.prune(strata_shared::capability::now());
            if full(&pins) {
                return Err(Error::exhausted(format!(
                    "fs remembers the prefix directories of {} capabilities ({} of this \
                     token's delegation tree), its limit ({MAX_PINNED}, {MAX_PINNED_PER_TREE} \
                     per tree); try again when some have expired",
                    pins.by_cap.len(),
                    pins.per_tree.get(&root).copied().unwrap_or(0)
                )));
            }
        }
        pins.by_cap.insert(
            cap.id,
            Pin {
                id,
                expires: cap.expires,
                root,
            },
        );
        *pins.per_tree.entry(root).or_insert(0) += 1;
        Ok(())
    }
}

fn replaced(prefix: &str) -> Error {
    Error::denied(format!(
        "the directory at the token's path_prefix {prefix:?} is not the one this capability \
         was first served from (it was moved, replaced or mounted over); fs does not follow \
         it: ask for a new token"
    ))
}

/// Opens `prefix` beneath its root, with the kernel's confinement and no
/// symlink on the way.
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
    paths::open_beneath_no_symlinks(&root_dir, &rel, OFlags::PATH | OFlags::DIRECTORY).map_err(
        |e| match e {
            Errno::NOENT | Errno::NOTDIR => Error::not_found(format!(
                "the token's path_prefix {prefix:?} is not a directory on this host"
            )),
            Errno::LOOP => Error::denied(format!(
                "the token's path_prefix {prefix:?} passes through a symbolic link below \
                 {root:?}; a prefix must name the directory itself, and fs follows no link \
                 to reach it"
            )),
            Errno::XDEV => Error::denied(format!(
                "the token's path_prefix {prefix:?} resolves outside {root:?} (STRATA_FS_ROOTS)"
            )),
            other => paths::errno_to_error(other, &format!("the token's path_prefix {prefix:?}")),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use strata_shared::capability::{Claims, Constraints};
    use strata_shared::wire::ErrorCode;

    fn cap(n: u128, prefix: &str) -> Capability {
        Capability {
            claims: Claims {
                jti: format!("{n:032x}"),
                sub: "test".into(),
                iat: "2026-01-01T00:00:00Z".into(),
                nbf: None,
                exp: "2099-01-01T00:00:00Z".into(),
                service: "fs".into(),
                actions: vec!["list".into()],
                constraints: Constraints {
                    path_prefix: Some(prefix.into()),
                    rate_limit: None,
                },
                holder: None,
                chain: None,
                rights: Vec::new(),
                iss: None,
                aud: None,
            },
            id: n,
            expires: i64::MAX,
            issued: 0,
            not_before: None,
            ancestors: Box::new([]),
        }
    }

    #[test]
    fn prefixes_resolve_beneath_their_root_through_no_symlink() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().to_str().unwrap().to_string();
        std::fs::create_dir_all(t.path().join("root/data/sub")).unwrap();
        std::fs::create_dir_all(t.path().join("outside")).unwrap();
        std::fs::write(t.path().join("root/file"), "x").unwrap();
        symlink(t.path().join("outside"), t.path().join("root/escape")).unwrap();
        symlink("data", t.path().join("root/inner")).unwrap();
        let config = FsConfig {
            roots: vec![format!("{base}/root")],
            ..FsConfig::default()
        };
        let dirs = PrefixDirs::default();
        // One capability per call: a capability has one prefix.
        let next = std::sync::atomic::AtomicU64::new(1);
        let get = |p: &str| {
            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            dirs.get(&config, &cap(n.into(), p), p)
        };
        assert!(get(&format!("{base}/root")).is_ok());
        assert!(get(&format!("{base}/root/data")).is_ok());
        assert!(get(&format!("{base}/root/data/sub")).is_ok());
        let code = |p: &str| get(p).unwrap_err().code;
        // A link that stays beneath the root is refused too: a prefix names
        // a directory, not a path to follow.
        let inner = get(&format!("{base}/root/inner")).unwrap_err();
        assert_eq!(inner.code, ErrorCode::PermissionDenied);
        assert!(inner.message.contains("symbolic link"), "{}", inner.message);
        assert_eq!(
            code(&format!("{base}/root/inner/sub")),
            ErrorCode::PermissionDenied
        );
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

    #[test]
    fn one_delegation_tree_cannot_fill_the_pins_and_no_live_pin_is_dropped() {
        let dirs = PrefixDirs::default();
        let id: DirId = (1, 2);
        let child = |n: u128| Capability {
            ancestors: Box::new([7]),
            ..cap(n, "/srv")
        };
        for n in 0..MAX_PINNED_PER_TREE as u128 {
            dirs.check_pin(&child(100 + n), "/srv", id).unwrap();
        }
        let e = dirs
            .check_pin(&child(99), "/srv", id)
            .expect_err("the tree is at its limit");
        assert_eq!(e.code, ErrorCode::ResourceExhausted, "{e:?}");
        // Another tree still pins, and the tree's pins are all kept: a
        // pinned child still refuses another directory.
        dirs.check_pin(&cap(8, "/srv"), "/srv", id).unwrap();
        let e = dirs.check_pin(&child(100), "/srv", (1, 3)).unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionDenied, "{e:?}");
        // Once the tree's tokens expire, it may pin again.
        {
            let mut pins = dirs.pins.write().unwrap();
            for p in pins.by_cap.values_mut().filter(|p| p.root == 7) {
                p.expires = 0;
            }
        }
        dirs.check_pin(&child(99), "/srv", id).unwrap();
        assert_eq!(dirs.pins.read().unwrap().per_tree.get(&7), Some(&1));
    }

    #[test]
    fn a_replaced_prefix_directory_is_refused_to_the_capabilities_that_knew_the_old_one() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let inbox = root.join("sub/inbox");
        std::fs::create_dir_all(&inbox).unwrap();
        let config = FsConfig {
            roots: vec![root.to_str().unwrap().to_string()],
            ..FsConfig::default()
        };
        let prefix = inbox.to_str().unwrap();
        let dirs = PrefixDirs::default();
        let old = cap(1, prefix);
        assert!(dirs.get(&config, &old, prefix).is_ok());

        // Moved away and recreated: once fs opens the prefix again, the
        // capability that was served the old directory is refused...
        std::fs::rename(&inbox, root.join("sub/old")).unwrap();
        std::fs::create_dir(&inbox).unwrap();
        std::thread::sleep(REVALIDATE_AFTER + Duration::from_millis(50));
        let e = dirs.get(&config, &old, prefix).unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionDenied);
        assert!(e.message.contains("first served from"), "{}", e.message);
        // ...and keeps being refused, while a capability first used now is
        // served the directory that is there now.
        assert!(dirs.get(&config, &old, prefix).is_err());
        assert!(dirs.get(&config, &cap(2, prefix), prefix).is_ok());

        // Replaced by a symlink (the reported attack): refused to both.
        std::fs::remove_dir(&inbox).unwrap();
        symlink("old", &inbox).unwrap();
        std::thread::sleep(REVALIDATE_AFTER + Duration::from_millis(50));
        assert!(dirs.get(&config, &old, prefix).is_err());
        assert!(dirs.get(&config, &cap(2, prefix), prefix).is_err());
        assert!(dirs.get(&config, &cap(3, prefix), prefix).is_err());
    }
}
