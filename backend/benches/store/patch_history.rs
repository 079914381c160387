//! The 90-day patch history of 1,000 hosts (issue 11: "< 100 ms at the
//! median, on SQLite and PostgreSQL").
//!
//! What an operator reads as "the patch history":
//!
//! - **the fleet's history page**: the newest runs of the last 90 days on
//!   every host, first page (100 runs), without a filter and filtered by a
//!   state (`failed`, frequent `succeeded`, and `agent_offline`, which is
//!   computed from the run's command in the query);
//! - **one host's history**: every run of that host in the last 90 days
//!   (about 13, read with the largest page, 500);
//! - **one run's record**: the run with its plan, its changes and its whole
//!   output.
//!
//! There are no per-state counts: no query, API or page shows them, so they
//! are not measured.
//!
//! Each is timed twice: the store query (`patching::store::
//! list_requested_since` with the 90-day bound, `store::get`), and the
//! request through the real router (`GET /api/v1/patch-runs`, whose
//! `limit`, `host_id` and `state` exist but which takes no time bound yet:
//! with 90 days of data it returns the same runs; the `/patch-runs` page;
//! `GET /api/v1/patch-runs/{id}` with its output).
//!
//! The history is made with the real store functions, in the order the flow
//! calls them: `commands::store::create` (the dry run), `patching::store::
//! insert`, `commands::store::apply_result` (the plan, which moves the run),
//! `cancel_now` or `create` + `start` (the approval and the real command),
//! `append_output` (streamed output), `apply_result` (the record). The
//! create and approve audit events of the web flow are not written (the
//! finish events are, by `apply_result`); they do not touch these tables.

use std::time::Instant;

use palisade_backend::audit::Actor;
use palisade_backend::commands::{
    CommandKind, CommandResult, CommandStatus, NewCommand, OutputPiece, PackageChange,
};
use palisade_backend::db::{Db, Millis, Result, Tx};
use palisade_backend::hosts::NewHost;
use palisade_backend::patching::store::{self as runs, RunFilter};
use palisade_backend::patching::{Approval, NewRun, RunState, Selection};
use palisade_packages::inventory::Manager;

use super::{api_get, host_id, page_get, timed};

pub const HOSTS: usize = 1_000;
const DAY: Millis = 86_400_000;
const WEEK: Millis = 7 * DAY;
/// The window the history covers.
pub const SPAN: Millis = 90 * DAY;
/// Runs created per transaction while seeding.
const RUNS_PER_TX: usize = 250;
/// Output pieces are at most this long (the agent streams lines in pieces).
const PIECE: usize = 1024;
/// One real run in this many streams its output into `command_outputs`; the
/// others carry it in their result (an agent that does not stream).
const STREAMED_ONE_IN: u64 = 4;
const WARM_UP: usize = 3;
const RUNS: usize = 31;

