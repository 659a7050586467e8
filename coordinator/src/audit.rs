//! `olc coordinator audit`: checks the stored state against itself. The ledger's
//! invariant (nothing created or lost), that every job's money matches its state (an open
//! job holds its escrow, an ended one has released it exactly once, and a done job's
//! receipt verifies and pays out no more and no less than the escrow), and that every blob
//! a stored job refers to (its inputs, its output adapter, every file their manifests
//! list) is in the blob store and hashes to its id: a job whose inputs are gone can be
//! neither run, re-run by the referee nor checked by anyone.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use olc_content::BlobStore;
use olc_protocol::{ContentHasher, ContentId, JobKind, JobOutput, Manifest};

use crate::core::economy::Economy;
use crate::core::record::JobRecord;
use crate::store::{JobStore, StoreError};

pub use crate::core::audit::{AuditReport, audit};

/// [`audit`], and every blob the jobs refer to checked against `blobs`: `None` when the
/// store has no blob directory at all, so that every referenced blob is missing.
pub fn audit_with_blobs(
    records: &[JobRecord],
    economy: &Economy,
    blobs: Option<&BlobStore>,
) -> AuditReport {
    let mut report = audit(records, economy);
    let found = audit_blobs(records, blobs);
    report.blobs_checked = found.checked;
    report.blobs_missing = found.missing;
    report.blobs_corrupt = found.corrupt;
    report.problems.extend(found.problems);
    report
}

/// Audits a stopped coordinator's data directory (`--data`): its job store, and its blob
/// store when there is one. Opening the blob store removes the leftovers of interrupted
/// writes, as the coordinator itself does on start; nothing else is changed.
pub fn audit_data_dir(data: &Path) -> Result<AuditReport, StoreError> {
    let store = JobStore::open(&data.join("jobs"))?;
    let records = store.load_all()?;
    let economy = store.load_economy()?.unwrap_or_default();
    let dir = data.join("blobs");
    let blobs = if dir.is_dir() {
        Some(
            BlobStore::open(&dir, None)
                .map_err(|e| StoreError::Corrupt(format!("the blob store: {e}")))?,
        )
    } else {
        None
    };
    Ok(audit_with_blobs(&records, &economy, blobs.as_ref()))
}

/// What checking the referenced blobs found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobAudit {
    pub checked: usize,
    pub missing: usize,
    pub corrupt: usize,
    pub problems: Vec<String>,
}

/// How one blob fared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BlobState {
    Sound,
    Missing,
    /// Its bytes hash to another id (or could not be read back).
    Corrupt(String),
}

