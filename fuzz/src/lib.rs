//! Fixtures shared by the fuzz targets: a fixed signing key and clock, and a
//! fixed directory tree full of ways out of a prefix.
//!
//! Everything here is deterministic except the tree's location (a per-process
//! directory under the system temp dir), so a crash reproduces from its input
//! file alone.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ed25519_compact::KeyPair;
use strata_shared::capability::Verifier;
use strata_shared::token;

/// The seed of the key every token target signs and verifies with.
pub const SEED: [u8; 32] = [0x5a; 32];

/// The clock the targets judge validity windows by: 2030-03-17T17:46:40Z.
pub const NOW: i64 = 1_900_000_000;

/// A well-formed capability id.
pub const CAP_ID: &str = "0123456789abcdef0123456789abcdef";

/// The key pair behind [`SEED`].
pub fn keypair() -> &'static KeyPair {
    static KP: OnceLock<KeyPair> = OnceLock::new();
    KP.get_or_init(|| token::keypair_from_seed(&SEED))
}

/// The verifier for [`SEED`]'s public key.
pub fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| Verifier::new(keypair().pk))
}

/// The directory tree the path target resolves in.
pub struct Tree {
    /// The tree's root (outside the prefix).
    pub root: PathBuf,
    /// The token's prefix: `root/data`.
    pub prefix: String,
    /// The prefix directory, opened `O_PATH` once.
    pub prefix_fd: OwnedFd,
    /// (dev, ino) of every file outside the prefix.
    pub outside: HashSet<(u64, u64)>,
    /// An open descriptor on the secret, for `/proc/self/fd/N` links.
    pub secret_fd: std::fs::File,
}

/// The secret file's content: it must never be read through the prefix.
pub const SECRET: &str = "TOPSECRET-do-not-leak";

/// Builds (once per process) the tree:
///
/// ```text
/// root/secret                   the file that must never be opened
/// root/outside/secret3          another outside file, in a directory
/// root/data2/secret2            a sibling prefix ("data2" is not under "data")
/// root/data/                    the prefix
///   a.txt  sub/b.txt  sub/deeper/c.txt
///   inner-link -> sub/b.txt     dir-link -> sub      sub/up-inside -> ..
///   abs-escape -> root/secret   rel-escape -> ../secret
///   chain -> rel-escape         chain2 -> dir-link/../../secret
///   out-dir -> ../outside       root-link -> /       sub/up -> ../..
///   dotdot -> ..                loop -> loop
///   magic-root -> /proc/self/root<root>/secret
///   magic-fd -> /proc/self/fd/<secret fd>
///   proc-cwd -> /proc/self/cwd  sibling -> ../data2/secret2
/// ```
pub fn tree() -> &'static Tree {
    static T: OnceLock<Tree> = OnceLock::new();
    T.get_or_init(build_tree)
}

fn build_tree() -> Tree {
    let root = std::env::temp_dir().join(format!("strata-fuzz-tree-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let d = root.join("data");
    std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(root.join("outside")).unwrap();
    std::fs::create_dir_all(root.join("data2")).unwrap();
    std::fs::write(root.join("secret"), SECRET).unwrap();
    std::fs::write(root.join("outside/secret3"), SECRET).unwrap();
    std::fs::write(root.join("data2/secret2"), SECRET).unwrap();
    std::fs::write(d.join("a.txt"), "inside").unwrap();
    std::fs::write(d.join("sub/b.txt"), "inside b").unwrap();
    std::fs::write(d.join("sub/deeper/c.txt"), "inside c").unwrap();
    let secret_fd = std::fs::File::open(root.join("secret")).unwrap();
    let links: Vec<(String, &str)> = vec![
        ("sub/b.txt".into(), "inner-link"),
        ("sub".into(), "dir-link"),
        ("..".into(), "sub/up-inside"),
        (root.join("secret").to_str().unwrap().into(), "abs-escape"),
        ("../secret".into(), "rel-escape"),
        ("rel-escape".into(), "chain"),
        ("dir-link/../../secret".into(), "chain2"),
        ("../outside".into(), "out-dir"),
        ("/".into(), "root-link"),
        ("../..".into(), "sub/up"),
        ("..".into(), "dotdot"),
        ("loop".into(), "loop"),
        (
            format!("/proc/self/root{}/secret", root.display()),
            "magic-root",
        ),
        (
            format!("/proc/self/fd/{}", secret_fd.as_raw_fd()),
            "magic-fd",
        ),
        ("/proc/self/cwd".into(), "proc-cwd"),
        ("../data2/secret2".into(), "sibling"),
    ];
    for (target, name) in links {
        symlink(target, d.join(name)).unwrap();
    }
    let mut outside = HashSet::new();
    for f in ["secret", "outside/secret3", "data2/secret2"] {
        let m = std::fs::metadata(root.join(f)).unwrap();
        outside.insert((m.dev(), m.ino()));
    }
    let prefix = d.to_str().unwrap().to_string();
    let prefix_fd = strata_shared::paths::open_prefix(&prefix).unwrap();
    Tree {
        root,
        prefix,
        prefix_fd,
        outside,
        secret_fd,
    }
}

/// Names the path target builds paths from.
pub const VOCABULARY: &[&str] = &[
    "..",
    ".",
    "",
    "a.txt",
    "sub",
    "b.txt",
    "deeper",
    "c.txt",
    "inner-link",
    "dir-link",
    "up-inside",
    "abs-escape",
    "rel-escape",
    "chain",
    "chain2",
    "out-dir",
    "root-link",
    "up",
    "dotdot",
    "loop",
    "magic-root",
    "magic-fd",
    "proc-cwd",
    "sibling",
    "secret",
    "secret2",
    "secret3",
    "outside",
    "data",
    "data2",
    "proc",
    "self",
    "fd",
    "root",
    "cwd",
    "etc",
    "passwd",
];

/// What `/proc/self/fd/<fd>` says the descriptor's file is.
pub fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("readlink fd")
}

/// True when `p` is `prefix` or below it, component by component.
pub fn is_within(p: &Path, prefix: &Path) -> bool {
    p.starts_with(prefix)
}
