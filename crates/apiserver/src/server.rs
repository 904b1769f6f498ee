//! The server's lifecycle: PKI, admin kubeconfig, store, router and TLS listener.
//!
//! Discovery, health and OpenAPI are answered here; every resource path goes
//! to [`crate::rest`]. The server owns its background controllers and stops
//! them before closing the store.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use gantry_api::{ApiError, GroupVersion, Reason, discovery, openapi};
use serde_json::Value;

use crate::auth::{self, AuthError, Authenticator, UserInfo};
use crate::authz::{self, Attributes, Authorizer, escalation, reviews};
use crate::bootstrap::{JoinToken, JoinTokenError};
use crate::namespaces;
use crate::objects::Objects;
use crate::pki::{ClusterPki, PkiError};
use crate::proxy::{self, PodProxy};
use crate::rest;
use crate::tls::{PeerCertificates, serve_tls};
use crate::tokens::{ServiceAccountTokens, TokenKeyError};

/// Everything `gantry server` (or a test) chooses about one server instance.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Holds the PKI and the store; reused across restarts.
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub bind_address: IpAddr,
    /// HTTPS port (0 picks a free one).
    pub https_port: u16,
    /// Static bearer tokens, kube-apiserver's `--token-auth-file` format.
    pub token_file: Option<PathBuf>,
    /// Where the admin kubeconfig is written.
    pub kubeconfig_output: PathBuf,
    /// Extra names and addresses for the serving certificate.
    pub tls_sans: Vec<String>,
    /// Control-plane components that run next to the server and need their own identity;
    /// each gets a kubeconfig at first listen (see [`Component`]).
    pub components: Vec<Component>,
}

/// A client of the API server that runs in the server's process (scheduler, controller
/// manager, the local node's agent) yet authenticates like a separate process would, so it
/// could be moved out without changing how it talks to the API.
#[derive(Debug, Clone)]
pub struct Component {
    /// The user name in its client certificate, e.g. `system:kube-scheduler`.
    pub user: String,
    /// Its groups (at most two fit a certificate).
    pub groups: Vec<String>,
    /// Where its kubeconfig is written.
    pub kubeconfig: PathBuf,
}

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Certificates or kubeconfig.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Token file.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] gantry_store::StoreError),
    /// Listening or serving.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The node join token could not be read or created.
    #[error(transparent)]
    JoinToken(#[from] JoinTokenError),
    /// The system namespaces or the bootstrap RBAC policy could not be created.
    #[error("bootstrapping the cluster: {0}")]
    Bootstrap(ApiError),
    /// The service-account token signing key could not be read or created.
    #[error(transparent)]
    TokenKey(#[from] TokenKeyError),
}

/// A started server's address, known once it listens, so callers can point clients at it.
pub type OnListening = Box<dyn FnOnce(SocketAddr) + Send>;

#[derive(Clone)]
struct AppState {
    authenticator: Arc<Authenticator>,
    server_address: String,
    objects: Objects,
    pki: Arc<ClusterPki>,
    join_token: JoinToken,
    pod_proxy: PodProxy,
    authorizer: Authorizer,
    tokens: Arc<ServiceAccountTokens>,
}

/// Runs the server until `shutdown` completes, then stops serving and closes the store.
pub async fn run(
    config: ServerConfig,
    on_listening: OnListening,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (dns_names, ips) = serving_names(&config.tls_sans);
    let pki = ClusterPki::load_or_create(&config.data_dir.join("pki"), &dns_names, &ips)?;
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::new(config.bind_address, config.https_port))
            .await?;
    let local = listener.local_addr()?;
    let client_host = if config.bind_address.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        config.bind_address
    };
    let server_url = format!("https://{}", SocketAddr::new(client_host, local.port()));
    pki.write_kubeconfig(
        &config.kubeconfig_output,
        &server_url,
        "admin",
        &["system:masters"],
    )?;
    for component in &config.components {
        let groups: Vec<&str> = component.groups.iter().map(String::as_str).collect();
        pki.write_kubeconfig(&component.kubeconfig, &server_url, &component.user, &groups)?;
    }
    let store = {
        let path = config.data_dir.join("store.redb");
        tokio::task::spawn_blocking(move || gantry_store::RedbStore::open(path))
            .await
            .map_err(std::io::Error::other)??
    };
    store.enable_auto_compaction(gantry_store::CompactionPolicy::kubernetes_default())?;
    let store = Arc::new(store);
    let objects = Objects::new(store.clone());
    objects
        .bootstrap(local.port())
        .await
        .map_err(ServerError::Bootstrap)?;
    ensure_system_priority_classes(&objects)
        .await
        .map_err(ServerError::Bootstrap)?;
    authz::policy::reconcile(&objects)
        .await
        .map_err(ServerError::Bootstrap)?;
    // Loaded before the first request, so nobody is denied for want of a warm cache.
    let authorizer = Authorizer::default();
    let rbac_revision = authorizer.load(&*store).await?;
    let tokens =
        ServiceAccountTokens::load_or_create(&config.data_dir.join("pki"), objects.clone())?;
    let join_token = JoinToken::load_or_create(&config.data_dir, pki.ca_pem())?;
    tracing::info!(path = %join_token.path().display(), "node join token");
    let tls = pki.server_tls_config()?;
    let state = AppState {
        authenticator: Arc::new(Authenticator::new(config.token_file.as_deref())?),
        server_address: local.to_string(),
        objects: objects.clone(),
        pod_proxy: PodProxy::new(objects.clone(), &pki)?,
        pki: Arc::new(pki),
        join_token,
        authorizer: authorizer.clone(),
        tokens: Arc::new(tokens),
    };
    let (stop_controllers, controllers_stopped) = tokio::sync::watch::channel(false);
    let stop_rbac = tokio_util::sync::CancellationToken::new();
    let rbac_follower =
        tokio::spawn(authorizer.follow(store.clone(), rbac_revision, stop_rbac.clone()));
    let namespace_controller = tokio::spawn(namespaces::run(objects, controllers_stopped));
    let pod_proxy = state.pod_proxy.clone();
    let app = router(state);
    on_listening(local);
    tracing::info!(%local, "API server listening");
    let served = serve_tls(listener, tls, app, shutdown).await;
    pod_proxy.shutdown().await;
    let _ = stop_controllers.send(true);
    stop_rbac.cancel();
    let _ = namespace_controller.await;
    let _ = rbac_follower.await;
    tokio::task::spawn_blocking(move || store.shutdown())
        .await
        .map_err(std::io::Error::other)?;
    Ok(served?)
}

