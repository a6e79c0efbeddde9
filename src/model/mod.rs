//! The Llama-family decoder and its parts.

#[cfg(feature = "engine")]
mod attention;
#[cfg(feature = "engine")]
mod cache;
mod config;
#[cfg(feature = "engine")]
mod decoding;
#[cfg(feature = "engine")]
mod fused;
#[cfg(feature = "engine")]
mod llama;
pub mod lora;
#[cfg(feature = "engine")]
mod random;
#[cfg(feature = "engine")]
mod matmul;
#[cfg(feature = "engine")]
mod mlp;
/// Frozen weights packed once for gemm's AVX-512 or FMA kernel (native x86-64).
#[cfg(all(feature = "engine", target_arch = "x86_64", not(fuzzing)))]
mod packed;
#[cfg(feature = "engine")]
mod rope;
#[cfg(feature = "engine")]
pub(crate) mod rows;
/// The page's products. Natively only its tests run them: gemm's own kernels are faster there.
#[cfg(feature = "engine")]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) mod tiled_gemm;

/// What the lib's tests compare tensors with.
#[cfg(all(test, feature = "engine"))]
mod testing {
    use burn::tensor::TensorData;

    /// The largest difference between two tensors' elements, relative to the second's (at least 1).
    /// Equal elements differ by 0 (matching infinities included); a NaN on either side makes the
    /// result NaN, so a comparison with a tolerance fails on it instead of `f32::max` skipping it.
    pub fn worst_relative(a: TensorData, b: TensorData) -> f32 {
        let (a, b) = (a.try_into_vec_as::<f32>().unwrap(), b.try_into_vec_as::<f32>().unwrap());
        assert_eq!(a.len(), b.len(), "tensors of different sizes");
        a.iter()
            .zip(&b)
            .map(|(p, q)| if p == q { 0.0 } else { (p - q).abs() / q.abs().max(1.0) })
            .fold(0f32, |m, d| if m.is_nan() || d.is_nan() { f32::NAN } else { m.max(d) })
    }

    #[test]
    fn worst_relative_is_nan_when_an_element_is() {
        let t = |v: Vec<f32>| TensorData::new(v, [2]);
        assert_eq!(worst_relative(t(vec![3.0, 0.25]), t(vec![2.0, 0.5])), 0.5);
        assert_eq!(worst_relative(t(vec![f32::NEG_INFINITY, 1.0]), t(vec![f32::NEG_INFINITY, 1.0])), 0.0);
        assert!(worst_relative(t(vec![f32::NAN, 1.0]), t(vec![1.0, 1.0])).is_nan());
        assert!(worst_relative(t(vec![1.0, 1.0]), t(vec![1.0, f32::NAN])).is_nan());
    }
}

pub use config::LlamaConfig;
pub use lora::LoraConfig;
#[cfg(feature = "engine")]
pub use {
    attention::Attention,
    fused::{log_softmax, silu, softmax},
    matmul::{linear, linear_t, matmul, matmul_t},
    cache::KvCache,
    llama::{Batch, Block, Llama, token_out_of_vocabulary},
    lora::{LoraAdapter, LoraLinear, with_dropout_stream},
    mlp::Mlp,
    random::random_weights,
    rope::{RopeAngles, RotaryEmbedding},
};
