//! `mixed`: many connections reading and listing a known tree through fs,
//! checking every answer, for a fixed time, while something outside (the
//! scenario) kills fs.
//!
//! Each connection is one thread running a closed loop: mostly `fs.read` at
//! random offsets and sizes on handles it opened itself, `fs.list` of the
//! tree's directories, and the `fs.open` / `fs.close` those reads need
//! (at most [`MAX_HANDLES`] open handles per connection, so that every
//! connection together stays far below fs's per-capability limit).
//!
//! What is counted (see the JSON report):
//! - `ok`: answers that were checked and right;
//! - `wrong`: answers that were wrong in any way — other bytes than the
//!   file holds, another listing, another `req_id`, an unreadable frame, an
//!   error where success was due. Must be 0.
//! - `errors_total` / `errors_by_code`: error answers where success was
//!   due (say code 5 while fs could not verify tokens). Must be 0 too.
//! - `failures`: requests that got no answer because the connection broke
//!   (`connection_lost`: reset, broken pipe, end of stream — a SIGKILL of
//!   fs does exactly this to every connection it had accepted), or none in
//!   time (`timeout`). After one, the connection is replaced.
//! - `handle_lost`: code 4 for a handle opened before a connection loss
//!   (handles live in fs's memory and die with the process). Expected after
//!   a kill; the handle is reopened. Code 4 for a handle opened on the
//!   current connection is a `wrong` answer.
//! - `refusals`: connection attempts that found nobody listening
//!   (`ECONNREFUSED`, `ENOENT`). systemd holds the socket across kills, so
//!   this must be 0.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use strata_shared::wire::{ErrorBody, Response};

use crate::conn::{now_ms, CallError, Conn, ConnectError, Rng};
use crate::tree::{KnownFile, Tree};

/// Open handles one connection keeps at most.
pub const MAX_HANDLES: usize = 16;
/// Examples of wrong answers kept for the report.
const MAX_EXAMPLES: usize = 20;
/// Failure timestamps kept for the report.
const MAX_FAILURE_TIMES: usize = 100_000;

pub struct Options {
    pub socket: PathBuf,
    pub token: String,
    pub conns: usize,
    pub duration: Duration,
    pub timeout: Duration,
    pub seed: u64,
}

#[derive(Default)]
struct Stats {
    ok: u64,
    ok_by_method: BTreeMap<&'static str, u64>,
    wrong: u64,
    wrong_examples: Vec<String>,
    failures: BTreeMap<&'static str, u64>,
    failure_examples: Vec<String>,
    failure_times_ms: Vec<u64>,
    errors: BTreeMap<u16, u64>,
    error_examples: Vec<String>,
    handle_lost: u64,
    refusals: u64,
    refusal_examples: Vec<String>,
    other_connect_errors: u64,
    connects: u64,
    latencies_us: Vec<u32>,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.ok += o.ok;
        for (k, v) in o.ok_by_method {
            *self.ok_by_method.entry(k).or_default() += v;
        }
        self.wrong += o.wrong;
        extend_capped(&mut self.wrong_examples, o.wrong_examples, MAX_EXAMPLES);
        for (k, v) in o.failures {
            *self.failures.entry(k).or_default() += v;
        }
        extend_capped(&mut self.failure_examples, o.failure_examples, MAX_EXAMPLES);
        extend_capped(
            &mut self.failure_times_ms,
            o.failure_times_ms,
            MAX_FAILURE_TIMES,
        );
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        extend_capped(&mut self.error_examples, o.error_examples, MAX_EXAMPLES);
        self.handle_lost += o.handle_lost;
        self.refusals += o.refusals;
        extend_capped(&mut self.refusal_examples, o.refusal_examples, MAX_EXAMPLES);
        self.other_connect_errors += o.other_connect_errors;
        self.connects += o.connects;
        self.latencies_us.extend(o.latencies_us);
    }

    fn error(&mut self, what: String, e: &ErrorBody) {
        *self.errors.entry(e.code).or_default() += 1;
        if self.error_examples.len() < MAX_EXAMPLES {
            self.error_examples
                .push(format!("{} ms {what}: {e}", now_ms()));
        }
    }

    fn wrong(&mut self, what: String) {
        self.wrong += 1;
        if self.wrong_examples.len() < MAX_EXAMPLES {
            self.wrong_examples.push(what);
        }
    }
}

fn extend_capped<T>(into: &mut Vec<T>, from: Vec<T>, cap: usize) {
    let room = cap.saturating_sub(into.len());
    into.extend(from.into_iter().take(room));
}

