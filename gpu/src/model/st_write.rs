//! Writing safetensors files tensor by tensor, so a checkpoint far larger than we want to hold
//! in memory can be generated straight to disk, with a header byte-identical run to run.

use std::io::Write;

/// One tensor's header entry; the bytes follow in the same order as the entries.
#[derive(Debug, Clone)]
pub(crate) struct TensorSpec {
    pub name: String,
    /// safetensors spelling: "F32", "BF16", "F16".
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    pub byte_len: usize,
}

/// The 8-byte length prefix and the JSON header, padded with spaces to a multiple of 8 bytes
/// (as the reference implementation does, so that tensor data is aligned).
pub(crate) fn header(tensors: &[TensorSpec], metadata: &[(&str, &str)]) -> Vec<u8> {
    let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let mut entries = Vec::with_capacity(tensors.len() + 1);
    if !metadata.is_empty() {
        let pairs: Vec<String> = metadata
            .iter()
            .map(|(k, v)| format!("{}:{}", quote(k), quote(v)))
            .collect();
        entries.push(format!("\"__metadata__\":{{{}}}", pairs.join(",")));
    }
    let mut offset = 0usize;
    for t in tensors {
        let shape: Vec<String> = t.shape.iter().map(usize::to_string).collect();
        entries.push(format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            quote(&t.name),
            t.dtype,
            shape.join(","),
            offset,
            offset + t.byte_len
        ));
        offset += t.byte_len;
    }
    let mut json = format!("{{{}}}", entries.join(",")).into_bytes();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out
}

/// A complete in-memory file from already-encoded tensor bytes (for tests).
#[cfg(test)]
pub(crate) fn to_bytes(tensors: &[(TensorSpec, Vec<u8>)], metadata: &[(&str, &str)]) -> Vec<u8> {
    let specs: Vec<TensorSpec> = tensors.iter().map(|(s, _)| s.clone()).collect();
    let mut out = header(&specs, metadata);
    for (_, bytes) in tensors {
        out.extend_from_slice(bytes);
    }
    out
}

/// Writes f32 values little-endian, in chunks, without building the whole tensor.
pub(crate) fn write_f32s<W: Write>(
    w: &mut W,
    count: usize,
    mut next: impl FnMut() -> f32,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4 * 4096);
    let mut left = count;
    while left > 0 {
        let n = left.min(4096);
        buf.clear();
        for _ in 0..n {
            buf.extend_from_slice(&next().to_le_bytes());
        }
        w.write_all(&buf)?;
        left -= n;
    }
    Ok(())
}
