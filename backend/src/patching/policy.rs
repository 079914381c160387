//! Patch policies: which hosts, what to upgrade, what to leave out, who
//! approves, whether to reboot, and when (recurring maintenance windows in
//! a time zone). [`super::rollout`] turns a policy into runs over its
//! hosts; this file is the model, its checks and the window arithmetic.
//!
//! Decisions:
//! - Exclusions are name patterns with `*` (any run of characters) and `?`
//!   (one character), matched against the whole package name.
//! - Held packages are never targets (apt and dnf keep them anyway; a
//!   pinned version would make apt fail the run).
//! - `auto_approve_after_days = N` approves, without a person, the updates
//!   the host's package manager has offered for at least N days (counted
//!   from when the backend first saw the candidate in the host's
//!   inventory); younger updates are left out of the run. Without it the
//!   policy's `approval` applies to every run.
//! - A window is weekdays, a start time and a duration in an IANA time
//!   zone. A start time that does not exist on a day (the clocks jump over
//!   it) starts the window at the first instant after the gap; one that
//!   exists twice (clocks go back) starts it at the earlier one.

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use palisade_proto::upgrade::{MAX_TARGETS, MAX_UPGRADE_TIMEOUT};
use serde::{Deserialize, Serialize};

use super::{Approval, DEFAULT_TIMEOUT_SECS, Selection};
use crate::commands::RequestError;
use crate::db::Millis;

/// Whether a run reboots its host after a successful upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RebootPolicy {
    Never,
    /// When the host says so after the upgrade (a newer kernel of the
    /// running flavour, `/run/reboot-required`).
    IfRequired,
    Always,
}

impl RebootPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RebootPolicy::Never => "never",
            RebootPolicy::IfRequired => "if_required",
            RebootPolicy::Always => "always",
        }
    }
}

impl std::str::FromStr for RebootPolicy {
    type Err = crate::UnknownName;
    fn from_str(s: &str) -> Result<RebootPolicy, crate::UnknownName> {
        match s {
            "never" => Ok(RebootPolicy::Never),
            "if_required" => Ok(RebootPolicy::IfRequired),
            "always" => Ok(RebootPolicy::Always),
            other => Err(crate::UnknownName::new("reboot policy", other)),
        }
    }
}

/// Most exclusion patterns in a policy.
pub const MAX_PATTERNS: usize = 256;
/// Most hosts or groups a policy names.
pub const MAX_TARGET_IDS: usize = 10_000;
/// Longest window: a week.
pub const MAX_WINDOW_MINUTES: u32 = 7 * 24 * 60;
/// Longest auto-approval delay: a year.
pub const MAX_AUTO_APPROVE_DAYS: u32 = 366;

/// A package name pattern: `*` and `?` wildcards over the whole name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NamePattern(String);

impl NamePattern {
    pub fn new(pattern: &str) -> Result<NamePattern, String> {
        if pattern.is_empty() || pattern.len() > 128 {
            return Err(format!("pattern {pattern:?} must have 1 to 128 characters"));
        }
        if let Some(bad) = pattern.chars().find(|c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_' | ':' | '*' | '?'))
        }) {
            return Err(format!(
                "pattern {pattern:?} contains {bad:?}; allowed are package name characters, * and ?"
            ));
        }
        Ok(NamePattern(pattern.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        glob(self.0.as_bytes(), name.as_bytes())
    }
}

impl TryFrom<String> for NamePattern {
    type Error = String;
    fn try_from(s: String) -> Result<NamePattern, String> {
        NamePattern::new(&s)
    }
}

impl From<NamePattern> for String {
    fn from(p: NamePattern) -> String {
        p.0
    }
}

/// `*`/`?` matching with one backtrack point (linear in practice).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Whether any pattern matches `name`.
pub fn excluded(patterns: &[NamePattern], name: &str) -> bool {
    patterns.iter().any(|p| p.matches(name))
}

/// A recurring maintenance window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Weekdays the window opens on: "mon" ... "sun".
    pub days: Vec<String>,
    /// Local start time, "HH:MM".
    pub start: String,
    pub duration_minutes: u32,
    /// An IANA time zone, e.g. "Europe/Berlin" or "UTC".
    pub time_zone: String,
}

/// A [`Window`] checked and ready for arithmetic.
#[derive(Debug, Clone)]
pub struct Schedule {
    days: Vec<Weekday>,
    start: Time,
    duration_minutes: u32,
    zone: TimeZone,
}

