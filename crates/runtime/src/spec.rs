//! The OCI runtime spec for a container, with Docker's defaults: capabilities,
//! seccomp, masked and read-only paths, and the standard kernel filesystems.

use std::path::Path;

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
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

/// Every capability Linux 6.x knows, in kernel bit order, for privileged containers and `ALL`.
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Where containers go in the cgroup tree when the caller names no parent.
pub const DEFAULT_CGROUP_PARENT: &str = "/gantry";

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

/// How much a container may do beyond (or short of) Docker's defaults: the
/// knobs of Docker's `--privileged`/`--cap-add`/`--group-add` and of a
/// Kubernetes securityContext. The default is Docker's default container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Security {
    /// Every capability, every device, no seccomp filter and no masked paths.
    pub privileged: bool,
    /// Capabilities added to the defaults (`NET_ADMIN` or `CAP_NET_ADMIN`; `ALL`).
    pub cap_add: Vec<String>,
    /// Capabilities removed from the defaults (`ALL` removes every one not added).
    pub cap_drop: Vec<String>,
    /// Extra groups of the process, beyond its primary group.
    pub supplementary_groups: Vec<u32>,
    /// Let setuid binaries and file capabilities raise privileges (clears
    /// `noNewPrivileges`); off by default, as Gantry always ran containers.
    pub allow_privilege_escalation: bool,
    /// The process's `oom_score_adj` (-1000..=1000); inherited when `None`.
    pub oom_score_adj: Option<i32>,
}

/// The container's cgroup, relative to each hierarchy's root: the parent, then the ID.
pub fn cgroups_path(config: &ContainerConfig) -> String {
    let parent = config
        .cgroup_parent
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or(DEFAULT_CGROUP_PARENT);
    let parent = parent.trim_end_matches('/');
    if parent.starts_with('/') {
        format!("{parent}/{}", config.id)
    } else {
        format!("/{parent}/{}", config.id)
    }
}

/// `CHOWN`, `cap_chown` or `CAP_CHOWN` as the kernel's name, if Linux has it.
fn capability_name(name: &str) -> Result<String> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if ALL_CAPABILITIES.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(Error::Spec(format!("unknown capability {name:?}")))
    }
}

/// The capabilities in this process's bounding set, in [`ALL_CAPABILITIES`]
/// order: what "every capability" can mean here (a runtime inside a container
/// may lack some, such as `CAP_SYS_RESOURCE`); all of them if unreadable.
pub fn host_capabilities() -> Vec<&'static str> {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("CapBnd:"))?;
            u64::from_str_radix(line.trim_start_matches("CapBnd:").trim(), 16).ok()
        })
        .unwrap_or(u64::MAX);
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// `wanted` as this process may set it: lowering `oom_score_adj` below our own
/// needs `CAP_SYS_RESOURCE`, so without it the container keeps our value.
fn settable_oom_score_adj(wanted: i32) -> i32 {
    if host_capabilities().contains(&"CAP_SYS_RESOURCE") {
        return wanted;
    }
    let own = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .unwrap_or(0);
    wanted.max(own)
}

/// The capability set Docker's `TweakCapabilities` computes: the defaults (or
/// every one in `available` when privileged or `ALL` is added), less the
/// dropped, plus the added.
pub fn capabilities(security: &Security, available: &[&str]) -> Result<Vec<String>> {
    let is_all = |name: &String| name.trim().eq_ignore_ascii_case("ALL");
    let everything = || available.iter().map(|c| c.to_string()).collect();
    if security.privileged {
        return Ok(everything());
    }
    let mut caps: Vec<String> = if security.cap_add.iter().any(is_all) {
        everything()
    } else if security.cap_drop.iter().any(is_all) {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    };
    for dropped in security.cap_drop.iter().filter(|c| !is_all(c)) {
        let dropped = capability_name(dropped)?;
        caps.retain(|c| *c != dropped);
    }
    for added in security.cap_add.iter().filter(|c| !is_all(c)) {
        let added = capability_name(added)?;
        if !caps.contains(&added) {
            caps.push(added);
        }
    }
    Ok(caps)
}

