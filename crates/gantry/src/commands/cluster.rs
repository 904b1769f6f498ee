//! Control-plane commands: `gantry server` runs the API server and, like k3s, the
//! scheduler, the controller manager and a node agent for this machine beside it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use gantry_agent::{AgentConfig, PodNetworkSettings, ProxySettings};
use gantry_apiserver::{Component, ServerConfig};
use gantry_client::{LeaderElection, LeaseTiming};
use gantry_controllers::ControllerManagerConfig;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::GlobalOptions;
use crate::commands::container::shim_command;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Run the Kubernetes-compatible API server (with a scheduler, controllers and a node agent).
    Server(ServerArgs),
    /// Join this machine to a cluster as a node.
    Agent(AgentArgs),
}

/// Flags named like k3s's `agent`.
#[derive(Args)]
pub struct AgentArgs {
    /// The server to join, e.g. https://10.0.0.1:6443.
    #[arg(long, env = "GANTRY_URL", required_unless_present = "kubeconfig")]
    server: Option<String>,
    /// The join token from the server's `<data-dir>/node-token`.
    #[arg(long, env = "GANTRY_TOKEN", conflicts_with = "token_file")]
    token: Option<String>,
    /// A file holding the join token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Use these credentials instead of joining with a token.
    #[arg(long, conflicts_with_all = ["token", "token_file"])]
    kubeconfig: Option<PathBuf>,
    /// This machine's node name [default: the host name].
    #[arg(long)]
    node_name: Option<String>,
    /// The kubelet API's port (0 picks a free one).
    #[arg(long, default_value_t = gantry_agent::kubelet_api::DEFAULT_PORT)]
    kubelet_port: u16,
    /// The address other nodes reach this one on (its InternalIP, the next hop of
    /// their routes to its pods) [default: the address of the default route].
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// The cluster's pod range, as given to the server's `--cluster-cidr`.
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: ipnet::Ipv4Net,
    /// `bridge` (host-gw routes to the other nodes) or `none`, as on the server.
    #[arg(long, value_enum, default_value_t = PodNetworkBackend::Bridge)]
    pod_network: PodNetworkBackend,
}

/// How pods get their network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PodNetworkBackend {
    /// A bridge per node, a veth and an address per pod, routes between nodes.
    Bridge,
    /// No pod network: each pod has its own namespace with loopback only.
    None,
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
    /// This machine's node name [default: the host name].
    #[arg(long)]
    node_name: Option<String>,
    /// The range pod IPs come from; each node gets a /24 of it.
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: ipnet::Ipv4Net,
    /// `bridge` gives each pod an address on the node's bridge (host-gw between nodes);
    /// `none` leaves pods with loopback only (like k3s's `--flannel-backend=none`).
    #[arg(long, value_enum, default_value_t = PodNetworkBackend::Bridge)]
    pod_network: PodNetworkBackend,
    /// The local node agent's kubelet API port (0 picks a free one).
    #[arg(long, default_value_t = gantry_agent::kubelet_api::DEFAULT_PORT)]
    kubelet_port: u16,
    /// The local node's InternalIP, which other nodes route its pods through
    /// [default: the address of the default route].
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// Do not run a node agent here (a control-plane-only server).
    #[arg(long)]
    disable_agent: bool,
    /// Do not run the scheduler.
    #[arg(long)]
    disable_scheduler: bool,
    /// Do not run the controller manager.
    #[arg(long)]
    disable_controller_manager: bool,
    /// How long a node's Lease may go unrenewed before the node is unreachable and its
    /// pods are evicted (kube-controller-manager's flag, e.g. `40s`, `2m`).
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: Duration,
    /// Where the local-path provisioner puts volumes on the nodes
    /// [default: <root>/storage].
    #[arg(long)]
    default_local_storage_path: Option<PathBuf>,
}

/// Parses a Go-style duration such as `40s`, `1m30s` or `500ms`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let signed: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("invalid duration {text:?}: {e}"))?;
    Duration::try_from(signed).map_err(|_| format!("duration {text:?} must not be negative"))
}

impl ClusterCommand {
    /// Runs the command to completion.
    pub fn run(self, global: &GlobalOptions) -> anyhow::Result<()> {
        match self {
            ClusterCommand::Server(args) => run_server(args, global),
            ClusterCommand::Agent(args) => run_agent(args, global),
        }
    }
}

/// The components `gantry server` runs beside the API server, each an API client with its
/// own certificate, started once the server listens and stopped before it.
struct LocalComponents {
    scheduler: Option<PathBuf>,
    controller_manager: Option<(PathBuf, ControllerManagerConfig)>,
    agent: Option<(PathBuf, AgentConfig)>,
}

