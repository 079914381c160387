//! What the collector's package inventory costs on a Debian host: reading
//! a 2,000-package dpkg status file, and the whole dist-upgrade plan (status
//! file, a 60,000-entry main index plus a 1,500-entry security index, both
//! as stored: lz4 under `Acquire::GzipIndexes` and plain, and pins).
//!
//! `cargo bench -p palisade-packages --bench apt -- --warm-up-time 1 --measurement-time 5`
//!
//! The inputs are generated with the field sizes of Debian 12's own files
//! (descriptions, dependency lists), so the figures do not depend on the
//! machine's package lists.

#![allow(clippy::unwrap_used)]

use std::fmt::Write;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use palisade_packages::deb::StatusFile;
use palisade_packages::deb::apt::{AptState, NamedFile};
use palisade_packages::deb::upgrade::Options;

const INSTALLED: usize = 2_000;
const AVAILABLE: usize = 60_000;
const SECURITY: usize = 1_500;

fn description() -> String {
    let mut text = String::from("Description: a package of the benchmark\n");
    for _ in 0..8 {
        text.push_str(
            " This line stands for the long description that every Debian package has.\n",
        );
    }
    text
}

fn depends(i: usize) -> String {
    format!(
        "Depends: libc6 (>= 2.34), pkg{} (>= 1.0-1), pkg{} | pkg{}, debconf (>= 0.5) | debconf-2.0\n",
        (i * 7) % INSTALLED,
        (i * 13) % INSTALLED,
        (i * 17) % AVAILABLE
    )
}

fn status_file() -> Vec<u8> {
    let mut out = String::new();
    for name in ["libc6", "debconf"] {
        writeln!(out, "Package: {name}\nStatus: install ok installed\nVersion: 2.36-9\nArchitecture: amd64\n{}", description()).unwrap();
    }
    for i in 0..INSTALLED {
        write!(
            out,
            "Package: pkg{i}\nStatus: install ok installed\nPriority: optional\nSection: libs\n\
             Installed-Size: 1234\nMaintainer: Debian <debian@example.invalid>\nArchitecture: amd64\n\
             Multi-Arch: same\nSource: src{}\nVersion: 1.{i}-1\n{}{}\n",
            i / 3,
            depends(i),
            description()
        )
        .unwrap();
    }
    out.into_bytes()
}

fn index(range: std::ops::Range<usize>, version: &str) -> Vec<u8> {
    let mut out = String::new();
    for i in range {
        write!(
            out,
            "Package: pkg{i}\nVersion: 1.{i}-{version}\nInstalled-Size: 1234\n\
             Maintainer: Debian <debian@example.invalid>\nArchitecture: amd64\nSource: src{}\n{}\
             {}Description-md5: 0123456789abcdef0123456789abcdef\nSection: libs\nPriority: optional\n\
             Filename: pool/main/s/src{}/pkg{i}_1.{i}-{version}_amd64.deb\nSize: 123456\n\
             SHA256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n\n",
            i / 3,
            depends(i),
            description(),
            i / 3
        )
        .unwrap();
    }
    out.into_bytes()
}

fn lz4(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn lists() -> Vec<NamedFile> {
    let release = |suite: &str, label: &str| {
        format!("Origin: Debian\nLabel: {label}\nSuite: {suite}\nCodename: {suite}\nComponents: main\nArchitectures: amd64\n")
            .into_bytes()
    };
    vec![
        NamedFile {
            name: "deb.debian.org_debian_dists_bookworm_InRelease".into(),
            contents: release("bookworm", "Debian"),
        },
        NamedFile {
            name: "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4".into(),
            contents: lz4(&index(0..AVAILABLE, "1")),
        },
        NamedFile {
            name: "deb.debian.org_debian-security_dists_bookworm-security_InRelease".into(),
            contents: release("bookworm-security", "Debian-Security"),
        },
        NamedFile {
            name:
                "deb.debian.org_debian-security_dists_bookworm-security_main_binary-amd64_Packages"
                    .into(),
            contents: index(0..SECURITY, "1+deb12u1"),
        },
    ]
}

fn bench(c: &mut Criterion) {
    let status = status_file();
    let lists = lists();
    let preferences = [NamedFile {
        name: "pins".into(),
        contents: b"Package: pkg1*\nPin: release a=bookworm\nPin-Priority: 600\n".to_vec(),
    }];
    let options = Options {
        native_architecture: "amd64".into(),
        default_release: None,
        phasing: true,
    };
    // The generated system is what the comment says.
    let state = AptState::from_files(&status, &lists, &preferences).unwrap();
    assert!(state.problems.is_empty() && state.status.problems.is_empty());
    assert_eq!(state.status.installed().count(), INSTALLED + 2);
    let plan = state.plan(&options);
    // Every security version is an update, except for the packages the pin
    // keeps on bookworm's version (the installed one).
    let pinned = (0..SECURITY)
        .filter(|i| i.to_string().starts_with('1'))
        .count();
    assert_eq!(plan.pending().count(), SECURITY - pinned);
    drop(state);

    let mut group = c.benchmark_group("apt");
    group.sample_size(10);
    group.throughput(Throughput::Elements(INSTALLED as u64));
    group.bench_function("status file, 2,000 packages", |b| {
        b.iter(|| StatusFile::parse(black_box(&status)).unwrap())
    });
    group.bench_function("read: status, 61,500 available, pins", |b| {
        b.iter(|| AptState::from_files(black_box(&status), &lists, &preferences).unwrap())
    });
    group.bench_function("plan: status, 61,500 available, pins", |b| {
        b.iter(|| {
            let state = AptState::from_files(black_box(&status), &lists, &preferences).unwrap();
            state.plan(&options)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
