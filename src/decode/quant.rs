//! Weight matrices for decoding, kept in the fewest bytes that still give back every value
//! exactly: GGUF's Q4_1 or Q8_0 blocks where the weights are such blocks (a checkpoint loaded from
//! a quantized GGUF, whose f32 training copy is their exact dequantization), f32 otherwise.
//!
//! Decoding one token reads every weight once, so its speed is bytes per token: SmolLM2-135M is
//! 538 MB a token at f32 and 96.5 MB in Q4_1 (with its Q8_0 head). Finding the blocks again from the f32 values, rather
//! than keeping the file's bytes, covers every loader and notices any change to the weights (a
//! merged adapter or a full fine-tune no longer fits the blocks and stays f32), so the copy never
//! differs from the weights training sees.
//!
//! Layout: `rows = out` features, each row `cols = in` values long, in blocks of 32 along the row
//! (as ggml stores a `[out, in]` weight).

use std::sync::Arc;

use half::f16;

use crate::io::gguf::TensorType;

pub const BLOCK: usize = 32;

/// One `[rows, cols]` weight, row-major.
#[derive(Debug, Clone)]
pub struct QMatrix {
    pub rows: usize,
    pub cols: usize,
    pub data: QData,
}

/// Blocks are shared, not copied, by a clone: the decoder and a weight still waiting for its f32
/// values ([`crate::model::Llama::from_weights`]) hold the same ones.
#[derive(Debug, Clone)]
pub enum QData {
    F32(Vec<f32>),
    Q4_1(Arc<[BlockQ4_1]>),
    Q8_0(Arc<[BlockQ8_0]>),
}

/// A block's scale as stored. Natively it is the file's f16: decoding reads every weight once a
/// token, so the 4 bytes saved per Q4_1 block are 13 % fewer bytes a token for SmolLM2 (96.5 MB,
/// what llama.cpp reads), and the AVX2 kernels widen it in one instruction (F16C). In the browser
/// it is an f32: SIMD128 cannot widen an f16, and the page's one thread is bound by arithmetic,
/// not by memory.
#[cfg(not(target_arch = "wasm32"))]
pub type Scale = f16;
#[cfg(target_arch = "wasm32")]
pub type Scale = f32;

/// An f32 that an f16 holds exactly (every scale is one), as a [`Scale`].
#[inline(always)]
fn narrow(x: f32) -> Scale {
    #[cfg(not(target_arch = "wasm32"))]
    return f16::from_f32(x);
    #[cfg(target_arch = "wasm32")]
    x
}

#[inline(always)]
fn widen(s: Scale) -> f32 {
    #[cfg(not(target_arch = "wasm32"))]
    return s.to_f32();
    #[cfg(target_arch = "wasm32")]
    s
}

/// `x = q * d + m`, q in 0..16: one scale `d` and one minimum `m` (both f16 values), 16 bytes of
/// nibbles: low nibbles are elements 0..16, high nibbles 16..32. Scales sit with their nibbles,
/// so a row is one stream of memory.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub(super) d: Scale,
    pub(super) m: Scale,
    pub qs: [u8; 16],
}

/// `x = d * q`, q in -127..=127: one scale and 32 signed bytes.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub(super) d: Scale,
    pub qs: [i8; 32],
}

impl BlockQ4_1 {
    pub fn new(d: f32, m: f32, qs: [u8; 16]) -> Self {
        Self { d: narrow(d), m: narrow(m), qs }
    }

    #[inline(always)]
    pub fn d(&self) -> f32 {
        widen(self.d)
    }

    #[inline(always)]
    pub fn m(&self) -> f32 {
        widen(self.m)
    }

    /// Both f16 scales as one word, `d` in the low half (natively, for F16C to widen together).
    #[cfg(not(target_arch = "wasm32"))]
    #[inline(always)]
    pub fn scale_bits(&self) -> u32 {
        u32::from(self.d.to_bits()) | u32::from(self.m.to_bits()) << 16
    }
}

impl BlockQ8_0 {
    pub fn new(d: f32, qs: [i8; 32]) -> Self {
        Self { d: narrow(d), qs }
    }

