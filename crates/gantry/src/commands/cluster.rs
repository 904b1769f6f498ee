//! Control-plane commands: `gantry server`, and later `gantry agent`.

use clap::Subcommand;

use crate::GlobalOptions;

#[derive(Subcommand)]
pub enum ClusterCommand {}

impl ClusterCommand {
    /// Runs the command to completion.
    pub fn run(self, _global: &GlobalOptions) -> anyhow::Result<()> {
        match self {}
    }
}
