//! Job benchmarks (issue "Jobs end to end"): submit→result latency of a one-token
//! inference on a 3-worker network (p50, p99), and sustained jobs/s with 8 workers.
//! Everything runs on loopback in this process; the model is the tiny preset, so the
//! numbers measure the job machinery (signing, matching, assignment, fetch from cache,
//! commit, reveal, receipt), not the engine.
//!
//! Then (issue "Serving") streams through the gateway: time to first token and the gaps
//! between streamed chunks, p50 and p99, at 1, 8 and 32 concurrent streams on the
//! smollm2-135m preset, beside the engine's own time to first token for the same prompt
//! on a resident model in the same run (the overhead is the difference).
//!
//! Run: `cargo bench --bench jobs` (`OLC_BENCH_ONLY=jobs` or `=gateway` for one part). Matcher decisions/s: `cargo bench -p olc-coordinator
//! --bench matcher`. Record the output in BENCHMARKS.md.

use std::time::{Duration, Instant};

use olc_client::Submitter;
use olc_coordinator::{Coordinator, CoordinatorConfig};
use olc_gpu::model::{Preset, write_checkpoint};
use olc_net::libp2p::Multiaddr;
use olc_net::{NodeConfig, unix_ms, unix_us};
use olc_protocol::{
    AccountAction, Amount, ContentId, Identity, InferenceJob, JobKind, JobSpec, JobState, Prompt,
    Requirements, Sampling, VerificationPolicy,
};
use olc_worker::{Worker, WorkerConfig};

const LATENCY_RUNS: usize = 100;
const THROUGHPUT_JOBS: usize = 200;

fn node() -> NodeConfig {
    NodeConfig {
        heartbeat: Duration::from_millis(100),
        ..NodeConfig::default()
    }
}

fn tcp() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().expect("static address")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A coordinator (faucet on) and `n` staked workers of `threads` compute threads each.
async fn network(n: usize, dir: &std::path::Path, threads: usize) -> (Coordinator, Vec<Worker>) {
    let cfg = CoordinatorConfig {
        listen: vec![tcp()],
        node: node(),
        // Credits for the submitter and the workers' stake.
        faucet: true,
        ..CoordinatorConfig::default()
    };
    let c = Coordinator::start(&Identity::generate().expect("key"), cfg)
        .await
        .expect("coordinator");
    let addr = c.listen_addrs()[0].clone();
    let mut workers = Vec::new();
    for i in 0..n {
        let mut cfg = WorkerConfig::new(vec![addr.clone()], dir.join(format!("w{i}")));
        cfg.listen = vec![tcp()];
        cfg.node = node();
        cfg.threads = threads;
        cfg.offer.interval_ms = 300;
        cfg.offer.max_concurrent_jobs = 2;
        let id = Identity::generate().expect("key");
        fund(&addr, &id, 10_000, Some(1_000)).await;
        workers.push(Worker::start(&id, cfg).await.expect("worker"));
    }
    while c.workers().len() < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (c, workers)
}

fn job(model: ContentId, i: usize) -> JobSpec {
    JobSpec {
        kind: JobKind::Inference(InferenceJob {
            model,
            adapter: None,
            prompt: Prompt::Tokens(vec![1, 2, 3, (i % 200) as u32 + 4]),
            sampling: Sampling::Greedy,
            max_tokens: 1,
            seed: 0,
        }),
        requirements: Requirements::default(),
        max_fee: Amount(1000),
        verification: VerificationPolicy::Single,
        deadline_ms: unix_ms() + 600_000,
        nonce: unix_us() + i as u64,
    }
}

/// Credits `id` from the coordinator's faucet and bonds `stake` of them.
async fn fund(addr: &Multiaddr, id: &Identity, amount: u64, stake: Option<u64>) {
    let s = Submitter::connect(id, &node(), addr, Duration::from_secs(30))
        .await
        .expect("account");
    s.account(AccountAction::Deposit {
        amount: Amount(amount),
    })
    .await
    .expect("deposit");
    if let Some(stake) = stake {
        s.account(AccountAction::Stake {
            amount: Amount(stake),
        })
        .await
        .expect("stake");
    }
}

