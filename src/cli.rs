//! The command line. Every group users will have is listed here; groups that a later
//! release fills in say so when run (see `commands::pending`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use olc_net::libp2p::Multiaddr;

#[derive(Debug, Parser)]
#[command(
    name = "olc",
    version,
    about = "Open Ledger Compute: a verifiable GPU compute network that pays for data",
    long_about = "Open Ledger Compute: a peer-to-peer network of GPU workers.\n\n\
        GPU owners run `olc worker start`; job submitters use `olc job`; coordinators run \
        `olc coordinator start`. `olc devnet` runs a whole network on this machine."
)]
pub struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors in the log.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and show the ed25519 key that identifies you on the network.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run a worker daemon that sells this machine's compute.
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Run a coordinator: keeps the registry of live workers, matches jobs to them,
    /// verifies their answers, slashes cheaters, settles fees and signs receipts.
    #[command(subcommand)]
    Coordinator(CoordinatorCommand),
    /// Your account at a coordinator: balance, deposit (devnet faucet), stake, unstake.
    #[command(subcommand)]
    Account(AccountCommand),
    /// List the workers a running coordinator knows.
    Workers(WorkersArgs),
    /// Submit jobs to a coordinator and follow them.
    #[command(subcommand)]
    Job(JobCommand),
    /// Run inference or fine-tuning locally, without a network.
    #[command(subcommand)]
    Run(RunCommand),
    /// Create and inspect model checkpoints (Hugging Face format).
    #[command(subcommand)]
    Model(ModelCommand),
    /// Show and verify signed receipts.
    #[command(subcommand)]
    Receipt(ReceiptCommand),
    /// Run a whole network (coordinator + workers) on this machine: fine-tune, then infer.
    Devnet(DevnetArgs),
    /// Serve an OpenAI-compatible HTTP API (/v1/models, /v1/completions,
    /// /v1/chat/completions) whose requests run as signed jobs on the network, paid from
    /// this key's account.
    Gateway(GatewayArgs),
}

impl Command {
    /// The long-running daemons, which must not die with the reader of their output.
    pub fn is_daemon(&self) -> bool {
        matches!(
            self,
            Command::Worker(WorkerCommand::Start(_))
                | Command::Coordinator(CoordinatorCommand::Start(_))
                | Command::Gateway(_)
        )
    }
}

/// How to reach a coordinator: every command that asks one takes these, the same way.
#[derive(Debug, Clone, Args)]
pub struct CoordinatorAddr {
    /// The coordinator, e.g. /ip4/1.2.3.4/udp/7000/quic-v1.
    #[arg(long, value_name = "MULTIADDR", env = "OLC_COORDINATOR")]
    pub coordinator: Multiaddr,
    /// How long to wait for the coordinator to answer (1s to 1h).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::limits::parse_timeout)]
    pub timeout: Duration,
}

/// How to reach a coordinator and who is asking.
#[derive(Debug, Clone, Args)]
pub struct CoordinatorArgs {
    #[command(flatten)]
    pub at: CoordinatorAddr,
    /// Your key file [default: ~/.local/share/olc/key.pem; create one with `olc keys new`]
    #[arg(long, value_name = "FILE", env = "OLC_KEY")]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Submit a job.
    #[command(subcommand)]
    Submit(Box<SubmitCommand>),
    /// Show one job's state, workers and progress.
    Status(JobIdArgs),
    /// List jobs (yours with --mine).
    List(JobList),
    /// Show a finished job's output; with --out, download it (a fine-tune's adapter).
    Result(JobResult),
}

#[derive(Debug, Subcommand)]
pub enum SubmitCommand {
    /// Generate from a model, optionally with a LoRA adapter.
    Inference(SubmitInference),
    /// Fine-tune a LoRA adapter on a JSONL dataset.
    Finetune(SubmitFinetune),
}

