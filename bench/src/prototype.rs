//! The Go prototype Strata replaces (Gao-OS/StrataOS v0.3.0-mvp1, commit
//! 728e1b5, built by `scripts/build-prototype.sh`), started by the bench so
//! that one run measures it side by side with Strata and the floor.
//!
//! The prototype speaks the same protocol v0.3 framing and envelope: a
//! 4-byte big-endian length, then `{"v":1,"req_id":…,"method":…,
//! "auth":{"token":…},"params":…}`, answered by `{"v":1,"req_id":…,"ok":…}`.
//! It differs where the bench must know it:
//! - no socket activation: each service binds `<STRATA_RUNTIME_DIR>/
//!   identity.sock` or `fs.sock` itself, and fs reads identity's public key
//!   from `identity.pub` there, which identity writes at start;
//! - no `fs.stat` and no `identity.verify`, so those rows have no
//!   prototype counterpart;
//! - `identity.issue` answers anyone, so the bench needs no credentials.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::load::{Conn, Endpoint};
use crate::Res;

/// The binaries `scripts/build-prototype.sh` writes, by service.
const BINARIES: [(&str, &str); 2] = [
    ("identity", "strata-proto-identity"),
    ("fs", "strata-proto-fs"),
];

/// The prototype's identity and fs, running; killed when dropped.
pub struct Prototype {
    identity: Running,
    fs: Running,
    runtime_dir: PathBuf,
}

/// A child process killed and reaped when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Prototype {
    /// Starts identity, waits for its socket, then fs (which needs
    /// identity's key file) and waits for its socket. Their stderr goes to
    /// `prototype-<service>.log` in `logs`.
    ///
    /// # Errors
    ///
    /// Fails when a binary is missing from `bin_dir`, or a service exits or
    /// does not listen within 10 s.
    pub fn start(bin_dir: &Path, runtime_dir: &Path, logs: &Path) -> Res<Prototype> {
        for (_, bin) in BINARIES {
            if !bin_dir.join(bin).is_file() {
                return Err(format!(
                    "--prototype {}: no {bin} there (build it with scripts/build-prototype.sh SOURCE {})",
                    bin_dir.display(),
                    bin_dir.display()
                )
                .into());
            }
        }
        std::fs::create_dir_all(runtime_dir)?;
        let mut identity = Running(spawn(bin_dir, "identity", runtime_dir, logs)?);
        wait_listening(&mut identity.0, &runtime_dir.join("identity.sock"), logs)?;
        let mut fs = Running(spawn(bin_dir, "fs", runtime_dir, logs)?);
        wait_listening(&mut fs.0, &runtime_dir.join("fs.sock"), logs)?;
        Ok(Prototype {
            identity,
            fs,
            runtime_dir: runtime_dir.to_path_buf(),
        })
    }

    fn socket(&self, service: &str) -> PathBuf {
        self.runtime_dir.join(format!("{service}.sock"))
    }

    /// Where the load rows reach the prototype's identity.
    pub fn identity_endpoint(&self) -> Endpoint {
        Endpoint {
            socket: self.socket("identity"),
            pid: Some(self.identity.0.id()),
        }
    }

    /// Where the load rows reach the prototype's fs.
    pub fn fs_endpoint(&self) -> Endpoint {
        Endpoint {
            socket: self.socket("fs"),
            pid: Some(self.fs.0.id()),
        }
    }

    /// The memory rows' names and the processes they read.
    pub fn pids(&self) -> [(&'static str, u32); 2] {
        [
            ("prototype identity", self.identity.0.id()),
            ("prototype fs", self.fs.0.id()),
        ]
    }
}

fn spawn(bin_dir: &Path, service: &str, runtime_dir: &Path, logs: &Path) -> Res<Child> {
    let (_, bin) = BINARIES
        .iter()
        .find(|(s, _)| *s == service)
        .expect("a prototype service");
    let log = File::create(logs.join(format!("prototype-{service}.log")))?;
    Ok(Command::new(bin_dir.join(bin))
        .env("STRATA_RUNTIME_DIR", runtime_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin_dir.join(bin).display()))?)
}

/// Waits until `socket` accepts a connection, failing early if `child`
/// exits.
fn wait_listening(child: &mut Child, socket: &Path, logs: &Path) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if Conn::connect(socket).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            return Err(format!(
                "the prototype's service for {} exited ({status}); see {}/prototype-*.log",
                socket.display(),
                logs.display()
            )
            .into());
        }
        if Instant::now() > deadline {
            return Err(format!("the prototype never listened on {}", socket.display()).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
