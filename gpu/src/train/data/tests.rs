use std::path::Path;
use std::sync::OnceLock;

use serde_json::{Value, json};

use super::{Content, DataError, Dataset, Example, MAX_DATASET_BYTES, MAX_LINE_BYTES, tokenize};
use crate::model::{Preset, Tokenizer, write_checkpoint};

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The generated checkpoint's `tokenizer.json`: byte-level BPE whose post-processor adds no
/// special tokens.
fn tokenizer_json() -> Value {
    static JSON: OnceLock<Value> = OnceLock::new();
    JSON.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        write_checkpoint(dir.path(), Preset::Tiny, 11).unwrap();
        let bytes = std::fs::read(dir.path().join("tokenizer.json")).unwrap();
        // Loads through the same path as production, so the fixture is a real tokenizer.
        Tokenizer::from_file(&dir.path().join("tokenizer.json")).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    })
    .clone()
}

fn load(json: &Value) -> Tokenizer {
    Tokenizer::from_bytes(json.to_string().as_bytes(), Path::new("tokenizer.json")).unwrap()
}

fn plain() -> Tokenizer {
    load(&tokenizer_json())
}

/// Like SmolLM2's or Llama's: the post-processor puts a BOS token (`<|endoftext|>`, id 0)
/// before every sequence, and the normalizer strips surrounding whitespace, so that some
/// non-empty text encodes to nothing.
fn with_bos() -> Tokenizer {
    let mut json = tokenizer_json();
    json["normalizer"] = json!({"type": "Strip", "strip_left": true, "strip_right": true});
    let bos = |seq: &str| {
        json!([
            {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
            {"Sequence": {"id": seq, "type_id": 0}}
        ])
    };
    json["post_processor"] = json!({
        "type": "TemplateProcessing",
        "single": bos("A"),
        "pair": [bos("A")[0], bos("A")[1], {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {
            "<|endoftext|>": {"id": "<|endoftext|>", "ids": [0], "tokens": ["<|endoftext|>"]}
        }
    });
    load(&json)
}

fn parse(text: &str) -> Dataset {
    Dataset::from_bytes(text.as_bytes()).unwrap()
}

fn error(text: &str) -> String {
    Dataset::from_bytes(text.as_bytes())
        .unwrap_err()
        .to_string()
}

fn assert_error(text: &str, expected: &str) {
    assert_eq!(error(text), expected, "input: {text:?}");
}

#[test]
fn parses_both_kinds_with_contributor_and_id() {
    let text = format!(
        "{}\n{}\n",
        json!({"text": "Hello there.", "contributor": KEY}),
        json!({"prompt": "Q: 2+2?", "completion": " 4", "id": "sum-1"}),
    );
    let d = parse(&text);
    assert_eq!(d.records.len(), 2);
    let r = &d.records[0];
    assert_eq!((r.line, r.id.as_str()), (1, "line-1"));
    assert_eq!(r.contributor.as_deref(), Some(KEY));
    assert_eq!(r.content, Content::Text("Hello there.".into()));
    let r = &d.records[1];
    assert_eq!(
        (r.line, r.id.as_str(), r.contributor.as_deref()),
        (2, "sum-1", None)
    );
    assert_eq!(
        r.content,
        Content::PromptCompletion {
            prompt: "Q: 2+2?".into(),
            completion: " 4".into()
        }
    );
}

#[test]
fn blank_lines_are_skipped_but_counted() {
    let d = parse("\n   \n\t\r\n{\"text\": \"a b\"}\n\n{\"text\": \"c\", \"id\": \"x\"}\n  ");
    let lines: Vec<_> = d.records.iter().map(|r| (r.line, r.id.as_str())).collect();
    assert_eq!(lines, [(4, "line-4"), (6, "x")]);
}

#[test]
fn crlf_bom_and_a_missing_final_newline_are_fine() {
    let d = parse("\u{feff}{\"text\": \"a\"}\r\n{\"text\": \"b\"}");
    assert_eq!(d.records.len(), 2);
    assert_eq!(d.records[1].content, Content::Text("b".into()));
}

#[test]
fn content_id_is_blake3_of_the_exact_bytes() {
    let text = "{\"text\": \"hello\"}\n";
    let d = parse(text);
    assert_eq!(
        d.content_id,
        blake3::hash(text.as_bytes()).to_hex().to_string()
    );
    assert_eq!(d.content_id.len(), 64);
    assert!(
        d.content_id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    // Same records, different file: a different id.
    assert_ne!(parse("{\"text\": \"hello\"}").content_id, d.content_id);
}

#[test]
fn from_file_reads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.jsonl");
    let text = "{\"prompt\": \"a\", \"completion\": \"b\"}\n";
    std::fs::write(&path, text).unwrap();
    let d = Dataset::from_file(&path).unwrap();
    assert_eq!(d.records.len(), 1);
    assert_eq!(
        d.content_id,
        blake3::hash(text.as_bytes()).to_hex().to_string()
    );
}

#[test]
fn a_missing_file_names_the_path() {
    let e = Dataset::from_file(Path::new("/nonexistent/data.jsonl")).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }), "{e:?}");
    assert!(
        e.to_string().starts_with("/nonexistent/data.jsonl: "),
        "{e}"
    );
}

