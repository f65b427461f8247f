//! Tokens bound to their holder: the `holder` claim, and the kernel's view
//! of the process that presents a token.
//!
//! A token with a `holder` claim is honoured only for a caller the claim
//! names: a systemd unit, a uid, or both. The unit is read from the cgroup
//! of the process that opened the connection, found through a pidfd
//! (`SO_PEERPIDFD`) so that a pid reused by another process cannot pass for
//! it. The decision itself is in each service's policy step (fs:
//! `services/fs/src/policy.rs`); docs/grants.md says what the binding does
//! and does not guarantee.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use serde::{Deserialize, Serialize};

use crate::server::CallContext;
use crate::wire::Error;

/// Longest unit name systemd accepts (`UNIT_NAME_MAX`, 255, less the NUL).
pub const MAX_UNIT_NAME: usize = 255;

/// The `holder` claim: who may present the token.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Holder {
    /// The systemd unit (`.service` or `.scope`) whose processes may
    /// present the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The uid that may present the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
}

impl Holder {
    /// The claim that `holder_unit` and `holder_uid` ask for (the
    /// parameters of `identity.issue` and `identity.delegate`): `None` when
    /// neither is given.
    ///
    /// # Errors
    /// As [`Holder::validate`].
    pub fn from_params(unit: Option<&str>, uid: Option<u32>) -> Result<Option<Self>, String> {
        if unit.is_none() && uid.is_none() {
            return Ok(None);
        }
        let holder = Self {
            unit: unit.map(str::to_string),
            uid,
        };
        holder.validate()?;
        Ok(Some(holder))
    }

    /// Checks that the claim names someone, and a unit by a name systemd
    /// could give it.
    ///
    /// # Errors
    /// What is wrong, for a code-1 or code-2 message.
    pub fn validate(&self) -> Result<(), String> {
        match &self.unit {
            None if self.uid.is_none() => Err("holder names neither a unit nor a uid".into()),
            Some(unit) if !is_unit_name(unit) => Err(format!(
                "holder unit {:?} is not a service or scope unit name such as reader.service",
                unit.escape_debug().to_string()
            )),
            _ => Ok(()),
        }
    }
}

/// Whether `unit` is a service or scope unit name as systemd spells them
/// (`[A-Za-z0-9:_.\@-]+.service` or `.scope`, at most [`MAX_UNIT_NAME`]
/// bytes): the only kinds of unit that hold processes.
pub fn is_unit_name(unit: &str) -> bool {
    is_service_unit(unit) || unit.strip_suffix(".scope").is_some_and(is_unit_stem)
}

/// Whether `unit` is a service unit name (see [`is_unit_name`]).
pub fn is_service_unit(unit: &str) -> bool {
    unit.len() <= MAX_UNIT_NAME && unit.strip_suffix(".service").is_some_and(is_unit_stem)
}

fn is_unit_stem(stem: &str) -> bool {
    !stem.is_empty()
        && !stem.starts_with('.')
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_.\\@-".contains(&b))
}

/// The unit of a process in cgroup `path` (the `0::` line of
/// `/proc/<pid>/cgroup`), as systemd reads it: the first component that is
/// not a slice. `None` for the root cgroup and for slices themselves.
/// Cgroups below a unit (a unit with `Delegate=`) belong to that unit.
/// A path with `..` is a process outside the reader's cgroup namespace
/// (a container's host, or a process that entered it without its cgroup
/// namespace): no unit of this system.
pub fn unit_of_cgroup(path: &str) -> Option<&str> {
    let mut parts = path.split('/').filter(|c| !c.is_empty());
    if path.split('/').any(|c| c == "..") {
        return None;
    }
    parts.find(|c| !c.ends_with(".slice"))
}

/// The process that opened a connection, as fs found it when a bound token
/// was first presented on it.
#[derive(Debug)]
pub struct Opener {
    /// Refers to that very process for as long as this lives, whatever
    /// happens to its pid.
    pidfd: OwnedFd,
    /// Its pid in the reader's pid namespace, for messages.
    pub pid: i32,
    /// Its unit, from its cgroup; `None` in the root cgroup or a slice.
    pub unit: Option<String>,
}

/// `SO_PEERPIDFD` (Linux 6.5), not yet in the libc crate. 77 on every
/// architecture Strata builds for (asm-generic).
const SO_PEERPIDFD: libc::c_int = 77;

