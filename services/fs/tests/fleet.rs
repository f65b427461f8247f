//! Two nodes of a fleet on one machine, each the real identity and fs
//! binaries on activation fds, sharing a real three-member etcd cluster on
//! loopback (docs/fleet.md). The three-container test under systemd
//! (scripts/fleet-test.sh) covers the same over a network, with
//! partitions; this one runs in seconds.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use strata_shared::client::Client;
use strata_shared::fleet::{encode_public_key, endorse};
use strata_shared::token::keypair_from_seed;
use strata_testkit::{start_fs, start_identity, ActivatedService};

const NEEDS_ETCD: &str = "needs etcd (Debian's etcd-server); scripts/test-all.sh installs it";

/// A three-member etcd cluster on loopback, in its own directory.
struct Etcd {
    members: Vec<Child>,
    args: Vec<Vec<String>>,
    endpoints: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    fn start(dir: &Path) -> Option<Self> {
        Command::new("etcd").arg("--version").output().ok()?;
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut args = Vec::new();
        let mut endpoints = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let c = format!("http://127.0.0.1:{client}");
            let p = format!("http://127.0.0.1:{peer}");
            args.push(vec![
                format!("--name=m{i}"),
                format!("--data-dir={}", dir.join(format!("m{i}")).display()),
                format!("--listen-client-urls={c}"),
                format!("--advertise-client-urls={c}"),
                format!("--listen-peer-urls={p}"),
                format!("--initial-advertise-peer-urls={p}"),
                format!("--initial-cluster={cluster}"),
                "--initial-cluster-token=strata-fleet-test".into(),
                "--initial-cluster-state=new".into(),
            ]);
            endpoints.push(c);
        }
        let mut etcd = Self {
            members: Vec::new(),
            args,
            endpoints,
        };
        for i in 0..3 {
            let child = etcd.spawn(i);
            etcd.members.push(child);
        }
        Some(etcd)
    }

    fn spawn(&self, i: usize) -> Child {
        Command::new("etcd")
            .args(&self.args[i])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts")
    }

    fn stop_all(&mut self) {
        for m in &mut self.members {
            let _ = m.kill();
            let _ = m.wait();
        }
    }

    fn start_all(&mut self) {
        self.members = (0..3).map(|i| self.spawn(i)).collect();
    }
}

