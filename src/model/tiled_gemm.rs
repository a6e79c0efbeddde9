//! `c = a b` in f32 on four-lane SIMD: the page's CPU products (wasm's simd128).
//!
//! `c[i, j] = Σ_p a[i, p] b[p, j]`, blocked as Goto and van de Geijn (2008): `b` is packed in
//! panels of [`NR`] columns for [`KC`] values of `p`, `a` in panels of [`MR`] rows, and each tile
//! `c[i..i+MR, j..j+NR]` is summed in registers over a panel's `p`, then added to `c`.
//!
//! Why not gemm 0.19, which the native build and burn-flex use: its wasm micro-kernel is 12×4,
//! twelve accumulators beside three vectors of `a`, a broadcast and a product, more vector
//! registers than V8 allocates on x86-64, so every step spills. In Chromium 156 on one Zen 5 core
//! (`scripts/bench-wasm-gemm`) it runs SmolLM2's products at 39-41 GFLOP/s, these 4×8 tiles (eight
//! accumulators) at 52-59, near the 60 a spill-free kernel reaches on its own (docs/results.md,
//! stop 66). Packing copies whole runs where the operand's rows allow, else reads along its columns.
//!
//! Large products are split over the cores by columns (by rows when there are fewer columns than
//! rows). Every part sums each output over the same [`KC`] blocks in the same order, so the result
//! does not depend on the number of threads. Outside wasm the lanes are plain arrays with the same
//! arithmetic (a multiply, then an add), so native tests check the page's exact sums where the
//! browser has no relaxed SIMD; where it has, the tiles run the `fused` module's kernel (wasm
//! only), whose sums are rounded once per multiply-add (a browser test checks it against f64).

use std::ops::Range;

use lanes::F4;

/// Rows of `a` a tile takes (each broadcast over a vector of `b`).
const MR: usize = 4;
/// Columns of `b` a tile takes: two vectors.
const NR: usize = 8;
/// Rows of `a` a fused tile takes (wasm's `fused`). With the multiply and the add one
/// instruction, six rows of two vectors fit the sixteen vector registers V8 gives wasm on x86-64:
/// twelve sums, two vectors of `b` and a broadcast (the plain tile's product in flight would make
/// seventeen).
const FR: usize = 6;
/// The depth of a packed panel: `b`'s panel ([`NR`] × `KC` floats, 8 KiB) stays in L1.
const KC: usize = 256;
/// Rows of `a` packed at a time (64 KiB at [`KC`]).
const MC: usize = 64;
/// Columns of `b` packed at a time (512 KiB at [`KC`], in L2).
const NC: usize = 512;
/// Multiply-adds above which a product is split over the cores (burn-flex's threshold).
pub const PARALLEL_ABOVE: usize = 192 * 192 * 192;

/// An operand of a product: its first element and its row and column strides, in elements.
#[derive(Clone, Copy)]
pub struct View {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

// SAFETY: a product only reads its operands, which outlive it.
unsafe impl Send for View {}
unsafe impl Sync for View {}

impl View {
    /// # Safety
    /// `(i, j)` is inside the operand.
    #[inline(always)]
    pub unsafe fn at(&self, i: usize, j: usize) -> f32 {
        unsafe { *self.ptr.offset(i as isize * self.rs + j as isize * self.cs) }
    }