    #[inline(always)]
    pub fn d(&self) -> f32 {
        widen(self.d)
    }
}

impl QMatrix {
    /// The most compact exact form of the row-major `[rows, cols]` values `w`.
    pub fn exact(rows: usize, cols: usize, w: Vec<f32>) -> Self {
        assert_eq!(w.len(), rows * cols, "weight of {} values is not {rows} x {cols}", w.len());
        let data = if cols % BLOCK != 0 {
            QData::F32(w)
        } else if let Some(q) = q4_1(&w) {
            q
        } else if let Some(q) = q8_0(&w) {
            q
        } else {
            QData::F32(w)
        };
        Self { rows, cols, data }
    }

    /// A GGUF tensor's Q4_1 or Q8_0 blocks as stored (`rows` of `cols` values, whole blocks).
    pub fn from_gguf(ty: TensorType, rows: usize, cols: usize, bytes: &[u8]) -> Option<Self> {
        let f16_at = |b: &[u8], i: usize| f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
        let blocks = rows.checked_mul(cols)? / BLOCK;
        if cols % BLOCK != 0 || bytes.len() != blocks.checked_mul(ty.block().1)? {
            return None;
        }
        let data = match ty {
            TensorType::Q4_1 => QData::Q4_1(
                bytes
                    .chunks_exact(20)
                    .map(|b| BlockQ4_1::new(f16_at(b, 0), f16_at(b, 2), b[4..20].try_into().expect("16 bytes")))
                    .collect(),
            ),
            TensorType::Q8_0 => QData::Q8_0(
                bytes
                    .chunks_exact(34)
                    .map(|b| BlockQ8_0::new(f16_at(b, 0), std::array::from_fn(|j| b[2 + j] as i8)))
                    .collect(),
            ),
            _ => return None,
        };
        Some(Self { rows, cols, data })
    }

    /// The matrix with row `i` taken from row `sources[i]`.
    pub fn rows_from(self, sources: &[usize]) -> Self {
        let nb = self.cols / BLOCK;
        let pick = |i: usize| sources[i / nb.max(1)] * nb + i % nb.max(1);
        let data = match self.data {
            QData::F32(w) => QData::F32((0..w.len()).map(|i| w[sources[i / self.cols] * self.cols + i % self.cols]).collect()),
            QData::Q4_1(b) => QData::Q4_1((0..b.len()).map(|i| b[pick(i)]).collect()),
            QData::Q8_0(b) => QData::Q8_0((0..b.len()).map(|i| b[pick(i)]).collect()),
        };
        Self { data, ..self }
    }

    /// Element `c` of every row.
    pub fn column(&self, c: usize) -> Vec<f32> {
        let (nb, b, j) = (self.cols / BLOCK, c / BLOCK, c % BLOCK);
        match &self.data {
            QData::F32(w) => (0..self.rows).map(|r| w[r * self.cols + c]).collect(),
            QData::Q4_1(blocks) => (0..self.rows)
                .map(|r| {
                    let blk = &blocks[r * nb + b];
                    let q = if j < 16 { blk.qs[j] & 0x0f } else { blk.qs[j - 16] >> 4 };
                    q as f32 * blk.d() + blk.m()
                })
                .collect(),
            QData::Q8_0(blocks) => (0..self.rows).map(|r| blocks[r * nb + b].d() * blocks[r * nb + b].qs[j] as f32).collect(),
        }
    }

    /// Where its blocks live, None for f32 values: two matrices share their blocks exactly when
    /// this is equal (the blocks stay where they are while anything holds them).
    pub fn blocks_at(&self) -> Option<usize> {
        match &self.data {
            QData::F32(_) => None,
            QData::Q4_1(b) => Some(Arc::as_ptr(b).cast::<u8>() as usize),
            QData::Q8_0(b) => Some(Arc::as_ptr(b).cast::<u8>() as usize),
        }
    }

