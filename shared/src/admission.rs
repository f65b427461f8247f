//! Who gets a connection, and how much frame-buffer memory each caller may
//! hold: per uid and in total, so that one local user cannot take what the
//! others need.
//!
//! Ordinary callers share `max_connections`, at most `per_uid` each, and a
//! frame-buffer budget (`memory_per_uid`, `memory_total`). Privileged
//! callers (root, and whoever the service names: identity's administrators
//! and fs's own sync connection) may also use `reserved` further
//! connections and are not held to the memory budget, so an administrator's
//! revocation and the supervisor's probe are served whatever unprivileged
//! users hold. The bounds and the worst case they give are in
//! `docs/reliability.md`.

use std::collections::HashMap;
// A poisoned lock is taken as it is: the counters are updated in one step
// each, so they are consistent, and a panic here (in Drop above all) would
// take the service down.
use std::sync::{Arc, Mutex, PoisonError};

/// The bounds [`Admission`] enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Connections shared by ordinary callers.
    pub max_connections: usize,
    /// Connections one ordinary uid may hold.
    pub per_uid: usize,
    /// Further connections only privileged callers may use.
    pub reserved: usize,
    /// Frame-buffer bytes one ordinary uid may hold.
    pub memory_per_uid: usize,
    /// Frame-buffer bytes all ordinary callers together may hold.
    pub memory_total: usize,
}

/// Why a connection or a buffer was refused; the message is sent to the
/// client with code 6.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many connections (limit {0}); retry later")]
    Connections(usize),
    #[error("too many connections from uid {uid} (limit {limit} per uid); close some and retry")]
    ConnectionsPerUid { uid: u32, limit: usize },
    #[error("frame memory for uid {uid} is used up (limit {limit} bytes per uid); send smaller frames or fewer at once")]
    MemoryPerUid { uid: u32, limit: usize },
    #[error("frame memory is used up (limit {0} bytes for all callers); retry later")]
    MemoryTotal(usize),
}

#[derive(Debug, Default)]
struct Usage {
    connections: usize,
    bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    connections: usize,
    /// Bytes held by ordinary callers (privileged ones are not budgeted).
    bytes: usize,
    by_uid: HashMap<u32, Usage>,
}

/// The shared counters. Cheap to consult: one uncontended mutex per
/// connection and per buffer resize, never per byte.
#[derive(Debug)]
pub struct Admission {
    bounds: Bounds,
    state: Mutex<State>,
}

impl Admission {
    pub fn new(bounds: Bounds) -> Arc<Self> {
        Arc::new(Self {
            bounds,
            state: Mutex::new(State::default()),
        })
    }

    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    /// Admits one connection from `uid`, or says why not.
    ///
    /// # Errors
    /// A [`Refusal`] when the caller is over its own cap or the shared one.
    pub fn admit(self: &Arc<Self>, uid: u32, privileged: bool) -> Result<Ticket, Refusal> {
        let b = self.bounds;
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if privileged {
            if st.connections >= b.max_connections + b.reserved {
                return Err(Refusal::Connections(b.max_connections + b.reserved));
            }
        } else {
            if st.connections >= b.max_connections {
                return Err(Refusal::Connections(b.max_connections));
            }
            let held = st.by_uid.get(&uid).map_or(0, |u| u.connections);
            if held >= b.per_uid {
                return Err(Refusal::ConnectionsPerUid {
                    uid,
                    limit: b.per_uid,
                });
            }
        }
        st.connections += 1;
        st.by_uid.entry(uid).or_default().connections += 1;
        Ok(Ticket {
            admission: self.clone(),
            uid,
            privileged,
            bytes: 0,
        })
    }

    /// Connections open now, in total and for `uid`.
    pub fn connections(&self, uid: u32) -> (usize, usize) {
        let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (
            st.connections,
            st.by_uid.get(&uid).map_or(0, |u| u.connections),
        )
    }

    /// Frame-buffer bytes held now, in total and by `uid`.
    pub fn bytes(&self, uid: u32) -> (usize, usize) {
        let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (st.bytes, st.by_uid.get(&uid).map_or(0, |u| u.bytes))
    }
}

/// One admitted connection. It carries the bytes charged for the
/// connection's buffers and gives everything back when dropped.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    uid: u32,
    privileged: bool,
    bytes: usize,
}

impl Ticket {
    pub fn uid(&self) -> u32 {
        self.uid
    }

