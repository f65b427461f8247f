//! `strata-bench`: Strata side by side with its transport floor.
//!
//! ```text
//! cargo run --release -p strata-bench -- [--quick] [--json PATH] [--bin-dir DIR]
//!     [--secs S] [--cold N] [--conns 1,16] [--skip fs|identity] [--log FILTER]
//!     [--only NAME,...] [--prototype DIR]
//! strata-bench --systemd [--quick] [--json PATH] [--secs S] [--conns 16]
//!     [--only NAME,...] [--prototype DIR]
//! ```
//!
//! One run measures, in this order: microbenchmarks (in process); the idle
//! memory of each service and fs's memory with 10,000 open handles and after
//! closing them; closed-loop throughput and latency at 1 and 16 connections
//! of the transport floor, the shared server loop around a no-op service,
//! and each service method; cold activation.
//!
//! `--systemd` measures the production path instead: the services as their
//! installed units run them, on the real sockets, with the floor started
//! next to them in the same machine (see [`systemd`]). `--prototype DIR`
//! adds the Go prototype's services, started by the bench on sockets of
//! their own, to the same run (see [`prototype`]). See
//! `docs/performance.md`.

mod load;
mod micro;
mod null;
mod prototype;
mod spawn;
mod systemd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;
use serde_json::json;

use crate::load::{frame, request, Conn, Endpoint, LoadResult};
use crate::spawn::Activated;

/// Set in the environment of the bench's own children to pick their role.
const ROLE_VAR: &str = "STRATA_BENCH_ROLE";
/// Handles opened for the memory row, and handles per token (the default
/// `STRATA_FS_MAX_HANDLES_PER_CAP` is 1024).
const HANDLES: usize = 10_000;
const HANDLES_PER_TOKEN: usize = 1_000;

/// The command line. Every value option takes its value as the next argument
/// (`--secs 3`) or after `=` (`--secs=3`); a repeated option's last value
/// wins, except `--skip`, whose values add up.
#[derive(Parser, Debug)]
#[command(
    name = "strata-bench",
    about = "Strata side by side with its transport floor (see docs/performance.md)",
    args_override_self = true
)]
struct Args {
    /// Smoke mode: 50 ms warm-up, 200 ms per row, 3 cold starts, short microbenchmarks
    #[arg(long)]
    quick: bool,
    /// Where the JSON report goes
    #[arg(long, value_name = "PATH", default_value = "target/strata-bench.json")]
    json: PathBuf,
    /// Measure the services installed as systemd units, on their sockets,
    /// at 16 connections unless --conns says otherwise (run it as root in
    /// the machine that runs them, after `systemctl start strata.target`)
    // Not in conflict with --bin-dir, which it ignores: package.nix wraps
    // the installed bench with `--bin-dir $out/bin`.
    #[arg(long, conflicts_with_all = ["skip", "log", "cold"])]
    systemd: bool,
    /// Also measure the Go prototype's strata-proto-identity and
    /// strata-proto-fs from DIR (scripts/build-prototype.sh builds them)
    #[arg(long, value_name = "DIR")]
    prototype: Option<PathBuf>,
    /// Where strata-identity and strata-fs are [default: this binary's directory]
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Measured seconds per row [default: 3, or 0.2 with --quick]
    #[arg(long, value_name = "S", value_parser = parse_secs, allow_negative_numbers = true)]
    secs: Option<f64>,
    /// Cold activations per service, at least 1 [default: 20, or 3 with --quick]
    #[arg(long, value_name = "N")]
    cold: Option<usize>,
    /// Connection counts of the closed-loop rows, comma-separated [default:
    /// 1,16, or 16 with --systemd]
    // `::std::vec::Vec` keeps clap from taking this for a repeatable option:
    // the whole list is one value, and a later `--conns` replaces it.
    #[arg(long, value_name = "N,...", value_parser = parse_conns)]
    conns: Option<::std::vec::Vec<usize>>,
    /// Leave a service out (repeatable; identity implies fs, which needs its key)
    #[arg(long, value_name = "SERVICE")]
    skip: Vec<Skip>,
    /// STRATA_LOG for the services [default: theirs]
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
    /// Run only the load rows whose name contains one of these, e.g. fs.read,issue
    #[arg(long, value_name = "NAME,...", value_parser = parse_names)]
    only: Option<::std::vec::Vec<String>>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Skip {
    Fs,
    Identity,
}

fn parse_conns(s: &str) -> Result<Vec<usize>, String> {
    s.split(',')
        .map(|c| match c.trim().parse::<usize>() {
            Ok(0) => Err("a connection count is at least 1".to_string()),
            Ok(n) => Ok(n),
            Err(e) => Err(e.to_string()),
        })
        .collect()
}

/// Seconds as `Duration::from_secs_f64` takes them (it panics on others).
fn parse_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err("expected a non-negative number of seconds".into())
    }
}

fn parse_names(s: &str) -> Result<Vec<String>, String> {
    Ok(s.split(',').map(|n| n.trim().to_string()).collect())
}

/// The settings of one run, resolved from [`Args`].
struct Opts {
    quick: bool,
    /// Measure the installed units (`--systemd`).
    systemd: bool,
    /// The prototype's binaries, when given.
    prototype: Option<PathBuf>,
    json: PathBuf,
    bin_dir: PathBuf,
    warmup: Duration,
    measure: Duration,
    cold_runs: usize,
    skip_fs: bool,
    skip_identity: bool,
    log: Option<String>,
    conns: Vec<usize>,
    only: Vec<String>,
}

impl Opts {
    fn from_args(a: Args) -> Result<Opts, String> {
        let bin_dir = match a.bin_dir {
            Some(d) => d,
            None => {
                let exe = std::env::current_exe().map_err(|e| e.to_string())?;
                exe.parent().map(Path::to_path_buf).unwrap_or_default()
            }
        };
        let (warmup, measure, cold_runs) = if a.quick {
            (Duration::from_millis(50), Duration::from_millis(200), 3)
        } else {
            (Duration::from_millis(500), Duration::from_secs(3), 20)
        };
        // fs needs identity for its key.
        let skip_identity = a.skip.contains(&Skip::Identity);
        let conns = a
            .conns
            .unwrap_or_else(|| if a.systemd { vec![16] } else { vec![1, 16] });
        Ok(Opts {
            quick: a.quick,
            systemd: a.systemd,
            prototype: a.prototype,
            json: a.json,
            bin_dir,
            warmup,
            measure: a.secs.map_or(measure, Duration::from_secs_f64),
            cold_runs: a.cold.map_or(cold_runs, |n| n.max(1)),
            skip_fs: skip_identity || a.skip.contains(&Skip::Fs),
            skip_identity,
            log: a.log,
            conns,
            only: a.only.unwrap_or_default(),
        })
    }
}

