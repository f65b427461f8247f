//! Protocol abuse against identity and fs: floods of frames, connection
//! exhaustion, stalled clients, absurd length prefixes and JSON bombs. Each
//! must end in bounded memory, a clear error, and a service that keeps
//! serving.

use std::io::{BufReader, BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use strata_adversarial::*;
use strata_shared::wire::{self, Response};

/// (name, socket, health method, pid) of each service in a stack.
fn services(s: &Stack) -> Vec<(&'static str, std::path::PathBuf, &'static str, u32)> {
    let mut v = vec![(
        "identity",
        s.identity.socket.clone(),
        "identity.health",
        s.identity.pid().unwrap(),
    )];
    if let Some(fs) = &s.fs {
        v.push(("fs", fs.socket.clone(), "fs.health", fs.pid().unwrap()));
    }
    v
}

/// Sends `n` frames down one connection while another thread reads the
/// answers; every 1000th is a health request whose req_id is checked, the
/// rest are the smallest frame there is, `{}` (code 1, connection kept).
fn flood(socket: &Path, method: &str, n: usize) -> (usize, Duration) {
    let stream = raw(socket);
    let reader = stream.try_clone().unwrap();
    let method = method.to_string();
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut w = BufWriter::with_capacity(1 << 16, stream);
        let mut frame = Vec::new();
        for i in 0..n {
            frame.clear();
            if i % 1000 == 999 {
                let p = format!(r#"{{"v":1,"req_id":{i},"method":"{method}"}}"#);
                wire::encode_frame(p.as_bytes(), &mut frame);
            } else {
                wire::encode_frame(b"{}", &mut frame);
            }
            w.write_all(&frame).unwrap();
        }
        w.flush().unwrap();
        w
    });
    let mut r = BufReader::with_capacity(1 << 16, reader);
    let mut answered = 0;
    for i in 0..n {
        let f = wire::read_frame_blocking(&mut r)
            .unwrap()
            .unwrap_or_else(|| panic!("closed after {i} answers"));
        let resp = Response::parse(&f).unwrap();
        if i % 1000 == 999 {
            assert!(resp.ok, "{resp:?}");
            assert_eq!(resp.req_id, json!(i), "answers out of order");
        } else {
            assert_eq!(resp.error.unwrap().code, 1);
        }
        answered += 1;
    }
    let elapsed = started.elapsed();
    drop(writer.join().unwrap());
    (answered, elapsed)
}

#[test]
fn a_million_tiny_frames_on_one_connection() {
    let s = Stack::with_fs(&[]);
    let n: usize = std::env::var("STRATA_FLOOD_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    for (name, socket, health, pid) in services(&s) {
        // Warm up (allocator arenas, buffers) before the baseline.
        flood(&socket, health, 20_000);
        let before = rss_kib(pid);
        let (answered, took) = flood(&socket, health, n);
        let after = rss_kib(pid);
        eprintln!(
            "flood {name}: {answered} frames answered in order in {:.1} s ({:.0}/s); \
             RSS {before} KiB -> {after} KiB",
            took.as_secs_f64(),
            answered as f64 / took.as_secs_f64()
        );
        assert_eq!(answered, n);
        assert!(
            after < before + 16 * 1024,
            "{name}: RSS grew from {before} to {after} KiB over {n} frames"
        );
        still_serving(&socket, health);
    }
}

