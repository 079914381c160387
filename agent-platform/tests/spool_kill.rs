//! kill -9 in the middle of appending: every sequence number an append
//! returned is still in the spool afterwards (unless an ack removed it), no
//! number is ever handed out twice, and the counters match the records.
//! (An ack may be undone by a crash, by design: the spool does not fsync
//! deletions on their own, so records at or below an ack may come back.)
//!
//! The test re-executes its own binary as the child (selected by an
//! environment variable): four threads append 1 KiB records as fast as the
//! group commit lets them and print each returned number; one of them also
//! acks. The parent kills the child with SIGKILL mid-stream, twice.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade_agent::spool::{Spool, record_cost};
use palisade_proto::msg::RecordBody;
use palisade_proto::pb;

const CHILD_ENV: &str = "PALISADE_SPOOL_KILL_TEST_DIR";
const TEST_NAME: &str = "the_spool_survives_sigkill";
/// Appends printed before the parent kills the child.
const KILL_AFTER: usize = 1500;
const DEADLINE: Duration = Duration::from_secs(120);
/// The child acks up to this far behind its newest record.
const ACK_LAG: u64 = 100;

fn record() -> RecordBody {
    RecordBody::CommandResult(pb::CommandResult {
        command_id: "kill-test".to_owned(),
        output: "k".repeat(1000),
        status: pb::CommandStatus::Succeeded as i32,
        ..Default::default()
    })
}

/// The child: appends until killed. Prints `appended N` after an append
/// returned N and `acking N` before an ack.
fn child(dir: &Path) -> ! {
    let spool = Spool::open(dir).unwrap();
    std::thread::scope(|s| {
        for thread in 0..4 {
            let spool = &spool;
            s.spawn(move || {
                let mut i: i64 = 0;
                loop {
                    i += 1;
                    let seq = spool.append(record(), i).unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "appended {seq}").unwrap();
                    out.flush().unwrap();
                    if thread == 0 && i % 16 == 0 && seq > ACK_LAG {
                        let up_to = seq - ACK_LAG;
                        writeln!(out, "acking {up_to}").unwrap();
                        out.flush().unwrap();
                        drop(out);
                        spool.ack(up_to).unwrap();
                    }
                }
            });
        }
    });
    unreachable!("the appenders never stop")
}

#[derive(Debug, Default)]
struct Seen {
    appended: BTreeSet<u64>,
    max_acking: u64,
}

/// Runs the child on `dir`, kills it with SIGKILL after [`KILL_AFTER`]
/// appends, and returns everything it printed.
fn run_and_kill(dir: &Path) -> Seen {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let started = Instant::now();
    let mut seen = Seen::default();
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let mut words = line.split_whitespace();
        let (Some(what), Some(n)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "appended" => {
                assert!(seen.appended.insert(n), "sequence {n} was returned twice");
            }
            "acking" => seen.max_acking = seen.max_acking.max(n),
            _ => continue,
        }
        if !killed && seen.appended.len() >= KILL_AFTER {
            // SIGKILL; the lines already in the pipe are still read below.
            child.kill().unwrap();
            killed = true;
        }
        assert!(
            killed || started.elapsed() < DEADLINE,
            "the child printed only {} appends in {DEADLINE:?}",
            seen.appended.len()
        );
    }
    let status = child.wait().unwrap();
    assert!(killed, "the child stopped by itself: {status}");
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status}");
    }
    seen
}

/// Reopens the spool and checks it against what the child printed.
fn check(dir: &Path, seen: &Seen) -> u64 {
    let spool = Spool::open(dir).unwrap();
    let pending = spool.pending_after(0, usize::MAX).unwrap();
    let stored: BTreeSet<u64> = pending.iter().map(|(s, _)| *s).collect();
    assert_eq!(stored.len(), pending.len());
    let max_printed = *seen.appended.last().unwrap();
    for &seq in &seen.appended {
        if seq > seen.max_acking {
            assert!(
                stored.contains(&seq),
                "sequence {seq} was returned by append, never acked, and is gone after kill -9"
            );
        }
    }
    let stats = spool.stats();
    assert!(
        stats.next_seq > max_printed,
        "next_seq {} would reuse {max_printed}",
        stats.next_seq
    );
    assert!(stored.iter().all(|&s| s < stats.next_seq));
    assert_eq!(stats.records, pending.len() as u64);
    assert_eq!(
        stats.stored_bytes,
        pending
            .iter()
            .map(|(_, b)| record_cost(b.len()))
            .sum::<u64>(),
        "the byte counter matches the records"
    );
    assert_eq!(stats.dropped_total, 0);
    for (seq, bytes) in &pending {
        let record = palisade_proto::msg::decode_record(bytes).unwrap();
        assert_eq!(record.seq, *seq, "record {seq} is intact");
    }
    let next = spool.append(record(), 0).unwrap();
    assert!(
        next > max_printed,
        "a new append got {next}, already issued"
    );
    next
}

#[test]
fn the_spool_survives_sigkill() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
    }
    // On the target's disk, not a tmpfs: fsync must mean something.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let first = run_and_kill(dir.path());
    let after_first = check(dir.path(), &first);
    let second = run_and_kill(dir.path());
    let lowest = *second.appended.first().unwrap();
    assert!(
        lowest > after_first,
        "the second run handed out {lowest}, at or below {after_first} from before"
    );
    check(dir.path(), &second);
}
