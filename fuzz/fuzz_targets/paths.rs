//! Path resolution under a prefix: `paths::components`,
//! `paths::relative_to_prefix` and `paths::open_beneath` (openat2 with
//! RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) against a fixed tree full of
//! escaping symlinks, `..` links, /proc magic links and sibling prefixes
//! (see `strata_fuzz::tree`).
//!
//! Invariants: no panic; `components` yields only non-empty names without
//! `/` or NUL, at most 255 bytes, never `.`; the relative path handed to the
//! kernel is never absolute; and — the one that matters — every descriptor
//! that opens, whether the path went through `relative_to_prefix` or was
//! handed to the kernel raw, names a file whose canonical path (read back
//! from /proc/self/fd) is inside the prefix and which is none of the
//! outside files.

#![no_main]

use std::path::Path;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rustix::fs::OFlags;
use std::os::unix::fs::MetadataExt;
use strata_fuzz::{fd_path, tree, VOCABULARY};
use strata_shared::paths::{self, MAX_NAME};

#[derive(Arbitrary, Debug)]
enum Piece {
    Known(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Sep {
    Slash,
    Double,
    Dot,
}

#[derive(Arbitrary, Debug)]
enum Start {
    Prefix,
    TreeRoot,
    Slash,
    ProcFd,
    ProcRoot,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    start: Start,
    pieces: Vec<(Sep, Piece)>,
    trailing_slash: bool,
    flags: u8,
}

const FLAGS: [OFlags; 5] = [
    OFlags::RDONLY,
    OFlags::PATH,
    OFlags::DIRECTORY,
    OFlags::NOFOLLOW,
    OFlags::NONBLOCK,
];

fn check_open(fd: std::os::fd::OwnedFd, what: &str) {
    let t = tree();
    let real = fd_path(&fd);
    assert!(
        real.starts_with(Path::new(&t.prefix)),
        "{what} opened {} outside the prefix {}",
        real.display(),
        t.prefix
    );
    let file = std::fs::File::from(fd);
    let m = file.metadata().unwrap();
    assert!(
        !t.outside.contains(&(m.dev(), m.ino())),
        "{what} opened an outside file"
    );
}

fuzz_target!(|input: Input| {
    let t = tree();
    let mut path = match &input.start {
        Start::Prefix => t.prefix.clone(),
        Start::TreeRoot => t.root.to_str().unwrap().to_string(),
        Start::Slash => String::new(),
        Start::ProcFd => "/proc/self/fd".into(),
        Start::ProcRoot => format!("/proc/self/root{}", t.prefix),
        Start::Raw(s) => s.clone(),
    };
    for (sep, piece) in input.pieces.iter().take(64) {
        path.push_str(match sep {
            Sep::Slash => "/",
            Sep::Double => "//",
            Sep::Dot => "/./",
        });
        match piece {
            Piece::Known(i) => path.push_str(VOCABULARY[*i as usize % VOCABULARY.len()]),
            Piece::Raw(s) => path.push_str(s),
        }
    }
    if input.trailing_slash {
        path.push('/');
    }
    let mut flags = OFlags::empty();
    for (i, f) in FLAGS.iter().enumerate() {
        if input.flags & (1 << i) != 0 {
            flags |= *f;
        }
    }

    if let Ok(parts) = paths::components(&path) {
        for c in &parts {
            assert!(!c.is_empty() && *c != "." && c.len() <= MAX_NAME);
            assert!(!c.contains('/') && !c.contains('\0'));
        }
    }
    // As fs does: strip the prefix lexically, then let the kernel resolve.
    if let Ok(rel) = paths::relative_to_prefix(&t.prefix, &path) {
        assert!(!rel.starts_with('/'), "relative path {rel:?} is absolute");
        if let Ok(fd) = paths::open_beneath(&t.prefix_fd, &rel, flags) {
            check_open(fd, &path);
        }
    }
    // Without the lexical layer: the kernel alone must still confine.
    let raw = path.trim_start_matches('/');
    if !raw.contains('\0') {
        if let Ok(fd) = paths::open_beneath(&t.prefix_fd, raw, flags) {
            check_open(fd, raw);
        }
        if let Ok(fd) = paths::open_beneath(&t.prefix_fd, &path, flags) {
            check_open(fd, &path);
        }
    }
});
