//! The GGUF container: header, metadata and tensor directory, read through a bounded reader.
//!
//! A GGUF file comes from an untrusted peer and its header is a chain of length-prefixed
//! fields, so every count and length is checked against the bytes that remain before
//! anything is allocated for it; the header as a whole is capped at [`MAX_HEADER`]. The
//! tensor data is not read here: [`GgufFile::read_tensor`] reads one tensor at a time, after
//! its extent has been checked against the file, its alignment and its neighbours.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::bounded::Bounded;
use super::header::{Header, RawTensor, read_header};
use super::value::{Array, Value};
use crate::compute::QuantType;
use crate::model::error::{ModelError, Result};

pub const MAGIC: [u8; 4] = *b"GGUF";
/// The header of a 256k-token vocabulary with its merges is about ten megabytes; in memory
/// the strings take a few times their size on disk.
pub const MAX_HEADER: u64 = 64 << 20;
/// More than any model has; keeps the directory's own bookkeeping small.
pub const MAX_TENSORS: u64 = 1 << 20;
pub const MAX_DIMS: u32 = 4;
pub const DEFAULT_ALIGNMENT: u64 = 32;
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// ggml's type names (`enum ggml_type`), including the ones OLC does not implement, so that a
/// refusal can say what the file holds. Numbers absent here were removed from ggml.
const GGML_TYPE_NAMES: &[(u32, &str)] = &[
    (0, "F32"),
    (1, "F16"),
    (2, "Q4_0"),
    (3, "Q4_1"),
    (6, "Q5_0"),
    (7, "Q5_1"),
    (8, "Q8_0"),
    (9, "Q8_1"),
    (10, "Q2_K"),
    (11, "Q3_K"),
    (12, "Q4_K"),
    (13, "Q5_K"),
    (14, "Q6_K"),
    (15, "Q8_K"),
    (16, "IQ2_XXS"),
    (17, "IQ2_XS"),
    (18, "IQ3_XXS"),
    (19, "IQ1_S"),
    (20, "IQ4_NL"),
    (21, "IQ3_S"),
    (22, "IQ2_S"),
    (23, "IQ4_XS"),
    (24, "I8"),
    (25, "I16"),
    (26, "I32"),
    (27, "I64"),
    (28, "F64"),
    (29, "IQ1_M"),
    (30, "BF16"),
    (34, "TQ1_0"),
    (35, "TQ2_0"),
    (39, "MXFP4"),
];

/// ggml's name for a type number, or `unknown`.
pub fn ggml_type_name(id: u32) -> &'static str {
    GGML_TYPE_NAMES
        .iter()
        .find(|(n, _)| *n == id)
        .map_or("unknown", |(_, name)| name)
}

fn supported_types() -> String {
    QuantType::ALL
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One entry of the tensor directory, validated: its type is one OLC implements and its
/// bytes lie inside the file's data section.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` is the row length (ggml's `ne0`), `dims[1]` the number of rows.
    pub dims: Vec<u64>,
    pub ty: QuantType,
    /// From the start of the data section.
    pub offset: u64,
    /// `ty.matrix_bytes(rows, cols)`.
    pub size: u64,
}

impl TensorInfo {
    /// Length of one row (`dims[0]`).
    pub fn cols(&self) -> usize {
        // Validated to fit in usize when the file was opened.
        self.dims.first().map_or(1, |&d| d as usize)
    }

    /// All dimensions but the first, multiplied.
    pub fn rows(&self) -> usize {
        self.dims.iter().skip(1).product::<u64>() as usize
    }

    /// The shape as Hugging Face (and numpy) write it: outermost first.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// An opened GGUF file: its metadata and tensor directory in memory, its data on disk.
pub struct GgufFile {
    path: PathBuf,
    file: File,
    version: u32,
    metadata: Vec<(String, Value)>,
    keys: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
    file_len: u64,
}

/// Counts only: the metadata holds vocabularies of a hundred thousand strings.
impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

/// Whether `path` starts with GGUF's magic; reads four bytes.
pub fn is_gguf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == MAGIC
}

