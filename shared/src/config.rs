//! Reading settings from the environment, with errors that name the
//! variable and say what a good value looks like.

use std::path::PathBuf;

/// A setting that could not be used. Services refuse to start on one,
/// rather than run with a value the operator did not mean.
#[derive(Debug, thiserror::Error)]
#[error("{var}={value:?}: {expected}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub expected: String,
}

/// An unsigned integer setting in `min..=max`, or `default` when unset.
pub fn env_u64(var: &'static str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    match std::env::var(var) {
        Err(_) => Ok(default),
        Ok(v) if v.trim().is_empty() => Ok(default),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(ConfigError {
                var,
                value: v,
                expected: format!("expected a whole number from {min} to {max}"),
            }),
        },
    }
}

/// A boolean setting: `1`/`true`/`yes` or `0`/`false`/`no`.
pub fn env_bool(var: &'static str, default: bool) -> Result<bool, ConfigError> {
    match std::env::var(var) {
        Err(_) => Ok(default),
        Ok(v) => match v.trim() {
            "" => Ok(default),
            "1" | "true" | "yes" => Ok(true),
            "0" | "false" | "no" => Ok(false),
            _ => Err(ConfigError {
                var,
                value: v,
                expected: "expected 1 or 0".into(),
            }),
        },
    }
}

/// A list setting split on `sep`, empty items dropped.
pub fn env_list(var: &'static str, sep: char) -> Vec<String> {
    std::env::var(var)
        .unwrap_or_default()
        .split(sep)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Longest node id: the longest DNS name.
pub const MAX_NODE_ID: usize = 253;

/// Whether `s` can name a node: lowercase DNS labels (`[a-z0-9-]`, 1 to 63
/// bytes, no `-` at either end) joined by `.`, at most [`MAX_NODE_ID`]
/// bytes. So it never holds the `@` of `identity@<node id>`, and two
/// spellings of one host name never compare different.
pub fn is_node_id(s: &str) -> bool {
    s.len() <= MAX_NODE_ID
        && s.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// This node's id: `STRATA_NODE_ID`, or else the host name (`uname(2)`'s
/// nodename, lowercased; not `/proc/sys/kernel/hostname`, which the units'
/// `ProcSubset=pid` hides). identity signs as
/// `identity@<node id>` (the `iss` claim) and fs accepts tokens addressed
/// to `fs@<node id>` (the `aud` claim).
///
/// # Errors
/// A `STRATA_NODE_ID` that is not a node id ([`is_node_id`]), or a host
/// name that cannot be read or is not one: the message says to set
/// `STRATA_NODE_ID`.
pub fn node_id() -> Result<String, ConfigError> {
    node_id_from(std::env::var("STRATA_NODE_ID").ok(), || {
        rustix::system::uname()
            .nodename()
            .to_str()
            .map(String::from)
            .map_err(|_| std::io::Error::other("the host name is not UTF-8"))
    })
}

/// [`node_id`] with its inputs given, for tests.
fn node_id_from(
    var: Option<String>,
    hostname: impl FnOnce() -> std::io::Result<String>,
) -> Result<String, ConfigError> {
    const EXPECTED: &str = "expected lowercase DNS labels ([a-z0-9-], at most 63 bytes each, \
                            no '-' at either end) joined by '.', at most 253 bytes, e.g. node-1";
    if let Some(v) = var.filter(|v| !v.trim().is_empty()) {
        return if is_node_id(v.trim()) {
            Ok(v.trim().to_string())
        } else {
            Err(ConfigError {
                var: "STRATA_NODE_ID",
                value: v,
                expected: EXPECTED.into(),
            })
        };
    }
    let name = hostname().map_err(|e| ConfigError {
        var: "STRATA_NODE_ID",
        value: String::new(),
        expected: format!(
            "unset, and the host name cannot be read ({e}); set STRATA_NODE_ID to this \
             node's name"
        ),
    })?;
    let name = name.trim().to_ascii_lowercase();
    if is_node_id(&name) {
        Ok(name)
    } else {
        Err(ConfigError {
            var: "STRATA_NODE_ID",
            value: String::new(),
            expected: format!(
                "unset, and the host name {name:?} cannot be a node id ({EXPECTED}); set \
                 STRATA_NODE_ID"
            ),
        })
    }
}

/// `STRATA_RUNTIME_DIR`, default `/run/strata`: where sockets live.
pub fn runtime_dir() -> PathBuf {
    std::env::var_os("STRATA_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/strata"))
}

/// The socket of the service that owns `method` (the part before the dot).
pub fn socket_for_method(method: &str) -> PathBuf {
    let service = method.split('.').next().unwrap_or(method);
    socket_path(service)
}

/// `$STRATA_RUNTIME_DIR/<service>.sock`.
pub fn socket_path(service: &str) -> PathBuf {
    runtime_dir().join(format!("{service}.sock"))
}

#[cfg(test)]
mod node_id_tests {
    use super::*;

    fn host(name: &'static str) -> impl FnOnce() -> std::io::Result<String> {
        move || Ok(name.to_string())
    }

    #[test]
    fn node_ids_are_lowercase_dns_names() {
        for good in ["node-1", "a", "web01.example.org", &"a".repeat(63)] {
            assert!(is_node_id(good), "{good:?}");
        }
        let long = ["a".repeat(63).as_str(); 5].join(".");
        for bad in [
            "",
            "Node",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a.",
            "a@b",
            "a_b",
            "a b",
            &"a".repeat(64),
            &long,
        ] {
            assert!(!is_node_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_variable_wins_and_the_host_name_is_the_default() {
        let id = node_id_from(Some(" node-b ".into()), host("ignored")).unwrap();
        assert_eq!(id, "node-b");
        assert_eq!(node_id_from(None, host("Web01\n")).unwrap(), "web01");
        assert_eq!(node_id_from(Some("".into()), host("h")).unwrap(), "h");
        let e = node_id_from(Some("Node_B".into()), host("h")).unwrap_err();
        assert_eq!((e.var, e.value.as_str()), ("STRATA_NODE_ID", "Node_B"));
        let e = node_id_from(None, host("my_host")).unwrap_err();
        assert!(e.to_string().contains("set STRATA_NODE_ID"), "{e}");
        let e = node_id_from(None, || Err(std::io::ErrorKind::NotFound.into())).unwrap_err();
        assert!(e.to_string().contains("cannot be read"), "{e}");
    }
}
