//! The cluster zone's answers, computed per query from the reflectors' stores
//! so a Service or EndpointSlice change is visible to the very next query.
//!
//! The names follow the Kubernetes DNS specification (and CoreDNS's
//! `kubernetes` plugin, `pods verified` mode):
//! `svc.ns.svc.<zone>`, `_port._proto.svc.ns.svc.<zone>`,
//! `endpoint.svc.ns.svc.<zone>` (headless), `a-b-c-d.ns.pod.<zone>`.

use std::collections::BTreeSet;
use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

/// The TTL of every answer: CoreDNS's `kubernetes` plugin default, short so
/// clients notice endpoint changes quickly.
pub const TTL: u32 = 5;

/// The label an EndpointSlice carries naming the Service it belongs to.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Read-only views of the objects the zone is made from.
#[derive(Clone)]
pub struct ClusterState {
    /// Every Service in the cluster.
    pub services: Store<Service>,
    /// Every EndpointSlice in the cluster.
    pub slices: Store<EndpointSlice>,
    /// Every Pod in the cluster (for pod records and endpoint hostnames).
    pub pods: Store<Pod>,
}

/// A complete response for one question in the zone.
#[derive(Debug, Default)]
pub struct ZoneAnswer {
    /// NOERROR (with or without data) or NXDOMAIN.
    pub code: ResponseCode,
    /// The records answering the question.
    pub answers: Vec<Record>,
    /// The zone's SOA on negative answers (lets resolvers cache them).
    pub authorities: Vec<Record>,
    /// Addresses of SRV targets, saving clients a round trip.
    pub additionals: Vec<Record>,
}

/// The records at one name, before they are filtered by the question's type.
#[derive(Default)]
struct NameRecords {
    records: Vec<Record>,
    additionals: Vec<Record>,
}

/// The cluster's authoritative zone (`cluster.local` by default).
pub struct ClusterZone {
    origin: Name,
    soa: Record,
    state: ClusterState,
}

impl ClusterZone {
    /// The zone `domain` answered from `state`.
    pub fn new(domain: &Name, state: ClusterState) -> ClusterZone {
        let mut origin = domain.to_lowercase();
        origin.set_fqdn(true);
        let soa = soa_record(&origin);
        ClusterZone { origin, soa, state }
    }

    /// Whether `name` is in this zone (otherwise it is forwarded).
    pub fn contains(&self, name: &Name) -> bool {
        self.origin.zone_of(name)
    }

    /// The answer to `name`/`query_type`, `name` being in the zone.
    pub fn answer(&self, name: &Name, query_type: RecordType) -> ZoneAnswer {
        let owner = name.to_lowercase();
        let relative: Vec<String> = owner
            .iter()
            .take(owner.num_labels().saturating_sub(self.origin.num_labels()) as usize)
            .map(|label| String::from_utf8_lossy(label).into_owned())
            .collect();
        let labels: Vec<&str> = relative.iter().map(String::as_str).collect();
        let Some(found) = self.records_at(&labels, &owner) else {
            return self.negative(ResponseCode::NXDomain);
        };
        let cname = found
            .records
            .iter()
            .find(|record| record.record_type() == RecordType::CNAME);
        let answers: Vec<Record> = match cname {
            Some(cname) if query_type != RecordType::CNAME => vec![cname.clone()],
            _ => found
                .records
                .into_iter()
                .filter(|record| {
                    query_type == RecordType::ANY || record.record_type() == query_type
                })
                .collect(),
        };
        if answers.is_empty() {
            return self.negative(ResponseCode::NoError);
        }
        let additionals = if answers
            .iter()
            .any(|record| record.record_type() == RecordType::SRV)
        {
            found.additionals
        } else {
            Vec::new()
        };
        ZoneAnswer {
            code: ResponseCode::NoError,
            answers,
            authorities: Vec::new(),
            additionals,
        }
    }

    /// NXDOMAIN or NODATA, with the SOA in the authority section.
    fn negative(&self, code: ResponseCode) -> ZoneAnswer {
        ZoneAnswer {
            code,
            authorities: vec![self.soa.clone()],
            ..ZoneAnswer::default()
        }
    }

