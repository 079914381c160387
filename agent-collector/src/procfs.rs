//! Parsers for the kernel's text files the collector reads. Pure: each takes
//! the file's text and returns typed values or a [`ParseError`] naming the
//! file and the line. Reading the files is [`crate::sample`]'s job.
//!
//! The parsers are strict about the values they return (a number that is not
//! a number is an error, never a zero) and lenient about what they do not
//! use (unknown keys and extra columns are skipped, so a newer kernel that
//! adds fields still parses).

use std::fmt;

/// A file that did not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The file, by its usual path (e.g. `/proc/meminfo`).
    pub file: &'static str,
    /// 1-based line number, when the problem is on one line.
    pub line: Option<usize>,
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} line {line}: {}", self.file, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

impl std::error::Error for ParseError {}

fn at(file: &'static str, line: usize, reason: impl Into<String>) -> ParseError {
    ParseError {
        file,
        line: Some(line),
        reason: reason.into(),
    }
}

fn whole(file: &'static str, reason: impl Into<String>) -> ParseError {
    ParseError {
        file,
        line: None,
        reason: reason.into(),
    }
}

/// Lines numbered from 1.
fn numbered(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, line)| (i + 1, line))
}

fn parse_u64(file: &'static str, line: usize, what: &str, token: &str) -> Result<u64, ParseError> {
    token.parse().map_err(|_| {
        at(
            file,
            line,
            format!("{what} {token:?} is not a whole number"),
        )
    })
}

/// A non-negative, finite decimal (load averages, uptime).
fn parse_f64(file: &'static str, line: usize, what: &str, token: &str) -> Result<f64, ParseError> {
    match token.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(at(
            file,
            line,
            format!("{what} {token:?} is not a non-negative decimal"),
        )),
    }
}

// ---------------------------------------------------------------------------
// /proc/meminfo

pub const MEMINFO: &str = "/proc/meminfo";

/// Memory and swap, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    pub total_bytes: u64,
    /// `MemAvailable`; on kernels before 3.14, which lack it,
    /// `MemFree + Buffers + Cached` (what `free` showed then).
    pub available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
}

/// Parses `/proc/meminfo` (`Key:   value kB` lines).
pub fn parse_meminfo(text: &str) -> Result<MemInfo, ParseError> {
    const KEYS: [&str; 7] = [
        "MemTotal",
        "MemAvailable",
        "SwapTotal",
        "SwapFree",
        "MemFree",
        "Buffers",
        "Cached",
    ];
    let mut values: [Option<u64>; 7] = [None; 7];
    for (n, line) in numbered(text) {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(slot) = KEYS.iter().position(|k| *k == key.trim()) else {
            continue;
        };
        if values[slot].is_some() {
            return Err(at(MEMINFO, n, format!("{key} appears twice")));
        }
        let mut tokens = rest.split_whitespace();
        let (Some(number), Some("kB"), None) = (tokens.next(), tokens.next(), tokens.next()) else {
            return Err(at(MEMINFO, n, format!("{key} is not \"<number> kB\"")));
        };
        let kib = parse_u64(MEMINFO, n, key, number)?;
        let bytes = kib
            .checked_mul(1024)
            .ok_or_else(|| at(MEMINFO, n, format!("{key} {kib} kB overflows")))?;
        values[slot] = Some(bytes);
    }
    let [
        total,
        available,
        swap_total,
        swap_free,
        free,
        buffers,
        cached,
    ] = values;
    let required =
        |value: Option<u64>, key: &str| value.ok_or_else(|| whole(MEMINFO, format!("no {key}")));
    let available = match available {
        Some(v) => v,
        None => {
            let parts = [
                required(free, "MemAvailable or MemFree")?,
                required(buffers, "Buffers")?,
                required(cached, "Cached")?,
            ];
            parts
                .iter()
                .try_fold(0u64, |sum, v| sum.checked_add(*v))
                .ok_or_else(|| whole(MEMINFO, "MemFree + Buffers + Cached overflows"))?
        }
    };
    Ok(MemInfo {
        total_bytes: required(total, "MemTotal")?,
        available_bytes: available,
        swap_total_bytes: required(swap_total, "SwapTotal")?,
        swap_free_bytes: required(swap_free, "SwapFree")?,
    })
}

// ---------------------------------------------------------------------------
// /proc/stat

pub const STAT: &str = "/proc/stat";

