//! The OCI runtime spec for a container, with Docker's defaults: capabilities,
//! seccomp, masked and read-only paths, and the standard kernel filesystems.

use std::path::Path;

use oci_spec::runtime::Spec;
use serde_json::{Value, json};

use crate::state::{ContainerConfig, NetworkMode};
use crate::{Error, Result};

/// Docker's default capability set (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths Docker hides from containers (moby `oci/defaults.go`).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths Docker makes read-only in containers.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Syscalls that Docker's default seccomp profile refuses to a container without
/// extra capabilities: kernel modules, reboot, mounts, namespaces, keyrings, BPF,
/// tracing other processes' memory, clock setting and the like. Expressed as a
/// deny list over an allow default, so kernels newer than the list keep working.
pub const SECCOMP_DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "sysfs",
    "_sysctl",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
];

/// A resolved process identity inside the container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessUser {
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
}

/// Builds the spec for `config`, whose root filesystem is mounted at `rootfs`.
pub(crate) fn build_spec(
    config: &ContainerConfig,
    rootfs: &Path,
    user: ProcessUser,
    etc_files: &EtcFiles,
) -> Result<Spec> {
    let caps = DEFAULT_CAPABILITIES;
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "mount"}),
        json!({"type": "uts"}),
        json!({"type": "ipc"}),
    ];
    match &config.network {
        NetworkMode::None => namespaces.push(json!({"type": "network"})),
        NetworkMode::Join(path) => namespaces.push(json!({"type": "network", "path": path})),
        NetworkMode::Host => {}
    }
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]}),
    ];
    for (destination, source) in [
        ("/etc/hostname", &etc_files.hostname),
        ("/etc/hosts", &etc_files.hosts),
        ("/etc/resolv.conf", &etc_files.resolv_conf),
    ] {
        mounts.push(json!({"destination": destination, "type": "bind", "source": source, "options": ["rbind", "rprivate"]}));
    }
    for bind in &config.mounts {
        let mut options = vec!["rbind", "rprivate"];
        if bind.read_only {
            options.push("ro");
        }
        mounts.push(json!({"destination": bind.destination, "type": "bind", "source": bind.source, "options": options}));
    }
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(limit) = config.resources.memory_bytes {
        resources["memory"] = json!({"limit": limit, "swap": limit});
    }
    let mut cpu = serde_json::Map::new();
    if let Some(nano) = config.resources.nano_cpus {
        let period: u64 = 100_000;
        cpu.insert("period".into(), json!(period));
        cpu.insert(
            "quota".into(),
            json!((nano as i128 * period as i128 / 1_000_000_000) as i64),
        );
    }
    if let Some(shares) = config.resources.cpu_shares {
        cpu.insert("shares".into(), json!(shares));
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    if let Some(limit) = config.resources.pids_limit {
        resources["pids"] = json!({"limit": limit});
    }
    let seccomp = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": SECCOMP_DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            // Like Docker: glibc falls back to clone(2) when clone3 is "not implemented".
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
        ]
    });
    let document = json!({
        "ociVersion": "1.0.2",
        "root": {"path": rootfs, "readonly": config.read_only},
        "hostname": config.hostname,
        "process": {
            "terminal": config.tty,
            "user": {"uid": user.uid, "gid": user.gid},
            "args": config.args,
            "env": config.env,
            "cwd": if config.working_dir.is_empty() { "/" } else { &config.working_dir },
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": true
        },
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": format!("/gantry/{}", config.id),
            "resources": resources,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": seccomp
        }
    });
    serde_json::from_value(document).map_err(|e| Error::Spec(e.to_string()))
}

/// Per-container `/etc` files Docker bind-mounts over the image's.
pub(crate) struct EtcFiles {
    pub hostname: std::path::PathBuf,
    pub hosts: std::path::PathBuf,
    pub resolv_conf: std::path::PathBuf,
}