fn main() -> ExitCode {
    if let Ok(role) = std::env::var(ROLE_VAR) {
        return null::run_role(&role);
    }
    let opts = match Opts::from_args(Args::parse()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-bench: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

#[derive(Serialize)]
struct Row {
    name: String,
    service: String,
    conns: usize,
    requests: u64,
    secs: f64,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    /// Throughput divided by the floor's at the same connection count.
    ratio_to_floor: f64,
    reply_bytes: usize,
    /// CPU time of the server process per request (all threads, user +
    /// system), µs.
    server_cpu_us: f64,
    /// CPU time of the load generator per request, µs.
    client_cpu_us: f64,
    /// For the floor: each sample (it is measured before and after the rows
    /// of its connection count; `rps` is their mean).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    samples_rps: Vec<f64>,
}

#[derive(Serialize)]
struct MemRow {
    process: String,
    state: String,
    rss_kib: u64,
    hwm_kib: u64,
}

#[derive(Serialize)]
struct ColdRow {
    name: String,
    runs: usize,
    min_ms: f64,
    p50_ms: f64,
    max_ms: f64,
}

#[derive(Serialize)]
struct Goal {
    goal: String,
    measured: String,
    /// `None` when the run could not judge it (e.g. no prototype given).
    met: Option<bool>,
}

/// The request each load row sends, and where.
struct Workload {
    name: String,
    service: String,
    target: Endpoint,
    /// One frame per connection (used round-robin).
    frames: Vec<Vec<u8>>,
}

/// Which implementation a set of services is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Strata,
    /// The Go prototype: same framing and envelope, but no `fs.stat` and no
    /// `identity.verify`.
    Prototype,
}

/// One implementation under test, as its workloads reach it.
struct UnderTest {
    kind: Kind,
    fs: Option<Endpoint>,
    identity: Option<Endpoint>,
    /// An fs token for `prefix`, issued by `identity`.
    token: Option<String>,
    /// The served data directory, the path prefix of the token.
    prefix: String,
}

impl UnderTest {
    /// A row's name and service label: the prototype's rows say so.
    fn label(&self, name: &str, service: &str) -> (String, String) {
        match self.kind {
            Kind::Strata => (name.to_string(), service.to_string()),
            Kind::Prototype => (
                format!("{name}{PROTOTYPE_SUFFIX}"),
                format!("prototype {service}"),
            ),
        }
    }
}

/// Appended to the name of each row measured on the prototype.
const PROTOTYPE_SUFFIX: &str = " (prototype)";

/// The measurements of one run, as the table and the JSON report show them.
struct Results {
    /// What was measured, for the JSON report: binaries, units, prototype.
    setup: serde_json::Value,
    micros: Vec<micro::Micro>,
    rows: Vec<Row>,
    mem: Vec<MemRow>,
    /// How long opening and closing the handles of the memory row took.
    handle_note: String,
    cold: Vec<ColdRow>,
    goals: Vec<Goal>,
}

/// What the JSON report says about the conditions of the run.
struct RunInfo {
    started: String,
    load_before: String,
    nofile: u64,
}

fn run(o: &Opts) -> Res<()> {
    if o.systemd {
        return systemd::run(o);
    }
    let info = announce(o);
    // Microbenchmarks first, while nothing else of ours runs.
    let micros = micro::run(if o.quick {
        Duration::from_millis(20)
    } else {
        Duration::from_millis(400)
    });
    let fx = Fixture::create(None)?;
    let mut stack = Stack::start(o, &fx)?;
    let mut mem = stack.idle_memory()?;

    let mut issuer = match &stack.identity {
        Some(s) => Some(Issuer::connect(&s.socket, &fx.prefix)?),
        None => None,
    };
    let token = match issuer.as_mut() {
        Some(i) => Some(i.issue()?),
        None => None,
    };
    let mut handle_note = String::new();
    if let (Some(fs), Some(token), Some(issuer)) =
        (stack.fs.as_ref(), token.as_deref(), issuer.as_mut())
    {
        let mut c = Conn::connect(&fs.socket)?;
        wait_for_identity_key(&mut c, token, &fx.prefix)?;
        handle_note = measure_handle_memory(&mut c, fs, issuer, &fx.prefix, &mut mem)?;
    }
    let prototype = start_prototype(o, &fx, &mut mem)?;

    let strata = UnderTest {
        kind: Kind::Strata,
        fs: stack.fs.as_ref().map(Activated::endpoint),
        identity: stack.identity.as_ref().map(Activated::endpoint),
        token: token.clone(),
        prefix: fx.prefix.clone(),
    };
    let mut workloads = workloads(o, &strata)?;
    if let Some((_, p)) = &prototype {
        workloads.extend(self::workloads(o, p)?);
    }
    let rows = measure_load(
        o,
        &stack.floor.endpoint(),
        &stack.noop.endpoint(),
        &workloads,
    )?;
    for p in [stack.identity.as_ref(), stack.fs.as_ref()]
        .into_iter()
        .flatten()
    {
        mem.push(mem_row(p, "after the load rows")?);
    }
    drop(prototype);
    stack.floor.kill();
    stack.noop.kill();

    let cold = measure_cold_activation(o, &mut stack, issuer, token.as_deref(), &fx.prefix)?;
    drop(stack);

    let goals = goals(&rows, &mem, &cold);
    let results = Results {
        setup: json!({
            "services": "started by strata-bench on sockets it holds",
            "services_bin_dir": o.bin_dir,
            "strata_log": o.log,
            "prototype": o.prototype,
        }),
        micros,
        rows,
        mem,
        handle_note,
        cold,
        goals,
    };
    let load_after = loadavg();
    print_report(&results);
    eprintln!(
        "load average before {}, after {load_after}",
        info.load_before
    );
    write_json(o, &info, &load_after, &results)
}

/// Starts the prototype when `--prototype` names it, with its idle memory
/// rows, and issues its token; says so plainly when it is not measured.
///
/// # Errors
///
/// Fails when the prototype's binaries are missing or do not answer.
fn start_prototype(
    o: &Opts,
    fx: &Fixture,
    mem: &mut Vec<MemRow>,
) -> Res<Option<(prototype::Prototype, UnderTest)>> {
    let Some(dir) = &o.prototype else {
        eprintln!(
            "strata-bench: prototype not measured (no --prototype DIR; scripts/build-prototype.sh builds it)"
        );
        return Ok(None);
    };
    let p = prototype::Prototype::start(dir, &fx.run_dir.join("prototype"), &fx.logs)?;
    let token = Issuer::connect(&p.identity_endpoint().socket, &fx.prefix)?.issue()?;
    let list = frame(&request(
        "fs.list",
        Some(&token),
        &json!({"path": format!("{}/list21", fx.prefix)}),
    ));
    Conn::connect(&p.fs_endpoint().socket)?
        .call_ok(&list)
        .map_err(|e| format!("the prototype's fs: {e}"))?;
    std::thread::sleep(Duration::from_millis(200));
    for (name, pid) in p.pids() {
        mem.push(mem_row_of(name, pid, "idle")?);
    }
    let under_test = UnderTest {
        kind: Kind::Prototype,
        fs: Some(p.fs_endpoint()),
        identity: Some(p.identity_endpoint()),
        token: Some(token),
        prefix: fx.prefix.clone(),
    };
    Ok(Some((p, under_test)))
}

/// Raises the open-file limit and says on stderr what this run will do.
fn announce(o: &Opts) -> RunInfo {
    let nofile = spawn::raise_nofile();
    let load_before = loadavg();
    let started = strata_shared::capability::format_time(strata_shared::capability::now());
    eprintln!(
        "strata-bench: {}{} mode, {} s per row (+{} ms warm-up), connections {:?}; load average {load_before}",
        if o.systemd { "systemd, " } else { "" },
        if o.quick { "quick" } else { "full" },
        o.measure.as_secs_f64(),
        o.warmup.as_millis(),
        o.conns
    );
    RunInfo {
        started,
        load_before,
        nofile,
    }
}

/// The directories of one run: the tree fs serves, the services' state and
/// logs, and the runtime directory with the sockets. Removed when dropped.
struct Fixture {
    base: tempfile::TempDir,
    /// On /dev/shm when there is one; else `run_dir` is under `base`.
    _run_tmp: Option<tempfile::TempDir>,
    /// The served data directory when it lives in a root of installed
    /// units (`--systemd`); else it is under `base`.
    _tree_tmp: Option<tempfile::TempDir>,
    run_dir: PathBuf,
    logs: PathBuf,
    /// `STRATA_FS_ROOTS` of the services the bench starts.
    roots: PathBuf,
    /// The served data directory, the path prefix of the tokens.
    prefix: String,
}

impl Fixture {
    /// Creates the directories, and the served tree in a fresh directory
    /// under `served_root` when given (a root the installed fs serves),
    /// else under `base`.
    ///
    /// # Errors
    ///
    /// Fails when a directory or file cannot be created.
    fn create(served_root: Option<&Path>) -> Res<Fixture> {
        let tmp = tempfile::Builder::new().prefix("strata-bench.").tempdir()?;
        let base = tmp.path();
        // Under systemd /run is a tmpfs, so the sockets and identity.pub (which
        // identity writes and fsyncs before it serves) live on one here too when
        // /dev/shm is available; state and the served files stay on disk.
        let run_tmp = tempfile::Builder::new()
            .prefix("strata-bench-run.")
            .tempdir_in("/dev/shm")
            .ok();
        let run_dir = match &run_tmp {
            Some(t) => t.path().to_path_buf(),
            None => base.join("run"),
        };
        let logs = base.join("logs");
        std::fs::create_dir_all(&logs)?;
        let roots = base.join("srv");
        let (tree_tmp, data) = match served_root {
            Some(root) => {
                let t = tempfile::Builder::new()
                    .prefix("strata-bench.")
                    .tempdir_in(root)
                    .map_err(|e| {
                        format!("cannot create the test tree in {}: {e}", root.display())
                    })?;
                let data = t.path().to_path_buf();
                (Some(t), data)
            }
            None => (None, roots.join("data")),
        };
        write_tree(&data)?;
        let prefix = data.to_str().ok_or("temp path is not UTF-8")?.to_string();
        Ok(Fixture {
            base: tmp,
            _run_tmp: run_tmp,
            _tree_tmp: tree_tmp,
            run_dir,
            logs,
            roots,
            prefix,
        })
    }
}

/// Writes the served tree into `data`: `list21/` (20 files and a
/// directory) and `blob.txt` (1 MiB), readable by every user, since an
/// installed fs runs as a user of its own and reads only what others may.
///
/// # Errors
///
/// Fails when a directory or file cannot be written.
fn write_tree(data: &Path) -> Res<()> {
    use std::os::unix::fs::PermissionsExt;
    let list_dir = data.join("list21");
    std::fs::create_dir_all(list_dir.join("subdir"))?;
    for i in 0..20 {
        std::fs::write(
            list_dir.join(format!("file-{i:02}.txt")),
            "x".repeat(100 * i),
        )?;
    }
    // 1 MiB of printable text, so that reads answer with `data`, not base64.
    let line = "The quick brown fox jumps over the lazy dog; 0123456789.\n";
    let blob: String = line.repeat((1 << 20) / line.len() + 1)[..1 << 20].to_string();
    std::fs::write(data.join("blob.txt"), &blob)?;
    // Whatever the umask: directories 0755, files 0644.
    for dir in [data, &list_dir, &list_dir.join("subdir")] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    for entry in std::fs::read_dir(&list_dir)?.chain(std::fs::read_dir(data)?) {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o644))?;
        }
    }
    Ok(())
}

