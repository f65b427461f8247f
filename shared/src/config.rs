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
