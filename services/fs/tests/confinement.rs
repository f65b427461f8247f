//! Path confinement: every way out of the prefix is refused, by the kernel,
//! through the real binary — and nothing of the target leaks into the answer.

mod common;

use std::os::unix::fs::symlink;

use common::*;
use serde_json::json;
use strata_shared::client::Client;

const SECRET: &str = "TOP-SECRET-CONTENT";

/// A stack with a secret in a sibling of the prefix and one beyond the
/// roots, and links of every kind pointing at them.
fn stack() -> Stack {
    let s = Stack::start(&[]);
    s.write("srv/data/inside.txt", "inside");
    s.write("srv/data/sub/deeper.txt", "deeper");
    let sibling = s.write("srv/data2/secret", SECRET);
    let outside = s.write("outside/secret", SECRET);
    let d = s.base().join("srv/data");
    symlink(&outside, d.join("abs-escape")).unwrap();
    symlink("../data2/secret", d.join("rel-escape")).unwrap();
    symlink("rel-escape", d.join("chain1")).unwrap();
    symlink("chain1", d.join("chain2")).unwrap();
    symlink("sub/../../data2", d.join("dir-escape")).unwrap();
    symlink("/proc/self/root/etc/passwd", d.join("magic")).unwrap();
    symlink("sub/deeper.txt", d.join("inner-link")).unwrap();
    std::fs::hard_link(&sibling, d.join("hardlink")).unwrap();
    s
}

/// Asserts that `method` on `path` is refused with `want` and that the
/// secret appears nowhere in the answer.
fn refused(c: &mut Client, t: &Token, method: &str, path: &str, want: u16) {
    let resp = call(c, method, t, json!({"path": path}));
    let text = serde_json::to_string(&resp).unwrap();
    assert!(!text.contains(SECRET), "{method} {path} leaked: {text}");
    assert!(!resp.ok, "{method} {path} should be refused: {text}");
    assert_eq!(resp.error.unwrap().code, want, "{method} {path}: {text}");
}

#[test]
fn symlinks_leaving_the_prefix_are_refused() {
    let s = stack();
    let t = s.issue(&["open", "read", "list", "stat"], &s.data(), 600);
    let mut c = s.fs_client();
    let d = s.data();
    for link in ["abs-escape", "rel-escape", "chain1", "chain2", "magic"] {
        for m in ["fs.open", "fs.stat"] {
            refused(&mut c, &t, m, &format!("{d}/{link}"), 3);
        }
    }
    refused(&mut c, &t, "fs.list", &format!("{d}/dir-escape"), 3);
    refused(&mut c, &t, "fs.open", &format!("{d}/dir-escape/secret"), 3);
    // A symlink that stays inside is followed.
    let h = open(&mut c, &t, &format!("{d}/inner-link"));
    let r = ok(call(&mut c, "fs.read", &t, json!({"handle": h})));
    assert_eq!(r["data"], "deeper");
}

#[test]
fn dotdot_escapes_are_refused_but_dotdot_inside_works() {
    let s = stack();
    let t = s.issue(&["open", "list", "stat"], &s.data(), 600);
    let mut c = s.fs_client();
    let d = s.data();
    for path in [
        format!("{d}/../data2/secret"),
        format!("{d}/sub/../../data2/secret"),
        format!("{d}/sub/../../../outside/secret"),
        format!("{d}/./sub/./../../data2/secret"),
        format!("{d}/.."),
    ] {
        refused(&mut c, &t, "fs.open", &path, 3);
        refused(&mut c, &t, "fs.stat", &path, 3);
    }
    refused(&mut c, &t, "fs.list", &format!("{d}/.."), 3);
    open(&mut c, &t, &format!("{d}/sub/../inside.txt"));
}

#[test]
fn sibling_and_outside_paths_are_refused_lexically() {
    let s = stack();
    let t = s.issue(&["open", "list", "stat"], &s.data(), 600);
    let mut c = s.fs_client();
    for path in [
        s.path("srv/data2/secret"),
        s.path("srv/data2"),
        s.path("srv"),
        s.path("outside/secret"),
        "/etc/passwd".to_string(),
        "/".to_string(),
    ] {
        for m in ["fs.open", "fs.list", "fs.stat"] {
            refused(&mut c, &t, m, &path, 3);
        }
    }
}