/// A submitter on `c` with the model uploaded, after `warm` jobs (one per worker) so
/// every worker has the model cached before anything is timed.
async fn ready_submitter(
    c: &Coordinator,
    model_dir: &std::path::Path,
    warm: usize,
    first_nonce: usize,
) -> (Submitter, ContentId) {
    let addr = c.listen_addrs()[0].clone();
    let me = Identity::generate().expect("key");
    fund(&addr, &me, 100_000_000, None).await;
    let s = Submitter::connect(&me, &node(), &addr, Duration::from_secs(30))
        .await
        .expect("submitter");
    let files = olc_gpu::model::Checkpoint::files(model_dir).expect("model files");
    let model = s.upload_dir(model_dir, &files).await.expect("upload");
    for i in 0..warm {
        let id = s
            .submit(&job(model, first_nonce + i))
            .await
            .expect("submit");
        s.wait(id, |_| {}).await.expect("warm-up");
    }
    (s, model)
}

async fn bench() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model_dir = tmp.path().join("model");
    write_checkpoint(&model_dir, Preset::Tiny, 1).expect("model");

    // Latency: one job at a time, 3 workers (models cached after the first job).
    let (c, workers) = network(3, tmp.path(), 1).await;
    let (s, model) = ready_submitter(&c, &model_dir, 3, 0).await;
    let mut ms = Vec::with_capacity(LATENCY_RUNS);
    for i in 0..LATENCY_RUNS {
        let t = Instant::now();
        let id = s.submit(&job(model, 100 + i)).await.expect("submit");
        let v = s.wait(id, |_| {}).await.expect("wait");
        assert_eq!(v.state, JobState::Done);
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "submit->result, 1-token inference, 3 workers, {LATENCY_RUNS} runs: p50 {:.1} ms, p99 {:.1} ms",
        percentile(&ms, 50.0),
        percentile(&ms, 99.0)
    );
    for w in workers {
        w.stop().await;
    }
    c.stop().await;

    // Throughput: many jobs in flight, 8 workers.
    let dir = tmp.path().join("t");
    let (c, workers) = network(8, &dir, 1).await;
    let (s, model) = ready_submitter(&c, &model_dir, 8, 1000).await;
    let t = Instant::now();
    let mut ids = Vec::with_capacity(THROUGHPUT_JOBS);
    for i in 0..THROUGHPUT_JOBS {
        ids.push(s.submit(&job(model, 2000 + i)).await.expect("submit"));
    }
    for id in ids {
        let v = s.wait(id, |_| {}).await.expect("wait");
        assert_eq!(v.state, JobState::Done);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "sustained: {THROUGHPUT_JOBS} 1-token jobs on 8 workers in {secs:.2} s = {:.1} jobs/s",
        THROUGHPUT_JOBS as f64 / secs
    );
    for w in workers {
        w.stop().await;
    }
    c.stop().await;
}

/// One streamed completion through the gateway at `addr`, by hand over HTTP/1.0 (no
/// chunked framing, so each SSE line arrives whole).
struct Streamed {
    /// Milliseconds from the request to each chunk that carries text.
    arrivals: Vec<f64>,
    /// Tokens generated (the usage chunk's `completion_tokens`).
    tokens: usize,
}

impl Streamed {
    fn first(&self) -> f64 {
        self.arrivals[0]
    }

    /// The mean time per token after the first, over the whole stream.
    fn per_token(&self) -> Option<f64> {
        let last = self.arrivals.last()?;
        (self.tokens > 1).then(|| (last - self.arrivals[0]) / (self.tokens - 1) as f64)
    }
}

async fn stream_once(addr: std::net::SocketAddr, body: &str) -> Streamed {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let started = Instant::now();
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST /v1/completions HTTP/1.0\r\nHost: bench\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.expect("send");
    let mut lines = BufReader::new(conn).lines();
    let mut arrivals = Vec::new();
    let mut tokens = 0;
    let mut said = Vec::new();
    while let Some(line) = lines.next_line().await.expect("read") {
        said.push(line.clone());
        let Some(json) = line.strip_prefix("data: ") else {
            continue;
        };
        let Ok(chunk) = serde_json::from_str::<serde_json::Value>(json) else {
            continue;
        };
        let text = chunk["choices"][0]["text"].as_str().unwrap_or_default();
        if !text.is_empty() {
            arrivals.push(started.elapsed().as_secs_f64() * 1e3);
        }
        if let Some(n) = chunk["usage"]["completion_tokens"].as_u64() {
            tokens = n as usize;
        }
    }
    assert!(!arrivals.is_empty(), "no text came: {}", said.join("\n"));
    Streamed { arrivals, tokens }
}

