//! Pod subresources that take over the connection: `pods/exec`, `pods/attach` and
//! `pods/portforward`. As kube-apiserver does, the server authorizes the caller (the
//! request middleware asks RBAC for `create` on the subresource, [`crate::authz`]), finds
//! the pod's node, sends the same upgrade request to the kubelet there
//! (`/exec/{namespace}/{pod}/{container}`, `/attach/...`, `/portforward/{namespace}/{pod}`)
//! and, once the kubelet switches protocols, answers 101 itself and splices the two
//! upgraded byte streams. It does not look inside them: WebSocket channel protocols,
//! SPDY and whatever port-forward speaks pass through unchanged.
//!
//! Everything that can go wrong before the upgrade (forbidden, no such pod or
//! container, kubelet unreachable or refusing) is a `Status` with its HTTP code, which
//! kubectl prints.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use gantry_api::{ApiError, Reason, registry};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::{PodProxy, connect_kubelet, kubelet_address, kubelet_error, status_response};

/// The pod annotation naming the container kubectl picks when none is given.
const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";
/// Request headers the kubelet needs to answer an upgrade: the protocol switch itself,
/// WebSocket's key, version and subprotocols, SPDY's stream protocol versions.
const FORWARDED_HEADER_PREFIXES: [&str; 2] = ["sec-websocket-", "x-stream-protocol-version"];

/// The upgrading pod subresources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Subresource {
    Exec,
    Attach,
    PortForward,
}

impl Subresource {
    /// The name in URLs, in RBAC rules (`pods/<name>`) and on the kubelet.
    fn name(self) -> &'static str {
        match self {
            Subresource::Exec => "exec",
            Subresource::Attach => "attach",
            Subresource::PortForward => "portforward",
        }
    }
}

/// The routes this module serves; kubectl sends GET for WebSocket and POST for SPDY.
pub(super) fn routes<S: Clone + Send + Sync + 'static>(proxy: PodProxy) -> Router<S> {
    Router::new()
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/exec",
            get(pod_exec).post(pod_exec),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/attach",
            get(pod_attach).post(pod_attach),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/portforward",
            get(pod_port_forward).post(pod_port_forward),
        )
        .with_state(proxy)
}

async fn pod_exec(
    State(proxy): State<PodProxy>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    respond(relay(&proxy, Subresource::Exec, &namespace, &name, request).await)
}

async fn pod_attach(
    State(proxy): State<PodProxy>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    respond(relay(&proxy, Subresource::Attach, &namespace, &name, request).await)
}

async fn pod_port_forward(
    State(proxy): State<PodProxy>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    respond(relay(&proxy, Subresource::PortForward, &namespace, &name, request).await)
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(status_response)
}

/// Finds the kubelet and relays the (already authorized) upgrade to it.
async fn relay(
    proxy: &PodProxy,
    subresource: Subresource,
    namespace: &str,
    name: &str,
    mut request: Request,
) -> Result<Response, ApiError> {
    let pods = registry::find("", "v1", "pods").expect("pods are always served");
    let pod = proxy.objects.get(pods, Some(namespace), name).await?.object;
    let query = request.uri().query().unwrap_or_default().to_owned();
    let mut path = match subresource {
        Subresource::PortForward => format!("/portforward/{namespace}/{name}"),
        Subresource::Exec | Subresource::Attach => {
            let requested = requested_container(&query)?;
            let container = stream_container(&pod, name, requested.as_deref())?;
            format!("/{}/{namespace}/{name}/{container}", subresource.name())
        }
    };
    if !query.is_empty() {
        path = format!("{path}?{query}");
    }
    let Some(upgrade) = request.headers().get(header::UPGRADE).cloned() else {
        return Err(ApiError::new(
            Reason::BadRequest,
            "Upgrade request required",
        ));
    };
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|node| !node.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                Reason::BadRequest,
                format!("pod {name} does not have a host assigned"),
            )
        })?;
    let nodes = registry::find("", "v1", "nodes").expect("nodes are always served");
    let node = proxy.objects.get(nodes, None, node_name).await?.object;
    let (address, port) = kubelet_address(&node, node_name)?;

    let client_upgrade = hyper::upgrade::on(&mut request);
    let mut forwarded = hyper::Request::builder()
        .method(request.method().clone())
        .uri(&path)
        .header(header::HOST, format!("{address}:{port}"))
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, upgrade);
    for (header_name, value) in upgrade_headers(request.headers()) {
        forwarded = forwarded.header(header_name, value);
    }
    let forwarded = forwarded
        .body(Body::empty())
        .map_err(|e| ApiError::new(Reason::InternalError, e.to_string()))?;

    let unreachable = |error: String| {
        ApiError::new(
            Reason::InternalError,
            format!("error dialing the kubelet at {address}:{port}: {error}"),
        )
    };
    let tls = connect_kubelet(&proxy.connector, address, port).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    // Drives the kubelet connection until it hands its stream over to the upgrade (or
    // fails); the splice below then owns the stream.
    proxy.streams.spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "kubelet stream connection closed with error");
        }
    });
    let response = sender
        .send_request(forwarded)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(kubelet_error(response).await);
    }
    let mut switched = Response::new(Body::empty());
    *switched.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *switched.headers_mut() = response.headers().clone();
    let kubelet_upgrade = hyper::upgrade::on(response);
    let closing = proxy.closing.clone();
    let description = format!("{} {namespace}/{name}", subresource.name());
    proxy.streams.spawn(async move {
        let (client, kubelet) = tokio::join!(client_upgrade, kubelet_upgrade);
        let (client, kubelet) = match (client, kubelet) {
            (Ok(client), Ok(kubelet)) => (client, kubelet),
            (Err(error), _) | (_, Err(error)) => {
                tracing::debug!(%error, stream = %description, "upgrade failed");
                return;
            }
        };
        let (mut client, mut kubelet) = (TokioIo::new(client), TokioIo::new(kubelet));
        tokio::select! {
            spliced = tokio::io::copy_bidirectional(&mut client, &mut kubelet) => {
                if let Err(error) = spliced {
                    tracing::debug!(%error, stream = %description, "stream ended with error");
                }
            }
            () = closing.cancelled() => {}
        }
    });
    Ok(switched)
}

