//! Model-based tests of the spool: random sequences of appends, batches,
//! sends, acks, crashes and restarts run against the real spool and against
//! a plain in-memory model; after every step the two must agree exactly.
//!
//! Two backings: a real file in a temporary directory (a crash drops the
//! spool, as kill -9 would leave the file), and a simulated disk that knows
//! which writes were fsynced. On the simulated disk a crash is a power cut:
//! the file comes back as of its last fsync plus an arbitrary subset of the
//! 4 KiB pieces written after it, and a crash can hit in the middle of a
//! commit, after which the spool must be exactly as before or exactly as
//! after that commit.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use super::*;

// ---------------------------------------------------------------------------
// The model

#[derive(Debug, Clone, PartialEq)]
struct Model {
    next_seq: u64,
    /// seq -> the record's canonical encoding.
    pending: BTreeMap<u64, Vec<u8>>,
    stored_bytes: u64,
    dropped_total: u64,
    max_bytes: u64,
}

impl Model {
    fn new(max_bytes: u64) -> Model {
        Model {
            next_seq: 1,
            pending: BTreeMap::new(),
            stored_bytes: 0,
            dropped_total: 0,
            max_bytes,
        }
    }

    /// `None`: refused (a record larger than the bound), nothing changes.
    fn append(&mut self, records: &[(RecordBody, i64)]) -> Option<Range<u64>> {
        let first = self.next_seq;
        let encoded: Vec<(u64, Vec<u8>)> = records
            .iter()
            .zip(first..)
            .map(|((body, at), seq)| {
                let record = pb::Record::from(Record {
                    seq,
                    created_at_unix_ms: *at,
                    body: body.clone(),
                });
                (seq, record.encode_to_vec())
            })
            .collect();
        if encoded
            .iter()
            .any(|(_, e)| record_cost(e.len()) > self.max_bytes)
        {
            return None;
        }
        for (seq, e) in encoded {
            self.stored_bytes += record_cost(e.len());
            self.pending.insert(seq, e);
        }
        self.next_seq = first + records.len() as u64;
        self.evict();
        Some(first..self.next_seq)
    }

    fn ack(&mut self, up_to: u64) {
        let kept = self.pending.split_off(&(up_to + 1));
        for e in std::mem::replace(&mut self.pending, kept).values() {
            self.stored_bytes -= record_cost(e.len());
        }
        if up_to >= self.next_seq {
            self.next_seq = up_to + 1;
        }
    }

    fn rebound(&mut self, max_bytes: u64) {
        self.max_bytes = max_bytes;
        self.evict();
    }

    fn evict(&mut self) {
        while self.stored_bytes > self.max_bytes {
            let Some((_, e)) = self.pending.pop_first() else {
                panic!("the model's byte count is off");
            };
            self.stored_bytes -= record_cost(e.len());
            self.dropped_total += 1;
        }
    }

    fn stats(&self) -> SpoolStats {
        SpoolStats {
            next_seq: self.next_seq,
            records: self.pending.len() as u64,
            stored_bytes: self.stored_bytes,
            dropped_total: self.dropped_total,
        }
    }
}

// ---------------------------------------------------------------------------
// A disk that loses what was not fsynced

enum Write {
    Data { offset: usize, bytes: Vec<u8> },
    Len(usize),
}

#[derive(Default)]
struct DiskState {
    /// What the process reads: everything it wrote.
    current: Vec<u8>,
    /// What a power cut leaves for sure: the state at the last fsync.
    durable: Vec<u8>,
    /// Writes since the last fsync, in order.
    unsynced: Vec<Write>,
    /// The power is off: writes still reach `current` (the process goes on
    /// until it is dropped) but are never persisted.
    cut: bool,
    /// Cut the power after this many more writes.
    cut_after: Option<u32>,
    /// Writes and length changes so far.
    writes: u32,
}

#[derive(Clone, Default)]
struct SimDisk(Arc<Mutex<DiskState>>);

impl std::fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimDisk")
    }
}

fn out_of_range() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, "out of range")
}

