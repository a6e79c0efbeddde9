//! Softmax, log-softmax (both over the last dimension) and SiLU as single operations with their
//! own backward passes, on the CPU backend (Flex).
//!
//! Under autodiff burn composes softmax from five elementwise passes (max, subtract, exp, sum,
//! divide), each with its own backward, and the backward of `exp` and of `sigmoid` computes them
//! again with the C library's scalar `expf`. In a DPO step on SmolLM2 that was 8 % of the CPU's
//! time. Here each forward is one pass over the row and each backward one more, with the
//! vectorised exp of [`super::rows`]. Other devices (wgpu, NdArray) keep burn's operations.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::tensor::FloatTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, Shape, Tensor, TensorData, activation};

use super::rows::{self, RowOp};

/// `y = softmax(x)` over the last dimension.
pub fn softmax<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !on_flex(&x) {
        return activation::softmax(x, D - 1);
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::softmax(x.into_dispatch()))
}

/// `y = log_softmax(x)` over the last dimension.
pub fn log_softmax<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !on_flex(&x) {
        return activation::log_softmax(x, D - 1);
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::log_softmax(x.into_dispatch()))
}

/// `y = x * sigmoid(x)`.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !on_flex(&x) {
        return activation::silu(x);
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::silu(x.into_dispatch()))
}

/// Flex, with or without autodiff, in f32: where this module's and [`super::matmul`]'s kernels
/// run (they are written for f32).
pub(super) fn on_flex<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32 && crate::backend::is_flex(&x.device())
}

/// The elements of a contiguous f32 tensor.
fn f32s(t: &FloatTensor<Flex>) -> &[f32] {
    t.as_slice::<f32>().expect("f32 (checked by on_flex), made contiguous")
}

/// A Flex tensor of `shape` holding `values` (moved in, not copied).
pub(super) fn flex_tensor(values: Vec<f32>, shape: impl Into<Shape>) -> FloatTensor<Flex> {
    <Flex as FloatTensorOps<Flex>>::float_from_data(TensorData::new(values, shape), &Default::default())
}

/// The operations, each forward with the backward it needs. Only Flex and autodiff over it are
/// routed here ([`on_flex`]).
#[backend_extension(Flex, Autodiff)]
pub trait FusedOps: Backend {
    fn softmax(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `dx` from the forward's output `y` and the gradient `g`.
    fn softmax_backward(y: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self>;
    fn log_softmax(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `dx` from the forward's output `y` and the gradient `g`.
    fn log_softmax_backward(y: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self>;
    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `dx` from the forward's input `x` and the gradient `g`.
    fn silu_backward(x: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `Op` over the rows of `a` (and `b`): the last dimension for the softmaxes, any run for SiLU.
fn on_rows<Op: RowOp>(a: FloatTensor<Flex>, b: Option<FloatTensor<Flex>>) -> FloatTensor<Flex> {
    let contiguous = |t: FloatTensor<Flex>| if t.as_slice::<f32>().is_some() { t } else { t.to_contiguous() };
    let shape = a.shape();
    let width = shape.as_slice().last().copied().unwrap_or(1);
    let (a, b) = (contiguous(a), b.map(contiguous));
    let src = f32s(&a);
    let mut out = vec![0f32; src.len()];
    if !out.is_empty() {
        rows::each_row::<Op>(width, src, b.as_ref().map(f32s), &mut out);
    }
    flex_tensor(out, shape)
}

impl FusedOps for Flex {
    fn softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        on_rows::<rows::Softmax>(x, None)
    }
    fn softmax_backward(y: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        on_rows::<rows::SoftmaxBackward>(y, Some(g))
    }
    fn log_softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        on_rows::<rows::LogSoftmax>(x, None)
    }
    fn log_softmax_backward(y: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        on_rows::<rows::LogSoftmaxBackward>(y, Some(g))
    }
    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        on_rows::<rows::Silu>(x, None)
    }
    fn silu_backward(x: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        on_rows::<rows::SiluBackward>(x, Some(g))
    }
}

/// A backward step that keeps one tensor of the forward (its input or output) and hands it with
/// the incoming gradient to `grad`.
#[derive(Debug)]
struct KeptBackward<B: Backend> {
    grad: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
}

impl<B: Backend> Backward<B, 1> for KeptBackward<B> {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let kept = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |g| (self.grad)(kept, g));
    }
}

/// Which tensor of the forward its backward reads.
enum Keep {
    Input,
    Output,
}

/// Records `forward(x)` with a backward that reads the forward's input or output (`keep`).
fn tracked<B: Backend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    forward: fn(FloatTensor<B>) -> FloatTensor<B>,
    grad: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
    keep: Keep,
) -> FloatTensor<Autodiff<B, C>> {
    let node = x.node();
    match (KeptBackward { grad }).prepare::<C>([node]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let input = x.into_primitive();
            let (kept, y) = match keep {
                Keep::Output => {
                    let y = forward(input);
                    (y.clone(), y)
                }
                Keep::Input => (input.clone(), forward(input)),
            };
            prep.finish(kept, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x.into_primitive())),
    }
}

impl<B: Backend + FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked::<B, C>(x, <B as FusedOps>::softmax, B::softmax_backward, Keep::Output)
    }
    fn softmax_backward(y: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::softmax_backward::<Self>(y, g)
    }
    fn log_softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked::<B, C>(x, <B as FusedOps>::log_softmax, B::log_softmax_backward, Keep::Output)
    }
    fn log_softmax_backward(y: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::log_softmax_backward::<Self>(y, g)
    }
    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked::<B, C>(x, B::silu, B::silu_backward, Keep::Input)
    }
    fn silu_backward(x: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::silu_backward::<Self>(x, g)
    }
}

