//! The library every Strata binary shares.
//!
//! It holds the parts that must be identical on both ends of a socket or in
//! every service: the frame codec and envelope ([`wire`]), PASETO v2.public
//! tokens ([`token`]), the claims and the single place where an authorization
//! decision is made ([`capability`]), systemd socket activation and
//! notification ([`activation`]), the generic request loop ([`server`]) and
//! the one client used by `strata-ctl`, the supervisor and the tests
//! ([`client`]), and a fleet's root key endorsements of node keys
//! ([`fleet`]).

pub mod activation;
pub mod admins;
pub mod admission;
pub mod audit;
pub mod capability;
pub mod client;
pub mod config;
pub mod fleet;
pub mod holder;
pub mod ids;
pub mod logging;
pub mod memory;
pub mod paths;
pub mod peer;
pub mod privileges;
pub mod random;
pub mod rate;
pub mod server;
pub mod token;
pub mod wire;
