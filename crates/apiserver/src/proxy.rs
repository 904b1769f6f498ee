//! Pod subresources that the node agent serves and the API server relays, as
//! kube-apiserver does: `GET pods/{name}/log` finds the pod's node, calls the kubelet
//! API there (`/containerLogs/...`) and streams its answer back unchanged, so
//! `kubectl logs -f` follows live output. `pods/exec`, `pods/attach` and
//! `pods/portforward` upgrade the connection and are relayed by [`streams`].
//!
//! The API server authenticates to kubelets with a client certificate for
//! `kube-apiserver-kubelet-client` (group `system:masters`) issued from the cluster CA
//! at start, and, like kube-apiserver without `--kubelet-certificate-authority`, does
//! not verify the kubelets' self-signed serving certificates.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gantry_api::{ApiError, Reason, registry};
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::objects::Objects;
use crate::pki::{ClusterPki, PkiError};

mod streams;

/// The identity kube-apiserver presents to kubelets.
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";
/// The kubelet's port when a Node does not advertise one.
const DEFAULT_KUBELET_PORT: u16 = 10250;
/// How long connecting (TCP and TLS) to a kubelet may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a kubelet's error body becomes the Status message.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// The log options the kubelet understands; anything else is not forwarded.
const FORWARDED_LOG_OPTIONS: [&str; 7] = [
    "follow",
    "previous",
    "timestamps",
    "tailLines",
    "sinceSeconds",
    "sinceTime",
    "limitBytes",
];

/// Relays pod subresources to the kubelets; cheap to clone.
#[derive(Clone)]
pub struct PodProxy {
    objects: Objects,
    connector: TlsConnector,
    /// The spliced exec/attach/port-forward streams, which outlive their requests.
    streams: TaskTracker,
    /// Cuts those streams when the server stops.
    closing: CancellationToken,
}

