//! `palisade-backend host revoke ID`.

use anyhow::bail;

use super::store;
use crate::audit::{Action, Actor, NewAuditEvent, Outcome};
use crate::db::Db;

/// Revokes a host. A running backend closes its connection at the agent's
/// next heartbeat (every few seconds): storing anything for a revoked host
/// fails, which ends the connection.
pub async fn revoke(db: &Db, id: &str) -> anyhow::Result<()> {
    let id = id.to_owned();
    let found = db
        .write("revoke host", move |tx| {
            let now = crate::now_millis();
            let Some(host) = store::get(tx, &id)? else {
                return Ok(false);
            };
            store::revoke(tx, &id, now)?;
            let event = NewAuditEvent::new(now, Actor::Cli, Action::HostRevoke, Outcome::Success)
                .target(id.clone())
                .details(serde_json::json!({ "hostname": host.hostname }));
            crate::audit::store::append(tx, &event)?;
            Ok(true)
        })
        .await?;
    if !found {
        bail!("no host with that id");
    }
    Ok(())
}