fn weekday(name: &str) -> Option<Weekday> {
    Some(match name {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    })
}

impl Window {
    /// Checks the window; the error is a sentence for the client.
    pub fn schedule(&self) -> Result<Schedule, String> {
        if self.days.is_empty() {
            return Err("the window names no weekday".into());
        }
        let mut days = Vec::new();
        for d in &self.days {
            let day = weekday(d).ok_or_else(|| {
                format!("{d:?} is not a weekday (mon, tue, wed, thu, fri, sat, sun)")
            })?;
            if !days.contains(&day) {
                days.push(day);
            }
        }
        let (h, m) = self
            .start
            .split_once(':')
            .filter(|(h, m)| h.len() == 2 && m.len() == 2)
            .and_then(|(h, m)| Some((h.parse::<i8>().ok()?, m.parse::<i8>().ok()?)))
            .filter(|(h, m)| (0..24).contains(h) && (0..60).contains(m))
            .ok_or_else(|| format!("start {:?} is not a time HH:MM", self.start))?;
        if !(1..=MAX_WINDOW_MINUTES).contains(&self.duration_minutes) {
            return Err(format!(
                "duration_minutes must be 1 to {MAX_WINDOW_MINUTES}"
            ));
        }
        if self.time_zone.len() > 64 {
            return Err("the time zone name is too long".into());
        }
        let zone = TimeZone::get(&self.time_zone)
            .map_err(|_| format!("{:?} is not a known time zone", self.time_zone))?;
        Ok(Schedule {
            days,
            start: Time::constant(h, m, 0, 0),
            duration_minutes: self.duration_minutes,
            zone,
        })
    }
}

fn to_millis(t: Timestamp) -> Millis {
    t.as_millisecond()
}

fn from_millis(ms: Millis) -> Option<Timestamp> {
    Timestamp::from_millisecond(ms).ok()
}

impl Schedule {
    /// The window's opening on `date` (local), as an instant.
    fn opening(&self, date: Date) -> Option<Timestamp> {
        // `to_zoned` resolves a gap to the instant after it and a fold to
        // the earlier instant ("compatible" disambiguation).
        date.to_datetime(self.start)
            .to_zoned(self.zone.clone())
            .ok()
            .map(|z| z.timestamp())
    }

    fn window_on(&self, date: Date) -> Option<(Millis, Millis)> {
        if !self.days.contains(&date.weekday()) {
            return None;
        }
        let start = to_millis(self.opening(date)?);
        Some((start, start + Millis::from(self.duration_minutes) * 60_000))
    }

    /// The occurrence open at `now`: `(start, end)` with `start <= now < end`.
    pub fn open_at(&self, now: Millis) -> Option<(Millis, Millis)> {
        let today = self.zone.to_datetime(from_millis(now)?).date();
        // A window may have opened up to a week (plus a day of offsets) ago.
        (0..=8)
            .filter_map(|back| today.checked_sub(back.days()).ok())
            .filter_map(|date| self.window_on(date))
            .find(|&(start, end)| start <= now && now < end)
    }

    /// The next opening after `now` (within the next eight days).
    pub fn next_after(&self, now: Millis) -> Option<(Millis, Millis)> {
        let today = self.zone.to_datetime(from_millis(now)?).date();
        (0..=8)
            .filter_map(|ahead| today.checked_add(ahead.days()).ok())
            .filter_map(|date| self.window_on(date))
            .find(|&(start, _)| start > now)
    }

    /// `at` as local time in the window's zone, for pages.
    pub fn local(&self, at: Millis) -> String {
        match from_millis(at) {
            Some(t) => t
                .to_zoned(self.zone.clone())
                .strftime("%a %Y-%m-%d %H:%M %Z")
                .to_string(),
            None => at.to_string(),
        }
    }
}

/// A stored policy.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Policy {
    pub id: String,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub host_ids: Vec<String>,
    pub group_ids: Vec<String>,
    pub selection: Selection,
    #[schema(value_type = Vec<String>)]
    pub exclude: Vec<NamePattern>,
    /// `other_user`, `any` or `none`.
    #[schema(value_type = String)]
    #[serde(serialize_with = "approval_name")]
    pub approval: Approval,
    pub auto_approve_after_days: Option<u32>,
    pub reboot: RebootPolicy,
    pub window: Option<Window>,
    pub concurrency: u32,
    pub canary: u32,
    pub max_failure_percent: u32,
    pub timeout_secs: u32,
    pub created_by: String,
    pub created_at: Millis,
    pub updated_by: String,
    pub updated_at: Millis,
}

