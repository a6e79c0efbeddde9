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

    /// cos and sin of `positions: [batch, seq]`, each `[batch, 1, seq, head_dim]`. Looked up once
    /// per forward pass and shared by every layer.
    pub fn angles(&self, positions: &Tensor<2, Int>) -> RopeAngles {
        let [b, t] = positions.dims();
        let d = self.cos.dims()[1];
        let flat = positions.clone().reshape([b * t]);
        RopeAngles {
            cos: self.cos.clone().select(0, flat.clone()).reshape([b, 1, t, d]),
            sin: self.sin.clone().select(0, flat).reshape([b, 1, t, d]),
        }
    }

    /// The `[max_positions, head_dim]` cos and sin tables (for decoding on the host).
    pub fn tables(&self) -> (Tensor<2>, Tensor<2>) {
        (self.cos.clone(), self.sin.clone())
    }

    /// Rotates `x: [batch, heads, seq, head_dim]` by the angles of `positions: [batch, seq]`.
    pub fn apply(&self, x: Tensor<4>, positions: &Tensor<2, Int>) -> Tensor<4> {
        self.angles(positions).rotate(x)
    }
}

/// The rotation for one batch of positions.
#[derive(Clone, Debug)]
pub struct RopeAngles {
    cos: Tensor<4>,
    sin: Tensor<4>,
}

impl RopeAngles {
    pub fn rotate(&self, x: Tensor<4>) -> Tensor<4> {
        self.rotate_with(x.clone(), rotate_half(x))
    }

    /// `x cos + rotate_half(x) sin`, given `rotate_half(x)` (a decoding copy's product gives it).
    pub fn rotate_with(&self, x: Tensor<4>, x_rotated: Tensor<4>) -> Tensor<4> {
        x * self.cos.clone() + x_rotated * self.sin.clone()
    }
}

/// `[x1, x2] -> [-x2, x1]` on the last dimension.
pub(super) fn rotate_half(x: Tensor<4>) -> Tensor<4> {
    let d = x.dims()[3];
    let x1 = x.clone().narrow(3, 0, d / 2);
    let x2 = x.narrow(3, d / 2, d / 2);
    Tensor::cat(vec![x2.neg(), x1], 3)
}
