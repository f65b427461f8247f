//! The connection to etcd over TLS with a client certificate, as
//! `STRATA_FLEET_ETCD_{CA,CERT,KEY}_FILE` configure it: a real etcd member
//! that requires client certificates, and certificates made here with
//! openssl.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_fleet::config::{FleetConfig, Tls};
use strata_fleet::store::connect;

struct Member(Child);

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("https://127.0.0.1:{client}");
    let _member = Member(
        Command::new("etcd")
            .current_dir(d)
            .args([
                "--name=m0",
                "--data-dir=data",
                &format!("--listen-client-urls={endpoint}"),
                &format!("--advertise-client-urls={endpoint}"),
                &format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                &format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
                &format!("--initial-cluster=m0=http://127.0.0.1:{peer}"),
                "--cert-file=server.pem",
                "--key-file=server.key",
                "--trusted-ca-file=ca.pem",
                "--client-cert-auth",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts"),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // With the client certificate: a put and a get go through.
        let with_cert = config(&endpoint, d, true);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut c = loop {
            match connect(&with_cert).await {
                Ok(mut c) => {
                    if c.put("/strata/tls/probe", "1", None).await.is_ok() {
                        break c;
                    }
                }
                Err(e) => assert!(Instant::now() < deadline, "{e}"),
            }
            assert!(Instant::now() < deadline, "etcd over TLS never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
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
