//! The REST verbs of the Kubernetes API over [`Objects`].
//!
//! Paths are parsed by hand rather than by the router: Kubernetes' URL space
//! is ambiguous to a pattern router (`/api/v1/namespaces/x/status` is a
//! namespace's subresource, `/api/v1/namespaces/x/pods` a collection), and a
//! small parser over the registry says exactly which is which.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use gantry_api::patch::{self, PatchType};
use gantry_api::{ApiError, Reason, ResourceInfo, Subresource, registry, table};
use gantry_store::{Event, ListOptions, Revision};
use serde_json::{Value, json};

use crate::objects::{self, DeleteOptions, Objects, Stored, WriteOptions};
use crate::selectors::Selection;

/// What a request addresses.
#[derive(Debug)]
pub struct Target {
    pub resource: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<Subresource>,
    /// The legacy `/watch/` path prefix.
    pub legacy_watch: bool,
}

/// Parses the segments after `/api/v1/` or `/apis/{g}/{v}/`.
pub fn parse_target(group: &str, version: &str, rest: &str) -> Result<Target, ApiError> {
    let mut segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let legacy_watch = segments.first() == Some(&"watch");
    if legacy_watch {
        segments.remove(0);
    }
    let find = |plural: &str| registry::find(group, version, plural);
    let (namespace, segments) = match segments.as_slice() {
        ["namespaces", ns, plural, rest @ ..] if find(plural).is_some_and(|r| r.namespaced) => {
            (Some(ns.to_string()), [&[*plural][..], rest].concat())
        }
        _ => (None, segments),
    };
    let not_found = || {
        ApiError::new(
            Reason::NotFound,
            "the server could not find the requested resource",
        )
    };
    let (resource, name, sub) = match segments.as_slice() {
        [plural] => (find(plural).ok_or_else(not_found)?, None, None),
        [plural, name] => (
            find(plural).ok_or_else(not_found)?,
            Some(name.to_string()),
            None,
        ),
        [plural, name, sub] => {
            let resource = find(plural).ok_or_else(not_found)?;
            let sub = Subresource::from_name(sub)
                .filter(|s| resource.has_subresource(*s))
                .ok_or_else(not_found)?;
            (resource, Some(name.to_string()), Some(sub))
        }
        _ => return Err(not_found()),
    };
    Ok(Target {
        resource,
        namespace,
        name,
        subresource: sub,
        legacy_watch,
    })
}

