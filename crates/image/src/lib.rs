//! Gantry's image store: content-addressed blobs, OCI registry pull and push, archives and layer snapshots.
