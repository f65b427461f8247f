//! Dropping every Linux capability at start.
//!
//! The units already give the services an empty bounding set; this is the
//! second lock on the same door, for a binary started some other way (by
//! hand as root, or under a unit an operator loosened). It logs what it
//! dropped, so a misconfigured unit shows up in the journal.

use caps::{CapSet, Capability, CapsHashSet};

/// What [`drop_all`] found and removed.
#[derive(Debug, Default)]
pub struct Dropped {
    pub effective: Vec<Capability>,
    pub permitted: Vec<Capability>,
    pub inheritable: Vec<Capability>,
    pub ambient: Vec<Capability>,
    pub bounding: Vec<Capability>,
}

impl Dropped {
    pub fn is_empty(&self) -> bool {
        self.effective.is_empty()
            && self.permitted.is_empty()
            && self.inheritable.is_empty()
            && self.ambient.is_empty()
            && self.bounding.is_empty()
    }
}

fn sorted(set: CapsHashSet) -> Vec<Capability> {
    let mut v: Vec<Capability> = set.into_iter().collect();
    v.sort_by_key(|c| c.index());
    v
}

/// Drops every capability from every set of the calling thread's process.
/// Must run before any other thread starts (capabilities are per thread).
///
/// Sets that are already empty are left alone, so that a process started by
/// the units (empty bounding set, unprivileged user) never calls `capset(2)`:
/// the units deny `@privileged`, which contains it, and a denied call would
/// kill the process with SIGSYS.
pub fn drop_all() -> Result<Dropped, caps::errors::CapsError> {
    let mut d = Dropped::default();
    // The bounding set first: removing from it needs CAP_SETPCAP, which is
    // about to go from the effective set. (prctl, not capset.)
    let bounding = caps::read(None, CapSet::Bounding)?;
    for cap in sorted(bounding) {
        if caps::drop(None, CapSet::Bounding, cap).is_ok() {
            d.bounding.push(cap);
        }
    }
    d.ambient = sorted(caps::read(None, CapSet::Ambient)?);
    if !d.ambient.is_empty() {
        caps::clear(None, CapSet::Ambient)?;
    }
    d.inheritable = sorted(caps::read(None, CapSet::Inheritable)?);
    d.effective = sorted(caps::read(None, CapSet::Effective)?);
    d.permitted = sorted(caps::read(None, CapSet::Permitted)?);
    if !d.inheritable.is_empty() {
        caps::clear(None, CapSet::Inheritable)?;
    }
    if !d.effective.is_empty() {
        caps::clear(None, CapSet::Effective)?;
    }
    if !d.permitted.is_empty() {
        caps::clear(None, CapSet::Permitted)?;
    }
    Ok(d)
}

/// [`drop_all`], then one log line saying what happened.
pub fn drop_all_and_log() {
    match drop_all() {
        Ok(d) if d.is_empty() => tracing::info!("held no capabilities; nothing to drop"),
        Ok(d) => tracing::warn!(
            effective = ?d.effective,
            permitted = ?d.permitted,
            bounding = d.bounding.len(),
            ambient = ?d.ambient,
            inheritable = ?d.inheritable,
            "dropped capabilities held at start (the unit should not grant them)"
        ),
        Err(e) => tracing::error!("could not drop capabilities: {e}"),
    }
}
