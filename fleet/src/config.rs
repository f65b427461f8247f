//! A node's fleet settings, read once from the environment at start
//! (docs/configuration.md, "Fleet"). identity and fs read the same ones.

use std::path::PathBuf;
use std::time::Duration;

use ed25519_compact::PublicKey;
use strata_shared::config::{self, ConfigError};
use strata_shared::fleet::{is_fleet_name, parse_public_key, FLEET_NAME_RULE};

/// Largest `STRATA_FLEET_MAX_STALENESS_SECS`: an hour. Beyond that a node
/// cut off from etcd would honour revoked fleet tokens for longer than most
/// tokens live.
pub const MAX_STALENESS_CEILING: u64 = 3600;

/// How this node reaches its fleet.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// `STRATA_FLEET_NAME`: the fleet, in etcd keys and in the `fleet:<name>`
    /// audience.
    pub name: String,
    /// `STRATA_NODE_ID`: this node, as its endorsement names it.
    pub node_id: String,
    /// `STRATA_FLEET_ROOT_PUBLIC_KEY`: the only key trusted to endorse node
    /// keys. Configured on each node, never read from etcd.
    pub root: PublicKey,
    /// `STRATA_FLEET_ENDORSEMENT_FILE`: this node's endorsement (identity
    /// publishes it; fs does not need it).
    pub endorsement_file: Option<PathBuf>,
    /// `STRATA_FLEET_ETCD_ENDPOINTS`: `http(s)://host:port`, comma-separated.
    pub endpoints: Vec<String>,
    /// `STRATA_FLEET_ETCD_CA_FILE`, `_CERT_FILE`, `_KEY_FILE`.
    pub tls: Tls,
    /// `STRATA_FLEET_MAX_STALENESS_SECS` (default 5): fleet tokens are refused
    /// once etcd has not been heard from for this long.
    pub max_staleness: Duration,
}