    fn transposed(self) -> Self {
        Self { rs: self.cs, cs: self.rs, ..self }
    }
}

/// The output, row-major with `n` columns, shared by the threads that write disjoint parts of it.
#[derive(Clone, Copy)]
pub(super) struct Out(pub(super) *mut f32, pub(super) usize);
// SAFETY: each thread writes only the rows and columns of its own part.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// `c [m, n]` (row-major, every element written) `= a [m, k] · b [k, n]`.
///
/// # Safety
/// `a` and `b` address readable floats at every index of their shapes, and `c` has room for
/// `m * n` floats that nothing else reads or writes meanwhile.
pub unsafe fn gemm(m: usize, n: usize, k: usize, a: View, b: View, c: *mut f32) {
    let out = Out(c, n);
    if k == 0 {
        unsafe { std::ptr::write_bytes(c, 0, m * n) };
        return;
    }
    let parts = parts(m, n, k);
    let run = |(rows, cols): &(Range<usize>, Range<usize>)| unsafe { block(rows.clone(), cols.clone(), k, a, b, out) };
    #[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
    {
        use rayon::prelude::*;
        parts.par_iter().for_each(run);
    }
    #[cfg(not(any(not(target_arch = "wasm32"), feature = "threads")))]
    parts.iter().for_each(run);
}

/// The (rows, columns) each thread computes: the whole product when it is small or there is one
/// thread; else the longer side cut into one part per thread, whole tiles each.
fn parts(m: usize, n: usize, k: usize) -> Vec<(Range<usize>, Range<usize>)> {
    #[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
    let threads = rayon::current_num_threads();
    #[cfg(not(any(not(target_arch = "wasm32"), feature = "threads")))]
    let threads = 1;
    if threads == 1 || m.saturating_mul(n).saturating_mul(k) < PARALLEL_ABOVE {
        return vec![(0..m, 0..n)];
    }
    let cut = |len: usize, tile: usize| {
        let step = len.div_ceil(threads).div_ceil(tile) * tile;
        (0..len).step_by(step).map(move |s| s..(s + step).min(len))
    };
    if n >= m { cut(n, NR).map(|cols| (0..m, cols)).collect() } else { cut(m, MR).map(|rows| (rows, 0..n)).collect() }
}

/// `c[rows, cols] = a[rows, :] · b[:, cols]`, on this thread.
///
/// # Safety
/// As [`gemm`], for these rows and columns.
unsafe fn block(rows: Range<usize>, cols: Range<usize>, k: usize, a: View, b: View, c: Out) {
    let mut bp = vec![F4::ZERO; KC * NC.min(cols.len().next_multiple_of(NR)) / 4];
    // Room for the fused tiles' panels of `a` too (`MC` rows in panels of `FR`).
    let mut ap = vec![0f32; MC.next_multiple_of(FR) * KC];
    #[cfg(target_arch = "wasm32")]
    let (fused, mut row) = (fused::kernel(), [const { std::mem::MaybeUninit::uninit() }; fused::TILES]);
    for jc in cols.clone().step_by(NC) {
        let nc = NC.min(cols.end - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            for (q, j) in (jc..jc + nc).step_by(NR).enumerate() {
                let panel = lanes::floats_mut(&mut bp[q * kc * NR / 4..][..kc * NR / 4]);
                unsafe { pack::<NR>(b, pc..pc + kc, j..(j + NR).min(jc + nc), panel) };
            }
            for ic in rows.clone().step_by(MC) {
                let mc = MC.min(rows.end - ic);
                #[cfg(target_arch = "wasm32")]
                if let Some(kernel) = fused {
                    let panels = &bp[..nc.div_ceil(NR) * kc * NR / 4];
                    unsafe { fused::block(kernel, a, panels, pc..pc + kc, ic..ic + mc, jc..jc + nc, c, &mut ap, &mut row) };
                    continue;
                }
                for (q, i) in (ic..ic + mc).step_by(MR).enumerate() {
                    unsafe { pack::<MR>(a.transposed(), pc..pc + kc, i..(i + MR).min(ic + mc), &mut ap[q * kc * MR..][..kc * MR]) };
                }
                for (qb, j) in (jc..jc + nc).step_by(NR).enumerate() {
                    let b_panel = &bp[qb * kc * NR / 4..][..kc * NR / 4];
                    for (qa, i) in (ic..ic + mc).step_by(MR).enumerate() {
                        let sums = tile::<MR>(&ap[qa * kc * MR..][..kc * MR], b_panel);
                        unsafe { add_tile(c, &sums, i..(i + MR).min(ic + mc), j..(j + NR).min(jc + nc), pc == 0) };
                    }
                }
            }
        }
    }
}

/// `x[ps, cols]` as `ps.len()` runs of `W` floats, zeros past the last column: a panel of `b`
/// (`W` = [`NR`] columns) or, through `a`'s transpose, of `a` ([`MR`] rows).
///
/// # Safety
/// The indices are inside `x`.
unsafe fn pack<const W: usize>(x: View, ps: Range<usize>, cols: Range<usize>, panel: &mut [f32]) {
    let runs = panel.as_chunks_mut::<W>().0;
    if x.cs == 1 && cols.len() == W {
        // Rows of `x` in order: a copy each (a weight `b`, or `a` stored transposed).
        for (p, run) in ps.zip(runs) {
            *run = unsafe { x.ptr.offset(p as isize * x.rs + cols.start as isize).cast::<[f32; W]>().read_unaligned() };
        }
    } else if x.rs == 1 {
        // Columns of `x` in order (a row-major `a`, or a transposed `b`): each read once, along.
        for (jj, j) in cols.clone().enumerate() {
            for (p, run) in ps.clone().zip(runs.iter_mut()) {
                run[jj] = unsafe { x.at(p, j) };
            }
        }
        runs.iter_mut().for_each(|run| run[cols.len()..].fill(0.0));
    } else {
        for (p, run) in ps.zip(runs) {
            for (j, v) in cols.clone().zip(run.iter_mut()) {
                *v = unsafe { x.at(p, j) };
            }
            run[cols.len()..].fill(0.0);
        }
    }
}

/// `Σ_p a[:, p] b[p, :]` over two packed panels: `R` rows ([`MR`]) of two vectors.
#[inline(always)]
fn tile<const R: usize>(a: &[f32], b: &[F4]) -> [[F4; 2]; R] {
    let mut sums = [[F4::ZERO; 2]; R];
    for (a, b) in a.as_chunks::<R>().0.iter().zip(b.as_chunks::<2>().0) {
        for (row, &ai) in sums.iter_mut().zip(a) {
            row[0] = row[0].add(b[0].scale(ai));
            row[1] = row[1].add(b[1].scale(ai));
        }
    }
    sums
}

/// The tile with a fused multiply-add (`c + a b` rounded once: relaxed SIMD's
/// `f32x4.relaxed_madd`), where the browser has one.
///
/// Rust cannot emit relaxed SIMD into a module that must also load in browsers without it, so the
/// kernel is a module of its own (www/fused.js builds it and checks it validates). The engine's
/// loader puts its function into [`slot`]'s place in this instance's function table, in the
/// engine's worker and in each thread's, and then [`set`]s it on: every tile then calls through
/// that slot, a row of tiles a call. On cores that add and multiply in the same pipes (an Intel
/// VM) the products run 1.26-1.31× as fast (docs/results.md, stop 72); without relaxed SIMD
/// nothing changes.
#[cfg(target_arch = "wasm32")]
pub mod fused {
    use std::ops::Range;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{F4, FR, MC, NR, Out, View, add_tile, pack, tile};

