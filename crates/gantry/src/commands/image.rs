//! Image commands, as Docker names them: pull, push, images, rmi, tag, load, save, import.

use clap::Subcommand;

use crate::GlobalOptions;

#[derive(Subcommand)]
pub enum ImageCommand {}

impl ImageCommand {
    /// Runs the command to completion.
    pub fn run(self, _global: &GlobalOptions) -> anyhow::Result<()> {
        match self {}
    }
}