impl Opener {
    /// Finds the process at the other end of connected socket `socket`,
    /// whose pid and uid the kernel reported as `pid` and `uid`
    /// (`SO_PEERCRED`), and its unit.
    ///
    /// The pidfd comes from `SO_PEERPIDFD`: the process that connected,
    /// pinned by the kernel at `connect(2)`. The cgroup is read through its
    /// pid, and the read counts only if the pidfd says the process has not
    /// exited afterwards: a pid cannot be reused before its process exits,
    /// so what was read is that process's cgroup. On kernels without
    /// `SO_PEERPIDFD` the pidfd is opened from the pid (`pidfd_open(2)`,
    /// Linux 5.3) and must run as `uid`: from then on the same holds, but a
    /// pid reused between the connect and that call by a process of the
    /// same user would pass (docs/grants.md).
    ///
    /// # Errors
    /// Why the process cannot be known: another pid namespace, already
    /// exited, or a kernel without pidfds.
    pub fn of_socket(socket: RawFd, pid: Option<i32>, uid: u32) -> Result<Self, String> {
        let pid = pid.filter(|p| *p > 0).ok_or_else(|| {
            "the process at the other end is in another pid namespace, so its unit cannot be known"
                .to_string()
        })?;
        let pidfd = peer_pidfd(socket).or_else(|e| match e.raw_os_error() {
            // Before Linux 6.5: the pid's process now, which must at least
            // run as the user that connected, so that an outsider's pid
            // reused by a process of the unit does not pass for it.
            Some(libc::ENOPROTOOPT) => {
                let fd = pidfd_open(pid)?;
                if euid_of(pid)? != uid {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(fd)
            }
            _ => Err(e),
        });
        let exited = || format!("the process that opened this connection (pid {pid}) has exited");
        let pidfd = pidfd.map_err(|e| match e.raw_os_error() {
            Some(libc::ESRCH) => exited(),
            _ => format!("cannot get a pidfd for the process at the other end (pid {pid}): {e}"),
        })?;
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"));
        let mut opener = Self {
            pidfd,
            pid,
            unit: None,
        };
        if opener.has_exited() {
            return Err(exited());
        }
        // Alive after the read: the file was that process's.
        let cgroup = cgroup.map_err(|e| {
            format!(
                "cannot read /proc/{pid}/cgroup ({e}); the service needs to see other users' \
                 processes (ProtectProc=default)"
            )
        })?;
        opener.unit = cgroup
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .and_then(unit_of_cgroup)
            .map(str::to_string);
        Ok(opener)
    }

    /// Whether the process has exited (a zombie has). Its connection may
    /// live on in another process (inherited, or passed with
    /// `SCM_RIGHTS`), but it no longer speaks for its unit.
    pub fn has_exited(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        #[allow(unsafe_code)]
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        // A pidfd is readable once its process has exited; an error is
        // taken as exited, so that the check fails closed.
        n != 0
    }
}

/// Whether `caller` is the holder a bound token names (api/protocol.md,
/// "Tokens"), for each service's policy step: the connection was
/// opened by a process of the uid and the unit it names, and that process
/// is still alive.
///
/// # Errors
/// Code 3, saying who the token is bound to and who the caller is.
pub fn admits(holder: &Holder, caller: &CallContext) -> Result<(), Error> {
    let bound = || match (&holder.unit, holder.uid) {
        (Some(unit), Some(uid)) => format!("unit {unit} and uid {uid}"),
        (Some(unit), None) => format!("unit {unit}"),
        (None, Some(uid)) => format!("uid {uid}"),
        (None, None) => "nobody".into(),
    };
    let refuse = |why: String| Error::denied(format!("token is bound to {}; {why}", bound()));
    if let Some(uid) = holder.uid {
        if uid != caller.peer.uid {
            return Err(refuse(format!("the caller is uid {}", caller.peer.uid)));
        }
    }
    let opener = caller.opener().map_err(|e| refuse(e.to_string()))?;
    if let Some(unit) = &holder.unit {
        if opener.unit.as_deref() != Some(unit.as_str()) {
            return Err(refuse(format!(
                "the process that opened this connection (pid {}, uid {}) is in {}",
                opener.pid,
                caller.peer.uid,
                opener.unit.as_deref().unwrap_or("no unit")
            )));
        }
    }
    // Checked on every request: a connection outlives its opener when it
    // was inherited or passed on, and then no longer speaks for the unit.
    if opener.has_exited() {
        return Err(refuse(format!(
            "the process that opened this connection (pid {}) has exited; a bound token \
             is honoured only while the process that connected is alive",
            opener.pid
        )));
    }
    Ok(())
}

#[allow(unsafe_code)]
fn peer_pidfd(socket: RawFd) -> std::io::Result<OwnedFd> {
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is a valid c_int buffer of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            socket,
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&mut fd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: the kernel just created this descriptor for us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The effective uid of process `pid` (`/proc/<pid>/status`).
fn euid_of(pid: i32) -> std::io::Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))
}