/// Creates the PriorityClasses every Kubernetes cluster has
/// (`system-cluster-critical`, `system-node-critical`), as kube-apiserver's
/// scheduling post-start hook does, so manifests naming them are admitted.
async fn ensure_system_priority_classes(objects: &Objects) -> Result<(), ApiError> {
    let priority_classes = gantry_api::registry::find("scheduling.k8s.io", "v1", "priorityclasses")
        .expect("priorityclasses are always registered");
    for (name, value) in gantry_api::validation::SYSTEM_PRIORITY_CLASSES {
        let description = if *name == "system-node-critical" {
            "Used for system critical pods that must not be moved from their current node."
        } else {
            "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."
        };
        let class = serde_json::json!({
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
            "description": description,
        });
        match objects
            .create(priority_classes, None, class, Default::default())
            .await
        {
            Ok(_) => tracing::info!(name, "created system priority class"),
            Err(err) if err.reason == Reason::AlreadyExists => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

fn serving_names(tls_sans: &[String]) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns = vec![
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
    ];
    let mut ips = vec![IpAddr::from([127, 0, 0, 1]), IpAddr::from([10, 43, 0, 1])];
    for san in tls_sans {
        match san.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns.push(san.clone()),
        }
    }
    (dns, ips)
}

fn router(state: AppState) -> Router {
    Router::new()
        .merge(proxy::routes(state.pod_proxy.clone()))
        .route("/healthz", get(ok_text))
        .route("/livez", get(ok_text))
        .route("/readyz", get(ok_text))
        .route(
            "/version",
            get(|| async { json(discovery::version_info()) }),
        )
        .route("/api", get(api_versions))
        .route("/apis", get(|| async { json(discovery::api_group_list()) }))
        .route("/api/{version}", get(core_resources))
        .route("/apis/{group}", get(group))
        .route("/apis/{group}/{version}", get(group_resources))
        .route("/cacerts", get(ca_certificates))
        .route("/bootstrap/v1/node-credentials", post(node_credentials))
        .route("/openapi/v2", get(openapi_v2))
        .route("/openapi/v3", get(|| async { json(openapi::v3_root()) }))
        .route("/openapi/v3/{*path}", get(openapi_v3))
        .route("/api/{version}/{*rest}", any(core_resource_request))
        .route(
            "/apis/{group}/{version}/{*rest}",
            any(group_resource_request),
        )
        .fallback(|| async {
            status(ApiError::new(
                Reason::NotFound,
                "the server could not find the requested resource",
            ))
        })
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// Authenticates every request (x509, static or service-account bearer token) and
/// authorizes it with RBAC, except Kubernetes' public-info endpoints, which anonymous
/// clients may read, and the node join endpoints, which check the join token themselves.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let public = matches!(path, "/healthz" | "/livez" | "/readyz" | "/version");
    // A joining node has no credentials yet: these check the join token themselves.
    if matches!(path, "/cacerts" | "/bootstrap/v1/node-credentials") {
        return next.run(request).await;
    }
    let certificates = request
        .extensions()
        .get::<PeerCertificates>()
        .and_then(|p| p.0.clone());
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let authenticated = authenticate_user(
        &state,
        certificates.as_deref().map(|c| c.as_slice()),
        authorization.as_deref(),
    )
    .await;
    let user = match authenticated {
        Ok(user) => user,
        Err(_) if public && authorization.is_none() => return next.run(request).await,
        Err(err) => {
            tracing::warn!(%err, uri = %request.uri(), "authentication failed");
            return status(ApiError::new(Reason::Unauthorized, "Unauthorized"));
        }
    };
    let attributes = Attributes::from_request(request.method(), path, request.uri().query());
    if !state.authorizer.allows(&user, &attributes) {
        tracing::info!(user = %user.name, ?attributes, "forbidden");
        return status(authz::forbidden(&user, &attributes));
    }
    tracing::debug!(user = %user.name, method = %request.method(), uri = %request.uri(), "request");
    // For handlers that act on behalf of the user (reviews, escalation checks).
    request.extensions_mut().insert(user);
    next.run(request).await
}

/// A client certificate or static token first; then a service-account token.
async fn authenticate_user(
    state: &AppState,
    certificates: Option<&[rustls::pki_types::CertificateDer<'static>]>,
    authorization: Option<&str>,
) -> Result<UserInfo, AuthError> {
    match state
        .authenticator
        .authenticate(certificates, authorization)
    {
        Err(AuthError::Unauthenticated) => {
            let token = authorization
                .and_then(auth::bearer_token)
                .ok_or(AuthError::Unauthenticated)?;
            state
                .tokens
                .authenticate(token)
                .await
                .ok_or(AuthError::Unauthenticated)
        }
        other => other,
    }
}

/// The cluster CA, which a joining agent checks against the hash in its join token.
async fn ca_certificates(State(state): State<AppState>) -> Response {
    let mut response = Response::new(Body::from(state.pki.ca_pem().to_string()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-pem-file"),
    );
    response
}

/// Issues a node's kubeconfig (`system:node:<name>`, group `system:nodes`) to a caller that
/// presents the join token as a bearer token.
async fn node_credentials(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !presented.is_some_and(|token| state.join_token.accepts(token.trim())) {
        return status(ApiError::new(Reason::Unauthorized, "Unauthorized"));
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct NodeCredentialsRequest {
        node_name: String,
    }
    let request: NodeCredentialsRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            return status(ApiError::new(
                Reason::BadRequest,
                format!("expected {{\"nodeName\": \"...\"}}: {err}"),
            ));
        }
    };
    if !gantry_api::validation::is_dns1123_subdomain(&request.node_name) {
        return status(ApiError::new(
            Reason::BadRequest,
            format!(
                "invalid node name {:?}: it must be a lowercase RFC 1123 subdomain",
                request.node_name
            ),
        ));
    }
    // The node reaches the server by the address it used for this request.
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(&state.server_address);
    let user = format!("system:node:{}", request.node_name);
    match state
        .pki
        .kubeconfig_yaml(&format!("https://{host}"), &user, &["system:nodes"])
    {
        Ok(yaml) => {
            tracing::info!(node = %request.node_name, "issued node credentials");
            let mut response = Response::new(Body::from(yaml));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/yaml"),
            );
            response
        }
        Err(err) => status(ApiError::new(Reason::InternalError, err.to_string())),
    }
}

async fn ok_text() -> &'static str {
    "ok"
}

