//! CronJob schedules: the standard five-field cron syntax and the `@hourly`
//! style macros, evaluated in a time zone.
//!
//! Validation (does `spec.schedule` parse?) and the CronJob controller (when
//! is the next run?) must agree on what a schedule means, so both go through
//! [`CronSchedule`]. Parsing and evaluation are `croner`'s; this module fixes
//! its options to what Kubernetes accepts (no seconds or year fields, no
//! `TZ=` prefix) and resolves `spec.timeZone` with `jiff`.

use std::str::FromStr;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// Why a schedule or time zone was rejected; the messages are what
/// validation reports to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronScheduleError {
    /// Time zones belong in `spec.timeZone`, as kube-apiserver insists.
    #[error("cannot use TZ or CRON_TZ in schedule, use timeZone field instead")]
    TimeZoneInSchedule,
    /// The expression is not valid cron syntax.
    #[error("{0}")]
    Syntax(String),
    /// `spec.timeZone` names no zone in the time zone database.
    #[error("unknown time zone {0}")]
    UnknownTimeZone(String),
}

/// A parsed `spec.schedule`.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
}

impl FromStr for CronSchedule {
    type Err = CronScheduleError;

    fn from_str(schedule: &str) -> Result<Self, Self::Err> {
        let trimmed = schedule.trim();
        if trimmed.starts_with("TZ=") || trimmed.starts_with("CRON_TZ=") {
            return Err(CronScheduleError::TimeZoneInSchedule);
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(trimmed)
            .map_err(|err| CronScheduleError::Syntax(err.to_string()))?;
        Ok(Self { cron })
    }
}

impl CronSchedule {
    /// The first scheduled time strictly after `after`, in `zone`; `None`
    /// if the schedule never fires again (e.g. `0 0 30 2 *`).
    pub fn next_after(&self, after: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        let start = Zoned::new(after, zone.clone());
        self.cron
            .find_next_occurrence(&start, false)
            .ok()
            .map(|next| next.timestamp())
    }
}

/// Resolves `spec.timeZone`: UTC when unset, like the CronJob controller.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, CronScheduleError> {
    match name {
        None => Ok(TimeZone::UTC),
        Some(name) => {
            TimeZone::get(name).map_err(|_| CronScheduleError::UnknownTimeZone(name.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("valid timestamp")
    }

    #[test]
    fn standard_fields_and_macros_parse() {
        for schedule in [
            "* * * * *",
            "*/5 1-3 * * MON-FRI",
            "0 0 1 1 *",
            "@hourly",
            "@daily",
        ] {
            schedule
                .parse::<CronSchedule>()
                .unwrap_or_else(|err| panic!("{schedule}: {err}"));
        }
    }

    #[test]
    fn seconds_time_zones_and_garbage_are_rejected() {
        assert!("0 * * * * *".parse::<CronSchedule>().is_err());
        assert!("every minute".parse::<CronSchedule>().is_err());
        assert!("61 * * * *".parse::<CronSchedule>().is_err());
        assert_eq!(
            "TZ=UTC * * * * *".parse::<CronSchedule>().unwrap_err(),
            CronScheduleError::TimeZoneInSchedule
        );
    }

    #[test]
    fn next_run_honours_the_time_zone() {
        let daily = "0 9 * * *".parse::<CronSchedule>().expect("valid");
        let start = at("2026-01-01T00:00:00Z");
        assert_eq!(
            daily.next_after(start, &TimeZone::UTC),
            Some(at("2026-01-01T09:00:00Z"))
        );
        let tokyo = time_zone(Some("Asia/Tokyo")).expect("zone exists");
        assert_eq!(
            daily.next_after(start, &tokyo),
            Some(
                at("2026-01-01T00:00:00Z")
                    .checked_add(jiff::SignedDuration::from_hours(24))
                    .expect("in range")
            )
        );
        let every_minute = "* * * * *".parse::<CronSchedule>().expect("valid");
        assert_eq!(
            every_minute.next_after(at("2026-01-01T00:00:30Z"), &TimeZone::UTC),
            Some(at("2026-01-01T00:01:00Z"))
        );
        assert!(time_zone(Some("Mars/Olympus")).is_err());
    }
}
