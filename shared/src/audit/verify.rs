//! Checks a trail's hash chain: every record's hash matches its content,
//! every `prev` is the hash of the record before, seq numbers follow each
//! other, across rotated files. `strata-ctl audit verify` is this.
//!
//! A line cut short by a crash or a full disk is not a break when the
//! service acknowledged it: the record after such a line is an event
//! (`start` or `resumed`) whose `cut_at` and `cut_bytes` name exactly the
//! bytes of the line, and whose `prev` is the hash of the last record
//! before it. A write cut short leaves one line, so a cut is always one
//! line; unacknowledged, it is accepted only as the very last bytes of the
//! trail, with no newline. Anything else that does not verify is a break.
//!
//! A trail that still has its first file (`audit.jsonl` alone, or
//! `audit-000001.jsonl` first) must begin with seq 1 and the genesis
//! `prev`: records removed from its start are a break. When rotation
//! deleted older files, the chain is checked from the oldest record kept.

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

/// A line that does not verify, not yet judged: a cut if the next record
/// acknowledges it (or, at the very end, if it has no newline).
struct BadLine {
    path: PathBuf,
    line: u64,
    at: u64,
    why: String,
    /// The line ends without a newline.
    unterminated: bool,
}

impl BadLine {
    fn into_failure(self) -> Failure {
        Failure::Broken {
            path: self.path,
            line: self.line,
            why: self.why,
        }
    }
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
    let mut bad: Option<BadLine> = None;
    let from_the_start = files.first().is_some_and(|f| starts_the_trail(f));
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
                // Two bad lines in a row are not one write cut short.
                if let Some(earlier) = bad.take() {
                    return Err(earlier.into_failure());
                }
                bad = Some(BadLine {
                    path: path.clone(),
                    line: line_no,
                    at,
                    why,
                    unterminated: !terminated,
                });
                continue;
            }
            let p = parsed.expect("checked above");
            if let Some(region) = bad.take() {
                let acknowledged = region.path == *path && acknowledges(p.body, region.at, at);
                if !acknowledged {
                    return Err(region.into_failure());
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
                None => {
                    if from_the_start && (p.seq != 1 || p.prev != chain::GENESIS) {
                        return Err(Failure::Broken {
                            path: path.clone(),
                            line: line_no,
                            why: format!(
                                "seq {}: the trail's first file must begin with seq 1 and the \
                                 genesis prev: records were removed from its start",
                                p.seq
                            ),
                        });
                    }
                    report.anchor = Some((p.seq, p.prev));
                }
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
            return Err(region.into_failure());
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

/// Whether `first` is the file a trail began with: `audit-000001.jsonl`,
/// or `audit.jsonl` with no rotated file beside it. Rotation numbers go
/// on when `STRATA_AUDIT_KEEP` deletes old files, so any other first file
/// means older records were rotated away.
fn starts_the_trail(first: &Path) -> bool {
    let name = first.file_name().and_then(|n| n.to_str());
    if name == Some(super::trail::rotated_name(1).as_str()) {
        return true;
    }
    let dir = match first.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    name == Some(super::trail::CURRENT)
        && super::trail::rotated_files(dir).is_ok_and(|r| r.is_empty())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::trail::{rotated_name, Settings, Trail, CURRENT};
    use std::fs;

    /// A trail in `dir` of a `start` event and `n` records (`n` + 1 lines
    /// per trail opening), rotated past `max_bytes`.
    fn write_trail(dir: &Path, n: u64, max_bytes: u64, keep: u32) {
        let settings = Settings {
            dir: dir.to_path_buf(),
            max_bytes,
            keep,
        };
        let t = Trail::open(settings, "fs");
        for i in 0..n {
            t.append(format!("\"time\":\"t\",\"kind\":\"decision\",\"n\":{i}}}").as_bytes())
                .unwrap();
        }
    }

    fn broken(result: Result<Report, Failure>) -> (PathBuf, u64, String) {
        match result {
            Err(Failure::Broken { path, line, why }) => (path, line, why),
            other => panic!("expected a break, got {other:?}"),
        }
    }

    #[test]
    fn complete_lines_before_a_fragment_at_the_end_are_a_break() {
        let tmp = tempfile::tempdir().unwrap();
        write_trail(tmp.path(), 6, 1 << 20, 0);
        let path = tmp.path().join(CURRENT);
        let text = fs::read_to_string(&path).unwrap();
        let kept: Vec<&str> = text.lines().take(5).collect();
        // The last two records replaced by lines that look like records
        // but are not in the trail's format, then a fragment.
        let forged = format!(
            "{}\n{{\"seq\": 6, \"n\": 0}}\n{{\"seq\": 7, \"n\": 0}}\n{{\"seq\": 8",
            kept.join("\n")
        );
        fs::write(&path, forged).unwrap();
        let (p, line, why) = broken(verify(&files_in(tmp.path()).unwrap()));
        assert_eq!((p, line), (path.clone(), 6));
        assert!(why.contains("not a record"), "{why}");

        // One complete bad line before the fragment is already a break.
        let forged = format!("{}\n{{\"seq\": 6}}\n{{\"seq\": 7", kept.join("\n"));
        fs::write(&path, forged).unwrap();
        assert_eq!(broken(verify(&files_in(tmp.path()).unwrap())).1, 6);

        // A fragment alone at the very end is a cut, said in a note.
        fs::write(&path, format!("{}\n{{\"seq\": 6", kept.join("\n"))).unwrap();
        let r = verify(&files_in(tmp.path()).unwrap()).unwrap();
        assert_eq!(r.head.unwrap().0, 5);
        assert!(
            r.notes[0].contains("line 6: the last line is cut short"),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn records_removed_from_the_start_of_a_trail_are_a_break() {
        let tmp = tempfile::tempdir().unwrap();
        write_trail(tmp.path(), 5, 1 << 20, 0);
        let path = tmp.path().join(CURRENT);
        let text = fs::read_to_string(&path).unwrap();
        let rest: Vec<&str> = text.lines().skip(2).collect();
        fs::write(&path, rest.join("\n") + "\n").unwrap();
        let (p, line, why) = broken(verify(&files_in(tmp.path()).unwrap()));
        assert_eq!((p, line), (path, 1));
        assert!(
            why.contains("seq 3") && why.contains("removed from its start"),
            "{why}"
        );
    }

    #[test]
    fn a_trail_starts_later_only_when_its_first_file_was_rotated_away() {
        let tmp = tempfile::tempdir().unwrap();
        // About 100 bytes a line: several rotated files, all kept.
        write_trail(tmp.path(), 40, 1000, 0);
        let first = tmp.path().join(rotated_name(1));
        let files = files_in(tmp.path()).unwrap();
        assert_eq!(files[0], first);
        assert!(files.len() > 3, "{files:?}");
        let intact = verify(&files).unwrap();
        assert_eq!(intact.anchor, Some((1, chain::GENESIS)));

        // The first file cut at its start: a break, even though its name
        // is still there.
        let text = fs::read_to_string(&first).unwrap();
        let rest: Vec<&str> = text.lines().skip(1).collect();
        fs::write(&first, rest.join("\n") + "\n").unwrap();
        let (p, line, why) = broken(verify(&files));
        assert_eq!((p, line), (first.clone(), 1));
        assert!(why.contains("seq 2"), "{why}");

        // The first file gone, as STRATA_AUDIT_KEEP deletes it: checked
        // from the oldest record kept.
        fs::remove_file(&first).unwrap();
        let r = verify(&files_in(tmp.path()).unwrap()).unwrap();
        let (seq, prev) = r.anchor.unwrap();
        assert!(seq > 1 && prev != chain::GENESIS, "{seq}");

        // Every rotated file gone: audit.jsonl alone must start the trail.
        for f in &files[1..files.len() - 1] {
            fs::remove_file(f).unwrap();
        }
        let (p, line, _) = broken(verify(&files_in(tmp.path()).unwrap()));
        assert_eq!((p, line), (tmp.path().join(CURRENT), 1));
    }
}
