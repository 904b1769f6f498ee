//! Container commands, as Docker names them: run, create, start, ps, logs, exec,
//! stop, kill, wait, rm, inspect — a thin layer over [`gantry_runtime::Runtime`].

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use gantry_image::{ImageError, ImageStore, PullOptions};
use gantry_runtime::{
    BindMount, Container, CreateOptions, ExecOptions, NetworkMode, Resources, Runtime, ShimCommand,
    Status,
};
use serde_json::json;

use crate::GlobalOptions;

#[derive(Subcommand)]
pub enum ContainerCommand {
    /// Create and run a new container from an image.
    Run(RunArgs),
    /// Create a new container without starting it.
    Create(CreateArgs),
    /// Start one or more stopped containers.
    Start(StartArgs),
    /// List containers.
    Ps(PsArgs),
    /// Fetch the logs of a container.
    Logs(LogsArgs),
    /// Execute a command in a running container.
    Exec(ExecArgs),
    /// Stop one or more running containers (SIGTERM, then SIGKILL after the grace period).
    Stop(StopArgs),
    /// Kill one or more running containers.
    Kill(KillArgs),
    /// Block until one or more containers stop, then print their exit codes.
    Wait(NamesArgs),
    /// Remove one or more containers.
    Rm(RmArgs),
    /// Display detailed information on containers (or images).
    Inspect(NamesArgs),
    /// Internal: the monitor process that owns one container.
    #[command(name = "container-shim", hide = true)]
    ContainerShim(ShimArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// Assign a name to the container.
    #[arg(long)]
    name: Option<String>,
    /// Set environment variables (KEY=value, or KEY to copy it from this environment).
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Bind mount a volume: /host/path:/container/path[:ro|rw].
    #[arg(short, long = "volume")]
    volume: Vec<String>,
    /// Memory limit (e.g. 512m, 1g).
    #[arg(short, long)]
    memory: Option<String>,
    /// Number of CPUs (e.g. 1.5).
    #[arg(long)]
    cpus: Option<f64>,
    /// CPU shares (relative weight).
    #[arg(short = 'c', long)]
    cpu_shares: Option<u64>,
    /// Tune container pids limit (-1 for unlimited).
    #[arg(long, allow_negative_numbers = true)]
    pids_limit: Option<i64>,
    /// Mount the container's root filesystem as read only.
    #[arg(long)]
    read_only: bool,
    /// Container host name.
    #[arg(long)]
    hostname: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Network mode: none (an empty namespace with loopback) or host.
    #[arg(long, alias = "net", default_value = "none")]
    network: String,
    /// Automatically remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Keep STDIN open even if not attached.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    tty: bool,
    /// Optional parent cgroup for the container (default /gantry).
    #[arg(long)]
    cgroup_parent: Option<String>,
    /// Give extended privileges: every capability and device, no seccomp or masked paths.
    #[arg(long)]
    privileged: bool,
    /// Add Linux capabilities (e.g. NET_ADMIN, ALL).
    #[arg(long)]
    cap_add: Vec<String>,
    /// Drop Linux capabilities (e.g. CHOWN, ALL).
    #[arg(long)]
    cap_drop: Vec<String>,
    /// Add additional groups to join (numeric GIDs).
    #[arg(long)]
    group_add: Vec<u32>,
    /// The image to run.
    image: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Args)]
pub struct RunArgs {
    /// Run container in background and print container ID.
    #[arg(short, long)]
    detach: bool,
    #[command(flatten)]
    create: CreateArgs,
}

#[derive(Args)]
pub struct StartArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    all: bool,
    /// Only display container IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Don't truncate output.
    #[arg(long)]
    no_trunc: bool,
}

#[derive(Args)]
pub struct LogsArgs {
    /// Follow log output.
    #[arg(short, long)]
    follow: bool,
    /// Number of lines to show from the end of the logs ("all" for every line).
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show timestamps.
    #[arg(short, long)]
    timestamps: bool,
    container: String,
}