#[allow(unsafe_code)]
fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just created this descriptor for us.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn unit_names() {
        assert!(is_unit_name("reader.service"));
        assert!(is_unit_name("user@1000.service"));
        assert!(is_unit_name("session-3.scope"));
        assert!(!is_unit_name("system.slice"));
        assert!(!is_unit_name(".service"));
        assert!(!is_unit_name("a/b.service"));
        assert!(!is_unit_name("../x.service"));
        assert!(!is_unit_name(&format!("{}.service", "a".repeat(250))));
    }

    #[test]
    fn the_euid_of_this_process() {
        let me = std::process::id() as i32;
        assert_eq!(euid_of(me).unwrap(), rustix::process::geteuid().as_raw());
    }

    #[test]
    fn units_of_cgroups() {
        assert_eq!(
            unit_of_cgroup("/system.slice/reader.service"),
            Some("reader.service")
        );
        assert_eq!(
            unit_of_cgroup("/user.slice/user-0.slice/session-3.scope"),
            Some("session-3.scope")
        );
        assert_eq!(
            unit_of_cgroup("/system.slice/app.service/worker"),
            Some("app.service")
        );
        assert_eq!(
            unit_of_cgroup("/user.slice/user-1000.slice/user@1000.service/app.slice/x.service"),
            Some("user@1000.service")
        );
        assert_eq!(unit_of_cgroup("/"), None);
        assert_eq!(unit_of_cgroup("/../../system.slice/x.service"), None);
        assert_eq!(unit_of_cgroup("/system.slice"), None);
    }

    #[test]
    fn a_holder_must_name_someone_by_a_real_name() {
        assert!(Holder::default().validate().is_err());
        let unit = |u: &str| Holder {
            unit: Some(u.into()),
            uid: None,
        };
        assert!(unit("reader.service").validate().is_ok());
        assert!(unit("reader").validate().is_err());
        assert!(unit("../../etc.service/x").validate().is_err());
        let uid = Holder {
            unit: None,
            uid: Some(1000),
        };
        assert!(uid.validate().is_ok());
    }

    #[test]
    fn the_opener_of_a_socket_is_this_process_in_its_own_unit() {
        let (a, _b) = UnixStream::pair().unwrap();
        let me = std::process::id() as i32;
        let opener =
            Opener::of_socket(a.as_raw_fd(), Some(me), rustix::process::geteuid().as_raw())
                .expect("opener");
        assert_eq!(opener.pid, me);
        assert!(!opener.has_exited());
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let expected = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .and_then(unit_of_cgroup)
            .map(str::to_string);
        assert_eq!(opener.unit, expected);
    }

    #[test]
    #[allow(unsafe_code)]
    fn a_peer_that_exited_is_seen_as_exited() {
        let path = std::env::temp_dir().join(format!("strata-holder-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        // Built before the fork: the child only makes system calls.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in addr
            .sun_path
            .iter_mut()
            .zip(path.as_os_str().as_encoded_bytes())
        {
            *d = *s as libc::c_char;
        }
        // SAFETY: the child calls socket, connect and _exit only.
        let child = unsafe { libc::fork() };
        if child == 0 {
            unsafe {
                let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
                let rc = libc::connect(s, (&addr as *const libc::sockaddr_un).cast(), len);
                libc::_exit(if rc == 0 { 0 } else { 7 });
            }
        }
        let (conn, _) = listener.accept().unwrap();
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        let _ = std::fs::remove_file(&path);
        assert_eq!(status, 0, "the child could not connect");
        let err = Opener::of_socket(
            conn.as_raw_fd(),
            Some(child),
            rustix::process::geteuid().as_raw(),
        )
        .unwrap_err();
        assert!(err.contains("has exited"), "{err}");
    }
}
