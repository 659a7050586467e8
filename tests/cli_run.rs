//! `olc run infer` through the real binary.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod common;

use std::path::Path;

use common::{json, olc};

fn model(dir: &Path) -> String {
    let d = dir.join("m");
    let out = olc(&[
        "model",
        "init",
        "--out",
        d.to_str().unwrap(),
        "--preset",
        "tiny",
        "--seed",
        "4",
    ]);
    assert!(out.status.success());
    d.to_str().unwrap().to_string()
}

#[test]
fn output_and_logits_do_not_depend_on_threads_isa_or_chunking() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let mut seen = Vec::new();
    for (i, extra) in [
        &["--threads", "1", "--isa", "portable"][..],
        &["--threads", "2", "--isa", "auto"],
        &["--threads", "4", "--isa", "auto", "--prefill-chunk", "3"],
    ]
    .iter()
    .enumerate()
    {
        let logits = tmp.path().join(format!("logits{i}"));
        let mut args = vec![
            "run",
            "infer",
            "--model",
            &m,
            "--prompt",
            "Hello, world",
            "--max-tokens",
            "6",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--logits-out", logits.to_str().unwrap(), "--json"]);
        let out = json(&olc(&args));
        let tokens: Vec<u32> = out["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert!(!tokens.is_empty() && tokens.len() <= 6);
        // The commitment is BLAKE3 of the generated ids as little-endian u32.
        let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        assert_eq!(out["commitment"], blake3::hash(&bytes).to_hex().as_str());
        let raw = std::fs::read(&logits).unwrap();
        assert_eq!(
            raw.len(),
            tokens.len() * 320 * 4,
            "one vocab-sized row per generated token"
        );
        seen.push((
            out["tokens"].clone(),
            out["commitment"].clone(),
            out["text"].clone(),
            raw,
        ));
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "outputs differ between runs"
    );
}

#[test]
fn bad_inputs_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let cases: [(&[&str], &str); 8] = [
        (
            &["--tokens", "1,2", "--temperature", "0"],
            "temperature must be",
        ),
        (&["--tokens", "99999"], "outside the vocabulary"),
        (&["--tokens", "1", "--isa", "sse9"], "unknown --isa"),
        (&["--tokens", "1", "--threads", "0"], "--threads"),
        (
            &["--tokens", "1", "--max-tokens", "0"],
            "max_tokens must be between 1 and 65536",
        ),
        (&["--tokens", "1,x"], "invalid"),
        (&["--tokens", "1", "--prompt", "hi"], "cannot be used with"),
        (&[], "required"),
    ];
    for (extra, expect) in cases {
        let mut args = vec!["run", "infer", "--model", &m];
        args.extend_from_slice(extra);
        let out = olc(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} succeeded");
        assert!(err.contains(expect), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{extra:?}: {err}");
    }
    let missing = olc(&[
        "run",
        "infer",
        "--model",
        tmp.path().join("none").to_str().unwrap(),
        "--tokens",
        "1",
    ]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot load the model"));
    let bad_adapter = olc(&[
        "run",
        "infer",
        "--model",
        &m,
        "--adapter",
        tmp.path().to_str().unwrap(),
        "--tokens",
        "1",
    ]);
    assert!(!bad_adapter.status.success());
    assert!(String::from_utf8_lossy(&bad_adapter.stderr).contains("cannot load the adapter"));
}

#[test]
fn seeded_sampling_repeats_and_the_seed_matters() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let run = |seed: &str, threads: &str| {
        let out = json(&olc(&[
            "run",
            "infer",
            "--model",
            &m,
            "--prompt",
            "Once upon",
            "--max-tokens",
            "12",
            "--temperature",
            "1.5",
            "--top-k",
            "50",
            "--top-p",
            "0.95",
            "--seed",
            seed,
            "--threads",
            threads,
            "--json",
        ]));
        (out["tokens"].clone(), out["commitment"].clone())
    };
    let a = run("1", "1");
    assert_eq!(run("1", "2"), a, "same seed, other thread count");
    let others: Vec<_> = (2..6).map(|s| run(&s.to_string(), "1")).collect();
    assert!(others.iter().any(|o| o != &a), "the seed changes nothing");
    let greedy = json(&olc(&[
        "run",
        "infer",
        "--model",
        &m,
        "--prompt",
        "Once upon",
        "--max-tokens",
        "12",
        "--json",
    ]));
    assert!(greedy["tokens"].is_array());
}

#[test]
fn tiny_temperatures_give_the_greedy_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let tokens = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "infer",
            "--model",
            &m,
            "--prompt",
            "Once upon",
            "--max-tokens",
            "12",
            "--json",
        ];
        args.extend_from_slice(extra);
        json(&olc(&args))["tokens"].clone()
    };
    let greedy = tokens(&[]);
    // Half the threshold, a subnormal, and the smallest normal f32.
    for t in ["0.0005", "1e-39", "1.1754944e-38"] {
        assert_eq!(
            tokens(&["--temperature", t, "--seed", "9"]),
            greedy,
            "temperature {t}"
        );
    }
}
