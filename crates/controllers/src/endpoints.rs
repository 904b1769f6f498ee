//! The Endpoints controller: for every Service with a selector, an Endpoints
//! object of the same name listing the selected pods' addresses (ready ones
//! in `addresses`, the rest in `notReadyAddresses`) and the Service's target
//! ports resolved against each pod's containers.
//!
//! Also home to what the EndpointSlice controller shares with it: which pods
//! a Service selects, whether a pod is ready, and how a target port resolves.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::informer::{self, Queue};

/// The label by which upstream's Endpoints controller marks the Endpoints it
/// manages (so the mirroring controller skips them); here it also tells which
/// Endpoints this controller may delete when their Service goes.
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// The label upstream puts on the Endpoints of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// How often every Service is reconciled even without a change, to heal
/// anything a watch missed.
const RESYNC: Duration = Duration::from_secs(30);

/// Runs the Endpoints controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let shutdown = shutdown.child_token();
    let (queue, worker) = informer::queue();
    let mut tasks = JoinSet::new();
    let (services, pods) = spawn_service_informers(&mut tasks, &client, &shutdown, &queue);
    let endpoints = {
        let queue = queue.clone();
        informer::spawn_reflector(
            &mut tasks,
            Api::<Endpoints>::all(client.clone()),
            watcher::Config::default(),
            (),
            shutdown.clone(),
            move |e: &Endpoints| queue.add(ServiceKey::of(e)),
        )
    };
    let ready = informer::wait_for_cache(&services, &shutdown).await
        && informer::wait_for_cache(&pods, &shutdown).await
        && informer::wait_for_cache(&endpoints, &shutdown).await;
    if ready {
        let context = Context {
            client,
            services: services.clone(),
            pods,
            endpoints,
        };
        let everything = || service_keys(&services);
        worker
            .run(shutdown.clone(), RESYNC, everything, |key| {
                reconcile(&context, key)
            })
            .await;
    }
    shutdown.cancel();
    informer::join_all(tasks).await;
}

struct Context {
    client: kube::Client,
    services: Store<Service>,
    pods: Store<Pod>,
    endpoints: Store<Endpoints>,
}

async fn reconcile(context: &Context, key: ServiceKey) -> Result<(), kube::Error> {
    let api: Api<Endpoints> = Api::namespaced(context.client.clone(), &key.namespace);
    let current = context.endpoints.get(&key.object_ref());
    let Some(service) = context.services.get(&key.object_ref()) else {
        return match current {
            Some(current) if is_managed(&current) => delete_if_present(&api, &key.name).await,
            _ => Ok(()),
        };
    };
    if selector(&service).is_none() {
        return Ok(());
    }
    let pods = selected_pods(&service, &context.pods);
    let desired = desired_endpoints(&service, &pods);
    match current {
        None => {
            tracing::debug!(service = %key, "creating Endpoints");
            api.create(&PostParams::default(), &desired).await?;
        }
        Some(current) => {
            if same_json(&current.subsets, &desired.subsets)
                && same_json(&current.metadata.labels, &desired.metadata.labels)
            {
                return Ok(());
            }
            tracing::debug!(service = %key, "updating Endpoints");
            let mut updated = (*current).clone();
            updated.metadata.labels = desired.metadata.labels;
            updated.subsets = desired.subsets;
            api.replace(&key.name, &PostParams::default(), &updated)
                .await?;
        }
    }
    Ok(())
}

/// Whether this controller wrote these Endpoints (and may delete them).
fn is_managed(endpoints: &Endpoints) -> bool {
    endpoints
        .labels()
        .get(SKIP_MIRROR_LABEL)
        .is_some_and(|v| v == "true")
}

