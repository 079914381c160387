//! Roles (built-in and custom), who holds them where, and the grants a user
//! or an API token ends up with.

use std::collections::BTreeSet;

use super::catalogue::{Area, Kind, Permission};
use super::grants::Grants;
use crate::db::value::{json, to_json};
use crate::db::{DbError, Millis, Result, Row, Tx};
use crate::params;

/// The roles every installation has. Their permissions are defined here, in
/// code, so that permissions added by a later release reach them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinRole {
    Admin,
    Operator,
    Auditor,
    Viewer,
}

impl BuiltinRole {
    pub const ALL: [BuiltinRole; 4] = [
        BuiltinRole::Admin,
        BuiltinRole::Operator,
        BuiltinRole::Auditor,
        BuiltinRole::Viewer,
    ];

    /// The role's id (and name).
    pub fn id(self) -> &'static str {
        match self {
            BuiltinRole::Admin => "admin",
            BuiltinRole::Operator => "operator",
            BuiltinRole::Auditor => "auditor",
            BuiltinRole::Viewer => "viewer",
        }
    }

    pub fn of(id: &str) -> Option<BuiltinRole> {
        BuiltinRole::ALL.into_iter().find(|r| r.id() == id)
    }

    pub fn permissions(self) -> BTreeSet<Permission> {
        use Permission::*;
        let all = Permission::ALL.iter().copied();
        match self {
            BuiltinRole::Admin => all.collect(),
            // Reads everything, the audit trail included; changes nothing.
            BuiltinRole::Auditor => all.filter(|p| p.kind() == Kind::Read).collect(),
            // Sees the fleet, not the backend's own administration.
            BuiltinRole::Viewer => all
                .filter(|p| {
                    p.kind() == Kind::Read
                        && matches!(
                            p.area(),
                            Area::Hosts
                                | Area::Operations
                                | Area::Patching
                                | Area::Compliance
                                | Area::Integrity
                                | Area::Alerting
                        )
                        && !matches!(
                            p,
                            EnrollmentTokensRead
                                | TerminalRecordingsRead
                                | AlertRulesRead
                                | NotificationChannelsRead
                                | ReportsRead
                        )
                })
                .collect(),
            // What a viewer sees, and operating the hosts: commands,
            // services, reboots, patch runs (not approving them), scans,
            // remediation, acknowledgements.
            BuiltinRole::Operator => {
                let mut set = BuiltinRole::Viewer.permissions();
                set.extend([
                    CommandsCreate,
                    CommandsCancel,
                    ServicesStart,
                    ServicesRestart,
                    ServicesStop,
                    ServicesEnable,
                    ServicesDisable,
                    HostsReboot,
                    HostsPoweroff,
                    PackagesRefresh,
                    PatchRunsCreate,
                    PatchRunsExecute,
                    PatchRunsCancel,
                    ComplianceScansRun,
                    ComplianceScansCancel,
                    RemediationPlan,
                    RemediationExecute,
                    RemediationRollback,
                    ViolationsAcknowledge,
                    ViolationsResolve,
                    IntegrityAcknowledge,
                    AlertsAcknowledge,
                    AlertsResolve,
                ]);
                set
            }
        }
    }
}

/// A role as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    pub id: String,
    pub name: String,
    pub description: String,
    pub builtin: bool,
    pub permissions: BTreeSet<Permission>,
    pub created_at: Millis,
}

const ROLE_COLUMNS: &str =
    "roles.id, roles.name, roles.description, roles.builtin, roles.permissions, roles.created_at";

/// Reads stored permission names; a name this build does not know (none
/// is ever removed) is skipped, never granted.
fn permission_set(names: &[String]) -> BTreeSet<Permission> {
    names
        .iter()
        .filter_map(|n| match n.parse::<Permission>() {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a stored permission");
                None
            }
        })
        .collect()
}

