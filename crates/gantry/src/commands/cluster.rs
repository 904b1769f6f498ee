//! Control-plane commands: `gantry server`, and later `gantry agent`.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use gantry_apiserver::ServerConfig;

use crate::GlobalOptions;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Run the Kubernetes-compatible API server.
    Server(ServerArgs),
}

/// Flags named like k3s's `server` so its users find them where they expect.
#[derive(Args)]
pub struct ServerArgs {
    /// Where the PKI and the store live [default: <root>/server].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// HTTPS port of the API server.
    #[arg(long, default_value_t = 6443)]
    https_port: u16,
    /// Static bearer tokens (token,user,uid,"group1,group2").
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Where to write the admin kubeconfig [default: <data-dir>/admin.kubeconfig].
    #[arg(long)]
    kubeconfig_output: Option<PathBuf>,
    /// Extra host names or IPs for the serving certificate.
    #[arg(long = "tls-san")]
    tls_san: Vec<String>,
}

impl ClusterCommand {
    /// Runs the command to completion.
    pub fn run(self, global: &GlobalOptions) -> anyhow::Result<()> {
        match self {
            ClusterCommand::Server(args) => run_server(args, global),
        }
    }
}

fn run_server(args: ServerArgs, global: &GlobalOptions) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(|| global.root.join("server"));
    let kubeconfig_output =
        args.kubeconfig_output.unwrap_or_else(|| data_dir.join("admin.kubeconfig"));
    let config = ServerConfig {
        data_dir,
        bind_address: args.bind_address,
        https_port: args.https_port,
        token_file: args.token_file,
        kubeconfig_output: kubeconfig_output.clone(),
        tls_sans: args.tls_san,
        components: Vec::new(),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let announce = Box::new(move |address| {
            println!("Kubeconfig written to {}", kubeconfig_output.display());
            println!("Serving on https://{address}");
        });
        gantry_apiserver::run(config, announce, termination_signal())
            .await
            .context("API server")
    })
}

/// Completes on SIGINT or SIGTERM, so the store is closed cleanly either way.
async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut sigterm) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = sigterm.recv() => {}
            }
        }
        Err(err) => {
            tracing::warn!(%err, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
