//! The review APIs: SelfSubjectAccessReview (`kubectl auth can-i`), SubjectAccessReview,
//! LocalSubjectAccessReview, SelfSubjectReview (`kubectl auth whoami`) and TokenReview.
//! Each is a create-only resource whose response is the request with a `status`.

use gantry_api::{ApiError, Cause, ResourceInfo};
use serde_json::{Value, json};

use super::Authorizer;
use super::attributes::{Attributes, ResourceAttributes};
use crate::auth::UserInfo;
use crate::tokens::ServiceAccountTokens;

/// Whether `resource` is one of the review kinds this module answers.
pub fn is_review(resource: &ResourceInfo) -> bool {
    matches!(
        resource.kind,
        "SelfSubjectAccessReview"
            | "SubjectAccessReview"
            | "LocalSubjectAccessReview"
            | "SelfSubjectReview"
            | "TokenReview"
    )
}

/// Answers one review request made by `requester`.
pub async fn answer(
    resource: &ResourceInfo,
    namespace: Option<&str>,
    mut review: Value,
    requester: &UserInfo,
    authorizer: &Authorizer,
    tokens: &ServiceAccountTokens,
) -> Result<Value, ApiError> {
    if !review.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    review["apiVersion"] = resource.group_version.api_version().into();
    review["kind"] = resource.kind.into();
    if review.get("metadata").is_none_or(Value::is_null) {
        review["metadata"] = json!({});
    }
    let status = match resource.kind {
        "SelfSubjectReview" => json!({"userInfo": user_json(requester)}),
        "TokenReview" => token_review(&review, tokens).await,
        "SelfSubjectAccessReview" => access_review(&review, requester, None, authorizer)?,
        _ => {
            let subject = subject_of(&review)?;
            access_review(&review, &subject, namespace, authorizer)?
        }
    };
    review["status"] = status;
    Ok(review)
}

/// Evaluates `spec.resourceAttributes` or `spec.nonResourceAttributes` for `user`.
/// A LocalSubjectAccessReview (`url_namespace` given) may only ask about its namespace.
fn access_review(
    review: &Value,
    user: &UserInfo,
    url_namespace: Option<&str>,
    authorizer: &Authorizer,
) -> Result<Value, ApiError> {
    let spec = review.get("spec").unwrap_or(&Value::Null);
    let text = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let attributes = if let Some(resource) =
        spec.get("resourceAttributes").filter(|v| v.is_object())
    {
        let namespace = text(resource, "namespace");
        if let Some(url_namespace) = url_namespace
            && namespace != url_namespace
        {
            return Err(invalid(
                review,
                Cause::invalid(
                    "spec.resourceAttributes.namespace",
                    &namespace,
                    "must match metadata.namespace",
                ),
            ));
        }
        let optional = |key: &str| Some(text(resource, key)).filter(|s| !s.is_empty());
        Attributes::Resource(ResourceAttributes {
            verb: text(resource, "verb"),
            api_group: text(resource, "group"),
            resource: text(resource, "resource"),
            subresource: optional("subresource"),
            name: optional("name"),
            namespace: optional("namespace"),
        })
    } else if let Some(non_resource) = spec.get("nonResourceAttributes").filter(|v| v.is_object()) {
        Attributes::NonResource {
            verb: text(non_resource, "verb"),
            path: text(non_resource, "path"),
        }
    } else {
        return Err(invalid(review, Cause::required("spec.resourceAttributes")));
    };
    let allowed = authorizer.allows(user, &attributes);
    Ok(if allowed {
        json!({"allowed": true, "reason": "RBAC: allowed"})
    } else {
        json!({"allowed": false})
    })
}

/// The user a SubjectAccessReview asks about, from `spec.user`, `spec.groups`, `spec.uid`.
fn subject_of(review: &Value) -> Result<UserInfo, ApiError> {
    let spec = review.get("spec").unwrap_or(&Value::Null);
    let name = spec
        .get("user")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let groups: Vec<String> = spec
        .get("groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    if name.is_empty() && groups.is_empty() {
        return Err(invalid(
            review,
            Cause::invalid(
                "spec.user",
                "",
                "at least one of user or group must be specified",
            ),
        ));
    }
    let uid = spec.get("uid").and_then(Value::as_str).map(str::to_string);
    Ok(UserInfo { name, uid, groups })
}

async fn token_review(review: &Value, tokens: &ServiceAccountTokens) -> Value {
    let token = review
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let audiences: Vec<String> = review
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    match tokens.review(token, &audiences).await {
        Some((user, audiences)) => json!({
            "authenticated": true,
            "user": user_json(&user),
            "audiences": audiences,
        }),
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    }
}

fn user_json(user: &UserInfo) -> Value {
    let mut info = json!({"username": user.name, "groups": user.groups});
    if let Some(uid) = &user.uid {
        info["uid"] = uid.clone().into();
    }
    info
}

fn invalid(review: &Value, cause: Cause) -> ApiError {
    let kind = review
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let group = review
        .get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.split_once('/'))
        .map_or("", |(g, _)| g);
    ApiError::invalid(group, kind, "", vec![cause])
}
