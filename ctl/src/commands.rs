//! What each command does: which requests it sends and what it prints.
//!
//! Every command is one or a few requests through the shared blocking
//! client. Results go to stdout as JSON on one line (or indented with
//! `--pretty`); errors become a [`Failure`], which `main` reports on stderr.

use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};
use strata_shared::client::Client;
use strata_shared::config;
use strata_shared::ids::is_cap_id;
use strata_shared::wire::{self, Response};

use crate::args::{
    self, AuditCommand, Cli, Command, DelegateArgs, HolderArgs, IssueArgs, RawCall, RevokeArgs,
    SvcCommand,
};
use crate::failure::{service_exit_code, Failure};
use crate::{credentials, local_token};

/// Bytes asked for per `fs.read`: the protocol's largest read, so that a
/// file takes as few round trips as possible.
pub const READ_SIZE: u64 = 131_072;

/// Options every command shares.
struct Ctx {
    token: Option<String>,
    pretty: bool,
}

impl Ctx {
    fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The token, for commands that cannot do anything without one.
    fn require_token(&self, what: &str) -> Result<&str, Failure> {
        self.token().ok_or_else(|| {
            Failure::Usage(format!(
                "{what} needs a token: pass --token-file FILE (- for standard input) \
                 or set STRATA_TOKEN"
            ))
        })
    }
}

/// Printed when a token comes from the command line: it is readable there by
/// every local user for as long as the command runs.
const ARGV_TOKEN_WARNING: &str = "strata-ctl: warning: a token on the command line can be \
     read by every local user (/proc/PID/cmdline); use --token-file FILE, --token-file - \
     (standard input) or STRATA_TOKEN instead";

/// A token from the command line or the environment; blank counts as none.
fn clean_token(t: Option<String>) -> Option<String> {
    t.map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
}

/// Reads a token from `file` (`-`: standard input): its one line, without
/// surrounding whitespace.
///
/// # Errors
/// A usage failure when the file cannot be read or holds no token.
fn read_token_file(file: &Path) -> Result<String, Failure> {
    let (what, text) = if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::Usage(format!("cannot read a token from standard input: {e}")))?;
        ("standard input".to_string(), text)
    } else {
        let text = std::fs::read_to_string(file).map_err(|e| {
            Failure::Usage(format!(
                "--token-file {}: cannot read it ({e}); give a file holding the token",
                file.display()
            ))
        })?;
        (file.display().to_string(), text)
    };
    clean_token(Some(text)).ok_or_else(|| Failure::Usage(format!("{what} holds no token")))
}