impl Etcd {
    fn block<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect(&self.endpoints, None)
            .await
            .unwrap()
    }

    fn put(&self, key: &str, value: &str) {
        self.block(async {
            self.client().await.put(key, value, None).await.unwrap();
        })
    }

    /// The lease of `key` and its remaining TTL in seconds.
    fn lease_of(&self, key: &str) -> (i64, i64) {
        self.block(async {
            let mut c = self.client().await;
            let r = c.get(key, None).await.unwrap();
            let lease = r.kvs().first().expect("the key is there").lease();
            let ttl = c.lease_time_to_live(lease, None).await.unwrap().ttl();
            (lease, ttl)
        })
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// One node: identity and fs with the fleet's settings.
struct Node {
    identity: ActivatedService,
    fs: ActivatedService,
    shared: PathBuf,
}

/// Both nodes serve one directory, `shared` (as two hosts might serve
/// replicas of one tree), so that a token of one is meaningful on the other.
fn node(
    base: &Path,
    shared: &Path,
    id: &str,
    seed: [u8; 32],
    root: &ed25519_compact::KeyPair,
    etcd: &Etcd,
) -> Node {
    let state = base.join("state");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&state)
        .unwrap();
    let key = state.join("signing.key");
    std::fs::write(&key, STANDARD.encode(seed)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir_all(shared.join("data")).unwrap();
    let pk = keypair_from_seed(&seed).pk;
    let endorsement = endorse(&root.sk, "test", id, &pk, 0, None).unwrap();
    let endorsement_file = base.join("endorsement");
    std::fs::write(&endorsement_file, endorsement).unwrap();
    let endpoints = etcd.endpoints.join(",");
    let root_pk = encode_public_key(&root.pk);
    let roots = shared.display().to_string();
    let envs = [
        ("STRATA_NODE_ID", id),
        ("STRATA_FLEET_NAME", "test"),
        ("STRATA_FLEET_ROOT_PUBLIC_KEY", root_pk.as_str()),
        (
            "STRATA_FLEET_ENDORSEMENT_FILE",
            endorsement_file.to_str().unwrap(),
        ),
        ("STRATA_FLEET_ETCD_ENDPOINTS", endpoints.as_str()),
        ("STRATA_FLEET_MAX_STALENESS_SECS", "2"),
        ("STRATA_GRANT_ROOTS", roots.as_str()),
        ("STRATA_FS_ROOTS", roots.as_str()),
    ];
    Node {
        identity: start_identity(base, &envs),
        fs: start_fs(base, &envs),
        shared: shared.to_path_buf(),
    }
}

impl Node {
    fn issue(&self, aud: Option<&str>) -> (String, String) {
        let mut params = json!({"service": "fs", "actions": ["stat"], "path_prefix": self.data(), "ttl_seconds": 600});
        if let Some(a) = aud {
            params["aud"] = json!(a);
        }
        let r = Client::connect(&self.identity.socket)
            .unwrap()
            .call("identity.issue", None, &params)
            .unwrap();
        let r = r.into_result().unwrap_or_else(|e| panic!("issue: {e:?}"));
        (
            r["token"].as_str().unwrap().into(),
            r["cap_id"].as_str().unwrap().into(),
        )
    }

    fn data(&self) -> String {
        self.shared.join("data").display().to_string()
    }

    /// fs.stat of `path` with `token`: Ok, or the error code and message.
    fn stat(&self, token: &str, path: &str) -> Result<(), (u16, String)> {
        let r = Client::connect(&self.fs.socket)
            .unwrap()
            .call("fs.stat", Some(token), &json!({"path": path}))
            .unwrap();
        r.into_result().map(drop).map_err(|e| (e.code, e.message))
    }

    fn health(&self) -> Value {
        Client::connect(&self.fs.socket)
            .unwrap()
            .call("fs.health", None, &json!({}))
            .unwrap()
            .into_result()
            .unwrap()
    }

    fn wait_fleet(&self, state: &str, nodes: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let h = self.health();
            let f = &h["fleet"];
            if f["state"] == state && f["nodes"].as_array().map_or(0, Vec::len) >= nodes {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "fleet never {state} with {nodes} nodes: {f}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A fleet token for `fs.stat` under `prefix`, signed by `key` and naming
/// `iss`: what only a node's identity should be able to make.
fn fleet_token_signed_by(key: &ed25519_compact::KeyPair, iss: &str, prefix: &str) -> String {
    use strata_shared::capability::{issue_addressed, Addressing, Audience, Grant};
    let now = strata_shared::capability::now();
    issue_addressed(
        &key.sk,
        &strata_shared::token::key_id(&key.pk),
        &Grant {
            cap_id: &strata_shared::random::id128(),
            service: "fs",
            actions: &["stat".to_string()],
            path_prefix: Some(prefix),
            holder: None,
            chain: &[],
            issued: now,
            expires: now + 60,
            rate_limit: None,
        },
        Some(&Addressing {
            iss,
            aud: &Audience(vec!["fleet:test".into()]),
        }),
    )
}

/// Polls until `f` holds, returning how long it took.
fn until(within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "not within {within:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

#[test]
#[ignore = "needs etcd (Debian's etcd-server); scripts/test-all.sh installs it"]
fn fleet_tokens_cross_nodes_revocations_reach_every_node_and_a_cut_off_node_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut etcd) = Etcd::start(&dir.path().join("etcd")) else {
        panic!("{NEEDS_ETCD}");
    };
    let root = keypair_from_seed(&[9; 32]);
    let shared = dir.path().join("srv");
    let a = node(
        &dir.path().join("a"),
        &shared,
        "node-a",
        [1; 32],
        &root,
        &etcd,
    );
    let b = node(
        &dir.path().join("b"),
        &shared,
        "node-b",
        [2; 32],
        &root,
        &etcd,
    );
    a.wait_fleet("fresh", 2, Duration::from_secs(20));
    b.wait_fleet("fresh", 2, Duration::from_secs(20));

    // A fleet token from node a is served by node b's fs.
    let (fleet_token, fleet_cap) = a.issue(Some("fleet:test"));
    let shared = a.data();
    assert_eq!(a.stat(&fleet_token, &shared), Ok(()));
    assert_eq!(b.stat(&fleet_token, &shared), Ok(()));

    // A node-local token from a is not b's to serve.
    let (local_token, _) = a.issue(None);
    let e = b.stat(&local_token, &shared).unwrap_err();
    assert_eq!(e.0, 2, "{e:?}");
    assert!(e.1.contains("signed by node node-a"), "{e:?}");

    // A revocation made on b reaches a within a second.
    let r = Client::connect(&b.identity.socket)
        .unwrap()
        .call("identity.revoke", None, &json!({"cap_id": fleet_cap}))
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(r["status"], "revoked");
    let took = until(Duration::from_secs(1), || {
        a.stat(&fleet_token, &shared)
            .is_err_and(|e| e.1.contains("revoked"))
    });
    eprintln!("revocation on b refused on a after {took:?}");
    assert!(b
        .stat(&fleet_token, &shared)
        .unwrap_err()
        .1
        .contains("revoked"));

    // The record carries a lease that outlives the token.
    let (lease, ttl) = etcd.lease_of(&format!("/strata/test/revoked/{fleet_cap}"));
    assert_ne!(lease, 0, "the revocation record has no lease");
    assert!(ttl >= 600 - 5, "lease TTL {ttl} s, token lives 600 s");

    // A key put in etcd by hand, without the root's endorsement, is
    // ignored: a token signed by it is refused as from an unknown key.
    let rogue = keypair_from_seed(&[66; 32]);
    let other_root = keypair_from_seed(&[67; 32]);
    let record = json!({
        "node_id": "rogue",
        "kid": strata_shared::token::key_id(&rogue.pk),
        "public_key": encode_public_key(&rogue.pk),
        "endorsement": endorse(&other_root.sk, "test", "rogue", &rogue.pk, 0, None).unwrap(),
    });
    etcd.put("/strata/test/keys/rogue", &record.to_string());
    let forged = fleet_token_signed_by(&rogue, "identity@rogue", &shared);
    std::thread::sleep(Duration::from_millis(300));
    for n in [&a, &b] {
        let e = n.stat(&forged, &shared).unwrap_err();
        assert_eq!(e.0, 2, "{e:?}");
        assert!(e.1.contains("unknown key"), "{e:?}");
    }
    assert_eq!(b.health()["fleet"]["nodes"], json!(["node-a", "node-b"]));
    // Signed by node a's (endorsed) key, but naming node b as its issuer:
    // refused, so the audit trail never names the wrong signer.
    let a_key = keypair_from_seed(&[1; 32]);
    let misnamed = fleet_token_signed_by(&a_key, "identity@node-b", &shared);
    let e = b.stat(&misnamed, &shared).unwrap_err();
    assert_eq!(e.0, 2, "{e:?}");
    assert!(e.1.contains("says it was issued by"), "{e:?}");

    // etcd gone: node-local tokens still served, fleet tokens refused with
    // code 6 once maxStaleness (2 s) has passed.
    let (fleet2, _) = a.issue(Some("fleet:test"));
    assert_eq!(a.stat(&fleet2, &shared), Ok(()));
    etcd.stop_all();
    let cut = Instant::now();
    let took = until(Duration::from_secs(5), || {
        a.stat(&fleet2, &shared).is_err_and(|e| e.0 == 6)
    });
    eprintln!(
        "fleet tokens refused {:?} after etcd stopped",
        cut.elapsed()
    );
    assert!(took >= Duration::from_millis(1000), "{took:?}: too early");
    let e = a.stat(&fleet2, &shared).unwrap_err();
    assert!(e.1.contains("fleet test"), "{e:?}");
    assert_eq!(a.health()["fleet"]["state"], "stale");
    assert_eq!(a.stat(&local_token, &shared), Ok(()));

    // A revocation made while etcd is down: in force on its node at once,
    // answered code 6 (not acknowledged by the fleet), and committed by
    // identity once etcd is back.
    let (fleet3, cap3) = b.issue(Some("fleet:test"));
    let r = Client::connect(&b.identity.socket)
        .unwrap()
        .call("identity.revoke", None, &json!({"cap_id": cap3}))
        .unwrap()
        .into_result()
        .unwrap_err();
    assert_eq!(r.code, 6, "{r:?}");
    assert!(
        r.message.contains("not yet committed to fleet test"),
        "{r:?}"
    );
    assert!(b.stat(&fleet3, &shared).unwrap_err().1.contains("revoked"));

    // Back: served again, and everything acknowledged before is still in
    // force (etcd kept it on disk).
    etcd.start_all();
    let took = until(Duration::from_secs(15), || a.stat(&fleet2, &shared).is_ok());
    eprintln!("fleet tokens served again {took:?} after etcd restarted");
    assert!(a
        .stat(&fleet_token, &shared)
        .unwrap_err()
        .1
        .contains("revoked"));
    a.wait_fleet("fresh", 2, Duration::from_secs(5));
    until(Duration::from_secs(10), || {
        a.stat(&fleet3, &shared)
            .is_err_and(|e| e.1.contains("revoked"))
    });

    // A restarted fs reads the fleet before it answers its first fleet
    // token (socket activation starts fs with that very request), and
    // every revocation is still in force.
    let mut a = a;
    a.fs.restart().unwrap();
    a.fs.wait_notify("READY=1", Duration::from_secs(10))
        .unwrap();
    assert_eq!(a.stat(&fleet2, &shared), Ok(()));
    assert!(a
        .stat(&fleet_token, &shared)
        .unwrap_err()
        .1
        .contains("revoked"));
    assert!(a.stat(&fleet3, &shared).unwrap_err().1.contains("revoked"));
}
