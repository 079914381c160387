//! Checks of plain payload messages (facts, metrics, health, package reports,
//! command results) that arrive from outside.

use super::*;

pub fn validate_facts(facts: &pb::HostFacts) -> Result<(), DecodeError> {
    const M: &str = "HostFacts";
    check_str(M, "hostname", &facts.hostname)?;
    if facts.hostname.is_empty() {
        return Err(DecodeError::Missing {
            message: M,
            field: "hostname",
        });
    }
    check_str(M, "os_pretty_name", &facts.os_pretty_name)?;
    check_str(M, "os_id", &facts.os_id)?;
    check_str(M, "os_version_id", &facts.os_version_id)?;
    check_str(M, "kernel_release", &facts.kernel_release)?;
    check_str(M, "architecture", &facts.architecture)?;
    Ok(())
}

/// Checks the values of a [`pb::Metrics`] that came from outside.
pub fn validate_metrics(m: &pb::Metrics) -> Result<(), DecodeError> {
    const M: &str = "Metrics";
    check_f64(M, "cpu_percent", m.cpu_percent, 100.0)?;
    // A load average above a million is not a measurement, it is an attack.
    check_f64(M, "load_1", m.load_1, 1e6)?;
    check_f64(M, "load_5", m.load_5, 1e6)?;
    check_f64(M, "load_15", m.load_15, 1e6)?;
    if m.memory_available_bytes > m.memory_total_bytes {
        return Err(invalid(
            M,
            "memory_available_bytes",
            "greater than memory_total_bytes",
        ));
    }
    if m.swap_free_bytes > m.swap_total_bytes {
        return Err(invalid(
            M,
            "swap_free_bytes",
            "greater than swap_total_bytes",
        ));
    }
    check_items(M, "filesystems", m.filesystems.len())?;
    for fs in &m.filesystems {
        check_str(M, "filesystems.mount_point", &fs.mount_point)?;
        check_str(M, "filesystems.device", &fs.device)?;
        check_str(M, "filesystems.fs_type", &fs.fs_type)?;
        if fs.used_bytes > fs.total_bytes {
            return Err(invalid(
                M,
                "filesystems.used_bytes",
                "greater than total_bytes",
            ));
        }
    }
    check_items(M, "network", m.network.len())?;
    for n in &m.network {
        check_str(M, "network.interface", &n.interface)?;
    }
    Ok(())
}

/// Largest command output carried in a result (bytes).
pub const MAX_COMMAND_OUTPUT: usize = 64 * 1024;
/// Largest encoded command accepted.
pub const MAX_COMMAND_BYTES: usize = 512 * 1024;

/// Checks a command result that came from outside (control, or an agent).
pub fn validate_command_result(r: &pb::CommandResult) -> Result<(), DecodeError> {
    const M: &str = "CommandResult";
    check_str(M, "command_id", &r.command_id)?;
    if pb::CommandStatus::try_from(r.status).is_err()
        || r.status == pb::CommandStatus::Unspecified as i32
    {
        return Err(invalid(M, "status", format!("unknown status {}", r.status)));
    }
    // Output is free text (newlines and tabs are expected), only its size is capped.
    if r.output.len() > MAX_COMMAND_OUTPUT + 1024 {
        return Err(invalid(
            M,
            "output",
            format!("longer than {MAX_COMMAND_OUTPUT} bytes"),
        ));
    }
    crate::upgrade::validate_changes(&r.changes)?;
    if r.error.len() > MAX_STRING {
        return Err(invalid(
            M,
            "error",
            format!("longer than {MAX_STRING} bytes"),
        ));
    }
    validate_restarts(&r.restarts)
}

/// Most services to restart one result lists.
pub const MAX_RESTARTS: usize = 256;
/// Most pids listed for one service.
pub const MAX_RESTART_PIDS: usize = 64;
/// Most files listed for one service.
pub const MAX_RESTART_FILES: usize = 32;
/// Most bytes of file names over all the services of one result (with the
/// counts above, what keeps a result well inside a local frame).
pub const MAX_RESTART_FILE_BYTES: usize = 128 * 1024;

