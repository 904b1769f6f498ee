//! `GET /containerLogs/{namespace}/{pod}/{container}`: a container's output from the
//! engine's json-file log, with the kubelet's options (follow, tailLines, timestamps,
//! previous, sinceSeconds/sinceTime, limitBytes).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use gantry_runtime::{LogEntry, Runtime, Status};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::pods::naming::ContainerName;

/// How often a followed log is checked for new records. The shim appends records as
/// the container writes them; a quarter second keeps `-f` interactive.
const FOLLOW_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How many chunks may wait for a slow reader before the producer pauses.
const CHUNKS_IN_FLIGHT: usize = 16;

/// `PodLogOptions` as the kubelet reads them from the query string.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogOptions {
    /// Keep streaming new output until the container exits.
    #[serde(default)]
    pub follow: bool,
    /// Only the last N records of what was already written.
    pub tail_lines: Option<u64>,
    /// Prefix every record with its RFC3339Nano time.
    #[serde(default)]
    pub timestamps: bool,
    /// The previous attempt's output (the container before its last restart).
    #[serde(default)]
    pub previous: bool,
    /// Only records newer than this many seconds.
    pub since_seconds: Option<u64>,
    /// Only records at or after this time.
    pub since_time: Option<jiff::Timestamp>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

/// What the log endpoint shares across requests.
#[derive(Clone)]
pub struct LogService {
    /// The engine the pods' containers run on.
    pub runtime: Runtime,
    /// Owns the follow streams so the agent waits for them on shutdown.
    pub tasks: TaskTracker,
    /// Ends every stream when the agent stops.
    pub shutdown: CancellationToken,
}

/// Why no log could be served, worded as the kubelet words it.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// No attempt of that container exists on this node.
    #[error("container {container:?} in pod {pod:?} is not available")]
    NotAvailable { container: String, pod: String },
    /// `previous=true` but the container has not restarted (or that attempt is gone).
    #[error("previous terminated container {container:?} in pod {pod:?} not found")]
    PreviousNotFound { container: String, pod: String },
    /// The engine failed to read its state or the log.
    #[error("reading the container log: {0}")]
    Runtime(#[from] gantry_runtime::Error),
}

