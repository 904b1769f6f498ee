//! The Swagger 2.0 document in gnostic's protobuf encoding
//! (`openapi.v2.Document` of github.com/google/gnostic's OpenAPIv2.proto).
//!
//! kubectl asks for `/openapi/v2` only as
//! `application/com.github.proto-openapi.spec.v2@v1.0+protobuf` and cannot
//! read the JSON form, so the JSON document is transcribed field by field.
//! Values gnostic keeps as `Any` (vendor extensions, defaults, enums,
//! examples) carry their JSON text in `Any.yaml`: JSON is valid YAML, and
//! kubectl decodes that field with a YAML parser.

use serde_json::{Map, Value};

/// A protobuf message under construction. Proto3 semantics: scalar fields
/// holding their default value are left out.
#[derive(Default)]
struct Message(Vec<u8>);

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LENGTH_DELIMITED: u64 = 2;

impl Message {
    fn varint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.0.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    fn key(&mut self, field: u64, wire_type: u64) {
        self.varint((field << 3) | wire_type);
    }

    fn bytes(&mut self, field: u64, bytes: &[u8]) {
        self.key(field, LENGTH_DELIMITED);
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    fn string(&mut self, field: u64, value: Option<&Value>) {
        if let Some(s) = value.and_then(Value::as_str).filter(|s| !s.is_empty()) {
            self.bytes(field, s.as_bytes());
        }
    }

    fn strings(&mut self, field: u64, value: Option<&Value>) {
        let items = value
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for s in items.iter().filter_map(Value::as_str) {
            self.bytes(field, s.as_bytes());
        }
    }

    fn boolean(&mut self, field: u64, value: Option<&Value>) {
        if value.and_then(Value::as_bool).unwrap_or(false) {
            self.key(field, VARINT);
            self.varint(1);
        }
    }

    fn int64(&mut self, field: u64, value: Option<&Value>) {
        if let Some(n) = value.and_then(Value::as_i64).filter(|n| *n != 0) {
            self.key(field, VARINT);
            self.varint(n as u64);
        }
    }

    fn double(&mut self, field: u64, value: Option<&Value>) {
        if let Some(f) = value.and_then(Value::as_f64).filter(|f| *f != 0.0) {
            self.key(field, FIXED64);
            self.0.extend_from_slice(&f.to_bits().to_le_bytes());
        }
    }

    fn message(&mut self, field: u64, message: Message) {
        self.bytes(field, &message.0);
    }

    /// `Any { yaml = 2 }` holding `value`'s JSON text.
    fn any(&mut self, field: u64, value: Option<&Value>) {
        if let Some(v) = value {
            let mut any = Message::default();
            any.bytes(2, v.to_string().as_bytes());
            self.message(field, any);
        }
    }

    fn anys(&mut self, field: u64, value: Option<&Value>) {
        for v in value
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            self.any(field, Some(v));
        }
    }

    /// `repeated NamedAny` built from the `x-` keys of an object.
    fn vendor_extensions(&mut self, field: u64, object: &Map<String, Value>) {
        for (name, value) in object.iter().filter(|(k, _)| k.starts_with("x-")) {
            let mut named = Message::default();
            named.bytes(1, name.as_bytes());
            named.any(2, Some(value));
            self.message(field, named);
        }
    }

    /// A `Named*` pair message: `name = 1`, `value = 2`.
    fn named(&mut self, field: u64, name: &str, value: Message) {
        let mut named = Message::default();
        named.bytes(1, name.as_bytes());
        named.message(2, value);
        self.message(field, named);
    }
}

fn object(value: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);
    value.as_object().unwrap_or(&EMPTY)
}

/// Encodes a Swagger 2.0 JSON document as an `openapi.v2.Document`.
pub(crate) fn encode_document(doc: &Value) -> Vec<u8> {
    let d = object(doc);
    let mut m = Message::default();
    m.string(1, d.get("swagger"));
    if let Some(info) = d.get("info") {
        m.message(2, encode_info(info));
    }
    m.string(3, d.get("host"));
    m.string(4, d.get("basePath"));
    m.strings(5, d.get("schemes"));
    m.strings(6, d.get("consumes"));
    m.strings(7, d.get("produces"));
    if let Some(paths) = d.get("paths") {
        let mut p = Message::default();
        p.vendor_extensions(1, object(paths));
        for (path, item) in object(paths).iter().filter(|(k, _)| !k.starts_with("x-")) {
            p.named(2, path, encode_path_item(item));
        }
        m.message(8, p);
    }
    if let Some(definitions) = d.get("definitions") {
        let mut defs = Message::default();
        for (name, schema) in object(definitions) {
            defs.named(1, name, encode_schema(schema));
        }
        m.message(9, defs);
    }
    for requirement in d
        .get("security")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let mut r = Message::default();
        for (name, scopes) in object(requirement) {
            let mut array = Message::default();
            array.strings(1, Some(scopes));
            r.named(1, name, array);
        }
        m.message(12, r);
    }
    if let Some(security_definitions) = d.get("securityDefinitions") {
        let mut defs = Message::default();
        for (name, scheme) in object(security_definitions) {
            defs.named(1, name, encode_security_scheme(scheme));
        }
        m.message(13, defs);
    }
    m.vendor_extensions(16, d);
    m.0
}

