//! The token systemd hands a unit with a grant: the credential
//! `$CREDENTIALS_DIRECTORY/strata-<name>` (see docs/grants.md), used when
//! no token is given otherwise, so that `ExecStart=strata-ctl ls /srv/data`
//! just works inside the unit.

use std::path::Path;

use crate::failure::Failure;

/// Credential ids identity answers start with this.
const PREFIX: &str = "strata-";

/// The token from `$CREDENTIALS_DIRECTORY`: the one `strata-<grant>` when
/// `grant` is given, else the only `strata-*` credential there. `None`
/// when there is no such directory (not inside a unit) or no `strata-*`
/// credential in it and no grant was asked for.
///
/// # Errors
/// A usage failure saying what to do: `--grant` outside a unit with
/// credentials, a grant name that is not one, a grant whose credential is
/// absent, several credentials and no `--grant`, or one that cannot be read.
pub fn token(dir: Option<&Path>, grant: Option<&str>) -> Result<Option<String>, Failure> {
    let Some(dir) = dir else {
        return match grant {
            Some(g) => Err(Failure::Usage(format!(
                "--grant {g}: $CREDENTIALS_DIRECTORY is not set; it is set by systemd for a \
                 unit with LoadCredential=strata-{g}:/run/strata/credentials.sock"
            ))),
            None => Ok(None),
        };
    };
    let present = match strata_credentials(dir) {
        Ok(p) => p,
        // A command of the unit that runs outside its mount namespace
        // (`ExecStopPost=+…`) has the variable but not the directory: it
        // holds no credential, which is only an error when one was asked for.
        Err(_) if grant.is_none() => return Ok(None),
        Err(e) => return Err(e),
    };
    let name = match grant {
        Some(g) => {
            if !is_grant_name(g) {
                return Err(Failure::Usage(format!(
                    "--grant {g:?} is not a grant name ([a-z0-9][a-z0-9_-]*, at most 64)"
                )));
            }
            if !present.iter().any(|p| p == g) {
                return Err(Failure::Usage(format!(
                    "--grant {g}: there is no credential {PREFIX}{g} in {} (present: {}); \
                     the unit needs LoadCredential={PREFIX}{g}:/run/strata/credentials.sock",
                    dir.display(),
                    listed(&present)
                )));
            }
            g.to_string()
        }
        None => match present.as_slice() {
            [] => return Ok(None),
            [only] => only.clone(),
            several => {
                return Err(Failure::Usage(format!(
                    "{} holds the credentials of several grants ({}); choose one with --grant NAME",
                    dir.display(),
                    listed(several)
                )))
            }
        },
    };
    let path = dir.join(format!("{PREFIX}{name}"));
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Failure::Usage(format!(
            "cannot read the credential {}: {e}",
            path.display()
        ))
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(Failure::Usage(format!(
            "the credential {} is empty: identity gave this unit no token (see \
             `journalctl -u strata-identity`)",
            path.display()
        )));
    }
    Ok(Some(token.to_string()))
}

/// The grant names of the `strata-*` credentials in `dir`, sorted.
fn strata_credentials(dir: &Path) -> Result<Vec<String>, Failure> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Failure::Usage(format!(
            "cannot list $CREDENTIALS_DIRECTORY {}: {e}",
            dir.display()
        ))
    })?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix(PREFIX).map(str::to_string))
        .filter(|n| is_grant_name(n))
        .collect();
    names.sort();
    Ok(names)
}

fn listed(names: &[String]) -> String {
    if names.is_empty() {
        return "none".into();
    }
    names
        .iter()
        .map(|n| format!("{PREFIX}{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// As identity's grant names: `[a-z0-9][a-z0-9_-]*`, at most 64 bytes; so
/// `/` and `..` never reach a path.
fn is_grant_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && name.len() <= 64
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(r: Result<Option<String>, Failure>) -> String {
        match r {
            Err(Failure::Usage(m)) => m,
            other => panic!("expected a usage failure, got {other:?}"),
        }
    }

    #[test]
    fn the_only_one_or_the_chosen_one() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(token(Some(d.path()), None).unwrap(), None);
        std::fs::write(d.path().join("other-cred"), "x").unwrap();
        std::fs::write(d.path().join("strata-reader"), "v2.public.r").unwrap();
        assert_eq!(
            token(Some(d.path()), None).unwrap().as_deref(),
            Some("v2.public.r")
        );
        std::fs::write(d.path().join("strata-writer"), "v2.public.w\n").unwrap();
        let m = usage(token(Some(d.path()), None));
        assert!(m.contains("--grant") && m.contains("strata-writer"), "{m}");
        assert_eq!(
            token(Some(d.path()), Some("writer")).unwrap().as_deref(),
            Some("v2.public.w")
        );
        let m = usage(token(Some(d.path()), Some("nosuch")));
        assert!(m.contains("LoadCredential=strata-nosuch"), "{m}");
        for bad in ["../x", "a/b", "..", "A", &"a".repeat(65)] {
            assert!(usage(token(Some(d.path()), Some(bad))).contains("not a grant name"));
        }
        std::fs::write(d.path().join("strata-empty"), "").unwrap();
        assert!(usage(token(Some(d.path()), Some("empty"))).contains("is empty"));
    }

    #[test]
    fn outside_a_unit() {
        assert_eq!(token(None, None).unwrap(), None);
        let gone = Path::new("/nonexistent/credentials");
        assert_eq!(token(Some(gone), None).unwrap(), None);
        assert!(usage(token(Some(gone), Some("reader"))).contains("cannot list"));
        assert!(usage(token(None, Some("reader"))).contains("CREDENTIALS_DIRECTORY"));
    }
}
