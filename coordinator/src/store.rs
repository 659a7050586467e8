//! The coordinator's durable state (sled): one record per job, and the economy (ledger,
//! standings, nonces) as one value beside them. A change is written in one transaction
//! and flushed before anyone hears of it, so a coordinator killed at any instant restarts
//! with every job it acknowledged, and with each job's state and its money from the same
//! moment: a settled job is never unpaid, nor a paid one unsettled.

use std::path::Path;

use olc_protocol::{CatalogEntry, codec};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::core::economy::Economy;
use crate::core::ledger::LedgerError;
use crate::core::record::JobRecord;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job store at {path}: {source}")]
    Open { path: String, source: sled::Error },
    /// sled locks its directory; the lock is held by a running process.
    #[error(
        "another coordinator is using {path}: stop it, or give this one its own --data directory"
    )]
    InUse { path: String },
    #[error("job store: {0}")]
    Db(#[from] sled::Error),
    #[error(
        "job store: a record does not decode ({0}); the store was written by another version or is damaged"
    )]
    Corrupt(String),
    #[error("job store: refusing a ledger that breaks its invariant ({0})")]
    Inconsistent(LedgerError),
}

#[derive(Debug, Clone)]
pub struct JobStore {
    jobs: sled::Tree,
    economy: sled::Tree,
    /// The catalog's names, one key each.
    catalog: sled::Tree,
    db: sled::Db,
}

const ECONOMY_KEY: &[u8] = b"state";