/// Checks every blob the jobs refer to, each once however many jobs share it: present, and
/// hashing to its id (read as a stream, so a large model is never held in memory). A
/// manifest that is sound but does not decode is reported too, since its files cannot be
/// known.
pub fn audit_blobs(records: &[JobRecord], blobs: Option<&BlobStore>) -> BlobAudit {
    let mut seen: BTreeMap<ContentId, BlobState> = BTreeMap::new();
    let mut out = BlobAudit::default();
    let mut check = |id: ContentId, what: &str, job: &ContentId, out: &mut BlobAudit| {
        if seen.contains_key(&id) {
            return seen.get(&id) == Some(&BlobState::Sound);
        }
        let state = blob_state(blobs, &id);
        out.checked += 1;
        match &state {
            BlobState::Sound => {}
            BlobState::Missing => {
                out.missing += 1;
                out.problems.push(format!(
                    "blob {id} ({what} of job {job}) is missing from the blob store"
                ));
            }
            BlobState::Corrupt(why) => {
                out.corrupt += 1;
                out.problems
                    .push(format!("blob {id} ({what} of job {job}) is corrupt: {why}"));
            }
        }
        let sound = state == BlobState::Sound;
        seen.insert(id, state);
        sound
    };
    let mut decoded: BTreeMap<ContentId, Option<Manifest>> = BTreeMap::new();
    for job in records {
        let job_id = job.job_id;
        let Some(spec) = job.spec() else { continue };
        let mut manifests: Vec<(ContentId, &str)> = Vec::new();
        match &spec.kind {
            JobKind::Inference(j) => {
                manifests.push((j.model, "the model"));
                if let Some(a) = j.adapter {
                    manifests.push((a, "the adapter"));
                }
            }
            JobKind::Finetune(j) => {
                manifests.push((j.model, "the model"));
                if let Some(a) = j.params.init_adapter {
                    manifests.push((a, "the initial adapter"));
                }
                check(j.dataset, "the dataset", &job_id, &mut out);
            }
        }
        if let Some(JobOutput::Finetune { adapter, .. }) = &job.output {
            manifests.push((*adapter, "the output adapter"));
        }
        for (id, what) in manifests {
            let manifest_what = format!("{what}'s manifest");
            if !check(id, &manifest_what, &job_id, &mut out) {
                continue;
            }
            let manifest = decoded.entry(id).or_insert_with(|| {
                let manifest = blobs
                    .and_then(|b| b.get(&id).ok().flatten())
                    .and_then(|bytes| Manifest::from_bytes(&bytes).ok());
                if manifest.is_none() {
                    out.problems.push(format!(
                        "blob {id} ({manifest_what} of job {job_id}) does not decode as a \
                         manifest, so its files cannot be checked"
                    ));
                }
                manifest
            });
            let Some(manifest) = manifest.as_ref() else {
                continue;
            };
            for entry in manifest.entries() {
                check(
                    entry.id,
                    &format!("{what}'s file {}", entry.path),
                    &job_id,
                    &mut out,
                );
            }
        }
    }
    out
}