/// Starts the transport floor and the no-op server (this binary in its two
/// roles) on sockets in `fx.run_dir`, and waits until both answer.
///
/// # Errors
///
/// Fails when either does not answer within 10 s.
fn start_references(fx: &Fixture) -> Res<(Activated, Activated)> {
    let threads_env: Vec<(String, String)> = std::env::var("STRATA_BENCH_THREADS")
        .map(|v| vec![("STRATA_BENCH_THREADS".to_string(), v)])
        .unwrap_or_default();
    let role_env = |role: &str| {
        let mut v = vec![(ROLE_VAR.to_string(), role.to_string())];
        v.extend(threads_env.iter().cloned());
        v
    };
    let exe = std::env::current_exe()?;
    let floor = start(&exe, "floor", &fx.run_dir, &role_env("floor"), &fx.logs)?;
    let noop = start(&exe, "noop", &fx.run_dir, &role_env("noop"), &fx.logs)?;
    let noop_health = frame(&request("x.noop", None, &json!({})));
    spawn::wait_ready(&floor.socket, &noop_health, Duration::from_secs(10))?;
    spawn::wait_ready(&noop.socket, &noop_health, Duration::from_secs(10))?;
    Ok((floor, noop))
}

/// The processes measured: the transport floor and the shared server loop
/// around a no-op service (this binary in a role), and the services unless
/// skipped.
struct Stack {
    floor: Activated,
    noop: Activated,
    identity: Option<Activated>,
    fs: Option<Activated>,
}

