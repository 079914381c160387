//! The agent's identity, encrypted at rest.
//!
//! `<state_dir>/identity.redb` holds one record: the protobuf
//! `AgentIdentity` sealed with ChaCha20-Poly1305 (random 96-bit nonce, the
//! nonce stored in front of the ciphertext, a fixed associated-data label).
//! The 256-bit key is `<state_dir>/identity.key`, mode 0600, readable only
//! by the agent's user. Copying the database alone reveals nothing; a
//! flipped bit makes loading fail instead of yielding a wrong identity.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use palisade_proto::pb::AgentIdentity;
use prost::Message;
use redb::{ReadableDatabase, TableDefinition};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

const TABLE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("identity");
const ROW: &str = "current";
const AAD: &[u8] = b"palisade-agent-identity-v1";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("identity database {path}: {reason}")]
    Db { path: PathBuf, reason: String },
    #[error("identity key {0} is not 32 bytes")]
    BadKey(PathBuf),
    #[error("identity key {path} is readable by others (mode {mode:o}); it must be 0600")]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("the stored identity cannot be decrypted (wrong key or corrupted data)")]
    Decrypt,
    #[error("the stored identity is corrupt: {0}")]
    Corrupt(String),
    #[error("random number generator failed")]
    Random,
}

pub struct IdentityStore {
    db: redb::Database,
    db_path: PathBuf,
    key: LessSafeKey,
}

fn db_err(path: &Path) -> impl FnOnce(redb::Error) -> IdentityError + '_ {
    move |e| IdentityError::Db {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

impl IdentityStore {
    /// Opens (creating if needed) the identity store in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, IdentityError> {
        std::fs::create_dir_all(state_dir).map_err(|source| IdentityError::Io {
            action: "create",
            path: state_dir.to_owned(),
            source,
        })?;
        let key_path = state_dir.join("identity.key");
        let key_bytes = load_or_create_key(&key_path)?;
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &key_bytes)
            .map_err(|_| IdentityError::BadKey(key_path))?;
        let db_path = state_dir.join("identity.redb");
        let db = redb::Database::create(&db_path).map_err(|e| db_err(&db_path)(e.into()))?;
        std::fs::set_permissions(&db_path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| IdentityError::Io {
                action: "chmod",
                path: db_path.clone(),
                source,
            },
        )?;
        Ok(IdentityStore {
            db,
            db_path,
            key: LessSafeKey::new(unbound),
        })
    }

    /// The stored identity, or `None` before enrollment.
    /// The state directory this store lives in.
    pub fn state_dir(&self) -> &Path {
        self.db_path.parent().unwrap_or(Path::new("."))
    }

    pub fn load(&self) -> Result<Option<AgentIdentity>, IdentityError> {
        let p = &self.db_path;
        let txn = self.db.begin_read().map_err(|e| db_err(p)(e.into()))?;
        let table = match txn.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(db_err(p)(e.into())),
        };
        let Some(sealed) = table.get(ROW).map_err(|e| db_err(p)(e.into()))? else {
            return Ok(None);
        };
        let plain = self.open_sealed(sealed.value())?;
        let identity = AgentIdentity::decode(plain.as_slice())
            .map_err(|e| IdentityError::Corrupt(e.to_string()))?;
        Ok(Some(identity))
    }

    /// Replaces the stored identity (durably: the commit is fsynced).
    pub fn save(&self, identity: &AgentIdentity) -> Result<(), IdentityError> {
        let p = &self.db_path;
        let sealed = self.seal(&identity.encode_to_vec())?;
        let txn = self.db.begin_write().map_err(|e| db_err(p)(e.into()))?;
        {
            let mut table = txn.open_table(TABLE).map_err(|e| db_err(p)(e.into()))?;
            table
                .insert(ROW, sealed.as_slice())
                .map_err(|e| db_err(p)(e.into()))?;
        }
        txn.commit().map_err(|e| db_err(p)(e.into()))?;
        Ok(())
    }

    fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, IdentityError> {
        let mut nonce = [0u8; 12];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| IdentityError::Random)?;
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut buf,
            )
            .map_err(|_| IdentityError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    fn open_sealed(&self, sealed: &[u8]) -> Result<Vec<u8>, IdentityError> {
        if sealed.len() < 12 + CHACHA20_POLY1305.tag_len() {
            return Err(IdentityError::Decrypt);
        }
        let (nonce, ct) = sealed.split_at(12);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| IdentityError::Decrypt)?;
        let mut buf = ct.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(AAD), &mut buf)
            .map_err(|_| IdentityError::Decrypt)?;
        Ok(plain.to_vec())
    }
}

fn load_or_create_key(path: &Path) -> Result<[u8; 32], IdentityError> {
    let io = |action: &'static str| {
        move |source| IdentityError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(path)
                .map_err(io("stat"))?
                .permissions()
                .mode()
                & 0o777;
            if mode & 0o077 != 0 {
                return Err(IdentityError::KeyPermissions {
                    path: path.to_owned(),
                    mode,
                });
            }
            bytes
                .try_into()
                .map_err(|_| IdentityError::BadKey(path.to_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            SystemRandom::new()
                .fill(&mut key)
                .map_err(|_| IdentityError::Random)?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io("create"))?;
            f.write_all(&key).map_err(io("write"))?;
            f.sync_all().map_err(io("sync"))?;
            Ok(key)
        }
        Err(e) => Err(io("read")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AgentIdentity {
        AgentIdentity {
            server: "127.0.0.1:8443".into(),
            agent_id: "a-1".into(),
            certificate_der: vec![1, 2, 3],
            server_ca_der: vec![4],
            private_key_der: b"very secret key material".to_vec(),
            command_signing_key: vec![7; 32],
            agent_ca_der: vec![5],
        }
    }

    #[test]
    fn save_then_load_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = IdentityStore::open(dir.path()).expect("open");
            assert_eq!(store.load().expect("load"), None);
            store.save(&sample()).expect("save");
        }
        let store = IdentityStore::open(dir.path()).expect("reopen");
        assert_eq!(store.load().expect("load"), Some(sample()));
        let mode = std::fs::metadata(dir.path().join("identity.key"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn nothing_in_clear_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        IdentityStore::open(dir.path())
            .expect("open")
            .save(&sample())
            .expect("save");
        let raw = std::fs::read(dir.path().join("identity.redb")).expect("db file");
        let needle = b"very secret key material";
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle),
            "private key visible in the database file"
        );
    }

    #[test]
    fn wrong_key_fails_cleanly() {
        let dir = tempfile::tempdir().expect("tempdir");
        IdentityStore::open(dir.path())
            .expect("open")
            .save(&sample())
            .expect("save");
        std::fs::write(dir.path().join("identity.key"), [9u8; 32]).expect("overwrite key");
        let store = IdentityStore::open(dir.path()).expect("open");
        assert!(matches!(store.load(), Err(IdentityError::Decrypt)));
    }

    #[test]
    fn world_readable_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        IdentityStore::open(dir.path()).expect("open");
        let key = dir.path().join("identity.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            IdentityStore::open(dir.path()),
            Err(IdentityError::KeyPermissions { .. })
        ));
    }
}