/// Serves one resource request.
pub async fn handle(
    objects: &Objects,
    method: &Method,
    target: Target,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let format = ResponseFormat::from_headers(headers);
    let dry_run = query.get("dryRun").is_some_and(|v| v == "All");
    let write = WriteOptions { dry_run };
    let resource = target.resource;
    let namespace = target.namespace.as_deref();
    let creates_binding = method == Method::POST && resource.kind == "Binding";
    if !resource.stored && !creates_binding {
        return Err(ApiError::new(
            Reason::MethodNotAllowed,
            "the server does not allow this method on the requested resource",
        ));
    }
    let watching =
        target.legacy_watch || query.get("watch").is_some_and(|w| w == "true" || w == "1");
    match (method.as_str(), target.name.as_deref(), target.subresource) {
        ("GET", None, None) if watching => watch(objects, &target, query, format).await,
        ("GET", None, None) => list(objects, &target, query, format).await,
        ("GET", Some(name), None) if watching => {
            let mut query = query.clone();
            let selector = format!("metadata.name={name}");
            query.insert("fieldSelector".into(), selector);
            watch(objects, &target, &query, format).await
        }
        ("GET", Some(name), None) => {
            let stored = objects.get(resource, namespace, name).await?;
            Ok(format.object(resource, stored.object, StatusCode::OK))
        }
        ("POST", None, None) if resource.kind == "Binding" => {
            bind(objects, namespace, &decode_body(&body)?, write)
                .await
                .map(|s| json_response(StatusCode::CREATED, s))
        }
        ("POST", None, None) => {
            let created = objects
                .create(resource, namespace, decode_body(&body)?, write)
                .await?;
            Ok(format.object(resource, created, StatusCode::CREATED))
        }
        ("POST", Some(name), Some(Subresource::Binding)) => {
            let mut binding = decode_body(&body)?;
            binding["metadata"]["name"] = name.into();
            bind(objects, namespace, &binding, write)
                .await
                .map(|s| json_response(StatusCode::CREATED, s))
        }
        ("PUT", Some(name), sub) => {
            let updated = update(objects, &target, name, sub, decode_body(&body)?, write).await?;
            Ok(format.object(resource, updated, StatusCode::OK))
        }
        ("PATCH", Some(name), sub) => {
            let patch_type = patch_type(headers)?;
            let patched =
                patch_object(objects, &target, name, sub, patch_type, &body, write).await?;
            Ok(format.object(resource, patched, StatusCode::OK))
        }
        ("GET", Some(name), Some(Subresource::Status)) => {
            let stored = objects.get(resource, namespace, name).await?;
            Ok(format.object(resource, stored.object, StatusCode::OK))
        }
        ("GET", Some(name), Some(Subresource::Scale)) => {
            let stored = objects.get(resource, namespace, name).await?;
            Ok(json_response(StatusCode::OK, scale_view(&stored.object)))
        }
        ("DELETE", Some(name), None) => {
            let options = delete_options(query, &body, dry_run)?;
            let deleted = objects.delete(resource, namespace, name, &options).await?;
            let code = if objects::is_terminating(&deleted) && resource.kind != "Pod" {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            Ok(format.object(resource, deleted, code))
        }
        ("DELETE", None, None) => delete_collection(objects, &target, query, &body, dry_run).await,
        _ => Err(ApiError::new(
            Reason::MethodNotAllowed,
            "the server does not allow this method on the requested resource",
        )),
    }
}

async fn list(
    objects: &Objects,
    target: &Target,
    query: &HashMap<String, String>,
    format: ResponseFormat,
) -> Result<Response, ApiError> {
    let resource = target.resource;
    let selection = Selection::from_query(query)?;
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let (mut revision, mut start_after) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (revision, key) = decode_continue(token)?;
            (Some(revision), Some(key))
        }
        None => (None, None),
    };
    let prefix = collection_prefix(target);
    let mut items = Vec::new();
    let mut next_key = None;
    loop {
        let want = limit.map(|l| l - items.len());
        let page = objects
            .list(
                &prefix,
                ListOptions {
                    revision,
                    start_after: start_after.clone(),
                    limit: want.map(|w| w.max(1)),
                },
            )
            .await?;
        revision = Some(page.revision);
        items.extend(page.items.into_iter().filter(|o| selection.matches(o)));
        match page.next_key {
            Some(key) if limit.is_some_and(|l| items.len() < l) => start_after = Some(key),
            Some(key) => {
                next_key = Some(key);
                break;
            }
            None => break,
        }
    }
    let revision = revision.unwrap_or_default();
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(key) = next_key {
        metadata["continue"] = encode_continue(revision, &key).into();
    }
    if format == ResponseFormat::Table {
        let mut table = table::to_table(resource, &items, SystemTime::now());
        table["metadata"] = metadata;
        return Ok(json_response(StatusCode::OK, table));
    }
    Ok(json_response(
        StatusCode::OK,
        list_object(resource, metadata, items),
    ))
}

fn collection_prefix(target: &Target) -> String {
    match &target.namespace {
        Some(ns) => format!("{}{ns}/", target.resource.key_prefix()),
        None => target.resource.key_prefix(),
    }
}

/// Continue tokens pin the revision the first page was read at, so every
/// page comes from one snapshot (and a compacted one answers 410).
fn encode_continue(revision: Revision, key: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"rv": revision, "start": key}).to_string())
}

fn decode_continue(token: &str) -> Result<(Revision, String), ApiError> {
    use base64::Engine as _;
    let invalid = || ApiError::bad_request("continue key is not valid");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| invalid())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let revision = value["rv"].as_u64().ok_or_else(invalid)?;
    let key = value["start"].as_str().ok_or_else(invalid)?.to_string();
    Ok((revision, key))
}