#[derive(Args)]
pub struct ExecArgs {
    /// Keep STDIN open.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    tty: bool,
    /// Set environment variables.
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Username or UID.
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// With -t, send the terminal to this unix socket instead of relaying it
    /// (runc's --console-socket; the node agent relays and resizes it).
    #[arg(long, hide = true, requires = "tty")]
    console_socket: Option<PathBuf>,
    container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

#[derive(Args)]
pub struct StopArgs {
    /// Seconds to wait before killing the container.
    #[arg(short = 't', long = "time", alias = "timeout", default_value_t = 10)]
    time: u64,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct KillArgs {
    /// Signal to send to the container.
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL).
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct ShimArgs {
    id: String,
}

/// The container runtime under `global.root`, launching monitors by re-executing this binary.
pub fn runtime(global: &GlobalOptions) -> anyhow::Result<Runtime> {
    Ok(Runtime::open(&global.root, shim_command(global)?)?)
}

/// How the runtime starts a container's monitor: this binary's `container-shim`, under the
/// same root, so the CLI and the node agent supervise containers the same way.
pub fn shim_command(global: &GlobalOptions) -> anyhow::Result<ShimCommand> {
    let program = std::env::current_exe().context("locating the gantry executable")?;
    let args = vec![
        "--root".into(),
        global.root.clone().into_os_string(),
        "container-shim".into(),
    ];
    Ok(ShimCommand { program, args })
}

impl ContainerCommand {
    /// Runs the command to completion.
    pub fn run(self, global: &GlobalOptions) -> anyhow::Result<()> {
        let runtime = runtime(global)?;
        match self {
            ContainerCommand::Run(args) => run(&runtime, global, args),
            ContainerCommand::Create(args) => {
                let container = create(&runtime, global, args, false)?;
                println!("{}", container.config.id);
                Ok(())
            }
            ContainerCommand::Start(args) => for_each(&args.containers, |name| {
                runtime.start(name)?;
                println!("{name}");
                Ok(())
            }),
            ContainerCommand::Ps(args) => ps(&runtime, args),
            ContainerCommand::Logs(args) => logs(&runtime, args),
            ContainerCommand::Exec(args) => exec(&runtime, args),
            ContainerCommand::Stop(args) => for_each(&args.containers, |name| {
                runtime.stop(name, Duration::from_secs(args.time))?;
                println!("{name}");
                Ok(())
            }),
            ContainerCommand::Kill(args) => {
                let signal = parse_signal(&args.signal)?;
                for_each(&args.containers, |name| {
                    runtime.kill(name, signal)?;
                    println!("{name}");
                    Ok(())
                })
            }
            ContainerCommand::Wait(args) => for_each(&args.names, |name| {
                let container = runtime.wait(name)?;
                println!("{}", container.state.exit_code.unwrap_or(0));
                Ok(())
            }),
            ContainerCommand::Rm(args) => for_each(&args.containers, |name| {
                runtime.remove(name, args.force)?;
                println!("{name}");
                Ok(())
            }),
            ContainerCommand::Inspect(args) => inspect(&runtime, global, args),
            ContainerCommand::ContainerShim(args) => Ok(runtime.run_shim(&args.id)?),
        }
    }
}

/// Applies `action` to every name, reporting every failure like Docker, failing if any did.
fn for_each(
    names: &[String],
    mut action: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut failed = 0;
    for name in names {
        if let Err(error) = action(name) {
            eprintln!("Error response from daemon: {error:#}");
            failed += 1;
        }
    }
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn create(
    runtime: &Runtime,
    global: &GlobalOptions,
    args: CreateArgs,
    client_removes: bool,
) -> anyhow::Result<Container> {
    let network = match args.network.as_str() {
        "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        other => bail!("network {other} not found (supported: none, host)"),
    };
    let resources = Resources {
        memory_bytes: args.memory.as_deref().map(parse_bytes).transpose()?,
        nano_cpus: args.cpus.map(parse_cpus).transpose()?,
        cpu_shares: args.cpu_shares,
        pids_limit: args.pids_limit.filter(|&limit| limit > 0),
    };
    let mounts = args
        .volume
        .iter()
        .map(|spec| parse_volume(spec))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let env = args
        .env
        .iter()
        .filter_map(|kv| match kv.split_once('=') {
            Some(_) => Some(kv.clone()),
            None => std::env::var(kv).ok().map(|value| format!("{kv}={value}")),
        })
        .collect();
    let image = resolve_image(global, &args.image)?;
    let entrypoint = args
        .entrypoint
        .map(|e| if e.is_empty() { vec![] } else { vec![e] });
    Ok(runtime.create(CreateOptions {
        name: args.name,
        image: args.image,
        image_id: image.id.as_str().to_owned(),
        lowerdirs: image.layers,
        image_config: image.config.config().clone(),
        entrypoint,
        cmd: args.command,
        env,
        working_dir: args.workdir,
        user: args.user,
        hostname: args.hostname,
        mounts,
        resources,
        network,
        read_only: args.read_only,
        auto_remove: args.rm && !client_removes,
        tty: args.tty,
        open_stdin: args.interactive,
        stdin_once: false,
        console_size: args.tty.then(terminal_size).flatten(),
        cgroup_parent: args.cgroup_parent,
        security: gantry_runtime::Security {
            privileged: args.privileged,
            cap_add: args.cap_add,
            cap_drop: args.cap_drop,
            supplementary_groups: args.group_add,
            ..Default::default()
        },
    })?)
}

/// Finds the image locally, pulling it like Docker when it is missing.
fn resolve_image(global: &GlobalOptions, reference: &str) -> anyhow::Result<gantry_image::Image> {
    let store = ImageStore::open(&global.root).context("opening the image store")?;
    match store.resolve(reference) {
        Err(ImageError::NotFound(_)) => {
            eprintln!("Unable to find image '{reference}' locally");
            // The async runtime lives only for the pull: container processes are
            // forked later from a single-threaded process.
            let tokio = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(tokio.block_on(store.resolve_or_pull(reference, &PullOptions::default()))?)
        }
        other => Ok(other?),
    }
}

fn run(runtime: &Runtime, global: &GlobalOptions, args: RunArgs) -> anyhow::Result<()> {
    let auto_remove = args.create.rm;
    let proxy_signals = !args.detach && block_proxied_signals();
    let (interactive, tty) = (args.create.interactive, args.create.tty);
    // In the foreground the CLI removes the container itself, after reading its exit code.
    let container = match create(runtime, global, args.create, !args.detach) {
        Ok(container) => container,
        Err(error) => {
            // Docker's code for "the container could not even be created".
            eprintln!("gantry: {error:#}");
            std::process::exit(125);
        }
    };
    let id = container.config.id.clone();
    let started = runtime.start(&id);
    if args.detach {
        started?;
        println!("{id}");
        return Ok(());
    }
    if let Err(error) = started {
        let code = error.exit_code();
        if auto_remove {
            let _ = runtime.remove(&id, true);
        }
        eprintln!("gantry: Error response from daemon: {error}.");
        std::process::exit(code);
    }
    if proxy_signals {
        forward_signals(runtime, &id);
    }
    // Raw mode only for the attached session; restored before we exit.
    let raw = (tty && interactive).then(RawTerminal::enter).flatten();
    if interactive {
        let mut socket = runtime.attach_stdin(&id)?;
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut socket);
            let _ = socket.shutdown(std::net::Shutdown::Write);
        });
    }
    let code = follow_output(runtime, &id, 0, None, false);
    drop(raw);
    let code = code?;
    if auto_remove {
        runtime.remove(&id, true)?;
    }
    std::process::exit(code);
}