    /// Tiles in a row of them: [`MC`] rows of `a`.
    pub const TILES: usize = MC.div_ceil(FR);
    /// A tile's sums, as the kernel stores them: [`FR`] rows of two vectors.
    pub type Sums = [[F4; 2]; FR];
    /// `kernel(a, b, kc, out, n)`: `n` tiles of the packed panel of `b` at `b`, each against the
    /// next packed panel of `a` (the panels one after another from `a`), all `kc` deep; their
    /// sums stored from `out`, one after another.
    pub type Kernel = extern "C" fn(*const f32, *const F4, usize, *mut Sums, usize);
    /// Room for the sums of a row of tiles.
    pub type Row = [std::mem::MaybeUninit<Sums>; TILES];

    /// [`slot`]'s index while the fused kernel is on, else 0 (no function has index 0).
    static ON: AtomicUsize = AtomicUsize::new(0);

    /// The table entry the loader replaces. A thread whose entry was not replaced (the kernel
    /// failed to build there) still gets the right sums, from the plain tile.
    extern "C" fn slot(a: *const f32, b: *const F4, kc: usize, out: *mut Sums, n: usize) {
        // SAFETY: `run` passes `n` panels of `a` and one of `b`, `kc` deep, and room for `n` sums.
        let (a, b) = unsafe { (std::slice::from_raw_parts(a, n * kc * FR), std::slice::from_raw_parts(b, kc * 2)) };
        for t in 0..n {
            unsafe { out.add(t).write(tile::<FR>(&a[t * kc * FR..][..kc * FR], b)) }
        }
    }

    /// The table index of [`slot`], for the loader.
    pub fn slot_index() -> u32 {
        slot as Kernel as usize as u32
    }

    /// Turns the fused kernel on or off for every thread (on: once the table holds it).
    pub fn set(on: bool) {
        ON.store(if on { slot as Kernel as usize } else { 0 }, Ordering::Relaxed);
    }

    /// The kernel to call, when the fused one is on. Read from memory, so the call goes through
    /// the table, where the loader put the fused kernel, and not straight to [`slot`].
    pub fn kernel() -> Option<Kernel> {
        let index = ON.load(Ordering::Relaxed);
        // SAFETY: a nonzero value is `slot`'s own function pointer (its table index).
        (index != 0).then(|| unsafe { std::mem::transmute::<usize, Kernel>(index) })
    }

    /// Whether the products run the fused kernel.
    pub fn on() -> bool {
        ON.load(Ordering::Relaxed) != 0
    }

