//! Grants as configuration: `/etc/strata/grants.d/<name>.json` (the
//! directory is `STRATA_GRANTS_DIR`) says which unit gets which capability
//! when systemd starts it, through the credential socket (see
//! [`crate::credentials`] and docs/grants.md).
//!
//! Every file is parsed strictly: an unknown field, a field of the wrong
//! type or a value out of range refuses that file, with one log line naming
//! the file and the field, and the other files still load. The set is read
//! at start and again on SIGHUP (`systemctl reload strata-identity`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde_json::{Map, Value};
use strata_shared::capability::FS_ACTIONS;
use strata_shared::paths;

/// Longest grant name: the credential id `strata-<name>` stays short.
pub const MAX_GRANT_NAME: usize = 64;
/// Longest unit name systemd accepts.
pub const MAX_UNIT_NAME: usize = 255;
/// Most actions a grant may list (as `identity.issue`).
const MAX_ACTIONS: usize = 16;
/// Longest service or action name (as `identity.issue`).
const MAX_NAME: usize = 32;
/// Largest grant file read: a grant is a few hundred bytes.
const MAX_FILE: u64 = 64 * 1024;
/// The prefix of every credential id identity answers.
pub const CREDENTIAL_PREFIX: &str = "strata-";

/// One loaded grant: what a token minted for its unit says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The file name without `.json`; the credential id is `strata-<name>`.
    pub name: String,
    /// The only unit the credential is handed to.
    pub unit: String,
    pub service: String,
    pub actions: Vec<String>,
    pub path_prefix: Option<String>,
    pub ttl_seconds: u64,
}

/// What a grant file is checked against besides its own syntax.
#[derive(Debug, Clone)]
pub struct Rules {
    /// TTL when the file gives none.
    pub default_ttl: u64,
    /// Largest TTL a file may give (`STRATA_TOKEN_MAX_TTL`).
    pub max_ttl: u64,
    /// fs's served roots, when known: an fs prefix must be under one.
    pub roots: Vec<String>,
}

/// A grant file that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub file: PathBuf,
    /// The offending field (`"file"` when the whole file is at fault).
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "grant file {}: field {:?}: {}; this grant is not loaded",
            self.file.display(),
            self.field,
            self.reason
        )
    }
}

/// Whether `name` may name a grant: `[a-z0-9][a-z0-9_-]*`, at most
/// [`MAX_GRANT_NAME`] bytes. No `.` and no `/`, so neither a file name
/// nor a credential id built from it can leave its directory.
pub fn is_grant_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && name.len() <= MAX_GRANT_NAME
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Whether `unit` is a service unit name as systemd spells them
/// (`[A-Za-z0-9:_.\@-]+.service`, at most [`MAX_UNIT_NAME`] bytes): a
/// credential is only ever loaded for a service.
pub fn is_service_unit(unit: &str) -> bool {
    let Some(stem) = unit.strip_suffix(".service") else {
        return false;
    };
    !stem.is_empty()
        && unit.len() <= MAX_UNIT_NAME
        && !stem.starts_with('.')
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_.\\@-".contains(&b))
}

/// `[a-z][a-z0-9_-]{0,31}` for services, without `-` for actions, as
/// `identity.issue` accepts them.
fn is_name(s: &str, allow_dash: bool) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && s.len() <= MAX_NAME
        && bytes.all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || (allow_dash && b == b'-')
        })
}