/// What every submission shares.
#[derive(Debug, Clone, Args)]
pub struct SubmitCommon {
    #[command(flatten)]
    pub coordinator: CoordinatorArgs,
    /// How the answer is checked: single (one trusted worker), replicate:K (K distinct
    /// workers must agree; a referee settles disputes), sample:P (one worker, re-run by
    /// the referee with probability P), or default (the coordinator's choice).
    #[arg(long, value_name = "POLICY", default_value = "default")]
    pub verify: olc_protocol::VerificationPolicy,
    /// The most you pay, in credits.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_fee: u64,
    /// Give up if the job is not done within this long (1s to 30days).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = crate::limits::parse_deadline)]
    pub deadline: Duration,
    /// Memory the job needs on the worker, in bytes; a run that grows past it is stopped.
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub min_memory: u64,
    /// Follow the job to its end, showing progress on stderr, and print the result.
    #[arg(long)]
    pub wait: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SubmitInference {
    #[command(flatten)]
    pub generate: GenerateArgs,
    /// Print the text on stdout as it is generated (implies --wait). Ctrl-C, or this
    /// process ending, cancels the generation: the tokens already streamed settle as the
    /// job's output and the rest of the escrow is refunded.
    #[arg(long)]
    pub stream: bool,
    #[command(flatten)]
    pub common: SubmitCommon,
}

/// What to generate from, and how: shared by `olc run infer` and `olc job submit
/// inference`, so a job and a local run with the same flags compute the same thing.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "tokens"])))]
pub struct GenerateArgs {
    /// The model: a checkpoint directory (config.json, model.safetensors, tokenizer.json)
    /// or a GGUF file.
    #[arg(long, value_name = "MODEL")]
    pub model: PathBuf,
    /// PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors).
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// Prompt text, tokenized with the model's tokenizer.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Prompt as token ids, e.g. 1,2,3.
    #[arg(long, value_delimiter = ',')]
    pub tokens: Option<Vec<u32>>,
    /// Most tokens to generate (1 to 65536); generation also stops at the end-of-sequence
    /// token.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub max_tokens: u32,
    /// Sample at this temperature, in (0, 100] [default when sampling: 1]. Below 0.001
    /// (olc_gpu::engine::GREEDY_TEMPERATURE_THRESHOLD) a token is chosen exactly as greedy
    /// decoding chooses it. Without any sampling flag, decoding is greedy.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Keep only the K most likely tokens [default when sampling: all].
    #[arg(long)]
    pub top_k: Option<u32>,
    /// Keep the smallest set of tokens with this much probability [default when sampling: 1].
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Seed of the sampling stream: the same seed gives the same tokens on every worker
    /// [default when sampling: 0].
    #[arg(long)]
    pub seed: Option<u64>,
}

impl GenerateArgs {
    /// The job form of the sampling flags; a local run checks it against the same limits
    /// a job's are (`olc_protocol::check_generation`).
    pub fn job_sampling(&self) -> olc_protocol::Sampling {
        match self.sampling() {
            Some((temperature, top_k, top_p, _)) => olc_protocol::Sampling::Sample {
                temperature,
                top_k,
                top_p,
            },
            None => olc_protocol::Sampling::Greedy,
        }
    }

