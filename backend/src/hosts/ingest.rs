//! Storing what an agent sends: records, idempotently on (host, seq), each
//! applied by the domain that owns its kind, one transaction per batch.
//!
//! Wire records become [`AgentRecord`]s at the uplink (the generated
//! protobuf types stop there). Metric samples are their own ledger (their
//! key includes the sequence); every other kind goes through
//! `host_records`, whose primary key makes a resent record a no-op.

use palisade_proto::msg::{Record, RecordBody};

use super::{AgentHealth, HostFacts, store};
use crate::commands::{CommandResult, OutputPiece};
use crate::db::{DbError, Millis, Result, Tx};
use crate::metrics::Sample;
use crate::params;

/// One record from an agent, in domain types.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRecord {
    /// At least 1; unique per host.
    pub seq: u64,
    /// The agent's clock when it created the record.
    pub created_at: Millis,
    pub data: RecordData,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RecordData {
    Facts(HostFacts),
    Metrics(Sample),
    Health(AgentHealth),
    CommandResult(CommandResult),
    /// A piece of a running command's output.
    CommandOutput(OutputPiece),
    /// A package inventory, whole or a change.
    Packages(crate::packages::Change, crate::packages::Report),
    /// A result whose status no result can have: stored in the ledger,
    /// applied to nothing (the decoder refuses these; a refused record
    /// would be resent forever and block the records behind it).
    Unusable(&'static str),
}

impl RecordData {
    /// The name stored in the ledger.
    pub fn kind(&self) -> &'static str {
        match self {
            RecordData::Facts(_) => "facts",
            RecordData::Metrics(_) => "metrics",
            RecordData::Health(_) => "agent_health",
            RecordData::CommandResult(_) => "command_result",
            RecordData::CommandOutput(_) => "command_output",
            RecordData::Packages(..) => "packages",
            RecordData::Unusable(kind) => kind,
        }
    }
}

impl From<&Record> for AgentRecord {
    fn from(r: &Record) -> AgentRecord {
        let data = match &r.body {
            RecordBody::Facts(f) => RecordData::Facts(HostFacts::from(f)),
            RecordBody::Metrics(m) => RecordData::Metrics(Sample::from_wire(r.seq, m)),
            RecordBody::AgentHealth(h) => RecordData::Health(AgentHealth::from(h)),
            RecordBody::CommandResult(c) => match CommandResult::from_wire(c) {
                Some(result) => RecordData::CommandResult(result),
                None => RecordData::Unusable("command_result"),
            },
            RecordBody::CommandOutput(o) => RecordData::CommandOutput(OutputPiece::from_wire(o)),
            RecordBody::Packages(p) => match crate::packages::from_wire(p) {
                Some((change, report)) => RecordData::Packages(change, report),
                None => RecordData::Unusable("packages"),
            },
        };
        AgentRecord {
            seq: r.seq,
            created_at: r.created_at_unix_ms,
            data,
        }
    }
}

/// Stores `records` of host `host_id` and applies what is new: facts update
/// the host, samples are appended, health replaces the previous report, a
/// command result completes the host's command of that id if it has none
/// yet (a result matching no command of this host is audited instead), a
/// piece of output is added to its command's output (once per offset, only
/// to a command of this host, within the cap), a package report replaces or changes the host's inventory.
/// Returns the host's stored-up-to sequence afterwards.
pub fn store_records(
    tx: &mut Tx<'_>,
    host_id: &str,
    received_at: Millis,
    records: &[AgentRecord],
) -> Result<u64> {
    let Some(before) = store::stored_up_to_for_update(tx, host_id)? else {
        return Err(DbError::NotFound {
            what: format!("host {host_id:?}"),
        });
    };
    let mut up_to = before;
    let mut samples: Vec<&Sample> = Vec::new();
    for record in records {
        up_to = up_to.max(record.seq);
        if let RecordData::Metrics(sample) = &record.data {
            samples.push(sample);
            continue;
        }
        let inserted = tx.execute(
            "INSERT INTO host_records (host_id, seq, kind, created_at, received_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (host_id, seq) DO NOTHING",
            params![host_id, crate::db::seq(record.seq)?, record.data.kind(), record.created_at, received_at],
        )?;
        if inserted == 0 {
            continue;
        }
        match &record.data {
            // Facts and health describe "now": only a newer record than the
            // one already applied replaces them.
            RecordData::Facts(facts) => store::apply_facts(tx, host_id, record.seq, facts)?,
            RecordData::Health(health) => store::apply_health(tx, host_id, record.seq, health)?,
            RecordData::CommandResult(result) => {
                crate::commands::store::apply_result(tx, host_id, record.seq, received_at, result)?;
            }
            RecordData::CommandOutput(piece) => {
                crate::commands::store::append_output(tx, host_id, piece)?;
            }
            RecordData::Packages(change, report) => {
                crate::packages::store::store(tx, host_id, record.seq, change, report)?;
            }
            RecordData::Unusable(kind) => {
                tracing::warn!(
                    host_id,
                    seq = record.seq,
                    kind,
                    "stored a record that cannot be applied"
                );
            }
            RecordData::Metrics(_) => {}
        }
    }
    crate::metrics::store::insert_samples(tx, host_id, &samples)?;
    if up_to != before {
        store::set_stored_up_to(tx, host_id, up_to)?;
    }
    Ok(up_to)
}
