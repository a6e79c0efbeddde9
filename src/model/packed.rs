//! `c = a b` natively for a weight `b` that stays the same (frozen, as a LoRA run's base), with
//! `b` packed once.
//!
//! gemm copies the operand its vectors run along into panels before every product, the weight's
//! columns here: from contiguous runs when the weight is read as stored (`x W`), one float at a
//! time when a row-major weight is read transposed (a layer's weight in the backward pass, `g Wᵀ`;
//! the tied embedding in the head, `h Eᵀ`). Every step copied every weight again, both ways:
//! 15 % of a LoRA DPO step on an AVX-512 Intel machine (`perf`, docs/results.md, stop 74). Here a
//! weight that a training pass reads a second time is packed once for each way it is read, in
//! gemm's panels of `mr` columns, `P[p, kk, r] = b[kk, mr p + r]`, and kept while the weight lives.
//! The products run gemm's own micro-kernel for this CPU over those panels ([`Kernel`]: AVX-512's,
//! `mr` = 64, or AVX2 with FMA's, `mr` = 16), with the depth cut in gemm's blocks and each block
//! added in gemm's order, so every value is gemm's to the bit.
//!
//! Why a training pass's second sight: a weight that changes every step (full fine-tuning) is
//! never read twice and keeps gemm, where packing it would only add a copy, and inference
//! (scoring, judging) never adds panels, so it never costs their memory. Why "while the weight
//! lives": the cache holds the weight's storage, so its address cannot be reused for another
//! tensor and burn-flex cannot change it in place, and the entries of a weight nothing else holds
//! are dropped when a training pass next sees a new weight or packs one. The panels cost memory the size of the weights packed, each way
//! (about 1.1 GB for SmolLM2 while it trains), at most [`BUDGET`].

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use burn::backend::Flex;
use burn::backend::tensor::FloatTensor;
use gemm_common::microkernel::MicroKernelFn;
use gemm_f32::microkernel::{avx512f, fma};
use rayon::prelude::*;

use super::matmul::{dims2, view};
use super::tiled_gemm::{Out, PARALLEL_ABOVE, View};

/// Rows of `a` a tile takes, in both of gemm's f32 kernels.
const NR: usize = 6;
const _: () = assert!(avx512f::f32::NR == NR && fma::f32::NR == NR);
/// Fewer rows of `a` keep gemm (a decoding step): they would not pay for a packed copy.
const MIN_ROWS: usize = 64;
/// Smaller weights keep gemm (an adapter's factors, which change every step).
const MIN_WEIGHT: usize = 1 << 16;
/// The most memory all panels may take together (bytes): a larger model packs what fits and
/// leaves the rest to gemm.
const BUDGET: usize = 2 << 30;
/// Panels walked for each tile of `a`'s rows, gemm's own most (`kernel_params`' `mc` ≤ 8 `mr`):
/// 8 × 64 × a depth block of 512 floats (1 MiB, AVX-512) stay in L2 while the tile's rows stay
/// in L1.
const GROUP: usize = 8;

/// gemm's f32 micro-kernel for this CPU, the one gemm itself would take, and the columns of the
/// weight a panel holds for it (its tile's height in gemm's terms: `MR_DIV_N` vectors).
#[derive(Clone, Copy)]
struct Kernel {
    mr: usize,
    /// Floats in one vector: the tiles are indexed by vectors of columns, then rows of `a`.
    lanes: usize,
    tiles: &'static [[MicroKernelFn<f32>; NR]],
}

/// This CPU's kernel, as gemm chooses it: AVX-512 first, then FMA's 256-bit one; none elsewhere.
fn kernel() -> Option<Kernel> {
    static KERNEL: OnceLock<Option<Kernel>> = OnceLock::new();
    *KERNEL.get_or_init(|| {
        if std::is_x86_feature_detected!("avx512f") {
            Some(Kernel { mr: avx512f::f32::MR_DIV_N * 16, lanes: 16, tiles: &avx512f::f32::UKR })
        } else if std::is_x86_feature_detected!("fma") {
            Some(Kernel { mr: fma::f32::MR_DIV_N * 8, lanes: 8, tiles: &fma::f32::UKR })
        } else {
            None
        }
    })
}

/// A weight `b [k, n]` in panels of its kernel's `mr` columns, zeros past column `n`.
pub struct Panels {
    n: usize,
    k: usize,
    kernel: Kernel,
    data: Vec<f32>,
}

/// A weight seen before (the storage it lives in, held so its address stays its own) and where
/// its panels stand.
struct Entry {
    weight: FloatTensor<Flex>,
    state: State,
}

enum State {
    /// Seen once.
    Seen,
    /// Being packed by some thread, into this many floats: meanwhile others take gemm.
    Packing(usize),
    Ready(Arc<Panels>),
}