impl SimDisk {
    fn state(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this write is persisted at all (counts down `cut_after`).
    fn persisting(s: &mut DiskState) -> bool {
        s.writes += 1;
        if let Some(n) = s.cut_after {
            if n == 0 {
                s.cut = true;
                s.cut_after = None;
            } else {
                s.cut_after = Some(n - 1);
            }
        }
        !s.cut
    }

    fn arm(&self, writes: u32) {
        self.state().cut_after = Some(writes);
    }

    fn cut_now(&self) {
        let mut s = self.state();
        s.cut = true;
        s.cut_after = None;
    }

    fn is_cut(&self) -> bool {
        self.state().cut
    }

    fn writes(&self) -> u32 {
        self.state().writes
    }

    /// The disk as found after the power comes back: the last fsynced state
    /// plus, depending on `seed`, all, none, or a random subset of the 4 KiB
    /// pieces written after it.
    fn after_power_loss(&self, seed: u64) -> SimDisk {
        let s = self.state();
        let mut image = s.durable.clone();
        let mode = seed % 4;
        let mut rng = seed | 1;
        let mut coin = || match mode {
            0 => true,
            1 => false,
            _ => {
                // xorshift64
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng & 1 == 1
            }
        };
        for w in &s.unsynced {
            match w {
                Write::Len(len) => {
                    if coin() {
                        image.resize(*len, 0);
                    }
                }
                Write::Data { offset, bytes } => {
                    let mut at = *offset;
                    for piece in bytes.chunks(4096) {
                        if coin() {
                            if image.len() < at + piece.len() {
                                image.resize(at + piece.len(), 0);
                            }
                            image[at..at + piece.len()].copy_from_slice(piece);
                        }
                        at += piece.len();
                    }
                }
            }
        }
        SimDisk(Arc::new(Mutex::new(DiskState {
            current: image.clone(),
            durable: image,
            ..DiskState::default()
        })))
    }
}

impl redb::StorageBackend for SimDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.state().current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let s = self.state();
        let offset = usize::try_from(offset).map_err(|_| out_of_range())?;
        let src = s
            .current
            .get(offset..offset + out.len())
            .ok_or_else(out_of_range)?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut s = self.state();
        let len = usize::try_from(len).map_err(|_| out_of_range())?;
        s.current.resize(len, 0);
        if SimDisk::persisting(&mut s) {
            s.unsynced.push(Write::Len(len));
        }
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        let mut s = self.state();
        if !s.cut {
            s.durable = s.current.clone();
            s.unsynced.clear();
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut s = self.state();
        let offset = usize::try_from(offset).map_err(|_| out_of_range())?;
        s.current
            .get_mut(offset..offset + data.len())
            .ok_or_else(out_of_range)?
            .copy_from_slice(data);
        if SimDisk::persisting(&mut s) {
            s.unsynced.push(Write::Data {
                offset,
                bytes: data.to_vec(),
            });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Operations

#[derive(Debug, Clone)]
enum Change {
    /// One record whose command output has this many bytes.
    Append(usize),
    AppendBatch(Vec<usize>),
    /// Ack up to a point between the last ack and the last record sent
    /// (0: the last ack, 255: everything sent).
    Ack(u8),
}

#[derive(Debug, Clone)]
enum Op {
    Change(Change),
    /// Read the next records after the send cursor, as the uplink does.
    Send(usize),
    /// The backend acknowledges more than was sent (a restored state dir).
    AckBeyond(u64),
    /// kill -9 (files) or a power cut (simulated disk) between operations.
    Crash {
        seed: u64,
    },
    /// The power goes after `writes` writes of this change's commit
    /// (simulated disk; on files: the change, then a crash).
    CrashDuring {
        change: Change,
        writes: u32,
        seed: u64,
    },
    /// A clean stop and start, possibly with another bound.
    Restart {
        max_bytes: u64,
    },
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        10 => 0usize..3000,
        1 => 60_000usize..70_000,
    ]
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => size().prop_map(Change::Append),
        2 => prop::collection::vec(size(), 0..24).prop_map(Change::AppendBatch),
        3 => any::<u8>().prop_map(Change::Ack),
    ]
}

const BOUNDS: [u64; 3] = [MIN_MAX_BYTES, 96 * 1024, 128 * 1024];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => change().prop_map(Op::Change),
        5 => (1usize..40).prop_map(Op::Send),
        1 => (0u64..5).prop_map(Op::AckBeyond),
        2 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
        3 => (change(), 0u32..16, any::<u64>())
            .prop_map(|(change, writes, seed)| Op::CrashDuring { change, writes, seed }),
        1 => prop::sample::select(BOUNDS.to_vec()).prop_map(|max_bytes| Op::Restart { max_bytes }),
    ]
}

// ---------------------------------------------------------------------------
// The harness

