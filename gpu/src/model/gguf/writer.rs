//! A minimal GGUF writer for tests: valid files to round-trip and to corrupt.

use super::value::{Array, Value, tag};

pub(crate) struct Tensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub bytes: Vec<u8>,
    /// Overrides the offset the writer would choose (to make bad files).
    pub offset: Option<u64>,
}

pub(crate) struct Writer {
    pub version: u32,
    pub alignment: u64,
    pub kvs: Vec<(String, Value)>,
    pub tensors: Vec<Tensor>,
}

impl Writer {
    pub fn new() -> Self {
        Writer {
            version: 3,
            alignment: 32,
            kvs: Vec::new(),
            tensors: Vec::new(),
        }
    }

    pub fn kv(&mut self, key: &str, value: Value) -> &mut Self {
        self.kvs.retain(|(k, _)| k != key);
        self.kvs.push((key.to_string(), value));
        self
    }

    pub fn remove(&mut self, key: &str) -> &mut Self {
        self.kvs.retain(|(k, _)| k != key);
        self
    }

    pub fn tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        ggml_type: u32,
        bytes: Vec<u8>,
    ) -> &mut Self {
        self.tensors.retain(|t| t.name != name);
        self.tensors.push(Tensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            ggml_type,
            bytes,
            offset: None,
        });
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kvs.len() as u64).to_le_bytes());
        for (k, v) in &self.kvs {
            put_str(&mut out, k);
            out.extend_from_slice(&value_tag(v).to_le_bytes());
            put_value(&mut out, v);
        }
        let align = |n: u64| n.next_multiple_of(self.alignment);
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.to_le_bytes());
            out.extend_from_slice(&t.offset.unwrap_or(offset).to_le_bytes());
            offsets.push(offset);
            offset = align(offset + t.bytes.len() as u64);
        }
        out.resize(align(out.len() as u64) as usize, 0);
        let data_start = out.len();
        for (t, off) in self.tensors.iter().zip(offsets) {
            out.resize(data_start + off as usize, 0);
            out.extend_from_slice(&t.bytes);
        }
        out.resize(data_start + offset as usize, 0);
        out
    }
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn value_tag(v: &Value) -> u32 {
    match v {
        Value::U8(_) => tag::U8,
        Value::I8(_) => tag::I8,
        Value::U16(_) => tag::U16,
        Value::I16(_) => tag::I16,
        Value::U32(_) => tag::U32,
        Value::I32(_) => tag::I32,
        Value::U64(_) => tag::U64,
        Value::I64(_) => tag::I64,
        Value::F32(_) => tag::F32,
        Value::F64(_) => tag::F64,
        Value::Bool(_) => tag::BOOL,
        Value::String(_) => tag::STRING,
        Value::Array(_) => tag::ARRAY,
    }
}

fn array_tag(a: &Array) -> u32 {
    match a {
        Array::U8(_) => tag::U8,
        Array::I8(_) => tag::I8,
        Array::U16(_) => tag::U16,
        Array::I16(_) => tag::I16,
        Array::U32(_) => tag::U32,
        Array::I32(_) => tag::I32,
        Array::U64(_) => tag::U64,
        Array::I64(_) => tag::I64,
        Array::F32(_) => tag::F32,
        Array::F64(_) => tag::F64,
        Array::Bool(_) => tag::BOOL,
        Array::String(_) => tag::STRING,
        Array::Array(_) => tag::ARRAY,
    }
}

pub(crate) fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::Array(a) => put_array(out, a),
    }
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&array_tag(a).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => each!(v),
        Array::U16(v) => each!(v),
        Array::I16(v) => each!(v),
        Array::U32(v) => each!(v),
        Array::I32(v) => each!(v),
        Array::U64(v) => each!(v),
        Array::I64(v) => each!(v),
        Array::F32(v) => each!(v),
        Array::F64(v) => each!(v),
        Array::Bool(v) => out.extend(v.iter().map(|b| u8::from(*b))),
        Array::String(v) => {
            for s in v {
                put_str(out, s);
            }
        }
        Array::Array(v) => {
            for x in v {
                put_array(out, x);
            }
        }
    }
}
