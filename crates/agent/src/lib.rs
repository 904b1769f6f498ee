//! Gantry's node agent (the kubelet and, later, kube-proxy): registers its Node,
//! renews its Lease, and drives the pods bound to it on the container engine.
pub mod network;
pub mod volumes;
