//! Writes a synthetic Debian root for measuring the collector's reading:
//! `make_package_root DIR INSTALLED AVAILABLE` makes DIR with a dpkg status
//! file of INSTALLED packages and apt lists (a normal and a security suite,
//! with their Release files) carrying AVAILABLE entries, among them a newer
//! version of every tenth installed package (one in five of those from the
//! security suite). Then, for BENCHMARKS.md:
//! `/usr/bin/time -f "%U %S %M" target/release/examples/read_packages DIR`.

use std::fmt::Write as _;
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(installed), Some(available)) = (args.next(), args.next(), args.next())
    else {
        anyhow::bail!("usage: make_package_root DIR INSTALLED AVAILABLE");
    };
    let installed: usize = installed.parse()?;
    let available: usize = available.parse()?;
    let root = Path::new(&dir);
    let lists = root.join("var/lib/apt/lists");
    std::fs::create_dir_all(root.join("var/lib/dpkg"))?;
    std::fs::create_dir_all(&lists)?;
    std::fs::create_dir_all(root.join("etc/apt"))?;
    // The running kernel is read from the root's /proc.
    if !root.join("proc").exists() {
        std::os::unix::fs::symlink("/proc", root.join("proc"))?;
    }

    let mut status = String::new();
    for i in 0..installed {
        let _ = write!(
            status,
            "Package: pkg{i:05}\nStatus: install ok installed\nPriority: optional\n\
             Section: libs\nInstalled-Size: {size}\nMaintainer: Debian <debian@example.org>\n\
             Architecture: amd64\nMulti-Arch: same\nSource: src{src:05}\nVersion: 1.{i}-1\n\
             Depends: libc6 (>= 2.36), pkg{dep:05} (>= 1.0)\n\
             Description: synthetic package {i}\n a package made for measuring\n\n",
            size = 100 + i % 900,
            src = i / 3,
            dep = (i + 1) % installed,
        );
    }
    std::fs::write(root.join("var/lib/dpkg/status"), status)?;

    let mut main = String::new();
    let mut security = String::new();
    for i in 0..available {
        let (name, version, to_security) = if i < installed {
            let newer = i % 10 == 0;
            let version = if newer {
                format!("1.{i}-2")
            } else {
                format!("1.{i}-1")
            };
            (format!("pkg{i:05}"), version, newer && i % 50 == 0)
        } else {
            (format!("other{i:06}"), "2.0-1".to_owned(), false)
        };
        let target = if to_security {
            &mut security
        } else {
            &mut main
        };
        let _ = write!(
            target,
            "Package: {name}\nVersion: {version}\nInstalled-Size: 512\n\
             Maintainer: Debian <debian@example.org>\nArchitecture: amd64\n\
             Depends: libc6 (>= 2.36)\nDescription: synthetic package\n\
             Section: libs\nPriority: optional\nFilename: pool/main/{name}_{version}_amd64.deb\n\
             Size: 12345\nSHA256: {sha}\n\n",
            sha = "0".repeat(64),
        );
    }
    for (suite, label, packages) in [
        ("bookworm", "Debian", main),
        ("bookworm-security", "Debian-Security", security),
    ] {
        let base = format!("deb.example.org_debian_dists_{suite}");
        std::fs::write(
            lists.join(format!("{base}_main_binary-amd64_Packages")),
            packages,
        )?;
        std::fs::write(
            lists.join(format!("{base}_Release")),
            format!(
                "Origin: Debian\nLabel: {label}\nSuite: {suite}\nCodename: {suite}\n\
                 Date: Sat, 01 Jun 2024 00:00:00 UTC\nArchitectures: amd64\nComponents: main\n"
            ),
        )?;
    }
    println!(
        "{}: {installed} installed, {available} available",
        root.display()
    );
    Ok(())
}
