//! API errors as the Kubernetes `Status` object clients expect.
//!
//! kubectl prints `Status.message` and keys retries and exit codes off
//! `reason` and `code`, so every failure the server reports is one of these.

use serde_json::{Value, json};

/// Why a request failed, mirroring `metav1.StatusReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    AlreadyExists,
    Conflict,
    Gone,
    Expired,
    Invalid,
    MethodNotAllowed,
    NotAcceptable,
    UnsupportedMediaType,
    Timeout,
    TooManyRequests,
    InternalError,
    ServiceUnavailable,
}

impl Reason {
    /// The `reason` string and the HTTP status code it travels with.
    pub fn as_str_and_code(self) -> (&'static str, u16) {
        match self {
            Reason::BadRequest => ("BadRequest", 400),
            Reason::Unauthorized => ("Unauthorized", 401),
            Reason::Forbidden => ("Forbidden", 403),
            Reason::NotFound => ("NotFound", 404),
            Reason::AlreadyExists => ("AlreadyExists", 409),
            Reason::Conflict => ("Conflict", 409),
            Reason::Gone => ("Gone", 410),
            Reason::Expired => ("Expired", 410),
            Reason::Invalid => ("Invalid", 422),
            Reason::MethodNotAllowed => ("MethodNotAllowed", 405),
            Reason::NotAcceptable => ("NotAcceptable", 406),
            Reason::UnsupportedMediaType => ("UnsupportedMediaType", 415),
            Reason::Timeout => ("Timeout", 504),
            Reason::TooManyRequests => ("TooManyRequests", 429),
            Reason::InternalError => ("InternalError", 500),
            Reason::ServiceUnavailable => ("ServiceUnavailable", 503),
        }
    }
}

/// One field-level problem inside an `Invalid` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `metav1.CauseType`, e.g. `FieldValueRequired`, `FieldValueInvalid`.
    pub reason: String,
    pub message: String,
    /// The JSON path of the field, e.g. `spec.containers[0].image`.
    pub field: String,
}

impl Cause {
    /// A required field is missing.
    pub fn required(field: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value".into(),
            field: field.into(),
        }
    }

    /// A field holds a value that is not allowed.
    pub fn invalid(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        detail: impl std::fmt::Display,
    ) -> Self {
        Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: \"{value}\": {detail}"),
            field: field.into(),
        }
    }

    /// An immutable field was changed.
    pub fn immutable(field: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueInvalid".into(),
            message: "field is immutable".into(),
            field: field.into(),
        }
    }

    /// A field value is not one of the supported ones.
    pub fn not_supported(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        supported: &[&str],
    ) -> Self {
        let list = supported
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ");
        Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!("Unsupported value: \"{value}\": supported values: {list}"),
            field: field.into(),
        }
    }

    /// The message as kubectl prints it: `field: message`.
    pub fn to_string_with_field(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

/// A failed API request, rendered as a `Status` object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub reason: Reason,
    pub message: String,
    /// `details.group`, `details.kind`, `details.name` when the error is about one object.
    pub details: Option<Box<Details>>,
    pub causes: Vec<Cause>,
    /// `details.retryAfterSeconds`.
    pub retry_after_seconds: Option<u32>,
}

/// Which object an error is about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Details {
    pub group: String,
    /// The resource's plural as kubectl shows it (`pods`, `deployments.apps`
    /// is built from `group`).
    pub kind: String,
    pub name: String,
}

impl ApiError {
    /// An error with a reason and a message and nothing else.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        ApiError {
            reason,
            message: message.into(),
            details: None,
            causes: Vec::new(),
            retry_after_seconds: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Reason::BadRequest, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Reason::InternalError, message)
    }

    /// `pods "web" not found`.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        Self::about(
            Reason::NotFound,
            group,
            plural,
            name,
            format!("{} \"{name}\" not found", qualified(group, plural)),
        )
    }

    /// `pods "web" already exists`.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        Self::about(
            Reason::AlreadyExists,
            group,
            plural,
            name,
            format!("{} \"{name}\" already exists", qualified(group, plural)),
        )
    }

    /// The optimistic-concurrency failure kubectl retries on.
    pub fn conflict(group: &str, plural: &str, name: &str) -> Self {
        Self::about(
            Reason::Conflict,
            group,
            plural,
            name,
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified(group, plural)
            ),
        )
    }

    /// `Deployment.apps "web" is invalid: spec.replicas: Invalid value: ...`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let kind_qualified = qualified(group, kind);
        let list = causes
            .iter()
            .map(Cause::to_string_with_field)
            .collect::<Vec<_>>();
        let message = match list.len() {
            0 => format!("{kind_qualified} \"{name}\" is invalid"),
            1 => format!("{kind_qualified} \"{name}\" is invalid: {}", list[0]),
            _ => format!(
                "{kind_qualified} \"{name}\" is invalid: [{}]",
                list.join(", ")
            ),
        };
        ApiError {
            reason: Reason::Invalid,
            message,
            details: Some(Box::new(Details {
                group: group.into(),
                kind: kind.into(),
                name: name.into(),
            })),
            causes,
            retry_after_seconds: None,
        }
    }

    /// A watch or list asked for history that is gone.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(Reason::Expired, message)
    }

    fn about(reason: Reason, group: &str, plural: &str, name: &str, message: String) -> Self {
        ApiError {
            reason,
            message,
            details: Some(Box::new(Details {
                group: group.into(),
                kind: plural.into(),
                name: name.into(),
            })),
            causes: Vec::new(),
            retry_after_seconds: None,
        }
    }

    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        self.reason.as_str_and_code().1
    }

    /// The `Status` object to send.
    pub fn to_status(&self) -> Value {
        let (reason, code) = self.reason.as_str_and_code();
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": reason,
            "code": code,
        });
        let mut details = serde_json::Map::new();
        if let Some(d) = &self.details {
            details.insert("name".into(), d.name.clone().into());
            if !d.group.is_empty() {
                details.insert("group".into(), d.group.clone().into());
            }
            details.insert("kind".into(), d.kind.clone().into());
        }
        if !self.causes.is_empty() {
            let causes = self
                .causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect::<Vec<_>>();
            details.insert("causes".into(), causes.into());
        }
        if let Some(secs) = self.retry_after_seconds {
            details.insert("retryAfterSeconds".into(), secs.into());
        }
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status
    }
}

fn qualified(group: &str, name: &str) -> String {
    if group.is_empty() {
        name.to_string()
    } else {
        format!("{name}.{group}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_reads_like_kubernetes() {
        let err = ApiError::not_found("apps", "deployments", "web");
        assert_eq!(err.message, "deployments.apps \"web\" not found");
        let status = err.to_status();
        assert_eq!(status["code"], 404);
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["details"]["group"], "apps");
    }

    #[test]
    fn invalid_lists_every_cause() {
        let err = ApiError::invalid(
            "",
            "Pod",
            "web",
            vec![
                Cause::required("spec.containers"),
                Cause::invalid("metadata.name", "Web", "must be lowercase"),
            ],
        );
        assert_eq!(err.code(), 422);
        assert!(
            err.message
                .starts_with("Pod \"web\" is invalid: [spec.containers: Required value, ")
        );
        assert_eq!(
            err.to_status()["details"]["causes"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
    }
}