/// Checks an upgrade's services to restart: within the limits above, each
/// with pids and files, names printable, files absolute paths.
fn validate_restarts(restarts: &[pb::ServiceRestart]) -> Result<(), DecodeError> {
    const M: &str = "CommandResult";
    if restarts.len() > MAX_RESTARTS {
        return Err(invalid(
            M,
            "restarts",
            format!("more than {MAX_RESTARTS} items"),
        ));
    }
    let mut file_bytes = 0usize;
    for r in restarts {
        check_str(M, "restarts.unit", &r.unit)?;
        if r.pids.is_empty() || r.pids.len() > MAX_RESTART_PIDS {
            return Err(invalid(
                M,
                "restarts.pids",
                format!("needs 1 to {MAX_RESTART_PIDS} pids"),
            ));
        }
        if r.files.is_empty() || r.files.len() > MAX_RESTART_FILES {
            return Err(invalid(
                M,
                "restarts.files",
                format!("needs 1 to {MAX_RESTART_FILES} files"),
            ));
        }
        for file in &r.files {
            check_str(M, "restarts.files", file)?;
            if !file.starts_with('/') {
                return Err(invalid(M, "restarts.files", "not an absolute path"));
            }
            file_bytes += file.len();
        }
    }
    if file_bytes > MAX_RESTART_FILE_BYTES {
        return Err(invalid(
            M,
            "restarts.files",
            format!("more than {MAX_RESTART_FILE_BYTES} bytes of file names"),
        ));
    }
    Ok(())
}

/// Checks the envelope of a signed command (its content is control's to verify).
pub fn validate_signed_command(c: &pb::SignedCommand) -> Result<(), DecodeError> {
    const M: &str = "SignedCommand";
    if c.command.is_empty() {
        return Err(DecodeError::Missing {
            message: M,
            field: "command",
        });
    }
    if c.command.len() > MAX_COMMAND_BYTES {
        return Err(invalid(
            M,
            "command",
            format!("larger than {MAX_COMMAND_BYTES} bytes"),
        ));
    }
    if c.signature.len() != 64 {
        return Err(invalid(M, "signature", "an Ed25519 signature has 64 bytes"));
    }
    Ok(())
}

pub(super) fn validate_agent_health(h: &pb::AgentHealth) -> Result<(), DecodeError> {
    const M: &str = "AgentHealth";
    check_items(M, "children", h.children.len())?;
    for c in &h.children {
        Role::parse(&c.role)
            .map_err(|_| invalid(M, "children.role", format!("unknown role {:?}", c.role)))?;
        check_str(M, "children.sandbox", &c.sandbox)?;
    }
    Ok(())
}

pub(super) fn validate_package_report(r: &pb::PackageReport) -> Result<(), DecodeError> {
    const M: &str = "PackageReport";
    check_items(M, "reboot_reasons", r.reboot_reasons.len())?;
    for reason in &r.reboot_reasons {
        check_str(M, "reboot_reasons", reason)?;
    }
    let packages = |installed: &[pb::InstalledPackage]| -> Result<(), DecodeError> {
        if installed.len() > MAX_PACKAGES {
            return Err(invalid(
                M,
                "installed",
                format!("more than {MAX_PACKAGES} packages"),
            ));
        }
        for p in installed {
            check_key(&p.name, &p.arch, &p.version, true)?;
            check_str(M, "installed.source", &p.source)?;
        }
        Ok(())
    };
    let updates = |updates: &[pb::PackageUpdate]| -> Result<(), DecodeError> {
        if updates.len() > MAX_PACKAGES {
            return Err(invalid(
                M,
                "updates",
                format!("more than {MAX_PACKAGES} updates"),
            ));
        }
        for u in updates {
            check_key(&u.name, &u.arch, &u.installed, true)?;
            check_str(M, "updates.candidate", &u.candidate)?;
            if u.candidate.is_empty() {
                return Err(invalid(M, "updates.candidate", "empty"));
            }
            if matches!(
                pb::UpdateStatus::try_from(u.status),
                Err(_) | Ok(pb::UpdateStatus::Unspecified)
            ) {
                return Err(invalid(
                    M,
                    "updates.status",
                    format!("unknown status {}", u.status),
                ));
            }
            for (field, value) in [
                ("updates.detail", &u.detail),
                ("updates.severity", &u.severity),
            ] {
                check_str(M, field, value)?;
            }
            for (field, list) in [
                ("updates.origins", &u.origins),
                ("updates.advisories", &u.advisories),
                ("updates.cves", &u.cves),
            ] {
                check_items(M, field, list.len())?;
                for item in list {
                    check_str(M, field, item)?;
                }
            }
        }
        Ok(())
    };
    let keys = |field: &'static str, keys: &[pb::PackageKey], with_version: bool| {
        if keys.len() > MAX_PACKAGES {
            return Err(invalid(M, field, format!("more than {MAX_PACKAGES} keys")));
        }
        keys.iter()
            .try_for_each(|k| check_key(&k.name, &k.arch, &k.version, with_version))
    };
    match r.change.as_ref().ok_or(DecodeError::Missing {
        message: M,
        field: "change",
    })? {
        pb::package_report::Change::Whole(whole) => {
            if matches!(
                pb::PackageManager::try_from(whole.manager),
                Err(_) | Ok(pb::PackageManager::Unspecified)
            ) {
                return Err(invalid(
                    M,
                    "whole.manager",
                    format!("unknown package manager {}", whole.manager),
                ));
            }
            packages(&whole.installed)?;
            updates(&whole.updates)?;
        }
        pb::package_report::Change::Delta(delta) => {
            for (field, digest) in [
                ("delta.base_sha256", &delta.base_sha256),
                ("delta.result_sha256", &delta.result_sha256),
            ] {
                if digest.len() != 32 {
                    return Err(invalid(M, field, "not a SHA-256 digest (32 bytes)"));
                }
            }
            packages(&delta.installed_set)?;
            keys("delta.installed_removed", &delta.installed_removed, true)?;
            updates(&delta.updates_set)?;
            keys("delta.updates_removed", &delta.updates_removed, false)?;
        }
    }
    Ok(())
}

