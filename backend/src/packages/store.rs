//! Package inventory queries: storing a whole inventory, applying a change,
//! reading a host's inventory, searching the fleet's packages, the fleet's
//! update counts.

use std::cmp::Ordering;

use palisade_packages::inventory::{Delta, Installed, Inventory, Manager, Status, Update};

use super::{Applied, Change, FleetHost, HostInventory, Reboot, Report, UpdateCounts};
use crate::db::value::{json, to_json};
use crate::db::{DbError, Millis, Param, Result, Row, Tx};
use crate::params;

/// Stores an inventory record of host `host_id` (record `seq`): a whole
/// inventory replaces the host's rows, a change is applied to them when it
/// was made against the inventory held (see [`Applied`]).
pub fn store(
    tx: &mut Tx<'_>,
    host_id: &str,
    seq: u64,
    change: &Change,
    report: &Report,
) -> Result<Applied> {
    let seq_value = crate::db::seq(seq)?;
    let held: Option<(i64, bool)> = tx.query_opt(
        &format!(
            "SELECT seq, needs_full FROM host_inventories WHERE host_id = $1{}",
            tx.for_update()
        ),
        params![host_id],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    if held.is_some_and(|(stored, _)| stored >= seq_value) {
        return Ok(Applied::Older);
    }
    let next = match change {
        Change::Whole(inventory) => {
            replace_rows(tx, host_id, inventory)?;
            inventory.digest()
        }
        Change::Delta(delta) => {
            let current = match held {
                Some((_, false)) => load(tx, host_id)?.map(|h| h.inventory),
                // Marked as needing the whole: rows are still consistent,
                // but the agent was told we hold nothing to build on.
                Some((_, true)) | None => None,
            };
            // A change whose result is held already is done (nothing to apply).
            let done = current.as_ref().is_some_and(|c| c.digest() == delta.result);
            let accepted = current
                .as_ref()
                .is_some_and(|c| done || c.apply(delta).is_ok());
            if !accepted {
                tracing::warn!(
                    host_id,
                    seq,
                    "an inventory change against another inventory than the one held; asking for the whole"
                );
                tx.execute(
                    "UPDATE host_inventories SET needs_full = $2 WHERE host_id = $1",
                    params![host_id, true],
                )?;
                return Ok(Applied::NeedsWhole);
            }
            if !done {
                apply_rows(tx, host_id, delta)?;
            }
            delta.result
        }
    };
    note_first_seen(tx, host_id, report.collected_at)?;
    let manager = match change {
        Change::Whole(inventory) => inventory.manager,
        Change::Delta(_) => load_manager(tx, host_id)?,
    };
    tx.execute(
        "INSERT INTO host_inventories (host_id, manager, digest, seq, collected_at, lists_updated_at,
                                       reboot_required, reboot_reasons, needs_full)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (host_id) DO UPDATE SET
             manager = excluded.manager, digest = excluded.digest, seq = excluded.seq,
             collected_at = excluded.collected_at, lists_updated_at = excluded.lists_updated_at,
             reboot_required = excluded.reboot_required, reboot_reasons = excluded.reboot_reasons,
             needs_full = excluded.needs_full",
        params![
            host_id,
            manager.as_str(),
            &next[..],
            seq_value,
            report.collected_at,
            report.lists_updated_at,
            report.reboot.required,
            &to_json("reboot reasons", &report.reboot.reasons)?,
            false,
        ],
    )?;
    Ok(Applied::Stored)
}

fn load_manager(tx: &mut Tx<'_>, host_id: &str) -> Result<Manager> {
    let name: String = tx.query_one(
        "SELECT manager FROM host_inventories WHERE host_id = $1",
        params![host_id],
        |row| row.get(0),
    )?;
    Manager::from_name(&name)
        .ok_or_else(|| DbError::Corrupt(format!("host {host_id}: package manager {name:?}")))
}