/// TLS files for etcd: a CA to check the members by, and a client
/// certificate with its key when the members ask for one.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl FleetConfig {
    /// The fleet settings, or `None` when `STRATA_FLEET_NAME` is unset or
    /// empty (a node on its own).
    ///
    /// # Errors
    /// The first variable whose value cannot be used, naming it.
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        let name = std::env::var("STRATA_FLEET_NAME").unwrap_or_default();
        let name = name.trim();
        if name.is_empty() {
            return Ok(None);
        }
        let bad = |var: &'static str, value: &str, expected: String| ConfigError {
            var,
            value: value.into(),
            expected,
        };
        if !is_fleet_name(name) {
            return Err(bad("STRATA_FLEET_NAME", name, FLEET_NAME_RULE.into()));
        }
        let root_text = std::env::var("STRATA_FLEET_ROOT_PUBLIC_KEY").unwrap_or_default();
        let root = parse_public_key(&root_text).map_err(|e| {
            bad(
                "STRATA_FLEET_ROOT_PUBLIC_KEY",
                &root_text,
                format!("{e}: the public_key that `strata-ctl fleet init` printed"),
            )
        })?;
        let endpoints = config::env_list("STRATA_FLEET_ETCD_ENDPOINTS", ',');
        if endpoints.is_empty() {
            return Err(bad(
                "STRATA_FLEET_ETCD_ENDPOINTS",
                "",
                "a fleet needs etcd: give its members as http(s)://host:port, comma-separated"
                    .into(),
            ));
        }
        for e in &endpoints {
            check_endpoint(e).map_err(|why| bad("STRATA_FLEET_ETCD_ENDPOINTS", e, why))?;
        }
        let path = |var: &'static str| -> Option<PathBuf> {
            std::env::var(var)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| PathBuf::from(v.trim()))
        };
        let tls = Tls {
            ca_file: path("STRATA_FLEET_ETCD_CA_FILE"),
            cert_file: path("STRATA_FLEET_ETCD_CERT_FILE"),
            key_file: path("STRATA_FLEET_ETCD_KEY_FILE"),
        };
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err(bad(
                "STRATA_FLEET_ETCD_KEY_FILE",
                &format!("{:?}", tls.key_file),
                "a client certificate needs its key: set both STRATA_FLEET_ETCD_CERT_FILE and \
                 STRATA_FLEET_ETCD_KEY_FILE, or neither"
                    .into(),
            ));
        }
        let secure = endpoints.iter().any(|e| e.starts_with("https://"));
        if secure && endpoints.iter().any(|e| e.starts_with("http://")) {
            // One connection setting serves every member: TLS for some and
            // not others would be applied to all, or to none.
            return Err(bad(
                "STRATA_FLEET_ETCD_ENDPOINTS",
                &endpoints.join(","),
                "every endpoint is http:// or every one is https://, not a mix".into(),
            ));
        }
        if !secure && (tls.ca_file.is_some() || tls.cert_file.is_some()) {
            return Err(bad(
                "STRATA_FLEET_ETCD_ENDPOINTS",
                &endpoints.join(","),
                "TLS files are set but every endpoint is http://: use https:// endpoints".into(),
            ));
        }
        let staleness = config::env_u64(
            "STRATA_FLEET_MAX_STALENESS_SECS",
            5,
            1,
            MAX_STALENESS_CEILING,
        )?;
        Ok(Some(Self {
            name: name.into(),
            node_id: config::node_id()?,
            root,
            endorsement_file: path("STRATA_FLEET_ENDORSEMENT_FILE"),
            endpoints,
            tls,
            max_staleness: Duration::from_secs(staleness),
        }))
    }

    /// The audience that makes a token a fleet token: `fleet:<name>`.
    pub fn audience(&self) -> String {
        audience(&self.name)
    }

    /// `/strata/<fleet>/`: everything the fleet keeps in etcd.
    pub fn prefix(&self) -> String {
        format!("/strata/{}/", self.name)
    }

    /// `/strata/<fleet>/keys/`: one record per node, its key and endorsement.
    pub fn keys_prefix(&self) -> String {
        format!("/strata/{}/keys/", self.name)
    }

    /// `/strata/<fleet>/revoked/`: one record per revoked capability.
    pub fn revoked_prefix(&self) -> String {
        format!("/strata/{}/revoked/", self.name)
    }
}

/// `fleet:<name>`, the audience of tokens every node of fleet `name` serves.
pub fn audience(name: &str) -> String {
    format!("fleet:{name}")
}

/// An etcd endpoint: `http://` or `https://`, a host and a port, nothing
/// after.
fn check_endpoint(e: &str) -> Result<(), String> {
    let rest = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"))
        .ok_or("an endpoint starts with http:// or https://")?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or("an endpoint names its port, e.g. http://10.0.0.1:2379")?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
    if port_ok && host_ok {
        Ok(())
    } else {
        Err("an endpoint is http(s)://host:port with nothing after the port".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        for good in [
            "http://10.0.0.1:2379",
            "https://etcd-1.example:2379",
            "http://[::1]:2379",
        ] {
            assert!(check_endpoint(good).is_ok(), "{good}");
        }
        for bad in [
            "10.0.0.1:2379",
            "http://10.0.0.1",
            "http://10.0.0.1:0",
            "http://10.0.0.1:2379/x",
            "unix:///run/etcd.sock",
            "http://:2379",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_and_audience() {
        let c = FleetConfig {
            name: "prod".into(),
            node_id: "node-1".into(),
            root: ed25519_compact::KeyPair::from_seed([1; 32].into()).pk,
            endorsement_file: None,
            endpoints: vec!["http://127.0.0.1:2379".into()],
            tls: Tls::default(),
            max_staleness: Duration::from_secs(5),
        };
        assert_eq!(c.audience(), "fleet:prod");
        assert_eq!(c.keys_prefix(), "/strata/prod/keys/");
        assert_eq!(c.revoked_prefix(), "/strata/prod/revoked/");
        assert!(c.keys_prefix().starts_with(&c.prefix()));
    }
}
