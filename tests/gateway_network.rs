//! `olc gateway` on a real network: an in-process coordinator (faucet on) and one worker,
//! a tiny model published with a chat template, and the gateway binary as a child process,
//! driven by curl and the official `openai` Python client. The answers must be exactly
//! what `olc run infer` computes for the same prompt tokens on this machine.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod common;

use common::{STAKE, free_port, fund, node};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use olc_client::Submitter;
use olc_coordinator::{Coordinator, CoordinatorConfig};
use olc_gpu::model::{Checkpoint, Preset, write_checkpoint};
use olc_net::libp2p::Multiaddr;
use olc_protocol::{CatalogKind, Identity};
use olc_worker::{Worker, WorkerConfig};
use serde_json::Value;

/// Generous: CI machines have two cores and run other tests alongside.
const BOUND: Duration = Duration::from_secs(60);

/// A chat template in the Hugging Face style, over the tiny tokenizer's special tokens.
const TEMPLATE: &str = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

const PROMPT: &str = "The sky is";

async fn submitter(addr: &Multiaddr, id: &Identity) -> Submitter {
    Submitter::connect(id, &node(), addr, BOUND).await.unwrap()
}

/// A gateway process; killed if the test fails half-way.
struct Gateway {
    child: Child,
    /// `http://127.0.0.1:PORT/v1`.
    base: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `olc gateway` with `key` (created if missing) and waits for its URL.
fn gateway(coordinator: &Multiaddr, key: &Path) -> Gateway {
    let mut child = Command::new(env!("CARGO_BIN_EXE_olc"))
        .args([
            "gateway",
            "--coordinator",
            &coordinator.to_string(),
            "--key",
            key.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--max-fee",
            "100000",
            "--verify",
            "single",
        ])
        .env_remove("RUST_LOG")
        .env_remove("OLC_KEY")
        .env_remove("OLC_COORDINATOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
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
    let mut gateway = Gateway {
        child,
        base: String::new(),
    };
    let deadline = Instant::now() + BOUND;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the gateway printed no `listening on` line"));
        if let Some(url) = line.strip_prefix("listening on ") {
            gateway.base = url.trim().to_owned();
            return gateway;
        }
    }
}

/// curl's body and HTTP status.
async fn curl(args: Vec<String>) -> (Value, u16) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "--max-time", "50", "-w", "\n%{http_code}"])
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (body, status.trim().parse().unwrap())
}

async fn post(base: &str, path: &str, body: Value) -> (Value, u16) {
    curl(vec![
        format!("{base}{path}"),
        "-H".into(),
        "Content-Type: application/json".into(),
        "-d".into(),
        body.to_string(),
    ])
    .await
}

/// `olc run infer … --json` on this machine.
async fn run_infer(model: &Path, input: &[&str], max_tokens: u32) -> Value {
    let mut args: Vec<String> = vec![
        "run".into(),
        "infer".into(),
        "--model".into(),
        model.to_str().unwrap().into(),
        "--max-tokens".into(),
        max_tokens.to_string(),
        "--threads".into(),
        "1".into(),
        "--json".into(),
    ];
    args.extend(input.iter().map(|s| s.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        common::olc(&refs)
    })
    .await
    .unwrap();
    common::json(&out)
}

/// The official client: a chat completion whole, then the same one streamed.
const OPENAI_CHAT: &str = r#"
import json, sys
try:
    import openai
except ImportError:
    sys.exit(3)
client = openai.OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=0)
messages = [{"role": "user", "content": "Hi!"}]
whole = client.chat.completions.create(
    model="tiny", messages=messages, max_tokens=8, temperature=0)
stream = client.chat.completions.create(
    model="tiny", messages=messages, max_tokens=8, temperature=0, stream=True,
    stream_options={"include_usage": True})
chunks = list(stream)
print(json.dumps({
    "whole": whole.choices[0].message.content,
    "whole_tokens": whole.usage.completion_tokens,
    "prompt_tokens": whole.usage.prompt_tokens,
    "streamed": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
    "streamed_tokens": chunks[-1].usage.completion_tokens,
    "finish": [c.choices[0].finish_reason for c in chunks if c.choices][-1],
}))
"#;