async fn api_versions(State(state): State<AppState>) -> Response {
    json(discovery::api_versions(&state.server_address))
}

async fn core_resources(UrlPath(version): UrlPath<String>) -> Response {
    resource_list("", &version)
}

async fn group(UrlPath(group): UrlPath<String>) -> Response {
    match discovery::api_group(&group) {
        Some(doc) => json(doc),
        None => not_found(),
    }
}

async fn group_resources(UrlPath((group, version)): UrlPath<(String, String)>) -> Response {
    resource_list(&group, &version)
}

fn resource_list(group: &str, version: &str) -> Response {
    let known = gantry_api::registry::RESOURCES
        .iter()
        .map(|r| r.group_version)
        .find(|gv| gv.group == group && gv.version == version);
    match known.and_then(|gv: GroupVersion| discovery::api_resource_list(gv)) {
        Some(doc) => json(doc),
        None => not_found(),
    }
}

/// kubectl reads the v2 document only as protobuf; other clients get JSON.
async fn openapi_v2(headers: axum::http::HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains(openapi::V2_PROTOBUF_MEDIA_TYPE) {
        let mut response = Response::new(Body::from(openapi::v2_document_protobuf()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(openapi::V2_PROTOBUF_CONTENT_TYPE),
        );
        return response;
    }
    bytes_json(openapi::v2_document())
}

async fn core_resource_request(
    State(state): State<AppState>,
    UrlPath((version, rest)): UrlPath<(String, String)>,
    request: Request,
) -> Response {
    resource_request(state, "", &version, &rest, request).await
}

async fn group_resource_request(
    State(state): State<AppState>,
    UrlPath((group, version, rest)): UrlPath<(String, String, String)>,
    request: Request,
) -> Response {
    resource_request(state, &group, &version, &rest, request).await
}

/// Hands a resource request to the REST layer; every failure becomes a Status.
async fn resource_request(
    state: AppState,
    group: &str,
    version: &str,
    rest: &str,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let query: std::collections::HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| serde_urlencoded::from_str(q).unwrap_or_default())
        .unwrap_or_default();
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            return status(ApiError::new(
                Reason::BadRequest,
                "the request body is too large or unreadable",
            ));
        }
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // kubectl's typed generators send protobuf; the request path speaks JSON.
    let body = if gantry_api::protobuf::is_protobuf(content_type) {
        match gantry_api::protobuf::decode_object(&body) {
            Ok(object) => axum::body::Bytes::from(object.to_string()),
            Err(err) => return status(err.into()),
        }
    } else {
        body
    };
    let outcome = match rest::parse_target(group, version, rest) {
        Ok(target) => {
            let user = parts.extensions.get::<UserInfo>();
            match special_request(&state, &parts.method, &target, user, &parts.headers, &body).await
            {
                Some(outcome) => outcome,
                None => {
                    rest::handle(
                        &state.objects,
                        &parts.method,
                        target,
                        &query,
                        &parts.headers,
                        body,
                    )
                    .await
                }
            }
        }
        Err(err) => Err(err),
    };
    match outcome {
        Ok(response) => response,
        Err(err) => {
            tracing::debug!(method = %parts.method, uri = %parts.uri, code = err.code(), message = %err.message, "request failed");
            status(err)
        }
    }
}