/// What a change tells the uplink's bookkeeping once it is committed.
enum Effect {
    Appended(Option<Range<u64>>),
    Acked(u64),
}

enum Backing {
    Files(tempfile::TempDir),
    Sim(SimDisk),
}

struct Harness {
    backing: Backing,
    spool: Option<Spool>,
    config: SpoolConfig,
    model: Model,
    /// The uplink's cursors: last record sent, last ack.
    sent: u64,
    acked: u64,
    /// Highest sequence number handed out by an append that is known to be
    /// committed: never handed out again.
    max_issued: u64,
    /// The model as of the last durable commit (what a power cut leaves).
    durable: Model,
    clock: i64,
}

fn body(len: usize) -> RecordBody {
    RecordBody::CommandResult(pb::CommandResult {
        command_id: "c".to_owned(),
        output: "o".repeat(len),
        status: pb::CommandStatus::Succeeded as i32,
        ..Default::default()
    })
}

impl Harness {
    fn new(backing: Backing, max_bytes: u64) -> Harness {
        let config = SpoolConfig { max_bytes };
        let mut h = Harness {
            backing,
            spool: None,
            config,
            model: Model::new(max_bytes),
            sent: 0,
            acked: 0,
            max_issued: 0,
            durable: Model::new(max_bytes),
            clock: 0,
        };
        h.open();
        h
    }

    fn open(&mut self) {
        let spool = match &self.backing {
            Backing::Files(dir) => Spool::open_with(dir.path(), self.config),
            Backing::Sim(disk) => Spool::open_on(disk.clone(), Path::new("sim"), self.config),
        };
        self.spool = Some(spool.expect("open the spool"));
        // A new connection: the backend says what it stored.
        self.sent = self.acked;
    }

    fn spool(&self) -> &Spool {
        self.spool.as_ref().expect("the spool is open")
    }

    fn records(&mut self, sizes: &[usize]) -> Vec<(RecordBody, i64)> {
        sizes
            .iter()
            .map(|&n| {
                self.clock += 1;
                (body(n), self.clock)
            })
            .collect()
    }

    fn ack_point(&self, fraction: u8) -> u64 {
        let span = u128::from(self.sent - self.acked);
        self.acked + (span * u128::from(fraction) / 255) as u64
    }

    /// Applies `change` to the spool; returns what the model predicts should
    /// follow and what the uplink learns if the change sticks.
    fn apply(&mut self, change: &Change) -> (Model, Effect) {
        let mut after = self.model.clone();
        match change {
            Change::Append(n) => {
                let records = self.records(&[*n]);
                let expected = after.append(&records);
                let (body, at) = records.into_iter().next().expect("one record");
                match self.spool().append(body, at) {
                    Ok(seq) => {
                        assert_eq!(Some(seq..seq + 1), expected, "append returned {seq}");
                        (after, Effect::Appended(expected))
                    }
                    Err(SpoolError::TooLarge { .. }) => {
                        assert_eq!(expected, None, "refused a record that fits");
                        (after, Effect::Appended(None))
                    }
                    Err(e) => panic!("append failed: {e}"),
                }
            }
            Change::AppendBatch(sizes) => {
                let records = self.records(sizes);
                let expected = after.append(&records);
                match self.spool().append_batch(records) {
                    Ok(range) => {
                        assert_eq!(Some(range.clone()), expected, "batch");
                        (after, Effect::Appended(expected))
                    }
                    Err(SpoolError::TooLarge { .. }) => {
                        assert_eq!(expected, None, "refused a batch that fits");
                        (after, Effect::Appended(None))
                    }
                    Err(e) => panic!("append_batch failed: {e}"),
                }
            }
            Change::Ack(fraction) => {
                let up_to = self.ack_point(*fraction);
                after.ack(up_to);
                self.spool().ack(up_to).expect("ack");
                (after, Effect::Acked(up_to))
            }
        }
    }

    /// The uplink's cursors after a change took effect.
    fn settle(&mut self, effect: Effect) {
        let appended = match effect {
            Effect::Acked(up_to) => {
                self.acked = up_to;
                None
            }
            Effect::Appended(r) => r,
        };
        if let Some(r) = appended.filter(|r| !r.is_empty()) {
            assert!(
                r.start > self.max_issued,
                "sequence {} reused (already issued up to {})",
                r.start,
                self.max_issued
            );
            self.max_issued = r.end - 1;
        }
    }

