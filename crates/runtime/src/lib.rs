//! Gantry's container runtime: OCI runtime specs from images and options, run
//! with youki's libcontainer.
//!
//! A [`Runtime`] keeps each container under `<root>/containers/<id>/`
//! (`config.json`, `state.json`, the JSON-lines `container.log`, the overlay
//! `upper`/`work` dirs and the `rootfs` mount point). Starting a container
//! launches a monitor process (the "shim", see [`Runtime::run_shim`]) that owns
//! it until it exits, so callers (the CLI, the node agent) can come and go.
//! The runtime knows nothing of image stores: callers pass layer directories
//! and the image's OCI config.

#![warn(missing_docs)]

mod attach;
mod netns;
mod shim;
mod spec;
mod state;
mod tty;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

pub use attach::{AttachFrame, FRAME_HEADER_LEN, FrameError, MAX_PAYLOAD};
pub use netns::{create_network_namespace, remove_network_namespace};
pub use tty::{receive_terminal, set_terminal_size};
pub use spec::{
    ALL_CAPABILITIES, DEFAULT_CAPABILITIES, DEFAULT_CGROUP_PARENT, MASKED_PATHS, ProcessUser,
    READONLY_PATHS, SECCOMP_DENIED_SYSCALLS, Security, capabilities, cgroups_path,
    host_capabilities, resolve_user,
};
pub use state::{
    BindMount, Container, ContainerConfig, ContainerState, NetworkMode, Resources, Status,
};

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong running containers; messages read like Docker's.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    /// A state file could not be parsed.
    #[error("corrupt container file {0}: {1}")]
    Corrupt(PathBuf, String),
    /// No container has that name or ID (prefix).
    #[error("No such container: {0}")]
    NotFound(String),
    /// An ID prefix matches several containers.
    #[error("multiple containers match {0}: use more of the ID")]
    Ambiguous(String),
    /// The name is taken.
    #[error(
        "Conflict. The container name \"/{0}\" is already in use by container \"{1}\". You have to remove (or rename) that container to be able to reuse that name."
    )]
    NameInUse(String, String),
    /// Neither the image nor the options give a command.
    #[error("no command specified")]
    NoCommand,
    /// The program is not in the container's filesystem.
    #[error("failed to create task for container: {0}: unknown")]
    ExecutableNotFound(String),
    /// `--user` names nobody in the image.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    /// The container is running and the operation needs it stopped.
    #[error(
        "cannot remove container {0}: container is running: stop the container before removing or force remove"
    )]
    Running(String),
    /// The operation needs a running container.
    #[error("container {0} is not running")]
    NotRunning(String),
    /// The container is already running.
    #[error("container {0} is already running")]
    AlreadyRunning(String),
    /// The OCI spec could not be built or saved.
    #[error("invalid runtime spec: {0}")]
    Spec(String),
    /// Mounting the root filesystem failed.
    #[error("mounting the root filesystem at {0}: {1}")]
    Mount(PathBuf, String),
    /// The network namespace could not be set up.
    #[error("network setup: {0}")]
    Network(String),
    /// The container's process could not be started; carries Docker's exit code for it.
    #[error("{0}")]
    StartFailed(String, i32),
    /// Waiting for a state change took too long.
    #[error("timed out waiting for container {0}")]
    Timeout(String),
    /// libcontainer refused.
    #[error("OCI runtime: {0}")]
    Oci(#[from] libcontainer::error::LibcontainerError),
}

impl Error {
    pub(crate) fn io(path: &Path, error: std::io::Error) -> Error {
        Error::Io(path.to_owned(), error)
    }

    /// The exit code Docker reports when a container fails this way before running.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::ExecutableNotFound(_) => 127,
            Error::UnknownUser(_) => 126,
            Error::StartFailed(_, code) => *code,
            _ => 125,
        }
    }
}

/// How to launch the monitor process: a program and leading arguments; the
/// container ID is appended. The `gantry` binary uses itself with a hidden
/// `container-shim` subcommand.
#[derive(Clone, Debug)]
pub struct ShimCommand {
    /// The executable.
    pub program: PathBuf,
    /// Arguments before the container ID.
    pub args: Vec<OsString>,
}

