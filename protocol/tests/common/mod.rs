//! One realistic sample of every message type, shared by the protocol's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use olc_protocol::*;

pub fn submitter() -> Identity {
    Identity::from_seed(&[1; 32])
}
pub fn coordinator() -> Identity {
    Identity::from_seed(&[2; 32])
}
pub fn worker() -> Identity {
    Identity::from_seed(&[3; 32])
}

pub fn advert() -> HardwareAdvert {
    HardwareAdvert {
        seq: 42,
        timestamp_ms: 1_790_000_000_000,
        interval_ms: 10_000,
        hardware: Hardware {
            gpus: vec![GpuInfo {
                name: "NVIDIA GeForce RTX 4090".into(),
                uuid: "GPU-6f1c2a4e-0000-1111-2222-333344445555".into(),
                memory_total_bytes: 24 << 30,
                memory_free_bytes: 23 << 30,
                compute_capability: (8, 9),
                driver_version: "570.86.10".into(),
                cuda_version: Some(12080),
                power_limit_milliwatts: Some(450_000),
                utilization_percent: Some(3),
            }],
            cpu: CpuInfo {
                model: "AMD EPYC".into(),
                logical_cores: 2,
                features: vec!["avx2".into(), "fma".into(), "avx512f".into()],
            },
            ram_total_bytes: 24 << 30,
            ram_available_bytes: 20 << 30,
            disk_free_bytes: 80 << 30,
        },
        backends: vec![Backend::Cpu, Backend::Cuda],
        price_per_ktoken: Amount(12),
        listen_addrs: vec!["/ip4/127.0.0.1/udp/7001/quic-v1".into()],
        cached: vec![ContentId::of(b"model")],
        max_concurrent_jobs: 2,
        active_jobs: 0,
        resident: Vec::new(),
        resident_adapters: 0,
        max_streams: 8,
        active_streams: 0,
    }
}

pub fn inference_job() -> JobSpec {
    JobSpec {
        kind: JobKind::Inference(InferenceJob {
            model: ContentId::of(b"model"),
            adapter: Some(ContentId::of(b"adapter")),
            prompt: Prompt::Text("The capital of France is".into()),
            sampling: Sampling::Sample {
                temperature: 0.7,
                top_k: 40,
                top_p: 0.95,
            },
            max_tokens: 32,
            seed: 7,
        }),
        requirements: Requirements {
            min_memory_bytes: 1 << 30,
            backend: None,
        },
        max_fee: Amount(1_000),
        verification: VerificationPolicy::Replicate { replicas: 2 },
        deadline_ms: 1_790_000_600_000,
        nonce: 1,
    }
}

pub fn finetune_job() -> JobSpec {
    JobSpec {
        kind: JobKind::Finetune(FinetuneJob {
            publish_as: None,
            model: ContentId::of(b"model"),
            dataset: ContentId::of(b"dataset"),
            params: TrainingParams {
                rank: 8,
                alpha: 16.0,
                targets: vec![TargetModule::QProj, TargetModule::VProj],
                learning_rate: 1e-3,
                weight_decay: 0.0,
                max_len: Some(512),
                batch_size: 4,
                grad_accum: 2,
                length: TrainingLength::Steps(50),
                warmup_steps: 5,
                seed: 3,
                init_adapter: None,
            },
        }),
        requirements: Requirements {
            min_memory_bytes: 2 << 30,
            backend: Some(Backend::Cpu),
        },
        max_fee: Amount(50_000),
        verification: VerificationPolicy::Sample {
            probability_ppm: 100_000,
        },
        deadline_ms: 1_790_003_600_000,
        nonce: 2,
    }
}

pub fn assignment() -> Assignment {
    let job = Signed::sign(&submitter(), &inference_job()).unwrap();
    Assignment {
        job_id: job.id(),
        job,
        worker: worker().public_key(),
        replica: 1,
        fee_cap: Amount(500),
        deadline_ms: 1_790_000_300_000,
        issued_ms: 1_790_000_000_500,
    }
}

pub fn commitment() -> Commitment {
    let a = Signed::sign(&coordinator(), &assignment()).unwrap();
    Commitment {
        job_id: assignment().job_id,
        assignment: a.id(),
        output: ContentId::of(b"out"),
    }
}

