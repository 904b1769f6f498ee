//! The per-container monitor (Gantry's containerd-shim): it starts the container,
//! owns its stdio (writing the output to the log and serving it, with stdin and
//! the terminal, on the stdio socket of [`crate::attach`]), reaps it, records how
//! it ended, and releases its mount and cgroup. It outlives the CLI that started it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use libcontainer::container::Container as OciContainer;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::Serialize;

use crate::attach::{self, OutputStream, StdioHub};
use crate::spec::{EtcFiles, build_spec, cgroups_path, resolve_user};
use crate::state::{ContainerConfig, ContainerDir, NetworkMode, Status};
use crate::{Error, Result, netns, tty};

/// One line of the JSON-lines log, in Docker's `json-file` format.
#[derive(Serialize, serde::Deserialize)]
pub(crate) struct LogLine {
    pub log: String,
    pub stream: String,
    pub time: jiff::Timestamp,
}

/// Runs the whole life of container `id` in the calling process and returns when
/// the container has exited and been cleaned up. The caller must be
/// single-threaded (libcontainer forks) and should have detached from its terminal.
pub(crate) fn run(root: &Path, id: &str) -> Result<()> {
    let dir = ContainerDir::new(root, id);
    let config = dir.read_config()?;
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let runtime_root = root.join("runtime");
    let launched = match launch(&dir, &config, &runtime_root) {
        Ok(launched) => launched,
        Err(error) => {
            unmount_rootfs(&dir);
            let code = error.exit_code();
            finish(&dir, &config, code, false, Some(error.to_string()))?;
            return Err(error);
        }
    };
    let exit_code = reap(launched.pid);
    // Nothing of the container may outlive its init: exec'd processes go too.
    let mut oom_killed = false;
    if let Ok(mut container) = OciContainer::load(runtime_root.join(id)) {
        let _ = container.kill(Signal::SIGKILL, true);
        oom_killed = oom_kill_count(&cgroups_path(&config)) > 0;
        if let Err(error) = container.delete(true) {
            tracing::warn!(%error, "deleting the container's cgroup");
        }
    }
    for pump in launched.pumps {
        let _ = pump.join();
    }
    unmount_rootfs(&dir);
    let finished = finish(&dir, &config, exit_code, oom_killed, None);
    // Attached clients see the end of the output once the exit is on record.
    launched.hub.close();
    finished
}

struct Launched {
    pid: Pid,
    pumps: Vec<JoinHandle<()>>,
    hub: Arc<StdioHub>,
}

/// Opens the container's stdio socket (and, with stdin open, the CLI's raw
/// stdin socket) before the process starts, so no output is published unseen
/// by a client that connects as soon as the container runs.
fn serve_stdio(dir: &ContainerDir, config: &ContainerConfig, hub: &Arc<StdioHub>) -> Result<()> {
    let stdio_path = dir.path.join(attach::STDIO_SOCKET);
    let _ = fs::remove_file(&stdio_path);
    hub.serve(attach::bind(&stdio_path).map_err(|e| Error::io(&stdio_path, e))?);
    if config.open_stdin {
        let raw_path = dir.attach_socket();
        let _ = fs::remove_file(&raw_path);
        hub.serve_raw_stdin(attach::bind(&raw_path).map_err(|e| Error::io(&raw_path, e))?);
    }
    Ok(())
}