/// What a caller asks for when creating a container; the image's config fills gaps.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// Container name; generated when `None`.
    pub name: Option<String>,
    /// The image as the user named it.
    pub image: String,
    /// The image's ID.
    pub image_id: String,
    /// Layer directories, bottom first.
    pub lowerdirs: Vec<PathBuf>,
    /// The image's runtime config (Entrypoint, Cmd, Env, WorkingDir, User).
    pub image_config: Option<oci_spec::image::Config>,
    /// Overrides the image's Entrypoint (and drops its Cmd, as Docker does).
    pub entrypoint: Option<Vec<String>>,
    /// Overrides the image's Cmd when non-empty.
    pub cmd: Vec<String>,
    /// `KEY=value` added to (and overriding) the image's.
    pub env: Vec<String>,
    /// Overrides the image's WorkingDir.
    pub working_dir: Option<String>,
    /// Overrides the image's User.
    pub user: Option<String>,
    /// Defaults to the first 12 digits of the ID.
    pub hostname: Option<String>,
    /// Bind mounts.
    pub mounts: Vec<BindMount>,
    /// cgroup limits.
    pub resources: Resources,
    /// Network namespace choice.
    pub network: NetworkMode,
    /// Read-only root filesystem.
    pub read_only: bool,
    /// Remove when it exits.
    pub auto_remove: bool,
    /// Give the process a pseudo-terminal.
    pub tty: bool,
    /// Keep stdin open for [`Runtime::attach_stdin`] and [`Runtime::attach`].
    pub open_stdin: bool,
    /// Close stdin once the first attached client's stdin ends (Kubernetes'
    /// `stdinOnce`, for `kubectl run -i`); ignored with a terminal.
    pub stdin_once: bool,
    /// Initial terminal size as (rows, columns).
    pub console_size: Option<(u16, u16)>,
    /// The cgroup to create the container's under (Docker's `--cgroup-parent`,
    /// a pod's cgroup for the node agent); [`DEFAULT_CGROUP_PARENT`] when `None`.
    pub cgroup_parent: Option<String>,
    /// Capabilities, privilege, supplementary groups and OOM score.
    pub security: Security,
}

/// A process to run in a running container.
#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    /// Program and arguments.
    pub args: Vec<String>,
    /// Extra `KEY=value` pairs.
    pub env: Vec<String>,
    /// User, as for `--user`; the container's when `None`.
    pub user: Option<String>,
    /// Working directory; the container's when `None`.
    pub working_dir: Option<String>,
    /// Pass the caller's stdin (`-i`); otherwise the process reads /dev/null.
    pub interactive: bool,
    /// Run on a new pseudo-terminal relayed to the caller's stdin/stdout (`-t`).
    pub tty: bool,
    /// Initial terminal size as (rows, columns).
    pub console_size: Option<(u16, u16)>,
    /// With `tty`, send the terminal's master to this unix socket (as runc's
    /// `--console-socket`) instead of relaying it: the listener (the node agent)
    /// then relays and resizes it itself.
    pub console_socket: Option<PathBuf>,
}

/// One record of a container's output.
#[derive(Clone, Debug)]
pub struct LogEntry {
    /// `stdout` or `stderr`.
    pub stream: String,
    /// When the shim read it.
    pub time: jiff::Timestamp,
    /// The bytes, newline included when there was one.
    pub text: String,
}

/// Containers on one host, under one root directory.
#[derive(Clone, Debug)]
pub struct Runtime {
    root: PathBuf,
    shim: ShimCommand,
}

impl Runtime {
    /// Opens (creating if needed) the runtime state under `root`.
    pub fn open(root: &Path, shim: ShimCommand) -> Result<Runtime> {
        let containers = root.join("containers");
        fs::create_dir_all(&containers).map_err(|e| Error::io(&containers, e))?;
        Ok(Runtime {
            root: root.to_owned(),
            shim,
        })
    }