    /// Everything at `owner` (whose zone-relative labels are `labels`), or
    /// `None` when no such name exists.
    fn records_at(&self, labels: &[&str], owner: &Name) -> Option<NameRecords> {
        match labels {
            [] => Some(NameRecords {
                records: vec![self.soa.clone()],
                additionals: Vec::new(),
            }),
            ["svc"] | ["pod"] | [_, "pod"] => Some(NameRecords::default()),
            [namespace, "svc"] => self
                .namespace_has_services(namespace)
                .then(NameRecords::default),
            [service, namespace, "svc"] => {
                let service = self.service(namespace, service)?;
                Some(self.service_records(&service, owner))
            }
            [protocol, service, namespace, "svc"] if protocol.starts_with('_') => {
                self.service(namespace, service)?;
                Some(NameRecords::default())
            }
            [endpoint, service, namespace, "svc"] => {
                let service = self.service(namespace, service)?;
                let records = self.endpoint_records(&service, endpoint, owner);
                (!records.is_empty()).then_some(NameRecords {
                    records,
                    additionals: Vec::new(),
                })
            }
            [port, protocol, service, namespace, "svc"] => {
                let port = port.strip_prefix('_')?;
                let protocol = protocol.strip_prefix('_')?;
                let service = self.service(namespace, service)?;
                let found = self.srv_records(&service, owner, Some((port, protocol)));
                (!found.records.is_empty()).then_some(found)
            }
            [dashed_ip, namespace, "pod"] => {
                let address = parse_dashed_ip(dashed_ip)?;
                self.pod_with_ip(namespace, address)?;
                Some(NameRecords {
                    records: vec![address_record(owner, address)],
                    additionals: Vec::new(),
                })
            }
            _ => None,
        }
    }

    fn service(&self, namespace: &str, name: &str) -> Option<std::sync::Arc<Service>> {
        self.state
            .services
            .get(&ObjectRef::new(name).within(namespace))
    }

    fn namespace_has_services(&self, namespace: &str) -> bool {
        self.state
            .services
            .find(|service| service.namespace().as_deref() == Some(namespace))
            .is_some()
    }

    fn pod_with_ip(&self, namespace: &str, address: IpAddr) -> Option<std::sync::Arc<Pod>> {
        let address = address.to_string();
        self.state.pods.find(|pod| {
            pod.namespace().as_deref() == Some(namespace)
                && pod
                    .status
                    .as_ref()
                    .and_then(|status| status.pod_ips.as_ref())
                    .is_some_and(|ips| ips.iter().any(|ip| ip.ip == address))
        })
    }

    /// A (or AAAA) records of the ClusterIP or of each ready endpoint
    /// (headless), the CNAME of an ExternalName service, and SRV records of
    /// its named ports.
    fn service_records(&self, service: &Service, owner: &Name) -> NameRecords {
        let Some(spec) = &service.spec else {
            return NameRecords::default();
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            let records = spec
                .external_name
                .as_deref()
                .and_then(|target| Name::from_ascii(target).ok())
                .map(|mut target| {
                    target.set_fqdn(true);
                    Record::from_rdata(owner.clone(), TTL, RData::CNAME(CNAME(target)))
                })
                .into_iter()
                .collect();
            return NameRecords {
                records,
                additionals: Vec::new(),
            };
        }
        let addresses: BTreeSet<IpAddr> = if is_headless(service) {
            self.ready_endpoints(service)
                .flat_map(|(_, endpoint)| parse_addresses(&endpoint.addresses))
                .collect()
        } else {
            cluster_ips(service).collect()
        };
        let mut found = self.srv_records(service, owner, None);
        found.records.extend(
            addresses
                .into_iter()
                .map(|address| address_record(owner, address)),
        );
        found
    }

    /// The addresses of the headless service's ready endpoint called
    /// `endpoint` (its hostname, or its address with dashes).
    fn endpoint_records(&self, service: &Service, endpoint: &str, owner: &Name) -> Vec<Record> {
        if !is_headless(service) {
            return Vec::new();
        }
        let addresses: BTreeSet<IpAddr> = self
            .ready_endpoints(service)
            .filter(|(_, ready)| {
                let addresses = parse_addresses(&ready.addresses);
                self.endpoint_label(service, ready, addresses.first().copied())
                    .is_some_and(|label| label == endpoint)
            })
            .flat_map(|(_, ready)| parse_addresses(&ready.addresses))
            .collect();
        addresses
            .into_iter()
            .map(|address| address_record(owner, address))
            .collect()
    }

