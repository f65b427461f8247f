//! What the fleet keeps in etcd, and the connection to it.
//!
//! etcd holds two kinds of records under `/strata/<fleet>/`, both JSON:
//! `keys/<node id>` ([`KeyRecord`]) and `revoked/<cap_id>`
//! ([`RevocationRecord`]). Neither is trusted for authority: a key counts
//! only with an endorsement that verifies with the root key each node is
//! configured with, and a revocation can only take a right away.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, KeyValue, TlsOptions,
};
use serde::{Deserialize, Serialize};

use crate::config::FleetConfig;

/// Longest an etcd request may take before it counts as failed. Well under
/// the default `maxStaleness` (5 s), so that a slow member is noticed and
/// another one tried before fleet tokens are refused.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest record read from etcd; a real one is under 1 KiB. Anything
/// larger is ignored (and logged): etcd is not trusted to be reasonable.
pub const MAX_RECORD: usize = 8192;

/// `/strata/<fleet>/keys/<node id>`: a node's public key with the root's
/// endorsement of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyRecord {
    pub node_id: String,
    pub kid: String,
    pub public_key: String,
    pub endorsement: String,
}

/// `/strata/<fleet>/revoked/<cap_id>`: a revoked capability, kept until its
/// token expires (`exp`, Unix seconds). `by` is the node that revoked it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RevocationRecord {
    pub cap_id: String,
    pub exp: i64,
    pub by: String,
}

/// Which member the next [`connect`] tries first: each connection starts
/// one further along the list.
static NEXT_MEMBER: AtomicUsize = AtomicUsize::new(0);

/// Connects to one of the fleet's etcd members that is part of a quorum,
/// with TLS when configured.
///
/// One member at a time, each call starting at the next one, and only one
/// that answers a linearizable read: a client spread over every endpoint
/// kept sending to a stopped member, and one connected to a member cut off
/// from the others would wait on it forever. A caller reconnects after
/// any failure, so a dead or isolated member is left within a request
/// timeout or two.
///
/// # Errors
/// A TLS file that cannot be read, or no member in a quorum reachable: the
/// last member's error.
pub async fn connect(config: &FleetConfig) -> Result<Client, String> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(1), REQUEST_TIMEOUT)
        .with_keep_alive_while_idle(true);
    if config.endpoints.iter().any(|e| e.starts_with("https://")) {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &config.tls.ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        options = options.with_tls(tls);
    }
    let n = config.endpoints.len();
    let first = NEXT_MEMBER.fetch_add(1, Ordering::Relaxed);
    let mut last_error = String::from("no endpoint");
    for i in 0..n {
        let endpoint = &config.endpoints[(first + i) % n];
        let attempt = async {
            let mut client = Client::connect([endpoint], Some(options.clone())).await?;
            client
                .get(
                    config.prefix(),
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await?;
            Ok::<_, etcd_client::Error>(client)
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(e)) => last_error = format!("etcd at {endpoint}: {e}"),
            Err(_) => last_error = format!("etcd at {endpoint}: no answer"),
        }
    }
    Err(last_error)
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Records read at a time, so that no answer nears gRPC's message size
/// limit however many revocations there are.
const PAGE: i64 = 500;

/// Every record under `prefix` (modified at or after `min_mod`, when > 0),
/// at `revision` or the current one, page by page. Returns them with the
/// revision read.
///
/// # Errors
/// etcd's refusal or silence.
pub async fn read_prefix(
    client: &mut Client,
    prefix: &str,
    revision: Option<i64>,
    min_mod: i64,
) -> Result<(Vec<KeyValue>, i64), String> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("a prefix is not empty") += 1;
    let mut from = prefix.as_bytes().to_vec();
    let mut revision = revision;
    let mut records = Vec::new();
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if let Some(r) = revision {
            options = options.with_revision(r);
        }
        if min_mod > 0 {
            options = options.with_min_mod_revision(min_mod);
        }
        let mut resp = client
            .get(from.clone(), Some(options))
            .await
            .map_err(|e| format!("reading {prefix}: {e}"))?;
        let read_at = resp.header().map_or(0, |h| h.revision());
        let revision = *revision.get_or_insert(read_at);
        let more = resp.more();
        let page = resp.take_kvs();
        match page.last() {
            Some(last) if more => {
                from = last.key().to_vec();
                from.push(0);
                records.extend(page);
            }
            _ => {
                records.extend(page);
                return Ok((records, revision));
            }
        }
    }
}
