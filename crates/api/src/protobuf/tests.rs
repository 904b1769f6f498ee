use serde_json::json;

use super::*;
use crate::registry;

/// Builds protobuf messages the way Go's generated marshallers write them.
#[derive(Default, Clone)]
struct Msg(Vec<u8>);

impl Msg {
    fn key(mut self, tag: u32, wire_type: u8) -> Self {
        self = self.raw_varint((u64::from(tag) << 3) | u64::from(wire_type));
        self
    }

    fn raw_varint(mut self, mut value: u64) -> Self {
        while value >= 0x80 {
            self.0.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
        self
    }

    fn varint(self, tag: u32, value: u64) -> Self {
        self.key(tag, 0).raw_varint(value)
    }

    fn int(self, tag: u32, value: i64) -> Self {
        self.varint(tag, value as u64)
    }

    fn bytes(self, tag: u32, bytes: &[u8]) -> Self {
        let mut this = self.key(tag, 2).raw_varint(bytes.len() as u64);
        this.0.extend_from_slice(bytes);
        this
    }

    fn string(self, tag: u32, text: &str) -> Self {
        self.bytes(tag, text.as_bytes())
    }

    fn message(self, tag: u32, message: Msg) -> Self {
        self.bytes(tag, &message.0)
    }

    /// A `map<string, T>` entry whose value is already encoded as field 2.
    fn entry(self, tag: u32, key: &str, value: Msg) -> Self {
        let mut entry = Msg::default().string(1, key);
        entry.0.extend_from_slice(&value.0);
        self.message(tag, entry)
    }

    fn string_entry(self, tag: u32, key: &str, value: &str) -> Self {
        self.entry(tag, key, Msg::default().string(2, value))
    }
}

fn envelope(api_version: &str, kind: &str, object: Msg) -> Vec<u8> {
    let type_meta = Msg::default().string(1, api_version).string(2, kind);
    let unknown = Msg::default()
        .message(1, type_meta)
        .message(2, object)
        .string(3, "")
        .string(4, "");
    [MAGIC, &unknown.0].concat()
}

/// ObjectMeta as Go writes it for a new object: every non-pointer field,
/// empty ones included, and the zero creation time as an empty message.
fn new_object_meta(name: &str, namespace: &str) -> Msg {
    Msg::default()
        .string(1, name)
        .string(2, "")
        .string(3, namespace)
        .string(4, "")
        .string(5, "")
        .string(6, "")
        .int(7, 0)
        .message(8, Msg::default())
}

fn int_or_string_int(value: i32) -> Msg {
    Msg::default()
        .int(1, 0)
        .int(2, i64::from(value))
        .string(3, "")
}

fn int_or_string_string(value: &str) -> Msg {
    Msg::default().int(1, 1).int(2, 0).string(3, value)
}

#[test]
fn namespace_decodes_like_kubectls_json() {
    let namespace = Msg::default()
        .message(1, new_object_meta("shop", ""))
        .message(2, Msg::default())
        .message(3, Msg::default().string(1, ""));
    let decoded = decode_object(&envelope("v1", "Namespace", namespace)).expect("valid body");
    assert_eq!(
        decoded,
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "shop", "creationTimestamp": null},
            "spec": {},
            "status": {},
        })
    );
}

