//! olc-client: the submitter's side of the coordinator's API: upload content, submit
//! signed jobs, follow them, fetch results. Used by `olc job …`, `olc devnet`, the tests
//! (and later the gateway), so they all speak to a coordinator the same way. It knows
//! content and the wire, not the engine: which files make up a model directory is the
//! caller's to say (`olc_gpu::model::Checkpoint::files`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use olc_net::libp2p::Multiaddr;
use olc_net::{Client, ClientError, NodeConfig};
use olc_protocol::{
    AccountAction, AccountRequest, AccountView, BlobUpload, CancelJob, CatalogEntry, CatalogKind,
    ContentId, Follow, Identity, JobOutput, JobSpec, JobView, LedgerView, Manifest, ManifestEntry,
    PublicKey, Publish, RpcRequest, RpcResponse, Signed,
};

/// Files of an adapter directory that travel with it (those present): its config and
/// weights, whose data trained it, and a chat template of its own if it has one.
pub const ADAPTER_FILES: [&str; 4] = [
    "adapter_config.json",
    "adapter_model.safetensors",
    "provenance.json",
    "tokenizer_config.json",
];

/// The [`ADAPTER_FILES`] that `dir` has: what an adapter's content id covers.
pub fn adapter_files(dir: &Path) -> Vec<String> {
    ADAPTER_FILES
        .iter()
        .filter(|f| dir.join(f).is_file())
        .map(|f| f.to_string())
        .collect()
}

/// How long a follow may be held: the coordinator answers within its hold (10 s).
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(25);

/// What a follower hears of a job.
#[derive(Debug, Clone, Copy)]
pub enum Heard<'a> {
    /// The next piece of the output's text and the tokens it came with.
    Text { text: &'a str, tokens: &'a [u32] },
    /// The job changed.
    Job(&'a JobView),
}