/// The backwards from burn's differentiable operations: what the trait's backward does on tensors
/// that are themselves tracked. No training path calls it (the recorded backward above runs on the
/// inner backend); the tests check it against the row kernels.
mod composed {
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Backend, Scalar, TensorMetadata};

    pub fn softmax_backward<B: Backend>(y: FloatTensor<B>, g: FloatTensor<B>) -> FloatTensor<B> {
        let d = y.rank() - 1;
        let s = B::float_sum_dim(B::float_mul(g.clone(), y.clone()), d);
        B::float_mul(y, B::float_sub(g, s))
    }

    pub fn log_softmax_backward<B: Backend>(y: FloatTensor<B>, g: FloatTensor<B>) -> FloatTensor<B> {
        let d = y.rank() - 1;
        let s = B::float_sum_dim(g.clone(), d);
        B::float_sub(g, B::float_mul(B::float_exp(y), s))
    }

    pub fn silu_backward<B: Backend>(x: FloatTensor<B>, g: FloatTensor<B>) -> FloatTensor<B> {
        let s = B::sigmoid(x.clone());
        let one_minus_s = B::float_add_scalar(B::float_neg(s.clone()), Scalar::Float(1.0));
        let inner = B::float_add_scalar(B::float_mul(x, one_minus_s), Scalar::Float(1.0));
        B::float_mul(g, B::float_mul(s, inner))
    }
}

#[cfg(test)]
mod tests {
    use crate::model::testing::worst_relative;
    use super::*;
    use burn::tensor::{Device, Distribution, TensorData as Data};

    /// Forward values and input gradients of `ours` and `burns` on the same input and upstream
    /// gradient, on Flex with autodiff.
    fn compare(ours: fn(Tensor<3>) -> Tensor<3>, burns: fn(Tensor<3>) -> Tensor<3>, tol: f32) {
        let device = Device::flex().autodiff();
        let x0 = Tensor::<3>::random([2, 5, 67], Distribution::Normal(0.0, 4.0), &device);
        let w = Tensor::<3>::random([2, 5, 67], Distribution::Normal(0.0, 1.0), &device);
        let run = |f: fn(Tensor<3>) -> Tensor<3>| {
            let x = x0.clone().detach().require_grad();
            let y = f(x.clone());
            let grads = (y.clone() * w.clone()).sum().backward();
            (y.into_data(), x.grad(&grads).expect("x is tracked").into_data())
        };
        let ((y1, g1), (y2, g2)) = (run(ours), run(burns));
        let close = |a: Data, b: Data, what: &str| {
            let worst = worst_relative(a, b);
            assert!(worst < tol, "{what}: differs from burn's by {worst}");
        };
        close(y1, y2, "forward");
        close(g1, g2, "gradient");
    }

    #[test]
    fn softmax_matches_burn() {
        compare(softmax, |x| activation::softmax(x, 2), 1e-6);
    }

    #[test]
    fn log_softmax_matches_burn() {
        compare(log_softmax, |x| activation::log_softmax(x, 2), 1e-5);
    }

    #[test]
    fn silu_matches_burn() {
        compare(silu, activation::silu, 1e-5);
    }

    /// The composed backwards give what the row kernels give.
    #[test]
    fn composed_backwards_match_the_row_kernels() {
        let device = Device::flex();
        let x = Tensor::<3>::random([2, 3, 41], Distribution::Normal(0.0, 3.0), &device);
        let g = Tensor::<3>::random([2, 3, 41], Distribution::Normal(0.0, 1.0), &device);
        let (x, g) = (x.into_dispatch(), g.into_dispatch());
        type D = Dispatch;
        let pairs = [
            (composed::softmax_backward::<D>(<D as FusedOps>::softmax(x.clone()), g.clone()),
             <D as FusedOps>::softmax_backward(<D as FusedOps>::softmax(x.clone()), g.clone())),
            (composed::log_softmax_backward::<D>(<D as FusedOps>::log_softmax(x.clone()), g.clone()),
             <D as FusedOps>::log_softmax_backward(<D as FusedOps>::log_softmax(x.clone()), g.clone())),
            (composed::silu_backward::<D>(x.clone(), g.clone()), <D as FusedOps>::silu_backward(x, g)),
        ];
        for (i, (a, b)) in pairs.into_iter().enumerate() {
            let worst = worst_relative(Tensor::<3>::from_dispatch(a).into_data(), Tensor::<3>::from_dispatch(b).into_data());
            assert!(worst < 1e-5, "backward {i}: composed and row kernel differ by {worst}");
        }
    }

    /// An untracked input (the frozen reference model) takes the same path without a graph, and
    /// a non-contiguous view is read in its logical order.
    #[test]
    fn untracked_and_transposed_inputs() {
        let device = Device::flex();
        let x = Tensor::<3>::random([3, 4, 9], Distribution::Normal(0.0, 3.0), &device).swap_dims(1, 2);
        let ours = softmax(x.clone()).into_data().try_into_vec_as::<f32>().unwrap();
        let burns = activation::softmax(x, 2).into_data().try_into_vec_as::<f32>().unwrap();
        for (a, b) in ours.iter().zip(&burns) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}
