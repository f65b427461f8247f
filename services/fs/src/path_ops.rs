//! `fs.list` and `fs.stat`: the I/O on a directory or file the policy step
//! ([`crate::policy`]) already resolved beneath the token's prefix.

use std::borrow::Cow;
use std::cell::RefCell;
use std::ffi::CStr;
use std::io::Write;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, RawDir};
use rustix::io::Errno;
use serde::Deserialize;
use strata_shared::paths;
use strata_shared::wire::{Error, ResponseBuf, MAX_FRAME};

use crate::policy::Dir;
use crate::{json, Done, FsService};

/// Most entries `fs.list` returns; past it the result says `truncated`.
pub const MAX_ENTRIES: usize = 10_000;
/// Room kept free in the response frame for closing the envelope.
const FRAME_MARGIN: usize = 256;

#[derive(Deserialize)]
pub struct PathParams<'a> {
    #[serde(borrow)]
    pub path: Cow<'a, str>,
}

/// One directory entry: its name is `names[start..start + len]` (NUL
/// included, so it can be handed back to the kernel as a C string).
struct Entry {
    start: usize,
    len: usize,
    is_dir: bool,
    size: u64,
}

/// Per-thread scratch space for `fs.list`, reused across requests.
struct ListScratch {
    dirbuf: Vec<MaybeUninit<u8>>,
    names: Vec<u8>,
    entries: Vec<Entry>,
}

thread_local! {
    static LIST: RefCell<ListScratch> = const {
        RefCell::new(ListScratch { dirbuf: Vec::new(), names: Vec::new(), entries: Vec::new() })
    };
}

impl FsService {
    /// `fs.list {path}` → `{entries:[{name, is_dir, size}], truncated?}`:
    /// from the listing cache when it holds `dir`, else read now. `path` is
    /// the request's, for messages.
    ///
    /// # Errors
    /// Those of opening the directory for reading (code 3 when the kernel
    /// refuses it) and of reading it.
    pub fn list(&self, dir: Dir, path: &str, out: &mut ResponseBuf) -> Result<Done, Error> {
        if let Dir::Seen(id, _) = &dir {
            if self.list_cache.cached(id, out.result_writer()) {
                return Ok(Done::Answered);
            }
        }
        let fd = dir.open(self.list_cache.open_flags(), path)?;
        self.list_cache
            .list(&fd, out.result_writer())
            .map_err(|e| paths::errno_to_error(e, &format!("listing {path:?}")))?;
        Ok(Done::Answered)
    }

    /// `fs.stat {path}` → `{name, is_dir, size, mode, mtime}` of `node`
    /// (a final symlink was followed, beneath the prefix, by the policy).
    ///
    /// # Errors
    /// Those of `fstat`.
    pub fn stat(&self, node: &OwnedFd, path: &str, out: &mut ResponseBuf) -> Result<Done, Error> {
        let st =
            rustix::fs::fstat(node).map_err(|e| paths::errno_to_error(e, &format!("{path:?}")))?;
        let name = path
            .rsplit('/')
            .find(|c| !c.is_empty() && *c != ".")
            .unwrap_or("/");
        let w = out.result_writer();
        w.extend_from_slice(b"{\"name\":");
        json::write_str(w, name);
        w.extend_from_slice(b",\"is_dir\":");
        json::write_bool(
            w,
            FileType::from_raw_mode(st.st_mode) == FileType::Directory,
        );
        w.extend_from_slice(b",\"size\":");
        json::write_u64(w, u64::try_from(st.st_size).unwrap_or(0));
        w.extend_from_slice(b",\"mode\":");
        json::write_u64(w, u64::from(st.st_mode & 0o7777));
        // The kernel type is unsigned on some architectures; the value is a
        // signed time_t (before 1970 is negative).
        let _ = write!(w, ",\"mtime\":{}}}", st.st_mtime as i64);
        Ok(Done::Answered)
    }
}

