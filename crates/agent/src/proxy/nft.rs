//! The proxy's table in the kernel: remembers the ruleset it last applied and
//! moves the table to a new one with one `nft -f` transaction of the
//! differences. When what the kernel holds is unknown (at start, or after a
//! failed transaction) the next apply is a full one: it reads the table's chain
//! and set names, resets the skeleton and rewrites every chain, deleting the
//! stale ones — the table itself is never deleted, so established connections
//! and affinity state survive agent restarts, as with kube-proxy.

use std::process::Command;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::ProxyError;
use super::ruleset::{self, Ruleset};
use crate::network::NetworkError;
use crate::network::netns::Namespace;
use crate::network::nft::{apply, is_valid_table_name};

/// What one apply did.
#[derive(Clone, Copy, Debug)]
pub struct ApplyReport {
    /// Whether the table was rewritten from scratch (first sync, or after a failure).
    pub full: bool,
    /// Lines of the `nft` script (0: nothing changed, `nft` not run).
    pub script_lines: usize,
    /// Time spent computing the script.
    pub render: Duration,
    /// Time spent in `nft` (listing the table and applying the script).
    pub nft: Duration,
}

/// One inet nftables table, owned by the proxy, in one network namespace.
#[derive(Debug)]
pub struct NftTable {
    name: String,
    namespace: Namespace,
    /// What the kernel holds; `None` when unknown.
    applied: Option<Ruleset>,
}

impl NftTable {
    /// The table `name` (family inet) in the calling thread's network
    /// namespace, whichever thread later applies rulesets to it.
    pub fn in_current_namespace(name: &str) -> Result<NftTable, ProxyError> {
        if !is_valid_table_name(name) {
            return Err(ProxyError::InvalidTableName(name.to_string()));
        }
        Ok(NftTable {
            name: name.to_string(),
            namespace: Namespace::current()?,
            applied: None,
        })
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network namespace the table is in.
    pub(crate) fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// Makes the table hold `desired`, changing only what differs from the
    /// last applied ruleset.
    pub async fn apply(&mut self, desired: Ruleset) -> Result<ApplyReport, ProxyError> {
        let started = Instant::now();
        let mut nft = Duration::ZERO;
        let (full, script) = match self.applied.take() {
            Some(applied) => (
                false,
                ruleset::update_script(&self.name, &applied, &desired),
            ),
            None => {
                let listed = Instant::now();
                let found = self.list().await?;
                nft += listed.elapsed();
                let mut script = ruleset::skeleton_script(&self.name);
                script.push_str(&ruleset::update_script(&self.name, &found, &desired));
                (true, script)
            }
        };
        let render = started.elapsed() - nft;
        let script_lines = script.lines().count();
        if script_lines > 0 {
            let applying = Instant::now();
            apply(&self.namespace, script).await?;
            nft += applying.elapsed();
        }
        self.applied = Some(desired);
        Ok(ApplyReport {
            full,
            script_lines,
            render,
            nft,
        })
    }

    /// The chains and sets the table holds now; empty when it does not exist.
    async fn list(&self) -> Result<Ruleset, ProxyError> {
        let name = self.name.clone();
        let listing = self
            .namespace
            .run(move || {
                Command::new("nft")
                    .args(["-t", "-j", "list", "table", "inet", &name])
                    .output()
                    .map_err(|source| NetworkError::Io {
                        context: "running nft list table".into(),
                        source,
                    })
            })
            .await?;
        if !listing.status.success() {
            let stderr = String::from_utf8_lossy(&listing.stderr);
            if stderr.contains("No such file or directory") {
                return Ok(Ruleset::default());
            }
            return Err(ProxyError::Nft(stderr.trim().to_string()));
        }
        let listing: Listing =
            serde_json::from_slice(&listing.stdout).map_err(ProxyError::Listing)?;
        let mut chains = Vec::new();
        let mut sets = Vec::new();
        for object in listing.nftables {
            match object {
                ListedObject::Chain { name } => chains.push(name),
                ListedObject::Set { name } => sets.push(name),
                ListedObject::Other(_) => {}
            }
        }
        Ok(Ruleset::found(chains, sets))
    }
}

/// `nft -j` output: `{"nftables": [{"chain": {...}}, {"set": {...}}, ...]}`.
#[derive(Deserialize)]
struct Listing {
    nftables: Vec<ListedObject>,
}

#[derive(Deserialize)]
enum ListedObject {
    #[serde(rename = "chain")]
    Chain { name: String },
    #[serde(rename = "set")]
    Set { name: String },
    #[serde(untagged)]
    Other(serde::de::IgnoredAny),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_yield_chain_and_set_names() {
        let listing: Listing = serde_json::from_str(
            r#"{"nftables": [
                {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
                {"table": {"family": "inet", "name": "gantry-proxy", "handle": 1}},
                {"set": {"family": "inet", "name": "affinity-AB-x", "table": "gantry-proxy", "type": "ipv4_addr", "handle": 2}},
                {"map": {"family": "inet", "name": "service-ips", "table": "gantry-proxy", "handle": 3}},
                {"chain": {"family": "inet", "table": "gantry-proxy", "name": "service-AB-x", "handle": 4}},
                {"rule": {"family": "inet", "table": "gantry-proxy", "chain": "service-AB-x", "handle": 5, "expr": []}}
            ]}"#,
        )
        .expect("listing");
        let names: Vec<String> = listing
            .nftables
            .into_iter()
            .filter_map(|object| match object {
                ListedObject::Chain { name } => Some(format!("chain {name}")),
                ListedObject::Set { name } => Some(format!("set {name}")),
                ListedObject::Other(_) => None,
            })
            .collect();
        assert_eq!(names, ["set affinity-AB-x", "chain service-AB-x"]);
    }
}