impl GgufFile {
    /// Reads and validates the header and the tensor directory.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
        let file_len = file.metadata().map_err(|e| ModelError::io(path, e))?.len();
        let reader = BufReader::with_capacity(1 << 16, &file);
        let mut r = Bounded {
            inner: reader,
            pos: 0,
            len: file_len,
            path,
        };
        let header = read_header(&mut r)?;
        let header_end = r.pos;
        drop(r);
        finish(path, file, file_len, header, header_end)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// 2 or 3.
    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Where the data section starts, from the beginning of the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Every metadata entry, in file order.
    pub fn metadata(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.keys
            .get(key)
            .and_then(|&i| self.metadata.get(i))
            .map(|(_, v)| v)
    }

    /// `general.architecture`, if it is a string.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(Value::as_str)
    }

    /// The tensor directory, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).and_then(|&i| self.tensors.get(i))
    }

    /// Reads one tensor's bytes, as stored.
    pub fn read_tensor(&self, info: &TensorInfo) -> Result<Vec<u8>> {
        let start = self
            .data_offset
            .checked_add(info.offset)
            .filter(|s| s.checked_add(info.size).is_some_and(|e| e <= self.file_len))
            .ok_or_else(|| ModelError::BadTensor {
                path: self.path.clone(),
                tensor: info.name.clone(),
                reason: "lies outside the file".into(),
            })?;
        // At most the file's length (every extent was checked at open); `load` also refuses a
        // file longer than its configuration justifies before reading any tensor.
        let len = usize::try_from(info.size).map_err(|_| ModelError::BadTensor {
            path: self.path.clone(),
            tensor: info.name.clone(),
            reason: "is larger than this machine can address".into(),
        })?;
        let mut buf = vec![0u8; len];
        let mut f = &self.file;
        f.seek(SeekFrom::Start(start))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| ModelError::io(&self.path, e))?;
        Ok(buf)
    }

    // Typed metadata access. Absent keys are `Ok(None)`; a present key of the wrong type is an
    // error naming it, since a writer that put a string where a count belongs is not a file
    // we understand.

    pub(crate) fn u64_key(&self, key: &str) -> Result<Option<u64>> {
        self.typed(key, "a non-negative integer", Value::as_u64)
    }

    pub(crate) fn f64_key(&self, key: &str) -> Result<Option<f64>> {
        self.typed(key, "a float", Value::as_f64)
    }

    pub(crate) fn bool_key(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "a bool", Value::as_bool)
    }

    pub(crate) fn str_key(&self, key: &str) -> Result<Option<&str>> {
        self.typed(key, "a string", Value::as_str)
    }

    pub(crate) fn array_key(&self, key: &str) -> Result<Option<&Array>> {
        self.typed(key, "an array", Value::as_array)
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        f: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => f(v).map(Some).ok_or_else(|| {
                ModelError::gguf_key(
                    &self.path,
                    key,
                    format!("expected {expected}, found {} {v}", v.type_name()),
                )
            }),
        }
    }

    pub(crate) fn key_error(&self, key: &str, reason: impl Into<String>) -> ModelError {
        ModelError::gguf_key(&self.path, key, reason)
    }

    pub(crate) fn required<T>(&self, key: &str, v: Option<T>) -> Result<T> {
        v.ok_or_else(|| self.key_error(key, "is missing"))
    }
}

fn tensor_error(path: &Path, name: &str, reason: impl Into<String>) -> ModelError {
    ModelError::BadTensor {
        path: path.to_path_buf(),
        tensor: name.to_string(),
        reason: reason.into(),
    }
}

