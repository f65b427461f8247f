//! The policy step: the one function that decides whether fs serves a
//! request, [`FsService::decide`].
//!
//! Every request but `fs.health` goes through it, and nothing after it
//! decides again. In order, it checks:
//!
//! 1. the token: signature (through the verification cache), validity
//!    window and revocation of it or of any ancestor in its `chain`
//!    ([`crate::auth`]) — code 2, or 5 while fs has no key from identity;
//! 2. the service (`"fs"`) and the action (`fs.close` needs any fs
//!    action), and the audience: a token with an `aud` claim must name
//!    `strata` or `fs@<node id>` — code 3;
//! 3. the holder: a token with a `holder` claim is honoured only for the
//!    uid it names (`SO_PEERCRED`) and the unit it names (the cgroup of
//!    the process that opened the connection), and only while that process
//!    is alive ([`strata_shared::holder::Opener`]) — code 3; then the
//!    capability's `constraints.rate_limit`, a token bucket per delegation
//!    tree ([`crate::rates`]) — code 7;
//! 4. the object:
//!    - a handle (`fs.read`, `fs.close`) must exist (code 4) and belong to
//!      this capability (code 3);
//!    - a path (`fs.open`, `fs.list`, `fs.stat`) is confined to the
//!      token's `path_prefix`: the prefix directory is opened beneath its
//!      root and pinned ([`crate::prefixes`]), the path must lie under the
//!      prefix component by component, and the kernel resolves it beneath
//!      the prefix directory (`openat2(RESOLVE_BENEATH |
//!      RESOLVE_NO_MAGICLINKS)`), refusing `..`, symlinks and magic links
//!      that would leave it — code 3;
//!    - a file to open must be a regular file (code 1 otherwise) with one
//!      name, unless the operator allows hard links
//!      (`STRATA_FS_ALLOW_HARDLINKS`) — code 3.
//!
//! What it grants, a [`Grant`], is the object already resolved as far as
//! the action needs it — an open file, an `O_PATH` descriptor, a directory,
//! a handle — so that the methods in [`crate::file_ops`] and
//! [`crate::path_ops`] do only I/O on it and never resolve a path again.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, OFlags};
use rustix::io::Errno;
use strata_shared::capability::{Audience, Capability, AUDIENCE_ANY};
use strata_shared::holder;
use strata_shared::ids::parse_handle;
use strata_shared::paths::{self, OpenFileError};
use strata_shared::server::CallContext;
use strata_shared::wire::Error;

use crate::handles::{self, Handle};
use crate::list_cache::{self, DirId};
use crate::FsService;

/// What a request wants to do: the fs action its token must allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Open,
    Read,
    List,
    Stat,
    /// Any fs action allows closing a handle of one's own.
    Close,
}

impl Action {
    /// The action's name in a token's `actions`; `None` for [`Self::Close`].
    fn claim(self) -> Option<&'static str> {
        match self {
            Self::Open => Some("open"),
            Self::Read => Some("read"),
            Self::List => Some("list"),
            Self::Stat => Some("stat"),
            Self::Close => None,
        }
    }
}

/// What a request names.
#[derive(Debug, Clone, Copy)]
pub enum Object<'a> {
    /// A path, for `fs.open`, `fs.list` and `fs.stat`.
    Path(&'a str),
    /// A handle from `fs.open`, for `fs.read` and `fs.close`.
    Handle(&'a str),
}

/// One request, as the policy sees it.
#[derive(Clone, Copy)]
pub struct Ask<'a> {
    /// Who is asking, as the kernel says.
    pub caller: &'a CallContext,
    pub token: Option<&'a str>,
    pub action: Action,
    pub object: Object<'a>,
}

/// A request the policy allowed: the capability, and the object to act on.
pub struct Grant {
    pub cap: Arc<Capability>,
    pub target: Target,
}

/// The object of an allowed request, resolved beneath the prefix.
pub enum Target {
    /// `fs.open`: the regular file, open read-only.
    File(File),
    /// `fs.stat`: the file or directory, open `O_PATH`.
    Node(OwnedFd),
    /// `fs.list`: the directory.
    Dir(Dir),
    /// `fs.read`, `fs.close`: a handle of this capability, and its id.
    Handle(u128, Arc<Handle>),
}

