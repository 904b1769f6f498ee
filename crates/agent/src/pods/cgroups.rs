//! Per-pod cgroups, laid out as the kubelet's cgroupfs driver lays them out:
//! `/kubepods/pod<UID>` for Guaranteed pods, `/kubepods/burstable/pod<UID>` and
//! `/kubepods/besteffort/pod<UID>` for the others. The pod cgroup carries the
//! pod-wide limits (the sum of its containers') and CPU shares from its
//! requests; every container's cgroup is created beneath it by the runtime, so
//! a pod can never use more than it declared, whatever its containers do.
//! Works on cgroup v1 (one hierarchy per controller) and v2 (unified).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::PodSpec;

use super::qos::{ContainerRequirements, QosClass, all_containers};

/// The kubelet's default CFS period, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;
/// The smallest CPU weight the kernel takes (and BestEffort pods get).
pub const MIN_SHARES: u64 = 2;
/// The largest CPU weight cgroup v1 takes.
pub const MAX_SHARES: u64 = 262_144;
/// The kubelet never sets a CFS quota below 1 ms.
pub const MIN_QUOTA_US: i64 = 1_000;

/// Where the kernel mounts the cgroup filesystem.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Controllers the pod cgroups use on cgroup v2.
const V2_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// The kubelet's `MilliCPUToShares`: 1024 shares per CPU requested, within the
/// kernel's bounds.
pub fn milli_cpu_to_shares(milli_cpu: i64) -> u64 {
    if milli_cpu <= 0 {
        return MIN_SHARES;
    }
    let shares = (milli_cpu as u128 * 1024 / 1000) as u64;
    shares.clamp(MIN_SHARES, MAX_SHARES)
}

/// The kubelet's `MilliCPUToQuota`: the CFS quota for a CPU limit over `period_us`.
pub fn milli_cpu_to_quota(milli_cpu: i64, period_us: u64) -> i64 {
    if milli_cpu <= 0 {
        return 0;
    }
    let quota = (milli_cpu as i128 * period_us as i128 / 1000) as i64;
    quota.max(MIN_QUOTA_US)
}

/// cgroup v1 shares as the cgroup v2 `cpu.weight` (runc's conversion).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

/// The pod cgroup's path below every hierarchy's root (`/kubepods/burstable/pod<UID>`).
pub fn pod_cgroup_path(qos: QosClass, uid: &str) -> String {
    match qos {
        QosClass::Guaranteed => format!("/kubepods/pod{uid}"),
        QosClass::Burstable => format!("/kubepods/burstable/pod{uid}"),
        QosClass::BestEffort => format!("/kubepods/besteffort/pod{uid}"),
    }
}

/// What the pod cgroup is set to (the kubelet's `ResourceConfigForPod`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodResources {
    /// Relative CPU weight, from the pod's CPU requests.
    pub cpu_shares: u64,
    /// CFS quota per [`CPU_PERIOD_US`]; `None` when some container has no CPU limit.
    pub cpu_quota_us: Option<i64>,
    /// Memory limit; `None` when some container has no memory limit.
    pub memory_bytes: Option<i64>,
}

/// The pod's effective need for one resource: its app containers run together,
/// its init containers one at a time, so the larger of the two.
fn effective(spec: &PodSpec, of: impl Fn(&ContainerRequirements) -> Option<i64>) -> i64 {
    let app: i64 = spec
        .containers
        .iter()
        .map(|c| of(&ContainerRequirements::of(c)).unwrap_or(0))
        .sum();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| of(&ContainerRequirements::of(c)).unwrap_or(0))
        .max()
        .unwrap_or(0);
    app.max(init)
}

/// The pod cgroup's settings for a pod of class `qos`: Guaranteed pods get
/// shares, quota and memory limit; Burstable pods shares, plus a quota or a
/// memory limit when every container declares one; BestEffort pods the
/// minimum shares only.
pub fn pod_resources(spec: &PodSpec, qos: QosClass) -> PodResources {
    if qos == QosClass::BestEffort {
        return PodResources {
            cpu_shares: MIN_SHARES,
            cpu_quota_us: None,
            memory_bytes: None,
        };
    }
    let declared = |name: &str| {
        all_containers(spec).all(|c| ContainerRequirements::of(c).limits.contains_key(name))
    };
    let cpu_request = effective(spec, |r| r.requests.get("cpu").copied());
    let cpu_limit = effective(spec, |r| r.limits.get("cpu").copied());
    let memory_limit_millis = effective(spec, |r| r.limits.get("memory").copied());
    let guaranteed = qos == QosClass::Guaranteed;
    PodResources {
        cpu_shares: milli_cpu_to_shares(cpu_request),
        cpu_quota_us: (guaranteed || declared("cpu"))
            .then(|| milli_cpu_to_quota(cpu_limit, CPU_PERIOD_US)),
        memory_bytes: (guaranteed || declared("memory"))
            .then(|| (memory_limit_millis + 999) / 1000),
    }
}

