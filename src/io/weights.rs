//! Host-side tensors by name, in transformers' names and `[out, in]` layout. Every loader produces
//! this; [`crate::model::Llama::from_weights`] consumes it, checking each shape against the config.
//! A quantized GGUF's matrices stay as their blocks until taken, and are dequantized then, straight
//! into the layout the model wants: one pass over 4 bytes a weight instead of three (dequantize,
//! then read and write again to transpose), on the way to a ready model.

use std::collections::BTreeMap;

use crate::decode::quant::{BLOCK, QMatrix};
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }

    /// `[rows, cols] -> [cols, rows]`, e.g. HF `[out, in]` to burn's `[in, out]` Linear layout.
    /// Only called on tensors whose shape [`Weights::take`] checked as 2-D.
    pub fn transposed(&self) -> Self {
        let (r, c) = (self.shape[0], self.shape[1]);
        let mut out = vec![0.0f32; r * c];
        // In tiles of T x T, so the T source rows a tile reads stay in cache while each output
        // row is written T values at a time.
        const T: usize = 16;
        for i0 in (0..r).step_by(T) {
            let rows = T.min(r - i0);
            for j0 in (0..c).step_by(T) {
                for j in j0..(j0 + T).min(c) {
                    let dst = &mut out[j * r + i0..j * r + i0 + rows];
                    for (k, d) in dst.iter_mut().enumerate() {
                        *d = self.data[(i0 + k) * c + j];
                    }
                }
            }
        }
        Self::new(vec![c, r], out)
    }
}

/// A matrix as a checkpoint holds it: values, or a quantized GGUF's blocks not yet dequantized.
#[derive(Debug)]
enum Stored {
    Values(HostTensor),
    Blocks(QMatrix),
}

impl Stored {
    fn shape(&self) -> Vec<usize> {
        match self {
            Self::Values(t) => t.shape.clone(),
            Self::Blocks(q) => vec![q.rows, q.cols],
        }
    }
}

/// Runs `f(i, chunk)` on each `len`-long chunk of `out` (the last may be shorter). Natively the
/// chunks split over the cores: a model's weights are a few hundred MB written once, and on one
/// core dequantizing them was half the time from file to model (SmolLM2 to the device: 0.43-0.50
/// s on one core, 0.33-0.38 on two). The page's threaded build stays on one thread: there the
/// split gained nothing measurable (its "weights" 0.65-0.83 s split, 0.59-0.82 not).
fn each_chunk(out: &mut [f32], len: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if out.is_empty() {
        return;
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(len).enumerate().for_each(|(i, c)| f(i, c));
    }
    #[cfg(target_arch = "wasm32")]
    out.chunks_mut(len).enumerate().for_each(|(i, c)| f(i, c));
}

/// `q`'s values, `[rows, cols]`, 64 rows a task.
fn dequantized(q: &QMatrix) -> HostTensor {
    const ROWS: usize = 64;
    let cols = q.cols.max(1);
    let mut out = vec![0.0f32; q.rows * q.cols];
    each_chunk(&mut out, ROWS * cols, |t, rows| {
        for (k, row) in rows.chunks_exact_mut(cols).enumerate() {
            q.row_into(t * ROWS + k, row);
        }
    });
    HostTensor::new(vec![q.rows, q.cols], out)
}

/// `q`'s values transposed, `[cols, rows]`: the blocks of T rows at one block column are
/// dequantized (T x 32 values, in registers and L1), then written out as 32 runs of T values.
/// A task takes G block columns: its output is G x 32 whole rows, and it reads G neighbouring
/// blocks of each input row.
fn dequantized_transposed(q: &QMatrix) -> HostTensor {
    if q.cols % BLOCK != 0 {
        return dequantized(q).transposed();
    }
    const T: usize = 8;
    const G: usize = 2;
    let (r, c) = (q.rows, q.cols);
    let mut out = vec![0.0f32; r * c];
    each_chunk(&mut out, G * BLOCK * r.max(1), |s, slab| {
        let mut tile = [[0.0f32; BLOCK]; T];
        for i0 in (0..r).step_by(T) {
            let rows = T.min(r - i0);
            for g in 0..slab.len() / (BLOCK * r) {
                let b = s * G + g;
                for (k, t) in tile[..rows].iter_mut().enumerate() {
                    *t = q.block(i0 + k, b);
                }
                for j in 0..BLOCK {
                    let at = (g * BLOCK + j) * r + i0;
                    for (d, t) in slab[at..at + rows].iter_mut().zip(&tile) {
                        *d = t[j];
                    }
                }
            }
        }
    });
    HostTensor::new(vec![c, r], out)
}

/// A matrix as [`Weights::take_matrix`] gives it.
pub enum Matrix {
    /// Its values, in the layout asked for.
    Values(HostTensor),
    /// Its blocks, `[rows, cols]` as stored: [`Deferred::values`] makes the values when they are
    /// first needed ([`Weights::defer_blocks`]).
    Deferred(Deferred),
}

