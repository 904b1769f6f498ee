//! The per-pod `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` the kubelet
//! manages: built by pure functions from the pod and the node's DNS settings,
//! written once into the pod's directory and bind-mounted into every container,
//! so all containers of a pod agree on who and where they are.

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use gantry_runtime::BindMount;
use k8s_openapi::api::core::v1::{Pod, PodDNSConfig};

/// The host file whose resolver settings pods with `dnsPolicy: Default` inherit.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// Where systemd-resolved keeps the real upstream servers when the host's
/// resolv.conf only names its loopback stub.
const SYSTEMD_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";
/// The kubelet's search-path limit (`MaxDNSSearchPaths`).
const MAX_SEARCHES: usize = 32;
/// The most nameservers a resolver reads (glibc's MAXNS).
const MAX_NAMESERVERS: usize = 3;
/// Hostnames are DNS labels.
const MAX_HOSTNAME_LENGTH: usize = 63;

/// The cluster's DNS service as the node knows it (`--cluster-dns`,
/// `--cluster-domain` of the kubelet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDns {
    /// The cluster DNS service's address; `None` leaves pods with the host's resolvers.
    pub nameserver: Option<Ipv4Addr>,
    /// The cluster's DNS domain (`cluster.local`).
    pub domain: String,
}

/// A resolver configuration: what resolv.conf says, in the order it says it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines.
    pub nameservers: Vec<String>,
    /// The `search` list.
    pub searches: Vec<String>,
    /// `options`, each `name` or `name:value`.
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Reads a resolv.conf: `nameserver`, `search` (and the older `domain`) and
    /// `options` lines; comments and unknown keywords are ignored, as the
    /// resolver does. Loopback nameservers are dropped: inside the pod's network
    /// namespace they would name the pod itself, not the host's resolver.
    pub fn parse_host(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("nameserver") => {
                    let usable = fields
                        .next()
                        .filter(|server| !is_loopback(server))
                        .map(str::to_owned);
                    conf.nameservers.extend(usable);
                }
                // The last search or domain line wins, as in resolv.conf(5).
                Some("search" | "domain") => conf.searches = fields.map(str::to_owned).collect(),
                Some("options") => conf.options.extend(fields.map(str::to_owned)),
                _ => {}
            }
        }
        conf
    }

    /// The file's text, in the order containerd writes it.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if !self.searches.is_empty() {
            let _ = writeln!(text, "search {}", self.searches.join(" "));
        }
        for server in &self.nameservers {
            let _ = writeln!(text, "nameserver {server}");
        }
        if !self.options.is_empty() {
            let _ = writeln!(text, "options {}", self.options.join(" "));
        }
        text
    }

    /// Adds the pod's `dnsConfig`: nameservers and searches are appended without
    /// duplicates, options replace same-named ones (the kubelet's `appendDNSConfig`).
    fn merge(&mut self, config: &PodDNSConfig) {
        append_unique(&mut self.nameservers, config.nameservers.iter().flatten());
        append_unique(&mut self.searches, config.searches.iter().flatten());
        for option in config.options.iter().flatten() {
            let Some(name) = option.name.as_deref().filter(|name| !name.is_empty()) else {
                continue;
            };
            let rendered = match option.value.as_deref() {
                Some(value) => format!("{name}:{value}"),
                None => name.to_owned(),
            };
            let same_name = |existing: &String| option_name(existing) == name;
            match self.options.iter_mut().find(|existing| same_name(existing)) {
                Some(existing) => *existing = rendered,
                None => self.options.push(rendered),
            }
        }
    }

    fn enforce_limits(&mut self) {
        self.nameservers.truncate(MAX_NAMESERVERS);
        self.searches.truncate(MAX_SEARCHES);
    }
}

fn is_loopback(server: &str) -> bool {
    server
        .parse::<IpAddr>()
        .is_ok_and(|address| address.is_loopback())
}

fn option_name(option: &str) -> &str {
    option.split_once(':').map_or(option, |(name, _)| name)
}

fn append_unique<'a>(list: &mut Vec<String>, extra: impl Iterator<Item = &'a String>) {
    for item in extra {
        if !list.contains(item) {
            list.push(item.clone());
        }
    }
}

