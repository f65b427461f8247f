//! Starting a process the way systemd's socket activation does: the bench
//! binds and keeps the listening socket (the `.socket` unit), and each
//! process it starts receives it as fd 3 with `LISTEN_FDS=1` and
//! `LISTEN_PID` equal to the child's own pid.
//!
//! Unlike `strata_testkit::ActivatedService`, no `/bin/sh` sits in
//! between: `LISTEN_PID` is written into a buffer prepared before `fork` and
//! the child calls `execve` itself from `pre_exec`. That matters for the
//! cold-activation figure, which would otherwise include a shell's start-up.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A binary served through a socket the bench holds.
pub struct Activated {
    pub name: String,
    binary: PathBuf,
    envs: Vec<(OsString, OsString)>,
    listener: UnixListener,
    log: PathBuf,
    child: Option<Child>,
    /// The socket clients connect to.
    pub socket: PathBuf,
}

impl Activated {
    /// Binds `runtime_dir/<name>.sock` without starting anything yet.
    pub fn bind(
        binary: &Path,
        name: &str,
        runtime_dir: &Path,
        envs: &[(&str, &str)],
        log_dir: &Path,
    ) -> io::Result<Self> {
        if !binary.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} is not built: run `cargo build --release --workspace` first",
                    binary.display()
                ),
            ));
        }
        std::fs::create_dir_all(runtime_dir)?;
        let socket = runtime_dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)?;
        let mut all: Vec<(OsString, OsString)> = vec![(
            "STRATA_RUNTIME_DIR".into(),
            runtime_dir.as_os_str().to_owned(),
        )];
        all.extend(envs.iter().map(|(k, v)| (k.into(), v.into())));
        Ok(Self {
            name: name.to_string(),
            binary: binary.to_path_buf(),
            envs: all,
            listener,
            log: log_dir.join(format!("{name}.log")),
            child: None,
            socket,
        })
    }

    /// Starts the process on the held socket.
    #[allow(unsafe_code)]
    pub fn spawn(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Err(io::Error::other(format!(
                "{} is already running",
                self.name
            )));
        }
        let log = File::options().create(true).append(true).open(&self.log)?;
        let mut cmd = Command::new(&self.binary);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let exec = Exec::new(&self.binary, &self.envs)?;
        let fd = self.listener.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec. It only
        // calls async-signal-safe functions (fcntl, dup2, getpid, execve)
        // and writes into memory prepared before the fork; it allocates
        // nothing.
        unsafe {
            cmd.pre_exec(move || exec.run(fd));
        }
        self.child = Some(cmd.spawn()?);
        Ok(())
    }

    /// Where the load rows reach this process.
    pub fn endpoint(&self) -> crate::load::Endpoint {
        crate::load::Endpoint {
            socket: self.socket.clone(),
            pid: self.pid(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Where the child's stderr goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Fails if the child has exited.
    pub fn check_alive(&mut self) -> io::Result<()> {
        if let Some(c) = self.child.as_mut() {
            if let Some(status) = c.try_wait()? {
                self.child = None;
                return Err(io::Error::other(format!(
                    "{} exited ({status}); see {}",
                    self.name,
                    self.log.display()
                )));
            }
        }
        Ok(())
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Everything `execve` needs, built before the fork.
struct Exec {
    path: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envs: Vec<CString>,
    env_ptrs: Vec<*const libc::c_char>,
    /// `LISTEN_PID=` followed by room for the digits and the NUL.
    listen_pid: Box<[u8; 32]>,
}

// SAFETY: the raw pointers point into the CStrings and the box owned by the
// same struct; the struct is only used in the forked child.
#[allow(unsafe_code)]
unsafe impl Send for Exec {}
// SAFETY: as for Send: nothing writes through the pointers while the
// struct is shared; only the forked child uses them.
#[allow(unsafe_code)]
unsafe impl Sync for Exec {}

const LISTEN_PID: &[u8] = b"LISTEN_PID=";

impl Exec {
    fn new(binary: &Path, extra: &[(OsString, OsString)]) -> io::Result<Self> {
        let cstr = |b: &[u8]| {
            CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"))
        };
        let path = cstr(binary.as_os_str().as_bytes())?;
        let argv = vec![path.clone()];
        let drop = [
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "JOURNAL_STREAM",
        ];
        let mut envs = Vec::new();
        for (k, v) in std::env::vars_os() {
            let ks = k.to_string_lossy();
            if drop.contains(&&*ks) || extra.iter().any(|(ek, _)| ek == &k) {
                continue;
            }
            envs.push(cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat())?);
        }
        for (k, v) in extra {
            envs.push(cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat())?);
        }
        envs.push(cstr(b"LISTEN_FDS=1")?);
        let mut listen_pid = Box::new([0u8; 32]);
        listen_pid[..LISTEN_PID.len()].copy_from_slice(LISTEN_PID);
        let mut env_ptrs: Vec<*const libc::c_char> = envs.iter().map(|c| c.as_ptr()).collect();
        env_ptrs.push(listen_pid.as_ptr().cast());
        env_ptrs.push(std::ptr::null());
        let argv_ptrs = vec![argv[0].as_ptr(), std::ptr::null()];
        Ok(Self {
            path,
            _argv: argv,
            argv_ptrs,
            _envs: envs,
            env_ptrs,
            listen_pid,
        })
    }

    /// In the child: listener to fd 3, LISTEN_PID, execve.
    #[allow(unsafe_code)]
    fn run(&self, fd: i32) -> io::Result<()> {
        // SAFETY: see `Activated::spawn`. The listen_pid buffer is this
        // process's own copy after fork; writing through a cast pointer is
        // fine because nothing else in the child reads it concurrently.
        unsafe {
            if fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            let buf = self.listen_pid.as_ptr() as *mut u8;
            let mut pid = libc::getpid() as u32;
            let mut digits = [0u8; 12];
            let mut n = 0;
            loop {
                digits[n] = b'0' + (pid % 10) as u8;
                n += 1;
                pid /= 10;
                if pid == 0 {
                    break;
                }
            }
            for i in 0..n {
                *buf.add(LISTEN_PID.len() + i) = digits[n - 1 - i];
            }
            *buf.add(LISTEN_PID.len() + n) = 0;
            libc::execve(
                self.path.as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.env_ptrs.as_ptr(),
            );
        }
        Err(io::Error::last_os_error())
    }
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
pub fn rss_kib(pid: u32) -> io::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// Raises the soft open-file limit to the hard one, so that the children
/// (which inherit it) can hold 10,000 handles.
#[allow(unsafe_code)]
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_cur
}

/// Waits until a fresh connection to `socket` gets an answer to `frame`.
pub fn wait_ready(socket: &Path, frame: &[u8], timeout: Duration) -> io::Result<Duration> {
    let start = std::time::Instant::now();
    let mut conn = crate::load::Conn::connect(socket)?;
    conn.stream.set_read_timeout(Some(timeout))?;
    conn.roundtrip(frame)?;
    Ok(start.elapsed())
}
