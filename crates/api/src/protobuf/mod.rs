//! Kubernetes' protobuf encoding of request bodies, decoded into the JSON
//! value the same object sent as JSON would be, so the rest of the request
//! path stays JSON-only (see ARCHITECTURE: objects are JSON documents inside
//! the server). kubectl's typed generators (`kubectl create namespace`,
//! `create deployment`, `expose`, ...) send their bodies this way.
//!
//! A body is the magic `k8s\0` followed by a `runtime.Unknown` message
//! `{1: TypeMeta{1: apiVersion, 2: kind}, 2: raw, 3: contentEncoding,
//! 4: contentType}` whose `raw` is the object's own message. The messages are
//! described by the generated table in [`fields`] (tags and JSON names of
//! `k8s.io/api`'s `generated.proto`).
//!
//! Go semantics decide what appears in the JSON. Go's marshaller writes
//! every non-pointer field, zero or not, and its JSON encoder omits zero
//! non-pointer fields tagged `omitempty`; a zero scalar on the wire is
//! therefore omitted unless the field is required (no `omitempty`) or a Go
//! pointer whose zero is a value of its own ([`ZERO_IS_A_VALUE`]:
//! `replicas: 0`, `automountServiceAccountToken: false`).

mod fields;
mod wire;

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use crate::status::ApiError;
use wire::{FieldReader, WireValue};

/// The media type of Kubernetes' protobuf encoding.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The prefix of every protobuf-encoded Kubernetes object.
const MAGIC: &[u8] = b"k8s\0";

/// Messages nest this deep at most; deeper input is refused, not recursed into.
const MAX_DEPTH: usize = 64;

/// Whether a `Content-Type` header value names the protobuf encoding.
pub fn is_protobuf(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case(MEDIA_TYPE))
}

/// Why a protobuf body could not be decoded. Every variant is the client's
/// fault: the server answers 400 Bad Request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("the body does not start with the Kubernetes protobuf prefix \"k8s\\0\"")]
    MissingMagic,
    #[error("the message ends in the middle of a field")]
    Truncated,
    #[error("a varint is longer than 64 bits")]
    VarintOverflow,
    #[error("invalid field number {0}")]
    InvalidFieldNumber(u64),
    #[error("unsupported wire type {0}")]
    UnsupportedWireType(u8),
    #[error("field {field} has the wrong wire type for its declared type")]
    WrongWireType { field: String },
    #[error("field {field} is not valid UTF-8")]
    InvalidUtf8 { field: String },
    #[error("field {field} holds a time out of range")]
    InvalidTime { field: String },
    #[error("field {field} holds a non-finite number")]
    NonFiniteNumber { field: String },
    #[error("field {field} does not hold valid JSON: {message}")]
    InvalidEmbeddedJson { field: String, message: String },
    #[error("content encoding {0:?} is not supported")]
    UnsupportedContentEncoding(String),
    #[error("no protobuf schema for kind {kind:?} in {api_version:?}")]
    UnknownKind { api_version: String, kind: String },
    #[error("messages nest deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

impl From<DecodeError> for ApiError {
    fn from(err: DecodeError) -> Self {
        ApiError::bad_request(format!(
            "the object provided is unrecognized or malformed: {err}"
        ))
    }
}

/// Decodes a protobuf request body (`k8s\0` + `runtime.Unknown`) into the
/// JSON object the same request would carry as JSON, `apiVersion` and `kind`
/// included.
pub fn decode_object(body: &[u8]) -> Result<Value, DecodeError> {
    let unknown = body.strip_prefix(MAGIC).ok_or(DecodeError::MissingMagic)?;
    let envelope = Envelope::decode(unknown)?;
    if !envelope.content_encoding.is_empty() {
        return Err(DecodeError::UnsupportedContentEncoding(
            envelope.content_encoding,
        ));
    }
    let schema = kind_schema(&envelope.api_version, &envelope.kind).ok_or_else(|| {
        DecodeError::UnknownKind {
            api_version: envelope.api_version.clone(),
            kind: envelope.kind.clone(),
        }
    })?;
    let mut object = decode_message(schema, envelope.raw, 0)?;
    object.insert("apiVersion".into(), envelope.api_version.into());
    object.insert("kind".into(), envelope.kind.into());
    Ok(Value::Object(object))
}

/// The fields of `runtime.Unknown` the decoder needs.
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
}