impl LocalComponents {
    fn plan(args: &ServerArgs, data_dir: &Path, global: &GlobalOptions) -> anyhow::Result<Self> {
        let node_name = match &args.node_name {
            Some(name) => name.clone(),
            None => host_name()?,
        };
        let storage_dir = args
            .default_local_storage_path
            .clone()
            .unwrap_or_else(|| global.root.join("storage"));
        let agent = if args.disable_agent {
            None
        } else {
            let mut config =
                AgentConfig::new(node_name, global.root.clone(), shim_command(global)?);
            config.kubelet_port = args.kubelet_port;
            config.node_ip = args.node_ip;
            config.local_storage_dir = storage_dir.clone();
            if args.pod_network == PodNetworkBackend::Bridge {
                config.pod_network = Some(PodNetworkSettings::new(args.cluster_cidr));
                enable_cluster_dns(&mut config);
                config.proxy = Some(ProxySettings::new(args.cluster_cidr));
            }
            Some((data_dir.join("agent.kubeconfig"), config))
        };
        Ok(LocalComponents {
            scheduler: (!args.disable_scheduler).then(|| data_dir.join("scheduler.kubeconfig")),
            controller_manager: (!args.disable_controller_manager).then(|| {
                let mut config = ControllerManagerConfig::default();
                config.node_ipam.cluster_cidr = args.cluster_cidr;
                config.node_lifecycle.grace_period = args.node_monitor_grace_period;
                config.local_path.storage_dir = storage_dir;
                (data_dir.join("controller-manager.kubeconfig"), config)
            }),
            agent,
        })
    }

    /// The identities the API server must issue kubeconfigs for, named as upstream's.
    fn identities(&self) -> Vec<Component> {
        let component = |user: String, groups: &[&str], kubeconfig: &PathBuf| Component {
            user,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            kubeconfig: kubeconfig.clone(),
        };
        let mut identities = Vec::new();
        if let Some(path) = &self.scheduler {
            identities.push(component("system:kube-scheduler".into(), &[], path));
        }
        if let Some((path, _)) = &self.controller_manager {
            identities.push(component(
                "system:kube-controller-manager".into(),
                &[],
                path,
            ));
        }
        if let Some((path, config)) = &self.agent {
            let user = format!("system:node:{}", config.node_name);
            identities.push(component(user, &["system:nodes"], path));
        }
        identities
    }

    /// Starts every planned component on `tasks`; each stops when `shutdown` is cancelled.
    async fn spawn(
        self,
        tasks: &mut JoinSet<()>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        // Host and process, so two servers on one host are distinct candidates.
        let identity = format!("{}_{}", host_name()?, std::process::id());
        if let Some(path) = self.scheduler {
            let client = gantry_client::connect(&path).await?;
            let election = elect(client.clone(), "kube-scheduler", &identity);
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                election
                    .run(shutdown, |leading| async move {
                        if let Err(err) = gantry_scheduler::run(client, leading).await {
                            tracing::error!(%err, "scheduler stopped");
                        }
                    })
                    .await;
            });
        }
        if let Some((path, config)) = self.controller_manager {
            let client = gantry_client::connect(&path).await?;
            let election = elect(client.clone(), "kube-controller-manager", &identity);
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                election
                    .run(shutdown, |leading| {
                        gantry_controllers::run_all_with(client, config, leading)
                    })
                    .await;
            });
        }
        if let Some((path, mut config)) = self.agent {
            let client = gantry_client::connect(&path).await?;
            config.kubelet_client_ca = gantry_agent::kubelet_api::cluster_ca(&path).await?;
            tasks.spawn(async move {
                if let Err(err) = gantry_agent::run(client, config, shutdown).await {
                    tracing::error!(%err, "node agent stopped");
                }
            });
        }
        Ok(())
    }
}

fn elect(client: kube::Client, lease: &str, identity: &str) -> LeaderElection {
    LeaderElection::new(
        client,
        "kube-system",
        lease,
        identity,
        LeaseTiming::default(),
    )
}

fn run_server(args: ServerArgs, global: &GlobalOptions) -> anyhow::Result<()> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| global.root.join("server"));
    let kubeconfig_output = args
        .kubeconfig_output
        .clone()
        .unwrap_or_else(|| data_dir.join("admin.kubeconfig"));
    let components = LocalComponents::plan(&args, &data_dir, global)?;
    let config = ServerConfig {
        data_dir,
        bind_address: args.bind_address,
        https_port: args.https_port,
        token_file: args.token_file,
        kubeconfig_output: kubeconfig_output.clone(),
        tls_sans: args.tls_san,
        components: components.identities(),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(serve(config, components, kubeconfig_output))
}