/// Debian bookworm packages as a security or point-release update shows
/// them: name, architecture, installed version, candidate.
const PACKAGES: &[(&str, &str, &str, &str)] = &[
    ("libssl3", "amd64", "3.0.15-1~deb12u1", "3.0.16-1~deb12u1"),
    ("openssl", "amd64", "3.0.15-1~deb12u1", "3.0.16-1~deb12u1"),
    ("libc6", "amd64", "2.36-9+deb12u8", "2.36-9+deb12u10"),
    ("libc-bin", "amd64", "2.36-9+deb12u8", "2.36-9+deb12u10"),
    ("locales", "all", "2.36-9+deb12u8", "2.36-9+deb12u10"),
    ("linux-image-amd64", "amd64", "6.1.119-1", "6.1.128-1"),
    ("linux-image-6.1.0-31-amd64", "amd64", "", "6.1.128-1"),
    ("systemd", "amd64", "252.31-1~deb12u1", "252.33-1~deb12u1"),
    (
        "libsystemd0",
        "amd64",
        "252.31-1~deb12u1",
        "252.33-1~deb12u1",
    ),
    ("libudev1", "amd64", "252.31-1~deb12u1", "252.33-1~deb12u1"),
    ("udev", "amd64", "252.31-1~deb12u1", "252.33-1~deb12u1"),
    (
        "systemd-sysv",
        "amd64",
        "252.31-1~deb12u1",
        "252.33-1~deb12u1",
    ),
    ("curl", "amd64", "7.88.1-10+deb12u8", "7.88.1-10+deb12u12"),
    (
        "libcurl4",
        "amd64",
        "7.88.1-10+deb12u8",
        "7.88.1-10+deb12u12",
    ),
    (
        "libcurl3-gnutls",
        "amd64",
        "7.88.1-10+deb12u8",
        "7.88.1-10+deb12u12",
    ),
    ("tzdata", "all", "2024a-0+deb12u1", "2025a-0+deb12u1"),
    (
        "openssh-client",
        "amd64",
        "1:9.2p1-2+deb12u3",
        "1:9.2p1-2+deb12u5",
    ),
    (
        "openssh-server",
        "amd64",
        "1:9.2p1-2+deb12u3",
        "1:9.2p1-2+deb12u5",
    ),
    (
        "openssh-sftp-server",
        "amd64",
        "1:9.2p1-2+deb12u3",
        "1:9.2p1-2+deb12u5",
    ),
    ("sudo", "amd64", "1.9.13p3-1+deb12u1", "1.9.13p3-1+deb12u2"),
    ("libgnutls30", "amd64", "3.7.9-2+deb12u3", "3.7.9-2+deb12u4"),
    (
        "libxml2",
        "amd64",
        "2.9.14+dfsg-1.3~deb12u1",
        "2.9.14+dfsg-1.3~deb12u2",
    ),
    ("libexpat1", "amd64", "2.5.0-1+deb12u1", "2.5.0-1+deb12u2"),
    (
        "libsqlite3-0",
        "amd64",
        "3.40.1-2+deb12u1",
        "3.40.1-2+deb12u2",
    ),
    ("libpq5", "amd64", "15.10-0+deb12u1", "15.12-0+deb12u2"),
    (
        "postgresql-15",
        "amd64",
        "15.10-0+deb12u1",
        "15.12-0+deb12u2",
    ),
    (
        "postgresql-client-15",
        "amd64",
        "15.10-0+deb12u1",
        "15.12-0+deb12u2",
    ),
    ("nginx", "amd64", "1.22.1-9", "1.22.1-9+deb12u1"),
    ("nginx-common", "all", "1.22.1-9", "1.22.1-9+deb12u1"),
    (
        "libnginx-mod-stream",
        "amd64",
        "1.22.1-9",
        "1.22.1-9+deb12u1",
    ),
    (
        "python3.11",
        "amd64",
        "3.11.2-6+deb12u4",
        "3.11.2-6+deb12u5",
    ),
    (
        "python3.11-minimal",
        "amd64",
        "3.11.2-6+deb12u4",
        "3.11.2-6+deb12u5",
    ),
    (
        "libpython3.11-stdlib",
        "amd64",
        "3.11.2-6+deb12u4",
        "3.11.2-6+deb12u5",
    ),
    (
        "libpython3.11-minimal",
        "amd64",
        "3.11.2-6+deb12u4",
        "3.11.2-6+deb12u5",
    ),
    ("git", "amd64", "1:2.39.5-0+deb12u1", "1:2.39.5-0+deb12u2"),
    ("git-man", "all", "1:2.39.5-0+deb12u1", "1:2.39.5-0+deb12u2"),
    ("rsync", "amd64", "3.2.7-1", "3.2.7-1+deb12u2"),
    ("libtasn1-6", "amd64", "4.19.0-2", "4.19.0-2+deb12u1"),
    ("libnss3", "amd64", "2:3.87.1-1", "2:3.87.1-1+deb12u1"),
    ("ca-certificates", "all", "20230311", "20230311+deb12u1"),
    (
        "bind9-host",
        "amd64",
        "1:9.18.28-1~deb12u2",
        "1:9.18.33-1~deb12u2",
    ),
    (
        "bind9-libs",
        "amd64",
        "1:9.18.28-1~deb12u2",
        "1:9.18.33-1~deb12u2",
    ),
    (
        "bind9-dnsutils",
        "amd64",
        "1:9.18.28-1~deb12u2",
        "1:9.18.33-1~deb12u2",
    ),
    ("libtiff6", "amd64", "4.5.0-6+deb12u1", "4.5.0-6+deb12u2"),
    (
        "libpam-modules",
        "amd64",
        "1.5.2-6+deb12u1",
        "1.5.2-6+deb12u2",
    ),
    ("libpam0g", "amd64", "1.5.2-6+deb12u1", "1.5.2-6+deb12u2"),
    (
        "libpam-runtime",
        "all",
        "1.5.2-6+deb12u1",
        "1.5.2-6+deb12u2",
    ),
    (
        "intel-microcode",
        "amd64",
        "3.20240910.1~deb12u1",
        "3.20250211.1~deb12u1",
    ),
    (
        "libglib2.0-0",
        "amd64",
        "2.74.6-2+deb12u4",
        "2.74.6-2+deb12u5",
    ),
    ("libkrb5-3", "amd64", "1.20.1-2+deb12u2", "1.20.1-2+deb12u3"),
    (
        "libgssapi-krb5-2",
        "amd64",
        "1.20.1-2+deb12u2",
        "1.20.1-2+deb12u3",
    ),
    (
        "libk5crypto3",
        "amd64",
        "1.20.1-2+deb12u2",
        "1.20.1-2+deb12u3",
    ),
    (
        "libkrb5support0",
        "amd64",
        "1.20.1-2+deb12u2",
        "1.20.1-2+deb12u3",
    ),
    ("emacsen-common", "all", "3.0.5", ""),
    ("base-files", "amd64", "12.4+deb12u8", "12.4+deb12u10"),
    ("containerd.io", "amd64", "1.7.24-1", "1.7.25-1"),
    (
        "docker-ce",
        "amd64",
        "5:27.4.1-1~debian.12~bookworm",
        "5:27.5.1-1~debian.12~bookworm",
    ),
    (
        "docker-ce-cli",
        "amd64",
        "5:27.4.1-1~debian.12~bookworm",
        "5:27.5.1-1~debian.12~bookworm",
    ),
    ("libtinfo6", "amd64", "6.4-4", "6.4+20240113-1"),
    ("ncurses-base", "all", "6.4-4", "6.4+20240113-1"),
];

