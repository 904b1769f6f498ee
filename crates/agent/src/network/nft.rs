//! Gantry's own nftables table: masquerading of pod traffic that leaves the
//! cluster. Every change replaces the whole table in one `nft -f -` transaction,
//! so rules are never half-applied, and no other table is ever touched.

use std::io::Write;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

use super::NetworkError;
use super::netns::Namespace;

/// The ruleset for `table`: pods of this node (`pod_cidr`) reaching outside the
/// cluster range are masqueraded to the node's address, as flannel does; traffic
/// to other pods and to multicast keeps its pod source address.
pub(crate) fn masquerade_ruleset(table: &str, pod_cidr: Ipv4Net, cluster_cidr: Ipv4Net) -> String {
    format!(
        "{reset}table ip {table} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {pod_cidr} ip daddr {cluster_cidr} return
        ip saddr {pod_cidr} ip daddr 224.0.0.0/4 return
        ip saddr {pod_cidr} masquerade fully-random
    }}
}}
",
        reset = delete_table_script(table),
    )
}

/// Deletes `table` whether or not it exists: declaring a table creates it if
/// missing, so the delete that follows always has something to delete.
pub(crate) fn delete_table_script(table: &str) -> String {
    format!("table ip {table}\ndelete table ip {table}\n")
}

/// Whether `name` can be spliced into a ruleset as a table name.
pub(crate) fn is_valid_table_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.len() <= 64
}

/// Applies `script` atomically with `nft -f -` inside `namespace`.
pub(crate) async fn apply(namespace: &Namespace, script: String) -> Result<(), NetworkError> {
    namespace
        .run(move || {
            let mut child = Command::new("nft")
                .args(["-f", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|err| NetworkError::io("running nft", err))?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin
                    .write_all(script.as_bytes())
                    .map_err(|err| NetworkError::io("writing the ruleset to nft", err))?;
            }
            let output = child
                .wait_with_output()
                .map_err(|err| NetworkError::io("waiting for nft", err))?;
            if output.status.success() {
                Ok(())
            } else {
                Err(NetworkError::Nft(
                    String::from_utf8_lossy(&output.stderr).trim().to_string(),
                ))
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_cannot_smuggle_syntax() {
        assert!(is_valid_table_name("gantry"));
        assert!(is_valid_table_name("gantry_test-1"));
        assert!(!is_valid_table_name(""));
        assert!(!is_valid_table_name("1gantry"));
        assert!(!is_valid_table_name("gantry; flush ruleset"));
    }

    #[test]
    fn the_ruleset_replaces_only_its_own_table() {
        let ruleset = masquerade_ruleset(
            "gantry",
            "10.42.1.0/24".parse().expect("cidr"),
            "10.42.0.0/16".parse().expect("cidr"),
        );
        assert!(ruleset.starts_with("table ip gantry\ndelete table ip gantry\ntable ip gantry {"));
        assert!(ruleset.contains("ip saddr 10.42.1.0/24 ip daddr 10.42.0.0/16 return"));
        assert!(!ruleset.contains("flush ruleset"));
    }
}