#[test]
fn a_file_over_the_cap_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.jsonl");
    // Sparse: nothing is written, and the length check must come before any read.
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(MAX_DATASET_BYTES + 1).unwrap();
    let e = Dataset::from_file(&path).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "dataset is {} bytes, more than the limit of {MAX_DATASET_BYTES} bytes",
            MAX_DATASET_BYTES + 1
        )
    );
}

#[test]
fn an_empty_dataset_is_an_error() {
    for text in ["", "\n", "  \n\t\n\r\n"] {
        assert_error(text, "the dataset has no records");
    }
}

#[test]
fn invalid_json_names_the_line() {
    for (text, prefix) in [
        (
            "{\"text\": \"a\"}\n{\"text\": \"b\"\n",
            "line 2: invalid JSON at column ",
        ),
        (
            "{\"text\": \"a\"}\n\n{text: 1}\n",
            "line 3: invalid JSON at column ",
        ),
        (
            "{\"text\": \"a\"} {\"text\": \"b\"}",
            "line 1: invalid JSON at column ",
        ),
        ("{\n\"text\": \"a\"\n}", "line 1: invalid JSON at column "),
    ] {
        let e = error(text);
        assert!(e.starts_with(prefix), "{text:?}: {e}");
        assert!(!e.contains("at line"), "{e}");
    }
}

#[test]
fn invalid_utf8_names_the_line() {
    let mut bytes = b"{\"text\": \"a\"}\n{\"text\": \"".to_vec();
    bytes.extend([0xff, b'"', b'}']);
    let e = Dataset::from_bytes(&bytes).unwrap_err().to_string();
    assert_eq!(e, "line 2: not valid UTF-8 (at byte 11)");
}

#[test]
fn a_line_over_the_cap_is_refused() {
    let long = json!({ "text": "a".repeat(MAX_LINE_BYTES) }).to_string();
    let text = format!("{{\"text\": \"ok\"}}\n{long}\n");
    assert_eq!(
        error(&text),
        format!(
            "line 2: is {} bytes long, more than the limit of {MAX_LINE_BYTES} bytes",
            long.len()
        )
    );
    // Exactly at the cap is fine.
    let fits = json!({ "text": "a".repeat(MAX_LINE_BYTES - 11) }).to_string();
    assert_eq!(fits.len(), MAX_LINE_BYTES);
    assert_eq!(parse(&fits).records.len(), 1);
}

#[test]
fn a_line_that_is_not_an_object_is_refused() {
    for (line, kind) in [
        ("[1, {\"a\": 2}]", "an array"),
        ("\"text\"", "a string"),
        ("3", "a number"),
        ("-1.5", "a number"),
        ("true", "a boolean"),
        ("null", "null"),
    ] {
        assert_error(
            &format!("{{\"text\": \"a\"}}\n{line}"),
            &format!("line 2: expected a JSON object, found {kind}"),
        );
    }
}

#[test]
fn unknown_and_repeated_fields_are_refused() {
    assert_error(
        "{\"promt\": \"a\", \"completion\": \"b\"}",
        "line 1: unknown field \"promt\" (expected \"prompt\", \"completion\", \"text\", \
         \"contributor\" or \"id\")",
    );
    assert_error(
        "\n{\"text\": \"a\", \"text\": \"b\"}",
        "line 2: \"text\" appears twice",
    );
}

#[test]
fn fields_must_be_strings() {
    for (line, field, kind) in [
        (json!({"text": 3}), "text", "a number"),
        (
            json!({"prompt": ["a"], "completion": "b"}),
            "prompt",
            "an array",
        ),
        (
            json!({"prompt": "a", "completion": {"x": "b"}}),
            "completion",
            "an object",
        ),
        (
            json!({"text": "a", "contributor": null}),
            "contributor",
            "null",
        ),
        (json!({"text": "a", "id": 7}), "id", "a number"),
        (json!({"text": false}), "text", "a boolean"),
    ] {
        assert_error(
            &format!("{{\"text\": \"ok\"}}\n\n{line}\n"),
            &format!("line 3: \"{field}\" must be a string, not {kind}"),
        );
    }
}

