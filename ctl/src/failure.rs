//! Why a command failed, what the user is told, and the exit status.
//!
//! Exit statuses are a contract that scripts code against:
//! 0 ok, 1 the service could not be reached (or stdout failed, or an audit
//! trail or a fleet file could not be read or written), 2 usage, 3 an audit
//! trail's chain is broken, `fleet verify` refused an endorsement, or
//! `fleet status` found fleet tokens refused, 10 + code when the service answered an error.

use std::io;
use std::path::PathBuf;

use strata_shared::client::ClientError;
use strata_shared::config;

/// Exit status of a usage error (the same as clap's).
pub const EXIT_USAGE: u8 = 2;
/// Exit status when the service cannot be reached or the output cannot be written.
pub const EXIT_IO: u8 = 1;
/// Exit status of `audit verify` when a chain is broken, of `fleet
/// verify` when the endorsement is refused, and of `fleet status` when
/// fleet tokens are refused: what was checked does not hold.
pub const EXIT_BROKEN: u8 = 3;
/// Largest exit status used for a service error; above it shells give
/// statuses their own meanings (126, 127, 128+signal).
const EXIT_SERVICE_MAX: u8 = 125;

/// The exit status for a service error `code`: 10 + code (12 for
/// authentication required, 13 for permission denied, …).
pub fn service_exit_code(code: u16) -> u8 {
    u8::try_from(10 + u32::from(code))
        .unwrap_or(u8::MAX)
        .min(EXIT_SERVICE_MAX)
}

#[derive(Debug)]
pub enum Failure {
    /// The command line is wrong; the message says how to fix it.
    Usage(String),
    /// No answer from the service.
    Client { method: String, error: ClientError },
    /// The service answered `ok:false`; `details` is the error's
    /// structured `details`, when the service sent one.
    Service {
        method: String,
        code: u16,
        message: String,
        details: Option<serde_json::Value>,
    },
    /// The service answered something this client cannot use.
    Protocol { method: String, message: String },
    /// Writing the output failed.
    Output(io::Error),
    /// Already reported (the raw form prints the response itself).
    Silent(u8),
    /// `audit verify`: a trail's chain is broken; one line per broken chain.
    Broken(Vec<String>),
    /// `audit verify`: a trail file could not be read.
    Unreadable(String),
    /// A local file (`fleet`'s key or endorsement) could not be read or
    /// written; the message names it.
    File(String),
    /// `fleet verify`: the endorsement is refused; the message says why.
    Refused(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => EXIT_USAGE,
            Failure::Client { .. }
            | Failure::Protocol { .. }
            | Failure::Output(_)
            | Failure::Unreadable(_)
            | Failure::File(_) => EXIT_IO,
            Failure::Broken(_) | Failure::Refused(_) => EXIT_BROKEN,
            Failure::Service { code, .. } => service_exit_code(*code),
            Failure::Silent(code) => *code,
        }
    }

    /// The lines to print on stderr, hint included; empty when there is
    /// nothing to say.
    pub fn describe(&self) -> Vec<String> {
        match self {
            Failure::Usage(msg) => vec![
                format!("strata-ctl: {msg}"),
                "try `strata-ctl --help`".into(),
            ],
            Failure::Client { method, error } => describe_client_error(method, error),
            Failure::Service {
                method,
                code,
                message,
                details,
            } => {
                // The first line's form, `… (code N)`, is what scripts match:
                // it stays as it was before errors had names.
                let mut lines = vec![format!("strata-ctl: {method}: {message} (code {code})")];
                if let Some(details) = details {
                    lines.push(format!("details: {details}"));
                }
                // fs's refusal of a bound token presented by someone else
                // (services/fs/src/policy.rs, check_holder).
                let bound = *code == 3 && message.starts_with("token is bound to ");
                if bound {
                    lines.push(
                        "hint: this token works only for the unit (or uid) it is bound to; run \
                         strata-ctl inside that unit, or have an administrator issue a token for \
                         this caller"
                            .into(),
                    );
                } else if let Some(h) = hint(method, *code) {
                    lines.push(format!("hint: {h}"));
                }
                lines
            }
            Failure::Protocol { method, message } => {
                vec![format!(
                    "strata-ctl: {method}: unexpected answer: {message}"
                )]
            }
            // A closed pipe (`strata-ctl cat f | head`) is not worth a message.
            Failure::Output(e) if e.kind() == io::ErrorKind::BrokenPipe => vec![],
            Failure::Output(e) => vec![format!("strata-ctl: cannot write the output: {e}")],
            Failure::Silent(_) => vec![],
            Failure::Broken(lines) => lines
                .iter()
                .map(|l| format!("strata-ctl: audit verify: {l}"))
                .chain(std::iter::once(
                    "hint: the records from there on cannot be trusted; compare with the head hash \
                     printed by an earlier verify, and keep a copy of the files for inspection"
                        .to_string(),
                ))
                .collect(),
            Failure::Unreadable(msg) => msg
                .lines()
                .map(|l| format!("strata-ctl: audit verify: {l}"))
                .collect(),
            Failure::File(msg) => vec![format!("strata-ctl: {msg}")],
            Failure::Refused(msg) => vec![format!("strata-ctl: fleet verify: refused: {msg}")],
        }
    }
}