/// The host's resolver settings for pods: /etc/resolv.conf, or systemd-resolved's
/// upstream file when /etc/resolv.conf names nothing but the loopback stub.
/// Blocking: reads files.
pub fn host_resolv_conf() -> ResolvConf {
    let read = |path: &str| std::fs::read_to_string(path).map(|text| ResolvConf::parse_host(&text));
    let conf = read(HOST_RESOLV_CONF).unwrap_or_default();
    if conf.nameservers.is_empty()
        && let Ok(upstream) = read(SYSTEMD_RESOLV_CONF)
    {
        return upstream;
    }
    conf
}

/// The pod's resolv.conf under its `dnsPolicy` (the kubelet's `GetPodDNS`):
/// `ClusterFirst` (the default) points at the cluster DNS with the namespace's
/// search path and `ndots:5`, falling back to the host's settings when the node
/// has no cluster DNS; `Default` is the host's; `None` is only the `dnsConfig`,
/// which the other policies merge in. Pods do not share the host's network, so
/// `ClusterFirstWithHostNet` behaves as `ClusterFirst`.
pub fn pod_resolv_conf(pod: &Pod, dns: &ClusterDns, host: &ResolvConf) -> ResolvConf {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|spec| spec.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let mut conf = match (policy, dns.nameserver) {
        ("None", _) => ResolvConf::default(),
        ("Default", _) | (_, None) => host.clone(),
        (_, Some(nameserver)) => {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
            let domain = &dns.domain;
            let mut searches = vec![
                format!("{namespace}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.clone(),
            ];
            append_unique(&mut searches, host.searches.iter());
            ResolvConf {
                nameservers: vec![nameserver.to_string()],
                searches,
                options: vec!["ndots:5".to_owned()],
            }
        }
    };
    if let Some(config) = spec.and_then(|spec| spec.dns_config.as_ref()) {
        conf.merge(config);
    }
    conf.enforce_limits();
    conf
}

/// The pod's hostname: `spec.hostname`, else its name cut to a DNS label (with
/// no trailing `-` or `.`, as the kubelet trims it).
pub fn pod_hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.hostname.clone())
        .filter(|hostname| !hostname.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let truncated: String = name.chars().take(MAX_HOSTNAME_LENGTH).collect();
    truncated.trim_end_matches(['-', '.']).to_owned()
}

/// `<hostname>.<subdomain>.<namespace>.svc.<domain>` when the pod has a
/// subdomain (a headless Service gives it a DNS name), else `None`.
pub fn pod_fqdn(pod: &Pod, domain: &str) -> Option<String> {
    let subdomain = pod
        .spec
        .as_ref()?
        .subdomain
        .as_deref()
        .filter(|subdomain| !subdomain.is_empty())?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    Some(format!(
        "{}.{subdomain}.{namespace}.svc.{domain}",
        pod_hostname(pod)
    ))
}

/// The kubelet's managed hosts file: localhost entries, the pod's own address
/// (127.0.1.1, as Debian does for itself, when the pod has no network address)
/// with its FQDN and hostname, then the pod's `hostAliases`.
pub fn pod_hosts(pod: &Pod, pod_ip: Option<IpAddr>, domain: &str) -> String {
    let mut text = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    let own_address = pod_ip.unwrap_or(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1)));
    let hostname = pod_hostname(pod);
    match pod_fqdn(pod, domain) {
        Some(fqdn) => {
            let _ = writeln!(text, "{own_address}\t{fqdn}\t{hostname}");
        }
        None => {
            let _ = writeln!(text, "{own_address}\t{hostname}");
        }
    }
    let aliases = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.host_aliases.as_ref())
        .filter(|aliases| !aliases.is_empty());
    if let Some(aliases) = aliases {
        text.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases {
            let names = alias.hostnames.as_deref().unwrap_or_default();
            let _ = writeln!(text, "{}\t{}", alias.ip, names.join("\t"));
        }
    }
    text
}

/// The three files of one pod, rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcFiles {
    /// `/etc/hosts`.
    pub hosts: String,
    /// `/etc/hostname`.
    pub hostname: String,
    /// `/etc/resolv.conf`.
    pub resolv_conf: String,
}

