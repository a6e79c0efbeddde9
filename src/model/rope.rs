//! Rotary position embeddings, in transformers' "rotate half" layout: the two halves of each head
//! form the (real, imaginary) pairs. Loaders of interleaved checkpoints (GGUF, llama2.c) permute
//! q/k rows into this layout once, so adapters keep PEFT's meaning.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};

#[derive(Module, Debug)]
pub struct RotaryEmbedding {
    /// `[max_positions, head_dim]`: cos(p * inv_freq) for both halves.
    cos: Tensor<2>,
    sin: Tensor<2>,
    pub max_positions: usize,
}

impl RotaryEmbedding {
    pub fn new(head_dim: usize, max_positions: usize, theta: f64, device: &Device) -> Self {
        // A corrupt header must not make us allocate gigabytes of tables.
        let max_positions = max_positions.min(1 << 15);
        let half = head_dim / 2;
        let inv_freq: Vec<f64> =
            (0..half).map(|i| 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64)).collect();
        let mut cos = Vec::with_capacity(max_positions * head_dim);
        let mut sin = Vec::with_capacity(max_positions * head_dim);
        for p in 0..max_positions {
            for _ in 0..2 {
                for f in &inv_freq {
                    let angle = p as f64 * f;
                    cos.push(angle.cos() as f32);
                    sin.push(angle.sin() as f32);
                }
            }
        }
        let shape = [max_positions, head_dim];
        Self {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
            max_positions,
        }
    }

    /// Rotates `x: [batch, heads, seq, head_dim]` by the angles of `positions: [batch, seq]`.
    pub fn apply(&self, x: Tensor<4>, positions: &Tensor<2, Int>) -> Tensor<4> {
        let [b, _h, t, d] = x.dims();
        let flat = positions.clone().reshape([b * t]);
        let cos = self.cos.clone().select(0, flat.clone()).reshape([b, 1, t, d]);
        let sin = self.sin.clone().select(0, flat).reshape([b, 1, t, d]);
        x.clone() * cos + rotate_half(x) * sin
    }
}

/// `[x1, x2] -> [-x2, x1]` on the last dimension.
fn rotate_half(x: Tensor<4>) -> Tensor<4> {
    let d = x.dims()[3];
    let x1 = x.clone().narrow(3, 0, d / 2);
    let x2 = x.narrow(3, d / 2, d / 2);
    Tensor::cat(vec![x2.neg(), x1], 3)
}
