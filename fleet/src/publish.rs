//! identity's side of a fleet: publish this node's key with its
//! endorsement, and commit revocations to etcd, each kept until its token
//! expires.
//!
//! A write returns once etcd's leader has it in a quorum's log, so a
//! revocation acknowledged after [`commit_revocations`] survives any
//! minority of members failing, and etcd restarting.

use std::collections::HashMap;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};

use crate::config::FleetConfig;
use crate::store::{read_prefix, KeyRecord, RevocationRecord};

/// Revocations are grouped by when their tokens expire, in buckets of this
/// many seconds, one etcd lease per bucket: a few leases rather than one
/// per revocation.
pub const LEASE_BUCKET_SECS: i64 = 300;
/// A lease outlives the last token of its bucket by this much, for clock
/// differences between nodes.
pub const LEASE_SLACK_SECS: i64 = 120;

/// The leases granted so far, by the end of their bucket.
#[derive(Default)]
pub struct Leases {
    by_bucket: HashMap<i64, i64>,
}

impl Leases {
    /// The bucket end for a token expiring at `exp` (Unix seconds).
    pub fn bucket_end(exp: i64) -> i64 {
        exp.div_euclid(LEASE_BUCKET_SECS) * LEASE_BUCKET_SECS + LEASE_BUCKET_SECS
    }

    /// The lease TTL for a bucket ending at `end`, asked for at `now`: the
    /// bucket's last token is refused as expired before the lease ends.
    pub fn ttl(end: i64, now: i64) -> i64 {
        (end - now).max(0) + LEASE_SLACK_SECS
    }

    async fn lease_for(&mut self, client: &mut Client, exp: i64, now: i64) -> Result<i64, String> {
        let end = Self::bucket_end(exp);
        if let Some(id) = self.by_bucket.get(&end) {
            return Ok(*id);
        }
        let lease = client
            .lease_grant(Self::ttl(end, now), None)
            .await
            .map_err(|e| format!("lease grant: {e}"))?;
        self.by_bucket.retain(|b, _| *b > now - LEASE_SLACK_SECS);
        self.by_bucket.insert(end, lease.id());
        Ok(lease.id())
    }
}

/// Puts this node's key record under `/strata/<fleet>/keys/<node id>`.
///
/// # Errors
/// etcd's refusal or silence.
pub async fn publish_key(
    client: &mut Client,
    config: &FleetConfig,
    record: &KeyRecord,
) -> Result<(), String> {
    let key = format!("{}{}", config.keys_prefix(), config.node_id);
    let value = serde_json::to_vec(record).expect("a key record serializes");
    client
        .put(key.as_str(), value, None)
        .await
        .map(drop)
        .map_err(|e| format!("publishing {key}: {e}"))
}

/// Most revocations committed in one transaction (etcd allows 128
/// operations per transaction by default).
pub const BATCH: usize = 64;

/// Commits the revocations `entries` (capability id, the Unix time its
/// token expires) to etcd in one transaction; returns once a quorum has
/// them. Entries already expired at `now` are skipped: their tokens are
/// refused anyway.
///
/// # Errors
/// etcd's refusal or silence: none of them is then known to be in the
/// fleet, and all must be committed again.
pub async fn commit_revocations(
    client: &mut Client,
    leases: &mut Leases,
    config: &FleetConfig,
    entries: &[(String, i64)],
    now: i64,
) -> Result<(), String> {
    let mut retried = false;
    loop {
        let mut ops = Vec::with_capacity(entries.len());
        for (cap_id, exp) in entries.iter().filter(|(_, exp)| *exp > now) {
            let lease = leases.lease_for(client, *exp, now).await?;
            let value = serde_json::to_vec(&RevocationRecord {
                cap_id: cap_id.clone(),
                exp: *exp,
                by: config.node_id.clone(),
            })
            .expect("a revocation record serializes");
            let key = format!("{}{cap_id}", config.revoked_prefix());
            ops.push(TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            ));
        }
        if ops.is_empty() {
            return Ok(());
        }
        match client.txn(Txn::new().and_then(ops)).await {
            Ok(_) => return Ok(()),
            // A lease is gone (etcd lost it, or it was revoked by hand):
            // grant new ones once.
            Err(e) if !retried && e.to_string().contains("lease not found") => {
                leases.by_bucket.clear();
                retried = true;
            }
            Err(e) => return Err(format!("committing {} revocation(s): {e}", entries.len())),
        }
    }
}

/// Removes this node's key record if it holds another key than
/// `current_kid`: after identity's key was replaced (a rotation, a key that
/// may have leaked), the old one must not stay trusted by the fleet just
/// because its endorsement never expires. Returns the kid removed.
///
/// # Errors
/// etcd's refusal or silence.
pub async fn retract_stale_key(
    client: &mut Client,
    config: &FleetConfig,
    current_kid: &str,
) -> Result<Option<String>, String> {
    let key = format!("{}{}", config.keys_prefix(), config.node_id);
    let resp = client
        .get(key.as_str(), None)
        .await
        .map_err(|e| format!("reading {key}: {e}"))?;
    let Some(kv) = resp.kvs().first() else {
        return Ok(None);
    };
    let kid = serde_json::from_slice::<KeyRecord>(kv.value())
        .map(|r| r.kid)
        .unwrap_or_default();
    if kid == current_kid {
        return Ok(None);
    }
    // Only the record read: a newer one (this node's, published meanwhile)
    // stays.
    let txn = Txn::new()
        .when([Compare::mod_revision(
            key.as_str(),
            CompareOp::Equal,
            kv.mod_revision(),
        )])
        .and_then([TxnOp::delete(key.as_str(), None)]);
    client
        .txn(txn)
        .await
        .map_err(|e| format!("removing {key}: {e}"))?;
    Ok(Some(kid))
}

/// Deletes revocation records whose tokens expired more than
/// [`LEASE_SLACK_SECS`] before `now`. Their leases should have done it, but
/// etcd 3.4 gives a lease its whole TTL again at every leader change, so
/// with long-lived tokens and frequent elections a lease may never run
/// out. Returns how many were deleted.
///
/// # Errors
/// etcd's refusal or silence.
pub async fn sweep_expired(
    client: &mut Client,
    config: &FleetConfig,
    now: i64,
) -> Result<usize, String> {
    let (records, _) = read_prefix(client, &config.revoked_prefix(), None, 0).await?;
    let mut deleted = 0;
    for kv in records {
        let expired = serde_json::from_slice::<RevocationRecord>(kv.value())
            .is_ok_and(|r| r.exp + LEASE_SLACK_SECS < now);
        if !expired {
            continue;
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(
                kv.key(),
                CompareOp::Equal,
                kv.mod_revision(),
            )])
            .and_then([TxnOp::delete(kv.key(), None)]);
        let resp = client
            .txn(txn)
            .await
            .map_err(|e| format!("sweeping expired revocations: {e}"))?;
        deleted += usize::from(resp.succeeded());
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_outlives_every_token_of_its_bucket() {
        let now = 1_000_000;
        for exp in [now + 1, now + 299, now + 300, now + 86_400, now - 5] {
            let end = Leases::bucket_end(exp);
            assert!(end > exp && end - exp <= LEASE_BUCKET_SECS, "{exp}");
            // The lease ends after the token does.
            assert!(now + Leases::ttl(end, now) > exp, "{exp}");
        }
    }
}