/// Signals the attached CLI passes on to its container, like Docker's sig-proxy.
fn proxied_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        set.add(signal);
    }
    set
}

/// Blocks the proxied signals in this thread and every thread it starts later;
/// call before any thread exists. (Spawned programs get a clean mask from std.)
fn block_proxied_signals() -> bool {
    use nix::sys::signal::{SigmaskHow, pthread_sigmask};
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&proxied_signals()), None).is_ok()
}

/// Passes SIGINT, SIGTERM, … received by the CLI to the container instead of dying.
fn forward_signals(runtime: &Runtime, id: &str) {
    let runtime = runtime.clone();
    let id = id.to_owned();
    std::thread::spawn(move || {
        while let Ok(signal) = proxied_signals().wait() {
            let _ = runtime.kill(&id, signal);
        }
    });
}

/// Copies the container's log to our stdout/stderr until it exits; returns its exit code.
fn follow_output(
    runtime: &Runtime,
    id: &str,
    mut offset: u64,
    tail: Option<usize>,
    timestamps: bool,
) -> anyhow::Result<i32> {
    let mut first = true;
    loop {
        let before = runtime.get(id)?;
        let (mut entries, next) = runtime.logs(id, offset)?;
        offset = next;
        if first {
            if let Some(n) = tail {
                entries = entries.split_off(entries.len().saturating_sub(n));
            }
            first = false;
        }
        let had_output = !entries.is_empty();
        print_entries(&entries, timestamps)?;
        if before.state.status == Status::Exited && !had_output {
            return Ok(before.state.exit_code.unwrap_or(0));
        }
        if !had_output {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn print_entries(entries: &[gantry_runtime::LogEntry], timestamps: bool) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    for entry in entries {
        let out: &mut dyn Write = if entry.stream == "stderr" {
            &mut stderr
        } else {
            &mut stdout
        };
        if timestamps {
            write!(out, "{} ", entry.time)?;
        }
        out.write_all(entry.text.as_bytes())?;
    }
    stdout.flush()?;
    stderr.flush()?;
    Ok(())
}

fn logs(runtime: &Runtime, args: LogsArgs) -> anyhow::Result<()> {
    let tail = match args.tail.as_str() {
        "all" => None,
        n => Some(
            n.parse::<usize>()
                .with_context(|| format!("invalid --tail value {n:?}"))?,
        ),
    };
    let id = runtime.get(&args.container)?.config.id;
    if args.follow {
        follow_output(runtime, &id, 0, tail, args.timestamps)?;
        return Ok(());
    }
    let (mut entries, _) = runtime.logs(&id, 0)?;
    if let Some(n) = tail {
        entries = entries.split_off(entries.len().saturating_sub(n));
    }
    print_entries(&entries, args.timestamps)
}

fn exec(runtime: &Runtime, args: ExecArgs) -> anyhow::Result<()> {
    let raw = (args.tty && args.interactive)
        .then(RawTerminal::enter)
        .flatten();
    let result = runtime.exec(
        &args.container,
        ExecOptions {
            args: args.command,
            env: args.env,
            user: args.user,
            working_dir: args.workdir,
            interactive: args.interactive,
            tty: args.tty,
            console_size: args.tty.then(terminal_size).flatten(),
            console_socket: args.console_socket,
        },
    );
    drop(raw);
    let code = match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("OCI runtime exec failed: {error}");
            // Docker: 126 when the process cannot be started, 127 when it is not found.
            match error.exit_code() {
                125 => 126,
                code => code,
            }
        }
    };
    std::process::exit(code);
}

