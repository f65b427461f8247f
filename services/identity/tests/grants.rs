//! Grants and the credential socket through the real binary: identity
//! started with two named listeners (`identity`, `credentials`) as
//! strata-identity.socket and strata-identity-credentials.socket pass them,
//! and a client doing what systemd's `LoadCredential=` does (bind an
//! abstract address naming the unit and the credential, connect, read to
//! the end).
//!
//! Only uid 0 is answered, so most of these run as root only.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use strata_shared::client::Client;
use strata_testkit::{fetch_credential, workspace_binary, ActivatedService};

const NOBODY: u32 = 65534;

struct Fixture {
    identity: ActivatedService,
    base: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn grants(&self) -> PathBuf {
        self.base.join("grants")
    }

    fn credentials(&self) -> PathBuf {
        self.identity.socket_named("credentials")
    }

    /// What a unit `unit` loading credential `id` gets.
    fn fetch(&self, unit: &str, id: &str) -> Vec<u8> {
        fetch_credential(&self.credentials(), &address(unit, id)).expect("connect")
    }
}

fn address(unit: &str, id: &str) -> String {
    format!("{:016x}/unit/{unit}/{id}", rand_u64())
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom(&mut b);
    u64::from_le_bytes(b)
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("/dev/urandom");
}

const READER: &str = r#"{"unit":"reader.service","service":"fs","actions":["list","stat"],"path_prefix":"PREFIX","ttl_seconds":600}"#;

/// identity with a grant `reader` for reader.service on `<base>/srv/data`,
/// the credential socket with `mode`.
fn start(mode: u32) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let base = dir.path().to_path_buf();
    let srv = base.join("srv");
    std::fs::create_dir_all(srv.join("data")).unwrap();
    std::fs::write(srv.join("data/hello.txt"), "hi").unwrap();
    let grants = base.join("grants");
    std::fs::create_dir_all(&grants).unwrap();
    let prefix = srv.join("data");
    std::fs::write(
        grants.join("reader.json"),
        READER.replace("PREFIX", prefix.to_str().unwrap()),
    )
    .unwrap();
    // Refused: outside the served roots; the others still load.
    std::fs::write(
        grants.join("outside.json"),
        r#"{"service":"fs","actions":["list"],"path_prefix":"/etc"}"#,
    )
    .unwrap();
    let state = base.join("state");
    let me = strata_testkit::euid();
    let envs = [
        ("STRATA_STATE_DIR", state.to_str().unwrap()),
        ("STRATA_GRANTS_DIR", grants.to_str().unwrap()),
        ("STRATA_GRANT_ROOTS", srv.to_str().unwrap()),
        ("STRATA_ADMIN_UIDS", me.as_str()),
    ];
    let identity = ActivatedService::start_with_sockets(
        &workspace_binary("strata-identity"),
        "identity",
        &base.join("run"),
        &[("credentials", mode)],
        &envs,
    )
    .unwrap();
    identity
        .wait_notify("READY=1", Duration::from_secs(15))
        .expect("READY=1");
    Fixture {
        identity,
        base,
        _dir: dir,
    }
}

fn verify(f: &Fixture, token: &str) -> Value {
    let mut c = Client::connect(&f.identity.socket).unwrap();
    let r = c
        .call("identity.verify", None, &json!({ "token": token }))
        .unwrap();
    assert!(r.ok, "{r:?}");
    r.result.unwrap()
}

fn is_root() -> bool {
    strata_testkit::euid() == "0"
}

/// The child side of `fetch_credential_as`; does nothing in a normal run.
#[test]
fn child_fetch_credential() {
    strata_testkit::child_fetch_credential();
}

#[test]
fn the_identity_socket_still_serves_with_a_credential_socket_beside_it() {
    let f = start(0o600);
    let mut c = Client::connect(&f.identity.socket).unwrap();
    let r = c.call("identity.health", None, &json!({})).unwrap();
    assert!(r.ok, "{r:?}");
}

