//! The command ids control has accepted: `<state_dir>/control/seen.redb`.
//!
//! One redb table, command id → expiry (Unix ms). [`SeenStore::record`]
//! checks and inserts in one write transaction committed with redb's default
//! `Durability::Immediate` (fsync), and control calls it *before* it runs the
//! command: once a command has started, its id is on disk, so a crash in the
//! middle can never lead to running it a second time (at most once, never
//! twice, is the right failure mode for privileged actions).
//!
//! Forgetting ids, without trusting this host's clock: the store also keeps
//! the latest issue time of any command accepted, a time the *backend*
//! signed. Its floor is that time minus [`PRUNE_GRACE_MS`]. Ids of commands
//! that expired before the floor are dropped, and a command that expires
//! before the floor is refused ([`Seen::Stale`]) whatever the host's clock
//! says: so a forgotten id can never run again, even if the clock is set
//! back or was far ahead for a while. The grace lets commands the backend
//! issued a little earlier arrive after later ones (queued deliveries).
//! Commands live at most [`crate::verify::MAX_LIFETIME_MS`], so the set
//! holds about what the backend issued in a day.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

const SEEN: TableDefinition<'_, &str, i64> = TableDefinition::new("seen");
const META: TableDefinition<'_, &str, i64> = TableDefinition::new("meta");
/// The latest `issued_at` (backend time, Unix ms) of an accepted command.
const LATEST_ISSUED: &str = "latest_issued_at";

/// How far before the latest accepted command's issue time an expiry may be
/// and still be accepted (and its id remembered).
pub const PRUNE_GRACE_MS: i64 = 60 * 60 * 1000;

/// What [`SeenStore::record`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Never seen: now recorded; the command may run.
    New,
    /// Accepted before: a replay.
    Replay,
    /// Expired before the floor (see the module documentation): its id may
    /// have been forgotten, so it is refused.
    Stale { floor: i64 },
}

/// The seen-set's file name inside control's directory.
pub const SEEN_FILE: &str = "seen.redb";

#[derive(Debug, thiserror::Error)]
#[error("seen-command store {path}: {reason}")]
pub struct SeenError {
    path: PathBuf,
    reason: String,
}

pub struct SeenStore {
    db: redb::Database,
    path: PathBuf,
}