#[test]
fn a_record_is_text_or_prompt_and_completion() {
    let both =
        "line 1: has both \"text\" and \"prompt\"/\"completion\"; a record is one or the other";
    for (line, expected) in [
        (json!({"text": "a", "prompt": "b", "completion": "c"}), both),
        (json!({"text": "a", "prompt": "b"}), both),
        (json!({"text": "a", "completion": "c"}), both),
        (
            json!({"prompt": "b"}),
            "line 1: \"prompt\" without \"completion\"",
        ),
        (
            json!({"completion": "c"}),
            "line 1: \"completion\" without \"prompt\"",
        ),
        (
            json!({"id": "x"}),
            "line 1: needs either \"text\" or \"prompt\" and \"completion\"",
        ),
        (
            json!({}),
            "line 1: needs either \"text\" or \"prompt\" and \"completion\"",
        ),
        (json!({"text": ""}), "line 1: \"text\" is empty"),
        (
            json!({"prompt": "a", "completion": ""}),
            "line 1: \"completion\" is empty",
        ),
    ] {
        assert_error(&line.to_string(), expected);
    }
    // An empty prompt is fine: the completion is then trained from the start.
    let d = parse(&json!({"prompt": "", "completion": "a"}).to_string());
    assert_eq!(d.records.len(), 1);
}

#[test]
fn contributor_must_be_a_lowercase_hex_public_key() {
    let expected =
        "line 2: \"contributor\" must be 64 lowercase hex characters (an ed25519 public key)";
    for bad in [
        KEY.to_uppercase(),
        KEY[..63].to_string(),
        format!("{KEY}0"),
        format!("{}g", &KEY[..63]),
        String::new(),
        format!("0x{}", &KEY[..62]),
    ] {
        let text = format!(
            "{}\n{}",
            json!({"text": "a"}),
            json!({"text": "b", "contributor": bad})
        );
        assert_error(&text, expected);
    }
}

#[test]
fn ids_are_non_empty_bounded_and_unique() {
    assert_error(
        &json!({"text": "a", "id": ""}).to_string(),
        "line 1: \"id\" is empty",
    );
    assert_error(
        &json!({"text": "a", "id": "x".repeat(257)}).to_string(),
        "line 1: \"id\" is 257 bytes, more than the limit of 256",
    );
    assert_eq!(
        parse(&json!({"text": "a", "id": "é".repeat(128)}).to_string()).records[0]
            .id
            .len(),
        256
    );
    let text = format!(
        "{}\n{}\n\n{}\n",
        json!({"text": "a", "id": "dup"}),
        json!({"text": "b"}),
        json!({"text": "c", "id": "dup"}),
    );
    assert_error(&text, "line 4: duplicate id \"dup\" (also on line 1)");
    // A default id collides with an explicit one like any other.
    let text = format!(
        "{}\n{}\n",
        json!({"text": "a", "id": "line-2"}),
        json!({"text": "b"}),
    );
    assert_error(&text, "line 2: duplicate id \"line-2\" (also on line 1)");
}

#[test]
fn text_records_are_trained_on_every_token() {
    let t = plain();
    let d = parse("\n{\"text\": \"The quick brown fox.\"}\n");
    let out = tokenize(&d, &t, 512).unwrap();
    assert!(out.too_long.is_empty());
    let ex = &out.examples[0];
    assert_eq!(ex.record, 0);
    assert_eq!(ex.tokens, t.encode("The quick brown fox.").unwrap());
    assert_eq!(ex.trained_from, 0);
    assert_eq!(ex.trained_tokens(), ex.tokens.len() - 1);
}

#[test]
fn prompt_completion_is_prompt_tokens_then_completion_tokens() {
    for t in [plain(), with_bos()] {
        let (prompt, completion) = ("Q: what is two plus two?\nA:", " four");
        let d = parse(&json!({"prompt": prompt, "completion": completion}).to_string());
        let out = tokenize(&d, &t, 512).unwrap();
        let ex = &out.examples[0];
        let p = t.encode(prompt).unwrap();
        let c = t.encode_with(completion, false).unwrap();
        assert_eq!(ex.tokens, [p.clone(), c.clone()].concat());
        assert_eq!(ex.trained_from, p.len());
        assert_eq!(ex.trained_tokens(), c.len());
    }
}

#[test]
fn the_post_processor_decides_about_special_tokens() {
    let t = with_bos();
    let text = format!(
        "{}\n{}",
        json!({"text": "hello"}),
        json!({"prompt": "hi", "completion": "there"}),
    );
    let out = tokenize(&parse(&text), &t, 512).unwrap();
    let [text, pc] = &out.examples[..] else {
        panic!("{out:?}")
    };
    assert_eq!(text.tokens[0], 0);
    assert_eq!(text.tokens[1..], t.encode_with("hello", false).unwrap());
    // One BOS, before the prompt; none between prompt and completion.
    assert_eq!(pc.tokens.iter().filter(|&&id| id == 0).count(), 1);
    assert_eq!(pc.tokens[0], 0);
    assert_eq!(
        pc.trained_from,
        1 + t.encode_with("hi", false).unwrap().len()
    );
}

