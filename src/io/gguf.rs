//! GGUF v2/v3 reader (llama.cpp's single-file format): metadata, tensor directory, and f32
//! dequantization of F32, F16, BF16, Q8_0 and Q4_1 tensors.
//!
//! Hand-written rather than taken from a crate: the GGUF crates we checked read type tags straight
//! into Rust enums and unwrap allocation sizes taken from the file, so a corrupt download could
//! panic or worse. Every length and offset here is checked against the buffer first.

use std::collections::BTreeMap;

use half::{bf16, f16};

use super::bytes::{ByteReader, product, to_usize};
use crate::{Error, Result};

const MAGIC: &[u8; 4] = b"GGUF";

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    Array(Array),
}

/// A metadata array, stored as its element type (a vocabulary of 49k ids as 49k `u32`s, not 49k
/// enum values: memory stays within a small multiple of the file's bytes).
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    Str(Vec<String>),
}

impl Array {
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::F64(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::Str(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every element as f64, for a numeric array.
    pub fn numbers(&self) -> Option<Vec<f64>> {
        fn all<T: Copy + Into<f64>>(v: &[T]) -> Vec<f64> {
            v.iter().map(|&x| x.into()).collect()
        }
        Some(match self {
            Array::U8(v) => all(v),
            Array::I8(v) => all(v),
            Array::U16(v) => all(v),
            Array::I16(v) => all(v),
            Array::U32(v) => all(v),
            Array::I32(v) => all(v),
            Array::U64(v) => v.iter().map(|&x| x as f64).collect(),
            Array::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Array::F32(v) => all(v),
            Array::F64(v) => v.clone(),
            Array::Bool(_) | Array::Str(_) => return None,
        })
    }

    pub fn strings(&self) -> Option<&[String]> {
        match self {
            Array::Str(v) => Some(v),
            _ => None,
        }
    }
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) if v >= 0 => Some(v as u64),
            Value::I16(v) if v >= 0 => Some(v as u64),
            Value::I32(v) if v >= 0 => Some(v as u64),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// ggml tensor types this loader can turn into f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_1,
}

impl TensorType {
    fn from_id(id: u32) -> std::result::Result<Self, String> {
        Ok(match id {
            0 => Self::F32,
            1 => Self::F16,
            30 => Self::BF16,
            8 => Self::Q8_0,
            3 => Self::Q4_1,
            other => return Err(ggml_type_name(other)),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::Q8_0 => "Q8_0",
            Self::Q4_1 => "Q4_1",
        }
    }

    /// (elements per block, bytes per block)
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::Q8_0 => (32, 34),
            Self::Q4_1 => (32, 20),
        }
    }
}

fn ggml_type_name(id: u32) -> String {
    const NAMES: [&str; 40] = [
        "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K",
        "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S",
        "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16", "Q4_0_4_4", "Q4_0_4_8",
        "Q4_0_8_8", "TQ1_0", "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4",
    ];
    NAMES.get(id as usize).map_or_else(|| format!("unknown type id {id}"), |n| n.to_string())
}

#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the innermost (contiguous) dimension.
    pub dims: Vec<u64>,
    /// Raw ggml type id, kept so an unsupported one can be named in the error.
    pub type_id: u32,
    pub offset: u64,
}

impl TensorInfo {
    pub fn type_name(&self) -> String {
        ggml_type_name(self.type_id)
    }
    /// Row-major shape (outermost first), as transformers would write it. Checked: every tensor
    /// of a parsed file fits in its bytes, so its dims fit in `usize`.
    pub fn shape(&self) -> Result<Vec<usize>> {
        self.dims.iter().rev().map(|&d| to_usize(d, &self.name)).collect()
    }
}

/// A parsed GGUF file borrowing its bytes.
pub struct GgufFile<'a> {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    data: &'a [u8],
}

/// GGUF's value type ids.
fn value(r: &mut ByteReader, ty: u32, key: &str) -> Result<Value> {
    Ok(match ty {
        0 => Value::U8(r.u8(key)?),
        1 => Value::I8(i8::from_le_bytes(r.array(key)?)),
        2 => Value::U16(u16::from_le_bytes(r.array(key)?)),
        3 => Value::I16(i16::from_le_bytes(r.array(key)?)),
        4 => Value::U32(r.u32(key)?),
        5 => Value::I32(r.i32(key)?),
        6 => Value::F32(r.f32(key)?),
        7 => Value::Bool(bool_byte(r, key)?),
        8 => Value::Str(r.string(key)?),
        9 => Value::Array(array(r, key)?),
        10 => Value::U64(r.u64(key)?),
        11 => Value::I64(i64::from_le_bytes(r.array(key)?)),
        12 => Value::F64(f64::from_le_bytes(r.array(key)?)),
        other => return Err(unknown_type(key, other)),
    })
}

