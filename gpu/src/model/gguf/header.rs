//! Parsing the header: magic, version, metadata and the raw tensor directory. Every length
//! goes through [`Bounded`], which refuses it before allocating if the file cannot hold it.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use super::bounded::Bounded;
use super::reader::{MAGIC, MAX_DIMS, MAX_TENSORS};
use super::value::{Array, Value, min_encoded_len, tag};
use crate::model::error::{ModelError, Result};

/// Counts are checked against the bytes left, but a truncated file could still claim millions
/// of entries: reserve at most this many up front and let real entries grow the vectors.
const MAX_RESERVE: usize = 4096;
/// Nested arrays exist in the spec but not in any model; a small depth keeps the recursive
/// reader's stack bounded.
const MAX_ARRAY_DEPTH: u32 = 3;

/// A tensor directory entry before its extent is checked.
pub(super) struct RawTensor {
    pub(super) name: String,
    pub(super) dims: Vec<u64>,
    pub(super) ggml_type: u32,
    pub(super) offset: u64,
}

pub(super) struct Header {
    pub(super) version: u32,
    pub(super) metadata: Vec<(String, Value)>,
    pub(super) tensors: Vec<RawTensor>,
}

pub(super) fn read_header(r: &mut Bounded<'_, impl Read>) -> Result<Header> {
    let magic = r.bytes(4, "the magic number")?;
    if magic != MAGIC {
        return Err(r.error(format!(
            "starts with {magic:02x?}, not the GGUF magic \"GGUF\""
        )));
    }
    let version = r.u32("the version")?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(r.error(
                "GGUF version 1 is not supported (it predates 64-bit counts); convert the \
                 model again with a current llama.cpp",
            ));
        }
        v if v.swap_bytes() <= 3 => {
            return Err(r.error(format!(
                "big-endian GGUF (version {}) is not supported",
                v.swap_bytes()
            )));
        }
        v => return Err(r.error(format!("GGUF version {v} is not supported (only 2 and 3)"))),
    }
    let tensor_count = r.u64("the tensor count")?;
    let kv_count = r.u64("the metadata count")?;
    if tensor_count > MAX_TENSORS {
        return Err(r.error(format!(
            "{tensor_count} tensors exceed the limit of {MAX_TENSORS}"
        )));
    }
    // The smallest entry: a key length, a value type and a one-byte value.
    r.check_count(kv_count, 13, "metadata entries")?;
    // The smallest tensor info: name length, n_dims, one dim, type and offset.
    r.check_count(tensor_count, 32, "tensor infos")?;

    let mut metadata = Vec::with_capacity((kv_count as usize).min(MAX_RESERVE));
    let mut seen = HashSet::new();
    for i in 0..kv_count {
        let key = r.string(&format!("metadata key #{i}"))?;
        if !seen.insert(key.clone()) {
            return Err(ModelError::gguf_key(r.path, key, "appears more than once"));
        }
        let ty = r.u32(&format!("the type of `{key}`"))?;
        let value = read_value(r, ty, &key, 0)?;
        metadata.push((key, value));
    }

    let mut tensors = Vec::with_capacity((tensor_count as usize).min(MAX_RESERVE));
    for i in 0..tensor_count {
        let name = r.string(&format!("the name of tensor #{i}"))?;
        let n_dims = r.u32(&format!("the dimension count of tensor `{name}`"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(tensor_error(
                r.path,
                &name,
                format!("has {n_dims} dimensions (1 to {MAX_DIMS} are allowed)"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.u64(&format!("the dimensions of tensor `{name}`"))?);
        }
        let ggml_type = r.u32(&format!("the type of tensor `{name}`"))?;
        let offset = r.u64(&format!("the offset of tensor `{name}`"))?;
        tensors.push(RawTensor {
            name,
            dims,
            ggml_type,
            offset,
        });
    }
    Ok(Header {
        version,
        metadata,
        tensors,
    })
}

fn read_value(r: &mut Bounded<'_, impl Read>, ty: u32, key: &str, depth: u32) -> Result<Value> {
    let what = || format!("the value of `{key}`");
    Ok(match ty {
        tag::U8 => Value::U8(u8::from_le_bytes(r.fixed::<1>(&what())?)),
        tag::I8 => Value::I8(i8::from_le_bytes(r.fixed::<1>(&what())?)),
        tag::U16 => Value::U16(u16::from_le_bytes(r.fixed::<2>(&what())?)),
        tag::I16 => Value::I16(i16::from_le_bytes(r.fixed::<2>(&what())?)),
        tag::U32 => Value::U32(r.u32(&what())?),
        tag::I32 => Value::I32(i32::from_le_bytes(r.fixed::<4>(&what())?)),
        tag::F32 => Value::F32(f32::from_le_bytes(r.fixed::<4>(&what())?)),
        tag::U64 => Value::U64(r.u64(&what())?),
        tag::I64 => Value::I64(i64::from_le_bytes(r.fixed::<8>(&what())?)),
        tag::F64 => Value::F64(f64::from_le_bytes(r.fixed::<8>(&what())?)),
        tag::BOOL => Value::Bool(read_bool(r, key)?),
        tag::STRING => Value::String(r.string(&what())?),
        tag::ARRAY => Value::Array(read_array(r, key, depth)?),
        other => {
            return Err(ModelError::gguf_key(
                r.path,
                key,
                format!("has unknown value type {other}"),
            ));
        }
    })
}

fn read_bool(r: &mut Bounded<'_, impl Read>, key: &str) -> Result<bool> {
    match r.fixed::<1>(&format!("the value of `{key}`"))? {
        [0] => Ok(false),
        [1] => Ok(true),
        [b] => Err(ModelError::gguf_key(
            r.path,
            key,
            format!("bool holds {b}, not 0 or 1"),
        )),
    }
}

fn read_array(r: &mut Bounded<'_, impl Read>, key: &str, depth: u32) -> Result<Array> {
    if depth >= MAX_ARRAY_DEPTH {
        return Err(ModelError::gguf_key(
            r.path,
            key,
            format!("arrays nested more than {MAX_ARRAY_DEPTH} deep"),
        ));
    }
    let elem = r.u32(&format!("the element type of `{key}`"))?;
    let count = r.u64(&format!("the length of `{key}`"))?;
    let min = min_encoded_len(elem).ok_or_else(|| {
        ModelError::gguf_key(r.path, key, format!("has unknown element type {elem}"))
    })?;
    let fits = count
        .checked_mul(min)
        .is_some_and(|need| need <= r.remaining());
    if !fits {
        return Err(ModelError::gguf_key(
            r.path,
            key,
            format!(
                "an array of {count} elements cannot fit in the {} bytes that remain",
                r.remaining()
            ),
        ));
    }
    // `count * min <= remaining <= MAX_HEADER`, so `count` fits in usize.
    let n = count as usize;
    let what = format!("the elements of `{key}`");
    Ok(match elem {
        tag::U8 => Array::U8(r.array::<1>(n, &what)?.into_iter().map(|[b]| b).collect()),
        tag::I8 => Array::I8(
            r.array(n, &what)?
                .into_iter()
                .map(i8::from_le_bytes)
                .collect(),
        ),
        tag::U16 => Array::U16(
            r.array(n, &what)?
                .into_iter()
                .map(u16::from_le_bytes)
                .collect(),
        ),
        tag::I16 => Array::I16(
            r.array(n, &what)?
                .into_iter()
                .map(i16::from_le_bytes)
                .collect(),
        ),
        tag::U32 => Array::U32(
            r.array(n, &what)?
                .into_iter()
                .map(u32::from_le_bytes)
                .collect(),
        ),
        tag::I32 => Array::I32(
            r.array(n, &what)?
                .into_iter()
                .map(i32::from_le_bytes)
                .collect(),
        ),
        tag::F32 => Array::F32(
            r.array(n, &what)?
                .into_iter()
                .map(f32::from_le_bytes)
                .collect(),
        ),
        tag::U64 => Array::U64(
            r.array(n, &what)?
                .into_iter()
                .map(u64::from_le_bytes)
                .collect(),
        ),
        tag::I64 => Array::I64(
            r.array(n, &what)?
                .into_iter()
                .map(i64::from_le_bytes)
                .collect(),
        ),
        tag::F64 => Array::F64(
            r.array(n, &what)?
                .into_iter()
                .map(f64::from_le_bytes)
                .collect(),
        ),
        tag::BOOL => {
            let mut out = Vec::with_capacity(n.min(MAX_RESERVE));
            for _ in 0..n {
                out.push(read_bool(r, key)?);
            }
            Array::Bool(out)
        }
        tag::STRING => {
            let mut out = Vec::with_capacity(n.min(MAX_RESERVE));
            for i in 0..n {
                out.push(r.string(&format!("element {i} of `{key}`"))?);
            }
            Array::String(out)
        }
        _ => {
            let mut out = Vec::with_capacity(n.min(MAX_RESERVE));
            for _ in 0..n {
                out.push(read_array(r, key, depth + 1)?);
            }
            Array::Array(out)
        }
    })
}

fn tensor_error(path: &Path, name: &str, reason: impl Into<String>) -> ModelError {
    ModelError::BadTensor {
        path: path.to_path_buf(),
        tensor: name.to_string(),
        reason: reason.into(),
    }
}
