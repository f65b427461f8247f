//! identity's side of a fleet: publish this node's key with its
//! endorsement, and commit revocations to etcd, each kept until its token
//! expires.
//!
//! A put returns once etcd's leader has the write in a quorum's log, so a
//! revocation acknowledged after [`commit_revocation`] survives any
//! minority of members failing, and etcd restarting.

use std::collections::HashMap;

use etcd_client::{Client, PutOptions};

use crate::config::FleetConfig;
use crate::store::{KeyRecord, RevocationRecord};

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

/// Commits the revocation of `cap_id` (whose token expires at `exp`) to
/// etcd; returns once a quorum has it.
///
/// # Errors
/// etcd's refusal or silence: the revocation is then not known to be in
/// the fleet, and must be committed again.
pub async fn commit_revocation(
    client: &mut Client,
    leases: &mut Leases,
    config: &FleetConfig,
    cap_id: &str,
    exp: i64,
    now: i64,
) -> Result<(), String> {
    let key = format!("{}{cap_id}", config.revoked_prefix());
    let value = serde_json::to_vec(&RevocationRecord {
        cap_id: cap_id.into(),
        exp,
        by: config.node_id.clone(),
    })
    .expect("a revocation record serializes");
    let mut retried = false;
    loop {
        let lease = leases.lease_for(client, exp, now).await?;
        match client
            .put(
                key.as_str(),
                value.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
        {
            Ok(_) => return Ok(()),
            // The lease is gone (etcd lost it, or it was revoked by hand):
            // grant a new one once.
            Err(e) if !retried && e.to_string().contains("lease not found") => {
                leases.by_bucket.remove(&Leases::bucket_end(exp));
                retried = true;
            }
            Err(e) => return Err(format!("committing {key}: {e}")),
        }
    }
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
