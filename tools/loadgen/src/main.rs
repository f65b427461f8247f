//! `strata-loadgen`: load and fault-injection client for Strata, run inside
//! the machine under test by the fault scenarios
//! (`nixos-tests/scenarios/13-*.sh` to `15-*.sh`).
//!
//! - `make-tree`: a deterministic tree of files to read;
//! - `mixed`: many connections reading and listing that tree through fs,
//!   checking every answer, counting every failure by kind;
//! - `revoke-storm`: issue tokens, then revoke them from many connections at
//!   once, writing down which revocations were acknowledged;
//! - `check-revoked`: every acknowledged revocation is in force at identity
//!   and at fs, and the control tokens still work;
//! - `refusals`: requests without a token and with a long path, over one
//!   connection (the journal flood of `18-audit-forgery.sh`).
//!
//! Each prints a JSON report on stdout; see `docs/reliability.md`.

mod conn;
mod hold;
mod mixed;
mod refusals;
mod revoke;
mod tree;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use strata_shared::config;

#[derive(Parser)]
#[command(
    name = "strata-loadgen",
    version,
    about = "Load and fault-injection client for Strata (used by the fault scenarios)",
    after_help = "Sockets: $STRATA_RUNTIME_DIR/{identity,fs}.sock (default /run/strata)."
)]
struct Cli {
    /// Seconds a connection waits for one answer before the request counts
    /// as a failure (`timeout`).
    #[arg(long, global = true, default_value_t = 30)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a deterministic tree of files (replacing DIR).
    MakeTree {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 48)]
        files: usize,
    },
    /// Mixed fs.read / fs.list load on DIR, every answer checked against
    /// the files on disk. Exit 1 when an answer was wrong, an error was
    /// answered where success was due, or a connection was refused.
    Mixed {
        /// Concurrent connections (one thread each).
        #[arg(long, default_value_t = 32)]
        conns: usize,
        /// Seconds of load.
        #[arg(long, default_value_t = 60)]
        duration: u64,
        /// fs token allowing open, read, list (and close) under DIR.
        #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
        token: String,
        /// The known tree (read here directly, as the reference).
        #[arg(long)]
        dir: PathBuf,
        /// Also write the report to this file.
        #[arg(long)]
        report: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Issue COUNT tokens (+ CONTROLS never revoked), then revoke the COUNT
    /// from CONNS connections at once; write every outcome to OUT. Must run
    /// as an administrator (root).
    RevokeStorm {
        #[arg(long, default_value_t = 2000)]
        count: usize,
        #[arg(long, default_value_t = 16)]
        conns: usize,
        #[arg(long, default_value_t = 20)]
        controls: usize,
        /// path_prefix of the tokens (an fs.list of it is how fs is asked).
        #[arg(long)]
        prefix: String,
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        #[arg(long)]
        out: PathBuf,
        /// Created (with the time in ms) when the revocations begin.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Open up to CONNS connections to SERVICE, each asking
    /// `<service>.health` once, stop at the first refusal, and hold them
    /// for SECONDS: one local user taking what it can. Prints
    /// {"held":N,"refused":{"code":C,"message":M}|null}.
    Hold {
        /// identity, fs or supervisor.
        #[arg(long)]
        service: String,
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Written with the summary once the connections are held.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Check a revoke-storm file: each acknowledged revocation in force at
    /// identity (identity.verify) and at fs (code 2); each control token
    /// valid and served. Exit 1 if anything did not hold.
    CheckRevoked {
        #[arg(long)]
        file: PathBuf,
    },
    /// Send COUNT requests for METHOD without a token over one connection,
    /// each with a path of BYTES bytes (PREFIX, then `x`s); report the
    /// answers by code. Exit 1 unless every answer was code 2.
    Refusals {
        #[arg(long, default_value_t = 50)]
        count: usize,
        #[arg(long, default_value = "fs.stat")]
        method: String,
        #[arg(long, default_value = "/srv/data/")]
        prefix: String,
        /// Just under the 1 MiB frame limit by default.
        #[arg(long, default_value_t = 1_048_000)]
        bytes: usize,
        /// Connections to spread the requests over.
        #[arg(long, default_value_t = 1)]
        conns: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let timeout = Duration::from_secs(cli.timeout.max(1));
    match cli.command {
        Command::MakeTree { dir, files } => match tree::make(&dir, files) {
            Ok(bytes) => {
                println!(
                    "{}",
                    serde_json::json!({"dir": dir, "files": files, "bytes": bytes})
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!("make-tree {}: {e}", dir.display())),
        },
        Command::Mixed {
            conns,
            duration,
            token,
            dir,
            report,
            seed,
        } => {
            let tree = match tree::Tree::load(&dir) {
                Ok(t) => t,
                Err(e) => return fail(format!("cannot load the tree {}: {e}", dir.display())),
            };
            let r = mixed::run(
                mixed::Options {
                    socket: config::socket_path("fs"),
                    token,
                    conns: conns.max(1),
                    duration: Duration::from_secs(duration),
                    timeout,
                    seed,
                },
                tree,
            );
            if let Some(p) = report {
                if let Err(e) = std::fs::write(&p, r.to_string()) {
                    return fail(format!("cannot write {}: {e}", p.display()));
                }
            }
            println!("{r}");
            let clean = r["wrong"] == 0 && r["errors_total"] == 0 && r["refusals"] == 0;
            if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::RevokeStorm {
            count,
            conns,
            controls,
            prefix,
            ttl,
            out,
            ready_file,
        } => revoke::storm(revoke::StormOptions {
            identity_socket: config::socket_path("identity"),
            count,
            controls,
            conns,
            prefix,
            ttl,
            out,
            ready_file,
            timeout,
        })
        .map_or_else(fail, printed),
        Command::Hold {
            service,
            conns,
            seconds,
            ready_file,
        } => hold::run(hold::Options {
            socket: config::socket_path(&service),
            method: format!("{service}.health"),
            conns,
            seconds,
            ready_file,
            timeout,
        })
        .map_or_else(fail, printed),
        Command::CheckRevoked { file } => match revoke::check(revoke::CheckOptions {
            identity_socket: config::socket_path("identity"),
            fs_socket: config::socket_path("fs"),
            file,
            timeout,
        }) {
            Ok((summary, held)) => {
                println!("{summary}");
                if held {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => fail(e),
        },
        Command::Refusals {
            count,
            method,
            prefix,
            bytes,
            conns,
        } => {
            let socket = config::socket_path(method.split('.').next().unwrap_or("fs"));
            match refusals::run(&refusals::Options {
                socket,
                method,
                prefix,
                bytes,
                count,
                conns,
                timeout,
            }) {
                Ok(r) => {
                    println!("{r}");
                    if r["code_2"] == count as u64 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => fail(e),
            }
        }
    }
}

/// A command that succeeded: its summary on stdout, exit 0.
fn printed(summary: impl std::fmt::Display) -> ExitCode {
    println!("{summary}");
    ExitCode::SUCCESS
}

fn fail(msg: String) -> ExitCode {
    eprintln!("strata-loadgen: {msg}");
    ExitCode::from(2)
}
