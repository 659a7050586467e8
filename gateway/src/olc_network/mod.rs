//! [`Network`] over a real OLC network: a submitter connected to a coordinator.
//!
//! The catalog is the coordinator's, with each model's small files (config.json,
//! tokenizer_config.json, tokenizer.json) fetched once per content id and kept: content is
//! addressed by its hash, so a content id's files never change. A generation is tokenized
//! here with the model's own tokenizer (the job carries token ids, so the worker runs
//! exactly the prompt that was counted and checked against the context), signed,
//! submitted, and followed; the follow's stream becomes the gateway's events, and its end
//! the verified output and receipt.

mod catalog;
mod job;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use olc_client::{SubmitError, Submitter};
use olc_protocol::{
    Amount, CatalogEntry, ContentId, InferenceJob, JobKind, JobSpec, MAX_GENERATED_TOKENS, Prompt,
    Requirements, Sampling, VerificationPolicy,
};
use tokenizers::Tokenizer;
use tokio::sync::{Mutex, mpsc, oneshot};

use self::catalog::{ModelFiles, Served};
use self::job::{Follower, unavailable};
use crate::network::{CatalogModel, GenerateRequest, Generation, ModelKind, Network, NetworkError};

/// The largest tokenizer.json read: real models' are a few MB.
const MAX_TOKENIZER_BYTES: u64 = 64 << 20;
/// Events a generation's stream holds before the follow waits for the gateway to read.
const EVENT_BUFFER: usize = 64;

/// How an [`OlcNetwork`] submits.
#[derive(Debug, Clone)]
pub struct OlcOptions {
    /// The most one request may cost, in credits: escrowed when the job is submitted, the
    /// unspent part refunded when it settles.
    pub max_fee: Amount,
    /// How each job's answer is checked.
    pub verification: VerificationPolicy,
    /// How long a job may take from submission before the coordinator gives it up.
    pub deadline: Duration,
    /// How long a job may sit queued, with the matcher saying why no worker can take it,
    /// before the request is answered "no worker" (503) and the job cancelled.
    pub no_worker_wait: Duration,
    /// How long a catalog listing is served before the coordinator is asked again.
    pub catalog_ttl: Duration,
}

impl Default for OlcOptions {
    fn default() -> Self {
        Self {
            max_fee: Amount(1_000_000),
            verification: VerificationPolicy::Default,
            deadline: Duration::from_secs(600),
            no_worker_wait: Duration::from_secs(2),
            catalog_ttl: Duration::from_secs(5),
        }
    }
}

/// The network as a coordinator and its workers: see the module's documentation.
#[derive(Debug)]
pub struct OlcNetwork {
    submitter: Submitter,
    options: OlcOptions,
    /// The last catalog listing, and when it was fetched; the lock also keeps concurrent
    /// requests from fetching it at once.
    listing: Mutex<Option<Listing>>,
    /// Each content id's small files: fetched once, kept for good.
    files: Mutex<HashMap<ContentId, Arc<ModelFiles>>>,
    /// Each base model's tokenizer, by content id.
    tokenizers: Mutex<HashMap<ContentId, Arc<Tokenizer>>>,
    /// The last nonce used: nonces must never repeat for one submitter.
    nonce: AtomicU64,
}

#[derive(Debug)]
struct Listing {
    fetched: Instant,
    served: Arc<Vec<Served>>,
}

impl OlcNetwork {
    /// A network over `submitter`, whose key signs (and pays for) every job.
    pub fn new(submitter: Submitter, options: OlcOptions) -> Self {
        Self {
            submitter,
            options,
            listing: Mutex::new(None),
            files: Mutex::new(HashMap::new()),
            tokenizers: Mutex::new(HashMap::new()),
            nonce: AtomicU64::new(0),
        }
    }

    /// The submitter the jobs go through.
    pub fn submitter(&self) -> &Submitter {
        &self.submitter
    }

    /// The served catalog: the cached listing while it is fresh (and not `refresh`), else
    /// the coordinator's anew.
    async fn served(&self, refresh: bool) -> Result<Arc<Vec<Served>>, NetworkError> {
        let mut listing = self.listing.lock().await;
        if let Some(l) = listing.as_ref()
            && !refresh
            && l.fetched.elapsed() < self.options.catalog_ttl
        {
            return Ok(l.served.clone());
        }
        let entries = self
            .submitter
            .catalog()
            .await
            .map_err(|err| unavailable(&err))?;
        let files = self.files_of(&entries).await;
        let served = Arc::new(catalog::served(&entries, &files));
        *listing = Some(Listing {
            fetched: Instant::now(),
            served: served.clone(),
        });
        Ok(served)
    }