struct Handle {
    id: String,
    file: usize,
    /// The connection generation it was opened in.
    generation: u64,
}

struct Worker {
    opts: Arc<Options>,
    tree: Arc<Tree>,
    rng: Rng,
    conn: Option<Conn>,
    /// Bumped on every lost connection: handles of older generations may
    /// have died with the process.
    generation: u64,
    handles: Vec<Handle>,
    stats: Stats,
}

enum Outcome {
    Answer(Response),
    /// Counted already; the loop moves on.
    Gone,
}

impl Worker {
    fn run(mut self, deadline: Instant) -> Stats {
        while Instant::now() < deadline {
            if self.conn.is_none() && !self.connect() {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            if self.rng.below(100) < 70 {
                self.read();
            } else {
                self.list();
            }
        }
        // Give the handles back, as a client that is done does: what fs
        // holds afterwards is then its own, not open files of ours.
        while self.conn.is_some() && !self.handles.is_empty() {
            let last = self.handles.len() - 1;
            self.close(last);
        }
        self.stats
    }

    fn connect(&mut self) -> bool {
        match Conn::connect(&self.opts.socket, self.opts.timeout) {
            Ok(c) => {
                self.conn = Some(c);
                self.stats.connects += 1;
                true
            }
            Err(ConnectError::Refused(e)) => {
                self.stats.refusals += 1;
                if self.stats.refusal_examples.len() < MAX_EXAMPLES {
                    self.stats
                        .refusal_examples
                        .push(format!("{} ms: {e}", now_ms()));
                }
                false
            }
            Err(ConnectError::Other(_)) => {
                self.stats.other_connect_errors += 1;
                false
            }
        }
    }

    /// One request on the current connection. A broken connection is
    /// counted as a failure, dropped, and `Gone` returned; a garbled reply
    /// is a wrong answer (and the connection is dropped too: its framing
    /// can no longer be trusted).
    fn call(&mut self, method: &'static str, params: Value) -> Outcome {
        let Some(conn) = self.conn.as_mut() else {
            return Outcome::Gone;
        };
        let t0 = Instant::now();
        let r = conn.call(method, Some(&self.opts.token), &params);
        let us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
        match r {
            Ok(resp) => {
                self.stats.latencies_us.push(us);
                Outcome::Answer(resp)
            }
            Err(CallError::Garbled(m)) => {
                self.stats.wrong(format!("{method}: {m}"));
                self.lose_connection();
                Outcome::Gone
            }
            Err(e) => {
                *self.stats.failures.entry(e.kind()).or_default() += 1;
                if self.stats.failure_times_ms.len() < MAX_FAILURE_TIMES {
                    self.stats.failure_times_ms.push(now_ms());
                }
                if self.stats.failure_examples.len() < MAX_EXAMPLES {
                    self.stats
                        .failure_examples
                        .push(format!("{} ms {method}: {e}", now_ms()));
                }
                self.lose_connection();
                Outcome::Gone
            }
        }
    }

    fn lose_connection(&mut self) {
        self.conn = None;
        self.generation += 1;
    }

    fn ok(&mut self, method: &'static str) {
        self.stats.ok += 1;
        *self.stats.ok_by_method.entry(method).or_default() += 1;
    }

    fn read(&mut self) {
        // Mostly files it has open already (a reader reads a file in
        // several calls), sometimes another one (open, and close one to
        // stay within MAX_HANDLES).
        let file = if !self.handles.is_empty() && self.rng.below(100) < 80 {
            self.handles[self.rng.below(self.handles.len() as u64) as usize].file
        } else {
            self.rng.below(self.tree.files.len() as u64) as usize
        };
        let h = match self.handles.iter().position(|h| h.file == file) {
            Some(i) => i,
            None => {
                if self.handles.len() >= MAX_HANDLES {
                    let victim = self.rng.below(self.handles.len() as u64) as usize;
                    self.close(victim);
                    if self.conn.is_none() {
                        return;
                    }
                }
                match self.open(file) {
                    Some(i) => i,
                    None => return,
                }
            }
        };
        let tree = Arc::clone(&self.tree);
        let f = &tree.files[file];
        let len = f.content.len() as u64;
        let offset = self.rng.below(len + 1);
        let size = match self.rng.below(10) {
            0 => 1 + self.rng.below(131_072),
            1 => 4096,
            _ => 1 + self.rng.below(16_384),
        };
        let handle = self.handles[h].id.clone();
        let generation = self.handles[h].generation;
        let params = json!({"handle": handle, "offset": offset, "size": size});
        let Outcome::Answer(resp) = self.call("fs.read", params) else {
            return;
        };
        match resp.into_result() {
            Ok(result) => match check_read(f, offset, size, &result) {
                Ok(()) => self.ok("fs.read"),
                Err(m) => self.stats.wrong(format!("fs.read {}: {m}", f.path)),
            },
            Err(e) if e.code == 4 && generation < self.generation => {
                // Opened before a lost connection: died with that process.
                self.stats.handle_lost += 1;
                self.handles.remove(h);
            }
            Err(e) => {
                let what = format!(
                    "fs.read {} (handle of generation {generation}, now {})",
                    f.path, self.generation
                );
                self.stats.error(what, &e);
                self.handles.remove(h);
            }
        }
    }

    /// Opens `file`; the index of its handle, or `None` (counted).
    fn open(&mut self, file: usize) -> Option<usize> {
        let path = self.tree.files[file].path.clone();
        let Outcome::Answer(resp) = self.call("fs.open", json!({ "path": path })) else {
            return None;
        };
        match resp.into_result() {
            Ok(result) => match result.get("handle").and_then(Value::as_str) {
                Some(id) => {
                    self.ok("fs.open");
                    self.handles.push(Handle {
                        id: id.to_string(),
                        file,
                        generation: self.generation,
                    });
                    Some(self.handles.len() - 1)
                }
                None => {
                    self.stats
                        .wrong(format!("fs.open {path}: no handle in {result}"));
                    None
                }
            },
            Err(e) => {
                self.stats.error(format!("fs.open {path}"), &e);
                None
            }
        }
    }

    fn close(&mut self, i: usize) {
        let h = self.handles.remove(i);
        let Outcome::Answer(resp) = self.call("fs.close", json!({ "handle": h.id })) else {
            return;
        };
        match resp.into_result() {
            Ok(result) if result.get("status").and_then(Value::as_str) == Some("closed") => {
                self.ok("fs.close")
            }
            Ok(result) => self.stats.wrong(format!("fs.close: {result}")),
            Err(e) if e.code == 4 && h.generation < self.generation => self.stats.handle_lost += 1,
            Err(e) => self.stats.error("fs.close".into(), &e),
        }
    }

    fn list(&mut self) {
        let tree = Arc::clone(&self.tree);
        let d = &tree.dirs[self.rng.below(tree.dirs.len() as u64) as usize];
        let Outcome::Answer(resp) = self.call("fs.list", json!({ "path": d.path })) else {
            return;
        };
        match resp.into_result() {
            Ok(result) => {
                let want: Vec<Value> = d
                    .entries
                    .iter()
                    .map(|(n, is_dir, size)| json!({"name": n, "is_dir": is_dir, "size": size}))
                    .collect();
                if result.get("entries") == Some(&Value::Array(want))
                    && result.get("truncated").is_none()
                {
                    self.ok("fs.list");
                } else {
                    self.stats
                        .wrong(format!("fs.list {}: unexpected listing {result}", d.path));
                }
            }
            Err(e) => self.stats.error(format!("fs.list {}", d.path), &e),
        }
    }
}

/// Checks an `fs.read` result against the file's bytes.
fn check_read(f: &KnownFile, offset: u64, size: u64, result: &Value) -> Result<(), String> {
    let len = f.content.len() as u64;
    let start = offset.min(len) as usize;
    let end = offset.saturating_add(size).min(len) as usize;
    let want = &f.content[start..end];
    let want_eof = len.saturating_sub(offset) <= size;
    let got = match (
        result.get("data").and_then(Value::as_str),
        result.get("data_b64").and_then(Value::as_str),
    ) {
        (Some(d), None) => d.as_bytes().to_vec(),
        (None, Some(b)) => STANDARD
            .decode(b)
            .map_err(|e| format!("data_b64 is not base64: {e}"))?,
        _ => return Err(format!("not exactly one of data / data_b64: {result}")),
    };
    if got != want {
        return Err(format!(
            "offset {offset} size {size}: {} bytes differ from the file's {} bytes",
            got.len(),
            want.len()
        ));
    }
    if result.get("bytes_read").and_then(Value::as_u64) != Some(want.len() as u64) {
        return Err(format!(
            "offset {offset} size {size}: bytes_read {:?}, want {}",
            result.get("bytes_read"),
            want.len()
        ));
    }
    if result.get("eof").and_then(Value::as_bool) != Some(want_eof) {
        return Err(format!(
            "offset {offset} size {size} of {len}: eof {:?}, want {want_eof}",
            result.get("eof")
        ));
    }
    Ok(())
}

/// Runs the load and returns the report.
pub fn run(opts: Options, tree: Tree) -> Value {
    let opts = Arc::new(opts);
    let tree = Arc::new(tree);
    let started_ms = now_ms();
    let t0 = Instant::now();
    let deadline = t0 + opts.duration;
    let workers: Vec<_> = (0..opts.conns)
        .map(|i| {
            let w = Worker {
                opts: Arc::clone(&opts),
                tree: Arc::clone(&tree),
                rng: Rng::new(opts.seed.wrapping_add(i as u64 * 7919)),
                conn: None,
                generation: 0,
                handles: Vec::new(),
                stats: Stats::default(),
            };
            std::thread::Builder::new()
                .name(format!("conn-{i}"))
                .spawn(move || w.run(deadline))
                .expect("spawn a connection thread")
        })
        .collect();
    let mut total = Stats::default();
    for w in workers {
        total.merge(w.join().expect("connection thread panicked"));
    }
    let secs = t0.elapsed().as_secs_f64();
    report(&opts, &tree, total, secs, started_ms)
}

fn report(opts: &Options, tree: &Tree, mut s: Stats, secs: f64, started_ms: u64) -> Value {
    s.latencies_us.sort_unstable();
    s.failure_times_ms.sort_unstable();
    let pct = |p: f64| -> f64 {
        if s.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((s.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        s.latencies_us[i] as f64 / 1000.0
    };
    let failures_total: u64 = s.failures.values().sum();
    let errors_total: u64 = s.errors.values().sum();
    let answered = s.ok + s.wrong + errors_total + s.handle_lost;
    json!({
        "mode": "mixed",
        "conns": opts.conns,
        "duration_s": (secs * 100.0).round() / 100.0,
        "started_ms": started_ms,
        "ended_ms": now_ms(),
        "tree": {"files": tree.files.len(), "dirs": tree.dirs.len(), "bytes": tree.bytes()},
        "requests": answered + failures_total,
        "ok": s.ok,
        "ok_by_method": s.ok_by_method,
        "ok_per_s": (s.ok as f64 / secs).round(),
        "wrong": s.wrong,
        "wrong_examples": s.wrong_examples,
        "errors_total": errors_total,
        "errors_by_code": s.errors.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "error_examples": s.error_examples,
        "failures_total": failures_total,
        "failures": s.failures,
        "failure_examples": s.failure_examples,
        "handle_lost": s.handle_lost,
        "refusals": s.refusals,
        "refusal_examples": s.refusal_examples,
        "other_connect_errors": s.other_connect_errors,
        "connects": s.connects,
        "latency_ms": {
            "p50": pct(0.50), "p99": pct(0.99), "p999": pct(0.999),
            "max": s.latencies_us.last().map_or(0.0, |&u| u as f64 / 1000.0),
        },
        "failure_times_ms": s.failure_times_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &[u8]) -> KnownFile {
        KnownFile {
            path: "/x".into(),
            content: content.to_vec(),
        }
    }

    #[test]
    fn read_checks_bytes_count_and_eof() {
        let f = file(b"hello strata");
        let ok = json!({"bytes_read": 6, "eof": true, "data": "strata"});
        assert!(check_read(&f, 6, 100, &ok).is_ok());
        assert!(check_read(&f, 6, 6, &ok).is_ok());
        let not_eof = json!({"bytes_read": 5, "eof": false, "data": "hello"});
        assert!(check_read(&f, 0, 5, &not_eof).is_ok());
        // Wrong bytes, wrong count, wrong eof, both encodings.
        assert!(check_read(
            &f,
            0,
            5,
            &json!({"bytes_read": 5, "eof": false, "data": "hellO"})
        )
        .is_err());
        assert!(check_read(
            &f,
            0,
            5,
            &json!({"bytes_read": 4, "eof": false, "data": "hello"})
        )
        .is_err());
        assert!(check_read(
            &f,
            0,
            5,
            &json!({"bytes_read": 5, "eof": true, "data": "hello"})
        )
        .is_err());
        assert!(check_read(
            &f,
            0,
            5,
            &json!({"bytes_read": 5, "eof": false, "data": "hello", "data_b64": "aGVsbG8="})
        )
        .is_err());
        let b64 = json!({"bytes_read": 5, "eof": false, "data_b64": "aGVsbG8="});
        assert!(check_read(&f, 0, 5, &b64).is_ok());
        // Past the end: nothing, eof.
        let end = json!({"bytes_read": 0, "eof": true, "data": ""});
        assert!(check_read(&f, 12, 10, &end).is_ok());
    }
}
