//! `y = a b` for 2-D tensors, on the CPU (Flex) straight into the output's memory.
//!
//! burn-flex 0.22.1 allocates every product's output by zeroing a byte vector and then copying it
//! into an aligned buffer (`FlexTensor::empty`): two passes over memory the product then
//! overwrites, 4 % of a DPO step. Here the product writes into a fresh `Vec<f32>`, reading the
//! operands through their strides (a transposed view is not copied): gemm natively, the page's
//! own tiles in wasm ([`super::tiled_gemm`]); over a frozen weight that a training pass reads
//! again, from panels packed once ([`super::packed`], natively on AVX-512 or FMA). The backward is burn's:
//! da = g b^T, db = a^T g, each only for an operand that is tracked.
//!
//! Weights in f16 (the copy [`Llama::for_decoding`](super::Llama::for_decoding) makes for decoding on a GPU)
//! take their input in f16 and give their output back in the input's type.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, binary};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{FloatDType, Tensor};

use super::fused::{flex_tensor, on_flex};
use super::tiled_gemm::View;
use crate::backend::is_cpu;

/// `a [m, k] · b [k, n]`.
pub fn matmul(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    if a.dtype() != b.dtype() {
        return in_weights_dtype(a, b, matmul);
    }
    if on_flex(&a) && on_flex(&b) {
        return on_gemm(a, b);
    }
    a.matmul(b)
}

/// `x W + b` for burn's `Linear` (`W` stored `[d_in, d_out]`) on rows `x [m, d_in]`, the product
/// through [`matmul`].
pub fn linear(x: Tensor<2>, layer: &Linear) -> Tensor<2> {
    let y = matmul(x, layer.weight.val());
    match &layer.bias {
        Some(bias) => y + bias.val().unsqueeze_dim(0),
        None => y,
    }
}

/// `a [m, k] · bᵀ` for `b [n, k]` as stored (a tied embedding). On Flex gemm reads the transpose
/// through its strides and the output is `[m, n]` as laid out; elsewhere `(b aᵀ)ᵀ`, because
/// burn's products copy a transposed operand, here as large as the vocabulary's embedding.
pub fn matmul_t(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    if a.dtype() != b.dtype() {
        return in_weights_dtype(a, b, matmul_t);
    }
    if on_flex(&a) && on_flex(&b) {
        return on_gemm(a, b.transpose());
    }
    b.matmul(a.transpose()).transpose()
}

/// Rows up to which [`linear_t`] reduces rather than multiplies: the samples of a decoding step
/// (measured on an H200 at 1 and 4, docs/results.md).
const FEW_ROWS: usize = 8;

/// `x [m, k] · Wᵀ` for a decoding copy's weight `W [n, k]`, stored by outputs
/// ([`Llama::for_decoding`](super::Llama::for_decoding)).
///
/// On a GPU, a few rows (a decoding step's) are a broadcast product and a sum over `k`,
/// `y[i, j] = Σ_k x[i, k] W[j, k]`: one thread per output reads its `k` weights side by side, and
/// the outputs spread over the whole GPU. burn's product kernel gives one row a few output tiles,
/// each walking all of `k`: about 130 µs a projection on an H200 whatever its width, where the
/// product and the sum take about 60 µs together (burn's fusion runs them as two kernels). The sum
/// is in f32 whatever the weights' type. More rows (a prompt) take the product, [`matmul_t`].
/// The input's leading dimensions are its rows, as in [`LoraLinear::forward`](super::LoraLinear::forward).
pub fn linear_t<const D: usize>(x: Tensor<D>, w: &Param<Tensor<2>>) -> Tensor<D> {
    let mut dims = x.dims();
    let (m, k) = (dims[..D - 1].iter().product::<usize>(), dims[D - 1]);
    let x: Tensor<2> = x.reshape([m, k]);
    let n = w.dims()[0];
    let y = if m > FEW_ROWS || is_cpu(&x.device()) {
        matmul_t(x, w.val())
    } else {
        let w = w.val().cast(FloatDType::from(x.dtype()));
        (x.reshape([m, 1, k]) * w.reshape([1, n, k])).sum_dim(2).reshape([m, n])
    };
    dims[D - 1] = n;
    y.reshape(dims)
}

/// `product(a, b)` computed in the weights' type: `a` cast to `b`'s, the output cast back to `a`'s.
fn in_weights_dtype(a: Tensor<2>, b: Tensor<2>, product: fn(Tensor<2>, Tensor<2>) -> Tensor<2>) -> Tensor<2> {
    let out = FloatDType::from(a.dtype());
    product(a.cast(FloatDType::from(b.dtype())), b).cast(out)
}