fn role_from_row(row: &Row<'_>, at: usize) -> Result<Role> {
    let id: String = row.get(at)?;
    let builtin: bool = row.get(at + 3)?;
    let stored: Vec<String> = json(row, at + 4)?;
    let permissions = match BuiltinRole::of(&id).filter(|_| builtin) {
        Some(role) => role.permissions(),
        None => permission_set(&stored),
    };
    Ok(Role {
        name: row.get(at + 1)?,
        description: row.get(at + 2)?,
        builtin,
        permissions,
        created_at: row.get(at + 5)?,
        id,
    })
}

pub fn list(tx: &mut Tx<'_>) -> Result<Vec<Role>> {
    tx.query(
        &format!("SELECT {ROLE_COLUMNS} FROM roles ORDER BY roles.builtin DESC, roles.name"),
        params![],
        |row| role_from_row(row, 0),
    )
}

pub fn get(tx: &mut Tx<'_>, id: &str) -> Result<Option<Role>> {
    tx.query_opt(
        &format!("SELECT {ROLE_COLUMNS} FROM roles WHERE id = $1"),
        params![id],
        |row| role_from_row(row, 0),
    )
}

pub fn by_name(tx: &mut Tx<'_>, name: &str) -> Result<Option<Role>> {
    tx.query_opt(
        &format!("SELECT {ROLE_COLUMNS} FROM roles WHERE name = $1"),
        params![name],
        |row| role_from_row(row, 0),
    )
}

fn names(permissions: &BTreeSet<Permission>) -> Vec<&'static str> {
    permissions.iter().map(|p| p.name()).collect()
}

/// Creates a custom role.
pub fn create(tx: &mut Tx<'_>, role: &Role) -> Result<()> {
    let permissions = to_json("role permissions", &names(&role.permissions))?;
    tx.execute(
        "INSERT INTO roles (id, name, description, builtin, permissions, created_at) VALUES ($1, $2, $3, FALSE, $4, $5)",
        params![&role.id, &role.name, &role.description, &permissions, role.created_at],
    )
    .map_err(|e| match e {
        DbError::Conflict { .. } => DbError::Conflict {
            what: format!("role {:?}", role.name),
        },
        e => e,
    })?;
    Ok(())
}

/// Changes a custom role; built-in roles cannot change. False when there is
/// no such custom role.
pub fn update(
    tx: &mut Tx<'_>,
    id: &str,
    name: &str,
    description: &str,
    permissions: &BTreeSet<Permission>,
) -> Result<bool> {
    let permissions = to_json("role permissions", &names(permissions))?;
    let changed = tx
        .execute(
            "UPDATE roles SET name = $2, description = $3, permissions = $4 WHERE id = $1 AND NOT builtin",
            params![id, name, description, &permissions],
        )
        .map_err(|e| match e {
            DbError::Conflict { .. } => DbError::Conflict {
                what: format!("role {name:?}"),
            },
            e => e,
        })?;
    Ok(changed > 0)
}

/// Deletes a custom role (its assignments go with it). False when there is
/// no such custom role.
pub fn delete(tx: &mut Tx<'_>, id: &str) -> Result<bool> {
    Ok(tx.execute(
        "DELETE FROM roles WHERE id = $1 AND NOT builtin",
        params![id],
    )? > 0)
}

/// A role a user holds, for all hosts or for one group's.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub id: String,
    pub user_id: i64,
    pub role: Role,
    /// (id, name) of the group; None: for all hosts.
    pub host_group: Option<(String, String)>,
    pub created_at: Millis,
}

/// Every assignment of `user_id`, or of everyone when `None`.
pub fn assignments(tx: &mut Tx<'_>, user_id: Option<i64>) -> Result<Vec<Assignment>> {
    let sql = format!(
        "SELECT a.id, a.user_id, a.created_at, g.id, g.name, {ROLE_COLUMNS}
         FROM role_assignments a JOIN roles ON roles.id = a.role_id
         LEFT JOIN host_groups g ON g.id = a.host_group_id
         WHERE ($1 OR a.user_id = $2)
         ORDER BY a.user_id, roles.name, g.name"
    );
    tx.query(
        &sql,
        params![user_id.is_none(), user_id.unwrap_or(0)],
        |row| {
            let group_id: Option<String> = row.get(3)?;
            let group_name: Option<String> = row.get(4)?;
            Ok(Assignment {
                id: row.get(0)?,
                user_id: row.get(1)?,
                created_at: row.get(2)?,
                host_group: group_id.zip(group_name),
                role: role_from_row(row, 5)?,
            })
        },
    )
}

