//! The fs.list cache through the real binary: every change is in any
//! listing made more than `MAX_AGE` (100 ms) after it, including under a
//! concurrent writer, and `STRATA_FS_LIST_CACHE=0` turns the cache off
//! (every change is then in the very next listing).

mod common;

use std::collections::VecDeque;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use strata_fs::list_cache::MAX_AGE;
use strata_shared::client::Client;

/// What fs.list must answer, computed here with readdir and lstat.
fn fresh(dir: &Path) -> Value {
    let mut entries: Vec<(Vec<u8>, Value)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            // Removed between readdir and lstat (concurrent test only).
            let m = std::fs::symlink_metadata(e.path()).ok()?;
            let name = e.file_name().into_string().unwrap();
            let v = json!({"name": name, "is_dir": m.is_dir(), "size": m.len()});
            Some((name.into_bytes(), v))
        })
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    json!({"entries": entries.into_iter().map(|e| e.1).collect::<Vec<_>>()})
}

fn list(c: &mut Client, t: &Token, path: &str) -> Value {
    ok(call(c, "fs.list", t, json!({"path": path})))
}

/// Longer than the cache may lag behind (`MAX_AGE`), with a margin.
fn wait_out_the_bound() {
    std::thread::sleep(MAX_AGE + Duration::from_millis(20));
}

fn append(path: &Path, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[test]
fn every_change_is_in_a_listing_made_after_the_bound() {
    let s = Stack::start(&[]);
    let data = s.base().join("srv/data");
    let elsewhere = s.base().join("outside");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("a.txt"), "12345").unwrap();
    std::fs::write(data.join("b.txt"), "").unwrap();
    symlink("a.txt", data.join("link")).unwrap();
    // A file with a second link outside the listed directory.
    std::fs::write(data.join("shared"), "1").unwrap();
    std::fs::hard_link(data.join("shared"), elsewhere.join("shared")).unwrap();
    let t = s.issue(&["list"], &s.data(), 600);
    let mut c = s.fs_client();
    let dir = s.data();
    let mut step = |what: &str, change: &dyn Fn()| {
        // Listed first, so that a cached listing from before the change
        // exists and must not outlive the bound.
        list(&mut c, &t, &dir);
        change();
        wait_out_the_bound();
        // The first request after the bound, and one more (from the cache
        // when it comes within 100 ms).
        assert_eq!(list(&mut c, &t, &dir), fresh(&data), "after {what}");
        assert_eq!(list(&mut c, &t, &dir), fresh(&data), "again after {what}");
    };
    step("nothing", &|| {});
    step("appending", &|| append(&data.join("a.txt"), b"678"));
    step("truncating", &|| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(data.join("a.txt"))
            .unwrap()
            .set_len(1)
            .unwrap()
    });
    step("creating", &|| {
        std::fs::write(data.join("c.txt"), "new").unwrap()
    });
    step("deleting", &|| {
        std::fs::remove_file(data.join("b.txt")).unwrap()
    });
    step("renaming out", &|| {
        std::fs::rename(data.join("c.txt"), elsewhere.join("c.txt")).unwrap()
    });
    step("renaming in", &|| {
        std::fs::rename(elsewhere.join("c.txt"), data.join("d.txt")).unwrap()
    });
    step("chmod", &|| {
        std::fs::set_permissions(data.join("d.txt"), PermissionsExt::from_mode(0o600)).unwrap()
    });
    step("renaming over", &|| {
        std::fs::write(elsewhere.join("tmp"), "a longer replacement").unwrap();
        std::fs::rename(elsewhere.join("tmp"), data.join("a.txt")).unwrap();
    });
    step("creating in a subdirectory", &|| {
        for i in 0..150 {
            std::fs::write(data.join(format!("sub/a-rather-long-file-name-{i:03}")), "").unwrap();
        }
    });
    step("writing through a link in another directory", &|| {
        append(&elsewhere.join("shared"), b"2345")
    });
    step("replacing a symlink", &|| {
        std::fs::remove_file(data.join("link")).unwrap();
        symlink("sub/a-rather-long-file-name-000", data.join("link")).unwrap();
    });
    step("making a directory", &|| {
        std::fs::create_dir(data.join("sub2")).unwrap()
    });
    step("removing a directory", &|| {
        std::fs::remove_dir(data.join("sub2")).unwrap()
    });
}

