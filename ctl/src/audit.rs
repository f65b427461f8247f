//! `strata-ctl audit verify`: checks the hash chain of audit trails
//! (docs/audit.md) without asking any service, so that it works on a
//! copy of the files, and on a host where the services are stopped.

use std::path::{Path, PathBuf};

use strata_shared::audit::verify::{self, Failure as VerifyFailure, Report};

use crate::failure::Failure;

/// Where the units keep the trails (`LogsDirectory=strata/fs`,
/// `strata/identity`), checked when no FILE is given.
pub const DEFAULT_TRAILS: &[&str] = &["/var/log/strata/fs", "/var/log/strata/identity"];

/// One chain to check: a trail directory, or files given in order.
struct Chain {
    name: String,
    files: Vec<PathBuf>,
}

/// The chains named by the command line: each directory is one trail
/// (rotated files, then the current one); files given together are one
/// chain in the order given. Without paths: `$STRATA_AUDIT_DIR`, else
/// [`DEFAULT_TRAILS`] that exist.
fn chains(paths: &[PathBuf]) -> Result<Vec<Chain>, Failure> {
    let from_dir = |dir: &Path| -> Result<Chain, Failure> {
        let files = verify::files_in(dir).map_err(|e| Failure::Unreadable(e.to_string()))?;
        if files.is_empty() {
            return Err(Failure::Usage(format!(
                "{} holds no audit trail (audit.jsonl or audit-NNNNNN.jsonl)",
                dir.display()
            )));
        }
        Ok(Chain {
            name: dir.display().to_string(),
            files,
        })
    };
    if paths.is_empty() {
        let dirs: Vec<PathBuf> = match std::env::var_os("STRATA_AUDIT_DIR") {
            Some(d) if !d.is_empty() => vec![d.into()],
            _ => DEFAULT_TRAILS
                .iter()
                .map(PathBuf::from)
                .filter(|d| d.exists())
                .collect(),
        };
        if dirs.is_empty() {
            return Err(Failure::Usage(format!(
                "no audit trail in {}: give the trail's directory or files, \
                 e.g. strata-ctl audit verify /var/log/strata/fs",
                DEFAULT_TRAILS.join(" or ")
            )));
        }
        return dirs.iter().map(|d| from_dir(d)).collect();
    }
    let (dirs, files): (Vec<&PathBuf>, Vec<&PathBuf>) = paths.iter().partition(|p| p.is_dir());
    let mut out: Vec<Chain> = dirs
        .into_iter()
        .map(|d| from_dir(d))
        .collect::<Result<_, _>>()?;
    if !files.is_empty() {
        out.push(Chain {
            name: files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(" "),
            files: files.into_iter().cloned().collect(),
        });
    }
    Ok(out)
}

/// Verifies every chain named, printing what each file holds, notes, and
/// each chain's head hash to anchor. All chains are checked even when one
/// is broken.
///
/// # Errors
/// [`Failure::Broken`] (exit 3) naming the first broken record of each
/// broken chain; [`Failure::Unreadable`] (exit 1) when a file cannot be
/// read; a usage failure when there is nothing to verify.
pub fn verify_command(paths: &[PathBuf]) -> Result<(), Failure> {
    let mut broken = Vec::new();
    let mut unreadable = Vec::new();
    for chain in chains(paths)? {
        match verify::verify(&chain.files) {
            Ok(report) => print_report(&chain.name, &report),
            Err(e @ VerifyFailure::Broken { .. }) => {
                broken.push(format!("{}: chain broken at {e}", chain.name))
            }
            Err(e @ VerifyFailure::Io { .. }) => unreadable.push(e.to_string()),
        }
    }
    if !broken.is_empty() {
        broken.extend(unreadable);
        return Err(Failure::Broken(broken));
    }
    if !unreadable.is_empty() {
        return Err(Failure::Unreadable(unreadable.join("\n")));
    }
    Ok(())
}

fn print_report(name: &str, r: &Report) {
    for f in &r.files {
        match f.seqs {
            Some((a, b)) => println!("{}: {} records, seq {a}-{b}", f.path.display(), f.records),
            None => println!("{}: no records", f.path.display()),
        }
    }
    for note in &r.notes {
        println!("note: {note}");
    }
    let from = match r.anchor {
        Some((seq, prev)) if prev == strata_shared::audit::chain::GENESIS => {
            format!("from seq {seq}, the start of the trail")
        }
        Some((seq, prev)) => {
            format!("from seq {seq}, whose prev {prev} is the last hash of a file no longer kept")
        }
        None => "no records".into(),
    };
    println!("ok: {name}: {} records, chain intact {from}", r.records);
    if let Some((seq, hash)) = r.head {
        println!("head: {name} seq {seq} hash {hash}");
    }
}