/// xorshift64*: the history is the same at every run of the bench.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the seeded history holds.
#[derive(Debug, Default)]
pub struct Seeded {
    pub runs: usize,
    pub commands: usize,
    pub changes: usize,
    pub output_pieces: usize,
    pub output_bytes: usize,
    pub result_output_bytes: usize,
    pub by_state: std::collections::BTreeMap<&'static str, usize>,
    pub seconds: f64,
    /// A host with its runs, and a run with streamed output.
    pub sample_host: String,
    pub sample_run: String,
}

/// 5 to 40 distinct packages.
fn plan(rng: &mut Rng) -> Vec<PackageChange> {
    let count = 5 + rng.below(36) as usize;
    let start = rng.below(PACKAGES.len() as u64) as usize;
    (0..count)
        .map(|i| {
            let (name, arch, before, after) = PACKAGES[(start + i) % PACKAGES.len()];
            PackageChange {
                name: name.into(),
                arch: arch.into(),
                before: before.into(),
                after: after.into(),
            }
        })
        .collect()
}

/// What `apt-get -s` says about `plan`.
fn simulation_output(plan: &[PackageChange]) -> String {
    let mut out = String::from(
        "Reading package lists...\nBuilding dependency tree...\nReading state information...\nCalculating upgrade...\n",
    );
    for c in plan {
        if c.after.is_empty() {
            out.push_str(&format!("Remv {} [{}]\n", c.name, c.before));
        } else {
            out.push_str(&format!(
                "Inst {} [{}] ({} Debian-Security:12/stable-security [{}])\n",
                c.name, c.before, c.after, c.arch
            ));
        }
    }
    out
}