/// The size of the terminal on our stdout, as (rows, columns).
fn terminal_size() -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ fills a winsize we own; fd 1 is ours.
    let mut size: LibcWinsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { nix::libc::ioctl(1, nix::libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_row > 0).then_some((size.ws_row, size.ws_col))
}

type LibcWinsize = nix::libc::winsize;

/// Our terminal in raw mode while attached to a container's terminal, so keys
/// (Ctrl-C included) go to the container; restores the old mode on drop.
struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}

fn ps(runtime: &Runtime, args: PsArgs) -> anyhow::Result<()> {
    let containers: Vec<Container> = runtime
        .list()?
        .into_iter()
        .filter(|c| args.all || c.state.status == Status::Running)
        .collect();
    if args.quiet {
        for c in &containers {
            println!(
                "{}",
                if args.no_trunc {
                    &c.config.id[..]
                } else {
                    &c.config.id[..12]
                }
            );
        }
        return Ok(());
    }
    let now = jiff::Timestamp::now();
    let rows: Vec<[String; 7]> = containers
        .iter()
        .map(|c| {
            let command = shell_words(&c.config.args);
            let command = if args.no_trunc || command.chars().count() <= 20 {
                command
            } else {
                format!("{}…", command.chars().take(19).collect::<String>())
            };
            [
                if args.no_trunc {
                    c.config.id.clone()
                } else {
                    c.config.id[..12].to_owned()
                },
                c.config.image.clone(),
                format!("\"{command}\""),
                format!(
                    "{} ago",
                    human_duration(now.duration_since(c.config.created))
                ),
                status_text(c, now),
                String::new(),
                c.config.name.clone(),
            ]
        })
        .collect();
    let header = [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    Ok(())
}

fn status_text(c: &Container, now: jiff::Timestamp) -> String {
    match c.state.status {
        Status::Created => "Created".to_owned(),
        Status::Running => {
            let since = c.state.started_at.unwrap_or(c.config.created);
            format!("Up {}", human_duration(now.duration_since(since)))
        }
        Status::Exited => {
            let since = c.state.finished_at.unwrap_or(c.config.created);
            format!(
                "Exited ({}) {} ago",
                c.state.exit_code.unwrap_or(0),
                human_duration(now.duration_since(since))
            )
        }
    }
}

/// Docker's `units.HumanDuration`.
fn human_duration(duration: jiff::SignedDuration) -> String {
    let seconds = duration.as_secs().max(0);
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match seconds {
        s if s < 1 => "Less than a second".to_owned(),
        1 => "1 second".to_owned(),
        s if s < 60 => plural(s, "second"),
        s if s < 120 => "About a minute".to_owned(),
        s if s < 3600 => plural(s / 60, "minute"),
        s if s < 7200 => "About an hour".to_owned(),
        s if s < 48 * 3600 => plural(s / 3600, "hour"),
        s if s < 14 * 86400 => plural(s / 86400, "day"),
        s if s < 90 * 86400 => plural(s / (7 * 86400), "week"),
        s if s < 730 * 86400 => plural(s / (30 * 86400), "month"),
        s => plural(s / (365 * 86400), "year"),
    }
}

fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.is_empty() || a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn inspect(runtime: &Runtime, global: &GlobalOptions, args: NamesArgs) -> anyhow::Result<()> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for name in &args.names {
        match runtime.get(name) {
            Ok(container) => found.push(inspect_json(&container, &global.root)),
            Err(gantry_runtime::Error::NotFound(_)) => {
                let store = ImageStore::open(&global.root).context("opening the image store")?;
                match store.inspect(name) {
                    Ok(image) => found.push(image),
                    Err(ImageError::NotFound(_)) => missing.push(name.clone()),
                    Err(error) => return Err(error.into()),
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
    println!("{}", serde_json::to_string_pretty(&found)?);
    if !missing.is_empty() {
        bail!("No such object: {}", missing.join(", "));
    }
    Ok(())
}

fn inspect_json(c: &Container, root: &std::path::Path) -> serde_json::Value {
    let zero = "0001-01-01T00:00:00Z".to_owned();
    let time =
        |t: Option<jiff::Timestamp>| t.map(|t| t.to_string()).unwrap_or_else(|| zero.clone());
    let status = match c.state.status {
        Status::Created => "created",
        Status::Running => "running",
        Status::Exited => "exited",
    };
    let dir = root.join("containers").join(&c.config.id);
    let lowerdir: Vec<String> = c
        .config
        .lowerdirs
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let resources = &c.config.resources;
    json!({
        "Id": c.config.id,
        "Created": c.config.created.to_string(),
        "Path": c.config.args.first(),
        "Args": c.config.args.get(1..).unwrap_or_default(),
        "State": {
            "Status": status,
            "Running": c.state.status == Status::Running,
            "Paused": false,
            "Restarting": false,
            "OOMKilled": c.state.oom_killed,
            "Dead": false,
            "Pid": c.state.pid.unwrap_or(0),
            "ExitCode": c.state.exit_code.unwrap_or(0),
            "Error": c.state.error.clone().unwrap_or_default(),
            "StartedAt": time(c.state.started_at),
            "FinishedAt": time(c.state.finished_at),
        },
        "Image": c.config.image_id,
        "LogPath": dir.join("container.log"),
        "HostnamePath": dir.join("hostname"),
        "HostsPath": dir.join("hosts"),
        "ResolvConfPath": dir.join("resolv.conf"),
        "Name": format!("/{}", c.config.name),
        "Driver": "overlay2",
        "GraphDriver": {
            "Name": "overlay2",
            "Data": {
                "LowerDir": lowerdir.join(":"),
                "UpperDir": dir.join("upper"),
                "WorkDir": dir.join("work"),
                "MergedDir": dir.join("rootfs"),
            }
        },
        "Mounts": c.config.mounts.iter().map(|m| json!({
            "Type": "bind",
            "Source": m.source,
            "Destination": m.destination,
            "Mode": if m.read_only { "ro" } else { "" },
            "RW": !m.read_only,
            "Propagation": "rprivate",
        })).collect::<Vec<_>>(),
        "HostConfig": {
            "Binds": c.config.mounts.iter().map(|m| format!("{}:{}{}", m.source.display(), m.destination.display(), if m.read_only { ":ro" } else { "" })).collect::<Vec<_>>(),
            "NetworkMode": match c.config.network { NetworkMode::None => "none", NetworkMode::Host => "host", NetworkMode::Join(_) => "container" },
            "AutoRemove": c.config.auto_remove,
            "ReadonlyRootfs": c.config.read_only,
            "Memory": resources.memory_bytes.unwrap_or(0),
            "MemorySwap": resources.memory_bytes.unwrap_or(0),
            "NanoCpus": resources.nano_cpus.unwrap_or(0),
            "CpuShares": resources.cpu_shares.unwrap_or(0),
            "PidsLimit": resources.pids_limit,
            "CapAdd": null,
            "CapDrop": null,
            "MaskedPaths": gantry_runtime::MASKED_PATHS,
            "ReadonlyPaths": gantry_runtime::READONLY_PATHS,
        },
        "Config": {
            "Hostname": c.config.hostname,
            "User": c.config.user,
            "Env": c.config.env,
            "Cmd": c.config.args,
            "Image": c.config.image,
            "WorkingDir": c.config.working_dir,
            "Tty": false,
            "OpenStdin": false,
        },
    })
}

/// `512m`, `1g`, `100k`, `1048576`, `64mb` → bytes.
fn parse_bytes(text: &str) -> anyhow::Result<i64> {
    let lower = text.trim().to_ascii_lowercase();
    // "64mb" means "64m"; a bare trailing "b" means bytes.
    let lower = match lower.strip_suffix('b') {
        Some(rest) if rest.ends_with(['k', 'm', 'g', 't']) => rest.to_owned(),
        _ => lower,
    };
    let lower = lower.as_str();
    let (digits, multiplier) = match lower.char_indices().last() {
        Some((i, 'k')) => (&lower[..i], 1i64 << 10),
        Some((i, 'm')) => (&lower[..i], 1 << 20),
        Some((i, 'g')) => (&lower[..i], 1 << 30),
        Some((i, 't')) => (&lower[..i], 1 << 40),
        Some((i, 'b')) => (&lower[..i], 1),
        _ => (lower, 1),
    };
    let value: f64 = digits
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid size: {text:?}"))?;
    let bytes = (value * multiplier as f64) as i64;
    if bytes < 6 * 1024 * 1024 {
        bail!("Minimum memory limit allowed is 6MB");
    }
    Ok(bytes)
}

fn parse_cpus(cpus: f64) -> anyhow::Result<i64> {
    let online = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    if cpus.is_nan() || cpus <= 0.0 || cpus > online {
        bail!(
            "range of CPUs is from 0.01 to {online:.2}, as there are only {online} CPUs available"
        );
    }
    Ok((cpus * 1e9) as i64)
}

fn parse_volume(spec: &str) -> anyhow::Result<BindMount> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, destination, read_only) = match parts.as_slice() {
        [s, d] => (*s, *d, false),
        [s, d, "ro"] => (*s, *d, true),
        [s, d, "rw"] => (*s, *d, false),
        _ => bail!("invalid volume specification: '{spec}'"),
    };
    if !source.starts_with('/') {
        bail!(
            "invalid volume specification: '{spec}': only absolute host paths are supported (named volumes are not)"
        );
    }
    if !destination.starts_with('/') {
        bail!("invalid volume specification: '{spec}': mount path must be absolute");
    }
    let source = PathBuf::from(source);
    if !source.exists() {
        std::fs::create_dir_all(&source)
            .with_context(|| format!("creating {}", source.display()))?;
    }
    Ok(BindMount {
        source,
        destination: PathBuf::from(destination),
        read_only,
    })
}

fn parse_signal(name: &str) -> anyhow::Result<nix::sys::signal::Signal> {
    use std::str::FromStr;
    if let Ok(number) = name.parse::<i32>() {
        return Ok(nix::sys::signal::Signal::try_from(number)?);
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&full).map_err(|_| anyhow::anyhow!("invalid signal: {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!(parse_bytes("512m").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("64MB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("10485760").unwrap(), 10 << 20);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("1k").is_err());
    }

    #[test]
    fn volumes_and_signals_parse() {
        let m = parse_volume("/tmp:/data:ro").unwrap();
        assert!(m.read_only && m.destination == Path::new("/data"));
        assert!(parse_volume("named:/data").is_err());
        assert_eq!(
            parse_signal("TERM").unwrap(),
            nix::sys::signal::Signal::SIGTERM
        );
        assert_eq!(
            parse_signal("9").unwrap(),
            nix::sys::signal::Signal::SIGKILL
        );
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(
            human_duration(jiff::SignedDuration::from_secs(5)),
            "5 seconds"
        );
        assert_eq!(
            human_duration(jiff::SignedDuration::from_secs(90)),
            "About a minute"
        );
        assert_eq!(
            human_duration(jiff::SignedDuration::from_secs(7200)),
            "2 hours"
        );
    }
}