#[test]
fn a_concurrent_writer_is_never_missed() {
    let s = Stack::start(&[]);
    let data = s.base().join("srv/data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("grow"), "").unwrap();
    std::fs::write(data.join("other"), "x").unwrap();
    let t = s.issue(&["list"], &s.data(), 600);
    let dir = s.data();

    // The writer appends one byte to `grow` per step and counts the steps
    // it has completed; it also creates, renames and deletes files and
    // changes `sub`, to keep the directory's names moving.
    let done = Arc::new(AtomicU64::new(0));
    let pause = Arc::new(AtomicBool::new(false));
    let paused = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (done, pause, paused, stop) =
            (done.clone(), pause.clone(), paused.clone(), stop.clone());
        let data = data.clone();
        std::thread::spawn(move || {
            let mut grow = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("grow"))
                .unwrap();
            let mut k = 0u64;
            while !stop.load(Ordering::SeqCst) {
                if pause.load(Ordering::SeqCst) {
                    paused.store(true, Ordering::SeqCst);
                    std::thread::yield_now();
                    continue;
                }
                paused.store(false, Ordering::SeqCst);
                grow.write_all(b".").unwrap();
                match k % 4 {
                    0 => std::fs::write(
                        data.join(format!("t{}", k % 16)),
                        vec![b'x'; (k % 7) as usize],
                    )
                    .unwrap(),
                    1 => {
                        let _ = std::fs::rename(
                            data.join(format!("t{}", (k - 1) % 16)),
                            data.join("renamed"),
                        );
                    }
                    2 => std::fs::write(data.join(format!("sub/s{}", k % 32)), "").unwrap(),
                    _ => {
                        let _ = std::fs::remove_file(data.join("renamed"));
                    }
                }
                k += 1;
                done.store(k, Ordering::SeqCst);
            }
        })
    };

    let mut c = s.fs_client();
    // (when, steps the writer had completed by then), oldest first; and
    // the steps completed more than MAX_AGE ago, which every listing from
    // now on must show.
    let mut seen: VecDeque<(Instant, u64)> = VecDeque::new();
    let mut before = 0;
    for round in 0..20 {
        for _ in 0..100 {
            let now = Instant::now();
            while let Some(&(when, n)) = seen.front() {
                if now.duration_since(when) <= MAX_AGE {
                    break;
                }
                before = n;
                seen.pop_front();
            }
            seen.push_back((Instant::now(), done.load(Ordering::SeqCst)));
            let r = list(&mut c, &t, &dir);
            let after = done.load(Ordering::SeqCst);
            let size = r["entries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == "grow")
                .expect("grow is listed")["size"]
                .as_u64()
                .unwrap();
            // The writer may have done a few more meanwhile.
            assert!(
                size >= before && size <= after + 1,
                "round {round}: grow has {size} bytes, writer had done {before}..{after}"
            );
        }
        // Stop the writer and compare everything.
        pause.store(true, Ordering::SeqCst);
        while !paused.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        wait_out_the_bound();
        assert_eq!(list(&mut c, &t, &dir), fresh(&data), "round {round}");
        assert_eq!(list(&mut c, &t, &dir), fresh(&data), "round {round}, again");
        pause.store(false, Ordering::SeqCst);
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    wait_out_the_bound();
    assert_eq!(list(&mut c, &t, &dir), fresh(&data));
}

#[test]
fn strata_fs_list_cache_0_turns_it_off() {
    let s = Stack::start(&[("STRATA_FS_LIST_CACHE", "0")]);
    let data = s.base().join("srv/data");
    std::fs::write(data.join("a"), "1").unwrap();
    let t = s.issue(&["list"], &s.data(), 600);
    let mut c = s.fs_client();
    assert_eq!(list(&mut c, &t, &s.data()), fresh(&data));
    // Without the cache, a change is in the very next listing.
    append(&data.join("a"), b"23");
    assert_eq!(list(&mut c, &t, &s.data()), fresh(&data));
}

#[test]
fn a_bad_strata_fs_list_cache_stops_fs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("srv")).unwrap();
    let mut fs = strata_testkit::ActivatedService::start(
        &strata_testkit::workspace_binary("strata-fs"),
        "fs",
        &dir.path().join("run"),
        &[
            ("STRATA_FS_ROOTS", dir.path().join("srv").to_str().unwrap()),
            ("STRATA_FS_LIST_CACHE", "maybe"),
        ],
    )
    .unwrap();
    let status = fs.wait(std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(status.code(), Some(2));
}

/// A listing cached for one token's directory is never served through a
/// name that leads out of another token's prefix: a child of the prefix is
/// answered from the cache without opening it only when it is a plain
/// directory; a symlink or `..` goes through `openat2(RESOLVE_BENEATH)`.
#[test]
fn cached_listings_are_reached_only_beneath_the_prefix() {
    let s = Stack::start(&[]);
    let srv = s.base().join("srv");
    let data = srv.join("data");
    std::fs::create_dir_all(srv.join("secret")).unwrap();
    std::fs::write(srv.join("secret/key"), "hunter2").unwrap();
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("sub/a"), "1").unwrap();
    std::fs::write(data.join("file"), "x").unwrap();
    symlink("../secret", data.join("up")).unwrap();
    symlink(srv.join("secret"), data.join("abs")).unwrap();
    symlink("sub", data.join("inner")).unwrap();

    // The whole of srv's listings are cached by a token for srv.
    let wide = s.issue(&["list"], &s.path("srv"), 600);
    let narrow = s.issue(&["list"], &s.data(), 600);
    let mut c = s.fs_client();
    for _ in 0..2 {
        assert_eq!(
            list(&mut c, &wide, &s.path("srv/secret")),
            fresh(&srv.join("secret"))
        );
        assert_eq!(list(&mut c, &wide, &s.path("srv")), fresh(&srv));
    }
    // Through the narrow token, every way out is refused, twice (the
    // second time the target's listing is certainly cached).
    for _ in 0..2 {
        for way_out in ["srv/data/up", "srv/data/abs", "srv/data/.."] {
            let (code, msg) = error(call(
                &mut c,
                "fs.list",
                &narrow,
                json!({"path": s.path(way_out)}),
            ));
            assert_eq!(code, 3, "{way_out}: {msg}");
        }
    }
    // Ways in are served, and stay exact when served from the cache.
    for round in 0..3 {
        if round == 2 {
            std::fs::write(data.join("sub/b"), "22").unwrap();
            wait_out_the_bound();
        }
        assert_eq!(
            list(&mut c, &narrow, &s.path("srv/data/sub")),
            fresh(&data.join("sub"))
        );
        assert_eq!(
            list(&mut c, &narrow, &s.path("srv/data/inner")),
            fresh(&data.join("sub"))
        );
        assert_eq!(list(&mut c, &narrow, &s.data()), fresh(&data));
    }
    // A file is still not a directory.
    let (code, msg) = error(call(
        &mut c,
        "fs.list",
        &narrow,
        json!({"path": s.path("srv/data/file")}),
    ));
    assert_eq!(code, 1, "{msg}");
    assert!(msg.contains("not a directory"), "{msg}");
}