/// The token to present: from `--token-file`, else from `--token` (with a
/// warning), else from `STRATA_TOKEN`, else a grant's credential from
/// `$CREDENTIALS_DIRECTORY` ([`credentials::token`], `--grant`).
///
/// # Errors
/// A usage failure when both `--token-file` and `--token` are given, or
/// `--grant` with either, or the file or credential cannot be read.
fn current_token(
    file: Option<&Path>,
    argv: Option<String>,
    grant: Option<&str>,
) -> Result<Option<String>, Failure> {
    let argv = clean_token(argv);
    if grant.is_some() && (file.is_some() || argv.is_some()) {
        return Err(Failure::Usage(
            "give the token once: --grant, --token-file or --token, not two".into(),
        ));
    }
    if grant.is_some() {
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty());
        return credentials::token(dir.as_deref().map(Path::new), grant);
    }
    match (file, argv) {
        (Some(_), Some(_)) => Err(Failure::Usage(
            "give the token once: --token-file or --token, not both".into(),
        )),
        (Some(file), None) => read_token_file(file).map(Some),
        (None, Some(token)) => {
            eprintln!("{ARGV_TOKEN_WARNING}");
            Ok(Some(token))
        }
        (None, None) => match clean_token(std::env::var("STRATA_TOKEN").ok()) {
            Some(token) => Ok(Some(token)),
            None => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty());
                credentials::token(dir.as_deref().map(Path::new), None)
            }
        },
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<(), Failure> {
    // `None` when the raw form asked for --help.
    let raw_call = match &cli.command {
        Command::Raw(words) => args::parse_raw(words).map_err(Failure::Usage)?,
        _ => None,
    };
    // Options after a raw method win over those before it.
    let file = raw_call
        .as_ref()
        .and_then(|c| c.token_file.as_deref())
        .or(cli.token_file.as_deref());
    let argv = raw_call
        .as_ref()
        .and_then(|c| c.token.clone())
        .or(cli.token);
    // `fleet` is offline: no token is read, so none can be missing.
    let offline = matches!(cli.command, Command::Fleet(_));
    let ctx = Ctx {
        token: if offline {
            None
        } else {
            current_token(file, argv, cli.grant.as_deref())?
        },
        pretty: cli.pretty || raw_call.as_ref().is_some_and(|c| c.pretty),
    };
    match cli.command {
        Command::Raw(_) => match &raw_call {
            Some(call) => raw(&ctx, call),
            None => print_line(RAW_HELP),
        },
        Command::Issue(a) => issue(&ctx, a),
        Command::Delegate(a) => delegate(&ctx, a),
        Command::Revoke(a) => revoke(&ctx, a),
        Command::RevokeUnit { unit } => {
            // Decided on the caller's peer credentials: no token.
            let r = call("identity.revoke_unit", None, &json!({ "unit": unit }))?;
            print_json(&r, ctx.pretty)
        }
        Command::Verify { target } => verify(&ctx, target),
        Command::Whoami => whoami(&ctx),
        Command::Ls { path, long } => ls(&ctx, &path, long),
        Command::Cat { path } => cat(&ctx, &path),
        Command::Stat { path } => {
            let r = call("fs.stat", ctx.token(), &json!({ "path": absolute(&path)? }))?;
            print_json(&r, ctx.pretty)
        }
        Command::Audit(AuditCommand::Verify { paths }) => crate::audit::verify_command(&paths),
        Command::Fleet(cmd) => crate::fleet::run(cmd, ctx.pretty),
        Command::Status => {
            let mut status = call("supervisor.status", None, &json!({}))?;
            // A fleet member's view of its fleet, from fs, beside the
            // services' health.
            if let Some(fleet) = fleet_status() {
                status["fleet"] = fleet;
            }
            print_json(&status, ctx.pretty)
        }
        Command::Svc(cmd) => {
            let (method, params) = match cmd {
                SvcCommand::List => ("supervisor.svc.list", json!({})),
                SvcCommand::Start { name } => ("supervisor.svc.start", json!({ "name": name })),
                SvcCommand::Stop { name, drain_ms } => {
                    let mut p = json!({ "name": name });
                    if let Some(ms) = drain_ms {
                        p["drain_ms"] = json!(ms);
                    }
                    ("supervisor.svc.stop", p)
                }
            };
            print_json(&call(method, None, &params)?, ctx.pretty)
        }
        Command::Health { service } => {
            args::check_service_name(&service, &service).map_err(Failure::Usage)?;
            let method = format!("{service}.health");
            print_json(&call(&method, None, &json!({}))?, ctx.pretty)
        }
    }
}

const RAW_HELP: &str = "\
Usage: strata-ctl [--token-file FILE] <service.action> [params_json]

Sends one request to $STRATA_RUNTIME_DIR/<service>.sock (default /run/strata)
and prints the response envelope on one line, as received. params_json is a
JSON object (default {}). The token comes from --token-file FILE (- for
standard input) or $STRATA_TOKEN; the prototype's -token option still works, with
a warning, since every local user can read a command line.
Exit status: 0 ok, 10+code on an error answer, 1 no connection, 2 usage.

Example: strata-ctl fs.list '{\"path\":\"/srv/data\"}'";

// ---------------------------------------------------------------- requests

/// How long `supervisor.svc.*` may take to answer: a start waits for the
/// service to be up (35 s at most), a stop for it to drain (60 s, then 5 s
/// after SIGKILL). Every other method keeps the client's 30 s.
const SVC_TIMEOUT: Duration = Duration::from_secs(90);

fn connect(method: &str) -> Result<Client, Failure> {
    let failure = |error| Failure::Client {
        method: method.to_string(),
        error,
    };
    let client = Client::connect(&config::socket_for_method(method)).map_err(failure)?;
    if method.starts_with("supervisor.svc.") {
        client
            .set_timeout(Some(SVC_TIMEOUT))
            .map_err(|e| failure(e.into()))?;
    }
    Ok(client)
}