/// Parses one grant file's text.
///
/// # Errors
/// The field at fault and why, for [`Refused`].
pub fn parse(name: &str, text: &[u8], rules: &Rules) -> Result<Grant, (String, String)> {
    let fail = |field: &str, reason: String| Err((field.to_string(), reason));
    if !is_grant_name(name) {
        return fail(
            "file",
            format!(
                "the file name must be <name>.json with <name> matching [a-z0-9][a-z0-9_-]* \
                 (at most {MAX_GRANT_NAME} characters)"
            ),
        );
    }
    let value: Value = match serde_json::from_slice(text) {
        Ok(v) => v,
        Err(e) => return fail("file", format!("not JSON: {e}")),
    };
    let Value::Object(mut map) = value else {
        return fail("file", "must be one JSON object".into());
    };
    const KNOWN: &[&str] = &["unit", "service", "actions", "path_prefix", "ttl_seconds"];
    if let Some(unknown) = map.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return fail(
            unknown,
            format!("unknown field; a grant has {}", KNOWN.join(", ")),
        );
    }
    let unit = match optional_string(&mut map, "unit")? {
        Some(u) => u,
        None => format!("{name}.service"),
    };
    if !is_service_unit(&unit) {
        return fail(
            "unit",
            format!("{unit:?} is not a service unit name such as reader.service"),
        );
    }
    let Some(service) = optional_string(&mut map, "service")? else {
        return fail("service", "missing; e.g. \"fs\"".into());
    };
    if !is_name(&service, true) {
        return fail(
            "service",
            format!("{service:?} is not a service name ([a-z][a-z0-9_-]*, at most {MAX_NAME})"),
        );
    }
    let actions = match map.remove("actions") {
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                other => Err(("actions".to_string(), format!("{other} is not a string"))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => return fail("actions", format!("{other} is not a list of strings")),
        None => {
            return fail(
                "actions",
                "missing; e.g. [\"list\", \"open\", \"read\"]".into(),
            )
        }
    };
    if actions.is_empty() || actions.len() > MAX_ACTIONS {
        return fail("actions", format!("must list 1 to {MAX_ACTIONS} actions"));
    }
    let mut seen = HashSet::new();
    for a in &actions {
        if !is_name(a, false) {
            return fail("actions", format!("{a:?} is not an action name"));
        }
        if !seen.insert(a.as_str()) {
            return fail("actions", format!("{a:?} is listed twice"));
        }
        if service == "fs" && !FS_ACTIONS.contains(&a.as_str()) {
            return fail(
                "actions",
                format!(
                    "fs has no action {a:?}; fs actions are {}",
                    FS_ACTIONS.join(", ")
                ),
            );
        }
    }
    let path_prefix = optional_string(&mut map, "path_prefix")?;
    match &path_prefix {
        Some(prefix) => {
            if let Err(e) = paths::check_prefix(prefix) {
                return fail("path_prefix", e.message);
            }
            if service == "fs"
                && !rules.roots.is_empty()
                && !rules.roots.iter().any(|r| paths::is_under(prefix, r))
            {
                return fail(
                    "path_prefix",
                    format!(
                        "{prefix:?} is outside every directory fs serves ({}; STRATA_GRANT_ROOTS)",
                        rules.roots.join(":")
                    ),
                );
            }
        }
        None if service == "fs" => {
            return fail(
                "path_prefix",
                "missing: an fs grant needs the directory it may reach".into(),
            )
        }
        None => {}
    }
    let ttl_seconds = match map.remove("ttl_seconds") {
        None | Some(Value::Null) => rules.default_ttl,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(t) if (1..=rules.max_ttl).contains(&t) => t,
            _ => {
                return fail(
                    "ttl_seconds",
                    format!(
                        "{n} is not a whole number from 1 to {} (STRATA_TOKEN_MAX_TTL)",
                        rules.max_ttl
                    ),
                )
            }
        },
        Some(other) => return fail("ttl_seconds", format!("{other} is not a number")),
    };
    Ok(Grant {
        name: name.to_string(),
        unit,
        service,
        actions,
        path_prefix,
        ttl_seconds,
    })
}

/// Takes an optional string field out of `map`.
fn optional_string(
    map: &mut Map<String, Value>,
    field: &str,
) -> Result<Option<String>, (String, String)> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err((field.to_string(), format!("{other} is not a string"))),
    }
}

