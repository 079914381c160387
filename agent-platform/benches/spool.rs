//! Spool throughput with 1 KiB records, fsync included: one caller of
//! `append`, sixteen concurrent callers (group commit), `append_batch` of 256,
//! and the sender's cycle (`pending_after` 256 + `ack`).
//!
//! `cargo bench -p palisade-agent --bench spool -- --warm-up-time 1 --measurement-time 5`
//! Throughput is reported in records per second ("elem/s"). The spool lives
//! under the target directory, on a real disk: on a tmpfs, fsync is free and
//! the figures would mean nothing.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use palisade_agent::spool::Spool;
use palisade_proto::msg::RecordBody;
use palisade_proto::pb;

const CALLERS: u64 = 16;
const BATCH: usize = 256;
/// Records acked (untimed) every so often so the spool stays far from its
/// bound: the figures are for appending, not for dropping.
const ACK_EVERY: u64 = 16_384;

/// A record whose encoding is about 1 KiB.
fn record() -> RecordBody {
    RecordBody::CommandResult(pb::CommandResult {
        command_id: "bench".to_owned(),
        output: "b".repeat(1000),
        status: pb::CommandStatus::Succeeded as i32,
        ..Default::default()
    })
}

fn fresh_spool() -> (tempfile::TempDir, Spool) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    (dir, spool)
}

/// Acks everything (untimed) once enough has piled up.
fn trim(spool: &Spool) {
    if spool.len().unwrap() >= ACK_EVERY {
        spool.ack(spool.next_seq() - 1).unwrap();
    }
}

fn appends(c: &mut Criterion) {
    let one = record();
    let encoded_len = {
        use prost::Message;
        pb::Record::from(palisade_proto::msg::Record {
            seq: 1,
            created_at_unix_ms: 1,
            body: one.clone(),
        })
        .encoded_len()
    };
    assert!((1000..1100).contains(&encoded_len), "{encoded_len} bytes");

    let mut group = c.benchmark_group("spool_1KiB");
    group.sample_size(10);

    let (_dir, spool) = fresh_spool();
    group.throughput(Throughput::Elements(1));
    group.bench_function("append/1_caller", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for i in 0..iters {
                let body = record();
                let t = Instant::now();
                black_box(spool.append(body, i as i64).unwrap());
                spent += t.elapsed();
                trim(&spool);
            }
            spent
        })
    });
    drop(spool);

    let (_dir, spool) = fresh_spool();
    group.throughput(Throughput::Elements(1));
    group.bench_function("append/16_callers", |b| {
        b.iter_custom(|iters| {
            trim(&spool);
            let each = iters.div_ceil(CALLERS);
            let t = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..CALLERS {
                    s.spawn(|| {
                        for i in 0..each {
                            black_box(spool.append(record(), i as i64).unwrap());
                        }
                    });
                }
            });
            // Per record: the threads did `each * CALLERS >= iters` of them.
            t.elapsed().mul_f64(iters as f64 / (each * CALLERS) as f64)
        })
    });
    drop(spool);

    let (_dir, spool) = fresh_spool();
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("append_batch/256", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let batch: Vec<(RecordBody, i64)> =
                    (0..BATCH as i64).map(|i| (record(), i)).collect();
                let t = Instant::now();
                black_box(spool.append_batch(batch).unwrap());
                spent += t.elapsed();
                trim(&spool);
            }
            spent
        })
    });
    drop(spool);

    let (_dir, spool) = fresh_spool();
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("pending_after_256+ack", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut cursor = spool.next_seq() - 1;
            for _ in 0..iters {
                // Untimed: the records the sender is about to drain.
                spool
                    .append_batch((0..BATCH as i64).map(|i| (record(), i)))
                    .unwrap();
                let t = Instant::now();
                let got = spool.pending_after(cursor, BATCH).unwrap();
                let last = got.last().map(|(s, _)| *s).unwrap();
                spool.ack(last).unwrap();
                spent += t.elapsed();
                assert_eq!(got.len(), BATCH);
                cursor = last;
            }
            spent
        })
    });
    drop(spool);

    // Producer and sender at once, as in the agent: batches of 256 appended
    // while another thread drains them (pending_after 256 + ack) as the
    // uplink does; the clock stops when the last record is acked.
    let (_dir, spool) = fresh_spool();
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("pipeline/append_batch_256+drain", |b| {
        b.iter_custom(|iters| {
            let total = iters * BATCH as u64;
            let first = spool.next_seq();
            let last = first + total - 1;
            let t = Instant::now();
            std::thread::scope(|s| {
                s.spawn(|| {
                    for _ in 0..iters {
                        spool
                            .append_batch((0..BATCH as i64).map(|i| (record(), i)))
                            .unwrap();
                    }
                });
                let mut cursor = first - 1;
                while cursor < last {
                    let appended = spool.appended();
                    let got = spool.pending_after(cursor, BATCH).unwrap();
                    match got.last() {
                        Some((seq, _)) => {
                            cursor = *seq;
                            spool.ack(cursor).unwrap();
                        }
                        None => block_on(appended),
                    }
                }
            });
            t.elapsed()
        })
    });
    drop(spool);

    group.finish();
}

/// Waits for the spool's "appended" notification on this thread.
fn block_on(fut: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(fut);
}

fn config() -> Criterion {
    Criterion::default().configure_from_args()
}

criterion_group! {
    name = benches;
    config = config();
    targets = appends
}
criterion_main!(benches);