    pub fn format(&self) -> &'static str {
        match self.data {
            QData::F32(_) => "f32",
            QData::Q4_1 { .. } => "Q4_1",
            QData::Q8_0 { .. } => "Q8_0",
        }
    }

    /// Bytes the matrix occupies (what one decoded token reads).
    pub fn bytes(&self) -> usize {
        match &self.data {
            QData::F32(w) => w.len() * 4,
            QData::Q4_1(b) => std::mem::size_of_val(&b[..]),
            QData::Q8_0(b) => std::mem::size_of_val(&b[..]),
        }
    }

    /// Row `r` as f32 into `out` (`cols` long): the same values the f32 weights hold.
    #[inline(always)]
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        let c = self.cols;
        match &self.data {
            QData::F32(w) => out.copy_from_slice(&w[r * c..(r + 1) * c]),
            _ => {
                for (b, o) in out.chunks_exact_mut(BLOCK).enumerate() {
                    o.copy_from_slice(&self.block(r, b));
                }
            }
        }
    }

    /// The 32 values of block `b` of row `r` (`cols` must be whole blocks): the same values the
    /// f32 weights hold.
    #[inline(always)]
    pub fn block(&self, r: usize, b: usize) -> [f32; BLOCK] {
        let at = r * (self.cols / BLOCK) + b;
        let mut o = [0.0f32; BLOCK];
        match &self.data {
            QData::F32(w) => o.copy_from_slice(&w[at * BLOCK..(at + 1) * BLOCK]),
            QData::Q4_1(blocks) => {
                let b = &blocks[at];
                let (d, m) = (b.d(), b.m());
                for j in 0..BLOCK / 2 {
                    o[j] = (b.qs[j] & 0x0f) as f32 * d + m;
                    o[j + BLOCK / 2] = (b.qs[j] >> 4) as f32 * d + m;
                }
            }
            QData::Q8_0(blocks) => {
                let b = &blocks[at];
                let d = b.d();
                for j in 0..BLOCK {
                    o[j] = d * b.qs[j] as f32;
                }
            }
        }
        o
    }

    /// Row `r` when the matrix is stored at f32 (read in place, without a copy).
    #[inline(always)]
    pub fn f32_row(&self, r: usize) -> Option<&[f32]> {
        match &self.data {
            QData::F32(w) => Some(&w[r * self.cols..(r + 1) * self.cols]),
            _ => None,
        }
    }
}

/// An f32 that an f16 holds exactly.
fn f16_exact(x: f32) -> bool {
    f16::from_f32(x).to_f32() == x
}

/// `w` as Q4_1 blocks if every block is `q * d + m` with `d`, `m` f16 values and q in 0..16,
/// as llama.cpp writes them: the block's minimum is `m` (q = 0) and its maximum `15 d + m`.
fn q4_1(w: &[f32]) -> Option<QData> {
    let mut blocks = Vec::with_capacity(w.len() / BLOCK);
    for x in w.chunks_exact(BLOCK) {
        let (lo, hi) = x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        if !f16_exact(lo) || !hi.is_finite() {
            return None;
        }
        let d = f16::from_f32((hi - lo) / 15.0).to_f32();
        let level = |v: f32| -> Option<u8> {
            let q = if d == 0.0 { 0.0 } else { ((v - lo) / d).round() };
            (0.0..=15.0).contains(&q).then_some(q as u8).filter(|&q| q as f32 * d + lo == v)
        };
        let mut qs = [0u8; 16];
        for j in 0..BLOCK / 2 {
            qs[j] = level(x[j])? | level(x[j + BLOCK / 2])? << 4;
        }
        blocks.push(BlockQ4_1::new(d, lo, qs));
    }
    Some(QData::Q4_1(blocks.into()))
}