impl Stack {
    /// Starts each process on its socket and waits until it answers.
    fn start(o: &Opts, fx: &Fixture) -> Res<Stack> {
        let (floor, noop) = start_references(fx)?;

        let mut svc_env: Vec<(String, String)> = vec![
            (
                "STRATA_STATE_DIR".into(),
                fx.base.path().join("state-identity").display().to_string(),
            ),
            ("STRATA_FS_ROOTS".into(), fx.roots.display().to_string()),
        ];
        if let Some(l) = &o.log {
            svc_env.push(("STRATA_LOG".into(), l.clone()));
        }
        let service = |name: &str| -> Res<Activated> {
            let s = start(
                &o.bin_dir.join(format!("strata-{name}")),
                name,
                &fx.run_dir,
                &svc_env,
                &fx.logs,
            )?;
            spawn::wait_ready(&s.socket, &health_frame(name), Duration::from_secs(10))?;
            Ok(s)
        };
        let identity = if o.skip_identity {
            None
        } else {
            Some(service("identity")?)
        };
        let fs = if o.skip_fs {
            None
        } else {
            Some(service("fs")?)
        };
        Ok(Stack {
            floor,
            noop,
            identity,
            fs,
        })
    }

    /// The memory rows of each process idle, after start and one health call.
    fn idle_memory(&self) -> Res<Vec<MemRow>> {
        std::thread::sleep(Duration::from_millis(200));
        [Some(&self.floor), Some(&self.noop)]
            .into_iter()
            .chain([self.identity.as_ref(), self.fs.as_ref()])
            .flatten()
            .map(|p| mem_row(p, "idle"))
            .collect()
    }
}

fn health_frame(service: &str) -> Vec<u8> {
    frame(&request(&format!("{service}.health"), None, &json!({})))
}

/// `fs.stat` of the 1 MiB file.
fn stat_frame(token: &str, prefix: &str) -> Vec<u8> {
    frame(&request(
        "fs.stat",
        Some(token),
        &json!({"path": format!("{prefix}/blob.txt")}),
    ))
}

/// A connection to identity that issues fs tokens for the served tree.
struct Issuer {
    conn: Conn,
    frame: Vec<u8>,
}

impl Issuer {
    /// Connects to identity's socket. Strata's identity issues to its
    /// administrators (root among them) on their peer credentials, as
    /// `strata-ctl issue` does; the prototype's to anyone.
    ///
    /// # Errors
    ///
    /// Fails when the socket does not accept the connection.
    fn connect(identity: &Path, prefix: &str) -> Res<Issuer> {
        let params = json!({"service":"fs","actions":["open","read","list","stat","close"],
            "path_prefix": prefix, "ttl_seconds": 3600});
        Ok(Issuer {
            conn: Conn::connect(identity)?,
            frame: frame(&request("identity.issue", None, &params)),
        })
    }

    fn issue(&mut self) -> Res<String> {
        let reply = self.conn.call_ok(&self.frame)?;
        let v: serde_json::Value = serde_json::from_slice(reply)?;
        Ok(v["result"]["token"]
            .as_str()
            .ok_or("identity.issue: no token in the result")?
            .to_string())
    }
}

