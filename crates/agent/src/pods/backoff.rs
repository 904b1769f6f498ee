//! The kubelet's crash-loop back-off: after a container exits, its next restart
//! waits 10 s, then 20 s, 40 s… up to 5 minutes; a container that ran for more
//! than 10 minutes since the last back-off starts the sequence over.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// The first delay.
pub const INITIAL: Duration = Duration::from_secs(10);
/// The longest delay.
pub const MAX: Duration = Duration::from_secs(300);

/// Back-off state of one container (or one image pull), as `flowcontrol.Backoff`
/// keeps it per key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backoff {
    /// The current delay and the event time it was last raised at.
    entry: Option<(Duration, Timestamp)>,
}

impl Backoff {
    /// If an event at `event` (a container's exit) still falls in the back-off
    /// window at `now`, when the window ends.
    pub fn blocked_until(&self, event: Timestamp, now: Timestamp) -> Option<Timestamp> {
        let (delay, last) = self.entry?;
        if expired(event, last) {
            return None;
        }
        let until = event
            .checked_add(SignedDuration::try_from(delay).ok()?)
            .ok()?;
        (now < until).then_some(until)
    }

    /// Records a restart for the event at `event`: the first delay, or double the last.
    pub fn next(&mut self, event: Timestamp) {
        let delay = match self.entry {
            Some((delay, last)) if !expired(event, last) => (delay * 2).min(MAX),
            _ => INITIAL,
        };
        self.entry = Some((delay, event));
    }

    /// The delay in force, for the CrashLoopBackOff message.
    pub fn delay(&self) -> Duration {
        self.entry.map_or(INITIAL, |(delay, _)| delay)
    }
}

/// Ten quiet minutes (twice the maximum delay) forget the history, as upstream.
fn expired(event: Timestamp, last: Timestamp) -> bool {
    event.duration_since(last) > SignedDuration::try_from(MAX * 2).unwrap_or(SignedDuration::MAX)
}

/// Go's `time.Duration` formatting for whole seconds: `10s`, `1m20s`, `5m0s`.
pub fn go_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match (seconds / 60, seconds % 60) {
        (0, s) => format!("{s}s"),
        (m, s) => format!("{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    #[test]
    fn first_exit_restarts_at_once_then_delays_double_up_to_five_minutes() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.blocked_until(at(0), at(0)), None);
        backoff.next(at(0));
        assert_eq!(backoff.delay(), INITIAL);
        // The restarted container crashes 1 s later: wait until 10 s after that exit.
        assert_eq!(backoff.blocked_until(at(1), at(2)), Some(at(11)));
        assert_eq!(backoff.blocked_until(at(1), at(11)), None);
        backoff.next(at(1));
        assert_eq!(backoff.delay(), Duration::from_secs(20));
        let mut event = 1;
        for _ in 0..10 {
            event += 1;
            backoff.next(at(event));
        }
        assert_eq!(backoff.delay(), MAX);
    }

    #[test]
    fn ten_quiet_minutes_reset_the_delay() {
        let mut backoff = Backoff::default();
        backoff.next(at(0));
        backoff.next(at(5));
        assert_eq!(backoff.delay(), Duration::from_secs(20));
        let much_later = at(5 + 601);
        assert_eq!(backoff.blocked_until(much_later, much_later), None);
        backoff.next(much_later);
        assert_eq!(backoff.delay(), INITIAL);
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(80)), "1m20s");
        assert_eq!(go_duration(MAX), "5m0s");
    }
}
