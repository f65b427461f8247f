//! Checks a trail's hash chain: every record's hash matches its content,
//! every `prev` is the hash of the record before, seq numbers follow each
//! other, across rotated files. `strata-ctl audit verify` is this.
//!
//! A line cut short by a crash or a full disk is not a break when the
//! service acknowledged it: the record after such a region is an event
//! (`start` or `resumed`) whose `cut_at` and `cut_bytes` name exactly the
//! bytes of the region, and whose `prev` is the hash of the last record
//! before it. Anything else that does not verify is a break.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::chain::{self, Hash};

/// A file that verified, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    pub path: PathBuf,
    pub records: u64,
    /// Seq of its first and last record.
    pub seqs: Option<(u64, u64)>,
}

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub files: Vec<FileReport>,
    pub records: u64,
    /// Seq and `prev` of the first record: the chain is checked from
    /// there on (`prev` is all zeros when nothing was rotated away).
    pub anchor: Option<(u64, Hash)>,
    /// Seq and hash of the last record: what an operator writes down to
    /// compare later.
    pub head: Option<(u64, Hash)>,
    /// Things that are not breaks but worth saying (acknowledged cuts, a
    /// line cut short at the very end).
    pub notes: Vec<String>,
}

/// Why verification failed.
#[derive(Debug)]
pub enum Failure {
    /// A file could not be read.
    Io { path: PathBuf, error: io::Error },
    /// The first record that does not verify.
    Broken {
        path: PathBuf,
        /// 1-based line number in `path`.
        line: u64,
        why: String,
    },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Io { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            Failure::Broken { path, line, why } => {
                write!(f, "{} line {line}: {why}", path.display())
            }
        }
    }
}

/// Consecutive lines that do not verify, not yet judged.
struct BadRegion {
    path: PathBuf,
    line: u64,
    at: u64,
    why: String,
    /// The region has a line that ends without a newline.
    unterminated: bool,
}

/// Verifies `files` as one chain, in the order given (oldest first).
///
/// # Errors
/// [`Failure::Broken`] naming the first record that does not verify, or
/// [`Failure::Io`].
pub fn verify(files: &[PathBuf]) -> Result<Report, Failure> {
    let mut report = Report {
        files: Vec::new(),
        records: 0,
        anchor: None,
        head: None,
        notes: Vec::new(),
    };
    let mut last: Option<(u64, Hash, PathBuf, u64)> = None;
    let mut bad: Option<BadRegion> = None;
    for path in files {
        let io_err = |error| Failure::Io {
            path: path.clone(),
            error,
        };
        let mut reader = BufReader::new(File::open(path).map_err(io_err)?);
        let mut file = FileReport {
            path: path.clone(),
            records: 0,
            seqs: None,
        };
        let mut buf = Vec::new();
        let (mut offset, mut line_no) = (0u64, 0u64);
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).map_err(io_err)?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let at = offset;
            offset += n as u64;
            let terminated = buf.last() == Some(&b'\n');
            let text = if terminated { &buf[..n - 1] } else { &buf[..] };
            let parsed = chain::parse_line(text);
            let why = match &parsed {
                None => Some("not a record of the trail's format".to_string()),
                Some(p) if !p.hash_matches() => Some(format!(
                    "seq {}: its hash does not match its content: the record was edited",
                    p.seq
                )),
                Some(_) => None,
            };
            if let Some(why) = why {
                match &mut bad {
                    Some(region) => region.unterminated |= !terminated,
                    None => {
                        bad = Some(BadRegion {
                            path: path.clone(),
                            line: line_no,
                            at,
                            why,
                            unterminated: !terminated,
                        })
                    }
                }
                continue;
            }
            let p = parsed.expect("checked above");
            if let Some(region) = bad.take() {
                let acknowledged = region.path == *path && acknowledges(p.body, region.at, at);
                if !acknowledged {
                    return Err(Failure::Broken {
                        path: region.path,
                        line: region.line,
                        why: region.why,
                    });
                }
                report.notes.push(format!(
                    "{} line {}: {} bytes of a record cut short (a crash or a full disk during its \
                     write; the request was not answered), acknowledged by the service's event at \
                     line {line_no}",
                    path.display(),
                    region.line,
                    at - region.at
                ));
            }
            match &last {
                None => report.anchor = Some((p.seq, p.prev)),
                Some((seq, hash, lpath, lline)) => {
                    if p.prev != *hash {
                        return Err(Failure::Broken {
                            path: path.clone(),
                            line: line_no,
                            why: format!(
                                "seq {}: prev is not the hash of the record before it ({} line \
                                 {lline}): a record was removed, inserted or edited",
                                p.seq,
                                lpath.display()
                            ),
                        });
                    }
                    if p.seq != seq + 1 {
                        return Err(Failure::Broken {
                            path: path.clone(),
                            line: line_no,
                            why: format!("seq {} follows seq {seq}: expected {}", p.seq, seq + 1),
                        });
                    }
                }
            }
            last = Some((p.seq, p.hash, path.clone(), line_no));
            file.records += 1;
            file.seqs = Some((file.seqs.map_or(p.seq, |s| s.0), p.seq));
        }
        report.records += file.records;
        report.files.push(file);
    }
    if let Some(region) = bad {
        let at_the_end = Some(&region.path) == files.last();
        if !(at_the_end && region.unterminated && region.why.starts_with("not a record")) {
            return Err(Failure::Broken {
                path: region.path,
                line: region.line,
                why: region.why,
            });
        }
        report.notes.push(format!(
            "{} line {}: the last line is cut short (a crash or a full disk during its write; the \
             request was not answered); the service acknowledges it when it next writes",
            region.path.display(),
            region.line
        ));
    }
    report.head = last.map(|(seq, hash, _, _)| (seq, hash));
    Ok(report)
}

/// Whether a record body is an event acknowledging the cut region that
/// starts at byte `at` and ends where the event's line starts (`next`).
fn acknowledges(body: &[u8], at: u64, next: u64) -> bool {
    let mut object = Vec::with_capacity(body.len() + 1);
    object.push(b'{');
    object.extend_from_slice(body);
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&object) else {
        return false;
    };
    let cut_at = v.get("cut_at").and_then(serde_json::Value::as_u64);
    let cut_bytes = v.get("cut_bytes").and_then(serde_json::Value::as_u64);
    v.get("kind").and_then(serde_json::Value::as_str) == Some("event")
        && cut_at == Some(at)
        && cut_bytes.and_then(|b| at.checked_add(b)) == Some(next)
}

/// The files of the trail in `dir`, oldest first (rotated, then current).
///
/// # Errors
/// When the directory cannot be read.
pub fn files_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    super::trail::trail_files(dir)
}
