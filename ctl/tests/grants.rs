//! strata-ctl inside a unit with grants: with no --token-file, --token or
//! STRATA_TOKEN it uses systemd's credential
//! `$CREDENTIALS_DIRECTORY/strata-<name>` (the only one, or `--grant NAME`).
//! The credentials here are tokens issued by the real identity and written
//! where systemd would put them.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use strata_shared::client::Client;
use strata_testkit::{start_fs, start_identity, ActivatedService};

const CTL: &str = env!("CARGO_BIN_EXE_strata-ctl");

struct Stack {
    _identity: ActivatedService,
    _fs: ActivatedService,
    run: PathBuf,
    data: PathBuf,
    creds: PathBuf,
    _dir: tempfile::TempDir,
}

impl Stack {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        let data = base.join("srv/data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("hello.txt"), "hi").unwrap();
        let creds = base.join("credentials");
        std::fs::create_dir_all(&creds).unwrap();
        let identity = start_identity(&base, &[]);
        let fs = start_fs(&base, &[]);
        let stack = Stack {
            _identity: identity,
            _fs: fs,
            run: base.join("run"),
            data,
            creds,
            _dir: dir,
        };
        stack.wait_synced();
        stack
    }

    fn wait_synced(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let synced = Client::connect(&self.run.join("fs.sock"))
                .and_then(|mut c| c.call("fs.health", None, &json!({})))
                .ok()
                .and_then(|r| r.result)
                .is_some_and(|r| r["identity"] == "synced");
            if synced {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "fs never synced");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Writes a token for `actions` on the data directory as credential
    /// `strata-<name>`, as systemd would (no trailing newline).
    fn credential(&self, name: &str, actions: &[&str]) {
        let mut c = Client::connect(&self.run.join("identity.sock")).unwrap();
        let r = c
            .call(
                "identity.issue",
                None,
                &json!({"service":"fs","actions":actions,"path_prefix":self.data,"ttl_seconds":600}),
            )
            .unwrap();
        assert!(r.ok, "{r:?}");
        let token = r.result.unwrap()["token"].as_str().unwrap().to_string();
        std::fs::write(self.creds.join(format!("strata-{name}")), token).unwrap();
    }

    /// strata-ctl ARGS in a "unit" whose credentials are `creds` (or none).
    fn ctl(
        &self,
        creds: Option<&Path>,
        envs: &[(&str, &str)],
        args: &[&str],
    ) -> (i32, String, String) {
        let mut cmd = Command::new(CTL);
        cmd.args(args)
            .env("STRATA_RUNTIME_DIR", &self.run)
            .env_remove("STRATA_TOKEN")
            .env_remove("CREDENTIALS_DIRECTORY");
        if let Some(dir) = creds {
            cmd.env("CREDENTIALS_DIRECTORY", dir);
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[test]
fn the_only_credential_is_used_with_no_token_given() {
    let s = Stack::start();
    let data = s.data.to_str().unwrap();
    // No credential yet: the usual "needs a token" (exit 12 from fs, or 2).
    let (code, _, _) = s.ctl(Some(&s.creds), &[], &["ls", data]);
    assert_ne!(code, 0);
    s.credential("reader", &["list", "stat"]);
    let (code, out, err) = s.ctl(Some(&s.creds), &[], &["ls", data]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("hello.txt"), "{out}");
    // Also through --grant, and in the raw form.
    let (code, _, err) = s.ctl(Some(&s.creds), &[], &["--grant", "reader", "stat", data]);
    assert_eq!(code, 0, "{err}");
    let params = json!({ "path": data }).to_string();
    let (code, out, err) = s.ctl(Some(&s.creds), &[], &["fs.list", &params]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"ok\":true"), "{out}");
}

#[test]
fn several_credentials_need_grant_and_explicit_tokens_win() {
    let s = Stack::start();
    let data = s.data.to_str().unwrap();
    s.credential("reader", &["list"]);
    s.credential("statter", &["stat"]);
    let (code, _, err) = s.ctl(Some(&s.creds), &[], &["ls", data]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--grant") && err.contains("strata-reader") && err.contains("strata-statter"),
        "{err}"
    );
    let (code, _, err) = s.ctl(Some(&s.creds), &[], &["--grant", "reader", "ls", data]);
    assert_eq!(code, 0, "{err}");
    // The other grant's token has no "list": fs refuses it (code 3).
    let (code, _, _) = s.ctl(Some(&s.creds), &[], &["--grant", "statter", "ls", data]);
    assert_eq!(code, 13);
    let (code, _, err) = s.ctl(Some(&s.creds), &[], &["--grant", "nosuch", "ls", data]);
    assert_eq!(code, 2);
    assert!(err.contains("LoadCredential=strata-nosuch"), "{err}");
    let (code, _, err) = s.ctl(Some(&s.creds), &[], &["--grant", "../reader", "ls", data]);
    assert_eq!(code, 2);
    assert!(err.contains("not a grant name"), "{err}");
    // STRATA_TOKEN, when set, is used instead of any credential.
    let (code, _, _) = s.ctl(
        Some(&s.creds),
        &[("STRATA_TOKEN", "v2.public.garbage")],
        &["ls", data],
    );
    assert_eq!(
        code, 12,
        "the garbage token was presented, not a credential"
    );
    // --grant outside a unit says where credentials come from.
    let (code, _, err) = s.ctl(None, &[], &["--grant", "reader", "ls", data]);
    assert_eq!(code, 2);
    assert!(err.contains("CREDENTIALS_DIRECTORY"), "{err}");
}