/// CPU time of all CPUs together since boot, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// user + nice + system + irq + softirq + steal. Stolen time counts as
    /// busy: the guest wanted the CPU and did not get it. Guest time is
    /// already inside user and nice, so it is not added again.
    pub busy: u64,
    /// idle + iowait: waiting for i/o leaves the CPU free for other work.
    pub idle: u64,
}

impl CpuTimes {
    pub fn total(&self) -> u64 {
        self.busy.saturating_add(self.idle)
    }
}

/// What the collector uses from `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The aggregate `cpu` line.
    pub cpu: CpuTimes,
    /// Number of `cpuN` lines: the CPUs online now (not limited by this
    /// process's affinity or cgroup, unlike `available_parallelism`).
    pub cpu_count: u32,
    /// `btime`: boot time, Unix seconds.
    pub boot_time_unix: i64,
}

/// Parses `/proc/stat`.
pub fn parse_stat(text: &str) -> Result<Stat, ParseError> {
    let mut cpu = None;
    let mut cpu_count: u32 = 0;
    let mut boot_time = None;
    for (n, line) in numbered(text) {
        let mut tokens = line.split_whitespace();
        match tokens.next() {
            Some("cpu") => {
                if cpu.is_some() {
                    return Err(at(STAT, n, "the aggregate cpu line appears twice"));
                }
                cpu = Some(parse_cpu_times(n, tokens)?);
            }
            Some(name)
                if name
                    .strip_prefix("cpu")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
            {
                cpu_count = cpu_count
                    .checked_add(1)
                    .ok_or_else(|| at(STAT, n, "too many cpu lines"))?;
            }
            Some("btime") => {
                let value = tokens
                    .next()
                    .ok_or_else(|| at(STAT, n, "btime has no value"))?;
                let seconds = value
                    .parse::<i64>()
                    .map_err(|_| at(STAT, n, format!("btime {value:?} is not a number")))?;
                boot_time = Some(seconds);
            }
            _ => {}
        }
    }
    let cpu = cpu.ok_or_else(|| whole(STAT, "no aggregate cpu line"))?;
    if cpu_count == 0 {
        return Err(whole(STAT, "no per-CPU (cpuN) lines"));
    }
    let boot_time_unix = boot_time.ok_or_else(|| whole(STAT, "no btime line"))?;
    Ok(Stat {
        cpu,
        cpu_count,
        boot_time_unix,
    })
}

fn parse_cpu_times<'a>(
    n: usize,
    tokens: impl Iterator<Item = &'a str>,
) -> Result<CpuTimes, ParseError> {
    // user nice system idle iowait irq softirq steal guest guest_nice; kernels
    // before 2.6 stop after idle, later ones added columns one by one.
    let mut fields = [0u64; 8];
    let mut seen = 0;
    for (slot, token) in fields.iter_mut().zip(tokens) {
        *slot = parse_u64(STAT, n, "cpu time", token)?;
        seen += 1;
    }
    if seen < 4 {
        return Err(at(
            STAT,
            n,
            format!("the cpu line has {seen} columns, expected at least 4"),
        ));
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal] = fields;
    let sum = |parts: &[u64]| parts.iter().try_fold(0u64, |s, v| s.checked_add(*v));
    let overflow = || at(STAT, n, "cpu times overflow");
    Ok(CpuTimes {
        busy: sum(&[user, nice, system, irq, softirq, steal]).ok_or_else(overflow)?,
        idle: sum(&[idle, iowait]).ok_or_else(overflow)?,
    })
}

// ---------------------------------------------------------------------------
// /proc/loadavg