fn on_gemm(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as MatmulOps>::matmul_2d(a.into_dispatch(), b.into_dispatch()))
}

#[backend_extension(Flex, Autodiff)]
pub trait MatmulOps: Backend {
    fn matmul_2d(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl MatmulOps for Flex {
    fn matmul_2d(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let ([m, k], [k2, n]) = (dims2(&a), dims2(&b));
        assert_eq!(k, k2, "matmul_2d: [{m}, {k}] by [{k2}, {n}]");
        let len = m.checked_mul(n).expect("matmul_2d: output size overflows usize");
        let out = if m == 0 || n == 0 || k == 0 {
            vec![0f32; len]
        } else {
            let mut out = Vec::<f32>::with_capacity(len);
            // SAFETY: the views are the operands' own layouts, which Flex keeps inside their
            // storage for every index of their shapes; the product writes each of the m*n
            // outputs once before the length covers them.
            unsafe {
                if !over_panels(m, view(&a), &b, out.as_mut_ptr()) {
                    product(m, n, k, view(&a), view(&b), out.as_mut_ptr());
                }
                out.set_len(len);
            }
            out
        };
        flex_tensor(out, [m, n])
    }
}

pub(super) fn dims2(t: &FloatTensor<Flex>) -> [usize; 2] {
    let s = t.shape();
    assert_eq!(s.num_dims(), 2, "matmul_2d takes 2-D tensors");
    [s[0], s[1]]
}

/// The first element's address and the (row, column) strides in elements.
pub(super) fn view(t: &FloatTensor<Flex>) -> View {
    let layout = t.layout();
    let strides = layout.strides();
    let start = t.storage::<f32>()[layout.start_offset()..].as_ptr();
    View { ptr: start, rs: strides[0], cs: strides[1] }
}

/// `c [m, n] = a [m, k] · b [k, n]` in the page: its own tiles ([`super::tiled_gemm`]), which V8
/// runs faster than gemm's.
///
/// # Safety
/// As [`super::tiled_gemm::gemm`].
#[cfg(target_arch = "wasm32")]
unsafe fn product(m: usize, n: usize, k: usize, a: View, b: View, c: *mut f32) {
    unsafe { super::tiled_gemm::gemm(m, n, k, a, b, c) }
}

/// `c [m, n] = a [m, k] · b [k, n]` natively: gemm's kernels for the CPU it finds (AVX-512 or FMA here).
///
/// # Safety
/// The views address every element of their shapes; `c` has room for `m * n` floats.
#[cfg(not(target_arch = "wasm32"))]
pub(super) unsafe fn product(m: usize, n: usize, k: usize, a: View, b: View, c: *mut f32) {
    // Every core for a product large enough to pay for the split.
    let large = m.saturating_mul(n).saturating_mul(k) >= super::tiled_gemm::PARALLEL_ABOVE;
    let parallelism = if large { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    unsafe {
        gemm::gemm(m, n, k, c, 1, n as isize, false, a.ptr, a.cs, a.rs, b.ptr, b.cs, b.rs, 0.0, 1.0, false, false, false, parallelism);
    }
}

/// `c [m, n] = a [m, k] · b` over `b`'s panels, natively where a training pass packed them
/// ([`super::packed`]); false, with `c` untouched, where gemm or the page's tiles run instead.
///
/// # Safety
/// As [`product`].
#[cfg(all(target_arch = "x86_64", not(fuzzing)))]
unsafe fn over_panels(m: usize, a: View, b: &FloatTensor<Flex>, c: *mut f32) -> bool {
    let panels = super::packed::panels_for(b, m);
    if let Some(w) = &panels {
        unsafe { super::packed::multiply(m, a, w, c) };
    }
    panels.is_some()
}
#[cfg(not(all(target_arch = "x86_64", not(fuzzing))))]
unsafe fn over_panels(_: usize, _: View, _: &FloatTensor<Flex>, _: *mut f32) -> bool {
    false
}

/// Runs a product of a training pass: natively it may pack its weight ([`super::packed`]).
fn training<T>(f: impl FnOnce() -> T) -> T {
    #[cfg(all(target_arch = "x86_64", not(fuzzing)))]
    return super::packed::training(f);
    #[cfg(not(all(target_arch = "x86_64", not(fuzzing))))]
    f()
}

#[derive(Debug)]
struct MatmulBackward;

impl<B: Backend + MatmulOps> Backward<B, 2> for MatmulBackward {
    /// a when b needs its gradient, b when a does.
    type State = (Option<FloatTensor<B>>, Option<FloatTensor<B>>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (a, b) = ops.state;
        binary::<B, _, _>(
            ops.parents,
            ops.node,
            grads,
            |g| training(|| B::matmul_2d(g, B::float_transpose(b.expect("kept for a's gradient")))),
            |g| training(|| B::matmul_2d(B::float_transpose(a.expect("kept for b's gradient")), g)),
        );
    }
}

impl<B: Backend + MatmulOps, C: CheckpointStrategy> MatmulOps for Autodiff<B, C> {
    fn matmul_2d(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let (a_tracked, b_tracked) = (a.is_tracked(), b.is_tracked());
        match MatmulBackward.prepare::<C>([a.node(), b.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (a, b) = (a.into_primitive(), b.into_primitive());
                let state = (b_tracked.then(|| a.clone()), a_tracked.then(|| b.clone()));
                prep.finish(state, training(|| B::matmul_2d(a, b)))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::matmul_2d(a.into_primitive(), b.into_primitive())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::worst_relative;
    use burn::tensor::{Device, Distribution};

    fn close(a: Tensor<2>, b: Tensor<2>, what: &str) {
        let worst = worst_relative(a.into_data(), b.into_data());
        assert!(worst < 1e-5, "{what}: differs from burn's matmul by {worst}");
    }

    /// Values and both gradients against burn's matmul, with plain and transposed operands and a
    /// product large enough to run on both cores.
    #[test]
    fn matches_burn_forward_and_backward() {
        let device = Device::flex().autodiff();
        for (m, k, n) in [(3, 5, 4), (200, 210, 230)] {
            let a0 = Tensor::<2>::random([m, k], Distribution::Normal(0.0, 1.0), &device);
            let bt0 = Tensor::<2>::random([n, k], Distribution::Normal(0.0, 1.0), &device);
            let w = Tensor::<2>::random([m, n], Distribution::Normal(0.0, 1.0), &device);
            let run = |f: fn(Tensor<2>, Tensor<2>) -> Tensor<2>| {
                let (a, bt) = (a0.clone().detach().require_grad(), bt0.clone().detach().require_grad());
                let y = f(a.clone(), bt.clone().transpose());
                let grads = (y.clone() * w.clone()).sum().backward();
                (y, a.grad(&grads).unwrap(), bt.grad(&grads).unwrap())
            };
            let (y1, da1, db1) = run(matmul);
            let (y2, da2, db2) = run(|a, b| a.matmul(b));
            close(y1, y2, "product");
            close(da1, da2, "a's gradient");
            close(db1, db2, "b's gradient");
        }
    }

    /// `a bᵀ` as burn computes it, with the gradient of `a` (the head's hidden states).
    #[test]
    fn transposed_product_matches_burn() {
        let device = Device::flex().autodiff();
        let a0 = Tensor::<2>::random([5, 8], Distribution::Normal(0.0, 1.0), &device);
        let e = Tensor::<2>::random([11, 8], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<2>::random([5, 11], Distribution::Normal(0.0, 1.0), &device);
        let run = |f: fn(Tensor<2>, Tensor<2>) -> Tensor<2>| {
            let a = a0.clone().detach().require_grad();
            let y = f(a.clone(), e.clone());
            let grads = (y.clone() * w.clone()).sum().backward();
            (y, a.grad(&grads).unwrap())
        };
        let ((y1, da1), (y2, da2)) = (run(matmul_t), run(|a, e| a.matmul(e.transpose())));
        close(y1, y2, "product");
        close(da1, da2, "a's gradient");
    }

    /// A frozen operand (the base weights) gets no gradient, the tracked one the right one; an
    /// empty inner dimension gives zeros.
    #[test]
    fn frozen_operand_and_empty_inner_dimension() {
        let device = Device::flex().autodiff();
        let a = Tensor::<2>::random([7, 9], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let b = Tensor::<2>::random([9, 2], Distribution::Normal(0.0, 1.0), &device);
        let grads = matmul(a.clone(), b.clone()).sum().backward();
        assert!(b.grad(&grads).is_none(), "a frozen operand has no gradient");
        let da = a.grad(&grads).expect("a is tracked");
        close(da, b.inner().sum_dim(1).reshape([1, 9]).repeat_dim(0, 7), "a's gradient, rows of b summed");
        let (a, b) = (Tensor::<2>::zeros([6, 0], &Device::flex()), Tensor::<2>::zeros([0, 3], &Device::flex()));
        close(matmul(a, b), Tensor::zeros([6, 3], &Device::flex()), "empty inner dimension");
    }
}
