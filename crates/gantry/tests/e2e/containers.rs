//! End-to-end container tests: the real `gantry` binary, a temp `--root` per test,
//! the busybox test image. Needs root, overlayfs and cgroups.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use gantry_image::ImageStore;
use gantry_image::test_support::{BUSYBOX_TAG, import_busybox};

/// A Gantry root with the busybox image; on drop, removes every container and
/// anything they left mounted, even when the test failed.
struct Gantry {
    root: tempfile::TempDir,
}

impl Gantry {
    fn new() -> Gantry {
        let root = tempfile::tempdir().unwrap();
        import_busybox(&ImageStore::open(root.path()).unwrap()).unwrap();
        Gantry { root }
    }

    fn cmd(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_gantry"))
            .arg("--root")
            .arg(self.root.path())
            .args(args)
            .env("RUST_LOG", "error")
            .output()
            .unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "gantry {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn inspect(&self, name: &str) -> serde_json::Value {
        let value: serde_json::Value = serde_json::from_str(&self.ok(&["inspect", name])).unwrap();
        value[0].clone()
    }

    fn container_dir(&self, name: &str) -> PathBuf {
        let id = self.inspect(name)["Id"].as_str().unwrap().to_owned();
        self.root.path().join("containers").join(id)
    }

    fn mounts_under_root(&self) -> Vec<String> {
        let root = self.root.path().to_str().unwrap().to_owned();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|line| line.split(' ').nth(4).map(str::to_owned))
            .filter(|mount| mount.starts_with(&root))
            .collect()
    }
}

