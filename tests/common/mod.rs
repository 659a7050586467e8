//! Helpers shared by the tests that drive the `olc` binary, and by those that run a
//! network in their own process.
#![allow(dead_code, clippy::unwrap_used)] // test code: a panic is a test failure

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::Duration;

use olc_client::Submitter;
use olc_net::NodeConfig;
use olc_net::libp2p::Multiaddr;
use olc_protocol::{AccountAction, Amount, Identity};

/// Runs `olc` with `args`, without the caller's log level or key leaking in.
pub fn olc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_olc"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("OLC_KEY")
        .output()
        .unwrap()
}

/// The one JSON value a successful `--json` command printed.
pub fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "olc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A node config for loopback tests: gossip heartbeats fast enough that adverts spread in
/// a fraction of a second.
pub fn node() -> NodeConfig {
    NodeConfig {
        heartbeat: Duration::from_millis(100),
        ..NodeConfig::default()
    }
}

/// A loopback TCP port free now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Stake a worker puts up in these tests (the coordinator's minimum is 100).
pub const STAKE: u64 = 1_000;

/// Funds `id` from the faucet of the coordinator at `addr` and, if `stake`, bonds
/// [`STAKE`] of it.
pub async fn fund(addr: &Multiaddr, id: &Identity, amount: u64, stake: bool) {
    let s = Submitter::connect(id, &node(), addr, Duration::from_secs(60))
        .await
        .unwrap();
    s.account(AccountAction::Deposit {
        amount: Amount(amount),
    })
    .await
    .unwrap();
    if stake {
        s.account(AccountAction::Stake {
            amount: Amount(STAKE),
        })
        .await
        .unwrap();
    }
    s.close().await;
}
