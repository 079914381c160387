//! The stored form of metric samples: a chunk holds a run of one host's
//! samples column by column.
//!
//! One row per chunk instead of one row per sample is what lets ingest keep
//! up with a fleet: the database's B-tree and page work is paid once per
//! chunk, and a chunk of 10-second samples is ~15 bytes per sample instead
//! of ~400.
//!
//! Layout (version 1), all integers LEB128 varints:
//! - `1` (the version), the sample count `n`;
//! - a string table: its length, then each string as length + UTF-8 bytes
//!   (mount points, devices, filesystem types, interface names, each once);
//! - `collected_at` and `seq`: the first value zigzag-encoded, then zigzag
//!   deltas from the previous sample;
//! - each float column (`cpu_percent`, `load_1`, `load_5`, `load_15`): the
//!   IEEE bits XOR the previous sample's (an unchanged value is one byte);
//! - each counter column (memory, swap, uptime, process count): zigzag
//!   deltas of the wrapping difference from the previous sample;
//! - filesystems, per sample: their count, then per filesystem three string
//!   indices and three counters as zigzag deltas from the filesystem at the
//!   same position in the previous sample;
//! - network, per sample: the count, then per interface a string index and
//!   two counters, deltas as above.
//!
//! Encoding is exact: `decode(encode(s)) == s` for every sample list (a
//! property test checks it). Decoding takes bytes from the database, which
//! an operator or a bug could have damaged: every count is bounded by the
//! bytes left, every index checked, and a damaged chunk is an error, never a
//! panic (a fuzz target checks it).

use std::collections::HashMap;

use super::{Filesystem, NetworkCounters, Sample};

const VERSION: u8 = 1;

/// Why a chunk could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("metric chunk ends early (reading {0})")]
    Truncated(&'static str),
    #[error("metric chunk of unknown version {0}")]
    UnknownVersion(u8),
    #[error("metric chunk has an invalid {0}")]
    Invalid(&'static str),
    #[error("metric chunk has {0} bytes after its end")]
    Trailing(usize),
}

/// The samples of a chunk, in the order given (the store passes them sorted
/// by `(collected_at, seq)`).
pub fn encode(samples: &[Sample]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + samples.len() * 24);
    out.push(VERSION);
    put(&mut out, samples.len() as u64);

    // Filesystems and interfaces first, into their own buffer: that pass
    // builds the string table, which comes before them in the chunk.
    let mut table = Strings::default();
    let mut tail = Vec::with_capacity(samples.len() * 8);
    let mut previous: &[Filesystem] = &[];
    let mut previous_ids: Vec<[u64; 3]> = Vec::new();
    let mut ids: Vec<[u64; 3]> = Vec::new();
    for s in samples {
        put(&mut tail, s.filesystems.len() as u64);
        ids.clear();
        for (i, f) in s.filesystems.iter().enumerate() {
            let before = previous.get(i);
            let same = before.zip(previous_ids.get(i));
            let mut id = [0u64; 3];
            for (k, (text, old)) in [
                (&f.mount_point, before.map(|b| &b.mount_point)),
                (&f.device, before.map(|b| &b.device)),
                (&f.fs_type, before.map(|b| &b.fs_type)),
            ]
            .into_iter()
            .enumerate()
            {
                id[k] = match (old, same) {
                    (Some(old), Some((_, old_ids))) if old == text => old_ids[k],
                    _ => table.id(text),
                };
                put(&mut tail, id[k]);
            }
            ids.push(id);
            put_delta(
                &mut tail,
                f.total_bytes,
                before.map_or(0, |b| b.total_bytes),
            );
            put_delta(&mut tail, f.used_bytes, before.map_or(0, |b| b.used_bytes));
            put_delta(
                &mut tail,
                f.available_bytes,
                before.map_or(0, |b| b.available_bytes),
            );
        }
        previous = &s.filesystems;
        std::mem::swap(&mut ids, &mut previous_ids);
    }
    let mut previous: &[NetworkCounters] = &[];
    let mut previous_ids: Vec<u64> = Vec::new();
    let mut ids: Vec<u64> = Vec::new();
    for s in samples {
        put(&mut tail, s.network.len() as u64);
        ids.clear();
        for (i, n) in s.network.iter().enumerate() {
            let before = previous.get(i);
            let id = match (before, previous_ids.get(i)) {
                (Some(b), Some(&id)) if b.interface == n.interface => id,
                _ => table.id(&n.interface),
            };
            put(&mut tail, id);
            ids.push(id);
            put_delta(&mut tail, n.rx_bytes, before.map_or(0, |b| b.rx_bytes));
            put_delta(&mut tail, n.tx_bytes, before.map_or(0, |b| b.tx_bytes));
        }
        previous = &s.network;
        std::mem::swap(&mut ids, &mut previous_ids);
    }
    put(&mut out, table.strings.len() as u64);
    for text in &table.strings {
        put(&mut out, text.len() as u64);
        out.extend_from_slice(text.as_bytes());
    }

    put_deltas(&mut out, samples.iter().map(|s| s.collected_at as u64));
    put_deltas(&mut out, samples.iter().map(|s| s.seq));
    for column in [
        |s: &Sample| s.cpu_percent,
        |s: &Sample| s.load_1,
        |s: &Sample| s.load_5,
        |s: &Sample| s.load_15,
    ] {
        let mut previous = 0u64;
        for s in samples {
            let bits = column(s).to_bits();
            put(&mut out, bits ^ previous);
            previous = bits;
        }
    }
    put_deltas(&mut out, samples.iter().map(|s| s.memory_total_bytes));
    put_deltas(&mut out, samples.iter().map(|s| s.memory_available_bytes));
    put_deltas(&mut out, samples.iter().map(|s| s.swap_total_bytes));
    put_deltas(&mut out, samples.iter().map(|s| s.swap_free_bytes));
    put_deltas(&mut out, samples.iter().map(|s| s.uptime_seconds));
    put_deltas(&mut out, samples.iter().map(|s| u64::from(s.process_count)));

    out.extend_from_slice(&tail);
    out
}

