//! fs's audit records, seen through the dispatcher in-process: exactly one
//! record per request, written from the outcome actually sent; reads
//! through a handle summarised in the record that ends it; and no request
//! served when its record cannot be written.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use strata_fs::auth::Authority;
use strata_fs::config::FsConfig;
use strata_fs::handles::Ended;
use strata_fs::FsService;
use strata_shared::audit::ReadSummary;
use strata_shared::capability::{self, Grant};
use strata_shared::peer::PeerCred;
use strata_shared::token::{key_id, keypair_from_seed};
use strata_testkit::{call_in_process, CapturedRecord, RecordCapture};

const PEER: PeerCred = PeerCred {
    uid: 4242,
    gid: 4242,
    pid: Some(7),
};
const CAP: &str = "0123456789abcdef0123456789abcdef";

struct Fixture {
    fs: Arc<FsService>,
    records: RecordCapture,
    data: String,
    token: String,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let srv = dir.path().join("srv");
        std::fs::create_dir_all(srv.join("data")).unwrap();
        std::fs::write(srv.join("data/hello.txt"), "hello, world\n").unwrap();
        let kp = keypair_from_seed(&[21; 32]);
        let authority = Arc::new(Authority::new(Duration::ZERO));
        authority.install_key(kp.pk);
        let data = srv.join("data").to_str().unwrap().to_string();
        let actions: Vec<String> = ["open", "read", "list", "stat"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let now = capability::now();
        let token = capability::issue(
            &kp.sk,
            &key_id(&kp.pk),
            &Grant {
                cap_id: CAP,
                service: "fs",
                actions: &actions,
                path_prefix: Some(&data),
                holder: None,
                chain: &[],
                issued: now,
                expires: now + 600,
                rate_limit: None,
            },
        );
        let records = RecordCapture::default();
        let config = FsConfig {
            roots: vec![srv.to_str().unwrap().to_string()],
            ..FsConfig::default()
        };
        let fs = FsService::with_authority(config, authority).with_trail(records.writer());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        Self {
            fs: Arc::new(fs),
            records,
            data,
            token,
            rt,
            _dir: dir,
        }
    }

    fn path(&self, rel: &str) -> String {
        format!("{}/{rel}", self.data)
    }

    /// One request through the dispatcher, answered as the server would.
    fn call(
        &self,
        method: &str,
        token: Option<&str>,
        params: Value,
    ) -> Result<Value, (u16, String)> {
        call_in_process(&self.rt, &*self.fs, PEER, method, token, params)
    }

    fn with_token(&self, method: &str, params: Value) -> Result<Value, (u16, String)> {
        self.call(method, Some(&self.token.clone()), params)
    }

    fn open(&self, rel: &str) -> String {
        let r = self.with_token("fs.open", json!({"path": self.path(rel)}));
        r.unwrap()["handle"].as_str().unwrap().to_string()
    }

    /// The records written since the last call.
    fn take(&self) -> Vec<CapturedRecord> {
        self.records.take()
    }
}

#[test]
fn every_request_but_a_tallied_read_and_health_is_exactly_one_record() {
    let f = Fixture::new();
    let file = f.path("hello.txt");
    let requests: Vec<(&str, Option<&str>, Value)> = vec![
        ("fs.stat", Some(&f.token), json!({"path": file})),
        ("fs.list", Some(&f.token), json!({"path": f.data})),
        ("fs.list", Some(&f.token), json!({"path": f.data})),
        (
            "fs.stat",
            Some(&f.token),
            json!({"path": f.path("missing")}),
        ),
        ("fs.stat", Some(&f.token), json!({"path": "/etc/passwd"})),
        ("fs.stat", None, json!({"path": file})),
        ("fs.stat", Some("v2.public.forged"), json!({"path": file})),
        ("fs.stat", Some(&f.token), json!({"nope": 1})),
        ("fs.nonsense", None, json!({})),
        ("fs.close", Some(&f.token), json!({"handle": "h-nope"})),
    ];
    for (method, token, params) in &requests {
        let before = f.records.len();
        let answer = f.call(method, *token, params.clone());
        let got = f.take();
        assert_eq!(got.len(), 1, "{method} {params}: {got:?}");
        assert_eq!(before, 0);
        let r = &got[0];
        assert_eq!(r.method, *method);
        // The record says what the client was told.
        match answer {
            Ok(_) => assert_eq!((r.code, r.reason.as_str()), (None, "ok")),
            Err((code, message)) => {
                assert_eq!(r.code, Some(code), "{method} {params}");
                assert_eq!(r.reason, message);
            }
        }
    }
    f.call("fs.health", None, json!({})).unwrap();
    assert!(f.take().is_empty(), "fs.health is not recorded");
}

