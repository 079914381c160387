//! `palisade-backend user create` and `api-token create`: each makes the
//! account or token and its audit event in one transaction.

use anyhow::{Context, bail};

use super::{ApiToken, NewUser, Role, store, valid_username};
use crate::audit::{Action, Actor, NewAuditEvent, Outcome};
use crate::db::Db;

/// Creates a local account with a generated password; returns the password
/// (shown once).
pub async fn create_user(db: &Db, name: &str, role: Role) -> anyhow::Result<String> {
    if !valid_username(name) {
        bail!("invalid user name {name:?}: 1 to 64 letters, digits, '.', '_', '-' or '@'");
    }
    let password = crate::secrets::generate_password().context("cannot generate a password")?;
    let hash = crate::secrets::hash_password(&password).context("cannot hash the password")?;
    let now = crate::now_millis();
    let user = NewUser {
        username: name.to_owned(),
        password_hash: hash,
        role,
        created_at: now,
    };
    let event = NewAuditEvent::new(now, Actor::Cli, Action::UserCreate, Outcome::Success)
        .target(name)
        .details(serde_json::json!({ "role": role.as_str() }));
    db.write("create user", move |tx| {
        store::create_user(tx, &user)?;
        crate::audit::store::append(tx, &event)?;
        Ok(())
    })
    .await?;
    Ok(password)
}

/// Creates an API token; returns it whole (`<id>.<secret>`, shown once).
pub async fn create_api_token(db: &Db, name: &str) -> anyhow::Result<String> {
    let parts = crate::secrets::TokenParts::generate().context("cannot generate a token")?;
    let now = crate::now_millis();
    let token = ApiToken {
        id: parts.id.clone(),
        name: name.to_owned(),
        secret_hash: crate::secrets::hash_secret(&parts.secret),
        created_at: now,
        revoked_at: None,
    };
    let event = NewAuditEvent::new(now, Actor::Cli, Action::ApiTokenCreate, Outcome::Success)
        .target(parts.id.clone())
        .details(serde_json::json!({ "name": name }));
    db.write("create api token", move |tx| {
        store::create_api_token(tx, &token)?;
        crate::audit::store::append(tx, &event)?;
        Ok(())
    })
    .await?;
    Ok(parts.to_string())
}
