//! Writes `crates/api/src/protobuf/fields.rs`, the table the protobuf request
//! decoder walks: for every message reachable from the served kinds, each
//! field's tag, JSON name, wire type and cardinality.
//!
//! Field numbers and types come from the prost structs of the `k8s-pb` crate
//! (generated from Kubernetes' `generated.proto` files, which are not
//! available offline). prost renames fields to snake case, which loses the
//! JSON spelling (`podIPs` becomes `pod_i_ps`), so each field is matched to the
//! property of the same message in Gantry's OpenAPI document whose snake case
//! (by `heck`, as prost computes it) is the same.
//!
//! ```sh
//! cargo run -p gantry-api --example gen_protobuf_fields -- \
//!     ~/.cargo/registry/src/*/k8s-pb-0.9.0 > crates/api/src/protobuf/fields.rs
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use heck::ToSnakeCase;
use serde_json::Value;
use syn::{Fields, GenericArgument, Item, PathArguments, Type};

/// The k8s-pb release the table is generated from.
const K8S_PB: &str = "k8s-pb 0.9.0";

/// Messages the decoder renders specially instead of field by field, with
/// the `FieldType` variant naming them in the table.
const SPECIAL_MESSAGES: &[(&str, &str)] = &[
    ("io.k8s.apimachinery.pkg.apis.meta.v1.Time", "Time"),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime",
        "MicroTime",
    ),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.Duration", "Duration"),
    ("io.k8s.apimachinery.pkg.api.resource.Quantity", "Quantity"),
    (
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
        "IntOrString",
    ),
    (
        "io.k8s.apimachinery.pkg.runtime.RawExtension",
        "EmbeddedJson",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1",
        "EmbeddedJson",
    ),
];

/// A field as prost declares it.
struct ProstField {
    tag: u32,
    snake_name: String,
    /// `FieldType` variant: `String`, `Int32`, ... or `Object("<message>")`.
    ty: String,
    cardinality: &'static str,
}

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let source = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: gen_protobuf_fields <path of the k8s-pb 0.9.0 source>")?;
    let messages = parse_k8s_pb(&source.join("src"))?;
    let document: Value = serde_json::from_slice(gantry_api::openapi::v2_document())?;
    let definitions = document["definitions"]
        .as_object()
        .ok_or("the OpenAPI document has no definitions")?;
    let messages = with_openapi_names(messages, definitions);
    let kinds = served_kinds(definitions);
    let planned = plan_messages(&messages, definitions, kinds.iter().map(|k| k.2.clone()))?;
    print!("{}", render(&kinds, &planned)?);
    Ok(())
}

