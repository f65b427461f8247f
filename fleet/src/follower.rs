//! fs's side of a fleet: follow `/strata/<fleet>/` in etcd, keep the
//! endorsed node keys and hand every revocation to fs, and know how fresh
//! that knowledge is.
//!
//! **No gap.** The first session reads the whole prefix at one revision,
//! then watches from the next one; a later session (after a lost
//! connection) resumes the watch from the revision after the last one it
//! applied. If etcd has compacted that far, the session reads the whole
//! prefix again: revocation records live until their tokens expire (their
//! leases outlast them), so the current records hold every revocation that
//! still matters.
//!
//! **Freshness.** A watch alone cannot tell a quiet fleet from a member cut
//! off from its quorum, which may still answer with old data. So every
//! [`HEARTBEAT`] a linearizable read (which needs a quorum) gives the
//! cluster's current revision R at time t; once the watch has delivered
//! everything up to R (its events, or a progress notification asked for
//! with `request_progress`), this node knew everything etcd knew at t.
//! Fleet tokens are served only while the latest such t is less than
//! `maxStaleness` ago ([`FleetView::check_fresh`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use serde::Serialize;
use strata_shared::capability::{self, VerificationCache, Verifier};
use strata_shared::fleet::verify_endorsement;
use strata_shared::ids::parse_cap_id;
use tokio::sync::mpsc;

use crate::config::FleetConfig;
use crate::store::{self, KeyRecord, RevocationRecord, MAX_RECORD, REQUEST_TIMEOUT};

/// How often the follower checks that it is in step with a quorum.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// Longest wait before reconnecting after a failed session.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Called with each revoked capability id and the Unix time its token
/// expires.
pub type RevocationSink = Arc<dyn Fn(u128, i64) + Send + Sync>;

/// A node key of the fleet, endorsed by the root, with the tokens verified
/// with it.
#[derive(Clone)]
pub struct NodeKey {
    pub node_id: String,
    pub tokens: Arc<VerificationCache>,
    /// The endorsement's `exp` (Unix seconds), if it has one.
    pub expires: Option<i64>,
}

/// What this node knows of its fleet, shared between the follower task and
/// fs's request path.
pub struct FleetView {
    config: FleetConfig,
    /// Endorsed keys by key id.
    keys: RwLock<HashMap<String, NodeKey>>,
    progress: Mutex<Progress>,
    cache_entries: usize,
}

#[derive(Default)]
struct Progress {
    /// The whole prefix has been read once.
    loaded: bool,
    /// When this node last knew everything a quorum knew.
    heard: Option<Instant>,
    /// The etcd revision applied last.
    revision: i64,
    revocations: u64,
    error: Option<String>,
}

