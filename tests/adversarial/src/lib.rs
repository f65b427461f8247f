//! The harness of the hostile-client suite (tests in `tests/`): the real
//! `strata-identity` and `strata-fs` binaries, started as systemd would
//! (listening socket on fd 3, `LISTEN_FDS`/`LISTEN_PID`, `NOTIFY_SOCKET`),
//! a directory tree full of ways out of the prefix, secrets whose content
//! and names must never appear in any answer, raw-frame helpers, a token
//! forger holding identity's real key, and a reader of a service's RSS.
//!
//! The binaries must be built first: `cargo build --workspace` (which
//! `cargo test --workspace` does).
//!
//! Layout of a stack's directory:
//!
//! ```text
//! run/                 STRATA_RUNTIME_DIR: identity.sock, fs.sock
//! state/               identity's STRATA_STATE_DIR (signing.key)
//! srv/                 STRATA_FS_ROOTS
//!   data/              the prefix tokens are issued for (Stack::data)
//!   data2/             a sibling prefix, holding a secret
//!   database/          a string-prefix sibling ("/srv/data" + "base")
//!   to-outside ->../outside   a symlink inside the root leaving it
//! outside/             beyond the roots, holding a secret
//! ```

use std::io::{Read, Write};
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};
use strata_shared::client::Client;
use strata_shared::token;
use strata_shared::wire::{self, Response};
pub use strata_testkit::start_fs;
use strata_testkit::{start_identity, ActivatedService};

/// The content of every file outside the prefix.
pub const SECRET: &str = "STRATA-ADVERSARIAL-SECRET-CONTENT-7f3a91";
/// The name of files outside the prefix: a listing must never show it.
pub const SECRET_NAME: &str = "hidden-name-c0ffee";
/// The content of the ordinary file inside the prefix.
pub const INSIDE: &str = "inside content";

/// identity, and fs when asked for, in one temporary directory.
pub struct Stack {
    pub identity: ActivatedService,
    pub fs: Option<ActivatedService>,
    pub dir: tempfile::TempDir,
}

/// A token and its capability id.
#[derive(Clone, Debug)]
pub struct Token {
    pub token: String,
    pub cap_id: String,
}

impl Stack {
    /// identity alone, with extra environment.
    pub fn identity_only(envs: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let identity = start_identity(dir.path(), envs);
        Self {
            identity,
            fs: None,
            dir,
        }
    }

    /// identity and fs (fs with the extra `fs_envs`), over the tree
    /// described in the crate documentation; returns once fs is in step
    /// with identity.
    pub fn with_fs(fs_envs: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        build_tree(dir.path());
        let identity = start_identity(dir.path(), &[]);
        let fs = start_fs(dir.path(), fs_envs);
        let s = Self {
            identity,
            fs: Some(fs),
            dir,
        };
        s.wait_synced();
        s
    }

    pub fn base(&self) -> &Path {
        self.dir.path()
    }

    /// `<base>/<rel>` as a string.
    pub fn path(&self, rel: &str) -> String {
        self.base().join(rel).to_str().unwrap().to_string()
    }

    /// The prefix most tests grant: `<base>/srv/data`.
    pub fn data(&self) -> String {
        self.path("srv/data")
    }

    pub fn fs(&self) -> &ActivatedService {
        self.fs.as_ref().expect("stack without fs")
    }

    pub fn fs_client(&self) -> Client {
        Client::connect(&self.fs().socket).unwrap()
    }

    pub fn identity_client(&self) -> Client {
        Client::connect(&self.identity.socket).unwrap()
    }

    /// Issues a token through identity (the test runs as root, an admin).
    pub fn issue(&self, service: &str, actions: &[&str], prefix: Option<&str>, ttl: u64) -> Token {
        let mut params = json!({"service": service, "actions": actions, "ttl_seconds": ttl});
        if let Some(p) = prefix {
            params["path_prefix"] = json!(p);
        }
        let r = ok(self
            .identity_client()
            .call("identity.issue", None, &params)
            .unwrap());
        Token {
            token: r["token"].as_str().unwrap().into(),
            cap_id: r["cap_id"].as_str().unwrap().into(),
        }
    }