#[test]
fn configmap_maps_and_labels() {
    let mut meta = new_object_meta("cfg", "shop");
    meta = meta
        .string_entry(11, "app", "web")
        .string_entry(12, "note", "");
    let configmap = Msg::default()
        .message(1, meta)
        .string_entry(2, "a", "b")
        .string_entry(2, "empty", "")
        .entry(3, "blob", Msg::default().bytes(2, &[1, 2, 3]));
    let decoded = decode_object(&envelope("v1", "ConfigMap", configmap)).expect("valid body");
    assert_eq!(decoded["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(decoded["metadata"]["annotations"], json!({"note": ""}));
    assert_eq!(decoded["metadata"]["namespace"], "shop");
    assert_eq!(decoded["data"], json!({"a": "b", "empty": ""}));
    assert_eq!(decoded["binaryData"], json!({"blob": "AQID"}));
    assert!(
        decoded.get("immutable").is_none(),
        "absent pointer stays absent"
    );
}

#[test]
fn secret_binary_data_is_base64_and_pointer_false_is_kept() {
    let secret = Msg::default()
        .message(1, new_object_meta("s", "shop"))
        .entry(2, "p", Msg::default().bytes(2, &[0x00, 0x9f, 0x92, 0x96]))
        .string(3, "Opaque")
        .varint(5, 0);
    let decoded = decode_object(&envelope("v1", "Secret", secret)).expect("valid body");
    assert_eq!(decoded["data"], json!({"p": "AJ+Slg=="}));
    assert_eq!(decoded["type"], "Opaque");
    assert_eq!(decoded["immutable"], false);
}

#[test]
fn deployment_with_int_or_string_quantity_and_zero_values() {
    let port = Msg::default()
        .string(1, "")
        .int(2, 0)
        .int(3, 8080)
        .string(4, "TCP")
        .string(5, "");
    let resources = Msg::default().entry(
        1,
        "cpu",
        Msg::default().message(2, Msg::default().string(1, "500m")),
    );
    let container = Msg::default()
        .string(1, "busybox")
        .string(2, "busybox")
        .message(6, port)
        .message(8, resources)
        .string(13, "")
        .string(14, "")
        .varint(16, 0);
    let pod_spec = Msg::default()
        .message(2, container)
        .string(3, "")
        .int(4, 30)
        .string(6, "");
    let template = Msg::default()
        .message(
            1,
            Msg::default()
                .string_entry(11, "app", "web")
                .message(8, Msg::default()),
        )
        .message(2, pod_spec);
    let selector = Msg::default().string_entry(1, "app", "web");
    let rolling = Msg::default()
        .message(1, int_or_string_int(0))
        .message(2, int_or_string_string("25%"));
    let strategy = Msg::default()
        .string(1, "RollingUpdate")
        .message(2, rolling);
    let spec = Msg::default()
        .int(1, 2)
        .message(2, selector)
        .message(3, template)
        .message(4, strategy)
        .int(5, 0)
        .int(6, 10)
        .varint(7, 0);
    let deployment = Msg::default()
        .message(1, new_object_meta("web", "shop"))
        .message(2, spec)
        .message(3, Msg::default());
    let decoded =
        decode_object(&envelope("apps/v1", "Deployment", deployment)).expect("valid body");
    let spec = &decoded["spec"];
    assert_eq!(spec["replicas"], 2);
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert!(
        spec.get("minReadySeconds").is_none(),
        "non-pointer zero means unset"
    );
    assert!(
        spec.get("paused").is_none(),
        "non-pointer false means unset"
    );
    assert_eq!(spec["selector"], json!({"matchLabels": {"app": "web"}}));
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}})
    );
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert!(pod.get("restartPolicy").is_none());
    let container = &pod["containers"][0];
    assert_eq!(container["name"], "busybox");
    assert_eq!(container["image"], "busybox");
    assert_eq!(container["resources"], json!({"limits": {"cpu": "500m"}}));
    assert_eq!(
        container["ports"],
        json!([{"containerPort": 8080, "protocol": "TCP"}])
    );
    assert!(container.get("terminationMessagePath").is_none());
    assert!(container.get("stdin").is_none());
    assert_eq!(
        spec["template"]["metadata"],
        json!({"labels": {"app": "web"}, "creationTimestamp": null})
    );
}

#[test]
fn embedded_go_structs_are_inlined() {
    let volume_source = Msg::default().message(6, Msg::default().string(1, "s").varint(3, 0o644));
    let volume = Msg::default().string(1, "data").message(2, volume_source);
    let env_from = Msg::default().message(
        2,
        Msg::default()
            .message(1, Msg::default().string(1, "cfg"))
            .varint(2, 1),
    );
    let container = Msg::default().string(1, "c").message(19, env_from);
    let pod_spec = Msg::default().message(1, volume).message(2, container);
    let pod = Msg::default()
        .message(1, new_object_meta("p", "default"))
        .message(2, pod_spec);
    let decoded = decode_object(&envelope("v1", "Pod", pod)).expect("valid body");
    assert_eq!(
        decoded["spec"]["volumes"],
        json!([{"name": "data", "secret": {"secretName": "s", "defaultMode": 0o644}}])
    );
    assert_eq!(
        decoded["spec"]["containers"][0]["envFrom"],
        json!([{"configMapRef": {"name": "cfg", "optional": true}}])
    );
}

#[test]
fn times_render_as_kubernetes_json_does() {
    let meta = Msg::default()
        .string(1, "e")
        .message(8, Msg::default().int(1, 1_704_164_645).int(2, 123_456_789));
    let event = Msg::default()
        .message(1, meta)
        .message(10, Msg::default().int(1, 1_704_164_645).int(2, 123_456_789));
    let decoded = decode_object(&envelope("v1", "Event", event)).expect("valid body");
    assert_eq!(
        decoded["metadata"]["creationTimestamp"],
        "2024-01-02T03:04:05Z"
    );
    assert_eq!(decoded["eventTime"], "2024-01-02T03:04:05.123456Z");
}