/// The tiny model, with a chat template added to its tokenizer_config.json.
fn chat_model(dir: &Path) -> PathBuf {
    let model = dir.join("model");
    write_checkpoint(&model, Preset::Tiny, 5).unwrap();
    let path = model.join("tokenizer_config.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["chat_template"] = TEMPLATE.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    model
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_a_real_network() {
    let dir = tempfile::tempdir().unwrap();
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", free_port())
        .parse()
        .unwrap();
    let coordinator = Coordinator::start(
        &Identity::generate().unwrap(),
        CoordinatorConfig {
            listen: vec![addr.clone()],
            node: node(),
            faucet: true,
            ..CoordinatorConfig::default()
        },
    )
    .await
    .unwrap();

    let worker_id = Identity::generate().unwrap();
    fund(&addr, &worker_id, 2 * STAKE, true).await;
    let mut cfg = WorkerConfig::new(vec![addr.clone()], dir.path().join("worker"));
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    cfg.node = node();
    cfg.threads = 1;
    cfg.offer.interval_ms = 300;
    let worker = Worker::start(&worker_id, cfg).await.unwrap();

    // The model, published with its template (tokenizer_config.json travels with it).
    let model = chat_model(dir.path());
    let publisher = Identity::generate().unwrap();
    let p = submitter(&addr, &publisher).await;
    let files = Checkpoint::files(&model).unwrap();
    assert!(files.iter().any(|f| f == "tokenizer_config.json"));
    let content = p.upload_dir(&model, &files).await.unwrap();
    p.publish("tiny", content, CatalogKind::Base).await.unwrap();
    p.close().await;

    let start = Instant::now();
    while coordinator.workers().is_empty() {
        assert!(start.elapsed() < BOUND, "the worker did not register");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // The gateway's key, funded; the reference answer from this machine.
    let gateway_id = Identity::generate().unwrap();
    let key = dir.path().join("gateway.pem");
    olc_content::keyfile::save(&gateway_id, &key, false).unwrap();
    fund(&addr, &gateway_id, 1_000_000_000, false).await;
    let funded = gateway(&addr, &key);
    let base = funded.base.clone();
    let prompt_ids: Vec<u64> = run_infer(&model, &["--prompt", PROMPT], 1).await["prompt_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    let ids: Vec<String> = prompt_ids.iter().map(u64::to_string).collect();
    let expected = run_infer(&model, &["--tokens", &ids.join(",")], 8).await;

    // The catalog.
    let (models, status) = curl(vec![format!("{base}/models")]).await;
    assert_eq!(status, 200, "{models}");
    let listed: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["tiny"], "{models}");
    assert_eq!(
        models["data"][0]["owned_by"],
        publisher.public_key().to_string()
    );

    // A completion: exactly the local run's text, with its job, worker and commitment.
    let (done, status) = post(
        &base,
        "/completions",
        serde_json::json!({"model": "tiny", "prompt": PROMPT, "max_tokens": 8, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["choices"][0]["text"], expected["text"], "{done}");
    let generated = expected["tokens"].as_array().unwrap().len() as u64;
    let finish = if generated == 8 { "length" } else { "stop" };
    assert_eq!(done["choices"][0]["finish_reason"], finish, "{done}");
    assert_eq!(done["usage"]["prompt_tokens"], prompt_ids.len() as u64);
    assert_eq!(done["usage"]["completion_tokens"], generated);
    assert_eq!(done["olc"]["commitment"], expected["commitment"], "{done}");
    assert_eq!(
        done["olc"]["workers"],
        serde_json::json!([worker_id.public_key().to_string()])
    );
    let job_id = done["olc"]["job_id"].as_str().unwrap();
    assert_eq!(done["id"], format!("cmpl-{job_id}"));
    assert_eq!(job_id.len(), 64, "{done}");

    // A stop string ends the answer before it (the gateway trims, and cancels the job).
    let text = expected["text"].as_str().unwrap();
    if let Some(last) = text.chars().last() {
        let stop = last.to_string();
        let (stopped, status) = post(
            &base,
            "/completions",
            serde_json::json!({"model": "tiny", "prompt": PROMPT, "max_tokens": 8,
                               "temperature": 0, "stop": [stop]}),
        )
        .await;
        assert_eq!(status, 200, "{stopped}");
        assert_eq!(
            stopped["choices"][0]["text"],
            text[..text.find(&stop).unwrap()],
            "{stopped}"
        );
        assert_eq!(stopped["choices"][0]["finish_reason"], "stop", "{stopped}");
    }

    // A chat completion through the official client, whole and streamed: the template
    // rendered here, the stream the same answer.
    let script_base = base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", OPENAI_CHAT, &script_base])
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| {
        panic!("python3 could not be run ({e}): install it, then `pip install openai`")
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(3),
        "the `openai` Python package is missing: pip install openai"
    );
    assert!(out.status.success(), "the openai client failed:\n{stderr}");
    let chat: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(chat["streamed"], chat["whole"], "{chat}");
    assert_eq!(chat["streamed_tokens"], chat["whole_tokens"], "{chat}");
    let rendered = "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n";
    let expected_chat = run_infer(&model, &["--prompt", rendered], 8).await;
    assert_eq!(chat["whole"], expected_chat["text"], "{chat}");
    assert_eq!(
        chat["prompt_tokens"],
        expected_chat["prompt_tokens"].as_array().unwrap().len() as u64
    );

    // Errors, in OpenAI's shape.
    let (unknown, status) = post(
        &base,
        "/completions",
        serde_json::json!({"model": "no-such-model", "prompt": PROMPT}),
    )
    .await;
    assert_eq!(status, 404, "{unknown}");
    assert_eq!(unknown["error"]["code"], "model_not_found", "{unknown}");
    assert_eq!(unknown["error"]["param"], "model", "{unknown}");
    let (long, status) = post(
        &base,
        "/completions",
        serde_json::json!({"model": "tiny", "prompt": "€ü☃".repeat(300), "max_tokens": 1}),
    )
    .await;
    assert_eq!(status, 400, "{long}");
    assert_eq!(long["error"]["param"], "prompt", "{long}");
    assert!(
        long["error"]["message"]
            .as_str()
            .unwrap()
            .contains("context is 512"),
        "{long}"
    );

    // A gateway whose (new) key holds nothing is refused every request: 402.
    let broke = gateway(&addr, &dir.path().join("broke.pem"));
    let (refused, status) = post(
        &broke.base,
        "/completions",
        serde_json::json!({"model": "tiny", "prompt": PROMPT, "max_tokens": 8}),
    )
    .await;
    assert_eq!(status, 402, "{refused}");
    assert_eq!(refused["error"]["code"], "insufficient_quota", "{refused}");

    drop(broke);

    // With no worker left, a request is answered 503 with the matcher's reason (and its
    // job cancelled) instead of waiting for the deadline.
    worker.stop().await;
    let start = Instant::now();
    while !coordinator.workers().is_empty() {
        assert!(
            start.elapsed() < BOUND,
            "the stopped worker stayed registered"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let asked = Instant::now();
    let (none, status) = post(
        &base,
        "/completions",
        serde_json::json!({"model": "tiny", "prompt": PROMPT, "max_tokens": 8}),
    )
    .await;
    assert_eq!(status, 503, "{none}");
    assert_eq!(none["error"]["code"], "no_worker", "{none}");
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "{:?}",
        asked.elapsed()
    );

    // SIGTERM (as Ctrl-C) stops it cleanly.
    let mut funded = funded;
    let pid = funded.child.id() as libc::pid_t;
    // SAFETY: signals a child process this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = funded.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < BOUND,
            "the gateway did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(status.success(), "{status}");
    coordinator.stop().await;
}
