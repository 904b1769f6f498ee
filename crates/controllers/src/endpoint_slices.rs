//! The EndpointSlice controller: for every Service with a selector, IPv4
//! EndpointSlices (`<service>-xxxxx`, labelled `kubernetes.io/service-name`,
//! owned by the Service) listing each selected pod with its ready, serving
//! and terminating conditions. Pods exposing the same ports share slices of
//! at most [`MAX_ENDPOINTS_PER_SLICE`] endpoints, as upstream's controller does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::PostParams;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::endpoints::{self, ServiceKey};
use crate::informer;

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's `managed-by` value (upstream's, so tools recognise it).
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// Upstream's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

const RESYNC: Duration = Duration::from_secs(30);

/// Runs the EndpointSlice controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let shutdown = shutdown.child_token();
    let (queue, worker) = informer::queue();
    let mut tasks = JoinSet::new();
    let (services, pods) =
        endpoints::spawn_service_informers(&mut tasks, &client, &shutdown, &queue);
    let slices = {
        let queue = queue.clone();
        informer::spawn_reflector(
            &mut tasks,
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={CONTROLLER_NAME}")),
            (),
            shutdown.clone(),
            move |slice: &EndpointSlice| {
                if let Some(key) = service_of(slice) {
                    queue.add(key);
                }
            },
        )
    };
    let ready = informer::wait_for_cache(&services, &shutdown).await
        && informer::wait_for_cache(&pods, &shutdown).await
        && informer::wait_for_cache(&slices, &shutdown).await;
    if ready {
        let context = Context {
            client,
            services: services.clone(),
            pods,
            slices: slices.clone(),
        };
        let everything = || {
            let mut keys = endpoints::service_keys(&services);
            keys.extend(slices.state().iter().filter_map(|s| service_of(s)));
            keys
        };
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
    slices: Store<EndpointSlice>,
}

/// The Service a managed slice belongs to.
fn service_of(slice: &EndpointSlice) -> Option<ServiceKey> {
    Some(ServiceKey {
        namespace: slice.namespace()?,
        name: slice.labels().get(SERVICE_NAME_LABEL)?.clone(),
    })
}

async fn reconcile(context: &Context, key: ServiceKey) -> Result<(), kube::Error> {
    let api: Api<EndpointSlice> = Api::namespaced(context.client.clone(), &key.namespace);
    let service = context
        .services
        .get(&key.object_ref())
        .filter(|s| endpoints::selector(s).is_some());
    let service_uid = service.as_ref().and_then(|s| s.uid());
    let (mut current, stale): (Vec<_>, Vec<_>) = context
        .slices
        .state()
        .into_iter()
        .filter(|slice| service_of(slice).as_ref() == Some(&key))
        .partition(|slice| service_uid.is_some() && owner_uid(slice) == service_uid);
    for slice in stale {
        endpoints::delete_if_present(&api, &slice.name_any()).await?;
    }
    let Some(service) = service else {
        return Ok(());
    };
    current.sort_by_key(|s| s.name_any());
    let pods = endpoints::selected_pods(&service, &context.pods);
    let mut unused = current;
    for desired in desired_slices(&service, &pods) {
        let matching = unused
            .iter()
            .position(|s| endpoints::same_json(&s.ports, &desired.ports));
        match matching.map(|i| unused.remove(i)) {
            Some(existing) => update(&api, &existing, desired).await?,
            None => {
                tracing::debug!(service = %key, "creating EndpointSlice");
                api.create(&PostParams::default(), &desired).await?;
            }
        }
    }
    for leftover in unused {
        endpoints::delete_if_present(&api, &leftover.name_any()).await?;
    }
    Ok(())
}

async fn update(
    api: &Api<EndpointSlice>,
    existing: &EndpointSlice,
    desired: EndpointSlice,
) -> Result<(), kube::Error> {
    if endpoints::same_json(&existing.endpoints, &desired.endpoints)
        && endpoints::same_json(&existing.metadata.labels, &desired.metadata.labels)
        && endpoints::same_json(
            &existing.metadata.owner_references,
            &desired.metadata.owner_references,
        )
    {
        return Ok(());
    }
    tracing::debug!(slice = existing.name_any(), "updating EndpointSlice");
    let mut updated = existing.clone();
    updated.metadata.labels = desired.metadata.labels;
    updated.metadata.owner_references = desired.metadata.owner_references;
    updated.endpoints = desired.endpoints;
    api.replace(&existing.name_any(), &PostParams::default(), &updated)
        .await?;
    Ok(())
}

fn owner_uid(slice: &EndpointSlice) -> Option<String> {
    slice
        .owner_references()
        .iter()
        .find(|o| o.kind == "Service" && o.controller == Some(true))
        .map(|o| o.uid.clone())
}