/// Reads every `*.json` file in `dir`. A missing directory is no grants.
/// Files not ending in `.json` are skipped (an editor's backup, a README).
///
/// # Errors
/// Only when the directory exists but cannot be listed; bad files are
/// returned in the second list, not as an error.
pub fn load_dir(
    dir: &Path,
    rules: &Rules,
) -> std::io::Result<(BTreeMap<String, Grant>, Vec<Refused>)> {
    let mut grants = BTreeMap::new();
    let mut refused = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((grants, refused)),
        Err(e) => return Err(e),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for file in files {
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let refuse = |field: &str, reason: String| Refused {
            file: file.clone(),
            field: field.to_string(),
            reason,
        };
        let text = match read_small(&file) {
            Ok(t) => t,
            Err(e) => {
                refused.push(refuse("file", format!("cannot read it: {e}")));
                continue;
            }
        };
        match parse(&name, &text, rules) {
            Ok(g) => {
                grants.insert(name, g);
            }
            Err((field, reason)) => refused.push(refuse(&field, reason)),
        }
    }
    Ok((grants, refused))
}

/// Reads a regular file of at most [`MAX_FILE`] bytes.
fn read_small(file: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking and not through a symlink: a FIFO named *.json must not
    // hang identity at start or on reload; a regular file reads the same.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(file)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = Vec::new();
    f.take(MAX_FILE + 1).read_to_end(&mut text)?;
    if text.len() as u64 > MAX_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_FILE} bytes"
        )));
    }
    Ok(text)
}

/// A capability minted from a grant, remembered so that it can be revoked
/// when its unit stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    pub cap_id: String,
    pub expires: i64,
}

/// The loaded grants and the capabilities minted from them, per unit.
pub struct GrantBook {
    dir: PathBuf,
    rules: Rules,
    grants: RwLock<Arc<BTreeMap<String, Grant>>>,
    minted: Mutex<HashMap<String, Vec<Minted>>>,
}

impl GrantBook {
    /// An empty book reading `dir`; call [`GrantBook::reload`] to fill it.
    pub fn new(dir: PathBuf, rules: Rules) -> Self {
        Self {
            dir,
            rules,
            grants: RwLock::new(Arc::new(BTreeMap::new())),
            minted: Mutex::new(HashMap::new()),
        }
    }

    /// Reads the directory again and replaces the loaded set, logging each
    /// refused file (one line naming the file and the field) and the
    /// result. When the directory cannot be listed, the previous set stays.
    /// Returns how many grants are loaded and how many files were refused.
    pub fn reload(&self) -> (usize, usize) {
        match load_dir(&self.dir, &self.rules) {
            Ok((grants, refused)) => {
                for r in &refused {
                    tracing::error!(
                        file = %r.file.display(),
                        field = %r.field,
                        "{r}"
                    );
                }
                let names: Vec<&str> = grants.keys().map(String::as_str).collect();
                tracing::info!(
                    dir = %self.dir.display(),
                    "loaded {} grant(s){}{}; refused {}",
                    grants.len(),
                    if names.is_empty() { "" } else { ": " },
                    names.join(", "),
                    refused.len()
                );
                let counts = (grants.len(), refused.len());
                *self.grants.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(grants);
                counts
            }
            Err(e) => {
                let kept = self.current().len();
                tracing::error!(
                    "cannot list the grants directory {} ({e}); keeping the {kept} grant(s) loaded before",
                    self.dir.display()
                );
                (kept, 0)
            }
        }
    }

    /// The grants now loaded.
    pub fn current(&self) -> Arc<BTreeMap<String, Grant>> {
        self.grants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The grant named by credential id `strata-<name>`, if loaded.
    pub fn by_credential(&self, credential: &str) -> Option<Grant> {
        let name = credential.strip_prefix(CREDENTIAL_PREFIX)?;
        self.current().get(name).cloned()
    }

    /// Remembers a capability minted for `unit`; forgets the ones already
    /// expired while at it, so that the map stays as small as what is live.
    pub fn remember(&self, unit: &str, minted: Minted, now: i64) {
        let mut map = self.minted.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, caps| {
            caps.retain(|c| c.expires > now);
            !caps.is_empty()
        });
        map.entry(unit.to_string()).or_default().push(minted);
    }

    /// Takes the capabilities minted for `unit` that have not expired:
    /// what must be revoked when it stops.
    pub fn take_minted(&self, unit: &str, now: i64) -> Vec<Minted> {
        let mut map = self.minted.lock().unwrap_or_else(PoisonError::into_inner);
        let mut caps = map.remove(unit).unwrap_or_default();
        caps.retain(|c| c.expires > now);
        caps
    }

