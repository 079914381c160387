//! The permission catalogue, kept as data: every `resource:verb` the backend
//! checks, what it allows, whether it can be granted for host groups only,
//! and whether it is dangerous (the sign-in issue makes those ask for
//! re-authentication).
//!
//! Names are stable: roles and API tokens store them as text. A permission
//! is never renamed; a new one is added instead.

use serde::Serialize;

/// What a permission is about, for grouping in the UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Area {
    Hosts,
    Operations,
    Patching,
    Compliance,
    Integrity,
    Alerting,
    Accounts,
    Audit,
    Settings,
}

impl Area {
    pub fn title(self) -> &'static str {
        match self {
            Area::Hosts => "Hosts and host groups",
            Area::Operations => "Operations on hosts",
            Area::Patching => "Packages and patching",
            Area::Compliance => "Compliance and hardening",
            Area::Integrity => "File integrity and events",
            Area::Alerting => "Alerts and reports",
            Area::Accounts => "Users, roles, sessions and tokens",
            Area::Audit => "Audit trail",
            Area::Settings => "Settings and the backend itself",
        }
    }
}

/// How a permission may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// For all hosts, or for the hosts of chosen host groups.
    HostGroups,
    /// Only for the whole backend (users, settings, the audit trail...).
    Global,
}

/// Whether a permission changes anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Reads only (what the auditor role holds).
    Read,
    /// Changes something.
    Write,
    /// Changes something in a way that is hard to undo or hands out power:
    /// re-authentication is asked before it.
    Dangerous,
}

macro_rules! catalogue {
    ($($variant:ident = $name:literal, $area:ident, $scope:ident, $kind:ident, $description:literal;)*) => {
        /// One permission of the catalogue.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Permission {
            $($variant,)*
        }

        impl Permission {
            /// Every permission, in catalogue order.
            pub const ALL: &'static [Permission] = &[$(Permission::$variant,)*];

            /// `resource:verb`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Permission::$variant => $name,)*
                }
            }

            pub fn description(self) -> &'static str {
                match self {
                    $(Permission::$variant => $description,)*
                }
            }

            pub fn area(self) -> Area {
                match self {
                    $(Permission::$variant => Area::$area,)*
                }
            }

            pub fn scope(self) -> Scope {
                match self {
                    $(Permission::$variant => Scope::$scope,)*
                }
            }

            pub fn kind(self) -> Kind {
                match self {
                    $(Permission::$variant => Kind::$kind,)*
                }
            }
        }

        impl std::str::FromStr for Permission {
            type Err = crate::UnknownName;
            fn from_str(s: &str) -> Result<Permission, crate::UnknownName> {
                match s {
                    $($name => Ok(Permission::$variant),)*
                    other => Err(crate::UnknownName::new("permission", other)),
                }
            }
        }
    };
}