/// Storage address, offset into it, `n`, `k`, and the row stride (which way the weight is read).
type Key = (usize, usize, usize, usize, isize);

static SEEN: Mutex<BTreeMap<Key, Entry>> = Mutex::new(BTreeMap::new());

thread_local! {
    /// Set while a training pass's product runs ([`training`]).
    static TRAINING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, a product of a training pass (its output or a gradient is tracked): only these see
/// and pack weights. A pass for inference (scoring, judging) takes panels already packed but
/// adds none, so it never costs their memory.
pub fn training<T>(f: impl FnOnce() -> T) -> T {
    let before = TRAINING.replace(true);
    let out = f();
    TRAINING.set(before);
    out
}

/// The panels of `b [k, n]` when a product with `m` rows of `a` takes them: `b` is a weight laid
/// out row-major either way (`W [k, n]` as stored, or `W [n, k]` read transposed), seen before,
/// large enough, with enough rows of `a`, on a CPU with one of gemm's kernels ([`kernel`]), within
/// [`BUDGET`], packed by a training pass.
pub fn panels_for(b: &FloatTensor<Flex>, m: usize) -> Option<Arc<Panels>> {
    let ([k, n], view) = (dims2(b), view(b));
    let plain = (view.rs == n as isize && view.cs == 1) || (view.rs == 1 && view.cs == k as isize);
    let kernel = kernel()?;
    if m < MIN_ROWS || n.saturating_mul(k) < MIN_WEIGHT || !plain {
        return None;
    }
    let key = key(b);
    let lock = || SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let mut seen = lock();
    match (seen.get(&key).map(|e| &e.state), TRAINING.get()) {
        (Some(State::Ready(panels)), _) => return Some(panels.clone()),
        (_, false) | (Some(State::Packing(_)), true) => return None,
        (None, true) => {
            // A weight new to the cache: the moment to let go of those dropped since.
            forget_dropped(&mut seen);
            seen.insert(key, Entry { weight: b.clone(), state: State::Seen });
            return None;
        }
        (Some(State::Seen), true) => forget_dropped(&mut seen),
    }
    let held: usize = seen
        .values()
        .map(|e| match &e.state {
            State::Seen => 0,
            State::Packing(len) => *len,
            State::Ready(p) => p.data.len(),
        })
        .sum();
    let len = n.div_ceil(kernel.mr) * kernel.mr * k;
    if held.saturating_add(len) > BUDGET / size_of::<f32>() {
        return None;
    }
    // Still there: the caller holds the weight.
    seen.get_mut(&key)?.state = State::Packing(len);
    // Packed without the lock, so a thread that takes another rayon job meanwhile (training runs
    // its parts on rayon's threads) finds this weight being packed and takes gemm, never waits.
    drop(seen);
    let panels = Arc::new(unsafe { pack(view, n, k, kernel) });
    // The caller holds the weight, so its entry is still there.
    if let Some(e) = lock().get_mut(&key) {
        e.state = State::Ready(panels.clone());
    }
    Some(panels)
}

/// Drops the entries of weights nothing but the cache holds any more (a model dropped, an
/// adapter merged into a new copy). A weight read both ways has two entries, each holding it.
fn forget_dropped(seen: &mut BTreeMap<Key, Entry>) {
    let mut entries = HashMap::<usize, usize>::new();
    for key in seen.keys() {
        *entries.entry(key.0).or_default() += 1;
    }
    // `data_arc` hands out one more holder, counted here too.
    seen.retain(|key, e| Arc::strong_count(&e.weight.data_arc()) - 1 > entries[&key.0]);
}

/// Which weight `b` is, and which way it is read: its storage's address, where it starts there,
/// its shape and its row stride.
fn key(b: &FloatTensor<Flex>) -> Key {
    let ([k, n], view) = (dims2(b), view(b));
    (Arc::as_ptr(&b.data_arc()) as usize, b.layout().start_offset(), n, k, view.rs)
}

/// `b [k, n]` in panels of its columns, `P[p, kk, r] = b[kk, mr p + r]`, the panels shared
/// over the cores. Each panel is written in order; `b` is read `mr` columns at a time, along a row
/// of the weight either way it is laid out (`mr` lines of a transposed weight serve 16 depths).
///
/// # Safety
/// `b` addresses every element of `[k, n]`.
unsafe fn pack(b: View, n: usize, k: usize, kernel: Kernel) -> Panels {
    let mr = kernel.mr;
    let len = n.div_ceil(mr) * mr * k;
    let mut data = Vec::<f32>::with_capacity(len);
    data.spare_capacity_mut().par_chunks_mut(k * mr).enumerate().for_each(|(p, panel)| {
        let cols = p * mr..((p + 1) * mr).min(n);
        for (kk, out) in panel.chunks_exact_mut(mr).enumerate() {
            for (r, v) in out.iter_mut().enumerate() {
                let j = cols.start + r;
                // SAFETY: (kk, j) is inside `b` for j < n.
                v.write(if j < cols.end { unsafe { b.at(kk, j) } } else { 0.0 });
            }
        }
    });
    // SAFETY: every element was written above.
    unsafe { data.set_len(len) };
    Panels { n, k, kernel, data }
}

/// `c [m, n] = a [m, k] · b` (row-major `c`, every element written), split over the cores
/// when the product is large: whole panels of `b` shared out evenly, so each core reads only its
/// share of the weight from memory, and the panels left over split by rows of `a`. (Cutting a
/// panel in two would leave half-height tiles, which run at about half the speed.)
///
/// # Safety
/// `a` addresses every element of `[m, k]`; `c` has room for `m * n` floats nothing else touches.
pub unsafe fn multiply(m: usize, a: View, w: &Panels, c: *mut f32) {
    let (n, k, mr) = (w.n, w.k, w.kernel.mr);
    // gemm's depth blocks for this product (it runs `cᵀ = bᵀ aᵀ`: its rows are `n`).
    let kc = if n <= 64 && m <= 64 { k.min(512) } else { gemm_common::cache::kernel_params(n, m, k, mr, NR, 4).kc };
    let threads = rayon::current_num_threads();
    let out = Out(c, n);
    if threads == 1 || m.saturating_mul(n).saturating_mul(k) < PARALLEL_ABOVE {
        return unsafe { part(0..m, 0..n, kc, a, w, out) };
    }
    let each = n.div_ceil(mr) / threads * mr;
    let shared = (each * threads).min(n);
    let step = m.div_ceil(threads).next_multiple_of(NR);
    (0..threads).into_par_iter().for_each(|t| unsafe {
        if each > 0 {
            part(0..m, t * each..((t + 1) * each).min(n), kc, a, w, out);
        }
        if shared < n && t * step < m {
            part(t * step..((t + 1) * step).min(m), shared..n, kc, a, w, out);
        }
    });
}

/// `c[rows, cols]`, on this thread.
///
/// # Safety
/// As [`multiply`], `cols` starting at a multiple of the panels' width.
unsafe fn part(rows: Range<usize>, cols: Range<usize>, kc: usize, a: View, w: &Panels, c: Out) {
    let (n, k, Kernel { mr: width, lanes, tiles }) = (w.n, w.k, w.kernel);
    for p0 in (0..k).step_by(kc) {
        let depth = kc.min(k - p0);
        // The first block writes its sums, later ones add theirs (gemm's alpha 0, then 1).
        let (alpha, status) = if p0 == 0 { (0.0, 0) } else { (1.0, 1) };
        for g0 in cols.clone().step_by(GROUP * width) {
            for t0 in rows.clone().step_by(NR) {
                let nt = NR.min(rows.end - t0);
                let rhs = unsafe { a.ptr.offset(t0 as isize * a.rs + p0 as isize * a.cs) };
                for j in (g0..(g0 + GROUP * width).min(cols.end)).step_by(width) {
                    let mr = width.min(cols.end - j);
                    let lhs = w.data[(j * k + p0 * width)..].as_ptr();
                    let dst = unsafe { c.0.add(t0 * n + j) };
                    // SAFETY: the kernel reads `depth` columns of the panel's `width` floats,
                    // `nt` rows of `a` for `depth` values, and writes `mr` × `nt` outputs of `c`;
                    // `kernel` found its instructions on this CPU ([`panels_for`]).
                    unsafe {
                        tiles[(mr - 1) / lanes][nt - 1](
                            mr, nt, depth, dst, lhs, rhs, n as isize, 1, width as isize, a.cs, a.rs, alpha, 1.0, status, false,
                            false, false, lhs,
                        )
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fused::flex_tensor;
    use crate::model::matmul::product;
    use burn::backend::ops::FloatTensorOps;
    use burn::tensor::Shape;

    /// Says so when this CPU cannot run the packed products.
    fn skipped() -> bool {
        if kernel().is_none() {
            eprintln!("skipped: this CPU has neither AVX-512 nor FMA, where the packed products do not run");
        }
        kernel().is_none()
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| ((i * seed % 1009) as f32 - 504.0) / 311.0).collect()
    }

    /// Equal to gemm to the bit for a weight read either way, with a partial panel (`n` not a
    /// multiple of the width), partial tiles (`m` not a multiple of 6), several depth blocks (`k`
    /// past gemm's 512), a panel left over after the even share (an odd count of panels on 2
    /// cores) and one core.
    #[test]
    fn equals_gemm_bit_for_bit() {
        if skipped() {
            return;
        }
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        for (m, n, k) in [(64, 100, 37), (131, 200, 1100), (390, 576, 1536), (67, 1000, 96)] {
            let (a, w) = (values(m * k, 7919), values(n * k, 104729));
            let a = View { ptr: a.as_ptr(), rs: k as isize, cs: 1 };
            // The weight as stored `[k, n]`, and `[n, k]` read transposed.
            for (b, layout) in [(View { ptr: w.as_ptr(), rs: n as isize, cs: 1 }, "[k, n]"), (View { ptr: w.as_ptr(), rs: 1, cs: k as isize }, "[n, k]ᵀ")] {
                let panels = unsafe { pack(b, n, k, kernel().unwrap()) };
                // What `matmul_2d` ran before the panels.
                let mut want = vec![0f32; m * n];
                unsafe { product(m, n, k, a, b, want.as_mut_ptr()) };
                for (threads, pool) in [(2, None), (1, Some(&one))] {
                    let run = || {
                        let mut c = vec![f32::NAN; m * n];
                        unsafe { multiply(m, a, &panels, c.as_mut_ptr()) };
                        c
                    };
                    let c = match pool {
                        Some(pool) => pool.install(run),
                        None => run(),
                    };
                    let differ = c.iter().zip(&want).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
                    assert_eq!(differ, 0, "[{m}, {k}] · {layout} ({n} columns), {threads} thread(s): {differ} of {} values differ from gemm's", m * n);
                }
            }
        }
    }

    /// A weight is packed the second time a training pass reads it (not the first, and never by
    /// inference alone), each way separately, and forgotten once nothing else holds it; too few
    /// rows of `a` keep gemm.
    #[test]
    fn packs_on_second_sight_and_forgets_dropped_weights() {
        if skipped() {
            return;
        }
        let (n, k) = (300, 256);
        let w = flex_tensor(values(n * k, 31), [k, n]);
        // The same storage read the other way: `[n, k]`'s transpose.
        let flipped = Flex::float_transpose(Flex::float_reshape(w.clone(), Shape::new([n, k])));
        assert_eq!(Arc::as_ptr(&w.data_arc()), Arc::as_ptr(&flipped.data_arc()), "one weight");
        let in_training = |b, m| training(|| panels_for(b, m));
        for _ in 0..3 {
            assert!(panels_for(&w, MIN_ROWS).is_none(), "inference never packs");
        }
        assert!(in_training(&w, MIN_ROWS - 1).is_none(), "too few rows");
        assert!(in_training(&w, MIN_ROWS).is_none(), "first sight");
        assert!(in_training(&flipped, MIN_ROWS).is_none(), "first sight the other way");
        let panels = in_training(&w, MIN_ROWS).expect("packed on second sight");
        let mr = kernel().unwrap().mr;
        assert_eq!((panels.n, panels.k, panels.data.len()), (n, k, n.div_ceil(mr) * mr * k));
        assert!(Arc::ptr_eq(&panels, &in_training(&w, MIN_ROWS).unwrap()), "kept");
        assert!(Arc::ptr_eq(&panels, &panels_for(&w, MIN_ROWS).unwrap()), "inference reads them");
        let other_way = in_training(&flipped, MIN_ROWS).expect("packed the other way on its second sight");
        assert_eq!((other_way.n, other_way.k), (n, k), "the same shape, read the other way");
        assert!(other_way.data != panels.data, "its own panels");
        let key = key(&w);
        let held = || SEEN.lock().unwrap().keys().any(|k| k.0 == key.0);
        assert!(held());
        drop((w, flipped));
        // The next weight a training pass sees lets the dropped one go, both of its entries.
        let other = flex_tensor(values(n * k, 37), [k, n]);
        assert!(training(|| panels_for(&other, MIN_ROWS)).is_none());
        assert!(!held(), "a dropped weight's entries are gone, both ways");
    }

    /// A weight another thread is packing is left to gemm, not waited for: training runs its
    /// parts on rayon's threads, and a thread waiting inside a pack may take another part's job,
    /// which reads the same weight.
    #[test]
    fn a_weight_being_packed_is_left_to_gemm() {
        if skipped() {
            return;
        }
        let (n, k) = (320, 256);
        let w = flex_tensor(values(n * k, 41), [k, n]);
        assert!(training(|| panels_for(&w, MIN_ROWS)).is_none(), "first sight");
        let key = key(&w);
        let set = |state| SEEN.lock().unwrap().get_mut(&key).expect("seen").state = state;
        set(State::Packing(n * k));
        assert!(training(|| panels_for(&w, MIN_ROWS)).is_none(), "being packed: gemm");
        let packing = SEEN.lock().unwrap().get(&key).is_some_and(|e| matches!(e.state, State::Packing(_)));
        assert!(packing, "left to the thread packing it");
        set(State::Seen);
        assert!(training(|| panels_for(&w, MIN_ROWS)).is_some(), "packed once free");
    }
}