/// What `apt-get install --only-upgrade` prints for `changes`: a few lines
/// a package, ~350 bytes.
fn upgrade_output(changes: &[PackageChange]) -> String {
    let mut out = String::from(
        "Reading package lists...\nBuilding dependency tree...\nReading state information...\n",
    );
    for (i, c) in changes.iter().enumerate() {
        out.push_str(&format!(
            "Get:{} http://deb.debian.org/debian-security bookworm-security/main {} {} {} [{} kB]\n",
            i + 1,
            c.arch,
            c.name,
            c.after,
            100 + i * 37
        ));
    }
    for c in changes {
        out.push_str(&format!(
            "Preparing to unpack .../{}_{}_{}.deb ...\nUnpacking {}:{} ({}) over ({}) ...\nSetting up {}:{} ({}) ...\n",
            c.name, c.after, c.arch, c.name, c.arch, c.after, c.before, c.name, c.arch, c.after
        ));
    }
    out.push_str("Processing triggers for man-db (2.11.2-2) ...\nProcessing triggers for libc-bin (2.36-9+deb12u10) ...\n");
    out
}

/// `text` cut at line ends into pieces of at most about [`PIECE`] bytes.
fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut end = 0;
    for (i, _) in text.match_indices('\n') {
        if i + 1 - start > PIECE && end > start {
            out.push(&text[start..end]);
            start = end;
        }
        end = i + 1;
    }
    if end > start {
        out.push(&text[start..end]);
    }
    if end < text.len() {
        out.push(&text[end..]);
    }
    out
}

fn command(
    id: String,
    host: &str,
    changes: &[PackageChange],
    dry_run: bool,
    issued_at: Millis,
    by: &Actor,
) -> NewCommand {
    let payload = serde_json::json!({
        "type": "upgrade_packages",
        "manager": "dpkg",
        "all": dry_run,
        "packages": if dry_run { Vec::new() } else {
            changes.iter().map(|c| serde_json::json!({
                "name": c.name, "arch": c.arch, "version": c.after,
            })).collect::<Vec<_>>()
        },
        "dry_run": dry_run,
        "refresh_index": dry_run,
        "timeout_secs": 3600,
    });
    // About what the encoded command is: ids, times, and the targets.
    let command_bytes = vec![0x5a; 96 + if dry_run { 0 } else { 60 * changes.len() }];
    NewCommand {
        id,
        host_id: host.to_owned(),
        kind: CommandKind::UpgradePackages,
        payload,
        requested_by: by.clone(),
        source_ip: Some("10.20.0.15".into()),
        user_agent: Some(
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0".into(),
        ),
        issued_at,
        expires_at: issued_at + 15 * 60 * 1000,
        command_bytes,
        signature: vec![0xa5; 64],
    }
}

fn result(
    command_id: &str,
    status: CommandStatus,
    changes: Vec<PackageChange>,
    output: String,
    streamed_bytes: u64,
    started_at: Millis,
    finished_at: Millis,
) -> CommandResult {
    let (exit_code, error) = match status {
        CommandStatus::Succeeded => (0, None),
        CommandStatus::TimedOut => (-1, Some("stopped after 3600 s".to_owned())),
        _ => (
            100,
            Some("E: Sub-process /usr/bin/dpkg returned an error code (1)".to_owned()),
        ),
    };
    CommandResult {
        command_id: command_id.to_owned(),
        status,
        exit_code,
        output,
        error,
        started_at,
        finished_at,
        changes,
        streamed_bytes,
        reboot_required: None,
        restarts: Vec::new(),
    }
}