/// Runs the API server and, once it listens, the local components; on SIGINT/SIGTERM stops
/// the components first (they still need the API to finish cleanly), then the server.
async fn serve(
    config: ServerConfig,
    components: LocalComponents,
    kubeconfig_output: PathBuf,
) -> anyhow::Result<()> {
    let (listening_tx, listening) = oneshot::channel();
    let announce = Box::new(move |address| {
        println!("Kubeconfig written to {}", kubeconfig_output.display());
        println!("Serving on https://{address}");
        let _ = listening_tx.send(());
    });
    let stop_server = CancellationToken::new();
    let mut server = tokio::spawn(gantry_apiserver::run(
        config,
        announce,
        stop_server.clone().cancelled_owned(),
    ));
    let stop_components = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let until_signal = async {
        // An error before listening leaves `listening` dropped; the server's result says why.
        if listening.await.is_ok() {
            components
                .spawn(&mut tasks, stop_components.clone())
                .await?;
        }
        termination_signal().await;
        anyhow::Ok(())
    };
    let outcome = tokio::select! {
        outcome = until_signal => outcome,
        finished = &mut server => {
            stop_components.cancel();
            return finished.context("API server task")?.context("API server");
        }
    };
    stop_components.cancel();
    if tokio::time::timeout(COMPONENT_STOP_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!("components did not stop in time; aborting them");
        tasks.abort_all();
    }
    stop_server.cancel();
    server
        .await
        .context("API server task")?
        .context("API server")?;
    outcome
}

fn run_agent(args: AgentArgs, global: &GlobalOptions) -> anyhow::Result<()> {
    let node_name = match args.node_name.clone() {
        Some(name) => name,
        None => host_name()?,
    };
    let mut config = AgentConfig::new(
        node_name.clone(),
        global.root.clone(),
        shim_command(global)?,
    );
    config.kubelet_port = args.kubelet_port;
    config.node_ip = args.node_ip;
    if args.pod_network == PodNetworkBackend::Bridge {
        config.pod_network = Some(PodNetworkSettings::new(args.cluster_cidr));
        enable_cluster_dns(&mut config);
        config.proxy = Some(ProxySettings::new(args.cluster_cidr));
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let kubeconfig = match args.kubeconfig {
            Some(path) => path,
            None => node_credentials(&args, &global.root, &node_name).await?,
        };
        let client = gantry_client::connect(&kubeconfig).await?;
        config.kubelet_client_ca = gantry_agent::kubelet_api::cluster_ca(&kubeconfig).await?;
        let shutdown = CancellationToken::new();
        let agent = tokio::spawn(gantry_agent::run(client, config, shutdown.clone()));
        termination_signal().await;
        shutdown.cancel();
        agent
            .await
            .context("node agent task")?
            .context("node agent")
    })
}

/// Points the node's pods at the cluster DNS, which its agent serves itself on
/// the `kube-system/kube-dns` address (created by the API server at start).
fn enable_cluster_dns(config: &mut AgentConfig) {
    config.cluster_dns = Some(gantry_agent::dns::CLUSTER_DNS_IP);
    config.cluster_domain = "cluster.local".into();
}

/// The node's kubeconfig under `<root>/agent`, obtained with the join token on first start
/// and reused afterwards (like k3s, a node keeps its identity across restarts).
async fn node_credentials(
    args: &AgentArgs,
    root: &Path,
    node_name: &str,
) -> anyhow::Result<PathBuf> {
    let path = root.join("agent").join("node.kubeconfig");
    if path.exists() {
        return Ok(path);
    }
    let server = args
        .server
        .as_deref()
        .context("--server is required to join")?;
    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => token.clone(),
        (None, Some(file)) => {
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
        }
        (None, None) => anyhow::bail!("--token or --token-file is required to join"),
    };
    let yaml = gantry_client::request_node_kubeconfig(server, token.trim(), node_name).await?;
    write_private(&path, &yaml).with_context(|| format!("writing {}", path.display()))?;
    println!("Joined {server} as node {node_name}");
    Ok(path)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// How long components get to finish their work after SIGTERM before they are aborted.
const COMPONENT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

fn host_name() -> anyhow::Result<String> {
    let name = nix::unistd::gethostname().context("reading the host name")?;
    Ok(name.to_string_lossy().to_lowercase())
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
