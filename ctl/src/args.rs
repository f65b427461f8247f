//! The command line: the Go prototype's raw form and the subcommands.
//!
//! Two forms share one parser. A first word containing a dot is a raw
//! protocol method (`strata-ctl fs.list '{"path":"/srv"}'`), caught by clap's
//! external-subcommand slot; any other first word is a subcommand. The
//! prototype parsed its options with Go's `flag` package, so `-token T` (one
//! dash) must keep working: [`normalize_argv`] rewrites it before clap sees it.

use std::ffi::OsString;

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Raw form (compatible with the Go prototype):
  strata-ctl [--token-file FILE] <service.action> [params_json]
  Sends one request to $STRATA_RUNTIME_DIR/<service>.sock and prints the
  response envelope as received, on one line, e.g.
    strata-ctl --token-file ~/.strata-token fs.list '{\"path\":\"/srv/data\"}'

Tokens: give them with --token-file FILE (- for stdin) or STRATA_TOKEN,
never on the command line, where every local user can read them
(/proc/PID/cmdline). --token and the prototype's -token still work, with a
warning. With none of them, inside a unit with a grant (docs/grants.md),
the token is systemd's credential $CREDENTIALS_DIRECTORY/strata-NAME: the
only one, or the one chosen with --grant NAME.

Environment:
  STRATA_TOKEN        token used when --token-file is not given
  CREDENTIALS_DIRECTORY  set by systemd: grants' tokens (strata-NAME)
  STRATA_RUNTIME_DIR  where the sockets are (default /run/strata)

Exit status:
  0 ok; 1 cannot reach the service (connection or I/O error); 2 usage error;
  3 `audit verify` found a broken chain, or `fleet verify` refused an endorsement;
  10+code when the service answered an error: 11 invalid request,
  12 authentication required, 13 permission denied, 14 not found,
  15 internal, 16 resource exhausted, 17 rate limited.

See docs/cli.md for the whole reference.";

/// Command-line client for Strata's identity, fs and supervisor services.
#[derive(Parser, Debug)]
#[command(
    name = "strata-ctl",
    version,
    about = "Command-line client for Strata: issue capability tokens, use them on fs, revoke them",
    after_help = AFTER_HELP,
    override_usage = "strata-ctl [OPTIONS] <COMMAND>\n       strata-ctl [--token-file FILE] <service.action> [params_json]"
)]
pub struct Cli {
    /// Read the capability token to present from FILE (`-`: standard
    /// input). Default: $STRATA_TOKEN.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,

    /// Deprecated: the token on the command line, where any local user can
    /// read it. Accepted (also as the prototype's `-token`) with a warning.
    #[arg(long, global = true, value_name = "TOKEN", hide = true)]
    pub token: Option<String>,

    /// Inside a unit with grants' credentials: use
    /// $CREDENTIALS_DIRECTORY/strata-NAME (needed only when the unit has
    /// several). Used when no --token-file and no STRATA_TOKEN is given.
    #[arg(long, global = true, value_name = "NAME")]
    pub grant: Option<String>,

    /// Print JSON indented over several lines instead of on one line.
    #[arg(long, global = true)]
    pub pretty: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Issue a capability token (identity.issue; administrators only).
    ///
    /// Prints {"token","cap_id","expires"} (expires in Unix seconds), or only
    /// the token with --quiet:
    ///   export STRATA_TOKEN=$(strata-ctl issue --service fs --actions open,read,list,stat --path-prefix /srv/data --quiet)
    Issue(IssueArgs),

    /// Delegate a narrower token from the current one (identity.delegate).
    ///
    /// The current token (--token-file, $STRATA_TOKEN or the unit's
    /// credential) must allow the "delegate" action. Every option narrows it;
    /// anything wider is refused (code 3). Prints
    /// {"token","cap_id","expires","chain"}, or only the token with --quiet:
    ///   strata-ctl delegate --actions read --path-prefix /srv/data/reports --ttl 60 --quiet
    Delegate(DelegateArgs),

