//! fs.list may lag behind the directory by at most 100 ms (issue 10,
//! defects 7 and 8), against the real strata-fs: changes that raise no
//! inotify event are bounded too, and one directory seen through two mounts
//! gives each mount's own view.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use strata_adversarial::*;
use strata_shared::client::Client;

/// The promise in api/protocol.md, with a margin for scheduling.
const BOUND: Duration = Duration::from_millis(150);

/// What fs.list must answer once the bound has passed: readdir and lstat.
fn fresh(dir: &Path) -> Value {
    let mut entries: Vec<(Vec<u8>, Value)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let name = e.file_name().into_string().unwrap();
            let v = json!({"name": name, "is_dir": m.is_dir(), "size": m.len()});
            (name.into_bytes(), v)
        })
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    json!({"entries": entries.into_iter().map(|e| e.1).collect::<Vec<_>>()})
}

fn list(c: &mut Client, t: &Token, path: &str) -> Value {
    ok(call_checked(
        c,
        "fs.list",
        Some(&t.token),
        json!({"path": path}),
    ))
}

fn size_of(listing: &Value, name: &str) -> u64 {
    listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {listing}"))["size"]
        .as_u64()
        .unwrap()
}

/// `struct iocb` of `<linux/aio_abi.h>` (little-endian field order for
/// `aio_key`/`aio_rw_flags`; both are zero here, so the order is moot).
#[repr(C)]
#[derive(Default)]
struct Iocb {
    aio_data: u64,
    aio_key: u32,
    aio_rw_flags: i32,
    aio_lio_opcode: u16,
    aio_reqprio: i16,
    aio_fildes: u32,
    aio_buf: u64,
    aio_nbytes: u64,
    aio_offset: i64,
    aio_reserved2: u64,
    aio_flags: u32,
    aio_resfd: u32,
}

#[repr(C)]
#[derive(Default)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

const IOCB_CMD_PWRITE: u16 = 1;

/// Writes `buf` at `offset` of `file` with Linux native AIO (`io_submit`),
/// which raises no `IN_MODIFY`, and waits for it to complete. `None` when
/// native AIO is not available here.
#[allow(unsafe_code)]
fn aio_pwrite(file: &std::fs::File, buf: &[u8], offset: i64) -> Option<i64> {
    let mut ctx: u64 = 0;
    // SAFETY: io_setup writes one aio_context_t to the pointer given.
    let r = unsafe { libc::syscall(libc::SYS_io_setup, 1, &mut ctx as *mut u64) };
    if r != 0 {
        eprintln!(
            "native AIO unavailable: {}",
            std::io::Error::last_os_error()
        );
        return None;
    }
    let mut cb = Iocb {
        aio_lio_opcode: IOCB_CMD_PWRITE,
        aio_fildes: u32::try_from(file.as_raw_fd()).unwrap(),
        aio_buf: buf.as_ptr() as u64,
        aio_nbytes: buf.len() as u64,
        aio_offset: offset,
        ..Default::default()
    };
    let mut cbs = [&mut cb as *mut Iocb];
    // SAFETY: one valid iocb whose buffer outlives the request (we wait
    // for its completion below before returning).
    let n = unsafe { libc::syscall(libc::SYS_io_submit, ctx, 1, cbs.as_mut_ptr()) };
    assert_eq!(n, 1, "io_submit: {}", std::io::Error::last_os_error());
    let mut ev = IoEvent::default();
    // SAFETY: room for one io_event; no timeout (waits for completion).
    let got = unsafe {
        libc::syscall(
            libc::SYS_io_getevents,
            ctx,
            1,
            1,
            &mut ev as *mut IoEvent,
            std::ptr::null_mut::<libc::timespec>(),
        )
    };
    assert_eq!(got, 1, "io_getevents: {}", std::io::Error::last_os_error());
    // SAFETY: the context made above, with nothing in flight.
    unsafe { libc::syscall(libc::SYS_io_destroy, ctx) };
    Some(ev.res)
}

/// Defect 7: a file grown by `io_submit` raised no inotify event, and
/// fs.list showed the old size until the writer closed the file. Now a
/// listing made more than 100 ms after the write shows the new size, with
/// the writer's descriptor still open.
#[test]
fn a_size_changed_by_native_aio_is_listed_within_the_bound() {
    let s = Stack::with_fs(&[]);
    let t = s.fs_token();
    let mut c = s.fs_client();
    let dir = s.base().join("srv/data/aio");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("grow"), "12345").unwrap();
    // Opened before the first listing, and kept open: only the AIO write
    // happens after it (no open, no close).
    let writer = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("grow"))
        .unwrap();
    let path = s.path("srv/data/aio");
    let before = list(&mut c, &t, &path);
    assert_eq!(size_of(&before, "grow"), 5);
    let data = vec![b'a'; 100_000];
    // Never a silent pass: without native AIO this test cannot say anything.
    let res = aio_pwrite(&writer, &data, 5).expect("native AIO (io_setup) is not available here");
    assert_eq!(res, 100_000, "the AIO write completed in full");
    assert_eq!(writer.metadata().unwrap().len(), 100_005);
    std::thread::sleep(BOUND);
    let after = list(&mut c, &t, &path);
    assert_eq!(
        size_of(&after, "grow"),
        100_005,
        "fs.list still shows the size from before the AIO write, {BOUND:?} later"
    );
    assert_eq!(after, fresh(&dir));
    drop(writer);
}