/// The Endpoints a Service's selected pods call for.
pub fn desired_endpoints(service: &Service, pods: &[Arc<Pod>]) -> Endpoints {
    let publish_not_ready = publishes_not_ready(service);
    let ports = service_ports(service);
    let mut subsets: BTreeMap<Vec<PortKey>, (Vec<EndpointPort>, Subset)> = BTreeMap::new();
    for pod in pods {
        let Some(ip) = pod_ip(pod) else { continue };
        if is_terminal(pod) || (is_terminating(pod) && !publish_not_ready) {
            continue;
        }
        let Some(pod_ports) = endpoint_ports(&ports, pod) else {
            continue;
        };
        let key = pod_ports.iter().map(PortKey::of).collect();
        let address = EndpointAddress {
            ip: ip.to_string(),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(pod_reference(pod)),
            ..Default::default()
        };
        let (_, subset) = subsets
            .entry(key)
            .or_insert_with(|| (pod_ports, Subset::default()));
        if publish_not_ready || is_ready(pod) {
            subset.ready.push(address);
        } else {
            subset.not_ready.push(address);
        }
    }
    let subsets: Vec<EndpointSubset> = subsets
        .into_values()
        .map(|(ports, subset)| subset.into_api(ports))
        .collect();
    Endpoints {
        metadata: kube::api::ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            labels: Some(endpoints_labels(service)),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

#[derive(Default)]
struct Subset {
    ready: Vec<EndpointAddress>,
    not_ready: Vec<EndpointAddress>,
}

impl Subset {
    fn into_api(mut self, ports: Vec<EndpointPort>) -> EndpointSubset {
        let by_ip = |a: &EndpointAddress, b: &EndpointAddress| a.ip.cmp(&b.ip);
        self.ready.sort_by(by_ip);
        self.not_ready.sort_by(by_ip);
        EndpointSubset {
            addresses: (!self.ready.is_empty()).then_some(self.ready),
            not_ready_addresses: (!self.not_ready.is_empty()).then_some(self.not_ready),
            ports: (!ports.is_empty()).then_some(ports),
        }
    }
}

/// A port's identity, for grouping pods that expose the same ports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PortKey(Option<String>, i32, Option<String>);

impl PortKey {
    fn of(port: &EndpointPort) -> PortKey {
        PortKey(port.name.clone(), port.port, port.protocol.clone())
    }
}

/// A pod's Endpoints ports for the Service's ports, or `None` when the pod
/// has none of them (a named target port it does not declare). A Service
/// without ports (headless) gets its pods listed without ports.
fn endpoint_ports(ports: &[ServicePort], pod: &Pod) -> Option<Vec<EndpointPort>> {
    if ports.is_empty() {
        return Some(Vec::new());
    }
    let resolved: Vec<EndpointPort> = ports
        .iter()
        .filter_map(|port| {
            Some(EndpointPort {
                name: port.name.clone().filter(|n| !n.is_empty()),
                port: resolve_target_port(port, pod)?,
                protocol: Some(protocol(port)),
                app_protocol: port.app_protocol.clone(),
            })
        })
        .collect();
    (!resolved.is_empty()).then_some(resolved)
}

fn endpoints_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.labels().clone();
    labels.insert(SKIP_MIRROR_LABEL.into(), "true".into());
    if is_headless(service) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

// ---- shared with the EndpointSlice controller ----

/// A Service's namespace and name: the unit both endpoint controllers reconcile.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    /// The key of the Service an object of the same namespace and name belongs to.
    pub fn of<K: Resource>(object: &K) -> ServiceKey {
        ServiceKey {
            namespace: object.namespace().unwrap_or_default(),
            name: object.name_any(),
        }
    }

    pub fn object_ref<K>(&self) -> ObjectRef<K>
    where
        K: Resource<DynamicType = ()>,
    {
        ObjectRef::new(&self.name).within(&self.namespace)
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Watches Services and Pods into caches, queueing a Service when it changes
/// and every selecting Service of a pod's namespace when a pod changes (a
/// label change can move a pod out of a selection, which its new labels
/// alone would not reveal).
pub(crate) fn spawn_service_informers(
    tasks: &mut JoinSet<()>,
    client: &kube::Client,
    shutdown: &CancellationToken,
    queue: &Queue<ServiceKey>,
) -> (Store<Service>, Store<Pod>) {
    let services = {
        let queue = queue.clone();
        informer::spawn_reflector(
            tasks,
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
            (),
            shutdown.clone(),
            move |s: &Service| queue.add(ServiceKey::of(s)),
        )
    };
    let pods = {
        let queue = queue.clone();
        let services = services.clone();
        informer::spawn_reflector(
            tasks,
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            (),
            shutdown.clone(),
            move |pod: &Pod| {
                let namespace = pod.namespace().unwrap_or_default();
                for service in services.state() {
                    if service.namespace().as_deref() == Some(namespace.as_str())
                        && selector(&service).is_some()
                    {
                        queue.add(ServiceKey::of(service.as_ref()));
                    }
                }
            },
        )
    };
    (services, pods)
}

/// Every cached Service's key.
pub(crate) fn service_keys(services: &Store<Service>) -> Vec<ServiceKey> {
    services
        .state()
        .iter()
        .map(|s| ServiceKey::of(s.as_ref()))
        .collect()
}

/// The Service's selector, unless it has none (a Service whose endpoints
/// someone else manages).
pub(crate) fn selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    service
        .spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
}

/// The cached pods of the Service's namespace its selector matches.
pub(crate) fn selected_pods(service: &Service, pods: &Store<Pod>) -> Vec<Arc<Pod>> {
    let Some(selector) = selector(service) else {
        return Vec::new();
    };
    let namespace = service.namespace();
    let mut selected = pods.state_filter(|pod| {
        pod.namespace() == namespace
            && selector
                .iter()
                .all(|(k, v)| pod.labels().get(k).is_some_and(|l| l == v))
    });
    selected.sort_by_key(|pod| pod.name_any());
    selected
}

/// The Service's ports.
pub(crate) fn service_ports(service: &Service) -> Vec<ServicePort> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
}

/// `spec.publishNotReadyAddresses`: list pods before they are ready.
pub(crate) fn publishes_not_ready(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

fn is_headless(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| ip == "None")
}

/// The port's protocol, `TCP` unless set.
pub(crate) fn protocol(port: &ServicePort) -> String {
    port.protocol.clone().unwrap_or_else(|| "TCP".into())
}

/// The pod port a Service port sends to: a number as is, a name looked up
/// among the pod's container ports (`None` if the pod has no such port),
/// the Service port itself when no target is set.
pub(crate) fn resolve_target_port(port: &ServicePort, pod: &Pod) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(number)) => Some(*number),
        Some(IntOrString::String(name)) => match name.parse::<i32>() {
            Ok(number) => Some(number),
            Err(_) => named_container_port(pod, name, &protocol(port)),
        },
    }
}