pub const LOADAVG: &str = "/proc/loadavg";

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadAvg {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

/// Parses `/proc/loadavg` (`0.52 0.58 0.59 1/1234 56789`).
pub fn parse_loadavg(text: &str) -> Result<LoadAvg, ParseError> {
    let line = text.lines().next().ok_or_else(|| whole(LOADAVG, "empty"))?;
    let mut tokens = line.split_whitespace();
    let mut next = |what: &str| match tokens.next() {
        Some(token) => parse_f64(LOADAVG, 1, what, token),
        None => Err(at(LOADAVG, 1, format!("no {what}"))),
    };
    Ok(LoadAvg {
        one: next("1-minute load")?,
        five: next("5-minute load")?,
        fifteen: next("15-minute load")?,
    })
}

// ---------------------------------------------------------------------------
// /proc/uptime

pub const UPTIME: &str = "/proc/uptime";

/// Parses `/proc/uptime` (`12345.67 23456.78`): whole seconds since boot.
pub fn parse_uptime(text: &str) -> Result<u64, ParseError> {
    let line = text.lines().next().ok_or_else(|| whole(UPTIME, "empty"))?;
    let token = line
        .split_whitespace()
        .next()
        .ok_or_else(|| at(UPTIME, 1, "no uptime"))?;
    // A finite non-negative f64 converts to u64 by truncation (saturating at
    // u64::MAX, which no uptime reaches).
    Ok(parse_f64(UPTIME, 1, "uptime", token)? as u64)
}

// ---------------------------------------------------------------------------
// /proc/net/dev

pub const NET_DEV: &str = "/proc/net/dev";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub interface: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// Parses `/proc/net/dev`: bytes received and sent per interface, loopback
/// (`lo`) left out.
pub fn parse_net_dev(text: &str) -> Result<Vec<InterfaceCounters>, ParseError> {
    let mut out = Vec::new();
    for (n, line) in numbered(text) {
        // The two header lines are the only ones with column separators.
        if line.contains('|') || line.trim().is_empty() {
            continue;
        }
        // Interface names cannot contain ':' (the kernel refuses them), and
        // large counters may follow the colon without a space.
        let (name, counters) = line
            .split_once(':')
            .ok_or_else(|| at(NET_DEV, n, "no ':' after the interface name"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(at(NET_DEV, n, "empty interface name"));
        }
        let columns: Vec<&str> = counters.split_whitespace().collect();
        // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes ...
        let (Some(rx), Some(tx)) = (columns.first(), columns.get(8)) else {
            return Err(at(
                NET_DEV,
                n,
                format!("{} counters, expected 16", columns.len()),
            ));
        };
        let rx_bytes = parse_u64(NET_DEV, n, "received bytes", rx)?;
        let tx_bytes = parse_u64(NET_DEV, n, "sent bytes", tx)?;
        if name != "lo" {
            out.push(InterfaceCounters {
                interface: name.to_owned(),
                rx_bytes,
                tx_bytes,
            });
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// /proc/self/mounts

pub const MOUNTS: &str = "/proc/self/mounts";

/// One line of the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub mount_point: String,
    pub fs_type: String,
}

/// Parses `/proc/self/mounts` (fstab format). The kernel writes space, tab,
/// newline and backslash in names as octal escapes (`\040`); they are decoded.
pub fn parse_mounts(text: &str) -> Result<Vec<Mount>, ParseError> {
    let mut out = Vec::new();
    for (n, line) in numbered(text) {
        if line.trim_matches(' ').is_empty() {
            continue;
        }
        // Fields are separated by single spaces; any other whitespace in a
        // name is written escaped or is part of the name.
        let mut fields = line.split(' ').filter(|f| !f.is_empty());
        let (Some(device), Some(mount_point), Some(fs_type)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(at(
                MOUNTS,
                n,
                "fewer than 3 fields (device, mount point, type)",
            ));
        };
        out.push(Mount {
            device: unescape_octal(n, device)?,
            mount_point: unescape_octal(n, mount_point)?,
            fs_type: unescape_octal(n, fs_type)?,
        });
    }
    Ok(out)
}

/// Decodes `\ooo` escapes (exactly three octal digits, at most `\377`).
fn unescape_octal(n: usize, field: &str) -> Result<String, ParseError> {
    if !field.contains('\\') {
        return Ok(field.to_owned());
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let digits = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        let value = digits
            .map(|d| d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0')))
            .and_then(|v| u8::try_from(v).ok())
            .ok_or_else(|| {
                at(
                    MOUNTS,
                    n,
                    format!("bad escape in {field:?}: expected \\ and three octal digits"),
                )
            })?;
        out.push(value);
        i += 4;
    }
    // Escapes of single bytes can split a UTF-8 sequence; such a name is kept
    // readable rather than refused.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

// ---------------------------------------------------------------------------
// os-release

pub const OS_RELEASE: &str = "/etc/os-release";

/// What the collector uses from os-release(5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    pub pretty_name: Option<String>,
    pub id: Option<String>,
    pub version_id: Option<String>,
}

/// Parses an os-release file: `KEY=value` lines in shell syntax, values in
/// double quotes (with `\"`, `\\`, `\$`, `` \` `` escapes), single quotes
/// (literal) or unquoted (a backslash escapes the next character).
/// Blank lines and `#` comments are skipped.
pub fn parse_os_release(text: &str) -> Result<OsRelease, ParseError> {
    let mut out = OsRelease::default();
    for (n, line) in numbered(text) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, raw) = line
            .split_once('=')
            .ok_or_else(|| at(OS_RELEASE, n, "not a KEY=value assignment"))?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(at(OS_RELEASE, n, format!("{key:?} is not a variable name")));
        }
        let value = shell_value(n, raw)?;
        match key {
            "PRETTY_NAME" => out.pretty_name = Some(value),
            "ID" => out.id = Some(value),
            "VERSION_ID" => out.version_id = Some(value),
            _ => {}
        }
    }
    Ok(out)
}

fn shell_value(n: usize, raw: &str) -> Result<String, ParseError> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(e @ ('"' | '\\' | '$' | '`')) => out.push(e),
                        Some(other) => {
                            out.push('\\');
                            out.push(other);
                        }
                        None => return Err(at(OS_RELEASE, n, "unterminated double quote")),
                    },
                    Some(other) => out.push(other),
                    None => return Err(at(OS_RELEASE, n, "unterminated double quote")),
                }
            },
            '\'' => loop {
                match chars.next() {
                    Some('\'') => break,
                    Some(other) => out.push(other),
                    None => return Err(at(OS_RELEASE, n, "unterminated single quote")),
                }
            },
            '\\' => match chars.next() {
                Some(e) => out.push(e),
                None => return Err(at(OS_RELEASE, n, "a backslash ends the line")),
            },
            other => out.push(other),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO_FIXTURE: &str = "\
MemTotal:       16314672 kB
MemFree:         1203456 kB
MemAvailable:    9876540 kB
Buffers:          412340 kB
Cached:          7654320 kB
SwapCached:            0 kB
SwapTotal:       2097148 kB
SwapFree:        2000000 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
DirectMap1G:    12582912 kB
";

    #[test]
    fn meminfo_in_bytes() {
        assert_eq!(
            parse_meminfo(MEMINFO_FIXTURE),
            Ok(MemInfo {
                total_bytes: 16314672 * 1024,
                available_bytes: 9876540 * 1024,
                swap_total_bytes: 2097148 * 1024,
                swap_free_bytes: 2000000 * 1024,
            })
        );
    }

    #[test]
    fn meminfo_without_memavailable_falls_back() {
        let old: String = MEMINFO_FIXTURE
            .lines()
            .filter(|l| !l.starts_with("MemAvailable"))
            .map(|l| format!("{l}\n"))
            .collect();
        let info = parse_meminfo(&old).expect("parses");
        assert_eq!(info.available_bytes, (1203456 + 412340 + 7654320) * 1024);
    }

    #[test]
    fn meminfo_errors_name_the_line() {
        let bad = MEMINFO_FIXTURE.replace("MemTotal:       16314672 kB", "MemTotal:       lots kB");
        assert_eq!(
            parse_meminfo(&bad).unwrap_err().to_string(),
            "/proc/meminfo line 1: MemTotal \"lots\" is not a whole number"
        );
        let bad =
            MEMINFO_FIXTURE.replace("SwapFree:        2000000 kB", "SwapFree:        2000000 MB");
        assert_eq!(parse_meminfo(&bad).unwrap_err().line, Some(8));
        let overflow = MEMINFO_FIXTURE.replace("16314672 kB", &format!("{} kB", u64::MAX / 1000));
        assert!(
            parse_meminfo(&overflow)
                .unwrap_err()
                .reason
                .contains("overflows")
        );
        let missing = MEMINFO_FIXTURE.replace("MemTotal", "MemTotalX");
        assert_eq!(
            parse_meminfo(&missing).unwrap_err().to_string(),
            "/proc/meminfo: no MemTotal"
        );
        assert!(
            parse_meminfo(&format!("{MEMINFO_FIXTURE}MemTotal: 1 kB\n")).is_err(),
            "duplicate key"
        );
        assert!(parse_meminfo("").is_err());
    }

    const STAT_FIXTURE: &str = "\
cpu  99335 10 5942 111732 15933 7 262 90 30 0
cpu0 49768 5 2762 56426 7486 3 123 45 15 0
cpu1 49566 5 3179 55305 8446 4 139 44 15 0
intr 6391234 9 0 0 0 0 0 0 0 0 0
ctxt 12345678
btime 1718000000
processes 18931
procs_running 2
procs_blocked 0
softirq 1234 0 1 2 3 4 5 6 7 8 9
";

    #[test]
    fn stat_aggregate_cpu_count_and_boot_time() {
        let stat = parse_stat(STAT_FIXTURE).expect("parses");
        // busy: user + nice + system + irq + softirq + steal; guest excluded.
        assert_eq!(stat.cpu.busy, 99335 + 10 + 5942 + 7 + 262 + 90);
        // idle: idle + iowait.
        assert_eq!(stat.cpu.idle, 111732 + 15933);
        assert_eq!(stat.cpu_count, 2);
        assert_eq!(stat.boot_time_unix, 1718000000);
    }

    #[test]
    fn stat_from_an_old_kernel_with_four_columns() {
        let stat = parse_stat("cpu 1 2 3 4\ncpu0 1 2 3 4\nbtime 5\n").expect("parses");
        assert_eq!(stat.cpu, CpuTimes { busy: 6, idle: 4 });
    }

    #[test]
    fn stat_errors() {
        assert_eq!(
            parse_stat("cpu 1 2 3\ncpu0 1 2 3 4\nbtime 5\n")
                .unwrap_err()
                .line,
            Some(1)
        );
        assert_eq!(
            parse_stat("cpu 1 2 3 4\ncpu0 1 2 3 4\nbtime soon\n")
                .unwrap_err()
                .to_string(),
            "/proc/stat line 3: btime \"soon\" is not a number"
        );
        assert_eq!(
            parse_stat("cpu0 1 2 3 4\nbtime 5\n")
                .unwrap_err()
                .to_string(),
            "/proc/stat: no aggregate cpu line"
        );
        assert!(
            parse_stat("cpu 1 2 3 4\nbtime 5\n").is_err(),
            "no cpuN lines"
        );
        assert!(
            parse_stat("cpu 1 2 3 4\ncpu0 1 2 3 4\n").is_err(),
            "no btime"
        );
        assert!(parse_stat("cpu 1 -2 3 4\ncpu0 1 2 3 4\nbtime 5\n").is_err());
        let max = u64::MAX;
        assert!(
            parse_stat(&format!("cpu {max} {max} 0 0\ncpu0 1 2 3 4\nbtime 5\n")).is_err(),
            "overflow"
        );
        assert!(
            parse_stat("cpu 1 2 3 4\ncpu0 1 2 3 4\ncpu 1 2 3 4\nbtime 5\n").is_err(),
            "duplicate aggregate line"
        );
        // Only "cpu" followed by digits is a CPU.
        let stat =
            parse_stat("cpu 1 2 3 4\ncpu0 1 2 3 4\ncpux 1\ncpu_9 1\nbtime 5\n").expect("parses");
        assert_eq!(stat.cpu_count, 1);
    }

    #[test]
    fn loadavg_and_uptime() {
        assert_eq!(
            parse_loadavg("1.86 1.33 0.97 2/158 18931\n"),
            Ok(LoadAvg {
                one: 1.86,
                five: 1.33,
                fifteen: 0.97
            })
        );
        assert!(parse_loadavg("1.86 1.33\n").is_err());
        assert!(parse_loadavg("1.86 NaN 0.97 2/158 18931\n").is_err());
        assert!(parse_loadavg("1.86 inf 0.97\n").is_err());
        assert!(parse_loadavg("-1 1 1\n").is_err());
        assert!(parse_loadavg("").is_err());

        assert_eq!(parse_uptime("1170.97 1117.32\n"), Ok(1170));
        assert_eq!(parse_uptime("0.00 0.00\n"), Ok(0));
        assert_eq!(
            parse_uptime("soon 1\n").unwrap_err().to_string(),
            "/proc/uptime line 1: uptime \"soon\" is not a non-negative decimal"
        );
        assert!(parse_uptime("\n").is_err());
    }

    const NET_DEV_FIXTURE: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:   60942     836    0    0    0     0          0         0    60942     836    0    0    0     0       0          0
  eth0: 188091428    9203    0    0    0     0          0         0   675857    6570    0    0    0     0       0          0
