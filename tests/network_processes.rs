//! Real `olc` processes on loopback: a coordinator, two workers, and `olc workers --json`.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BOUND: Duration = Duration::from_secs(30);

/// Kills the process if the test fails half-way, so no daemon outlives it.
struct Daemon {
    child: Child,
    stdout: mpsc::Receiver<String>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn olc() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_olc"));
    cmd.env_remove("RUST_LOG").env_remove("OLC_KEY");
    cmd
}

fn spawn(args: &[&str], home: &Path) -> Daemon {
    let mut child = olc()
        .args(args)
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Daemon { child, stdout: rx }
}

/// Reads the daemon's stdout until a line starts with `prefix`; returns the rest.
fn line_after(d: &Daemon, prefix: &str) -> String {
    let deadline = Instant::now() + BOUND;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = d
            .stdout
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no line {prefix:?}"));
        if let Some(rest) = line.strip_prefix(prefix) {
            return rest.trim().to_string();
        }
    }
}

fn workers_json(addr: &str) -> Vec<serde_json::Value> {
    let out: Output = olc()
        .args([
            "workers",
            "--coordinator",
            addr,
            "--json",
            "--timeout",
            "10s",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "olc workers: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

fn wait_for_count(addr: &str, n: usize) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let list = workers_json(addr);
        if list.len() == n {
            return list;
        }
        assert!(
            start.elapsed() < BOUND,
            "expected {n} workers, have {}",
            list.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn coordinator_and_two_worker_processes() {
    let home = tempfile::tempdir().unwrap();
    let coord_dir = home.path().join("coord");
    let coordinator = spawn(
        &[
            "coordinator",
            "start",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--data",
            coord_dir.to_str().unwrap(),
        ],
        home.path(),
    );
    let coord_peer = line_after(&coordinator, "coordinator ");
    let addr = line_after(&coordinator, "listening on ");
    assert!(addr.ends_with(&format!("/p2p/{coord_peer}")), "{addr}");

    let mut workers = Vec::new();
    let mut peers = Vec::new();
    for (i, price) in [(1, "7"), (2, "9")] {
        let dir = home.path().join(format!("w{i}"));
        let w = spawn(
            &[
                "worker",
                "start",
                "--coordinator",
                &addr,
                "--listen",
                "/ip4/127.0.0.1/udp/0/quic-v1",
                "--data",
                dir.to_str().unwrap(),
                "--price",
                price,
                "--advert-interval",
                "300ms",
            ],
            home.path(),
        );
        peers.push(line_after(&w, "worker "));
        line_after(&w, "listening on ");
        // The daemon created its key, owner-only.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        workers.push(w);
    }

    let list = wait_for_count(&addr, 2);
    let mut seen: Vec<(String, u64)> = list
        .iter()
        .map(|w| {
            assert!(w["hardware"]["cpu"]["logical_cores"].as_u64().unwrap() >= 1);
            assert!(w["last_seen"].as_u64().unwrap() > 1_700_000_000_000);
            (
                w["peer_id"].as_str().unwrap().to_string(),
                w["price"].as_u64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    let mut expected = vec![(peers[0].clone(), 7), (peers[1].clone(), 9)];
    expected.sort();
    assert_eq!(seen, expected);

    // SIGTERM stops a worker cleanly (exit status 0), and the coordinator expires it.
    let mut stopped = workers.pop().unwrap();
    let pid = stopped.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = stopped.child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < BOUND, "worker ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "worker exited with {status}");
    let left = wait_for_count(&addr, 1);
    assert_eq!(left[0]["peer_id"], peers[0].as_str());
}

#[test]
fn olc_workers_explains_an_unreachable_coordinator() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("/ip4/127.0.0.1/udp/{port}/quic-v1");
    let out = olc()
        .args(["workers", "--coordinator", &addr, "--timeout", "2s"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the coordinator"), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn worker_start_refuses_bad_settings_clearly() {
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        olc()
            .args(args)
            .env("HOME", home.path())
            .env("XDG_DATA_HOME", home.path().join("data"))
            .output()
            .unwrap()
    };
    let no_coord = run(&["worker", "start", "--data", home.path().to_str().unwrap()]);
    assert!(!no_coord.status.success());
    assert!(String::from_utf8_lossy(&no_coord.stderr).contains("no coordinator to join"));

    let bad_addr = run(&["worker", "start", "--coordinator", "not-an-address"]);
    assert!(!bad_addr.status.success());
    assert!(String::from_utf8_lossy(&bad_addr.stderr).contains("--coordinator"));

    let addr = "/ip4/127.0.0.1/udp/9/quic-v1";
    let bad_interval = run(&[
        "worker",
        "start",
        "--coordinator",
        addr,
        "--advert-interval",
        "5ms",
    ]);
    assert!(!bad_interval.status.success());
    assert!(String::from_utf8_lossy(&bad_interval.stderr).contains("between 100ms and 1h"));

    let cfg = home.path().join("w.toml");
    std::fs::write(&cfg, "coordinater = []\n").unwrap();
    let bad_cfg = run(&["worker", "start", "--config", cfg.to_str().unwrap()]);
    assert!(!bad_cfg.status.success());
    assert!(String::from_utf8_lossy(&bad_cfg.stderr).contains("unknown field"));
}

fn run_json(args: &[&str], home: &Path) -> serde_json::Value {
    let out = olc()
        .args(args)
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "olc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A coordinator and `n` workers as real processes on loopback TCP, every worker
/// registered, and a submitter key.
struct JobNet {
    /// Held so the process lives (and is killed) with the network.
    _coordinator: Daemon,
    addr: String,
    /// Each worker's public key (as job views name it) and its process.
    workers: Vec<(String, Option<Daemon>)>,
    key: String,
}

fn job_network(h: &Path, n: usize) -> JobNet {
    let coordinator = spawn(
        &[
            "coordinator",
            "start",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--data",
            h.join("coord").to_str().unwrap(),
            "--faucet",
        ],
        h,
    );
    line_after(&coordinator, "coordinator ");
    let addr = line_after(&coordinator, "listening on ");
    let mut workers = Vec::new();
    for i in 0..n {
        let dir = h.join(format!("w{i}"));
        let w = spawn(
            &[
                "worker",
                "start",
                "--coordinator",
                &addr,
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--data",
                dir.to_str().unwrap(),
                "--advert-interval",
                "300ms",
            ],
            h,
        );
        line_after(&w, "listening on ");
        let shown = run_json(
            &[
                "keys",
                "show",
                "--key",
                dir.join("key.pem").to_str().unwrap(),
                "--json",
            ],
            h,
        );
        // The coordinator matches no worker without stake.
        let worker_key = dir.join("key.pem");
        account(h, &addr, &worker_key, "deposit", 2_000);
        let staked = account(h, &addr, &worker_key, "stake", 1_000);
        assert_eq!(staked["bonded"], 1_000);
        workers.push((shown["public_key"].as_str().unwrap().to_string(), Some(w)));
    }
    wait_for_count(&addr, n);
    let key = h.join("me.pem");
    run_json(
        &["keys", "new", "--out", key.to_str().unwrap(), "--json"],
        h,
    );
    account(h, &addr, &key, "deposit", 1_000_000_000);
    JobNet {
        _coordinator: coordinator,
        addr,
        workers,
        key: key.to_str().unwrap().to_string(),
    }
}

/// `olc account <action> <amount>` for the key at `key`; returns the account as JSON.
fn account(h: &Path, addr: &str, key: &Path, action: &str, amount: u64) -> serde_json::Value {
    run_json(
        &[
            "account",
            action,
            &amount.to_string(),
            "--coordinator",
            addr,
            "--key",
            key.to_str().unwrap(),
            "--json",
        ],
        h,
    )
}

/// `olc model init` of `preset` into `<h>/model`; returns the directory.
fn init_model(h: &Path, preset: &str) -> String {
    let model = h.join("model");
    run_json(
        &[
            "model",
            "init",
            "--out",
            model.to_str().unwrap(),
            "--preset",
            preset,
            "--json",
        ],
        h,
    );
    model.to_str().unwrap().to_string()
}

#[test]
fn a_job_through_real_processes_submit_wait_status_list_receipt() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let net = job_network(h, 1);
    let addr = net.addr.clone();
    let model = init_model(h, "tiny");
    let m = model.as_str();
    let k = net.key.as_str();
    let done = run_json(
        &[
            "job",
            "submit",
            "inference",
            "--coordinator",
            &addr,
            "--key",
            k,
            "--model",
            m,
            "--prompt",
            "Hello",
            "--max-tokens",
            "5",
            "--wait",
            "--json",
        ],
        h,
    );
    assert_eq!(done["state"], "done", "{done}");
    let local = run_json(
        &[
            "run",
            "infer",
            "--model",
            m,
            "--prompt",
            "Hello",
            "--max-tokens",
            "5",
            "--json",
        ],
        h,
    );
    assert_eq!(done["output"]["tokens"], local["tokens"]);
    assert_eq!(done["output"]["text"], local["text"]);
    assert_eq!(done["output"]["commitment"], local["commitment"]);
    assert!(done["receipt"]["bytes_hex"].as_str().unwrap().len() > 100);
    let id = done["job_id"].as_str().unwrap();

    let status = run_json(
        &[
            "job",
            "status",
            id,
            "--coordinator",
            &addr,
            "--key",
            k,
            "--json",
        ],
        h,
    );
    assert_eq!(status["state"], "done");
    let list = run_json(
        &[
            "job",
            "list",
            "--mine",
            "--coordinator",
            &addr,
            "--key",
            k,
            "--json",
        ],
        h,
    );
    assert_eq!(list.as_array().unwrap().len(), 1);
    let file = h.join("receipt.bin");
    run_json(
        &[
            "receipt",
            "show",
            id,
            "--coordinator",
            &addr,
            "--key",
            k,
            "--out",
            file.to_str().unwrap(),
            "--json",
        ],
        h,
    );
    let checked = run_json(&["receipt", "verify", file.to_str().unwrap(), "--json"], h);
    assert_eq!(checked["valid"], true);
    assert_eq!(checked["job_id"], id);
    drop(net);
}

#[test]
fn devnet_fine_tunes_then_shows_the_adapter_beside_the_base_model() {
    let home = tempfile::tempdir().unwrap();
    let report = run_json(&["devnet", "--workers", "2", "--json"], home.path());
    assert_eq!(report["workers"].as_array().unwrap().len(), 2);
    let jobs = report["jobs"].as_array().unwrap();
    assert!(jobs.iter().all(|j| j["state"] == "done"), "{report}");
    assert_eq!(jobs[0]["kind"], "finetune");
    assert!(jobs[0]["receipt"]["id"].is_string());
    let comparison = report["comparison"].as_array().unwrap();
    assert!(!comparison.is_empty());
    let learned = comparison
        .iter()
        .filter(|c| {
            c["adapter"]
                .as_str()
                .unwrap()
                .starts_with(c["trained"].as_str().unwrap())
        })
        .count();
    assert!(
        learned * 2 > comparison.len(),
        "the adapter learned too little: {report}"
    );
    assert!(comparison.iter().all(|c| {
        !c["base"]
            .as_str()
            .unwrap()
            .starts_with(c["trained"].as_str().unwrap())
    }));
}

#[test]
fn devnet_with_cheaters_slashes_them_and_no_one_else_and_the_ledger_balances() {
    let home = tempfile::tempdir().unwrap();
    let report = run_json(
        &["devnet", "--workers", "3", "--cheaters", "1", "--json"],
        home.path(),
    );
    let workers = report["workers"].as_array().unwrap();
    let cheaters: Vec<&str> = workers
        .iter()
        .filter(|w| w["cheater"] == true)
        .map(|w| w["public_key"].as_str().unwrap())
        .collect();
    assert_eq!(cheaters.len(), 1, "{report}");
    let slashes = report["slashes"].as_array().unwrap();
    assert!(
        !slashes.is_empty(),
        "the cheater was never caught: {report}"
    );
    for s in slashes {
        assert!(cheaters.contains(&s["worker"].as_str().unwrap()), "{s}");
        assert!(s["amount"].as_u64().unwrap() > 0);
        assert_eq!(s["reason"], "wrong_output");
    }
    let payouts = report["payouts"].as_array().unwrap();
    for role in ["compute", "adapter_royalty", "data_contributor", "treasury"] {
        assert!(
            payouts
                .iter()
                .any(|p| p["role"] == role && p["amount"].as_u64().unwrap() > 0),
            "nobody was paid as {role}: {report}"
        );
    }
    assert!(
        payouts
            .iter()
            .all(|p| !cheaters.contains(&p["to"].as_str().unwrap()))
    );
    assert_eq!(report["minted"], report["total"], "{report}");
    assert!(
        report["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["state"] == "done")
    );
}

#[test]
fn a_worker_process_killed_mid_job_is_replaced_and_the_job_completes() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let mut net = job_network(h, 2);
    let addr = net.addr.clone();
    let model = init_model(h, "tiny");
    let data = h.join("d.jsonl");
    std::fs::write(&data, "{\"text\": \"a few words to learn by heart\"}\n{\"prompt\": \"Q\", \"completion\": \" A\"}\n").unwrap();
    let k = net.key.as_str();
    let submitted = run_json(
        &[
            "job",
            "submit",
            "finetune",
            "--coordinator",
            &addr,
            "--key",
            k,
            "--model",
            model.as_str(),
            "--data",
            data.to_str().unwrap(),
            "--steps",
            "4000",
            "--lr",
            "0.001",
            "--json",
        ],
        h,
    );
    let id = submitted["job_id"].as_str().unwrap().to_string();
    // Find the worker running it, then SIGKILL that process: it cannot say goodbye.
    let start = Instant::now();
    let victim = loop {
        let s = run_json(
            &[
                "job",
                "status",
                &id,
                "--coordinator",
                &addr,
                "--key",
                k,
                "--json",
            ],
            h,
        );
        if let Some(w) = s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["state"] == "running")
        {
            break w["worker"].as_str().unwrap().to_string();
        }
        assert!(start.elapsed() < BOUND, "never running: {s}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let slot = net.workers.iter_mut().find(|(k, _)| *k == victim).unwrap();
    let mut d = slot.1.take().unwrap();
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    let start = Instant::now();
    let done = loop {
        let s = run_json(
            &[
                "job",
                "status",
                &id,
                "--coordinator",
                &addr,
                "--key",
                k,
                "--json",
            ],
            h,
        );
        if s["state"] == "done" || s["state"] == "failed" {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "not done: {s}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(done["state"], "done", "{done}");
    let replicas = done["workers"].as_array().unwrap();
    assert!(
        replicas[0]["state"]
            .as_str()
            .unwrap()
            .contains("left the network"),
        "{done}"
    );
    assert_ne!(replicas.last().unwrap()["worker"].as_str().unwrap(), victim);
    drop(net);
}

#[test]
fn a_job_that_outgrows_its_memory_limit_is_stopped() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let net = job_network(h, 1);
    let addr = net.addr.clone();
    let model = init_model(h, "small");
    let data = h.join("d.jsonl");
    std::fs::write(
        &data,
        "{\"text\": \"enough words to need some activations\"}\n",
    )
    .unwrap();
    let k = net.key.as_str();
    // 64 KiB: far less than loading a model and training it takes.
    let out = olc()
        .args([
            "job",
            "submit",
            "finetune",
            "--coordinator",
            &addr,
            "--key",
            k,
            "--model",
            model.as_str(),
            "--data",
            data.to_str().unwrap(),
            "--steps",
            "50",
            "--min-memory",
            "65536",
            "--deadline",
            "8s",
            "--wait",
            "--json",
        ])
        .env("HOME", h)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the job should fail");
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["state"], "failed", "{view}");
    let first = view["workers"][0]["state"].as_str().unwrap();
    assert!(first.contains("memory"), "{view}");
    drop(net);
}