/// One request on an open connection; `ok:false` becomes a [`Failure::Service`].
fn call_on(
    client: &mut Client,
    method: &str,
    token: Option<&str>,
    params: &Value,
) -> Result<Value, Failure> {
    let resp = client
        .call(method, token, params)
        .map_err(|error| Failure::Client {
            method: method.to_string(),
            error,
        })?;
    resp.into_result().map_err(|e| Failure::Service {
        method: method.to_string(),
        code: e.code,
        message: e.message,
        details: e.details,
    })
}

/// `strata-ctl fleet status`: fs's view of its fleet. Exit 0 when fleet
/// tokens are served, 3 when they are refused (stale or syncing).
///
/// # Errors
/// fs unreachable, or in no fleet ([`Failure::Refused`]).
pub fn fleet_status_command(pretty: bool) -> Result<(), Failure> {
    let health = call("fs.health", None, &json!({}))?;
    let Some(fleet) = health.get("fleet") else {
        return Err(Failure::Refused(
            "this node's fs is in no fleet (STRATA_FLEET_NAME is not set for strata-fs; \
             docs/fleet.md)"
                .into(),
        ));
    };
    print_json(fleet, pretty)?;
    if fleet["state"] == "fresh" {
        Ok(())
    } else {
        Err(Failure::Silent(crate::failure::EXIT_BROKEN))
    }
}

/// fs's view of its fleet, when fs answers and is in one.
fn fleet_status() -> Option<Value> {
    call("fs.health", None, &json!({}))
        .ok()?
        .get_mut("fleet")
        .map(Value::take)
}

/// One request on a fresh connection.
fn call(method: &str, token: Option<&str>, params: &Value) -> Result<Value, Failure> {
    call_on(&mut connect(method)?, method, token, params)
}