/// A quantized matrix whose f32 values are not made yet.
pub struct Deferred {
    pub blocks: QMatrix,
    /// The values are wanted transposed, `[cols, rows]` (a linear layer's, in burn's layout).
    pub transposed: bool,
}

impl Deferred {
    /// The shape of the values.
    pub fn shape(&self) -> [usize; 2] {
        let q = &self.blocks;
        if self.transposed { [q.cols, q.rows] } else { [q.rows, q.cols] }
    }

    /// The values, in the layout asked for.
    pub fn values(&self) -> HostTensor {
        if self.transposed { dequantized_transposed(&self.blocks) } else { dequantized(&self.blocks) }
    }
}

#[derive(Default, Debug)]
pub struct Weights {
    tensors: BTreeMap<String, Stored>,
    /// The blocks of the matrices taken so far, for the CPU decoder ([`Weights::take_spent_blocks`]).
    spent: BTreeMap<String, QMatrix>,
    /// [`Weights::take_matrix`] hands a quantized matrix over as its blocks.
    defer: bool,
}

impl FromIterator<(String, HostTensor)> for Weights {
    fn from_iter<I: IntoIterator<Item = (String, HostTensor)>>(iter: I) -> Self {
        let mut w = Self::default();
        for (name, t) in iter {
            w.insert(name, t);
        }
        w
    }
}

impl Weights {
    pub fn insert(&mut self, name: impl Into<String>, t: HostTensor) {
        self.tensors.insert(name.into(), Stored::Values(t));
    }

    /// A `[rows, cols]` matrix kept as its blocks until it is taken.
    pub fn insert_blocks(&mut self, name: impl Into<String>, q: QMatrix) {
        self.tensors.insert(name.into(), Stored::Blocks(q));
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Removes `name`, checking it has `shape`. The error names the tensor, both shapes and the
    /// likely cause, since a mismatch almost always means config and weights disagree.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        Ok(match self.remove(name, shape)? {
            Stored::Values(t) => t,
            Stored::Blocks(q) => {
                let t = dequantized(&q);
                self.spent.insert(name.to_string(), q);
                t
            }
        })
    }

    /// Matrices stored as blocks are taken as their blocks ([`Matrix::Deferred`]), their f32
    /// values made when a pass first reads them. On the CPU a first answer decodes from the
    /// blocks and needs no f32 copy: making it at load was most of the page's way from the
    /// downloaded file to a ready model.
    pub fn defer_blocks(&mut self) {
        self.defer = true;
    }

    /// The matrix `name` (checked as [`Weights::take`] does against `shape`, `[rows, cols]` as
    /// stored), transposed if asked: its values, or its blocks if they are deferred.
    pub fn take_matrix(&mut self, name: &str, shape: [usize; 2], transposed: bool) -> Result<Matrix> {
        let values = |t: HostTensor| Matrix::Values(if transposed { t.transposed() } else { t });
        Ok(match self.remove(name, &shape)? {
            Stored::Values(t) => values(t),
            Stored::Blocks(q) => {
                // A clone shares the blocks.
                self.spent.insert(name.to_string(), q.clone());
                let later = Deferred { blocks: q, transposed };
                if self.defer { Matrix::Deferred(later) } else { Matrix::Values(later.values()) }
            }
        })
    }

    /// The blocks of every matrix taken so far, by name, as the file stored them (rows
    /// un-permuted): the CPU decoder reads them instead of finding them again.
    pub fn take_spent_blocks(&mut self) -> BTreeMap<String, QMatrix> {
        std::mem::take(&mut self.spent)
    }

    fn remove(&mut self, name: &str, shape: &[usize]) -> Result<Stored> {
        let t = self.tensors.remove(name).ok_or_else(|| {
            Error::format(format!(
                "tensor '{name}' is missing from the checkpoint; is this a Llama-family model?"
            ))
        })?;
        if t.shape() != shape {
            return Err(Error::format(format!(
                "tensor '{name}' has shape {:?} but the model config implies {:?}; \
                 the config and the weights do not belong together",
                t.shape(),
                shape
            )));
        }
        Ok(t)
    }
}

/// Undoes llama.cpp's q/k row permutation (`convert_hf_to_gguf.py`'s `permute`), which turns
/// transformers' rotate-half layout into interleaved pairs. Row `h*hd + 2j + c` of the interleaved
/// matrix goes back to row `h*hd + c*hd/2 + j`.
pub fn unpermute_rotary_rows(t: &HostTensor, num_heads: usize) -> Result<HostTensor> {
    let &[rows, cols] = t.shape.as_slice() else {
        return Err(Error::format(format!(
            "an attention weight has shape {:?} where a matrix was expected; the file is corrupt",
            t.shape
        )));
    };
    check_rotary_heads(rows, num_heads)?;
    let mut out = vec![0.0f32; rows * cols];
    for (dst, src) in rotary_row_sources(rows, num_heads).into_iter().enumerate() {
        out[dst * cols..(dst + 1) * cols].copy_from_slice(&t.data[src * cols..(src + 1) * cols]);
    }
    Ok(HostTensor::new(t.shape.clone(), out))
}

