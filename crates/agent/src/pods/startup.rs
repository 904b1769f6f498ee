//! Where a pod's startup time goes. A worker marks the end of each stage of
//! its pod's first start and, once the status it wrote says Ready, logs the
//! stages in one debug line (target [`TARGET`]). Serialization anywhere in the
//! agent (a shared lock, a queue, a timer) shows up as one stage growing with
//! the number of pods starting at once; the startup benchmark reads these
//! lines to say which stage dominates the slowest pods.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The tracing target of the startup line, for `RUST_LOG`.
pub const TARGET: &str = "gantry_agent::pods::startup";

/// One stage of a pod's start, in the order a worker goes through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Between syncs: the worker waiting for a wake-up or its poll interval.
    Wait,
    /// The network namespace, veth, address and routes.
    Sandbox,
    /// The pod's cgroup under its QoS class.
    Cgroup,
    /// Volumes and the /etc files.
    Volumes,
    /// Listing the pod's containers in the engine.
    Observe,
    /// Finding (or pulling) the image.
    Image,
    /// Environment, mounts and the rest of the container's configuration.
    Config,
    /// The runtime recording the container.
    Create,
    /// The monitor and the container process starting.
    Start,
    /// Recording Events.
    Events,
    /// Writing the pod status.
    Status,
}

impl Stage {
    /// The stage's name in the startup line.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Wait => "wait",
            Stage::Sandbox => "sandbox",
            Stage::Cgroup => "cgroup",
            Stage::Volumes => "volumes",
            Stage::Observe => "observe",
            Stage::Image => "image",
            Stage::Config => "config",
            Stage::Create => "create",
            Stage::Start => "start",
            Stage::Events => "events",
            Stage::Status => "status",
        }
    }
}

/// The stages of one pod's first start, each the sum of its time so far.
pub struct StartupTrace {
    seen: SystemTime,
    last: Instant,
    stages: Vec<(Stage, Duration)>,
    finished: bool,
}

impl Default for StartupTrace {
    fn default() -> Self {
        StartupTrace::new()
    }
}

impl StartupTrace {
    /// Starts timing now, when the worker first sees the pod.
    pub fn new() -> StartupTrace {
        StartupTrace {
            seen: SystemTime::now(),
            last: Instant::now(),
            stages: Vec::new(),
            finished: false,
        }
    }

    /// `stage` just ended: the time since the previous mark is its.
    pub fn mark(&mut self, stage: Stage) {
        self.mark_at(stage, Instant::now());
    }

    /// `stage` ended at `at` (measured where the work ran, e.g. on a blocking thread).
    pub fn mark_at(&mut self, stage: Stage, at: Instant) {
        if self.finished {
            return;
        }
        let took = at.saturating_duration_since(self.last);
        self.last = self.last.max(at);
        match self.stages.iter_mut().find(|(s, _)| *s == stage) {
            Some((_, total)) => *total += took,
            None => self.stages.push((stage, took)),
        }
    }

    /// Whether the startup line has been logged (later marks are ignored).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Logs the startup line for `pod` (namespace/name) once.
    pub fn finish(&mut self, pod: &str) {
        if self.finished {
            return;
        }
        self.finished = true;
        let seen_unix_ms = self
            .seen
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let total: Duration = self.stages.iter().map(|(_, took)| *took).sum();
        tracing::debug!(
            target: TARGET,
            pod,
            seen_unix_ms,
            total_ms = millis(total),
            stages = %self.render(),
            "pod started"
        );
    }

    /// `sandbox:12.3,cgroup:0.4,...` in milliseconds, in the order first marked.
    pub fn render(&self) -> String {
        self.stages
            .iter()
            .map(|(stage, took)| format!("{}:{}", stage.name(), millis(*took)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn millis(took: Duration) -> String {
    format!("{:.1}", took.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_add_up_per_stage_in_first_marked_order() {
        let mut trace = StartupTrace::new();
        trace.mark(Stage::Sandbox);
        trace.mark(Stage::Observe);
        trace.mark(Stage::Image);
        trace.mark(Stage::Observe);
        let rendered = trace.render();
        let names: Vec<&str> = rendered
            .split(',')
            .map(|s| s.split(':').next().unwrap())
            .collect();
        assert_eq!(names, ["sandbox", "observe", "image"]);
    }

    #[test]
    fn a_stage_gets_the_time_since_the_previous_mark() {
        let mut trace = StartupTrace::new();
        trace.mark(Stage::Sandbox);
        let before = Instant::now();
        while before.elapsed() < Duration::from_millis(5) {
            std::hint::spin_loop();
        }
        trace.mark(Stage::Create);
        let create = trace.stages.iter().find(|(s, _)| *s == Stage::Create);
        assert!(create.is_some_and(|(_, took)| *took >= Duration::from_millis(5)));
    }

    #[test]
    fn nothing_is_marked_after_the_line_is_logged() {
        let mut trace = StartupTrace::new();
        trace.mark(Stage::Sandbox);
        trace.finish("default/p");
        trace.mark(Stage::Status);
        assert!(trace.is_finished());
        assert!(!trace.render().contains("status"));
    }
}
