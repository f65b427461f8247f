//! fs's side of a fleet: follow `/strata/<fleet>/` in etcd, keep the
//! endorsed node keys and hand every revocation to fs, and know how fresh
//! that knowledge is.
//!
//! Two paths, so that neither has to be trusted alone:
//!
//! - **The watch** delivers each change within milliseconds. It starts
//!   from the revision after the last one applied: the first session reads
//!   the whole prefix at one revision first, and a later one (after a lost
//!   connection) resumes where the last stopped. If etcd compacted that
//!   far, the session reads the whole prefix again. Revocation records live
//!   until their tokens expire, so the records then present hold every
//!   revocation that still matters.
//! - **The check**, every [`HEARTBEAT`]: a linearizable read (served only
//!   through a quorum, so a member cut off from the others cannot answer it)
//!   of every revocation record modified after the last revision applied,
//!   and of all node key records, at one revision R. Once applied, this node
//!   knew at the time of the read everything etcd had up to R, whatever the
//!   watch delivered. etcd's progress notifications are not used for this:
//!   in etcd 3.4 they may arrive before the events they should follow.
//!
//! Fleet tokens are served only while the last check is less than
//! `maxStaleness` old ([`FleetView::check_fresh`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, KeyValue, WatchOptions};
use serde::Serialize;
use strata_shared::capability::{self, VerificationCache, Verifier};
use strata_shared::fleet::verify_endorsement;
use strata_shared::ids::parse_cap_id;
use tokio::sync::mpsc;

use crate::config::FleetConfig;
use crate::store::{self, read_prefix, KeyRecord, RevocationRecord, MAX_RECORD, REQUEST_TIMEOUT};

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
    /// The etcd revision of the record it came from: an unchanged record is
    /// not verified again, and its tokens stay cached.
    mod_revision: i64,
}

/// What this node knows of its fleet, shared between the follower task and
/// fs's request path.
pub struct FleetView {
    config: FleetConfig,
    /// Endorsed keys by key id.
    keys: RwLock<HashMap<String, NodeKey>>,
    progress: Mutex<Progress>,
    cache_entries: usize,
    /// Records refused, by etcd key, with their revision: each is logged
    /// once, not at every check.
    refused: Mutex<HashMap<String, i64>>,
    /// Set once the fleet's records have been read the first time.
    loaded: tokio::sync::watch::Sender<bool>,
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
            refused: Mutex::new(HashMap::new()),
            loaded: tokio::sync::watch::Sender::new(false),
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

    /// Waits until the fleet's records have been read once, at most
    /// `within`: fs, socket-activated by a request with a fleet token,
    /// answers it after its first read rather than refuse it.
    pub async fn wait_loaded(&self, within: Duration) {
        let mut loaded = self.loaded.subscribe();
        let _ = tokio::time::timeout(within, loaded.wait_for(|l| *l)).await;
    }

    /// Whether the fleet's records have been read once.
    pub fn is_loaded(&self) -> bool {
        *self.loaded.borrow()
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

    fn applied(&self, revision: i64) {
        let mut p = self.progress.lock().expect("fleet progress lock");
        p.revision = p.revision.max(revision);
    }

    /// Records a failure of the follower, for [`Self::status`].
    pub fn failed(&self, why: String) {
        self.progress.lock().expect("fleet progress lock").error = Some(why);
    }

    /// Applies one record put in etcd (from the watch). Anything that does
    /// not verify is ignored and logged: whoever writes to etcd may remove
    /// keys (a denial of service) but never add one.
    fn put(&self, kv: Record<'_>, sink: &RevocationSink) {
        if let Some(node) = kv.key.strip_prefix(&self.config.keys_prefix()) {
            let mut keys = self.keys.write().expect("fleet keys lock");
            keys.retain(|_, old| old.node_id != node);
            if let Some(k) = self.endorsed(node, &kv) {
                keys.insert(k.tokens.verifier().kid().to_string(), k);
            }
        } else if let Some(cap) = kv.key.strip_prefix(&self.config.revoked_prefix()) {
            match parse_revocation(cap, kv.value) {
                Ok((id, exp)) => {
                    sink(id, exp);
                    self.progress
                        .lock()
                        .expect("fleet progress lock")
                        .revocations += 1;
                }
                Err(why) => self.refuse(&kv, &why),
            }
        }
    }

    /// Replaces the node keys with the endorsed ones among `records`, all
    /// of `keys/` at one revision: a key removed from etcd goes.
    fn replace_keys<'a>(&self, records: impl IntoIterator<Item = Record<'a>>) {
        let old = self.keys.read().expect("fleet keys lock").clone();
        let mut keys = HashMap::new();
        for kv in records {
            let Some(node) = kv.key.strip_prefix(&self.config.keys_prefix()) else {
                continue;
            };
            let unchanged = old
                .values()
                .find(|k| k.node_id == node && k.mod_revision == kv.mod_revision);
            if let Some(k) = unchanged.cloned().or_else(|| self.endorsed(node, &kv)) {
                keys.insert(k.tokens.verifier().kid().to_string(), k);
            }
        }
        for gone in old
            .values()
            .filter(|k| !keys.values().any(|n| n.node_id == k.node_id))
        {
            tracing::warn!(fleet = %self.config.name, node = %gone.node_id, "node key no longer in etcd");
        }
        *self.keys.write().expect("fleet keys lock") = keys;
    }