/// Waits until fs knows identity's key, i.e. accepts the token.
fn wait_for_identity_key(fc: &mut Conn, token: &str, prefix: &str) -> Res<()> {
    let stat = stat_frame(token, prefix);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = fc.roundtrip(&stat)?;
        if load::is_ok(reply) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "fs never accepted a token: {}",
                String::from_utf8_lossy(reply)
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Opens `HANDLES` handles on one connection and closes them, with the
/// memory rows of fs on the way; returns how long it took, in words.
fn measure_handle_memory(
    fc: &mut Conn,
    fs_svc: &Activated,
    issuer: &mut Issuer,
    prefix: &str,
    mem: &mut Vec<MemRow>,
) -> Res<String> {
    let tokens: Vec<String> = (0..HANDLES.div_ceil(HANDLES_PER_TOKEN))
        .map(|_| issuer.issue())
        .collect::<Res<_>>()?;
    let path = format!("{prefix}/blob.txt");
    let t0 = Instant::now();
    let mut handles = Vec::with_capacity(HANDLES);
    for i in 0..HANDLES {
        let tok = &tokens[i / HANDLES_PER_TOKEN];
        let reply = fc.call_ok(&frame(&request(
            "fs.open",
            Some(tok),
            &json!({"path": path}),
        )))?;
        let v: serde_json::Value = serde_json::from_slice(reply)?;
        let h = v["result"]["handle"]
            .as_str()
            .ok_or("fs.open: no handle")?
            .to_string();
        handles.push((i / HANDLES_PER_TOKEN, h));
    }
    let open_secs = t0.elapsed().as_secs_f64();
    mem.push(mem_row(fs_svc, "10,000 handles open")?);
    let t0 = Instant::now();
    for (t, h) in &handles {
        fc.call_ok(&frame(&request(
            "fs.close",
            Some(&tokens[*t]),
            &json!({"handle": h}),
        )))?;
    }
    let close_secs = t0.elapsed().as_secs_f64();
    mem.push(mem_row(fs_svc, "10,000 handles closed")?);
    std::thread::sleep(Duration::from_secs(1));
    mem.push(mem_row(fs_svc, "handles closed + 1 s")?);
    let note = format!(
        "10,000 fs.open in {:.2} s ({:.0}/s), 10,000 fs.close in {:.2} s ({:.0}/s), one connection, {} tokens of {} handles",
        open_secs,
        HANDLES as f64 / open_secs,
        close_secs,
        HANDLES as f64 / close_secs,
        tokens.len(),
        HANDLES_PER_TOKEN,
    );
    eprintln!("  {note}");
    Ok(note)
}

/// The service methods to measure on one implementation, less those
/// `--only` leaves out. Opens the handles the reads use: one per
/// connection, as separate clients would have.
///
/// # Errors
///
/// Fails when fs does not open the handles.
fn workloads(o: &Opts, ut: &UnderTest) -> Res<Vec<Workload>> {
    let mut workloads = Vec::new();
    let max_conns = o.conns.iter().copied().max().unwrap_or(1);
    let prefix = &ut.prefix;
    let token = ut.token.as_deref();
    let mut add = |name: &str, service: &str, target: &Endpoint, frames: Vec<Vec<u8>>| {
        let (name, service) = ut.label(name, service);
        workloads.push(Workload {
            name,
            service,
            target: target.clone(),
            frames,
        });
    };
    if let (Some(fs), Some(token)) = (ut.fs.as_ref(), token) {
        let mut fc = Conn::connect(&fs.socket)?;
        let open = frame(&request(
            "fs.open",
            Some(token),
            &json!({"path": format!("{prefix}/blob.txt")}),
        ));
        let mut handles = Vec::new();
        for _ in 0..max_conns {
            let v: serde_json::Value = serde_json::from_slice(fc.call_ok(&open)?)?;
            handles.push(
                v["result"]["handle"]
                    .as_str()
                    .ok_or("no handle")?
                    .to_string(),
            );
        }
        let reads = |size: usize| -> Vec<Vec<u8>> {
            handles
                .iter()
                .map(|h| {
                    frame(&request(
                        "fs.read",
                        Some(token),
                        &json!({"handle": h, "offset": 0, "size": size}),
                    ))
                })
                .collect()
        };
        add("fs.read 4 KiB", "fs", fs, reads(4096));
        add("fs.read 64 KiB", "fs", fs, reads(65536));
        let list = frame(&request(
            "fs.list",
            Some(token),
            &json!({"path": format!("{prefix}/list21")}),
        ));
        add("fs.list 21 entries", "fs", fs, vec![list]);
        if ut.kind == Kind::Strata {
            add("fs.stat", "fs", fs, vec![stat_frame(token, prefix)]);
        }
    }
    if let (Some(identity), Some(token)) = (ut.identity.as_ref(), token) {
        let issue = frame(&request(
            "identity.issue",
            None,
            &json!({"service":"fs","actions":["read"],"path_prefix": prefix, "ttl_seconds": 600}),
        ));
        add("identity.issue", "identity", identity, vec![issue]);
        if ut.kind == Kind::Strata {
            let verify = frame(&request("identity.verify", None, &json!({"token": token})));
            add("identity.verify", "identity", identity, vec![verify]);
        }
    }
    if !o.only.is_empty() {
        workloads.retain(|w| o.only.iter().any(|pat| w.name.contains(pat.as_str())));
    }
    Ok(workloads)
}

/// The closed-loop rows, for each connection count in turn.
///
/// # Errors
///
/// Fails when a row fails (an error reply or a broken connection).
fn measure_load(
    o: &Opts,
    floor: &Endpoint,
    noop: &Endpoint,
    workloads: &[Workload],
) -> Res<Vec<Row>> {
    let mut rows = Vec::new();
    for &conns in &o.conns {
        rows.extend(measure_load_at(o, floor, noop, workloads, conns)?);
    }
    Ok(rows)
}

/// The rows of one connection count: the floor, the no-op server, each
/// workload, and the floor again; each ratio is to the mean of the floor's
/// two samples.
fn measure_load_at(
    o: &Opts,
    floor: &Endpoint,
    noop: &Endpoint,
    workloads: &[Workload],
    conns: usize,
) -> Res<Vec<Row>> {
    let floor_frame = frame(&request("null.echo", None, &json!({})));
    let floor_frames = std::slice::from_ref(&floor_frame);
    let f1 = measure(o, "transport floor", floor, conns, floor_frames)?;
    let noop_row = measure(o, "server loop, no-op service", noop, conns, floor_frames)?;
    let mut svc_rows = Vec::new();
    for w in workloads {
        let r = measure(o, &w.name, &w.target, conns, &w.frames)?;
        svc_rows.push((w, r));
    }
    let f2 = measure(o, "transport floor", floor, conns, floor_frames)?;
    let floor_rps = (f1.rps + f2.rps) / 2.0;
    let mk = |name: &str, service: &str, r: &LoadResult, samples: Vec<f64>| Row {
        name: name.into(),
        service: service.into(),
        conns,
        requests: r.requests,
        secs: r.secs,
        rps: if samples.is_empty() { r.rps } else { floor_rps },
        p50_us: r.p50_us,
        p99_us: r.p99_us,
        ratio_to_floor: if samples.is_empty() {
            r.rps / floor_rps
        } else {
            1.0
        },
        reply_bytes: r.reply_bytes,
        server_cpu_us: r.server_cpu_us,
        client_cpu_us: r.client_cpu_us,
        samples_rps: samples,
    };
    let mut rows = Vec::new();
    // The floor row keeps the first sample's latencies.
    rows.push(mk("transport floor", "floor", &f1, vec![f1.rps, f2.rps]));
    rows.push(mk("server loop, no-op service", "noop", &noop_row, vec![]));
    for (w, r) in &svc_rows {
        rows.push(mk(&w.name, &w.service, r, vec![]));
    }
    Ok(rows)
}

/// Cold activation: systemd holds the socket; a client connects and sends
/// its request while nothing serves it; the service is then started on the
/// socket and the clock stops at the first response.
fn measure_cold_activation(
    o: &Opts,
    stack: &mut Stack,
    issuer: Option<Issuer>,
    token: Option<&str>,
    prefix: &str,
) -> Res<Vec<ColdRow>> {
    let mut cold = Vec::new();
    if let Some(fs_svc) = stack.fs.as_mut() {
        fs_svc.kill();
        cold.push(cold_start(
            fs_svc,
            &health_frame("fs"),
            o.cold_runs,
            "fs: connect → fs.health answered",
        )?);
        if let Some(token) = token {
            cold.push(cold_start(
                fs_svc,
                &stat_frame(token, prefix),
                o.cold_runs,
                "fs: connect → first fs.stat with a token (key fetched from identity)",
            )?);
        }
    }
    if let Some(id_svc) = stack.identity.as_mut() {
        drop(issuer);
        id_svc.kill();
        cold.push(cold_start(
            id_svc,
            &health_frame("identity"),
            o.cold_runs,
            "identity: connect → identity.health answered",
        )?);
    }
    Ok(cold)
}

/// Writes the JSON report to `--json`, creating its directory.
fn write_json(o: &Opts, info: &RunInfo, load_after: &str, r: &Results) -> Res<()> {
    let report = json!({
        "started": info.started,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "mode": if o.quick { "quick" } else { "full" },
        "under_systemd": o.systemd,
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu_model": cpu_model(),
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "loadavg_before": info.load_before,
            "loadavg_after": load_after,
            "nofile_limit": info.nofile,
        },
        "settings": {
            "warmup_ms": o.warmup.as_millis() as u64,
            "measure_secs": o.measure.as_secs_f64(),
            "connections": o.conns,
            "floor_runtime_threads": std::env::var("STRATA_BENCH_THREADS").unwrap_or_else(|_| "2".into()),
        },
        "setup": r.setup,
        "micro": r.micros,
        "load": r.rows,
        "memory": r.mem,
        "handles": r.handle_note,
        "cold_activation": r.cold,
        "goals": r.goals,
    });
    if let Some(dir) = o.json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&o.json, serde_json::to_vec_pretty(&report)?)?;
    eprintln!("wrote {}", o.json.display());
    Ok(())
}