    pub fn privileged(&self) -> bool {
        self.privileged
    }

    /// Bytes charged to this connection now.
    pub fn charged(&self) -> usize {
        self.bytes
    }

    /// Charges `more` bytes if the budget allows, before they are allocated.
    ///
    /// # Errors
    /// A [`Refusal`] naming the budget that is used up; nothing is charged.
    pub fn try_grow(&mut self, more: usize) -> Result<(), Refusal> {
        let b = self.admission.bounds;
        let admission = self.admission.clone();
        let mut st = admission
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !self.privileged {
            let held = st.by_uid.get(&self.uid).map_or(0, |u| u.bytes);
            if held + more > b.memory_per_uid {
                return Err(Refusal::MemoryPerUid {
                    uid: self.uid,
                    limit: b.memory_per_uid,
                });
            }
            if st.bytes + more > b.memory_total {
                return Err(Refusal::MemoryTotal(b.memory_total));
            }
        }
        self.apply(&mut st, self.bytes + more);
        Ok(())
    }

    /// Sets the charge to what the buffers actually hold now, whatever the
    /// budget: used after an allocation whose size the allocator chose, and
    /// after buffers shrink.
    pub fn set(&mut self, bytes: usize) {
        if bytes == self.bytes {
            return;
        }
        let admission = self.admission.clone();
        let mut st = admission
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.apply(&mut st, bytes);
    }

    fn apply(&mut self, st: &mut State, new: usize) {
        let old = self.bytes;
        if !self.privileged {
            st.bytes = st.bytes + new - old;
        }
        let u = st.by_uid.entry(self.uid).or_default();
        u.bytes = u.bytes + new - old;
        self.bytes = new;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut st = self
            .admission
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        st.connections -= 1;
        if !self.privileged {
            st.bytes -= self.bytes;
        }
        if let Some(u) = st.by_uid.get_mut(&self.uid) {
            u.connections -= 1;
            u.bytes -= self.bytes;
            if u.connections == 0 {
                st.by_uid.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> Bounds {
        Bounds {
            max_connections: 4,
            per_uid: 2,
            reserved: 1,
            memory_per_uid: 100,
            memory_total: 150,
        }
    }

    #[test]
    fn one_uid_cannot_take_every_connection() {
        let a = Admission::new(bounds());
        let t1 = a.admit(1000, false).unwrap();
        let _t2 = a.admit(1000, false).unwrap();
        assert_eq!(
            a.admit(1000, false).unwrap_err(),
            Refusal::ConnectionsPerUid {
                uid: 1000,
                limit: 2
            }
        );
        let _t3 = a.admit(1001, false).unwrap();
        let _t4 = a.admit(1001, false).unwrap();
        // The shared pool is full; a third uid is refused, root is not.
        assert_eq!(a.admit(1002, false).unwrap_err(), Refusal::Connections(4));
        let root = a.admit(0, true).unwrap();
        assert_eq!(a.admit(0, true).unwrap_err(), Refusal::Connections(5));
        drop(root);
        drop(t1);
        assert_eq!(a.connections(1000), (3, 1));
        let _again = a.admit(1000, false).unwrap();
    }

    #[test]
    fn memory_is_budgeted_per_uid_and_in_total() {
        let a = Admission::new(bounds());
        let mut t1 = a.admit(1000, false).unwrap();
        let mut t2 = a.admit(1001, false).unwrap();
        t1.try_grow(90).unwrap();
        assert_eq!(
            t1.try_grow(20).unwrap_err(),
            Refusal::MemoryPerUid {
                uid: 1000,
                limit: 100
            }
        );
        assert_eq!(t1.charged(), 90);
        t2.try_grow(60).unwrap();
        assert_eq!(t2.try_grow(1).unwrap_err(), Refusal::MemoryTotal(150));
        // A privileged caller is not held to the budget.
        let mut root = a.admit(0, true).unwrap();
        root.try_grow(10_000).unwrap();
        t1.set(10);
        t2.try_grow(30).unwrap();
        assert_eq!(a.bytes(1001), (10 + 90, 90));
        assert_eq!(a.bytes(0), (100, 10_000));
        drop(root);
        drop(t1);
        drop(t2);
        assert_eq!(a.bytes(1000), (0, 0));
        assert_eq!(a.connections(1000), (0, 0));
    }
}
