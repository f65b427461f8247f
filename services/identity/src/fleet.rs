//! identity in a fleet (docs/fleet.md): publish this node's key with its
//! endorsement under `/strata/<fleet>/keys/`, and commit every revocation
//! to etcd before `identity.revoke` answers.
//!
//! The link follows identity's own revocation list, as fs does, so every
//! way a revocation is made (an administrator, a holder, a unit's stop, a
//! damaged `minted.json` at start) reaches the fleet the same way. At start
//! it commits the whole list again: puts are idempotent, and this is what
//! makes a revocation that was in force here but not yet acknowledged by
//! etcd (identity or etcd down at the time) reach the fleet after all.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_compact::PublicKey;
use serde::Serialize;
use strata_fleet::publish::{self, Leases};
use strata_fleet::store::{self, KeyRecord};
use strata_fleet::FleetConfig;
use strata_shared::capability;
use strata_shared::fleet::{encode_public_key, verify_endorsement};
use strata_shared::token::key_id;
use tokio::sync::watch;

use crate::Identity;

/// How long `identity.revoke` waits for etcd before answering code 6.
pub const COMMIT_WAIT: Duration = Duration::from_secs(3);
/// Pause between attempts while etcd cannot be reached.
const RETRY: Duration = Duration::from_millis(500);

/// identity's connection to its fleet.
pub struct FleetLink {
    config: FleetConfig,
    public_key: PublicKey,
    /// Revocations etcd has acknowledged, with their tokens' expiry.
    committed: Mutex<HashMap<String, i64>>,
    commits: watch::Sender<u64>,
    state: Mutex<LinkState>,
}

#[derive(Default)]
struct LinkState {
    key_published: bool,
    uncommitted: usize,
    error: Option<String>,
}

