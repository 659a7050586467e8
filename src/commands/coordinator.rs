//! `olc coordinator start`.

use anyhow::Result;
use olc_coordinator::{Coordinator, CoordinatorConfig, RegistryConfig};
use olc_protocol::p2p::NodeConfig;

use super::daemon;
use crate::cli::{CoordinatorCommand, CoordinatorStart};
use crate::config::{self, CoordinatorFile, pick, pick_list};

pub fn run(command: CoordinatorCommand) -> Result<()> {
    match command {
        CoordinatorCommand::Start(args) => start(args),
    }
}

fn start(args: CoordinatorStart) -> Result<()> {
    let file: CoordinatorFile = config::load(args.daemon.config.as_deref())?;
    let data = daemon::data_dir(pick(args.daemon.data, file.data), "coordinator")?;
    let key = pick(args.daemon.key, file.key).unwrap_or_else(|| data.join("key.pem"));
    let mut cfg = CoordinatorConfig {
        data_dir: Some(data.clone()),
        ..CoordinatorConfig::default()
    };
    let listen = pick_list(args.listen, file.listen);
    if !listen.is_empty() {
        cfg.listen = listen;
    }
    if let Some(skew) = pick(args.max_clock_skew, file.max_clock_skew) {
        cfg.registry = RegistryConfig {
            max_clock_skew_ms: skew.as_millis() as u64,
        };
    }
    cfg.node = NodeConfig {
        mdns: args.daemon.mdns || file.mdns.unwrap_or(false),
        ..NodeConfig::default()
    };

    let identity = daemon::load_or_create_key(&key)?;
    daemon::runtime()?.block_on(async {
        let coordinator = Coordinator::start(&identity, cfg).await?;
        println!("coordinator {}", coordinator.peer_id());
        for addr in coordinator.listen_addrs() {
            println!("listening on {addr}");
        }
        daemon::shutdown_signal().await?;
        println!("stopping");
        coordinator.stop().await;
        Ok(())
    })
}