fn replace_rows(tx: &mut Tx<'_>, host_id: &str, inventory: &Inventory) -> Result<()> {
    tx.execute(
        "DELETE FROM host_packages WHERE host_id = $1",
        params![host_id],
    )?;
    tx.execute(
        "DELETE FROM host_updates WHERE host_id = $1",
        params![host_id],
    )?;
    for package in inventory.installed.values() {
        put_installed(tx, host_id, package)?;
    }
    for update in inventory.updates.values() {
        put_update(tx, host_id, update)?;
    }
    Ok(())
}

fn apply_rows(tx: &mut Tx<'_>, host_id: &str, delta: &Delta) -> Result<()> {
    for (name, arch, version) in &delta.installed_removed {
        tx.execute(
            "DELETE FROM host_packages WHERE host_id = $1 AND name = $2 AND arch = $3 AND version = $4",
            params![host_id, name, arch, version],
        )?;
    }
    for package in &delta.installed_set {
        put_installed(tx, host_id, package)?;
    }
    for (name, arch) in &delta.updates_removed {
        tx.execute(
            "DELETE FROM host_updates WHERE host_id = $1 AND name = $2 AND arch = $3",
            params![host_id, name, arch],
        )?;
    }
    for update in &delta.updates_set {
        put_update(tx, host_id, update)?;
    }
    Ok(())
}

fn put_installed(tx: &mut Tx<'_>, host_id: &str, p: &Installed) -> Result<()> {
    tx.execute(
        "INSERT INTO host_packages (host_id, name, arch, version, source, held)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (host_id, name, arch, version) DO UPDATE SET
             source = excluded.source, held = excluded.held",
        params![host_id, &p.name, &p.arch, &p.version, &p.source, p.held],
    )?;
    Ok(())
}

fn put_update(tx: &mut Tx<'_>, host_id: &str, u: &Update) -> Result<()> {
    tx.execute(
        "INSERT INTO host_updates (host_id, name, arch, installed, candidate, security, status, detail,
                                   origins, advisories, severity, cves)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (host_id, name, arch) DO UPDATE SET
             installed = excluded.installed, candidate = excluded.candidate, security = excluded.security,
             status = excluded.status, detail = excluded.detail, origins = excluded.origins,
             advisories = excluded.advisories, severity = excluded.severity, cves = excluded.cves",
        params![
            host_id,
            &u.name,
            &u.arch,
            &u.installed,
            &u.candidate,
            u.security,
            u.status.as_str(),
            &u.detail,
            &to_json("update origins", &u.origins)?,
            &to_json("update advisories", &u.advisories)?,
            &u.severity,
            &to_json("update CVEs", &u.cves)?,
        ],
    )?;
    Ok(())
}

/// A host's stored inventory; `None` when it never reported one.
pub fn load(tx: &mut Tx<'_>, host_id: &str) -> Result<Option<HostInventory>> {
    type Head = (
        String,
        Vec<u8>,
        u64,
        Millis,
        Option<Millis>,
        bool,
        Vec<String>,
        bool,
    );
    let head: Option<Head> = tx.query_opt(
        "SELECT manager, digest, seq, collected_at, lists_updated_at, reboot_required, reboot_reasons, needs_full
         FROM host_inventories WHERE host_id = $1",
        params![host_id],
        |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
                json(row, 6)?,
                row.get(7)?,
            ))
        },
    )?;
    let Some((manager, digest, seq, collected_at, lists_updated_at, required, reasons, needs_full)) =
        head
    else {
        return Ok(None);
    };
    let manager = Manager::from_name(&manager)
        .ok_or_else(|| DbError::Corrupt(format!("host {host_id}: package manager {manager:?}")))?;
    let mut inventory = Inventory::empty(manager);
    for package in tx.query(
        "SELECT name, arch, version, source, held FROM host_packages WHERE host_id = $1",
        params![host_id],
        |row| {
            Ok(Installed {
                name: row.get(0)?,
                arch: row.get(1)?,
                version: row.get(2)?,
                source: row.get(3)?,
                held: row.get(4)?,
            })
        },
    )? {
        inventory.insert_installed(package);
    }
    for update in tx.query(
        "SELECT name, arch, installed, candidate, security, status, detail, origins, advisories, severity, cves
         FROM host_updates WHERE host_id = $1",
        params![host_id],
        |row| {
            let status: String = row.get(5)?;
            Ok(Update {
                name: row.get(0)?,
                arch: row.get(1)?,
                installed: row.get(2)?,
                candidate: row.get(3)?,
                security: row.get(4)?,
                status: Status::from_name(&status)
                    .ok_or_else(|| DbError::Corrupt(format!("update status {status:?}")))?,
                detail: row.get(6)?,
                origins: json(row, 7)?,
                advisories: json(row, 8)?,
                severity: row.get(9)?,
                cves: json(row, 10)?,
            })
        },
    )? {
        inventory.insert_update(update);
    }
    if inventory.digest()[..] != digest[..] {
        return Err(DbError::Corrupt(format!(
            "host {host_id}: the stored packages do not make the inventory their digest names"
        )));
    }
    Ok(Some(HostInventory {
        inventory,
        report: Report {
            collected_at,
            lists_updated_at,
            reboot: Reboot { required, reasons },
        },
        seq,
        needs_full,
    }))
}