    /// Revoke a capability (identity.revoke).
    ///
    /// An administrator may revoke any capability; the holder of a token may
    /// revoke its own (--self, or its cap_id with that token in
    /// --token-file/STRATA_TOKEN).
    Revoke(RevokeArgs),

    /// Revoke every token minted from a grant for UNIT (identity.revoke_unit;
    /// administrators only).
    ///
    /// Run when the unit stops: `ExecStopPost=+/usr/bin/strata-ctl
    /// revoke-unit %n` (docs/grants.md). Prints {"status","unit","cap_ids"}.
    RevokeUnit {
        /// The unit, e.g. reader.service.
        unit: String,
    },

    /// Check a token (identity.verify): prints {"valid","revoked","expired","claims"}.
    ///
    /// Reads the token to check from standard input with `-`
    /// (`strata-ctl verify - < token.txt`); without an argument, checks the
    /// current token (--token-file or $STRATA_TOKEN). Exits 0 whenever
    /// identity could read the token, valid or not; a malformed or foreign
    /// token is code 2 (exit 12).
    Verify {
        /// `-` to read the token from standard input. A token given here
        /// is accepted with a warning: any local user can read it.
        #[arg(value_name = "-")]
        target: Option<String>,
    },

    /// Show the claims of the current token, with "valid", "revoked" and "expired".
    Whoami,

    /// List a directory (fs.list); needs the "list" action.
    Ls {
        /// Absolute path, or relative to the current directory.
        path: String,
        /// Print a table (type, size, name) instead of JSON.
        #[arg(short, long)]
        long: bool,
    },

    /// Write a file's bytes to stdout (fs.open, fs.read…, fs.close); needs "open" and "read".
    Cat {
        /// Absolute path, or relative to the current directory.
        path: String,
    },

    /// Show a file's metadata (fs.stat); needs the "stat" action.
    Stat {
        /// Absolute path, or relative to the current directory.
        path: String,
    },

    /// Show the health of every service as the supervisor sees it (supervisor.status).
    Status,

    /// Ask one service whether it is up (SERVICE.health), e.g. `health fs`.
    Health {
        /// identity, fs or supervisor.
        service: String,
    },

    /// Audit trails (docs/audit.md): `audit verify [PATH]...`.
    #[command(subcommand)]
    Audit(AuditCommand),

    /// Strata's services as systemd runs them (supervisor.svc.*):
    /// `svc list`, `svc start NAME`, `svc stop NAME [--drain-ms MS]`.
    #[command(subcommand)]
    Svc(SvcCommand),

    /// A fleet's offline root key and its endorsements of nodes' keys
    /// (docs/fleet.md): `fleet init`, `fleet endorse`, `fleet verify`. No
    /// service is asked.
    #[command(subcommand)]
    Fleet(FleetCommand),

    /// A raw protocol method such as fs.list (see "Raw form" below).
    #[command(external_subcommand)]
    Raw(Vec<String>),
}

