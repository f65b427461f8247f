//! identity's audit records, seen through its dispatcher in-process: one
//! record per issue and revoke whatever the outcome, records of the public
//! methods only when they refuse or fail, and no token issued when its
//! record cannot be written.

use std::collections::HashSet;

use serde_json::{json, Value};
use strata_identity::config::{Admins, Config};
use strata_identity::Identity;
use strata_shared::peer::PeerCred;
use strata_testkit::{call_in_process, CapturedRecord, RecordCapture};

const ADMIN: PeerCred = PeerCred {
    uid: 4242,
    gid: 4242,
    pid: Some(7),
};
const OTHER: PeerCred = PeerCred {
    uid: 4343,
    gid: 4343,
    pid: Some(8),
};

struct Fixture {
    id: Identity,
    records: RecordCapture,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            state_dir: dir.path().join("state"),
            runtime_dir: dir.path().join("run"),
            admins: Admins {
                uids: HashSet::from([ADMIN.uid]),
                gids: HashSet::new(),
            },
            reserved_uids: HashSet::new(),
            default_ttl: 600,
            max_ttl: 3600,
            grants_dir: dir.path().join("grants.d"),
            grant_roots: Vec::new(),
            node_id: "node-a".into(),
            fleet: None,
        };
        let records = RecordCapture::default();
        let id = Identity::open(config).unwrap().with_trail(records.writer());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        Self {
            id,
            records,
            rt,
            _dir: dir,
        }
    }

    fn call(
        &self,
        peer: PeerCred,
        method: &str,
        token: Option<&str>,
        params: Value,
    ) -> Result<Value, (u16, String)> {
        call_in_process(&self.rt, &self.id, peer, method, token, params)
    }

    fn take(&self) -> Vec<CapturedRecord> {
        self.records.take()
    }
}

fn grant() -> Value {
    json!({"service": "fs", "actions": ["read"], "path_prefix": "/srv/data"})
}

#[test]
fn issue_and_revoke_are_one_record_each_whatever_the_outcome() {
    let f = Fixture::new();
    let issued = f.call(ADMIN, "identity.issue", None, grant()).unwrap();
    let cap_id = issued["cap_id"].as_str().unwrap().to_string();
    let token = issued["token"].as_str().unwrap().to_string();
    let refused = f.call(OTHER, "identity.issue", None, grant()).unwrap_err();
    let malformed = f
        .call(ADMIN, "identity.issue", None, json!({"service": "fs"}))
        .unwrap_err();
    let by_other = f
        .call(OTHER, "identity.revoke", None, json!({"cap_id": cap_id}))
        .unwrap_err();
    f.call(
        OTHER,
        "identity.revoke",
        Some(&token),
        json!({"cap_id": cap_id}),
    )
    .unwrap();
    let got = f.take();
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(
        got[0],
        CapturedRecord {
            method: "identity.issue".into(),
            cap_id: Some(cap_id.clone()),
            path: Some("/srv/data".into()),
            authenticated: true,
            code: None,
            reason: "administrator".into(),
            reads: None,
        }
    );
    assert_eq!((got[1].code, &got[1].reason), (Some(3), &refused.1));
    assert!(!got[1].authenticated);
    assert_eq!((got[2].code, &got[2].reason), (Some(1), &malformed.1));
    assert_eq!(
        (got[3].code, got[3].cap_id.as_deref()),
        (Some(by_other.0), Some(cap_id.as_str()))
    );
    assert_eq!(by_other.0, 3);
    assert_eq!(
        (got[4].method.as_str(), got[4].code, got[4].reason.as_str()),
        ("identity.revoke", None, "holder")
    );
    assert!(got[4].authenticated);
}

#[test]
fn public_reads_are_recorded_only_when_refused() {
    let f = Fixture::new();
    f.call(OTHER, "identity.pubkey", None, json!({})).unwrap();
    f.call(OTHER, "identity.health", None, json!({})).unwrap();
    f.call(OTHER, "identity.revocations", None, json!({"since": 0}))
        .unwrap();
    f.call(OTHER, "identity.nonsense", None, json!({}))
        .unwrap_err();
    assert!(f.take().is_empty());
    let (code, message) = f
        .call(
            OTHER,
            "identity.verify",
            None,
            json!({"token": "v2.public.forged"}),
        )
        .unwrap_err();
    assert_eq!(code, 2);
    let got = f.take();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].code, &got[0].reason), (Some(2), &message));
    // introspect, verify's v0.3.2 name, follows the same rule.
    let (code, _) = f
        .call(
            OTHER,
            "identity.introspect",
            None,
            json!({"token": "v2.public.forged"}),
        )
        .unwrap_err();
    assert_eq!(code, 2);
    let got = f.take();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].method.as_str(), got[0].code),
        ("identity.introspect", Some(2))
    );
}

#[test]
fn no_token_is_issued_when_its_record_cannot_be_written() {
    let f = Fixture::new();
    f.records.set_broken(Some("disk full"));
    let (code, message) = f.call(ADMIN, "identity.issue", None, grant()).unwrap_err();
    assert_eq!(code, 5);
    assert!(message.contains("disk full"), "{message}");
    // Public reads need no record and still work.
    f.call(OTHER, "identity.pubkey", None, json!({})).unwrap();
    f.records.set_broken(None);
    f.call(ADMIN, "identity.issue", None, grant()).unwrap();
    assert_eq!(f.take().len(), 1);
}