#[test]
fn records_name_the_capability_path_and_whether_the_token_verified() {
    let f = Fixture::new();
    let file = f.path("hello.txt");
    f.with_token("fs.stat", json!({"path": file})).unwrap();
    let denied = f.with_token("fs.stat", json!({"path": "/etc/passwd"}));
    assert_eq!(denied.unwrap_err().0, 3);
    f.call("fs.stat", None, json!({"path": file})).unwrap_err();
    let got = f.take();
    assert_eq!(
        (
            got[0].cap_id.as_deref(),
            got[0].path.as_deref(),
            got[0].authenticated
        ),
        (Some(CAP), Some(file.as_str()), true)
    );
    assert_eq!(
        (got[1].cap_id.as_deref(), got[1].code, got[1].authenticated),
        (Some(CAP), Some(3), true)
    );
    assert_eq!(
        (got[2].cap_id.as_deref(), got[2].code, got[2].authenticated),
        (None, Some(2), false)
    );
}

#[test]
fn reads_are_summarised_in_the_record_of_the_close() {
    let f = Fixture::new();
    let h = f.open("hello.txt");
    let opened = f.take();
    assert_eq!(opened.len(), 1);
    assert_eq!(
        (opened[0].method.as_str(), opened[0].code),
        ("fs.open", None)
    );
    for (offset, size) in [(0, 5), (7, 100), (100, 10)] {
        f.with_token(
            "fs.read",
            json!({"handle": h, "offset": offset, "size": size}),
        )
        .unwrap();
    }
    assert!(
        f.take().is_empty(),
        "a successful read has no record of its own"
    );
    f.with_token("fs.close", json!({"handle": h})).unwrap();
    let got = f.take();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].method, "fs.close");
    assert_eq!(got[0].path.as_deref(), Some(f.path("hello.txt").as_str()));
    assert_eq!(
        got[0].reads,
        Some(ReadSummary {
            reads: 3,
            bytes: 5 + 6,
            offsets: Some((0, 13)),
        })
    );
}

#[test]
fn a_refused_read_is_its_own_record() {
    let f = Fixture::new();
    let h = f.open("hello.txt");
    f.take();
    // No token, then a forged one: code 2, each its own record.
    assert_eq!(
        f.call("fs.read", None, json!({"handle": h})).unwrap_err().0,
        2
    );
    assert_eq!(
        f.call("fs.read", Some("v2.public.x"), json!({"handle": h}))
            .unwrap_err()
            .0,
        2
    );
    // A handle that does not exist: code 4.
    let missing = format!("h-{}", "0".repeat(32));
    assert_eq!(
        f.with_token("fs.read", json!({"handle": missing}))
            .unwrap_err()
            .0,
        4
    );
    let got = f.take();
    let codes: Vec<_> = got.iter().map(|r| (r.method.as_str(), r.code)).collect();
    assert_eq!(
        codes,
        [
            ("fs.read", Some(2)),
            ("fs.read", Some(2)),
            ("fs.read", Some(4))
        ]
    );
    assert_eq!(got[2].path.as_deref(), Some(missing.as_str()));
}

