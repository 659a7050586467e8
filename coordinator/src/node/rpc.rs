//! Answering the RPC requests peers send the coordinator: queries of workers, jobs and
//! accounts, uploads, job submission (with its inputs checked and its attribution read),
//! and workers' progress, failures and commitments.

use olc_net::unix_ms;
use olc_protocol::messages::rpc::WorkerStandings;
use olc_protocol::{
    Amount, CatalogEntry, CatalogKind, ContentId, JobKind, JobOutput, JobSpec, JobState, Manifest,
    PublicKey, Publish, RpcRequest, RpcResponse, Signed,
};

use super::{Node, lock};
use crate::core::book::Quote;
use crate::core::catalog::{Catalog, CatalogError};
use crate::core::verified::Verified;

impl Node {
    /// Names content the coordinator holds (a manifest, with every file it lists).
    fn publish(&mut self, signed: Signed<Publish>) -> RpcResponse {
        let publish = match Verified::check(signed) {
            Ok(p) => p,
            Err(e) => return RpcResponse::Refused(format!("publish signature: {e}")),
        };
        let p = publish.body();
        let base = match p.kind {
            CatalogKind::Base => None,
            CatalogKind::Adapter { base } => Some(base),
        };
        let mut missing = Vec::new();
        for id in std::iter::once(p.content).chain(base) {
            self.missing_of_manifest(id, &mut missing);
        }
        if let Some(first) = missing.first() {
            return RpcResponse::Refused(format!(
                "cannot publish {}: {} of its blobs are not here (first {first}): upload it first",
                p.name,
                missing.len()
            ));
        }
        match self.change_catalog(|catalog| catalog.publish(&publish)) {
            Ok(entry) => {
                tracing::info!(name = %entry.name, content = %entry.content, "published");
                RpcResponse::Ok
            }
            Err(why) => RpcResponse::Refused(why),
        }
    }

    /// Applies `change` to a copy of the catalog and keeps it once its entry is stored, so
    /// the catalog in memory never holds a name the store lost.
    fn change_catalog(
        &mut self,
        change: impl FnOnce(&mut Catalog) -> Result<CatalogEntry, CatalogError>,
    ) -> Result<CatalogEntry, String> {
        let mut next = self.catalog.clone();
        let entry = change(&mut next).map_err(|e| e.to_string())?;
        self.store
            .put_catalog(&entry)
            .map_err(|e| format!("cannot store the catalog: {e}"))?;
        self.catalog = next;
        Ok(entry)
    }

    /// Publishes the adapters of fine-tunes among `jobs` that settled and asked for a name.
    pub(super) fn publish_settled(&mut self, jobs: &[ContentId]) {
        let named: Vec<(PublicKey, Publish)> = {
            let book = lock(&self.book);
            jobs.iter()
                .filter_map(|id| book.get(id))
                .filter(|j| j.state == JobState::Done)
                .filter_map(|j| {
                    let JobKind::Finetune(spec) = j.spec()?.kind else {
                        return None;
                    };
                    let Some(JobOutput::Finetune { adapter, .. }) = j.output else {
                        return None;
                    };
                    Some((
                        j.signed.signer(),
                        Publish {
                            name: spec.publish_as?,
                            content: adapter,
                            kind: CatalogKind::Adapter { base: spec.model },
                            published_ms: j.updated_ms,
                        },
                    ))
                })
                .collect()
        };
        for (owner, publish) in named {
            if self
                .catalog
                .get(&publish.name)
                .is_some_and(|e| e.content == publish.content && e.owner == owner)
            {
                continue;
            }
            match self.change_catalog(|catalog| catalog.name(owner, &publish)) {
                Ok(entry) => tracing::info!(
                    name = %entry.name,
                    adapter = %entry.content,
                    "fine-tuned adapter published"
                ),
                Err(reason) => tracing::warn!(
                    name = %publish.name,
                    %reason,
                    "fine-tuned adapter not published"
                ),
            }
        }
    }