#[derive(Args, Debug)]
pub struct IssueArgs {
    /// The service the token is for, e.g. fs.
    #[arg(long)]
    pub service: String,
    /// Comma-separated actions, e.g. open,read,list,stat (fs: open read list stat close).
    #[arg(long, value_delimiter = ',', required_unless_present = "rights", num_args = 1..)]
    pub actions: Vec<String>,
    /// Comma-separated fully qualified rights, the prototype v0.3.2's form,
    /// e.g. fs.open,fs.read; the token grants these and --actions together.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub rights: Vec<String>,
    /// Requests per second or minute the token may make, e.g. 50rps or 30rpm.
    #[arg(long, value_name = "RATE")]
    pub rate_limit: Option<String>,
    /// Directory the token is confined to (required for fs), e.g. /srv/data.
    #[arg(long, value_name = "DIR")]
    pub path_prefix: Option<String>,
    /// Lifetime in seconds (identity's default 3600, maximum 86400 unless configured).
    #[arg(long, value_name = "SECS")]
    pub ttl: Option<u64>,
    #[command(flatten)]
    pub holder: HolderArgs,
    /// Whom the token is for (repeatable, or comma-separated): strata (the
    /// default: every service of this node), fs@NODE, or fleet:NAME (every
    /// node of this node's fleet, docs/fleet.md).
    #[arg(long, value_name = "AUDIENCE", value_delimiter = ',')]
    pub aud: Vec<String>,
    /// Print only the token.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Who may present the token (`holder_unit`, `holder_uid`): the same
/// options for `issue` and `delegate`.
#[derive(Args, Debug)]
pub struct HolderArgs {
    /// Bind the token to this systemd unit: fs honours it only for the
    /// unit's processes, e.g. reader.service (delegate: default, the
    /// current token's binding).
    #[arg(long, value_name = "UNIT")]
    pub holder_unit: Option<String>,
    /// Bind the token to this uid: fs honours it only for that user
    /// (delegate: default, the current token's binding).
    #[arg(long, value_name = "UID")]
    pub holder_uid: Option<u32>,
}

#[derive(Args, Debug)]
pub struct DelegateArgs {
    /// Comma-separated actions, a subset of the current token's (default: all of them).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub actions: Option<Vec<String>>,
    /// The current token's prefix or a directory beneath it (default: the same).
    #[arg(long, value_name = "DIR")]
    pub path_prefix: Option<String>,
    /// Lifetime in seconds, at most what the current token has left.
    #[arg(long, value_name = "SECS")]
    pub ttl: Option<u64>,
    #[command(flatten)]
    pub holder: HolderArgs,
    /// Print only the token.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the hash chain of audit trails and print each one's head hash.
    ///
    /// PATH is a trail directory (its rotated files, then audit.jsonl) or
    /// files, checked as one chain in the order given. Without PATH:
    /// $STRATA_AUDIT_DIR, else /var/log/strata/fs and
    /// /var/log/strata/identity. Exit status: 0 intact, 3 broken (the first
    /// broken record is named: file and line), 1 a file cannot be read,
    /// 2 nothing to verify.
    Verify {
        /// A trail directory, or trail files (oldest first).
        #[arg(value_name = "PATH")]
        paths: Vec<std::path::PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum SvcCommand {
    /// Every Strata service with its state, pid and units (supervisor.svc.list).
    List,
    /// Start a service and wait until it is up (supervisor.svc.start); root only.
    Start {
        /// identity or fs.
        name: String,
    },
    /// Stop a service (supervisor.svc.stop); root only. Its socket closes
    /// at once; it is killed if still draining after --drain-ms.
    Stop {
        /// identity or fs.
        name: String,
        /// How long it may drain after SIGTERM (default 10000, at most 60000).
        #[arg(long, value_name = "MS")]
        drain_ms: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum FleetCommand {
    /// Create a fleet root key in a new file (mode 0600; never overwrites)
    /// and print {"fleet","public_key","kid","file"}.
    ///
    /// Keep the file offline; give the public key to every node.
    Init {
        /// The file to create; it must not exist.
        #[arg(long, value_name = "FILE")]
        out: std::path::PathBuf,
        /// The fleet's name: one lowercase DNS label (default "default").
        #[arg(long, value_name = "NAME", default_value = "default")]
        fleet: String,
    },
    /// Endorse a node's key with the root key: print the endorsement token.
    ///
    ///   strata-ctl fleet endorse --root-key root.json --node-id node-a \
    ///       --node-key "$(ssh node-a cat /run/strata/identity.pub)" > node-a.endorsement
    Endorse(FleetEndorseArgs),
    /// Show this node's view of its fleet (fs.health's `fleet`):
    /// {"name","state","since_heard_ms","max_staleness_ms","revision","nodes",
    /// "revocations","error"?}. Exit 0 when `state` is fresh (fleet tokens
    /// served), 3 when stale or syncing (refused).
    Status,
    /// Check an endorsement against the root public key: print
    /// {"fleet","node_id","kid","public_key","issued","expires"}, or why it
    /// is refused (exit 3).
    Verify {
        /// The fleet's root public key, as `fleet init` printed it.
        #[arg(long, value_name = "PUBKEY")]
        root_public_key: String,
        /// The fleet the endorsement must be for.
        #[arg(long, value_name = "NAME")]
        fleet: String,
        /// A file holding the endorsement, or `-` for standard input.
        #[arg(value_name = "ENDORSEMENT-FILE")]
        endorsement: std::path::PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct FleetEndorseArgs {
    /// The root key file made by `fleet init` (mode 0600 or stricter).
    #[arg(long, value_name = "FILE")]
    pub root_key: std::path::PathBuf,
    /// The node's id (its STRATA_NODE_ID), e.g. node-a.
    #[arg(long, value_name = "ID")]
    pub node_id: String,
    /// The node's public key, as identity.pubkey and
    /// /run/strata/identity.pub give it (standard base64 of 32 bytes).
    #[arg(long, value_name = "PUBKEY")]
    pub node_key: String,
    /// The fleet; must be the root key file's (default: the file's).
    #[arg(long, value_name = "NAME")]
    pub fleet: Option<String>,
    /// Lifetime in seconds; without it the endorsement does not expire.
    #[arg(long, value_name = "SECS")]
    pub ttl: Option<u64>,
}

#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// The capability id (cap_id from `issue`, jti from `whoami`): 32 hex digits.
    #[arg(
        value_name = "CAP_ID",
        required_unless_present = "self_",
        conflicts_with = "self_"
    )]
    pub cap_id: Option<String>,
    /// Revoke the capability of the current token (--token-file or $STRATA_TOKEN).
    #[arg(long = "self", id = "self_")]
    pub self_: bool,
}

/// Rewrites the prototype's single-dash `-token T` / `-token=T` into clap's
/// `--token`. Everything after a `--` is left alone.
pub fn normalize_argv<I, T>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut out = Vec::new();
    let mut verbatim = false;
    for (i, arg) in args.into_iter().enumerate() {
        let arg: OsString = arg.into();
        if i == 0 || verbatim {
            out.push(arg);
            continue;
        }
        let rewritten = match arg.to_str() {
            Some("--") => {
                verbatim = true;
                None
            }
            Some("-token") => Some(OsString::from("--token")),
            Some(s) => s
                .strip_prefix("-token=")
                .map(|v| OsString::from(format!("--token={v}"))),
            None => None,
        };
        out.push(rewritten.unwrap_or(arg));
    }
    out
}

/// A raw call as given on the command line.
#[derive(Debug, PartialEq, Eq)]
pub struct RawCall {
    pub method: String,
    pub params: serde_json::Value,
    /// Options given after the method (the prototype had none there; we
    /// accept them for convenience).
    pub token: Option<String>,
    pub token_file: Option<std::path::PathBuf>,
    pub pretty: bool,
}

/// What the words after `strata-ctl [options]` ask for, when the first one is
/// not a subcommand. `Ok(None)` means `--help` was asked for.
pub fn parse_raw(words: &[String]) -> Result<Option<RawCall>, String> {
    let (method, rest) = words
        .split_first()
        .ok_or_else(|| "missing command".to_string())?;
    if !method.contains('.') {
        return Err(format!(
            "unknown command {method:?}: use a subcommand (see `strata-ctl --help`) \
             or a raw method of the form service.action, e.g. fs.list"
        ));
    }
    check_service_name(method.split('.').next().unwrap_or_default(), method)?;
    let mut token = None;
    let mut token_file = None;
    let mut pretty = false;
    let mut params_text: Option<&str> = None;
    let mut it = rest.iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "-h" | "--help" => return Ok(None),
            "--pretty" => pretty = true,
            "--token" => {
                token = Some(
                    it.next()
                        .ok_or("--token needs a value: --token TOKEN")?
                        .clone(),
                )
            }
            s if s.starts_with("--token=") => token = Some(s["--token=".len()..].to_string()),
            "--token-file" => {
                token_file = Some(
                    it.next()
                        .ok_or("--token-file needs a value: --token-file FILE (- for stdin)")?
                        .into(),
                )
            }
            s if s.starts_with("--token-file=") => {
                token_file = Some(s["--token-file=".len()..].into())
            }
            s if params_text.is_none() => params_text = Some(s),
            s => {
                return Err(format!(
                    "unexpected argument {s:?} after the params: give one JSON object, \
                     quoted for the shell, e.g. '{{\"path\":\"/srv/data\"}}'"
                ))
            }
        }
    }
    let params = match params_text {
        None => serde_json::json!({}),
        Some(text) => parse_params(text)?,
    };
    Ok(Some(RawCall {
        method: method.clone(),
        params,
        token,
        token_file,
        pretty,
    }))
}

/// The `params_json` argument: a JSON object.
pub fn parse_params(text: &str) -> Result<serde_json::Value, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        format!(
            "params_json is not valid JSON ({e}): give one JSON object, quoted for the shell, \
             e.g. '{{\"path\":\"/srv/data\"}}' (keys and strings in double quotes)"
        )
    })?;
    if !value.is_object() {
        return Err(format!(
            "params_json must be a JSON object, not {text}: e.g. '{{\"path\":\"/srv/data\"}}' \
             (use '{{}}' for no parameters)"
        ));
    }
    Ok(value)
}