fn launch(dir: &ContainerDir, config: &ContainerConfig, runtime_root: &Path) -> Result<Launched> {
    mount_rootfs(dir, config)?;
    let rootfs = dir.rootfs();
    let user = resolve_user(&rootfs, &config.user)?;
    check_executable(&rootfs, config)?;
    let etc = write_etc_files(dir, config)?;
    let spec = build_spec(config, &rootfs, user, &etc)?;
    let bundle = dir.bundle();
    fs::create_dir_all(&bundle).map_err(|e| Error::io(&bundle, e))?;
    spec.save(bundle.join("config.json"))
        .map_err(|e| Error::Spec(e.to_string()))?;

    fs::create_dir_all(runtime_root).map_err(|e| Error::io(runtime_root, e))?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.log())
        .map_err(|e| Error::io(&dir.log(), e))?;
    let log = Arc::new(Mutex::new(log));
    let builder = ContainerBuilder::new(config.id.clone(), SyscallType::Linux)
        .with_root_path(runtime_root)?;
    let (mut container, hub, outputs) = if config.tty {
        // Short, outside the container dir: unix socket paths must fit in 108 bytes.
        let console_path =
            std::env::temp_dir().join(format!("gantry-console-{}.sock", &config.id[..12]));
        let _ = fs::remove_file(&console_path);
        let console = UnixListener::bind(&console_path).map_err(|e| Error::io(&console_path, e))?;
        let container = builder
            .with_console_socket(Some(&console_path))
            .validate_id()?
            .as_init(&bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()?;
        let master = tty::receive_pty_master(&console)?;
        let _ = fs::remove_file(&console_path);
        if let Some((rows, cols)) = config.console_size {
            tty::set_window_size(&master, rows, cols);
        }
        let clone = || master.try_clone().map_err(|e| Error::io(&console_path, e));
        let stdin = if config.open_stdin {
            Some(File::from(clone()?))
        } else {
            None
        };
        let hub = StdioHub::new(stdin, Some(clone()?), config.stdin_once);
        (container, hub, vec![(master, OutputStream::Stdout)])
    } else {
        let (stdout_r, stdout_w) = nix::unistd::pipe().map_err(|e| Error::io(&bundle, e.into()))?;
        let (stderr_r, stderr_w) = nix::unistd::pipe().map_err(|e| Error::io(&bundle, e.into()))?;
        let (builder, stdin) = if config.open_stdin {
            let (stdin_r, stdin_w) =
                nix::unistd::pipe().map_err(|e| Error::io(&bundle, e.into()))?;
            (builder.with_stdin(stdin_r), Some(File::from(stdin_w)))
        } else {
            let dev_null =
                File::open("/dev/null").map_err(|e| Error::io(Path::new("/dev/null"), e))?;
            (builder.with_stdin(dev_null), None)
        };
        let container = builder
            .with_stdout(stdout_w)
            .with_stderr(stderr_w)
            .validate_id()?
            .as_init(&bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()?;
        let hub = StdioHub::new(stdin, None, config.stdin_once);
        let outputs = vec![
            (stdout_r, OutputStream::Stdout),
            (stderr_r, OutputStream::Stderr),
        ];
        (container, hub, outputs)
    };
    let hub = Arc::new(hub);
    serve_stdio(dir, config, &hub)?;
    let pumps = outputs
        .into_iter()
        .map(|(reader, stream)| pump(reader, stream, log.clone(), config.tty, hub.clone()))
        .collect();
    let pid = container
        .pid()
        .ok_or_else(|| Error::Spec("libcontainer reported no pid".into()))?;
    if config.network == NetworkMode::None {
        netns::bring_up_loopback(pid)?;
    }
    container.start()?;
    let _lock = dir.lock()?;
    let mut state = dir.read_state()?;
    state.status = Status::Running;
    state.pid = Some(pid.as_raw());
    state.shim_pid = Some(std::process::id() as i32);
    state.started_at = Some(jiff::Timestamp::now());
    state.finished_at = None;
    state.exit_code = None;
    state.oom_killed = false;
    state.error = None;
    dir.write_state(&state)?;
    Ok(Launched { pid, pumps, hub })
}

/// Copies one output stream of the container into the log, a line per record
/// (on a terminal, whatever each read returns, so prompts show up at once),
/// and to the attached clients as it comes.
fn pump(
    reader: OwnedFd,
    stream: OutputStream,
    log: Arc<Mutex<File>>,
    unbuffered: bool,
    hub: Arc<StdioHub>,
) -> JoinHandle<()> {
    let stream_name = match stream {
        OutputStream::Stdout => "stdout",
        OutputStream::Stderr => "stderr",
    };
    std::thread::spawn(move || {
        let mut reader = File::from(reader);
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            hub.publish(stream, &buf[..n]);
            pending.extend_from_slice(&buf[..n]);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                write_log_line(&log, stream_name, &line);
            }
            if unbuffered || pending.len() >= 16 * 1024 {
                write_log_line(&log, stream_name, &pending);
                pending.clear();
            }
        }
        if !pending.is_empty() {
            write_log_line(&log, stream_name, &pending);
        }
    })
}

fn write_log_line(log: &Mutex<File>, stream: &str, bytes: &[u8]) {
    let line = LogLine {
        log: String::from_utf8_lossy(bytes).into_owned(),
        stream: stream.to_owned(),
        time: jiff::Timestamp::now(),
    };
    if let Ok(mut json) = serde_json::to_vec(&line) {
        json.push(b'\n');
        if let Ok(mut file) = log.lock() {
            let _ = file.write_all(&json);
        }
    }
}

/// Reaps every child (the shim is a subreaper) until the container's init exits.
fn reap(init: Pid) -> i32 {
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == init => return code,
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == init => return 128 + signal as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 255,
        }
    }
}