/// The directory of an allowed `fs.list`.
pub enum Dir {
    /// Opened beneath the prefix with [`list_cache::ListCache::open_flags`].
    Open(OwnedFd),
    /// The prefix itself or one name in it, a directory looked up with one
    /// `statx` beneath the prefix and not opened: the listing cache may
    /// answer for it. [`Dir::open`] opens it when the cache does not.
    Seen(DirId, Beneath),
}

/// A path the policy confined to a prefix directory, not yet opened.
pub struct Beneath {
    prefix: Arc<OwnedFd>,
    rel: String,
}

impl Beneath {
    /// Opens the path with `flags`, resolved by the kernel beneath the
    /// prefix directory.
    ///
    /// # Errors
    /// The kernel's: `EXDEV` for an escape, `ENOENT`, `EACCES`, …
    pub fn open(&self, flags: OFlags) -> Result<OwnedFd, Errno> {
        paths::open_beneath(&*self.prefix, &self.rel, flags)
    }
}

/// A request the policy refused.
#[derive(Debug)]
pub struct Refusal {
    pub error: Error,
    /// The capability, when the token decoded (an expired or revoked token,
    /// an action it does not allow, a path outside its prefix).
    pub cap: Option<Arc<Capability>>,
    /// Whether the token was valid: the audit record of a request without
    /// one has tighter bounds.
    pub authenticated: bool,
}

impl FsService {
    /// Decides `ask`: every check fs makes before it acts, in one place.
    ///
    /// # Errors
    /// The [`Refusal`] to answer: code 2 (token), 3 (action, prefix,
    /// another capability's handle, hard link), 4 (no such handle or
    /// path), 1 (a path that is not a regular file for `fs.open`, or not a
    /// directory for `fs.list`), 5 (no key yet), 6 (a leased file), 7 (the
    /// capability's rate limit).
    pub async fn decide(&self, ask: &Ask<'_>) -> Result<Grant, Refusal> {
        // 1. Who: the token, now.
        let cap = self
            .authority
            .authenticate(ask.token)
            .await
            .map_err(|f| Refusal {
                error: f.error,
                cap: f.cap,
                authenticated: false,
            })?;
        let refuse = |error: Error| Refusal {
            error,
            cap: Some(cap.clone()),
            authenticated: true,
        };
        // 2. What: service and action. `details.required` names the right
        // the request needed, so a client can ask for it without parsing.
        match ask.action.claim() {
            Some(action) => cap
                .authorize("fs", action)
                .map_err(|e| refuse(e.with_details(required(action))))?,
            None if cap.claims.service != "fs" => {
                return Err(refuse(Error::denied(format!(
                    "token is for service {:?}, not \"fs\"",
                    cap.claims.service
                ))))
            }
            None => {}
        }
        // 2b. For whom: a token addressed to other services or nodes is
        // not this fs's to serve, even though the key is the same.
        if let Some(aud) = &cap.claims.aud {
            let fleet = self.config.fleet.as_ref().map(|f| f.name.as_str());
            check_audience(aud, &self.config.node_id, fleet).map_err(refuse)?;
        }
        // 3. Whether this caller may present it, and whether the
        // capability's rate allows one more request. The rate comes after
        // the holder: someone else's requests with a copied bound token
        // must not drain the holder's bucket.
        if let Some(holder) = &cap.claims.holder {
            holder::admits(holder, ask.caller).map_err(refuse)?;
        }
        if let Some(limit) = cap.rate_limit() {
            // One bucket per delegation tree, its root's: delegating never
            // multiplies a rate, and one holder's children take one entry.
            self.rates
                .take(
                    cap.ancestors.first().copied().unwrap_or(cap.id),
                    limit,
                    cap.expires,
                    std::time::Instant::now(),
                    strata_shared::capability::now(),
                )
                .map_err(refuse)?;
        }
        // 4. Which object.
        let target = match ask.object {
            Object::Handle(handle) => self.own_handle(&cap, handle),
            Object::Path(path) => self.confine(&cap, ask.action, path),
        }
        .map_err(refuse)?;
        Ok(Grant { cap, target })
    }

