//! `olc run finetune` through the real binary: it learns, it is deterministic, and bad
//! input is refused with a message that says what is wrong.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod common;

use std::path::Path;

use common::{json, olc};

const ALICE: &str = "a1d1ce0000000000000000000000000000000000000000000000000000000001";
const BOB: &str = "b0b0000000000000000000000000000000000000000000000000000000000002";

/// Four prompts the tiny random model cannot know the answers to.
const PAIRS: [(&str, &str); 4] = [
    ("Q: sky?\nA:", " blue"),
    ("Q: grass?\nA:", " green"),
    ("Q: snow?\nA:", " white"),
    ("Q: coal?\nA:", " black"),
];

fn model(dir: &Path) -> String {
    let d = dir.join("model");
    let out = olc(&[
        "model",
        "init",
        "--out",
        d.to_str().unwrap(),
        "--preset",
        "tiny",
        "--seed",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.to_str().unwrap().to_string()
}

fn dataset(dir: &Path) -> String {
    let mut lines = String::new();
    for (i, (p, c)) in PAIRS.iter().enumerate() {
        let who = if i % 2 == 0 { ALICE } else { BOB };
        let rec = serde_json::json!({"id": format!("r{i}"), "prompt": p, "completion": c, "contributor": who});
        lines.push_str(&rec.to_string());
        lines.push('\n');
    }
    let path = dir.join("data.jsonl");
    std::fs::write(&path, lines).unwrap();
    path.to_str().unwrap().to_string()
}

fn finetune(
    model: &str,
    data: &str,
    out: &Path,
    steps: u32,
    extra: &[&str],
) -> std::process::Output {
    let steps = steps.to_string();
    let mut args = vec![
        "run",
        "finetune",
        "--model",
        model,
        "--data",
        data,
        "--out",
        out.to_str().unwrap(),
        "--rank",
        "8",
        "--targets",
        "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
        "--lr",
        "0.01",
        "--batch",
        "2",
        "--grad-accum",
        "2",
        "--steps",
        &steps,
        "--seed",
        "1",
        "--json",
    ];
    args.extend_from_slice(extra);
    olc(&args)
}

fn greedy(model: &str, adapter: Option<&Path>, prompt: &str, n: usize) -> serde_json::Value {
    let n = n.to_string();
    let mut args = vec![
        "run",
        "infer",
        "--model",
        model,
        "--prompt",
        prompt,
        "--max-tokens",
        &n,
        "--json",
    ];
    let a;
    if let Some(dir) = adapter {
        a = dir.to_str().unwrap().to_string();
        args.extend_from_slice(&["--adapter", &a]);
    }
    json(&olc(&args))
}

#[test]
fn it_learns_the_completions_and_records_who_taught_it() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let data = dataset(tmp.path());
    let out = tmp.path().join("adapter");
    let report = json(&finetune(&m, &data, &out, 60, &[]));
    let (first, last) = (
        report["first_loss"].as_f64().unwrap(),
        report["last_loss"].as_f64().unwrap(),
    );
    // The tiny preset's logits are small (random tied embeddings, hidden size 64), so its
    // loss cannot fall far below ln(vocab) - 2; a fall of a full nat is clear learning.
    assert!(last < first - 1.0, "loss fell only from {first} to {last}");
    assert_eq!(report["commitment"].as_str().unwrap().len(), 64);

    let mut base_right = 0;
    for (prompt, completion) in PAIRS {
        let tuned = greedy(&m, Some(&out), prompt, 8);
        let base = greedy(&m, None, prompt, 8);
        let text = tuned["text"].as_str().unwrap();
        assert!(
            text.starts_with(completion),
            "{prompt:?}: adapter said {text:?}, trained {completion:?}"
        );
        if base["text"].as_str().unwrap().starts_with(completion) {
            base_right += 1;
        }
    }
    assert_eq!(
        base_right, 0,
        "the base model already knew the answers: a useless test"
    );

    let prov: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("provenance.json")).unwrap()).unwrap();
    assert_eq!(prov["adapter_commitment"], report["commitment"]);
    assert_eq!(prov["base_model"], report["model"]);
    // One model id everywhere: `model show` names the model as the provenance does.
    let shown = json(&olc(&["model", "show", &m, "--json"]));
    assert_eq!(shown["id"], prov["base_model"]);
    assert_eq!(
        prov["dataset"].as_str().unwrap(),
        blake3::hash(&std::fs::read(&data).unwrap())
            .to_hex()
            .as_str()
    );
    let records = prov["records"].as_array().unwrap();
    assert_eq!(records.len(), 4);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["id"], format!("r{i}"));
        assert!(r["tokens_trained"].as_u64().unwrap() > 0);
        assert!(r["final_loss"].as_f64().unwrap() < first);
    }
    let shares = prov["contributors"].as_array().unwrap();
    assert_eq!(shares.len(), 2);
    let total: u64 = shares
        .iter()
        .map(|s| s["tokens_trained"].as_u64().unwrap())
        .sum();
    assert_eq!(total, prov["tokens_trained"].as_u64().unwrap());
}

#[test]
fn the_adapter_bytes_do_not_depend_on_threads_or_isa() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let data = dataset(tmp.path());
    let mut seen: Vec<(Vec<u8>, String)> = Vec::new();
    for (i, extra) in [
        &["--threads", "1", "--isa", "portable"][..],
        &["--threads", "2", "--isa", "auto"],
        &["--threads", "4", "--isa", "auto"],
    ]
    .iter()
    .enumerate()
    {
        let out = tmp.path().join(format!("a{i}"));
        let report = json(&finetune(&m, &data, &out, 6, extra));
        let bytes = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
        seen.push((bytes, report["commitment"].as_str().unwrap().to_string()));
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "adapters differ between runs"
    );
}

