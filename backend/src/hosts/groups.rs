//! Host groups: named sets of hosts, the unit roles are scoped to. A host is
//! in at most one group; hosts join one through their enrollment token's
//! default group or by hand.

use crate::db::{DbError, Millis, Result, Row, Tx};
use crate::params;

/// A group as stored, with how many hosts it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct HostGroup {
    pub id: String,
    pub name: String,
    pub description: String,
    pub created_at: Millis,
    pub hosts: u64,
}

/// Group names: 1 to 64 printable characters, no leading or trailing space.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.chars().count())
        && name.trim() == name
        && name.chars().all(|c| !c.is_control())
}

const COLUMNS: &str = "g.id, g.name, g.description, g.created_at, (SELECT COUNT(*) FROM hosts WHERE hosts.host_group_id = g.id)";

fn from_row(row: &Row<'_>) -> Result<HostGroup> {
    Ok(HostGroup {
        id: row.get(0)?,
        name: row.get(1)?,
        description: row.get(2)?,
        created_at: row.get(3)?,
        hosts: row.get(4)?,
    })
}

pub fn list(tx: &mut Tx<'_>) -> Result<Vec<HostGroup>> {
    tx.query(
        &format!("SELECT {COLUMNS} FROM host_groups g ORDER BY g.name"),
        params![],
        from_row,
    )
}

pub fn get(tx: &mut Tx<'_>, id: &str) -> Result<Option<HostGroup>> {
    tx.query_opt(
        &format!("SELECT {COLUMNS} FROM host_groups g WHERE g.id = $1"),
        params![id],
        from_row,
    )
}

pub fn by_name(tx: &mut Tx<'_>, name: &str) -> Result<Option<HostGroup>> {
    tx.query_opt(
        &format!("SELECT {COLUMNS} FROM host_groups g WHERE g.name = $1"),
        params![name],
        from_row,
    )
}

fn conflict(name: &str) -> impl FnOnce(DbError) -> DbError + '_ {
    move |e| match e {
        DbError::Conflict { .. } => DbError::Conflict {
            what: format!("host group {name:?}"),
        },
        e => e,
    }
}

/// Creates a group; returns its id.
pub fn create(tx: &mut Tx<'_>, name: &str, description: &str, now: Millis) -> Result<String> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    tx.execute(
        "INSERT INTO host_groups (id, name, description, created_at) VALUES ($1, $2, $3, $4)",
        params![&id, name, description, now],
    )
    .map_err(conflict(name))?;
    Ok(id)
}

/// Renames a group or changes its description. False when there is none.
pub fn update(tx: &mut Tx<'_>, id: &str, name: &str, description: &str) -> Result<bool> {
    let changed = tx
        .execute(
            "UPDATE host_groups SET name = $2, description = $3 WHERE id = $1",
            params![id, name, description],
        )
        .map_err(conflict(name))?;
    Ok(changed > 0)
}

/// Deletes a group: its hosts become ungrouped, role assignments and API
/// tokens scoped to it go away. False when there is none.
pub fn delete(tx: &mut Tx<'_>, id: &str) -> Result<bool> {
    Ok(tx.execute("DELETE FROM host_groups WHERE id = $1", params![id])? > 0)
}

/// Puts a host into a group (None: no group). False when there is no such host.
pub fn set_host_group(tx: &mut Tx<'_>, host_id: &str, group_id: Option<&str>) -> Result<bool> {
    Ok(tx.execute(
        "UPDATE hosts SET host_group_id = $2 WHERE id = $1",
        params![host_id, group_id],
    )? > 0)
}