/// How many times the kernel OOM-killed a process of the container's cgroup
/// (`cgroup` as in the spec's `cgroupsPath`, starting with `/`).
fn oom_kill_count(cgroup: &str) -> u64 {
    let v1 = PathBuf::from(format!("/sys/fs/cgroup/memory{cgroup}/memory.oom_control"));
    let v2 = PathBuf::from(format!("/sys/fs/cgroup{cgroup}/memory.events"));
    [v1, v2]
        .iter()
        .filter_map(|path| fs::read_to_string(path).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|line| {
                    line.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                })
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Records the end of the container and, for `--rm`, removes it.
fn finish(
    dir: &ContainerDir,
    config: &ContainerConfig,
    exit_code: i32,
    oom_killed: bool,
    error: Option<String>,
) -> Result<()> {
    {
        let _lock = dir.lock()?;
        let mut state = dir.read_state()?;
        state.status = Status::Exited;
        state.pid = None;
        state.exit_code = Some(exit_code);
        state.oom_killed = oom_killed;
        state.error = error;
        state.finished_at = Some(jiff::Timestamp::now());
        dir.write_state(&state)?;
    }
    if config.auto_remove {
        crate::remove_dir(dir)?;
    }
    Ok(())
}

pub(crate) fn mount_rootfs(dir: &ContainerDir, config: &ContainerConfig) -> Result<()> {
    let rootfs = dir.rootfs();
    for path in [dir.upper(), dir.work(), rootfs.clone()] {
        fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
    }
    let mut lowers: Vec<PathBuf> = config.lowerdirs.iter().rev().cloned().collect();
    if lowers.is_empty() {
        let empty = dir.path.join("empty");
        fs::create_dir_all(&empty).map_err(|e| Error::io(&empty, e))?;
        lowers.push(empty);
    }
    let lowerdir = lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let options = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        dir.upper().display(),
        dir.work().display()
    );
    nix::mount::mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| Error::Mount(rootfs.clone(), e.to_string()))
}

/// Detaches the container's root filesystem; harmless when it is not mounted.
pub(crate) fn unmount_rootfs(dir: &ContainerDir) {
    let rootfs = dir.rootfs();
    while nix::mount::umount2(&rootfs, MntFlags::MNT_DETACH).is_ok() {}
}

fn write_etc_files(dir: &ContainerDir, config: &ContainerConfig) -> Result<EtcFiles> {
    let etc = EtcFiles {
        hostname: dir.path.join("hostname"),
        hosts: dir.path.join("hosts"),
        resolv_conf: dir.path.join("resolv.conf"),
    };
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
        config.hostname
    );
    let resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    for (path, text) in [
        (&etc.hostname, format!("{}\n", config.hostname)),
        (&etc.hosts, hosts),
        (&etc.resolv_conf, resolv),
    ] {
        fs::write(path, text).map_err(|e| Error::io(path, e))?;
    }
    Ok(etc)
}

/// Fails like Docker when the program is not in the image, before anything starts.
fn check_executable(rootfs: &Path, config: &ContainerConfig) -> Result<()> {
    let program = config.args.first().ok_or(Error::NoCommand)?;
    if find_executable(rootfs, &config.env, program, &config.working_dir).is_some() {
        Ok(())
    } else if program.contains('/') {
        Err(Error::ExecutableNotFound(format!(
            "exec: \"{program}\": stat {program}: no such file or directory"
        )))
    } else {
        Err(Error::ExecutableNotFound(format!(
            "exec: \"{program}\": executable file not found in $PATH"
        )))
    }
}

/// Looks `program` up the way execvp would inside the container.
pub(crate) fn find_executable(
    rootfs: &Path,
    env: &[String],
    program: &str,
    cwd: &str,
) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = if program.contains('/') {
        let base = if program.starts_with('/') {
            PathBuf::from("/")
        } else {
            PathBuf::from(if cwd.is_empty() { "/" } else { cwd })
        };
        vec![base.join(program)]
    } else {
        let path = env
            .iter()
            .find_map(|kv| kv.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        path.split(':')
            .map(|d| Path::new(d).join(program))
            .collect()
    };
    candidates
        .into_iter()
        .find(|c| resolve_in_root(rootfs, c).is_some_and(|p| is_executable_file(&p)))
}

/// Follows symlinks as if `rootfs` were `/`.
fn resolve_in_root(rootfs: &Path, path: &Path) -> Option<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..40 {
        let host = rootfs.join(current.strip_prefix("/").unwrap_or(&current));
        let meta = fs::symlink_metadata(&host).ok()?;
        if !meta.file_type().is_symlink() {
            return Some(host);
        }
        let target = fs::read_link(&host).ok()?;
        current = if target.is_absolute() {
            target
        } else {
            current.parent()?.join(target)
        };
    }
    None
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