/// Reads the directory `dir` and writes the `fs.list` result to `out`:
/// entries sorted by name, each stat'ed without following symlinks.
///
/// At most [`MAX_ENTRIES`] are kept — the first ones in the kernel's
/// directory order, so memory and time stay bounded however large the
/// directory — and they are sorted among themselves. Entries are also cut
/// short when the response would no longer fit in one frame. Either way the
/// result carries `"truncated":true`. A name that is not UTF-8 is shown with
/// U+FFFD in place of the bad bytes.
///
/// Returns whether the result was truncated.
///
/// # Errors
///
/// Those of `getdents64` and of `lstat` of an entry (but `ENOENT`: an
/// entry removed meanwhile is left out).
pub fn write_listing(dir: &OwnedFd, out: &mut Vec<u8>) -> Result<bool, Errno> {
    let dir = dir.as_fd();
    LIST.with_borrow_mut(|s| {
        let ListScratch {
            dirbuf,
            names,
            entries,
        } = s;
        if dirbuf.len() < 32 * 1024 {
            dirbuf.resize(32 * 1024, MaybeUninit::uninit());
        }
        names.clear();
        entries.clear();
        let mut truncated = false;
        let mut iter = RawDir::new(dir, dirbuf.as_mut_slice());
        while let Some(entry) = iter.next() {
            let entry = entry?;
            let name = entry.file_name().to_bytes_with_nul();
            if name == b".\0" || name == b"..\0" {
                continue;
            }
            if entries.len() >= MAX_ENTRIES {
                truncated = true;
                break;
            }
            entries.push(Entry {
                start: names.len(),
                len: name.len(),
                is_dir: false,
                size: 0,
            });
            names.extend_from_slice(name);
        }
        entries.sort_unstable_by(|a, b| {
            names[a.start..a.start + a.len].cmp(&names[b.start..b.start + b.len])
        });
        let budget = MAX_FRAME.saturating_sub(out.len() + FRAME_MARGIN);
        let start = out.len();
        out.extend_from_slice(b"{\"entries\":[");
        let mut first = true;
        for e in entries.iter_mut() {
            let raw = &names[e.start..e.start + e.len];
            let cname = CStr::from_bytes_with_nul(raw).expect("names are NUL-terminated");
            match rustix::fs::statat(dir, cname, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => {
                    e.is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
                    e.size = u64::try_from(st.st_size).unwrap_or(0);
                }
                // Removed since it was listed: leave it out.
                Err(Errno::NOENT) => continue,
                Err(err) => return Err(err),
            }
            let mark = out.len();
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"name\":");
            json::write_str(out, &String::from_utf8_lossy(&raw[..raw.len() - 1]));
            out.extend_from_slice(b",\"is_dir\":");
            json::write_bool(out, e.is_dir);
            out.extend_from_slice(b",\"size\":");
            json::write_u64(out, e.size);
            out.push(b'}');
            if out.len() - start > budget {
                out.truncate(mark);
                truncated = true;
                break;
            }
            first = false;
        }
        out.push(b']');
        if truncated {
            out.extend_from_slice(b",\"truncated\":true");
        }
        out.push(b'}');
        Ok(truncated)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::OFlags;
    use std::os::unix::fs::symlink;

    fn list(dir: &std::path::Path) -> serde_json::Value {
        let fd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let mut out = Vec::new();
        write_listing(&fd, &mut out).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn empty_directory_is_an_empty_array() {
        let t = tempfile::tempdir().unwrap();
        let v = list(t.path());
        assert_eq!(v, serde_json::json!({"entries": []}));
    }

    #[test]
    fn entries_are_sorted_and_symlinks_not_followed() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("b"), "12345").unwrap();
        std::fs::create_dir(t.path().join("a")).unwrap();
        symlink("a", t.path().join("c")).unwrap();
        let v = list(t.path());
        let e = v["entries"].as_array().unwrap();
        let names: Vec<&str> = e.iter().map(|e| e["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(e[0]["is_dir"], true);
        assert_eq!(e[1]["size"], 5);
        assert_eq!(e[2]["is_dir"], false, "a symlink is listed as itself");
        assert_eq!(e[2]["size"], 1, "the size of the link");
        assert!(v.get("truncated").is_none());
    }

    #[test]
    fn large_directories_are_truncated() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..MAX_ENTRIES + 5 {
            std::fs::File::create(t.path().join(format!("f{i:05}"))).unwrap();
        }
        let v = list(t.path());
        assert_eq!(v["entries"].as_array().unwrap().len(), MAX_ENTRIES);
        assert_eq!(v["truncated"], true);
    }
}