impl<'a> Envelope<'a> {
    fn decode(message: &'a [u8]) -> Result<Self, DecodeError> {
        let mut envelope = Envelope {
            api_version: String::new(),
            kind: String::new(),
            raw: &[],
            content_encoding: String::new(),
        };
        for field in FieldReader::new(message) {
            match field? {
                (1, WireValue::Bytes(type_meta)) => {
                    for field in FieldReader::new(type_meta) {
                        match field? {
                            (1, WireValue::Bytes(v)) => {
                                envelope.api_version = utf8(v, "apiVersion")?
                            }
                            (2, WireValue::Bytes(v)) => envelope.kind = utf8(v, "kind")?,
                            _ => {}
                        }
                    }
                }
                (2, WireValue::Bytes(raw)) => envelope.raw = raw,
                (3, WireValue::Bytes(v)) => envelope.content_encoding = utf8(v, "contentEncoding")?,
                (number @ 1..=3, _) => {
                    return Err(DecodeError::WrongWireType {
                        field: format!("runtime.Unknown.{number}"),
                    });
                }
                _ => {}
            }
        }
        Ok(envelope)
    }
}

/// How a field is encoded and rendered in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldType {
    String,
    /// `[]byte`: base64 in JSON.
    Bytes,
    Bool,
    Int32,
    Int64,
    #[allow(
        dead_code,
        reason = "no served type has one; the generator emits it for those that do"
    )]
    Double,
    /// A message rendered field by field: the name of its [`MessageSchema`].
    Object(&'static str),
    /// `metav1.Time` `{1: seconds, 2: nanos}`: RFC 3339 to the second.
    Time,
    /// `metav1.MicroTime`: RFC 3339 with microseconds.
    MicroTime,
    /// `metav1.Duration` `{1: nanoseconds}`: Go's duration string.
    #[allow(
        dead_code,
        reason = "no served type has one; the generator emits it for those that do"
    )]
    Duration,
    /// `resource.Quantity` `{1: string}`: the string.
    Quantity,
    /// `intstr.IntOrString` `{1: type, 2: intVal, 3: strVal}`.
    IntOrString,
    /// `runtime.RawExtension` / `metav1.FieldsV1` `{1: raw JSON}`.
    EmbeddedJson,
}

/// How many values a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cardinality {
    Single,
    /// A list: one wire entry per element (or one packed run for numbers).
    Repeated,
    /// A `map<string, T>`: entries `{1: key, 2: value}`.
    Map,
    /// A Go struct embedded in its parent: a message field on the wire whose
    /// fields JSON inlines into the parent (`Volume.volumeSource`).
    Inline,
}

/// One field of a message.
#[derive(Debug)]
struct Field {
    tag: u32,
    json: &'static str,
    ty: FieldType,
    cardinality: Cardinality,
    /// Required in the OpenAPI schema: Go writes it to JSON even when zero.
    required: bool,
}

const fn field(
    tag: u32,
    json: &'static str,
    ty: FieldType,
    cardinality: Cardinality,
    required: bool,
) -> Field {
    Field {
        tag,
        json,
        ty,
        cardinality,
        required,
    }
}

/// A message: its OpenAPI definition name and its fields, sorted by tag.
#[derive(Debug)]
struct MessageSchema {
    name: &'static str,
    fields: &'static [Field],
}

impl MessageSchema {
    fn field(&self, tag: u32) -> Option<&'static Field> {
        self.fields
            .binary_search_by_key(&tag, |f| f.tag)
            .ok()
            .map(|i| &self.fields[i])
    }
}

/// The message carrying `kind` of `apiVersion`.
#[derive(Debug)]
struct KindMessage {
    api_version: &'static str,
    kind: &'static str,
    message: &'static str,
}

fn kind_schema(api_version: &str, kind: &str) -> Option<&'static MessageSchema> {
    let index = fields::KINDS
        .binary_search_by(|k| (k.api_version, k.kind).cmp(&(api_version, kind)))
        .ok()?;
    message_schema(fields::KINDS[index].message)
}

fn message_schema(name: &str) -> Option<&'static MessageSchema> {
    let index = fields::MESSAGES
        .binary_search_by(|m| m.name.cmp(name))
        .ok()?;
    Some(&fields::MESSAGES[index])
}

