//! SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.

use burn::module::{Module, Param};
use burn::tensor::Tensor;

use super::{LoraLinear, linear_t, silu};

#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: LoraLinear,
    pub up_proj: LoraLinear,
    pub down_proj: LoraLinear,
    /// In a decoding copy only, stored `[d_out, d_in]` ([`linear_t`]): `[Wg | Wu]`, gate and up in
    /// one product ([`Llama::for_decoding`](super::Llama::for_decoding)); then `gate_proj` and
    /// `up_proj` are not read.
    pub gate_up: Option<Param<Tensor<2>>>,
    /// In a decoding copy only: `down_proj`'s weight with its adapter merged, stored
    /// `[d_out, d_in]`; then `down_proj` is not read.
    pub down: Option<Param<Tensor<2>>>,
}

impl Mlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let (gate, up) = match &self.gate_up {
            Some(gate_up) => {
                let y = linear_t(x, gate_up);
                let f = y.dims()[2] / 2;
                (y.clone().narrow(2, 0, f), y.narrow(2, f, f))
            }
            None => (self.gate_proj.forward(x.clone()), self.up_proj.forward(x)),
        };
        let h = silu(gate) * up;
        match &self.down {
            Some(down) => linear_t(h, down),
            None => self.down_proj.forward(h),
        }
    }
}
