//! identity's settings, from the environment (see docs/configuration.md).

use std::collections::HashSet;
use std::path::PathBuf;

use strata_shared::admins::lookup_user;
pub use strata_shared::admins::{member_now, Admins};
use strata_shared::config::{env_list, env_u64, runtime_dir, ConfigError};

/// Longest token lifetime anyone may configure: 30 days.
pub const TTL_CEILING: u64 = 30 * 24 * 3600;

/// Everything identity reads at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Holds `signing.key` and `revocations.json`.
    pub state_dir: PathBuf,
    /// Where `identity.pub` is published.
    pub runtime_dir: PathBuf,
    pub admins: Admins,
    /// Users besides administrators who may use the reserved connections
    /// (`STRATA_RESERVED_USERS`): fs's own sync connection.
    pub reserved_uids: HashSet<u32>,
    pub default_ttl: u64,
    pub max_ttl: u64,
    /// Where the grant files are (`STRATA_GRANTS_DIR`, default
    /// `/etc/strata/grants.d`; see docs/grants.md).
    pub grants_dir: PathBuf,
    /// The directories fs serves, when identity is told them
    /// (`STRATA_GRANT_ROOTS`, colon-separated, as `STRATA_FS_ROOTS`): an fs
    /// grant whose prefix lies outside every one is refused at load, since
    /// every request through it would be. Empty: not checked.
    pub grant_roots: Vec<String>,
    /// This node's id (`STRATA_NODE_ID`, default the host name): identity
    /// signs as `identity@<node id>`, the `iss` claim.
    pub node_id: String,
    /// The fleet this node is in (`STRATA_FLEET_*`, docs/fleet.md), if any.
    pub fleet: Option<strata_fleet::FleetConfig>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let state_dir = std::env::var_os("STRATA_STATE_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                // systemd may list several directories, colon-separated.
                std::env::var("STATE_DIRECTORY")
                    .ok()
                    .and_then(|v| v.split(':').next().map(PathBuf::from))
                    .filter(|p| !p.as_os_str().is_empty())
            })
            .unwrap_or_else(|| PathBuf::from("/var/lib/strata/identity"));
        let max_ttl = env_u64("STRATA_TOKEN_MAX_TTL", 86_400, 1, TTL_CEILING)?;
        let default_ttl = env_u64("STRATA_TOKEN_DEFAULT_TTL", 3_600.min(max_ttl), 1, max_ttl)?;
        Ok(Self {
            state_dir,
            runtime_dir: runtime_dir(),
            admins: Admins::from_env()?,
            reserved_uids: env_list("STRATA_RESERVED_USERS", ',')
                .into_iter()
                .filter_map(|name| {
                    let uid = lookup_user(&name);
                    if uid.is_none() {
                        tracing::warn!("STRATA_RESERVED_USERS: no user named {name:?}; skipped");
                    }
                    uid
                })
                .collect(),
            default_ttl,
            max_ttl,
            grants_dir: std::env::var_os("STRATA_GRANTS_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/etc/strata/grants.d")),
            grant_roots: grant_roots()?,
            node_id: strata_shared::config::node_id()?,
            fleet: strata_fleet::FleetConfig::from_env()?,
        })
    }
}

/// `STRATA_GRANT_ROOTS`: colon-separated normalized absolute paths.
fn grant_roots() -> Result<Vec<String>, ConfigError> {
    let roots = env_list("STRATA_GRANT_ROOTS", ':');
    for root in &roots {
        strata_shared::paths::check_prefix(root).map_err(|e| ConfigError {
            var: "STRATA_GRANT_ROOTS",
            value: root.clone(),
            expected: e.message,
        })?;
    }
    Ok(roots)
}