    /// `c[rows, cols] (+)= a[rows, ps] · b[ps, cols]`, `b`'s panels packed in `bp`: `a` packed in
    /// panels of [`FR`] rows into `ap`, then a row of tiles a call for each panel of `b`.
    ///
    /// # Safety
    /// As [`super::block`], for these rows and columns; at most [`MC`] rows.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn block(kernel: Kernel, a: View, bp: &[F4], ps: Range<usize>, rows: Range<usize>, cols: Range<usize>, c: Out, ap: &mut [f32], row: &mut Row) {
        let kc = ps.len();
        let tiles = rows.len().div_ceil(FR);
        for (q, i) in rows.clone().step_by(FR).enumerate() {
            unsafe { pack::<FR>(a.transposed(), ps.clone(), i..(i + FR).min(rows.end), &mut ap[q * kc * FR..][..kc * FR]) };
        }
        for (qb, j) in cols.clone().step_by(NR).enumerate() {
            let sums = run(kernel, &ap[..tiles * kc * FR], &bp[qb * kc * NR / 4..][..kc * NR / 4], tiles, row);
            for (sums, i) in sums.iter().zip(rows.clone().step_by(FR)) {
                unsafe { add_tile(c, sums, i..(i + FR).min(rows.end), j..(j + NR).min(cols.end), ps.start == 0) };
            }
        }
    }

    /// The sums of `n` tiles (at most [`TILES`]) through `kernel`, into `out`: `a` holds their
    /// `n` panels.
    #[inline(always)]
    fn run<'o>(kernel: Kernel, a: &[f32], b: &[F4], n: usize, out: &'o mut Row) -> &'o [Sums] {
        assert!(n >= 1 && n <= out.len() && a.len() == n * (b.len() / 2) * FR, "a row of tiles");
        kernel(a.as_ptr(), b.as_ptr(), b.len() / 2, out.as_mut_ptr().cast(), n);
        // SAFETY: the kernel stored the first `n` tiles' sums.
        unsafe { std::slice::from_raw_parts(out.as_ptr().cast(), n) }
    }
}

/// Writes a tile's sums into `c[rows, cols]` (`first`: the first panel of `k`), else adds them.
///
/// # Safety
/// The rows and columns are inside `c` and this thread's part.
#[inline(always)]
unsafe fn add_tile<const R: usize>(c: Out, sums: &[[F4; 2]; R], rows: Range<usize>, cols: Range<usize>, first: bool) {
    for (i, row) in rows.zip(sums) {
        let at = unsafe { c.0.add(i * c.1 + cols.start) };
        if cols.len() == NR {
            for (h, v) in row.iter().enumerate() {
                let at = unsafe { at.add(4 * h) };
                let v = if first { *v } else { v.add(unsafe { F4::load(at) }) };
                unsafe { v.store(at) };
            }
        } else {
            let floats: [f32; NR] = lanes::to_floats(*row);
            for (j, x) in floats[..cols.len()].iter().enumerate() {
                let at = unsafe { at.add(j) };
                unsafe { *at = if first { *x } else { *at + x } };
            }
        }
    }
}

/// Four f32 lanes: wasm's `v128` in the page, an array elsewhere (the tests).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod lanes {
    use std::arch::wasm32::*;

    #[derive(Clone, Copy)]
    #[repr(transparent)]
    pub struct F4(v128);

    impl F4 {
        pub const ZERO: Self = Self(f32x4(0.0, 0.0, 0.0, 0.0));

        #[inline(always)]
        pub fn add(self, o: Self) -> Self {
            Self(f32x4_add(self.0, o.0))
        }

        /// Every lane times `s`.
        #[inline(always)]
        pub fn scale(self, s: f32) -> Self {
            Self(f32x4_mul(self.0, f32x4_splat(s)))
        }

        /// # Safety
        /// Four floats at `p`.
        #[inline(always)]
        pub unsafe fn load(p: *const f32) -> Self {
            Self(unsafe { v128_load(p.cast()) })
        }

        /// # Safety
        /// Room for four floats at `p`.
        #[inline(always)]
        pub unsafe fn store(self, p: *mut f32) {
            unsafe { v128_store(p.cast(), self.0) }
        }
    }

    pub fn floats_mut(v: &mut [F4]) -> &mut [f32] {
        // SAFETY: F4 is four f32s without padding.
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), v.len() * 4) }
    }

    pub fn to_floats<const N: usize>(v: [F4; 2]) -> [f32; N] {
        let mut out = [0f32; N];
        unsafe { v128_store(out.as_mut_ptr().cast(), v[0].0) };
        unsafe { v128_store(out.as_mut_ptr().add(4).cast(), v[1].0) };
        out
    }
}