    /// SRV records for the service's named ports (only `wanted` when given):
    /// one targeting the service name, or one per ready endpoint for a
    /// headless service; the targets' addresses go to the additionals.
    fn srv_records(
        &self,
        service: &Service,
        owner: &Name,
        wanted: Option<(&str, &str)>,
    ) -> NameRecords {
        let matches = |name: Option<&str>, protocol: Option<&str>| {
            let Some(name) = name.filter(|name| !name.is_empty()) else {
                return false;
            };
            wanted.is_none_or(|(port, proto)| {
                name.eq_ignore_ascii_case(port)
                    && protocol.unwrap_or("TCP").eq_ignore_ascii_case(proto)
            })
        };
        let service_fqdn = service_fqdn(service, &self.origin);
        let mut targets: Vec<(Name, u16)> = Vec::new();
        let mut glue = Vec::new();
        if is_headless(service) {
            for (slice, endpoint) in self.ready_endpoints(service) {
                let addresses = parse_addresses(&endpoint.addresses);
                let Some(label) =
                    self.endpoint_label(service, &endpoint, addresses.first().copied())
                else {
                    continue;
                };
                let Some(target) = service_fqdn
                    .as_ref()
                    .and_then(|fqdn| fqdn.prepend_label(label.as_str()).ok())
                else {
                    continue;
                };
                let ports = slice.ports.iter().flatten();
                for port in ports.filter(|port: &&EndpointPort| {
                    matches(port.name.as_deref(), port.protocol.as_deref())
                }) {
                    if let Some(number) = port.port.and_then(|port| u16::try_from(port).ok()) {
                        targets.push((target.clone(), number));
                    }
                }
                glue.extend(
                    addresses
                        .iter()
                        .map(|address| address_record(&target, *address)),
                );
            }
        } else if let Some(fqdn) = &service_fqdn {
            let ports = service
                .spec
                .iter()
                .flat_map(|spec| spec.ports.iter().flatten());
            for port in ports.filter(|port: &&ServicePort| {
                matches(port.name.as_deref(), port.protocol.as_deref())
            }) {
                if let Ok(number) = u16::try_from(port.port) {
                    targets.push((fqdn.clone(), number));
                }
            }
            glue.extend(cluster_ips(service).map(|address| address_record(fqdn, address)));
        }
        let weight = u16::try_from(100 / targets.len().max(1))
            .unwrap_or(1)
            .max(1);
        let records = targets
            .into_iter()
            .map(|(target, port)| {
                Record::from_rdata(
                    owner.clone(),
                    TTL,
                    RData::SRV(SRV::new(0, weight, port, target)),
                )
            })
            .collect::<Vec<_>>();
        NameRecords {
            additionals: if records.is_empty() { Vec::new() } else { glue },
            records,
        }
    }

    /// The endpoints of `service`'s EndpointSlices that take traffic: ready
    /// ones (an unknown readiness counts as ready), or all of them when the
    /// service publishes not-ready addresses.
    fn ready_endpoints<'s>(
        &self,
        service: &'s Service,
    ) -> impl Iterator<Item = (std::sync::Arc<EndpointSlice>, Endpoint)> + 's {
        let name = service.name_any();
        let namespace = service.namespace();
        let publish_not_ready = service
            .spec
            .as_ref()
            .and_then(|spec| spec.publish_not_ready_addresses)
            .unwrap_or(false);
        let slices = self.state.slices.state_filter(|slice| {
            slice.namespace() == namespace && slice.labels().get(SERVICE_NAME_LABEL) == Some(&name)
        });
        slices.into_iter().flat_map(move |slice| {
            slice
                .endpoints
                .clone()
                .into_iter()
                .filter(move |endpoint| {
                    publish_not_ready
                        || endpoint
                            .conditions
                            .as_ref()
                            .and_then(|conditions| conditions.ready)
                            .unwrap_or(true)
                })
                .map(move |endpoint| (slice.clone(), endpoint))
        })
    }

    /// An endpoint's name under its headless service: its `hostname`, the
    /// hostname of its pod when the pod's `subdomain` is the service (what
    /// the upstream EndpointSlice controller would have set), or its address
    /// with dashes.
    fn endpoint_label(
        &self,
        service: &Service,
        endpoint: &Endpoint,
        address: Option<IpAddr>,
    ) -> Option<String> {
        if let Some(hostname) = endpoint.hostname.as_deref().filter(|name| !name.is_empty()) {
            return Some(hostname.to_ascii_lowercase());
        }
        let pod_hostname = endpoint
            .target_ref
            .as_ref()
            .filter(|target| target.kind.as_deref() == Some("Pod"))
            .and_then(|target| {
                let namespace = target.namespace.clone().or_else(|| service.namespace())?;
                self.state
                    .pods
                    .get(&ObjectRef::new(target.name.as_deref()?).within(&namespace))
            })
            .and_then(|pod| {
                let spec = pod.spec.as_ref()?;
                let subdomain_matches = spec.subdomain.as_deref() == Some(&service.name_any());
                spec.hostname
                    .clone()
                    .filter(|hostname| subdomain_matches && !hostname.is_empty())
            });
        pod_hostname
            .map(|hostname| hostname.to_ascii_lowercase())
            .or_else(|| address.map(dashed_ip))
    }
}