/// `fs.health`'s `fleet` object and `strata-ctl fleet status`'s answer.
#[derive(Debug, Serialize)]
pub struct FleetStatus {
    pub name: String,
    /// `fresh` (fleet tokens served), `stale` (refused: etcd not heard from
    /// for too long), `syncing` (refused: not yet read once).
    pub state: &'static str,
    pub since_heard_ms: Option<u64>,
    pub max_staleness_ms: u64,
    pub revision: i64,
    /// Node ids whose endorsed keys are held.
    pub nodes: Vec<String>,
    /// Revocation records applied since fs started.
    pub revocations: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl FleetView {
    /// A view that knows nothing yet: fleet tokens are refused until the
    /// follower has read etcd once.
    pub fn new(config: FleetConfig, cache_entries: usize) -> Self {
        Self {
            config,
            keys: RwLock::new(HashMap::new()),
            progress: Mutex::new(Progress::default()),
            cache_entries,
        }
    }

    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// The endorsed key with id `kid`, if its endorsement is valid at `now`.
    pub fn node_key(&self, kid: &str, now: i64) -> Option<NodeKey> {
        let keys = self.keys.read().expect("fleet keys lock");
        keys.get(kid)
            .filter(|k| k.expires.is_none_or(|exp| exp > now))
            .cloned()
    }

    /// Whether fleet tokens may be served now.
    ///
    /// # Errors
    /// Why not, for a code-6 answer.
    pub fn check_fresh(&self) -> Result<(), String> {
        let p = self.progress.lock().expect("fleet progress lock");
        let max = self.config.max_staleness;
        let why = p.error.as_deref().unwrap_or("no answer yet");
        match p.heard {
            Some(at) if p.loaded && at.elapsed() <= max => Ok(()),
            Some(at) => Err(format!(
                "fleet {}: no word from etcd for {:.1} s (maxStaleness {} s), so a revocation \
                 may be missing here: fleet tokens are refused until it is back ({why}); \
                 see `strata-ctl fleet status`",
                self.config.name,
                at.elapsed().as_secs_f64(),
                max.as_secs()
            )),
            None => Err(format!(
                "fleet {}: not yet in step with etcd ({why}): fleet tokens are refused until \
                 it is; see `strata-ctl fleet status`",
                self.config.name
            )),
        }
    }

    /// The state, for `fs.health`.
    pub fn status(&self) -> FleetStatus {
        let fresh = self.check_fresh().is_ok();
        let p = self.progress.lock().expect("fleet progress lock");
        let mut nodes: Vec<String> = self
            .keys
            .read()
            .expect("fleet keys lock")
            .values()
            .map(|k| k.node_id.clone())
            .collect();
        nodes.sort();
        FleetStatus {
            name: self.config.name.clone(),
            state: match (fresh, p.heard) {
                (true, _) => "fresh",
                (false, Some(_)) => "stale",
                (false, None) => "syncing",
            },
            since_heard_ms: p.heard.map(|at| at.elapsed().as_millis() as u64),
            max_staleness_ms: self.config.max_staleness.as_millis() as u64,
            revision: p.revision,
            nodes,
            revocations: p.revocations,
            error: p.error.clone(),
        }
    }

    fn heard(&self, at: Instant) {
        let mut p = self.progress.lock().expect("fleet progress lock");
        if p.heard.is_none_or(|h| h < at) {
            if p.heard.is_some() && p.error.is_some() {
                tracing::info!(fleet = %self.config.name, "in step with etcd again");
            }
            p.heard = Some(at);
            p.error = None;
        }
    }

    fn failed(&self, why: String) {
        self.progress.lock().expect("fleet progress lock").error = Some(why);
    }

    fn applied(&self, revision: i64) {
        let mut p = self.progress.lock().expect("fleet progress lock");
        p.revision = p.revision.max(revision);
    }

    /// Applies one record put in etcd. Anything that does not verify is
    /// ignored and logged: whoever writes to etcd may remove keys (a denial
    /// of service) but never add one.
    fn put(&self, key: &[u8], value: &[u8], sink: &RevocationSink) {
        let key = String::from_utf8_lossy(key).into_owned();
        if value.len() > MAX_RECORD {
            tracing::warn!(fleet = %self.config.name, "ignoring {key}: larger than {MAX_RECORD} bytes");
            return;
        }
        if let Some(node) = key.strip_prefix(&self.config.keys_prefix()) {
            match self.endorsed(node, value) {
                Ok(k) => {
                    let mut keys = self.keys.write().expect("fleet keys lock");
                    keys.retain(|_, old| old.node_id != node);
                    let kid = k.tokens.verifier().kid().to_string();
                    tracing::info!(fleet = %self.config.name, node, kid, "endorsed node key");
                    keys.insert(kid, k);
                }
                Err(why) => {
                    tracing::warn!(
                        fleet = %self.config.name,
                        "ignoring the node key at {key}: not endorsed by the fleet's root key: {why}"
                    );
                    self.remove_node(node);
                }
            }
        } else if let Some(cap) = key.strip_prefix(&self.config.revoked_prefix()) {
            match parse_revocation(cap, value) {
                Ok((id, exp)) => {
                    sink(id, exp);
                    self.progress
                        .lock()
                        .expect("fleet progress lock")
                        .revocations += 1;
                }
                Err(why) => tracing::warn!(fleet = %self.config.name, "ignoring {key}: {why}"),
            }
        }
    }

    fn delete(&self, key: &[u8]) {
        let key = String::from_utf8_lossy(key);
        // A revocation's record goes when its lease ends, after its token
        // expired: fs keeps its own entry until then anyway.
        if let Some(node) = key.strip_prefix(&self.config.keys_prefix()) {
            tracing::warn!(fleet = %self.config.name, node, "node key removed from etcd");
            self.remove_node(node);
        }
    }

    fn remove_node(&self, node: &str) {
        self.keys
            .write()
            .expect("fleet keys lock")
            .retain(|_, k| k.node_id != node);
    }

    fn endorsed(&self, node: &str, value: &[u8]) -> Result<NodeKey, String> {
        let record: KeyRecord =
            serde_json::from_slice(value).map_err(|e| format!("not a key record: {e}"))?;
        let e = verify_endorsement(
            &self.config.root,
            &self.config.name,
            &record.endorsement,
            capability::now(),
        )
        .map_err(|e| e.to_string())?;
        if e.node_id != node || record.node_id != node {
            return Err(format!(
                "the endorsement is for node {:?}, published as {node:?}",
                e.node_id
            ));
        }
        if record.kid != e.kid
            || record.public_key != strata_shared::fleet::encode_public_key(&e.public_key)
        {
            return Err("the record's key is not the one the endorsement names".into());
        }
        Ok(NodeKey {
            node_id: e.node_id,
            tokens: Arc::new(VerificationCache::new(
                Verifier::new(e.public_key),
                self.cache_entries,
            )),
            expires: e.expires,
        })
    }
}

fn parse_revocation(cap: &str, value: &[u8]) -> Result<(u128, i64), String> {
    let r: RevocationRecord =
        serde_json::from_slice(value).map_err(|e| format!("not a revocation record: {e}"))?;
    if r.cap_id != cap {
        return Err(format!("record names {:?}, stored as {cap:?}", r.cap_id));
    }
    let id = parse_cap_id(cap).ok_or("not a capability id")?;
    Ok((id, r.exp))
}

/// Follows the fleet in etcd for as long as fs runs, reconnecting after
/// every failure. Each failure is kept for [`FleetView::status`].
pub async fn follow(view: Arc<FleetView>, sink: RevocationSink) {
    let mut resume = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        let why = session(&view, &sink, &mut resume)
            .await
            .expect_err("a session ends only on failure");
        tracing::warn!(fleet = %view.config.name, "etcd: {why}");
        view.failed(why);
        if started.elapsed() > MAX_BACKOFF {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection: read (or resume), watch, and keep checking freshness.
/// Returns only on failure.
async fn session(
    view: &Arc<FleetView>,
    sink: &RevocationSink,
    resume: &mut Option<i64>,
) -> Result<(), String> {
    let config = &view.config;
    let mut client = store::connect(config).await?;
    let start = match *resume {
        Some(revision) => revision + 1,
        None => load(view, sink, &mut client).await? + 1,
    };
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(start)
        .with_progress_notify();
    let (mut watcher, mut stream) = tokio::time::timeout(
        REQUEST_TIMEOUT,
        client.watch(config.prefix(), Some(options)),
    )
    .await
    .map_err(|_| "watch: no answer".to_string())?
    .map_err(|e| format!("watch: {e}"))?;
    // The linearizable reads run on their own task, so that a slow or cut
    // off member never holds up the events.
    let (checks_tx, mut checks) = mpsc::channel::<Result<(Instant, i64), String>>(4);
    let heartbeat = tokio::spawn(quorum_reads(client.clone(), config.prefix(), checks_tx));
    let _abort = AbortOnDrop(heartbeat);
    // Everything up to `delivered` has reached this node.
    let mut delivered = start - 1;
    let mut waiting: Option<(Instant, i64)> = None;
    loop {
        tokio::select! {
            message = stream.message() => {
                let resp = message
                    .map_err(|e| format!("watch: {e}"))?
                    .ok_or("etcd ended the watch")?;
                if resp.canceled() {
                    if resp.compact_revision() > 0 {
                        // Compacted past where we were: read it all again.
                        *resume = None;
                        return Err(format!(
                            "history compacted to revision {} (needed {start}); reading the \
                             fleet's records again",
                            resp.compact_revision()
                        ));
                    }
                    return Err(format!("etcd cancelled the watch: {}", resp.cancel_reason()));
                }
                for event in resp.events() {
                    let Some(kv) = event.kv() else { continue };
                    match event.event_type() {
                        EventType::Put => view.put(kv.key(), kv.value(), sink),
                        EventType::Delete => view.delete(kv.key()),
                    }
                    delivered = delivered.max(kv.mod_revision());
                }
                if resp.events().is_empty() && !resp.created() {
                    // A progress notification: every event up to the
                    // header's revision has been sent.
                    if let Some(h) = resp.header() {
                        delivered = delivered.max(h.revision());
                    }
                }
                *resume = Some(delivered);
                view.applied(delivered);
            }
            check = checks.recv() => {
                let (at, revision) = check.ok_or("quorum reads stopped")??;
                if waiting.is_none_or(|(_, r)| r < revision) {
                    waiting = Some((at, revision));
                }
                if revision > delivered {
                    watcher.request_progress().await.map_err(|e| format!("watch: {e}"))?;
                }
            }
        }
        if let Some((at, revision)) = waiting {
            if revision <= delivered {
                view.heard(at);
                waiting = None;
            } else if at.elapsed() > config.max_staleness {
                return Err(format!(
                    "the watch is at revision {delivered}, a quorum at {revision}: it stopped \
                     delivering; resuming it"
                ));
            }
        }
    }
}

/// Reads the fleet's records at one revision, replacing the keys and
/// handing on every revocation. Returns that revision.
async fn load(
    view: &Arc<FleetView>,
    sink: &RevocationSink,
    client: &mut Client,
) -> Result<i64, String> {
    let at = Instant::now();
    let resp = client
        .get(view.config.prefix(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| format!("reading {}: {e}", view.config.prefix()))?;
    view.keys.write().expect("fleet keys lock").clear();
    for kv in resp.kvs() {
        view.put(kv.key(), kv.value(), sink);
    }
    let revision = resp.header().map_or(0, |h| h.revision());
    view.applied(revision);
    view.progress.lock().expect("fleet progress lock").loaded = true;
    view.heard(at);
    tracing::info!(
        fleet = %view.config.name,
        revision,
        nodes = view.keys.read().expect("fleet keys lock").len(),
        "read the fleet's records"
    );
    Ok(revision)
}

/// Every [`HEARTBEAT`], a linearizable (quorum) read of the fleet's
/// prefix, counting only: the cluster's revision then, and when it was
/// asked.
async fn quorum_reads(
    mut client: Client,
    prefix: String,
    out: mpsc::Sender<Result<(Instant, i64), String>>,
) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let at = Instant::now();
        let read = client
            .get(
                prefix.as_str(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await;
        let result = match read {
            Ok(resp) => Ok((at, resp.header().map_or(0, |h| h.revision()))),
            Err(e) => Err(format!("quorum read: {e}")),
        };
        if out.send(result).await.is_err() {
            return;
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;
    use strata_shared::fleet::{encode_public_key, endorse};
    use strata_shared::token::{key_id, keypair_from_seed};

    fn view() -> (FleetView, ed25519_compact::KeyPair) {
        let root = keypair_from_seed(&[7; 32]);
        let config = FleetConfig {
            name: "prod".into(),
            node_id: "node-a".into(),
            root: root.pk,
            endorsement_file: None,
            endpoints: vec!["http://127.0.0.1:2379".into()],
            tls: Default::default(),
            max_staleness: Duration::from_millis(200),
        };
        (FleetView::new(config, 16), root)
    }

    fn record(root: &ed25519_compact::SecretKey, node: &str, seed: u8, fleet: &str) -> Vec<u8> {
        let pk = keypair_from_seed(&[seed; 32]).pk;
        serde_json::to_vec(&KeyRecord {
            node_id: node.into(),
            kid: key_id(&pk),
            public_key: encode_public_key(&pk),
            endorsement: endorse(root, fleet, node, &pk, 0, None).unwrap(),
        })
        .unwrap()
    }

    type Seen = Arc<StdMutex<Vec<(u128, i64)>>>;

    fn sink() -> (RevocationSink, Seen) {
        let seen = Arc::new(StdMutex::new(Vec::new()));
        let s = seen.clone();
        (
            Arc::new(move |id, exp| s.lock().unwrap().push((id, exp))),
            seen,
        )
    }

    #[test]
    fn only_keys_the_root_endorsed_for_that_node_count() {
        let (v, root) = view();
        let (sink, _) = sink();
        let now = capability::now();
        let kid_b = key_id(&keypair_from_seed(&[2; 32]).pk);
        v.put(
            b"/strata/prod/keys/node-b",
            &record(&root.sk, "node-b", 2, "prod"),
            &sink,
        );
        assert_eq!(v.node_key(&kid_b, now).unwrap().node_id, "node-b");
        // Signed by another root: ignored.
        let other = keypair_from_seed(&[8; 32]);
        let kid_c = key_id(&keypair_from_seed(&[3; 32]).pk);
        v.put(
            b"/strata/prod/keys/node-c",
            &record(&other.sk, "node-c", 3, "prod"),
            &sink,
        );
        assert!(v.node_key(&kid_c, now).is_none());
        // Another fleet's endorsement, or published under another node's
        // name: ignored.
        v.put(
            b"/strata/prod/keys/node-c",
            &record(&root.sk, "node-c", 3, "staging"),
            &sink,
        );
        v.put(
            b"/strata/prod/keys/node-d",
            &record(&root.sk, "node-c", 3, "prod"),
            &sink,
        );
        assert!(v.node_key(&kid_c, now).is_none());
        // Garbage in place of node-b's record takes node-b's key away
        // (whoever writes etcd can deny, never grant).
        v.put(b"/strata/prod/keys/node-b", b"{}", &sink);
        assert!(v.node_key(&kid_b, now).is_none());
        v.put(
            b"/strata/prod/keys/node-b",
            &record(&root.sk, "node-b", 2, "prod"),
            &sink,
        );
        v.delete(b"/strata/prod/keys/node-b");
        assert!(v.node_key(&kid_b, now).is_none());
        assert!(v.status().nodes.is_empty());
    }

    #[test]
    fn revocations_reach_the_sink_and_bad_ones_do_not() {
        let (v, _) = view();
        let (sink, seen) = sink();
        let cap = "00112233445566778899aabbccddeeff";
        let good = format!(r#"{{"cap_id":"{cap}","exp":99,"by":"node-b"}}"#);
        v.put(
            format!("/strata/prod/revoked/{cap}").as_bytes(),
            good.as_bytes(),
            &sink,
        );
        // Stored under another id, or not a record: ignored.
        v.put(
            b"/strata/prod/revoked/ffffffffffffffffffffffffffffffff",
            good.as_bytes(),
            &sink,
        );
        v.put(
            format!("/strata/prod/revoked/{cap}").as_bytes(),
            b"[]",
            &sink,
        );
        let big = vec![b' '; MAX_RECORD + 1];
        v.put(
            format!("/strata/prod/revoked/{cap}").as_bytes(),
            &big,
            &sink,
        );
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(parse_cap_id(cap).unwrap(), 99)]
        );
        assert_eq!(v.status().revocations, 1);
    }

    #[test]
    fn fresh_only_between_a_confirmation_and_max_staleness() {
        let (v, _) = view();
        assert_eq!(v.status().state, "syncing");
        assert!(v.check_fresh().unwrap_err().contains("not yet in step"));
        v.progress.lock().unwrap().loaded = true;
        v.heard(Instant::now());
        assert_eq!(v.status().state, "fresh");
        assert!(v.check_fresh().is_ok());
        v.failed("quorum read: timed out".into());
        std::thread::sleep(Duration::from_millis(250));
        let why = v.check_fresh().unwrap_err();
        assert!(
            why.contains("fleet prod: no word from etcd") && why.contains("timed out"),
            "{why}"
        );
        assert_eq!(v.status().state, "stale");
        // An older confirmation arriving late changes nothing.
        v.heard(Instant::now() - Duration::from_secs(1));
        assert_eq!(v.status().state, "stale");
        v.heard(Instant::now());
        assert_eq!(v.status().state, "fresh");
        assert!(v.status().error.is_none());
    }
}
