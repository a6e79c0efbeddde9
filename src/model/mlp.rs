//! SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Tensor, activation::silu};

#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Mlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}