catalogue! {
    // Hosts and host groups.
    HostsRead = "hosts:read", Hosts, HostGroups, Read, "See hosts: facts, status, agent health and connection.";
    HostsUpdate = "hosts:update", Hosts, HostGroups, Write, "Change a host's name shown in Palisade and its notes.";
    HostsAssignGroup = "hosts:assign_group", Hosts, HostGroups, Write, "Move a host into a host group (needs the right on both groups).";
    HostsRevoke = "hosts:revoke", Hosts, HostGroups, Dangerous, "Revoke a host: close its agent's connection and refuse its certificate from then on.";
    HostsDelete = "hosts:delete", Hosts, HostGroups, Dangerous, "Delete a revoked host and everything stored about it.";
    HostGroupsRead = "host_groups:read", Hosts, HostGroups, Read, "See host groups and which hosts they hold.";
    HostGroupsCreate = "host_groups:create", Hosts, Global, Write, "Create host groups.";
    HostGroupsUpdate = "host_groups:update", Hosts, HostGroups, Write, "Rename a host group or change its description.";
    HostGroupsDelete = "host_groups:delete", Hosts, HostGroups, Dangerous, "Delete a host group (its hosts become ungrouped).";
    MetricsRead = "metrics:read", Hosts, HostGroups, Read, "See metrics and their charts.";
    InventoryRead = "inventory:read", Hosts, HostGroups, Read, "See hardware, network interfaces and other inventory.";
    LogsRead = "logs:read", Hosts, HostGroups, Read, "See log excerpts collected from hosts.";
    EnrollmentTokensRead = "enrollment_tokens:read", Hosts, Global, Read, "See enrollment tokens (never their secrets).";
    EnrollmentTokensCreate = "enrollment_tokens:create", Hosts, Global, Dangerous, "Create enrollment tokens, which let new machines join.";
    EnrollmentTokensRevoke = "enrollment_tokens:revoke", Hosts, Global, Write, "Revoke enrollment tokens.";

    // Operations on hosts.
    CommandsRead = "commands:read", Operations, HostGroups, Read, "See the commands sent to hosts and their results.";
    CommandsCreate = "commands:create", Operations, HostGroups, Write, "Send harmless commands to hosts (ping, refresh the inventory).";
    CommandsCancel = "commands:cancel", Operations, HostGroups, Write, "Cancel a command that has not finished.";
    ServicesRead = "services:read", Operations, HostGroups, Read, "See the services of a host and their state.";
    ServicesStart = "services:start", Operations, HostGroups, Write, "Start a stopped service.";
    ServicesRestart = "services:restart", Operations, HostGroups, Dangerous, "Restart a service.";
    ServicesStop = "services:stop", Operations, HostGroups, Dangerous, "Stop a service.";
    ServicesEnable = "services:enable", Operations, HostGroups, Write, "Enable a service at boot.";
    ServicesDisable = "services:disable", Operations, HostGroups, Dangerous, "Disable a service at boot.";
    HostsReboot = "hosts:reboot", Operations, HostGroups, Dangerous, "Reboot a host.";
    HostsPoweroff = "hosts:poweroff", Operations, HostGroups, Dangerous, "Power a host off.";
    TerminalOpen = "terminal:open", Operations, HostGroups, Dangerous, "Open a terminal on a host (recorded).";
    TerminalRecordingsRead = "terminal_recordings:read", Operations, HostGroups, Read, "Replay recorded terminal sessions.";

    // Packages and patching.
    PackagesRead = "packages:read", Patching, HostGroups, Read, "See installed packages and pending updates.";
    PackagesRefresh = "packages:refresh", Patching, HostGroups, Write, "Refresh a host's package indexes.";
    PackagesInstall = "packages:install", Patching, HostGroups, Dangerous, "Install named packages outside a patch run.";
    PackagesRemove = "packages:remove", Patching, HostGroups, Dangerous, "Remove named packages.";
    PatchPoliciesRead = "patch_policies:read", Patching, HostGroups, Read, "See patch policies.";
    PatchPoliciesCreate = "patch_policies:create", Patching, HostGroups, Write, "Create patch policies.";
    PatchPoliciesUpdate = "patch_policies:update", Patching, HostGroups, Write, "Change patch policies and their maintenance windows.";
    PatchPoliciesDelete = "patch_policies:delete", Patching, HostGroups, Write, "Delete patch policies.";
    PatchRunsRead = "patch_runs:read", Patching, HostGroups, Read, "See patch runs, their plans and their records.";
    PatchRunsOutputRead = "patch_runs:read_output", Patching, HostGroups, Read, "See the full shell output of patch runs.";
    PatchRunsCreate = "patch_runs:create", Patching, HostGroups, Write, "Start a patch run's dry run (nothing changes on the host).";
    PatchRunsApprove = "patch_runs:approve", Patching, HostGroups, Dangerous, "Approve a patch run planned by a dry run.";
    PatchRunsExecute = "patch_runs:execute", Patching, HostGroups, Dangerous, "Execute an approved patch run.";
    PatchRunsCancel = "patch_runs:cancel", Patching, HostGroups, Write, "Stop a patch run that is running.";

    // Compliance and hardening.
    ComplianceRead = "compliance:read", Compliance, HostGroups, Read, "See compliance results, scores and their history.";
    ComplianceProfilesRead = "compliance_profiles:read", Compliance, HostGroups, Read, "See the benchmark profiles and datastreams hosts have.";
    ComplianceScansRun = "compliance_scans:run", Compliance, HostGroups, Write, "Start a compliance scan.";
    ComplianceScansCancel = "compliance_scans:cancel", Compliance, HostGroups, Write, "Cancel a running compliance scan.";
    CompliancePoliciesRead = "compliance_policies:read", Compliance, HostGroups, Read, "See scan schedules and remediation policies.";
    CompliancePoliciesCreate = "compliance_policies:create", Compliance, HostGroups, Write, "Create scan schedules and remediation policies.";
    CompliancePoliciesUpdate = "compliance_policies:update", Compliance, HostGroups, Write, "Change scan schedules and remediation policies.";
    CompliancePoliciesDelete = "compliance_policies:delete", Compliance, HostGroups, Write, "Delete scan schedules and remediation policies.";
    RemediationPlan = "remediation:plan", Compliance, HostGroups, Write, "Plan a remediation (shows what would change).";
    RemediationApprove = "remediation:approve", Compliance, HostGroups, Dangerous, "Approve a planned remediation.";
    RemediationExecute = "remediation:execute", Compliance, HostGroups, Dangerous, "Apply a remediation on a host.";
    RemediationRollback = "remediation:rollback", Compliance, HostGroups, Dangerous, "Roll a remediation back to the recorded prior state.";
    ViolationsAcknowledge = "violations:acknowledge", Compliance, HostGroups, Write, "Acknowledge a compliance violation.";
    ViolationsResolve = "violations:resolve", Compliance, HostGroups, Write, "Mark a compliance violation resolved.";
    ScoresRead = "scores:read", Compliance, HostGroups, Read, "See security scores and their breakdown.";
    PostureRead = "posture:read", Compliance, HostGroups, Read, "See the fleet's posture dashboard.";

    // File integrity and events.
    IntegrityRead = "integrity:read", Integrity, HostGroups, Read, "See file changes found by file integrity monitoring.";
    IntegrityAcknowledge = "integrity:acknowledge", Integrity, HostGroups, Write, "Acknowledge file changes.";
    IntegrityConfigure = "integrity:configure", Integrity, HostGroups, Dangerous, "Change which paths are watched.";
    IntegrityRebaseline = "integrity:rebaseline", Integrity, HostGroups, Dangerous, "Accept a host's current files as its new baseline.";
    EventsRead = "events:read", Integrity, HostGroups, Read, "See the incident timeline.";

    // Alerts and reports.
    AlertsRead = "alerts:read", Alerting, HostGroups, Read, "See alerts.";
    AlertsAcknowledge = "alerts:acknowledge", Alerting, HostGroups, Write, "Acknowledge alerts.";
    AlertsResolve = "alerts:resolve", Alerting, HostGroups, Write, "Close alerts.";
    AlertRulesRead = "alert_rules:read", Alerting, Global, Read, "See alert rules.";
    AlertRulesCreate = "alert_rules:create", Alerting, Global, Write, "Create alert rules.";
    AlertRulesUpdate = "alert_rules:update", Alerting, Global, Write, "Change alert rules.";
    AlertRulesDelete = "alert_rules:delete", Alerting, Global, Write, "Delete alert rules.";
    NotificationChannelsRead = "notification_channels:read", Alerting, Global, Read, "See notification channels (email, Slack, webhooks), never their secrets.";
    NotificationChannelsCreate = "notification_channels:create", Alerting, Global, Write, "Create notification channels.";
    NotificationChannelsUpdate = "notification_channels:update", Alerting, Global, Write, "Change notification channels.";
    NotificationChannelsDelete = "notification_channels:delete", Alerting, Global, Write, "Delete notification channels.";
    NotificationChannelsTest = "notification_channels:test", Alerting, Global, Write, "Send a test message through a channel.";
    ReportsRead = "reports:read", Alerting, Global, Read, "See scheduled reports and past ones.";
    ReportsCreate = "reports:create", Alerting, Global, Write, "Create scheduled reports.";
    ReportsUpdate = "reports:update", Alerting, Global, Write, "Change scheduled reports.";
    ReportsDelete = "reports:delete", Alerting, Global, Write, "Delete scheduled reports.";
    ReportsSend = "reports:send", Alerting, Global, Write, "Send a report now.";

    // Users, roles, sessions and tokens.
    UsersRead = "users:read", Accounts, Global, Read, "See user accounts and their roles.";
    UsersCreate = "users:create", Accounts, Global, Dangerous, "Create user accounts.";
    UsersUpdate = "users:update", Accounts, Global, Write, "Change a user's details.";
    UsersDisable = "users:disable", Accounts, Global, Dangerous, "Disable or enable a user (disabling ends their sessions).";
    UsersDelete = "users:delete", Accounts, Global, Dangerous, "Delete a user.";
    UsersResetPassword = "users:reset_password", Accounts, Global, Dangerous, "Force a user to choose a new password.";
    UsersResetFactors = "users:reset_factors", Accounts, Global, Dangerous, "Remove a user's second factors.";
    RolesRead = "roles:read", Accounts, Global, Read, "See roles and their permissions.";
    RolesCreate = "roles:create", Accounts, Global, Dangerous, "Create custom roles.";
    RolesUpdate = "roles:update", Accounts, Global, Dangerous, "Change a custom role's permissions.";
    RolesDelete = "roles:delete", Accounts, Global, Dangerous, "Delete a custom role.";
    RolesAssign = "roles:assign", Accounts, Global, Dangerous, "Grant and withdraw roles, for all hosts or for host groups.";
    SessionsRead = "sessions:read", Accounts, Global, Read, "See every user's sessions.";
    SessionsRevoke = "sessions:revoke", Accounts, Global, Dangerous, "End another user's sessions.";
    ApiTokensRead = "api_tokens:read", Accounts, Global, Read, "See every API token (never their secrets).";
    ApiTokensCreate = "api_tokens:create", Accounts, Global, Write, "Create API tokens holding some of one's own permissions.";
    ApiTokensRevoke = "api_tokens:revoke", Accounts, Global, Dangerous, "Revoke anyone's API tokens.";

    // The audit trail.
    AuditRead = "audit:read", Audit, Global, Read, "Read the audit trail.";
    AuditExport = "audit:export", Audit, Global, Read, "Export the audit trail (CSV, JSON) and its signed checkpoints.";
    AuditVerify = "audit:verify", Audit, Global, Read, "Verify the audit trail's hash chain and checkpoints.";
    AuditConfigure = "audit:configure", Audit, Global, Dangerous, "Change the audit trail's retention.";

    // Settings and the backend itself.
    SettingsRead = "settings:read", Settings, Global, Read, "See the backend's settings.";
    SettingsUpdate = "settings:update", Settings, Global, Dangerous, "Change the backend's settings.";
    PasswordPolicyUpdate = "password_policy:update", Settings, Global, Dangerous, "Change the password and sign-in policy.";
    SsoRead = "sso:read", Settings, Global, Read, "See single sign-on providers.";
    SsoUpdate = "sso:update", Settings, Global, Dangerous, "Configure single sign-on providers.";
    BackupsRead = "backups:read", Settings, Global, Read, "See backups of the backend's data.";
    BackupsCreate = "backups:create", Settings, Global, Write, "Take a backup now.";
    BackupsRestore = "backups:restore", Settings, Global, Dangerous, "Restore the backend from a backup.";
    SystemMetricsRead = "system_metrics:read", Settings, Global, Read, "Read the backend's own metrics (Prometheus).";
    ReplicasRead = "replicas:read", Settings, Global, Read, "See the backend's replicas and the agents each holds.";
}