    /// `(temperature, top_k, top_p, seed)` when any sampling flag is given; greedy if not.
    pub fn sampling(&self) -> Option<(f32, u32, f32, u64)> {
        let any = self.temperature.is_some()
            || self.top_k.is_some()
            || self.top_p.is_some()
            || self.seed.is_some();
        any.then(|| {
            (
                self.temperature.unwrap_or(1.0),
                self.top_k.unwrap_or(0),
                self.top_p.unwrap_or(1.0),
                self.seed.unwrap_or(0),
            )
        })
    }
}

#[derive(Debug, Args)]
pub struct SubmitFinetune {
    /// The model: a checkpoint directory (config.json, model.safetensors, tokenizer.json)
    /// or a GGUF file.
    #[arg(long, value_name = "MODEL")]
    pub model: PathBuf,
    /// JSONL dataset: one {"prompt","completion"} or {"text"} record a line, with optional
    /// "id" and "contributor" (an olc public key). Checked here before it is uploaded.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Publish the trained adapter in the coordinator's catalog under this name when the
    /// job settles (yours, with --model as its base; see `olc model list`).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub training: TrainingArgs,
    #[command(flatten)]
    pub common: SubmitCommon,
}

#[derive(Debug, Args)]
pub struct JobIdArgs {
    /// The job id printed at submission, or a unique prefix of it (at least 6 hex digits).
    pub id: String,
    #[command(flatten)]
    pub coordinator: CoordinatorArgs,
    /// Print JSON instead of text, for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JobList {
    /// Only jobs you submitted.
    #[arg(long)]
    pub mine: bool,
    #[command(flatten)]
    pub coordinator: CoordinatorArgs,
    /// Print JSON instead of text, for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JobResult {
    /// The job id, or a unique prefix of it (at least 6 hex digits).
    pub id: String,
    /// Write the output here: the adapter files of a fine-tune (and receipt.bin).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Write into a --out directory that already holds files.
    #[arg(long)]
    pub force: bool,
    /// Follow the job until it is done or failed, then show (and download) the result.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub coordinator: CoordinatorArgs,
    /// Print JSON instead of text, for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ReceiptCommand {
    /// Fetch a job's signed receipt from the coordinator and show it.
    Show(ReceiptShow),
    /// Check every signature in a receipt file, offline.
    Verify(ReceiptVerify),
}

#[derive(Debug, Args)]
pub struct ReceiptShow {
    /// The job id, or a unique prefix of it (at least 6 hex digits).
    pub id: String,
    /// Also save the receipt (binary, as signed) to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub coordinator: CoordinatorArgs,
    /// Print JSON instead of text, for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReceiptVerify {
    /// A receipt file written by `olc receipt show --out` or `olc job result --out`.
    pub file: PathBuf,
    /// Print JSON instead of text, for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DevnetArgs {
    /// Workers to start.
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// How many of the workers cheat (alternately: wrong outputs, and skipped work), so
    /// you can watch them get caught and slashed.
    #[arg(long, default_value_t = 0)]
    pub cheaters: usize,
    /// Run the network on this model (a GGUF file, such as the real SmolLM2-135M-Instruct
    /// that deploy/fetch-smollm2.sh fetches, or a checkpoint directory) instead of a tiny
    /// random one: prompts go through its chat template, and the fine-tune teaches it
    /// answers it would not give.
    #[arg(long, value_name = "MODEL")]
    pub model: Option<std::path::PathBuf>,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// The coordinator whose network runs the requests, e.g. /ip4/1.2.3.4/udp/7000/quic-v1.
    #[arg(long, value_name = "MULTIADDR", env = "OLC_COORDINATOR")]
    pub coordinator: Option<Multiaddr>,
    /// The key that signs every job and whose account pays for it; created if missing
    /// [default: ~/.local/share/olc/key.pem]
    #[arg(long, value_name = "FILE", env = "OLC_KEY")]
    pub key: Option<PathBuf>,
    /// Address the HTTP API listens on [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// File of API keys callers must give (`Authorization: Bearer KEY`), one a line
    /// [default: any caller is served]
    #[arg(long, value_name = "FILE")]
    pub api_keys: Option<PathBuf>,
    /// The most one request may cost, in credits (escrowed, the rest refunded)
    /// [default: 1000000]
    #[arg(long, value_name = "N")]
    pub max_fee: Option<u64>,
    /// How each answer is checked: single, replicate:K, sample:P, or default (the
    /// coordinator's choice) [default: default]
    #[arg(long, value_name = "POLICY")]
    pub verify: Option<olc_protocol::VerificationPolicy>,
    /// A request's job is given up if not done within this long (1s to 30days)
    /// [default: 10m]
    #[arg(long, value_name = "DURATION", value_parser = crate::limits::parse_deadline)]
    pub deadline: Option<Duration>,
    /// How long to wait for the coordinator to answer (1s to 1h) [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = crate::limits::parse_timeout)]
    pub timeout: Option<Duration>,
    /// TOML file with any of these settings; flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Show an account's balance, stake and standing.
    Balance(AccountBalance),
    /// Mint credits into your account (only coordinators started with --faucet).
    Deposit(AccountAmount),
    /// Bond credits as stake: workers need the coordinator's minimum to be matched.
    Stake(AccountAmount),
    /// Start unbonding stake; it returns to your balance after the unbonding period.
    Unstake(AccountAmount),
}

#[derive(Debug, Args)]
pub struct AccountBalance {
    /// Whose account [default: your key's]: a public key in hex, or its peer id.
    #[arg(long, value_name = "PUBLIC_KEY", value_parser = parse_public_key)]
    pub of: Option<olc_protocol::PublicKey>,
    #[command(flatten)]
    pub coordinator: CoordinatorArgs,
    /// Print JSON instead of text, for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AccountAmount {
    /// Credits.
    pub amount: u64,
    #[command(flatten)]
    pub coordinator: CoordinatorArgs,
    /// Print JSON instead of text, for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a new key (refuses to overwrite an existing one without --force).
    New(KeysNew),
    /// Show a key's public key and peer id.
    Show(KeysShow),
}

#[derive(Debug, Args)]
pub struct KeysNew {
    /// Where to write the key [default: the platform data dir, e.g. ~/.local/share/olc/key.pem]
    #[arg(long, value_name = "FILE", env = "OLC_KEY")]
    pub out: Option<PathBuf>,
    /// Replace an existing key file. The old key is lost, with any stake it holds.
    #[arg(long)]
    pub force: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct KeysShow {
    /// The key file [default: the platform data dir, e.g. ~/.local/share/olc/key.pem]
    #[arg(long, value_name = "FILE", env = "OLC_KEY")]
    pub key: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// Start the worker daemon: probe the hardware, join a coordinator, advertise.
    Start(WorkerStart),
}

#[derive(Debug, Args)]
pub struct WorkerStart {
    /// Coordinator to join, e.g. /ip4/1.2.3.4/udp/7000/quic-v1 (repeatable). A QUIC
    /// address falls back to TCP on the same port.
    #[arg(long, value_name = "MULTIADDR")]
    pub coordinator: Vec<Multiaddr>,
    /// Address to listen on (repeatable) [default: QUIC and TCP on a random port]
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<Multiaddr>,
    /// Price in credits per 1000 tokens of work [default: 10]
    #[arg(long, value_name = "N")]
    pub price: Option<u64>,
    /// How often to re-advertise, e.g. 10s or 500ms [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub advert_interval: Option<Duration>,
    /// Fine-tune jobs this worker runs at once [default: 1]
    #[arg(long, value_name = "N")]
    pub max_jobs: Option<u32>,
    /// Inference jobs this worker generates at once, batched together on its resident
    /// models; they do not take fine-tune slots [default: 32]
    #[arg(long, value_name = "N")]
    pub max_streams: Option<u32>,
    /// Compute threads per job, 1 to 1024 [default: all cores]. Never changes a result.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Size of the model/adapter/dataset cache in GiB [default: 50]
    #[arg(long, value_name = "GIB")]
    pub cache_gib: Option<u64>,
    /// Memory for models kept loaded between inference jobs, in GiB; 0 loads the model
    /// for every job [default: 8]
    #[arg(long, value_name = "GIB")]
    pub model_cache_gib: Option<u64>,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Debug, Subcommand)]
pub enum CoordinatorCommand {
    /// Start the coordinator: listen, keep the registry of live workers from gossip.
    Start(CoordinatorStart),
    /// Show a running coordinator's ledger: every account, the treasury, the totals.
    Ledger(CoordinatorLedger),
    /// Check a stopped coordinator's stored state: the ledger's invariant, and that every
    /// job's escrow, payouts and receipt agree. Exits non-zero if anything is wrong.
    Audit(CoordinatorAudit),
}

#[derive(Debug, Args)]
pub struct CoordinatorLedger {
    #[command(flatten)]
    pub at: CoordinatorAddr,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CoordinatorAudit {
    /// The coordinator's data directory [default: ~/.local/share/olc/coordinator]. The
    /// coordinator must be stopped (its store is locked while it runs; `olc coordinator
    /// ledger` checks the invariant live).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Print JSON instead of text, for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CoordinatorStart {
    /// Address to listen on (repeatable) [default: /ip4/0.0.0.0/udp/7000/quic-v1 and
    /// /ip4/0.0.0.0/tcp/7000]
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<Multiaddr>,
    /// Adverts whose timestamp is further than this from our clock are refused [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_clock_skew: Option<Duration>,
    /// Mint credits for anyone who asks (`olc account deposit`). Devnets only.
    #[arg(long)]
    pub faucet: bool,
    /// Stake a worker needs to be matched [default: 100]
    #[arg(long, value_name = "CREDITS")]
    pub min_stake: Option<u64>,
    /// Policy of jobs that leave it to the coordinator [default: sample:0.1]
    #[arg(long, value_name = "POLICY")]
    pub default_verify: Option<olc_protocol::VerificationPolicy>,
    /// Threads the referee re-runs disputed jobs with; 0 runs no referee, and disputes
    /// then fail the job with a full refund [default: 1]
    #[arg(long, value_name = "N")]
    pub referee_threads: Option<usize>,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Debug, Args)]
pub struct WorkersArgs {
    #[command(flatten)]
    pub at: CoordinatorAddr,
    /// Print a JSON array, one object per worker.
    #[arg(long)]
    pub json: bool,
}

/// Settings both daemons take.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Data directory (cache, key) [default: ~/.local/share/olc/worker or …/coordinator]
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Key file; created if missing [default: DATA/key.pem]
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Also find peers on the local network by mDNS.
    #[arg(long)]
    pub mdns: bool,
    /// TOML file with any of these settings; flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Write a random-initialised checkpoint in the Hugging Face format (config.json,
    /// model.safetensors, tokenizer.json). Same preset and seed, same bytes.
    Init(ModelInit),
    /// Load a model (a checkpoint directory or a GGUF file) and summarise it: shapes,
    /// tensor types, tokenizer and chat template (checks every tensor's name, shape, type).
    Show(ModelShow),
    /// Write a GGUF file's model as a Hugging Face directory: config.json, tokenizer.json,
    /// tokenizer_config.json (with the chat template) and model.safetensors, its
    /// quantized matrices kept as their blocks (U8 tensors that only OLC reads), or with
    /// --f32 every weight widened exactly to f32 (the values OLC computes with), loadable
    /// by `transformers` too. OLC computes the same bits from all three forms.
    Import(ModelImport),
    /// Upload a model (or, with --base, an adapter) and name it in the coordinator's
    /// catalog. A name is its first publisher's; only that key may move it.
    Publish(ModelPublish),
    /// The coordinator's catalog: every name, what it points at, and who owns it.
    List(ModelList),
}