    fn delete(&self, key: &str) {
        // A revocation's record goes when its lease ends, after its token
        // expired: fs keeps its own entry until then anyway.
        if let Some(node) = key.strip_prefix(&self.config.keys_prefix()) {
            tracing::warn!(fleet = %self.config.name, node, "node key removed from etcd");
            self.keys
                .write()
                .expect("fleet keys lock")
                .retain(|_, k| k.node_id != node);
        }
    }

    fn refuse(&self, kv: &Record<'_>, why: &str) {
        let mut refused = self.refused.lock().expect("fleet refused lock");
        if refused.len() >= 1024 {
            // Bounded whatever etcd holds; at worst a record is logged again.
            refused.clear();
        }
        if refused.get(kv.key) != Some(&kv.mod_revision) {
            refused.insert(kv.key.to_string(), kv.mod_revision);
            tracing::warn!(fleet = %self.config.name, "ignoring {}: {why}", kv.key);
        }
    }

    /// The node key of `kv`, if the root endorsed it for this node;
    /// otherwise logged (`not endorsed`) and `None`.
    fn endorsed(&self, node: &str, kv: &Record<'_>) -> Option<NodeKey> {
        match self.verify_key(node, kv.value) {
            Ok((node_id, public_key, expires)) => {
                let kid = strata_shared::token::key_id(&public_key);
                tracing::info!(fleet = %self.config.name, node, kid, "endorsed node key");
                self.refused
                    .lock()
                    .expect("fleet refused lock")
                    .remove(kv.key);
                Some(NodeKey {
                    node_id,
                    tokens: Arc::new(VerificationCache::new(
                        Verifier::new(public_key),
                        self.cache_entries,
                    )),
                    expires,
                    mod_revision: kv.mod_revision,
                })
            }
            Err(why) => {
                self.refuse(
                    kv,
                    &format!("the node key is not endorsed by the fleet's root key: {why}"),
                );
                None
            }
        }
    }

    fn verify_key(
        &self,
        node: &str,
        value: &[u8],
    ) -> Result<(String, ed25519_compact::PublicKey, Option<i64>), String> {
        if value.len() > MAX_RECORD {
            return Err(format!("larger than {MAX_RECORD} bytes"));
        }
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
        Ok((e.node_id, e.public_key, e.expires))
    }
}

/// One record as read from etcd.
struct Record<'a> {
    key: &'a str,
    value: &'a [u8],
    mod_revision: i64,
}

impl<'a> Record<'a> {
    fn of(kv: &'a KeyValue) -> Self {
        Self {
            // Keys Strata writes are ASCII; anything else matches no prefix.
            key: std::str::from_utf8(kv.key()).unwrap_or(""),
            value: kv.value(),
            mod_revision: kv.mod_revision(),
        }
    }
}

fn parse_revocation(cap: &str, value: &[u8]) -> Result<(u128, i64), String> {
    if value.len() > MAX_RECORD {
        return Err(format!("larger than {MAX_RECORD} bytes"));
    }
    let r: RevocationRecord =
        serde_json::from_slice(value).map_err(|e| format!("not a revocation record: {e}"))?;
    if r.cap_id != cap {
        return Err(format!("record names {:?}, stored as {cap:?}", r.cap_id));
    }
    let id = parse_cap_id(cap).ok_or("not a capability id")?;
    Ok((id, r.exp))
}

/// Follows the fleet in etcd for as long as fs runs, reconnecting after
/// every failure; each failure is kept for [`FleetView::status`]. A panic in
/// the follower is such a failure too: it starts again, from a full read.
pub async fn follow(view: Arc<FleetView>, sink: RevocationSink) {
    loop {
        let run = tokio::spawn(follow_sessions(view.clone(), sink.clone()));
        if let Err(e) = run.await {
            view.failed(format!(
                "the fleet follower stopped ({e}); starting it again"
            ));
            tokio::time::sleep(MAX_BACKOFF).await;
        }
    }
}

