//! One module per area of the CLI.

pub mod cluster;
pub mod container;
pub mod image;