/// Optional scalar fields that are Go pointers in the served types, so a
/// zero on the wire was set on purpose and must reach the JSON, as
/// `(message, field)`. Every other optional zero scalar means "unset".
static ZERO_IS_A_VALUE: &[(&str, &str)] = &[
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "deletionGracePeriodSeconds",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference",
        "controller",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference",
        "blockOwnerDeletion",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        "gracePeriodSeconds",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        "orphanDependents",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta",
        "remainingItemCount",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "terminationGracePeriodSeconds",
    ),
    ("io.k8s.api.core.v1.PodSpec", "activeDeadlineSeconds"),
    ("io.k8s.api.core.v1.PodSpec", "automountServiceAccountToken"),
    ("io.k8s.api.core.v1.PodSpec", "shareProcessNamespace"),
    ("io.k8s.api.core.v1.PodSpec", "priority"),
    ("io.k8s.api.core.v1.PodSpec", "enableServiceLinks"),
    ("io.k8s.api.core.v1.PodSpec", "hostUsers"),
    ("io.k8s.api.core.v1.PodSpec", "setHostnameAsFQDN"),
    ("io.k8s.api.core.v1.PodSecurityContext", "runAsUser"),
    ("io.k8s.api.core.v1.PodSecurityContext", "runAsGroup"),
    ("io.k8s.api.core.v1.PodSecurityContext", "runAsNonRoot"),
    ("io.k8s.api.core.v1.PodSecurityContext", "fsGroup"),
    ("io.k8s.api.core.v1.SecurityContext", "runAsUser"),
    ("io.k8s.api.core.v1.SecurityContext", "runAsGroup"),
    ("io.k8s.api.core.v1.SecurityContext", "runAsNonRoot"),
    ("io.k8s.api.core.v1.SecurityContext", "privileged"),
    (
        "io.k8s.api.core.v1.SecurityContext",
        "readOnlyRootFilesystem",
    ),
    (
        "io.k8s.api.core.v1.SecurityContext",
        "allowPrivilegeEscalation",
    ),
    ("io.k8s.api.core.v1.Probe", "terminationGracePeriodSeconds"),
    ("io.k8s.api.core.v1.ConfigMap", "immutable"),
    ("io.k8s.api.core.v1.Secret", "immutable"),
    (
        "io.k8s.api.core.v1.ServiceAccount",
        "automountServiceAccountToken",
    ),
    ("io.k8s.api.core.v1.SecretVolumeSource", "defaultMode"),
    ("io.k8s.api.core.v1.SecretVolumeSource", "optional"),
    ("io.k8s.api.core.v1.ConfigMapVolumeSource", "defaultMode"),
    ("io.k8s.api.core.v1.ConfigMapVolumeSource", "optional"),
    ("io.k8s.api.core.v1.ProjectedVolumeSource", "defaultMode"),
    ("io.k8s.api.core.v1.DownwardAPIVolumeSource", "defaultMode"),
    ("io.k8s.api.core.v1.DownwardAPIVolumeFile", "mode"),
    ("io.k8s.api.core.v1.KeyToPath", "mode"),
    ("io.k8s.api.core.v1.ConfigMapKeySelector", "optional"),
    ("io.k8s.api.core.v1.SecretKeySelector", "optional"),
    ("io.k8s.api.core.v1.ConfigMapEnvSource", "optional"),
    ("io.k8s.api.core.v1.SecretEnvSource", "optional"),
    ("io.k8s.api.core.v1.ConfigMapProjection", "optional"),
    ("io.k8s.api.core.v1.SecretProjection", "optional"),
    (
        "io.k8s.api.core.v1.ServiceAccountTokenProjection",
        "expirationSeconds",
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "allocateLoadBalancerNodePorts",
    ),
    ("io.k8s.api.core.v1.ClientIPConfig", "timeoutSeconds"),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimSpec",
        "storageClassName",
    ),
    ("io.k8s.api.core.v1.ContainerStatus", "started"),
    ("io.k8s.api.apps.v1.DeploymentSpec", "replicas"),
    ("io.k8s.api.apps.v1.DeploymentSpec", "revisionHistoryLimit"),
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        "progressDeadlineSeconds",
    ),
    ("io.k8s.api.apps.v1.RollingUpdateDeployment", "maxSurge"),
    (
        "io.k8s.api.apps.v1.RollingUpdateDeployment",
        "maxUnavailable",
    ),
    ("io.k8s.api.apps.v1.ReplicaSetSpec", "replicas"),
    ("io.k8s.api.apps.v1.StatefulSetSpec", "replicas"),
    ("io.k8s.api.apps.v1.StatefulSetSpec", "revisionHistoryLimit"),
    (
        "io.k8s.api.apps.v1.RollingUpdateStatefulSetStrategy",
        "partition",
    ),
    (
        "io.k8s.api.apps.v1.RollingUpdateStatefulSetStrategy",
        "maxUnavailable",
    ),
    ("io.k8s.api.apps.v1.DaemonSetSpec", "revisionHistoryLimit"),
    ("io.k8s.api.apps.v1.RollingUpdateDaemonSet", "maxSurge"),
    (
        "io.k8s.api.apps.v1.RollingUpdateDaemonSet",
        "maxUnavailable",
    ),
    ("io.k8s.api.apps.v1.DeploymentStatus", "collisionCount"),
    ("io.k8s.api.apps.v1.StatefulSetStatus", "collisionCount"),
    ("io.k8s.api.apps.v1.DaemonSetStatus", "collisionCount"),
    ("io.k8s.api.autoscaling.v1.ScaleSpec", "replicas"),
    (
        "io.k8s.api.coordination.v1.LeaseSpec",
        "leaseDurationSeconds",
    ),
    ("io.k8s.api.coordination.v1.LeaseSpec", "leaseTransitions"),
    ("io.k8s.api.discovery.v1.EndpointConditions", "ready"),
    ("io.k8s.api.discovery.v1.EndpointConditions", "serving"),
    ("io.k8s.api.discovery.v1.EndpointConditions", "terminating"),
    ("io.k8s.api.discovery.v1.EndpointPort", "port"),
    ("io.k8s.api.batch.v1.JobSpec", "parallelism"),
    ("io.k8s.api.batch.v1.JobSpec", "completions"),
    ("io.k8s.api.batch.v1.JobSpec", "activeDeadlineSeconds"),
    ("io.k8s.api.batch.v1.JobSpec", "manualSelector"),
    ("io.k8s.api.batch.v1.JobSpec", "backoffLimit"),
    ("io.k8s.api.batch.v1.JobSpec", "ttlSecondsAfterFinished"),
    ("io.k8s.api.batch.v1.JobSpec", "suspend"),
    ("io.k8s.api.batch.v1.CronJobSpec", "startingDeadlineSeconds"),
    ("io.k8s.api.batch.v1.CronJobSpec", "suspend"),
    ("io.k8s.api.batch.v1.CronJobSpec", "successfulJobsHistoryLimit"),
    ("io.k8s.api.batch.v1.CronJobSpec", "failedJobsHistoryLimit"),
    ("io.k8s.api.storage.v1.StorageClass", "allowVolumeExpansion"),
    ("io.k8s.api.scheduling.v1.PriorityClass", "globalDefault"),
];

