//! The namespace controller: deleting a namespace deletes everything in it,
//! then the namespace itself.
//!
//! It runs inside the server and acts only through [`Objects`], the same
//! code path API requests take, so every deletion is seen by watchers and
//! finalizers are honoured.

use std::time::Duration;

use futures::StreamExt;
use gantry_api::{ApiError, Reason, registry};
use gantry_store::ListOptions;
use tokio::sync::watch;

use crate::objects::{self, DeleteOptions, Objects};

/// How often terminating namespaces are re-examined while content with
/// finalizers is still going away.
const RESYNC: Duration = Duration::from_secs(2);

/// Runs until `shutdown` flips to true.
pub async fn run(objects: Objects, mut shutdown: watch::Receiver<bool>) {
    let prefix = objects::namespaces().key_prefix();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let start = match objects.store().current_revision().await {
            Ok(revision) => revision,
            Err(err) => {
                tracing::warn!(%err, "namespace controller cannot read the store");
                0
            }
        };
        sweep(&objects).await;
        let mut events = match objects.store().watch(&prefix, start).await {
            Ok(events) => events,
            Err(err) => {
                tracing::warn!(%err, "namespace controller cannot watch namespaces");
                futures::stream::empty().boxed()
            }
        };
        let mut resync = tokio::time::interval(RESYNC);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = resync.tick() => sweep(&objects).await,
                event = events.next() => match event {
                    Some(Ok(_)) => sweep(&objects).await,
                    // The watch ended or fell behind: start over from a fresh read.
                    Some(Err(_)) | None => break,
                },
            }
        }
    }
}

/// Advances every terminating namespace one step.
async fn sweep(objects: &Objects) {
    let namespaces = match objects
        .list(&objects::namespaces().key_prefix(), ListOptions::default())
        .await
    {
        Ok(page) => page.items,
        Err(err) => {
            tracing::warn!(%err, "namespace controller cannot list namespaces");
            return;
        }
    };
    for namespace in namespaces.iter().filter(|ns| objects::is_terminating(ns)) {
        let name = objects::object_name(namespace);
        if let Err(err) = drain(objects, name).await {
            tracing::warn!(namespace = name, %err, "namespace deletion did not finish yet");
        }
    }
}

/// Deletes the namespace's content; when none is left, the namespace.
async fn drain(objects: &Objects, namespace: &str) -> Result<(), ApiError> {
    let mut remaining = 0usize;
    for resource in registry::RESOURCES
        .iter()
        .filter(|r| r.namespaced && r.stored)
    {
        let prefix = format!("{}{namespace}/", resource.key_prefix());
        let page = objects.list(&prefix, ListOptions::default()).await?;
        for object in page.items {
            if objects::is_terminating(&object) {
                remaining += 1;
                continue;
            }
            let options = DeleteOptions {
                grace_period_seconds: Some(0),
                ..DeleteOptions::default()
            };
            match objects
                .delete(
                    resource,
                    Some(namespace),
                    objects::object_name(&object),
                    &options,
                )
                .await
            {
                // Held by finalizers: it goes when they are removed.
                Ok(left) if objects::is_terminating(&left) => remaining += 1,
                Ok(_) => {}
                Err(err) if err.reason == Reason::NotFound => {}
                Err(err) if err.reason == Reason::Conflict => remaining += 1,
                Err(err) => return Err(err),
            }
        }
    }
    if remaining > 0 {
        // Re-examined on the next event or resync, once deletions land.
        return Ok(());
    }
    let current = objects.get(objects::namespaces(), None, namespace).await?;
    objects.finalize_namespace(&current).await?;
    tracing::info!(namespace, "namespace deleted");
    Ok(())
}
