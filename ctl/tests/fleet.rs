//! `strata-ctl fleet init|endorse|verify` through the real binary: the
//! root key file's mode and O_EXCL creation, the endorse → verify round
//! trip, and the exit statuses of refusals (docs/cli.md). No service runs.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

const CTL: &str = env!("CARGO_BIN_EXE_strata-ctl");
/// A node's public key as identity publishes it (identity.pub: standard
/// base64 and a newline).
const NODE_KEY: &str = "DXJQKP1Aqa5GjJ6/D89+1XD/lvJvB2WL3d+NJzWkPdQ=\n";

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn ctl_stdin(args: &[&str], stdin: &str) -> Out {
    let mut child = Command::new(CTL)
        .args(args)
        .env_remove("STRATA_TOKEN")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn ctl(args: &[&str]) -> Out {
    ctl_stdin(args, "")
}

#[track_caller]
fn expect(out: Out, code: i32) -> Out {
    assert_eq!(
        out.code, code,
        "stdout: {}; stderr: {}",
        out.stdout, out.stderr
    );
    out
}

fn init(path: &Path, fleet: &str) -> Value {
    let out = expect(
        ctl(&[
            "fleet",
            "init",
            "--out",
            path.to_str().unwrap(),
            "--fleet",
            fleet,
        ]),
        0,
    );
    serde_json::from_str(&out.stdout).unwrap()
}

/// `fleet endorse` of node-a's key `node_key` with the root key file `key`,
/// plus `extra` options.
fn endorse(key: &Path, node_key: &str, extra: &[&str]) -> Out {
    let mut args = vec![
        "fleet",
        "endorse",
        "--root-key",
        key.to_str().unwrap(),
        "--node-id",
        "node-a",
        "--node-key",
        node_key,
    ];
    args.extend_from_slice(extra);
    ctl(&args)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_writes_a_0600_key_and_never_overwrites() {
    let d = tempfile::tempdir().unwrap();
    let key = d.path().join("root.json");
    let printed = init(&key, "prod");
    assert_eq!(mode(&key), 0o600);
    let content: Value = serde_json::from_slice(&std::fs::read(&key).unwrap()).unwrap();
    assert_eq!(content["fleet"], "prod");
    assert_eq!(content["public_key"], printed["public_key"]);
    assert_eq!(content["kid"], printed["kid"]);
    assert_eq!(printed["kid"].as_str().unwrap().len(), 32);
    assert_eq!(printed["public_key"].as_str().unwrap().len(), 44);

    let before = std::fs::read(&key).unwrap();
    let out = expect(ctl(&["fleet", "init", "--out", key.to_str().unwrap()]), 2);
    assert!(out.stderr.contains("never overwrites"), "{}", out.stderr);
    assert_eq!(std::fs::read(&key).unwrap(), before);

    // Two roots are two different keys.
    let other = init(&d.path().join("other.json"), "prod");
    assert_ne!(other["public_key"], printed["public_key"]);

    let out = expect(
        ctl(&[
            "fleet",
            "init",
            "--out",
            d.path().join("x").to_str().unwrap(),
            "--fleet",
            "Prod",
        ]),
        2,
    );
    assert!(out.stderr.contains("DNS label"), "{}", out.stderr);
    assert!(!d.path().join("x").exists());
}

#[test]
fn endorse_then_verify_through_the_binary() {
    let d = tempfile::tempdir().unwrap();
    let key = d.path().join("root.json");
    let root = init(&key, "prod");
    let root_pk = root["public_key"].as_str().unwrap();
    let out = expect(endorse(&key, NODE_KEY, &["--ttl", "3600"]), 0);
    let endorsement = out.stdout;
    assert!(endorsement.starts_with("v2.public."), "{endorsement}");
    let file = d.path().join("node-a.endorsement");
    std::fs::write(&file, &endorsement).unwrap();

    let out = expect(
        ctl(&[
            "fleet",
            "verify",
            "--root-public-key",
            root_pk,
            "--fleet",
            "prod",
            file.to_str().unwrap(),
        ]),
        0,
    );
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["node_id"], "node-a");
    assert_eq!(v["fleet"], "prod");
    assert_eq!(v["public_key"], NODE_KEY.trim());
    assert_eq!(v["kid"].as_str().unwrap().len(), 32);
    let (iat, exp) = (
        v["issued"].as_i64().unwrap(),
        v["expires"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 3600);

    // From standard input, for another fleet: refused, exit 3, with why.
    let out = expect(
        ctl_stdin(
            &[
                "fleet",
                "verify",
                "--root-public-key",
                root_pk,
                "--fleet",
                "staging",
                "-",
            ],
            &endorsement,
        ),
        3,
    );
    assert!(out.stderr.contains("not \"staging\""), "{}", out.stderr);
    assert!(out.stdout.is_empty());

    // Another fleet's root does not vouch for it.
    let other = init(&d.path().join("other.json"), "prod");
    let out = expect(
        ctl_stdin(
            &[
                "fleet",
                "verify",
                "--root-public-key",
                other["public_key"].as_str().unwrap(),
                "--fleet",
                "prod",
                "-",
            ],
            &endorsement,
        ),
        3,
    );
    assert!(out.stderr.contains("another root key"), "{}", out.stderr);

    // The fleet is the key file's: another one is a usage error.
    let out = expect(endorse(&key, NODE_KEY, &["--fleet", "staging"]), 2);
    assert!(
        out.stderr.contains("root key of fleet \"prod\""),
        "{}",
        out.stderr
    );
    // A node key in another form is refused with what the form is.
    let out = expect(
        endorse(&key, "DXJQKP1Aqa5GjJ6_D89-1XD_lvJvB2WL3d-NJzWkPdQ", &[]),
        2,
    );
    assert!(out.stderr.contains("identity.pub"), "{}", out.stderr);
}

#[test]
fn a_key_file_readable_by_others_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let key = d.path().join("root.json");
    init(&key, "prod");
    for loose in [0o640, 0o604] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(loose)).unwrap();
        let out = expect(endorse(&key, NODE_KEY, &[]), 2);
        assert!(out.stderr.contains("chmod 600"), "{}", out.stderr);
        assert!(out.stdout.is_empty());
    }
    // A damaged file is named as such, not used.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut content: Value = serde_json::from_slice(&std::fs::read(&key).unwrap()).unwrap();
    content["kid"] = Value::from("00000000000000000000000000000000");
    std::fs::write(&key, content.to_string()).unwrap();
    let out = expect(endorse(&key, NODE_KEY, &[]), 2);
    assert!(out.stderr.contains("damaged"), "{}", out.stderr);
}
