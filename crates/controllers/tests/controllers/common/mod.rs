//! Helpers shared by the test modules.

pub mod test_kubelet;
pub mod workloads;