/// The digest of the inventory held for a host, unless a change was
/// refused since (then the agent must send the whole inventory): what the
/// uplink tells a connecting agent.
pub fn digest_held(tx: &mut Tx<'_>, host_id: &str) -> Result<Option<Vec<u8>>> {
    Ok(tx
        .query_opt(
            "SELECT digest, needs_full FROM host_inventories WHERE host_id = $1",
            params![host_id],
            |row| Ok((row.get::<Vec<u8>>(0)?, row.get::<bool>(1)?)),
        )?
        .and_then(|(digest, needs_full)| (!needs_full).then_some(digest)))
}

/// One host's installed package, found by a fleet search.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub host_id: String,
    pub hostname: String,
    pub host_group_id: Option<String>,
    pub manager: Manager,
    pub package: Installed,
}

/// The fleet's installed packages named `name`, optionally only those
/// older than `older_than` (compared as each host's package manager
/// compares versions; a version that does not parse is not "older") and
/// only on hosts of `groups` (None: every host), in hostname order, at most
/// `limit`.
pub fn find(
    tx: &mut Tx<'_>,
    name: &str,
    older_than: Option<&str>,
    groups: Option<&[String]>,
    limit: u32,
) -> Result<Vec<Found>> {
    let rows = tx.query(
        "SELECT p.host_id, h.hostname, i.manager, p.name, p.arch, p.version, p.source, p.held, h.host_group_id
         FROM host_packages p
         JOIN hosts h ON h.id = p.host_id
         JOIN host_inventories i ON i.host_id = p.host_id
         WHERE p.name = $1
         ORDER BY h.hostname, p.host_id, p.arch, p.version",
        params![name],
        |row| {
            let manager: String = row.get(2)?;
            Ok(Found {
                host_id: row.get(0)?,
                hostname: row.get(1)?,
                host_group_id: row.get(8)?,
                manager: Manager::from_name(&manager)
                    .ok_or_else(|| DbError::Corrupt(format!("package manager {manager:?}")))?,
                package: Installed {
                    name: row.get(3)?,
                    arch: row.get(4)?,
                    version: row.get(5)?,
                    source: row.get(6)?,
                    held: row.get(7)?,
                },
            })
        },
    )?;
    Ok(rows
        .into_iter()
        .filter(|f| {
            groups.is_none_or(|groups| f.host_group_id.as_ref().is_some_and(|g| groups.contains(g)))
        })
        .filter(|f| {
            older_than.is_none_or(|bound| {
                f.manager.compare_versions(&f.package.version, bound) == Some(Ordering::Less)
            })
        })
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .collect())
}

