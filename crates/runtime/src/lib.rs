//! Gantry's container runtime: OCI runtime specs from images and options, run with youki's libcontainer.
