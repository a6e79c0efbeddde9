//! Host-side tensors by name, in transformers' names and `[out, in]` layout. Every loader produces
//! this; [`crate::model::Llama::from_weights`] consumes it, checking each shape against the config.

use std::collections::BTreeMap;

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
        // Blocked so both sides stay in cache on large embedding-sized matrices.
        const B: usize = 64;
        for i0 in (0..r).step_by(B) {
            for j0 in (0..c).step_by(B) {
                for i in i0..(i0 + B).min(r) {
                    for j in j0..(j0 + B).min(c) {
                        out[j * r + i] = self.data[i * c + j];
                    }
                }
            }
        }
        Self::new(vec![c, r], out)
    }
}

#[derive(Default, Debug)]
pub struct Weights {
    tensors: BTreeMap<String, HostTensor>,
}

impl Weights {
    pub fn insert(&mut self, name: impl Into<String>, t: HostTensor) {
        self.tensors.insert(name.into(), t);
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

    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.get(name)
    }

    /// Removes `name`, checking it has `shape`. The error names the tensor, both shapes and the
    /// likely cause, since a mismatch almost always means config and weights disagree.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        let t = self.tensors.remove(name).ok_or_else(|| {
            Error::format(format!(
                "tensor '{name}' is missing from the checkpoint; is this a Llama-family model?"
            ))
        })?;
        if t.shape != shape {
            return Err(Error::format(format!(
                "tensor '{name}' has shape {:?} but the model config implies {:?}; \
                 the config and the weights do not belong together",
                t.shape, shape
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
    if num_heads == 0 || rows % num_heads != 0 || (rows / num_heads) % 2 != 0 {
        return Err(Error::format(format!(
            "cannot split {rows} rows into {num_heads} rotary heads of even size"
        )));
    }
    let mut out = vec![0.0f32; rows * cols];
    for (dst, src) in rotary_row_sources(rows, num_heads).into_iter().enumerate() {
        out[dst * cols..(dst + 1) * cols].copy_from_slice(&t.data[src * cols..(src + 1) * cols]);
    }
    Ok(HostTensor::new(t.shape.clone(), out))
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