impl EtcFiles {
    /// Renders the pod's files. Blocking: reads the host's resolv.conf.
    pub fn for_pod(pod: &Pod, pod_ip: Option<IpAddr>, dns: &ClusterDns) -> EtcFiles {
        EtcFiles {
            hosts: pod_hosts(pod, pod_ip, &dns.domain),
            hostname: format!("{}\n", pod_hostname(pod)),
            resolv_conf: pod_resolv_conf(pod, dns, &host_resolv_conf()).render(),
        }
    }

    /// Writes the files into the pod directory `dir` unless an earlier sync (or
    /// agent) already did, and returns their bind mounts. Existing files are kept,
    /// as the kubelet keeps its etc-hosts: containers may have edited them, and
    /// replacing a bind-mounted file would detach running containers from it.
    /// Blocking: file I/O.
    pub fn install(&self, dir: &Path) -> io::Result<Vec<BindMount>> {
        std::fs::create_dir_all(dir)?;
        let mut mounts = Vec::new();
        for (file, destination, text) in [
            ("etc-hosts", "/etc/hosts", &self.hosts),
            ("etc-hostname", "/etc/hostname", &self.hostname),
            ("resolv.conf", "/etc/resolv.conf", &self.resolv_conf),
        ] {
            let source = dir.join(file);
            write_once(&source, text)?;
            mounts.push(BindMount {
                source,
                destination: PathBuf::from(destination),
                read_only: false,
            });
        }
        Ok(mounts)
    }
}