    /// Stops the spool abruptly and opens it again. On files the process
    /// survives and a dropped spool closes cleanly; on the simulated disk the
    /// power goes, so the state falls back to the last durable commit.
    fn crash(&mut self, seed: u64) {
        match &mut self.backing {
            Backing::Files(_) => drop(self.spool.take()),
            Backing::Sim(disk) => {
                disk.cut_now();
                drop(self.spool.take());
                *disk = disk.after_power_loss(seed);
            }
        }
        self.open();
    }

    fn on_sim(&self) -> bool {
        matches!(self.backing, Backing::Sim(_))
    }

    /// Applies a change; the model's durable state follows the spool's rule.
    fn change(&mut self, change: &Change) -> Effect {
        let before = self.model.next_seq;
        let (after, effect) = self.apply(change);
        self.model = after;
        if commit_is_durable(before, &self.model) {
            self.durable = self.model.clone();
        }
        effect
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Change(change) => {
                let effect = self.change(change);
                self.settle(effect);
            }
            Op::Send(limit) => {
                let got = self
                    .spool()
                    .pending_after(self.sent, *limit)
                    .expect("pending_after");
                let want: Vec<(u64, Vec<u8>)> = self
                    .model
                    .pending
                    .range(self.sent + 1..)
                    .take(*limit)
                    .map(|(s, e)| (*s, e.clone()))
                    .collect();
                let got: Vec<(u64, Vec<u8>)> =
                    got.into_iter().map(|(s, b)| (s, b.to_vec())).collect();
                assert_eq!(got, want, "records sent after {}", self.sent);
                if let Some((last, _)) = got.last() {
                    self.sent = *last;
                }
            }
            Op::AckBeyond(by) => {
                let up_to = self.model.next_seq - 1 + by;
                let before = self.model.next_seq;
                self.model.ack(up_to);
                self.spool().ack(up_to).expect("ack");
                if commit_is_durable(before, &self.model) {
                    self.durable = self.model.clone();
                }
                self.acked = up_to;
                self.sent = up_to;
            }
            Op::Crash { seed } => {
                self.crash(*seed);
                if self.on_sim() {
                    self.model = self.durable.clone();
                }
            }
            Op::CrashDuring {
                change,
                writes,
                seed,
            } => {
                let disk = match &self.backing {
                    Backing::Sim(disk) => Some(disk.clone()),
                    Backing::Files(_) => None,
                };
                if let Some(disk) = &disk {
                    disk.arm(*writes);
                }
                let durable_before = self.durable.clone();
                let effect = self.change(change);
                let cut = disk.is_some_and(|d| d.is_cut());
                self.crash(*seed);
                let now = self.snapshot();
                // What must be found: on files, everything (the process
                // lived on); after a power cut, the last durable commit,
                // which is this change's commit if it was durable and the
                // power went after its fsync, else the one before.
                let kept = if !self.on_sim() {
                    self.model.clone()
                } else {
                    self.durable.clone()
                };
                let lost = durable_before;
                let change_kept = if !cut || now == expected_snapshot(&kept) {
                    true
                } else if now == expected_snapshot(&lost) {
                    false
                } else {
                    panic!(
                        "after a power cut during {change:?} the spool is neither as before nor as after the commit:\n\
                         spool:  {:?}\nbefore: {:?}\nafter:  {:?}",
                        now.0,
                        lost.stats(),
                        kept.stats()
                    );
                };
                match effect {
                    // The backend's ack stands whatever the spool kept.
                    Effect::Acked(_) => self.settle(effect),
                    // Lost appends were never seen by anyone: their numbers
                    // may be issued again.
                    Effect::Appended(_) if !change_kept => {}
                    Effect::Appended(_) => self.settle(effect),
                }
                self.model = if change_kept { kept } else { lost };
                self.durable = self.model.clone();
                self.sent = self.acked;
            }
            Op::Restart { max_bytes } => {
                if let Some(spool) = self.spool.take() {
                    spool.close().expect("close");
                }
                self.config = SpoolConfig {
                    max_bytes: *max_bytes,
                };
                self.model.rebound(*max_bytes);
                self.open();
            }
        }
        // Opening commits durably, so after a crash or restart all is durable.
        if matches!(
            op,
            Op::Crash { .. } | Op::CrashDuring { .. } | Op::Restart { .. }
        ) {
            self.durable = self.model.clone();
        }
        self.check();
    }

    fn snapshot(&self) -> (SpoolStats, Vec<(u64, Vec<u8>)>) {
        let spool = self.spool();
        let pending = spool
            .pending_after(0, usize::MAX)
            .expect("pending_after")
            .into_iter()
            .map(|(s, b)| (s, b.to_vec()))
            .collect();
        (spool.stats(), pending)
    }

    fn check(&self) {
        let (stats, pending) = self.snapshot();
        assert!(
            pending.windows(2).all(|w| w[0].0 < w[1].0),
            "sequence numbers strictly increase"
        );
        assert!(
            stats.stored_bytes <= self.config.max_bytes,
            "{} bytes stored, bound {}",
            stats.stored_bytes,
            self.config.max_bytes
        );
        assert!(
            stats.next_seq > self.max_issued,
            "next_seq {} would reuse",
            stats.next_seq
        );
        let want = expected_snapshot(&self.model);
        assert_eq!(stats, want.0, "counters");
        assert_eq!(pending, want.1, "pending records");
        let spool = self.spool();
        assert_eq!(spool.len().expect("len"), stats.records);
        assert_eq!(spool.next_seq(), stats.next_seq);
        assert_eq!(spool.dropped_total(), stats.dropped_total);
    }
}

