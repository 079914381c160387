//! Host queries.

use super::{AgentHealth, Host, HostFacts, NewHost};
use crate::db::value::to_json;
use crate::db::{DbError, Millis, Result, Row, Tx, counter};
use crate::metrics::Sample;
use crate::metrics::store::{SAMPLE_COLUMN_COUNT, sample_at, sample_columns};
use crate::params;
use crate::uplink::Transport;

const HOST_COLUMNS: &str = "hosts.id, hosts.hostname, hosts.host_group_id, hosts.os_pretty_name, hosts.os_id, \
     hosts.os_version_id, hosts.kernel_release, hosts.architecture, hosts.cpu_count, hosts.memory_total_bytes, \
     hosts.enrolled_at, hosts.enrolled_from, hosts.cert_sha256, hosts.last_seen, hosts.last_transport, \
     hosts.stored_up_to_seq, hosts.agent_health, hosts.revoked_at, hosts.spool_dropped_total, \
     (SELECT name FROM host_groups WHERE host_groups.id = hosts.host_group_id)";
const HOST_COLUMN_COUNT: usize = 20;

fn host_from_row(row: &Row<'_>) -> Result<Host> {
    let transport: Option<String> = row.get(14)?;
    let last_transport = transport
        .map(|t| {
            t.parse::<Transport>()
                .map_err(|e| DbError::Corrupt(e.to_string()))
        })
        .transpose()?;
    let health: Option<String> = row.get(16)?;
    let id: String = row.get(0)?;
    // Our own JSON, but an unreadable report must not hide the host.
    let agent_health = health.and_then(|text| match serde_json::from_str::<AgentHealth>(&text) {
        Ok(health) => Some(health),
        Err(e) => {
            tracing::warn!(host = %id, error = %e, "stored agent health is unreadable");
            None
        }
    });
    let group_id: Option<String> = row.get(2)?;
    let group_name: Option<String> = row.get(19)?;
    Ok(Host {
        hostname: row.get(1)?,
        host_group: group_id.zip(group_name),
        os_pretty_name: row.get(3)?,
        os_id: row.get(4)?,
        os_version_id: row.get(5)?,
        kernel_release: row.get(6)?,
        architecture: row.get(7)?,
        cpu_count: row.get(8)?,
        memory_total_bytes: row.get(9)?,
        enrolled_at: row.get(10)?,
        enrolled_from: row.get(11)?,
        cert_sha256: row.get(12)?,
        last_seen: row.get(13)?,
        last_transport,
        stored_up_to_seq: row.get(15)?,
        agent_health,
        revoked_at: row.get(17)?,
        spool_dropped_total: row.get(18)?,
        id,
    })
}

pub fn insert(tx: &mut Tx<'_>, host: &NewHost) -> Result<()> {
    tx.execute(
        "INSERT INTO hosts (id, hostname, host_group_id, enrolled_at, enrolled_from, token_id, cert_sha256)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        params![
            &host.id,
            &host.hostname,
            &host.host_group_id,
            host.enrolled_at,
            &host.enrolled_from,
            &host.token_id,
            &host.cert_sha256
        ],
    )
    .map_err(|e| match e {
        DbError::Conflict { .. } => DbError::Conflict {
            what: format!("host {:?}", host.id),
        },
        e => e,
    })?;
    Ok(())
}

pub fn get(tx: &mut Tx<'_>, id: &str) -> Result<Option<Host>> {
    tx.query_opt(
        &format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = $1"),
        params![id],
        host_from_row,
    )
}

/// Which hosts a list shows, one page at a time, in (hostname, id) order.
#[derive(Debug, Clone, Default)]
pub struct HostQuery {
    /// Start after this (hostname, id): the previous page's last host.
    pub after: Option<(String, String)>,
    /// Only hosts of these groups (None: every host, grouped or not).
    pub groups: Option<Vec<String>>,
    /// At most this many.
    pub limit: u32,
    /// Only hosts whose hostname contains this (case-insensitive).
    pub name_contains: Option<String>,
}

