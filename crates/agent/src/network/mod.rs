//! The pod network: a bridge per node with host-gw routes to the other nodes' pod
//! CIDRs, in the style of k3s's flannel host-gw backend.