/// The requests the generic REST verbs do not serve: reviews and TokenRequests (answered
/// here), and writes of RBAC objects, which must first pass the escalation check
/// (`None` lets them through to the REST layer).
async fn special_request(
    state: &AppState,
    method: &axum::http::Method,
    target: &rest::Target,
    user: Option<&UserInfo>,
    headers: &axum::http::HeaderMap,
    body: &axum::body::Bytes,
) -> Option<Result<Response, ApiError>> {
    let resource = target.resource;
    let anonymous = || ApiError::new(Reason::Unauthorized, "Unauthorized");
    let namespace = target.namespace.as_deref();
    if *method == axum::http::Method::POST && reviews::is_review(resource) {
        let answer = async {
            let user = user.ok_or_else(anonymous)?;
            let review = rest::decode_body(body)?;
            reviews::answer(
                resource,
                namespace,
                review,
                user,
                &state.authorizer,
                &state.tokens,
            )
            .await
        };
        return Some(answer.await.map(|review| created(&review)));
    }
    if *method == axum::http::Method::POST
        && target.subresource == Some(gantry_api::Subresource::Token)
    {
        let answer = async {
            let name = target.name.as_deref().unwrap_or_default();
            let request = rest::decode_body(body)?;
            state
                .tokens
                .request(namespace.unwrap_or_default(), name, &request)
                .await
        };
        return Some(answer.await.map(|token| created(&token)));
    }
    if resource.group_version.group != "rbac.authorization.k8s.io" {
        return None;
    }
    let user = user?;
    let proposed = match method.as_str() {
        "POST" | "PUT" => rest::decode_body(body),
        "PATCH" => rest::preview_patch(&state.objects, target, headers, body).await,
        _ => return None,
    };
    let checked = proposed.and_then(|object| {
        escalation::check_write(&state.authorizer, user, resource, namespace, &object)
    });
    checked.err().map(Err)
}

fn created(object: &Value) -> Response {
    (StatusCode::CREATED, json(object.clone())).into_response()
}

/// kube-apiserver's limit on request bodies (3 MiB).
const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

async fn openapi_v3(UrlPath(path): UrlPath<String>) -> Response {
    match openapi::v3_group_version(&path) {
        Some(doc) => bytes_json(doc),
        None => not_found(),
    }
}

fn not_found() -> Response {
    status(ApiError::new(
        Reason::NotFound,
        "the server could not find the requested resource",
    ))
}

fn json(value: Value) -> Response {
    bytes_json(value.to_string().into_bytes())
}

fn bytes_json(body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Every failure travels as a Kubernetes Status object with its code.
fn status(error: ApiError) -> Response {
    let code = StatusCode::from_u16(error.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, json(error.to_status())).into_response()
}
