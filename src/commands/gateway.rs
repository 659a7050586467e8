//! `olc gateway`: the OpenAI-compatible HTTP API over a coordinator's network. Each
//! request becomes a job signed by the gateway's key and paid from its account.

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use olc_client::Submitter;
use olc_gateway::{GatewayConfig, OlcNetwork, OlcOptions};
use olc_net::NodeConfig;
use olc_protocol::{Amount, VerificationPolicy};

use super::daemon;
use crate::cli::GatewayArgs;
use crate::config::{self, GatewayFile, pick};
use crate::limits;

/// Where the API listens unless told: this machine only, as a local server should.
const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
/// The most one request may cost: a trillion credits is beyond any ledger we run.
const MAX_FEE: RangeInclusive<u64> = 1..=1_000_000_000_000;
const DEFAULT_MAX_FEE: u64 = 1_000_000;
const DEFAULT_DEADLINE: Duration = Duration::from_secs(600);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(args: GatewayArgs) -> Result<()> {
    let file: GatewayFile = config::load(args.config.as_deref())?;
    let Some(coordinator) = pick(args.coordinator, file.coordinator) else {
        bail!("no coordinator: pass --coordinator MULTIADDR (or set `coordinator` in --config)");
    };
    let key = crate::paths::key_file(pick(args.key, file.key))?;
    let listen = pick(args.listen, file.listen).unwrap_or(DEFAULT_LISTEN);
    let max_fee = limits::check(
        "--max-fee",
        pick(args.max_fee, file.max_fee).unwrap_or(DEFAULT_MAX_FEE),
        &MAX_FEE,
    )?;
    let file_verify = file
        .verify
        .map(|v| v.parse::<VerificationPolicy>())
        .transpose()
        .map_err(|e| anyhow::anyhow!("verify in the config file: {e}"))?;
    let verification = pick(args.verify, file_verify).unwrap_or(VerificationPolicy::Default);
    // Flags were checked as they were parsed; a config file's values are checked here.
    let deadline = limits::check_duration(
        "--deadline",
        pick(args.deadline, file.deadline).unwrap_or(DEFAULT_DEADLINE),
        &limits::DEADLINE,
    )?;
    let timeout = limits::check_duration(
        "--timeout",
        pick(args.timeout, file.timeout).unwrap_or(DEFAULT_TIMEOUT),
        &limits::TIMEOUT,
    )?;
    let api_keys = pick(args.api_keys, file.api_keys)
        .map(|path| olc_gateway::api_keys_from_file(&path))
        .transpose()?;
    let options = OlcOptions {
        max_fee: Amount(max_fee),
        verification,
        deadline,
        ..OlcOptions::default()
    };

    let identity = daemon::load_or_create_key(&key)?;
    daemon::runtime()?.block_on(async {
        let submitter =
            Submitter::connect(&identity, &NodeConfig::default(), &coordinator, timeout)
                .await
                .with_context(|| format!("cannot reach the coordinator at {coordinator}"))?;
        // Accounts name a participant by its public key: this is the account to fund.
        println!("gateway {}", identity.public_key());
        match submitter.balance(identity.public_key()).await {
            Ok(account) => {
                println!("balance {}", account.balance.0);
                if account.balance.0 < max_fee {
                    tracing::warn!(
                        balance = account.balance.0,
                        max_fee,
                        "the balance cannot cover one request's max fee: requests will be \
                         answered 402 until the account is funded"
                    );
                }
            }
            Err(err) => tracing::warn!(%err, "cannot read the gateway's balance"),
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener
            .local_addr()
            .context("the listener has no address")?;
        println!("listening on http://{addr}/v1");
        let network = Arc::new(OlcNetwork::new(submitter.clone(), options));
        let shutdown = async {
            if let Err(err) = daemon::shutdown_signal().await {
                tracing::error!(%err, "cannot wait for a shutdown signal; stopping");
            }
            println!("stopping");
        };
        let served = olc_gateway::serve(listener, network, GatewayConfig { api_keys }, shutdown)
            .await
            .context("the gateway stopped");
        submitter.close().await;
        served
    })
}