fn protocol(method: &str, message: impl Into<String>) -> Failure {
    Failure::Protocol {
        method: method.to_string(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------- output

pub(crate) fn print_line(text: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(Failure::Output)
}

pub(crate) fn print_json(value: &Value, pretty: bool) -> Result<(), Failure> {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    }
    .expect("a JSON value serializes");
    print_line(&text)
}

// ---------------------------------------------------------------- commands

/// The prototype's form: send, print the envelope as received, exit by `ok`.
fn raw(ctx: &Ctx, call: &RawCall) -> Result<(), Failure> {
    let method = call.method.as_str();
    let mut client = connect(method)?;
    let payload = wire::encode_request("1", method, ctx.token(), &call.params);
    let reply = client.call_raw(&payload).map_err(|error| Failure::Client {
        method: method.to_string(),
        error,
    })?;
    let parsed = Response::parse(&reply);
    match (&parsed, ctx.pretty) {
        (Ok(_), true) => {
            let v: Value = serde_json::from_slice(&reply).expect("parsed once already");
            print_json(&v, true)?;
        }
        _ => print_line(String::from_utf8_lossy(&reply).trim_end())?,
    }
    let resp = parsed.map_err(|e| protocol(method, format!("not a response envelope: {e}")))?;
    if resp.ok {
        Ok(())
    } else {
        let code = resp.error.map(|e| e.code).unwrap_or(5);
        Err(Failure::Silent(service_exit_code(code)))
    }
}

fn issue(ctx: &Ctx, a: IssueArgs) -> Result<(), Failure> {
    let words = |list: &[String]| -> Vec<String> {
        list.iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let (actions, rights) = (words(&a.actions), words(&a.rights));
    if actions.is_empty() && rights.is_empty() {
        return Err(Failure::Usage(
            "--actions needs at least one action, e.g. --actions open,read \
             (or --rights fs.open,fs.read)"
                .into(),
        ));
    }
    let mut params = Map::new();
    params.insert("service".into(), json!(a.service));
    if !actions.is_empty() {
        params.insert("actions".into(), json!(actions));
    }
    if !rights.is_empty() {
        params.insert("rights".into(), json!(rights));
    }
    if let Some(r) = a.rate_limit {
        params.insert("rate_limit".into(), json!(r));
    }
    if let Some(p) = a.path_prefix {
        params.insert("path_prefix".into(), json!(p));
    }
    if let Some(t) = a.ttl {
        params.insert("ttl_seconds".into(), json!(t));
    }
    insert_holder(&mut params, a.holder);
    match a.aud.as_slice() {
        [] => {}
        [one] => {
            params.insert("aud".into(), json!(one));
        }
        many => {
            params.insert("aud".into(), json!(many));
        }
    }
    // identity.issue is decided on the caller's peer credentials: no token.
    let r = call("identity.issue", None, &Value::Object(params))?;
    print_minted(ctx, "identity.issue", &r, a.quiet)
}

/// `holder_unit` and `holder_uid`, when given, into a request's params.
fn insert_holder(params: &mut Map<String, Value>, h: HolderArgs) {
    if let Some(u) = h.holder_unit {
        params.insert("holder_unit".into(), json!(u));
    }
    if let Some(u) = h.holder_uid {
        params.insert("holder_uid".into(), json!(u));
    }
}

/// Prints the result of a method that mints a token: whole, or with
/// `quiet` the token alone.
fn print_minted(ctx: &Ctx, method: &str, r: &Value, quiet: bool) -> Result<(), Failure> {
    if !quiet {
        return print_json(r, ctx.pretty);
    }
    let token = r
        .get("token")
        .and_then(Value::as_str)
        .ok_or_else(|| protocol(method, "no token in the result"))?;
    print_line(token)
}

fn delegate(ctx: &Ctx, a: DelegateArgs) -> Result<(), Failure> {
    let token = ctx.require_token("delegate")?;
    let mut params = Map::new();
    if let Some(actions) = a.actions {
        let actions: Vec<&str> = actions
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        if actions.is_empty() {
            return Err(Failure::Usage(
                "--actions needs at least one action, e.g. --actions read".into(),
            ));
        }
        params.insert("actions".into(), json!(actions));
    }
    if let Some(p) = a.path_prefix {
        params.insert("path_prefix".into(), json!(absolute(&p)?));
    }
    if let Some(t) = a.ttl {
        params.insert("ttl_seconds".into(), json!(t));
    }
    insert_holder(&mut params, a.holder);
    let r = call("identity.delegate", Some(token), &Value::Object(params))?;
    print_minted(ctx, "identity.delegate", &r, a.quiet)
}

fn revoke(ctx: &Ctx, a: RevokeArgs) -> Result<(), Failure> {
    let cap_id = if a.self_ {
        let tok = ctx.require_token("revoke --self")?;
        local_token::jti(tok).map_err(|e| {
            Failure::Usage(format!("revoke --self: cannot read the current token: {e}"))
        })?
    } else {
        let id = a.cap_id.unwrap_or_default();
        if !is_cap_id(&id) {
            return Err(Failure::Usage(format!(
                "{id:?} is not a capability id: give the cap_id printed by `issue` \
                 (or the jti of `whoami`), 32 lowercase hex digits, or use --self"
            )));
        }
        id
    };
    // The token goes along so that a holder may revoke its own capability.
    let r = call("identity.revoke", ctx.token(), &json!({ "cap_id": cap_id }))?;
    print_json(&r, ctx.pretty)
}

fn verify(ctx: &Ctx, target: Option<String>) -> Result<(), Failure> {
    let given = match clean_token(target) {
        Some(dash) if dash == "-" => Some(read_token_file(Path::new("-"))?),
        Some(token) => {
            eprintln!("{ARGV_TOKEN_WARNING}");
            Some(token)
        }
        None => None,
    };
    let token = match given.as_deref() {
        Some(t) => t,
        None => ctx.require_token("verify")?,
    };
    let r = call("identity.verify", None, &json!({ "token": token }))?;
    print_json(&r, ctx.pretty)
}

fn whoami(ctx: &Ctx) -> Result<(), Failure> {
    let token = ctx.require_token("whoami")?;
    let r = call("identity.verify", None, &json!({ "token": token }))?;
    print_json(&whoami_view(r), ctx.pretty)
}

/// The claims of an `identity.verify` result, with its verdict beside them.
fn whoami_view(verify_result: Value) -> Value {
    let Value::Object(mut r) = verify_result else {
        return verify_result;
    };
    let mut out = match r.remove("claims") {
        Some(Value::Object(claims)) => claims,
        _ => Map::new(),
    };
    for key in ["valid", "revoked", "expired"] {
        if let Some(v) = r.remove(key) {
            out.insert(key.into(), v);
        }
    }
    Value::Object(out)
}

fn ls(ctx: &Ctx, path: &str, long: bool) -> Result<(), Failure> {
    let r = call("fs.list", ctx.token(), &json!({ "path": absolute(path)? }))?;
    if !long {
        return print_json(&r, ctx.pretty);
    }
    let entries = r
        .get("entries")
        .and_then(Value::as_array)
        .ok_or_else(|| protocol("fs.list", "no entries in the result"))?;
    let table = format_table(entries);
    if !table.is_empty() {
        print_line(table.trim_end_matches('\n'))?;
    }
    if r.get("truncated").and_then(Value::as_bool) == Some(true) {
        eprintln!(
            "strata-ctl: only the first {} entries are shown (fs.list limit)",
            entries.len()
        );
    }
    Ok(())
}

/// `ls --long`: type, size and name, one entry a line.
fn format_table(entries: &[Value]) -> String {
    let mut out = String::new();
    for e in entries {
        let is_dir = e.get("is_dir").and_then(Value::as_bool).unwrap_or(false);
        let size = e.get("size").and_then(Value::as_u64).unwrap_or(0);
        let name = e.get("name").and_then(Value::as_str).unwrap_or("?");
        // A file name may hold control characters: never send them to the
        // terminal as they are.
        let shown: String = if name.chars().any(char::is_control) {
            name.escape_debug().collect()
        } else {
            name.to_string()
        };
        let (kind, slash) = if is_dir { ('d', "/") } else { ('-', "") };
        out.push_str(&format!("{kind} {size:>12}  {shown}{slash}\n"));
    }
    out
}

fn cat(ctx: &Ctx, path: &str) -> Result<(), Failure> {
    let path = absolute(path)?;
    let token = ctx.token();
    let mut client = connect("fs.open")?;
    let opened = call_on(&mut client, "fs.open", token, &json!({ "path": path }))?;
    let handle = opened
        .get("handle")
        .and_then(Value::as_str)
        .ok_or_else(|| protocol("fs.open", "no handle in the result"))?
        .to_string();
    let copied = copy_handle(&mut client, token, &handle, &mut io::stdout().lock());
    // The handle is given back whatever happened to the copy.
    let closed = close_handle(&mut client, token, &handle);
    copied?;
    if let Err(f) = closed {
        for line in f.describe() {
            eprintln!("{line}");
        }
        eprintln!(
            "strata-ctl: the file was read completely; fs drops the handle after it has been idle"
        );
    }
    Ok(())
}

/// Reads a handle to its end into `out`, `READ_SIZE` bytes a request, as
/// base64 so that every byte comes back as it is on disk.
fn copy_handle(
    client: &mut Client,
    token: Option<&str>,
    handle: &str,
    out: &mut impl Write,
) -> Result<u64, Failure> {
    let mut offset: u64 = 0;
    loop {
        let r = call_on(
            client,
            "fs.read",
            token,
            &json!({ "handle": handle, "offset": offset, "size": READ_SIZE, "encoding": "base64" }),
        )?;
        let (bytes, eof) = decode_chunk(&r).map_err(|m| protocol("fs.read", m))?;
        out.write_all(&bytes).map_err(Failure::Output)?;
        offset += bytes.len() as u64;
        if eof || bytes.is_empty() {
            break;
        }
    }
    out.flush().map_err(Failure::Output)?;
    Ok(offset)
}

/// The bytes of one `fs.read` result and whether it reached the end.
fn decode_chunk(r: &Value) -> Result<(Vec<u8>, bool), String> {
    let bytes_read = r
        .get("bytes_read")
        .and_then(Value::as_u64)
        .ok_or("no bytes_read in the result")?;
    let bytes = if let Some(b64) = r.get("data_b64").and_then(Value::as_str) {
        STANDARD
            .decode(b64)
            .map_err(|e| format!("data_b64 is not base64: {e}"))?
    } else if let Some(text) = r.get("data").and_then(Value::as_str) {
        text.as_bytes().to_vec()
    } else {
        return Err("neither data nor data_b64 in the result".into());
    };
    if bytes.len() as u64 != bytes_read {
        return Err(format!(
            "bytes_read is {bytes_read} but {} bytes came",
            bytes.len()
        ));
    }
    // The prototype had no eof: a short read is the end there.
    let eof = r
        .get("eof")
        .and_then(Value::as_bool)
        .unwrap_or(bytes_read < READ_SIZE);
    Ok((bytes, eof))
}

/// `fs.close`, on a fresh connection if the one in hand has failed.
fn close_handle(client: &mut Client, token: Option<&str>, handle: &str) -> Result<(), Failure> {
    let params = json!({ "handle": handle });
    match call_on(client, "fs.close", token, &params) {
        Err(Failure::Client { .. }) => call("fs.close", token, &params).map(drop),
        other => other.map(drop),
    }
}

/// fs wants absolute paths; a relative one is taken from the current
/// directory, as `cat` and `ls` would.
fn absolute(path: &str) -> Result<String, Failure> {
    if path.starts_with('/') {
        return Ok(path.to_string());
    }
    if path.is_empty() {
        return Err(Failure::Usage("the path is empty".into()));
    }
    let cwd = std::env::current_dir().map_err(|e| {
        Failure::Usage(format!(
            "{path:?} is relative and the current directory is unknown ({e}): give an absolute path"
        ))
    })?;
    let joined = cwd.join(path);
    joined.to_str().map(str::to_string).ok_or_else(|| {
        Failure::Usage(format!(
            "{} is not valid UTF-8: give an absolute path",
            joined.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_decode_base64_and_utf8() {
        let r = json!({"bytes_read": 4, "eof": true, "data_b64": "//4AAQ=="});
        assert_eq!(
            decode_chunk(&r).unwrap(),
            (vec![0xff, 0xfe, 0x00, 0x01], true)
        );
        let r = json!({"bytes_read": 3, "eof": false, "data": "hé"});
        assert_eq!(decode_chunk(&r).unwrap(), ("hé".as_bytes().to_vec(), false));
    }

    #[test]
    fn chunk_length_must_match_bytes_read() {
        let e = decode_chunk(&json!({"bytes_read": 3, "eof": true, "data": "ab"})).unwrap_err();
        assert!(e.contains("bytes_read is 3"), "{e}");
        assert!(decode_chunk(&json!({"bytes_read": 0})).is_err());
        assert!(decode_chunk(&json!({"bytes_read": 1, "data_b64": "!!"})).is_err());
    }

    #[test]
    fn prototype_reads_without_eof_end_on_a_short_read() {
        let (_, eof) = decode_chunk(&json!({"bytes_read": 2, "data": "ab"})).unwrap();
        assert!(eof);
        let full = "x".repeat(READ_SIZE as usize);
        let (_, eof) = decode_chunk(&json!({"bytes_read": READ_SIZE, "data": full})).unwrap();
        assert!(!eof);
    }

    #[test]
    fn whoami_puts_the_verdict_beside_the_claims() {
        let r = json!({"valid": true, "revoked": false, "expired": false,
                       "claims": {"jti": "ab", "service": "fs"}});
        assert_eq!(
            whoami_view(r),
            json!({"jti": "ab", "service": "fs", "valid": true, "revoked": false, "expired": false})
        );
    }

    #[test]
    fn long_listing_marks_directories_and_escapes_names() {
        let t = format_table(&[
            json!({"name": "sub", "is_dir": true, "size": 4096}),
            json!({"name": "a\nb", "is_dir": false, "size": 13}),
        ]);
        assert_eq!(t, "d         4096  sub/\n-           13  a\\nb\n");
    }

    #[test]
    fn relative_paths_are_taken_from_the_current_directory() {
        assert_eq!(absolute("/srv/x").unwrap(), "/srv/x");
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(absolute("x/y").unwrap(), cwd.join("x/y").to_str().unwrap());
        assert!(matches!(absolute(""), Err(Failure::Usage(_))));
    }

    #[test]
    fn blank_tokens_count_as_none() {
        assert_eq!(clean_token(Some("  \n".into())), None);
        assert_eq!(clean_token(Some(" t\n".into())).as_deref(), Some("t"));
    }
}
