//! Fleets (issue 15): one trust root and one revocation log across nodes,
//! kept in etcd (docs/fleet.md).
//!
//! - [`config`]: the `STRATA_FLEET_*` settings, shared by identity and fs;
//! - [`store`]: the records in etcd and the connection to it;
//! - [`publish`]: identity's side, publishing its key and committing
//!   revocations;
//! - [`follower`]: fs's side, following keys and revocations and knowing
//!   how fresh they are.
//!
//! The root key's endorsements themselves are in
//! `strata_shared::fleet`, which needs no etcd.

pub mod config;
pub mod follower;
pub mod publish;
pub mod store;

pub use config::FleetConfig;
/// The etcd client the fleet connects with ([`store::connect`]).
pub use etcd_client::Client;
pub use follower::{FleetStatus, FleetView};