pub fn execution_receipt() -> ExecutionReceipt {
    let c = commitment();
    ExecutionReceipt {
        job_id: c.job_id,
        assignment: c.assignment,
        output: c.output,
        model: ContentId::of(b"model"),
        adapter: Some(ContentId::of(b"adapter")),
        metrics: Metrics {
            tokens: 37,
            wall_ms: 812,
            peak_memory_bytes: 300 << 20,
        },
        provenance: None,
        finished_ms: 1_790_000_001_000,
    }
}

pub fn settlement_receipt() -> SettlementReceipt {
    let exec = Signed::sign(&worker(), &execution_receipt()).unwrap();
    let evidence = Signed::sign(&Identity::from_seed(&[4; 32]), &commitment()).unwrap();
    let job = Signed::sign(&submitter(), &inference_job()).unwrap();
    SettlementReceipt {
        job_id: execution_receipt().job_id,
        job,
        assignments: vec![Signed::sign(&coordinator(), &assignment()).unwrap()],
        output: execution_receipt().output,
        executions: vec![exec],
        payouts: vec![
            Payout {
                to: worker().public_key(),
                amount: Amount(444),
                role: PayoutRole::Compute,
            },
            Payout {
                to: Identity::from_seed(&[5; 32]).public_key(),
                amount: Amount(30),
                role: PayoutRole::DataContributor,
            },
        ],
        slashes: vec![Slash {
            worker: Identity::from_seed(&[4; 32]).public_key(),
            amount: Amount(100),
            reason: SlashReason::WrongOutput,
            evidence: vec![evidence],
        }],
        refund: Amount(526),
        settled_ms: 1_790_000_002_000,
    }
}

pub fn rpc_request() -> RpcRequest {
    RpcRequest::ListWorkers
}

pub fn rpc_response() -> RpcResponse {
    RpcResponse::Workers(vec![RegisteredWorker {
        public_key: worker().public_key(),
        advert: advert(),
        last_seen_ms: 1_790_000_000_100,
        first_seen_ms: 1_790_000_000_000,
    }])
}

pub fn blob_request() -> BlobRequest {
    BlobRequest {
        id: ContentId::of(b"model"),
        part: BlobPart::Chunk(3),
    }
}

pub fn blob_response() -> BlobResponse {
    BlobResponse::Outline(olc_protocol::blob::BlobOutline::of(&vec![7u8; 3 << 20]))
}

pub fn manifest() -> olc_protocol::Manifest {
    olc_protocol::Manifest::new(vec![
        olc_protocol::ManifestEntry {
            path: "config.json".into(),
            size: 812,
            id: olc_protocol::ContentId::of(b"config"),
        },
        olc_protocol::ManifestEntry {
            path: "model.safetensors".into(),
            size: 270_000_000,
            id: olc_protocol::ContentId::of(b"weights"),
        },
    ])
    .unwrap()
}

pub fn rpc_submit() -> RpcRequest {
    RpcRequest::SubmitJob(Signed::sign(&submitter(), &finetune_job()).unwrap())
}

pub fn rpc_job_view() -> RpcResponse {
    let receipt = Signed::sign(&coordinator(), &settlement_receipt()).unwrap();
    RpcResponse::Job(Box::new(JobView {
        job_id: assignment().job_id,
        submitter: submitter().public_key(),
        kind: "inference".into(),
        state: JobState::Done,
        waiting: None,
        waiting_busy: false,
        replicas: vec![ReplicaView {
            worker: worker().public_key(),
            replica: 0,
            state: "revealed".into(),
            progress: Some(JobProgress {
                job_id: assignment().job_id,
                assignment: ContentId::of(b"a"),
                step: 3,
                total: 10,
                loss: 2.5,
            }),
            commitment: Some(ContentId::of(b"out")),
        }],
        output: Some(JobOutput::Inference {
            tokens: vec![5, 6, 7],
            text: "abc".into(),
        }),
        slashes: settlement_receipt().slashes,
        refund: Some(Amount(526)),
        receipt: Some(receipt),
        submitted_ms: 1_790_000_000_000,
        updated_ms: 1_790_000_002_000,
    }))
}