impl Drop for Gantry {
    fn drop(&mut self) {
        let ids = self.cmd(&["ps", "-aq", "--no-trunc"]);
        for id in String::from_utf8_lossy(&ids.stdout).lines() {
            self.cmd(&["rm", "-f", id]);
        }
        for mount in self.mounts_under_root() {
            let _ = nix::mount::umount2(Path::new(&mount), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn container_is_pid_1_with_its_own_hostname_and_no_host_processes() {
    let g = Gantry::new();
    let out = g.ok(&[
        "run",
        "--rm",
        "--hostname",
        "boxy",
        BUSYBOX_TAG,
        "sh",
        "-c",
        "tr '\\0' ' ' < /proc/1/cmdline; echo; hostname; ls /proc | grep -c '^[0-9]'",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].trim(),
        "sh -c tr '\\0' ' ' < /proc/1/cmdline; echo; hostname; ls /proc | grep -c '^[0-9]'"
    );
    assert_eq!(lines[1], "boxy");
    // sh, ls and grep at most: none of the host's processes.
    let visible: u32 = lines[2].parse().unwrap();
    assert!(visible <= 3, "container sees {visible} processes");
    assert!(
        g.ok(&["ps", "-aq"]).is_empty(),
        "--rm left the container behind"
    );
}

#[test]
fn exit_codes_propagate_and_missing_programs_fail_like_docker() {
    let g = Gantry::new();
    assert_eq!(
        g.cmd(&["run", "--name", "three", BUSYBOX_TAG, "sh", "-c", "exit 3"])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(g.inspect("three")["State"]["ExitCode"], 3);
    let ps = g.ok(&["ps", "-a"]);
    assert!(ps.starts_with("CONTAINER ID   IMAGE"), "{ps}");
    assert!(
        ps.lines()
            .any(|l| l.contains("Exited (3)") && l.ends_with("three")),
        "{ps}"
    );
    let missing = g.cmd(&["run", "--rm", BUSYBOX_TAG, "nosuchprogram"]);
    assert_eq!(missing.status.code(), Some(127));
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("exec: \"nosuchprogram\": executable file not found in $PATH")
    );
    let bad = g.cmd(&["run", "--memory", "lots", BUSYBOX_TAG, "true"]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid size"));
    let unknown = g.cmd(&["run", "localhost:1/nope:1", "true"]);
    assert_eq!(unknown.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&unknown.stderr)
            .contains("Unable to find image 'localhost:1/nope:1' locally")
    );
}

#[test]
fn writes_land_in_the_upper_layer_and_mounts_do_not_leak() {
    let g = Gantry::new();
    g.ok(&[
        "run",
        "--name",
        "w",
        BUSYBOX_TAG,
        "sh",
        "-c",
        "echo data > /newfile && rm /etc/group",
    ]);
    let info = g.inspect("w");
    let upper = PathBuf::from(info["GraphDriver"]["Data"]["UpperDir"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(upper.join("newfile")).unwrap(),
        "data\n"
    );
    for lower in info["GraphDriver"]["Data"]["LowerDir"]
        .as_str()
        .unwrap()
        .split(':')
    {
        assert!(
            !Path::new(lower).join("newfile").exists(),
            "write reached the image layer {lower}"
        );
        // The image still has its file; the container's deletion is a whiteout.
        assert!(Path::new(lower).join("etc/group").exists());
    }
    assert!(
        g.mounts_under_root().is_empty(),
        "leaked: {:?}",
        g.mounts_under_root()
    );
    let id = info["Id"].as_str().unwrap().to_owned();
    assert!(
        !Path::new(&format!("/sys/fs/cgroup/memory/gantry/{id}")).exists(),
        "cgroup left behind"
    );
    g.ok(&["rm", "w"]);
    assert!(!upper.exists());
}

#[test]
fn memory_limit_oom_kills_the_container() {
    let g = Gantry::new();
    let out = g.cmd(&[
        "run",
        "--name",
        "hog",
        "--memory",
        "10m",
        BUSYBOX_TAG,
        "sh",
        "-c",
        "x=$(yes | head -c 200000000); echo survived",
    ]);
    assert_eq!(out.status.code(), Some(137));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("survived"));
    let state = &g.inspect("hog")["State"];
    assert_eq!(state["OOMKilled"], true);
    assert_eq!(state["ExitCode"], 137);
    assert_eq!(g.inspect("hog")["HostConfig"]["Memory"], 10 << 20);
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let g = Gantry::new();
    let out = g.cmd(&[
        "run",
        "--rm",
        "--pids-limit",
        "10",
        BUSYBOX_TAG,
        "sh",
        "-c",
        "i=0; while [ $i -lt 30 ]; do sleep 30 & i=$((i+1)); done; echo spawned",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("can't fork"),
        "fork bomb was not stopped: {stderr}"
    );
}

#[test]
fn exec_shares_the_filesystem_and_reports_exit_codes() {
    let g = Gantry::new();
    g.ok(&[
        "run",
        "-d",
        "--name",
        "svc",
        BUSYBOX_TAG,
        "sh",
        "-c",
        "echo from-run > /shared; sleep 1000",
    ]);
    let seen = g.ok(&["exec", "svc", "sh", "-c", "while [ ! -f /shared ]; do sleep 0.05; done; cat /shared; echo x > /from-exec; cat /proc/1/cmdline | tr '\\0' ' '"]);
    // busybox sh execs its last command, so PID 1 is the container's sleep.
    assert_eq!(seen, "from-run\nsleep 1000 ", "{seen}");
    assert_eq!(
        std::fs::read_to_string(g.container_dir("svc").join("upper/from-exec")).unwrap(),
        "x\n"
    );
    assert_eq!(
        g.cmd(&["exec", "svc", "sh", "-c", "exit 7"]).status.code(),
        Some(7)
    );
    let missing = g.cmd(&["exec", "svc", "nope"]);
    assert_eq!(missing.status.code(), Some(127));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("executable file not found in $PATH")
    );
    assert_eq!(g.inspect("svc")["State"]["Running"], true);
    g.ok(&["rm", "-f", "svc"]);
    assert!(g.cmd(&["inspect", "svc"]).status.code() != Some(0));
    assert!(g.mounts_under_root().is_empty());
}

#[test]
fn logs_outlive_the_cli_with_tail_and_timestamps() {
    let g = Gantry::new();
    g.ok(&[
        "run",
        "-d",
        "--name",
        "talker",
        BUSYBOX_TAG,
        "sh",
        "-c",
        // stderr first: entries from two pipes are ordered only by when the monitor reads them.
        "echo oops >&2; sleep 0.3; echo one; echo two",
    ]);
    assert_eq!(g.ok(&["wait", "talker"]).trim(), "0");
    let all = g.cmd(&["logs", "talker"]);
    assert_eq!(String::from_utf8_lossy(&all.stdout), "one\ntwo\n");
    assert_eq!(String::from_utf8_lossy(&all.stderr), "oops\n");
    assert_eq!(g.ok(&["logs", "--tail", "2", "talker"]), "one\ntwo\n");
    assert_eq!(g.ok(&["logs", "--tail", "1", "talker"]), "two\n");
    let stamped = g.ok(&["logs", "-t", "talker"]);
    let first = stamped.lines().next().unwrap();
    let (stamp, text) = first.split_once(' ').unwrap();
    assert_eq!(text, "one");
    assert!(stamp.parse::<jiff::Timestamp>().is_ok(), "{stamp}");
    // -f returns once the container has exited and everything is printed.
    assert_eq!(g.ok(&["logs", "-f", "talker"]), "one\ntwo\n");
}

#[test]
fn stop_waits_the_grace_period_then_kills() {
    let g = Gantry::new();
    g.ok(&[
        "run",
        "-d",
        "--name",
        "polite",
        BUSYBOX_TAG,
        "sh",
        "-c",
        "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done",
    ]);
    g.ok(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        BUSYBOX_TAG,
        "sh",
        "-c",
        "trap '' TERM; echo ready; while true; do sleep 0.1; done",
    ]);
    for name in ["polite", "stubborn"] {
        wait_until("the trap is installed", Duration::from_secs(10), || {
            g.ok(&["logs", name]).contains("ready")
        });
    }
    g.ok(&["stop", "-t", "30", "polite"]);
    assert_eq!(
        g.inspect("polite")["State"]["ExitCode"],
        0,
        "SIGTERM was not delivered"
    );
    assert!(g.ok(&["logs", "polite"]).contains("bye"));
    let started = Instant::now();
    g.ok(&["stop", "-t", "1", "stubborn"]);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "killed before the grace period"
    );
    let state = &g.inspect("stubborn")["State"];
    assert_eq!(state["ExitCode"], 137);
    assert_eq!(state["Status"], "exited");
    assert!(g.ok(&["ps", "-q"]).is_empty());
}

#[test]
fn kill_sends_the_requested_signal() {
    let g = Gantry::new();
    g.ok(&[
        "run",
        "-d",
        "--name",
        "k",
        BUSYBOX_TAG,
        "sh",
        "-c",
        "trap 'exit 42' USR1; echo ready; while true; do sleep 0.1; done",
    ]);
    wait_until("the trap is installed", Duration::from_secs(10), || {
        g.ok(&["logs", "k"]).contains("ready")
    });
    g.ok(&["kill", "-s", "USR1", "k"]);
    assert_eq!(g.ok(&["wait", "k"]).trim(), "42");
}

#[test]
fn network_none_has_only_loopback_and_host_shares_the_hosts() {
    let g = Gantry::new();
    assert_eq!(
        g.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            BUSYBOX_TAG,
            "ls",
            "/sys/class/net"
        ]),
        "lo\n"
    );
    let up = g.ok(&[
        "run",
        "--rm",
        BUSYBOX_TAG,
        "cat",
        "/sys/class/net/lo/operstate",
    ]);
    assert!(up == "unknown\n" || up == "up\n", "{up}");
    let host: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let inside = g.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        BUSYBOX_TAG,
        "ls",
        "/sys/class/net",
    ]);
    assert_eq!(inside.lines().count(), host.len());
}