async fn follow_sessions(view: Arc<FleetView>, sink: RevocationSink) {
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

/// What one check read: at `at`, through a quorum, at `revision`.
struct Check {
    at: Instant,
    revision: i64,
    /// Revocation records modified after the revision asked for.
    revocations: Vec<KeyValue>,
    /// Every node key record.
    keys: Vec<KeyValue>,
}

/// Reads the fleet's records through a quorum: revocation records modified
/// after `since`, and all key records, at one revision.
async fn read_fleet(
    client: &mut Client,
    config: &FleetConfig,
    since: i64,
) -> Result<Check, String> {
    let at = Instant::now();
    let (revocations, revision) =
        read_prefix(client, &config.revoked_prefix(), None, since + 1).await?;
    let (keys, _) = read_prefix(client, &config.keys_prefix(), Some(revision), 0).await?;
    Ok(Check {
        at,
        revision,
        revocations,
        keys,
    })
}

/// One connection: read (or resume), then watch and check until something
/// fails.
async fn session(
    view: &Arc<FleetView>,
    sink: &RevocationSink,
    resume: &mut Option<i64>,
) -> Result<(), String> {
    let config = &view.config;
    let mut client = store::connect(config).await?;
    let mut delivered = match *resume {
        Some(revision) => revision,
        None => {
            let check =
                tokio::time::timeout(REQUEST_TIMEOUT * 4, read_fleet(&mut client, config, 0))
                    .await
                    .map_err(|_| "reading the fleet's records: no answer".to_string())??;
            let revision = check.revision;
            let mut applied = 0;
            apply(view, sink, check, &mut applied);
            view.progress.lock().expect("fleet progress lock").loaded = true;
            view.loaded.send_replace(true);
            tracing::info!(
                fleet = %config.name,
                revision,
                nodes = view.keys.read().expect("fleet keys lock").len(),
                "read the fleet's records"
            );
            revision
        }
    };
    *resume = Some(delivered);
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(delivered + 1)
        .with_fragment();
    let (_watcher, mut stream) = tokio::time::timeout(
        REQUEST_TIMEOUT,
        client.watch(config.prefix(), Some(options)),
    )
    .await
    .map_err(|_| "watch: no answer".to_string())?
    .map_err(|e| format!("watch: {e}"))?;
    // The checks run on their own task, so that a slow or cut off member
    // never holds up the watch's events.
    let shared = Arc::new(AtomicI64::new(delivered));
    let (checks_tx, mut checks) = mpsc::channel::<Result<Check, String>>(2);
    let checker = tokio::spawn(check_loop(
        client.clone(),
        config.clone(),
        shared.clone(),
        checks_tx,
    ));
    let _abort = AbortOnDrop(checker);
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
                            "history compacted to revision {} (needed {}); reading the \
                             fleet's records again",
                            resp.compact_revision(),
                            delivered + 1
                        ));
                    }
                    return Err(format!("etcd cancelled the watch: {}", resp.cancel_reason()));
                }
                for event in resp.events() {
                    let Some(kv) = event.kv() else { continue };
                    let record = Record::of(kv);
                    match event.event_type() {
                        EventType::Put => view.put(record, sink),
                        EventType::Delete => view.delete(record.key),
                    }
                    delivered = delivered.max(kv.mod_revision());
                }
            }
            check = checks.recv() => {
                let check = check.ok_or("the checks stopped")??;
                apply(view, sink, check, &mut delivered);
            }
        }
        shared.store(delivered, Ordering::Relaxed);
        *resume = Some(delivered);
        view.applied(delivered);
    }
}

/// Applies a check: its revocations, its keys unless the watch is already
/// past its revision, and then the confirmation.
fn apply(view: &FleetView, sink: &RevocationSink, check: Check, delivered: &mut i64) {
    for kv in &check.revocations {
        view.put(Record::of(kv), sink);
    }
    if check.revision >= *delivered {
        view.replace_keys(check.keys.iter().map(Record::of));
    }
    *delivered = (*delivered).max(check.revision);
    view.applied(*delivered);
    view.heard(check.at);
}