#[test]
fn a_non_root_caller_gets_nothing() {
    if is_root() {
        // Covered by the root-only test below, as a child with uid nobody.
        return;
    }
    let f = start(0o600);
    assert!(f.fetch("reader.service", "strata-reader").is_empty());
}

#[test]
fn a_socket_of_an_unknown_name_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut svc = ActivatedService::start_with_sockets(
        &workspace_binary("strata-identity"),
        "identity",
        &dir.path().join("run"),
        &[("bogus", 0o600)],
        &[("STRATA_STATE_DIR", state.to_str().unwrap())],
    )
    .unwrap();
    let status = svc.wait(Duration::from_secs(15)).expect("exits");
    assert_eq!(status.code(), Some(1), "{status:?}");
}

#[test]
#[ignore = "needs root: only uid 0 is answered on the credential socket"]
fn the_grants_unit_gets_a_token_bound_to_it() {
    assert!(is_root(), "run as root");
    let f = start(0o600);
    let got = f.fetch("reader.service", "strata-reader");
    let token = String::from_utf8(got).unwrap();
    assert!(token.starts_with("v2.public."), "{token:?}");
    assert!(!token.ends_with('\n'), "written raw");
    let v = verify(&f, &token);
    assert_eq!(v["valid"], true, "{v}");
    let prefix = f.base.join("srv/data");
    assert_eq!(
        v["claims"]["constraints"]["path_prefix"],
        prefix.to_str().unwrap(),
        "{v}"
    );
    let expires = v["claims"]["exp"].as_str().unwrap().to_string();
    assert!(!expires.is_empty());
    // Each start mints a fresh capability.
    let again = String::from_utf8(f.fetch("reader.service", "strata-reader")).unwrap();
    assert_ne!(again, token);
    assert_ne!(
        verify(&f, &again)["claims"]["jti"],
        v["claims"]["jti"],
        "a new cap id"
    );

    // Bound to the grant's unit: fs, verifying with identity's key,
    // refuses it to this test, which is not reader.service (scenario 21
    // shows the unit itself served).
    assert_eq!(
        v["claims"]["holder"],
        json!({"unit": "reader.service"}),
        "{v}"
    );
    let fs = strata_testkit::start_fs(&f.base, &[]);
    let mut c = Client::connect(&fs.socket).unwrap();
    let r = c
        .call("fs.list", Some(&token), &json!({ "path": prefix }))
        .unwrap();
    let e = r.error.expect("refused");
    assert_eq!(e.code, 3, "{e:?}");
    assert!(
        e.message
            .starts_with("token is bound to unit reader.service;"),
        "{e:?}"
    );
}

#[test]
#[ignore = "needs root: only uid 0 is answered on the credential socket"]
fn another_unit_or_an_odd_credential_id_gets_nothing() {
    assert!(is_root(), "run as root");
    let f = start(0o600);
    // Another unit claiming the reader's credential (a forged address).
    assert!(f.fetch("other.service", "strata-reader").is_empty());
    // No such grant; the refused file's grant is not loaded either.
    assert!(f.fetch("reader.service", "strata-nosuch").is_empty());
    assert!(f.fetch("outside.service", "strata-outside").is_empty());
    // Not strata-<name>.
    assert!(f.fetch("reader.service", "reader").is_empty());
    // `..`, a dot, overlong: never reach the grant lookup.
    assert!(f.fetch("reader.service", "strata-..").is_empty());
    assert!(f.fetch("reader.service", "strata-reader.json").is_empty());
    // (A short random part: the whole abstract address fits in 107 bytes.)
    let long = format!("r/unit/reader.service/strata-{}", "r".repeat(65));
    assert!(fetch_credential(&f.credentials(), &long)
        .unwrap()
        .is_empty());
    // `/` in the credential id or the unit: the address has extra parts.
    assert!(f.fetch("reader.service", "strata-reader/x").is_empty());
    assert!(f.fetch("../reader.service", "strata-reader").is_empty());
    // Not the abstract address systemd binds at all.
    assert!(fetch_credential(&f.credentials(), "strata-reader")
        .unwrap()
        .is_empty());
    // And after all that, the real unit is still served.
    assert!(!f.fetch("reader.service", "strata-reader").is_empty());
}

