//! The APT repository: a flat pool plus one suite, `stable`, component
//! `main`, signed as `InRelease` and `Release` + `Release.gpg`.
//!
//! apt-ftparchive (apt-utils) writes the indexes; this module picks the
//! order and the date so that the same packages give the same repository.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use super::gpg::Signer;
use crate::util;

pub const SUITE: &str = "stable";
pub const COMPONENT: &str = "main";
pub const ARCHITECTURE: &str = "amd64";

/// Writes the repository for `debs` into `repo` (which must not exist).
pub fn write_repository(
    repo: &Path,
    debs: &[PathBuf],
    date: u64,
    signer: Option<&Signer>,
) -> anyhow::Result<()> {
    let mut pool_dirs = Vec::new();
    for deb in debs {
        let file_name = super::file_name(deb).to_string_lossy().into_owned();
        let package = file_name
            .split('_')
            .next()
            .filter(|p| !p.is_empty())
            .with_context(|| format!("{file_name} is not named <package>_<version>_<arch>.deb"))?
            .to_owned();
        let first = &package[..1];
        let pool_dir = PathBuf::from(format!("pool/{COMPONENT}/{first}/{package}"));
        let dir = repo.join(&pool_dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::copy(deb, dir.join(&file_name))
            .with_context(|| format!("cannot copy {} into {}", deb.display(), dir.display()))?;
        pool_dirs.push(pool_dir);
    }
    pool_dirs.sort();
    pool_dirs.dedup();

    let suite_dir = repo.join("dists").join(SUITE);
    let binary_dir = suite_dir
        .join(COMPONENT)
        .join(format!("binary-{ARCHITECTURE}"));
    std::fs::create_dir_all(&binary_dir)
        .with_context(|| format!("cannot create {}", binary_dir.display()))?;

    // One directory at a time, in sorted order: the index does not depend on
    // the order the file system lists files in.
    let mut packages = String::new();
    for dir in &pool_dirs {
        let mut cmd = Command::new("apt-ftparchive");
        cmd.current_dir(repo).arg("packages").arg(dir);
        packages.push_str(&util::output(&mut cmd)?);
    }
    let packages_path = binary_dir.join("Packages");
    std::fs::write(&packages_path, &packages)
        .with_context(|| format!("cannot write {}", packages_path.display()))?;
    // -n: no name or time in the gzip header; -k: keep Packages beside it.
    util::output(
        Command::new("gzip")
            .args(["-9", "-n", "-k", "-f"])
            .arg(&packages_path),
    )?;

    let release = {
        let mut cmd = Command::new("apt-ftparchive");
        cmd.current_dir(repo);
        for (field, value) in release_fields(date) {
            cmd.arg("-o")
                .arg(format!("APT::FTPArchive::Release::{field}={value}"));
        }
        // Only the digests apt still trusts.
        cmd.args([
            "-o",
            "APT::FTPArchive::Release::MD5=false",
            "-o",
            "APT::FTPArchive::Release::SHA1=false",
        ]);
        cmd.arg("release").arg(format!("dists/{SUITE}"));
        util::output(&mut cmd)?
    };
    let release_path = suite_dir.join("Release");
    std::fs::write(&release_path, release)
        .with_context(|| format!("cannot write {}", release_path.display()))?;

    if let Some(signer) = signer {
        signer.clearsign(&release_path, &suite_dir.join("InRelease"))?;
        signer.detach_sign(&release_path, &suite_dir.join("Release.gpg"))?;
    }
    println!(
        "{} packages in {} ({})",
        debs.len(),
        repo.display(),
        if signer.is_some() {
            "signed"
        } else {
            "UNSIGNED"
        }
    );
    Ok(())
}

fn release_fields(date: u64) -> [(&'static str, String); 8] {
    [
        ("Origin", "Palisade".into()),
        ("Label", "Palisade".into()),
        ("Suite", SUITE.into()),
        ("Codename", SUITE.into()),
        ("Architectures", ARCHITECTURE.into()),
        ("Components", COMPONENT.into()),
        ("Description", "Palisade agent and backend packages".into()),
        ("Date", release_date(date)),
    ]
}

/// A time as APT writes it in `Release`: `Tue, 24 Nov 2026 03:29:58 UTC`.
fn release_date(epoch: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = epoch / 86_400;
    let secs = epoch % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} UTC",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Year, month (1–12) and day of the month of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_dates_are_written_as_apt_writes_them() {
        assert_eq!(release_date(0), "Thu, 01 Jan 1970 00:00:00 UTC");
        // A leap day, and a time of day (checked with `date -u -d @...`).
        assert_eq!(release_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 UTC");
        assert_eq!(release_date(1_795_492_198), "Tue, 24 Nov 2026 03:49:58 UTC");
        assert_eq!(release_date(4_102_444_799), "Thu, 31 Dec 2099 23:59:59 UTC");
    }
}
