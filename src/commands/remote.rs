//! Talking to a coordinator from a one-shot command: connect, ask, close.

use std::path::Path;

use anyhow::{Context, Result, bail};
use olc_client::Submitter;
use olc_content::keyfile;
use olc_gpu::model::ModelSource;
use olc_net::{Client, NodeConfig};
use olc_protocol::{ContentId, Identity, RpcRequest, RpcResponse};

use crate::cli::{CoordinatorAddr, CoordinatorArgs};

/// Asks a request that needs no account (the registry, the ledger) and closes the
/// connection.
pub async fn ask(at: &CoordinatorAddr, request: RpcRequest) -> Result<RpcResponse> {
    let client = Client::connect(&NodeConfig::default(), &at.coordinator, at.timeout)
        .await
        .with_context(|| format!("cannot reach the coordinator at {}", at.coordinator))?;
    let answer = tokio::time::timeout(at.timeout, client.rpc(request)).await;
    client.close().await;
    match answer {
        Err(_) => bail!(
            "no answer from the coordinator within {}",
            humantime::format_duration(at.timeout)
        ),
        Ok(Err(e)) => Err(e.into()),
        Ok(Ok(RpcResponse::Refused(why))) => bail!("the coordinator refused: {why}"),
        Ok(Ok(answer)) => Ok(answer),
    }
}

fn load_key(args: &CoordinatorArgs) -> Result<Identity> {
    let path = crate::paths::key_file(args.key.clone())?;
    keyfile::load(&path).with_context(|| {
        format!(
            "cannot load your key from {} (create one with `olc keys new`)",
            path.display()
        )
    })
}

/// Connects as the key's owner. The key signs requests; the connection itself runs under
/// a key of its own (see `Client`), so a worker's key used here never disturbs that
/// worker's own connection.
pub async fn connect(args: &CoordinatorArgs) -> Result<Submitter> {
    let identity = load_key(args)?;
    Submitter::connect(
        &identity,
        &NodeConfig::default(),
        &args.at.coordinator,
        args.at.timeout,
    )
    .await
    .with_context(|| format!("cannot reach the coordinator at {}", args.at.coordinator))
}

/// Runs `work` with a connection as the key's owner, then closes the connection, whether
/// or not the work succeeded.
pub async fn with_submitter<T>(
    args: &CoordinatorArgs,
    work: impl AsyncFnOnce(&Submitter) -> Result<T>,
) -> Result<T> {
    let submitter = connect(args).await?;
    let result = work(&submitter).await;
    submitter.close().await;
    result
}

/// Uploads a model (a directory or a GGUF file): the files the engine's loader reads, and
/// their manifest.
pub async fn upload_model(submitter: &Submitter, path: &Path) -> Result<ContentId> {
    let source = ModelSource::find(path)?;
    submitter
        .upload_dir(source.root(), &source.files()?)
        .await
        .context("uploading the model")
}