fn start(
    binary: &Path,
    name: &str,
    run_dir: &Path,
    envs: &[(String, String)],
    logs: &Path,
) -> Res<Activated> {
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut a = Activated::bind(binary, name, run_dir, &envs, logs)?;
    a.spawn()?;
    Ok(a)
}

fn measure(
    o: &Opts,
    name: &str,
    server: &Endpoint,
    conns: usize,
    frames: &[Vec<u8>],
) -> Res<LoadResult> {
    let r = load::run(
        &server.socket,
        server.pid,
        conns,
        frames,
        o.warmup,
        o.measure,
    )
    .map_err(|e| format!("{name} at {conns} connections: {e}"))?;
    eprintln!(
        "  {name:<40} {conns:>2} conns {:>10.0} req/s  p50 {:>8.1} µs  p99 {:>8.1} µs  cpu/req server {:>6.1} µs client {:>5.1} µs",
        r.rps, r.p50_us, r.p99_us, r.server_cpu_us, r.client_cpu_us
    );
    Ok(r)
}

fn mem_row(p: &Activated, state: &str) -> Res<MemRow> {
    let pid = p
        .pid()
        .ok_or_else(|| format!("{} is not running", p.name))?;
    mem_row_of(&p.name, pid, state)
}

/// The memory row of process `pid`, shown as `name`.
///
/// # Errors
///
/// Fails when the process is gone.
fn mem_row_of(name: &str, pid: u32, state: &str) -> Res<MemRow> {
    let (rss, hwm) = spawn::rss_kib(pid)?;
    Ok(MemRow {
        process: name.into(),
        state: state.into(),
        rss_kib: rss,
        hwm_kib: hwm,
    })
}

fn cold_start(svc: &mut Activated, first: &[u8], runs: usize, name: &str) -> Res<ColdRow> {
    let mut times = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        let mut c = Conn::connect(&svc.socket)?;
        // The request waits in the socket buffer of a connection that waits
        // in the listen backlog, as under systemd before the service runs.
        std::io::Write::write_all(&mut c.stream, first)?;
        svc.spawn()?;
        let mut header = [0u8; 4];
        std::io::Read::read_exact(&mut c.stream, &mut header).map_err(|e| {
            format!(
                "{name}: no response ({e}); see {}",
                svc.log_path().display()
            )
        })?;
        let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
        std::io::Read::read_exact(&mut c.stream, &mut payload)?;
        let el = t0.elapsed();
        if !load::is_ok(&payload) {
            return Err(format!("{name}: {}", String::from_utf8_lossy(&payload)).into());
        }
        times.push(el.as_secs_f64() * 1000.0);
        svc.check_alive()?;
        svc.kill();
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let row = ColdRow {
        name: name.into(),
        runs,
        min_ms: sorted[0],
        p50_ms: sorted[(sorted.len() - 1) / 2],
        max_ms: sorted[sorted.len() - 1],
    };
    eprintln!(
        "  cold {name}: p50 {:.2} ms, max {:.2} ms",
        row.p50_ms, row.max_ms
    );
    Ok(row)
}

fn find<'a>(rows: &'a [Row], name: &str, conns: usize) -> Option<&'a Row> {
    rows.iter().find(|r| r.name == name && r.conns == conns)
}

/// The goals of issue 12 at 16 connections, judged on the rows of this one
/// run, and the memory and cold-activation goals when the run has those
/// rows. A goal against the prototype is not judged (`met: None`) unless
/// the prototype was measured in the same run.
fn goals(rows: &[Row], mem: &[MemRow], cold: &[ColdRow]) -> Vec<Goal> {
    let mut g = Vec::new();
    for name in ["fs.read 4 KiB", "fs.list 21 entries"] {
        if let Some(r) = find(rows, name, 16) {
            g.push(Goal {
                goal: format!("{name} at 16 conns ≥ 0.50 × the floor"),
                measured: format!("{:.0}/s = {:.2} × the floor", r.rps, r.ratio_to_floor),
                met: Some(r.ratio_to_floor >= 0.50),
            });
        }
    }
    for (name, times) in [("fs.read 64 KiB", 5.0)] {
        let Some(r) = find(rows, name, 16) else {
            continue;
        };
        let goal = format!("{name} at 16 conns ≥ {times} × the prototype");
        g.push(match find(rows, &format!("{name}{PROTOTYPE_SUFFIX}"), 16) {
            Some(p) => Goal {
                goal,
                measured: format!(
                    "{:.0}/s = {:.1} × the prototype's {:.0}/s",
                    r.rps,
                    r.rps / p.rps,
                    p.rps
                ),
                met: Some(r.rps >= p.rps * times),
            },
            None => Goal {
                goal,
                measured: format!("{:.0}/s; prototype not measured (no --prototype)", r.rps),
                met: None,
            },
        });
    }
    if let Some(r) = find(rows, "identity.issue", 16) {
        g.push(Goal {
            goal: "identity.issue at 16 conns ≥ 40,000/s".into(),
            measured: format!("{:.0}/s", r.rps),
            met: Some(r.rps >= 40_000.0),
        });
    }
    for m in mem
        .iter()
        .filter(|m| m.state == "idle" && SERVICES.contains(&m.process.as_str()))
    {
        g.push(Goal {
            goal: format!("{} idle RSS ≤ 5 MiB", m.process),
            measured: format!("{:.2} MiB", m.rss_kib as f64 / 1024.0),
            met: Some(m.rss_kib <= 5 * 1024),
        });
    }
    let idle = mem.iter().find(|m| m.process == "fs" && m.state == "idle");
    let closed = mem
        .iter()
        .find(|m| m.process == "fs" && m.state == "handles closed + 1 s");
    if let (Some(i), Some(c)) = (idle, closed) {
        let ratio = c.rss_kib as f64 / i.rss_kib as f64;
        g.push(Goal {
            goal: "fs RSS after 10,000 handles closed within 20% of idle".into(),
            measured: format!(
                "{:.2} MiB = {:+.0}% of idle",
                c.rss_kib as f64 / 1024.0,
                (ratio - 1.0) * 100.0
            ),
            met: Some(ratio <= 1.2),
        });
    }
    for c in cold.iter().filter(|c| c.name.contains("health")) {
        g.push(Goal {
            goal: format!("cold activation ≤ 20 ms ({})", c.name),
            measured: format!("p50 {:.1} ms, max {:.1} ms", c.p50_ms, c.max_ms),
            met: Some(c.max_ms <= 20.0),
        });
    }
    g
}