fn encode_info(info: &Value) -> Message {
    let i = object(info);
    let mut m = Message::default();
    m.string(1, i.get("title"));
    m.string(2, i.get("version"));
    m.string(3, i.get("description"));
    m.vendor_extensions(7, i);
    m
}

/// A `SecurityDefinitionsItem`; Gantry only declares API-key (bearer
/// token) and basic schemes.
fn encode_security_scheme(scheme: &Value) -> Message {
    let s = object(scheme);
    let mut item = Message::default();
    let mut m = Message::default();
    if s.get("type").and_then(Value::as_str) == Some("basic") {
        m.string(1, s.get("type"));
        m.string(2, s.get("description"));
        item.message(1, m);
    } else {
        m.string(1, s.get("type"));
        m.string(2, s.get("name"));
        m.string(3, s.get("in"));
        m.string(4, s.get("description"));
        item.message(2, m);
    }
    item
}

fn encode_path_item(item: &Value) -> Message {
    let p = object(item);
    let mut m = Message::default();
    m.string(1, p.get("$ref"));
    for (field, method) in [
        (2, "get"),
        (3, "put"),
        (4, "post"),
        (5, "delete"),
        (6, "options"),
        (7, "head"),
        (8, "patch"),
    ] {
        if let Some(op) = p.get(method) {
            m.message(field, encode_operation(op));
        }
    }
    encode_parameters(&mut m, 9, p.get("parameters"));
    m.vendor_extensions(10, p);
    m
}

fn encode_operation(op: &Value) -> Message {
    let o = object(op);
    let mut m = Message::default();
    m.strings(1, o.get("tags"));
    m.string(2, o.get("summary"));
    m.string(3, o.get("description"));
    m.string(5, o.get("operationId"));
    m.strings(6, o.get("produces"));
    m.strings(7, o.get("consumes"));
    encode_parameters(&mut m, 8, o.get("parameters"));
    if let Some(responses) = o.get("responses") {
        let mut r = Message::default();
        for (code, response) in object(responses)
            .iter()
            .filter(|(k, _)| !k.starts_with("x-"))
        {
            let resp = object(response);
            let mut body = Message::default();
            body.string(1, resp.get("description"));
            if let Some(schema) = resp.get("schema") {
                let mut schema_item = Message::default();
                schema_item.message(1, encode_schema(schema));
                body.message(2, schema_item);
            }
            body.vendor_extensions(5, resp);
            let mut value = Message::default();
            value.message(1, body);
            r.named(1, code, value);
        }
        m.message(9, r);
    }
    m.strings(10, o.get("schemes"));
    m.boolean(11, o.get("deprecated"));
    m.vendor_extensions(13, o);
    m
}

/// `repeated ParametersItem`, each a `Parameter` (body or non-body) or a
/// `JsonReference`.
fn encode_parameters(m: &mut Message, field: u64, parameters: Option<&Value>) {
    for param in parameters
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let p = object(param);
        let mut item = Message::default();
        if let Some(reference) = p.get("$ref") {
            let mut r = Message::default();
            r.string(1, Some(reference));
            item.message(2, r);
        } else {
            item.message(1, encode_parameter(p));
        }
        m.message(field, item);
    }
}