/// Four f32 lanes as an array, with the same arithmetic as wasm's.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod lanes {
    #[derive(Clone, Copy)]
    #[repr(C, align(16))]
    pub struct F4([f32; 4]);

    impl F4 {
        pub const ZERO: Self = Self([0.0; 4]);

        #[inline(always)]
        pub fn add(self, o: Self) -> Self {
            Self(std::array::from_fn(|l| self.0[l] + o.0[l]))
        }

        #[inline(always)]
        pub fn scale(self, s: f32) -> Self {
            Self(self.0.map(|x| x * s))
        }

        /// # Safety
        /// Four floats at `p`.
        #[inline(always)]
        pub unsafe fn load(p: *const f32) -> Self {
            Self(unsafe { p.cast::<[f32; 4]>().read_unaligned() })
        }

        /// # Safety
        /// Room for four floats at `p`.
        #[inline(always)]
        pub unsafe fn store(self, p: *mut f32) {
            unsafe { p.cast::<[f32; 4]>().write_unaligned(self.0) }
        }
    }

    pub fn floats_mut(v: &mut [F4]) -> &mut [f32] {
        // SAFETY: F4 is four f32s without padding.
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), v.len() * 4) }
    }

    pub fn to_floats<const N: usize>(v: [F4; 2]) -> [f32; N] {
        std::array::from_fn(|j| v[j / 4].0[j % 4])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `a [m, k]` and `b [k, n]` from a small generator, each stored plain or transposed.
    fn operands(m: usize, k: usize, n: usize, seed: u32) -> (Vec<f32>, Vec<f32>) {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 2001) as f32 / 1000.0 - 1.0
        };
        ((0..m * k).map(|_| next()).collect(), (0..k * n).map(|_| next()).collect())
    }

    /// The product with sums in f64: an independent reference.
    fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum::<f64>() as f32;
            }
        }
        c
    }

    fn product(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, a_t: bool, b_t: bool) -> Vec<f32> {
        // A transposed operand is stored the other way round and read through its strides.
        let store = |x: &[f32], r: usize, c: usize, t: bool| -> Vec<f32> {
            if t { (0..r * c).map(|q| x[(q % r) * c + q / r]).collect() } else { x.to_vec() }
        };
        let (sa, sb) = (store(a, m, k, a_t), store(b, k, n, b_t));
        let view = |x: &Vec<f32>, r: usize, c: usize, t: bool| View {
            ptr: x.as_ptr(),
            rs: if t { 1 } else { c as isize },
            cs: if t { r as isize } else { 1 },
        };
        let mut c = vec![f32::NAN; m * n];
        unsafe { gemm(m, n, k, view(&sa, m, k, a_t), view(&sb, k, n, b_t), c.as_mut_ptr()) };
        c
    }

    /// Every element within 1e-5 (relative, at least 1) of the f64 sums, for partial tiles and
    /// panels, several panels of `k`, both operands plain or transposed, and products split over
    /// threads by columns and by rows.
    #[test]
    fn equals_the_sums_for_every_shape_and_layout() {
        let shapes =
            [(1, 1, 1), (3, 5, 7), (4, 8, 8), (5, 9, 17), (37, 300, 51), (65, 513, 9), (200, 210, 230), (300, 200, 40), (8, 600, 1100)];
        for (s, &(m, k, n)) in shapes.iter().enumerate() {
            let (a, b) = operands(m, k, n, s as u32 + 1);
            let want = reference(&a, &b, m, k, n);
            for (a_t, b_t) in [(false, false), (false, true), (true, false), (true, true)] {
                let got = product(&a, &b, m, k, n, a_t, b_t);
                let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs() / w.abs().max(1.0)).fold(0f32, |x, d| if d.is_nan() { d } else { x.max(d) });
                assert!(worst < 1e-5, "[{m}, {k}] x [{k}, {n}], a transposed {a_t}, b {b_t}: off by {worst}");
            }
        }
    }

    /// The threads' parts give the very sums one thread gives.
    #[test]
    fn the_same_sums_on_one_thread_as_on_several() {
        let (m, k, n) = (200, 600, 230);
        let (a, b) = operands(m, k, n, 9);
        let many = product(&a, &b, m, k, n, false, true);
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| product(&a, &b, m, k, n, false, true));
        let split = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap().install(|| product(&a, &b, m, k, n, false, true));
        assert!(many == one && split == one, "the split changed the sums");
        let rows = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap().install(|| parts(400, 60, 600));
        assert_eq!(rows.len(), 3, "few columns: cut by rows");
        assert!(rows.iter().all(|(r, c)| r.start % MR == 0 && *c == (0..60)), "{rows:?}");
    }

    /// No inner dimension: zeros.
    #[test]
    fn an_empty_inner_dimension_gives_zeros() {
        assert_eq!(product(&[], &[], 3, 0, 2, false, false), vec![0.0; 6]);
    }
}
