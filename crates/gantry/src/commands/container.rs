//! Container commands, as Docker names them: run, ps, logs, exec, stop, kill, rm, inspect.

use clap::Subcommand;

use crate::GlobalOptions;

#[derive(Subcommand)]
pub enum ContainerCommand {}

impl ContainerCommand {
    /// Runs the command to completion.
    pub fn run(self, _global: &GlobalOptions) -> anyhow::Result<()> {
        match self {}
    }
}
