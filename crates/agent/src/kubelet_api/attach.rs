//! `/attach/{namespace}/{pod}/{container}`: `kubectl attach` to a running container,
//! over the same WebSocket channel protocols as exec ([`super::exec`]).
//!
//! The container's monitor owns its output and writes it to the log, so attaching
//! follows the log from its current end (as `logs -f` would, without the history);
//! stdin reaches the process through the monitor's attach socket when the container
//! was created with stdin open.

use std::collections::VecDeque;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use futures::Stream;
use gantry_runtime::{LogEntry, Runtime, Status};
use tokio::io::AsyncWrite;

use super::exec::{
    Channel, Outcome, SessionIo, StreamError, StreamRequest, StreamService, first_channel,
    negotiate, run_session, running_container,
};

/// How often the followed log is checked for new output; a tenth of a second keeps an
/// interactive attach responsive.
const FOLLOW_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The handler: checks the container and the upgrade, then runs the session.
pub async fn attach(
    State(service): State<StreamService>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, StreamError> {
    let request = StreamRequest::from_query(query.as_deref().unwrap_or_default())?;
    let target = running_container(&service.runtime, &namespace, &pod, &container).await?;
    if request.stdin && !target.config.open_stdin {
        return Err(StreamError::StdinNotOpen { container, pod });
    }
    let upgrade = negotiate(upgrade)?;
    let tasks = service.tasks.clone();
    let tty = target.config.tty;
    Ok(upgrade.on_upgrade(move |socket| {
        tasks.track_future(attach_session(
            service,
            target.config.id,
            tty,
            request,
            socket,
        ))
    }))
}

async fn attach_session(
    service: StreamService,
    id: String,
    tty: bool,
    request: StreamRequest,
    socket: WebSocket,
) {
    let first = first_channel(&request);
    let stdin = if request.stdin {
        match connect_stdin(&service.runtime, &id).await {
            Ok(stdin) => Some(stdin),
            Err(error) => {
                let failed = Outcome::Failed(format!("attaching to stdin: {error}"));
                let io = SessionIo {
                    stdin: None,
                    resize: None,
                    output: futures::stream::empty(),
                    outcome: std::future::ready(failed),
                };
                run_session(socket, first, Vec::new(), io, service.shutdown).await;
                return;
            }
        }
    } else {
        None
    };
    let output = follow_output(service.runtime.clone(), id, tty, request.clone()).await;
    let io = SessionIo {
        stdin,
        resize: None,
        output: Box::pin(output),
        outcome: std::future::ready(Outcome::Finished),
    };
    run_session(socket, first, Vec::new(), io, service.shutdown).await;
}

/// The container's stdin through its monitor's attach socket.
async fn connect_stdin(
    runtime: &Runtime,
    id: &str,
) -> Result<Box<dyn AsyncWrite + Send + Unpin>, gantry_runtime::Error> {
    let (runtime, id) = (runtime.clone(), id.to_owned());
    let stream = tokio::task::spawn_blocking(move || {
        let stream = runtime.attach_stdin(&id)?;
        stream
            .set_nonblocking(true)
            .map_err(|e| gantry_runtime::Error::Spec(format!("attach socket: {e}")))?;
        Ok::<_, gantry_runtime::Error>(stream)
    })
    .await
    .map_err(|e| gantry_runtime::Error::Spec(format!("attach task failed: {e}")))??;
    let stream = tokio::net::UnixStream::from_std(stream)
        .map_err(|e| gantry_runtime::Error::Spec(format!("attach socket: {e}")))?;
    Ok(Box::new(stream))
}

/// Where following the log stands.
struct Follower {
    runtime: Runtime,
    id: String,
    offset: u64,
    pending: VecDeque<(Channel, Bytes)>,
    exited: bool,
    route: Route,
}

/// Which channel each of the container's streams goes to, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Route {
    stdout: Option<Channel>,
    stderr: Option<Channel>,
}