/// Adds the hosts that do not exist yet (other parts number theirs the
/// same way).
fn ensure_hosts(db: &Db, t0: Millis) {
    let existing: i64 = db
        .read_blocking("count", |tx| {
            tx.query_one("SELECT COUNT(*) FROM hosts", &[], |r| r.get(0))
        })
        .expect("count");
    if existing == 0 {
        super::enroll_hosts(db, HOSTS, t0);
        return;
    }
    db.write_blocking("bench hosts", |tx| {
        for n in existing as usize..HOSTS {
            palisade_backend::hosts::store::insert(
                tx,
                &NewHost {
                    id: host_id(n),
                    hostname: format!("host-{n:05}.bench.example"),
                    host_group_id: None,
                    enrolled_at: t0,
                    enrolled_from: "10.0.0.1".into(),
                    token_id: "benchbenchbench0".into(),
                    cert_sha256: "ab".repeat(32),
                },
            )?;
        }
        Ok(())
    })
    .expect("hosts");
}

/// One run of `host` requested at `at`, taken through the flow as far as
/// `fate` says.
#[allow(clippy::too_many_arguments)]
fn one_run(
    tx: &mut Tx<'_>,
    rng: &mut Rng,
    seq: &mut u64,
    seeded: &mut Seeded,
    host: &str,
    at: Millis,
    now: Millis,
    run_no: u64,
) -> Result<()> {
    const USERS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let requester = Actor::User(USERS[rng.below(6) as usize].into());
    let approver = Actor::User(USERS[rng.below(6) as usize].into());
    let id = |kind: u64| format!("{:08x}-0000-4000-8{kind:03x}-{run_no:012x}", run_no >> 16);
    let run_id = id(0);
    let dry_id = id(1);
    let real_id = id(2);
    let planned = plan(rng);
    seeded.commands += 1;
    palisade_backend::commands::store::create(
        tx,
        &command(dry_id.clone(), host, &planned, true, at, &requester),
    )?;
    runs::insert(
        tx,
        &NewRun {
            id: run_id.clone(),
            host_id: host.to_owned(),
            selection: if run_no.is_multiple_of(3) {
                Selection::Security
            } else {
                Selection::All
            },
            approval: Approval::OtherUser,
            manager: Manager::Dpkg,
            requested_by: requester.clone(),
            requested_by_user: None,
            requested_at: at,
            dry_run_command_id: Some(dry_id.clone()),
            timeout_secs: 3600,
            policy: serde_json::json!({"selection": {"kind": "all"}, "approval": "other_user",
                                       "timeout_secs": 3600, "manager": "dpkg"}),
            rollout_id: None,
            rollout_position: None,
            exclude: Vec::new(),
            auto_approve_after_days: None,
            reboot: palisade_backend::patching::RebootPolicy::Never,
        },
    )?;
    seeded.runs += 1;
    let mut next_seq = || {
        *seq += 1;
        *seq
    };
    let fate = rng.below(1000);
    let recent = now - at < DAY;
    // 0.5%: the dry run never reached the agent (reads agent_offline).
    if fate < 5 {
        *seeded.by_state.entry("agent_offline").or_default() += 1;
        return Ok(());
    }
    let plan_received = at + 40_000;
    let (plan_status, plan_changes) = match fate {
        5..55 => (CommandStatus::Succeeded, Vec::new()),
        55..70 => (CommandStatus::Failed, Vec::new()),
        _ => (CommandStatus::Succeeded, planned.clone()),
    };
    seeded.changes += plan_changes.len();
    seeded.result_output_bytes += simulation_output(&plan_changes).len();
    palisade_backend::commands::store::apply_result(
        tx,
        host,
        next_seq(),
        plan_received,
        &result(
            &dry_id,
            plan_status,
            plan_changes.clone(),
            simulation_output(&plan_changes),
            0,
            at + 2_000,
            at + 35_000,
        ),
    )?;
    match fate {
        5..55 => {
            *seeded.by_state.entry("nothing_to_do").or_default() += 1;
            return Ok(());
        }
        55..70 => {
            *seeded.by_state.entry("failed").or_default() += 1;
            return Ok(());
        }
        _ => {}
    }
    // Half of the last day's runs still wait for their approval.
    if recent && rng.below(2) == 0 {
        *seeded.by_state.entry("awaiting_approval").or_default() += 1;
        return Ok(());
    }
    let approved_at = plan_received + HOUR_MS + rng.below(3 * HOUR_MS as u64) as Millis;
    if fate < 100 {
        runs::cancel_now(tx, &run_id, &approver, approved_at)?;
        *seeded.by_state.entry("cancelled").or_default() += 1;
        return Ok(());
    }
    seeded.commands += 1;
    palisade_backend::commands::store::create(
        tx,
        &command(
            real_id.clone(),
            host,
            &planned,
            false,
            approved_at,
            &approver,
        ),
    )?;
    runs::start(
        tx,
        &run_id,
        RunState::AwaitingApproval,
        &real_id,
        Some((&approver, approved_at)),
    )?;
    let (status, changed) = match fate {
        100..110 => (
            CommandStatus::TimedOut,
            planned[..planned.len() / 2].to_vec(),
        ),
        110..150 => (CommandStatus::Failed, planned[..planned.len() / 3].to_vec()),
        _ => (CommandStatus::Succeeded, planned.clone()),
    };
    *seeded.by_state.entry(status.as_str()).or_default() += 1;
    seeded.changes += changed.len();
    let output = upgrade_output(&changed);
    let started = approved_at + 3_000;
    let finished = started + 60_000 + rng.below(540_000) as Millis;
    let streamed = rng.below(STREAMED_ONE_IN) == 0;
    let mut result_output = output.clone();
    if streamed {
        let mut offset = 0u64;
        for piece in pieces(&output) {
            palisade_backend::commands::store::append_output(
                tx,
                host,
                &OutputPiece {
                    command_id: real_id.clone(),
                    offset,
                    text: piece.to_owned(),
                },
            )?;
            next_seq();
            offset += piece.len() as u64;
            seeded.output_pieces += 1;
        }
        seeded.output_bytes += output.len();
        seeded.sample_run.clone_from(&run_id);
        result_output.clear();
    } else {
        seeded.result_output_bytes += output.len();
    }
    palisade_backend::commands::store::apply_result(
        tx,
        host,
        next_seq(),
        finished + 500,
        &result(
            &real_id,
            status,
            changed,
            result_output,
            if streamed { output.len() as u64 } else { 0 },
            started,
            finished,
        ),
    )?;
    Ok(())
}

