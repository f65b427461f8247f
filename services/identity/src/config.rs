//! identity's settings, from the environment (see docs/configuration.md).

use std::collections::HashSet;
use std::path::PathBuf;

use strata_shared::config::{env_list, env_u64, runtime_dir, ConfigError};

/// Longest token lifetime anyone may configure: 30 days.
pub const TTL_CEILING: u64 = 30 * 24 * 3600;

/// Everything identity reads at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Holds `signing.key` and `revocations.json`.
    pub state_dir: PathBuf,
    /// Where `identity.pub` is published.
    pub runtime_dir: PathBuf,
    pub admins: Admins,
    /// Users besides administrators who may use the reserved connections
    /// (`STRATA_RESERVED_USERS`): fs's own sync connection.
    pub reserved_uids: HashSet<u32>,
    pub default_ttl: u64,
    pub max_ttl: u64,
    /// Where the grant files are (`STRATA_GRANTS_DIR`, default
    /// `/etc/strata/grants.d`; see docs/grants.md).
    pub grants_dir: PathBuf,
    /// The directories fs serves, when identity is told them
    /// (`STRATA_GRANT_ROOTS`, colon-separated, as `STRATA_FS_ROOTS`): an fs
    /// grant whose prefix lies outside every one is refused at load, since
    /// every request through it would be. Empty: not checked.
    pub grant_roots: Vec<String>,
    /// This node's id (`STRATA_NODE_ID`, default the host name): identity
    /// signs as `identity@<node id>`, the `iss` claim.
    pub node_id: String,
}

/// Who may issue and revoke any capability, besides uid 0.
#[derive(Debug, Clone, Default)]
pub struct Admins {
    pub uids: HashSet<u32>,
    pub gids: HashSet<u32>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let state_dir = std::env::var_os("STRATA_STATE_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                // systemd may list several directories, colon-separated.
                std::env::var("STATE_DIRECTORY")
                    .ok()
                    .and_then(|v| v.split(':').next().map(PathBuf::from))
                    .filter(|p| !p.as_os_str().is_empty())
            })
            .unwrap_or_else(|| PathBuf::from("/var/lib/strata/identity"));
        let max_ttl = env_u64("STRATA_TOKEN_MAX_TTL", 86_400, 1, TTL_CEILING)?;
        let default_ttl = env_u64("STRATA_TOKEN_DEFAULT_TTL", 3_600.min(max_ttl), 1, max_ttl)?;
        Ok(Self {
            state_dir,
            runtime_dir: runtime_dir(),
            admins: Admins::from_env()?,
            reserved_uids: env_list("STRATA_RESERVED_USERS", ',')
                .into_iter()
                .filter_map(|name| {
                    let uid = lookup_user(&name);
                    if uid.is_none() {
                        tracing::warn!("STRATA_RESERVED_USERS: no user named {name:?}; skipped");
                    }
                    uid
                })
                .collect(),
            default_ttl,
            max_ttl,
            grants_dir: std::env::var_os("STRATA_GRANTS_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/etc/strata/grants.d")),
            grant_roots: grant_roots()?,
            node_id: strata_shared::config::node_id()?,
        })
    }
}

/// `STRATA_GRANT_ROOTS`: colon-separated normalized absolute paths.
fn grant_roots() -> Result<Vec<String>, ConfigError> {
    let roots = env_list("STRATA_GRANT_ROOTS", ':');
    for root in &roots {
        strata_shared::paths::check_prefix(root).map_err(|e| ConfigError {
            var: "STRATA_GRANT_ROOTS",
            value: root.clone(),
            expected: e.message,
        })?;
    }
    Ok(roots)
}