fn approval_name<S: serde::Serializer>(a: &Approval, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(a.as_str())
}

impl Policy {
    /// The approval a run of this policy needs: none when updates are
    /// approved by age.
    pub fn run_approval(&self) -> Approval {
        if self.auto_approve_after_days.is_some() {
            Approval::None
        } else {
            self.approval
        }
    }

    /// The policy as a run's and a rollout's record keep it.
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// The body of `POST /api/v1/patch-policies` and `PUT .../{id}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub host_ids: Vec<String>,
    #[serde(default)]
    pub group_ids: Vec<String>,
    pub selection: Selection,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// `other_user` (default), `any` or `none`.
    pub approval: Option<String>,
    pub auto_approve_after_days: Option<u32>,
    /// `never` (default), `if_required` or `always`.
    pub reboot: Option<RebootPolicy>,
    pub window: Option<Window>,
    /// Hosts patched at once (default 1).
    pub concurrency: Option<u32>,
    /// Hosts patched first, alone, before any other starts (default 0).
    pub canary: Option<u32>,
    /// Stop the rollout when more than this share of its hosts failed
    /// (default 0: the first failure stops it).
    pub max_failure_percent: Option<u32>,
    pub timeout_secs: Option<u32>,
}

fn yes() -> bool {
    true
}

/// A policy as the client asked for it, checked.
#[derive(Debug, Clone)]
pub struct PolicyInput {
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub host_ids: Vec<String>,
    pub group_ids: Vec<String>,
    pub selection: Selection,
    pub exclude: Vec<NamePattern>,
    pub approval: Approval,
    pub auto_approve_after_days: Option<u32>,
    pub reboot: RebootPolicy,
    pub window: Option<Window>,
    pub concurrency: u32,
    pub canary: u32,
    pub max_failure_percent: u32,
    pub timeout_secs: u32,
}

/// Largest request body accepted.
const MAX_BODY: usize = 1024 * 1024;

/// Parses and checks a policy body; the error is a sentence for the client.
pub fn parse(body: &[u8]) -> Result<PolicyInput, RequestError> {
    let refuse = |m: String| RequestError(m);
    if body.len() > MAX_BODY {
        return Err(refuse(format!("the body is larger than {MAX_BODY} bytes")));
    }
    let b: PolicyBody = serde_json::from_slice(body)
        .map_err(|e| refuse(format!("the body is not a patch policy: {e}")))?;
    check(b).map_err(refuse)
}

