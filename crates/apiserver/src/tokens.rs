//! Service-account tokens: TokenRequest (`POST .../serviceaccounts/NAME/token`) issues
//! ES256-signed JWTs with upstream's claims, and the authenticator accepts them as
//! `system:serviceaccount:<ns>:<name>` while the account (and the pod a token is bound
//! to) still exists with the same uid.

use std::path::Path;

use gantry_api::{ApiError, Cause, Reason, registry};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::{AUTHENTICATED_GROUP, UserInfo};
use crate::objects::Objects;
use crate::pki::{self, PkiError};

/// The issuer and default audience, as a kubeadm cluster's `--service-account-issuer`.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// kube-apiserver's default token lifetime when a request names none (one hour).
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest lifetime a TokenRequest may ask for (ten minutes).
const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The longest: 2^32 seconds, as upstream's validation.
const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;

/// Signs and verifies service-account tokens.
pub struct ServiceAccountTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    key_id: String,
    objects: Objects,
}

/// Why the signing key could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TokenKeyError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("service-account signing key: {0}")]
    Key(#[from] jsonwebtoken::errors::Error),
}

/// The claims of a token, named as upstream's (`kubernetes.io` holds the private ones).
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Vec<String>,
    exp: i64,
    iat: i64,
    nbf: i64,
    jti: String,
    #[serde(rename = "kubernetes.io")]
    kubernetes: PrivateClaims,
}

#[derive(Debug, Serialize, Deserialize)]
struct PrivateClaims {
    namespace: String,
    serviceaccount: ObjectClaim,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pod: Option<ObjectClaim>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ObjectClaim {
    name: String,
    uid: String,
}

/// The `spec` of a TokenRequest.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRequestSpec {
    #[serde(default)]
    audiences: Vec<String>,
    expiration_seconds: Option<i64>,
    bound_object_ref: Option<BoundObjectRef>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BoundObjectRef {
    kind: Option<String>,
    name: Option<String>,
    uid: Option<String>,
}

impl ServiceAccountTokens {
    /// Loads (or creates) the signing key in `pki_dir`.
    pub fn load_or_create(pki_dir: &Path, objects: Objects) -> Result<Self, TokenKeyError> {
        let private_pem = pki::load_or_create_service_account_key(pki_dir)?;
        let key_pair = rcgen::KeyPair::from_pem(&private_pem).map_err(PkiError::Generate)?;
        let public_pem = key_pair.public_key_pem();
        Ok(ServiceAccountTokens {
            encoding: EncodingKey::from_ec_pem(private_pem.as_bytes())?,
            decoding: DecodingKey::from_ec_pem(public_pem.as_bytes())?,
            key_id: key_id(&rcgen::PublicKeyData::subject_public_key_info(&key_pair)),
            objects,
        })
    }

