//! Grants as configuration: `/etc/strata/grants.d/<name>.json` (the
//! directory is `STRATA_GRANTS_DIR`) says which unit gets which capability
//! when systemd starts it, through the credential socket (see
//! [`crate::credentials`] and docs/grants.md).
//!
//! Every file is parsed strictly: an unknown field, a field of the wrong
//! type or a value out of range refuses that file, with one log line naming
//! the file and the field, and the other files still load. The set is read
//! at start and again on SIGHUP (`systemctl reload strata-identity`).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use strata_shared::capability::{self, FS_ACTIONS};
use strata_shared::{ids, paths};

use crate::store::write_atomic;

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
        if service == "fs" && !capability::is_fs_action(a) {
            return fail(
                "actions",
                format!(
                    "fs has no action {a:?}; fs actions are {} (and delegate)",
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

/// The file in identity's state directory that lists the capabilities
/// minted from grants, per unit: what `identity.revoke_unit` must revoke.
pub const MINTED_FILE: &str = "minted.json";
/// Most live minted capabilities remembered at once. Each is one unit start
/// whose stop has not revoked it yet and that has not expired; far more
/// than a host runs, so reaching it means units start without their
/// `ExecStopPost=` revoking, and it bounds the file (a few MiB) that is
/// rewritten at every start and stop.
pub const MAX_MINTED: usize = 65_536;

/// A capability minted from a grant, remembered so that it can be revoked
/// when its unit stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Minted {
    pub cap_id: String,
    pub expires: i64,
}

/// The minted capabilities, per unit.
pub type MintedMap = BTreeMap<String, Vec<Minted>>;

/// [`MINTED_FILE`] as written (`M` is a reference to the map when writing).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MintedOnDisk<M> {
    units: M,
}

/// What [`load_minted`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum MintedFile {
    /// The live entries (expired ones dropped); empty when there is no file.
    Read(MintedMap),
    /// The file does not parse, or lists something that is not a unit and
    /// a cap id. `cap_ids` are the capability ids still recognizable in
    /// it (every run of exactly 32 lowercase hex digits), for the caller to
    /// revoke: see [`load_minted`].
    Corrupt {
        reason: String,
        cap_ids: Vec<String>,
    },
}

/// Reads `path` (identity's [`MINTED_FILE`]) and drops the entries expired
/// at `now`. A missing file is an empty map.
///
/// A corrupt file is not an error: forgetting its entries silently would
/// leave their tokens valid until they expire, with nobody to revoke them,
/// and refusing to start would stop every token and revocation over
/// bookkeeping. So the caller gets every cap id still recognizable in the
/// bytes and revokes them all (see `Identity::open`): a running unit's
/// token may die early, which is the safe side.
///
/// # Errors
/// The file exists but cannot be read (permissions, I/O error): nothing
/// can be recovered from it, so identity does not start (the message says
/// what to do).
pub fn load_minted(path: &Path, now: i64) -> Result<MintedFile, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(MintedFile::Read(MintedMap::new()))
        }
        Err(e) => {
            return Err(format!(
                "{}: {e}; fix its permissions or the disk. Removing it lets identity start, \
                 but the tokens it lists are then not revoked when their units stop",
                path.display()
            ))
        }
    };
    let checked = serde_json::from_slice::<MintedOnDisk<MintedMap>>(&bytes)
        .map_err(|e| format!("not the expected JSON: {e}"))
        .and_then(|disk| {
            for (unit, caps) in &disk.units {
                if !is_service_unit(unit) {
                    return Err(format!("{unit:?} is not a service unit name"));
                }
                if let Some(bad) = caps.iter().find(|c| !ids::is_cap_id(&c.cap_id)) {
                    return Err(format!("{:?} is not a capability id", bad.cap_id));
                }
            }
            Ok(disk.units)
        });
    match checked {
        Ok(mut units) => {
            prune(&mut units, now);
            Ok(MintedFile::Read(units))
        }
        Err(reason) => Ok(MintedFile::Corrupt {
            reason,
            cap_ids: cap_ids_in(&bytes),
        }),
    }
}

/// Every run of exactly 32 lowercase hex digits in `bytes`, once each: the
/// capability ids a damaged [`MINTED_FILE`] still shows. A run that is no
/// real cap id (a unit name of hex digits) costs one needless revocation.
fn cap_ids_in(bytes: &[u8]) -> Vec<String> {
    let mut found = std::collections::BTreeSet::new();
    for run in bytes.split(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        if run.len() == 32 {
            // Only hex digits: always UTF-8.
            found.insert(String::from_utf8_lossy(run).into_owned());
        }
    }
    found.into_iter().collect()
}

/// Drops the entries expired at `now`, and the units left with none.
fn prune(map: &mut MintedMap, now: i64) {
    map.retain(|_, caps| {
        caps.retain(|c| c.expires > now);
        !caps.is_empty()
    });
}

