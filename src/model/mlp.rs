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
        let [b, t, d] = x.dims();
        let (gate, up) = match &self.gate_up {
            Some(gate_up) => {
                let y = linear_t(x.reshape([b * t, d]), gate_up);
                let f = y.dims()[1] / 2;
                let part = |at: usize| y.clone().narrow(1, at, f).reshape([b, t, f]);
                (part(0), part(f))
            }
            None => (self.gate_proj.forward(x.clone()), self.up_proj.forward(x)),
        };
        let h = silu(gate) * up;
        match &self.down {
            Some(down) => {
                let f = h.dims()[2];
                linear_t(h.reshape([b * t, f]), down).reshape([b, t, d])
            }
            None => self.down_proj.forward(h),
        }
    }
}