/// Builds the spec for `config`, whose root filesystem is mounted at `rootfs`.
pub(crate) fn build_spec(
    config: &ContainerConfig,
    rootfs: &Path,
    user: ProcessUser,
    etc_files: &EtcFiles,
) -> Result<Spec> {
    let security = &config.security;
    let privileged = security.privileged;
    let caps = capabilities(security, &host_capabilities())?;
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
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", if privileged { "rw" } else { "ro" }]}),
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
    let mut resources = json!({"devices": [{"allow": privileged, "access": "rwm"}]});
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
    let mut process = json!({
        "terminal": config.tty,
        "user": {"uid": user.uid, "gid": user.gid},
        "args": config.args,
        "env": config.env,
        "cwd": if config.working_dir.is_empty() { "/" } else { &config.working_dir },
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps}
    });
    // Absent rather than `false` when escalation is allowed: libcontainer 0.7
    // tells the two cases apart by presence alone, and with the field present
    // it loads the seccomp filter after dropping the privileges that requires.
    if !(privileged || security.allow_privilege_escalation) {
        process["noNewPrivileges"] = json!(true);
    }
    if !security.supplementary_groups.is_empty() {
        process["user"]["additionalGids"] = json!(security.supplementary_groups);
    }
    if let Some(score) = security.oom_score_adj {
        process["oomScoreAdj"] = json!(settable_oom_score_adj(score.clamp(-1000, 1000)));
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": cgroups_path(config),
        "resources": resources,
    });
    // Privileged containers see the host as it is: nothing masked, no filter.
    if !privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
        linux["seccomp"] = seccomp;
    }
    let document = json!({
        "ociVersion": "1.0.2",
        "root": {"path": rootfs, "readonly": config.read_only},
        "hostname": config.hostname,
        "process": process,
        "mounts": mounts,
        "linux": linux
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
            stdin_once: false,
            console_size: None,
            cgroup_parent: None,
            security: Security::default(),
            created: jiff::Timestamp::now(),
        }
    }

    fn spec_of(config: &ContainerConfig) -> Spec {
        let etc = EtcFiles {
            hostname: "/h".into(),
            hosts: "/hs".into(),
            resolv_conf: "/r".into(),
        };
        build_spec(
            config,
            Path::new("/r"),
            ProcessUser {
                uid: 1000,
                gid: 3000,
            },
            &etc,
        )
        .unwrap()
    }

    fn bounding(spec: &Spec) -> Vec<String> {
        let caps = spec.process().as_ref().unwrap().capabilities().as_ref();
        let mut names: Vec<String> = caps
            .unwrap()
            .bounding()
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| {
                serde_json::to_value(c)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn containers_go_under_their_cgroup_parent() {
        let mut config = config();
        assert_eq!(cgroups_path(&config), "/gantry/abc");
        config.cgroup_parent = Some("/kubepods/burstable/pod1234/".into());
        assert_eq!(cgroups_path(&config), "/kubepods/burstable/pod1234/abc");
        config.cgroup_parent = Some("kubepods".into());
        let spec = spec_of(&config);
        assert_eq!(
            spec.linux().as_ref().unwrap().cgroups_path().as_deref(),
            Some(Path::new("/kubepods/abc"))
        );
    }

    #[test]
    fn capabilities_are_added_and_dropped_like_docker() {
        let drop_chown = Security {
            cap_drop: vec!["CHOWN".into()],
            cap_add: vec!["net_admin".into()],
            ..Default::default()
        };
        let caps = capabilities(&drop_chown, ALL_CAPABILITIES).unwrap();
        assert!(!caps.contains(&"CAP_CHOWN".to_owned()));
        assert!(caps.contains(&"CAP_NET_ADMIN".to_owned()));
        assert_eq!(caps.len(), DEFAULT_CAPABILITIES.len());
        let only_bind = Security {
            cap_drop: vec!["ALL".into()],
            cap_add: vec!["NET_BIND_SERVICE".into()],
            ..Default::default()
        };
        assert_eq!(
            capabilities(&only_bind, ALL_CAPABILITIES).unwrap(),
            vec!["CAP_NET_BIND_SERVICE"]
        );
        let all_but_admin = Security {
            cap_add: vec!["ALL".into()],
            cap_drop: vec!["SYS_ADMIN".into()],
            ..Default::default()
        };
        assert_eq!(
            capabilities(&all_but_admin, ALL_CAPABILITIES)
                .unwrap()
                .len(),
            ALL_CAPABILITIES.len() - 1
        );
        let unknown = Security {
            cap_add: vec!["FLY".into()],
            ..Default::default()
        };
        assert!(matches!(
            capabilities(&unknown, ALL_CAPABILITIES),
            Err(Error::Spec(_))
        ));

        let mut config = config();
        config.security = drop_chown;
        let names = bounding(&spec_of(&config));
        assert!(names.contains(&"CAP_NET_ADMIN".to_owned()));
        assert!(!names.contains(&"CAP_CHOWN".to_owned()));
    }

    #[test]
    fn groups_escalation_and_oom_score_reach_the_process() {
        let mut config = config();
        config.security = Security {
            supplementary_groups: vec![4000, 5000],
            allow_privilege_escalation: true,
            oom_score_adj: Some(-997),
            ..Default::default()
        };
        let spec = spec_of(&config);
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.user().uid(), 1000);
        assert_eq!(process.user().gid(), 3000);
        assert_eq!(
            process.user().additional_gids().as_deref(),
            Some(&[4000, 5000][..])
        );
        assert_ne!(process.no_new_privileges(), Some(true));
        assert_eq!(process.oom_score_adj(), Some(settable_oom_score_adj(-997)));
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_some());
        assert_eq!(
            linux.masked_paths().as_ref().map(Vec::len),
            Some(MASKED_PATHS.len())
        );
    }

    #[test]
    fn privileged_containers_get_everything_unmasked() {
        let mut config = config();
        config.security.privileged = true;
        let spec = spec_of(&config);
        assert_eq!(bounding(&spec).len(), host_capabilities().len());
        let process = spec.process().as_ref().unwrap();
        assert_ne!(process.no_new_privileges(), Some(true));
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        assert!(linux.masked_paths().as_ref().is_none_or(Vec::is_empty));
        assert!(linux.readonly_paths().as_ref().is_none_or(Vec::is_empty));
        let devices = linux.resources().as_ref().unwrap().devices().as_ref();
        assert!(devices.unwrap().iter().all(|d| d.allow()));
        let sys = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new("/sys"))
            .unwrap();
        assert!(sys.options().as_ref().unwrap().contains(&"rw".to_owned()));
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