#[test]
fn options_reach_the_process() {
    let g = Gantry::new();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("in.txt"), "hostdata").unwrap();
    let volume = format!("{}:/data:ro", data.path().display());
    let out = g.ok(&[
        "run",
        "--rm",
        "-e",
        "GREETING=hi",
        "-w",
        "/tmp",
        "--user",
        "nobody",
        "-v",
        &volume,
        BUSYBOX_TAG,
        "sh",
        "-c",
        "echo $GREETING; pwd; id -u; cat /data/in.txt; echo; touch /data/x 2>/dev/null || echo ro",
    ]);
    assert_eq!(out, "hi\n/tmp\n65534\nhostdata\nro\n");
    let ro = g.cmd(&["run", "--rm", "--read-only", BUSYBOX_TAG, "touch", "/file"]);
    assert_eq!(ro.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&ro.stderr).contains("Read-only file system"));
    let entry = g.ok(&["run", "--rm", "--entrypoint", "echo", BUSYBOX_TAG, "a", "b"]);
    assert_eq!(entry, "a b\n");
}

#[test]
fn rmi_refuses_an_image_a_container_uses() {
    let g = Gantry::new();
    g.ok(&["create", "--name", "holder", BUSYBOX_TAG, "true"]);
    let refused = g.cmd(&["rmi", BUSYBOX_TAG]);
    assert!(!refused.status.success(), "rmi removed an image in use");
    g.ok(&["rm", "holder"]);
    g.ok(&["rmi", BUSYBOX_TAG]);
}

#[test]
fn a_dead_monitor_leaves_no_process_mount_or_cgroup() {
    let g = Gantry::new();
    g.ok(&[
        "run",
        "-d",
        "--name",
        "orphan",
        BUSYBOX_TAG,
        "sleep",
        "1000",
    ]);
    let dir = g.container_dir("orphan");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
    let shim = state["shim_pid"].as_i64().unwrap() as i32;
    let init = g.inspect("orphan")["State"]["Pid"].as_i64().unwrap() as i32;
    let id = dir.file_name().unwrap().to_str().unwrap().to_owned();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until("the monitor is gone", Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{shim}")).exists()
    });
    // The next command notices, and cleans up what the monitor owned.
    let ps = g.ok(&["ps", "-a"]);
    assert!(
        ps.lines()
            .any(|l| l.contains("Exited (255)") && l.ends_with("orphan")),
        "{ps}"
    );
    wait_until(
        "the container's process is gone",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(format!("/proc/{init}/stat"))
                .map_or(true, |s| s.contains(") Z"))
        },
    );
    assert!(
        g.mounts_under_root().is_empty(),
        "leaked: {:?}",
        g.mounts_under_root()
    );
    assert!(
        !Path::new(&format!("/sys/fs/cgroup/memory/gantry/{id}")).exists(),
        "cgroup left behind"
    );
}