/// The headers of an upgrade request that travel on to the kubelet.
fn upgrade_headers(
    headers: &HeaderMap,
) -> impl Iterator<Item = (&header::HeaderName, &HeaderValue)> {
    headers.iter().filter(|(name, _)| {
        FORWARDED_HEADER_PREFIXES
            .iter()
            .any(|prefix| name.as_str().starts_with(prefix))
    })
}

/// The `container` query parameter, if given and not empty.
fn requested_container(query: &str) -> Result<Option<String>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::new(Reason::BadRequest, format!("invalid query: {e}")))?;
    Ok(pairs
        .into_iter()
        .find(|(key, value)| key == "container" && !value.is_empty())
        .map(|(_, value)| value))
}

/// The container to stream to: the one named (it must be in the pod), else the one the
/// `kubectl.kubernetes.io/default-container` annotation names, else the only one.
/// The messages are upstream's `validateContainer`'s.
fn stream_container(
    pod: &Value,
    pod_name: &str,
    requested: Option<&str>,
) -> Result<String, ApiError> {
    let names = |field: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect()
    };
    let containers = names("containers");
    let all: Vec<String> = names("initContainers")
        .into_iter()
        .chain(containers.iter().cloned())
        .chain(names("ephemeralContainers"))
        .collect();
    if let Some(name) = requested {
        return if all.iter().any(|c| c == name) {
            Ok(name.to_owned())
        } else {
            Err(ApiError::new(
                Reason::BadRequest,
                format!("container {name} is not valid for pod {pod_name}"),
            ))
        };
    }
    let annotated = pod
        .pointer("/metadata/annotations")
        .and_then(|annotations| annotations.get(DEFAULT_CONTAINER_ANNOTATION))
        .and_then(Value::as_str)
        .filter(|name| containers.iter().any(|c| c == name));
    if let Some(name) = annotated {
        return Ok(name.to_owned());
    }
    match containers.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(ApiError::new(
            Reason::BadRequest,
            format!("pod {pod_name} does not have a container"),
        )),
        _ => Err(ApiError::new(
            Reason::BadRequest,
            format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                all.join(" ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_container_is_named_annotated_or_the_only_one() {
        let one = json!({"spec": {"containers": [{"name": "app"}]}});
        assert_eq!(stream_container(&one, "p", None).unwrap(), "app");
        let wrong = stream_container(&one, "p", Some("nope")).unwrap_err();
        assert_eq!(wrong.code(), 400);
        assert_eq!(wrong.message, "container nope is not valid for pod p");
        let two = json!({
            "metadata": {"annotations": {DEFAULT_CONTAINER_ANNOTATION: "b"}},
            "spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "a"}, {"name": "b"}]},
        });
        assert_eq!(stream_container(&two, "p", None).unwrap(), "b");
        assert_eq!(stream_container(&two, "p", Some("init")).unwrap(), "init");
        let mut unannotated = two.clone();
        unannotated["metadata"] = json!({});
        assert_eq!(
            stream_container(&unannotated, "p", None)
                .unwrap_err()
                .message,
            "a container name must be specified for pod p, choose one of: [init a b]"
        );
    }

    #[test]
    fn the_container_comes_from_the_query() {
        assert_eq!(
            requested_container("command=ls&container=app&stdout=true").unwrap(),
            Some("app".to_owned())
        );
        assert_eq!(requested_container("container=&stdout=true").unwrap(), None);
        assert_eq!(requested_container("").unwrap(), None);
    }

    #[test]
    fn only_upgrade_headers_are_forwarded() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("v5.channel.k8s.io"),
        );
        headers.insert("sec-websocket-key", HeaderValue::from_static("abc"));
        headers.insert(
            "x-stream-protocol-version",
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer secret"),
        );
        let mut names: Vec<&str> = upgrade_headers(&headers).map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "sec-websocket-key",
                "sec-websocket-protocol",
                "x-stream-protocol-version"
            ]
        );
    }
}