impl IntoResponse for LogsError {
    fn into_response(self) -> Response {
        let code = match self {
            LogsError::NotAvailable { .. } | LogsError::PreviousNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            LogsError::Runtime(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (code, self.to_string()).into_response()
    }
}

/// The handler: finds the attempt, then streams its log as plain text.
pub async fn container_logs(
    State(service): State<LogService>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(options): Query<LogOptions>,
) -> Result<Response, LogsError> {
    let runtime = service.runtime.clone();
    let previous = options.previous;
    let id = run_blocking(move || find_attempt(&runtime, &namespace, &pod, &container, previous))
        .await?;
    let (sender, mut receiver) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let shutdown = service.shutdown.clone();
    service
        .tasks
        .spawn(stream_log(service.runtime, id, options, sender, shutdown));
    let chunks = futures::stream::poll_fn(move |cx| {
        receiver
            .poll_recv(cx)
            .map(|chunk| chunk.map(Ok::<_, Infallible>))
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// The engine ID of the attempt to read: the newest pod instance's latest attempt of
/// `container`, or the one before it for `previous`.
fn find_attempt(
    runtime: &Runtime,
    namespace: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<String, LogsError> {
    // Newest first, so the first match belongs to the current pod instance (UID).
    let attempts: Vec<(ContainerName, String)> = runtime
        .list()?
        .into_iter()
        .filter_map(|c| ContainerName::parse(&c.config.name).map(|name| (name, c.config.id)))
        .filter(|(name, _)| {
            name.namespace == namespace && name.pod == pod && name.container == container
        })
        .collect();
    let not_available = || LogsError::NotAvailable {
        container: container.to_owned(),
        pod: pod.to_owned(),
    };
    let uid = attempts.first().ok_or_else(not_available)?.0.uid.clone();
    let of_this_pod = || attempts.iter().filter(|(name, _)| name.uid == uid);
    let current = of_this_pod()
        .map(|(name, _)| name.attempt)
        .max()
        .ok_or_else(not_available)?;
    let wanted = if previous {
        current.checked_sub(1).ok_or(LogsError::PreviousNotFound {
            container: container.to_owned(),
            pod: pod.to_owned(),
        })?
    } else {
        current
    };
    of_this_pod()
        .find(|(name, _)| name.attempt == wanted)
        .map(|(_, id)| id.clone())
        .ok_or_else(|| LogsError::PreviousNotFound {
            container: container.to_owned(),
            pod: pod.to_owned(),
        })
}

/// Sends what is already logged (filtered), then, when following, new records until
/// the container exits, the reader goes away or the agent stops.
async fn stream_log(
    runtime: Runtime,
    id: String,
    options: LogOptions,
    sender: mpsc::Sender<Bytes>,
    shutdown: CancellationToken,
) {
    let mut formatter = Formatter::new(&options, jiff::Timestamp::now());
    let mut offset = 0;
    let mut first_read = true;
    loop {
        // Checked before reading, so nothing written before the exit is missed.
        let running = {
            let (runtime, id) = (runtime.clone(), id.clone());
            run_blocking(move || Ok::<_, LogsError>(runtime.get(&id)?.state.status))
                .await
                .is_ok_and(|status| status == Status::Running)
        };
        let read = {
            let (runtime, id) = (runtime.clone(), id.clone());
            run_blocking(move || Ok::<_, LogsError>(runtime.logs(&id, offset)?)).await
        };
        let Ok((mut entries, next)) = read else {
            return;
        };
        offset = next;
        if first_read {
            entries = formatter.select_initial(entries);
            first_read = false;
        }
        let chunk = formatter.format(&entries);
        if !chunk.is_empty() && sender.send(Bytes::from(chunk)).await.is_err() {
            return;
        }
        if !options.follow || !running || formatter.exhausted() {
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = sender.closed() => return,
            () = tokio::time::sleep(FOLLOW_POLL_INTERVAL) => {}
        }
    }
}

/// Applies the options to records: the time window and tail to what was already
/// written, then timestamps and the byte limit to everything sent.
struct Formatter {
    since: Option<jiff::Timestamp>,
    tail_lines: Option<u64>,
    timestamps: bool,
    bytes_left: Option<u64>,
}

impl Formatter {
    fn new(options: &LogOptions, now: jiff::Timestamp) -> Formatter {
        let since_seconds = options.since_seconds.and_then(|seconds| {
            let seconds = i64::try_from(seconds).ok()?;
            now.checked_sub(jiff::SignedDuration::from_secs(seconds))
                .ok()
        });
        Formatter {
            since: since_seconds.or(options.since_time),
            tail_lines: options.tail_lines,
            timestamps: options.timestamps,
            bytes_left: options.limit_bytes,
        }
    }

    /// The records of the first read that the time window and the tail keep.
    fn select_initial(&self, entries: Vec<LogEntry>) -> Vec<LogEntry> {
        let mut kept: Vec<LogEntry> = entries
            .into_iter()
            .filter(|entry| self.since.is_none_or(|since| entry.time >= since))
            .collect();
        if let Some(tail) = self.tail_lines {
            let tail = usize::try_from(tail).unwrap_or(usize::MAX);
            let skip = kept.len().saturating_sub(tail);
            kept.drain(..skip);
        }
        kept
    }

    /// The bytes to send for `entries`, cut at the byte limit.
    fn format(&mut self, entries: &[LogEntry]) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in entries {
            if self.timestamps {
                out.extend_from_slice(format!("{} ", rfc3339_nano(entry.time)).as_bytes());
            }
            out.extend_from_slice(entry.text.as_bytes());
        }
        if let Some(left) = self.bytes_left.as_mut() {
            let keep = usize::try_from(*left).unwrap_or(usize::MAX).min(out.len());
            out.truncate(keep);
            *left -= keep as u64;
        }
        out
    }

    /// Whether the byte limit has been reached.
    fn exhausted(&self) -> bool {
        self.bytes_left == Some(0)
    }
}

/// Go's RFC3339Nano: UTC, fractional seconds with trailing zeros dropped.
fn rfc3339_nano(time: jiff::Timestamp) -> String {
    time.to_string()
}

/// Runs engine work (file reads, directory scans) off the async runtime.
async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, LogsError> + Send + 'static,
) -> Result<T, LogsError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(LogsError::Runtime(gantry_runtime::Error::Spec(format!(
            "log task failed: {e}"
        ))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(second: i64, text: &str) -> LogEntry {
        LogEntry {
            stream: "stdout".into(),
            time: jiff::Timestamp::from_second(second).unwrap(),
            text: text.into(),
        }
    }

    fn options(query: &str) -> LogOptions {
        serde_urlencoded::from_str(query).unwrap()
    }

    #[test]
    fn tail_and_since_select_from_what_was_written() {
        let entries = vec![entry(100, "a\n"), entry(200, "b\n"), entry(300, "c\n")];
        let now = jiff::Timestamp::from_second(310).unwrap();
        let tail = Formatter::new(&options("tailLines=2"), now);
        let texts = |kept: Vec<LogEntry>| kept.into_iter().map(|e| e.text).collect::<String>();
        assert_eq!(texts(tail.select_initial(entries.clone())), "b\nc\n");
        let since = Formatter::new(&options("sinceSeconds=150"), now);
        assert_eq!(texts(since.select_initial(entries.clone())), "b\nc\n");
        let none = Formatter::new(&options("tailLines=0"), now);
        assert_eq!(texts(none.select_initial(entries)), "");
    }

    #[test]
    fn timestamps_prefix_and_limit_bytes_cuts() {
        let now = jiff::Timestamp::from_second(0).unwrap();
        let mut stamped = Formatter::new(&options("timestamps=true"), now);
        let mut e = entry(1_700_000_000, "hi\n");
        e.time = e
            .time
            .checked_add(jiff::SignedDuration::from_millis(120))
            .unwrap();
        assert_eq!(
            String::from_utf8(stamped.format(&[e])).unwrap(),
            "2023-11-14T22:13:20.12Z hi\n"
        );
        let mut limited = Formatter::new(&options("limitBytes=5&follow=true"), now);
        assert_eq!(limited.format(&[entry(1, "abc\n")]), b"abc\n");
        assert!(!limited.exhausted());
        assert_eq!(limited.format(&[entry(2, "def\n")]), b"d");
        assert!(limited.exhausted());
    }
}