impl Permission {
    pub fn is_dangerous(self) -> bool {
        self.kind() == Kind::Dangerous
    }

    pub fn is_read(self) -> bool {
        self.kind() == Kind::Read
    }

    pub fn is_scopable(self) -> bool {
        self.scope() == Scope::HostGroups
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn the_catalogue_has_over_a_hundred_distinct_well_formed_permissions() {
        assert!(
            Permission::ALL.len() >= 100,
            "{} permissions",
            Permission::ALL.len()
        );
        let mut names = HashSet::new();
        for p in Permission::ALL {
            let name = p.name();
            assert!(names.insert(name), "{name} twice");
            let (resource, verb) = name.split_once(':').expect("resource:verb");
            assert!(!resource.is_empty() && !verb.is_empty(), "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b':'),
                "{name}"
            );
            assert!(
                p.description().ends_with('.'),
                "{name}: {}",
                p.description()
            );
            assert_eq!(name.parse::<Permission>(), Ok(*p));
            // A read permission is never dangerous, and a verb that reads is
            // a read permission.
            if verb == "read" || verb.starts_with("read_") {
                assert_eq!(p.kind(), Kind::Read, "{name}");
            }
        }
        assert!("hosts:fly".parse::<Permission>().is_err());
    }

    #[test]
    fn the_catalogue_covers_every_area_the_product_has() {
        for resource in [
            "hosts",
            "host_groups",
            "metrics",
            "commands",
            "services",
            "packages",
            "patch_policies",
            "patch_runs",
            "compliance_scans",
            "remediation",
            "integrity",
            "users",
            "roles",
            "sessions",
            "api_tokens",
            "enrollment_tokens",
            "audit",
            "settings",
        ] {
            assert!(
                Permission::ALL
                    .iter()
                    .any(|p| p.name().starts_with(&format!("{resource}:"))),
                "no permission about {resource}"
            );
        }
        // Patch runs are executed and approved by different permissions.
        assert_ne!(Permission::PatchRunsExecute, Permission::PatchRunsApprove);
        assert!(Permission::HostsReboot.is_dangerous());
    }
}