/// A package's name, architecture and version: not empty (the version may
/// be absent where the key has none), no control characters, bounded.
pub(super) fn check_key(
    name: &str,
    arch: &str,
    version: &str,
    with_version: bool,
) -> Result<(), DecodeError> {
    const M: &str = "PackageReport";
    for (field, value) in [
        ("package name", name),
        ("package arch", arch),
        ("package version", version),
    ] {
        check_str(M, field, value)?;
    }
    if name.is_empty() || arch.is_empty() {
        return Err(invalid(
            M,
            "package name",
            "a package without a name or architecture",
        ));
    }
    if with_version == version.is_empty() {
        return Err(invalid(
            M,
            "package version",
            if with_version {
                "a package without a version"
            } else {
                "an update key with a version"
            },
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(restarts: Vec<pb::ServiceRestart>) -> pb::CommandResult {
        pb::CommandResult {
            command_id: "c1".into(),
            status: pb::CommandStatus::Succeeded as i32,
            reboot_required: Some(true),
            restarts,
            ..Default::default()
        }
    }

    fn restart(unit: &str, pids: &[u32], files: &[&str]) -> pb::ServiceRestart {
        pb::ServiceRestart {
            unit: unit.into(),
            pids: pids.to_vec(),
            files: files.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    fn refused_field(r: &pb::CommandResult) -> &'static str {
        match validate_command_result(r) {
            Err(DecodeError::Invalid { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn restarts_within_their_limits_pass_and_beyond_them_are_refused() {
        let good = result(vec![
            restart("nginx.service", &[7, 12], &["/usr/sbin/nginx"]),
            restart("", &[30], &["/opt/app/bin/app"]),
            restart(
                "user@1000.service/pipewire.service",
                &[40],
                &["/usr/lib/libpipewire.so"],
            ),
        ]);
        assert_eq!(validate_command_result(&good), Ok(()));
        let most = result(vec![
            restart(
                "a.service",
                &[1; MAX_RESTART_PIDS],
                &["/usr/lib/x.so"; MAX_RESTART_FILES]
            );
            MAX_RESTARTS
        ]);
        assert_eq!(validate_command_result(&most), Ok(()));

        let too_many = result(vec![restart("a.service", &[1], &["/a"]); MAX_RESTARTS + 1]);
        assert_eq!(refused_field(&too_many), "restarts");
        let pids = result(vec![restart(
            "a.service",
            &[1; MAX_RESTART_PIDS + 1],
            &["/a"],
        )]);
        assert_eq!(refused_field(&pids), "restarts.pids");
        let no_pid = result(vec![restart("a.service", &[], &["/a"])]);
        assert_eq!(refused_field(&no_pid), "restarts.pids");
        let files = result(vec![restart(
            "a.service",
            &[1],
            &["/a"; MAX_RESTART_FILES + 1],
        )]);
        assert_eq!(refused_field(&files), "restarts.files");
        let no_file = result(vec![restart("a.service", &[1], &[])]);
        assert_eq!(refused_field(&no_file), "restarts.files");
        let relative = result(vec![restart("a.service", &[1], &["lib/x.so"])]);
        assert_eq!(refused_field(&relative), "restarts.files");
        let control = result(vec![restart("a.service", &[1], &["/lib/x\n.so"])]);
        assert_eq!(refused_field(&control), "restarts.files");
        let unit = result(vec![restart("a\u{7}.service", &[1], &["/a"])]);
        assert_eq!(refused_field(&unit), "restarts.unit");
        let long = "/".repeat(MAX_STRING);
        let bytes = result(vec![
            restart(
                "a.service",
                &[1],
                &[long.as_str(); MAX_RESTART_FILES]
            );
            2
        ]);
        assert_eq!(refused_field(&bytes), "restarts.files");
    }
}
