//! Real `olc` processes on loopback: a coordinator, two workers, and `olc workers --json`.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use std::io::{BufRead, BufReader, Write};
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
    spawn_logging(args, home, Stdio::null())
}

/// Like `spawn`, with the daemon's log (stderr) sent to `stderr`.
fn spawn_logging(args: &[&str], home: &Path, stderr: Stdio) -> Daemon {
    let mut child = olc()
        .args(args)
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .stdout(Stdio::piped())
        .stderr(stderr)
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
    let coord_key = line_after(&coordinator, "coordinator ");
    let coord_peer = line_after(&coordinator, "peer id ");
    assert_eq!(
        coord_key.len(),
        64,
        "the coordinator is named by its public key"
    );
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
                w["public_key"].as_str().unwrap().to_string(),
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
    assert_eq!(left[0]["public_key"], peers[0].as_str());
}

/// A new GPU owner funds and stakes the worker's key before starting the daemon with it:
/// the client commands' connections must not keep the daemon from registering (they once
/// ran under the worker's own peer id, and the coordinator then never told the daemon its
/// gossip subscriptions).
#[test]
fn a_worker_whose_key_was_used_by_client_commands_first_registers() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let (_coordinator, addr) = start_coordinator(
        h,
        "/ip4/127.0.0.1/udp/0/quic-v1",
        &h.join("coord"),
        Stdio::null(),
    );
    let dir = h.join("w0");
    let key = dir.join("key.pem");
    std::fs::create_dir_all(&dir).unwrap();
    let made = run_json(
        &["keys", "new", "--out", key.to_str().unwrap(), "--json"],
        h,
    );
    account(h, &addr, &key, "deposit", 2_000);
    account(h, &addr, &key, "stake", 1_000);
    let _worker = spawn(
        &[
            "worker",
            "start",
            "--coordinator",
            &addr,
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--data",
            dir.to_str().unwrap(),
            "--advert-interval",
            "300ms",
        ],
        h,
    );
    let listed = wait_for_count(&addr, 1);
    assert_eq!(listed[0]["public_key"], made["public_key"]);
    // `olc workers` finds the coordinator as every other client command does.
    let out = olc()
        .args(["workers", "--json"])
        .env("OLC_COORDINATOR", &addr)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let by_env: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(by_env.len(), 1);
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
    let (coordinator, addr) =
        start_coordinator(h, "/ip4/127.0.0.1/tcp/0", &h.join("coord"), Stdio::null());
    let workers = (0..n)
        .map(|i| {
            let (public_key, w) = staked_worker(h, &addr, i, &[]);
            (public_key, Some(w))
        })
        .collect();
    wait_for_count(&addr, n);
    let key = funded_submitter(h, &addr);
    JobNet {
        _coordinator: coordinator,
        addr,
        workers,
        key,
    }
}

/// `olc coordinator start --faucet` on `listen` with its store in `data`, logging to
/// `stderr`; returns the process and the address it listens on.
fn start_coordinator(h: &Path, listen: &str, data: &Path, stderr: Stdio) -> (Daemon, String) {
    let coordinator = spawn_logging(
        &[
            "coordinator",
            "start",
            "--listen",
            listen,
            "--data",
            data.to_str().unwrap(),
            "--faucet",
        ],
        h,
        stderr,
    );
    line_after(&coordinator, "coordinator ");
    let addr = line_after(&coordinator, "listening on ");
    (coordinator, addr)
}

/// Worker `i` (data in `<h>/w<i>`, more `olc worker start` flags in `extra`) joined to
/// `addr`, funded with 2 000 and 1 000 of it staked; returns its public key (as job views
/// name it) and its process.
fn staked_worker(h: &Path, addr: &str, i: usize, extra: &[&str]) -> (String, Daemon) {
    let dir = h.join(format!("w{i}"));
    let mut args = vec![
        "worker",
        "start",
        "--coordinator",
        addr,
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--data",
        dir.to_str().unwrap(),
        "--advert-interval",
        "300ms",
    ];
    args.extend_from_slice(extra);
    let w = spawn(&args, h);
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
    account(h, addr, &worker_key, "deposit", 2_000);
    let staked = account(h, addr, &worker_key, "stake", 1_000);
    assert_eq!(staked["bonded"], 1_000);
    (shown["public_key"].as_str().unwrap().to_string(), w)
}