fn unknown_type(key: &str, ty: u32) -> Error {
    Error::format(format!(
        "GGUF key '{key}' has unknown value type {ty}; the file is corrupt or from a newer GGUF version"
    ))
}

fn bool_byte(r: &mut ByteReader, key: &str) -> Result<bool> {
    match r.u8(key)? {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(Error::format(format!("GGUF key '{key}': invalid bool byte {b}"))),
    }
}

/// A typed array: element type, count, elements. The count is checked against the bytes left
/// (at the element's stored size) before the vector is allocated; arrays do not nest.
fn array(r: &mut ByteReader, key: &str) -> Result<Array> {
    let elem = r.u32(key)?;
    let size: u64 = match elem {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8, // a string is at least its 8-byte length
        9 => return Err(Error::format(format!("GGUF key '{key}' nests arrays, which no model file does; the file is corrupt"))),
        other => return Err(unknown_type(key, other)),
    };
    let n = r.count(size, key)?;
    macro_rules! read {
        ($variant:ident, $t:ty) => {{
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(<$t>::from_le_bytes(r.array(key)?));
            }
            Array::$variant(v)
        }};
    }
    Ok(match elem {
        0 => read!(U8, u8),
        1 => read!(I8, i8),
        2 => read!(U16, u16),
        3 => read!(I16, i16),
        4 => read!(U32, u32),
        5 => read!(I32, i32),
        6 => read!(F32, f32),
        10 => read!(U64, u64),
        11 => read!(I64, i64),
        12 => read!(F64, f64),
        7 => Array::Bool((0..n).map(|_| bool_byte(r, key)).collect::<Result<_>>()?),
        _ => Array::Str((0..n).map(|_| r.string(key)).collect::<Result<_>>()?),
    })
}

impl<'a> GgufFile<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        if buf.len() < 4 && MAGIC.starts_with(buf) && !buf.is_empty() {
            return Err(Error::format(format!(
                "GGUF file is truncated: only {} bytes; the download is probably incomplete, fetch it again",
                buf.len()
            )));
        }
        if buf.len() < 4 || &buf[..4] != MAGIC {
            let got = &buf[..buf.len().min(4)];
            return Err(Error::format(format!(
                "not a GGUF file: it starts with {got:?}, not \"GGUF\"; pass a .gguf model, an HF \
                 directory (config.json + model.safetensors), or a llama2.c .bin with --tokenizer"
            )));
        }
        let mut r = ByteReader::new(buf, "GGUF file");
        r.take(4, "magic")?;
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::Unsupported(format!(
                "GGUF version {version} is not supported (only versions 2 and 3)"
            )));
        }
        let n_tensors = r.u64("tensor count")?;
        let n_kv = r.u64("metadata count")?;
        // A metadata entry takes at least 12 bytes (key length, type, one byte), a tensor entry 24.
        let n_kv = r.check_count(n_kv, 13, "the metadata count")?;
        r.check_count(n_tensors, 24, "the tensor count")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string("metadata key")?;
            let ty = r.u32(&key)?;
            let value = value(&mut r, ty, &key)?;
            metadata.insert(key, value);
        }
        let n_tensors = r.check_count(n_tensors, 24, "the tensor count")?;
        let mut tensors = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = r.string("tensor name")?;
            let n_dims = r.u32(&name)?;
            if n_dims == 0 || n_dims > 4 {
                return Err(Error::format(format!("tensor '{name}' has {n_dims} dimensions (expected 1..4)")));
            }
            let dims = (0..n_dims).map(|_| r.u64(&name)).collect::<Result<Vec<_>>>()?;
            let type_id = r.u32(&name)?;
            let offset = r.u64(&name)?;
            tensors.push(TensorInfo { name, dims, type_id, offset });
        }
        let alignment = metadata.get("general.alignment").and_then(Value::as_u64).unwrap_or(32);
        if alignment == 0 || !alignment.is_power_of_two() || alignment > 1 << 16 {
            return Err(Error::format(format!(
                "general.alignment = {alignment} is not a power of two up to 65536; the file is corrupt"
            )));
        }
        let start = (r.pos() as u64).div_ceil(alignment) * alignment;
        let data = buf.get(to_usize(start, "the data offset").unwrap_or(usize::MAX)..).unwrap_or(&[]);
        let file = Self { version, metadata, tensors, data };
        // Check every tensor's extent now, so a truncated file fails at load with one message.
        for t in &file.tensors {
            if let Ok(ty) = TensorType::from_id(t.type_id) {
                file.tensor_bytes(t, ty)?;
            }
        }
        Ok(file)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The stored bytes of `t`, checked in u64 against the data section.
    fn tensor_bytes(&self, t: &TensorInfo, ty: TensorType) -> Result<&'a [u8]> {
        let what = format!("tensor '{}'", t.name);
        let n = product(&t.dims, &what)?;
        let (block, block_bytes) = ty.block();
        if t.dims[0] % block as u64 != 0 {
            return Err(Error::format(format!(
                "tensor '{}' of type {} has a row of {} elements, not a multiple of its block size {block}",
                t.name,
                ty.name(),
                t.dims[0]
            )));
        }
        let nbytes = product(&[n / block as u64, block_bytes as u64], &what)?;
        let end = t.offset.checked_add(nbytes).filter(|&e| e <= self.data.len() as u64).ok_or_else(|| {
            Error::format(format!(
                "GGUF file is truncated or corrupt: tensor '{}' needs bytes {}..{} of the data section \
                 but it has only {}; the download is probably incomplete, fetch it again",
                t.name,
                t.offset,
                t.offset as u128 + nbytes as u128,
                self.data.len()
            ))
        })?;
        // Both ends are within the slice, so they fit in usize.
        Ok(&self.data[t.offset as usize..end as usize])
    }

    /// Dequantizes a tensor to f32, in ggml's memory order (row-major over the reversed dims).
    pub fn dequantize(&self, t: &TensorInfo) -> Result<Vec<f32>> {
        let ty = TensorType::from_id(t.type_id).map_err(|name| {
            Error::Unsupported(format!(
                "tensor '{}' has ggml type {name}, which alignlab cannot load; supported types are \
                 F32, F16, BF16, Q8_0 and Q4_1 (re-quantize with llama.cpp's llama-quantize, e.g. to Q8_0)",
                t.name
            ))
        })?;
        Ok(dequantize(ty, self.tensor_bytes(t, ty)?))
    }
}

