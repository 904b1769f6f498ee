//! Gantry's scheduler: watches pods without a node and binds each through
//! `pods/binding` to the node kube-scheduler's default profile would choose.
//!
//! The decision logic is pure and synchronous ([`framework::schedule`] over a
//! [`snapshot::Snapshot`]), so it is unit-tested plugin by plugin and benchmarked
//! without an API server; [`run`] is the thin async shell around it that keeps the
//! snapshot current from watches, binds, and reports failures.

pub mod filters;
pub mod framework;
pub mod labels;
pub mod quantity;
pub mod resources;
pub mod scores;
pub mod snapshot;

#[cfg(test)]
mod testing;