fn keeps_zero(message: &MessageSchema, field: &Field) -> bool {
    field.required
        || ZERO_IS_A_VALUE
            .iter()
            .any(|(m, f)| *m == message.name && *f == field.json)
}

fn decode_message(
    schema: &MessageSchema,
    message: &[u8],
    depth: usize,
) -> Result<Map<String, Value>, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    let mut object = Map::new();
    for entry in FieldReader::new(message) {
        let (tag, wire) = entry?;
        // Fields this table does not know (newer Kubernetes) are skipped.
        let Some(field) = schema.field(tag) else {
            continue;
        };
        match field.cardinality {
            Cardinality::Single => {
                let value = decode_value(field, wire, depth)?;
                if value.is_zero && !keeps_zero(schema, field) {
                    object.remove(field.json);
                } else {
                    object.insert(field.json.into(), value.json);
                }
            }
            Cardinality::Repeated => {
                let items = object
                    .entry(field.json)
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(items) = items {
                    decode_repeated(field, wire, depth, items)?;
                }
            }
            Cardinality::Inline => {
                if let Value::Object(embedded) = decode_value(field, wire, depth)?.json {
                    object.extend(embedded);
                }
            }
            Cardinality::Map => {
                let entries = object
                    .entry(field.json)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(entries) = entries {
                    let (key, value) = decode_map_entry(field, wire, depth)?;
                    entries.insert(key, value);
                }
            }
        }
    }
    Ok(object)
}

/// A decoded value and whether it is its type's zero (`""`, `0`, `false`).
struct Decoded {
    json: Value,
    is_zero: bool,
}

impl Decoded {
    fn new(json: Value, is_zero: bool) -> Self {
        Self { json, is_zero }
    }
}

fn decode_repeated(
    field: &Field,
    wire: WireValue<'_>,
    depth: usize,
    items: &mut Vec<Value>,
) -> Result<(), DecodeError> {
    let packed_numbers = matches!(
        field.ty,
        FieldType::Int32 | FieldType::Int64 | FieldType::Bool
    );
    match wire {
        WireValue::Bytes(mut packed) if packed_numbers => {
            while !packed.is_empty() {
                let varint = wire::read_varint(&mut packed)?;
                items.push(decode_value(field, WireValue::Varint(varint), depth)?.json);
            }
        }
        _ => items.push(decode_value(field, wire, depth)?.json),
    }
    Ok(())
}