fn named_container_port(pod: &Pod, name: &str, protocol: &str) -> Option<i32> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == protocol
        })
        .map(|p| p.container_port)
}

/// The pod's IPv4 address, if it has one yet.
pub(crate) fn pod_ip(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()?
        .pod_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && !ip.contains(':'))
}

/// Whether the pod's `Ready` condition is `True`.
pub(crate) fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// Whether the pod is being deleted.
pub(crate) fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Whether the pod has finished for good (`Succeeded` or `Failed`).
pub(crate) fn is_terminal(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| phase == "Succeeded" || phase == "Failed")
}

/// The reference from an endpoint to its pod.
pub(crate) fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.namespace(),
        name: Some(pod.name_any()),
        uid: pod.uid(),
        ..Default::default()
    }
}

/// Whether two values serialize alike once empty lists, maps and nulls are
/// dropped: the server may store an empty list as absent, and a controller
/// comparing naively would rewrite the object forever.
pub(crate) fn same_json<T: Serialize>(a: &T, b: &T) -> bool {
    let normalize = |v: &T| serde_json::to_value(v).map(prune);
    match (normalize(a), normalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn prune(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, prune(v)))
                .filter(|(_, v)| !is_empty(v))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(prune).collect()),
        other => other,
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

/// Deletes an object, treating "already gone" as done.
pub(crate) async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err),
    }
}

/// Builders shared by this module's and the EndpointSlice controller's tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, Pod, PodCondition, PodSpec, PodStatus, Service, ServicePort,
        ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    /// Service `default/web` selecting `app=web`, port `http` 80 to `target`.
    pub(crate) fn service(target: IntOrString) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("svc-uid".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(target),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A pod on `node-a` whose container declares port `web` as `container_port`.
    pub(crate) fn pod(name: &str, ip: Option<&str>, ready: bool, container_port: i32) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("{name}-uid")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-a".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("web".into()),
                        container_port,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: ip.map(str::to_string),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{pod, service};
    use super::*;

    #[test]
    fn endpoints_split_ready_from_not_ready_and_skip_pods_without_ip() {
        let pods = [
            pod("a", Some("10.42.0.1"), true, 8080),
            pod("b", Some("10.42.0.2"), false, 8080),
            pod("c", None, true, 8080),
        ];
        let endpoints = desired_endpoints(&service(IntOrString::Int(8080)), &pods);
        let subsets = endpoints.subsets.expect("subsets");
        assert_eq!(subsets.len(), 1);
        let ips = |list: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>| {
            list.iter()
                .flatten()
                .map(|a| a.ip.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ips(&subsets[0].addresses), vec!["10.42.0.1"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), vec!["10.42.0.2"]);
        assert_eq!(subsets[0].ports.as_ref().expect("ports")[0].port, 8080);
    }

    #[test]
    fn an_unresolvable_named_port_leaves_the_pod_out() {
        let pods = [pod("a", Some("10.42.0.1"), true, 8080)];
        let endpoints = desired_endpoints(&service(IntOrString::String("metrics".into())), &pods);
        assert!(endpoints.subsets.is_none());
    }

    #[test]
    fn publish_not_ready_addresses_lists_every_pod_as_ready() {
        let pods = [
            pod("a", Some("10.42.0.1"), true, 8080),
            pod("b", Some("10.42.0.2"), false, 8080),
        ];
        let mut service = service(IntOrString::Int(8080));
        if let Some(spec) = service.spec.as_mut() {
            spec.publish_not_ready_addresses = Some(true);
        }
        let subsets = desired_endpoints(&service, &pods).subsets.expect("subsets");
        assert_eq!(subsets[0].addresses.as_ref().map(Vec::len), Some(2));
        assert!(subsets[0].not_ready_addresses.is_none());
    }

    #[test]
    fn empty_lists_and_absent_fields_compare_equal() {
        let absent = EndpointSubset::default();
        let empty = EndpointSubset {
            addresses: Some(Vec::new()),
            ..Default::default()
        };
        assert!(same_json(&absent, &empty));
        let one = EndpointSubset {
            addresses: Some(vec![EndpointAddress {
                ip: "10.42.0.1".into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert!(!same_json(&absent, &one));
    }
}