async fn update(
    objects: &Objects,
    target: &Target,
    name: &str,
    sub: Option<Subresource>,
    mut object: Value,
    write: WriteOptions,
) -> Result<Value, ApiError> {
    let resource = target.resource;
    let current = objects
        .get(resource, target.namespace.as_deref(), name)
        .await?;
    if sub == Some(Subresource::Scale) {
        let replicas = object["spec"]["replicas"]
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("spec.replicas is required"))?;
        let mut scaled = current.object.clone();
        scaled["spec"]["replicas"] = replicas.into();
        check_resource_version(resource, name, &object, &current)?;
        let updated = objects.replace(resource, &current, scaled, write).await?;
        return Ok(scale_view(&updated));
    }
    if object["metadata"]["name"]
        .as_str()
        .is_some_and(|n| n != name)
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            object["metadata"]["name"].as_str().unwrap_or_default()
        )));
    }
    check_resource_version(resource, name, &object, &current)?;
    object = merge_server_fields(resource, sub, &current.object, object);
    objects.replace(resource, &current, object, write).await
}

/// Keeps what a client may not change through this endpoint: server-set
/// metadata always; `status` on the main resource and everything but
/// `status` on the status subresource.
fn merge_server_fields(
    resource: &ResourceInfo,
    sub: Option<Subresource>,
    current: &Value,
    mut object: Value,
) -> Value {
    if sub == Some(Subresource::Status) {
        let mut merged = current.clone();
        merged["status"] = object["status"].take();
        return merged;
    }
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match current["metadata"].get(field) {
            Some(value) => object["metadata"][field] = value.clone(),
            None => {
                if let Some(meta) = object["metadata"].as_object_mut() {
                    meta.remove(field);
                }
            }
        }
    }
    object["apiVersion"] = resource.group_version.api_version().into();
    object["kind"] = resource.kind.into();
    if resource.namespaced {
        object["metadata"]["namespace"] = current["metadata"]["namespace"].clone();
    }
    if resource.has_subresource(Subresource::Status) && resource.kind != "Namespace" {
        match current.get("status") {
            Some(status) => object["status"] = status.clone(),
            None => {
                if let Some(map) = object.as_object_mut() {
                    map.remove("status");
                }
            }
        }
    }
    object
}

fn check_resource_version(
    resource: &ResourceInfo,
    name: &str,
    object: &Value,
    current: &Stored,
) -> Result<(), ApiError> {
    match object["metadata"]["resourceVersion"].as_str() {
        Some(rv) if !rv.is_empty() && rv != current.revision.to_string() => Err(
            ApiError::conflict(resource.group_version.group, resource.plural, name),
        ),
        _ => Ok(()),
    }
}

async fn patch_object(
    objects: &Objects,
    target: &Target,
    name: &str,
    sub: Option<Subresource>,
    patch_type: PatchType,
    body: &[u8],
    write: WriteOptions,
) -> Result<Value, ApiError> {
    let resource = target.resource;
    // A patch names no revision, so it is retried against the latest copy
    // when a concurrent writer wins, as kube-apiserver does.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let current = objects
            .get(resource, target.namespace.as_deref(), name)
            .await?;
        let result = if sub == Some(Subresource::Scale) {
            let view = scale_view(&current.object);
            let patched = patch::apply_patch(patch_type, &view, body, scale_resource())?;
            let replicas = patched["spec"]["replicas"]
                .as_i64()
                .ok_or_else(|| ApiError::bad_request("spec.replicas is required"))?;
            let mut scaled = current.object.clone();
            scaled["spec"]["replicas"] = replicas.into();
            objects
                .replace(resource, &current, scaled, write)
                .await
                .map(|o| scale_view(&o))
        } else {
            let patched = patch::apply_patch(patch_type, &current.object, body, resource)?;
            check_resource_version(resource, name, &patched, &current)?;
            let merged = merge_server_fields(resource, sub, &current.object, patched);
            objects.replace(resource, &current, merged, write).await
        };
        match result {
            Err(err)
                if err.reason == Reason::Conflict && attempts < 5 && !patch_pins_version(body) =>
            {
                continue;
            }
            other => return other,
        }
    }
}