    /// An fs token for the usual prefix with every fs action.
    pub fn fs_token(&self) -> Token {
        self.issue(
            "fs",
            &["open", "read", "list", "stat", "close"],
            Some(&self.data()),
            600,
        )
    }

    /// identity's real signing key, read from its state directory (the
    /// tests run as root, as an attacker who stole the key would).
    pub fn forger(&self) -> Forger {
        let text = std::fs::read_to_string(self.base().join("state/signing.key")).unwrap();
        let seed: [u8; 32] = STANDARD
            .decode(text.trim())
            .unwrap()
            .try_into()
            .expect("32-byte seed");
        Forger::new(&seed)
    }

    pub fn wait_synced(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let h = ok(self
                .fs_client()
                .call("fs.health", None, &json!({}))
                .unwrap());
            if h["identity"] == "synced" {
                return;
            }
            assert!(Instant::now() < deadline, "fs never synced: {h}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Builds the tree: secrets outside, and inside the prefix a link of every
/// kind pointing at them.
pub fn build_tree(base: &Path) {
    let w = |rel: &str, content: &str| {
        let p = base.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    };
    w("srv/data/inside.txt", INSIDE);
    w("srv/data/sub/deeper.txt", INSIDE);
    w("srv/data/sub/dir/leaf.txt", INSIDE);
    w(&format!("srv/data2/{SECRET_NAME}"), SECRET);
    w(&format!("srv/database/{SECRET_NAME}"), SECRET);
    w(&format!("srv/{SECRET_NAME}"), SECRET);
    w(&format!("outside/{SECRET_NAME}"), SECRET);
    w(&format!("outside/dir/{SECRET_NAME}"), SECRET);
    w("outside/dir/shared-name", SECRET);
    let outside = base.join("outside");
    let secret = outside.join(SECRET_NAME);
    let d = base.join("srv/data");
    let links: Vec<(PathBuf, &str)> = vec![
        (secret.clone(), "abs-escape"),
        (format!("../../outside/{SECRET_NAME}").into(), "rel-escape"),
        (format!("../data2/{SECRET_NAME}").into(), "sibling-escape"),
        ("rel-escape".into(), "chain1"),
        ("chain1".into(), "chain2"),
        ("sub/../chain2".into(), "chain3"),
        ("../../outside".into(), "dir-escape"),
        (outside.clone(), "abs-dir-escape"),
        ("/".into(), "root-link"),
        ("..".into(), "dotdot-link"),
        ("../..".into(), "sub/up2"),
        ("..".into(), "sub/up1"),
        ("self-loop".into(), "self-loop"),
        ("sub/deeper.txt".into(), "inner-link"),
        ("sub".into(), "inner-dir-link"),
        (
            format!("/proc/self/root{}", secret.display()).into(),
            "magic-root",
        ),
        ("/proc/self/cwd".into(), "magic-cwd"),
        ("/proc/self/fd/3".into(), "magic-fd3"),
        ("/proc/self/fd".into(), "magic-fd-dir"),
        ("/proc/self/exe".into(), "magic-exe"),
        ("/proc/thread-self/root/etc/passwd".into(), "magic-thread"),
        ("/proc/1/root/etc/passwd".into(), "magic-pid1"),
    ];
    for (target, name) in links {
        symlink(target, d.join(name)).unwrap();
    }
    // A symlink inside the root that leaves it: a token whose prefix names
    // it must not serve the outside.
    symlink("../outside", base.join("srv/to-outside")).unwrap();
    // identity's socket directory must be reachable by other uids in tests
    // that switch uid.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Signs arbitrary claims with a key: identity's own (see
/// [`Stack::forger`]) or any other.
pub struct Forger {
    pub kp: ed25519_compact::KeyPair,
    pub kid: String,
}

impl Forger {
    pub fn new(seed: &[u8; 32]) -> Self {
        let kp = token::keypair_from_seed(seed);
        let kid = token::key_id(&kp.pk);
        Self { kp, kid }
    }

    /// Standard claims for an fs capability, valid now, for `prefix`.
    pub fn claims(&self, prefix: &str, actions: &[&str]) -> Value {
        let now = strata_shared::capability::now();
        json!({
            "jti": strata_shared::random::id128(),
            "sub": "capability",
            "iat": strata_shared::capability::format_time(now - 5),
            "exp": strata_shared::capability::format_time(now + 600),
            "service": "fs",
            "actions": actions,
            "constraints": {"path_prefix": prefix},
        })
    }

    /// Signs `payload` with the `kid` footer of this key.
    pub fn sign(&self, payload: &[u8]) -> String {
        let footer = format!(r#"{{"kid":"{}"}}"#, self.kid);
        token::sign(&self.kp.sk, payload, footer.as_bytes())
    }

    /// Signs `payload` with any footer (empty: none).
    pub fn sign_with_footer(&self, payload: &[u8], footer: &[u8]) -> String {
        token::sign(&self.kp.sk, payload, footer)
    }

    pub fn sign_claims(&self, claims: &Value) -> String {
        self.sign(&serde_json::to_vec(claims).unwrap())
    }
}

/// The base64url body of a token, for tests that rewrap it.
pub fn token_body(t: &str) -> &str {
    t.split('.').nth(2).unwrap()
}

/// Decodes a base64url string (for footers in tests).
pub fn b64url(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

pub fn ok(resp: Response) -> Value {
    assert!(resp.ok, "expected ok, got {resp:?}");
    resp.result.unwrap()
}

pub fn code(resp: &Response) -> u16 {
    assert!(!resp.ok, "expected an error, got {resp:?}");
    resp.error.as_ref().unwrap().code
}

/// Every spelling of the secrets an answer might carry: the text itself,
/// its name, and its base64 at each alignment (for `data_b64`).
pub fn leak_markers() -> Vec<String> {
    let mut m = vec![SECRET.to_string(), SECRET_NAME.to_string()];
    for skip in 0..3 {
        let enc = STANDARD.encode(&SECRET.as_bytes()[skip..]);
        // Drop the last block, which depends on what follows.
        m.push(enc[..enc.len() - 4].to_string());
    }
    m
}

/// Panics if `answer` carries a secret that `request` did not (an error
/// message may echo the path that was asked for, which is no leak).
pub fn assert_no_leak(request: &str, answer: &str) {
    for marker in leak_markers() {
        if answer.contains(&marker) && !request.contains(&marker) {
            panic!("LEAK: the answer to {request} carries {marker:?}: {answer}");
        }
    }
}

/// One call whose answer must not leak; returns the response.
pub fn call_checked(c: &mut Client, method: &str, token: Option<&str>, params: Value) -> Response {
    let request = format!("{method} {params}");
    let resp = c.call(method, token, &params).unwrap();
    assert_no_leak(&request, &serde_json::to_string(&resp).unwrap());
    resp
}

/// Like [`call_checked`], and if it is an open that succeeded, also reads
/// the handle so that a wrongful success shows what it let through.
pub fn refused(c: &mut Client, t: &Token, method: &str, path: &str, want: &[u16]) -> u16 {
    let resp = call_checked(c, method, Some(&t.token), json!({"path": path}));
    if resp.ok {
        let mut detail = serde_json::to_string(&resp).unwrap();
        if let Some(h) = resp.result.as_ref().and_then(|r| r["handle"].as_str()) {
            let r = c
                .call("fs.read", Some(&t.token), &json!({"handle": h}))
                .unwrap();
            detail.push_str(&format!(
                " then read: {}",
                serde_json::to_string(&r).unwrap()
            ));
        }
        panic!("{method} {path:?} should be refused but succeeded: {detail}");
    }
    let got = resp.error.as_ref().unwrap().code;
    assert!(
        want.contains(&got),
        "{method} {path:?}: code {got}, expected one of {want:?}: {resp:?}"
    );
    got
}

/// A raw connection for misbehaving clients.
pub fn raw(socket: &Path) -> UnixStream {
    let s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Writes one frame holding `payload`.
pub fn send_frame(s: &mut UnixStream, payload: &[u8]) {
    let mut buf = Vec::with_capacity(payload.len() + 4);
    wire::encode_frame(payload, &mut buf);
    s.write_all(&buf).unwrap();
}

/// Reads one response frame; `None` on a clean close.
pub fn read_response(s: &mut UnixStream) -> Option<Response> {
    wire::read_frame_blocking(s)
        .unwrap()
        .map(|f| Response::parse(&f).unwrap())
}

/// True when the peer has closed the connection (EOF on read; anything
/// still unread is drained first).
pub fn closed_by_peer(s: &mut UnixStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
        if Instant::now() > deadline {
            return false;
        }
    }
}

/// The resident set size of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Open descriptors of `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Raises this process's open-file limit (children inherit it) to at least
/// `want`, as far as the hard limit (root may raise that too).
#[allow(unsafe_code)]
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read only the struct given.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < want {
            let new = libc::rlimit {
                rlim_cur: want.max(lim.rlim_cur),
                rlim_max: want.max(lim.rlim_max),
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &new) != 0 {
                let capped = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &capped);
            }
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// A health request on `c` answers ok: the service is still serving.
pub fn still_serving(socket: &Path, method: &str) {
    let mut c = Client::connect(socket).expect("connect after abuse");
    c.set_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = c
        .call(method, None, &json!({}))
        .expect("health after abuse");
    assert!(r.ok, "{method} after abuse: {r:?}");
}

/// Runs one request as `uid` (and the same gid) in a child process: see
/// [`strata_testkit::call_as`].
pub fn call_as(
    uid: u32,
    child_test: &str,
    socket: &Path,
    method: &str,
    token: Option<&str>,
    params: Value,
) -> Response {
    strata_testkit::call_as(uid, uid, child_test, socket, method, token, params)
}

pub use strata_testkit::child_request;

/// Runs `f` on a thread whose credentials are switched to `uid` (and gid
/// `uid`, no supplementary groups) with the raw system calls: glibc's
/// wrappers would switch every thread. The kernel records the connecting
/// thread's credentials, and descriptors opened there stay usable from any
/// thread afterwards. Needs root.
#[allow(unsafe_code)]
pub fn on_thread_as<T: Send + 'static>(uid: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: plain system calls on this thread's own credentials; the
        // thread ends with them, so no other code runs as `uid`.
        let rc = unsafe {
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>())
                | libc::syscall(libc::SYS_setresgid, uid, uid, uid)
                | libc::syscall(libc::SYS_setresuid, uid, uid, uid)
        };
        assert_eq!(
            rc,
            0,
            "cannot switch this thread to uid {uid}: {}",
            std::io::Error::last_os_error()
        );
        f()
    })
    .join()
    .expect("thread with switched credentials")
}

/// Runs `f` as an ordinary user: directly when the tests are not root, on
/// a thread switched to an unused uid when they are (root is privileged).
pub fn as_ordinary_user<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    if strata_testkit::euid() == "0" {
        on_thread_as(61_099, f)
    } else {
        f()
    }
}

/// Opens `n` connections to `socket` as `uid`, each asking `health` once.
/// Returns the connections that were served, and the response of the first
/// one that was refused, if any (it is closed). Needs root.
pub fn connect_as(
    uid: u32,
    socket: &Path,
    health: &str,
    n: usize,
) -> (Vec<UnixStream>, Option<Response>) {
    let socket = socket.to_path_buf();
    let health = health.to_string();
    on_thread_as(uid, move || {
        let mut held = Vec::with_capacity(n);
        for i in 0..n {
            let mut c = raw(&socket);
            let mut frame = Vec::new();
            let p = format!(r#"{{"v":1,"req_id":{i},"method":"{health}"}}"#);
            wire::encode_frame(p.as_bytes(), &mut frame);
            // A refused connection may be closed before the request is
            // written; its answer is read all the same.
            let _ = c.write_all(&frame);
            match read_response(&mut c) {
                Some(r) if r.ok => held.push(c),
                Some(r) => return (held, Some(r)),
                None => panic!("uid {uid}: connection {i} closed without an answer"),
            }
        }
        (held, None)
    })
}