/// Unmounts what a test mounted (in its own mount namespace) before the
/// stack's temporary directory is removed.
struct Mounts(Vec<PathBuf>);

impl Drop for Mounts {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        for m in self.0.iter().rev() {
            let p = std::ffi::CString::new(m.to_str().unwrap()).unwrap();
            // SAFETY: a valid C string.
            unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

#[allow(unsafe_code)]
fn mount(src: &str, target: &Path, fstype: Option<&str>, flags: libc::c_ulong) {
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    let (src, target) = (c(src), c(target.to_str().unwrap()));
    let fstype = fstype.map(c);
    // SAFETY: valid C strings (or null) and no data argument.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            std::ptr::null(),
        )
    };
    assert_eq!(
        r,
        0,
        "mount {target:?}: {}",
        std::io::Error::last_os_error()
    );
}

/// Defect 8: listings were keyed by (st_dev, st_ino) only. A directory `d`
/// bind-mounted on `m1` and on `m2`, with a tmpfs mounted on `m2/s` only,
/// is one inode with two different listings (`s` as seen through each
/// mount differs); listing `m1` then `m2` gave `m2` the listing of `m1`.
#[test]
#[ignore = "needs root: bind mounts"]
#[allow(unsafe_code)]
fn one_directory_through_two_mounts_gives_each_mounts_view() {
    // Run with --include-ignored but not as root: fail, never pass silently.
    assert!(strata_testkit::euid() == "0", "needs root for bind mounts");
    // A thread of its own: unshare(CLONE_NEWNS) moves only the calling
    // thread (and the services it then starts) into a new mount namespace,
    // so nothing is mounted on the host, nor seen by other tests.
    std::thread::spawn(|| {
        // SAFETY: no pointers; affects this thread only.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNS) };
        assert_eq!(r, 0, "unshare: {}", std::io::Error::last_os_error());
        mount(
            "none",
            Path::new("/"),
            None,
            libc::MS_REC | libc::MS_PRIVATE,
        );
        let s = Stack::with_fs(&[]);
        let data = s.base().join("srv/data");
        let views = data.join("views");
        let (d, m1, m2) = (data.join("d"), views.join("m1"), views.join("m2"));
        for p in [&d, &views, &m1, &m2] {
            std::fs::create_dir(p).unwrap();
        }
        let mut mounts = Mounts(Vec::new());
        // d on a tmpfs of its own, so that the old cache (local file
        // systems only) would cache it whatever the test directory is on.
        mount("strata-test", &d, Some("tmpfs"), 0);
        mounts.0.push(d.clone());
        std::fs::create_dir(d.join("s")).unwrap();
        for f in ["one", "two", "three"] {
            std::fs::write(d.join("s").join(f), f).unwrap();
        }
        std::fs::write(d.join("file"), "x").unwrap();
        for m in [&m1, &m2] {
            mount(d.to_str().unwrap(), m, None, libc::MS_BIND);
            mounts.0.push(m.clone());
        }
        mount("strata-test", &m2.join("s"), Some("tmpfs"), 0);
        mounts.0.push(m2.join("s"));

        let (v1, v2) = (fresh(&m1), fresh(&m2));
        assert_ne!(v1, v2, "the two views differ (the test's premise)");
        // Two components below the prefix (resolved with openat2), and one
        // (looked up with one statx beneath the prefix).
        let deep = s.fs_token();
        let near = s.issue("fs", &["list"], Some(&s.path("srv/data/views")), 600);
        let mut c = s.fs_client();
        // Quickly one after the other: well within the 100 ms a listing
        // may be served again.
        for round in 0..3 {
            for t in [&deep, &near] {
                for (p, want) in [("m1", &v1), ("m2", &v2), ("m2", &v2), ("m1", &v1)] {
                    let got = list(&mut c, t, &s.path(&format!("srv/data/views/{p}")));
                    assert_eq!(&got, want, "{p}, round {round}");
                }
            }
        }
        drop(mounts);
        drop(s);
    })
    .join()
    .unwrap();
}