#[test]
fn malformed_paths_are_code_1() {
    let s = stack();
    let t = s.issue(&["open", "list", "stat"], &s.data(), 600);
    let mut c = s.fs_client();
    let long_name = format!("{}/{}", s.data(), "n".repeat(256));
    let long_path = format!("{}/{}", s.data(), "d/".repeat(2100));
    for path in [
        "relative/path".to_string(),
        "".to_string(),
        format!("{}/a\0b", s.data()),
        long_name,
        long_path,
    ] {
        refused(&mut c, &t, "fs.open", &path, 1);
    }
    // A path that is not a string.
    let r = c
        .call("fs.open", Some(&t.token), &json!({"path": 42}))
        .unwrap();
    assert_eq!(code(r), 1);
}

#[test]
fn hard_links_are_refused_unless_allowed() {
    let s = stack();
    let t = s.issue(&["open", "read"], &s.data(), 600);
    let mut c = s.fs_client();
    let link = format!("{}/hardlink", s.data());
    let resp = call(&mut c, "fs.open", &t, json!({"path": link}));
    let (code, msg) = error(resp);
    assert_eq!(code, 3);
    assert!(msg.contains("multiple hard links"), "{msg}");

    // With STRATA_FS_ALLOW_HARDLINKS=1 the operator vouches for the tree.
    let mut s = s;
    s.fs.kill();
    let run = s.base().join("run");
    std::fs::remove_file(run.join("fs.sock")).ok();
    let fs = start_fs(s.base(), &[("STRATA_FS_ALLOW_HARDLINKS", "1")]);
    let mut c = Client::connect(&fs.socket).unwrap();
    let h = open(&mut c, &t, &link);
    let r = ok(call(
        &mut c,
        "fs.read",
        &t,
        json!({"handle": h, "size": 100}),
    ));
    assert_eq!(r["data"], SECRET);
}

#[test]
fn proc_magic_links_are_refused() {
    let s = stack();
    // A second fs that also serves /proc, so that a prefix can sit right
    // next to magic links.
    let dir = tempfile::tempdir().unwrap();
    // It must reach the same identity: its runtime dir's identity.sock is a
    // link to the stack's.
    std::fs::create_dir_all(dir.path().join("run")).unwrap();
    symlink(&s.identity.socket, dir.path().join("run/identity.sock")).unwrap();
    let roots = format!("{}:/proc", s.path("srv"));
    let fs = strata_testkit::ActivatedService::start(
        &strata_testkit::workspace_binary("strata-fs"),
        "fs",
        &dir.path().join("run"),
        &[("STRATA_FS_ROOTS", &roots)],
    )
    .unwrap();
    // /proc/self is itself a symlink, which no prefix may pass through;
    // the real directory of a process (fs's own) is a prefix like any other.
    let selfish = s.issue(&["open", "list", "stat"], "/proc/self", 600);
    let mut c = Client::connect(&fs.socket).unwrap();
    refused(&mut c, &selfish, "fs.stat", "/proc/self/status", 3);
    let pid_dir = format!("/proc/{}", fs.pid().unwrap());
    let t = s.issue(&["open", "list", "stat"], &pid_dir, 600);
    for rel in ["root/etc/passwd", "cwd", "exe", "fd/0", "fd/3"] {
        let path = format!("{pid_dir}/{rel}");
        let r = call(&mut c, "fs.open", &t, json!({"path": path}));
        assert_eq!(code(r), 3, "{path}");
    }
    refused(&mut c, &t, "fs.list", &format!("{pid_dir}/root"), 3);
    refused(
        &mut c,
        &t,
        "fs.stat",
        &format!("{pid_dir}/root/etc/passwd"),
        3,
    );
    // The magic link's ordinary neighbours are fine.
    ok(call(
        &mut c,
        "fs.stat",
        &t,
        json!({"path": format!("{pid_dir}/status")}),
    ));
}

#[test]
fn a_prefix_that_resolves_outside_the_roots_is_refused() {
    let s = stack();
    // srv/escape -> outside: the prefix string is under the root, the
    // directory it names is not.
    symlink(s.path("outside"), s.base().join("srv/escape")).unwrap();
    let t = s.issue(&["open", "list"], &s.path("srv/escape"), 600);
    let mut c = s.fs_client();
    refused(&mut c, &t, "fs.list", &s.path("srv/escape"), 3);
    refused(&mut c, &t, "fs.open", &s.path("srv/escape/secret"), 3);
}
