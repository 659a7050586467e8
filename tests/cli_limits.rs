//! One set of limits: a local run refuses what a job would be refused, and every absurd
//! flag of the daemons and commands is refused at once with the accepted range.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod common;

use common::olc;

fn refused(args: &[&str], expect: &str) {
    let out = olc(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} was accepted");
    assert!(
        err.contains(expect),
        "{args:?}: expected {expect:?} in {err}"
    );
    assert!(!err.contains("panicked"), "{args:?}: {err}");
}

#[test]
fn local_runs_have_the_limits_of_jobs() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    assert!(
        olc(&["model", "init", "--out", model.to_str().unwrap()])
            .status
            .success()
    );
    let m = model.to_str().unwrap();
    let data = tmp.path().join("d.jsonl");
    std::fs::write(&data, "{\"text\": \"hello there\"}\n").unwrap();
    let d = data.to_str().unwrap();
    let out = tmp.path().join("a");
    let o = out.to_str().unwrap();
    let finetune = |extra: &[&str]| {
        let mut args = vec!["run", "finetune", "--model", m, "--data", d, "--out", o];
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    for (extra, expect) in [
        (
            &["--steps", "1", "--rank", "2000"][..],
            "rank must be between 1 and 1024",
        ),
        (
            &["--steps", "1", "--lr", "1e30"][..],
            "learning rate must be a number in (0, 1]",
        ),
        (&["--steps", "1", "--batch", "100000"][..], "batch size"),
        (&["--steps", "100000000"][..], "steps"),
        (
            &["--steps", "1", "--threads", "100000"][..],
            "between 1 and 1024",
        ),
    ] {
        let args = finetune(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&args, expect);
    }
    assert!(!out.join("adapter_model.safetensors").exists());
    let infer = ["run", "infer", "--model", m, "--prompt", "hi"];
    for (extra, expect) in [
        (
            &["--max-tokens", "100000"][..],
            "max_tokens must be between 1 and 65536",
        ),
        (
            &["--max-tokens", "0"][..],
            "max_tokens must be between 1 and 65536",
        ),
        (
            &["--temperature", "1000"][..],
            "temperature must be a number in (0, 100]",
        ),
        (&["--top-p", "2"][..], "top_p must be a number in (0, 1]"),
        (&["--threads", "0"][..], "between 1 and 1024"),
    ] {
        let args: Vec<&str> = infer.iter().chain(extra).copied().collect();
        refused(&args, expect);
    }
}

#[test]
fn absurd_daemon_and_job_settings_are_refused_with_the_range() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_str().unwrap();
    let coord = "/ip4/127.0.0.1/udp/9/quic-v1";
    let worker = ["worker", "start", "--coordinator", coord, "--data", data];
    let coordinator = ["coordinator", "start", "--data", data];
    for (command, extra, expect) in [
        (
            &worker[..],
            &["--max-jobs", "0"][..],
            "--max-jobs must be between 1 and 1024, got 0",
        ),
        (
            &worker,
            &["--threads", "100000"],
            "--threads must be between 1 and 1024, got 100000",
        ),
        (
            &worker,
            &["--cache-gib", "0"],
            "--cache-gib must be between 1 and",
        ),
        (
            &worker,
            &["--max-streams", "0"],
            "--max-streams must be between 1 and 1024, got 0",
        ),
        (
            &worker,
            &["--model-cache-gib", "2000000"],
            "--model-cache-gib must be between 0 and 1048576, got 2000000",
        ),
        (
            &coordinator,
            &["--min-stake", "18446744073709551615"],
            "--min-stake must be between 0 and",
        ),
        (
            &coordinator,
            &["--max-clock-skew", "0s"],
            "--max-clock-skew must be between 1s and 1h",
        ),
        (
            &coordinator,
            &["--referee-threads", "100000"],
            "--referee-threads must be between 0 and 1024",
        ),
    ] {
        let args: Vec<&str> = command.iter().chain(extra).copied().collect();
        refused(&args, expect);
    }
    // A worker's settings from its config file meet the same limits as its flags.
    let cfg = tmp.path().join("w.toml");
    std::fs::write(&cfg, "max-jobs = 0\n").unwrap();
    let args: Vec<&str> = worker
        .iter()
        .copied()
        .chain(["--config", cfg.to_str().unwrap()])
        .collect();
    refused(&args, "--max-jobs must be between 1 and 1024, got 0");
    refused(
        &[
            "job",
            "submit",
            "inference",
            "--coordinator",
            coord,
            "--model",
            data,
            "--prompt",
            "hi",
            "--deadline",
            "100000d",
        ],
        "--deadline must be between 1s and 30days",
    );
    refused(
        &["workers", "--coordinator", coord, "--timeout", "0s"],
        "--timeout must be between 1s and 1h",
    );
}

/// A job whose inputs can never work is refused on the submitter's machine, before any
/// upload or escrow (the address below has no coordinator: nothing is even dialed).
#[test]
fn a_job_whose_inputs_cannot_work_is_refused_before_anything_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    assert!(
        olc(&["model", "init", "--out", model.to_str().unwrap()])
            .status
            .success()
    );
    let m = model.to_str().unwrap();
    let key = tmp.path().join("k.pem");
    assert!(
        olc(&["keys", "new", "--out", key.to_str().unwrap()])
            .status
            .success()
    );
    let coord = "/ip4/127.0.0.1/udp/9/quic-v1";
    let submit = |kind: &str, extra: &[&str]| {
        let mut args = vec![
            "job",
            "submit",
            kind,
            "--coordinator",
            coord,
            "--key",
            key.to_str().unwrap(),
            "--timeout",
            "1s",
        ];
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let empty = tmp.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let garbage = tmp.path().join("garbage.jsonl");
    std::fs::write(&garbage, "{\"text\": \"fine\"}\nnot json\n").unwrap();
    let truncated = tmp.path().join("t");
    std::fs::create_dir_all(&truncated).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(model.join(f), truncated.join(f)).unwrap();
    }
    let weights = std::fs::read(model.join("model.safetensors")).unwrap();
    std::fs::write(
        truncated.join("model.safetensors"),
        &weights[..weights.len() / 2],
    )
    .unwrap();
    let cases: [(Vec<String>, &str); 3] = [
        (
            submit(
                "finetune",
                &[
                    "--model",
                    m,
                    "--data",
                    empty.to_str().unwrap(),
                    "--steps",
                    "1",
                ],
            ),
            "bad dataset",
        ),
        (
            submit(
                "finetune",
                &[
                    "--model",
                    m,
                    "--data",
                    garbage.to_str().unwrap(),
                    "--steps",
                    "1",
                ],
            ),
            "line 2",
        ),
        (
            submit(
                "inference",
                &["--model", truncated.to_str().unwrap(), "--prompt", "hi"],
            ),
            "cannot load the model",
        ),
    ];
    for (args, expect) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&args, expect);
        let out = olc(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("cannot reach"),
            "{args:?} dialed before refusing: {err}"
        );
    }
}