/// The memory rows the RSS goal applies to: Strata's services, by the name
/// either mode gives them.
const SERVICES: [&str; 3] = ["identity", "fs", "supervisor"];

fn print_report(r: &Results) {
    let Results {
        setup: _,
        micros,
        rows,
        mem,
        handle_note,
        cold,
        goals,
    } = r;
    println!();
    println!(
        "{:<40} {:>5} {:>11} {:>9} {:>9} {:>8} {:>8} {:>10} {:>10}",
        "closed loop",
        "conns",
        "req/s",
        "p50 µs",
        "p99 µs",
        "× floor",
        "reply B",
        "srv cpu µs",
        "cli cpu µs"
    );
    for r in rows {
        println!(
            "{:<40} {:>5} {:>11.0} {:>9.1} {:>9.1} {:>8.3} {:>8} {:>10.1} {:>10.1}",
            r.name,
            r.conns,
            r.rps,
            r.p50_us,
            r.p99_us,
            r.ratio_to_floor,
            r.reply_bytes,
            r.server_cpu_us,
            r.client_cpu_us
        );
    }
    print_prototype_ratios(rows);
    if !micros.is_empty() {
        println!();
        println!("{:<58} {:>11} {:>12}", "microbenchmark", "ns/op", "ops/s");
        for m in micros {
            println!(
                "{:<58} {:>11.0} {:>12.0}",
                m.name, m.ns_per_op, m.ops_per_sec
            );
        }
    }
    println!();
    println!(
        "{:<20} {:<24} {:>10} {:>10}",
        "memory", "state", "RSS MiB", "HWM MiB"
    );
    for m in mem {
        println!(
            "{:<20} {:<24} {:>10.2} {:>10.2}",
            m.process,
            m.state,
            m.rss_kib as f64 / 1024.0,
            m.hwm_kib as f64 / 1024.0
        );
    }
    if !handle_note.is_empty() {
        println!("({handle_note})");
    }
    if !cold.is_empty() {
        println!();
        println!(
            "{:<70} {:>4} {:>8} {:>8} {:>8}",
            "cold activation", "runs", "min ms", "p50 ms", "max ms"
        );
        for c in cold {
            println!(
                "{:<70} {:>4} {:>8.2} {:>8.2} {:>8.2}",
                c.name, c.runs, c.min_ms, c.p50_ms, c.max_ms
            );
        }
    }
    println!();
    println!("goals");
    for g in goals {
        let verdict = match g.met {
            Some(true) => "met    ",
            Some(false) => "MISSED ",
            None => "not run",
        };
        println!("  [{verdict}] {} — {}", g.goal, g.measured);
    }
}