/// Every [`HEARTBEAT`], a check ([`read_fleet`]) from the revision applied
/// so far.
async fn check_loop(
    mut client: Client,
    config: FleetConfig,
    delivered: Arc<AtomicI64>,
    out: mpsc::Sender<Result<Check, String>>,
) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let since = delivered.load(Ordering::Relaxed);
        let check =
            tokio::time::timeout(REQUEST_TIMEOUT * 2, read_fleet(&mut client, &config, since))
                .await
                .unwrap_or_else(|_| Err("check: no answer from etcd".into()));
        if out.send(check).await.is_err() {
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

    fn rec<'a>(key: &'a str, value: &'a [u8]) -> Record<'a> {
        Record {
            key,
            value,
            mod_revision: 1,
        }
    }

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
            rec(
                "/strata/prod/keys/node-b",
                &record(&root.sk, "node-b", 2, "prod"),
            ),
            &sink,
        );
        assert_eq!(v.node_key(&kid_b, now).unwrap().node_id, "node-b");
        // Signed by another root: ignored.
        let other = keypair_from_seed(&[8; 32]);
        let kid_c = key_id(&keypair_from_seed(&[3; 32]).pk);
        v.put(
            rec(
                "/strata/prod/keys/node-c",
                &record(&other.sk, "node-c", 3, "prod"),
            ),
            &sink,
        );
        assert!(v.node_key(&kid_c, now).is_none());
        // Another fleet's endorsement, or published under another node's
        // name: ignored.
        v.put(
            rec(
                "/strata/prod/keys/node-c",
                &record(&root.sk, "node-c", 3, "staging"),
            ),
            &sink,
        );
        v.put(
            rec(
                "/strata/prod/keys/node-d",
                &record(&root.sk, "node-c", 3, "prod"),
            ),
            &sink,
        );
        assert!(v.node_key(&kid_c, now).is_none());
        // Garbage in place of node-b's record takes node-b's key away
        // (whoever writes etcd can deny, never grant).
        v.put(rec("/strata/prod/keys/node-b", b"{}"), &sink);
        assert!(v.node_key(&kid_b, now).is_none());
        v.put(
            rec(
                "/strata/prod/keys/node-b",
                &record(&root.sk, "node-b", 2, "prod"),
            ),
            &sink,
        );
        v.delete("/strata/prod/keys/node-b");
        assert!(v.node_key(&kid_b, now).is_none());
        assert!(v.status().nodes.is_empty());
    }

    #[test]
    fn a_full_read_keeps_unchanged_keys_and_their_cache_and_drops_removed_ones() {
        let (v, root) = view();
        let (b, c) = (
            record(&root.sk, "node-b", 2, "prod"),
            record(&root.sk, "node-c", 3, "prod"),
        );
        let rec_at = |key, value, mod_revision| Record {
            key,
            value,
            mod_revision,
        };
        let now = capability::now();
        let kid_b = key_id(&keypair_from_seed(&[2; 32]).pk);
        let kid_c = key_id(&keypair_from_seed(&[3; 32]).pk);
        v.replace_keys([
            rec_at("/strata/prod/keys/node-b", &b[..], 5),
            rec_at("/strata/prod/keys/node-c", &c[..], 6),
            rec_at("/strata/prod/keys/rogue", b"{}", 7),
        ]);
        let cache_b = v.node_key(&kid_b, now).unwrap().tokens;
        assert!(v.node_key(&kid_c, now).is_some());
        assert_eq!(v.status().nodes, ["node-b", "node-c"]);
        // node-c removed from etcd; node-b unchanged keeps its cache.
        v.replace_keys([rec_at("/strata/prod/keys/node-b", &b[..], 5)]);
        assert!(Arc::ptr_eq(
            &cache_b,
            &v.node_key(&kid_b, now).unwrap().tokens
        ));
        assert!(v.node_key(&kid_c, now).is_none());
        // Rewritten (a new revision): verified again, a new cache.
        v.replace_keys([rec_at("/strata/prod/keys/node-b", &b[..], 9)]);
        assert!(!Arc::ptr_eq(
            &cache_b,
            &v.node_key(&kid_b, now).unwrap().tokens
        ));
    }

    #[test]
    fn revocations_reach_the_sink_and_bad_ones_do_not() {
        let (v, _) = view();
        let (sink, seen) = sink();
        let cap = "00112233445566778899aabbccddeeff";
        let good = format!(r#"{{"cap_id":"{cap}","exp":99,"by":"node-b"}}"#);
        v.put(
            rec(&format!("/strata/prod/revoked/{cap}"), good.as_bytes()),
            &sink,
        );
        // Stored under another id, or not a record: ignored.
        v.put(
            rec(
                "/strata/prod/revoked/ffffffffffffffffffffffffffffffff",
                good.as_bytes(),
            ),
            &sink,
        );
        v.put(rec(&format!("/strata/prod/revoked/{cap}"), b"[]"), &sink);
        let big = vec![b' '; MAX_RECORD + 1];
        v.put(rec(&format!("/strata/prod/revoked/{cap}"), &big), &sink);
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