/// What to do about a service error, where there is something useful to say.
pub fn hint(method: &str, code: u16) -> Option<&'static str> {
    Some(match (method, code) {
        // identity decides these on who the caller is, not on a token.
        ("identity.issue", 3) => {
            "only administrators may issue tokens: run as root or as a user or group \
             listed in identity's STRATA_ADMIN_UIDS/GIDS/USERS/GROUPS"
        }
        ("identity.revoke", 3) => {
            "only an administrator, or the holder of that very token (--token-file or \
             STRATA_TOKEN), may revoke a capability"
        }
        (_, code) => return hint_for_code(code),
    })
}

/// The general hint for a service error code.
pub fn hint_for_code(code: u16) -> Option<&'static str> {
    Some(match code {
        2 => "get a token with `strata-ctl issue …` as an admin and pass it with --token-file FILE or STRATA_TOKEN",
        3 => "the token does not allow this; ask an admin for a token with the right actions/path_prefix",
        6 => "a limit was hit; close handles or retry later",
        7 => "the token's rate_limit allows no more requests now; slow down and retry shortly",
        _ => return None,
    })
}

fn describe_client_error(method: &str, error: &ClientError) -> Vec<String> {
    match error {
        ClientError::Connect { path, source } => {
            let mut lines = vec![format!(
                "strata-ctl: {method}: cannot connect to {}: {source}",
                path.display()
            )];
            lines.push(format!("hint: {}", connect_hint(path, source)));
            lines
        }
        other => vec![format!("strata-ctl: {method}: {other}")],
    }
}

fn connect_hint(path: &std::path::Path, source: &io::Error) -> String {
    match source.kind() {
        io::ErrorKind::PermissionDenied => format!(
            "your user may not open {}; run as a user with access to the socket, \
             or ask an admin",
            path.display()
        ),
        _ => {
            let dir: PathBuf = config::runtime_dir();
            format!(
                "is strata running? systemctl start strata.target \
                 (sockets are looked for in {}; set STRATA_RUNTIME_DIR if they are elsewhere)",
                dir.display()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_codes_map_to_ten_plus_code() {
        assert_eq!(service_exit_code(1), 11);
        assert_eq!(service_exit_code(2), 12);
        assert_eq!(service_exit_code(3), 13);
        assert_eq!(service_exit_code(4), 14);
        assert_eq!(service_exit_code(6), 16);
        assert_eq!(service_exit_code(7), 17);
        assert!(hint_for_code(7).unwrap().contains("rate_limit"));
        // Codes that would collide with the shell's own statuses are capped.
        assert_eq!(service_exit_code(200), 125);
        assert_eq!(service_exit_code(u16::MAX), 125);
    }

    #[test]
    fn failure_exit_statuses() {
        assert_eq!(Failure::Usage("x".into()).exit_code(), 2);
        let svc = |code| Failure::Service {
            method: "fs.list".into(),
            code,
            message: "m".into(),
            details: None,
        };
        assert_eq!(svc(2).exit_code(), 12);
        assert_eq!(svc(3).exit_code(), 13);
        let conn = Failure::Client {
            method: "fs.list".into(),
            error: ClientError::Connect {
                path: "/nowhere/fs.sock".into(),
                source: io::Error::from(io::ErrorKind::NotFound),
            },
        };
        assert_eq!(conn.exit_code(), 1);
        let text = conn.describe().join("\n");
        assert!(text.contains("/nowhere/fs.sock"), "{text}");
        assert!(text.contains("systemctl start strata.target"), "{text}");
        assert_eq!(
            Failure::Output(io::ErrorKind::BrokenPipe.into()).exit_code(),
            1
        );
        assert!(Failure::Output(io::ErrorKind::BrokenPipe.into())
            .describe()
            .is_empty());
    }

    #[test]
    fn service_errors_name_method_code_and_hint() {
        let f = Failure::Service {
            method: "fs.open".into(),
            code: 3,
            message: "path is outside the token's prefix".into(),
            details: None,
        };
        let lines = f.describe();
        assert_eq!(
            lines[0],
            "strata-ctl: fs.open: path is outside the token's prefix (code 3)"
        );
        assert!(lines[1].starts_with("hint: the token does not allow this"));
        let f = Failure::Service {
            method: "identity.issue".into(),
            code: 3,
            message: "caller uid 1000 is not an administrator".into(),
            details: None,
        };
        assert!(f.describe()[1].contains("only administrators may issue"));
        let f = Failure::Service {
            method: "fs.open".into(),
            code: 4,
            message: "no such file".into(),
            details: None,
        };
        assert_eq!(f.describe().len(), 1);
        let f = Failure::Service {
            method: "fs.read".into(),
            code: 3,
            message: "token does not allow action \"read\"".into(),
            details: Some(serde_json::json!({"required": "fs.read"})),
        };
        let lines = f.describe();
        assert_eq!(
            lines[..2],
            [
                "strata-ctl: fs.read: token does not allow action \"read\" (code 3)",
                r#"details: {"required":"fs.read"}"#
            ]
        );
        assert!(lines[2].starts_with("hint: the token does not allow this"));
    }
}