    fn dir(&self, id: &str) -> state::ContainerDir {
        state::ContainerDir::new(&self.root, id)
    }

    /// Records a new container; nothing runs until [`Runtime::start`].
    pub fn create(&self, options: CreateOptions) -> Result<Container> {
        let id = random_id();
        let name = match options.name.clone() {
            Some(name) => {
                if let Some(other) = self.list()?.into_iter().find(|c| c.config.name == name) {
                    return Err(Error::NameInUse(name, other.config.id));
                }
                name
            }
            None => self.unused_name()?,
        };
        let image_config = options.image_config.clone().unwrap_or_default();
        let (entrypoint, cmd) = match &options.entrypoint {
            Some(entrypoint) => (entrypoint.clone(), options.cmd.clone()),
            None => (
                image_config.entrypoint().clone().unwrap_or_default(),
                if options.cmd.is_empty() {
                    image_config.cmd().clone().unwrap_or_default()
                } else {
                    options.cmd.clone()
                },
            ),
        };
        let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
        if args.is_empty() {
            return Err(Error::NoCommand);
        }
        let config = ContainerConfig {
            hostname: options
                .hostname
                .clone()
                .unwrap_or_else(|| id[..12].to_owned()),
            id,
            name,
            image: options.image,
            image_id: options.image_id,
            lowerdirs: options.lowerdirs,
            args,
            env: merge_env(
                image_config.env().as_deref().unwrap_or_default(),
                &options.env,
            ),
            working_dir: options
                .working_dir
                .or_else(|| image_config.working_dir().clone())
                .unwrap_or_default(),
            user: options
                .user
                .or_else(|| image_config.user().clone())
                .unwrap_or_default(),
            mounts: options.mounts,
            resources: options.resources,
            network: options.network,
            read_only: options.read_only,
            auto_remove: options.auto_remove,
            tty: options.tty,
            open_stdin: options.open_stdin,
            stdin_once: options.stdin_once,
            console_size: options.console_size,
            cgroup_parent: options.cgroup_parent,
            security: options.security,
            created: jiff::Timestamp::now(),
        };
        let dir = self.dir(&config.id);
        fs::create_dir_all(&dir.path).map_err(|e| Error::io(&dir.path, e))?;
        state::write_json_atomic(&dir.config(), &config)?;
        let state = ContainerState::created();
        dir.write_state(&state)?;
        Ok(Container { config, state })
    }

    /// Starts a created or exited container under a new monitor and returns once
    /// its process runs (or has already failed).
    pub fn start(&self, name_or_id: &str) -> Result<Container> {
        let container = self.get(name_or_id)?;
        let id = container.config.id.clone();
        let dir = self.dir(&id);
        {
            let _lock = dir.lock()?;
            let mut state = dir.read_state()?;
            if state.status == Status::Running || state.shim_pid.is_some_and(process_alive) {
                return Err(Error::AlreadyRunning(container.config.name));
            }
            let shim_log =
                fs::File::create(dir.path.join("shim.log")).map_err(|e| Error::io(&dir.path, e))?;
            let mut command = Command::new(&self.shim.program);
            command
                .args(&self.shim.args)
                .arg(&id)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(shim_log);
            // SAFETY: setsid and sigprocmask are async-signal-safe. The shim leaves
            // our session so terminal hangups and the CLI's exit do not reach it,
            // and starts with no signals blocked whatever the caller blocks (the
            // container inherits the shim's mask).
            unsafe {
                command.pre_exec(|| {
                    nix::unistd::setsid()?;
                    nix::sys::signal::sigprocmask(
                        nix::sys::signal::SigmaskHow::SIG_SETMASK,
                        Some(&nix::sys::signal::SigSet::empty()),
                        None,
                    )?;
                    Ok(())
                });
            }
            let mut child = command
                .spawn()
                .map_err(|e| Error::io(&self.shim.program, e))?;
            state = ContainerState::created();
            state.shim_pid = Some(child.id() as i32);
            dir.write_state(&state)?;
            // Reap the shim when it ends so it never lingers as our zombie.
            std::thread::spawn(move || child.wait());
        }
        let started = self.wait_for(&id, Duration::from_secs(60), |s| {
            s.status != Status::Created
        })?;
        match &started.state.error {
            Some(message) => Err(Error::StartFailed(
                message.clone(),
                started.state.exit_code.unwrap_or(125),
            )),
            None => Ok(started),
        }
    }