fn patch_pins_version(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .is_ok_and(|p| p["metadata"]["resourceVersion"].is_string())
}

/// The `autoscaling/v1` `Scale` view of a workload.
fn scale_view(object: &Value) -> Value {
    let meta = &object["metadata"];
    let selector = object["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": object["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": object["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

/// A resource with no patch metadata, for patching `Scale` views.
fn scale_resource() -> &'static ResourceInfo {
    registry::find("", "v1", "configmaps").expect("configmaps are registered")
}

/// `pods/binding`: assigns an unscheduled pod to a node.
async fn bind(
    objects: &Objects,
    namespace: Option<&str>,
    binding: &Value,
    write: WriteOptions,
) -> Result<Value, ApiError> {
    let pods = registry::find("", "v1", "pods").expect("pods are registered");
    let name = binding["metadata"]["name"].as_str().unwrap_or_default();
    let node = binding["target"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                "",
                "Binding",
                name,
                vec![gantry_api::Cause::required("target.name")],
            )
        })?;
    let current = objects.get(pods, namespace, name).await?;
    if current.object["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty())
    {
        let mut err = ApiError::conflict("", "pods", name);
        err.message = format!(
            "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{}\"",
            current.object["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
        );
        return Err(err);
    }
    if objects::is_terminating(&current.object) {
        return Err(ApiError::conflict("", "pods", name));
    }
    let mut bound = current.object.clone();
    bound["spec"]["nodeName"] = node.into();
    mark_scheduled(&mut bound);
    // Binding is the one sanctioned change of an existing pod's nodeName, so
    // it is written without the pod-update validation that forbids it.
    objects.bind_pod(&current, bound, write).await?;
    Ok(
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    )
}

/// Sets `PodScheduled=True` as upstream's binding storage does, so a pod that was
/// `Unschedulable` stops saying so the moment it is bound.
fn mark_scheduled(pod: &mut Value) {
    let scheduled = json!({
        "type": "PodScheduled",
        "status": "True",
        "lastProbeTime": null,
        "lastTransitionTime": objects::now_rfc3339(),
    });
    let status = &mut pod["status"];
    if !status.is_object() {
        *status = json!({});
    }
    let conditions = &mut status["conditions"];
    match conditions.as_array_mut() {
        Some(list) => match list.iter_mut().find(|c| c["type"] == "PodScheduled") {
            Some(existing) if existing["status"] == "True" => {}
            Some(existing) => *existing = scheduled,
            None => list.push(scheduled),
        },
        None => *conditions = json!([scheduled]),
    }
}

async fn delete_collection(
    objects: &Objects,
    target: &Target,
    query: &HashMap<String, String>,
    body: &[u8],
    dry_run: bool,
) -> Result<Response, ApiError> {
    let resource = target.resource;
    let selection = Selection::from_query(query)?;
    let options = delete_options(query, body, dry_run)?;
    let page = objects
        .list(&collection_prefix(target), ListOptions::default())
        .await?;
    let mut deleted = Vec::new();
    for object in page.items.into_iter().filter(|o| selection.matches(o)) {
        let namespace = objects::object_namespace(&object).map(str::to_string);
        match objects
            .delete(
                resource,
                namespace.as_deref(),
                objects::object_name(&object),
                &options,
            )
            .await
        {
            Ok(object) => deleted.push(object),
            Err(err) if err.reason == Reason::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    let metadata = json!({"resourceVersion": page.revision.to_string()});
    Ok(json_response(
        StatusCode::OK,
        list_object(resource, metadata, deleted),
    ))
}

/// A `FooList` object.
fn list_object(resource: &ResourceInfo, metadata: Value, items: Vec<Value>) -> Value {
    json!({
        "kind": resource.list_kind(),
        "apiVersion": resource.group_version.api_version(),
        "metadata": metadata,
        "items": items,
    })
}

fn delete_options(
    query: &HashMap<String, String>,
    body: &[u8],
    dry_run: bool,
) -> Result<DeleteOptions, ApiError> {
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|err| ApiError::bad_request(format!("invalid DeleteOptions: {err}")))?
    };
    let body_dry_run = body["dryRun"]
        .as_array()
        .is_some_and(|d| d.iter().any(|v| v == "All"));
    Ok(DeleteOptions {
        grace_period_seconds: body["gracePeriodSeconds"]
            .as_i64()
            .or_else(|| query.get("gracePeriodSeconds").and_then(|g| g.parse().ok())),
        propagation_policy: propagation_policy(query, &body)?,
        precondition_uid: body["preconditions"]["uid"].as_str().map(str::to_string),
        precondition_resource_version: body["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string),
        dry_run: dry_run || body_dry_run,
    })
}

/// `propagationPolicy`, or the legacy `orphanDependents` it replaced
/// (`true` is `Orphan`, `false` is `Background`); never both.
fn propagation_policy(
    query: &HashMap<String, String>,
    body: &Value,
) -> Result<Option<String>, ApiError> {
    let policy = body["propagationPolicy"]
        .as_str()
        .map(str::to_string)
        .or_else(|| query.get("propagationPolicy").cloned());
    let orphan = body["orphanDependents"]
        .as_bool()
        .or_else(|| query.get("orphanDependents").map(|o| o == "true"));
    match (policy, orphan) {
        (Some(_), Some(orphan)) => {
            Err(objects::invalid_delete_options(gantry_api::Cause::invalid(
                "orphanDependents",
                orphan,
                "orphanDependents and propagationPolicy cannot both be set",
            )))
        }
        (Some(policy), None) => Ok(Some(policy)),
        (None, Some(true)) => Ok(Some("Orphan".into())),
        (None, Some(false)) => Ok(Some("Background".into())),
        (None, None) => Ok(None),
    }
}

async fn watch(
    objects: &Objects,
    target: &Target,
    query: &HashMap<String, String>,
    format: ResponseFormat,
) -> Result<Response, ApiError> {
    let resource = target.resource;
    let selection = Selection::from_query(query)?;
    let prefix = collection_prefix(target);
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(30 * 60));
    let requested = query
        .get("resourceVersion")
        .filter(|rv| !rv.is_empty() && *rv != "0");
    let (initial, start) = match requested {
        Some(rv) => {
            let rv = rv
                .parse::<Revision>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?;
            (Vec::new(), rv)
        }
        None => {
            let page = objects.list(&prefix, ListOptions::default()).await?;
            let items = page
                .items
                .into_iter()
                .filter(|o| selection.matches(o))
                .collect();
            (items, page.revision)
        }
    };
    let events = match objects.store().watch(&prefix, start).await {
        Ok(events) => events,
        Err(err) => {
            // Kubernetes reports an expired start inside the stream.
            let status = objects::store_error(err).to_status();
            let line = format!("{}\n", json!({"type": "ERROR", "object": status}));
            return Ok(stream_response(
                futures::stream::once(async move { Ok(Bytes::from(line)) }).boxed(),
            ));
        }
    };
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(64);
    let filter = WatchFilter {
        selection,
        format,
        resource,
    };
    tokio::spawn(async move {
        let send = |event_type: &str, object: Value| {
            let object = filter.render(object);
            Bytes::from(format!(
                "{}\n",
                json!({"type": event_type, "object": object})
            ))
        };
        for object in initial {
            if sender.send(send("ADDED", object)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut bookmark = tokio::time::interval(Duration::from_secs(60));
        bookmark.tick().await;
        let mut events = events;
        let mut last_revision = start;
        loop {
            let line = tokio::select! {
                _ = &mut deadline => return,
                _ = sender.closed() => return,
                _ = bookmark.tick(), if bookmarks => {
                    let object = json!({"kind": filter.resource.kind, "apiVersion": filter.resource.group_version.api_version(), "metadata": {"resourceVersion": last_revision.to_string()}});
                    Some(Bytes::from(format!("{}\n", json!({"type": "BOOKMARK", "object": object}))))
                }
                event = events.next() => match event {
                    None => return,
                    Some(Err(err)) => {
                        let status = objects::store_error(err).to_status();
                        let _ = sender.send(Bytes::from(format!("{}\n", json!({"type": "ERROR", "object": status})))).await;
                        return;
                    }
                    Some(Ok(event)) => {
                        last_revision = event.revision();
                        filter.translate(event).map(|(event_type, object)| send(event_type, object))
                    }
                },
            };
            if let Some(line) = line
                && sender.send(line).await.is_err()
            {
                return;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver)
        .map(Ok::<_, std::convert::Infallible>);
    Ok(stream_response(stream.boxed()))
}

struct WatchFilter {
    selection: Selection,
    format: ResponseFormat,
    resource: &'static ResourceInfo,
}

impl WatchFilter {
    fn matches(&self, object: &Value) -> bool {
        self.selection.matches(object)
    }

    /// Turns a store event into a watch event as seen through the
    /// selectors: an object that stops matching is DELETED for this watcher.
    fn translate(&self, event: Event) -> Option<(&'static str, Value)> {
        let decode = |kv: &gantry_store::KeyValue, revision: Revision| -> Option<Value> {
            let mut object: Value = serde_json::from_slice(&kv.value).ok()?;
            objects::set_resource_version(&mut object, revision);
            Some(object)
        };
        match event {
            Event::Put { kv, prev } => {
                let object = decode(&kv, kv.mod_revision)?;
                let was = prev
                    .and_then(|p| decode(&p, kv.mod_revision))
                    .map(|p| self.matches(&p));
                match (was, self.matches(&object)) {
                    (Some(true), true) => Some(("MODIFIED", object)),
                    (Some(true), false) => Some(("DELETED", object)),
                    (_, true) => Some(("ADDED", object)),
                    (_, false) => None,
                }
            }
            Event::Delete { prev, revision } => {
                let object = decode(&prev, revision)?;
                self.matches(&object).then_some(("DELETED", object))
            }
        }
    }

    fn render(&self, object: Value) -> Value {
        match self.format {
            ResponseFormat::Table => table::to_table(self.resource, &[object], SystemTime::now()),
            ResponseFormat::Json => object,
        }
    }
}

fn stream_response(
    stream: futures::stream::BoxStream<'static, Result<Bytes, std::convert::Infallible>>,
) -> Response {
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache, private"),
    );
    response
}

/// Whether the client asked for a server-side table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    Json,
    Table,
}

impl ResponseFormat {
    fn from_headers(headers: &HeaderMap) -> Self {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let wants_table = accept.split(',').any(|media| {
            let media = media.replace(' ', "");
            media.contains("as=Table") && media.contains("g=meta.k8s.io")
        });
        if wants_table {
            ResponseFormat::Table
        } else {
            ResponseFormat::Json
        }
    }

    fn object(self, resource: &ResourceInfo, object: Value, code: StatusCode) -> Response {
        match self {
            ResponseFormat::Table if resource.stored => {
                let mut table =
                    table::to_table(resource, std::slice::from_ref(&object), SystemTime::now());
                table["metadata"] =
                    json!({"resourceVersion": object["metadata"]["resourceVersion"]});
                json_response(code, table)
            }
            _ => json_response(code, object),
        }
    }
}

/// The patch format a PATCH request's content type names.
fn patch_type(headers: &HeaderMap) -> Result<PatchType, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    PatchType::from_content_type(content_type).ok_or_else(|| {
        ApiError::new(Reason::UnsupportedMediaType, format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type:?})"))
    })
}

/// The object a PATCH of `target` would store, without storing it, so admission checks
/// (RBAC escalation) can judge the result rather than the patch.
pub async fn preview_patch(
    objects: &Objects,
    target: &Target,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, ApiError> {
    let name = target.name.as_deref().unwrap_or_default();
    let current = objects
        .get(target.resource, target.namespace.as_deref(), name)
        .await?;
    patch::apply_patch(patch_type(headers)?, &current.object, body, target.resource)
}

/// Parses a JSON request body.
pub fn decode_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|err| {
        ApiError::bad_request(format!(
            "the object provided is unrecognized or malformed: {err}"
        ))
    })
}

/// A JSON response with a status code.
pub fn json_response(code: StatusCode, value: Value) -> Response {
    let mut response = (code, value.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_to_targets() {
        let t = parse_target("", "v1", "namespaces/web/pods/p1/status").expect("pod status");
        assert_eq!(
            (t.resource.plural, t.namespace.as_deref(), t.name.as_deref()),
            ("pods", Some("web"), Some("p1"))
        );
        assert_eq!(t.subresource, Some(Subresource::Status));
        let t = parse_target("", "v1", "namespaces/web").expect("namespace");
        assert_eq!(
            (t.resource.plural, t.name.as_deref(), t.namespace),
            ("namespaces", Some("web"), None)
        );
        let t = parse_target("", "v1", "namespaces/web/finalize").expect("namespace finalize");
        assert_eq!(t.subresource, Some(Subresource::Finalize));
        let t = parse_target("apps", "v1", "watch/namespaces/x/deployments").expect("legacy watch");
        assert!(t.legacy_watch);
        assert_eq!(t.namespace.as_deref(), Some("x"));
        let t = parse_target("", "v1", "pods").expect("all pods");
        assert!(t.namespace.is_none() && t.name.is_none());
        assert!(parse_target("", "v1", "widgets").is_err());
        assert!(parse_target("", "v1", "configmaps/x/scale").is_err());
    }

    #[test]
    fn continue_tokens_round_trip() {
        let token = encode_continue(42, "/registry/pods/default/web");
        assert_eq!(
            decode_continue(&token).expect("valid"),
            (42, "/registry/pods/default/web".to_string())
        );
        assert!(decode_continue("garbage!").is_err());
    }

    #[test]
    fn orphan_dependents_is_the_legacy_spelling_of_the_propagation_policy() {
        let query = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let policy = |q: &[(&str, &str)], body: &str| {
            delete_options(&query(q), body.as_bytes(), false).map(|o| o.propagation_policy)
        };
        assert_eq!(policy(&[], ""), Ok(None));
        assert_eq!(
            policy(&[("propagationPolicy", "Foreground")], ""),
            Ok(Some("Foreground".into()))
        );
        assert_eq!(
            policy(&[], r#"{"propagationPolicy":"Orphan"}"#),
            Ok(Some("Orphan".into()))
        );
        assert_eq!(
            policy(&[("orphanDependents", "true")], ""),
            Ok(Some("Orphan".into()))
        );
        assert_eq!(
            policy(&[], r#"{"orphanDependents":false}"#),
            Ok(Some("Background".into()))
        );
        let both = policy(
            &[],
            r#"{"orphanDependents":true,"propagationPolicy":"Orphan"}"#,
        );
        assert_eq!(both.map_err(|e| e.reason), Err(Reason::Invalid));
    }

    #[test]
    fn table_is_negotiated_from_accept() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
                .parse()
                .expect("header"),
        );
        assert_eq!(
            ResponseFormat::from_headers(&headers),
            ResponseFormat::Table
        );
        headers.insert(header::ACCEPT, "application/json".parse().expect("header"));
        assert_eq!(ResponseFormat::from_headers(&headers), ResponseFormat::Json);
    }

    #[test]
    fn binding_marks_a_pod_scheduled_and_replaces_unschedulable() {
        let mut pending = json!({"status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes"},
            {"type": "Other", "status": "True"}
        ]}});
        mark_scheduled(&mut pending);
        let conditions = pending["status"]["conditions"]
            .as_array()
            .expect("conditions");
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[0]["type"], "PodScheduled");
        assert_eq!(conditions[0]["status"], "True");
        assert!(conditions[0].get("reason").is_none());
        assert_eq!(conditions[1]["type"], "Other");

        let mut fresh = json!({"spec": {}});
        mark_scheduled(&mut fresh);
        assert_eq!(fresh["status"]["conditions"][0]["status"], "True");
    }
}