wlp0s20f3:123456789012 99 0 0 0 0 0 0 42 1 0 0 0 0 0 0
";

    #[test]
    fn net_dev_counters_without_loopback() {
        assert_eq!(
            parse_net_dev(NET_DEV_FIXTURE),
            Ok(vec![
                InterfaceCounters {
                    interface: "eth0".into(),
                    rx_bytes: 188091428,
                    tx_bytes: 675857
                },
                InterfaceCounters {
                    interface: "wlp0s20f3".into(),
                    rx_bytes: 123456789012,
                    tx_bytes: 42
                },
            ])
        );
    }

    #[test]
    fn net_dev_errors() {
        assert_eq!(
            parse_net_dev("eth0 1 2 3\n").unwrap_err().to_string(),
            "/proc/net/dev line 1: no ':' after the interface name"
        );
        assert!(parse_net_dev("eth0: 1 2 3\n").is_err(), "too few columns");
        assert!(parse_net_dev(": 1 2 3 4 5 6 7 8 9\n").is_err(), "no name");
        assert_eq!(
            parse_net_dev("eth0: 1 2 3 4 5 6 7 8 x\n").unwrap_err().line,
            Some(1)
        );
        assert_eq!(parse_net_dev(""), Ok(vec![]));
    }

    const MOUNTS_FIXTURE: &str = "\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
