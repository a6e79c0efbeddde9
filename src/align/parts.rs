//! Data parallelism on the CPU's cores. When a micro-batch's loss is a mean over its examples
//! (DPO's pairs, a reward model's pairs), it splits into parts, each its own forward and backward
//! on one of rayon's threads; each part's gradient, scaled by its share of the batch, adds up to
//! the whole batch's: `grad L = sum_j w_j grad L_j` with `w_j = n_j / n`.
//!
//! Why: burn-flex runs a matrix product on every core, but every element-wise op (softmax, SiLU,
//! the vocabulary's log-softmax, their backward) on the calling thread alone, so one batch keeps
//! about 1.3 of 2 cores busy. Parts on their own threads keep every core busy.
//!
//! Each part trains its own copy of the trainable parameters: fresh autodiff leaves under the
//! same parameter ids, so the gradients still land on the model's parameters. Parts sharing a
//! leaf would share one autodiff graph, whose lock would run their backward passes one at a time.
//! Dropout draws from a seeded stream of each part's own ([`crate::model::with_dropout_stream`]):
//! the numbers are the same on one thread as on many.

#[cfg(feature = "engine")]
use {
    burn::module::{Module, ModuleMapper, Param},
    burn::tensor::Tensor,
};

/// The same module whose trainable parameters are new autodiff leaves (same ids, same values):
/// gradients flow to them alone, in an autodiff graph of their own.
#[cfg(feature = "engine")]
pub fn fresh_leaves<M: Module>(model: M) -> M {
    struct Fresh;
    impl ModuleMapper for Fresh {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|t| if t.is_require_grad() { t.detach().require_grad() } else { t })
        }
    }
    model.map(&mut Fresh)
}

/// The seed of part `j` of micro-batch `i` at optimizer step `step`: every part draws its own
/// dropout, the same on any number of threads and again on a resumed run.
pub fn seed(run_seed: u64, step: usize, i: usize, j: usize) -> u64 {
    let mix = |x: u64| {
        // splitmix64's finalizer: nearby inputs give unrelated seeds.
        let x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    };
    mix(mix(mix(run_seed ^ step as u64) ^ i as u64) ^ j as u64)
}

/// The weights of a micro-batch of `n` examples cut into parts of one example each.
pub fn each_alone(n: usize) -> Vec<f64> {
    vec![1.0 / n.max(1) as f64; n]
}

/// The weights of parts of `sizes` units each (tokens, say): their shares of the whole, or equal
/// shares when the whole is empty.
pub fn by_size(sizes: impl ExactSizeIterator<Item = usize>) -> Vec<f64> {
    let sizes: Vec<usize> = sizes.collect();
    let total: usize = sizes.iter().sum();
    if total == 0 {
        return each_alone(sizes.len());
    }
    sizes.iter().map(|&n| n as f64 / total as f64).collect()
}

/// `f(j, item)` for every item, results in order: at once on rayon's threads when `at_once` (the
/// CPU), else one after another (a GPU takes its work from one thread).
#[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
pub fn run<I: Send, T: Send>(at_once: bool, items: Vec<I>, f: impl Fn(usize, I) -> T + Sync) -> Vec<T> {
    use rayon::prelude::*;
    if !at_once {
        return items.into_iter().enumerate().map(|(j, x)| f(j, x)).collect();
    }
    items.into_par_iter().enumerate().map(|(j, x)| f(j, x)).collect()
}

/// One after another: the page's single-threaded build has no pool.
#[cfg(all(target_arch = "wasm32", not(feature = "threads")))]
pub fn run<I, T>(_at_once: bool, items: Vec<I>, f: impl Fn(usize, I) -> T) -> Vec<T> {
    items.into_iter().enumerate().map(|(j, x)| f(j, x)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_by_part_step_and_run() {
        let s = seed(42, 3, 0, 1);
        assert_eq!(s, seed(42, 3, 0, 1));
        for other in [seed(42, 3, 0, 0), seed(42, 3, 1, 1), seed(42, 4, 0, 1), seed(43, 3, 0, 1)] {
            assert_ne!(s, other);
        }
    }

    #[test]
    fn weights_are_shares_of_the_whole() {
        assert_eq!(by_size([1usize, 3].into_iter()), vec![0.25, 0.75]);
        assert_eq!(by_size([0usize, 0].into_iter()), vec![0.5, 0.5]);
        assert_eq!(each_alone(4), vec![0.25; 4]);
    }

    #[test]
    fn run_keeps_the_order() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        for at_once in [true, false] {
            let out = pool.install(|| run(at_once, (0..50).collect(), |j, x: usize| (j, x * 2)));
            assert_eq!(out, (0..50).map(|x| (x, x * 2)).collect::<Vec<_>>());
        }
    }
}