#[test]
#[ignore = "needs root: to run a child as another uid"]
fn a_non_root_peer_gets_nothing_even_through_an_open_socket() {
    assert!(is_root(), "run as root");
    // Mode 0666: the socket's own mode no longer keeps others out, so this
    // is identity's SO_PEERCRED check alone.
    let f = start(0o666);
    let got = strata_testkit::fetch_credential_as(
        NOBODY,
        NOBODY,
        "child_fetch_credential",
        &f.credentials(),
        &address("reader.service", "strata-reader"),
    )
    .expect("nobody can connect to a 0666 socket");
    assert!(
        got.is_empty(),
        "nobody got {:?}",
        String::from_utf8_lossy(&got)
    );
    // Mode 0600 root: nobody cannot even connect.
    let f = start(0o600);
    let refused = strata_testkit::fetch_credential_as(
        NOBODY,
        NOBODY,
        "child_fetch_credential",
        &f.credentials(),
        &address("reader.service", "strata-reader"),
    );
    assert!(refused.is_err(), "{refused:?}");
}

#[test]
#[ignore = "needs root: only uid 0 is answered on the credential socket"]
fn grants_are_read_again_on_sighup() {
    assert!(is_root(), "run as root");
    let f = start(0o600);
    assert!(f.fetch("writer.service", "strata-writer").is_empty());
    let prefix = f.base.join("srv/data");
    let text = format!(
        r#"{{"service":"fs","actions":["stat"],"path_prefix":"{}"}}"#,
        prefix.display()
    );
    std::fs::write(f.grants().join("writer.json"), text).unwrap();
    std::fs::remove_file(f.grants().join("reader.json")).unwrap();
    f.identity.signal(libc::SIGHUP).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while f.fetch("writer.service", "strata-writer").is_empty() {
        assert!(std::time::Instant::now() < deadline, "writer never loaded");
        std::thread::sleep(Duration::from_millis(50));
    }
    // unit defaults to <name>.service; the removed grant is gone.
    assert!(f.fetch("reader.service", "strata-reader").is_empty());
}

/// The child side of `call_as`; does nothing in a normal run.
#[test]
fn child_request() {
    strata_testkit::child_request();
}

#[test]
#[ignore = "needs root: only uid 0 is answered on the credential socket"]
fn a_units_tokens_are_revoked_when_it_stops() {
    assert!(is_root(), "run as root");
    let f = start(0o600);
    let first = String::from_utf8(f.fetch("reader.service", "strata-reader")).unwrap();
    let second = String::from_utf8(f.fetch("reader.service", "strata-reader")).unwrap();
    let mut c = Client::connect(&f.identity.socket).unwrap();
    // Not an administrator: refused, nothing revoked.
    let r = strata_testkit::call_as(
        NOBODY,
        NOBODY,
        "child_request",
        &f.identity.socket,
        "identity.revoke_unit",
        None,
        json!({"unit": "reader.service"}),
    );
    assert_eq!(r.error.as_ref().map(|e| e.code), Some(3), "{r:?}");
    assert_eq!(verify(&f, &first)["valid"], true);
    let bad = c
        .call("identity.revoke_unit", None, &json!({"unit": "../x"}))
        .unwrap();
    assert_eq!(bad.error.map(|e| e.code), Some(1));
    let r = c
        .call(
            "identity.revoke_unit",
            None,
            &json!({"unit": "reader.service"}),
        )
        .unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(r.result.unwrap()["cap_ids"].as_array().unwrap().len(), 2);
    for t in [&first, &second] {
        let v = verify(&f, t);
        assert_eq!(v["revoked"], true, "{v}");
    }
    // The next start gets a fresh token that works; the old stay revoked.
    let third = String::from_utf8(f.fetch("reader.service", "strata-reader")).unwrap();
    assert_eq!(verify(&f, &third)["valid"], true);
    assert_eq!(verify(&f, &first)["revoked"], true);
    // Nothing left to revoke for the unit but the new one.
    let r = c
        .call(
            "identity.revoke_unit",
            None,
            &json!({"unit": "reader.service"}),
        )
        .unwrap();
    assert_eq!(r.result.unwrap()["cap_ids"].as_array().unwrap().len(), 1);
}

