//! `palisade-backend token create | list | revoke`. Each change and its
//! audit event commit in one transaction.

use anyhow::{Context, bail};

use super::{EnrollmentToken, store};
use crate::audit::{Action, Actor, NewAuditEvent, Outcome};
use crate::db::{Db, Millis};
use crate::pki::Pki;

/// What `token create` asks for.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub group: Option<String>,
    pub cidrs: Vec<ipnet::IpNet>,
    pub max_per_day: Option<u32>,
    /// Lifetime in milliseconds; `None`: no expiry.
    pub expires_in: Option<Millis>,
}

/// Creates a token; returns it whole (`<id>.<secret>.<ca-pin>`, shown once)
/// and its id.
pub async fn create(db: &Db, pki: &Pki, request: NewToken) -> anyhow::Result<(String, String)> {
    if let Some(group) = &request.group
        && !crate::hosts::groups::valid_name(group)
    {
        bail!("invalid host group name {group:?}: 1 to 64 printable characters");
    }
    let parts = crate::secrets::TokenParts::generate().context("cannot generate a token")?;
    let now = crate::now_millis();
    let mut token = EnrollmentToken {
        id: parts.id.clone(),
        secret_hash: crate::secrets::hash_secret(&parts.secret),
        host_group_id: None,
        cidrs: request.cidrs.clone(),
        max_per_day: request.max_per_day,
        expires_at: request.expires_in.map(|d| now.saturating_add(d)),
        created_at: now,
        revoked_at: None,
    };
    let event = NewAuditEvent::new(
        now,
        Actor::Cli,
        Action::EnrollmentTokenCreate,
        Outcome::Success,
    )
    .target(parts.id.clone())
    .details(serde_json::json!({
        "group": request.group,
        "cidrs": request.cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "max_per_day": request.max_per_day,
        "expires_at": token.expires_at,
    }));
    let group = request.group.clone();
    db.write("create enrollment token", move |tx| {
        // The group new hosts join is made if it does not exist yet.
        if let Some(name) = &group {
            let id = match crate::hosts::groups::by_name(tx, name)? {
                Some(existing) => existing.id,
                None => {
                    let id = crate::hosts::groups::create(tx, name, "", now)?;
                    let created = NewAuditEvent::new(
                        now,
                        Actor::Cli,
                        Action::HostGroupCreate,
                        Outcome::Success,
                    )
                    .target(id.clone())
                    .details(serde_json::json!({ "name": name }));
                    crate::audit::store::append(tx, &created)?;
                    id
                }
            };
            token.host_group_id = Some(id);
        }
        store::create_token(tx, &token)?;
        crate::audit::store::append(tx, &event)?;
        Ok(())
    })
    .await?;
    let full = palisade_proto::token::EnrollmentToken {
        id: parts.id.clone(),
        secret: parts.secret,
        ca_pin: pki.ca_pin(),
    };
    Ok((full.to_string(), parts.id))
}

/// The token table `token list` prints (never a secret).
pub async fn list(db: &Db) -> anyhow::Result<String> {
    let now = crate::now_millis();
    let tokens = db
        .read("list enrollment tokens", store::list_tokens)
        .await?;
    let mut out = format!(
        "{:<18} {:<10} {:<12} {:<22} {:<22} NETWORKS\n",
        "ID", "STATE", "MAX/DAY", "CREATED", "EXPIRES"
    );
    for t in tokens {
        let state = if t.revoked_at.is_some() {
            "revoked"
        } else if t.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        };
        let nets = if t.cidrs.is_empty() {
            "any".to_owned()
        } else {
            t.cidrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        out.push_str(&format!(
            "{:<18} {:<10} {:<12} {:<22} {:<22} {}\n",
            t.id,
            state,
            t.max_per_day
                .map(|m| m.to_string())
                .unwrap_or_else(|| "-".into()),
            rfc3339_or_raw(t.created_at),
            t.expires_at
                .map(rfc3339_or_raw)
                .unwrap_or_else(|| "never".into()),
            nets
        ));
    }
    Ok(out)
}

pub async fn revoke(db: &Db, id: &str) -> anyhow::Result<()> {
    let now = crate::now_millis();
    let event = NewAuditEvent::new(
        now,
        Actor::Cli,
        Action::EnrollmentTokenRevoke,
        Outcome::Success,
    )
    .target(id);
    let id_owned = id.to_owned();
    let found = db
        .write("revoke enrollment token", move |tx| {
            let found = store::revoke_token(tx, &id_owned, now)?;
            if found {
                crate::audit::store::append(tx, &event)?;
            }
            Ok(found)
        })
        .await?;
    if !found {
        bail!("no enrollment token with id {id:?}");
    }
    Ok(())
}

fn rfc3339_or_raw(ms: Millis) -> String {
    crate::web::format::rfc3339(ms).unwrap_or_else(|| ms.to_string())
}
