//! Running the real service binaries the way systemd does, for integration
//! tests and the benchmark.
//!
//! [`ActivatedService`] binds the listening socket itself (as systemd's
//! `.socket` unit would), passes it as fd 3 with `LISTEN_FDS=1` and
//! `LISTEN_PID` set to the child's own pid, and keeps it across restarts:
//! clients connect to a socket that never disappears, exactly as under
//! systemd. It also gives the child a `NOTIFY_SOCKET` so tests can see the
//! `READY=1` the service sends.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A service binary started with a real activation fd.
pub struct ActivatedService {
    binary: PathBuf,
    name: String,
    envs: Vec<(String, String)>,
    listener: UnixListener,
    /// Further listeners passed after the first, with their
    /// `LISTEN_FDNAMES` names (as several `.socket` units with
    /// `FileDescriptorName=` would).
    extra: Vec<(String, UnixListener)>,
    notify: UnixDatagram,
    notify_path: PathBuf,
    child: Option<Child>,
    /// `$STRATA_RUNTIME_DIR` of the child.
    pub runtime_dir: PathBuf,
    /// The socket clients connect to.
    pub socket: PathBuf,
}

/// The path of a workspace binary next to the running test executable
/// (`target/<profile>/<name>`). `cargo test --workspace` builds them all.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace` (or `cargo test --workspace`) first",
        path.display()
    );
    path
}

impl ActivatedService {
    /// Binds `runtime_dir/<name>.sock` and starts `binary` on it with
    /// `STRATA_RUNTIME_DIR=runtime_dir` and the extra `envs`.
    pub fn start(
        binary: &Path,
        name: &str,
        runtime_dir: &Path,
        envs: &[(&str, &str)],
    ) -> io::Result<Self> {
        Self::start_with_sockets(binary, name, runtime_dir, &[], envs)
    }