impl PodProxy {
    /// Issues the kubelet client certificate from `pki` and prepares the TLS client.
    pub fn new(objects: Objects, pki: &ClusterPki) -> Result<PodProxy, PkiError> {
        let (cert_pem, key_pem) =
            pki.issue_client_certificate(KUBELET_CLIENT_USER, &["system:masters"])?;
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PkiError::Tls(format!("kubelet client certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| PkiError::Tls(format!("kubelet client key: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(UnverifiedKubeletCertificate {
            algorithms: provider.signature_verification_algorithms,
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PkiError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(chain, key)
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        Ok(PodProxy {
            objects,
            connector: TlsConnector::from(Arc::new(config)),
            streams: TaskTracker::new(),
            closing: CancellationToken::new(),
        })
    }

    /// Cuts the relayed streams (exec sessions, port forwards) and waits until their
    /// tasks have ended; the server calls it once it stops serving requests.
    pub async fn shutdown(&self) {
        self.closing.cancel();
        self.streams.close();
        self.streams.wait().await;
    }
}

/// The routes this module serves, for the API server's router (inside its
/// authentication layer).
pub fn routes<S: Clone + Send + Sync + 'static>(proxy: PodProxy) -> Router<S> {
    Router::new()
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/log",
            get(pod_log),
        )
        .with_state(proxy.clone())
        .merge(streams::routes(proxy))
}

/// `GET pods/{name}/log`: upstream's pod log REST plus its location streamer.
async fn pod_log(
    State(proxy): State<PodProxy>,
    Path((namespace, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    match relay_pod_log(&proxy, &namespace, &name, query.as_deref()).await {
        Ok(response) => response,
        Err(error) => status_response(error),
    }
}

async fn relay_pod_log(
    proxy: &PodProxy,
    namespace: &str,
    name: &str,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let options: HashMap<String, String> = match query {
        Some(query) => serde_urlencoded::from_str(query)
            .map_err(|e| ApiError::new(Reason::BadRequest, format!("invalid query: {e}")))?,
        None => HashMap::new(),
    };
    validate_log_options(&options)?;
    let pods = registry::find("", "v1", "pods").expect("pods are always served");
    let pod = proxy.objects.get(pods, Some(namespace), name).await?.object;
    let container = log_container(&pod, name, options.get("container").map(String::as_str))?;
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
    let forwarded: Vec<(&str, &str)> = FORWARDED_LOG_OPTIONS
        .iter()
        .filter_map(|key| options.get(*key).map(|value| (*key, value.as_str())))
        .collect();
    let mut path = format!("/containerLogs/{namespace}/{name}/{container}");
    if !forwarded.is_empty() {
        let encoded = serde_urlencoded::to_string(&forwarded)
            .map_err(|e| ApiError::new(Reason::BadRequest, e.to_string()))?;
        path = format!("{path}?{encoded}");
    }
    let response = kubelet_get(&proxy.connector, address, port, &path).await?;
    Ok(response)
}

/// The checks kube-apiserver makes on `PodLogOptions` before calling the kubelet.
fn validate_log_options(options: &HashMap<String, String>) -> Result<(), ApiError> {
    let invalid = |message: String| ApiError::new(Reason::BadRequest, message);
    let positive = |key: &str, minimum: i64| -> Result<(), ApiError> {
        match options.get(key).map(|value| value.parse::<i64>()) {
            None => Ok(()),
            Some(Ok(n)) if n >= minimum => Ok(()),
            Some(Ok(_)) => Err(invalid(format!(
                "{key}: Invalid value: must be greater than or equal to {minimum}"
            ))),
            Some(Err(_)) => Err(invalid(format!("{key}: Invalid value: not an integer"))),
        }
    };
    positive("tailLines", 0)?;
    positive("sinceSeconds", 1)?;
    positive("limitBytes", 1)?;
    if options.contains_key("sinceSeconds") && options.contains_key("sinceTime") {
        return Err(invalid(
            "at most one of `sinceTime` or `sinceSeconds` may be specified".into(),
        ));
    }
    for flag in ["follow", "previous", "timestamps"] {
        if let Some(value) = options.get(flag)
            && value.parse::<bool>().is_err()
        {
            return Err(invalid(format!(
                "{flag}: Invalid value: {value:?}: not a boolean"
            )));
        }
    }
    Ok(())
}

/// The container to read: the one named (it must be in the pod), or the only one.
fn log_container(pod: &Value, pod_name: &str, requested: Option<&str>) -> Result<String, ApiError> {
    let names = |field: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect()
    };
    let containers = names("containers");
    let init_containers = names("initContainers");
    match requested.filter(|name| !name.is_empty()) {
        Some(name) => {
            let known = containers
                .iter()
                .chain(&init_containers)
                .chain(&names("ephemeralContainers"))
                .any(|c| c == name);
            if known {
                Ok(name.to_owned())
            } else {
                Err(ApiError::new(
                    Reason::BadRequest,
                    format!("container {name} is not valid for pod {pod_name}"),
                ))
            }
        }
        None => match containers.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(ApiError::new(
                Reason::BadRequest,
                format!("a container name must be specified for pod {pod_name}"),
            )),
            many => {
                let mut message = format!(
                    "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                    many.join(" ")
                );
                if !init_containers.is_empty() {
                    message.push_str(&format!(
                        " or one of the init containers: [{}]",
                        init_containers.join(" ")
                    ));
                }
                Err(ApiError::new(Reason::BadRequest, message))
            }
        },
    }
}

/// The node's InternalIP and advertised kubelet port.
fn kubelet_address(node: &Value, node_name: &str) -> Result<(IpAddr, u16), ApiError> {
    let addresses = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let address_of = |kind: &str| {
        addresses
            .iter()
            .filter(|a| a.get("type").and_then(Value::as_str) == Some(kind))
            .find_map(|a| a.get("address")?.as_str()?.parse::<IpAddr>().ok())
    };
    let address = address_of("InternalIP")
        .or_else(|| address_of("ExternalIP"))
        .ok_or_else(|| {
            ApiError::new(
                Reason::InternalError,
                format!("node {node_name} has no InternalIP address"),
            )
        })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|port| u16::try_from(port).ok())
        .filter(|port| *port != 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Ok((address, port))
}

/// GETs `path` from a kubelet and relays the answer: a success streams through as it
/// arrives; an error becomes a Status carrying the kubelet's message.
async fn kubelet_get(
    connector: &TlsConnector,
    address: IpAddr,
    port: u16,
    path: &str,
) -> Result<Response, ApiError> {
    let unreachable = |error: String| {
        ApiError::new(
            Reason::InternalError,
            format!("error dialing the kubelet at {address}:{port}: {error}"),
        )
    };
    let tls = connect_kubelet(connector, address, port).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    // Drives the connection until the response body is read or dropped (the client
    // went away), then ends: it lives exactly as long as the relayed stream.
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "kubelet connection closed with error");
        }
    });
    let request = Request::get(path)
        .header(header::HOST, format!("{address}:{port}"))
        .body(Body::empty())
        .map_err(|e| unreachable(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let code = response.status();
    if code.is_success() {
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(HeaderValue::from_static("text/plain"));
        let body = Body::new(response.into_body());
        return Ok(([(header::CONTENT_TYPE, content_type)], body).into_response());
    }
    Err(kubelet_error(response).await)
}

/// Opens an mTLS connection to a kubelet, as the API server's kubelet client.
async fn connect_kubelet(
    connector: &TlsConnector,
    address: IpAddr,
    port: u16,
) -> Result<TlsStream<tokio::net::TcpStream>, ApiError> {
    let unreachable = |error: String| {
        ApiError::new(
            Reason::InternalError,
            format!("error dialing the kubelet at {address}:{port}: {error}"),
        )
    };
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((address, port)).await?;
        connector
            .connect(ServerName::IpAddress(address.into()), tcp)
            .await
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))
}