/// The loaded grants and the capabilities minted from them, per unit.
pub struct GrantBook {
    dir: PathBuf,
    rules: Rules,
    grants: RwLock<Arc<BTreeMap<String, Grant>>>,
    /// Always what [`MINTED_FILE`] says (less what expired): a change is
    /// made here only once it is on disk, under this lock, so that two
    /// changes reach the file in the order they reach the map.
    minted: Mutex<MintedMap>,
    /// Where the map is kept: `<state dir>/minted.json`.
    minted_file: PathBuf,
    /// [`MAX_MINTED`]; smaller in tests.
    max_minted: usize,
}

impl GrantBook {
    /// An empty book reading `dir`; call [`GrantBook::reload`] to fill it.
    /// `minted` is what [`load_minted`] read from `minted_file`, where every
    /// change is written.
    pub fn new(dir: PathBuf, rules: Rules, minted_file: PathBuf, minted: MintedMap) -> Self {
        Self {
            dir,
            rules,
            grants: RwLock::new(Arc::new(BTreeMap::new())),
            minted: Mutex::new(minted),
            minted_file,
            max_minted: MAX_MINTED,
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

    /// Remembers a capability minted for `unit`, on disk before in memory;
    /// forgets the ones already expired while at it, so that the file stays
    /// as small as what is live. Written from the caller's thread: a unit
    /// start is rare and the file small.
    ///
    /// # Errors
    /// [`MAX_MINTED`] live capabilities are remembered already, or the file
    /// cannot be written. Nothing is remembered then, and the token must
    /// not be handed out: its unit's stop could not revoke it.
    pub fn remember(&self, unit: &str, minted: Minted, now: i64) -> std::io::Result<()> {
        let mut map = self.minted.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = map.clone();
        prune(&mut next, now);
        let live: usize = next.values().map(Vec::len).sum();
        if live >= self.max_minted {
            return Err(std::io::Error::other(format!(
                "{live} unexpired tokens minted from grants are not revoked yet, the most identity \
                 keeps track of; do the consuming units run `strata-ctl revoke-unit %n` from \
                 ExecStopPost= (docs/grants.md)?"
            )));
        }
        next.entry(unit.to_string()).or_default().push(minted);
        self.persist(&next)?;
        *map = next;
        Ok(())
    }

    /// Forgets `cap_ids` of `unit` (and whatever has expired), once their
    /// revocations are on disk: what `identity.revoke_unit` does last.
    ///
    /// # Errors
    /// The file cannot be written; nothing is forgotten then, so that the
    /// map stays what the file says (a later revoke-unit revokes them
    /// again, which changes nothing).
    pub fn forget(&self, unit: &str, cap_ids: &[String], now: i64) -> std::io::Result<()> {
        let mut map = self.minted.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = map.clone();
        if let Some(caps) = next.get_mut(unit) {
            caps.retain(|c| !cap_ids.contains(&c.cap_id));
        }
        prune(&mut next, now);
        if next != *map {
            self.persist(&next)?;
            *map = next;
        }
        Ok(())
    }

    /// The capabilities minted for `unit` and not expired: what must be
    /// revoked when it stops.
    pub fn minted_for(&self, unit: &str, now: i64) -> Vec<Minted> {
        let map = self.minted.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(unit)
            .map(|caps| caps.iter().filter(|c| c.expires > now).cloned().collect())
            .unwrap_or_default()
    }

    /// How many minted capabilities are remembered, expired or not.
    pub fn minted_len(&self) -> usize {
        let map = self.minted.lock().unwrap_or_else(PoisonError::into_inner);
        map.values().map(Vec::len).sum()
    }

    /// Writes `map` as [`MINTED_FILE`], atomically and durably.
    fn persist(&self, map: &MintedMap) -> std::io::Result<()> {
        let bytes =
            serde_json::to_vec(&MintedOnDisk { units: map }).map_err(std::io::Error::other)?;
        write_atomic(&self.minted_file, &bytes, 0o600).map_err(|e| {
            std::io::Error::new(e.kind(), format!("{}: {e}", self.minted_file.display()))
        })
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
    fn reload_replaces_the_set() {
        let d = tempfile::tempdir().unwrap();
        let book = book_in(d.path(), MintedMap::new());
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
    }

    /// A book whose grants and `minted.json` are both in `dir`.
    fn book_in(dir: &Path, minted: MintedMap) -> GrantBook {
        GrantBook::new(dir.to_path_buf(), rules(), dir.join(MINTED_FILE), minted)
    }

    fn cap(n: u8, expires: i64) -> Minted {
        Minted {
            cap_id: format!("{n:032x}"),
            expires,
        }
    }

    fn read_back(dir: &Path, now: i64) -> MintedMap {
        match load_minted(&dir.join(MINTED_FILE), now).unwrap() {
            MintedFile::Read(map) => map,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn minted_caps_are_kept_per_unit_and_survive_a_new_book() {
        let d = tempfile::tempdir().unwrap();
        // No file yet: nothing minted.
        assert_eq!(read_back(d.path(), 0), MintedMap::new());
        let book = book_in(d.path(), MintedMap::new());
        book.remember("a.service", cap(1, 100), 0).unwrap();
        book.remember("a.service", cap(2, 50), 0).unwrap();
        book.remember("b.service", cap(3, 100), 0).unwrap();
        assert_eq!(book.minted_for("a.service", 60), [cap(1, 100)]);

        // A restart: the file gives the same, less what expired by then.
        let map = read_back(d.path(), 60);
        assert_eq!(map["a.service"], [cap(1, 100)]);
        assert_eq!(map["b.service"], [cap(3, 100)]);
        let again = book_in(d.path(), map);
        assert_eq!(again.minted_len(), 2);
        assert_eq!(again.minted_for("b.service", 60), [cap(3, 100)]);
        // All expired: the units are gone too.
        assert!(read_back(d.path(), 100).is_empty());

        // Forgetting what was revoked reaches the file; the rest stays.
        again
            .forget("a.service", &[cap(1, 100).cap_id], 60)
            .unwrap();
        assert!(again.minted_for("a.service", 60).is_empty());
        let map = read_back(d.path(), 60);
        assert!(!map.contains_key("a.service"), "{map:?}");
        assert_eq!(map["b.service"], [cap(3, 100)]);
        let mode = std::fs::metadata(d.path().join(MINTED_FILE))
            .unwrap()
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }

    #[test]
    fn nothing_is_remembered_that_is_not_on_disk() {
        let d = tempfile::tempdir().unwrap();
        let mut book = book_in(d.path(), MintedMap::new());
        book.max_minted = 2;
        book.remember("a.service", cap(1, 100), 0).unwrap();
        book.remember("a.service", cap(2, 100), 0).unwrap();
        let full = book.remember("b.service", cap(3, 100), 0).unwrap_err();
        assert!(full.to_string().contains("ExecStopPost="), "{full}");
        assert!(book.minted_for("b.service", 0).is_empty());
        // Expired entries make room.
        book.remember("b.service", cap(3, 200), 100).unwrap();
        assert_eq!(book.minted_len(), 1);

        // The file cannot be written: neither a new entry nor a forgotten
        // one changes the map.
        let unwritable = GrantBook::new(
            d.path().to_path_buf(),
            rules(),
            d.path().join("absent/minted.json"),
            read_back(d.path(), 100),
        );
        assert!(unwritable.remember("c.service", cap(4, 300), 100).is_err());
        assert!(unwritable.minted_for("c.service", 100).is_empty());
        let ids = [cap(3, 200).cap_id];
        assert!(unwritable.forget("b.service", &ids, 100).is_err());
        assert_eq!(unwritable.minted_for("b.service", 100), [cap(3, 200)]);
    }

    #[test]
    fn a_corrupt_file_gives_the_cap_ids_still_readable_in_it() {
        let d = tempfile::tempdir().unwrap();
        let book = book_in(d.path(), MintedMap::new());
        book.remember("a.service", cap(1, 100), 0).unwrap();
        book.remember("b.service", cap(2, 100), 0).unwrap();
        let path = d.path().join(MINTED_FILE);
        let whole = std::fs::read(&path).unwrap();
        // Cut short in the middle of the second id.
        let cut = whole.len() - 20;
        std::fs::write(&path, &whole[..cut]).unwrap();
        match load_minted(&path, 0).unwrap() {
            MintedFile::Corrupt { reason, cap_ids } => {
                assert!(reason.contains("JSON"), "{reason}");
                assert_eq!(cap_ids, [cap(1, 100).cap_id]);
            }
            other => panic!("{other:?}"),
        }
        // Valid JSON that is not a record of units and cap ids.
        for bad in [
            r#"{"units":{"../x":[]}}"#,
            r#"{"units":{"a.service":[{"cap_id":"x","expires":1}]}}"#,
            r#"{"units":{},"more":1}"#,
            "[]",
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(
                matches!(load_minted(&path, 0), Ok(MintedFile::Corrupt { .. })),
                "{bad}"
            );
        }
        // Runs of hex digits longer or shorter than an id are not ids.
        let text = format!("{}0 {} {}", "a".repeat(32), "b".repeat(31), "c".repeat(32));
        assert_eq!(cap_ids_in(text.as_bytes()), ["c".repeat(32)]);
        // Unreadable (here: a directory): an error, nothing to recover.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(load_minted(&path, 0).is_err());
    }
}
