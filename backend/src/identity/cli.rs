//! `palisade-backend user ...` and `api-token ...`: each change and its
//! audit event in one transaction, by the actor `cli` (root on the
//! backend's machine, who holds every permission).

use anyhow::{Context, bail};

use super::{ApiToken, NewUser, store, valid_username};
use crate::access::{Permission, roles};
use crate::audit::{Action, Actor, NewAuditEvent, Outcome};
use crate::db::{Db, DbError, Millis, Tx};

fn role_id(tx: &mut Tx<'_>, name: &str) -> crate::db::Result<String> {
    roles::by_name(tx, name)?
        .map(|r| r.id)
        .ok_or_else(|| DbError::NotFound {
            what: format!("role {name:?}"),
        })
}

fn group_id(tx: &mut Tx<'_>, name: &str) -> crate::db::Result<String> {
    crate::hosts::groups::by_name(tx, name)?
        .map(|g| g.id)
        .ok_or_else(|| DbError::NotFound {
            what: format!("host group {name:?}"),
        })
}

/// Creates a local account holding `role` (for all hosts, or for the hosts
/// of `group`), with a generated password; returns the password (shown once).
/// Unless `password_is_final`, the user must replace the generated password
/// at the first sign-in.
pub async fn create_user(
    db: &Db,
    name: &str,
    role: &str,
    group: Option<&str>,
    password_is_final: bool,
) -> anyhow::Result<String> {
    if !valid_username(name) {
        bail!("invalid user name {name:?}: 1 to 64 letters, digits, '.', '_', '-' or '@'");
    }
    let password = crate::secrets::generate_password().context("cannot generate a password")?;
    let hash = crate::secrets::hash_password(&password).context("cannot hash the password")?;
    let now = crate::now_millis();
    let user = NewUser {
        username: name.to_owned(),
        password_hash: hash,
        created_at: now,
    };
    let (role, group) = (role.to_owned(), group.map(str::to_owned));
    db.write("create user", move |tx| {
        let role_id = role_id(tx, &role)?;
        let group_id = group.as_deref().map(|g| group_id(tx, g)).transpose()?;
        let created = store::create_user(tx, &user)?;
        store::require_password_change(tx, created.id, !password_is_final)?;
        roles::assign(tx, created.id, &role_id, group_id.as_deref(), now)?;
        let event = NewAuditEvent::new(now, Actor::Cli, Action::UserCreate, Outcome::Success)
            .target(user.username.clone())
            .details(serde_json::json!({ "role": role, "host_group": group }));
        crate::audit::store::append(tx, &event)?;
        Ok(())
    })
    .await?;
    Ok(password)
}

/// Disables (ending their sessions) or enables a user.
pub async fn set_disabled(db: &Db, name: &str, disabled: bool) -> anyhow::Result<()> {
    let name = name.to_owned();
    db.write("disable user", move |tx| {
        let user = store::user_by_name(tx, &name)?.ok_or_else(|| DbError::NotFound {
            what: format!("user {name:?}"),
        })?;
        store::set_disabled(tx, user.id, disabled)?;
        let action = if disabled {
            Action::UserDisable
        } else {
            Action::UserEnable
        };
        let event = NewAuditEvent::new(crate::now_millis(), Actor::Cli, action, Outcome::Success)
            .target(name.clone());
        crate::audit::store::append(tx, &event)?;
        Ok(())
    })
    .await?;
    Ok(())
}

/// Lifts a sign-in lock on `name` (see `identity::throttle`). The lock is
/// keyed by a digest made with the audit key, so the key file must exist.
pub async fn unlock_user(
    db: &Db,
    config: &crate::config::Config,
    name: &str,
) -> anyhow::Result<bool> {
    let path = config.audit_key_path();
    if !path.exists() {
        anyhow::bail!(
            "no audit key at {}: the backend has not started yet, so nothing is locked",
            path.display()
        );
    }
    let key = crate::audit::checkpoint::AuditKey::load_or_create(&path)?;
    let name = name.to_owned();
    let lifted = db
        .write("unlock user", move |tx| {
            let lifted = super::throttle::unlock_account(tx, &key, &name)?;
            let event = NewAuditEvent::new(
                crate::now_millis(),
                Actor::Cli,
                Action::UserUnlock,
                Outcome::Success,
            )
            .target(name.clone())
            .details(serde_json::json!({ "lock_lifted": lifted }));
            crate::audit::store::append(tx, &event)?;
            Ok(lifted)
        })
        .await?;
    Ok(lifted)
}

/// Deletes a user (their sessions, role assignments and API tokens too).
pub async fn delete_user(db: &Db, name: &str) -> anyhow::Result<()> {
    let name = name.to_owned();
    db.write("delete user", move |tx| {
        let user = store::user_by_name(tx, &name)?.ok_or_else(|| DbError::NotFound {
            what: format!("user {name:?}"),
        })?;
        store::delete_user(tx, user.id)?;
        let event = NewAuditEvent::new(
            crate::now_millis(),
            Actor::Cli,
            Action::UserDelete,
            Outcome::Success,
        )
        .target(name.clone());
        crate::audit::store::append(tx, &event)?;
        Ok(())
    })
    .await?;
    Ok(())
}