fn blob_state(blobs: Option<&BlobStore>, id: &ContentId) -> BlobState {
    let Some(path) = blobs.and_then(|b| b.path(id)) else {
        return BlobState::Missing;
    };
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BlobState::Missing,
        Err(e) => return BlobState::Corrupt(format!("cannot read {}: {e}", path.display())),
    };
    let mut hasher = ContentHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
            }
            Err(e) => {
                return BlobState::Corrupt(format!("cannot read {}: {e}", path.display()));
            }
        }
    }
    let actual = hasher.finalize();
    if actual == *id {
        BlobState::Sound
    } else {
        BlobState::Corrupt(format!("its bytes hash to {actual}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use olc_protocol::{
        AccountAction, AccountRequest, Amount, ContentId, Identity, InferenceJob, JobKind, JobSpec,
        Prompt, Requirements, Sampling, Signed, VerificationPolicy,
    };

    use super::*;
    use crate::core::book::{JobBook, JobsConfig};
    use crate::core::ledger::LedgerConfig;
    use crate::core::rules::Policy;

    const NOW: u64 = 1_800_000_000_000;

    fn open_job() -> (Vec<JobRecord>, Economy) {
        let submitter = Identity::from_seed(&[1; 32]);
        let mut book = JobBook::new(
            JobsConfig::default(),
            Policy::default(),
            LedgerConfig::default(),
        );
        let deposit = AccountRequest {
            action: AccountAction::Deposit {
                amount: Amount(5000),
            },
            nonce: 1,
        };
        book.account_request(&Signed::sign(&submitter, &deposit).unwrap(), true, NOW)
            .unwrap();
        let spec = JobSpec {
            kind: JobKind::Inference(InferenceJob {
                model: ContentId::of(b"m"),
                adapter: None,
                prompt: Prompt::Tokens(vec![1]),
                sampling: Sampling::Greedy,
                max_tokens: 1,
                seed: 0,
            }),
            requirements: Requirements::default(),
            max_fee: Amount(1000),
            verification: VerificationPolicy::Single,
            deadline_ms: NOW + 1000,
            nonce: 1,
        };
        book.submit(Signed::sign(&submitter, &spec).unwrap(), vec![], NOW)
            .unwrap();
        (book.jobs().cloned().collect(), book.economy().clone())
    }

    #[test]
    fn a_sound_state_is_clean() {
        let (records, economy) = open_job();
        let report = audit(&records, &economy);
        assert!(report.is_clean(), "{report:?}");
        assert_eq!((report.minted, report.total), (5000, 5000));
        assert_eq!((report.jobs, report.open_jobs), (1, 1));
    }

    #[test]
    fn money_that_does_not_match_the_jobs_is_reported() {
        let (records, economy) = open_job();
        // An open job paid out behind the book's back.
        let mut paid = economy.clone();
        paid.ledger_mut().settle(records[0].job_id, &[]).unwrap();
        let report = audit(&records, &paid);
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("holds no escrow")),
            "{report:?}"
        );
        assert!(report.problems.iter().any(|p| p.contains("already paid")));
        // Credits from nowhere.
        let mut forged = economy;
        forged.ledger_mut().forge_minted(7);
        let report = audit(&records, &forged);
        assert!(!report.is_clean());
        assert_eq!(report.minted, 5007);
        // A job the ledger settled but nobody recorded.
        let report = audit(&[], &paid);
        assert!(report.problems.iter().any(|p| p.contains("have no record")));
    }

    /// A blob store holding a model (a manifest and two files), a dataset and an output
    /// adapter (a manifest and one file), and a done-looking fine-tune job that refers to
    /// all of them.
    struct Stored {
        _dir: tempfile::TempDir,
        blobs: BlobStore,
        records: Vec<JobRecord>,
        economy: Economy,
        config: ContentId,
        weights: ContentId,
        dataset: ContentId,
        adapter_manifest: ContentId,
    }

    fn manifest(blobs: &BlobStore, files: &[(&str, &[u8])]) -> ContentId {
        let entries = files
            .iter()
            .map(|(path, bytes)| olc_protocol::ManifestEntry {
                path: (*path).into(),
                size: bytes.len() as u64,
                id: blobs.put(bytes).unwrap(),
            })
            .collect();
        let m = Manifest::new(entries).unwrap();
        blobs.put(&m.to_bytes().unwrap()).unwrap()
    }

    fn stored() -> Stored {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(&dir.path().join("blobs"), None).unwrap();
        let model = manifest(
            &blobs,
            &[("config.json", b"{}"), ("model.safetensors", b"w")],
        );
        let adapter_manifest = manifest(&blobs, &[("adapter_model.safetensors", b"lora")]);
        let dataset = blobs.put(b"{\"text\": \"hi\"}\n").unwrap();
        let submitter = Identity::from_seed(&[1; 32]);
        let mut book = JobBook::new(
            JobsConfig::default(),
            Policy::default(),
            LedgerConfig::default(),
        );
        let deposit = AccountRequest {
            action: AccountAction::Deposit {
                amount: Amount(5000),
            },
            nonce: 1,
        };
        book.account_request(&Signed::sign(&submitter, &deposit).unwrap(), true, NOW)
            .unwrap();
        let spec = JobSpec {
            kind: JobKind::Finetune(olc_protocol::FinetuneJob {
                publish_as: None,
                model,
                dataset,
                params: olc_protocol::TrainingParams {
                    rank: 4,
                    alpha: 8.0,
                    targets: vec![olc_protocol::TargetModule::QProj],
                    learning_rate: 0.01,
                    weight_decay: 0.0,
                    max_len: None,
                    batch_size: 1,
                    grad_accum: 1,
                    length: olc_protocol::TrainingLength::Steps(1),
                    warmup_steps: 0,
                    seed: 0,
                    init_adapter: None,
                },
            }),
            requirements: Requirements::default(),
            max_fee: Amount(1000),
            verification: VerificationPolicy::Single,
            deadline_ms: NOW + 1000,
            nonce: 1,
        };
        book.submit(Signed::sign(&submitter, &spec).unwrap(), vec![], NOW)
            .unwrap();
        let mut records: Vec<JobRecord> = book.jobs().cloned().collect();
        // Only the blobs matter here: the job's output names the adapter it produced.
        records[0].output = Some(JobOutput::Finetune {
            adapter: adapter_manifest,
            commitment: ContentId::of(b"c"),
            first_loss: 2.0,
            last_loss: 1.0,
        });
        let [config, weights] = [&b"{}"[..], b"w"].map(ContentId::of);
        Stored {
            _dir: dir,
            blobs,
            records,
            economy: book.economy().clone(),
            config,
            weights,
            dataset,
            adapter_manifest,
        }
    }

    #[test]
    fn every_blob_a_job_refers_to_is_checked() {
        let s = stored();
        let report = audit_with_blobs(&s.records, &s.economy, Some(&s.blobs));
        assert!(report.is_clean(), "{report:#?}");
        // Two manifests, three files, the dataset.
        assert_eq!(report.blobs_checked, 6);
        assert_eq!((report.blobs_missing, report.blobs_corrupt), (0, 0));
    }

    #[test]
    fn a_deleted_blob_is_reported_missing() {
        let s = stored();
        assert!(s.blobs.remove(&s.weights));
        assert!(s.blobs.remove(&s.dataset));
        let report = audit_with_blobs(&s.records, &s.economy, Some(&s.blobs));
        assert!(!report.is_clean());
        assert_eq!((report.blobs_missing, report.blobs_corrupt), (2, 0));
        let job = s.records[0].job_id;
        assert!(
            report.problems.contains(&format!(
                "blob {} (the model's file model.safetensors of job {job}) is missing from \
                 the blob store",
                s.weights
            )),
            "{report:#?}"
        );
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains(&s.dataset.to_string()) && p.contains("the dataset")),
            "{report:#?}"
        );
    }

    #[test]
    fn a_blob_whose_bytes_changed_is_reported_corrupt() {
        let s = stored();
        std::fs::write(s.blobs.path(&s.config).unwrap(), b"{\"changed\": 1}").unwrap();
        std::fs::write(s.blobs.path(&s.adapter_manifest).unwrap(), b"garbage").unwrap();
        let report = audit_with_blobs(&s.records, &s.economy, Some(&s.blobs));
        assert_eq!((report.blobs_missing, report.blobs_corrupt), (0, 2));
        let corrupt: Vec<_> = report
            .problems
            .iter()
            .filter(|p| p.contains("is corrupt: its bytes hash to"))
            .collect();
        assert_eq!(corrupt.len(), 2, "{report:#?}");
        assert!(
            corrupt
                .iter()
                .any(|p| p.contains("the model's file config.json"))
        );
        assert!(
            corrupt
                .iter()
                .any(|p| p.contains("the output adapter's manifest"))
        );
    }

    /// The audit of a data directory whose blobs were all deleted is not "ok".
    #[test]
    fn a_data_directory_without_its_blobs_fails_the_audit() {
        let s = stored();
        let data = tempfile::tempdir().unwrap();
        let store = JobStore::open(&data.path().join("jobs")).unwrap();
        let records: Vec<&JobRecord> = s.records.iter().collect();
        store.commit(&records, Some(&s.economy)).unwrap();
        drop(store);
        let report = audit_data_dir(data.path()).unwrap();
        assert!(!report.is_clean());
        // The two manifests and the dataset; the files inside are unknown without them.
        assert_eq!(report.blobs_missing, 3, "{report:#?}");
        // An empty blob directory is no better.
        std::fs::create_dir(data.path().join("blobs")).unwrap();
        let report = audit_data_dir(data.path()).unwrap();
        assert_eq!(report.blobs_missing, 3, "{report:#?}");
        // With the blobs back, it is clean.
        std::fs::remove_dir(data.path().join("blobs")).unwrap();
        copy_dir(s.blobs.dir(), &data.path().join("blobs"));
        let report = audit_data_dir(data.path()).unwrap();
        assert!(report.is_clean(), "{report:#?}");
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}