    /// As [`ActivatedService::start`], and also binds
    /// `runtime_dir/<fdname>.sock` with `mode` for each of `extra`, passed
    /// as fds 4, 5… named `fdname` in `LISTEN_FDNAMES` (identity's
    /// `credentials` socket is one, mode 0600).
    pub fn start_with_sockets(
        binary: &Path,
        name: &str,
        runtime_dir: &Path,
        extra: &[(&str, u32)],
        envs: &[(&str, &str)],
    ) -> io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(runtime_dir)?;
        let mut extra_listeners = Vec::with_capacity(extra.len());
        for (fdname, mode) in extra {
            let path = runtime_dir.join(format!("{fdname}.sock"));
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))?;
            extra_listeners.push((fdname.to_string(), listener));
        }
        let socket = runtime_dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)?;
        // As a `.socket` unit with SocketMode=0666 would: any local user may
        // connect, and the service decides what they may do.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))?;
        std::fs::set_permissions(runtime_dir, std::fs::Permissions::from_mode(0o755))?;
        let notify_path = runtime_dir.join(format!("{name}.notify"));
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path)?;
        let mut svc = Self {
            binary: binary.to_path_buf(),
            name: name.to_string(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            listener,
            extra: extra_listeners,
            notify,
            notify_path,
            child: None,
            runtime_dir: runtime_dir.to_path_buf(),
            socket,
        };
        svc.spawn()?;
        Ok(svc)
    }

    #[allow(unsafe_code)]
    fn spawn(&mut self) -> io::Result<()> {
        // The listeners in fd order (3, 4, ...), and their names.
        let fds: Vec<i32> = std::iter::once(self.listener.as_raw_fd())
            .chain(self.extra.iter().map(|(_, l)| l.as_raw_fd()))
            .collect();
        let names: Vec<&str> = std::iter::once(self.name.as_str())
            .chain(self.extra.iter().map(|(n, _)| n.as_str()))
            .collect();
        // `sh` learns its own pid as $$ and `exec` keeps it, which is how the
        // child gets LISTEN_PID (and WATCHDOG_PID, when a test passes
        // WATCHDOG_USEC) equal to its pid without unsafe env writes between
        // fork and exec.
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(
                "[ -n \"$WATCHDOG_USEC\" ] && export WATCHDOG_PID=$$; \
                 LISTEN_PID=$$ LISTEN_FDS=\"$2\" LISTEN_FDNAMES=\"$1\" exec \"$0\"",
            )
            .arg(&self.binary)
            .arg(names.join(":"))
            .arg(fds.len().to_string())
            .env("STRATA_RUNTIME_DIR", &self.runtime_dir)
            .env("NOTIFY_SOCKET", &self.notify_path)
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null());
        if std::env::var_os("STRATA_TEST_VERBOSE").is_none() {
            cmd.stderr(Stdio::null());
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        // SAFETY: the closure runs in the forked child before exec and calls
        // only async-signal-safe functions (fcntl, dup2), allocating nothing
        // (`fds` was built before the fork and is only read): it moves every
        // listener above fd 100 first, so that none is overwritten while the
        // others are put at 3, 4, ..., where sd_listen_fds expects them, and
        // dup2 leaves FD_CLOEXEC cleared on the copies.
        unsafe {
            cmd.pre_exec(move || {
                let mut high = [0i32; 16];
                if fds.len() > high.len() {
                    return Err(io::Error::from_raw_os_error(libc::EMFILE));
                }
                for (i, fd) in fds.iter().enumerate() {
                    high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100);
                    if high[i] < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                for (i, fd) in high[..fds.len()].iter().enumerate() {
                    if libc::dup2(*fd, 3 + i as i32) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        self.child = Some(cmd.spawn()?);
        Ok(())
    }

    /// The socket of the extra listener named `fdname`.
    pub fn socket_named(&self, fdname: &str) -> PathBuf {
        self.runtime_dir.join(format!("{fdname}.sock"))
    }

    /// The child's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Waits for a notification message containing `needle` (for example
    /// `READY=1`).
    pub fn wait_notify(&self, needle: &str, timeout: Duration) -> io::Result<String> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no {needle} from {}", self.name),
                ));
            }
            self.notify.set_read_timeout(Some(left))?;
            match self.notify.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if msg.lines().any(|l| l == needle) {
                        return Ok(msg);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // A signal (the test process's own children exiting) may
                // land during the wait.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends `signal` to the child.
    #[allow(unsafe_code)]
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        let pid = self.pid().ok_or_else(|| io::Error::other("not running"))?;
        // SAFETY: kill(2) on our own child's pid.
        if unsafe { libc::kill(pid as i32, signal) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for the child to exit, up to `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<ExitStatus> {
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| io::Error::other("not running"))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "still running"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> io::Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        self.wait(Duration::from_secs(15))
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the process and starts a new one on the same listening socket,
    /// as systemd does on `Restart=`.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Starts the process again after it exited (or was killed).
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Err(io::Error::other("still running"));
        }
        self.spawn()
    }
}

impl Drop for ActivatedService {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.notify_path);
    }
}

/// Starts strata-identity with its state in `<base>/state` and its socket in
/// `<base>/run`, plus `envs`, and waits for `READY=1`.
///
/// The user running the tests is made an administrator
/// (`STRATA_ADMIN_UIDS`, unless `envs` sets it), so that tests which only
/// need to issue tokens pass as an unprivileged user too, as in the Nix
/// build sandbox; uid 0 is an administrator anyway.
pub fn start_identity(base: &Path, envs: &[(&str, &str)]) -> ActivatedService {
    let state = base.join("state");
    let me = euid();
    let mut all = vec![("STRATA_STATE_DIR", state.to_str().expect("utf-8 path"))];
    all.extend(admin_unless_set(envs, &me));
    start_ready("strata-identity", "identity", base, &all)
}

/// Starts strata-fs with its socket in `<base>/run` and its roots
/// `<base>/srv` (unless `envs` sets `STRATA_FS_ROOTS`), and waits for
/// `READY=1`.
pub fn start_fs(base: &Path, envs: &[(&str, &str)]) -> ActivatedService {
    let roots = base.join("srv").to_str().expect("utf-8 path").to_string();
    let mut all: Vec<(&str, &str)> = vec![("STRATA_FS_ROOTS", &roots)];
    all.retain(|(k, _)| !envs.iter().any(|(k2, _)| k2 == k));
    all.extend_from_slice(envs);
    start_ready("strata-fs", "fs", base, &all)
}

/// The effective uid of the tests, as text for `STRATA_ADMIN_UIDS`.
pub fn euid() -> String {
    rustix::process::geteuid().as_raw().to_string()
}

/// `envs`, preceded by `STRATA_ADMIN_UIDS=uid` unless `envs` sets it: the
/// user running the tests is identity's administrator unless a test says
/// who is.
pub fn admin_unless_set<'a>(envs: &[(&'a str, &'a str)], uid: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut all = Vec::with_capacity(envs.len() + 1);
    if !envs.iter().any(|(k, _)| *k == "STRATA_ADMIN_UIDS") {
        all.push(("STRATA_ADMIN_UIDS", uid));
    }
    all.extend_from_slice(envs);
    all
}

fn start_ready(binary: &str, name: &str, base: &Path, envs: &[(&str, &str)]) -> ActivatedService {
    let svc = ActivatedService::start(&workspace_binary(binary), name, &base.join("run"), envs)
        .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
    svc.wait_notify("READY=1", Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{binary} sent no READY=1: {e}"));
    svc
}

/// Runs one request as another uid and gid, by re-running the current test
/// binary as a child that executes only the test named `child_test` — which
/// must do nothing but call [`child_request`]. setuid is process-wide, so it
/// cannot be done on a test thread.
pub fn call_as(
    uid: u32,
    gid: u32,
    child_test: &str,
    socket: &Path,
    method: &str,
    token: Option<&str>,
    params: serde_json::Value,
) -> strata_shared::wire::Response {
    let out = Command::new(std::env::current_exe().expect("current exe"))
        .args(["--exact", child_test, "--nocapture", "--test-threads=1"])
        .env("STRATA_CHILD_SOCKET", socket)
        .env("STRATA_CHILD_METHOD", method)
        .env("STRATA_CHILD_TOKEN", token.unwrap_or(""))
        .env("STRATA_CHILD_PARAMS", params.to_string())
        .uid(uid)
        .gid(gid)
        .output()
        .expect("run the child test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("RESPONSE ").map(|(_, r)| r))
        .unwrap_or_else(|| {
            panic!(
                "child printed no response: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    serde_json::from_str(line).expect("the child's response")
}

/// The child side of [`call_as`]: makes the request described in its
/// environment and prints the response. Does nothing in a normal test run.
pub fn child_request() {
    let Ok(socket) = std::env::var("STRATA_CHILD_SOCKET") else {
        return;
    };
    let token = std::env::var("STRATA_CHILD_TOKEN").unwrap_or_default();
    let params: serde_json::Value =
        serde_json::from_str(&std::env::var("STRATA_CHILD_PARAMS").expect("params"))
            .expect("params are JSON");
    let mut c = strata_shared::client::Client::connect(Path::new(&socket)).expect("connect");
    let resp = c
        .call(
            &std::env::var("STRATA_CHILD_METHOD").expect("method"),
            (!token.is_empty()).then_some(token.as_str()),
            &params,
        )
        .expect("call");
    println!(
        "RESPONSE {}",
        serde_json::to_string(&resp).expect("serialize")
    );
}

/// Does what systemd's `LoadCredential=ID:SOCKET` does: binds a stream
/// socket to the abstract address `\0<abstract_name>`, connects to
/// `socket`, shuts down its writing side and reads until end of file.
/// Returns what was read (empty when the service closed without writing).
///
/// # Errors
/// When the socket cannot be created, bound or connected, or the read
/// fails (a reset counts as an error).
pub fn fetch_credential(socket: &Path, abstract_name: &str) -> io::Result<Vec<u8>> {
    use rustix::net::{AddressFamily, Shutdown, SocketAddrUnix, SocketFlags, SocketType};
    use std::io::Read;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::bind_unix(
        &fd,
        &SocketAddrUnix::new_abstract_name(abstract_name.as_bytes())?,
    )?;
    rustix::net::connect_unix(&fd, &SocketAddrUnix::new(socket)?)?;
    rustix::net::shutdown(&fd, Shutdown::Write)?;
    let mut stream = std::os::unix::net::UnixStream::from(fd);
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut got = Vec::new();
    stream.read_to_end(&mut got)?;
    Ok(got)
}

/// [`fetch_credential`] as another uid and gid, in a child re-running the
/// current test binary for the test named `child_test` only — which must
/// do nothing but call [`child_fetch_credential`]. Returns what the child
/// read, or `Err` with the child's error when it could not connect.
pub fn fetch_credential_as(
    uid: u32,
    gid: u32,
    child_test: &str,
    socket: &Path,
    abstract_name: &str,
) -> Result<Vec<u8>, String> {
    let out = Command::new(std::env::current_exe().expect("current exe"))
        .args(["--exact", child_test, "--nocapture", "--test-threads=1"])
        .env("STRATA_CHILD_CREDENTIAL_SOCKET", socket)
        .env("STRATA_CHILD_CREDENTIAL_NAME", abstract_name)
        .uid(uid)
        .gid(gid)
        .output()
        .expect("run the child test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The test harness prints "test NAME ... " on the same line first.
    for line in stdout.lines() {
        if let Some((_, err)) = line.split_once("CREDENTIAL-ERROR ") {
            return Err(err.to_string());
        }
        if let Some((_, text)) = line.split_once("CREDENTIAL ") {
            return Ok(text.trim_end().as_bytes().to_vec());
        }
    }
    panic!(
        "child printed no credential: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The child side of [`fetch_credential_as`]. Does nothing in a normal
/// test run.
pub fn child_fetch_credential() {
    let Ok(socket) = std::env::var("STRATA_CHILD_CREDENTIAL_SOCKET") else {
        return;
    };
    let name = std::env::var("STRATA_CHILD_CREDENTIAL_NAME").expect("name");
    match fetch_credential(Path::new(&socket), &name) {
        Ok(got) => println!("CREDENTIAL {}", String::from_utf8_lossy(&got)),
        Err(e) => println!("CREDENTIAL-ERROR {e}"),
    }
}

/// One audit record as [`RecordCapture`] got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedRecord {
    pub method: String,
    pub cap_id: Option<String>,
    pub path: Option<String>,
    pub authenticated: bool,
    pub code: Option<u16>,
    pub reason: String,
    pub reads: Option<strata_shared::audit::ReadSummary>,
}

/// An audit writer for a service driven in process: it keeps every record
/// it is given, or refuses them all while broken (a full disk, say).
#[derive(Clone, Default)]
pub struct RecordCapture {
    records: std::sync::Arc<std::sync::Mutex<Vec<CapturedRecord>>>,
    broken: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl RecordCapture {
    /// The writer to give the service (`with_trail`).
    pub fn writer(&self) -> strata_shared::audit::Writer {
        use strata_shared::audit::{Record, Recorded, Unwritable};
        let this = self.clone();
        std::sync::Arc::new(move |r: &Record<'_>| {
            if let Some(why) = this.broken.lock().unwrap().clone() {
                return Err(Unwritable(why));
            }
            this.records.lock().unwrap().push(CapturedRecord {
                method: r.method.to_string(),
                cap_id: r.cap_id.map(str::to_string),
                path: r.path.map(str::to_string),
                authenticated: r.authenticated,
                code: r.code.map(|c| c.as_u16()),
                reason: r.reason.to_string(),
                reads: r.reads,
            });
            Ok(Recorded::Written)
        })
    }

    /// The records written since the last call.
    pub fn take(&self) -> Vec<CapturedRecord> {
        std::mem::take(&mut *self.records.lock().unwrap())
    }

    /// How many records are waiting to be taken.
    pub fn len(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    /// Whether no record is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// While `Some`, every record is refused with this message.
    pub fn set_broken(&self, why: Option<&str>) {
        *self.broken.lock().unwrap() = why.map(str::to_string);
    }
}

/// One request through a service's dispatcher in process, answered as the
/// server would answer it: the result, or the error's code and message.
pub fn call_in_process<S: strata_shared::server::Service>(
    rt: &tokio::runtime::Runtime,
    service: &S,
    peer: strata_shared::peer::PeerCred,
    method: &str,
    token: Option<&str>,
    params: serde_json::Value,
) -> Result<serde_json::Value, (u16, String)> {
    use strata_shared::wire::{Request, ResponseBuf};
    let mut envelope = serde_json::json!({"v": 1, "req_id": 1, "method": method, "params": params});
    if let Some(t) = token {
        envelope["auth"] = serde_json::json!({ "token": t });
    }
    let payload = serde_json::to_vec(&envelope).unwrap();
    let req = Request::parse(&payload).unwrap();
    let ctx = strata_shared::server::CallContext::detached(peer);
    let mut out = ResponseBuf::new();
    out.begin_ok(req.req_id);
    match rt.block_on(service.call(&ctx, &req, &mut out)) {
        Ok(()) => out.finish_ok(req.req_id),
        Err(e) => out.error(req.req_id, &e),
    }
    let resp: serde_json::Value = serde_json::from_slice(&out.frame()[4..]).unwrap();
    if resp["ok"] == true {
        Ok(resp["result"].clone())
    } else {
        let e = &resp["error"];
        Err((
            e["code"].as_u64().unwrap() as u16,
            e["message"].as_str().unwrap().to_string(),
        ))
    }
}
