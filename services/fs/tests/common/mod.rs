//! The stack the fs integration tests run against: the real
//! `strata-identity` and `strata-fs` binaries, each started as systemd
//! would (listening socket on fd 3, `LISTEN_FDS`/`LISTEN_PID`,
//! `NOTIFY_SOCKET`), in one temporary directory.
//!
//! Layout of that directory:
//!
//! ```text
//! run/            STRATA_RUNTIME_DIR: identity.sock, fs.sock
//! state/          identity's STRATA_STATE_DIR
//! srv/            STRATA_FS_ROOTS
//!   data/         the usual token prefix (see `Stack::data`)
//!   data2/        a sibling that must stay out of reach
//! outside/        beyond the roots
//! ```

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strata_shared::client::Client;
use strata_shared::wire::Response;
use strata_testkit::{start_identity, ActivatedService};

pub struct Stack {
    pub identity: ActivatedService,
    pub fs: ActivatedService,
    pub dir: tempfile::TempDir,
}

/// A token and its capability id.
pub struct Token {
    pub token: String,
    pub cap_id: String,
}

impl Stack {
    /// identity and fs, fs with the extra `fs_envs`; returns once fs has
    /// sent READY=1 and is in step with identity.
    pub fn start(fs_envs: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        for d in ["srv/data", "srv/data2", "outside"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        let identity = start_identity(base, &[]);
        let fs = start_fs(base, fs_envs);
        let stack = Self { identity, fs, dir };
        stack.wait_synced();
        stack
    }

    pub fn base(&self) -> &Path {
        self.dir.path()
    }

    /// `<base>/srv/data` as a string: the prefix most tests grant.
    pub fn data(&self) -> String {
        self.path("srv/data")
    }

    /// `<base>/<rel>` as a string.
    pub fn path(&self, rel: &str) -> String {
        self.base().join(rel).to_str().unwrap().to_string()
    }

    pub fn fs_client(&self) -> Client {
        Client::connect(&self.fs.socket).unwrap()
    }

    pub fn identity_client(&self) -> Client {
        Client::connect(&self.identity.socket).unwrap()
    }

    /// Issues an fs token (as root, an administrator).
    pub fn issue(&self, actions: &[&str], prefix: &str, ttl: u64) -> Token {
        self.issue_for("fs", actions, Some(prefix), ttl)
    }

    pub fn issue_for(
        &self,
        service: &str,
        actions: &[&str],
        prefix: Option<&str>,
        ttl: u64,
    ) -> Token {
        let mut params = json!({"service": service, "actions": actions, "ttl_seconds": ttl});
        if let Some(p) = prefix {
            params["path_prefix"] = json!(p);
        }
        self.issue_with(params)
    }

    /// Issues a token with `identity.issue` parameters `params`.
    pub fn issue_with(&self, params: Value) -> Token {
        let r = ok(self
            .identity_client()
            .call("identity.issue", None, &params)
            .unwrap());
        Token {
            token: r["token"].as_str().unwrap().to_string(),
            cap_id: r["cap_id"].as_str().unwrap().to_string(),
        }
    }

    /// Revokes a capability and returns when identity has acknowledged it.
    pub fn revoke(&self, cap_id: &str) {
        let r = ok(self
            .identity_client()
            .call("identity.revoke", None, &json!({"cap_id": cap_id}))
            .unwrap());
        assert_eq!(r["status"], "revoked");
    }

    /// Waits until fs.health says identity is synced.
    pub fn wait_synced(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let h = ok(self
                .fs_client()
                .call("fs.health", None, &json!({}))
                .unwrap());
            if h["identity"] == "synced" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "fs never synced with identity: {h}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills fs and starts it again on the same socket, as systemd's
    /// `Restart=` would; returns once it is ready and synced.
    pub fn restart_fs(&mut self) {
        self.fs.restart().unwrap();
        self.fs
            .wait_notify("READY=1", Duration::from_secs(10))
            .unwrap();
        self.wait_synced();
    }

    /// Kills identity and starts it again on the same socket.
    pub fn restart_identity(&mut self) {
        self.identity.restart().unwrap();
        self.identity
            .wait_notify("READY=1", Duration::from_secs(10))
            .unwrap();
    }

    /// Writes a file under the base directory.
    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> String {
        let p = self.base().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p.to_str().unwrap().to_string()
    }
}

pub use strata_testkit::start_fs;

pub fn ok(resp: Response) -> Value {
    assert!(resp.ok, "expected ok, got {resp:?}");
    resp.result.unwrap()
}

/// The error code of a failed response (panics on success).
pub fn code(resp: Response) -> u16 {
    assert!(!resp.ok, "expected an error, got {resp:?}");
    resp.error.unwrap().code
}

/// The error of a failed response.
pub fn error(resp: Response) -> (u16, String) {
    assert!(!resp.ok, "expected an error, got {resp:?}");
    let e = resp.error.unwrap();
    (e.code, e.message)
}

/// One call on a client.
pub fn call(c: &mut Client, method: &str, token: &Token, params: Value) -> Response {
    c.call(method, Some(&token.token), &params).unwrap()
}

/// Opens `path` and returns the handle.
pub fn open(c: &mut Client, token: &Token, path: &str) -> String {
    let r = ok(call(c, "fs.open", token, json!({"path": path})));
    r["handle"].as_str().unwrap().to_string()
}

pub fn path_buf(s: &str) -> PathBuf {
    PathBuf::from(s)
}