#[test]
fn connections_up_to_the_limit_and_past_it() {
    let max: usize = 2000;
    raise_nofile(3 * max as u64 + 1024);
    let lim = max.to_string();
    // One uid may take every shared slot here, so that this measures the
    // global limit; the per-uid cap has its own test below.
    let envs = [
        ("STRATA_MAX_CONNECTIONS", lim.as_str()),
        ("STRATA_MAX_CONNECTIONS_PER_UID", lim.as_str()),
        ("STRATA_RESERVED_CONNECTIONS", "1"),
    ];
    let s = Stack::with_fs(&envs);
    // identity too: a fresh one with the same limit, on its own socket.
    let id = Stack::identity_only(&envs);
    // The tests' user is identity's administrator, so it may also use
    // identity's reserved slot; root may use fs's.
    let root = strata_testkit::euid() == "0";
    let targets = vec![
        (
            "identity",
            id.identity.socket.clone(),
            "identity.health",
            id.identity.pid().unwrap(),
            max + 1,
        ),
        (
            "fs",
            s.fs().socket.clone(),
            "fs.health",
            s.fs().pid().unwrap(),
            max + usize::from(root),
        ),
    ];
    for (name, socket, health, pid, limit) in targets {
        let fds_before = fd_count(pid);
        let rss_before = rss_kib(pid);
        let started = Instant::now();
        // Fill every slot. Each connection asks once (so it is known to be
        // accepted and served) and then sits idle.
        let mut held: Vec<UnixStream> = Vec::with_capacity(limit);
        for i in 0..limit {
            let mut c = raw(&socket);
            let p = format!(r#"{{"v":1,"req_id":{i},"method":"{health}"}}"#);
            send_frame(&mut c, p.as_bytes());
            let r = read_response(&mut c).unwrap_or_else(|| panic!("{name}: conn {i} closed"));
            assert!(r.ok, "{name}: conn {i}: {r:?}");
            held.push(c);
        }
        let fds_full = fd_count(pid);
        let rss_full = rss_kib(pid);
        // Past the limit: one code-6 frame, then the connection is closed.
        for i in 0..50 {
            let mut c = raw(&socket);
            let r = read_response(&mut c).unwrap_or_else(|| panic!("{name}: extra {i}: no frame"));
            assert_eq!(code(&r), 6, "{name}: extra {i}");
            assert!(
                r.error
                    .as_ref()
                    .unwrap()
                    .message
                    .contains("too many connections"),
                "{r:?}"
            );
            assert!(
                closed_by_peer(&mut c, Duration::from_secs(5)),
                "{name}: extra {i} left open"
            );
        }
        // Every held connection still works.
        for (i, c) in held.iter_mut().enumerate().step_by(97) {
            let p = format!(r#"{{"v":1,"req_id":"again{i}","method":"{health}"}}"#);
            send_frame(c, p.as_bytes());
            assert!(read_response(c).unwrap().ok);
        }
        // Free some slots: new clients are served again.
        held.truncate(limit - 10);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut c = raw(&socket);
            send_frame(
                &mut c,
                format!(r#"{{"v":1,"method":"{health}"}}"#).as_bytes(),
            );
            match read_response(&mut c) {
                Some(r) if r.ok => break,
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "{name}: slot never freed: {other:?}"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        drop(held);
        // The descriptors go back.
        let deadline = Instant::now() + Duration::from_secs(10);
        while fd_count(pid) > fds_before + 16 {
            assert!(
                Instant::now() < deadline,
                "{name}: fds not released: {}",
                fd_count(pid)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "connections {name}: {limit} held in {:.1} s (fds {fds_before} -> {fds_full}, RSS \
             {rss_before} -> {rss_full} KiB, {:.1} KiB per connection), 50 past the limit \
             answered code 6 and closed, fds back to {} after release",
            started.elapsed().as_secs_f64(),
            (rss_full.saturating_sub(rss_before)) as f64 / limit as f64,
            fd_count(pid)
        );
        assert!(
            rss_full < rss_before + 64 * 1024,
            "{name}: {rss_before} -> {rss_full} KiB"
        );
        still_serving(&socket, health);
    }
}

#[test]
fn slowloris_clients_are_cut_off_and_do_not_starve_others() {
    let envs = [
        ("STRATA_FRAME_TIMEOUT_MS", "500"),
        ("STRATA_MAX_CONNECTIONS", "64"),
    ];
    let s = Stack::with_fs(&envs);
    let id = Stack::identity_only(&envs);
    let targets = vec![
        (
            "identity",
            id.identity.socket.clone(),
            "identity.health",
            id.identity.pid().unwrap(),
        ),
        (
            "fs",
            s.fs().socket.clone(),
            "fs.health",
            s.fs().pid().unwrap(),
        ),
    ];
    for (name, socket, health, pid) in targets {
        let fds_before = fd_count(pid);
        let started = Instant::now();
        // 60 stalled clients: half a header, a whole header and half a
        // payload, or a frame dribbled one byte every 100 ms (the deadline
        // is for the whole frame, not for each byte).
        let mut stalled = Vec::new();
        for i in 0..60 {
            let mut c = raw(&socket);
            match i % 3 {
                0 => c.write_all(&[0, 0]).unwrap(),
                1 => {
                    c.write_all(&100u32.to_be_bytes()).unwrap();
                    c.write_all(br#"{"v":1,"me"#).unwrap();
                }
                _ => c.write_all(&[0]).unwrap(),
            }
            stalled.push(c);
        }
        let dribblers: Vec<_> = stalled
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 == 2)
            .map(|(_, c)| c.try_clone().unwrap())
            .collect();
        let dribble = std::thread::spawn(move || {
            let payload = br#"{"v":1,"method":"x.health","pad":"................."}"#;
            let mut frame = Vec::new();
            wire::encode_frame(payload, &mut frame);
            for b in frame.iter().skip(1) {
                std::thread::sleep(Duration::from_millis(100));
                for mut d in &dribblers {
                    let _ = d.write_all(&[*b]);
                }
            }
        });
        // While they stall, the 4 free slots still serve promptly.
        for _ in 0..20 {
            let t = Instant::now();
            still_serving(&socket, health);
            assert!(t.elapsed() < Duration::from_secs(1), "{name}: slow answer");
        }
        // Every stalled client is disconnected soon after 500 ms.
        for (i, c) in stalled.iter_mut().enumerate() {
            assert!(
                closed_by_peer(c, Duration::from_secs(3)),
                "{name}: stalled client {i} still connected after {:?}",
                started.elapsed()
            );
        }
        let cut_after = started.elapsed();
        dribble.join().unwrap();
        // All 64 slots are free again.
        let mut fresh: Vec<UnixStream> = Vec::new();
        for i in 0..64 {
            let mut c = raw(&socket);
            send_frame(
                &mut c,
                format!(r#"{{"v":1,"req_id":{i},"method":"{health}"}}"#).as_bytes(),
            );
            let r = read_response(&mut c).unwrap();
            assert!(r.ok, "{name}: slot {i} after the stall: {r:?}");
            fresh.push(c);
        }
        drop(fresh);
        // A client that sends but never reads: its answers back up, and
        // the write deadline frees the connection.
        let mut greedy = raw(&socket);
        greedy
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut frame = Vec::new();
        let verify = json!({"v":1,"method": health, "pad": "x".repeat(200)}).to_string();
        for _ in 0..1000 {
            wire::encode_frame(verify.as_bytes(), &mut frame);
        }
        let sent_at = Instant::now();
        let mut sent = 0;
        for _ in 0..200 {
            if greedy.write_all(&frame).is_err() {
                break;
            }
            sent += 1000;
        }
        still_serving(&socket, health);
        // Give the write deadline time to fire, then check the service's
        // descriptors went back down.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if fd_count(pid) <= fds_before + 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: connections not released: {} fds (was {fds_before})",
                fd_count(pid)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "slowloris {name}: 60 stalled clients (half header, header + half payload, 1 byte \
             per 100 ms) all cut off by {:.2} s with a 0.5 s frame timeout; others answered \
             meanwhile; a non-reading client ({sent} requests sent) released after {:.1} s",
            cut_after.as_secs_f64(),
            sent_at.elapsed().as_secs_f64()
        );
        drop(greedy);
        still_serving(&socket, health);
    }
}

#[test]
fn absurd_length_prefixes_are_refused_before_allocation() {
    let s = Stack::with_fs(&[]);
    for (name, socket, health, pid) in services(&s) {
        let before = rss_kib(pid);
        for len in [u32::MAX, 1 << 31, (1 << 20) + 1, 1 << 30] {
            let mut c = raw(&socket);
            c.write_all(&len.to_be_bytes()).unwrap();
            // Whatever follows is never read as a frame.
            let _ = c.write_all(&[b'{'; 1024]);
            let r = read_response(&mut c).expect("an answer before the close");
            assert_eq!(code(&r), 1, "{name} {len}");
            assert!(r.error.unwrap().message.contains("too large"));
            assert!(
                closed_by_peer(&mut c, Duration::from_secs(5)),
                "{name} {len}: left open"
            );
        }
        // Many of them at once.
        let conns: Vec<UnixStream> = (0..200)
            .map(|_| {
                let mut c = raw(&socket);
                c.write_all(&u32::MAX.to_be_bytes()).unwrap();
                c
            })
            .collect();
        for mut c in conns {
            assert_eq!(code(&read_response(&mut c).unwrap()), 1);
        }
        let after = rss_kib(pid);
        // Exactly 1 MiB is allowed: a valid request padded with spaces.
        let mut c = raw(&socket);
        let head = format!(r#"{{"v":1,"req_id":"max","method":"{health}"}}"#);
        let mut payload = head.into_bytes();
        payload.resize(wire::MAX_FRAME, b' ');
        send_frame(&mut c, &payload);
        let r = read_response(&mut c).unwrap();
        assert!(r.ok, "{name}: a 1 MiB frame: {r:?}");
        eprintln!(
            "length prefixes {name}: 4 GiB, 2 GiB, 1 GiB and 1 MiB + 1 refused with code 1 and \
             closed, 200 concurrent 4 GiB prefixes; RSS {before} -> {after} KiB"
        );
        assert!(
            after < before + 8 * 1024,
            "{name}: RSS {before} -> {after} KiB"
        );
        still_serving(&socket, health);
    }
}

#[test]
fn json_bombs_within_a_megabyte() {
    let s = Stack::with_fs(&[]);
    let t = s.fs_token();
    let file = format!("{}/inside.txt", s.data());
    // (what, payload, whether the connection must be closed afterwards)
    let mut bombs: Vec<(String, String, bool)> = Vec::new();
    let wrap = |method: &str, extra: &str| {
        format!(
            r#"{{"v":1,"req_id":"b","method":"{method}","auth":{{"token":"{}"}},"params":{{"path":"{file}","token":"x",{extra}}}}}"#,
            t.token
        )
    };
    for method in ["identity.verify", "fs.open"] {
        let deep = 500_000 - 200;
        bombs.push((
            format!("{method}: 500k-deep arrays"),
            wrap(
                method,
                &format!(r#""x":{}{}"#, "[".repeat(deep), "]".repeat(deep)),
            ),
            true,
        ));
        bombs.push((
            format!("{method}: 500k-deep objects"),
            wrap(
                method,
                &format!(
                    r#""x":{}1{}"#,
                    r#"{"a":"#.repeat(150_000),
                    "}".repeat(150_000)
                ),
            ),
            true,
        ));
        bombs.push((
            format!("{method}: 129 deep"),
            wrap(
                method,
                &format!(r#""x":{}{}"#, "[".repeat(127), "]".repeat(127)),
            ),
            true,
        ));
        bombs.push((
            format!("{method}: 500k-element array"),
            wrap(method, &format!(r#""x":[{}0]"#, "0,".repeat(500_000))),
            false,
        ));
        bombs.push((
            format!("{method}: 60k keys"),
            wrap(
                method,
                &(0..60_000)
                    .map(|i| format!(r#""k{i}":{i}"#))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            false,
        ));
        bombs.push((
            format!("{method}: 100k duplicate keys"),
            wrap(method, &vec![r#""d":0"#; 100_000].join(",")),
            false,
        ));
        bombs.push((
            format!("{method}: 150k escapes"),
            wrap(method, &format!(r#""x":"{}""#, r"\u0000".repeat(150_000))),
            false,
        ));
        bombs.push((
            format!("{method}: 300k empty objects"),
            wrap(method, &format!(r#""x":[{}{{}}]"#, "{},".repeat(300_000))),
            false,
        ));
    }
    // Top level: duplicate envelope fields and an array envelope.
    bombs.push((
        "duplicate v".into(),
        format!(
            r#"{{"v":1,{}"method":"fs.health"}}"#,
            r#""v":1,"#.repeat(100_000)
        ),
        true,
    ));
    bombs.push((
        "array envelope".into(),
        format!("[{}1]", "1,".repeat(400_000)),
        true,
    ));
    let s_id = s.identity.socket.clone();
    let s_fs = s.fs().socket.clone();
    let pids = [s.identity.pid().unwrap(), s.fs().pid().unwrap()];
    // Warm up, then the baseline.
    for sock in [&s_id, &s_fs] {
        still_serving(
            sock,
            if sock == &s_id {
                "identity.health"
            } else {
                "fs.health"
            },
        );
    }
    let before = pids.map(rss_kib);
    for (what, payload, closes) in &bombs {
        assert!(
            payload.len() <= wire::MAX_FRAME,
            "{what}: {} bytes",
            payload.len()
        );
        let sock = if what.starts_with("identity") {
            &s_id
        } else {
            &s_fs
        };
        let mut c = raw(sock);
        let started = Instant::now();
        send_frame(&mut c, payload.as_bytes());
        let r = read_response(&mut c).unwrap_or_else(|| panic!("{what}: no answer"));
        let took = started.elapsed();
        // Generous for a debug build on a loaded 2-core machine; the point
        // is that it is answered at all, not how fast.
        assert!(
            took < Duration::from_secs(15),
            "{what}: answered after {took:?}"
        );
        assert_no_leak(what, &serde_json::to_string(&r).unwrap());
        if *closes {
            assert_eq!(code(&r), 1, "{what}");
            assert!(
                closed_by_peer(&mut c, Duration::from_secs(5)),
                "{what}: left open"
            );
        } else {
            // Unknown parameters are ignored: the request itself is served.
            assert!(r.ok || matches!(code(&r), 1 | 2), "{what}: {r:?}");
            send_frame(&mut c, br#"{"v":1,"method":"fs.health"}"#);
            assert!(
                read_response(&mut c).is_some(),
                "{what}: connection unusable"
            );
        }
        eprintln!(
            "bomb {what}: {} KiB, answered in {:.0} ms{}",
            payload.len() / 1024,
            took.as_secs_f64() * 1000.0,
            match &r.error {
                Some(e) => format!(", code {}", e.code),
                None => ", ok".into(),
            }
        );
    }
    let after = pids.map(rss_kib);
    eprintln!(
        "bombs: RSS identity {} -> {} KiB, fs {} -> {} KiB",
        before[0], after[0], before[1], after[1]
    );
    for i in 0..2 {
        assert!(
            after[i] < before[i] + 64 * 1024,
            "RSS {before:?} -> {after:?}"
        );
    }
    still_serving(&s_id, "identity.health");
    still_serving(&s_fs, "fs.health");
}

/// Issue 10, defect 2: one local user holding every connection it can
/// must not lock out other users, nor stop an administrator's revocation.
#[test]
#[ignore = "needs root: connects as other uids (scripts/test-all.sh runs it, as root)"]
fn one_uid_at_its_connection_cap_locks_out_neither_other_uids_nor_root() {
    const ALICE: u32 = 61_000;
    const BOB: u32 = 61_001;
    const CAROL: u32 = 61_002;
    raise_nofile(8192);
    let fs_envs = [
        ("STRATA_MAX_CONNECTIONS", "48"),
        ("STRATA_MAX_CONNECTIONS_PER_UID", "24"),
        ("STRATA_RESERVED_CONNECTIONS", "4"),
    ];
    let s = Stack::with_fs(&fs_envs);
    let victim = s.fs_token();

    // identity, default limits: alice takes all her connections (64).
    let (alice_id, refused) = connect_as(ALICE, &s.identity.socket, "identity.health", 1000);
    let refused = refused.expect("alice was never refused");
    assert_eq!(alice_id.len(), 64, "identity's default per-uid cap");
    assert_eq!(code(&refused), 6, "{refused:?}");
    let msg = &refused.error.as_ref().unwrap().message;
    assert!(
        msg.contains("uid 61000") && msg.contains("per uid"),
        "{msg}"
    );
    // Bob is served; root revokes, and fs refuses the token at once.
    let (bob_id, none) = connect_as(BOB, &s.identity.socket, "identity.health", 4);
    assert!(none.is_none() && bob_id.len() == 4, "bob refused: {none:?}");
    let mut id = s.identity_client();
    assert!(
        id.call("identity.revoke", None, &json!({"cap_id": victim.cap_id}))
            .unwrap()
            .ok
    );

    // fs: alice and bob fill the shared slots (24 each of 48); carol gets
    // code 6, root still gets in (the reserved slots), and sees the
    // revocation.
    let (alice_fs, r) = connect_as(ALICE, &s.fs().socket, "fs.health", 1000);
    assert_eq!((alice_fs.len(), r.map(|r| code(&r))), (24, Some(6)));
    let (bob_fs, r) = connect_as(BOB, &s.fs().socket, "fs.health", 24);
    assert!(r.is_none() && bob_fs.len() == 24, "{r:?}");
    let (carol_fs, r) = connect_as(CAROL, &s.fs().socket, "fs.health", 1);
    let r = r.expect("carol admitted past the shared limit");
    assert!(carol_fs.is_empty());
    assert_eq!(code(&r), 6);
    assert!(r.error.unwrap().message.contains("too many connections"));
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let r = s
            .fs_client()
            .call(
                "fs.stat",
                Some(&victim.token),
                &json!({"path": s.path("srv/data/hello.txt")}),
            )
            .unwrap();
        if !r.ok && code(&r) == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "revoked token still served: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop((alice_id, bob_id, alice_fs, bob_fs));
}

/// The reserved connections themselves: with identity's shared slots all
/// taken by two ordinary uids, a third is refused, while root (an
/// administrator) and a `STRATA_RESERVED_USERS` user (as fs's sync is) are
/// served, and root's revocation goes through.
#[test]
#[ignore = "needs root: connects as other uids (scripts/test-all.sh runs it, as root)"]
fn the_reserved_connections_serve_administrators_and_reserved_users_only() {
    const ALICE: u32 = 61_010;
    const BOB: u32 = 61_011;
    const CAROL: u32 = 61_012;
    const NOBODY: u32 = 65_534;
    let id = Stack::identity_only(&[
        ("STRATA_MAX_CONNECTIONS", "8"),
        ("STRATA_MAX_CONNECTIONS_PER_UID", "4"),
        ("STRATA_RESERVED_CONNECTIONS", "3"),
        ("STRATA_RESERVED_USERS", "nobody"),
    ]);
    let socket = &id.identity.socket;
    let (alice, r) = connect_as(ALICE, socket, "identity.health", 100);
    assert_eq!((alice.len(), r.map(|r| code(&r))), (4, Some(6)));
    let (bob, r) = connect_as(BOB, socket, "identity.health", 4);
    assert!(r.is_none() && bob.len() == 4, "{r:?}");
    let (_, r) = connect_as(CAROL, socket, "identity.health", 1);
    let r = r.expect("carol admitted past the shared limit");
    assert!(r
        .error
        .unwrap()
        .message
        .contains("too many connections (limit 8)"));
    // nobody is a reserved user: one reserved slot.
    let (reserved, r) = connect_as(NOBODY, socket, "identity.health", 1);
    assert!(r.is_none() && reserved.len() == 1, "{r:?}");
    // Root, an administrator, takes another and revokes.
    let mut root = id.identity_client();
    let token = ok(root
        .call(
            "identity.issue",
            None,
            &json!({"service": "fs", "actions": ["read"], "path_prefix": "/srv"}),
        )
        .unwrap());
    let cap_id = token["cap_id"].as_str().unwrap();
    let r = root
        .call("identity.revoke", None, &json!({"cap_id": cap_id}))
        .unwrap();
    assert!(r.ok, "root's revoke with the shared slots full: {r:?}");
    // The third reserved slot is the last: past it, even root waits.
    let mut extra = id.identity_client();
    assert!(extra.call("identity.health", None, &json!({})).unwrap().ok);
    let mut past = raw(socket);
    let r = read_response(&mut past).expect("an answer past every slot");
    assert_eq!(code(&r), 6);
    drop((alice, bob, reserved));
}

/// Issue 10, defect 3: 1 MiB requests over as many connections as one uid
/// may hold, sent and left unread, and then large requests answered one
/// after another on connections that stay open. Memory stays within the
/// frame budget, and comes back.
#[test]
fn large_frames_from_one_uid_stay_within_its_memory_budget() {
    raise_nofile(4096);
    let s = Stack::with_fs(&[]);
    let socket = s.fs().socket.clone();
    let pid = s.fs().pid().unwrap();
    as_ordinary_user(move || attack_with_large_frames(&socket, pid));
    still_serving(&s.fs().socket, "fs.health");
}

fn attack_with_large_frames(socket: &Path, pid: u32) {
    let rss_before = rss_kib(pid);
    let big = |i: usize| {
        // Just under the frame limit, so that the echoed req_id fits.
        let id = "x".repeat(wire::MAX_FRAME - 200);
        format!(r#"{{"v":1,"req_id":"{id}{i}","method":"fs.health"}}"#)
    };
    // 1. The attack from the review: 1000 connections, each sends a 1 MiB
    // frame, nobody reads.
    let mut held = Vec::new();
    for i in 0..1000 {
        let mut c = raw(socket);
        let mut frame = Vec::new();
        wire::encode_frame(big(i).as_bytes(), &mut frame);
        let _ = c.write_all(&frame); // a refused connection is closed mid-write
        held.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_attack = rss_kib(pid);
    let (mut served, mut budget, mut capped) = (0, 0, 0);
    for c in &mut held {
        match wire::read_frame_blocking(c) {
            Ok(Some(f)) => {
                let r = Response::parse(&f).unwrap();
                if r.ok {
                    served += 1;
                    continue;
                }
                assert_eq!(code(&r), 6, "{r:?}");
                let msg = r.error.unwrap().message;
                if msg.contains("frame memory") {
                    budget += 1;
                } else {
                    assert!(msg.contains("per uid"), "{msg}");
                    capped += 1;
                }
            }
            other => panic!("no answer: {other:?}"),
        }
    }
    drop(held);
    // Connections refused for memory are closed, so their slots free up:
    // which of the two refusals a connection meets depends on timing.
    assert_eq!(served + budget + capped, 1000);
    // Each admitted request holds up to 1 MiB of request and 1 MiB of
    // unread response: some fit in 16 MiB, the rest are refused.
    assert!(served >= 4, "only {served} of 1000 served");
    assert!(budget > 0, "no connection hit the 16 MiB budget");
    // 2. Shrinking: large requests, answered and read, on 60 connections
    // kept open afterwards.
    let mut open = Vec::new();
    // The attack's connections must be gone on the service's side first.
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..60 {
        let mut c = raw(socket);
        let mut frame = Vec::new();
        wire::encode_frame(big(i).as_bytes(), &mut frame);
        let _ = c.write_all(&frame);
        let r = read_response(&mut c).unwrap();
        assert!(r.ok, "large request {i}: {r:?}");
        open.push(c);
    }
    let rss_open = rss_kib(pid);
    eprintln!(
        "fs RSS: {rss_before} KiB idle, {rss_attack} KiB with 1000 unread 1 MiB requests \
         ({served} served, {budget} refused for memory, {capped} past the per-uid cap), \
         {rss_open} KiB with 60 connections open after a 1 MiB request each"
    );
    // The budget is 16 MiB of buffers per uid, plus responses in flight;
    // v0.4.0 held 2 MiB per connection: 128 MiB here.
    assert!(
        rss_attack < rss_before + 48 * 1024,
        "RSS {rss_before} -> {rss_attack} KiB under the attack"
    );
    assert!(
        rss_open < rss_before + 24 * 1024,
        "RSS {rss_before} -> {rss_open} KiB: buffers did not shrink"
    );
}
