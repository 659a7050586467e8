//! Durable job records (sled). A job is written and flushed before its submitter hears
//! "accepted", and again after every state change, so a coordinator killed at any instant
//! restarts with every job it ever acknowledged.

use std::path::Path;

use olc_protocol::codec;

use crate::jobs::JobRecord;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job store at {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("job store: {0}")]
    Db(#[from] sled::Error),
    #[error(
        "job store: a record does not decode ({0}); the store was written by another version or is damaged"
    )]
    Corrupt(String),
}

#[derive(Debug, Clone)]
pub struct JobStore {
    jobs: sled::Tree,
    db: sled::Db,
}

impl JobStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::open(dir).map_err(|source| StoreError::Open {
            path: dir.display().to_string(),
            source,
        })?;
        let jobs = db.open_tree("jobs")?;
        Ok(Self { jobs, db })
    }

    /// Writes the record; durable once [`JobStore::flush`] returns.
    pub fn put(&self, record: &JobRecord) -> Result<(), StoreError> {
        let bytes = codec::encode(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.jobs.insert(record.job_id.as_bytes(), bytes)?;
        Ok(())
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
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
}