    /// The body of the monitor process for `id`: returns when the container has
    /// exited and been cleaned up. Call it from a fresh single-threaded process.
    pub fn run_shim(&self, id: &str) -> Result<()> {
        shim::run(&self.root, id)
    }

    /// Finds a container by name, full ID or unique ID prefix, with its state
    /// made truthful (a dead monitor's container is marked exited and cleaned).
    pub fn get(&self, name_or_id: &str) -> Result<Container> {
        let ids = self.ids()?;
        let id = if ids.iter().any(|id| id == name_or_id) {
            name_or_id.to_owned()
        } else if let Some(id) = ids.iter().find(|id| {
            self.dir(id)
                .read_config()
                .is_ok_and(|c| c.name == name_or_id)
        }) {
            id.clone()
        } else {
            let matches: Vec<&String> = ids
                .iter()
                .filter(|id| !name_or_id.is_empty() && id.starts_with(name_or_id))
                .collect();
            match matches.as_slice() {
                [one] => (*one).clone(),
                [] => return Err(Error::NotFound(name_or_id.to_owned())),
                _ => return Err(Error::Ambiguous(name_or_id.to_owned())),
            }
        };
        self.load(&id).map_err(|e| match e {
            Error::Io(_, ref io) if io.kind() == std::io::ErrorKind::NotFound => {
                Error::NotFound(name_or_id.to_owned())
            }
            other => other,
        })
    }

    fn load(&self, id: &str) -> Result<Container> {
        let dir = self.dir(id);
        let config = dir.read_config()?;
        let mut state = dir.read_state()?;
        let monitor_lost =
            state.status != Status::Exited && state.shim_pid.is_some_and(|pid| !process_alive(pid));
        if monitor_lost {
            let _lock = dir.lock()?;
            state = dir.read_state()?;
            if state.status != Status::Exited
                && state.shim_pid.is_some_and(|pid| !process_alive(pid))
            {
                self.release(&dir, id);
                state.status = Status::Exited;
                state.exit_code.get_or_insert(255);
                state.pid = None;
                state.finished_at.get_or_insert_with(jiff::Timestamp::now);
                dir.write_state(&state)?;
            }
        }
        Ok(Container { config, state })
    }

    /// Kills whatever is left of a container and frees its cgroup and mount.
    fn release(&self, dir: &state::ContainerDir, id: &str) {
        let oci_state = self.root.join("runtime").join(id);
        if !oci_state.join("state.json").exists() {
            shim::unmount_rootfs(dir);
            return;
        }
        if let Ok(mut container) = libcontainer::container::Container::load(oci_state) {
            let _ = container.kill(Signal::SIGKILL, true);
            let _ = container.delete(true);
        }
        shim::unmount_rootfs(dir);
    }

    fn ids(&self) -> Result<Vec<String>> {
        let containers = self.root.join("containers");
        let entries = fs::read_dir(&containers).map_err(|e| Error::io(&containers, e))?;
        Ok(entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect())
    }

    /// Every container, newest first.
    pub fn list(&self) -> Result<Vec<Container>> {
        let mut all: Vec<Container> = self
            .ids()?
            .iter()
            .filter_map(|id| self.load(id).ok())
            .collect();
        all.sort_by_key(|c| std::cmp::Reverse(c.config.created));
        Ok(all)
    }

    /// Whether any container (running or not) was made from `image_id`, so the
    /// image store can refuse to delete it.
    pub fn uses_image(&self, image_id: &str) -> bool {
        self.ids().unwrap_or_default().iter().any(|id| {
            self.dir(id)
                .read_config()
                .is_ok_and(|c| c.image_id == image_id)
        })
    }