const HOUR_MS: Millis = 3_600_000;

/// A weekly run per host over the [`SPAN`] before `now` (each host on its
/// own slot of the week), about 13,000 runs.
pub fn seed(db: &Db, now: Millis) -> Seeded {
    let started = Instant::now();
    ensure_hosts(db, now - SPAN - DAY);
    let mut work = Vec::new();
    for n in 0..HOSTS {
        let slot = n as Millis * WEEK / HOSTS as Millis;
        let mut at = now - SPAN + slot;
        while at < now - 10 * 60 * 1000 {
            work.push((n, at));
            at += WEEK;
        }
    }
    // In time order, as they happen.
    work.sort_by_key(|&(n, at)| (at, n));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut seq = 0u64;
    let mut seeded = Seeded {
        sample_host: host_id(42),
        ..Seeded::default()
    };
    let mut run_no = 0u64;
    for chunk in work.chunks(RUNS_PER_TX) {
        db.write_blocking("bench patch runs", |tx| {
            for &(n, at) in chunk {
                run_no += 1;
                one_run(
                    tx,
                    &mut rng,
                    &mut seq,
                    &mut seeded,
                    &host_id(n),
                    at,
                    now,
                    run_no,
                )?;
            }
            Ok(())
        })
        .expect("patch runs");
    }
    seeded.seconds = started.elapsed().as_secs_f64();
    seeded
}

