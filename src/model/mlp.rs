//! SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;

use super::{LoraLinear, linear, silu};

#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: LoraLinear,
    pub up_proj: LoraLinear,
    pub down_proj: LoraLinear,
    /// In a decoding copy only: `[Wg | Wu]`, gate and up in one product
    /// ([`Llama::for_decoding`](super::Llama::for_decoding)); then `gate_proj` and `up_proj` are
    /// not read.
    pub gate_up: Option<Linear>,
}

impl Mlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let (gate, up) = match &self.gate_up {
            Some(gate_up) => {
                let [b, t, d] = x.dims();
                let y = linear(x.reshape([b * t, d]), gate_up);
                let f = y.dims()[1] / 2;
                let part = |at: usize| y.clone().narrow(1, at, f).reshape([b, t, f]);
                (part(0), part(f))
            }
            None => (self.gate_proj.forward(x.clone()), self.up_proj.forward(x)),
        };
        self.down_proj.forward(silu(gate) * up)
    }
}