/// Largest single file a submitter uploads or downloads.
pub const MAX_FILE_BYTES: u64 = 64 << 30;

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Manifest(#[from] olc_protocol::ManifestError),
    #[error("{0}")]
    Codec(#[from] olc_protocol::CodecError),
    #[error("the coordinator refused: {0}")]
    Refused(String),
    #[error("the coordinator answered {0}")]
    Unexpected(String),
    #[error("no answer from the coordinator within {0:?}")]
    Timeout(Duration),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SubmitError + '_ {
    move |source| SubmitError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A submitter connected to one coordinator.
#[derive(Debug, Clone)]
pub struct Submitter {
    client: Client,
    identity: Identity,
    timeout: Duration,
}

impl Submitter {
    pub async fn connect(
        identity: &Identity,
        node: &NodeConfig,
        coordinator: &Multiaddr,
        timeout: Duration,
    ) -> Result<Self, SubmitError> {
        let client = Client::connect(node, coordinator, timeout).await?;
        Ok(Self {
            client,
            identity: identity.clone(),
            timeout,
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Closes the connection cleanly (see [`Client::close`]).
    pub async fn close(&self) {
        self.client.close().await;
    }

    async fn rpc(&self, request: RpcRequest) -> Result<RpcResponse, SubmitError> {
        self.rpc_within(request, self.timeout).await
    }

    async fn rpc_within(
        &self,
        request: RpcRequest,
        timeout: Duration,
    ) -> Result<RpcResponse, SubmitError> {
        match tokio::time::timeout(timeout, self.client.rpc(request)).await {
            Err(_) => Err(SubmitError::Timeout(timeout)),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(RpcResponse::Refused(why))) => Err(SubmitError::Refused(why)),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// Deposits (faucet), stakes or unstakes on this identity's own account. The nonce is
    /// the clock in microseconds, so requests from one key are ordered without any state
    /// kept on this side.
    pub async fn account(&self, action: AccountAction) -> Result<AccountView, SubmitError> {
        let nonce = olc_net::unix_us();
        let signed = Signed::sign(&self.identity, &AccountRequest { action, nonce })?;
        match self.rpc(RpcRequest::Account(signed)).await? {
            RpcResponse::Account(view) => Ok(*view),
            other => Err(SubmitError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn balance(&self, key: PublicKey) -> Result<AccountView, SubmitError> {
        match self.rpc(RpcRequest::Balance(key)).await? {
            RpcResponse::Account(view) => Ok(*view),
            other => Err(SubmitError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Names uploaded content in the coordinator's catalog under this submitter's key.
    pub async fn publish(
        &self,
        name: &str,
        content: ContentId,
        kind: CatalogKind,
    ) -> Result<(), SubmitError> {
        let publish = Publish {
            name: name.into(),
            content,
            kind,
            published_ms: olc_net::unix_ms(),
        };
        let signed = Signed::sign(&self.identity, &publish)?;
        match self.rpc(RpcRequest::Publish(signed)).await? {
            RpcResponse::Ok => Ok(()),
            other => Err(SubmitError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The coordinator's catalog, in name order.
    pub async fn catalog(&self) -> Result<Vec<CatalogEntry>, SubmitError> {
        match self.rpc(RpcRequest::Catalog).await? {
            RpcResponse::Catalog(entries) => Ok(entries),
            other => Err(SubmitError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn ledger(&self) -> Result<LedgerView, SubmitError> {
        match self.rpc(RpcRequest::Ledger).await? {
            RpcResponse::Ledger(view) => Ok(*view),
            other => Err(SubmitError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Uploads an adapter directory (the [`ADAPTER_FILES`] it has).
    pub async fn upload_adapter(&self, dir: &Path) -> Result<ContentId, SubmitError> {
        self.upload_dir(dir, &adapter_files(dir)).await
    }

    /// Uploads the named files of `dir` and their manifest, skipping what the coordinator
    /// already has; returns the manifest's id.
    pub async fn upload_dir(&self, dir: &Path, files: &[String]) -> Result<ContentId, SubmitError> {
        let manifest = olc_content::manifest_of_files(dir, files)?;
        let bytes = manifest.to_bytes()?;
        let id = ContentId::of(&bytes);
        let mut wanted: Vec<ContentId> = manifest.entries().iter().map(|e| e.id).collect();
        wanted.push(id);
        let missing = match self.rpc(RpcRequest::MissingBlobs(wanted)).await? {
            RpcResponse::Missing(m) => m,
            other => return Err(SubmitError::Unexpected(format!("{other:?}"))),
        };
        for entry in manifest.entries() {
            if missing.contains(&entry.id) {
                let path = dir.join(&entry.path);
                let data = std::fs::read(&path).map_err(io(&path))?;
                if ContentId::of(&data) != entry.id {
                    return Err(SubmitError::Refused(format!(
                        "{} changed while being uploaded",
                        path.display()
                    )));
                }
                self.put(entry.id, &data).await?;
            }
        }
        if missing.contains(&id) {
            self.put(id, &bytes).await?;
        }
        Ok(id)
    }

    /// Uploads one file (a dataset); returns its content id.
    pub async fn upload_file(&self, path: &Path) -> Result<ContentId, SubmitError> {
        let data = std::fs::read(path).map_err(io(path))?;
        let id = ContentId::of(&data);
        if let RpcResponse::Missing(m) = self.rpc(RpcRequest::MissingBlobs(vec![id])).await?
            && !m.is_empty()
        {
            self.put(id, &data).await?;
        }
        Ok(id)
    }

    async fn put(&self, id: ContentId, data: &[u8]) -> Result<(), SubmitError> {
        for piece in BlobUpload::pieces(id, data) {
            self.rpc(RpcRequest::PutBlob(piece)).await?;
        }
        Ok(())
    }

    /// Signs and submits a job; returns its id once the coordinator has stored it.
    pub async fn submit(&self, spec: &JobSpec) -> Result<ContentId, SubmitError> {
        let signed = Signed::sign(&self.identity, spec)?;
        self.submit_signed(signed).await
    }

    pub async fn submit_signed(&self, signed: Signed<JobSpec>) -> Result<ContentId, SubmitError> {
        match self.rpc(RpcRequest::SubmitJob(signed)).await? {
            RpcResponse::JobAccepted(id) => Ok(id),
            other => Err(SubmitError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn status(&self, id: ContentId) -> Result<JobView, SubmitError> {
        match self.rpc(RpcRequest::JobStatus(id)).await? {
            RpcResponse::Job(view) => Ok(*view),
            other => Err(SubmitError::Unexpected(format!("{other:?}"))),
        }
    }

    /// This submitter's jobs, or everyone's.
    pub async fn list(&self, mine: bool) -> Result<Vec<JobView>, SubmitError> {
        let who = mine.then(|| self.identity.public_key());
        match self.rpc(RpcRequest::ListJobs(who)).await? {
            RpcResponse::Jobs(jobs) => Ok(jobs),
            other => Err(SubmitError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Waits until the job is done or failed, calling `seen` on every change (see
    /// [`Submitter::follow`]: no polling).
    pub async fn wait(
        &self,
        id: ContentId,
        mut seen: impl FnMut(&JobView),
    ) -> Result<JobView, SubmitError> {
        self.follow(id, false, |heard| {
            if let Heard::Job(view) = heard {
                seen(view)
            }
        })
        .await
    }

    /// Follows a job to its end: `heard` gets each streamed piece of an inference's text
    /// as the lead worker produces it, and the job's view whenever it changes. Each
    /// request is held by the coordinator until there is news, so nothing polls. With
    /// `cancel_if_gone`, each request carries this submitter's signed cancel, which the
    /// coordinator carries out if this connection closes before the job ends.
    ///
    /// The stream is the lead worker's signed word; the returned view's output is the
    /// verified one, which the stream is a prefix of unless that worker lied. Whatever of
    /// the output did not come streamed (the job ended first) is heard from it at the end,
    /// so the pieces heard make up the whole output.
    pub async fn follow(
        &self,
        id: ContentId,
        cancel_if_gone: bool,
        mut heard: impl FnMut(Heard<'_>),
    ) -> Result<JobView, SubmitError> {
        let (mut from, mut seen) = (0, 0);
        let mut last: Option<JobView> = None;
        // The tokens and text heard so far.
        let mut streamed = (Vec::new(), String::new());
        let cancel_if_gone = cancel_if_gone
            .then(|| Signed::sign(&self.identity, &CancelJob { job_id: id }))
            .transpose()?;
        // The coordinator answers a held follow well before this.
        let timeout = self.timeout.max(FOLLOW_TIMEOUT);
        loop {
            let request = RpcRequest::Follow(Follow {
                job_id: id,
                from,
                seen,
                cancel_if_gone: cancel_if_gone.clone(),
            });
            let update = match self.rpc_within(request, timeout).await? {
                RpcResponse::Follow(update) => *update,
                other => return Err(SubmitError::Unexpected(format!("{other:?}"))),
            };
            if !update.tokens.is_empty() || !update.text.is_empty() {
                heard(Heard::Text {
                    text: &update.text,
                    tokens: &update.tokens,
                });
                streamed.0.extend_from_slice(&update.tokens);
                streamed.1.push_str(&update.text);
            }
            if update.job.state.is_final()
                && let Some(JobOutput::Inference { tokens, text }) = &update.job.output
                && tokens.len() > streamed.0.len()
                && tokens.starts_with(&streamed.0)
            {
                // The job ended before the last chunks reached this follower (the stream
                // is forgotten once a job ends): the rest is the verified output's.
                heard(Heard::Text {
                    text: text.strip_prefix(streamed.1.as_str()).unwrap_or_default(),
                    tokens: &tokens[streamed.0.len()..],
                });
            }
            if last.as_ref() != Some(&update.job) {
                heard(Heard::Job(&update.job));
            }
            from = update.next;
            seen = update.revision;
            if update.job.state.is_final() {
                return Ok(update.job);
            }
            last = Some(update.job);
        }
    }

    /// Cancels a job of this submitter's: a queued one fails and is refunded, a
    /// generating one stops at the tokens already streamed, which settle as its output.
    pub async fn cancel(&self, id: ContentId) -> Result<(), SubmitError> {
        let signed = Signed::sign(&self.identity, &CancelJob { job_id: id })?;
        match self.rpc(RpcRequest::Cancel(signed)).await? {
            RpcResponse::Ok => Ok(()),
            other => Err(SubmitError::Unexpected(format!("{other:?}"))),
        }
    }

    /// One file of a manifest (`path` as the manifest lists it), checked against its id, if
    /// the manifest has it and it is at most `max_bytes`: what reads a model's small
    /// files (its config, tokenizer) without fetching its weights.
    pub async fn fetch_file(
        &self,
        manifest: ContentId,
        path: &str,
        max_bytes: u64,
    ) -> Result<Option<Vec<u8>>, SubmitError> {
        let bytes = self.client.fetch_blob(manifest, 1 << 20).await?;
        let manifest = Manifest::from_bytes(&bytes)?;
        let Some(entry) = manifest.entries().iter().find(|e| e.path == path) else {
            return Ok(None);
        };
        if entry.size > max_bytes {
            return Err(SubmitError::Unexpected(format!(
                "{path} is {} bytes, more than the {max_bytes} expected",
                entry.size
            )));
        }
        Ok(Some(self.client.fetch_blob(entry.id, entry.size).await?))
    }

    /// Downloads a manifest's files into `out` (created), each checked against its id.
    pub async fn download_dir(&self, manifest: ContentId, out: &Path) -> Result<(), SubmitError> {
        let bytes = self.client.fetch_blob(manifest, 1 << 20).await?;
        let manifest = Manifest::from_bytes(&bytes)?;
        std::fs::create_dir_all(out).map_err(io(out))?;
        for ManifestEntry { path, size, id } in manifest.entries() {
            let data = self
                .client
                .fetch_blob(*id, (*size).min(MAX_FILE_BYTES))
                .await?;
            let target = out.join(path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            std::fs::write(&target, data).map_err(io(&target))?;
        }
        Ok(())
    }
}
