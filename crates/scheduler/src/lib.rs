//! Gantry's scheduler: watches pods without a node and binds each through
//! `pods/binding` to the node kube-scheduler's default profile would choose.
