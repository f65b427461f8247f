//! Harness for the supervisor's integration tests: a fake `systemctl` whose
//! answers the test controls, fake health servers built on the shared
//! server loop, and the real `strata-supervisor` started with a real
//! activation fd.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strata_shared::client::Client;
use strata_shared::server::{self, CallContext, Service};
use strata_shared::wire::{Error, Request, ResponseBuf};
use strata_testkit::{workspace_binary, ActivatedService};

/// Reports unit states from files in `<dir>/units/<unit>` (`Key=Value`
/// lines; a missing file is an inactive unit), logs every call to
/// `<dir>/calls.log` and every restart request to `<dir>/restarts.log`.
/// Exits 1 when `<dir>/broken` exists, like systemctl without a bus.
/// `start` makes services running (pid 4242) and sockets listening; `stop`
/// makes units inactive, except a service while `<dir>/slow-stop` exists,
/// which stays `deactivating` until `kill`. Start, stop and kill requests
/// are logged to `<dir>/control.log`.
const FAKE_SYSTEMCTL: &str = r#"#!/bin/sh
d="$(dirname "$0")"
echo "$*" >> "$d/calls.log"
if [ -e "$d/broken" ]; then
  echo "Failed to connect to bus: No such file or directory" >&2
  exit 1
fi
put() {
  printf 'LoadState=loaded\nActiveState=%s\nSubState=%s\nMainPID=%s\nNRestarts=0\nResult=success\nStateChangeTimestamp=@1764619200\n' "$2" "$3" "$4" > "$d/units/.$1"
  mv "$d/units/.$1" "$d/units/$1"
}
verb=""
for a in "$@"; do
  case "$a" in -*) ;; *) [ -n "$verb" ] || verb="$a" ;; esac
done
case "$verb" in
start|stop|kill)
  echo "$*" >> "$d/control.log"
  for u in "$@"; do
    case "$u" in
    *.service)
      case "$verb" in
      start) put "$u" active running 4242 ;;
      stop) if [ -e "$d/slow-stop" ]; then put "$u" deactivating stop-sigterm 4242; else put "$u" inactive dead 0; fi ;;
      kill) put "$u" inactive dead 0 ;;
      esac ;;
    *.socket)
      case "$verb" in
      start) put "$u" active listening 0 ;;
      stop) put "$u" inactive dead 0 ;;
      esac ;;
    esac
  done
  exit 0 ;;
esac
case "$1" in
show)
  first=1
  for u in "$@"; do
    case "$u" in show|-*) continue ;; esac
    [ "$first" = 1 ] || echo
    first=0
    echo "Id=$u"
    if [ -f "$d/units/$u" ]; then
      cat "$d/units/$u"
    else
      printf 'LoadState=loaded\nActiveState=inactive\nSubState=dead\n'
    fi
  done
  exit 0 ;;
esac
case " $* " in
*" restart "*) echo "$*" >> "$d/restarts.log"; exit 0 ;;
esac
echo "fake systemctl: unexpected arguments: $*" >&2
exit 1
"#;

pub struct FakeSystemctl {
    pub dir: PathBuf,
    pub program: PathBuf,
}

impl FakeSystemctl {
    pub fn new(root: &Path) -> Self {
        let dir = root.join("systemctl");
        std::fs::create_dir_all(dir.join("units")).unwrap();
        let program = dir.join("systemctl");
        std::fs::write(&program, FAKE_SYSTEMCTL).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir, program }
    }

    fn write(&self, unit: &str, active: &str, sub: &str, pid: u32) {
        let text = format!(
            "LoadState=loaded\nActiveState={active}\nSubState={sub}\nMainPID={pid}\nNRestarts=0\n\
             StateChangeTimestamp=@1764619200\n"
        );
        let tmp = self.dir.join(format!("units/.{unit}"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.dir.join(format!("units/{unit}"))).unwrap();
    }

    /// The service runs; its socket listens.
    pub fn running(&self, service: &str) {
        self.write(
            &format!("strata-{service}.service"),
            "active",
            "running",
            4242,
        );
        self.write(&format!("strata-{service}.socket"), "active", "running", 0);
    }

    /// The service does not run; its socket listens.
    pub fn idle(&self, service: &str) {
        self.write(&format!("strata-{service}.service"), "inactive", "dead", 0);
        self.write(
            &format!("strata-{service}.socket"),
            "active",
            "listening",
            0,
        );
    }

    /// The start, stop and kill requests, in order.
    pub fn control(&self) -> Vec<String> {
        read_lines(&self.dir.join("control.log"))
    }

    /// While set, a stopped service stays `deactivating` until killed.
    pub fn set_slow_stop(&self, slow: bool) {
        let p = self.dir.join("slow-stop");
        if slow {
            std::fs::write(p, "").unwrap();
        } else {
            let _ = std::fs::remove_file(p);
        }
    }

    pub fn set_broken(&self, broken: bool) {
        let p = self.dir.join("broken");
        if broken {
            std::fs::write(p, "").unwrap();
        } else {
            let _ = std::fs::remove_file(p);
        }
    }

    pub fn restarts(&self) -> Vec<String> {
        read_lines(&self.dir.join("restarts.log"))
    }

    /// How many times `systemctl show` ran: one per health check.
    pub fn shows(&self) -> usize {
        read_lines(&self.dir.join("calls.log"))
            .iter()
            .filter(|l| l.starts_with("show "))
            .count()
    }
}

fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// A health endpoint on `<runtime_dir>/<name>.sock`, served by the shared
/// server loop on its own runtime. Counts the health requests it answered.
pub struct FakeHealth {
    pub calls: Arc<AtomicUsize>,
    pub healthy: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct HealthService {
    name: String,
    calls: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
}

impl Service for HealthService {
    async fn call<'a>(
        &'a self,
        _ctx: &'a CallContext,
        req: &'a Request<'a>,
        out: &'a mut ResponseBuf,
    ) -> Result<(), Error> {
        if req.method != format!("{}.health", self.name) {
            return Err(Error::invalid("unknown method"));
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.healthy.load(Ordering::SeqCst) {
            out.write_result(&json!({"status": "ok", "service": self.name}))
        } else {
            Err(Error::internal("fake failure: store unreadable"))
        }
    }
}

impl FakeHealth {
    pub fn start(runtime_dir: &Path, name: &str) -> Self {
        let listener =
            strata_shared::activation::bind(&runtime_dir.join(format!("{name}.sock"))).unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let healthy = Arc::new(AtomicBool::new(true));
        let service = Arc::new(HealthService {
            name: name.to_string(),
            calls: calls.clone(),
            healthy: healthy.clone(),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener).unwrap();
                server::run(listener, service, server::Limits::default(), async {
                    let _ = rx.await;
                })
                .await;
            });
        });
        Self {
            calls,
            healthy,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn set_healthy(&self, h: bool) {
        self.healthy.store(h, Ordering::SeqCst);
    }
}

impl Drop for FakeHealth {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A temporary runtime directory, a fake systemctl, and the environment
/// that points the supervisor at them.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub runtime_dir: PathBuf,
    pub systemctl: FakeSystemctl,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        // Other uids (see `call_as`) must reach the sockets inside.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let runtime_dir = tmp.path().join("run");
        std::fs::create_dir_all(&runtime_dir).unwrap();
        let systemctl = FakeSystemctl::new(tmp.path());
        Self {
            tmp,
            runtime_dir,
            systemctl,
        }
    }

    /// Starts the real supervisor with a fast check interval, systemd mode
    /// and the fake systemctl, plus `extra` (which may override any of it).
    pub fn start_supervisor(&self, extra: &[(&str, &str)]) -> ActivatedService {
        self.start_supervisor_binary(&workspace_binary("strata-supervisor"), extra)
    }

    /// [`Self::start_supervisor`] with `WATCHDOG_USEC=usec` and, as systemd
    /// does, `WATCHDOG_PID` set to the supervisor's pid (sd_notify ignores
    /// `WATCHDOG_USEC` meant for another process). `ActivatedService` only
    /// passes fixed values, so a wrapper sets it and execs the binary: the
    /// pid stays the same across both execs.
    pub fn start_supervisor_with_watchdog(
        &self,
        usec: u64,
        extra: &[(&str, &str)],
    ) -> ActivatedService {
        let wrapper = self.tmp.path().join("with-watchdog");
        let script = format!(
            "#!/bin/sh\nWATCHDOG_USEC={usec} WATCHDOG_PID=$$ exec '{}'\n",
            workspace_binary("strata-supervisor").display()
        );
        std::fs::write(&wrapper, script).unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        self.start_supervisor_binary(&wrapper, extra)
    }

    /// [`Self::start_supervisor`], also passing the registry socket
    /// (`runtime_dir/registry.sock`, fd 4, `LISTEN_FDNAMES` `registry`), as
    /// strata-registry.socket does.
    pub fn start_supervisor_with_registry(&self, extra: &[(&str, &str)]) -> ActivatedService {
        let program = self.systemctl.program.to_str().unwrap().to_string();
        let mut envs: Vec<(&str, &str)> = vec![
            ("STRATA_SUPERVISOR_MODE", "systemd"),
            ("STRATA_SYSTEMCTL", &program),
            ("STRATA_SUPERVISOR_INTERVAL_MS", "100"),
            ("STRATA_LOG", "debug"),
        ];
        envs.extend_from_slice(extra);
        ActivatedService::start_with_sockets(
            &workspace_binary("strata-supervisor"),
            "supervisor",
            &self.runtime_dir,
            &[("registry", 0o666)],
            &envs,
        )
        .unwrap()
    }

    fn start_supervisor_binary(&self, binary: &Path, extra: &[(&str, &str)]) -> ActivatedService {
        let program = self.systemctl.program.to_str().unwrap().to_string();
        let mut envs: Vec<(&str, &str)> = vec![
            ("STRATA_SUPERVISOR_MODE", "systemd"),
            ("STRATA_SYSTEMCTL", &program),
            ("STRATA_SUPERVISOR_INTERVAL_MS", "100"),
            ("STRATA_LOG", "debug"),
        ];
        envs.extend_from_slice(extra);
        ActivatedService::start(binary, "supervisor", &self.runtime_dir, &envs).unwrap()
    }
}

pub fn call(sup: &ActivatedService, method: &str) -> Result<Value, strata_shared::wire::ErrorBody> {
    let mut c = Client::connect(&sup.socket).unwrap();
    c.call(method, None, &json!({})).unwrap().into_result()
}

/// One request with `params` on `socket`; the result or the error.
pub fn call_on(
    socket: &Path,
    method: &str,
    params: Value,
) -> Result<Value, strata_shared::wire::ErrorBody> {
    let mut c = Client::connect(socket).unwrap();
    c.call(method, None, &params).unwrap().into_result()
}

pub fn status(sup: &ActivatedService) -> Value {
    call(sup, "supervisor.status").expect("supervisor.status answers")
}

/// Polls `supervisor.status` until `pred` holds; returns that status.
pub fn wait_status(
    sup: &ActivatedService,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status(sup);
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last status: {s:#}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub fn wait_until(timeout: Duration, what: &str, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn state_of(status: &Value, service: &str) -> String {
    status["services"][service]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