/// The samples of a chunk [`encode`] wrote.
pub fn decode(bytes: &[u8]) -> Result<Vec<Sample>, ChunkError> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.byte("version")?;
    if version != VERSION {
        return Err(ChunkError::UnknownVersion(version));
    }
    // Every sample takes at least one byte per column, so a count beyond
    // the bytes left is damage (and never a huge allocation).
    let n = r.count("sample count")?;
    let string_count = r.count("string table")?;
    let mut strings: Vec<String> = Vec::with_capacity(string_count);
    for _ in 0..string_count {
        let len = r.count("string length")?;
        let raw = r.take(len, "string")?;
        let text = std::str::from_utf8(raw).map_err(|_| ChunkError::Invalid("string"))?;
        strings.push(text.to_owned());
    }
    let string = |i: u64| -> Result<String, ChunkError> {
        usize::try_from(i)
            .ok()
            .and_then(|i| strings.get(i))
            .cloned()
            .ok_or(ChunkError::Invalid("string index"))
    };

    let collected_at = r.deltas(n, "collected_at")?;
    let seq = r.deltas(n, "seq")?;
    let mut floats: [Vec<f64>; 4] = Default::default();
    for column in &mut floats {
        column.reserve(n);
        let mut previous = 0u64;
        for _ in 0..n {
            let bits = r.varint("float")? ^ previous;
            column.push(f64::from_bits(bits));
            previous = bits;
        }
    }
    let memory_total = r.deltas(n, "memory_total_bytes")?;
    let memory_available = r.deltas(n, "memory_available_bytes")?;
    let swap_total = r.deltas(n, "swap_total_bytes")?;
    let swap_free = r.deltas(n, "swap_free_bytes")?;
    let uptime = r.deltas(n, "uptime_seconds")?;
    let processes = r.deltas(n, "process_count")?;

    let mut filesystems: Vec<Vec<Filesystem>> = Vec::with_capacity(n);
    for _ in 0..n {
        let count = r.count("filesystem count")?;
        let mut list: Vec<Filesystem> = Vec::with_capacity(count);
        for i in 0..count {
            let before = filesystems.last().and_then(|p: &Vec<Filesystem>| p.get(i));
            let mount_point = string(r.varint("mount point")?)?;
            let device = string(r.varint("device")?)?;
            let fs_type = string(r.varint("fs type")?)?;
            let total_bytes = r.delta(before.map_or(0, |b| b.total_bytes), "total_bytes")?;
            let used_bytes = r.delta(before.map_or(0, |b| b.used_bytes), "used_bytes")?;
            let available_bytes =
                r.delta(before.map_or(0, |b| b.available_bytes), "available_bytes")?;
            list.push(Filesystem {
                mount_point,
                device,
                fs_type,
                total_bytes,
                used_bytes,
                available_bytes,
            });
        }
        filesystems.push(list);
    }
    let mut network: Vec<Vec<NetworkCounters>> = Vec::with_capacity(n);
    for _ in 0..n {
        let count = r.count("interface count")?;
        let mut list: Vec<NetworkCounters> = Vec::with_capacity(count);
        for i in 0..count {
            let before = network.last().and_then(|p: &Vec<NetworkCounters>| p.get(i));
            let interface = string(r.varint("interface")?)?;
            let rx_bytes = r.delta(before.map_or(0, |b| b.rx_bytes), "rx_bytes")?;
            let tx_bytes = r.delta(before.map_or(0, |b| b.tx_bytes), "tx_bytes")?;
            list.push(NetworkCounters {
                interface,
                rx_bytes,
                tx_bytes,
            });
        }
        network.push(list);
    }
    if r.at != bytes.len() {
        return Err(ChunkError::Trailing(bytes.len() - r.at));
    }

    let [cpu, load_1, load_5, load_15] = floats;
    let mut samples = Vec::with_capacity(n);
    for (i, (filesystems, network)) in filesystems.into_iter().zip(network).enumerate() {
        samples.push(Sample {
            seq: seq[i],
            collected_at: collected_at[i] as i64,
            cpu_percent: cpu[i],
            memory_total_bytes: memory_total[i],
            memory_available_bytes: memory_available[i],
            swap_total_bytes: swap_total[i],
            swap_free_bytes: swap_free[i],
            load_1: load_1[i],
            load_5: load_5[i],
            load_15: load_15[i],
            uptime_seconds: uptime[i],
            process_count: u32::try_from(processes[i])
                .map_err(|_| ChunkError::Invalid("process count"))?,
            filesystems,
            network,
        });
    }
    Ok(samples)
}