/// Grants `role_id` to `user_id`, for all hosts or one group. Returns the
/// new assignment's id, or a conflict if the user holds it there already.
pub fn assign(
    tx: &mut Tx<'_>,
    user_id: i64,
    role_id: &str,
    host_group_id: Option<&str>,
    now: Millis,
) -> Result<String> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    tx.execute(
        "INSERT INTO role_assignments (id, user_id, role_id, host_group_id, created_at) VALUES ($1, $2, $3, $4, $5)",
        params![&id, user_id, role_id, host_group_id, now],
    )
    .map_err(|e| match e {
        DbError::Conflict { .. } => DbError::Conflict {
            what: "this role for this user and scope".into(),
        },
        e => e,
    })?;
    Ok(id)
}

/// Withdraws one assignment. False when there is none with that id.
pub fn unassign(tx: &mut Tx<'_>, assignment_id: &str) -> Result<bool> {
    Ok(tx.execute(
        "DELETE FROM role_assignments WHERE id = $1",
        params![assignment_id],
    )? > 0)
}

/// What `user_id` may do, from their role assignments.
pub fn grants_of_user(tx: &mut Tx<'_>, user_id: i64) -> Result<Grants> {
    let mut grants = Grants::none();
    for a in assignments(tx, Some(user_id))? {
        grants.add(
            a.role.permissions.iter().copied(),
            a.host_group.as_ref().map(|(id, _)| id.as_str()),
        );
    }
    Ok(grants)
}

/// The permissions of a role id plus explicit ones, as global grants,
/// optionally narrowed to one host group (an API token's own grants).
pub fn token_grants(
    tx: &mut Tx<'_>,
    role_id: Option<&str>,
    explicit: &[String],
    host_group_id: Option<&str>,
) -> Result<Grants> {
    let mut permissions = permission_set(explicit);
    if let Some(role) = role_id
        && let Some(role) = get(tx, role)?
    {
        permissions.extend(role.permissions);
    }
    let mut grants = Grants::none();
    grants.add(permissions, host_group_id);
    Ok(grants)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission::*;

    #[test]
    fn builtin_roles_nest_and_keep_their_promises() {
        let admin = BuiltinRole::Admin.permissions();
        let operator = BuiltinRole::Operator.permissions();
        let auditor = BuiltinRole::Auditor.permissions();
        let viewer = BuiltinRole::Viewer.permissions();
        assert_eq!(admin.len(), Permission::ALL.len());
        assert!(viewer.is_subset(&operator) && operator.is_subset(&admin));
        assert!(viewer.is_subset(&auditor));
        // The auditor changes nothing and reads the audit trail.
        assert!(
            auditor.iter().all(|p| p.kind() == Kind::Read),
            "{auditor:?}"
        );
        assert!(
            auditor.contains(&AuditRead)
                && auditor.contains(&AuditExport)
                && auditor.contains(&UsersRead)
        );
        // The viewer sees hosts, not the backend's administration.
        assert!(viewer.contains(&HostsRead) && viewer.contains(&MetricsRead));
        assert!(
            !viewer.contains(&AuditRead)
                && !viewer.contains(&UsersRead)
                && !viewer.contains(&EnrollmentTokensRead)
        );
        // The operator operates but neither approves patch runs nor manages accounts.
        assert!(operator.contains(&PatchRunsExecute) && operator.contains(&ServicesRestart));
        assert!(!operator.contains(&PatchRunsApprove));
        assert!(
            operator
                .iter()
                .all(|p| p.area() != Area::Accounts && p.area() != Area::Settings)
        );
    }
}