/// `text` as a LIKE pattern matching itself anywhere (`\` escapes).
fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// One page of hosts with their latest sample: one query, an index range
/// (the statement names only the conditions in use, so each shape gets a
/// plan of its own).
pub fn list_page(tx: &mut Tx<'_>, query: &HostQuery) -> Result<Vec<(Host, Option<Sample>)>> {
    let pattern = query.name_contains.as_deref().map(contains_pattern);
    let mut conditions = Vec::new();
    let mut values: Vec<crate::db::Param<'_>> = Vec::new();
    if let Some((name, id)) = &query.after {
        conditions.push(format!(
            "(hosts.hostname, hosts.id) > (${}, ${})",
            values.len() + 1,
            values.len() + 2
        ));
        values.push(name.as_str().into());
        values.push(id.as_str().into());
    }
    if let Some(pattern) = &pattern {
        conditions.push(format!(
            "lower(hosts.hostname) LIKE ${} ESCAPE '\\'",
            values.len() + 1
        ));
        values.push(pattern.as_str().into());
    }
    if let Some(groups) = &query.groups {
        conditions.push(group_condition(groups, &mut values));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    values.push(query.limit.into());
    tx.query(
        &format!(
            "SELECT {HOST_COLUMNS}, {} FROM hosts LEFT JOIN host_latest_metrics m ON m.host_id = hosts.id
             {filter} ORDER BY hosts.hostname, hosts.id LIMIT ${}",
            sample_columns("m"),
            values.len()
        ),
        &values,
        |row| Ok((host_from_row(row)?, sample_at(row, HOST_COLUMN_COUNT)?)),
    )
}

/// `hosts.host_group_id IN (...)` for `groups` (never true for none).
pub(crate) fn group_condition<'a>(
    groups: &'a [String],
    values: &mut Vec<crate::db::Param<'a>>,
) -> String {
    if groups.is_empty() {
        return "1 = 0".to_owned();
    }
    let mut placeholders = Vec::with_capacity(groups.len());
    for group in groups {
        values.push(group.as_str().into());
        placeholders.push(format!("${}", values.len()));
    }
    format!("hosts.host_group_id IN ({})", placeholders.join(", "))
}