/// Creates `path` with `text` atomically (a temporary file renamed into place), so
/// a crash never leaves a half-written file for the next agent to keep.
fn write_once(path: &Path, text: &str) -> io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    io::Write::write_all(&mut file, text.as_bytes())?;
    let permissions = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    file.as_file().set_permissions(permissions)?;
    file.persist(path).map_err(|error| error.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{HostAlias, PodDNSConfigOption, PodSpec};
    use kube::api::ObjectMeta;

    use super::*;

    fn pod(namespace: &str, name: &str, spec: PodSpec) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            spec: Some(spec),
            ..Default::default()
        }
    }

    fn cluster_dns() -> ClusterDns {
        ClusterDns {
            nameserver: Some(Ipv4Addr::new(10, 43, 0, 10)),
            domain: "cluster.local".into(),
        }
    }

    fn host() -> ResolvConf {
        ResolvConf::parse_host(
            "# generated\nnameserver 127.0.0.53\nnameserver 192.0.2.1\n\
             search corp.example\noptions edns0 trust-ad\n",
        )
    }

    #[test]
    fn host_resolv_conf_drops_loopback_nameservers() {
        let host = host();
        assert_eq!(host.nameservers, ["192.0.2.1"]);
        assert_eq!(host.searches, ["corp.example"]);
        assert_eq!(host.options, ["edns0", "trust-ad"]);
        let v6 = ResolvConf::parse_host("nameserver ::1\nnameserver 2001:db8::1\n");
        assert_eq!(v6.nameservers, ["2001:db8::1"]);
    }

    #[test]
    fn cluster_first_points_at_the_cluster_dns() {
        let conf = pod_resolv_conf(
            &pod("shop", "web", PodSpec::default()),
            &cluster_dns(),
            &host(),
        );
        assert_eq!(
            conf.render(),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
             nameserver 10.43.0.10\n\
             options ndots:5\n"
        );
    }

    #[test]
    fn cluster_first_without_cluster_dns_uses_the_host() {
        let dns = ClusterDns {
            nameserver: None,
            ..cluster_dns()
        };
        let conf = pod_resolv_conf(&pod("shop", "web", PodSpec::default()), &dns, &host());
        assert_eq!(conf, host());
    }

    #[test]
    fn default_policy_uses_the_host_even_with_cluster_dns() {
        let spec = PodSpec {
            dns_policy: Some("Default".into()),
            ..Default::default()
        };
        let conf = pod_resolv_conf(&pod("shop", "web", spec), &cluster_dns(), &host());
        assert_eq!(
            conf.render(),
            "search corp.example\nnameserver 192.0.2.1\noptions edns0 trust-ad\n"
        );
    }

    fn dns_config() -> PodDNSConfig {
        let option = |name: &str, value: Option<&str>| PodDNSConfigOption {
            name: Some(name.into()),
            value: value.map(Into::into),
        };
        PodDNSConfig {
            nameservers: Some(vec!["192.0.2.53".into(), "10.43.0.10".into()]),
            searches: Some(vec!["svc.cluster.local".into(), "example.org".into()]),
            options: Some(vec![option("ndots", Some("2")), option("edns0", None)]),
        }
    }

    #[test]
    fn none_policy_is_only_the_dns_config() {
        let spec = PodSpec {
            dns_policy: Some("None".into()),
            dns_config: Some(dns_config()),
            ..Default::default()
        };
        let conf = pod_resolv_conf(&pod("shop", "web", spec), &cluster_dns(), &host());
        assert_eq!(conf.nameservers, ["192.0.2.53", "10.43.0.10"]);
        assert_eq!(conf.searches, ["svc.cluster.local", "example.org"]);
        assert_eq!(conf.options, ["ndots:2", "edns0"]);
    }

    #[test]
    fn dns_config_merges_into_cluster_first() {
        let spec = PodSpec {
            dns_config: Some(dns_config()),
            ..Default::default()
        };
        let conf = pod_resolv_conf(&pod("shop", "web", spec), &cluster_dns(), &host());
        assert_eq!(conf.nameservers, ["10.43.0.10", "192.0.2.53"]);
        assert_eq!(
            conf.searches,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example",
                "example.org"
            ]
        );
        assert_eq!(conf.options, ["ndots:2", "edns0"]);
    }

    #[test]
    fn nameservers_are_capped_at_three() {
        let spec = PodSpec {
            dns_policy: Some("None".into()),
            dns_config: Some(PodDNSConfig {
                nameservers: Some((1..=5).map(|n| format!("192.0.2.{n}")).collect()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let conf = pod_resolv_conf(&pod("shop", "web", spec), &cluster_dns(), &host());
        assert_eq!(conf.nameservers.len(), MAX_NAMESERVERS);
    }

    #[test]
    fn hosts_name_the_pod_and_its_aliases() {
        let spec = PodSpec {
            hostname: Some("db-0".into()),
            subdomain: Some("db".into()),
            host_aliases: Some(vec![HostAlias {
                ip: "192.0.2.7".into(),
                hostnames: Some(vec!["foo.local".into(), "bar.local".into()]),
            }]),
            ..Default::default()
        };
        let hosts = pod_hosts(
            &pod("shop", "db-0", spec),
            Some("10.42.0.9".parse().unwrap()),
            "cluster.local",
        );
        assert!(hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(
            hosts.contains("\n10.42.0.9\tdb-0.db.shop.svc.cluster.local\tdb-0\n"),
            "{hosts}"
        );
        assert!(
            hosts.ends_with("# Entries added by HostAliases.\n192.0.2.7\tfoo.local\tbar.local\n"),
            "{hosts}"
        );
    }

    #[test]
    fn hosts_without_a_pod_address_use_the_debian_self_address() {
        let hosts = pod_hosts(
            &pod("shop", "web", PodSpec::default()),
            None,
            "cluster.local",
        );
        assert!(hosts.ends_with("\n127.0.1.1\tweb\n"), "{hosts}");
    }

    #[test]
    fn hostnames_are_dns_labels() {
        let long = format!("{}-{}", "a".repeat(62), "tail");
        assert_eq!(
            pod_hostname(&pod("ns", &long, PodSpec::default())),
            "a".repeat(62)
        );
        let named = PodSpec {
            hostname: Some("custom".into()),
            ..Default::default()
        };
        assert_eq!(pod_hostname(&pod("ns", "web", named)), "custom");
    }

    #[test]
    fn install_writes_once_and_keeps_edits() {
        let dir = tempfile::tempdir().unwrap();
        let files = EtcFiles {
            hosts: "hosts\n".into(),
            hostname: "web\n".into(),
            resolv_conf: "nameserver 192.0.2.1\n".into(),
        };
        let mounts = files.install(dir.path()).unwrap();
        let destinations: Vec<_> = mounts.iter().map(|m| m.destination.clone()).collect();
        assert_eq!(
            destinations,
            [
                PathBuf::from("/etc/hosts"),
                "/etc/hostname".into(),
                "/etc/resolv.conf".into()
            ]
        );
        std::fs::write(&mounts[0].source, "edited\n").unwrap();
        files.install(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&mounts[0].source).unwrap(),
            "edited\n"
        );
        assert_eq!(
            std::fs::read_to_string(&mounts[2].source).unwrap(),
            "nameserver 192.0.2.1\n"
        );
    }
}
