//! RBAC and service-account tokens against a real server: TokenRequest tokens
//! authenticate, requests are denied with upstream's 403 until a binding grants them,
//! escalation is refused, tokens bound to a pod die with it, and the review APIs answer.

use std::future::Future;
use std::time::Duration;

use gantry_apiserver::testing::TestServer;
use k8s_openapi::api::authentication::v1::{
    BoundObjectReference, SelfSubjectReview, TokenRequest, TokenRequestSpec,
};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

/// How long a binding may take to reach the authorizer's watch-fed index.
const PROPAGATION: Duration = Duration::from_secs(10);

async fn create_namespace(admin: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace created");
}

async fn create_service_account(admin: &Client, namespace: &str, name: &str) {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let account = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("service account created");
}

async fn request_token(
    admin: &Client,
    namespace: &str,
    name: &str,
    spec: TokenRequestSpec,
) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let request = TokenRequest {
        spec,
        ..Default::default()
    };
    let issued = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("token issued");
    issued.status.expect("token status").token
}

/// A client that authenticates with `token` only (no client certificate).
async fn token_client(server: &TestServer, token: &str) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig()).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.to_string().into()),
        ..Default::default()
    };
    Client::try_from(config).expect("client")
}

fn status_of(error: kube::Error) -> (u16, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.message),
        other => panic!("expected an API error, got {other}"),
    }
}

/// Polls `attempt` until it returns true or `PROPAGATION` passes.
async fn eventually<F: Future<Output = bool>>(mut attempt: impl FnMut() -> F) -> bool {
    let deadline = tokio::time::Instant::now() + PROPAGATION;
    while tokio::time::Instant::now() < deadline {
        if attempt().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    attempt().await
}

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    PolicyRule {
        verbs: strings(verbs),
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        ..Default::default()
    }
}

fn role(namespace: &str, name: &str, rules: Vec<PolicyRule>) -> Role {
    Role {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        rules: Some(rules),
    }
}

fn binding(
    namespace: &str,
    name: &str,
    role_kind: &str,
    role_name: &str,
    account: &str,
) -> RoleBinding {
    RoleBinding {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: role_kind.into(),
            name: role_name.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: account.into(),
            namespace: Some(namespace.into()),
            ..Default::default()
        }]),
    }
}

#[tokio::test]
async fn a_role_binding_grants_a_service_account_exactly_its_role() {
    let server = TestServer::start();
    let admin = server.client().await;
    create_namespace(&admin, "team").await;
    create_service_account(&admin, "team", "reader").await;
    let token = request_token(&admin, "team", "reader", TokenRequestSpec::default()).await;
    let reader = token_client(&server, &token).await;

    let team_pods: Api<Pod> = Api::namespaced(reader.clone(), "team");
    let denied = team_pods.list(&ListParams::default()).await.unwrap_err();
    assert_eq!(
        status_of(denied),
        (
            403,
            "pods is forbidden: User \"system:serviceaccount:team:reader\" cannot list resource \"pods\" in API group \"\" in the namespace \"team\"".to_string()
        )
    );

    let roles: Api<Role> = Api::namespaced(admin.clone(), "team");
    roles
        .create(
            &PostParams::default(),
            &role(
                "team",
                "pod-reader",
                vec![rule(&["get", "list"], &[""], &["pods"])],
            ),
        )
        .await
        .expect("role created");
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), "team");
    bindings
        .create(
            &PostParams::default(),
            &binding("team", "read-pods", "Role", "pod-reader", "reader"),
        )
        .await
        .expect("binding created");

    assert!(
        eventually(|| async { team_pods.list(&ListParams::default()).await.is_ok() }).await,
        "the binding lets the account list pods in its namespace"
    );
    let denied = team_pods.get("web").await.unwrap_err();
    assert_eq!(
        status_of(denied).0,
        404,
        "get is granted: the pod is just missing"
    );
    let default_pods: Api<Pod> = Api::namespaced(reader.clone(), "default");
    let (code, message) = status_of(default_pods.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(code, 403);
    assert!(
        message.ends_with("in the namespace \"default\""),
        "{message}"
    );
    let deleting = team_pods
        .delete("web", &DeleteParams::default())
        .await
        .unwrap_err();
    assert_eq!(
        status_of(deleting).1,
        "pods \"web\" is forbidden: User \"system:serviceaccount:team:reader\" cannot delete resource \"pods\" in API group \"\" in the namespace \"team\""
    );

    bindings
        .delete("read-pods", &DeleteParams::default())
        .await
        .expect("binding deleted");
    assert!(
        eventually(|| async { team_pods.list(&ListParams::default()).await.is_err() }).await,
        "deleting the binding revokes access"
    );
}