#[test]
fn a_read_that_fails_after_authorization_is_recorded_with_its_code() {
    let f = Fixture::new();
    // A handle whose pread fails (EISDIR): the read is authorized, then
    // fails with code 5, and its record says so — not "allow ok".
    let cap = {
        let h = f.open("hello.txt");
        f.with_token("fs.close", json!({"handle": h})).unwrap();
        f.take();
        // The capability as fs knows it, for the table.
        let rt = &f.rt;
        rt.block_on(f.fs.authority.authenticate(Some(&f.token)))
            .unwrap()
    };
    let dir = File::open(Path::new(&f.data)).unwrap();
    let id = f.fs.handles.insert(&cap, dir, &f.data, PEER).unwrap();
    let handle = strata_shared::ids::format_handle(id);
    let (code, message) = f
        .with_token("fs.read", json!({"handle": handle}))
        .unwrap_err();
    assert_eq!(code, 5, "{message}");
    let got = f.take();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].method, "fs.read");
    assert_eq!(got[0].code, Some(5));
    assert_eq!(got[0].reason, message);
    assert_eq!(got[0].path.as_deref(), Some(f.data.as_str()));
}

#[test]
fn an_unwritable_trail_refuses_the_request_with_code_5() {
    let f = Fixture::new();
    f.records.set_broken(Some("disk full"));
    let (code, message) = f
        .with_token("fs.open", json!({"path": f.path("hello.txt")}))
        .unwrap_err();
    assert_eq!(code, 5);
    assert!(message.contains("disk full"), "{message}");
    assert!(
        message.contains("audit trail"),
        "the message says why: {message}"
    );
    // The handle it would have opened is not left behind.
    assert_eq!(f.fs.handles.len(), 0);
    let (code, _) = f
        .with_token("fs.list", json!({"path": f.data}))
        .unwrap_err();
    assert_eq!(code, 5);
    // Back to normal once the trail takes records again.
    f.records.set_broken(None);
    f.with_token("fs.list", json!({"path": f.data})).unwrap();
    assert_eq!(f.take().len(), 1);
}

#[test]
fn handles_that_end_without_close_get_one_record_with_their_reads() {
    let f = Fixture::new();
    let h = f.open("hello.txt");
    f.with_token("fs.read", json!({"handle": h, "size": 4}))
        .unwrap();
    f.take();
    // Revoked: the next sweep ends the handle with a "revoked" record.
    f.fs.authority.revocations.insert(
        strata_shared::ids::parse_cap_id(CAP).unwrap(),
        capability::now() + 600,
    );
    assert_eq!(f.fs.sweep(), 1);
    let got = f.take();
    assert_eq!(got.len(), 1, "{got:?}");
    let r = &got[0];
    assert_eq!(
        (
            r.method.as_str(),
            r.reason.as_str(),
            r.cap_id.as_deref(),
            r.code
        ),
        ("fs.close", Ended::Revoked.reason(), Some(CAP), None)
    );
    assert_eq!(
        r.reads,
        Some(ReadSummary {
            reads: 1,
            bytes: 4,
            offsets: Some((0, 4)),
        })
    );
    assert_eq!(f.fs.sweep(), 0, "ended once");
    assert!(f.take().is_empty());
}

/// A request past its capability's rate limit is refused with code 7 and
/// recorded like any refusal, naming the capability.
#[test]
fn a_request_past_its_rate_limit_is_recorded_with_code_7() {
    const LIMITED: &str = "fedcba9876543210fedcba9876543210";
    let f = Fixture::new();
    let kp = keypair_from_seed(&[21; 32]);
    let actions = vec!["stat".to_string()];
    let now = capability::now();
    let token = capability::issue(
        &kp.sk,
        &key_id(&kp.pk),
        &Grant {
            cap_id: LIMITED,
            service: "fs",
            actions: &actions,
            path_prefix: Some(&f.data),
            holder: None,
            chain: &[],
            issued: now,
            expires: now + 600,
            rate_limit: strata_shared::rate::RateLimit::parse("1rps").ok(),
        },
    );
    let stat = || f.call("fs.stat", Some(&token), json!({"path": f.data}));
    stat().unwrap();
    let (code, message) = stat().unwrap_err();
    assert_eq!(code, 7, "{message}");
    let got = f.take();
    assert_eq!(got.len(), 2, "{got:?}");
    let r = &got[1];
    assert_eq!(
        (r.code, r.cap_id.as_deref(), r.authenticated),
        (Some(7), Some(LIMITED), true)
    );
    assert_eq!(r.reason, message);
    // The unlimited capability of the fixture is not affected.
    for _ in 0..20 {
        f.with_token("fs.stat", json!({"path": f.data})).unwrap();
    }
}
