//! strata-fleet against a real etcd member: identity's writes (batched
//! revocations with their leases, sweeping expired records, retracting a
//! node's old key) and the connection over TLS with a client certificate,
//! as `STRATA_FLEET_ETCD_{CA,CERT,KEY}_FILE` configure it (certificates made
//! here with openssl).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_fleet::config::{FleetConfig, Tls};
use strata_fleet::publish::{self, Leases, LEASE_SLACK_SECS};
use strata_fleet::store::{connect, KeyRecord, RevocationRecord};

/// One etcd member, alone in its cluster, in `dir`.
struct Member {
    child: Child,
    endpoint: String,
}

impl Member {
    fn start(dir: &Path, scheme: &str, extra: &[&str]) -> Self {
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("{scheme}://127.0.0.1:{client}");
        let child = Command::new("etcd")
            .current_dir(dir)
            .args([
                "--name=m0",
                "--data-dir=data",
                &format!("--listen-client-urls={endpoint}"),
                &format!("--advertise-client-urls={endpoint}"),
                &format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                &format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
                &format!("--initial-cluster=m0=http://127.0.0.1:{peer}"),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        Self { child, endpoint }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects, retrying while the member starts.
async fn connected(config: &FleetConfig) -> strata_fleet::Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut c) = connect(config).await {
            if c.put("/strata/probe", "1", None).await.is_ok() {
                return c;
            }
        }
        assert!(Instant::now() < deadline, "etcd never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=strata test CA",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, cn) in [("server", "127.0.0.1"), ("client", "strata-fs")] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(endpoint: &str, dir: &Path, with_client_cert: bool) -> FleetConfig {
    FleetConfig {
        name: "tls".into(),
        node_id: "node-a".into(),
        root: strata_shared::token::keypair_from_seed(&[1; 32]).pk,
        endorsement_file: None,
        endpoints: vec![endpoint.into()],
        tls: Tls {
            ca_file: Some(dir.join("ca.pem")),
            cert_file: with_client_cert.then(|| dir.join("client.pem")),
            key_file: with_client_cert.then(|| dir.join("client.key")),
        },
        max_staleness: Duration::from_secs(5),
    }
}

#[test]
#[ignore = "needs etcd (Debian's etcd-server) and openssl; scripts/test-all.sh installs them"]
fn etcd_over_tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    let member = Member::start(
        d,
        "https",
        &[
            "--cert-file=server.pem",
            "--key-file=server.key",
            "--trusted-ca-file=ca.pem",
            "--client-cert-auth",
        ],
    );
    let endpoint = member.endpoint.clone();
    block(async {
        // With the client certificate: a put and a get go through.
        let mut c = connected(&config(&endpoint, d, true)).await;
        c.put("/strata/tls/probe", "1", None).await.unwrap();
        let got = c.get("/strata/tls/probe", None).await.unwrap();
        assert_eq!(got.kvs()[0].value(), b"1");
        // Without it, etcd refuses the connection.
        let bare = config(&endpoint, d, false);
        let refused = async {
            let mut c = connect(&bare).await?;
            c.put("/strata/tls/probe", "2", None)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        assert!(
            refused.is_err(),
            "a client without a certificate got through"
        );
    });
}

fn plain_config(endpoint: &str) -> FleetConfig {
    FleetConfig {
        endpoints: vec![endpoint.into()],
        tls: Tls::default(),
        ..config(endpoint, Path::new("/nonexistent"), false)
    }
}

#[test]
#[ignore = "needs etcd (Debian's etcd-server); scripts/test-all.sh installs it"]
fn revocations_are_committed_with_leases_swept_when_expired_and_old_keys_retracted() {
    let dir = tempfile::tempdir().unwrap();
    let member = Member::start(dir.path(), "http", &[]);
    let config = plain_config(&member.endpoint);
    block(async {
        let mut c = connected(&config).await;
        let now = strata_shared::capability::now();
        // 150 revocations, more than one transaction's worth, one already
        // expired (skipped).
        let mut entries: Vec<(String, i64)> = (0..150)
            .map(|i| (format!("{i:032x}"), now + 600 + i))
            .collect();
        entries.push((format!("{:032x}", 999), now - 1));
        let mut leases = Leases::default();
        for batch in entries.chunks(publish::BATCH) {
            publish::commit_revocations(&mut c, &mut leases, &config, batch, now)
                .await
                .unwrap();
        }
        let (records, _) =
            strata_fleet::store::read_prefix(&mut c, &config.revoked_prefix(), None, 0)
                .await
                .unwrap();
        assert_eq!(records.len(), 150);
        for kv in &records {
            let r: RevocationRecord = serde_json::from_slice(kv.value()).unwrap();
            assert_eq!(r.by, "node-a");
            let ttl = c.lease_time_to_live(kv.lease(), None).await.unwrap().ttl();
            assert!(
                now + ttl > r.exp,
                "lease ends before the token: {r:?} ttl {ttl}"
            );
        }

        // Records whose tokens expired long ago (their leases kept alive by
        // leader changes) are swept; the others stay.
        for (i, exp) in [(500, now - LEASE_SLACK_SECS - 10), (501, now - 5)] {
            let r = RevocationRecord {
                cap_id: format!("{i:032x}"),
                exp,
                by: "node-z".into(),
            };
            let key = format!("{}{}", config.revoked_prefix(), r.cap_id);
            c.put(key, serde_json::to_vec(&r).unwrap(), None)
                .await
                .unwrap();
        }
        assert_eq!(
            publish::sweep_expired(&mut c, &config, now).await.unwrap(),
            1
        );
        for (id, left) in [(500, 0), (501, 1)] {
            let key = format!("{}{id:032x}", config.revoked_prefix());
            assert_eq!(c.get(key, None).await.unwrap().kvs().len(), left, "{id}");
        }

        // This node's record naming another key (before a rotation) is
        // removed; one naming the current key stays.
        let key = format!("{}node-a", config.keys_prefix());
        let record = |kid: &str| {
            serde_json::to_vec(&KeyRecord {
                node_id: "node-a".into(),
                kid: kid.into(),
                public_key: String::new(),
                endorsement: String::new(),
            })
            .unwrap()
        };
        c.put(key.as_str(), record("old"), None).await.unwrap();
        assert_eq!(
            publish::retract_stale_key(&mut c, &config, "new")
                .await
                .unwrap(),
            Some("old".into())
        );
        assert!(c.get(key.as_str(), None).await.unwrap().kvs().is_empty());
        c.put(key.as_str(), record("new"), None).await.unwrap();
        assert_eq!(
            publish::retract_stale_key(&mut c, &config, "new")
                .await
                .unwrap(),
            None
        );
        assert_eq!(c.get(key.as_str(), None).await.unwrap().kvs().len(), 1);
    });
}

#[test]
#[ignore = "needs etcd (Debian's etcd-server); scripts/test-all.sh installs it"]
fn a_member_that_does_not_answer_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let member = Member::start(dir.path(), "http", &[]);
    // A port nothing listens on, first in the list.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let config = FleetConfig {
        endpoints: vec![dead, member.endpoint.clone()],
        ..plain_config(&member.endpoint)
    };
    block(async {
        connected(&plain_config(&member.endpoint)).await;
        // Whichever member each call starts with, it ends on the live one.
        for _ in 0..4 {
            let mut c = connect(&config).await.expect("the live member is found");
            c.put("/strata/probe", "2", None).await.unwrap();
        }
    });
}