/// The node's memory (`MemTotal`), which Burstable OOM scores are relative to.
pub fn node_memory_bytes() -> i64 {
    static TOTAL: OnceLock<i64> = OnceLock::new();
    *TOTAL.get_or_init(|| {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
                let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kib * 1024)
            })
            .unwrap_or(i64::MAX)
    })
}

/// The cgroup filesystem, v1 or v2, under a root (`/sys/fs/cgroup`; a temporary
/// directory in tests).
#[derive(Clone, Debug)]
pub struct CgroupFs {
    root: PathBuf,
    unified: bool,
}

impl CgroupFs {
    /// The host's cgroups; v2 when the root is the unified hierarchy.
    pub fn host() -> CgroupFs {
        CgroupFs::at(Path::new(CGROUP_ROOT))
    }

    /// The cgroups mounted at `root`, detecting the version as libcontainer does.
    pub fn at(root: &Path) -> CgroupFs {
        CgroupFs {
            root: root.to_owned(),
            unified: root.join("cgroup.controllers").exists(),
        }
    }

    /// Creates the pod cgroup at `path` (idempotent) and applies `resources`.
    /// Blocking: call from the blocking pool.
    pub fn apply(&self, path: &str, resources: &PodResources) -> io::Result<()> {
        if self.unified {
            self.apply_v2(path, resources)
        } else {
            self.apply_v1(path, resources)
        }
    }

    fn apply_v1(&self, path: &str, resources: &PodResources) -> io::Result<()> {
        let relative = path.trim_start_matches('/');
        let memory = self.root.join("memory").join(relative);
        std::fs::create_dir_all(&memory)?;
        let limit = resources
            .memory_bytes
            .map_or_else(|| "-1".to_owned(), |b| b.to_string());
        write(&memory.join("memory.limit_in_bytes"), &limit)?;
        let cpu = self.root.join("cpu").join(relative);
        std::fs::create_dir_all(&cpu)?;
        write(&cpu.join("cpu.shares"), &resources.cpu_shares.to_string())?;
        write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
        let quota = resources.cpu_quota_us.unwrap_or(-1);
        write(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())
    }

    fn apply_v2(&self, path: &str, resources: &PodResources) -> io::Result<()> {
        let relative = Path::new(path.trim_start_matches('/'));
        // Each ancestor hands the controllers down to its children.
        let mut ancestor = self.root.clone();
        for part in relative.iter() {
            std::fs::create_dir_all(&ancestor)?;
            for controller in V2_CONTROLLERS {
                let control = ancestor.join("cgroup.subtree_control");
                if let Err(error) = write(&control, &format!("+{controller}")) {
                    tracing::debug!(%error, controller, path = %control.display(), "enabling a cgroup controller");
                }
            }
            ancestor.push(part);
        }
        std::fs::create_dir_all(&ancestor)?;
        let memory = resources
            .memory_bytes
            .map_or_else(|| "max".to_owned(), |b| b.to_string());
        write(&ancestor.join("memory.max"), &memory)?;
        let quota = resources
            .cpu_quota_us
            .map_or_else(|| "max".to_owned(), |q| q.to_string());
        write(
            &ancestor.join("cpu.max"),
            &format!("{quota} {CPU_PERIOD_US}"),
        )?;
        write(
            &ancestor.join("cpu.weight"),
            &shares_to_weight(resources.cpu_shares).to_string(),
        )
    }