#[test]
#[ignore = "needs root: only uid 0 is answered on the credential socket"]
fn a_token_minted_before_identity_restarted_is_revoked_when_its_unit_stops() {
    assert!(is_root(), "run as root");
    let mut f = start(0o600);
    let token = String::from_utf8(f.fetch("reader.service", "strata-reader")).unwrap();
    assert_eq!(verify(&f, &token)["valid"], true);
    // Killed, as by a crash or `systemctl restart`, while reader.service runs.
    f.identity.restart().unwrap();
    f.identity
        .wait_notify("READY=1", Duration::from_secs(15))
        .expect("READY=1 after the restart");
    // reader.service stops: its ExecStopPost= calls revoke-unit.
    let mut c = Client::connect(&f.identity.socket).unwrap();
    let r = c
        .call(
            "identity.revoke_unit",
            None,
            &json!({"unit": "reader.service"}),
        )
        .unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(
        r.result.unwrap()["cap_ids"].as_array().unwrap().len(),
        1,
        "the token minted before the restart"
    );
    let v = verify(&f, &token);
    assert_eq!(v["revoked"], true, "{v}");
    // Forgotten once revoked, across a restart too.
    f.identity.restart().unwrap();
    f.identity
        .wait_notify("READY=1", Duration::from_secs(15))
        .expect("READY=1 after the second restart");
    let mut c = Client::connect(&f.identity.socket).unwrap();
    let r = c
        .call(
            "identity.revoke_unit",
            None,
            &json!({"unit": "reader.service"}),
        )
        .unwrap();
    assert_eq!(r.result.unwrap()["cap_ids"], json!([]));
}

#[test]
#[ignore = "needs root: only uid 0 is answered on the credential socket"]
fn a_damaged_record_of_minted_tokens_revokes_them_at_start() {
    assert!(is_root(), "run as root");
    let mut f = start(0o600);
    let token = String::from_utf8(f.fetch("reader.service", "strata-reader")).unwrap();
    f.identity.kill();
    // Cut off the end: the JSON no longer parses, the cap id is still there.
    let file = f.base.join("state/minted.json");
    let whole = std::fs::read(&file).unwrap();
    std::fs::write(&file, &whole[..whole.len() - 4]).unwrap();
    f.identity.start_again().unwrap();
    f.identity
        .wait_notify("READY=1", Duration::from_secs(15))
        .expect("identity starts despite the damaged file");
    let v = verify(&f, &token);
    assert_eq!(v["revoked"], true, "{v}");
    assert!(f.base.join("state/minted.json.corrupt").exists());
    // And grants are handed out again, recorded afresh.
    let fresh = String::from_utf8(f.fetch("reader.service", "strata-reader")).unwrap();
    assert_eq!(verify(&f, &fresh)["valid"], true);
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("reader.service"));
}

#[test]
#[ignore = "needs root: only uid 0 is answered on the credential socket"]
fn a_token_whose_record_cannot_be_written_is_not_handed_out() {
    assert!(is_root(), "run as root");
    let f = start(0o600);
    // A directory where minted.json goes: the atomic rename onto it fails
    // (root passes any permission check, so a mode would not do).
    let file = f.base.join("state/minted.json");
    let _ = std::fs::remove_file(&file);
    std::fs::create_dir(&file).unwrap();
    assert!(f.fetch("reader.service", "strata-reader").is_empty());
    std::fs::remove_dir(&file).unwrap();
    let token = String::from_utf8(f.fetch("reader.service", "strata-reader")).unwrap();
    assert_eq!(verify(&f, &token)["valid"], true);
}