fn decode_map_entry(
    field: &Field,
    wire: WireValue<'_>,
    depth: usize,
) -> Result<(String, Value), DecodeError> {
    let entry = length_delimited(field, wire)?;
    let mut key = String::new();
    let mut value = None;
    for part in FieldReader::new(entry) {
        match part? {
            (1, WireValue::Bytes(k)) => key = utf8(k, field.json)?,
            (1, _) => return Err(wrong_wire_type(field)),
            (2, v) => value = Some(decode_value(field, v, depth)?.json),
            _ => {}
        }
    }
    // An entry without a value holds the value type's zero.
    let value = match value {
        Some(value) => value,
        None => decode_value(field, WireValue::Bytes(&[]), depth)?.json,
    };
    Ok((key, value))
}

fn decode_value(field: &Field, wire: WireValue<'_>, depth: usize) -> Result<Decoded, DecodeError> {
    let varint = || match wire {
        WireValue::Varint(v) => Ok(v),
        _ => Err(wrong_wire_type(field)),
    };
    Ok(match field.ty {
        FieldType::String => {
            let text = utf8(length_delimited(field, wire)?, field.json)?;
            let is_zero = text.is_empty();
            Decoded::new(Value::String(text), is_zero)
        }
        FieldType::Bytes => {
            let bytes = length_delimited(field, wire)?;
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
            Decoded::new(Value::String(encoded), bytes.is_empty())
        }
        FieldType::Bool => {
            let flag = varint()? != 0;
            Decoded::new(Value::Bool(flag), !flag)
        }
        // int32 values are sign-extended to 64 bits on the wire; the low 32 bits are the value.
        FieldType::Int32 => {
            let number = varint()? as i32;
            Decoded::new(number.into(), number == 0)
        }
        FieldType::Int64 => {
            let number = varint()? as i64;
            Decoded::new(number.into(), number == 0)
        }
        FieldType::Double => {
            let WireValue::Fixed64(bits) = wire else {
                return Err(wrong_wire_type(field));
            };
            let number = f64::from_bits(bits);
            let json = Number::from_f64(number).ok_or_else(|| DecodeError::NonFiniteNumber {
                field: field.json.into(),
            })?;
            Decoded::new(Value::Number(json), number == 0.0)
        }
        FieldType::Object(name) => {
            let schema = message_schema(name).ok_or_else(|| wrong_wire_type(field))?;
            let object = decode_message(schema, length_delimited(field, wire)?, depth + 1)?;
            Decoded::new(Value::Object(object), false)
        }
        FieldType::Time => Decoded::new(time(field, length_delimited(field, wire)?, false)?, false),
        FieldType::MicroTime => {
            Decoded::new(time(field, length_delimited(field, wire)?, true)?, false)
        }
        FieldType::Duration => {
            let nanos = single_varint(field, length_delimited(field, wire)?)? as i64;
            Decoded::new(go_duration(nanos).into(), false)
        }
        FieldType::Quantity => {
            let quantity = single_string(field, length_delimited(field, wire)?)?;
            let quantity = if quantity.is_empty() {
                "0".into()
            } else {
                quantity
            };
            Decoded::new(quantity.into(), false)
        }
        FieldType::IntOrString => int_or_string(field, length_delimited(field, wire)?)?,
        FieldType::EmbeddedJson => {
            let raw = single_bytes(field, length_delimited(field, wire)?)?;
            let json = if raw.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(raw).map_err(|err| DecodeError::InvalidEmbeddedJson {
                    field: field.json.into(),
                    message: err.to_string(),
                })?
            };
            Decoded::new(json, false)
        }
    })
}

fn length_delimited<'a>(field: &Field, wire: WireValue<'a>) -> Result<&'a [u8], DecodeError> {
    match wire {
        WireValue::Bytes(bytes) => Ok(bytes),
        _ => Err(wrong_wire_type(field)),
    }
}

fn wrong_wire_type(field: &Field) -> DecodeError {
    DecodeError::WrongWireType {
        field: field.json.into(),
    }
}

fn utf8(bytes: &[u8], field: &str) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8 {
        field: field.into(),
    })
}