/// That `rows` split into `num_heads` rotary heads of even size (what un-permuting needs).
pub fn check_rotary_heads(rows: usize, num_heads: usize) -> Result<()> {
    if num_heads == 0 || rows % num_heads != 0 || (rows / num_heads) % 2 != 0 {
        return Err(Error::format(format!(
            "cannot split {rows} rows into {num_heads} rotary heads of even size"
        )));
    }
    Ok(())
}

/// For each row of the un-permuted matrix, the row of llama.cpp's interleaved one it comes from.
/// `rows` must split into `num_heads` heads of even size (checked by the callers).
pub fn rotary_row_sources(rows: usize, num_heads: usize) -> Vec<usize> {
    let hd = rows / num_heads;
    let mut src = vec![0; rows];
    for h in 0..num_heads {
        for j in 0..hd / 2 {
            for c in 0..2 {
                src[h * hd + c * (hd / 2) + j] = h * hd + 2 * j + c;
            }
        }
    }
    src
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_roundtrip() {
        let t = HostTensor::new(vec![3, 130], (0..390).map(|x| x as f32).collect());
        let tt = t.transposed();
        assert_eq!(tt.shape, vec![130, 3]);
        assert_eq!(tt.data[1 * 3 + 2], t.data[2 * 130 + 1]);
        assert_eq!(tt.transposed().data, t.data);
    }

    #[test]
    fn blocks_taken_transposed_are_the_dequantized_values_transposed() {
        use crate::decode::quant::{BlockQ4_1, BlockQ8_0, QData};
        // 70 rows: not a whole number of the 8-row tiles nor of the 64-row tasks; 5 block
        // columns: not a whole number of the 2-column tasks.
        let (rows, cols) = (70, 160);
        let n = rows * cols / BLOCK;
        let q4 = (0..n).map(|i| BlockQ4_1::new(0.5 + i as f32 / 64.0, -1.0 - i as f32 / 32.0, std::array::from_fn(|j| (i * 7 + j * 13) as u8))).collect();
        let q8 = (0..n).map(|i| BlockQ8_0::new(0.25 - i as f32 / 128.0, std::array::from_fn(|j| (i as i32 * 5 - j as i32 * 9) as i8))).collect();
        for data in [QData::Q4_1(q4), QData::Q8_0(q8)] {
            let q = QMatrix { rows, cols, data };
            let mut w = Weights::default();
            w.insert_blocks("a", q.clone());
            w.insert_blocks("b", q.clone());
            w.insert_blocks("c", q.clone());
            let values = w.take("a", &[rows, cols]).unwrap();
            let Ok(Matrix::Values(t)) = w.take_matrix("b", [rows, cols], true) else { panic!("values, not deferred") };
            w.defer_blocks();
            let Ok(Matrix::Deferred(later)) = w.take_matrix("c", [rows, cols], true) else { panic!("deferred") };
            assert_eq!(later.shape(), [cols, rows]);
            assert_eq!(later.values().data, t.data, "the same values, made later");
            let untransposed = Deferred { blocks: later.blocks, transposed: false };
            assert_eq!(untransposed.values().data, values.data);
            let each = (0..rows * cols).all(|i| values.data[i] == q.block(i / cols, i % cols / BLOCK)[i % BLOCK]);
            assert!(each, "every value is its block's");
            assert_eq!(t.shape, vec![cols, rows]);
            assert_eq!(t.data, values.transposed().data);
            assert!(values.data.iter().any(|&x| x != values.data[0]));
            assert_eq!(w.take_spent_blocks().into_keys().collect::<Vec<_>>(), ["a", "b", "c"], "the blocks are handed on once taken");
        }
        let mut w = Weights::default();
        w.insert("c", HostTensor::new(vec![2, 3], vec![0.0; 6]));
        assert!(w.take_matrix("c", [3, 2], true).is_err(), "the shape is checked");
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(n_head, 2, hd/2, in).swapaxes(1, 2).reshape(out, in)
        let (heads, hd, cols) = (2, 4, 3);
        let hf: Vec<f32> = (0..heads * hd * cols).map(|x| x as f32).collect();
        let mut gguf = vec![0.0; hf.len()];
        for h in 0..heads {
            for c in 0..2 {
                for j in 0..hd / 2 {
                    let hf_row = h * hd + c * hd / 2 + j;
                    let gg_row = h * hd + j * 2 + c;
                    gguf[gg_row * cols..(gg_row + 1) * cols]
                        .copy_from_slice(&hf[hf_row * cols..(hf_row + 1) * cols]);
                }
            }
        }
        let back = unpermute_rotary_rows(&HostTensor::new(vec![heads * hd, cols], gguf), heads).unwrap();
        assert_eq!(back.data, hf);
    }
}