    /// Serves a TokenRequest for ServiceAccount `namespace/name`: the signed token in
    /// `status`, the defaulted request in `spec`.
    pub async fn request(
        &self,
        namespace: &str,
        name: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        let spec: TokenRequestSpec = match body.get("spec") {
            None | Some(Value::Null) => TokenRequestSpec::default(),
            Some(spec) => serde_json::from_value(spec.clone()).map_err(|e| {
                ApiError::bad_request(format!(
                    "TokenRequest in version \"v1\" cannot be handled as a TokenRequest: {e}"
                ))
            })?,
        };
        let expiration = spec
            .expiration_seconds
            .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
        validate_expiration(name, expiration)?;
        let accounts =
            registry::find("", "v1", "serviceaccounts").expect("serviceaccounts are served");
        let account = self
            .objects
            .get(accounts, Some(namespace), name)
            .await?
            .object;
        let pod = match &spec.bound_object_ref {
            Some(bound) => Some(self.bound_pod(namespace, bound).await?),
            None => None,
        };
        let audiences = if spec.audiences.is_empty() {
            vec![ISSUER.to_string()]
        } else {
            spec.audiences.clone()
        };
        let now = unix_now();
        let claims = Claims {
            iss: ISSUER.to_string(),
            sub: service_account_user(namespace, name),
            aud: audiences.clone(),
            exp: now + expiration,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes: PrivateClaims {
                namespace: namespace.to_string(),
                serviceaccount: ObjectClaim {
                    name: name.to_string(),
                    uid: uid_of(&account),
                },
                pod,
            },
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| ApiError::internal(format!("signing the token: {e}")))?;
        let mut spec_out = json!({"audiences": audiences, "expirationSeconds": expiration});
        if let Some(bound) = body.pointer("/spec/boundObjectRef") {
            spec_out["boundObjectRef"] = bound.clone();
        }
        Ok(json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": rfc3339(now)},
            "spec": spec_out,
            "status": {"token": token, "expirationTimestamp": rfc3339(now + expiration)},
        }))
    }

    /// The pod a token is bound to, which must exist (with the given uid, if any).
    async fn bound_pod(
        &self,
        namespace: &str,
        bound: &BoundObjectRef,
    ) -> Result<ObjectClaim, ApiError> {
        let kind = bound.kind.as_deref().unwrap_or_default();
        if kind != "Pod" {
            return Err(ApiError::invalid(
                "authentication.k8s.io",
                "TokenRequest",
                "",
                vec![Cause::not_supported(
                    "spec.boundObjectRef.kind",
                    kind,
                    &["Pod"],
                )],
            ));
        }
        let name = bound.name.as_deref().unwrap_or_default();
        let pods = registry::find("", "v1", "pods").expect("pods are served");
        let pod = self.objects.get(pods, Some(namespace), name).await?.object;
        let uid = uid_of(&pod);
        if bound
            .uid
            .as_deref()
            .is_some_and(|wanted| !wanted.is_empty() && wanted != uid)
        {
            return Err(ApiError::new(
                Reason::Conflict,
                format!(
                    "the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
                    bound.uid.as_deref().unwrap_or_default()
                ),
            ));
        }
        Ok(ObjectClaim {
            name: name.to_string(),
            uid,
        })
    }

    /// The user a token authenticates, if it is one of ours, unexpired, for this
    /// server's audience, and its account (and bound pod) still exist unchanged.
    pub async fn authenticate(&self, token: &str) -> Option<UserInfo> {
        let claims = self.verify(token, &[ISSUER])?;
        self.still_valid(&claims).await.then(|| user_of(&claims))
    }

    /// Checks a token for TokenReview against `audiences` (the server's when empty);
    /// returns the user and the audiences it was issued for.
    pub async fn review(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Option<(UserInfo, Vec<String>)> {
        let wanted: Vec<&str> = if audiences.is_empty() {
            vec![ISSUER]
        } else {
            audiences.iter().map(String::as_str).collect()
        };
        let claims = self.verify(token, &wanted)?;
        if !self.still_valid(&claims).await {
            return None;
        }
        let matched = claims
            .aud
            .iter()
            .filter(|a| wanted.contains(&a.as_str()))
            .cloned()
            .collect();
        Some((user_of(&claims), matched))
    }

    fn verify(&self, token: &str, audiences: &[&str]) -> Option<Claims> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation) {
            Ok(data) => Some(data.claims),
            Err(err) => {
                tracing::debug!(%err, "service-account token rejected");
                None
            }
        }
    }

    /// Upstream's legacy-and-bound token checks: the ServiceAccount (and a bound pod)
    /// must still be the very objects the token was issued for.
    async fn still_valid(&self, claims: &Claims) -> bool {
        let private = &claims.kubernetes;
        let accounts =
            registry::find("", "v1", "serviceaccounts").expect("serviceaccounts are served");
        let account = self
            .objects
            .get(
                accounts,
                Some(&private.namespace),
                &private.serviceaccount.name,
            )
            .await;
        if !account.is_ok_and(|a| uid_of(&a.object) == private.serviceaccount.uid) {
            tracing::debug!(account = %private.serviceaccount.name, "token's service account is gone");
            return false;
        }
        let Some(pod) = &private.pod else {
            return true;
        };
        let pods = registry::find("", "v1", "pods").expect("pods are served");
        let current = self
            .objects
            .get(pods, Some(&private.namespace), &pod.name)
            .await;
        let valid = current.is_ok_and(|p| uid_of(&p.object) == pod.uid);
        if !valid {
            tracing::debug!(pod = %pod.name, "token's pod is gone");
        }
        valid
    }
}

fn validate_expiration(name: &str, seconds: i64) -> Result<(), ApiError> {
    let problem = if seconds < MIN_EXPIRATION_SECONDS {
        "may not specify a duration less than 10 minutes"
    } else if seconds > MAX_EXPIRATION_SECONDS {
        "may not specify a duration larger than 2^32 seconds"
    } else {
        return Ok(());
    };
    Err(ApiError::invalid(
        "authentication.k8s.io",
        "TokenRequest",
        name,
        vec![Cause::invalid("spec.expirationSeconds", seconds, problem)],
    ))
}

/// `system:serviceaccount:<ns>:<name>`, the user name of a service account.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

fn user_of(claims: &Claims) -> UserInfo {
    let namespace = &claims.kubernetes.namespace;
    UserInfo {
        name: service_account_user(namespace, &claims.kubernetes.serviceaccount.name),
        uid: Some(claims.kubernetes.serviceaccount.uid.clone()),
        groups: vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{namespace}"),
            AUTHENTICATED_GROUP.to_string(),
        ],
    }
}

fn uid_of(object: &Value) -> String {
    object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Upstream's key id: the unpadded base64url SHA-256 of the public key's DER.
fn key_id(public_key_der: &[u8]) -> String {
    use base64::Engine;
    let digest = ring::digest::digest(&ring::digest::SHA256, public_key_der);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