/// The spool's rule: a commit that issues or skips sequence numbers is
/// fsynced; one that only deletes acknowledged records is not.
fn commit_is_durable(next_seq_before: u64, after: &Model) -> bool {
    after.next_seq != next_seq_before
}

fn expected_snapshot(model: &Model) -> (SpoolStats, Vec<(u64, Vec<u8>)>) {
    (
        model.stats(),
        model.pending.iter().map(|(s, e)| (*s, e.clone())).collect(),
    )
}

fn run(backing: Backing, ops: &[Op]) {
    let mut h = Harness::new(backing, MIN_MAX_BYTES);
    h.check();
    for op in ops {
        h.step(op);
    }
    // Whatever happened, one last crash and restart keep everything.
    h.step(&Op::Crash { seed: 7 });
    h.step(&Op::Restart {
        max_bytes: MIN_MAX_BYTES,
    });
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The real spool in a temporary directory; a crash drops it as kill -9
    /// leaves the file (every commit was fsynced, the page cache survives).
    #[test]
    fn the_spool_on_files_keeps_the_models_invariants(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().expect("tempdir");
        run(Backing::Files(dir), &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The spool on a disk that loses everything not fsynced at a power cut,
    /// also in the middle of a commit.
    #[test]
    fn the_spool_survives_power_cuts(ops in prop::collection::vec(op(), 1..60)) {
        run(Backing::Sim(SimDisk::default()), &ops);
    }
}

#[test]
fn a_power_cut_in_every_possible_place_of_a_commit_is_all_or_nothing() {
    // Deterministic sweep: cut the power after each write of one commit in
    // turn (and after all of them, before the fsync); the writes after the
    // last fsync then all land, none lands, or random pieces land (seed % 4
    // is 0, 1, or 2 and 3).
    let setup = |disk: SimDisk| {
        let mut h = Harness::new(Backing::Sim(disk), MIN_MAX_BYTES);
        h.step(&Op::Change(Change::AppendBatch(vec![900; 40])));
        h.step(&Op::Send(10));
        h.step(&Op::Change(Change::Ack(255)));
        h
    };
    let change = Change::AppendBatch(vec![2000; 30]);
    let commit_writes = {
        let disk = SimDisk::default();
        let mut h = setup(disk.clone());
        let before = disk.writes();
        h.step(&Op::Change(change.clone()));
        disk.writes() - before
    };
    assert!(commit_writes > 1, "{commit_writes} writes");
    let seeds = [0, 1, 2, 3, 0x9E37_79B9_7F4A_7C16, 0xD1B5_4A32_D192_ED07];
    let mut outcomes = [0usize; 2];
    for writes in 0..=commit_writes {
        for seed in seeds {
            let mut h = setup(SimDisk::default());
            let before = h.model.next_seq;
            h.step(&Op::CrashDuring {
                change: change.clone(),
                writes,
                seed,
            });
            outcomes[usize::from(h.model.next_seq != before)] += 1;
            h.step(&Op::Change(Change::Append(100)));
        }
    }
    assert!(
        outcomes[0] > 0 && outcomes[1] > 0,
        "the sweep saw the commit lost {} times and kept {} times: it should see both",
        outcomes[0],
        outcomes[1]
    );
}