/// Every prost message of k8s-pb, by its OpenAPI definition name
/// (`io.k8s.api.core.v1.Pod`), which is the proto package with `io.` in front.
fn parse_k8s_pb(src: &Path) -> Result<BTreeMap<String, Vec<ProstField>>, Error> {
    let mut messages = BTreeMap::new();
    for file in rust_files(src)? {
        let module: Vec<String> = file
            .parent()
            .and_then(|dir| dir.strip_prefix(src).ok())
            .map(|dir| {
                dir.components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let parsed = syn::parse_file(&std::fs::read_to_string(&file)?)?;
        for item in parsed.items {
            let Item::Struct(item) = item else { continue };
            let Fields::Named(named) = &item.fields else {
                continue;
            };
            let mut fields = Vec::new();
            for field in &named.named {
                if let Some(parsed) = prost_field(field, &module)? {
                    fields.push(parsed);
                }
            }
            fields.sort_by_key(|f| f.tag);
            messages.insert(message_name(&module, &item.ident.to_string()), fields);
        }
    }
    Ok(messages)
}

fn rust_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn message_name(module: &[String], ident: &str) -> String {
    let package: Vec<String> = module.iter().map(|m| m.replace('_', "-")).collect();
    format!("io.k8s.{}.{ident}", package.join("."))
}

/// Reads `#[prost(string, optional, tag = "2")]` and the field's Rust type.
fn prost_field(field: &syn::Field, module: &[String]) -> Result<Option<ProstField>, Error> {
    let Some(attr) = field.attrs.iter().find(|a| a.path().is_ident("prost")) else {
        return Ok(None);
    };
    let mut scalar = None;
    let mut map_value = None;
    let mut repeated = false;
    let mut tag = None;
    attr.parse_nested_meta(|meta| {
        let key = meta
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        match key.as_str() {
            "tag" => tag = Some(meta.value()?.parse::<syn::LitStr>()?.value().parse()),
            "btree_map" | "map" => {
                let spec = meta.value()?.parse::<syn::LitStr>()?.value();
                map_value = spec.split(',').nth(1).map(|v| v.trim().to_string());
            }
            "bytes" | "packed" => {
                meta.value()?.parse::<syn::LitStr>()?;
                if key == "bytes" {
                    scalar = Some(key);
                }
            }
            "repeated" => repeated = true,
            "optional" | "boxed" | "required" => {}
            _ => scalar = Some(key),
        }
        Ok(())
    })?;
    let ident = field.ident.as_ref().ok_or("prost field without a name")?;
    let tag = tag.ok_or_else(|| format!("{ident}: no tag"))??;
    let (kind, cardinality) = match map_value {
        Some(value) => (value, "Map"),
        None => (
            scalar.ok_or_else(|| format!("{ident}: no type"))?,
            if repeated { "Repeated" } else { "Single" },
        ),
    };
    let ty = match kind.as_str() {
        "string" => "String".to_string(),
        "bytes" => "Bytes".to_string(),
        "bool" => "Bool".to_string(),
        "int32" => "Int32".to_string(),
        "int64" => "Int64".to_string(),
        "double" => "Double".to_string(),
        "message" => format!("Object({:?})", message_type(&field.ty, module)?),
        other => return Err(format!("{ident}: unsupported prost type {other}").into()),
    };
    Ok(Some(ProstField {
        tag,
        snake_name: ident.to_string().trim_start_matches("r#").to_string(),
        ty,
        cardinality,
    }))
}

/// The message a field holds: the innermost type argument of
/// `Option<..>`, `Vec<..>`, `Box<..>` or `BTreeMap<String, ..>`, resolved
/// against the module declaring the field.
fn message_type(ty: &Type, module: &[String]) -> Result<String, Error> {
    let Type::Path(path) = ty else {
        return Err("message field of an unexpected type".into());
    };
    let last = path.path.segments.last().ok_or("empty type path")?;
    if let PathArguments::AngleBracketed(args) = &last.arguments
        && let Some(GenericArgument::Type(inner)) = args
            .args
            .iter()
            .rev()
            .find(|a| matches!(a, GenericArgument::Type(_)))
    {
        return message_type(inner, module);
    }
    let mut resolved: Vec<String> = module.to_vec();
    let segments: Vec<String> = path
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    let (name, prefix) = segments.split_last().ok_or("empty type path")?;
    let mut prefix = prefix.iter().peekable();
    if prefix.peek().is_some() {
        while prefix.peek().is_some_and(|s| *s == "super") {
            prefix.next();
            resolved.pop();
        }
        resolved.extend(prefix.cloned());
    }
    Ok(message_name(&resolved, name))
}

/// Renames messages (and references to them) to their OpenAPI definition
/// names: prost writes message names in its own camel case
/// (`AwsElasticBlockStoreVolumeSource` for `AWSElasticBlockStoreVolumeSource`).
fn with_openapi_names(
    messages: BTreeMap<String, Vec<ProstField>>,
    definitions: &serde_json::Map<String, Value>,
) -> BTreeMap<String, Vec<ProstField>> {
    let mut by_lowercase: BTreeMap<String, String> = definitions
        .keys()
        .map(|name| (name.to_lowercase(), name.clone()))
        .collect();
    for (name, _) in SPECIAL_MESSAGES {
        by_lowercase.insert(name.to_lowercase(), name.to_string());
    }
    let rename = |name: &str| -> String {
        by_lowercase
            .get(&name.to_lowercase())
            .cloned()
            .unwrap_or_else(|| name.to_string())
    };
    messages
        .into_iter()
        .map(|(name, fields)| {
            let fields = fields
                .into_iter()
                .map(|mut field| {
                    if let Some(inner) = object_name(&field.ty) {
                        field.ty = format!("Object({:?})", rename(inner));
                    }
                    field
                })
                .collect();
            (rename(&name), fields)
        })
        .collect()
}

/// `(apiVersion, kind, definition)` of every kind in the OpenAPI document.
fn served_kinds(definitions: &serde_json::Map<String, Value>) -> Vec<(String, String, String)> {
    let mut kinds = Vec::new();
    for (name, definition) in definitions {
        for gvk in definition["x-kubernetes-group-version-kind"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let group = gvk["group"].as_str().unwrap_or_default();
            let version = gvk["version"].as_str().unwrap_or_default();
            let api_version = if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            };
            let kind = gvk["kind"].as_str().unwrap_or_default().to_string();
            kinds.push((api_version, kind, name.clone()));
        }
    }
    kinds.sort();
    kinds
}

/// One line of the table: a field, or a comment saying why a tag is skipped.
enum Line {
    Field(String),
    Skipped(String),
}

/// Walks the messages reachable from `roots`, matching each prost field to
/// its JSON property. A message is matched against the properties of its
/// own OpenAPI definition or, for a Go struct embedded in its parent (which
/// has no definition: JSON inlines it), against the parent's.
fn plan_messages(
    messages: &BTreeMap<String, Vec<ProstField>>,
    definitions: &serde_json::Map<String, Value>,
    roots: impl IntoIterator<Item = String>,
) -> Result<BTreeMap<String, Vec<Line>>, Error> {
    let mut pending: Vec<(String, String)> = roots.into_iter().map(|r| (r.clone(), r)).collect();
    let mut planned = BTreeMap::new();
    while let Some((name, properties_of)) = pending.pop() {
        if special(&name).is_some() || planned.contains_key(&name) {
            continue;
        }
        let fields = messages
            .get(&name)
            .ok_or_else(|| format!("{K8S_PB} has no message {name}"))?;
        let definition = &definitions[&properties_of];
        let required: BTreeSet<&str> = definition["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let properties: BTreeMap<String, &str> = definition["properties"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(json, _)| (comparable(json), json.as_str()))
            .collect();
        let mut lines = Vec::new();
        for field in fields {
            let target = object_name(&field.ty).filter(|inner| special(inner).is_none());
            let ty = object_name(&field.ty)
                .and_then(special)
                .map_or(field.ty.clone(), str::to_string);
            let (json, cardinality) = match properties.get(&comparable(&field.snake_name)) {
                Some(json) if target.is_none_or(|t| definitions.contains_key(t)) => {
                    if let Some(target) = target {
                        pending.push((target.to_string(), target.to_string()));
                    }
                    (*json, field.cardinality)
                }
                // A Go struct embedded in its parent: JSON inlines its fields,
                // protobuf keeps it a field of its own (`Volume.volumeSource`).
                None if field.cardinality == "Single"
                    && target.is_some_and(|t| shares_a_property(&messages[t], &properties)) =>
                {
                    let target = target.unwrap_or_default();
                    pending.push((target.to_string(), properties_of.clone()));
                    ("", "Inline")
                }
                // Newer than the Kubernetes version Gantry serves: the
                // decoder skips the tag, as an older kube-apiserver would.
                _ => {
                    eprintln!("skipped {name}.{}: not served", field.snake_name);
                    lines.push(Line::Skipped(format!(
                        "tag {}: `{}` is not served",
                        field.tag, field.snake_name
                    )));
                    continue;
                }
            };
            lines.push(Line::Field(format!(
                "field({}, {json:?}, {ty}, {cardinality}, {})",
                field.tag,
                required.contains(json)
            )));
        }
        planned.insert(name, lines);
    }
    Ok(planned)
}

/// Whether a message's fields appear among a parent's JSON properties, as
/// those of a Go struct embedded in the parent do.
fn shares_a_property(fields: &[ProstField], properties: &BTreeMap<String, &str>) -> bool {
    fields
        .iter()
        .any(|f| properties.contains_key(&comparable(&f.snake_name)))
}

/// A property name as both spellings agree on it: prost's snake case and
/// the JSON camel case differ in where acronyms break (`podIPs`, `pod_ips`).
fn comparable(name: &str) -> String {
    name.to_snake_case().replace('_', "")
}

fn special(message: &str) -> Option<&'static str> {
    SPECIAL_MESSAGES
        .iter()
        .find(|(name, _)| *name == message)
        .map(|(_, variant)| *variant)
}

fn object_name(ty: &str) -> Option<&str> {
    ty.strip_prefix("Object(\"")?.strip_suffix("\")")
}

fn render(
    kinds: &[(String, String, String)],
    planned: &BTreeMap<String, Vec<Line>>,
) -> Result<String, Error> {
    let mut out = String::new();
    writeln!(
        out,
        "//! GENERATED from {K8S_PB} and Gantry's OpenAPI document by\n\
         //! `crates/api/examples/gen_protobuf_fields.rs`; do not edit. Regenerate with\n\
         //! `cargo run -p gantry-api --example gen_protobuf_fields -- \\\n\
         //!     ~/.cargo/registry/src/*/k8s-pb-0.9.0 > crates/api/src/protobuf/fields.rs`.\n\n\
         use super::Cardinality::{{Inline, Map, Repeated, Single}};\n\
         use super::FieldType::*;\n\
         use super::{{KindMessage, MessageSchema, field}};\n\n\
         /// The message of each kind a request body may carry, sorted by\n\
         /// `(api_version, kind)`.\n\
         #[rustfmt::skip]\n\
         pub(super) static KINDS: &[KindMessage] = &["
    )?;
    for (api_version, kind, message) in kinds {
        writeln!(
            out,
            "    KindMessage {{ api_version: {api_version:?}, kind: {kind:?}, message: {message:?} }},"
        )?;
    }
    writeln!(
        out,
        "];\n\n/// Every message reachable from [`KINDS`], sorted by name; fields sorted by tag.\n\
         #[rustfmt::skip]\n\
         pub(super) static MESSAGES: &[MessageSchema] = &["
    )?;
    for (name, lines) in planned {
        writeln!(out, "    MessageSchema {{ name: {name:?}, fields: &[")?;
        for line in lines {
            match line {
                Line::Field(field) => writeln!(out, "        {field},")?,
                Line::Skipped(why) => writeln!(out, "        // {why}")?,
            }
        }
        out.push_str("    ] },\n");
    }
    out.push_str("];\n");
    Ok(out)
}
