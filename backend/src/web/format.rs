//! Values as people read them: byte sizes, percentages, dates, durations,
//! and the server-side sparklines. Pure functions; `now` is passed in.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use crate::db::Millis;

/// What a page shows for a value it does not have.
pub const MISSING: &str = "—";

fn datetime(ms: Millis) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

/// RFC 3339 in UTC (`2025-11-24T03:12:45.123Z`), or None for a time out of range.
pub fn rfc3339(ms: Millis) -> Option<String> {
    datetime(ms)?.format(&Rfc3339).ok()
}

/// `2025-11-24 03:12:45 UTC`.
pub fn utc(ms: Millis) -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    datetime(ms)
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| MISSING.to_owned())
}

/// How long before `now` the time `ms` was: `just now`, `5 min ago`, ...
pub fn age(ms: Millis, now: Millis) -> String {
    let secs = now.saturating_sub(ms) / 1000;
    match secs {
        ..0 => "in the future".to_owned(),
        0..10 => "just now".to_owned(),
        10..60 => format!("{secs} s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86_400 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

/// Sizes in binary units: `512 B`, `1.5 KiB`, `15.6 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `42.0 %`.
pub fn percent(p: f64) -> String {
    format!("{p:.1} %")
}

/// `used` as a percentage of `total`; None when the total is zero.
pub fn used_percent(used: u64, total: u64) -> Option<f64> {
    (total > 0).then(|| used as f64 * 100.0 / total as f64)
}

/// `3 d 4 h 12 min`, or `12 min` under an hour.
pub fn duration(secs: u64) -> String {
    let (days, hours, minutes) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (days, hours) {
        (0, 0) => format!("{minutes} min"),
        (0, _) => format!("{hours} h {minutes} min"),
        _ => format!("{days} d {hours} h {minutes} min"),
    }
}

/// Width and height of the sparkline's SVG coordinate system.
pub const SPARK_WIDTH: f64 = 300.0;
pub const SPARK_HEIGHT: f64 = 40.0;
/// A longer silence than this between samples breaks the line, so that a
/// host that was down does not look like it held a steady value.
const SPARK_GAP_MS: Millis = 5 * 60 * 1000;

/// The `points` of the SVG polylines drawing `samples` (time, percentage),
/// time from `from` to `to` left to right and 0..=100 % bottom to top. One
/// polyline per run of samples without a long gap; empty without samples.
pub fn sparkline(samples: &[(Millis, f64)], from: Millis, to: Millis) -> Vec<String> {
    sparkline_with_gap(samples, from, to, SPARK_GAP_MS)
}

/// [`sparkline`] where a silence longer than `gap` breaks the line (charts
/// of rollups have one point per bucket).
pub fn sparkline_with_gap(
    samples: &[(Millis, f64)],
    from: Millis,
    to: Millis,
    gap: Millis,
) -> Vec<String> {
    let span = (to - from).max(1) as f64;
    let mut lines: Vec<String> = Vec::new();
    let mut previous: Option<Millis> = None;
    for &(at, value) in samples {
        if !value.is_finite() {
            continue;
        }
        let x = ((at - from) as f64 / span * SPARK_WIDTH).clamp(0.0, SPARK_WIDTH);
        let y = SPARK_HEIGHT - value.clamp(0.0, 100.0) / 100.0 * SPARK_HEIGHT;
        let point = format!("{x:.1},{y:.1}");
        match lines.last_mut() {
            Some(line) if previous.is_some_and(|p| at - p <= gap) => {
                line.push(' ');
                line.push_str(&point);
            }
            _ => lines.push(point),
        }
        previous = Some(at);
    }
    // A lone point draws nothing as a polyline: give it a short horizontal stroke.
    for line in &mut lines {
        if !line.contains(' ')
            && let Some((x, y)) = line.split_once(',')
            && let Ok(x) = x.parse::<f64>()
        {
            *line = format!(
                "{:.1},{y} {:.1},{y}",
                (x - 1.0).max(0.0),
                (x + 1.0).min(SPARK_WIDTH)
            );
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(8 * 1024 * 1024 * 1024), "8.0 GiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn dates() {
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20 UTC");
        assert_eq!(
            rfc3339(1_700_000_000_123).as_deref(),
            Some("2023-11-14T22:13:20.123Z")
        );
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(rfc3339(i64::MAX), None);
        assert_eq!(utc(i64::MIN), MISSING);
    }

    #[test]
    fn ages_and_durations() {
        assert_eq!(age(1_000, 5_000), "just now");
        assert_eq!(age(0, 125_000), "2 min ago");
        assert_eq!(age(0, 3 * 86_400_000), "3 d ago");
        assert_eq!(age(10_000, 0), "in the future");
        assert_eq!(duration(59), "0 min");
        assert_eq!(
            duration(3 * 86_400 + 4 * 3600 + 12 * 60 + 5),
            "3 d 4 h 12 min"
        );
        assert_eq!(duration(3700), "1 h 1 min");
    }

    #[test]
    fn percentages() {
        assert_eq!(used_percent(1, 4), Some(25.0));
        assert_eq!(used_percent(1, 0), None);
        assert_eq!(percent(12.345), "12.3 %");
    }

    #[test]
    fn sparkline_maps_time_and_value_and_breaks_at_gaps() {
        let minute = 60_000;
        let samples = [
            (0, 0.0),
            (minute, 100.0),
            (20 * minute, 50.0),
            (21 * minute, f64::NAN),
        ];
        let lines = sparkline(&samples, 0, 60 * minute);
        assert_eq!(
            lines,
            vec![
                "0.0,40.0 5.0,0.0".to_owned(),
                "99.0,20.0 101.0,20.0".to_owned()
            ]
        );
        assert!(sparkline(&[], 0, 1).is_empty());
    }
}