/// How many hosts match `name_contains` (all of them without one), among
/// those of `groups` when given.
pub fn count(
    tx: &mut Tx<'_>,
    name_contains: Option<&str>,
    groups: Option<&[String]>,
) -> Result<u64> {
    let pattern = name_contains.map(contains_pattern);
    let mut conditions = Vec::new();
    let mut values: Vec<crate::db::Param<'_>> = Vec::new();
    if let Some(pattern) = &pattern {
        values.push(pattern.as_str().into());
        conditions.push(format!(
            "lower(hosts.hostname) LIKE ${} ESCAPE '\\'",
            values.len()
        ));
    }
    if let Some(groups) = groups {
        conditions.push(group_condition(groups, &mut values));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    tx.query_one(
        &format!("SELECT COUNT(*) FROM hosts{filter}"),
        &values,
        |row| row.get(0),
    )
}

/// One host with its latest sample.
pub fn get_with_latest(tx: &mut Tx<'_>, id: &str) -> Result<Option<(Host, Option<Sample>)>> {
    debug_assert_eq!(SAMPLE_COLUMN_COUNT, 14);
    tx.query_opt(
        &format!(
            "SELECT {HOST_COLUMNS}, {} FROM hosts LEFT JOIN host_latest_metrics m ON m.host_id = hosts.id
             WHERE hosts.id = $1",
            sample_columns("m")
        ),
        params![id],
        |row| Ok((host_from_row(row)?, sample_at(row, HOST_COLUMN_COUNT)?)),
    )
}

/// Records a connection (or activity) from the host's agent. A revoked or
/// deleted host is not found: the connection ends.
pub fn seen(tx: &mut Tx<'_>, id: &str, now: Millis, transport: Transport) -> Result<()> {
    let changed = tx.execute(
        "UPDATE hosts SET last_seen = $2, last_transport = $3 WHERE id = $1 AND revoked_at IS NULL",
        params![id, now, transport.as_str()],
    )?;
    if changed == 0 {
        return Err(DbError::NotFound {
            what: format!("host {id:?}"),
        });
    }
    Ok(())
}

/// Records the agent's count of records its spool dropped because it was
/// full (sent in every hello).
pub fn set_spool_dropped(tx: &mut Tx<'_>, id: &str, total: u64) -> Result<()> {
    let changed = tx.execute(
        "UPDATE hosts SET spool_dropped_total = $2 WHERE id = $1",
        params![id, counter(total)],
    )?;
    if changed == 0 {
        return Err(DbError::NotFound {
            what: format!("host {id:?}"),
        });
    }
    Ok(())
}

/// The host's stored-up-to sequence, with the host's row locked until the
/// transaction ends (batches of one host are stored one after the other,
/// from any connection or replica). `None` for an unknown host.
pub fn stored_up_to_for_update(tx: &mut Tx<'_>, id: &str) -> Result<Option<u64>> {
    let sql = format!(
        "SELECT stored_up_to_seq FROM hosts WHERE id = $1{}",
        tx.for_update()
    );
    tx.query_opt(&sql, params![id], |row| row.get(0))
}

pub fn set_stored_up_to(tx: &mut Tx<'_>, id: &str, seq: u64) -> Result<()> {
    tx.execute(
        "UPDATE hosts SET stored_up_to_seq = $2 WHERE id = $1",
        params![id, crate::db::seq(seq)?],
    )?;
    Ok(())
}

/// Applies a facts record unless a newer one was already applied.
pub fn apply_facts(tx: &mut Tx<'_>, id: &str, seq: u64, facts: &HostFacts) -> Result<()> {
    tx.execute(
        "UPDATE hosts SET hostname = $2, os_pretty_name = $3, os_id = $4, os_version_id = $5, kernel_release = $6,
                          architecture = $7, cpu_count = $8, memory_total_bytes = $9, facts_seq = $10
         WHERE id = $1 AND facts_seq < $10",
        params![
            id,
            &facts.hostname,
            &facts.os_pretty_name,
            &facts.os_id,
            &facts.os_version_id,
            &facts.kernel_release,
            &facts.architecture,
            facts.cpu_count,
            facts.memory_total_bytes.map(counter),
            crate::db::seq(seq)?,
        ],
    )?;
    Ok(())
}

/// Applies a health report unless a newer one was already applied.
pub fn apply_health(tx: &mut Tx<'_>, id: &str, seq: u64, health: &AgentHealth) -> Result<()> {
    let json = to_json("agent health", health)?;
    tx.execute(
        "UPDATE hosts SET agent_health = $2, agent_health_seq = $3 WHERE id = $1 AND agent_health_seq < $3",
        params![id, &json, crate::db::seq(seq)?],
    )?;
    Ok(())
}

/// Every stored record sequence of a host, ascending (for audits of the
/// no-loss guarantee): the ledger and the metric samples.
pub fn record_seqs(tx: &mut Tx<'_>, id: &str) -> Result<Vec<u64>> {
    let mut seqs: Vec<u64> = tx.query(
        "SELECT seq FROM host_records WHERE host_id = $1",
        params![id],
        |row| row.get(0),
    )?;
    seqs.extend(crate::metrics::store::seqs(tx, id)?);
    seqs.sort_unstable();
    seqs.dedup();
    Ok(seqs)
}

/// Revokes a host (the first revocation time is kept). False when there is
/// no such host.
pub fn revoke(tx: &mut Tx<'_>, id: &str, now: Millis) -> Result<bool> {
    Ok(tx.execute(
        "UPDATE hosts SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
        params![id, now],
    )? > 0)
}

/// Deletes a host and everything stored about it. False when there is no
/// such host.
pub fn delete(tx: &mut Tx<'_>, id: &str) -> Result<bool> {
    crate::metrics::store::delete_host(tx, id)?;
    Ok(tx.execute("DELETE FROM hosts WHERE id = $1", params![id])? > 0)
}