    /// The capabilities minted for `unit` and not expired, without taking
    /// them.
    pub fn minted_for(&self, unit: &str, now: i64) -> Vec<Minted> {
        let map = self.minted.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(unit)
            .map(|caps| caps.iter().filter(|c| c.expires > now).cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            default_ttl: 3600,
            max_ttl: 86_400,
            roots: vec!["/srv".into()],
        }
    }

    fn parse_str(name: &str, text: &str) -> Result<Grant, (String, String)> {
        parse(name, text.as_bytes(), &rules())
    }

    fn field_of(r: Result<Grant, (String, String)>) -> String {
        r.expect_err("refused").0
    }

    #[test]
    fn a_full_grant_parses() {
        let g = parse_str(
            "reader",
            r#"{"unit":"reader-x.service","service":"fs","actions":["list","open","read"],
                "path_prefix":"/srv/data","ttl_seconds":600}"#,
        )
        .unwrap();
        assert_eq!(g.unit, "reader-x.service");
        assert_eq!(g.actions, ["list", "open", "read"]);
        assert_eq!(g.path_prefix.as_deref(), Some("/srv/data"));
        assert_eq!(g.ttl_seconds, 600);
    }

    #[test]
    fn unit_and_ttl_default() {
        let g = parse_str(
            "reader",
            r#"{"service":"fs","actions":["list"],"path_prefix":"/srv/data"}"#,
        )
        .unwrap();
        assert_eq!(g.unit, "reader.service");
        assert_eq!(g.ttl_seconds, 3600);
    }

    #[test]
    fn each_bad_field_is_named() {
        let base = r#""service":"fs","actions":["list"],"path_prefix":"/srv/data""#;
        assert_eq!(
            field_of(parse_str("r", &format!("{{{base},\"holder\":1}}"))),
            "holder"
        );
        assert_eq!(
            field_of(parse_str("r", &format!("{{{base},\"unit\":\"r\"}}"))),
            "unit"
        );
        assert_eq!(
            field_of(parse_str(
                "r",
                &format!("{{{base},\"unit\":\"../x.service\"}}")
            )),
            "unit"
        );
        assert_eq!(
            field_of(parse_str("r", &format!("{{{base},\"ttl_seconds\":0}}"))),
            "ttl_seconds"
        );
        assert_eq!(
            field_of(parse_str("r", &format!("{{{base},\"ttl_seconds\":86401}}"))),
            "ttl_seconds"
        );
        assert_eq!(
            field_of(parse_str(
                "r",
                &format!("{{{base},\"ttl_seconds\":\"60\"}}")
            )),
            "ttl_seconds"
        );
        assert_eq!(
            field_of(parse_str(
                "r",
                r#"{"service":"fs","actions":["write"],"path_prefix":"/srv"}"#
            )),
            "actions"
        );
        assert_eq!(
            field_of(parse_str(
                "r",
                r#"{"service":"fs","actions":["list","list"],"path_prefix":"/srv"}"#
            )),
            "actions"
        );
        assert_eq!(
            field_of(parse_str(
                "r",
                r#"{"service":"fs","actions":[],"path_prefix":"/srv"}"#
            )),
            "actions"
        );
        assert_eq!(
            field_of(parse_str(
                "r",
                r#"{"actions":["list"],"path_prefix":"/srv"}"#
            )),
            "service"
        );
        assert_eq!(
            field_of(parse_str("r", r#"{"service":"fs","actions":["list"]}"#)),
            "path_prefix"
        );
        assert_eq!(field_of(parse_str("r", "[1]")), "file");
        assert_eq!(field_of(parse_str("r", "{")), "file");
    }

    #[test]
    fn prefixes_must_be_normalized_and_under_the_served_roots() {
        for bad in [
            "srv/data",
            "/srv/../etc",
            "/srv/data/",
            "/srv//data",
            "/etc",
            "/srv2",
        ] {
            let text = format!(r#"{{"service":"fs","actions":["list"],"path_prefix":"{bad}"}}"#);
            assert_eq!(field_of(parse_str("r", &text)), "path_prefix", "{bad}");
        }
        // Unknown roots: only the syntax is checked.
        let open = Rules {
            roots: Vec::new(),
            ..rules()
        };
        let text = r#"{"service":"fs","actions":["list"],"path_prefix":"/etc"}"#;
        assert!(parse("r", text.as_bytes(), &open).is_ok());
    }

    #[test]
    fn names_and_units() {
        assert!(is_grant_name("reader"));
        assert!(is_grant_name("0-a_b"));
        assert!(!is_grant_name(""));
        assert!(!is_grant_name("Reader"));
        assert!(!is_grant_name("a.b"));
        assert!(!is_grant_name("a/b"));
        assert!(!is_grant_name(".."));
        assert!(!is_grant_name(&"a".repeat(MAX_GRANT_NAME + 1)));
        assert!(is_service_unit("reader.service"));
        assert!(is_service_unit("getty@tty1.service"));
        assert!(is_service_unit("a\\x2db.service"));
        assert!(!is_service_unit(".service"));
        assert!(!is_service_unit("reader.socket"));
        assert!(!is_service_unit("a/b.service"));
        assert!(!is_service_unit("..service"));
        assert!(!is_service_unit(&format!("{}.service", "a".repeat(250))));
        assert_eq!(field_of(parse_str("Bad.Name", "{}")), "file");
    }

    #[test]
    fn a_bad_file_does_not_stop_the_others() {
        let d = tempfile::tempdir().unwrap();
        let good = r#"{"service":"fs","actions":["list"],"path_prefix":"/srv/data"}"#;
        std::fs::write(d.path().join("good.json"), good).unwrap();
        std::fs::write(
            d.path().join("bad.json"),
            r#"{"service":"fs","actions":["list"],"path_prefix":"/etc"}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("notes.txt"), "ignored").unwrap();
        std::fs::write(d.path().join("Upper.json"), good).unwrap();
        let (grants, refused) = load_dir(d.path(), &rules()).unwrap();
        assert_eq!(grants.keys().collect::<Vec<_>>(), ["good"]);
        assert_eq!(refused.len(), 2);
        let bad = refused
            .iter()
            .find(|r| r.file.ends_with("bad.json"))
            .unwrap();
        assert_eq!(bad.field, "path_prefix");
        let line = bad.to_string();
        assert!(
            line.contains("bad.json") && line.contains("path_prefix"),
            "{line}"
        );
        // A missing directory is no grants, not an error.
        let (none, _) = load_dir(&d.path().join("absent"), &rules()).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn reload_replaces_the_set_and_minted_caps_are_kept_per_unit() {
        let d = tempfile::tempdir().unwrap();
        let book = GrantBook::new(d.path().to_path_buf(), rules());
        assert_eq!(book.reload(), (0, 0));
        let good = r#"{"service":"fs","actions":["list"],"path_prefix":"/srv/data"}"#;
        std::fs::write(d.path().join("reader.json"), good).unwrap();
        assert_eq!(book.reload(), (1, 0));
        assert_eq!(
            book.by_credential("strata-reader").unwrap().unit,
            "reader.service"
        );
        assert!(book.by_credential("reader").is_none());
        std::fs::remove_file(d.path().join("reader.json")).unwrap();
        assert_eq!(book.reload(), (0, 0));
        assert!(book.by_credential("strata-reader").is_none());

        let cap = |id: &str, expires| Minted {
            cap_id: id.into(),
            expires,
        };
        book.remember("a.service", cap("1", 100), 0);
        book.remember("a.service", cap("2", 50), 0);
        book.remember("b.service", cap("3", 100), 0);
        assert_eq!(book.minted_for("a.service", 60), [cap("1", 100)]);
        assert_eq!(book.take_minted("a.service", 10).len(), 2);
        assert!(book.take_minted("a.service", 10).is_empty());
        assert_eq!(book.minted_for("b.service", 10), [cap("3", 100)]);
    }
}