/// Resolves `user` (`name`, `uid`, `name:group`, `uid:gid`) through the image's
/// `/etc/passwd` and `/etc/group`, as Docker does.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<ProcessUser> {
    if user.is_empty() {
        return Ok(ProcessUser { uid: 0, gid: 0 });
    }
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let entry = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 4 && (fields[0] == user_part || fields[2] == user_part))
            .then(|| (fields[2].parse::<u32>().ok(), fields[3].parse::<u32>().ok()))
    });
    let (uid, default_gid) = match (user_part.parse::<u32>(), entry) {
        (_, Some((Some(uid), Some(gid)))) => (uid, gid),
        (Ok(uid), _) => (uid, 0),
        _ => return Err(Error::UnknownUser(user_part.to_owned())),
    };
    let gid = match group_part {
        None => default_gid,
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
                groups
                    .lines()
                    .find_map(|line| {
                        let fields: Vec<&str> = line.split(':').collect();
                        (fields.len() >= 3 && fields[0] == group)
                            .then(|| fields[2].parse().ok())
                            .flatten()
                    })
                    .ok_or_else(|| Error::UnknownUser(format!("group {group}")))?
            }
        },
    };
    Ok(ProcessUser { uid, gid })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Resources;

    fn config() -> ContainerConfig {
        ContainerConfig {
            id: "abc".into(),
            name: "n".into(),
            image: "busybox".into(),
            image_id: "sha256:0".into(),
            lowerdirs: vec![],
            args: vec!["sh".into()],
            env: vec!["PATH=/bin".into()],
            working_dir: String::new(),
            user: String::new(),
            hostname: "box".into(),
            mounts: vec![],
            resources: Resources {
                memory_bytes: Some(1 << 20),
                nano_cpus: Some(1_500_000_000),
                cpu_shares: None,
                pids_limit: Some(10),
            },
            network: NetworkMode::None,
            read_only: true,
            auto_remove: false,
            tty: false,
            open_stdin: false,
            console_size: None,
            created: jiff::Timestamp::now(),
        }
    }

    #[test]
    fn spec_carries_docker_defaults_and_limits() {
        let etc = EtcFiles {
            hostname: "/h".into(),
            hosts: "/hs".into(),
            resolv_conf: "/r".into(),
        };
        let spec = build_spec(
            &config(),
            Path::new("/r"),
            ProcessUser { uid: 0, gid: 0 },
            &etc,
        )
        .unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let resources = linux.resources().as_ref().unwrap();
        assert_eq!(resources.memory().as_ref().unwrap().limit(), Some(1 << 20));
        assert_eq!(resources.cpu().as_ref().unwrap().quota(), Some(150_000));
        assert_eq!(resources.pids().as_ref().unwrap().limit(), 10);
        let namespaces: Vec<String> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| format!("{:?}", n.typ()))
            .collect();
        assert!(namespaces.iter().any(|n| n == "Network"));
        assert_eq!(
            linux.masked_paths().as_ref().unwrap().len(),
            MASKED_PATHS.len()
        );
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.no_new_privileges(), Some(true));
        assert_eq!(
            process
                .capabilities()
                .as_ref()
                .unwrap()
                .bounding()
                .as_ref()
                .unwrap()
                .len(),
            DEFAULT_CAPABILITIES.len()
        );
        assert!(spec.root().as_ref().unwrap().readonly().unwrap());
    }

    #[test]
    fn users_resolve_through_passwd_and_group() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nwww:x:33:34::/var/www:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(
            resolve_user(dir.path(), "www").unwrap(),
            ProcessUser { uid: 33, gid: 34 }
        );
        assert_eq!(
            resolve_user(dir.path(), "www:staff").unwrap(),
            ProcessUser { uid: 33, gid: 50 }
        );
        assert_eq!(
            resolve_user(dir.path(), "1000:7").unwrap(),
            ProcessUser { uid: 1000, gid: 7 }
        );
        assert!(matches!(
            resolve_user(dir.path(), "nobody"),
            Err(Error::UnknownUser(_))
        ));
    }
}