impl Admins {
    /// `STRATA_ADMIN_UIDS`/`GIDS` (numbers) and `STRATA_ADMIN_USERS`/`GROUPS`
    /// (names, resolved now through NSS). A name that does not resolve is
    /// logged and skipped: it cannot match any caller anyway.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut admins = Admins::default();
        for (var, set) in [
            ("STRATA_ADMIN_UIDS", &mut admins.uids),
            ("STRATA_ADMIN_GIDS", &mut admins.gids),
        ] {
            for item in env_list(var, ',') {
                let id = item.parse::<u32>().map_err(|_| ConfigError {
                    var,
                    value: item.clone(),
                    expected: "expected comma-separated numeric ids; use STRATA_ADMIN_USERS / STRATA_ADMIN_GROUPS for names".into(),
                })?;
                set.insert(id);
            }
        }
        for name in env_list("STRATA_ADMIN_USERS", ',') {
            match lookup_user(&name) {
                Some(uid) => {
                    admins.uids.insert(uid);
                }
                None => tracing::warn!("STRATA_ADMIN_USERS: no user named {name:?}; skipped"),
            }
        }
        for name in env_list("STRATA_ADMIN_GROUPS", ',') {
            match lookup_group(&name) {
                Some(gid) => {
                    admins.gids.insert(gid);
                }
                None => tracing::warn!("STRATA_ADMIN_GROUPS: no group named {name:?}; skipped"),
            }
        }
        Ok(admins)
    }

    /// uid 0, a listed uid, or a listed group that the caller both holds
    /// (its primary gid or `groups`, the kernel's record of its credentials
    /// at connect time) and still belongs to now (`member_now(uid, gid)`,
    /// the group database). The second condition is what ends a demoted
    /// administrator's rights at their next request, on a connection opened
    /// before the demotion and from a process that still carries the group.
    pub fn contains(
        &self,
        uid: u32,
        gid: u32,
        groups: impl FnOnce() -> Vec<u32>,
        member_now: impl Fn(u32, u32) -> bool,
    ) -> bool {
        if uid == 0 || self.uids.contains(&uid) {
            return true;
        }
        if self.gids.is_empty() {
            return false;
        }
        let held = |g: &u32| self.gids.contains(g);
        let mut kernel = groups();
        kernel.push(gid);
        kernel.sort_unstable();
        kernel.dedup();
        kernel.into_iter().filter(held).any(|g| member_now(uid, g))
    }
}

/// Whether the group database says `uid` belongs to `gid` now: as its
/// primary group, or as a member (`getgrouplist`). False for a uid without
/// a passwd entry.
#[allow(unsafe_code)]
pub fn member_now(uid: u32, gid: u32) -> bool {
    // SAFETY: passwd is a plain C struct (integers and pointers), for which
    // all zeroes is a valid value; getpwuid_r fills it in.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    loop {
        // SAFETY: every pointer is valid for the call; getpwuid_r writes
        // only into `pwd` and `buf` (of the length given) and sets `result`.
        let rc =
            unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || result.is_null() {
            return false;
        }
        break;
    }
    if pwd.pw_gid == gid {
        return true;
    }
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut n = groups.len() as libc::c_int;
        // SAFETY: `pw_name` points into `buf`, still alive; `groups` holds
        // `n` entries, and getgrouplist writes at most that many and stores
        // the number it needs in `n`.
        let rc =
            unsafe { libc::getgrouplist(pwd.pw_name, pwd.pw_gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            return groups[..n as usize].contains(&gid);
        }
        if n as usize <= groups.len() || n > 65536 {
            return false;
        }
        groups.resize(n as usize, 0);
    }
}

#[allow(unsafe_code)]
fn lookup_user(name: &str) -> Option<u32> {
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: as in member_now: all zeroes is a valid passwd.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; getpwnam_r writes only
    // into `pwd` and `buf` (of the length given) and sets `result`.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(pwd.pw_uid)
}

#[allow(unsafe_code)]
fn lookup_group(name: &str) -> Option<u32> {
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: group is a plain C struct (integers and pointers), for which
    // all zeroes is a valid value; getgrnam_r fills it in.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 64 * 1024];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as in lookup_user.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(grp.gr_gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_listed_ids_are_admins() {
        let admins = Admins {
            uids: [1000].into(),
            gids: [50].into(),
        };
        let yes = |_, _| true;
        assert!(admins.contains(0, 0, Vec::new, yes));
        assert!(admins.contains(1000, 1000, Vec::new, yes));
        assert!(admins.contains(1001, 50, Vec::new, yes));
        assert!(admins.contains(1001, 1001, || vec![10, 50], yes));
        assert!(!admins.contains(1001, 1001, || vec![10, 20], yes));
        assert!(!Admins::default().contains(1001, 1001, || vec![0], yes));
    }

    #[test]
    fn a_group_admin_removed_from_the_group_database_is_no_longer_one() {
        let admins = Admins {
            uids: [].into(),
            gids: [50].into(),
        };
        // The kernel still reports group 50 (connect-time snapshot), but
        // the database no longer lists the user in it.
        assert!(!admins.contains(1001, 1001, || vec![50], |_, _| false));
        assert!(!admins.contains(1001, 50, Vec::new, |_, _| false));
        // A uid administrator does not depend on the database.
        let by_uid = Admins {
            uids: [1001].into(),
            gids: [].into(),
        };
        assert!(by_uid.contains(1001, 1001, Vec::new, |_, _| false));
    }

    #[test]
    fn group_membership_is_read_from_the_group_database() {
        assert!(member_now(0, 0));
        assert!(!member_now(0, 4_000_000_000));
        assert!(!member_now(4_000_000_000, 0));
    }

    #[test]
    fn names_resolve_through_nss() {
        assert_eq!(lookup_user("root"), Some(0));
        assert_eq!(lookup_group("root"), Some(0));
        assert_eq!(lookup_user("no-such-user-strata"), None);
    }
}