/// Each Strata row over the prototype's row of the same workload and
/// connection count, or a plain line saying the prototype was not measured.
fn print_prototype_ratios(rows: &[Row]) {
    println!();
    let pairs: Vec<(&Row, &Row)> = rows
        .iter()
        .filter_map(|p| {
            let name = p.name.strip_suffix(PROTOTYPE_SUFFIX)?;
            Some((find(rows, name, p.conns)?, p))
        })
        .collect();
    if pairs.is_empty() {
        println!("prototype: not measured in this run (no --prototype DIR); comparison skipped");
        return;
    }
    println!(
        "{:<40} {:>5} {:>11} {:>11} {:>12}",
        "Strata / prototype (same run)", "conns", "Strata/s", "proto/s", "× prototype"
    );
    for (s, p) in pairs {
        println!(
            "{:<40} {:>5} {:>11.0} {:>11.0} {:>12.2}",
            s.name,
            s.conns,
            s.rps,
            p.rps,
            s.rps / p.rps
        );
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> Opts {
        let a = Args::try_parse_from(std::iter::once("strata-bench").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        Opts::from_args(a).unwrap()
    }

    #[test]
    fn command_is_consistent() {
        <Args as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let o = opts(&[]);
        assert!(!o.quick);
        assert_eq!(o.json, PathBuf::from("target/strata-bench.json"));
        assert_eq!(o.warmup, Duration::from_millis(500));
        assert_eq!(o.measure, Duration::from_secs(3));
        assert_eq!(o.cold_runs, 20);
        assert_eq!(o.conns, vec![1, 16]);
        assert!(o.only.is_empty() && o.log.is_none());
        assert!(!o.skip_fs && !o.skip_identity);
        let exe = std::env::current_exe().unwrap();
        assert_eq!(o.bin_dir, exe.parent().unwrap());
    }

    /// The invocations of scripts/test-all.sh, package.nix and the docs.
    #[test]
    fn documented_invocations() {
        let o = opts(&["--quick", "--json", "target/strata-bench-quick.json"]);
        assert!(o.quick);
        assert_eq!(o.json, PathBuf::from("target/strata-bench-quick.json"));
        assert_eq!(o.warmup, Duration::from_millis(50));
        assert_eq!(o.measure, Duration::from_millis(200));
        assert_eq!(o.cold_runs, 3);

        let o = opts(&[
            "--bin-dir",
            "/nix/store/x/bin",
            "--only",
            "fs.list",
            "--secs",
            "3",
        ]);
        assert_eq!(o.bin_dir, PathBuf::from("/nix/store/x/bin"));
        assert_eq!(o.only, vec!["fs.list"]);
        assert_eq!(o.measure, Duration::from_secs(3));

        let o = opts(&["--only", "fs.list,fs.read"]);
        assert_eq!(o.only, vec!["fs.list", "fs.read"]);
        let o = opts(&["--only", "fs.read,issue"]);
        assert_eq!(o.only, vec!["fs.read", "issue"]);
    }

    #[test]
    fn old_parser_quirks_kept() {
        // --secs and --cold win over --quick, in any order; --cold is at least 1.
        let o = opts(&["--secs", "0.5", "--cold", "0", "--quick"]);
        assert_eq!(o.measure, Duration::from_millis(500));
        assert_eq!(o.warmup, Duration::from_millis(50));
        assert_eq!(o.cold_runs, 1);
        // Lists are trimmed; a later list replaces an earlier one.
        let o = opts(&["--conns", "2, 8", "--only", " fs.stat , issue"]);
        assert_eq!(o.conns, vec![2, 8]);
        assert_eq!(o.only, vec!["fs.stat", "issue"]);
        let o = opts(&[
            "--conns", "1,16", "--conns", "4", "--json", "a", "--json", "b",
        ]);
        assert_eq!(o.conns, vec![4]);
        assert_eq!(o.json, PathBuf::from("b"));
        // identity implies fs; --skip adds up.
        let o = opts(&["--skip", "identity"]);
        assert!(o.skip_fs && o.skip_identity);
        let o = opts(&["--skip", "fs"]);
        assert!(o.skip_fs && !o.skip_identity);
        let o = opts(&["--skip", "fs", "--skip", "identity"]);
        assert!(o.skip_fs && o.skip_identity);
        let o = opts(&["--skip", "identity", "--skip", "fs", "--quick", "--quick"]);
        assert!(o.skip_fs && o.skip_identity);
        let o = opts(&["--log", "debug,strata=trace"]);
        assert_eq!(o.log.as_deref(), Some("debug,strata=trace"));
    }

    #[test]
    fn systemd_mode_defaults_to_16_connections_and_takes_a_prototype() {
        let o = opts(&["--systemd"]);
        assert!(o.systemd && o.prototype.is_none());
        assert_eq!(o.conns, vec![16]);
        let o = opts(&[
            "--systemd",
            "--quick",
            "--prototype",
            "/opt/strata-prototype",
            "--conns",
            "1,16",
        ]);
        assert_eq!(o.prototype, Some(PathBuf::from("/opt/strata-prototype")));
        assert_eq!(o.conns, vec![1, 16]);
        assert_eq!(o.measure, Duration::from_millis(200));
        // package.nix's wrapper adds --bin-dir, which --systemd ignores.
        let o = opts(&["--bin-dir", "/nix/store/x/bin", "--systemd"]);
        assert!(o.systemd);
        // The outside mode takes the prototype too, and keeps its defaults.
        let o = opts(&["--prototype", "target/prototype"]);
        assert!(!o.systemd);
        assert_eq!(o.conns, vec![1, 16]);
    }

    #[test]
    fn systemd_mode_refuses_the_options_of_services_it_does_not_start() {
        for bad in [
            &["--systemd", "--skip", "fs"][..],
            &["--systemd", "--log", "warn"],
            &["--systemd", "--cold", "3"],
        ] {
            let e =
                Args::try_parse_from(std::iter::once("strata-bench").chain(bad.iter().copied()))
                    .expect_err(&format!("{bad:?} parsed"));
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }

    fn row(name: &str, rps: f64, ratio_to_floor: f64) -> Row {
        Row {
            name: name.into(),
            service: String::new(),
            conns: 16,
            requests: 1,
            secs: 1.0,
            rps,
            p50_us: 0.0,
            p99_us: 0.0,
            ratio_to_floor,
            reply_bytes: 0,
            server_cpu_us: 0.0,
            client_cpu_us: 0.0,
            samples_rps: Vec::new(),
        }
    }

    fn verdict<'a>(goals: &'a [Goal], starts: &str) -> &'a Goal {
        goals
            .iter()
            .find(|g| g.goal.starts_with(starts))
            .unwrap_or_else(|| panic!("no goal {starts:?}"))
    }

    #[test]
    fn prototype_goals_are_judged_only_on_the_same_run() {
        let mut rows = vec![
            row("fs.read 4 KiB", 50_000.0, 0.51),
            row("fs.read 64 KiB", 20_000.0, 0.2),
            row("fs.list 21 entries", 40_000.0, 0.49),
        ];
        let g = goals(&rows, &[], &[]);
        assert_eq!(verdict(&g, "fs.read 4 KiB").met, Some(true));
        assert_eq!(
            verdict(&g, "fs.list 21 entries at 16 conns ≥ 0.50").met,
            Some(false)
        );
        let read64 = verdict(&g, "fs.read 64 KiB");
        assert_eq!(read64.met, None);
        assert!(read64.measured.contains("prototype not measured"));

        rows.push(row("fs.read 64 KiB (prototype)", 4_100.0, 0.04));
        let g = goals(&rows, &[], &[]);
        assert_eq!(verdict(&g, "fs.read 64 KiB").met, Some(false), "4.9×");
        rows.retain(|r| r.name != "fs.read 64 KiB (prototype)");
        rows.push(row("fs.read 64 KiB (prototype)", 3_900.0, 0.04));
        let g = goals(&rows, &[], &[]);
        assert_eq!(verdict(&g, "fs.read 64 KiB").met, Some(true), "5.1×");
    }

    #[test]
    fn the_rss_goal_covers_each_service_in_either_mode() {
        let mem = |process: &str, kib: u64| MemRow {
            process: process.into(),
            state: "idle".into(),
            rss_kib: kib,
            hwm_kib: kib,
        };
        let g = goals(
            &[],
            &[
                mem("identity", 4000),
                mem("fs", 6000),
                mem("supervisor", 5120),
                mem("floor", 9000),
                mem("prototype fs", 9000),
            ],
            &[],
        );
        let rss: Vec<(&str, Option<bool>)> = g.iter().map(|g| (g.goal.as_str(), g.met)).collect();
        assert_eq!(
            rss,
            vec![
                ("identity idle RSS ≤ 5 MiB", Some(true)),
                ("fs idle RSS ≤ 5 MiB", Some(false)),
                ("supervisor idle RSS ≤ 5 MiB", Some(true)),
            ]
        );
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        for bad in [
            &["--skip", "cache"][..],
            &["--conns", "1,x"],
            &["--conns", "0"],
            &["--prototype"],
            &["--secs", "-1"],
            &["--secs", "soon"],
            &["--cold", "-3"],
            &["--frobnicate"],
            &["--json"],
        ] {
            let e =
                Args::try_parse_from(std::iter::once("strata-bench").chain(bad.iter().copied()))
                    .expect_err(&format!("{bad:?} parsed"));
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }
}