/// Whether the service has no virtual IP (`clusterIP: None`) and so resolves
/// to its endpoints.
fn is_headless(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.cluster_ip.as_deref())
        == Some("None")
}

/// The service's virtual IPs (`clusterIPs`, or the single `clusterIP`).
fn cluster_ips(service: &Service) -> impl Iterator<Item = IpAddr> + '_ {
    let spec = service.spec.as_ref();
    let many = spec.and_then(|spec| spec.cluster_ips.as_ref());
    let single = spec.and_then(|spec| spec.cluster_ip.as_ref());
    many.into_iter()
        .flatten()
        .chain(single.filter(|_| many.is_none_or(Vec::is_empty)))
        .filter_map(|ip| ip.parse().ok())
}

/// `svc.ns.svc.<zone>` of `service`.
fn service_fqdn(service: &Service, origin: &Name) -> Option<Name> {
    let namespace = service.namespace()?;
    let name = service.name_any().to_ascii_lowercase();
    Name::from_labels([name.as_str(), namespace.as_str(), "svc"])
        .ok()?
        .append_domain(origin)
        .ok()
}

fn parse_addresses(addresses: &[String]) -> Vec<IpAddr> {
    addresses
        .iter()
        .filter_map(|address| address.parse().ok())
        .collect()
}

fn address_record(owner: &Name, address: IpAddr) -> Record {
    let data = match address {
        IpAddr::V4(address) => RData::A(A(address)),
        IpAddr::V6(address) => RData::AAAA(AAAA(address)),
    };
    Record::from_rdata(owner.clone(), TTL, data)
}

/// `10-42-0-5` for 10.42.0.5, `fd00--1` for fd00::1 (CoreDNS's form).
fn dashed_ip(address: IpAddr) -> String {
    address.to_string().replace(['.', ':'], "-")
}