impl JobStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::open(dir).map_err(|source| {
            let path = dir.display().to_string();
            match &source {
                // sled reports its lock as a plain message around the OS's WouldBlock.
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("could not acquire lock") =>
                {
                    StoreError::InUse { path }
                }
                _ => StoreError::Open { path, source },
            }
        })?;
        let jobs = db.open_tree("jobs")?;
        let economy = db.open_tree("economy")?;
        let catalog = db.open_tree("catalog")?;
        Ok(Self {
            jobs,
            economy,
            catalog,
            db,
        })
    }

    /// Writes `records` and, if given, the economy, all or nothing, and flushes: durable
    /// when this returns. An economy whose ledger breaks its invariant is refused (and
    /// nothing is written), so a bug cannot make the damage permanent.
    pub fn commit(
        &self,
        records: &[&JobRecord],
        economy: Option<&Economy>,
    ) -> Result<(), StoreError> {
        let records: Vec<(Vec<u8>, Vec<u8>)> = records
            .iter()
            .map(|r| {
                let bytes = codec::encode(*r).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Ok((r.job_id.as_bytes().to_vec(), bytes))
            })
            .collect::<Result<_, StoreError>>()?;
        let economy = match economy {
            Some(e) => {
                e.ledger()
                    .check_invariant()
                    .map_err(StoreError::Inconsistent)?;
                Some(codec::encode(e).map_err(|e| StoreError::Corrupt(e.to_string()))?)
            }
            None => None,
        };
        (&self.jobs, &self.economy)
            .transaction(|(jobs, econ)| {
                for (key, value) in &records {
                    jobs.insert(key.as_slice(), value.as_slice())?;
                }
                if let Some(bytes) = &economy {
                    econ.insert(ECONOMY_KEY, bytes.as_slice())?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::Db(e),
                TransactionError::Abort(()) => {
                    StoreError::Corrupt("the store transaction aborted".into())
                }
            })?;
        self.db.flush()?;
        Ok(())
    }

    /// Writes one catalog name and flushes: a publisher told "published" finds the name
    /// after a restart.
    pub fn put_catalog(&self, entry: &CatalogEntry) -> Result<(), StoreError> {
        let bytes = codec::encode(entry).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.catalog.insert(entry.name.as_bytes(), bytes)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn load_catalog(&self) -> Result<Vec<CatalogEntry>, StoreError> {
        self.catalog
            .iter()
            .map(|kv| {
                let (_, v) = kv?;
                codec::decode::<CatalogEntry>(&v).map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
    }

    pub fn load_all(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.jobs
            .iter()
            .map(|kv| {
                let (_, v) = kv?;
                codec::decode::<JobRecord>(&v).map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
    }

    /// The saved economy, or `None` before the first save. One that breaks the ledger's
    /// invariant is refused rather than served.
    pub fn load_economy(&self) -> Result<Option<Economy>, StoreError> {
        let Some(bytes) = self.economy.get(ECONOMY_KEY)? else {
            return Ok(None);
        };
        let economy =
            codec::decode::<Economy>(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        economy
            .ledger()
            .check_invariant()
            .map_err(StoreError::Inconsistent)?;
        Ok(Some(economy))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use olc_protocol::{ContentId, Identity, PublicKey};

    use super::*;
    use crate::core::ledger::{LedgerConfig, Payee, Settled};

    fn key(n: u8) -> PublicKey {
        Identity::from_seed(&[n; 32]).public_key()
    }

    fn busy() -> Economy {
        let mut e = Economy::new(LedgerConfig::default());
        let l = e.ledger_mut();
        l.deposit(key(1), 1000).unwrap();
        l.deposit(key(2), 500).unwrap();
        l.stake(key(2), 400).unwrap();
        l.escrow(ContentId::of(b"1"), key(1), 300).unwrap();
        l.escrow(ContentId::of(b"2"), key(1), 200).unwrap();
        l.settle(ContentId::of(b"2"), &[(Payee::Account(key(3)), 150)])
            .unwrap();
        l.slash(key(2), 50, &[(Payee::Account(key(4)), 1)]).unwrap();
        e
    }

    #[test]
    fn catalog_names_survive_reopening_and_a_moved_name_keeps_its_latest() {
        let dir = tempfile::tempdir().unwrap();
        let entry = |content: &[u8], at| CatalogEntry {
            name: "smol".into(),
            content: ContentId::of(content),
            kind: olc_protocol::CatalogKind::Base,
            owner: key(1),
            published_ms: at,
        };
        {
            let store = JobStore::open(dir.path()).unwrap();
            assert!(store.load_catalog().unwrap().is_empty());
            store.put_catalog(&entry(b"v1", 1)).unwrap();
            store.put_catalog(&entry(b"v2", 2)).unwrap();
        }
        let store = JobStore::open(dir.path()).unwrap();
        assert_eq!(store.load_catalog().unwrap(), vec![entry(b"v2", 2)]);
    }

    #[test]
    fn starts_empty_and_round_trips_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = busy();
        {
            let store = JobStore::open(dir.path()).unwrap();
            assert_eq!(store.load_economy().unwrap(), None);
            store.commit(&[], Some(&e)).unwrap();
            e.ledger_mut().settle(ContentId::of(b"1"), &[]).unwrap();
            store.commit(&[], Some(&e)).unwrap();
        }
        let store = JobStore::open(dir.path()).unwrap();
        let mut loaded = store.load_economy().unwrap().unwrap();
        assert_eq!(loaded, e);
        // The reloaded ledger still refuses to pay twice.
        assert_eq!(
            loaded
                .ledger_mut()
                .settle(ContentId::of(b"2"), &[(Payee::Treasury, 1)]),
            Ok(Settled::Already)
        );
    }

    #[test]
    fn refuses_an_inconsistent_ledger_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let good = busy();
        store.commit(&[], Some(&good)).unwrap();
        let mut bad = good.clone();
        bad.ledger_mut().forge_minted(1);
        assert!(matches!(
            store.commit(&[], Some(&bad)),
            Err(StoreError::Inconsistent(LedgerError::Invariant { .. }))
        ));
        assert_eq!(store.load_economy().unwrap(), Some(good));
        // One written behind the store's back is refused on load.
        store
            .economy
            .insert(ECONOMY_KEY, codec::encode(&bad).unwrap())
            .unwrap();
        assert!(matches!(
            store.load_economy(),
            Err(StoreError::Inconsistent(_))
        ));
    }

    #[test]
    fn reports_a_damaged_value() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let mut bytes = codec::encode(&busy()).unwrap();
        bytes.truncate(bytes.len() - 3);
        store.economy.insert(ECONOMY_KEY, bytes).unwrap();
        let err = store.load_economy().unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    }

    #[test]
    fn a_store_in_use_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let _first = JobStore::open(dir.path()).unwrap();
        let err = JobStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::InUse { .. }), "{err:?}");
        assert!(
            err.to_string().contains("another coordinator is using"),
            "{err}"
        );
    }
}