/// Runs a fine-tune expected to fail and returns its error text.
fn refused(args: &[&str]) -> String {
    let mut all = vec!["run", "finetune"];
    all.extend_from_slice(args);
    let out = olc(&all);
    assert!(!out.status.success(), "olc {args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_datasets_are_refused_naming_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let out = tmp.path().join("out");
    let out = out.to_str().unwrap();
    let cases: [(&str, &str, &[&str]); 5] = [
        (
            "{\"text\": \"fine\"}\n{\"prompt\": \"no completion\"}\n",
            "line 2",
            &[],
        ),
        ("{\"text\": \"fine\"}\nnot json\n", "line 2", &[]),
        (
            "{\"text\": \"ok\", \"contributor\": \"nobody\"}\n",
            "line 1",
            &[],
        ),
        ("\n\n", "no records", &[]),
        (
            "{\"text\": \"a record far longer than three tokens\"}\n",
            "longer than",
            &["--max-len", "3"],
        ),
    ];
    for (i, (content, expect, extra)) in cases.iter().enumerate() {
        let data = tmp.path().join(format!("bad{i}.jsonl"));
        std::fs::write(&data, content).unwrap();
        let mut args = vec![
            "--model",
            &m,
            "--data",
            data.to_str().unwrap(),
            "--out",
            out,
            "--steps",
            "1",
        ];
        args.extend_from_slice(extra);
        let err = refused(&args);
        assert!(
            err.contains(expect),
            "case {i}: expected {expect:?} in {err}"
        );
        assert!(
            err.contains(data.to_str().unwrap()),
            "case {i}: the error names the file: {err}"
        );
    }
    assert!(!Path::new(out).join("adapter_model.safetensors").exists());
}

#[test]
fn an_initial_adapter_must_fit_the_model_and_outputs_are_not_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let data = dataset(tmp.path());
    let first = tmp.path().join("first");
    json(&finetune(&m, &data, &first, 2, &[]));

    // Continuing from it works, and the provenance says where training started.
    let next = tmp.path().join("next");
    let args = [
        "run",
        "finetune",
        "--model",
        &m,
        "--data",
        &data,
        "--out",
        next.to_str().unwrap(),
        "--init-adapter",
        first.to_str().unwrap(),
        "--steps",
        "2",
        "--json",
    ];
    let report = json(&olc(&args));
    let prov: serde_json::Value =
        serde_json::from_slice(&std::fs::read(next.join("provenance.json")).unwrap()).unwrap();
    let first_commitment: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first.join("provenance.json")).unwrap()).unwrap();
    assert_eq!(
        prov["hyperparameters"]["init_adapter"],
        first_commitment["adapter_commitment"]
    );
    assert_ne!(report["commitment"], first_commitment["adapter_commitment"]);

    // An adapter made for another model shape.
    let small = tmp.path().join("small");
    assert!(
        olc(&[
            "model",
            "init",
            "--out",
            small.to_str().unwrap(),
            "--preset",
            "small"
        ])
        .status
        .success()
    );
    let err = refused(&[
        "--model",
        small.to_str().unwrap(),
        "--data",
        &data,
        "--out",
        tmp.path().join("x").to_str().unwrap(),
        "--init-adapter",
        first.to_str().unwrap(),
        "--steps",
        "1",
    ]);
    assert!(
        err.contains("does not fit this model") && err.contains("shape"),
        "{err}"
    );

    // Shape flags contradicting the adapter, and an existing output.
    let err = refused(&[
        "--model",
        &m,
        "--data",
        &data,
        "--out",
        tmp.path().join("y").to_str().unwrap(),
        "--init-adapter",
        first.to_str().unwrap(),
        "--rank",
        "4",
        "--steps",
        "1",
    ]);
    assert!(err.contains("--init-adapter"), "{err}");
    let err = refused(&[
        "--model",
        &m,
        "--data",
        &data,
        "--out",
        first.to_str().unwrap(),
        "--steps",
        "1",
    ]);
    assert!(err.contains("--force"), "{err}");
    let err = refused(&[
        "--model",
        &m,
        "--data",
        &data,
        "--out",
        "z",
        "--steps",
        "1",
        "--targets",
        "q_proj,nope",
    ]);
    assert!(err.contains("nope"), "{err}");
    let err = refused(&["--model", &m, "--data", &data, "--out", "z"]);
    assert!(err.contains("--steps") || err.contains("--epochs"), "{err}");
}

#[test]
fn a_run_that_diverges_fails_naming_the_step() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let data = dataset(tmp.path());
    let out = tmp.path().join("out");
    // A final norm of f32::MAX: every weight is finite, so the model loads, but its logits
    // overflow and the first loss is NaN. Training used to finish "successfully" anyway.
    // The file ends with that tensor's 64 F32 values.
    let weights = Path::new(&m).join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = bytes.len();
    for v in bytes[n - 64 * 4..].chunks_exact_mut(4) {
        v.copy_from_slice(&f32::MAX.to_le_bytes());
    }
    std::fs::write(&weights, bytes).unwrap();
    let err = refused(&[
        "--model",
        &m,
        "--data",
        &data,
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "3",
    ]);
    assert!(
        err.contains(
            "training diverged at step 1: the loss is NaN (before any update: the base model \
             or the initial adapter overflows)"
        ),
        "{err}"
    );
    assert!(!out.join("adapter_model.safetensors").exists());
}