/// Median and 95th percentile of `v`, in its unit.
fn median_p95(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let p95 = ((v.len() as f64 * 0.95).ceil() as usize).clamp(1, v.len()) - 1;
    (v[v.len() / 2], v[p95])
}

/// One measured query: what, median ms, p95 ms, rows or bytes returned.
pub struct Figure {
    pub what: String,
    pub median: f64,
    pub p95: f64,
    pub size: String,
}

/// Times `f` [`RUNS`] times after [`WARM_UP`] calls; `f` returns the size
/// of its answer.
fn measure(what: &str, mut f: impl FnMut() -> String) -> Figure {
    for _ in 0..WARM_UP {
        f();
    }
    let mut times = Vec::with_capacity(RUNS);
    let mut size = String::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        size = f();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let (median, p95) = median_p95(times);
    Figure {
        what: what.to_owned(),
        median,
        p95,
        size,
    }
}

/// The store queries and the requests of the history, timed.
pub fn queries(
    db: &Db,
    app: &axum::Router,
    rt: &tokio::runtime::Runtime,
    seeded: &Seeded,
) -> Vec<Figure> {
    let now = palisade_backend::now_millis();
    let since = now - SPAN;
    let mut out = Vec::new();
    let fleet = |state: Option<RunState>| RunFilter {
        host_id: None,
        state,
        groups: None,
        limit: 100,
    };
    let store_list = |filter: RunFilter| {
        move || {
            let filter = filter.clone();
            let rows = db
                .read_blocking("bench list", |tx| {
                    runs::list_requested_since(tx, &filter, Some(since), now)
                })
                .expect("list");
            format!("{} runs", rows.len())
        }
    };
    for (what, state) in [
        ("store: fleet, newest 100", None),
        (
            "store: fleet, state=failed, newest 100",
            Some(RunState::Failed),
        ),
        (
            "store: fleet, state=succeeded, newest 100",
            Some(RunState::Succeeded),
        ),
        (
            "store: fleet, state=agent_offline, newest 100",
            Some(RunState::AgentOffline),
        ),
    ] {
        out.push(measure(what, store_list(fleet(state))));
    }
    out.push(measure(
        "store: one host, every run (limit 500)",
        store_list(RunFilter {
            host_id: Some(seeded.sample_host.clone()),
            state: None,
            groups: None,
            limit: 500,
        }),
    ));
    out.push(measure("store: one run (get)", || {
        let id = seeded.sample_run.clone();
        let run = db
            .read_blocking("bench get", |tx| runs::get(tx, &id, now))
            .expect("get");
        format!("{} runs", usize::from(run.is_some()))
    }));
    let host = &seeded.sample_host;
    let run = &seeded.sample_run;
    let requests = [
        ("GET /api/v1/patch-runs".to_owned(), false),
        ("GET /api/v1/patch-runs?state=failed".to_owned(), false),
        (
            "GET /api/v1/patch-runs?state=agent_offline".to_owned(),
            false,
        ),
        (
            format!("GET /api/v1/patch-runs?host_id={host}&limit=500"),
            false,
        ),
        ("GET /patch-runs".to_owned(), true),
        (format!("GET /patch-runs?host_id={host}&limit=500"), true),
        (format!("GET /api/v1/patch-runs/{run} (with output)"), false),
    ];
    for (what, page) in requests {
        let uri = what
            .trim_start_matches("GET ")
            .trim_end_matches(" (with output)")
            .to_owned();
        out.push(measure(&what, || {
            let request = if page { page_get(&uri) } else { api_get(&uri) };
            let (_, bytes) = rt.block_on(timed(app, request));
            format!("{bytes} bytes")
        }));
    }
    out
}