/// Checks the tensor directory against the file: types, sizes, alignment, extents, overlaps.
fn finish(
    path: &Path,
    file: File,
    file_len: u64,
    header: Header,
    header_end: u64,
) -> Result<GgufFile> {
    let mut keys = HashMap::with_capacity(header.metadata.len());
    for (i, (k, _)) in header.metadata.iter().enumerate() {
        keys.insert(k.clone(), i);
    }
    let alignment = match keys
        .get(ALIGNMENT_KEY)
        .and_then(|&i| header.metadata.get(i))
    {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => v
            .as_u64()
            .filter(|a| a.is_power_of_two() && *a <= 1 << 30)
            .ok_or_else(|| {
                ModelError::gguf_key(
                    path,
                    ALIGNMENT_KEY,
                    format!("{} {v} is not a power of two", v.type_name()),
                )
            })?,
    };
    let data_offset = header_end
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| ModelError::gguf(path, "the data section offset overflows"))?;
    if !header.tensors.is_empty() && data_offset > file_len {
        return Err(ModelError::gguf(
            path,
            format!(
                "the data section would start at byte {data_offset}, past the end of the {file_len}-byte file"
            ),
        ));
    }
    let data_len = file_len.saturating_sub(data_offset);

    let mut tensors = Vec::with_capacity(header.tensors.len());
    let mut by_name = HashMap::with_capacity(header.tensors.len());
    for raw in header.tensors {
        if by_name.contains_key(&raw.name) {
            return Err(ModelError::DuplicateTensor {
                path: path.to_path_buf(),
                tensor: raw.name,
            });
        }
        let info = check_tensor(path, raw, alignment, data_len)?;
        by_name.insert(info.name.clone(), tensors.len());
        tensors.push(info);
    }

    let mut order: Vec<&TensorInfo> = tensors.iter().collect();
    order.sort_by_key(|t| t.offset);
    for pair in order.windows(2) {
        if let [a, b] = pair
            && a.offset + a.size > b.offset
        {
            return Err(tensor_error(
                path,
                &b.name,
                format!("overlaps tensor `{}`", a.name),
            ));
        }
    }

    Ok(GgufFile {
        path: path.to_path_buf(),
        file,
        version: header.version,
        metadata: header.metadata,
        keys,
        tensors,
        by_name,
        alignment,
        data_offset,
        file_len,
    })
}

fn check_tensor(path: &Path, raw: RawTensor, alignment: u64, data_len: u64) -> Result<TensorInfo> {
    let name = raw.name.as_str();
    let ty =
        QuantType::from_ggml(raw.ggml_type).ok_or_else(|| ModelError::UnsupportedTensorType {
            path: path.to_path_buf(),
            tensor: raw.name.clone(),
            id: raw.ggml_type,
            type_name: ggml_type_name(raw.ggml_type),
            supported: supported_types(),
        })?;
    if raw.dims.contains(&0) {
        return Err(tensor_error(
            path,
            name,
            format!("has a zero dimension in {:?}", raw.dims),
        ));
    }
    let elems = raw
        .dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= data_len)
        .ok_or_else(|| {
            tensor_error(
                path,
                name,
                format!(
                    "dimensions {:?} hold more elements than the file has bytes",
                    raw.dims
                ),
            )
        })?;
    // `elems <= data_len`, a file length, so both factors fit in usize on 64-bit targets; the
    // conversions guard 32-bit ones.
    let cols = raw.dims.first().copied().unwrap_or(1);
    let (Ok(cols), Ok(rows)) = (usize::try_from(cols), usize::try_from(elems / cols.max(1))) else {
        return Err(tensor_error(
            path,
            name,
            "is larger than this machine can address",
        ));
    };
    let size = ty.matrix_bytes(rows, cols).map_err(|_| {
        tensor_error(
            path,
            name,
            format!(
                "row length {cols} is not a whole number of {ty} blocks ({} weights each)",
                ty.block_elems()
            ),
        )
    })? as u64;
    if !raw.offset.is_multiple_of(alignment) {
        return Err(tensor_error(
            path,
            name,
            format!(
                "offset {} is not a multiple of the alignment {alignment}",
                raw.offset
            ),
        ));
    }
    if raw
        .offset
        .checked_add(size)
        .is_none_or(|end| end > data_len)
    {
        return Err(tensor_error(
            path,
            name,
            format!(
                "{size} bytes at offset {} run past the end of the {data_len}-byte data section",
                raw.offset
            ),
        ));
    }
    Ok(TensorInfo {
        name: raw.name,
        dims: raw.dims,
        ty,
        offset: raw.offset,
        size,
    })
}