fn check(b: PolicyBody) -> Result<PolicyInput, String> {
    let name = b.name.trim().to_owned();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err("\"name\" must have 1 to 100 printable characters".into());
    }
    if b.description.len() > 2000 || b.description.chars().any(|c| c.is_control() && c != '\n') {
        return Err("\"description\" must have at most 2000 printable characters".into());
    }
    if b.host_ids.is_empty() && b.group_ids.is_empty() {
        return Err("the policy names no host and no host group".into());
    }
    if b.host_ids.len() + b.group_ids.len() > MAX_TARGET_IDS {
        return Err(format!(
            "the policy names more than {MAX_TARGET_IDS} hosts and groups"
        ));
    }
    for id in b.host_ids.iter().chain(&b.group_ids) {
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|c| c.is_ascii_graphic()) {
            return Err(format!("{id:?} is not a host or group id"));
        }
    }
    if let Selection::Packages { packages } = &b.selection
        && (packages.is_empty() || packages.len() > MAX_TARGETS)
    {
        return Err(format!(
            "\"packages\" must name 1 to {MAX_TARGETS} packages"
        ));
    }
    if b.exclude.len() > MAX_PATTERNS {
        return Err(format!("more than {MAX_PATTERNS} exclusion patterns"));
    }
    let exclude = b
        .exclude
        .iter()
        .map(|p| NamePattern::new(p))
        .collect::<Result<Vec<_>, _>>()?;
    let approval = match b.approval.as_deref() {
        None => Approval::OtherUser,
        Some(a) => a
            .parse()
            .map_err(|_| "\"approval\" must be \"other_user\", \"any\" or \"none\"".to_owned())?,
    };
    if let Some(days) = b.auto_approve_after_days
        && days > MAX_AUTO_APPROVE_DAYS
    {
        return Err(format!(
            "\"auto_approve_after_days\" must be 0 to {MAX_AUTO_APPROVE_DAYS}"
        ));
    }
    if let Some(w) = &b.window {
        w.schedule()?;
    }
    let concurrency = b.concurrency.unwrap_or(1);
    if !(1..=10_000).contains(&concurrency) {
        return Err("\"concurrency\" must be 1 to 10000".into());
    }
    let canary = b.canary.unwrap_or(0);
    if canary > 10_000 {
        return Err("\"canary\" must be 0 to 10000".into());
    }
    let max_failure_percent = b.max_failure_percent.unwrap_or(0);
    if max_failure_percent > 100 {
        return Err("\"max_failure_percent\" must be 0 to 100".into());
    }
    let max = u32::try_from(MAX_UPGRADE_TIMEOUT.as_secs()).unwrap_or(u32::MAX);
    let timeout_secs = b.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
    if !(1..=max).contains(&timeout_secs) {
        return Err(format!("\"timeout_secs\" must be 1 to {max}"));
    }
    let mut host_ids = b.host_ids;
    host_ids.sort();
    host_ids.dedup();
    let mut group_ids = b.group_ids;
    group_ids.sort();
    group_ids.dedup();
    Ok(PolicyInput {
        name,
        description: b.description,
        enabled: b.enabled,
        host_ids,
        group_ids,
        selection: b.selection,
        exclude,
        approval,
        auto_approve_after_days: b.auto_approve_after_days,
        reboot: b.reboot.unwrap_or(RebootPolicy::Never),
        window: b.window,
        concurrency,
        canary,
        max_failure_percent,
        timeout_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Millis {
        s.parse::<Timestamp>().expect("timestamp").as_millisecond()
    }

    fn window(days: &[&str], start: &str, minutes: u32, zone: &str) -> Schedule {
        Window {
            days: days.iter().map(|d| (*d).to_owned()).collect(),
            start: start.into(),
            duration_minutes: minutes,
            time_zone: zone.into(),
        }
        .schedule()
        .expect("valid window")
    }

    #[test]
    fn patterns_match_whole_names() {
        let p = NamePattern::new("linux-image-*").expect("pattern");
        assert!(p.matches("linux-image-6.1.0-18-amd64"));
        assert!(!p.matches("xlinux-image-6.1"));
        assert!(NamePattern::new("lib?ssl*").expect("p").matches("lib-ssl3"));
        assert!(NamePattern::new("*ssl*").expect("p").matches("openssl"));
        assert!(!NamePattern::new("ssl").expect("p").matches("openssl"));
        assert!(NamePattern::new("a*b*c").expect("p").matches("axxbyyc"));
        assert!(!NamePattern::new("a*b*c").expect("p").matches("axxbyy"));
        assert!(NamePattern::new("").is_err());
        assert!(NamePattern::new("a b").is_err());
        assert!(NamePattern::new("[abc]").is_err());
        // No exponential blow-up on a hostile pattern.
        let hostile = NamePattern::new(&"*a".repeat(60)).expect("p");
        assert!(!hostile.matches(&"a".repeat(200).replace("aa", "ab")));
    }

    #[test]
    fn windows_open_in_their_time_zone() {
        // Saturdays 02:00 for two hours, Berlin (UTC+1 in December).
        let w = window(&["sat"], "02:00", 120, "Europe/Berlin");
        // 2026-12-05 is a Saturday.
        let start = at("2026-12-05T01:00:00Z");
        assert_eq!(w.open_at(start), Some((start, start + 7_200_000)));
        assert_eq!(
            w.open_at(start + 3_600_000),
            Some((start, start + 7_200_000))
        );
        assert_eq!(w.open_at(start - 1), None);
        assert_eq!(w.open_at(start + 7_200_000), None);
        assert_eq!(w.next_after(start - 1), Some((start, start + 7_200_000)));
        assert_eq!(
            w.next_after(start).map(|(s, _)| s),
            Some(at("2026-12-12T01:00:00Z"))
        );
        assert_eq!(w.local(start), "Sat 2026-12-05 02:00 CET");
    }

    #[test]
    fn windows_cross_midnight_and_days() {
        // Fridays 23:00 for three hours, UTC: open on Saturday at 01:00.
        let w = window(&["fri"], "23:00", 180, "UTC");
        let open = w.open_at(at("2026-12-05T01:00:00Z")).expect("open");
        assert_eq!(open.0, at("2026-12-04T23:00:00Z"));
        // A whole weekend: Saturday 00:00 for 48 hours, seen on Sunday.
        let w = window(&["sat"], "00:00", 48 * 60, "UTC");
        assert_eq!(
            w.open_at(at("2026-12-06T20:00:00Z")).map(|o| o.0),
            Some(at("2026-12-05T00:00:00Z"))
        );
    }

    #[test]
    fn daylight_saving_gaps_and_folds() {
        // Europe/Berlin: 2026-03-29 02:00 does not exist (clocks jump to
        // 03:00); the window opens at the first instant after the gap.
        let w = window(&["sun"], "02:30", 60, "Europe/Berlin");
        let (start, end) = w
            .next_after(at("2026-03-28T12:00:00Z"))
            .expect("next window");
        assert_eq!(start, at("2026-03-29T01:30:00Z"));
        assert_eq!(end - start, 3_600_000);
        // 2026-10-25 02:30 exists twice (clocks go back at 03:00): the
        // earlier one, still summer time (UTC+2).
        let (start, _) = w
            .next_after(at("2026-10-24T12:00:00Z"))
            .expect("next window");
        assert_eq!(start, at("2026-10-25T00:30:00Z"));
        // New York: the same local time is 5 hours after UTC in winter.
        let w = window(&["mon"], "09:00", 30, "America/New_York");
        assert_eq!(
            w.next_after(at("2026-12-01T00:00:00Z")).map(|o| o.0),
            Some(at("2026-12-07T14:00:00Z"))
        );
    }

    #[test]
    fn bad_windows_are_refused_with_a_reason() {
        let base = Window {
            days: vec!["sat".into()],
            start: "02:00".into(),
            duration_minutes: 60,
            time_zone: "UTC".into(),
        };
        for (w, says) in [
            (
                Window {
                    days: vec![],
                    ..base.clone()
                },
                "no weekday",
            ),
            (
                Window {
                    days: vec!["saturday".into()],
                    ..base.clone()
                },
                "not a weekday",
            ),
            (
                Window {
                    start: "24:00".into(),
                    ..base.clone()
                },
                "not a time",
            ),
            (
                Window {
                    start: "2:00".into(),
                    ..base.clone()
                },
                "not a time",
            ),
            (
                Window {
                    duration_minutes: 0,
                    ..base.clone()
                },
                "duration_minutes",
            ),
            (
                Window {
                    duration_minutes: MAX_WINDOW_MINUTES + 1,
                    ..base.clone()
                },
                "duration_minutes",
            ),
            (
                Window {
                    time_zone: "Mars/Olympus".into(),
                    ..base.clone()
                },
                "not a known time zone",
            ),
        ] {
            let err = w.schedule().expect_err("refused");
            assert!(err.contains(says), "{err} should say {says}");
        }
    }

    #[test]
    fn policy_bodies_are_checked() {
        let ok = parse(
            br#"{"name":"web weekly","group_ids":["g1"],"selection":{"kind":"security"},
                "exclude":["linux-image-*"],"reboot":"if_required","concurrency":5,"canary":1,
                "max_failure_percent":20,"auto_approve_after_days":7,
                "window":{"days":["sat"],"start":"02:00","duration_minutes":120,"time_zone":"Europe/Berlin"}}"#,
        )
        .expect("valid");
        assert_eq!(ok.reboot, RebootPolicy::IfRequired);
        assert_eq!(ok.approval, Approval::OtherUser);
        assert_eq!(ok.canary, 1);
        for (body, says) in [
            (r#"{"name":"x","selection":{"kind":"all"}}"#, "no host"),
            (
                r#"{"name":"","host_ids":["h"],"selection":{"kind":"all"}}"#,
                "name",
            ),
            (
                r#"{"name":"x","host_ids":["h"],"selection":{"kind":"all"},"exclude":["a b"]}"#,
                "contains",
            ),
            (
                r#"{"name":"x","host_ids":["h"],"selection":{"kind":"all"},"max_failure_percent":101}"#,
                "max_failure_percent",
            ),
            (
                r#"{"name":"x","host_ids":["h"],"selection":{"kind":"all"},"concurrency":0}"#,
                "concurrency",
            ),
            (
                r#"{"name":"x","host_ids":["h"],"selection":{"kind":"all"},"reboot":"sometimes"}"#,
                "not a patch policy",
            ),
            (
                r#"{"name":"x","host_ids":["h"],"selection":{"kind":"all"},"surprise":1}"#,
                "not a patch policy",
            ),
        ] {
            let err = parse(body.as_bytes()).expect_err("refused").0;
            assert!(err.contains(says), "{body}: {err} should say {says}");
        }
    }
}