/// The slices a Service's selected pods call for (names left to
/// `generateName`). A Service with no endpoints keeps one empty slice, so
/// consumers can tell "no endpoints" from "not yet processed".
pub fn desired_slices(service: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSlice> {
    let ports = endpoints::service_ports(service);
    let mut groups: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    for pod in pods {
        let Some(endpoint) = pod_endpoint(service, pod) else {
            continue;
        };
        let Some(pod_ports) = slice_ports(&ports, pod) else {
            continue;
        };
        let key = serde_json::to_string(&pod_ports).unwrap_or_default();
        groups
            .entry(key)
            .or_insert_with(|| (pod_ports, Vec::new()))
            .1
            .push(endpoint);
    }
    let mut slices: Vec<EndpointSlice> = groups
        .into_values()
        .flat_map(|(ports, endpoints)| {
            endpoints
                .chunks(MAX_ENDPOINTS_PER_SLICE)
                .map(|chunk| new_slice(service, ports.clone(), chunk.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect();
    if slices.is_empty() {
        slices.push(new_slice(service, Vec::new(), Vec::new()));
    }
    slices
}

/// The endpoint for a pod, unless it has no IPv4 address yet or has finished.
/// Terminating pods stay listed (as not ready) so that consumers can drain them.
fn pod_endpoint(service: &Service, pod: &Pod) -> Option<Endpoint> {
    let ip = endpoints::pod_ip(pod)?;
    if endpoints::is_terminal(pod) {
        return None;
    }
    let publish_not_ready = endpoints::publishes_not_ready(service);
    let serving = publish_not_ready || endpoints::is_ready(pod);
    let terminating = endpoints::is_terminating(pod);
    Some(Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(publish_not_ready || (serving && !terminating)),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        target_ref: Some(endpoints::pod_reference(pod)),
        ..Default::default()
    })
}

/// A pod's slice ports for the Service's ports; `None` when a Service with
/// ports has none this pod can serve.
fn slice_ports(
    ports: &[k8s_openapi::api::core::v1::ServicePort],
    pod: &Pod,
) -> Option<Vec<EndpointPort>> {
    if ports.is_empty() {
        return Some(Vec::new());
    }
    let resolved: Vec<EndpointPort> = ports
        .iter()
        .filter_map(|port| {
            Some(EndpointPort {
                name: Some(port.name.clone().unwrap_or_default()),
                port: Some(endpoints::resolve_target_port(port, pod)?),
                protocol: Some(endpoints::protocol(port)),
                app_protocol: port.app_protocol.clone(),
            })
        })
        .collect();
    (!resolved.is_empty()).then_some(resolved)
}

fn new_slice(
    service: &Service,
    ports: Vec<EndpointPort>,
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    let name = service.name_any();
    let mut labels = service.labels().clone();
    labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: service.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Service".into(),
                name,
                uid: service.uid().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(ports),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::fixtures::{pod, service};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn named_target_ports_split_pods_by_resolved_port() {
        let pods = [
            pod("a", Some("10.42.0.1"), true, 8080),
            pod("b", Some("10.42.0.2"), false, 9090),
            pod("c", None, true, 8080),
        ];
        let slices = desired_slices(&service(IntOrString::String("web".into())), &pods);
        assert_eq!(slices.len(), 2, "one slice per distinct port set");
        let ports: Vec<i32> = slices
            .iter()
            .map(|s| s.ports.as_ref().expect("ports")[0].port.expect("port"))
            .collect();
        assert_eq!(ports, vec![8080, 9090]);
        let b = &slices[1].endpoints[0];
        assert_eq!(b.addresses, vec!["10.42.0.2"]);
        let conditions = b.conditions.as_ref().expect("conditions");
        assert_eq!(
            (conditions.ready, conditions.serving, conditions.terminating),
            (Some(false), Some(false), Some(false))
        );
        assert_eq!(
            slices[0]
                .labels()
                .get(SERVICE_NAME_LABEL)
                .map(String::as_str),
            Some("web")
        );
        assert_eq!(owner_uid(&slices[0]).as_deref(), Some("svc-uid"));
    }

    #[test]
    fn a_service_without_endpoints_keeps_one_empty_slice() {
        let slices = desired_slices(&service(IntOrString::Int(8080)), &[]);
        assert_eq!(slices.len(), 1);
        assert!(slices[0].endpoints.is_empty());
    }

    #[test]
    fn a_terminating_ready_pod_is_serving_but_not_ready() {
        let mut terminating = (*pod("a", Some("10.42.0.1"), true, 8080)).clone();
        terminating.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        let slices = desired_slices(&service(IntOrString::Int(8080)), &[Arc::new(terminating)]);
        let conditions = slices[0].endpoints[0]
            .conditions
            .clone()
            .expect("conditions");
        assert_eq!(
            (conditions.ready, conditions.serving, conditions.terminating),
            (Some(false), Some(true), Some(true))
        );
    }
}