/// A kubelet's error answer as a Status carrying its message and matching code.
async fn kubelet_error(response: hyper::Response<hyper::body::Incoming>) -> ApiError {
    let code = response.status();
    let limited = http_body_util::Limited::new(response.into_body(), MAX_ERROR_BODY);
    let message = match limited.collect().await {
        Ok(body) => String::from_utf8_lossy(&body.to_bytes()).trim().to_owned(),
        Err(error) => format!("reading the kubelet's answer: {error}"),
    };
    ApiError::new(reason_for(code), message)
}

/// The Status reason that travels with a kubelet's HTTP error code.
fn reason_for(code: StatusCode) -> Reason {
    match code {
        StatusCode::BAD_REQUEST => Reason::BadRequest,
        StatusCode::UNAUTHORIZED => Reason::Unauthorized,
        StatusCode::FORBIDDEN => Reason::Forbidden,
        StatusCode::NOT_FOUND => Reason::NotFound,
        StatusCode::CONFLICT => Reason::Conflict,
        StatusCode::SERVICE_UNAVAILABLE => Reason::ServiceUnavailable,
        _ => Reason::InternalError,
    }
}

fn status_response(error: ApiError) -> Response {
    let code = StatusCode::from_u16(error.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (code, error.to_status().to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Accepts any kubelet serving certificate (kubelets sign their own), while still
/// checking the handshake signatures so the session is bound to the presented key.
#[derive(Debug)]
struct UnverifiedKubeletCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for UnverifiedKubeletCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_container_is_the_named_one_or_the_only_one() {
        let one = json!({"spec": {"containers": [{"name": "app"}]}});
        assert_eq!(log_container(&one, "p", None).unwrap(), "app");
        let two = json!({"spec": {
            "containers": [{"name": "a"}, {"name": "b"}],
            "initContainers": [{"name": "init"}],
        }});
        assert_eq!(log_container(&two, "p", Some("init")).unwrap(), "init");
        let ambiguous = log_container(&two, "p", None).unwrap_err();
        assert_eq!(ambiguous.code(), 400);
        assert_eq!(
            ambiguous.message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [init]"
        );
        let wrong = log_container(&one, "p", Some("nope")).unwrap_err();
        assert_eq!(wrong.message, "container nope is not valid for pod p");
    }

    #[test]
    fn the_kubelet_is_found_from_the_node_status() {
        let node = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.7"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 41234}},
        }});
        assert_eq!(
            kubelet_address(&node, "n1").unwrap(),
            ("10.0.0.7".parse().unwrap(), 41234)
        );
        let unadvertised =
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.8"}]}});
        assert_eq!(kubelet_address(&unadvertised, "n1").unwrap().1, 10250);
        assert!(kubelet_address(&json!({}), "n1").is_err());
    }

    #[test]
    fn log_options_are_checked_like_upstream() {
        let options = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        assert!(validate_log_options(&options(&[("tailLines", "0"), ("follow", "true")])).is_ok());
        assert!(validate_log_options(&options(&[("tailLines", "-1")])).is_err());
        assert!(validate_log_options(&options(&[("sinceSeconds", "0")])).is_err());
        assert!(validate_log_options(&options(&[("follow", "yes")])).is_err());
        assert!(
            validate_log_options(&options(&[("sinceSeconds", "5"), ("sinceTime", "x")])).is_err()
        );
    }
}