impl Route {
    /// A terminal has one stream, stdout; otherwise each goes where it was asked for.
    fn new(tty: bool, request: &StreamRequest) -> Route {
        let stdout = request.stdout.then_some(Channel::Stdout);
        let stderr = if tty {
            stdout
        } else {
            request.stderr.then_some(Channel::Stderr)
        };
        Route { stdout, stderr }
    }

    /// The messages for `entries`, in order.
    fn messages(self, entries: Vec<LogEntry>) -> impl Iterator<Item = (Channel, Bytes)> {
        entries.into_iter().filter_map(move |entry| {
            let channel = if entry.stream == "stderr" {
                self.stderr
            } else {
                self.stdout
            }?;
            Some((channel, Bytes::from(entry.text)))
        })
    }
}

/// The container's output from now on, until it stops running.
async fn follow_output(
    runtime: Runtime,
    id: String,
    tty: bool,
    request: StreamRequest,
) -> impl Stream<Item = (Channel, Bytes)> {
    // Start at the end: attach shows what is written from now on.
    let offset = read_log(&runtime, &id, 0).await.map_or(0, |(_, end)| end);
    let follower = Follower {
        runtime,
        id,
        offset,
        pending: VecDeque::new(),
        exited: false,
        route: Route::new(tty, &request),
    };
    futures::stream::unfold(follower, |mut follower| async move {
        loop {
            if let Some(message) = follower.pending.pop_front() {
                return Some((message, follower));
            }
            if follower.exited {
                return None;
            }
            // Checked before reading, so nothing written before the exit is missed.
            let running = is_running(&follower.runtime, &follower.id).await;
            let Ok((entries, next)) =
                read_log(&follower.runtime, &follower.id, follower.offset).await
            else {
                return None;
            };
            follower.offset = next;
            follower.pending.extend(follower.route.messages(entries));
            follower.exited = !running;
            if follower.pending.is_empty() && running {
                tokio::time::sleep(FOLLOW_POLL_INTERVAL).await;
            }
        }
    })
}

async fn is_running(runtime: &Runtime, id: &str) -> bool {
    let (runtime, id) = (runtime.clone(), id.to_owned());
    tokio::task::spawn_blocking(move || runtime.get(&id))
        .await
        .is_ok_and(|found| found.is_ok_and(|c| c.state.status == Status::Running))
}

async fn read_log(
    runtime: &Runtime,
    id: &str,
    offset: u64,
) -> Result<(Vec<LogEntry>, u64), gantry_runtime::Error> {
    let (runtime, id) = (runtime.clone(), id.to_owned());
    tokio::task::spawn_blocking(move || runtime.logs(&id, offset))
        .await
        .map_err(|e| gantry_runtime::Error::Spec(format!("log task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(stream: &str, text: &str) -> LogEntry {
        LogEntry {
            stream: stream.into(),
            time: jiff::Timestamp::from_second(0).unwrap(),
            text: text.into(),
        }
    }

    #[test]
    fn output_goes_to_the_channels_asked_for() {
        let entries = || vec![entry("stdout", "out\n"), entry("stderr", "err\n")];
        let both = StreamRequest {
            stdout: true,
            stderr: true,
            ..StreamRequest::default()
        };
        let routed: Vec<_> = Route::new(false, &both).messages(entries()).collect();
        assert_eq!(
            routed,
            [
                (Channel::Stdout, Bytes::from("out\n")),
                (Channel::Stderr, Bytes::from("err\n"))
            ]
        );
        let stdout_only = StreamRequest {
            stdout: true,
            ..StreamRequest::default()
        };
        let routed: Vec<_> = Route::new(false, &stdout_only)
            .messages(entries())
            .collect();
        assert_eq!(routed, [(Channel::Stdout, Bytes::from("out\n"))]);
        let routed: Vec<_> = Route::new(true, &stdout_only).messages(entries()).collect();
        assert_eq!(routed.len(), 2, "a terminal's output is all stdout");
    }
}