#[test]
fn go_durations() {
    let cases = [
        (0, "0s"),
        (999, "999ns"),
        (1_500, "1.5µs"),
        (300_000_000, "300ms"),
        (1_500_000_000, "1.5s"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (-2_000_000_000, "-2s"),
    ];
    for (nanos, expected) in cases {
        assert_eq!(go_duration(nanos), expected, "{nanos}ns");
    }
}

#[test]
fn durations_and_doubles() {
    let duration = field(
        1,
        "timeout",
        FieldType::Duration,
        Cardinality::Single,
        false,
    );
    let wrapped = Msg::default().int(1, 90_000_000_000);
    let decoded = decode_value(&duration, WireValue::Bytes(&wrapped.0), 0).expect("valid");
    assert_eq!(decoded.json, "1m30s");
    let double = field(1, "ratio", FieldType::Double, Cardinality::Single, false);
    let decoded = decode_value(&double, WireValue::Fixed64(0.5f64.to_bits()), 0).expect("valid");
    assert_eq!(decoded.json, 0.5);
    assert!(matches!(
        decode_value(&double, WireValue::Fixed64(f64::NAN.to_bits()), 0),
        Err(DecodeError::NonFiniteNumber { .. })
    ));
}

#[test]
fn unknown_tags_are_skipped() {
    let namespace = Msg::default()
        .message(1, Msg::default().string(1, "shop").string(99, "future"))
        .varint(42, 7);
    let decoded = decode_object(&envelope("v1", "Namespace", namespace)).expect("valid body");
    assert_eq!(decoded["metadata"], json!({"name": "shop"}));
}

#[test]
fn malformed_bodies_are_errors() {
    let valid = envelope(
        "v1",
        "Namespace",
        Msg::default().message(1, new_object_meta("shop", "")),
    );
    assert_eq!(
        decode_object(b"{\"kind\":\"Namespace\"}"),
        Err(DecodeError::MissingMagic)
    );
    assert_eq!(
        decode_object(&valid[..valid.len() - 3]),
        Err(DecodeError::Truncated)
    );
    assert_eq!(
        decode_object(&[MAGIC, &[0xff; 16][..]].concat()),
        Err(DecodeError::VarintOverflow)
    );
    assert!(matches!(
        decode_object(&envelope("v1", "Widget", Msg::default())),
        Err(DecodeError::UnknownKind { .. })
    ));
    let name_as_varint = Msg::default().message(1, Msg::default().varint(1, 5));
    assert!(matches!(
        decode_object(&envelope("v1", "Namespace", name_as_varint)),
        Err(DecodeError::WrongWireType { .. })
    ));
    let bad_utf8 = Msg::default().message(1, Msg::default().bytes(1, &[0xff, 0xfe]));
    assert!(matches!(
        decode_object(&envelope("v1", "Namespace", bad_utf8)),
        Err(DecodeError::InvalidUtf8 { .. })
    ));
    let gzip = Msg::default()
        .message(1, Msg::default().string(1, "v1").string(2, "Namespace"))
        .string(3, "gzip");
    assert_eq!(
        decode_object(&[MAGIC, &gzip.0].concat()),
        Err(DecodeError::UnsupportedContentEncoding("gzip".into()))
    );
}

#[test]
fn every_prefix_and_corruption_of_a_body_is_handled() {
    let body = envelope(
        "v1",
        "Secret",
        Msg::default()
            .message(1, new_object_meta("s", "shop"))
            .entry(2, "p", Msg::default().bytes(2, b"q")),
    );
    for end in 0..body.len() {
        let _ = decode_object(&body[..end]);
    }
    for index in MAGIC.len()..body.len() {
        for byte in [0x00, 0x7f, 0x80, 0xff] {
            let mut corrupted = body.clone();
            corrupted[index] = byte;
            let _ = decode_object(&corrupted);
        }
    }
}

#[test]
fn error_is_a_bad_request_status() {
    let err: ApiError = DecodeError::Truncated.into();
    assert_eq!(err.code(), 400);
}

#[test]
fn content_types() {
    assert!(is_protobuf("application/vnd.kubernetes.protobuf"));
    assert!(is_protobuf(
        "application/vnd.kubernetes.protobuf; charset=binary"
    ));
    assert!(!is_protobuf("application/json"));
    assert!(is_protobuf("Application/VND.Kubernetes.Protobuf"));
    assert!(!is_protobuf("application/vnd.kubernetes.protobuf-extra"));
}

#[test]
fn table_is_sorted_and_closed() {
    assert!(fields::KINDS.is_sorted_by_key(|k| (k.api_version, k.kind)));
    assert!(fields::MESSAGES.is_sorted_by_key(|m| m.name));
    for message in fields::MESSAGES {
        assert!(
            message.fields.is_sorted_by_key(|f| f.tag),
            "{}",
            message.name
        );
        for field in message.fields {
            if let FieldType::Object(inner) = field.ty {
                assert!(
                    message_schema(inner).is_some(),
                    "{}.{} -> {inner}",
                    message.name,
                    field.json
                );
            }
        }
    }
    for kind in fields::KINDS {
        assert!(message_schema(kind.message).is_some(), "{}", kind.message);
    }
}

#[test]
fn every_served_kind_has_a_schema() {
    for resource in registry::RESOURCES {
        let api_version = resource.group_version.api_version();
        assert!(
            kind_schema(&api_version, resource.kind).is_some(),
            "{api_version} {}",
            resource.kind
        );
    }
}

#[test]
fn zero_is_a_value_names_existing_fields() {
    for (message, field) in ZERO_IS_A_VALUE {
        let schema = message_schema(message).unwrap_or_else(|| panic!("no message {message}"));
        assert!(
            schema
                .fields
                .iter()
                .any(|f| f.json == *field && f.cardinality == Cardinality::Single),
            "{message}.{field}"
        );
    }
}