/// The string table being built: each distinct string once, in order of
/// first use.
#[derive(Default)]
struct Strings<'a> {
    strings: Vec<&'a str>,
    ids: HashMap<&'a str, u64>,
}

impl<'a> Strings<'a> {
    fn id(&mut self, text: &'a str) -> u64 {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let id = self.strings.len() as u64;
        self.strings.push(text);
        self.ids.insert(text, id);
        id
    }
}

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_delta(out: &mut Vec<u8>, value: u64, previous: u64) {
    put(out, zigzag(value.wrapping_sub(previous) as i64));
}

fn put_deltas(out: &mut Vec<u8>, values: impl Iterator<Item = u64>) {
    let mut previous = 0u64;
    for v in values {
        put_delta(out, v, previous);
        previous = v;
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self, what: &'static str) -> Result<u8, ChunkError> {
        let b = *self.bytes.get(self.at).ok_or(ChunkError::Truncated(what))?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, ChunkError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte(what)?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(ChunkError::Invalid(what));
            }
            value |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ChunkError::Invalid(what))
    }

    /// A count or length: no larger than the bytes left.
    fn count(&mut self, what: &'static str) -> Result<usize, ChunkError> {
        let v = self.varint(what)?;
        let left = self.bytes.len() - self.at;
        usize::try_from(v)
            .ok()
            .filter(|&v| v <= left)
            .ok_or(ChunkError::Invalid(what))
    }

    fn take(&mut self, len: usize, what: &'static str) -> Result<&[u8], ChunkError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(ChunkError::Truncated(what))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn delta(&mut self, previous: u64, what: &'static str) -> Result<u64, ChunkError> {
        Ok(previous.wrapping_add(unzigzag(self.varint(what)?) as u64))
    }

    fn deltas(&mut self, n: usize, what: &'static str) -> Result<Vec<u64>, ChunkError> {
        let mut values = Vec::with_capacity(n);
        let mut previous = 0u64;
        for _ in 0..n {
            previous = self.delta(previous, what)?;
            values.push(previous);
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample(seq: u64, at: i64) -> Sample {
        Sample {
            seq,
            collected_at: at,
            cpu_percent: 12.5,
            memory_total_bytes: 16 << 30,
            memory_available_bytes: 9 << 30,
            swap_total_bytes: 2 << 30,
            swap_free_bytes: 1 << 30,
            load_1: 0.42,
            load_5: 0.37,
            load_15: 0.31,
            uptime_seconds: 1_234_567,
            process_count: 211,
            filesystems: vec![Filesystem {
                mount_point: "/".into(),
                device: "/dev/vda1".into(),
                fs_type: "ext4".into(),
                total_bytes: 100 << 30,
                used_bytes: 41 << 30,
                available_bytes: 54 << 30,
            }],
            network: vec![NetworkCounters {
                interface: "eth0".into(),
                rx_bytes: 1_234_567_890,
                tx_bytes: 987_654_321,
            }],
        }
    }

    #[test]
    fn a_run_of_samples_is_small_and_comes_back_unchanged() {
        let samples: Vec<Sample> = (0..360)
            .map(|i| {
                let mut s = sample(100 + i, 1_750_000_000_000 + i as i64 * 10_000);
                s.cpu_percent = (i % 7) as f64 * 3.5;
                s.uptime_seconds += i * 10;
                s.network[0].rx_bytes += i * 1500;
                s
            })
            .collect();
        let bytes = encode(&samples);
        assert_eq!(decode(&bytes).unwrap(), samples);
        // A JSON row per sample took ~400 bytes; a chunk takes a fraction.
        assert!(
            bytes.len() < samples.len() * 40,
            "{} bytes for {} samples",
            bytes.len(),
            samples.len()
        );
    }

    #[test]
    fn an_empty_chunk_and_extreme_values_round_trip() {
        assert_eq!(decode(&encode(&[])).unwrap(), Vec::<Sample>::new());
        let mut a = sample(u64::MAX, i64::MIN);
        a.cpu_percent = f64::NAN;
        a.memory_total_bytes = u64::MAX;
        a.process_count = u32::MAX;
        let mut b = sample(0, i64::MAX);
        b.load_1 = -0.0;
        b.filesystems.clear();
        b.network.push(NetworkCounters {
            interface: "wg0".into(),
            rx_bytes: 0,
            tx_bytes: u64::MAX,
        });
        let bytes = encode(&[a.clone(), b.clone()]);
        let back = decode(&bytes).unwrap();
        assert!(back[0].cpu_percent.is_nan());
        assert_eq!(back[0].memory_total_bytes, u64::MAX);
        assert_eq!(back[1], b);
        assert_eq!(back[1].load_1.to_bits(), (-0.0f64).to_bits());
    }

    #[test]
    fn damage_is_an_error() {
        let bytes = encode(&[sample(1, 1), sample(2, 2)]);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), Err(ChunkError::Trailing(1)));
        let mut other = bytes.clone();
        other[0] = 9;
        assert_eq!(decode(&other), Err(ChunkError::UnknownVersion(9)));
        // A count far beyond the bytes there are.
        assert!(decode(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }

    fn any_sample() -> impl Strategy<Value = Sample> {
        let fs = (
            "[a-z/]{0,8}",
            "[a-z/]{0,8}",
            "[a-z]{0,4}",
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(m, d, t, a, b, c)| Filesystem {
                mount_point: m,
                device: d,
                fs_type: t,
                total_bytes: a,
                used_bytes: b,
                available_bytes: c,
            });
        let net =
            ("[a-z0-9]{0,6}", any::<u64>(), any::<u64>()).prop_map(|(i, rx, tx)| NetworkCounters {
                interface: i,
                rx_bytes: rx,
                tx_bytes: tx,
            });
        (
            (any::<u64>(), any::<i64>(), any::<f64>(), any::<f64>()),
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
            (any::<u64>(), any::<u32>(), any::<f64>(), any::<f64>()),
            prop::collection::vec(fs, 0..4),
            prop::collection::vec(net, 0..3),
        )
            .prop_map(
                |((seq, at, cpu, l1), (mt, ma, st, sf), (up, pc, l5, l15), fs, net)| Sample {
                    seq,
                    collected_at: at,
                    cpu_percent: cpu,
                    memory_total_bytes: mt,
                    memory_available_bytes: ma,
                    swap_total_bytes: st,
                    swap_free_bytes: sf,
                    load_1: l1,
                    load_5: l5,
                    load_15: l15,
                    uptime_seconds: up,
                    process_count: pc,
                    filesystems: fs,
                    network: net,
                },
            )
    }

    proptest! {
        #[test]
        fn every_sample_list_round_trips(samples in prop::collection::vec(any_sample(), 0..20)) {
            let back = decode(&encode(&samples)).unwrap();
            prop_assert_eq!(back.len(), samples.len());
            for (a, b) in back.iter().zip(&samples) {
                // NaN != NaN: compare floats by their bits.
                prop_assert_eq!(a.cpu_percent.to_bits(), b.cpu_percent.to_bits());
                prop_assert_eq!(a.load_1.to_bits(), b.load_1.to_bits());
                prop_assert_eq!(a.load_5.to_bits(), b.load_5.to_bits());
                prop_assert_eq!(a.load_15.to_bits(), b.load_15.to_bits());
                let (mut a, mut b) = (a.clone(), b.clone());
                for s in [&mut a, &mut b] {
                    s.cpu_percent = 0.0;
                    s.load_1 = 0.0;
                    s.load_5 = 0.0;
                    s.load_15 = 0.0;
                }
                prop_assert_eq!(a, b);
            }
        }

        #[test]
        fn no_bytes_make_decode_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
