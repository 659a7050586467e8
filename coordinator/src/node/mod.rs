//! The coordinator's network side: feeds gossip into the registry and jobs into the job
//! book, answers queries, stores and serves blobs, and carries out the book's actions
//! (assignments, reveal requests). All decisions are made by the registry, the matcher
//! and the book; this only moves events and persists what changed.
//!
//! Split by concern: `config` (what it is started with), the select loop and its timers
//! (`event_loop`), answering RPC requests (`rpc`), the swarm's events (`swarm`), the
//! requests it sends and their answers (`outbound`), tokens streamed to followers and
//! cancels (`follow`), persistence and notices (`persist`),
//! and reading an adapter's attribution (`attribution`). This file holds the public
//! [`Coordinator`] and the `Node` state the others work on.

mod attribution;
mod config;
mod event_loop;
mod follow;
mod outbound;
mod persist;
mod rpc;
mod swarm;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use olc_content::{BlobStore, Uploads};
use olc_net::libp2p::request_response::OutboundRequestId;
use olc_net::libp2p::{Multiaddr, Swarm};
use olc_net::{AdvertObserver, Behaviour, NodeError, NodeTask, start_swarm, unix_ms};
use olc_protocol::{
    CancelJob, ContentId, Identity, LedgerView, PeerId, PublicKey, RegisteredWorker, Signed,
};
use tokio::sync::mpsc;

use crate::audit::{AuditReport, audit_with_blobs};
use crate::core::book::JobBook;
use crate::core::catalog::Catalog;
use crate::core::registry::Registry;
use crate::core::stream::Streams;
use crate::referee::Referee;
use crate::store::JobStore;

pub use config::{CoordinatorConfig, default_listen};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Blobs(#[from] olc_content::BlobStoreError),
    #[error("cannot create a temporary data directory: {0}")]
    TempDir(std::io::Error),
    #[error("bad policy: {0}")]
    Policy(#[from] crate::core::rules::RuleError),
}

/// A running coordinator. Dropping it without [`Coordinator::stop`] leaves the task
/// running until the runtime ends.
#[derive(Debug)]
pub struct Coordinator {
    peer_id: PeerId,
    listen_addrs: Vec<Multiaddr>,
    registry: Arc<Mutex<Registry>>,
    book: Arc<Mutex<JobBook>>,
    blobs: Arc<BlobStore>,
    task: NodeTask,
    _temp: Option<tempfile::TempDir>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // State is only mutated by whole operations; a panic elsewhere cannot leave it
    // half-updated, so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Coordinator {
    /// Builds the node, binds its listeners and starts serving. Returns once the
    /// listeners are up, with their real addresses.
    pub async fn start(identity: &Identity, config: CoordinatorConfig) -> Result<Self, StartError> {
        let (dir, temp) = match &config.data_dir {
            Some(d) => (d.clone(), None),
            None => {
                let t = tempfile::tempdir().map_err(StartError::TempDir)?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        config.policy.validate()?;
        if config.faucet {
            tracing::warn!("faucet on: anyone can mint credits here (devnets only)");
        }
        let store = JobStore::open(&dir.join("jobs"))?;
        let records = store.load_all()?;
        let economy = store.load_economy()?;
        let catalog = Catalog::restore(store.load_catalog()?);
        if !records.is_empty() {
            let open = records.iter().filter(|r| !r.state.is_final()).count();
            tracing::info!(jobs = records.len(), open, "job book restored");
        }
        let book = Arc::new(Mutex::new(JobBook::restore(
            config.jobs.clone(),
            config.policy.clone(),
            config.ledger,
            economy,
            records,
        )));
        let blobs = Arc::new(BlobStore::open(&dir.join("blobs"), None)?);
        let referee = config
            .referee_threads
            .map(|threads| Referee::new(blobs.clone(), dir.join("referee"), threads));
        let (referee_tx, referee_rx) = mpsc::unbounded_channel();
        let (swarm, listen_addrs) = start_swarm(identity, &config.node, &config.listen).await?;
        let registry = Arc::new(Mutex::new(Registry::new(config.registry.clone())));
        let node = Node {
            swarm,
            identity: identity.clone(),
            registry: registry.clone(),
            book: book.clone(),
            store,
            catalog,
            blobs: blobs.clone(),
            uploads: Uploads::new(config.max_upload_bytes, 64),
            observer: config.observer.clone(),
            pending: HashMap::new(),
            faucet: config.faucet,
            referee,
            refereeing: std::collections::HashSet::new(),
            referee_tx,
            referee_rx,
            busy_until: HashMap::new(),
            streams: Streams::default(),
            following: HashMap::new(),
        };
        let task = NodeTask::spawn(move |rx| node.run(rx));
        Ok(Self {
            peer_id: identity.peer_id(),
            listen_addrs,
            registry,
            book,
            blobs,
            task,
            _temp: temp,
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Bound addresses, each ending in `/p2p/<peer id>`.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    pub fn workers(&self) -> Vec<RegisteredWorker> {
        lock(&self.registry).workers()
    }

    /// Content this coordinator stores and serves over the blob protocol.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// What the coordinator reports about a job.
    pub fn job(&self, id: &ContentId) -> Option<olc_protocol::JobView> {
        lock(&self.book).get(id).map(|j| j.view())
    }

    pub fn ledger(&self) -> LedgerView {
        lock(&self.book).economy().ledger_view(unix_ms())
    }

    /// The same checks as `olc coordinator audit`, on the live state. The blobs are hashed
    /// outside the book's lock, so a large store does not stall the coordinator.
    pub fn audit(&self) -> AuditReport {
        let (records, economy) = {
            let book = lock(&self.book);
            let records: Vec<_> = book.jobs().cloned().collect();
            (records, book.economy().clone())
        };
        audit_with_blobs(&records, &economy, Some(&self.blobs))
    }

    pub async fn stop(self) {
        self.task.stop().await;
    }
}

/// What an outbound request was for, to route its answer.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Assign {
        job: ContentId,
        assignment: ContentId,
        worker: PublicKey,
    },
    Reveal {
        job: ContentId,
        assignment: ContentId,
    },
    Cut {
        job: ContentId,
        assignment: ContentId,
    },
}

/// A referee run's answer: the job and its output's commitment, or why it could not run.
type RefereeResult = (ContentId, Result<ContentId, String>);

struct Node {
    swarm: Swarm<Behaviour>,
    identity: Identity,
    registry: Arc<Mutex<Registry>>,
    book: Arc<Mutex<JobBook>>,
    store: JobStore,
    catalog: Catalog,
    blobs: Arc<BlobStore>,
    uploads: Uploads,
    observer: Option<AdvertObserver>,
    pending: HashMap<OutboundRequestId, Pending>,
    faucet: bool,
    referee: Option<Referee>,
    /// Jobs the referee is running now, so a retry does not start a second run.
    refereeing: std::collections::HashSet<ContentId>,
    referee_tx: mpsc::UnboundedSender<RefereeResult>,
    referee_rx: mpsc::UnboundedReceiver<RefereeResult>,
    /// Workers that just answered "busy" (or could not be reached), until when: not
    /// offered anything before then, so a full worker is not asked every sweep.
    busy_until: HashMap<PublicKey, u64>,
    /// Inference tokens on their way to followers, and the follows held for news.
    streams: Streams<follow::Reply>,
    /// The cancels followers handed over, by their connection's peer and job: carried out
    /// if that connection closes before the job ends.
    following: HashMap<PeerId, std::collections::BTreeMap<ContentId, Signed<CancelJob>>>,
}
