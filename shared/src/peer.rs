//! The caller's identity as the kernel reports it (`SO_PEERCRED`,
//! `SO_PEERGROUPS`). A client cannot claim these; they are taken from the
//! socket when the connection is accepted.

use std::os::fd::{AsRawFd, RawFd};

/// Credentials of the process at the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
    /// `None` when the kernel could not say (a peer in another pid namespace).
    pub pid: Option<i32>,
}

impl PeerCred {
    /// Reads the credentials of a connected tokio stream.
    pub fn of(stream: &tokio::net::UnixStream) -> std::io::Result<Self> {
        let c = stream.peer_cred()?;
        Ok(Self {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid(),
        })
    }
}

/// The peer's supplementary groups (`SO_PEERGROUPS`, Linux 4.13+), captured
/// when it connected. Empty if the kernel cannot tell.
pub fn peer_groups(fd: &impl AsRawFd) -> Vec<u32> {
    peer_groups_raw(fd.as_raw_fd())
}

#[allow(unsafe_code)]
fn peer_groups_raw(fd: RawFd) -> Vec<u32> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is a valid buffer of `len` bytes, and the kernel
        // writes at most `len` bytes and stores the needed size in `len`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return groups;
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ERANGE) && n > groups.len() && n <= 65536 {
            groups.resize(n, 0);
            continue;
        }
        return Vec::new();
    }
}