/// `identity.health`'s `fleet` object.
#[derive(Debug, Serialize)]
pub struct LinkStatus {
    pub name: String,
    /// This node's key and endorsement are in etcd.
    pub key_published: bool,
    /// Revocations in force here that etcd has not acknowledged yet.
    pub uncommitted: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl FleetLink {
    pub fn new(config: FleetConfig, public_key: PublicKey) -> Self {
        Self {
            config,
            public_key,
            committed: Mutex::new(HashMap::new()),
            commits: watch::Sender::new(0),
            state: Mutex::new(LinkState::default()),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Waits until etcd has acknowledged the revocation of `cap_id`.
    ///
    /// # Errors
    /// Why not, after `within`.
    pub async fn wait_committed(&self, cap_id: &str, within: Duration) -> Result<(), String> {
        let mut commits = self.commits.subscribe();
        let committed = || {
            self.committed
                .lock()
                .expect("fleet link lock")
                .contains_key(cap_id)
        };
        let waited = tokio::time::timeout(within, async {
            while !committed() {
                if commits.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        if waited.is_ok() && committed() {
            return Ok(());
        }
        let state = self.state.lock().expect("fleet link lock");
        Err(state
            .error
            .clone()
            .unwrap_or_else(|| format!("no acknowledgement within {} s", within.as_secs())))
    }

    pub fn status(&self) -> LinkStatus {
        let s = self.state.lock().expect("fleet link lock");
        LinkStatus {
            name: self.config.name.clone(),
            key_published: s.key_published,
            uncommitted: s.uncommitted,
            error: s.error.clone(),
        }
    }

    fn failed(&self, why: String) {
        tracing::warn!(fleet = %self.config.name, "etcd: {why}");
        self.state.lock().expect("fleet link lock").error = Some(why);
    }

    /// This node's key record, from its endorsement file, checked: an
    /// endorsement of another node or key is never published.
    fn key_record(&self) -> Result<KeyRecord, String> {
        let path = self.config.endorsement_file.as_deref().ok_or(
            "STRATA_FLEET_ENDORSEMENT_FILE is not set: this node's key is not published, so \
             other nodes refuse its fleet tokens",
        )?;
        let text = read_endorsement(path)?;
        let e = verify_endorsement(
            &self.config.root,
            &self.config.name,
            &text,
            capability::now(),
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
        if e.node_id != self.config.node_id || e.public_key != self.public_key {
            return Err(format!(
                "{}: endorses node {} with key {}, but this is node {} with key {}: endorse this \
                 node's key (`strata-ctl fleet endorse --node-id {} --node-key {}`)",
                path.display(),
                e.node_id,
                e.kid,
                self.config.node_id,
                key_id(&self.public_key),
                self.config.node_id,
                encode_public_key(&self.public_key),
            ));
        }
        Ok(KeyRecord {
            node_id: e.node_id,
            kid: e.kid,
            public_key: encode_public_key(&e.public_key),
            endorsement: text.trim().to_string(),
        })
    }
}

fn read_endorsement(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() > 4096 {
        return Err(format!("{}: larger than an endorsement", path.display()));
    }
    String::from_utf8(bytes).map_err(|_| format!("{}: not text", path.display()))
}

/// Quiet rounds (30 s each) between sweeps of expired revocation records:
/// ten minutes.
const SWEEP_EVERY: u32 = 20;

/// Keeps the fleet up to date for as long as identity runs: publishes the
/// key (again after every reconnection, and every 30 s without a
/// revocation, in case the record was lost), commits each revocation of
/// identity's list, newest first, and now and then deletes expired
/// revocation records.
pub async fn run(id: Arc<Identity>, link: Arc<FleetLink>) {
    let mut since = 0;
    // Oldest first; committed from the end, so that a revoke waiting for
    // its answer is not queued behind the list re-committed at start.
    let mut pending: Vec<(String, i64)> = Vec::new();
    let mut client = None;
    let mut leases = Leases::default();
    let mut key_published = false;
    let mut quiet_rounds = 0u32;
    let mut last_warning = None;
    loop {
        let idle = pending.is_empty() && key_published && client.is_some();
        let wait = if idle {
            Duration::from_secs(30)
        } else {
            Duration::ZERO
        };
        let delta = id.revocations.delta(since, None, wait).await;
        // Stopping: long polls now answer at once, so this loop would spin
        // and keep the runtime from shutting down.
        if id.revocations.is_closing() {
            return;
        }
        if idle && delta.revocations.is_empty() {
            key_published = false;
            quiet_rounds += 1;
        }
        since = delta.seq;
        pending.extend(delta.revocations.into_iter().map(|r| (r.cap_id, r.expires)));
        link.state.lock().expect("fleet link lock").uncommitted = pending.len();
        if client.is_none() {
            match store::connect(&link.config).await {
                Ok(c) => client = Some(c),
                Err(why) => {
                    link.failed(why);
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            }
        }
        let c = client.as_mut().expect("connected above");
        let result = async {
            if !key_published {
                publish_or_retract(c, &link, &mut last_warning).await?;
                key_published = true;
            }
            while !pending.is_empty() {
                let batch = pending.split_off(pending.len().saturating_sub(publish::BATCH));
                let now = capability::now();
                if let Err(why) =
                    publish::commit_revocations(c, &mut leases, &link.config, &batch, now).await
                {
                    pending.extend(batch);
                    return Err(why);
                }
                let mut committed = link.committed.lock().expect("fleet link lock");
                committed.retain(|_, exp| *exp > now - 60);
                committed.extend(batch);
                drop(committed);
                link.commits.send_modify(|n| *n += 1);
            }
            if quiet_rounds >= SWEEP_EVERY {
                quiet_rounds = 0;
                let swept = publish::sweep_expired(c, &link.config, capability::now()).await?;
                if swept > 0 {
                    tracing::info!(fleet = %link.config.name, swept, "deleted expired revocation records");
                }
            }
            Ok::<(), String>(())
        }
        .await;
        link.state.lock().expect("fleet link lock").uncommitted = pending.len();
        match result {
            Ok(()) => link.state.lock().expect("fleet link lock").error = None,
            Err(why) => {
                link.failed(why);
                client = None;
                key_published = false;
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Publishes this node's key record, or, when its endorsement does not
/// hold for this identity's key, removes a record of this node that names
/// another key (the one before a rotation) so that the fleet stops
/// trusting it.
async fn publish_or_retract(
    c: &mut strata_fleet::Client,
    link: &FleetLink,
    last_warning: &mut Option<String>,
) -> Result<(), String> {
    let published = match link.key_record() {
        Ok(record) => {
            publish::publish_key(c, &link.config, &record).await?;
            if last_warning.take().is_some() || !link.status().key_published {
                tracing::info!(fleet = %link.config.name, kid = %record.kid, "published this node's key");
            }
            true
        }
        Err(why) => {
            if last_warning.as_deref() != Some(why.as_str()) {
                tracing::warn!(fleet = %link.config.name, "{why}");
                *last_warning = Some(why);
            }
            let current = key_id(&link.public_key);
            if let Some(old) = publish::retract_stale_key(c, &link.config, &current).await? {
                tracing::warn!(
                    fleet = %link.config.name,
                    "removed this node's key record (kid {old}) from etcd: it is not this \
                     identity's key ({current})"
                );
            }
            false
        }
    };
    link.state.lock().expect("fleet link lock").key_published = published;
    Ok(())
}