    pub(super) fn answer(&mut self, request: RpcRequest) -> RpcResponse {
        let now = unix_ms();
        match request {
            RpcRequest::ListWorkers => RpcResponse::Workers(lock(&self.registry).workers()),
            RpcRequest::Publish(signed) => self.publish(signed),
            RpcRequest::Catalog => RpcResponse::Catalog(self.catalog.entries().cloned().collect()),
            RpcRequest::MissingBlobs(ids) => RpcResponse::Missing(
                ids.into_iter()
                    .filter(|id| !self.blobs.contains(id))
                    .collect(),
            ),
            RpcRequest::PutBlob(up) => match self.uploads.receive(&self.blobs, up) {
                Ok(_) => RpcResponse::Ok,
                Err(e) => RpcResponse::Refused(e.to_string()),
            },
            RpcRequest::SubmitJob(signed) => self.submit(signed, now),
            RpcRequest::JobStatus(id) => match lock(&self.book).get(&id) {
                Some(job) => RpcResponse::Job(Box::new(job.view())),
                None => RpcResponse::Refused(format!("no job {id} here")),
            },
            RpcRequest::ListJobs(who) => RpcResponse::Jobs(
                lock(&self.book)
                    .jobs()
                    .filter(|j| who.is_none_or(|w| j.signed.signer() == w))
                    .map(|j| j.view())
                    .collect(),
            ),
            RpcRequest::Progress(p) => {
                let result = lock(&self.book).on_progress(&p, now);
                match result {
                    Ok(()) => {
                        // Shown to followers, though not stored.
                        if let Ok(p) = p.verify() {
                            self.answer_followers(&[p.job_id]);
                        }
                        RpcResponse::Ok
                    }
                    Err(e) => RpcResponse::Refused(e.to_string()),
                }
            }
            RpcRequest::Tokens(chunk) => self.on_tokens(chunk),
            RpcRequest::Cancel(cancel) => self.on_cancel(&cancel),
            RpcRequest::Follow(_) => {
                RpcResponse::Refused("a follow is answered when there is news".into())
            }
            RpcRequest::Failed(f) => {
                let result = lock(&self.book).on_failure(&f, now);
                self.persist();
                match result {
                    Ok(()) => RpcResponse::Ok,
                    Err(e) => RpcResponse::Refused(e.to_string()),
                }
            }
            RpcRequest::Commit(c) => {
                let result = lock(&self.book).on_commit(c, now);
                self.persist();
                match result {
                    Ok(()) => RpcResponse::Ok,
                    Err(e) => RpcResponse::Refused(e.to_string()),
                }
            }
            RpcRequest::Account(signed) => {
                let result = lock(&self.book).account_request(&signed, self.faucet, now);
                self.persist();
                match result {
                    Ok(view) => RpcResponse::Account(Box::new(view)),
                    Err(e) => RpcResponse::Refused(e.to_string()),
                }
            }
            RpcRequest::Balance(key) => {
                RpcResponse::Account(Box::new(lock(&self.book).economy().account_view(key, now)))
            }
            RpcRequest::Ledger => {
                RpcResponse::Ledger(Box::new(lock(&self.book).economy().ledger_view(now)))
            }
            RpcRequest::WorkerStandings => {
                let workers = lock(&self.registry).workers();
                let book = lock(&self.book);
                RpcResponse::WorkerStandings(Box::new(WorkerStandings {
                    min_stake: Amount(book.policy().min_stake),
                    workers: workers
                        .into_iter()
                        .map(|w| book.economy().worker_standing(book.policy(), w, now))
                        .collect(),
                }))
            }
            RpcRequest::Assign(_) | RpcRequest::Reveal(_) | RpcRequest::Cut(_) => {
                RpcResponse::Refused("this peer is a coordinator, not a worker".into())
            }
        }
    }

    fn submit(&mut self, signed: Signed<JobSpec>, now: u64) -> RpcResponse {
        // The signature first: nothing about an unsigned job is worth looking at.
        let verified = match Verified::check(signed) {
            Ok(verified) => verified,
            Err(e) => return RpcResponse::Refused(format!("bad signature: {e}")),
        };
        let spec = verified.body();
        if let JobKind::Finetune(j) = &spec.kind
            && let Some(name) = &j.publish_as
            && let Err(e) = self.catalog.check_free(name, verified.signer())
        {
            return RpcResponse::Refused(format!("the adapter's name: {e}"));
        }
        let missing = self.missing_inputs(spec);
        if !missing.is_empty() {
            let ids: Vec<String> = missing.iter().map(|m| m.to_string()).collect();
            return RpcResponse::Refused(format!(
                "upload the job's inputs first; missing: {}",
                ids.join(", ")
            ));
        }
        let attribution = self.attribution(spec);
        let quote = Quote {
            cheapest_price: lock(&self.registry).cheapest_price(),
            dataset_bytes: match &spec.kind {
                JobKind::Finetune(j) => self.blobs.len_of(&j.dataset),
                JobKind::Inference(_) => None,
            },
        };
        let result = lock(&self.book).submit_verified(verified, attribution, quote, now);
        match result {
            Ok(id) => {
                self.persist();
                tracing::info!(job = %id, "job accepted");
                RpcResponse::JobAccepted(id)
            }
            Err(e) => {
                tracing::info!(reason = %e, "job refused");
                RpcResponse::Refused(e.to_string())
            }
        }
    }

    /// Every blob a job reads is here: the model and adapter manifests and all their
    /// files, the dataset. Returns the missing ones.
    fn missing_inputs(&self, spec: &JobSpec) -> Vec<ContentId> {
        let mut missing = Vec::new();
        match &spec.kind {
            JobKind::Inference(j) => {
                self.missing_of_manifest(j.model, &mut missing);
                if let Some(a) = j.adapter {
                    self.missing_of_manifest(a, &mut missing);
                }
            }
            JobKind::Finetune(j) => {
                self.missing_of_manifest(j.model, &mut missing);
                if !self.blobs.contains(&j.dataset) {
                    missing.push(j.dataset);
                }
                if let Some(a) = j.params.init_adapter {
                    self.missing_of_manifest(a, &mut missing);
                }
            }
        }
        missing
    }

    /// Adds to `missing` the manifest `id` if it is not here (or is not a manifest), else
    /// the files it lists that are not here.
    fn missing_of_manifest(&self, id: ContentId, missing: &mut Vec<ContentId>) {
        match self.blobs.get(&id).ok().flatten() {
            None => missing.push(id),
            Some(bytes) => match Manifest::from_bytes(&bytes) {
                Ok(m) => missing.extend(
                    m.entries()
                        .iter()
                        .map(|e| e.id)
                        .filter(|f| !self.blobs.contains(f)),
                ),
                Err(_) => missing.push(id),
            },
        }
    }
}