/// A new key `<h>/me.pem` with 1 000 000 000 deposited; returns the key file's path.
fn funded_submitter(h: &Path, addr: &str) -> String {
    let key = h.join("me.pem");
    run_json(
        &["keys", "new", "--out", key.to_str().unwrap(), "--json"],
        h,
    );
    account(h, addr, &key, "deposit", 1_000_000_000);
    key.to_str().unwrap().to_string()
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
    // --stream prints the text as it comes, and it is the same text.
    let streamed = olc()
        .args([
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
            "--stream",
        ])
        .env("HOME", h)
        .env("XDG_DATA_HOME", h.join("data"))
        .output()
        .unwrap();
    assert!(
        streamed.status.success(),
        "{}",
        String::from_utf8_lossy(&streamed.stderr)
    );
    assert_eq!(
        String::from_utf8(streamed.stdout).unwrap(),
        format!("{}\n", local["text"].as_str().unwrap())
    );
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
    assert_eq!(
        list.as_array().unwrap().len(),
        2,
        "the waited job and the streamed one"
    );
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

/// `--wait` not on a terminal (a script, CI, a pipe): the job id comes at once as the
/// first line of stdout, progress comes as plain lines on stderr, and the job can then be
/// named by a short prefix of its id.
#[test]
fn a_waited_fine_tune_off_a_terminal_shows_its_id_at_once_and_plain_progress() {
    use std::io::{BufRead, BufReader, Read};

    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let net = job_network(h, 1);
    let addr = net.addr.clone();
    let model = init_model(h, "tiny");
    let data = h.join("data.jsonl");
    let records: Vec<String> = (0..8)
        .map(|i| format!(r#"{{"prompt": "Q: {i}?\nA:", "completion": " answer {i}"}}"#))
        .collect();
    std::fs::write(&data, records.join("\n")).unwrap();
    let mut child = olc()
        .args([
            "job",
            "submit",
            "finetune",
            "--coordinator",
            &addr,
            "--key",
            &net.key,
            "--model",
            &model,
            "--data",
            data.to_str().unwrap(),
            "--rank",
            "4",
            "--steps",
            "30",
            "--wait",
        ])
        .env("HOME", h)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let id = first.trim().to_string();
    assert_eq!(id.len(), 64, "the first line is the job id: {first:?}");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let mut progress = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut progress)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{progress}");
    assert!(rest.contains(": done"), "{rest}");
    let short = &id[..8];
    assert!(
        progress
            .lines()
            .any(|l| l.starts_with(&format!("job {short}: "))),
        "no plain progress line on stderr: {progress:?}"
    );
    assert!(
        !progress.contains('\r'),
        "a spinner was drawn off a terminal: {progress:?}"
    );

    // The short id names the job; the status shows the last step and loss.
    let status = run_json(
        &[
            "job",
            "status",
            short,
            "--coordinator",
            &addr,
            "--key",
            &net.key,
            "--json",
        ],
        h,
    );
    assert_eq!(status["job_id"], id.as_str());
    // `job result --out` refuses to write into a directory that holds files, unless told.
    let out_dir = h.join("adapter");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(out_dir.join("notes.txt"), "mine").unwrap();
    let result = |extra: &[&str]| {
        let mut args = vec![
            "job",
            "result",
            short,
            "--coordinator",
            &addr,
            "--key",
            &net.key,
            "--out",
            out_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        olc().args(&args).env("HOME", h).output().unwrap()
    };
    let refused = result(&[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    assert!(!out_dir.join("adapter_model.safetensors").exists());
    let forced = result(&["--force", "--wait"]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert!(out_dir.join("adapter_model.safetensors").exists());
    assert_eq!(
        std::fs::read_to_string(out_dir.join("notes.txt")).unwrap(),
        "mine"
    );

    // A prefix that names no job, and one too short, are refused with the reason.
    let none = olc()
        .args([
            "job",
            "status",
            "ffffffff",
            "--coordinator",
            &addr,
            "--key",
            &net.key,
        ])
        .env("HOME", h)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&none.stderr).contains("no job id starts with"));
    let tiny = olc()
        .args([
            "job",
            "status",
            "ab",
            "--coordinator",
            &addr,
            "--key",
            &net.key,
        ])
        .env("HOME", h)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&tiny.stderr).contains("is not a job id"));

    // A file that never was a receipt is called that, not a newer protocol.
    let junk = h.join("junk.bin");
    std::fs::write(&junk, b"this is not a receipt at all").unwrap();
    let verified = olc()
        .args(["receipt", "verify", junk.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&verified.stderr);
    assert!(!verified.status.success());
    assert!(
        err.contains("is not a receipt") && !err.contains("upgrade"),
        "{err}"
    );
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

/// SplitMix64: a tiny seeded generator, so the kill points of a failing run reproduce.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The last `n` lines of the file at `path` (a daemon's log), for failure messages.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The lines of the file at `path` (a daemon's log) that mention any of `needles`.
fn lines_mentioning(path: &Path, needles: &[&str]) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| needles.iter().any(|n| l.contains(n)))
        .collect();
    lines.join("\n")
}

/// `olc coordinator audit --json` of the stopped coordinator whose store is in `data`;
/// fails, with the report and the coordinator's log, unless the audit is clean.
fn clean_audit(h: &Path, data: &Path, log: &Path, when: &str) -> serde_json::Value {
    let out = olc()
        .args([
            "coordinator",
            "audit",
            "--data",
            data.to_str().unwrap(),
            "--json",
        ])
        .env("HOME", h)
        .env("XDG_DATA_HOME", h.join("data"))
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{when}: the audit printed no report ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success() && report["problems"].as_array().is_some_and(|p| p.is_empty()),
        "{when}: the audit is not clean: {report:#}\n{}\ncoordinator log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        tail(log, 80)
    );
    assert_eq!(report["minted"], report["total"], "{when}: {report:#}");
    report
}

/// A coordinator holds submitters' money in escrow and owes workers their fees, and it can
/// die at any instant (a crash, an OOM kill, a power cut) with no chance to flush or tidy
/// up. If a restart could lose a stored job, forget a settlement half-made or make one
/// twice, submitters would pay for work never done, workers would be paid twice or not at
/// all, and credits would appear or vanish. Only what the store made durable survives a
/// SIGKILL, so killing it while jobs settle shows whether that is enough.
#[test]
fn a_coordinator_killed_at_random_points_twenty_times_loses_no_job_and_pays_each_once() {
    const KILLS: usize = 20;
    const JOBS_PER_KILL: usize = 2;
    const MAX_FEE: u64 = 100_000;
    const SUBMITTER_FUNDS: u64 = 1_000_000_000;
    const WORKER_FUNDS: u64 = 2_000;
    const SEED: u64 = 0x0c0f_fee5_eed5;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // A fixed port, so the workers find the restarted coordinator where they left it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let data = h.join("coord");
    let log = h.join("coordinator.log");
    let log_to = |note: &str| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        writeln!(f, "=== test: {note}").unwrap();
        Stdio::from(f)
    };
    let (mut coordinator, addr) = start_coordinator(h, &listen, &data, log_to("start"));
    // A price at which each job's fee is far above rounding, so a payment lost or doubled
    // shows in the balances.
    let workers: Vec<(String, Daemon)> = (0..2)
        .map(|i| staked_worker(h, &addr, i, &["--price", "1000"]))
        .collect();
    wait_for_count(&addr, 2);
    let key = funded_submitter(h, &addr);
    let model = init_model(h, "small");

    let mut rng = SplitMix64(SEED);
    let mut jobs: Vec<String> = Vec::new();
    let mut kills_with_open_jobs = 0;
    for round in 1..=KILLS {
        for j in 0..JOBS_PER_KILL {
            let prompt = format!("round {round} job {j} says {}", rng.next() % 1000);
            let submitted = run_json(
                &[
                    "job",
                    "submit",
                    "inference",
                    "--coordinator",
                    &addr,
                    "--key",
                    &key,
                    "--model",
                    &model,
                    "--prompt",
                    &prompt,
                    "--max-tokens",
                    "256",
                    "--verify",
                    "replicate:2",
                    "--max-fee",
                    &MAX_FEE.to_string(),
                    "--json",
                ],
                h,
            );
            assert_eq!(submitted["state"], "queued", "{submitted}");
            jobs.push(submitted["job_id"].as_str().unwrap().to_string());
        }
        let delay = rng.next() % 401;
        std::thread::sleep(Duration::from_millis(delay));
        coordinator.child.kill().unwrap();
        coordinator.child.wait().unwrap();
        let when = format!("kill {round} ({delay} ms after submitting, seed {SEED:#x})");
        let report = clean_audit(h, &data, &log, &when);
        if report["open_jobs"].as_u64().unwrap() > 0 {
            kills_with_open_jobs += 1;
        }
        // Every job whose submission was answered is stored, and none failed.
        assert_eq!(report["jobs"], jobs.len(), "{when}: {report:#}");
        assert_eq!(report["failed_jobs"], 0, "{when}: {report:#}");
        let (restarted, again) =
            start_coordinator(h, &listen, &data, log_to(&format!("restart {round}")));
        assert_eq!(again, addr, "the restarted coordinator changed its address");
        coordinator = restarted;
        // The workers come back by themselves; once both are registered again, the next
        // jobs run (and settle) while the coordinator lives, so the next kill can hit them.
        wait_for_count(&addr, 2);
    }

    // The kills must hit jobs in flight, or this tests nothing: jobs of a few hundred
    // tokens on the small model last about as long as a coordinator lives here.
    assert!(
        kills_with_open_jobs >= KILLS / 2,
        "only {kills_with_open_jobs} of {KILLS} kills found a job open; make the jobs longer"
    );

    // Every job ends, and ends done.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    loop {
        let list = run_json(
            &[
                "job",
                "list",
                "--mine",
                "--coordinator",
                &addr,
                "--key",
                &key,
                "--json",
            ],
            h,
        );
        let list = list.as_array().unwrap();
        let missing: Vec<&String> = jobs
            .iter()
            .filter(|id| !list.iter().any(|j| j["job_id"] == id.as_str()))
            .collect();
        assert!(missing.is_empty(), "jobs lost: {missing:?}");
        // One line per unfinished job: its state, why it waits, and each replica's state;
        // and what the coordinator's log says of these jobs, between its restarts.
        let open: Vec<&serde_json::Value> = list.iter().filter(|j| j["state"] != "done").collect();
        let mut needles = vec!["=== test"];
        needles.extend(open.iter().filter_map(|j| j["job_id"].as_str()));
        let history = || lines_mentioning(&log, &needles);
        let unfinished: Vec<String> = open
            .iter()
            .map(|j| {
                let replicas: Vec<String> = j["workers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| format!("{} {}: {}", r["replica"], r["worker"], r["state"]))
                    .collect();
                format!(
                    "{} {} (waiting: {}; reason: {}) replicas [{}]",
                    j["job_id"],
                    j["state"],
                    j["waiting"],
                    j["reason"],
                    replicas.join(", ")
                )
            })
            .collect();
        assert!(
            !list.iter().any(|j| j["state"] == "failed"),
            "jobs failed:\n{}\ncoordinator log of these jobs:\n{}",
            unfinished.join("\n"),
            history()
        );
        if list.len() == jobs.len() && unfinished.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} jobs are not done after {:?}:\n{}\ncoordinator log of these jobs:\n{}",
            unfinished.len(),
            jobs.len(),
            started.elapsed(),
            unfinished.join("\n"),
            history()
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // Each job paid out of its escrow once, the rest refunded, nobody slashed.
    let mut paid_out = 0;
    let mut earned: std::collections::HashMap<String, u64> = Default::default();
    for id in &jobs {
        let job = run_json(
            &[
                "job",
                "status",
                id,
                "--coordinator",
                &addr,
                "--key",
                &key,
                "--json",
            ],
            h,
        );
        assert_eq!(job["state"], "done", "{job:#}");
        assert!(job["receipt"].is_object(), "no receipt: {job:#}");
        let refund = job["refund"]
            .as_u64()
            .unwrap_or_else(|| panic!("no refund: {job:#}"));
        assert!(
            job["slashes"].as_array().unwrap().is_empty(),
            "an honest worker was slashed: {job:#}"
        );
        let mut paid = 0;
        for p in job["payouts"].as_array().unwrap() {
            let amount = p["amount"].as_u64().unwrap();
            paid += amount;
            *earned
                .entry(p["to"].as_str().unwrap().to_string())
                .or_default() += amount;
        }
        assert_eq!(paid + refund, MAX_FEE, "{job:#}");
        paid_out += paid;
    }
    let ledger = run_json(
        &["coordinator", "ledger", "--coordinator", &addr, "--json"],
        h,
    );
    assert_eq!(ledger["minted"], ledger["total"], "{ledger:#}");
    assert_eq!(
        ledger["minted"],
        SUBMITTER_FUNDS + 2 * WORKER_FUNDS,
        "credits were minted beyond the deposits: {ledger:#}"
    );
    assert_eq!(ledger["settled_jobs"], jobs.len(), "{ledger:#}");
    assert_eq!(ledger["open_escrows"], 0, "{ledger:#}");
    assert_eq!(ledger["escrowed"], 0, "{ledger:#}");
    let balance = |key_file: &str| {
        run_json(
            &[
                "account",
                "balance",
                "--coordinator",
                &addr,
                "--key",
                key_file,
                "--json",
            ],
            h,
        )
    };
    let me = balance(&key);
    assert_eq!(
        me["balance"],
        SUBMITTER_FUNDS - paid_out,
        "the submitter paid other than the {paid_out} paid out: {me:#}"
    );
    for (i, (public_key, _)) in workers.iter().enumerate() {
        let key_file = h.join(format!("w{i}")).join("key.pem");
        let w = balance(key_file.to_str().unwrap());
        let held = ["balance", "bonded", "unbonding"]
            .iter()
            .map(|f| w[*f].as_u64().unwrap())
            .sum::<u64>();
        let due = earned.get(public_key).copied().unwrap_or(0);
        // Both workers run every job (replicate:2 on two workers), so both earned.
        assert!(due > 0, "worker {i} was never paid: {earned:?}");
        assert_eq!(held, WORKER_FUNDS + due, "worker {i}: {w:#}, earned {due}");
    }

    coordinator.child.kill().unwrap();
    coordinator.child.wait().unwrap();
    let last = clean_audit(h, &data, &log, "after the last job");
    assert_eq!(last["done_jobs"], jobs.len(), "{last:#}");
    assert_eq!(last["settled_jobs"], jobs.len(), "{last:#}");
    assert_eq!(last["open_jobs"], 0, "{last:#}");
    drop(workers);
}