    /// The files of every entry, fetching those not seen before (all at once). An entry
    /// whose files could not be fetched now is left out of this listing and tried again
    /// with the next.
    async fn files_of(&self, entries: &[CatalogEntry]) -> HashMap<ContentId, Arc<ModelFiles>> {
        let known = self.files.lock().await.clone();
        let missing: Vec<&CatalogEntry> = entries
            .iter()
            .filter(|e| !known.contains_key(&e.content))
            .collect();
        let fetched = futures::future::join_all(
            missing
                .iter()
                .map(|e| ModelFiles::fetch(&self.submitter, e)),
        )
        .await;
        let mut files = self.files.lock().await;
        for (entry, result) in missing.iter().zip(fetched) {
            match result {
                Ok(f) => {
                    if matches!(entry.kind, olc_protocol::CatalogKind::Base)
                        && f.context_length.is_none()
                    {
                        tracing::warn!(
                            model = %entry.name,
                            "not served: its config.json gives no max_position_embeddings"
                        );
                    }
                    files.insert(entry.content, Arc::new(f));
                }
                Err(err) => {
                    tracing::warn!(model = %entry.name, %err, "cannot read the model's files");
                }
            }
        }
        files.clone()
    }

    /// The served model named `name`, looked up once more in a fresh listing if the cached
    /// one lacks it (it may have been published since).
    async fn find(&self, name: &str, base: bool) -> Result<Served, NetworkError> {
        let pick = |served: &[Served]| {
            served
                .iter()
                .find(|s| s.model.name == name && matches!(s.model.kind, ModelKind::Base) == base)
                .cloned()
        };
        if let Some(found) = pick(&self.served(false).await?) {
            return Ok(found);
        }
        pick(&self.served(true).await?).ok_or_else(|| NetworkError::UnknownModel(name.into()))
    }

    /// The tokenizer of the model at `content`.
    async fn tokenizer(&self, content: ContentId) -> Result<Arc<Tokenizer>, NetworkError> {
        if let Some(t) = self.tokenizers.lock().await.get(&content) {
            return Ok(t.clone());
        }
        let bytes = self
            .submitter
            .fetch_file(content, "tokenizer.json", MAX_TOKENIZER_BYTES)
            .await
            .map_err(|err| unavailable(&err))?
            .ok_or_else(|| NetworkError::Internal("the model has no tokenizer.json".into()))?;
        let tokenizer = tokio::task::spawn_blocking(move || Tokenizer::from_bytes(bytes))
            .await
            .map_err(|err| NetworkError::Internal(format!("reading the tokenizer: {err}")))?
            .map_err(|err| {
                NetworkError::Internal(format!("the model's tokenizer.json is bad: {err}"))
            })?;
        let tokenizer = Arc::new(tokenizer);
        self.tokenizers
            .lock()
            .await
            .insert(content, tokenizer.clone());
        Ok(tokenizer)
    }

    async fn start(&self, request: GenerateRequest) -> Result<Generation, NetworkError> {
        let base = self.find(&request.model, true).await?;
        let adapter = match &request.adapter {
            Some(name) => Some(self.find(name, false).await?.content),
            None => None,
        };
        let tokenizer = self.tokenizer(base.content).await?;
        let prompt = request.prompt;
        let ids = tokio::task::spawn_blocking(move || {
            tokenizer
                .encode(prompt.as_str(), false)
                .map(|encoding| encoding.get_ids().to_vec())
        })
        .await
        .map_err(|err| NetworkError::Internal(format!("tokenizing: {err}")))?
        .map_err(|err| NetworkError::BadRequest {
            message: format!("the prompt cannot be tokenized: {err}"),
            param: Some("prompt".into()),
        })?;
        let context = base.model.context_length as usize;
        if ids.is_empty() {
            return Err(NetworkError::BadRequest {
                message: "the prompt is empty: give at least one token of text".into(),
                param: Some("prompt".into()),
            });
        }
        if ids.len() >= context {
            return Err(NetworkError::BadRequest {
                message: format!(
                    "the prompt is {} tokens, and the model's context is {context}: no room is \
                     left to generate",
                    ids.len()
                ),
                param: Some("prompt".into()),
            });
        }
        let prompt_tokens = u32::try_from(ids.len()).unwrap_or(u32::MAX);
        let room = base.model.context_length - prompt_tokens;
        let max_tokens = request.max_tokens.min(room).min(MAX_GENERATED_TOKENS);
        let nonce = next_nonce(&self.nonce, unix_us());
        let sampling = if request.temperature <= 0.0 {
            Sampling::Greedy
        } else {
            Sampling::Sample {
                temperature: request.temperature,
                top_k: 0,
                top_p: request.top_p,
            }
        };
        let spec = JobSpec {
            kind: JobKind::Inference(InferenceJob {
                model: base.content,
                adapter,
                prompt: Prompt::Tokens(ids),
                sampling,
                max_tokens,
                // An unseeded sample still needs a seed every worker agrees on: the nonce
                // differs from job to job.
                seed: request.seed.unwrap_or(nonce),
            }),
            requirements: Requirements::default(),
            max_fee: self.options.max_fee,
            verification: self.options.verification,
            deadline_ms: unix_ms().saturating_add(self.options.deadline.as_millis() as u64),
            nonce,
        };
        spec.validate(unix_ms())
            .map_err(|err| NetworkError::BadRequest {
                message: err.to_string(),
                param: None,
            })?;
        let job = self.submitter.submit(&spec).await.map_err(submit_error)?;
        tracing::info!(%job, model = %request.model, prompt_tokens, max_tokens, "job submitted");

        let (events, receiver) = mpsc::channel(EVENT_BUFFER);
        let (started, answer) = oneshot::channel();
        let follower = Follower {
            submitter: self.submitter.clone(),
            job,
            max_tokens,
            no_worker_wait: self.options.no_worker_wait,
        };
        tokio::spawn(follower.run(started, events));
        match answer.await {
            Ok(Ok(())) => Ok(Generation {
                job_id: job.to_string(),
                prompt_tokens,
                events: receiver,
            }),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(NetworkError::Internal(
                "the job's follower stopped before it started".into(),
            )),
        }
    }
}