#[test]
fn an_empty_prompt_trains_the_whole_completion_but_the_first_token() {
    let t = plain();
    let d = parse(&json!({"prompt": "", "completion": "abc xyz"}).to_string());
    let ex = &tokenize(&d, &t, 512).unwrap().examples[0];
    assert_eq!(ex.trained_from, 0);
    assert_eq!(ex.tokens, t.encode_with("abc xyz", false).unwrap());
    assert_eq!(ex.trained_tokens(), ex.tokens.len() - 1);
}

#[test]
fn records_too_short_to_train_are_errors() {
    // "a" is one byte token, and this tokenizer adds no BOS.
    let text = format!("{}\n\n{}", json!({"text": "hello"}), json!({"text": "a"}));
    let e = tokenize(&parse(&text), &plain(), 512).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 3: encodes to 1 token(s); a training example needs at least 2"
    );
    let e = tokenize(
        &parse(&json!({"prompt": "", "completion": "a"}).to_string()),
        &plain(),
        512,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 1: encodes to 1 token(s); a training example needs at least 2"
    );
    // With a BOS, the same record is two tokens and trains one prediction.
    let out = tokenize(&parse(&json!({"text": "a"}).to_string()), &with_bos(), 512).unwrap();
    assert_eq!(out.examples[0].trained_tokens(), 1);
}

#[test]
fn a_completion_that_encodes_to_nothing_is_an_error() {
    // The normalizer strips whitespace, so "   " is no tokens, while the prompt has some.
    let text = format!(
        "{}\n{}",
        json!({"text": "fine"}),
        json!({"prompt": "a question", "completion": "   "}),
    );
    let e = tokenize(&parse(&text), &with_bos(), 512).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 2: \"completion\" encodes to no tokens, so there is nothing to train on"
    );
}

#[test]
fn records_longer_than_the_context_are_skipped() {
    let t = plain();
    // Byte-level tokens for the unmerged characters: one token per byte of "§" (2 bytes).
    let text: Vec<String> = [3, 10, 5]
        .iter()
        .map(|&n| json!({ "text": "\u{a7}".repeat(n) }).to_string())
        .collect();
    let d = parse(&text.join("\n"));
    let counts: Vec<usize> = d
        .records
        .iter()
        .map(|r| match &r.content {
            Content::Text(s) => t.encode(s).unwrap().len(),
            Content::PromptCompletion { .. } => unreachable!(),
        })
        .collect();
    let max_len = counts[2];
    assert!(counts[0] <= max_len && counts[1] > max_len, "{counts:?}");
    let out = tokenize(&d, &t, max_len).unwrap();
    assert_eq!(out.too_long, [(1, counts[1])]);
    let kept: Vec<usize> = out.examples.iter().map(|e| e.record).collect();
    assert_eq!(kept, [0, 2]);
    // At exactly max_len a record is kept.
    assert_eq!(out.examples[1].tokens.len(), max_len);
}

#[test]
fn every_record_too_long_is_an_error() {
    let t = plain();
    let text = format!(
        "{}\n{}\n\n{}",
        json!({"text": "the longest record of the three, by far"}),
        json!({"prompt": "a prompt", "completion": " and its completion"}),
        json!({"text": "short-ish text"}),
    );
    let d = parse(&text);
    let shortest = t.encode("short-ish text").unwrap().len();
    assert!(shortest > 3);
    let e = tokenize(&d, &t, 3).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "every record is longer than the model's context of 3 tokens \
             (shortest: {shortest} tokens, line 4)"
        )
    );
    let e = tokenize(&d, &t, 0).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::AllTooLong {
                max_len: 0,
                line: 4,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn an_empty_dataset_value_is_an_error_not_a_panic() {
    let d = Dataset {
        records: Vec::new(),
        content_id: String::new(),
    };
    let e = tokenize(&d, &plain(), 512).unwrap_err();
    assert!(matches!(e, DataError::Empty), "{e:?}");
}

#[test]
fn trained_tokens_never_counts_the_first_token() {
    let ex = |len: usize, trained_from: usize| Example {
        record: 0,
        tokens: vec![5; len],
        trained_from,
    };
    assert_eq!(ex(5, 0).trained_tokens(), 4);
    assert_eq!(ex(5, 1).trained_tokens(), 4);
    assert_eq!(ex(5, 3).trained_tokens(), 2);
    assert_eq!(ex(5, 5).trained_tokens(), 0);
    assert_eq!(ex(5, 9).trained_tokens(), 0);
    assert_eq!(ex(0, 0).trained_tokens(), 0);
}