/// The service part of a method names a socket file: keep it a plain name.
pub fn check_service_name(service: &str, what: &str) -> Result<(), String> {
    let ok = !service.is_empty()
        && service.len() <= 32
        && service
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what:?} does not name a service: methods look like service.action \
             (identity, fs or supervisor), e.g. fs.list"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize_argv(args.iter().copied())
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(normalize_argv(args.iter().copied()))
    }

    #[test]
    fn single_dash_token_becomes_double_dash() {
        assert_eq!(
            norm(&["strata-ctl", "-token", "T", "fs.list", "{}"]),
            ["strata-ctl", "--token", "T", "fs.list", "{}"]
        );
        assert_eq!(
            norm(&["strata-ctl", "-token=T", "ls", "/srv"]),
            ["strata-ctl", "--token=T", "ls", "/srv"]
        );
        // Already-long forms and other words are untouched.
        assert_eq!(
            norm(&["strata-ctl", "--token", "T", "--token=U", "cat", "-tokenx"]),
            ["strata-ctl", "--token", "T", "--token=U", "cat", "-tokenx"]
        );
        // argv[0] and anything after `--` are left alone.
        assert_eq!(
            norm(&["-token", "ls", "--", "-token"]),
            ["-token", "ls", "--", "-token"]
        );
    }

    #[test]
    fn raw_form_goes_to_the_external_slot() {
        let cli = parse(&["strata-ctl", "-token", "T", "fs.list", r#"{"path":"/srv"}"#]).unwrap();
        assert_eq!(cli.token.as_deref(), Some("T"));
        let Command::Raw(words) = cli.command else {
            panic!("not raw: {:?}", cli.command)
        };
        let call = parse_raw(&words).unwrap().unwrap();
        assert_eq!(call.method, "fs.list");
        assert_eq!(call.params, serde_json::json!({"path": "/srv"}));

        let cli = parse(&["strata-ctl", "-token=T", "supervisor.status"]).unwrap();
        assert_eq!(cli.token.as_deref(), Some("T"));
        let Command::Raw(words) = cli.command else {
            panic!()
        };
        assert_eq!(
            parse_raw(&words).unwrap().unwrap().params,
            serde_json::json!({})
        );
    }

    #[test]
    fn raw_params_must_be_a_json_object() {
        let words = |p: &str| vec!["fs.list".to_string(), p.to_string()];
        let e = parse_raw(&words("{path:/srv}")).unwrap_err();
        assert!(e.contains("not valid JSON"), "{e}");
        let e = parse_raw(&words("[1]")).unwrap_err();
        assert!(e.contains("must be a JSON object"), "{e}");
        let e = parse_raw(&["fs.list".into(), "{}".into(), "{}".into()]).unwrap_err();
        assert!(e.contains("unexpected argument"), "{e}");
        assert!(parse_raw(&["fs.list".into(), "--help".into()])
            .unwrap()
            .is_none());
    }

    #[test]
    fn words_without_a_dot_are_not_methods() {
        let cli = parse(&["strata-ctl", "frobnicate"]).unwrap();
        let Command::Raw(words) = cli.command else {
            panic!()
        };
        assert!(parse_raw(&words).unwrap_err().contains("unknown command"));
        assert!(parse_raw(&["../x.y".into()]).is_err());
        assert!(parse_raw(&[".list".into()]).is_err());
    }

    #[test]
    fn subcommands_parse() {
        let cli = parse(&[
            "strata-ctl",
            "issue",
            "--service",
            "fs",
            "--actions",
            "open,read",
            "--path-prefix",
            "/srv/x",
            "--ttl",
            "60",
            "--holder-unit",
            "reader.service",
            "--holder-uid",
            "1000",
            "--rate-limit",
            "5rps",
            "--quiet",
        ])
        .unwrap();
        let Command::Issue(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.actions, ["open", "read"]);
        assert_eq!(a.rate_limit.as_deref(), Some("5rps"));
        assert!(a.rights.is_empty());
        assert_eq!(a.ttl, Some(60));
        assert_eq!(a.holder.holder_unit.as_deref(), Some("reader.service"));
        assert_eq!(a.holder.holder_uid, Some(1000));

        let cli = parse(&[
            "strata-ctl",
            "delegate",
            "--actions",
            "read",
            "--path-prefix",
            "/srv/data/reports",
            "--ttl",
            "60",
        ])
        .unwrap();
        let Command::Delegate(d) = cli.command else {
            panic!()
        };
        assert_eq!(d.actions, Some(vec!["read".to_string()]));
        assert_eq!(d.path_prefix.as_deref(), Some("/srv/data/reports"));
        assert_eq!(d.ttl, Some(60));
        assert!(a.quiet);
        // Rights alone will do.
        let cli = parse(&[
            "strata-ctl",
            "issue",
            "--service",
            "fs",
            "--rights",
            "fs.read,fs.open",
        ])
        .unwrap();
        let Command::Issue(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.rights, ["fs.read", "fs.open"]);
        assert!(a.actions.is_empty());

        // Global options may follow the subcommand.
        let cli = parse(&["strata-ctl", "ls", "/srv", "-token", "T", "--long"]).unwrap();
        assert_eq!(cli.token.as_deref(), Some("T"));
        assert!(matches!(cli.command, Command::Ls { long: true, .. }));

        let cli = parse(&["strata-ctl", "audit", "verify", "/a", "/b"]).unwrap();
        let Command::Audit(AuditCommand::Verify { paths }) = cli.command else {
            panic!()
        };
        assert_eq!(paths, [Path::new("/a"), Path::new("/b")]);

        let cli = parse(&[
            "strata-ctl",
            "fleet",
            "endorse",
            "--root-key",
            "/k",
            "--node-id",
            "node-a",
            "--node-key",
            "PK",
            "--ttl",
            "60",
        ])
        .unwrap();
        let Command::Fleet(FleetCommand::Endorse(e)) = cli.command else {
            panic!()
        };
        assert_eq!(
            (e.node_id.as_str(), e.ttl, e.fleet),
            ("node-a", Some(60), None)
        );
        let cli = parse(&["strata-ctl", "fleet", "init", "--out", "/k"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Fleet(FleetCommand::Init { fleet, .. }) if fleet == "default"
        ));

        let cli = parse(&["strata-ctl", "revoke", "--self"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Revoke(RevokeArgs {
                self_: true,
                cap_id: None
            })
        ));
    }

    #[test]
    fn usage_errors_are_exit_2() {
        for args in [
            &["strata-ctl"][..],
            &["strata-ctl", "revoke"],
            &["strata-ctl", "revoke", "--self", "0123"],
            &["strata-ctl", "issue", "--actions", "read"],
            &["strata-ctl", "issue", "--service", "fs"],
            &[
                "strata-ctl",
                "issue",
                "--service",
                "fs",
                "--actions",
                "read",
                "--ttl",
                "x",
            ],
            &["strata-ctl", "ls"],
            &["strata-ctl", "fleet", "init"],
            &["strata-ctl", "fleet", "verify", "--fleet", "prod", "-"],
            &[
                "strata-ctl",
                "fleet",
                "endorse",
                "--root-key",
                "/k",
                "--node-id",
                "a",
            ],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
