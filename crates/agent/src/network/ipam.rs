//! Pod address allocation from the node's pod CIDR, persisted in one JSON file so
//! an agent restart finds every running pod's address again (like CNI host-local).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::NetworkError;

/// What the state file holds.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IpamState {
    /// The CIDR the addresses were allocated from.
    pod_cidr: Option<Ipv4Net>,
    /// The address handed out last; the next search starts after it, so a
    /// released address is reused as late as possible.
    last_allocated: Option<Ipv4Addr>,
    /// Pod uid -> address.
    pods: BTreeMap<String, Ipv4Addr>,
}

/// The allocations of one node's pod CIDR. The first address belongs to the
/// bridge (the pods' gateway); network and broadcast addresses are never used.
#[derive(Debug)]
pub(crate) struct PodIpam {
    path: PathBuf,
    cidr: Ipv4Net,
    state: IpamState,
}

impl PodIpam {
    /// Reads the allocations in `path` (none if it does not exist yet). Entries
    /// outside `cidr`, left from a node that had another pod CIDR, are dropped.
    pub(crate) fn load(path: &Path, cidr: Ipv4Net) -> Result<Self, NetworkError> {
        let mut state: IpamState = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| NetworkError::State {
                path: path.to_path_buf(),
                source,
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => IpamState::default(),
            Err(source) => {
                return Err(NetworkError::io(
                    format!("reading {}", path.display()),
                    source,
                ));
            }
        };
        if state.pod_cidr != Some(cidr) {
            state.pods.retain(|uid, ip| {
                let keep = cidr.contains(&*ip);
                if !keep {
                    tracing::warn!(pod_uid = uid, %ip, %cidr, "dropping an address outside the pod CIDR");
                }
                keep
            });
            state.pod_cidr = Some(cidr);
            state.last_allocated = None;
        }
        Ok(PodIpam {
            path: path.to_path_buf(),
            cidr,
            state,
        })
    }

    /// The pods' default gateway: the pod CIDR's first address, held by the bridge.
    pub(crate) fn gateway(&self) -> Ipv4Addr {
        gateway(self.cidr)
    }

    /// The address of `pod_uid`, allocating one if it has none; `true` when the
    /// allocation is new and must be saved.
    pub(crate) fn allocate(&mut self, pod_uid: &str) -> Result<(Ipv4Addr, bool), NetworkError> {
        if let Some(ip) = self.state.pods.get(pod_uid) {
            return Ok((*ip, false));
        }
        let ip = self
            .next_free()
            .ok_or(NetworkError::PodCidrExhausted(self.cidr))?;
        self.state.pods.insert(pod_uid.to_string(), ip);
        self.state.last_allocated = Some(ip);
        Ok((ip, true))
    }

    /// Frees `pod_uid`'s address; `true` when it had one.
    pub(crate) fn release(&mut self, pod_uid: &str) -> bool {
        self.state.pods.remove(pod_uid).is_some()
    }

    /// The pods holding addresses, by uid.
    pub(crate) fn pods(&self) -> impl Iterator<Item = (&str, Ipv4Addr)> {
        self.state.pods.iter().map(|(uid, ip)| (uid.as_str(), *ip))
    }

    /// The file the allocations are saved in.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The allocations as the state file holds them.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, NetworkError> {
        serde_json::to_vec_pretty(&self.state).map_err(|source| NetworkError::State {
            path: self.path.clone(),
            source,
        })
    }

    /// The first unused pod address after the last one handed out, wrapping around.
    fn next_free(&self) -> Option<Ipv4Addr> {
        let first = u32::from(self.gateway()) + 1;
        let last = u32::from(self.cidr.broadcast()).checked_sub(1)?;
        if first > last {
            return None;
        }
        let start = self
            .state
            .last_allocated
            .map(|ip| u32::from(ip).wrapping_add(1))
            .filter(|ip| (first..=last).contains(ip))
            .unwrap_or(first);
        let taken: std::collections::BTreeSet<Ipv4Addr> =
            self.state.pods.values().copied().collect();
        (start..=last)
            .chain(first..start)
            .map(Ipv4Addr::from)
            .find(|ip| !taken.contains(ip))
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename), so a
/// crash leaves either the old or the new allocations, never a torn file.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), NetworkError> {
    let context = || format!("writing {}", path.display());
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file =
        tempfile::NamedTempFile::new_in(dir).map_err(|err| NetworkError::io(context(), err))?;
    file.write_all(bytes)
        .map_err(|err| NetworkError::io(context(), err))?;
    file.as_file()
        .sync_all()
        .map_err(|err| NetworkError::io(context(), err))?;
    file.persist(path)
        .map_err(|err| NetworkError::io(context(), err.error))?;
    Ok(())
}

/// The first host address of `cidr`, which the bridge holds.
pub(crate) fn gateway(cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()).saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Ipv4Net {
        text.parse().expect("test CIDR")
    }

    #[test]
    fn addresses_skip_the_gateway_and_repeat_for_the_same_pod() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ipam =
            PodIpam::load(&dir.path().join("ipam.json"), cidr("10.42.3.0/24")).expect("load");
        assert_eq!(ipam.gateway(), Ipv4Addr::new(10, 42, 3, 1));
        assert_eq!(
            ipam.allocate("a").expect("a"),
            (Ipv4Addr::new(10, 42, 3, 2), true)
        );
        assert_eq!(
            ipam.allocate("b").expect("b"),
            (Ipv4Addr::new(10, 42, 3, 3), true)
        );
        assert_eq!(
            ipam.allocate("a").expect("a again"),
            (Ipv4Addr::new(10, 42, 3, 2), false)
        );
    }

    #[test]
    fn a_released_address_is_reused_last_and_exhaustion_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A /29 has six hosts: the gateway and five pod addresses.
        let mut ipam =
            PodIpam::load(&dir.path().join("ipam.json"), cidr("10.42.0.0/29")).expect("load");
        for pod in ["a", "b", "c"] {
            ipam.allocate(pod).expect("allocate");
        }
        assert!(ipam.release("a"));
        assert!(!ipam.release("a"));
        assert_eq!(
            ipam.allocate("d").expect("d").0,
            Ipv4Addr::new(10, 42, 0, 5)
        );
        assert_eq!(
            ipam.allocate("e").expect("e").0,
            Ipv4Addr::new(10, 42, 0, 6)
        );
        assert_eq!(
            ipam.allocate("f").expect("f").0,
            Ipv4Addr::new(10, 42, 0, 2)
        );
        assert!(matches!(
            ipam.allocate("g"),
            Err(NetworkError::PodCidrExhausted(_))
        ));
    }

    #[test]
    fn allocations_survive_a_reload_and_a_changed_cidr_drops_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ipam.json");
        let mut ipam = PodIpam::load(&path, cidr("10.42.1.0/24")).expect("load");
        let (ip, _) = ipam.allocate("pod").expect("allocate");
        write_atomically(&path, &ipam.encode().expect("encode")).expect("save");

        let mut reloaded = PodIpam::load(&path, cidr("10.42.1.0/24")).expect("reload");
        assert_eq!(reloaded.allocate("pod").expect("same pod"), (ip, false));
        assert_eq!(
            reloaded.allocate("other").expect("other").0,
            Ipv4Addr::new(10, 42, 1, 3)
        );

        let moved = PodIpam::load(&path, cidr("10.42.7.0/24")).expect("reload elsewhere");
        assert_eq!(moved.pods().count(), 0);
    }
}