    /// The handle named `handle`, if it is `cap`'s.
    fn own_handle(&self, cap: &Capability, handle: &str) -> Result<Target, Error> {
        let id = parse_handle(handle).ok_or_else(handles::missing)?;
        match self.handles.get(id, cap.id) {
            Ok(h) => Ok(Target::Handle(id, h)),
            // identity_sync also ends the handles of a capability revoked
            // after this request authenticated: say that (code 2), not "no
            // such handle" (code 4).
            Err(e) => match self.authority.revocations.revoked_in(cap.lineage()) {
                Some(revoked) => Err(crate::auth::revoked_error(cap, revoked)),
                None => Err(e),
            },
        }
    }

    /// `path` confined to `cap`'s prefix and resolved as `action` needs.
    fn confine(&self, cap: &Capability, action: Action, path: &str) -> Result<Target, Error> {
        let prefix = cap.path_prefix().ok_or_else(|| {
            Error::denied("token has no constraints.path_prefix; fs needs one to confine paths")
        })?;
        let rel = paths::relative_to_prefix(prefix, path)?;
        let dir = self.prefixes.get(&self.config, cap, prefix)?;
        let at = Beneath { prefix: dir, rel };
        let describe = || format!("{path:?}");
        match action {
            Action::Open => self.open_file(&at, path).map(Target::File),
            Action::Stat => at
                .open(OFlags::PATH)
                .map(Target::Node)
                .map_err(|e| paths::errno_to_error(e, &describe())),
            Action::List => self.list_dir(at, path).map(Target::Dir),
            Action::Read | Action::Close => Err(Error::invalid(format!(
                "{action:?} names a handle, not a path"
            ))),
        }
    }

    /// Opens a file for `fs.open`: read-only beneath the prefix, a regular
    /// file, and with one name unless hard links are allowed.
    fn open_file(&self, at: &Beneath, path: &str) -> Result<File, Error> {
        // O_NONBLOCK: opening a FIFO must not wait for a writer (it is then
        // refused as not a regular file), and an open that would break
        // another process's lease fails at once instead of waiting for the
        // holder.
        let fd = paths::open_file_beneath(
            &*at.prefix,
            &at.rel,
            OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK,
        )
        .map_err(|e| match e {
            OpenFileError::Leased => Error::exhausted(format!(
                "{path:?} is leased by another process (fcntl F_SETLEASE), which has not \
                 given it up; try again later"
            )),
            // open(2) of a Unix socket: not a file fs hands out (code 1, like
            // a FIFO or a device), not an internal error.
            OpenFileError::Kernel(Errno::NXIO) => Error::invalid(format!(
                "{path:?} is a socket; fs.open opens regular files only"
            )),
            OpenFileError::Kernel(other) => paths::errno_to_error(other, &format!("{path:?}")),
        })?;
        let st = rustix::fs::fstat(&fd)
            .map_err(|e| Error::internal(format!("cannot stat {path:?}: {e}")))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {}
            FileType::Directory => {
                return Err(Error::invalid(format!(
                    "{path:?} is a directory; use fs.list"
                )))
            }
            other => {
                return Err(Error::invalid(format!(
                    "{path:?} is not a regular file ({other:?}); fs.open opens regular files only"
                )))
            }
        }
        // A hard link inside the prefix to a file outside it is the same
        // inode, and no path resolution can tell: refuse files that have
        // more than one name unless the operator vouches for the tree.
        if !self.config.allow_hardlinks && st.st_nlink > 1 {
            return Err(Error::denied(format!(
                "{path:?}: file has multiple hard links ({}); fs refuses them because a link \
                 can name a file outside the prefix (set STRATA_FS_ALLOW_HARDLINKS=1 to allow)",
                st.st_nlink
            )));
        }
        Ok(File::from(fd))
    }

    /// Finds the directory for `fs.list`.
    ///
    /// The prefix itself or one plain name in it needs no `openat2`:
    /// looking up a single name (not `..`) in the prefix directory, without
    /// following a symlink, cannot leave it — there is no `..`, no absolute
    /// link and no second component to resolve. `statx` beneath the open
    /// prefix is that lookup, with the same search-permission check and the
    /// same mount crossing as `openat2(RESOLVE_BENEATH)`, and it reports
    /// the mount the listing cache keys on. Anything else, or a symlink or
    /// non-directory there, is opened beneath the prefix.
    fn list_dir(&self, at: Beneath, path: &str) -> Result<Dir, Error> {
        if self.list_cache.is_enabled() && !at.rel.contains('/') && at.rel != ".." {
            let stx = if at.rel == "." {
                list_cache::statx_dir(at.prefix.as_fd(), "", AtFlags::EMPTY_PATH)
            } else {
                list_cache::statx_dir(at.prefix.as_fd(), &at.rel, AtFlags::SYMLINK_NOFOLLOW)
            };
            if let Some(id) = stx.ok().as_ref().and_then(DirId::from_statx) {
                return Ok(Dir::Seen(id, at));
            }
        }
        open_dir(&at, self.list_cache.open_flags(), path).map(Dir::Open)
    }
}