impl Network for OlcNetwork {
    fn models(&self) -> BoxFuture<'_, Result<Vec<CatalogModel>, NetworkError>> {
        Box::pin(async {
            let served = self.served(false).await?;
            Ok(served.iter().map(|s| s.model.clone()).collect())
        })
    }

    fn generate(
        &self,
        request: GenerateRequest,
    ) -> BoxFuture<'_, Result<Generation, NetworkError>> {
        Box::pin(self.start(request))
    }
}

/// A refused or failed submission, as the HTTP client is told.
fn submit_error(err: SubmitError) -> NetworkError {
    match err {
        SubmitError::Refused(why) if why.starts_with("cannot escrow") => {
            NetworkError::InsufficientBalance(why)
        }
        // The gateway's own max fee is below what any worker asks for this job.
        SubmitError::Refused(why) if why.starts_with("max fee") => NetworkError::NoWorker(why),
        SubmitError::Refused(why) if why.starts_with("invalid job") => NetworkError::BadRequest {
            message: why,
            param: None,
        },
        SubmitError::Refused(why) => {
            NetworkError::Internal(format!("the coordinator refused: {why}"))
        }
        SubmitError::Client(_) | SubmitError::Timeout(_) => unavailable(&err),
        other => NetworkError::Internal(other.to_string()),
    }
}

/// A nonce never used before by this gateway: the clock in microseconds, or one past the
/// last nonce when requests come faster than the clock ticks (or it stepped back).
fn next_nonce(last: &AtomicU64, now_us: u64) -> u64 {
    let mut prev = last.load(Ordering::Relaxed);
    loop {
        let next = now_us.max(prev.saturating_add(1));
        match last.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(actual) => prev = actual,
        }
    }
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn unix_ms() -> u64 {
    unix_us() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_never_repeat_even_when_the_clock_does() {
        let last = AtomicU64::new(0);
        assert_eq!(next_nonce(&last, 100), 100);
        assert_eq!(next_nonce(&last, 100), 101);
        assert_eq!(next_nonce(&last, 50), 102);
        assert_eq!(next_nonce(&last, 500), 500);
        let last = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let last = last.clone();
                std::thread::spawn(move || {
                    (0..1000).map(|_| next_nonce(&last, 7)).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 4000);
    }

    #[test]
    fn refusals_map_to_the_statuses_callers_act_on() {
        let refused = |why: &str| submit_error(SubmitError::Refused(why.into()));
        assert!(matches!(
            refused("cannot escrow the job's max fee: balance 0 is below 1000"),
            NetworkError::InsufficientBalance(_)
        ));
        assert!(matches!(
            refused("max fee 1 is below the 20 credits this job needs"),
            NetworkError::NoWorker(_)
        ));
        assert!(matches!(
            refused("invalid job: max_tokens"),
            NetworkError::BadRequest { .. }
        ));
        assert!(matches!(
            refused("nonce 3 was already used"),
            NetworkError::Internal(_)
        ));
        assert!(matches!(
            submit_error(SubmitError::Timeout(Duration::from_secs(1))),
            NetworkError::Unavailable(_)
        ));
    }
}