/// `w` as Q8_0 blocks if every block is `d * q` with `d` an f16 value and |q| <= 127.
fn q8_0(w: &[f32]) -> Option<QData> {
    let mut blocks = Vec::with_capacity(w.len() / BLOCK);
    for x in w.chunks_exact(BLOCK) {
        let amax = x.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
        if !amax.is_finite() {
            return None;
        }
        let d = f16::from_f32(amax / 127.0).to_f32();
        let mut qs = [0i8; 32];
        for (q, &v) in qs.iter_mut().zip(x) {
            let l = if d == 0.0 { 0.0 } else { (v / d).round() };
            if !(-127.0..=127.0).contains(&l) || d * l != v {
                return None;
            }
            *q = l as i8;
        }
        blocks.push(BlockQ8_0::new(d, qs));
    }
    Some(QData::Q8_0(blocks.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::gguf::dequantize;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// GGUF blocks written the way llama.cpp's quantizer writes them, from random values.
    fn gguf_blocks(ty: TensorType, n: usize, seed: u64) -> Vec<u8> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut out = Vec::new();
        for _ in 0..n / BLOCK {
            let x: Vec<f32> = (0..BLOCK).map(|_| rng.random_range(-0.2f32..0.3)).collect();
            match ty {
                TensorType::Q4_1 => {
                    let (lo, hi) = x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
                    let d = (hi - lo) / 15.0;
                    out.extend(f16::from_f32(d).to_le_bytes());
                    out.extend(f16::from_f32(lo).to_le_bytes());
                    let q = |v: f32| (((v - lo) / d).round() as u8).min(15);
                    out.extend((0..16).map(|j| q(x[j]) | q(x[j + 16]) << 4));
                }
                TensorType::Q8_0 => {
                    let d = x.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 127.0;
                    out.extend(f16::from_f32(d).to_le_bytes());
                    out.extend(x.iter().map(|v| (v / d).round() as i8 as u8));
                }
                _ => unreachable!(),
            }
        }
        out
    }

    fn rows(m: &QMatrix) -> Vec<f32> {
        let mut out = vec![0.0; m.rows * m.cols];
        for (r, o) in out.chunks_exact_mut(m.cols).enumerate() {
            m.row_into(r, o);
        }
        out
    }

    #[test]
    fn gguf_blocks_are_found_again_and_give_back_every_value() {
        for (ty, want) in [(TensorType::Q4_1, "Q4_1"), (TensorType::Q8_0, "Q8_0")] {
            let w = dequantize(ty, &gguf_blocks(ty, 4 * 64, 3));
            let m = QMatrix::exact(4, 64, w.clone());
            assert_eq!(m.format(), want);
            assert_eq!(rows(&m), w, "{want}: the decoding copy must hold the same values");
            assert!(m.bytes() * 3 < w.len() * 4, "{want}: {} bytes", m.bytes());
            // Read straight from the file's bytes: the same matrix.
            let file = gguf_blocks(ty, 4 * 64, 3);
            let stored = QMatrix::from_gguf(ty, 4, 64, &file).unwrap();
            assert_eq!(rows(&stored), w);
            // Natively a token reads exactly the file's bytes (f16 scales kept as stored).
            #[cfg(not(target_arch = "wasm32"))]
            assert_eq!((stored.bytes(), m.bytes()), (file.len(), file.len()), "{want}");
            assert_eq!(stored.column(37), (0..4).map(|r| w[r * 64 + 37]).collect::<Vec<_>>());
            let swapped = stored.rows_from(&[2, 0, 3, 1]);
            assert_eq!(rows(&swapped)[..64], w[2 * 64..3 * 64]);
            assert_eq!(rows(&swapped)[3 * 64..], w[64..128]);
        }
    }

    #[test]
    fn anything_else_stays_f32() {
        let mut w = dequantize(TensorType::Q4_1, &gguf_blocks(TensorType::Q4_1, 64, 5));
        // A merged adapter's tiny change to one value breaks the block.
        w[7] += 1e-4;
        let m = QMatrix::exact(2, 32, w.clone());
        assert_eq!(m.format(), "f32");
        assert_eq!(rows(&m), w);
        // Rows that are not whole blocks, and non-finite values.
        assert_eq!(QMatrix::exact(1, 3, vec![0.0, 0.5, 1.0]).format(), "f32");
        assert_eq!(QMatrix::exact(1, 32, vec![f32::NAN; 32]).format(), "f32");
        assert_eq!(QMatrix::exact(1, 32, vec![0.0; 32]).format(), "Q4_1");
    }
}