/dev/nvme0n1p2 / ext4 rw,relatime,errors=remount-ro 0 0
/dev/sdb1 /mnt/My\\040Backups vfat rw,relatime 0 0
/dev/sdc1 /srv/tab\\011and\\134backslash xfs rw 0 0
nas:/export/home /home nfs4 rw,relatime,vers=4.2 0 0
";

    #[test]
    fn mounts_with_escapes() {
        let mounts = parse_mounts(MOUNTS_FIXTURE).expect("parses");
        assert_eq!(mounts.len(), 6);
        assert_eq!(
            mounts[2],
            Mount {
                device: "/dev/nvme0n1p2".into(),
                mount_point: "/".into(),
                fs_type: "ext4".into()
            }
        );
        assert_eq!(mounts[3].mount_point, "/mnt/My Backups");
        assert_eq!(mounts[4].mount_point, "/srv/tab\tand\\backslash");
        assert_eq!(mounts[5].device, "nas:/export/home");
        // Unescaped non-space whitespace belongs to the name.
        assert_eq!(
            parse_mounts("/dev/x /a\u{2028}b ext4 rw 0 0\n").expect("parses")[0].mount_point,
            "/a\u{2028}b"
        );
    }

    #[test]
    fn mounts_errors() {
        assert_eq!(parse_mounts("a b\n").unwrap_err().line, Some(1));
        assert!(
            parse_mounts("/dev/x /a\\04 ext4 rw 0 0\n").is_err(),
            "short escape"
        );
        assert!(
            parse_mounts("/dev/x /a\\400 ext4 rw 0 0\n").is_err(),
            "escape above \\377"
        );
        assert!(
            parse_mounts("/dev/x /a\\ ext4 rw 0 0\n").is_err(),
            "lone backslash"
        );
        assert!(
            parse_mounts("/dev/x /a\\08 ext4 rw 0 0\n").is_err(),
            "not octal"
        );
        assert_eq!(
            parse_mounts("/dev/x /a\\303\\251 ext4 rw 0 0\n").expect("parses")[0].mount_point,
            "/aé",
            "escaped UTF-8 bytes reassemble"
        );
        assert_eq!(
            parse_mounts("/dev/x /a\\377 ext4 rw 0 0\n").expect("parses")[0].mount_point,
            "/a\u{fffd}"
        );
    }

    #[test]
    fn os_release_quotes_and_escapes() {
        let text = r#"
# Written by the distribution.
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
"#;
        assert_eq!(
            parse_os_release(text),
            Ok(OsRelease {
                pretty_name: Some("Debian GNU/Linux 12 (bookworm)".into()),
                id: Some("debian".into()),
                version_id: Some("12".into()),
            })
        );
        let text = r#"PRETTY_NAME="Say \"hi\" \\ \$HOME \`x\` \n"
ID='rocky'
VERSION_ID=9.3\ beta
"#;
        assert_eq!(
            parse_os_release(text),
            Ok(OsRelease {
                pretty_name: Some(r#"Say "hi" \ $HOME `x` \n"#.into()),
                id: Some("rocky".into()),
                version_id: Some("9.3 beta".into()),
            })
        );
        assert_eq!(parse_os_release(""), Ok(OsRelease::default()));
    }

    #[test]
    fn os_release_errors_name_the_line() {
        assert_eq!(
            parse_os_release("ID=debian\nPRETTY_NAME=\"Debian\n")
                .unwrap_err()
                .to_string(),
            "/etc/os-release line 2: unterminated double quote"
        );
        assert_eq!(parse_os_release("ID='x\n").unwrap_err().line, Some(1));
        assert_eq!(parse_os_release("just words\n").unwrap_err().line, Some(1));
        assert!(parse_os_release("BAD-KEY=1\n").is_err());
        assert!(parse_os_release("=1\n").is_err());
        assert!(parse_os_release("ID=x\\\n").is_err());
    }
}
