use crate::model::tokenizer::Tokenizer;

fn tiny_tokenizer() -> (tempfile::TempDir, Tokenizer) {
    let (dir, _) = super::tiny_checkpoint();
    let t = Tokenizer::from_file(&dir.path().join("tokenizer.json")).unwrap();
    (dir, t)
}

#[test]
fn round_trips_any_text() {
    let (_dir, t) = tiny_tokenizer();
    for text in [
        "Hello, world! The quick brown fox.",
        "  leading spaces\tand\ttabs\nnewlines\r\n",
        "Crème brûlée, naïve café, Ærøskøbing, Straße",
        "emoji 🦀🚀 and 👩‍👩‍👧 family, flags 🇫🇷",
        "中文 日本語 한국어 العربية",
        "",
    ] {
        let ids = t.encode(text).unwrap();
        assert_eq!(t.decode(&ids, false).unwrap(), text, "{ids:?}");
        assert_eq!(t.decode(&ids, true).unwrap(), text);
    }
}

#[test]
fn special_tokens_and_merges() {
    let (_dir, t) = tiny_tokenizer();
    assert_eq!(t.vocab_size(), 320);
    assert_eq!(t.token_to_id("<|endoftext|>"), Some(0));
    assert_eq!(t.token_to_id("<|im_end|>"), Some(2));
    let ids = t.encode("<|im_start|>hi<|im_end|>").unwrap();
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.last(), Some(&2));
    assert_eq!(t.decode(&ids, true).unwrap(), "hi");
    assert_eq!(t.decode(&ids, false).unwrap(), "<|im_start|>hi<|im_end|>");
    // " e" is the second merge, so it must be one token.
    assert_eq!(t.encode(" e").unwrap().len(), 1);
}

#[test]
fn garbage_tokenizer_is_a_clear_error() {
    let e = Tokenizer::from_bytes(b"{\"model\": 3}", std::path::Path::new("x/tokenizer.json"))
        .unwrap_err();
    assert!(
        e.to_string().starts_with("x/tokenizer.json: tokenizer:"),
        "{e}"
    );
}

#[test]
fn large_vocabulary_round_trips() {
    let json = crate::model::bpe_json::tokenizer_json(49_152).unwrap();
    let t = Tokenizer::from_bytes(json.as_bytes(), std::path::Path::new("t.json")).unwrap();
    assert_eq!(t.vocab_size(), 49_152);
    let text = "The merges cover 49k pairs — ça marche? 🦀";
    assert_eq!(t.decode(&t.encode(text).unwrap(), false).unwrap(), text);
}