#[test]
fn stdin_and_terminals_reach_the_container() {
    use std::io::Write;
    use std::process::Stdio;
    let g = Gantry::new();
    let with_stdin = |args: &[&str], input: &str| -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .arg("--root")
            .arg(g.root.path())
            .args(args)
            .env("RUST_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    // -i: stdin reaches the process and its end closes the process's stdin.
    let cat = with_stdin(
        &["run", "--rm", "-i", BUSYBOX_TAG, "cat"],
        "through stdin\n",
    );
    assert_eq!(String::from_utf8_lossy(&cat.stdout), "through stdin\n");
    // -t: the process runs on a terminal (a pty turns \n into \r\n).
    assert_eq!(
        g.ok(&["run", "--rm", "-t", BUSYBOX_TAG, "tty"]),
        "/dev/pts/0\r\n"
    );
    // -it: a shell reads commands from the terminal and exits with its code.
    let shell = with_stdin(
        &["run", "--rm", "-it", BUSYBOX_TAG, "sh"],
        "echo typed-$((6*7))\nexit 5\n",
    );
    assert_eq!(shell.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&shell.stdout).contains("typed-42"));
    g.ok(&["run", "-d", "--name", "bg", BUSYBOX_TAG, "sleep", "1000"]);
    assert_eq!(g.ok(&["exec", "-t", "bg", "tty"]), "/dev/pts/0\r\n");
    let exec = with_stdin(&["exec", "-i", "bg", "cat"], "into exec\n");
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "into exec\n");
}

#[test]
fn signals_to_the_attached_cli_reach_the_container() {
    let g = Gantry::new();
    let child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("--root")
        .arg(g.root.path())
        .args([
            "run",
            "--name",
            "fg",
            BUSYBOX_TAG,
            "sh",
            "-c",
            "trap 'echo got-int; exit 9' INT; echo ready; while true; do sleep 0.1; done",
        ])
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the trap is installed", Duration::from_secs(10), || {
        g.cmd(&["logs", "fg"]).stdout.starts_with(b"ready")
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(9));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\ngot-int\n");
}

#[test]
fn cpu_limits_land_in_the_cgroup() {
    let g = Gantry::new();
    g.ok(&[
        "run",
        "-d",
        "--name",
        "cpu",
        "--cpus",
        "0.5",
        "--cpu-shares",
        "512",
        BUSYBOX_TAG,
        "sleep",
        "1000",
    ]);
    let id = g.inspect("cpu")["Id"].as_str().unwrap().to_owned();
    let v1 = PathBuf::from(format!("/sys/fs/cgroup/cpu/gantry/{id}"));
    if v1.exists() {
        assert_eq!(
            std::fs::read_to_string(v1.join("cpu.cfs_quota_us"))
                .unwrap()
                .trim(),
            "50000"
        );
        assert_eq!(
            std::fs::read_to_string(v1.join("cpu.cfs_period_us"))
                .unwrap()
                .trim(),
            "100000"
        );
        assert_eq!(
            std::fs::read_to_string(v1.join("cpu.shares"))
                .unwrap()
                .trim(),
            "512"
        );
    } else {
        let max = std::fs::read_to_string(format!("/sys/fs/cgroup/gantry/{id}/cpu.max")).unwrap();
        assert_eq!(max.trim(), "50000 100000");
    }
    assert_eq!(g.inspect("cpu")["HostConfig"]["NanoCpus"], 500_000_000);
    let bad = g.cmd(&["run", "--cpus", "99", BUSYBOX_TAG, "true"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("range of CPUs"));
}

#[test]
fn processes_get_dockers_capabilities_seccomp_and_no_new_privileges() {
    let g = Gantry::new();
    let status = g.ok(&["run", "--rm", BUSYBOX_TAG, "cat", "/proc/self/status"]);
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    // Docker's default set: chown, dac_override, fowner, fsetid, kill, setgid,
    // setuid, setpcap, net_bind_service, net_raw, sys_chroot, mknod, audit_write, setfcap.
    assert_eq!(field("CapEff:"), "00000000a80425fb");
    assert_eq!(field("CapBnd:"), "00000000a80425fb");
    assert_eq!(field("Seccomp:"), "2");
    assert_eq!(field("NoNewPrivs:"), "1");
    let masked = g.ok(&["run", "--rm", BUSYBOX_TAG, "sh", "-c", "if [ -s /proc/kcore ]; then echo visible; else echo 0; fi; (echo x > /proc/sys/kernel/hostname) 2>&1 || true"]);
    assert!(masked.starts_with("0\n"), "{masked}");
    assert!(masked.contains("Read-only file system"), "{masked}");
}