    /// Sends `signal` to the container's init process.
    pub fn kill(&self, name_or_id: &str, signal: Signal) -> Result<()> {
        let container = self.get(name_or_id)?;
        let dir = self.dir(&container.config.id);
        let _lock = dir.lock()?;
        let state = dir.read_state()?;
        match (state.status, state.pid) {
            (Status::Running, Some(pid)) => {
                kill(Pid::from_raw(pid), signal).map_err(|e| Error::io(&dir.path, e.into()))
            }
            _ => Err(Error::NotRunning(container.config.name)),
        }
    }

    /// SIGTERM, then SIGKILL when the container outlives `grace`; returns once it exited.
    pub fn stop(&self, name_or_id: &str, grace: Duration) -> Result<Container> {
        let container = self.get(name_or_id)?;
        let id = container.config.id;
        match self.kill(&id, Signal::SIGTERM) {
            Err(Error::NotRunning(_)) => return self.get(&id),
            other => other?,
        }
        match self.wait_for(&id, grace, |s| s.status == Status::Exited) {
            Err(Error::Timeout(_)) => {
                match self.kill(&id, Signal::SIGKILL) {
                    Err(Error::NotRunning(_)) | Ok(()) => {}
                    Err(other) => return Err(other),
                }
                self.wait_for(&id, Duration::from_secs(30), |s| s.status == Status::Exited)
            }
            other => other,
        }
    }

    /// Blocks until the container has exited (and its monitor has cleaned up).
    pub fn wait(&self, name_or_id: &str) -> Result<Container> {
        let id = self.get(name_or_id)?.config.id;
        self.wait_for(&id, Duration::MAX, |s| s.status == Status::Exited)
    }

    fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&ContainerState) -> bool,
    ) -> Result<Container> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let container = match self.load(id) {
                Ok(container) => container,
                // An --rm container vanishes once it exits.
                Err(Error::Io(_, ref e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::NotFound(id.to_owned()));
                }
                Err(e) => return Err(e),
            };
            if done(&container.state) {
                return Ok(container);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::Timeout(id.to_owned()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Deletes a container and everything it owns; `force` kills it first.
    pub fn remove(&self, name_or_id: &str, force: bool) -> Result<()> {
        let container = self.get(name_or_id)?;
        let id = container.config.id.clone();
        if container.state.status == Status::Running {
            if !force {
                return Err(Error::Running(container.config.name));
            }
            let _ = self.kill(&id, Signal::SIGKILL);
            match self.wait_for(&id, Duration::from_secs(30), |s| s.status == Status::Exited) {
                Err(Error::NotFound(_)) => return Ok(()),
                other => other?,
            };
        }
        let dir = self.dir(&id);
        self.release(&dir, &id);
        remove_dir(&dir)
    }

    /// Runs a process inside a running container (same namespaces, cgroup and
    /// filesystem) with the caller's stdio, and returns its exit code.
    pub fn exec(&self, name_or_id: &str, options: ExecOptions) -> Result<i32> {
        let container = self.get(name_or_id)?;
        if container.state.status != Status::Running {
            return Err(Error::NotRunning(container.config.name));
        }
        let config = &container.config;
        let dir = self.dir(&config.id);
        let env = merge_env(&config.env, &options.env);
        let cwd = options
            .working_dir
            .clone()
            .unwrap_or_else(|| config.working_dir.clone());
        let program = options.args.first().ok_or(Error::NoCommand)?;
        if shim::find_executable(&dir.rootfs(), &env, program, &cwd).is_none() {
            return Err(Error::ExecutableNotFound(format!(
                "exec: \"{program}\": executable file not found in $PATH"
            )));
        }
        let user = resolve_user(
            &dir.rootfs(),
            options.user.as_deref().unwrap_or(&config.user),
        )?;
        let env_map: HashMap<String, String> = env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let mut builder = ContainerBuilder::new(config.id.clone(), SyscallType::Linux)
            .with_root_path(self.root.join("runtime"))?;
        // Short, outside the container dir: unix socket paths must fit in 108 bytes.
        let console_path =
            std::env::temp_dir().join(format!("gantry-exec-{}.sock", &random_id()[..12]));
        let console = if options.tty {
            let listener = std::os::unix::net::UnixListener::bind(&console_path)
                .map_err(|e| Error::io(&console_path, e))?;
            builder = builder.with_console_socket(Some(&console_path));
            Some(listener)
        } else {
            None
        };
        if !options.interactive && !options.tty {
            let dev_null =
                fs::File::open("/dev/null").map_err(|e| Error::io(Path::new("/dev/null"), e))?;
            builder = builder.with_stdin(dev_null);
        }
        let cwd = if cwd.is_empty() { "/".to_owned() } else { cwd };
        let process_file = dir.path.join(format!("exec-{}.json", &random_id()[..8]));
        let tenant = if options.tty {
            // libcontainer takes a terminal only from a full process document,
            // and then only "detached": the process is still our child to wait on.
            let process = serde_json::json!({
                "terminal": true,
                "user": {"uid": user.uid, "gid": user.gid},
                "args": options.args,
                "env": env,
                "cwd": cwd,
                "capabilities": {"bounding": DEFAULT_CAPABILITIES, "effective": DEFAULT_CAPABILITIES, "permitted": DEFAULT_CAPABILITIES},
                "noNewPrivileges": true
            });
            state::write_json_atomic(&process_file, &process)?;
            builder
                .as_tenant()
                .with_process(Some(&process_file))
                .with_detach(true)
        } else {
            builder
                .as_tenant()
                .with_container_args(options.args.clone())
                .with_env(env_map)
                .with_cwd(Some(cwd))
                .with_user(Some(user.uid))
                .with_group(Some(user.gid))
                .with_no_new_privs(true)
                .with_detach(false)
        };
        let pid = tenant.build();
        let _ = fs::remove_file(&process_file);
        let pid = match pid {
            Ok(pid) => pid,
            Err(error) => {
                let _ = fs::remove_file(&console_path);
                return Err(error.into());
            }
        };
        let relay = match console {
            Some(listener) => {
                let _ = fs::remove_file(&console_path);
                let master = tty::receive_pty_master(&listener)?;
                if let Some((rows, cols)) = options.console_size {
                    tty::set_window_size(&master, rows, cols);
                }
                match &options.console_socket {
                    Some(path) => {
                        tty::send_terminal(path, &master)?;
                        None
                    }
                    None => Some(tty::relay_terminal(master, options.interactive)?),
                }
            }
            None => None,
        };
        let code = loop {
            match waitpid(pid, None) {
                Ok(WaitStatus::Exited(_, code)) => break code,
                Ok(WaitStatus::Signaled(_, signal, _)) => break 128 + signal as i32,
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::io(&dir.path, e.into())),
            }
        };
        if let Some(output) = relay {
            let _ = output.join();
        }
        Ok(code)
    }

    /// Connects to a running container's stdin (created with `open_stdin`):
    /// what is written to the stream reaches the process; shutting down the
    /// write side closes stdin unless the container has a terminal.
    pub fn attach_stdin(&self, name_or_id: &str) -> Result<std::os::unix::net::UnixStream> {
        let container = self.get(name_or_id)?;
        if !container.config.open_stdin {
            return Err(Error::Spec(format!(
                "container {} was not created with stdin open (-i)",
                container.config.name
            )));
        }
        let path = self.dir(&container.config.id).attach_socket();
        attach::connect(&path).map_err(|e| Error::io(&path, e))
    }

    /// Log records from byte `offset` of the container's log; returns them and
    /// the offset to continue from (for `logs -f`).
    pub fn logs(&self, name_or_id: &str, offset: u64) -> Result<(Vec<LogEntry>, u64)> {
        let container = self.get(name_or_id)?;
        let path = self.dir(&container.config.id).log();
        let mut file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
            Err(e) => return Err(Error::io(&path, e)),
        };
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io(&path, e))?;
        let mut reader = BufReader::new(file);
        let mut entries = Vec::new();
        let mut position = offset;
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader
                .read_line(&mut line)
                .map_err(|e| Error::io(&path, e))?;
            // Stop at a record the shim is still writing.
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            position += n as u64;
            if let Ok(record) = serde_json::from_str::<shim::LogLine>(&line) {
                entries.push(LogEntry {
                    stream: record.stream,
                    time: record.time,
                    text: record.log,
                });
            }
        }
        Ok((entries, position))
    }

    fn unused_name(&self) -> Result<String> {
        let taken: Vec<String> = self.list()?.into_iter().map(|c| c.config.name).collect();
        loop {
            let name = random_name();
            if !taken.contains(&name) {
                return Ok(name);
            }
        }
    }
}