/// Every host that is not revoked (only those of `groups` when given), with
/// its update counts when it reported an inventory, in hostname order: one
/// query, the updates counted per host by the database.
pub fn fleet(tx: &mut Tx<'_>, groups: Option<&[String]>) -> Result<Vec<FleetHost>> {
    let mut values: Vec<Param<'_>> = Vec::new();
    let scope = match groups {
        Some(groups) => format!(
            " AND {}",
            crate::hosts::store::group_condition(groups, &mut values)
        ),
        None => String::new(),
    };
    tx.query(
        &format!(
            "SELECT hosts.id, hosts.hostname, hosts.host_group_id, g.name,
                    i.manager, i.collected_at, i.lists_updated_at, i.reboot_required,
                    u.pending, u.pending_security, u.held, u.kept_back, u.deferred
             FROM hosts
             LEFT JOIN host_groups g ON g.id = hosts.host_group_id
             LEFT JOIN host_inventories i ON i.host_id = hosts.id
             LEFT JOIN (
                 SELECT host_id,
                        SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END) AS pending,
                        SUM(CASE WHEN status = 'pending' AND security THEN 1 ELSE 0 END) AS pending_security,
                        SUM(CASE WHEN status = 'held' THEN 1 ELSE 0 END) AS held,
                        SUM(CASE WHEN status = 'kept_back' THEN 1 ELSE 0 END) AS kept_back,
                        SUM(CASE WHEN status = 'deferred' THEN 1 ELSE 0 END) AS deferred
                 FROM host_updates GROUP BY host_id
             ) u ON u.host_id = hosts.id
             WHERE hosts.revoked_at IS NULL{scope}
             ORDER BY hosts.hostname, hosts.id"
        ),
        &values,
        fleet_host,
    )
}

fn fleet_host(row: &Row<'_>) -> Result<FleetHost> {
    let host_id: String = row.get(0)?;
    let manager: Option<String> = row.get(4)?;
    let counts = match manager {
        None => None,
        Some(name) => {
            let count = |i| row.get::<Option<u64>>(i).map(Option::unwrap_or_default);
            Some(UpdateCounts {
                manager: Manager::from_name(&name).ok_or_else(|| {
                    DbError::Corrupt(format!("host {host_id}: package manager {name:?}"))
                })?,
                collected_at: row.get(5)?,
                lists_updated_at: row.get(6)?,
                reboot_required: row.get(7)?,
                pending: count(8)?,
                pending_security: count(9)?,
                held: count(10)?,
                kept_back: count(11)?,
                deferred: count(12)?,
            })
        }
    };
    Ok(FleetHost {
        host_id,
        hostname: row.get(1)?,
        host_group_id: row.get(2)?,
        host_group: row.get(3)?,
        counts,
    })
}

/// Records when each of the host's updates (name, arch, candidate) was
/// first offered, as of the report collected at `at`, and forgets those no
/// longer offered (a candidate offered again later counts from then).
fn note_first_seen(tx: &mut Tx<'_>, host_id: &str, at: Millis) -> Result<()> {
    tx.execute(
        "INSERT INTO update_first_seen (host_id, name, arch, candidate, first_seen)
         SELECT host_id, name, arch, candidate, $2 FROM host_updates WHERE host_id = $1
         ON CONFLICT (host_id, name, arch, candidate) DO NOTHING",
        params![host_id, at],
    )?;
    tx.execute(
        "DELETE FROM update_first_seen WHERE host_id = $1 AND NOT EXISTS (
             SELECT 1 FROM host_updates u
             WHERE u.host_id = update_first_seen.host_id AND u.name = update_first_seen.name
               AND u.arch = update_first_seen.arch AND u.candidate = update_first_seen.candidate)",
        params![host_id],
    )?;
    Ok(())
}

/// When each of the host's current updates was first offered.
pub fn first_seen(tx: &mut Tx<'_>, host_id: &str) -> Result<crate::patching::FirstSeen> {
    Ok(tx
        .query(
            "SELECT name, arch, candidate, first_seen FROM update_first_seen WHERE host_id = $1",
            params![host_id],
            |row| Ok(((row.get(0)?, row.get(1)?, row.get(2)?), row.get(3)?)),
        )?
        .into_iter()
        .collect())
}