/// The address a pod record's first label spells with dashes.
fn parse_dashed_ip(label: &str) -> Option<IpAddr> {
    let dotted = label.replace('-', ".");
    if let Ok(address) = dotted.parse::<std::net::Ipv4Addr>() {
        return Some(IpAddr::V4(address));
    }
    label
        .replace('-', ":")
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The zone's SOA, shaped like CoreDNS's (`ns.dns.<zone>`,
/// `hostmaster.<zone>`), its minimum being the negative-caching TTL.
fn soa_record(origin: &Name) -> Record {
    let child = |label: &str| {
        origin
            .prepend_label(label)
            .unwrap_or_else(|_| origin.clone())
    };
    let primary = child("dns")
        .prepend_label("ns")
        .unwrap_or_else(|_| origin.clone());
    let serial = jiff::Timestamp::now().as_second().unsigned_abs() as u32;
    Record::from_rdata(
        origin.clone(),
        TTL,
        RData::SOA(SOA::new(
            primary,
            child("hostmaster"),
            serial,
            7200,
            1800,
            86400,
            TTL,
        )),
    )
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;
    use serde_json::json;

    use super::*;

    /// A zone over the given objects, as the reflectors would hold them.
    fn zone(
        services: &[serde_json::Value],
        slices: &[serde_json::Value],
        pods: &[serde_json::Value],
    ) -> ClusterZone {
        fn store<K>(objects: &[serde_json::Value]) -> Store<K>
        where
            K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + 'static,
        {
            let mut writer = Writer::<K>::default();
            for object in objects {
                let object: K = serde_json::from_value(object.clone()).expect("valid object");
                writer.apply_watcher_event(&watcher::Event::Apply(object));
            }
            writer.as_reader()
        }
        let state = ClusterState {
            services: store(services),
            slices: store(slices),
            pods: store(pods),
        };
        ClusterZone::new(&Name::from_ascii("cluster.local").expect("name"), state)
    }

    fn name(text: &str) -> Name {
        Name::from_str(text).expect("name")
    }

    fn addresses(answer: &ZoneAnswer) -> Vec<String> {
        let mut found: Vec<String> = answer
            .answers
            .iter()
            .map(|record| record.data.to_string())
            .collect();
        found.sort();
        found
    }

    fn service(namespace: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
        json!({"metadata": {"name": name, "namespace": namespace}, "spec": spec})
    }

    fn slice(
        namespace: &str,
        service: &str,
        ports: serde_json::Value,
        endpoints: serde_json::Value,
    ) -> serde_json::Value {
        json!({
            "metadata": {"name": format!("{service}-abcde"), "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": endpoints,
        })
    }

    fn web() -> serde_json::Value {
        service(
            "default",
            "web",
            json!({
                "clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 9090}],
            }),
        )
    }

    fn headless() -> (serde_json::Value, serde_json::Value, Vec<serde_json::Value>) {
        let service = service(
            "db",
            "pg",
            json!({
                "clusterIP": "None", "ports": [{"name": "sql", "port": 5432}],
            }),
        );
        let slice = slice(
            "db",
            "pg",
            json!([{"name": "sql", "port": 5432, "protocol": "TCP"}]),
            json!([
                {"addresses": ["10.42.0.5"], "conditions": {"ready": true},
                 "targetRef": {"kind": "Pod", "name": "pg-0", "namespace": "db"}},
                {"addresses": ["10.42.0.6"], "conditions": {"ready": true}, "hostname": "replica"},
                {"addresses": ["10.42.0.7"], "conditions": {"ready": false}},
                {"addresses": ["10.42.0.8"]},
            ]),
        );
        let pods = vec![json!({
            "metadata": {"name": "pg-0", "namespace": "db"},
            "spec": {"hostname": "pg-0", "subdomain": "pg", "containers": []},
            "status": {"podIP": "10.42.0.5", "podIPs": [{"ip": "10.42.0.5"}]},
        })];
        (service, slice, pods)
    }

    #[test]
    fn cluster_ip_service_resolves_to_its_virtual_ip() {
        let zone = zone(&[web()], &[], &[]);
        let answer = zone.answer(&name("web.default.svc.cluster.local."), RecordType::A);
        assert_eq!(answer.code, ResponseCode::NoError);
        assert_eq!(addresses(&answer), ["10.43.0.20"]);
        assert_eq!(answer.answers[0].ttl, TTL);
        // Names are case-insensitive.
        let upper = zone.answer(&name("WEB.Default.SVC.cluster.local."), RecordType::A);
        assert_eq!(addresses(&upper), ["10.43.0.20"]);
    }

    #[test]
    fn ipv6_question_for_an_ipv4_service_is_nodata_with_soa() {
        let zone = zone(&[web()], &[], &[]);
        let answer = zone.answer(&name("web.default.svc.cluster.local."), RecordType::AAAA);
        assert_eq!(answer.code, ResponseCode::NoError);
        assert!(answer.answers.is_empty());
        assert_eq!(answer.authorities[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn unknown_names_are_nxdomain_with_soa() {
        let zone = zone(&[web()], &[], &[]);
        for unknown in [
            "nope.default.svc.cluster.local.",
            "web.other.svc.cluster.local.",
            "a.b.c.d.e.f.cluster.local.",
            "web.default.cluster.local.",
        ] {
            let answer = zone.answer(&name(unknown), RecordType::A);
            assert_eq!(answer.code, ResponseCode::NXDomain, "{unknown}");
            assert_eq!(
                answer.authorities[0].record_type(),
                RecordType::SOA,
                "{unknown}"
            );
        }
        let namespace = zone.answer(&name("default.svc.cluster.local."), RecordType::A);
        assert_eq!(namespace.code, ResponseCode::NoError);
    }

    #[test]
    fn srv_for_named_port_targets_the_service() {
        let zone = zone(&[web()], &[], &[]);
        let answer = zone.answer(
            &name("_http._tcp.web.default.svc.cluster.local."),
            RecordType::SRV,
        );
        assert_eq!(
            addresses(&answer),
            ["0 100 80 web.default.svc.cluster.local."]
        );
        assert_eq!(answer.additionals.len(), 1);
        assert_eq!(answer.additionals[0].data.to_string(), "10.43.0.20");
        let wrong_protocol = zone.answer(
            &name("_http._udp.web.default.svc.cluster.local."),
            RecordType::SRV,
        );
        assert_eq!(wrong_protocol.code, ResponseCode::NXDomain);
    }

    #[test]
    fn headless_service_resolves_to_each_ready_endpoint() {
        let (service, slice, pods) = headless();
        let zone = zone(&[service], &[slice], &pods);
        let answer = zone.answer(&name("pg.db.svc.cluster.local."), RecordType::A);
        assert_eq!(addresses(&answer), ["10.42.0.5", "10.42.0.6", "10.42.0.8"]);
    }

    #[test]
    fn headless_srv_targets_each_endpoint_by_hostname_or_address() {
        let (service, slice, pods) = headless();
        let zone = zone(&[service], &[slice], &pods);
        let answer = zone.answer(&name("_sql._tcp.pg.db.svc.cluster.local."), RecordType::SRV);
        assert_eq!(
            addresses(&answer),
            [
                "0 33 5432 10-42-0-8.pg.db.svc.cluster.local.",
                "0 33 5432 pg-0.pg.db.svc.cluster.local.",
                "0 33 5432 replica.pg.db.svc.cluster.local.",
            ]
        );
        assert_eq!(answer.additionals.len(), 3);
    }

    #[test]
    fn pod_hostname_under_its_subdomain_service() {
        let (service, slice, pods) = headless();
        let zone = zone(&[service], &[slice], &pods);
        let pod = zone.answer(&name("pg-0.pg.db.svc.cluster.local."), RecordType::A);
        assert_eq!(addresses(&pod), ["10.42.0.5"]);
        let by_endpoint_hostname =
            zone.answer(&name("replica.pg.db.svc.cluster.local."), RecordType::A);
        assert_eq!(addresses(&by_endpoint_hostname), ["10.42.0.6"]);
        let not_ready = zone.answer(&name("10-42-0-7.pg.db.svc.cluster.local."), RecordType::A);
        assert_eq!(not_ready.code, ResponseCode::NXDomain);
    }

    #[test]
    fn pod_records_answer_only_addresses_of_pods_in_that_namespace() {
        let (_, _, pods) = headless();
        let zone = zone(&[], &[], &pods);
        let pod = zone.answer(&name("10-42-0-5.db.pod.cluster.local."), RecordType::A);
        assert_eq!(addresses(&pod), ["10.42.0.5"]);
        let elsewhere = zone.answer(&name("10-42-0-5.default.pod.cluster.local."), RecordType::A);
        assert_eq!(elsewhere.code, ResponseCode::NXDomain);
        let garbage = zone.answer(&name("not-an-ip.db.pod.cluster.local."), RecordType::A);
        assert_eq!(garbage.code, ResponseCode::NXDomain);
    }

    #[test]
    fn external_name_is_a_cname_for_every_type() {
        let external = service(
            "default",
            "search",
            json!({"type": "ExternalName", "externalName": "example.org"}),
        );
        let zone = zone(&[external], &[], &[]);
        for query_type in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
            let answer = zone.answer(&name("search.default.svc.cluster.local."), query_type);
            assert_eq!(addresses(&answer), ["example.org."], "{query_type}");
            assert_eq!(answer.answers[0].record_type(), RecordType::CNAME);
        }
    }

    #[test]
    fn apex_answers_soa() {
        let zone = zone(&[], &[], &[]);
        let answer = zone.answer(&name("cluster.local."), RecordType::SOA);
        assert_eq!(answer.answers.len(), 1);
        assert!(
            answer.answers[0]
                .data
                .to_string()
                .starts_with("ns.dns.cluster.local. hostmaster.cluster.local.")
        );
        assert!(zone.contains(&name("x.cluster.local.")));
        assert!(!zone.contains(&name("example.org.")));
    }
}