#[derive(Debug, Args)]
pub struct ModelPublish {
    /// The model (a checkpoint directory or a GGUF file) or the adapter directory.
    #[arg(value_name = "MODEL")]
    pub dir: PathBuf,
    /// The name: lowercase letters, digits, '.', '_' and '-', up to 64.
    #[arg(long)]
    pub name: String,
    /// Publish DIR as an adapter of this base model: a catalog name or a content id.
    #[arg(long, value_name = "NAME_OR_ID")]
    pub base: Option<String>,
    #[command(flatten)]
    pub coordinator: CoordinatorArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ModelList {
    #[command(flatten)]
    pub at: CoordinatorAddr,
    /// Print JSON instead of text, for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ModelInit {
    /// Directory to write.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// tiny (a few hundred KB, for tests), small, or smollm2-135m (that model's exact shapes).
    #[arg(long, default_value = "tiny")]
    pub preset: olc_gpu::model::Preset,
    /// Seed of the random weights: the same preset and seed give the same bytes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Overwrite a directory that already holds a checkpoint.
    #[arg(long)]
    pub force: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ModelImport {
    /// The GGUF file.
    pub file: PathBuf,
    /// Directory to write.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Widen every weight to f32, for `transformers` (safetensors has no dtype for GGUF's
    /// blocks, so without it they are stored as bytes that only OLC reads).
    #[arg(long)]
    pub f32: bool,
    /// Overwrite a directory that already holds a checkpoint.
    #[arg(long)]
    pub force: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ModelShow {
    /// The checkpoint directory or GGUF file.
    #[arg(value_name = "MODEL")]
    pub dir: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Generate from a model (and optionally a LoRA adapter) on this machine.
    Infer(RunInfer),
    /// Fine-tune a LoRA adapter on a JSONL dataset, on this machine.
    Finetune(RunFinetune),
}

#[derive(Debug, Args)]
pub struct RunFinetune {
    /// The model: a checkpoint directory (config.json, model.safetensors, tokenizer.json)
    /// or a GGUF file.
    #[arg(long, value_name = "MODEL")]
    pub model: PathBuf,
    /// JSONL dataset: one {"prompt","completion"} or {"text"} record a line, with optional
    /// "id" and "contributor" (an olc public key).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Where to write adapter_config.json, adapter_model.safetensors and provenance.json.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace an adapter already in --out.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub training: TrainingArgs,
    /// Compute threads, 1 to 1024 [default: all cores]. Never changes the adapter.
    #[arg(long, value_name = "N", value_parser = crate::limits::parse_threads)]
    pub threads: Option<usize>,
    /// SIMD path: auto, portable, avx2 or avx512. Never changes the adapter.
    #[arg(long, default_value = "auto")]
    pub isa: String,
    /// Print one JSON object instead of text (no progress bar).
    #[arg(long)]
    pub json: bool,
}

/// The hyperparameters of a fine-tune; together with the model, the data and the initial
/// adapter they fix the adapter bit for bit.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("length").required(true).args(["steps", "epochs"])))]
pub struct TrainingArgs {
    /// LoRA rank of a new adapter.
    #[arg(long)]
    pub rank: Option<usize>,
    /// LoRA alpha of a new adapter (the update is scaled by alpha / rank) [default: 2 × rank].
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Projections to adapt: any of q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
    /// [default: q_proj,v_proj].
    #[arg(long, value_delimiter = ',')]
    pub targets: Option<Vec<String>>,
    /// Learning rate (constant after warmup).
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    /// Examples per micro-batch.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Train for this many optimizer steps.
    #[arg(long)]
    pub steps: Option<u32>,
    /// Train for this many passes over the data.
    #[arg(long)]
    pub epochs: Option<u32>,
    /// Linear warmup over this many steps (transformers' constant-with-warmup schedule).
    #[arg(long, default_value_t = 0)]
    pub warmup: u32,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Fixes the data order and a new adapter's initial A.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue training this PEFT adapter instead of starting a new one.
    #[arg(long, value_name = "DIR")]
    pub init_adapter: Option<PathBuf>,
    /// Longest record in tokens; longer ones are skipped [default: the model's context, at
    /// most 2048].
    #[arg(long)]
    pub max_len: Option<usize>,
}

#[derive(Debug, Args)]
pub struct RunInfer {
    #[command(flatten)]
    pub generate: GenerateArgs,
    /// Compute threads, 1 to 1024 [default: all cores]. Never changes the output.
    #[arg(long, value_name = "N", value_parser = crate::limits::parse_threads)]
    pub threads: Option<usize>,
    /// SIMD path: auto, portable, avx2 or avx512. Never changes the output.
    #[arg(long, default_value = "auto")]
    pub isa: String,
    /// Feed the prompt in chunks of this many tokens (0: whole). Never changes the output.
    #[arg(long, default_value_t = 0)]
    pub prefill_chunk: usize,
    /// Write the logits of every generated step (the ones each token was chosen from) as
    /// raw little-endian f32, step after step.
    #[arg(long, value_name = "FILE")]
    pub logits_out: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A participant as tables and JSON name it (64 hex digits of its public key), or as
/// addresses do (its libp2p peer id, the same key in another encoding).
pub fn parse_public_key(text: &str) -> Result<olc_protocol::PublicKey, String> {
    use olc_net::libp2p::{PeerId, identity};

    if let Ok(key) = text.parse::<olc_protocol::PublicKey>() {
        return Ok(key);
    }
    let refused = || format!("{text:?} is neither a public key (64 hex digits) nor a peer id");
    let peer: PeerId = text.parse().map_err(|_| refused())?;
    let key = identity::PublicKey::try_decode_protobuf(peer.as_ref().digest())
        .map_err(|_| refused())?
        .try_into_ed25519()
        .map_err(|_| format!("{text:?} is the peer id of a key that is not ed25519"))?;
    Ok(olc_protocol::PublicKey::from_bytes(key.to_bytes()))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::{Cli, parse_public_key};

    #[test]
    fn a_participant_is_accepted_as_public_key_or_peer_id() {
        let id = olc_protocol::Identity::from_seed(&[7; 32]);
        let key = id.public_key();
        assert_eq!(parse_public_key(&key.to_string()), Ok(key));
        assert_eq!(parse_public_key(&id.peer_id().to_string()), Ok(key));
        for bad in ["", "12D3KooWnot", "ABCDEF", &key.to_string()[1..]] {
            assert!(parse_public_key(bad).is_err(), "{bad:?}");
        }
    }

    /// Every flag and argument of every command says what it is for, and a default that
    /// clap prints is not written into the text a second time.
    #[test]
    fn every_argument_is_described_once() {
        fn walk(cmd: &clap::Command, path: &str, problems: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                if help.trim().is_empty() {
                    problems.push(format!("{path} --{id}: no help"));
                }
                if !arg.get_default_values().is_empty() && help.contains("[default:") {
                    problems.push(format!("{path} --{id}: default shown twice"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), problems);
            }
        }
        let mut problems = Vec::new();
        walk(&Cli::command(), "olc", &mut problems);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
