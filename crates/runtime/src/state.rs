//! What Gantry remembers about a container, on disk, so every process (CLI, shim,
//! node agent) sees the same truth and a crashed CLI leaves nothing behind.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{Error, Result};

/// A host directory bind-mounted into the container (`-v host:container[:ro]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Absolute path on the host.
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub destination: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Which network namespace the container gets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A new, empty network namespace with only loopback up (Docker's `none`).
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// An existing namespace, by the path of its namespace file (a pod's
    /// `/run/netns/<name>`), so several containers share one network stack.
    Join(PathBuf),
}

/// cgroup limits; `None` means unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Memory limit in bytes (swap is limited to the same total, as Docker does).
    pub memory_bytes: Option<i64>,
    /// CPU limit in billionths of a CPU (Docker's `NanoCpus`).
    pub nano_cpus: Option<i64>,
    /// Relative CPU weight (Docker's `--cpu-shares`).
    pub cpu_shares: Option<u64>,
    /// Maximum number of processes.
    pub pids_limit: Option<i64>,
}

/// Everything fixed when the container is created.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// 64 hex digits.
    pub id: String,
    /// Unique name (Docker's, without the leading slash).
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The image's content ID (`sha256:…`).
    pub image_id: String,
    /// Image layer directories, bottom first.
    pub lowerdirs: Vec<PathBuf>,
    /// The process: `args[0]` is the program.
    pub args: Vec<String>,
    /// `KEY=value` pairs.
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub working_dir: String,
    /// `user`, `uid`, `user:group` or `uid:gid`; empty means root.
    pub user: String,
    /// The container's hostname.
    pub hostname: String,
    /// Bind mounts.
    pub mounts: Vec<BindMount>,
    /// cgroup limits.
    pub resources: Resources,
    /// Network namespace choice.
    pub network: NetworkMode,
    /// Mount the root filesystem read-only.
    pub read_only: bool,
    /// Remove the container once it exits (`--rm`).
    pub auto_remove: bool,
    /// Give the process a pseudo-terminal (`-t`).
    #[serde(default)]
    pub tty: bool,
    /// Keep stdin open for attach clients (`-i`).
    #[serde(default)]
    pub open_stdin: bool,
    /// Close stdin after the first attach client's stdin ends (Kubernetes'
    /// `stdinOnce`); without a terminal only.
    #[serde(default)]
    pub stdin_once: bool,
    /// Initial terminal size as (rows, columns).
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
    /// The cgroup the container's cgroup goes under (a pod's); `/gantry` when `None`.
    #[serde(default)]
    pub cgroup_parent: Option<String>,
    /// Capabilities, privilege, groups and OOM score.
    #[serde(default)]
    pub security: crate::spec::Security,
    /// Creation time.
    pub created: Timestamp,
}

/// Where the container is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Configured, never started (or starting).
    Created,
    /// Its process is alive.
    Running,
    /// Its process has exited and its resources are released.
    Exited,
}

/// Everything that changes while the container lives.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerState {
    /// Lifecycle status.
    pub status: Status,
    /// Host PID of the container's init process while running.
    pub pid: Option<i32>,
    /// Host PID of the monitor that owns the container.
    pub shim_pid: Option<i32>,
    /// Exit code (128+signal when killed by a signal).
    pub exit_code: Option<i32>,
    /// Whether the kernel's OOM killer killed a process of the container.
    pub oom_killed: bool,
    /// Why the container could not start.
    pub error: Option<String>,
    /// When the process started.
    pub started_at: Option<Timestamp>,
    /// When the process exited.
    pub finished_at: Option<Timestamp>,
}

impl ContainerState {
    pub(crate) fn created() -> ContainerState {
        ContainerState {
            status: Status::Created,
            pid: None,
            shim_pid: None,
            exit_code: None,
            oom_killed: false,
            error: None,
            started_at: None,
            finished_at: None,
        }
    }
}

/// A container's configuration and state, read together.
#[derive(Clone, Debug)]
pub struct Container {
    /// Fixed configuration.
    pub config: ContainerConfig,
    /// Current state.
    pub state: ContainerState,
}

/// The files of one container under `<root>/containers/<id>/`.
#[derive(Clone, Debug)]
pub(crate) struct ContainerDir {
    pub path: PathBuf,
}

impl ContainerDir {
    pub fn new(root: &Path, id: &str) -> ContainerDir {
        ContainerDir {
            path: root.join("containers").join(id),
        }
    }
    pub fn config(&self) -> PathBuf {
        self.path.join("config.json")
    }
    pub fn state(&self) -> PathBuf {
        self.path.join("state.json")
    }
    pub fn log(&self) -> PathBuf {
        self.path.join("container.log")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.path.join("rootfs")
    }
    pub fn upper(&self) -> PathBuf {
        self.path.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.path.join("work")
    }
    pub fn attach_socket(&self) -> PathBuf {
        self.path.join("attach.sock")
    }
    pub fn bundle(&self) -> PathBuf {
        self.path.join("bundle")
    }

    /// Serialises every read-modify-write of the state across processes.
    pub fn lock(&self) -> Result<Flock<File>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path.join("lock"))
            .map_err(|e| Error::io(&self.path, e))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| Error::io(&self.path, e.into()))
    }

    pub fn read_config(&self) -> Result<ContainerConfig> {
        read_json(&self.config())
    }
    pub fn read_state(&self) -> Result<ContainerState> {
        read_json(&self.state())
    }
    pub fn write_state(&self, state: &ContainerState) -> Result<()> {
        write_json_atomic(&self.state(), state)
    }
}

pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt(path.to_owned(), e.to_string()))
}

/// Writes through a temporary file and rename, so readers never see half a file.
pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Corrupt(path.to_owned(), e.to_string()))?;
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| Error::io(path, e))
}