fn encode_parameter(p: &Map<String, Value>) -> Message {
    let mut parameter = Message::default();
    let location = p.get("in").and_then(Value::as_str).unwrap_or_default();
    if location == "body" {
        let mut body = Message::default();
        body.string(1, p.get("description"));
        body.string(2, p.get("name"));
        body.string(3, p.get("in"));
        body.boolean(4, p.get("required"));
        if let Some(schema) = p.get("schema") {
            body.message(5, encode_schema(schema));
        }
        body.vendor_extensions(6, p);
        parameter.message(1, body);
        return parameter;
    }
    // Query and form-data sub-schemas have `allow_empty_value` at 5 and
    // every later field shifted by one relative to header and path ones.
    let (variant, shift) = match location {
        "header" => (1, 0),
        "formData" => (2, 1),
        "query" => (3, 1),
        _ => (4, 0),
    };
    let mut sub = Message::default();
    sub.boolean(1, p.get("required"));
    sub.string(2, p.get("in"));
    sub.string(3, p.get("description"));
    sub.string(4, p.get("name"));
    if shift == 1 {
        sub.boolean(5, p.get("allowEmptyValue"));
    }
    sub.string(5 + shift, p.get("type"));
    sub.string(6 + shift, p.get("format"));
    sub.string(8 + shift, p.get("collectionFormat"));
    sub.any(9 + shift, p.get("default"));
    sub.boolean(19 + shift, p.get("uniqueItems"));
    sub.anys(20 + shift, p.get("enum"));
    sub.vendor_extensions(22 + shift, p);
    let mut non_body = Message::default();
    non_body.message(variant, sub);
    parameter.message(2, non_body);
    parameter
}

fn encode_schema(schema: &Value) -> Message {
    let s = object(schema);
    let mut m = Message::default();
    m.string(1, s.get("$ref"));
    m.string(2, s.get("format"));
    m.string(3, s.get("title"));
    m.string(4, s.get("description"));
    m.any(5, s.get("default"));
    m.double(6, s.get("multipleOf"));
    m.double(7, s.get("maximum"));
    m.boolean(8, s.get("exclusiveMaximum"));
    m.double(9, s.get("minimum"));
    m.boolean(10, s.get("exclusiveMinimum"));
    m.int64(11, s.get("maxLength"));
    m.int64(12, s.get("minLength"));
    m.string(13, s.get("pattern"));
    m.int64(14, s.get("maxItems"));
    m.int64(15, s.get("minItems"));
    m.boolean(16, s.get("uniqueItems"));
    m.int64(17, s.get("maxProperties"));
    m.int64(18, s.get("minProperties"));
    m.strings(19, s.get("required"));
    m.anys(20, s.get("enum"));
    match s.get("additionalProperties") {
        Some(Value::Bool(allowed)) => {
            let mut item = Message::default();
            item.key(2, VARINT);
            item.varint(u64::from(*allowed));
            m.message(21, item);
        }
        Some(additional @ Value::Object(_)) => {
            let mut item = Message::default();
            item.message(1, encode_schema(additional));
            m.message(21, item);
        }
        _ => {}
    }
    match s.get("type") {
        Some(Value::String(t)) => {
            let mut type_item = Message::default();
            type_item.bytes(1, t.as_bytes());
            m.message(22, type_item);
        }
        Some(types @ Value::Array(_)) => {
            let mut type_item = Message::default();
            type_item.strings(1, Some(types));
            m.message(22, type_item);
        }
        _ => {}
    }
    match s.get("items") {
        Some(Value::Array(schemas)) => {
            let mut items = Message::default();
            schemas
                .iter()
                .for_each(|i| items.message(1, encode_schema(i)));
            m.message(23, items);
        }
        Some(single @ Value::Object(_)) => {
            let mut items = Message::default();
            items.message(1, encode_schema(single));
            m.message(23, items);
        }
        _ => {}
    }
    for sub in s
        .get("allOf")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        m.message(24, encode_schema(sub));
    }
    if let Some(properties) = s.get("properties") {
        let mut props = Message::default();
        for (name, property) in object(properties) {
            props.named(1, name, encode_schema(property));
        }
        m.message(25, props);
    }
    m.string(26, s.get("discriminator"));
    m.boolean(27, s.get("readOnly"));
    m.any(30, s.get("example"));
    m.vendor_extensions(31, s);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_use_protobuf_wire_format() {
        let mut m = Message::default();
        m.string(1, Some(&json!("2.0")));
        assert_eq!(m.0, [0x0a, 3, b'2', b'.', b'0']);
        let mut m = Message::default();
        m.int64(11, Some(&json!(300)));
        assert_eq!(m.0, [11 << 3, 0xac, 0x02]);
        let mut m = Message::default();
        m.string(1, Some(&json!("")));
        m.boolean(2, Some(&json!(false)));
        assert!(m.0.is_empty(), "proto3 omits defaults");
    }

    #[test]
    fn vendor_extensions_carry_json_in_any_yaml() {
        let schema = json!({"x-kubernetes-patch-merge-key": "name"});
        let encoded = encode_schema(&schema).0;
        let text = String::from_utf8_lossy(&encoded);
        assert!(text.contains("x-kubernetes-patch-merge-key"));
        assert!(text.contains("\"name\""));
        assert_eq!(
            encoded[0],
            (31 << 3 | 2) as u8 | 0x80,
            "field 31 needs a two-byte key"
        );
    }
}