/// Field 1 of a wrapper message as bytes (empty if absent).
fn single_bytes<'a>(field: &Field, message: &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let mut bytes: &[u8] = &[];
    for part in FieldReader::new(message) {
        match part? {
            (1, WireValue::Bytes(b)) => bytes = b,
            (1, _) => return Err(wrong_wire_type(field)),
            _ => {}
        }
    }
    Ok(bytes)
}

fn single_string(field: &Field, message: &[u8]) -> Result<String, DecodeError> {
    utf8(single_bytes(field, message)?, field.json)
}

/// Field 1 of a wrapper message as a varint (0 if absent).
fn single_varint(field: &Field, message: &[u8]) -> Result<u64, DecodeError> {
    let mut number = 0;
    for part in FieldReader::new(message) {
        match part? {
            (1, WireValue::Varint(v)) => number = v,
            (1, _) => return Err(wrong_wire_type(field)),
            _ => {}
        }
    }
    Ok(number)
}

/// `{1: seconds, 2: nanos}` as Kubernetes renders it in JSON. An empty
/// message is Go's zero time, which `metav1.Time` marshals as `null`.
fn time(field: &Field, message: &[u8], micros: bool) -> Result<Value, DecodeError> {
    if message.is_empty() {
        return Ok(Value::Null);
    }
    let (mut seconds, mut nanos) = (0i64, 0i32);
    for part in FieldReader::new(message) {
        match part? {
            (1, WireValue::Varint(v)) => seconds = v as i64,
            (2, WireValue::Varint(v)) => nanos = v as i32,
            (1 | 2, _) => return Err(wrong_wire_type(field)),
            _ => {}
        }
    }
    let invalid = || DecodeError::InvalidTime {
        field: field.json.into(),
    };
    let instant =
        jiff::Timestamp::new(seconds, if micros { nanos } else { 0 }).map_err(|_| invalid())?;
    let whole_seconds = instant.strftime("%Y-%m-%dT%H:%M:%S");
    Ok(if micros {
        format!("{whole_seconds}.{:06}Z", instant.subsec_microsecond()).into()
    } else {
        format!("{whole_seconds}Z").into()
    })
}

/// `{1: type (0 int, 1 string), 2: intVal, 3: strVal}`.
fn int_or_string(field: &Field, message: &[u8]) -> Result<Decoded, DecodeError> {
    let (mut is_string, mut int_value, mut string_value) = (false, 0i32, String::new());
    for part in FieldReader::new(message) {
        match part? {
            (1, WireValue::Varint(v)) => is_string = v == 1,
            (2, WireValue::Varint(v)) => int_value = v as i32,
            (3, WireValue::Bytes(v)) => string_value = utf8(v, field.json)?,
            (1..=3, _) => return Err(wrong_wire_type(field)),
            _ => {}
        }
    }
    Ok(if is_string {
        let is_zero = string_value.is_empty();
        Decoded::new(string_value.into(), is_zero)
    } else {
        Decoded::new(int_value.into(), int_value == 0)
    })
}

/// A duration in nanoseconds as Go's `time.Duration.String` writes it
/// (`1h0m0s`, `1.5s`, `300ms`, `0s`).
fn go_duration(nanos: i64) -> String {
    const SECOND: u64 = 1_000_000_000;
    let sign = if nanos < 0 { "-" } else { "" };
    let magnitude = nanos.unsigned_abs();
    if magnitude == 0 {
        return "0s".into();
    }
    if magnitude < SECOND {
        let (unit, scale, digits) = match magnitude {
            0..1_000 => ("ns", 1, 0),
            1_000..1_000_000 => ("µs", 1_000, 3),
            _ => ("ms", 1_000_000, 6),
        };
        return format!("{sign}{}{unit}", decimal(magnitude, scale, digits));
    }
    let hours = magnitude / (3600 * SECOND);
    let minutes = magnitude / (60 * SECOND) % 60;
    let seconds = decimal(magnitude % (60 * SECOND), SECOND, 9);
    match (hours, minutes) {
        (0, 0) => format!("{sign}{seconds}s"),
        (0, _) => format!("{sign}{minutes}m{seconds}s"),
        _ => format!("{sign}{hours}h{minutes}m{seconds}s"),
    }
}

/// `value / scale` with its fraction (`digits` wide) and no trailing zeros.
fn decimal(value: u64, scale: u64, digits: usize) -> String {
    let (whole, fraction) = (value / scale, value % scale);
    if fraction == 0 {
        return whole.to_string();
    }
    let fraction = format!("{fraction:0digits$}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

#[cfg(test)]
mod tests;