impl SeenStore {
    /// Opens (creating if needed, mode 0600) the store at `path`. Fails when
    /// another process has it open (redb locks the file).
    pub fn open(path: &Path) -> Result<SeenStore, SeenError> {
        let err = |reason: String| SeenError {
            path: path.to_owned(),
            reason,
        };
        let db = redb::Database::create(path).map_err(|e| err(e.to_string()))?;
        let metadata = std::fs::symlink_metadata(path).map_err(|e| err(e.to_string()))?;
        palisade_agent_sys::control_pin::check_trusted(path, &metadata, false)
            .map_err(|e| err(e.to_string()))?;
        if metadata.mode() & 0o777 != 0o600 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| err(format!("chmod: {e}")))?;
        }
        let store = SeenStore {
            db,
            path: path.to_owned(),
        };
        // Create the tables, so readers never meet a missing one.
        let txn = store.db.begin_write().map_err(|e| store.err(e))?;
        txn.open_table(SEEN).map_err(|e| store.err(e))?;
        txn.open_table(META).map_err(|e| store.err(e))?;
        txn.commit().map_err(|e| store.err(e))?;
        Ok(store)
    }

    fn err(&self, e: impl Into<redb::Error>) -> SeenError {
        SeenError {
            path: self.path.clone(),
            reason: e.into().to_string(),
        }
    }

    /// Records `command_id` (issued at `issued_at`, expiring at
    /// `expires_at`, both the backend's signed times) durably, unless it is
    /// already there or expired before the floor; also forgets the ids below
    /// the floor. One transaction, fsynced before this returns.
    pub fn record(
        &self,
        command_id: &str,
        issued_at: i64,
        expires_at: i64,
    ) -> Result<Seen, SeenError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let seen = {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let mut table = txn.open_table(SEEN).map_err(|e| self.err(e))?;
            let latest = meta
                .get(LATEST_ISSUED)
                .map_err(|e| self.err(e))?
                .map(|v| v.value());
            let floor = latest.map(|l| l.saturating_sub(PRUNE_GRACE_MS));
            let seen = match floor {
                Some(floor) if expires_at < floor => Seen::Stale { floor },
                _ if table.get(command_id).map_err(|e| self.err(e))?.is_some() => Seen::Replay,
                _ => {
                    table
                        .insert(command_id, expires_at)
                        .map_err(|e| self.err(e))?;
                    Seen::New
                }
            };
            let latest = if seen == Seen::New && latest.is_none_or(|l| issued_at > l) {
                meta.insert(LATEST_ISSUED, issued_at)
                    .map_err(|e| self.err(e))?;
                Some(issued_at)
            } else {
                latest
            };
            if let Some(floor) = latest.map(|l| l.saturating_sub(PRUNE_GRACE_MS)) {
                table
                    .retain(|_, expiry| expiry >= floor)
                    .map_err(|e| self.err(e))?;
            }
            seen
        };
        txn.commit().map_err(|e| self.err(e))?;
        Ok(seen)
    }

    /// How many ids are remembered.
    pub fn len(&self) -> Result<u64, SeenError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(SEEN).map_err(|e| self.err(e))?;
        table.len().map_err(|e| self.err(e))
    }

    /// True when no id is remembered.
    pub fn is_empty(&self) -> Result<bool, SeenError> {
        Ok(self.len()? == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;
    const MINUTE: i64 = 60_000;

    #[test]
    fn an_id_is_new_once_also_after_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SEEN_FILE);
        let store = SeenStore::open(&path).expect("open");
        let record = |s: &SeenStore, id| s.record(id, T0, T0 + 5 * MINUTE).expect("record");
        assert_eq!(record(&store, "c1"), Seen::New);
        assert_eq!(record(&store, "c1"), Seen::Replay);
        assert_eq!(record(&store, "c2"), Seen::New);
        drop(store);

        let store = SeenStore::open(&path).expect("reopen");
        assert_eq!(record(&store, "c1"), Seen::Replay);
        assert_eq!(store.len().expect("len"), 2);
        let mode = std::fs::metadata(&path).expect("stat").mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn ids_are_forgotten_only_below_the_backends_floor_and_never_accepted_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SeenStore::open(&dir.path().join(SEEN_FILE)).expect("open");
        assert_eq!(
            store.record("old", T0, T0 + MINUTE).expect("record"),
            Seen::New
        );
        // A command issued within the grace after `old` expired: `old` stays.
        let t1 = T0 + MINUTE + PRUNE_GRACE_MS;
        assert_eq!(
            store.record("a", t1, t1 + MINUTE).expect("record"),
            Seen::New
        );
        assert_eq!(store.len().expect("len"), 2);
        // One issued later than that: `old` is below the floor and forgotten...
        let t2 = t1 + 1;
        assert_eq!(
            store.record("b", t2, t2 + MINUTE).expect("record"),
            Seen::New
        );
        assert_eq!(
            store.len().expect("len"),
            2,
            "`old` is gone, `a` and `b` remain"
        );
        // ...and can never come back, whatever the host's clock says.
        assert!(matches!(
            store.record("old", T0, T0 + MINUTE).expect("record"),
            Seen::Stale { .. }
        ));
        assert_eq!(store.len().expect("len"), 2);
        // A command issued a little earlier than the latest, arriving late,
        // is still fine.
        let early = t2 - PRUNE_GRACE_MS / 2;
        assert_eq!(
            store
                .record("late", early, early + PRUNE_GRACE_MS)
                .expect("record"),
            Seen::New
        );
    }

    #[test]
    fn a_second_opener_is_refused_while_the_first_holds_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SEEN_FILE);
        let _first = SeenStore::open(&path).expect("open");
        assert!(SeenStore::open(&path).is_err());
    }
}