/// The engine's own time to first token (prefill and one sample) for `prompt`, on a
/// resident model with the worker's threads: the p50 of a few runs.
fn engine_first_token_ms(dir: &std::path::Path, prompt: &str, threads: usize) -> f64 {
    use olc_exec::infer::{EngineChoice, GenerateRequest, generate_served};
    use olc_exec::serve::schedule::ScheduleLimits;
    let choice = EngineChoice::detect(threads);
    let model = olc_exec::LoadedModel::load(dir, &choice, usize::MAX).expect("model");
    let resident = olc_exec::Resident::start(model, ScheduleLimits::default()).expect("batcher");
    let prompt = Prompt::Text(prompt.into());
    let request = GenerateRequest {
        model_dir: dir,
        adapter_dir: None,
        prompt: &prompt,
        sampling: Sampling::Greedy,
        seed: 0,
        max_tokens: 1,
    };
    let mut ms: Vec<f64> = (0..11)
        .map(|_| {
            let t = Instant::now();
            generate_served(&resident, &request, None, &|| None, &mut ()).expect("generate");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    percentile(&ms, 50.0)
}

async fn bench_gateway() {
    const THREADS: usize = 2;
    const PROMPT: &str = "The quick brown fox jumps over the lazy dog while the cat watches";
    let tmp = tempfile::tempdir().expect("tempdir");
    let model_dir = tmp.path().join("model");
    write_checkpoint(&model_dir, Preset::Smollm2_135m, 1).expect("model");
    let engine_ms = engine_first_token_ms(&model_dir, PROMPT, THREADS);

    let (c, mut workers) = network(1, tmp.path(), THREADS).await;
    let addr = c.listen_addrs()[0].clone();
    let me = Identity::generate().expect("key");
    fund(&addr, &me, 1_000_000_000, None).await;
    let s = Submitter::connect(&me, &node(), &addr, Duration::from_secs(60))
        .await
        .expect("submitter");
    let files = olc_gpu::model::Checkpoint::files(&model_dir).expect("model files");
    let model = s.upload_dir(&model_dir, &files).await.expect("upload");
    s.publish("smol", model, olc_protocol::CatalogKind::Base)
        .await
        .expect("publish");
    let network = std::sync::Arc::new(olc_gateway::OlcNetwork::new(
        s,
        olc_gateway::OlcOptions {
            verification: VerificationPolicy::Single,
            ..olc_gateway::OlcOptions::default()
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let http = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(olc_gateway::serve(
        listener,
        network,
        olc_gateway::GatewayConfig::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let body = format!(
        r#"{{"model":"smol","prompt":"{PROMPT}","max_tokens":32,"temperature":0,"stream":true,"stream_options":{{"include_usage":true}}}}"#
    );
    // Warm-up: the worker fetches and loads the model once.
    stream_once(http, &body).await;
    println!(
        "engine alone, resident, {THREADS} threads: first token of the prompt p50 {engine_ms:.1} ms"
    );
    for streams in [1usize, 8, 32] {
        let rounds = if streams == 1 { 15 } else { 2 };
        let mut first = Vec::new();
        let mut per_token = Vec::new();
        let mut gaps = Vec::new();
        for _ in 0..rounds {
            let runs = (0..streams).map(|_| stream_once(http, &body));
            for s in futures::future::join_all(runs).await {
                first.push(s.first());
                per_token.extend(s.per_token());
                gaps.extend(s.arrivals.windows(2).map(|w| w[1] - w[0]));
            }
        }
        for v in [&mut first, &mut per_token, &mut gaps] {
            v.sort_by(f64::total_cmp);
        }
        println!(
            "gateway, {streams} concurrent streams: time to first token p50 {:.1} ms, p99 {:.1} ms \
             (p50 beyond the engine's {:.1} ms); per token after the first p50 {:.1} ms, \
             p99 {:.1} ms; gaps between text chunks p50 {:.1} ms, p99 {:.1} ms",
            percentile(&first, 50.0),
            percentile(&first, 99.0),
            percentile(&first, 50.0) - engine_ms,
            percentile(&per_token, 50.0),
            percentile(&per_token, 99.0),
            percentile(&gaps, 50.0),
            percentile(&gaps, 99.0),
        );
    }
    let _ = stop.send(());
    let _ = server.await;
    for w in workers.drain(..) {
        w.stop().await;
    }
    c.stop().await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let only = std::env::var("OLC_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "jobs" {
        rt.block_on(bench());
    }
    if only.is_empty() || only == "gateway" {
        rt.block_on(bench_gateway());
    }
}
