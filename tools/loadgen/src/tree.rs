//! The known tree: files whose content the load generator checks every
//! answer against.
//!
//! `make-tree` writes a deterministic tree (text and binary files of many
//! sizes, around the 4 KiB and 128 KiB read boundaries, subdirectories, an
//! empty file, an empty directory, a symlink that stays inside). [`Tree::load`]
//! then reads whatever is on disk — the truth the answers are compared
//! with — so the check does not depend on how the tree was made.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::conn::Rng;

/// A regular file and its bytes.
pub struct KnownFile {
    pub path: String,
    pub content: Vec<u8>,
}

/// A directory and what `fs.list` must answer for it: `(name, is_dir,
/// size)`, sorted by name bytes as fs sorts them.
pub struct KnownDir {
    pub path: String,
    pub entries: Vec<(String, bool, u64)>,
}

pub struct Tree {
    pub files: Vec<KnownFile>,
    pub dirs: Vec<KnownDir>,
}

/// Largest file read into memory as a reference.
const MAX_KNOWN_FILE: u64 = 8 << 20;

impl Tree {
    /// Reads `root` recursively. Regular files with one link become read
    /// targets (fs refuses files with several hard links), every directory
    /// a list target. Symlinks are listed, not followed.
    pub fn load(root: &Path) -> io::Result<Self> {
        let mut tree = Tree {
            files: Vec::new(),
            dirs: Vec::new(),
        };
        let mut todo = vec![root.to_path_buf()];
        while let Some(dir) = todo.pop() {
            let mut entries = Vec::new();
            for e in std::fs::read_dir(&dir)? {
                let e = e?;
                let meta = std::fs::symlink_metadata(e.path())?;
                let name = e.file_name().to_string_lossy().into_owned();
                entries.push((name, meta.is_dir(), meta.len()));
                if meta.is_dir() {
                    todo.push(e.path());
                } else if meta.is_file() && meta.nlink() == 1 && meta.len() <= MAX_KNOWN_FILE {
                    tree.files.push(KnownFile {
                        path: path_str(&e.path())?,
                        content: std::fs::read(e.path())?,
                    });
                }
            }
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            tree.dirs.push(KnownDir {
                path: path_str(&dir)?,
                entries,
            });
        }
        if tree.files.is_empty() {
            return Err(io::Error::other(format!(
                "{} holds no regular file to read (make one with `strata-loadgen make-tree`)",
                root.display()
            )));
        }
        tree.files.sort_by(|a, b| a.path.cmp(&b.path));
        tree.dirs.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(tree)
    }

    pub fn bytes(&self) -> usize {
        self.files.iter().map(|f| f.content.len()).sum()
    }
}

fn path_str(p: &Path) -> io::Result<String> {
    p.to_str()
        .map(String::from)
        .ok_or_else(|| io::Error::other(format!("{} is not UTF-8", p.display())))
}

/// Sizes that straddle the interesting boundaries: empty, one byte, the
/// default read (4096), the largest read (131072), several reads.
const SIZES: &[usize] = &[
    0, 1, 17, 4095, 4096, 4097, 65_536, 131_071, 131_072, 131_073, 300_000,
];

/// Writes the deterministic tree under `root` (replacing it): `files`
/// files spread over the root and three subdirectories, an empty
/// directory, and a symlink inside the tree. Everything world-readable, as
/// fs (a user that owns nothing) needs.
pub fn make(root: &Path, files: usize) -> io::Result<usize> {
    if root.exists() {
        std::fs::remove_dir_all(root)?;
    }
    let subdirs = ["", "a", "b", "b/deeper"];
    for d in subdirs {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::create_dir_all(root.join("empty"))?;
    let mut total = 0;
    for i in 0..files {
        let dir = root.join(subdirs[i % subdirs.len()]);
        let mut rng = Rng::new(i as u64 + 1);
        let size = if i < SIZES.len() {
            SIZES[i]
        } else {
            rng.below(200_000) as usize
        };
        let (name, content) = if i % 7 == 3 {
            (format!("bin-{i:04}.dat"), binary(&mut rng, size))
        } else {
            (format!("text-{i:04}.txt"), text(i, size))
        };
        let path: PathBuf = dir.join(name);
        std::fs::write(&path, &content)?;
        total += content.len();
    }
    std::os::unix::fs::symlink("a", root.join("link-to-a"))?;
    chmod_world_readable(root)?;
    Ok(total)
}

fn text(i: usize, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 64);
    let mut line = 0;
    while out.len() < size {
        out.extend_from_slice(format!("strata load file {i} line {line} é€\n").as_bytes());
        line += 1;
    }
    out.truncate(size);
    out
}

fn binary(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(size);
    out
}

fn chmod_world_readable(dir: &Path) -> io::Result<()> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let meta = std::fs::symlink_metadata(e.path())?;
        if meta.is_dir() {
            chmod_world_readable(&e.path())?;
        } else if meta.is_file() {
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o644))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_tree_loads_with_every_file_and_sorted_listings() {
        let d = std::env::temp_dir().join(format!("loadgen-tree-{}", std::process::id()));
        let total = make(&d, 24).unwrap();
        let t = Tree::load(&d).unwrap();
        assert_eq!(t.files.len(), 24);
        assert_eq!(t.bytes(), total);
        // root, a, b, b/deeper, empty
        assert_eq!(t.dirs.len(), 5);
        let root = t.dirs.iter().find(|x| Path::new(&x.path) == d).unwrap();
        let names: Vec<&str> = root.entries.iter().map(|e| e.0.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(names.contains(&"link-to-a"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
