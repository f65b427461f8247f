//! fs settings, read once from the environment at start.
//!
//! Every variable is documented in `docs/configuration.md`. A value that
//! cannot be used stops the service with a message naming the variable,
//! rather than letting it run with something the operator did not mean.

use std::path::PathBuf;
use std::time::Duration;

use strata_shared::config::{self, ConfigError};
use strata_shared::paths;

/// Largest `STRATA_FS_MAX_HANDLES` accepted: every handle is an open file
/// descriptor, and the kernel's own ceiling (`fs.nr_open`) is about a million.
pub const MAX_HANDLES_CEILING: u64 = 1 << 20;

/// Largest `STRATA_FS_MAX_RATE_BUCKETS` accepted: about 400 MiB of buckets.
pub const MAX_RATE_BUCKETS_CEILING: u64 = 1 << 22;

/// What fs serves and how much it may hold.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// Directories a token's `path_prefix` must lie under
    /// (`STRATA_FS_ROOTS`, colon-separated, default `/srv`). Normalised: no
    /// trailing `/` except for `/` itself.
    pub roots: Vec<String>,
    /// Open handles in total (`STRATA_FS_MAX_HANDLES`).
    pub max_handles: usize,
    /// Open handles per capability (`STRATA_FS_MAX_HANDLES_PER_CAP`).
    pub max_handles_per_cap: usize,
    /// A handle unused for this long is closed (`STRATA_FS_HANDLE_IDLE_SECS`).
    pub handle_idle: Duration,
    /// Whether regular files with several hard links may be opened
    /// (`STRATA_FS_ALLOW_HARDLINKS`).
    pub allow_hardlinks: bool,
    /// Whether `fs.list` results are cached (`STRATA_FS_LIST_CACHE`, default
    /// on; see [`crate::list_cache`]).
    pub list_cache: bool,
    /// Rate-limited capabilities tracked at once
    /// (`STRATA_FS_MAX_RATE_BUCKETS`, see [`crate::rates`]).
    pub max_rate_buckets: usize,
    /// Where identity answers (`$STRATA_RUNTIME_DIR/identity.sock`).
    pub identity_socket: PathBuf,
    /// This node's id (`STRATA_NODE_ID`, default the host name): fs serves
    /// tokens whose `aud` names `fs@<node id>` or `strata`.
    pub node_id: String,
    /// The fleet this node is in (`STRATA_FLEET_*`, docs/fleet.md), if any.
    pub fleet: Option<strata_fleet::FleetConfig>,
}

impl Default for FsConfig {
    fn default() -> Self {
        Self {
            roots: vec!["/srv".into()],
            max_handles: 16384,
            max_handles_per_cap: 1024,
            handle_idle: Duration::from_secs(300),
            allow_hardlinks: false,
            list_cache: true,
            max_rate_buckets: crate::rates::DEFAULT_MAX_BUCKETS,
            identity_socket: config::socket_path("identity"),
            node_id: "localhost".into(),
            fleet: None,
        }
    }
}

impl FsConfig {
    /// Reads every fs setting from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let roots = match std::env::var("STRATA_FS_ROOTS") {
            Err(_) => vec!["/srv".to_string()],
            Ok(v) if v.trim().is_empty() => vec!["/srv".to_string()],
            Ok(v) => parse_roots(&v)?,
        };
        let max_handles = config::env_u64("STRATA_FS_MAX_HANDLES", 16384, 1, MAX_HANDLES_CEILING)?;
        let max_handles_per_cap = config::env_u64(
            "STRATA_FS_MAX_HANDLES_PER_CAP",
            1024,
            1,
            MAX_HANDLES_CEILING,
        )?;
        let max_rate_buckets = config::env_u64(
            "STRATA_FS_MAX_RATE_BUCKETS",
            crate::rates::DEFAULT_MAX_BUCKETS as u64,
            1,
            MAX_RATE_BUCKETS_CEILING,
        )?;
        let idle = config::env_u64("STRATA_FS_HANDLE_IDLE_SECS", 300, 1, 7 * 24 * 3600)?;
        Ok(Self {
            roots,
            max_handles: max_handles as usize,
            max_handles_per_cap: max_handles_per_cap as usize,
            handle_idle: Duration::from_secs(idle),
            allow_hardlinks: config::env_bool("STRATA_FS_ALLOW_HARDLINKS", false)?,
            list_cache: config::env_bool("STRATA_FS_LIST_CACHE", true)?,
            max_rate_buckets: max_rate_buckets as usize,
            identity_socket: config::socket_path("identity"),
            node_id: config::node_id()?,
            fleet: strata_fleet::FleetConfig::from_env()?,
        })
    }

    /// The configured root that `prefix` lies under, component by component
    /// (`/srv` holds `/srv` and `/srv/data`, not `/srv2`). When several do,
    /// the longest wins: it leaves the least to resolve.
    pub fn root_of(&self, prefix: &str) -> Option<&str> {
        self.roots
            .iter()
            .map(String::as_str)
            .filter(|root| paths::is_under(prefix, root))
            .max_by_key(|root| root.len())
    }
}

/// Parses `STRATA_FS_ROOTS`: absolute, normalised directories separated by
/// `:`. A trailing `/` is forgiven (`/srv/` means `/srv`); anything with
/// `.`, `..` or `//` is refused, because a root is a security boundary and
/// should be written exactly.
fn parse_roots(value: &str) -> Result<Vec<String>, ConfigError> {
    let mut roots = Vec::new();
    for item in value.split(':').map(str::trim).filter(|s| !s.is_empty()) {
        let trimmed = if item.len() > 1 {
            item.trim_end_matches('/')
        } else {
            item
        };
        let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
        if paths::check_prefix(trimmed).is_err() {
            return Err(ConfigError {
                var: "STRATA_FS_ROOTS",
                value: value.to_string(),
                expected: format!(
                    "{item:?} is not an absolute, normalised directory: expected a \
                     colon-separated list such as /srv:/var/lib/shared"
                ),
            });
        }
        roots.push(trimmed.to_string());
    }
    if roots.is_empty() {
        return Err(ConfigError {
            var: "STRATA_FS_ROOTS",
            value: value.to_string(),
            expected: "expected at least one directory, such as /srv".into(),
        });
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_parse_and_normalise() {
        assert_eq!(parse_roots("/srv").unwrap(), ["/srv"]);
        assert_eq!(parse_roots("/srv/:/data").unwrap(), ["/srv", "/data"]);
        assert_eq!(parse_roots("/").unwrap(), ["/"]);
        assert_eq!(parse_roots(" /a : /b ").unwrap(), ["/a", "/b"]);
        for bad in ["srv", "/srv/../etc", "/a//b", "/./x", ":"] {
            assert!(parse_roots(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn root_of_compares_components_and_prefers_the_longest() {
        let c = FsConfig {
            roots: vec!["/srv".into(), "/srv/data".into(), "/tmp".into()],
            ..FsConfig::default()
        };
        assert_eq!(c.root_of("/srv"), Some("/srv"));
        assert_eq!(c.root_of("/srv/x"), Some("/srv"));
        assert_eq!(c.root_of("/srv/data/x"), Some("/srv/data"));
        assert_eq!(c.root_of("/srv2"), None);
        assert_eq!(c.root_of("/etc"), None);
        assert_eq!(c.root_of("/tmpx/a"), None);
        let slash = FsConfig {
            roots: vec!["/".into()],
            ..FsConfig::default()
        };
        assert_eq!(slash.root_of("/etc"), Some("/"));
    }
}
