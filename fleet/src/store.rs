//! What the fleet keeps in etcd, and the connection to it.
//!
//! etcd holds two kinds of records under `/strata/<fleet>/`, both JSON:
//! `keys/<node id>` ([`KeyRecord`]) and `revoked/<cap_id>`
//! ([`RevocationRecord`]). Neither is trusted for authority: a key counts
//! only with an endorsement that verifies with the root key each node is
//! configured with, and a revocation can only take a right away.

use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
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

/// Connects to the fleet's etcd members, with TLS when configured.
///
/// # Errors
/// A TLS file that cannot be read, or no member reachable.
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
    Client::connect(&config.endpoints, Some(options))
        .await
        .map_err(|e| format!("cannot reach etcd at {}: {e}", config.endpoints.join(",")))
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}