/// `olc account`, `olc coordinator ledger` and `olc coordinator audit` through real
/// processes, and the mistakes a user makes with them: each refused with a reason and
/// nothing moved.
#[test]
fn accounts_stake_and_audit_through_the_cli_and_bad_requests_move_nothing() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let data = h.join("coord");
    let (mut coordinator, addr) =
        start_coordinator(h, "/ip4/127.0.0.1/tcp/0", &data, Stdio::null());
    let key = h.join("me.pem");
    run_json(
        &["keys", "new", "--out", key.to_str().unwrap(), "--json"],
        h,
    );
    let k = key.to_str().unwrap();
    let fails = |args: &[&str], expect: &str| {
        let out = olc()
            .args(args)
            .env("HOME", h)
            .env("XDG_DATA_HOME", h.join("data"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "olc {args:?} succeeded");
        assert!(err.contains(expect), "olc {args:?}: {err}");
    };

    let a = account(h, &addr, &key, "deposit", 500);
    assert_eq!(a["balance"], 500);
    let on = ["--coordinator", addr.as_str(), "--key", k];
    fails(
        &[&["account", "stake", "600"][..], &on].concat(),
        "available",
    );
    fails(&[&["account", "unstake", "1"][..], &on].concat(), "bonded");
    fails(&[&["account", "stake", "0"][..], &on].concat(), "zero");
    fails(&[&["account", "stake", "-5"][..], &on].concat(), "-5");
    account(h, &addr, &key, "stake", 200);
    let a = account(h, &addr, &key, "unstake", 50);
    assert_eq!(
        (a["balance"].as_u64(), a["bonded"].as_u64()),
        (Some(300), Some(150))
    );
    assert_eq!(a["unbonding"], 50);
    let me = run_json(&[&["account", "balance", "--json"][..], &on].concat(), h);
    assert_eq!(me, a);

    // A job the balance cannot cover is refused before anything is escrowed.
    let model = init_model(h, "tiny");
    let job = [
        "job",
        "submit",
        "inference",
        "--model",
        &model,
        "--prompt",
        "Hi",
    ];
    let submit_fails =
        |extra: &[&str], expect: &str| fails(&[&job[..], extra, &on].concat(), expect);
    submit_fails(&["--max-fee", "1000"], "cannot escrow");
    submit_fails(&["--verify", "replicate:1"], "replicate:K");

    let ledger = run_json(
        &["coordinator", "ledger", "--coordinator", &addr, "--json"],
        h,
    );
    assert_eq!(ledger["minted"], 500);
    assert_eq!(ledger["total"], 500);
    assert_eq!(ledger["open_escrows"], 0);
    fails(
        &["coordinator", "audit", "--data", data.to_str().unwrap()],
        "still running",
    );
    coordinator.child.kill().unwrap();
    coordinator.child.wait().unwrap();
    let report = run_json(
        &[
            "coordinator",
            "audit",
            "--data",
            data.to_str().unwrap(),
            "--json",
        ],
        h,
    );
    assert_eq!(report["problems"], serde_json::json!([]));
    assert_eq!(report["minted"], 500);
    fails(
        &[
            "coordinator",
            "audit",
            "--data",
            h.join("nothing").to_str().unwrap(),
        ],
        "holds no coordinator store",
    );

    // A coordinator without a faucet mints nothing.
    let (_plain, plain_addr) = {
        let d = spawn(
            &[
                "coordinator",
                "start",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--data",
                h.join("plain").to_str().unwrap(),
            ],
            h,
        );
        line_after(&d, "coordinator ");
        let addr = line_after(&d, "listening on ");
        (d, addr)
    };
    fails(
        &[
            "account",
            "deposit",
            "5",
            "--coordinator",
            &plain_addr,
            "--key",
            k,
        ],
        "no faucet",
    );
}