/// The table `user list` prints.
pub async fn list_users(db: &Db) -> anyhow::Result<String> {
    let (users, assignments) = db
        .read("list users", |tx| {
            Ok((store::list_users(tx)?, roles::assignments(tx, None)?))
        })
        .await?;
    let mut out = format!("{:<24} {:<9} ROLES\n", "USER", "STATE");
    for user in users {
        let held: Vec<String> = assignments
            .iter()
            .filter(|a| a.user_id == user.id)
            .map(|a| match &a.host_group {
                Some((_, group)) => format!("{} ({group})", a.role.name),
                None => a.role.name.clone(),
            })
            .collect();
        out.push_str(&format!(
            "{:<24} {:<9} {}\n",
            user.username,
            if user.disabled { "disabled" } else { "enabled" },
            held.join(", ")
        ));
    }
    Ok(out)
}

/// What `api-token create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewApiToken {
    pub name: String,
    pub role: Option<String>,
    pub permissions: Vec<String>,
    pub group: Option<String>,
    pub expires_in: Option<Millis>,
}

/// Creates an API token; returns it whole (`<id>.<secret>`, shown once).
pub async fn create_api_token(db: &Db, request: NewApiToken) -> anyhow::Result<String> {
    for p in &request.permissions {
        p.parse::<Permission>()
            .map_err(|e| anyhow::anyhow!("{e}; `palisade-backend role permissions` lists them"))?;
    }
    if request.role.is_none() && request.permissions.is_empty() {
        bail!("an API token needs --role or at least one --permission");
    }
    let parts = crate::secrets::TokenParts::generate().context("cannot generate a token")?;
    let now = crate::now_millis();
    let id = parts.id.clone();
    let secret_hash = crate::secrets::hash_secret(&parts.secret);
    db.write("create api token", move |tx| {
        let role_id = request
            .role
            .as_deref()
            .map(|r| role_id(tx, r))
            .transpose()?;
        let group_id = request
            .group
            .as_deref()
            .map(|g| group_id(tx, g))
            .transpose()?;
        let token = ApiToken {
            id: id.clone(),
            name: request.name.clone(),
            secret_hash: secret_hash.clone(),
            created_at: now,
            revoked_at: None,
            user_id: None,
            role_id,
            permissions: request.permissions.clone(),
            host_group_id: group_id,
            expires_at: request.expires_in.map(|d| now.saturating_add(d)),
            last_used_at: None,
            last_used_ip: None,
        };
        store::create_api_token(tx, &token)?;
        let event = NewAuditEvent::new(now, Actor::Cli, Action::ApiTokenCreate, Outcome::Success)
            .target(id.clone())
            .details(serde_json::json!({
                "name": request.name,
                "role": request.role,
                "permissions": request.permissions,
                "host_group": request.group,
                "expires_at": token.expires_at,
            }));
        crate::audit::store::append(tx, &event)?;
        Ok(())
    })
    .await?;
    Ok(parts.to_string())
}

/// The table `api-token list` prints (never a secret).
pub async fn list_api_tokens(db: &Db) -> anyhow::Result<String> {
    let now = crate::now_millis();
    let tokens = db
        .read("list api tokens", |tx| store::api_tokens(tx, None))
        .await?;
    let mut out = format!(
        "{:<18} {:<20} {:<9} {:<24} LAST USED\n",
        "ID", "NAME", "STATE", "EXPIRES"
    );
    for t in tokens {
        let state = if t.revoked_at.is_some() {
            "revoked"
        } else if t.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        };
        let time = |ms: Option<Millis>, none: &str| {
            ms.and_then(crate::web::format::rfc3339)
                .unwrap_or_else(|| none.to_owned())
        };
        out.push_str(&format!(
            "{:<18} {:<20} {:<9} {:<24} {}\n",
            t.id,
            t.name,
            state,
            time(t.expires_at, "never"),
            time(t.last_used_at, "never")
        ));
    }
    Ok(out)
}

/// Revokes an API token.
pub async fn revoke_api_token(db: &Db, id: &str) -> anyhow::Result<()> {
    let id = id.to_owned();
    let found = db
        .write("revoke api token", move |tx| {
            let now = crate::now_millis();
            let found = store::revoke_api_token(tx, &id, now)?;
            if found {
                let event =
                    NewAuditEvent::new(now, Actor::Cli, Action::ApiTokenRevoke, Outcome::Success)
                        .target(id.clone());
                crate::audit::store::append(tx, &event)?;
            }
            Ok(found)
        })
        .await?;
    if !found {
        bail!("no API token with that id");
    }
    Ok(())
}