    /// Removes the pod cgroup at `path` from every hierarchy, with whatever
    /// container cgroups were left below it. Absent cgroups are fine.
    /// Blocking: call from the blocking pool.
    pub fn remove(&self, path: &str) -> io::Result<()> {
        let relative = path.trim_start_matches('/');
        if self.unified {
            return remove_tree(&self.root.join(relative));
        }
        let mut first_error = None;
        for hierarchy in std::fs::read_dir(&self.root)?.flatten() {
            if let Err(error) = remove_tree(&hierarchy.path().join(relative)) {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Removes a cgroup and its children, deepest first: cgroup directories go with
/// `rmdir`, never by deleting their (kernel-owned) files.
fn remove_tree(dir: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(io::Error::new(
            error.kind(),
            format!("{}: {error}", dir.display()),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::qos::pod_qos;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> PodSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn shares_and_quotas_follow_the_kubelet() {
        assert_eq!(milli_cpu_to_shares(0), 2);
        assert_eq!(milli_cpu_to_shares(1), 2);
        assert_eq!(milli_cpu_to_shares(100), 102);
        assert_eq!(milli_cpu_to_shares(1000), 1024);
        assert_eq!(milli_cpu_to_shares(1_000_000), MAX_SHARES);
        assert_eq!(milli_cpu_to_quota(0, CPU_PERIOD_US), 0);
        assert_eq!(milli_cpu_to_quota(5, CPU_PERIOD_US), 1000);
        assert_eq!(milli_cpu_to_quota(250, CPU_PERIOD_US), 25_000);
        assert_eq!(milli_cpu_to_quota(1500, CPU_PERIOD_US), 150_000);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(MAX_SHARES), 10_000);
    }

    #[test]
    fn pod_cgroups_sit_under_their_qos_class() {
        assert_eq!(
            pod_cgroup_path(QosClass::Guaranteed, "u-1"),
            "/kubepods/podu-1"
        );
        assert_eq!(
            pod_cgroup_path(QosClass::Burstable, "u-1"),
            "/kubepods/burstable/podu-1"
        );
        assert_eq!(
            pod_cgroup_path(QosClass::BestEffort, "u-1"),
            "/kubepods/besteffort/podu-1"
        );
    }

    #[test]
    fn pod_limits_are_the_sum_of_the_containers() {
        let guaranteed = spec(json!({
            "containers": [
                {"name": "a", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}},
                {"name": "b", "resources": {"limits": {"cpu": "250m", "memory": "32Mi"}}}
            ],
            "initContainers": [
                {"name": "i", "resources": {"limits": {"cpu": "2", "memory": "16Mi"}}}
            ]
        }));
        assert_eq!(pod_qos(&guaranteed), QosClass::Guaranteed);
        assert_eq!(
            pod_resources(&guaranteed, QosClass::Guaranteed),
            PodResources {
                // The init container's 2 CPUs outweigh the apps' 750m.
                cpu_shares: 2048,
                cpu_quota_us: Some(200_000),
                memory_bytes: Some(96 << 20),
            }
        );
        let burstable = spec(json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "64Mi"}}},
                {"name": "b", "resources": {"limits": {"memory": "32Mi"}}}
            ]
        }));
        assert_eq!(pod_qos(&burstable), QosClass::Burstable);
        assert_eq!(
            pod_resources(&burstable, QosClass::Burstable),
            PodResources {
                cpu_shares: 102,
                cpu_quota_us: None,
                memory_bytes: Some(96 << 20),
            }
        );
        let best_effort = spec(json!({"containers": [{"name": "a"}]}));
        assert_eq!(
            pod_resources(&best_effort, QosClass::BestEffort),
            PodResources {
                cpu_shares: 2,
                cpu_quota_us: None,
                memory_bytes: None,
            }
        );
    }

    #[test]
    fn v1_pod_cgroups_get_memory_and_cpu_settings() {
        let root = tempfile::tempdir().unwrap();
        for hierarchy in ["memory", "cpu", "pids"] {
            std::fs::create_dir(root.path().join(hierarchy)).unwrap();
        }
        let cgroups = CgroupFs::at(root.path());
        let resources = PodResources {
            cpu_shares: 512,
            cpu_quota_us: Some(50_000),
            memory_bytes: Some(1 << 26),
        };
        cgroups.apply("/kubepods/podu-1", &resources).unwrap();
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(
            read("memory/kubepods/podu-1/memory.limit_in_bytes"),
            "67108864"
        );
        assert_eq!(read("cpu/kubepods/podu-1/cpu.shares"), "512");
        assert_eq!(read("cpu/kubepods/podu-1/cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu/kubepods/podu-1/cpu.cfs_period_us"), "100000");
    }

    #[test]
    fn v2_pod_cgroups_enable_controllers_down_the_path() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory pids").unwrap();
        let cgroups = CgroupFs::at(root.path());
        let resources = PodResources {
            cpu_shares: 1024,
            cpu_quota_us: None,
            memory_bytes: Some(1 << 26),
        };
        cgroups
            .apply("/kubepods/burstable/podu-1", &resources)
            .unwrap();
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
        // A plain file keeps only the last write: the pids controller.
        assert_eq!(read("cgroup.subtree_control"), "+pids");
        assert_eq!(read("kubepods/burstable/cgroup.subtree_control"), "+pids");
        assert_eq!(read("kubepods/burstable/podu-1/memory.max"), "67108864");
        assert_eq!(read("kubepods/burstable/podu-1/cpu.max"), "max 100000");
        assert_eq!(read("kubepods/burstable/podu-1/cpu.weight"), "39");
    }

    #[test]
    fn removing_a_pod_cgroup_takes_its_children_from_every_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        for hierarchy in ["memory", "cpu"] {
            std::fs::create_dir_all(root.path().join(hierarchy).join("kubepods/podu-1/c1"))
                .unwrap();
        }
        let cgroups = CgroupFs::at(root.path());
        cgroups.remove("/kubepods/podu-1").unwrap();
        cgroups.remove("/kubepods/podu-1").unwrap();
        for hierarchy in ["memory", "cpu"] {
            assert!(!root.path().join(hierarchy).join("kubepods/podu-1").exists());
            assert!(root.path().join(hierarchy).join("kubepods").exists());
        }
    }
}