impl GgufFile<'_> {
    /// The stored blocks of a Q4_1 or Q8_0 tensor, as they are (for decoding from them); `None`
    /// for any other type.
    pub fn quantized(&self, t: &TensorInfo) -> Result<Option<(TensorType, &[u8])>> {
        match TensorType::from_id(t.type_id) {
            Ok(ty @ (TensorType::Q4_1 | TensorType::Q8_0)) => Ok(Some((ty, self.tensor_bytes(t, ty)?))),
            _ => Ok(None),
        }
    }
}

/// Bytes of `ty` to f32. `bytes` must hold whole blocks.
pub fn dequantize(ty: TensorType, bytes: &[u8]) -> Vec<f32> {
    let f16_at = |b: &[u8], i: usize| f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
    match ty {
        TensorType::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
        TensorType::F16 => bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        TensorType::BF16 => bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        // block: f16 scale d, 32 x i8 quants; x = d * q
        TensorType::Q8_0 => {
            let mut out = Vec::with_capacity(bytes.len() / 34 * 32);
            for blk in bytes.chunks_exact(34) {
                let d = f16_at(blk, 0);
                out.extend(blk[2..].iter().map(|&q| d * (q as i8) as f32));
            }
            out
        }
        // block: f16 scale d, f16 min m, 16 bytes of nibbles; low nibbles are elements 0..16,
        // high nibbles 16..32; x = d * q + m
        TensorType::Q4_1 => {
            let mut out = vec![0.0f32; bytes.len() / 20 * 32];
            for (blk, o) in bytes.chunks_exact(20).zip(out.chunks_exact_mut(32)) {
                let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
                for (j, &q) in blk[4..].iter().enumerate() {
                    o[j] = (q & 0x0f) as f32 * d + m;
                    o[j + 16] = (q >> 4) as f32 * d + m;
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_1_block_layout() {
        let mut blk = Vec::new();
        blk.extend(f16::from_f32(0.5).to_le_bytes());
        blk.extend(f16::from_f32(-1.0).to_le_bytes());
        blk.extend((0u8..16).map(|j| (15 - j) << 4 | j));
        let x = dequantize(TensorType::Q4_1, &blk);
        assert_eq!(x.len(), 32);
        assert_eq!(x[0], -1.0);
        assert_eq!(x[3], 0.5);
        assert_eq!(x[16], 6.5); // 15 * 0.5 - 1
        assert_eq!(x[31], -1.0);
    }

    #[test]
    fn q8_0_block_layout() {
        let mut blk = Vec::new();
        blk.extend(f16::from_f32(0.25).to_le_bytes());
        blk.extend((0..32).map(|j| (j as i8 - 16) as u8));
        let x = dequantize(TensorType::Q8_0, &blk);
        assert_eq!(x[0], -4.0);
        assert_eq!(x[31], 3.75);
    }

    #[test]
    fn rejects_bad_magic_and_truncation() {
        let err = GgufFile::parse(b"PK\x03\x04rest").err().unwrap().to_string();
        assert!(err.contains("not a GGUF file"), "{err}");
        let mut f = b"GGUF".to_vec();
        f.extend(3u32.to_le_bytes());
        f.extend(0u64.to_le_bytes());
        f.extend(1u64.to_le_bytes());
        f.extend(u64::MAX.to_le_bytes()); // key length far beyond the file
        let err = GgufFile::parse(&f).err().unwrap().to_string();
        assert!(err.contains("truncated"), "{err}");
    }
}
