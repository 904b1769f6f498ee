//! Names outside the cluster zone go to the host's own resolvers, through
//! hickory-resolver (retries, TCP fallback on truncation, caching).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, Record, RecordType};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use super::DnsError;

/// The upstream servers of `resolv_conf` (the host's /etc/resolv.conf text),
/// on port 53, without those that would send queries back to us: loopback
/// stub resolvers (systemd-resolved's 127.0.0.53 is not reachable from pods)
/// and `cluster_dns` itself.
pub fn upstreams_from_resolv_conf(resolv_conf: &str, cluster_dns: IpAddr) -> Vec<SocketAddr> {
    let Ok((config, _)) = hickory_resolver::system_conf::parse_resolv_conf(resolv_conf) else {
        return Vec::new();
    };
    let mut upstreams: Vec<SocketAddr> = Vec::new();
    for server in config.name_servers() {
        let address = SocketAddr::new(server.ip, 53);
        if !server.ip.is_loopback() && server.ip != cluster_dns && !upstreams.contains(&address) {
            upstreams.push(address);
        }
    }
    upstreams
}

/// The answer of an upstream resolver, re-sent to our client.
#[derive(Debug, Default)]
pub struct Forwarded {
    /// NOERROR, NXDOMAIN or SERVFAIL (upstream unreachable or failing).
    pub code: ResponseCode,
    /// The upstream's answers (with any CNAME chain).
    pub answers: Vec<Record>,
    /// The upstream's authority records (its SOA on negative answers).
    pub authorities: Vec<Record>,
}

/// Resolves names through the upstream servers; SERVFAIL when there are none.
#[derive(Clone)]
pub struct Forwarder {
    resolver: Option<Arc<TokioResolver>>,
}

impl Forwarder {
    /// A forwarder to `upstreams` (UDP, then TCP on truncation).
    pub fn new(upstreams: &[SocketAddr]) -> Result<Forwarder, DnsError> {
        if upstreams.is_empty() {
            tracing::warn!("no upstream DNS servers: names outside the cluster get SERVFAIL");
            return Ok(Forwarder { resolver: None });
        }
        let name_servers = upstreams
            .iter()
            .map(|upstream| {
                let mut server = NameServerConfig::udp_and_tcp(upstream.ip());
                for connection in &mut server.connections {
                    *connection = with_port(connection.clone(), upstream.port());
                }
                server
            })
            .collect();
        let config = ResolverConfig::from_name_servers(name_servers);
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        *builder.options_mut() = forwarding_options();
        let resolver = builder.build().map_err(DnsError::Resolver)?;
        Ok(Forwarder {
            resolver: Some(Arc::new(resolver)),
        })
    }

    /// The upstream answer to `name`/`query_type`.
    pub async fn resolve(&self, name: &Name, query_type: RecordType) -> Forwarded {
        let Some(resolver) = &self.resolver else {
            return servfail();
        };
        let mut name = name.clone();
        name.set_fqdn(true);
        match resolver.lookup(name.clone(), query_type).await {
            Ok(lookup) => Forwarded {
                code: ResponseCode::NoError,
                answers: lookup.answers().to_vec(),
                authorities: lookup.authorities().to_vec(),
            },
            Err(err) if err.is_no_records_found() => Forwarded {
                code: if err.is_nx_domain() {
                    ResponseCode::NXDomain
                } else {
                    ResponseCode::NoError
                },
                answers: Vec::new(),
                authorities: err
                    .into_soa()
                    .map(|soa| vec![soa.into_record_of_rdata()])
                    .unwrap_or_default(),
            },
            Err(err) => {
                tracing::debug!(%name, %query_type, error = %err, "forwarding failed");
                servfail()
            }
        }
    }
}

fn servfail() -> Forwarded {
    Forwarded {
        code: ResponseCode::ServFail,
        ..Forwarded::default()
    }
}

fn with_port(mut connection: ConnectionConfig, port: u16) -> ConnectionConfig {
    connection.port = port;
    connection
}

/// A forwarder's options: keep CNAME chains (clients expect them), never
/// answer from /etc/hosts, cache like CoreDNS's `cache` plugin would.
fn forwarding_options() -> ResolverOpts {
    let mut options = ResolverOpts::default();
    options.preserve_intermediates = true;
    options.use_hosts_file = ResolveHosts::Never;
    options.ndots = 0;
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_skip_loopback_and_the_cluster_dns_itself() {
        let resolv_conf = "nameserver 127.0.0.53\nnameserver 10.43.0.10\nnameserver 192.0.2.1\n\
                           nameserver 192.0.2.1\nnameserver 2001:db8::1\nsearch example.org\n";
        let cluster_dns: IpAddr = "10.43.0.10".parse().expect("address");
        assert_eq!(
            upstreams_from_resolv_conf(resolv_conf, cluster_dns),
            vec![
                "192.0.2.1:53".parse::<SocketAddr>().expect("address"),
                "[2001:db8::1]:53".parse().expect("address"),
            ]
        );
    }

    #[test]
    fn no_nameservers_means_no_upstreams() {
        let cluster_dns: IpAddr = "10.43.0.10".parse().expect("address");
        assert!(upstreams_from_resolv_conf("nameserver 127.0.0.1\n", cluster_dns).is_empty());
        assert!(upstreams_from_resolv_conf("", cluster_dns).is_empty());
    }
}
