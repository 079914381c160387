//! Host metrics over time: raw samples, rollups, retention.
//!
//! - this file: the model ([`Sample`] and its parts, [`Rollup`],
//!   [`Resolution`]) and the conversion from the wire;
//! - [`chunk`]: the stored form of samples, a run of one host's samples
//!   column by column;
//! - [`store`]: batched ingest into chunks, reads for charts, the latest
//!   sample;
//! - [`maintenance`]: rolling samples up into 1-minute and 1-hour buckets,
//!   retention, and PostgreSQL's daily partitions.
//!
//! Invariants: a sample is identified by (host, collected_at, seq), so a
//! resent record is stored once (ingest looks it up in the chunks covering
//! it); a chunk holds one host's samples of one UTC hour, at most
//! [`store::CHUNK_MAX_SAMPLES`], and ingest writes one row per chunk
//! (a short run is appended to the hour's newest chunk while it has room); rollups are
//! recomputed from what is stored (idempotent: running a job twice changes
//! nothing), so a late sample only marks its bucket dirty.

use palisade_proto::pb;
use serde::{Deserialize, Serialize};

use crate::db::Millis;

pub mod chunk;
pub mod maintenance;
pub mod store;

/// One mounted filesystem in a sample (stored as JSON in the sample row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Filesystem {
    pub mount_point: String,
    pub device: String,
    pub fs_type: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
}

/// One network interface's counters in a sample (stored as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkCounters {
    pub interface: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// One metrics sample of one host.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The record sequence it arrived in.
    pub seq: u64,
    /// The agent's clock.
    pub collected_at: Millis,
    pub cpu_percent: f64,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
    pub load_1: f64,
    pub load_5: f64,
    pub load_15: f64,
    pub uptime_seconds: u64,
    pub process_count: u32,
    pub filesystems: Vec<Filesystem>,
    pub network: Vec<NetworkCounters>,
}

impl Sample {
    /// The sample a metrics record carries (already validated by the
    /// decoder: finite values, sane sizes).
    pub fn from_wire(seq: u64, m: &pb::Metrics) -> Sample {
        Sample {
            seq,
            collected_at: m.collected_at_unix_ms,
            cpu_percent: m.cpu_percent,
            memory_total_bytes: m.memory_total_bytes,
            memory_available_bytes: m.memory_available_bytes,
            swap_total_bytes: m.swap_total_bytes,
            swap_free_bytes: m.swap_free_bytes,
            load_1: m.load_1,
            load_5: m.load_5,
            load_15: m.load_15,
            uptime_seconds: m.uptime_seconds,
            process_count: m.process_count,
            filesystems: m
                .filesystems
                .iter()
                .map(|f| Filesystem {
                    mount_point: f.mount_point.clone(),
                    device: f.device.clone(),
                    fs_type: f.fs_type.clone(),
                    total_bytes: f.total_bytes,
                    used_bytes: f.used_bytes,
                    available_bytes: f.available_bytes,
                })
                .collect(),
            network: m
                .network
                .iter()
                .map(|n| NetworkCounters {
                    interface: n.interface.clone(),
                    rx_bytes: n.rx_bytes,
                    tx_bytes: n.tx_bytes,
                })
                .collect(),
        }
    }

    pub fn memory_used_bytes(&self) -> u64 {
        self.memory_total_bytes
            .saturating_sub(self.memory_available_bytes)
    }

    pub fn swap_used_bytes(&self) -> u64 {
        self.swap_total_bytes.saturating_sub(self.swap_free_bytes)
    }
}

/// How fine a series is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Every sample as collected.
    Raw,
    Minute,
    Hour,
}

impl Resolution {
    /// Bucket width in milliseconds (0 for raw).
    pub fn millis(self) -> Millis {
        match self {
            Resolution::Raw => 0,
            Resolution::Minute => 60_000,
            Resolution::Hour => 3_600_000,
        }
    }
}

/// Aggregates of one host's samples over one bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollup {
    /// Start of the bucket.
    pub bucket: Millis,
    pub samples: u64,
    pub cpu_avg: f64,
    pub cpu_max: f64,
    pub memory_used_avg: f64,
    pub memory_used_max: u64,
    pub memory_total: u64,
    pub swap_used_avg: f64,
    pub load_1_avg: f64,
    pub load_1_max: f64,
    pub process_count_avg: f64,
}

/// A point of a chart: time and value.
pub type Point = (Millis, f64);