/// Whether a token's `aud` names this fs: `strata` (any Strata service of
/// the trust domain), `fs@<node_id>`, or `fleet:<fleet>` when this node is
/// in a fleet.
///
/// # Errors
/// Code 3, naming both, with `details` `{"aud", "accepted"}`.
fn check_audience(aud: &Audience, node_id: &str, fleet: Option<&str>) -> Result<(), Error> {
    // Compared in place: this runs on every request of every new token.
    let mine = |a: &String| {
        a.strip_prefix("fs@") == Some(node_id)
            || fleet.is_some_and(|f| a.strip_prefix("fleet:") == Some(f))
    };
    if aud.contains(AUDIENCE_ANY) || aud.0.iter().any(mine) {
        return Ok(());
    }
    let mut accepted = vec![AUDIENCE_ANY.to_string(), format!("fs@{node_id}")];
    accepted.extend(fleet.map(strata_fleet::config::audience));
    Err(Error::denied(format!(
        "token is for {:?}, not for this fs: it serves tokens whose aud includes one of \
         {accepted:?} (STRATA_NODE_ID, STRATA_FLEET_NAME)",
        aud.0
    ))
    .with_details(serde_json::json!({ "aud": aud.0, "accepted": accepted })))
}

/// The `details` of a refusal at step 2: the fully-qualified right the
/// request needed (`{"required": "fs.read"}`).
fn required(action: &str) -> serde_json::Value {
    serde_json::json!({ "required": format!("fs.{action}") })
}

impl Dir {
    /// The directory open with `flags` (a cache miss on [`Dir::Seen`]);
    /// `path` is the request's, for messages.
    ///
    /// # Errors
    /// As [`Beneath::open`], as protocol errors.
    pub fn open(self, flags: OFlags, path: &str) -> Result<OwnedFd, Error> {
        match self {
            Dir::Open(fd) => Ok(fd),
            Dir::Seen(_, at) => open_dir(&at, flags, path),
        }
    }
}

/// Opens `at` as a directory with `flags`, with the better message when it
/// is not one.
fn open_dir(at: &Beneath, flags: OFlags, path: &str) -> Result<OwnedFd, Error> {
    at.open(flags).map_err(|e| {
        if e == Errno::NOTDIR {
            // Either the target or a component on the way is not a
            // directory: look again without O_DIRECTORY (error path only)
            // to give the better message.
            if let Ok(fd) = at.open(OFlags::PATH) {
                if let Ok(st) = rustix::fs::fstat(&fd) {
                    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                        return Error::invalid(format!(
                            "{path:?} is not a directory; use fs.stat or fs.open"
                        ));
                    }
                }
            }
        }
        paths::errno_to_error(e, &format!("{path:?}"))
    })
}