pub(crate) fn remove_dir(dir: &state::ContainerDir) -> Result<()> {
    shim::unmount_rootfs(dir);
    match fs::remove_dir_all(&dir.path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&dir.path, e)),
    }
}

/// Alive and not a zombie.
fn process_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Later `KEY=value` entries win, within `base` as over it.
fn merge_env(base: &[String], overrides: &[String]) -> Vec<String> {
    let mut merged: Vec<String> = Vec::new();
    for kv in base.iter().chain(overrides) {
        let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
        merged.retain(|existing| {
            existing
                .split_once('=')
                .map_or(existing.as_str(), |(k, _)| k)
                != key
        });
        merged.push(kv.clone());
    }
    merged
}

fn random_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

fn random_name() -> String {
    const ADJECTIVES: &[&str] = &[
        "admiring", "bold", "brave", "clever", "eager", "focused", "gallant", "happy", "jolly",
        "keen", "lucid", "nifty", "quirky", "serene", "sharp", "tender", "upbeat", "vibrant",
        "wizardly", "zealous",
    ];
    const NAMES: &[&str] = &[
        "babbage", "curie", "darwin", "euler", "fermat", "galois", "hopper", "kepler", "lovelace",
        "noether", "pascal", "ritchie", "shannon", "thompson", "turing", "wozniak",
    ];
    let a = ADJECTIVES[rand::random_range(0..ADJECTIVES.len())];
    let n = NAMES[rand::random_range(0..NAMES.len())];
    format!("{a}_{n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_replace_image_values() {
        let merged = merge_env(
            &["PATH=/bin".into(), "A=1".into()],
            &["A=2".into(), "B=3".into()],
        );
        assert_eq!(merged, vec!["PATH=/bin", "A=2", "B=3"]);
    }

    #[test]
    fn entrypoint_override_drops_image_cmd() {
        let root = tempfile::tempdir().unwrap();
        let runtime = Runtime::open(
            root.path(),
            ShimCommand {
                program: "/bin/false".into(),
                args: vec![],
            },
        )
        .unwrap();
        let image_config: oci_spec::image::Config = serde_json::from_value(serde_json::json!({
            "Entrypoint": ["/entry"], "Cmd": ["default"], "Env": ["PATH=/bin"], "WorkingDir": "/srv"
        }))
        .unwrap();
        let base = CreateOptions {
            image: "img".into(),
            image_config: Some(image_config),
            ..Default::default()
        };
        let c = runtime
            .create(CreateOptions {
                cmd: vec!["x".into()],
                ..base.clone()
            })
            .unwrap();
        assert_eq!(c.config.args, vec!["/entry", "x"]);
        assert_eq!(c.config.working_dir, "/srv");
        let c = runtime
            .create(CreateOptions {
                entrypoint: Some(vec!["sh".into()]),
                ..base.clone()
            })
            .unwrap();
        assert_eq!(c.config.args, vec!["sh"]);
        let named = runtime
            .create(CreateOptions {
                name: Some("web".into()),
                ..base.clone()
            })
            .unwrap();
        assert!(matches!(
            runtime.create(CreateOptions {
                name: Some("web".into()),
                ..base
            }),
            Err(Error::NameInUse(..))
        ));
        assert_eq!(runtime.get("web").unwrap().config.id, named.config.id);
        assert_eq!(
            runtime.get(&named.config.id[..10]).unwrap().config.name,
            "web"
        );
        assert_eq!(runtime.list().unwrap().len(), 3);
    }
}