#[tokio::test]
async fn users_cannot_grant_permissions_they_do_not_hold() {
    let server = TestServer::start();
    let admin = server.client().await;
    create_namespace(&admin, "team").await;
    create_service_account(&admin, "team", "lead").await;
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), "team");
    bindings
        .create(
            &PostParams::default(),
            &binding("team", "lead-admin", "ClusterRole", "admin", "lead"),
        )
        .await
        .expect("binding created");
    let token = request_token(&admin, "team", "lead", TokenRequestSpec::default()).await;
    let lead = token_client(&server, &token).await;
    let roles: Api<Role> = Api::namespaced(lead.clone(), "team");
    let pod_reader = role(
        "team",
        "pod-reader",
        vec![rule(&["get", "list"], &[""], &["pods"])],
    );
    assert!(
        eventually(|| async {
            roles
                .create(&PostParams::default(), &pod_reader)
                .await
                .is_ok()
        })
        .await,
        "a namespace admin may create roles within their own permissions"
    );

    let node_reader = role(
        "team",
        "node-reader",
        vec![rule(&["get"], &[""], &["nodes"])],
    );
    let (code, message) = status_of(
        roles
            .create(&PostParams::default(), &node_reader)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403);
    assert!(
        message.starts_with("roles.rbac.authorization.k8s.io \"node-reader\" is forbidden: user \"system:serviceaccount:team:lead\"")
            && message.contains("is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\"]}"),
        "{message}"
    );

    let lead_bindings: Api<RoleBinding> = Api::namespaced(lead.clone(), "team");
    let to_cluster_admin = binding("team", "escalate", "ClusterRole", "cluster-admin", "lead");
    let (code, _) = status_of(
        lead_bindings
            .create(&PostParams::default(), &to_cluster_admin)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403, "binding cluster-admin would escalate");
    lead_bindings
        .create(
            &PostParams::default(),
            &binding("team", "viewers", "ClusterRole", "view", "lead"),
        )
        .await
        .expect("binding a role whose permissions the lead holds is allowed");
}

#[tokio::test]
async fn tokens_bound_to_a_pod_stop_working_when_it_is_deleted() {
    let server = TestServer::start();
    let admin = server.client().await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let pod = serde_json::from_value(json!({
        "metadata": {"name": "holder"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    let pod = pods
        .create(&PostParams::default(), &pod)
        .await
        .expect("pod created");
    let spec = TokenRequestSpec {
        audiences: vec![],
        expiration_seconds: Some(600),
        bound_object_ref: Some(BoundObjectReference {
            kind: Some("Pod".into()),
            api_version: Some("v1".into()),
            name: Some("holder".into()),
            uid: pod.metadata.uid.clone(),
        }),
    };
    let token = request_token(&admin, "default", "default", spec).await;
    let account = token_client(&server, &token).await;
    let reviews: Api<SelfSubjectReview> = Api::all(account.clone());
    let review = reviews
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("a bound token authenticates while its pod exists");
    let user = review.status.and_then(|s| s.user_info).expect("user info");
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:default:default")
    );
    assert_eq!(
        user.groups.unwrap_or_default(),
        [
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ]
    );

    pods.delete("holder", &DeleteParams::default())
        .await
        .expect("pod deleted");
    let rejected = reviews
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap_err();
    assert_eq!(status_of(rejected).0, 401);
}

#[tokio::test]
async fn token_requests_are_validated() {
    let server = TestServer::start();
    let admin = server.client().await;
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    let short = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(60),
            ..Default::default()
        },
        ..Default::default()
    };
    let error = accounts
        .create_token_request("default", &PostParams::default(), &short)
        .await
        .unwrap_err();
    assert_eq!(status_of(error).0, 422);
    let missing = accounts
        .create_token_request("nobody", &PostParams::default(), &TokenRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status_of(missing).0, 404);
    let issued = accounts
        .create_token_request("default", &PostParams::default(), &TokenRequest::default())
        .await
        .expect("token");
    assert_eq!(issued.spec.expiration_seconds, Some(3600));
    assert_eq!(
        issued.spec.audiences,
        ["https://kubernetes.default.svc.cluster.local"]
    );
}

#[tokio::test]
async fn self_subject_access_reviews_answer_from_rbac() {
    let server = TestServer::start();
    let admin = server.client().await;
    let token = request_token(&admin, "default", "default", TokenRequestSpec::default()).await;
    let account = token_client(&server, &token).await;
    let can_i = |verb: &str, resource: &str, namespace: &str| SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: resource
                    .ends_with("reviews")
                    .then(|| "authorization.k8s.io".to_string()),
                resource: Some(resource.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let allowed = |client: Client, review: SelfSubjectAccessReview| async move {
        let reviews: Api<SelfSubjectAccessReview> = Api::all(client);
        reviews
            .create(&PostParams::default(), &review)
            .await
            .expect("review answered")
            .status
            .expect("status")
            .allowed
    };
    assert!(allowed(admin.clone(), can_i("delete", "nodes", "")).await);
    assert!(!allowed(account.clone(), can_i("list", "pods", "default")).await);
    assert!(
        allowed(
            account.clone(),
            can_i("create", "selfsubjectaccessreviews", "")
        )
        .await
    );

    // The bootstrap roles exist and the components' identities are bound.
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    for name in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:node",
        "system:kube-scheduler",
        "system:kube-controller-manager",
    ] {
        roles
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