/// `olc` with `args` as the user in `h`; returns whether it succeeded and its stderr.
fn run_refused(args: &[&str], h: &Path) -> String {
    let out = olc()
        .args(args)
        .env("HOME", h)
        .env("XDG_DATA_HOME", h.join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "olc {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `olc model publish DIR --name NAME` at `addr` with `key`, and `extra` flags.
fn publish_args<'a>(
    dir: &'a str,
    name: &'a str,
    addr: &'a str,
    key: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "model",
        "publish",
        dir,
        "--name",
        name,
        "--coordinator",
        addr,
        "--key",
        key,
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn the_catalog_names_models_and_adapters_and_a_name_stays_its_publishers() {
    let tmp = tempfile::tempdir().unwrap();
    let h = tmp.path();
    let (_coordinator, addr) =
        start_coordinator(h, "/ip4/127.0.0.1/tcp/0", &h.join("coord"), Stdio::null());
    let model = init_model(h, "tiny");
    let alice = funded_submitter(h, &addr);
    let bob = h.join("bob.pem");
    run_json(
        &["keys", "new", "--out", bob.to_str().unwrap(), "--json"],
        h,
    );
    let publish = |dir, name, key, extra| publish_args(dir, name, &addr, key, extra);

    let out = run_json(&publish(&model, "tiny", &alice, &["--json"]), h);
    let shown = run_json(&["model", "show", &model, "--json"], h);
    assert_eq!(
        out["content"], shown["id"],
        "the name points at the model's content id"
    );

    // Someone else cannot take the name; its owner can move it.
    let err = run_refused(&publish(&model, "tiny", bob.to_str().unwrap(), &[]), h);
    assert!(err.contains("belongs to"), "{err}");
    run_json(&publish(&model, "tiny", &alice, &["--json"]), h);

    // An adapter is published against its base, by name.
    let adapter = h.join("adapter");
    let config = olc_gpu::model::Checkpoint::load(Path::new(&model))
        .unwrap()
        .config;
    let spec = olc_gpu::train::LoraSpec {
        rank: 2,
        alpha: 4.0,
        targets: vec![olc_gpu::model::LinearModule::QProj],
    };
    let a = olc_gpu::train::init_adapter(&spec, &config, 1).unwrap();
    olc_gpu::train::write_adapter(&adapter, &a).unwrap();
    let adapter = adapter.to_str().unwrap();
    let err = run_refused(&publish(adapter, "tiny-lora", &alice, &[]), h);
    assert!(err.contains("--base"), "{err}");
    run_json(
        &publish(adapter, "tiny-lora", &alice, &["--base", "tiny", "--json"]),
        h,
    );

    // Bad names are refused before anything is uploaded.
    let err = run_refused(&publish(&model, "Tiny:Model", &alice, &[]), h);
    assert!(err.contains("lowercase letters"), "{err}");

    let list = run_json(&["model", "list", "--coordinator", &addr, "--json"], h);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["name"], "tiny");
    assert_eq!(list[0]["kind"]["kind"], "base");
    assert_eq!(list[1]["name"], "tiny-lora");
    assert_eq!(list[1]["kind"]["kind"], "adapter");
    assert_eq!(list[1]["kind"]["base"], shown["id"]);
    let alice_key = run_json(&["keys", "show", "--key", &alice, "--json"], h);
    assert_eq!(list[0]["owner"], alice_key["public_key"]);
}

/// `--stream` from a process that dies mid-generation: its connection closes, the
/// coordinator cancels the job, and it settles at the tokens streamed so far.
#[test]
fn a_streaming_submitter_that_dies_cuts_its_generation_and_pays_for_what_it_got() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let net = job_network(h, 1);
    let model = h.join("small");
    run_json(
        &[
            "model",
            "init",
            "--out",
            model.to_str().unwrap(),
            "--preset",
            "small",
            "--json",
        ],
        h,
    );
    let log = h.join("stream.log");
    let mut child = olc()
        .args([
            "job",
            "submit",
            "inference",
            "--coordinator",
            &net.addr,
            "--key",
            &net.key,
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "Tell me a long story",
            "--max-tokens",
            "2000",
            "--max-fee",
            "100000",
            "--stream",
        ])
        .env("HOME", h)
        .env("XDG_DATA_HOME", h.join("data"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The first byte of text is the sign that tokens are flowing: die at once.
    let mut first = [0u8; 1];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let said = std::fs::read_to_string(&log).unwrap();
    let id = said
        .lines()
        .find_map(|l| l.strip_prefix("submitted job "))
        .unwrap()
        .trim()
        .to_string();
    let start = Instant::now();
    let view = loop {
        let v = run_json(
            &[
                "job",
                "status",
                &id,
                "--coordinator",
                &net.addr,
                "--key",
                &net.key,
                "--json",
            ],
            h,
        );
        if v["state"] == "done" || v["state"] == "failed" {
            break v;
        }
        assert!(start.elapsed() < BOUND, "the job did not end: {v}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(view["state"], "done", "{view}");
    let kept = view["output"]["tokens"].as_array().unwrap().len();
    assert!(
        kept > 0 && kept < 2000,
        "cut at what was streamed: {kept} tokens"
    );
    assert!(view["refund"].as_u64().unwrap() > 0, "{view}");
    drop(net);
}
