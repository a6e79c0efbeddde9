//! `y = x W^T` for a few rows of `x` (the samples decoded together) against a [`QMatrix`], so
//! the weights stream from memory once per token whatever the number of samples.
//!
//! One input row against quantized weights (decoding one sample) is an integer product: the row
//! is taken as 16-bit integers per block of 32 ([`QInput`]) and each block of weights is
//! multiplied as the integers it stores. Several rows (a prompt, or samples decoded together)
//! turn each block of weights into f32 once, in registers, and dot it with every row.
//!
//! The output rows are split over the cores ([`crew`]: natively, and in the page's threaded
//! worker); natively the loops are compiled a second time for AVX2 (chosen at run time), in the
//! browser they run as SIMD128 (the wasm build turns the target feature on for the whole crate).

use std::sync::Mutex;

use super::crew;
use super::quant::{BLOCK, QData, QMatrix};

/// Output rows per task: enough work to pay for a task, enough tasks to share the cores.
const ROWS_PER_TASK: usize = 64;

/// Below this many multiply-adds a product runs on the calling thread: sharing it costs more
/// than it saves. Inside a decoding step a share costs a claim from a spinning thread
/// ([`crew`]), a microsecond or so, not a thread's wake-up.
const SMALL: usize = 1 << 16;

/// How one input row alone is multiplied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OneRow {
    /// As integers against quantized weights ([`QInput`]): fastest for one sample decoded alone.
    Integers,
    /// As floats, as every row is in company: a row's sums are then the same bits whatever the
    /// rows beside it, so a prompt decoded beside others gets the answer it gets alone.
    Floats,
}

/// `y[i][r] = sum_c x[i][c] * W[r][c]` for `n` input rows; `x` is `[n, cols]`, `y` is `[n, rows]`.
pub fn matmul(w: &QMatrix, x: &[f32], n: usize, one: OneRow, y: &mut [f32]) {
    assert_eq!(y.len(), n * w.rows);
    y.copy_from_slice(&products(&[w], x, n, one).remove(0));
}

/// [`matmul`] of one input against several matrices (q, k and v; gate and up), split over the
/// cores together: one wake-up of the threads instead of one per matrix. Returns each `[n, rows]`.
pub fn matmul_many(ws: &[&QMatrix], x: &[f32], n: usize, one: OneRow) -> Vec<Vec<f32>> {
    products(ws, x, n, one)
}

/// One input row as 16-bit integers per block of 32: `x ~ dx * qx`, qx in -32767..=32767.
/// Multiplying a block's stored integers by `qx` (`vpmaddwd` natively, `i32x4.dot_i16x8_s` in the
/// browser) is a third of the instructions of turning every weight into a float, which bounds a
/// token on the page's one thread and on two cores natively. The rounding is 1 part in 65534 of
/// the block's largest value; at 8 bits (llama.cpp's choice) SmolLM2's greedy answers changed.
/// Sums stay in i32: 32 products of at most 127 x 32767 per block.
pub struct QInput {
    qx: Vec<i16>,
    /// Per block: the scale `dx`, and the sum of the block's x (for Q4_1's minimum).
    dx: Vec<f32>,
    sum: Vec<f32>,
}

impl QInput {
    pub fn new(x: &[f32]) -> Self {
        let nb = x.len() / BLOCK;
        let (mut qx, mut dx, mut sum) = (Vec::with_capacity(x.len()), Vec::with_capacity(nb), Vec::with_capacity(nb));
        for b in x.chunks_exact(BLOCK) {
            let amax = b.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let d = amax / 32767.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            qx.extend(b.iter().map(|v| (v * inv).round() as i16));
            dx.push(d);
            sum.push(b.iter().sum());
        }
        Self { qx, dx, sum }
    }
}

/// What every task of a product reads: the input rows, and for one row of whole blocks against
/// quantized weights, the same row as integers (made once, for every row of every matrix).
struct Input<'a> {
    x: &'a [f32],
    n: usize,
    q: Option<QInput>,
    /// One row, multiplied as [`OneRow::Integers`] says.
    alone: bool,
}

fn products(ws: &[&QMatrix], x: &[f32], n: usize, one: OneRow) -> Vec<Vec<f32>> {
    // Computed as `[rows, n]` so each task owns a contiguous slice, then transposed (n is small).
    let mut yts: Vec<Vec<f32>> = ws
        .iter()
        .map(|w| {
            assert_eq!(x.len(), n * w.cols);
            vec![0.0f32; w.rows * n]
        })
        .collect();
    let mut tasks: Vec<(&QMatrix, usize, &mut [f32])> = Vec::new();
    for (w, yt) in ws.iter().zip(yts.iter_mut()) {
        for (t, out) in yt.chunks_mut(ROWS_PER_TASK * n).enumerate() {
            tasks.push((w, t * ROWS_PER_TASK, out));
        }
    }
    let quantized = ws.iter().any(|w| !matches!(w.data, QData::F32(_)));
    let alone = n == 1 && one == OneRow::Integers;
    let q = (alone && quantized && x.len() % BLOCK == 0).then(|| QInput::new(x));
    run(tasks, ws.iter().map(|w| w.rows * w.cols * n).sum(), &Input { x, n, q, alone });
    yts.into_iter()
        .zip(ws)
        .map(|(yt, w)| {
            if n == 1 {
                return yt;
            }
            let mut y = vec![0.0f32; yt.len()];
            for r in 0..w.rows {
                for i in 0..n {
                    y[i * w.rows + r] = yt[r * n + i];
                }
            }
            y
        })
        .collect()
}

fn run(tasks: Vec<(&QMatrix, usize, &mut [f32])>, work: usize, input: &Input) {
    if work < SMALL {
        tasks.into_iter().for_each(|(w, r0, out)| rows(w, input, r0, out));
        return;
    }
    // Each task is taken once, by whichever thread claims it.
    let tasks: Vec<Mutex<Option<_>>> = tasks.into_iter().map(|t| Mutex::new(Some(t))).collect();
    crew::for_each(tasks.len(), |i| {
        let task = tasks[i].lock().expect("a task's lock").take();
        if let Some((w, r0, out)) = task {
            rows(w, input, r0, out);
        }
    });
}

/// Rows `r0..r0 + out.len() / n` of `W`, into `out` as `[row, n]`.
fn rows(w: &QMatrix, input: &Input, r0: usize, out: &mut [f32]) {
    let (x, n) = (input.x, input.n);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
    {
        // SAFETY: the CPU has AVX2, FMA and F16C, checked just above.
        return unsafe { avx2::rows(w, input, r0, out) };
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    match &input.q {
        Some(q) if input.alone => simd128::rows_dot(q, w, x, r0, out),
        _ => simd128::rows_many(w, x, n, r0, out),
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    rows_scalar(w, x, n, r0, out);
}

/// [`rows`] without SIMD: each row of `W` (dequantized once) dotted with each input row.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn rows_scalar(w: &QMatrix, x: &[f32], n: usize, r0: usize, out: &mut [f32]) {
    let mut row = vec![0.0f32; w.cols];
    for (k, o) in out.chunks_exact_mut(n).enumerate() {
        let wr: &[f32] = match w.f32_row(r0 + k) {
            Some(wr) => wr,
            None => {
                w.row_into(r0 + k, &mut row);
                &row
            }
        };
        for (i, o) in o.iter_mut().enumerate() {
            *o = dot(wr, &x[i * w.cols..(i + 1) * w.cols]);
        }
    }
}

/// Rows `r0..` of `w` against `n` input rows `x` (a prompt, or samples decoded together), into
/// `out` as `[row, n]`: two weight rows made floats once (`floats(w, r, buf)`: the stored row,
/// or the row dequantized into `buf`), then dotted with four input rows a step (`dot4`), two of
/// the rest (`dot2`: two or three samples decoded together) and the last one alone (`dot1`),
/// eight sums in registers, so each vector loaded serves two or four multiply-adds. (Turning each
/// block into floats once per eight input rows, with one x load per multiply-add, held a 32-token
/// prompt to about a third of two Zen 1 cores' rate; a weight row at a time, the loads bounded
/// the page's prompt at ~11 GFLOP/s.) Inlined into each SIMD module's caller, so its closures
/// compile with that module's instructions.
#[inline(always)]
#[cfg(any(target_arch = "x86_64", all(target_arch = "wasm32", target_feature = "simd128")))]
fn rows_in_pairs(
    w: &QMatrix,
    x: &[f32],
    n: usize,
    r0: usize,
    out: &mut [f32],
    floats: impl for<'b> Fn(&'b QMatrix, usize, &'b mut [f32]) -> &'b [f32],
    dot4: impl Fn(&[f32], &[f32], &[f32]) -> [[f32; 4]; 2],
    dot2: impl Fn(&[f32], &[f32], &[f32]) -> [[f32; 2]; 2],
    dot1: impl Fn(&[f32], &[f32], &[f32]) -> [[f32; 1]; 2],
) {
    let c = w.cols;
    let mut ws = vec![0.0f32; 2 * c];
    for (k, o) in out.chunks_mut(2 * n).enumerate() {
        let pair = o.len() / n;
        let (b0, b1) = ws.split_at_mut(c);
        // An odd last row is paired with itself; its second sums are not kept.
        let w0 = floats(w, r0 + 2 * k, b0);
        let w1 = floats(w, r0 + 2 * k + pair - 1, b1);
        let mut i = 0;
        while i + 4 <= n {
            let sums = dot4(w0, w1, &x[i * c..(i + 4) * c]);
            for t in 0..pair {
                o[t * n + i..t * n + i + 4].copy_from_slice(&sums[t]);
            }
            i += 4;
        }
        if i + 2 <= n {
            let sums = dot2(w0, w1, &x[i * c..(i + 2) * c]);
            for t in 0..pair {
                o[t * n + i..t * n + i + 2].copy_from_slice(&sums[t]);
            }
            i += 2;
        }
        for i in i..n {
            let sums = dot1(w0, w1, &x[i * c..(i + 1) * c]);
            for t in 0..pair {
                o[t * n + i] = sums[t][0];
            }
        }
    }
}

/// `sum a[j] b[j]`: SIMD128 in the browser, 8 independent lanes the compiler can vectorize
/// elsewhere (the matrix products natively use [`avx2`]).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return simd128::dot(a, b);
    #[allow(unreachable_code)]
    dot_scalar(a, b)
}

#[inline(always)]
fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 8;
    let (ac, at) = a.as_chunks::<L>();
    let (bc, bt) = b.as_chunks::<L>();
    let mut acc = [0.0f32; L];
    for (x, y) in ac.iter().zip(bc) {
        for l in 0..L {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = 0.0;
    for (x, y) in at.iter().zip(bt) {
        s += x * y;
    }
    acc.iter().sum::<f32>() + s
}

/// AVX2 + FMA (and F16C for the blocks' f16 scales): one sample as 16-bit integer products
/// (`vpmaddwd`), several as floats, 8 a vector.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::quant::{BLOCK, BlockQ4_1, BlockQ8_0, QData, QMatrix};
    use super::{Input, QInput};

    /// How far ahead of the block in use to ask for memory. The hardware prefetcher alone left
    /// two threads at 5.3 GB/s on a 106 MB Q4_1 matrix; 2 KB ahead, 10-11 GB/s (256 B: 4.1,
    /// 1 KB: 10.2), measured by the ignored `speed` test on the project's 2-core VM.
    const AHEAD: usize = 2048;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub fn rows(w: &QMatrix, input: &Input, r0: usize, out: &mut [f32]) {
        let (x, n) = (input.x, input.n);
        let nb = w.cols / BLOCK;
        if input.alone {
            // One sample alone: integer products against the input's integers.
            for (k, o) in out.iter_mut().enumerate() {
                let r = r0 + k;
                *o = match (&w.data, &input.q) {
                    (QData::Q4_1(b), Some(q)) => q4_1_dot(&b[r * nb..(r + 1) * nb], q),
                    (QData::Q8_0(b), Some(q)) => q8_0_dot(&b[r * nb..(r + 1) * nb], q),
                    _ => dot(w.f32_row(r).expect("a quantized product has the input as integers"), x),
                };
            }
            return;
        }
        rows_many(w, x, n, r0, out);
    }

    /// [`super::rows_in_pairs`] with AVX2's loops. Each sum adds its products in the order the
    /// loop of one input row at a time did (columns in order, eight lanes, then [`hsum`]), so the
    /// values are the same to the bit.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn rows_many(w: &QMatrix, x: &[f32], n: usize, r0: usize, out: &mut [f32]) {
        super::rows_in_pairs(
            w,
            x,
            n,
            r0,
            out,
            |w, r, buf| row_floats(w, r, buf),
            |w0, w1, x| dot_2x::<4>(w0, w1, x),
            |w0, w1, x| dot_2x::<2>(w0, w1, x),
            |w0, w1, x| dot_2x::<1>(w0, w1, x),
        );
    }

    /// Row `r` of `w` as floats: the stored row when `w` is f32, else dequantized into `buf`.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn row_floats<'a>(w: &'a QMatrix, r: usize, buf: &'a mut [f32]) -> &'a [f32] {
        let nb = w.cols / BLOCK;
        let store = |o: &mut [f32], ws: [__m256; 4]| {
            for (k, wv) in ws.into_iter().enumerate() {
                // SAFETY: 4 x 8 floats into a 32-float chunk.
                unsafe { _mm256_storeu_ps(o.as_mut_ptr().add(8 * k), wv) };
            }
        };
        match &w.data {
            QData::F32(_) => return w.f32_row(r).expect("an f32 matrix has f32 rows"),
            QData::Q4_1(blocks) => {
                blocks[r * nb..(r + 1) * nb].iter().zip(buf.chunks_exact_mut(BLOCK)).for_each(|(b, o)| store(o, q4_1_floats(b)))
            }
            QData::Q8_0(blocks) => {
                blocks[r * nb..(r + 1) * nb].iter().zip(buf.chunks_exact_mut(BLOCK)).for_each(|(b, o)| store(o, q8_0_floats(b)))
            }
        }
        buf
    }

    /// `w0` and `w1` (each `c` long) dotted with each of the `M` rows of `x` (`M c` long).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn dot_2x<const M: usize>(w0: &[f32], w1: &[f32], x: &[f32]) -> [[f32; M]; 2] {
        let c = w0.len();
        assert!(w1.len() == c && x.len() == M * c);
        let whole = c / 8 * 8;
        let mut acc = [[_mm256_setzero_ps(); M]; 2];
        let (p0, p1, px) = (w0.as_ptr(), w1.as_ptr(), x.as_ptr());
        let mut j = 0;
        while j < whole {
            // SAFETY: j + 8 <= whole <= c, the length of w0 and w1 and of each row of x.
            unsafe {
                let (a0, a1) = (_mm256_loadu_ps(p0.add(j)), _mm256_loadu_ps(p1.add(j)));
                for i in 0..M {
                    let xv = _mm256_loadu_ps(px.add(i * c + j));
                    acc[0][i] = _mm256_fmadd_ps(a0, xv, acc[0][i]);
                    acc[1][i] = _mm256_fmadd_ps(a1, xv, acc[1][i]);
                }
            }
            j += 8;
        }
        let zero = _mm256_setzero_ps();
        let mut out = [[0.0f32; M]; 2];
        for (t, w) in [w0, w1].into_iter().enumerate() {
            for i in 0..M {
                let mut s = hsum([acc[t][i], zero, zero, zero]);
                for j in whole..c {
                    s += w[j] * x[i * c + j];
                }
                out[t][i] = s;
            }
        }
        out
    }

    /// The 32 weights of a Q4_1 block, `q * d + m` (multiplied, then added: not fused, so they
    /// are the values the f32 weights hold, to the bit).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn q4_1_floats(b: &BlockQ4_1) -> [__m256; 4] {
        // SAFETY: reads the block's 16 bytes of nibbles.
        let bytes = unsafe { _mm_loadu_si128(b.qs.as_ptr().cast()) };
        let mask = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(bytes, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
        let dm = scales(b.scale_bits());
        let (d, m) = (_mm256_broadcastss_ps(dm), _mm256_broadcastss_ps(_mm_movehdup_ps(dm)));
        [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)]
            .map(|q| _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q)), d), m))
    }

    /// The 32 weights of a Q8_0 block, `d * q`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn q8_0_floats(b: &BlockQ8_0) -> [__m256; 4] {
        let d = _mm256_broadcastss_ps(scales(u32::from(b.d.to_bits())));
        // SAFETY: four 8-byte reads inside the block's 32 bytes.
        [0, 1, 2, 3].map(|k| unsafe {
            let q = _mm_loadl_epi64(b.qs.as_ptr().add(k * 8).cast());
            _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d)
        })
    }

    /// Row `blocks` dotted with the input: per block, `d dx (q . qx) + m sum(x)`, the products
    /// of 16-bit integers summed in pairs (`vpmaddwd`).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn q4_1_dot(blocks: &[BlockQ4_1], x: &QInput) -> f32 {
        assert!(x.qx.len() == blocks.len() * BLOCK && x.dx.len() == blocks.len() && x.sum.len() == blocks.len());
        let mask = _mm_set1_epi8(0x0f);
        let (mut acc, mut minimum) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for (b, blk) in blocks.iter().enumerate() {
            prefetch(blk, AHEAD);
            // SAFETY: the block's 16 bytes of nibbles, and block b's 32 integers of x (length
            // checked above).
            let (bytes, x0, x1) = unsafe {
                let xs = x.qx.as_ptr().add(b * BLOCK);
                (_mm_loadu_si128(blk.qs.as_ptr().cast()), _mm256_loadu_si256(xs.cast()), _mm256_loadu_si256(xs.add(16).cast()))
            };
            // Low nibbles are elements 0..16, high nibbles 16..32: 16 x i16 each.
            let lo = _mm256_cvtepu8_epi16(_mm_and_si128(bytes, mask));
            let hi = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(bytes, 4), mask));
            let dots = _mm256_add_epi32(_mm256_madd_epi16(lo, x0), _mm256_madd_epi16(hi, x1));
            let dm = scales(blk.scale_bits());
            let d = _mm256_mul_ps(_mm256_broadcastss_ps(dm), _mm256_set1_ps(x.dx[b]));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots), d, acc);
            minimum = _mm256_fmadd_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(dm)), _mm256_set1_ps(x.sum[b]), minimum);
        }
        hsum([acc, _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()]) + _mm256_cvtss_f32(minimum)
    }

    /// Row `blocks` dotted with the input: per block, `d dx (q . qx)`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn q8_0_dot(blocks: &[BlockQ8_0], x: &QInput) -> f32 {
        assert!(x.qx.len() == blocks.len() * BLOCK && x.dx.len() == blocks.len());
        let mut acc = _mm256_setzero_ps();
        for (b, blk) in blocks.iter().enumerate() {
            prefetch(blk, AHEAD);
            // SAFETY: two 16-byte reads inside the block's 32 bytes, and block b's 32 integers of
            // x (length checked above).
            let (q0, q1, x0, x1) = unsafe {
                let xs = x.qx.as_ptr().add(b * BLOCK);
                (
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(blk.qs.as_ptr().cast())),
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(blk.qs.as_ptr().add(16).cast())),
                    _mm256_loadu_si256(xs.cast()),
                    _mm256_loadu_si256(xs.add(16).cast()),
                )
            };
            let dots = _mm256_add_epi32(_mm256_madd_epi16(q0, x0), _mm256_madd_epi16(q1, x1));
            let d = _mm256_mul_ps(_mm256_broadcastss_ps(scales(u32::from(blk.d.to_bits()))), _mm256_set1_ps(x.dx[b]));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots), d, acc);
        }
        hsum([acc, _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()])
    }

    /// Two f16 values (low half first) widened in one instruction: lanes `[a, b, 0, 0]`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn scales(bits: u32) -> __m128 {
        _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))
    }

    /// Asks for the cache line `bytes` past `at`; a hint, so an address past the end is harmless.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn prefetch<T>(at: &T, bytes: usize) {
        let p = (at as *const T).cast::<i8>().wrapping_add(bytes);
        // Prefetching never faults, whatever the address.
        _mm_prefetch::<_MM_HINT_T0>(p);
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn hsum(acc: [__m256; 4]) -> f32 {
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let s = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        let len = a.len().min(b.len());
        let whole = len / 32 * 32;
        let mut acc = [_mm256_setzero_ps(); 4];
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut i = 0;
        while i < whole {
            for (k, acc) in acc.iter_mut().enumerate() {
                // SAFETY: i + 8k + 8 <= whole <= the length of both slices.
                *acc = unsafe { _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8 * k)), _mm256_loadu_ps(pb.add(i + 8 * k)), *acc) };
            }
            i += 32;
        }
        let mut total = hsum(acc);
        for j in whole..len {
            total += a[j] * b[j];
        }
        total
    }
}

/// SIMD128 (the wasm build turns it on for the crate): 4 floats a vector.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    use std::arch::wasm32::*;

    use super::QInput;
    use super::super::quant::{BLOCK, BlockQ4_1, BlockQ8_0, QData, QMatrix};

    /// The 32 weights of a Q4_1 block in eight vectors, `q * d + m` (low nibbles first).
    #[inline(always)]
    fn q4_1_floats(b: &BlockQ4_1) -> [v128; 8] {
        // SAFETY: reads the block's 16 bytes of nibbles.
        let bytes = unsafe { v128_load(b.qs.as_ptr().cast()) };
        let (lo, hi) = (v128_and(bytes, u8x16_splat(0x0f)), u8x16_shr(bytes, 4));
        let (dv, mv) = (f32x4_splat(b.d()), f32x4_splat(b.m()));
        let w16 = [u16x8_extend_low_u8x16(lo), u16x8_extend_high_u8x16(lo), u16x8_extend_low_u8x16(hi), u16x8_extend_high_u8x16(hi)];
        std::array::from_fn(|i| {
            let w32 = if i % 2 == 0 { u32x4_extend_low_u16x8(w16[i / 2]) } else { u32x4_extend_high_u16x8(w16[i / 2]) };
            // 0..16 reads the same as signed; x86 has one instruction for a signed conversion and
            // none for an unsigned one (V8 emulates it in several).
            f32x4_add(f32x4_mul(f32x4_convert_i32x4(w32), dv), mv)
        })
    }

    /// The 32 weights of a Q8_0 block in eight vectors, `d * q`.
    #[inline(always)]
    fn q8_0_floats(b: &BlockQ8_0) -> [v128; 8] {
        // SAFETY: two 16-byte reads inside the block's 32 bytes.
        let bytes = unsafe { [v128_load(b.qs.as_ptr().cast()), v128_load(b.qs.as_ptr().add(16).cast())] };
        let w16 = [i16x8_extend_low_i8x16(bytes[0]), i16x8_extend_high_i8x16(bytes[0]), i16x8_extend_low_i8x16(bytes[1]), i16x8_extend_high_i8x16(bytes[1])];
        let dv = f32x4_splat(b.d());
        std::array::from_fn(|i| {
            let w32 = if i % 2 == 0 { i32x4_extend_low_i16x8(w16[i / 2]) } else { i32x4_extend_high_i16x8(w16[i / 2]) };
            f32x4_mul(f32x4_convert_i32x4(w32), dv)
        })
    }

    /// What the integer product reads of a block: its 32 quants as 16-bit integers (4 vectors),
    /// its scale `d`, and its minimum `m` where the format has one.
    trait Quants {
        fn quants(&self) -> [v128; 4];
        fn scale(&self) -> f32;
        fn minimum(&self) -> Option<f32>;
    }

    impl Quants for BlockQ4_1 {
        /// Low nibbles first. Widened first, then split: x86 has 16-bit shifts and no 8-bit ones,
        /// which V8 emulates in several instructions.
        #[inline(always)]
        fn quants(&self) -> [v128; 4] {
            // SAFETY: reads the block's 16 bytes of nibbles.
            let bytes = unsafe { v128_load(self.qs.as_ptr().cast()) };
            let (a, c) = (u16x8_extend_low_u8x16(bytes), u16x8_extend_high_u8x16(bytes));
            let low = u16x8_splat(0x0f);
            [v128_and(a, low), v128_and(c, low), u16x8_shr(a, 4), u16x8_shr(c, 4)]
        }
        #[inline(always)]
        fn scale(&self) -> f32 {
            self.d()
        }
        #[inline(always)]
        fn minimum(&self) -> Option<f32> {
            Some(self.m())
        }
    }

    impl Quants for BlockQ8_0 {
        #[inline(always)]
        fn quants(&self) -> [v128; 4] {
            // SAFETY: two 16-byte reads inside the block's 32 bytes.
            let bytes = unsafe { [v128_load(self.qs.as_ptr().cast()), v128_load(self.qs.as_ptr().add(16).cast())] };
            [i16x8_extend_low_i8x16(bytes[0]), i16x8_extend_high_i8x16(bytes[0]), i16x8_extend_low_i8x16(bytes[1]), i16x8_extend_high_i8x16(bytes[1])]
        }
        #[inline(always)]
        fn scale(&self) -> f32 {
            self.d()
        }
        #[inline(always)]
        fn minimum(&self) -> Option<f32> {
            None
        }
    }

    /// Rows `r0..r0 + out.len()` of `w` dotted with one input row, `xq` quantized (`x` for an
    /// f32 matrix), four rows a pass where it can: each vector of the input is loaded once for
    /// the four. A row a pass, the loads bounded the product (2.6-3.0 GB/s of weights in V8 on an
    /// Intel Xeon; four rows a pass 4.5-4.8).
    pub fn rows_dot(xq: &QInput, w: &QMatrix, x: &[f32], r0: usize, out: &mut [f32]) {
        match &w.data {
            QData::F32(_) => out.iter_mut().enumerate().for_each(|(k, o)| *o = dot(w.f32_row(r0 + k).expect("an f32 matrix"), x)),
            QData::Q4_1(blocks) => rows_of(blocks, w.cols / BLOCK, xq, r0, out),
            QData::Q8_0(blocks) => rows_of(blocks, w.cols / BLOCK, xq, r0, out),
        }
    }

    /// [`rows_dot`] for a matrix of `nb` blocks a row: four rows a pass, then the rest one by one.
    /// The four are a quarter of the rows apart, not neighbours: four streams through memory
    /// instead of one. Rows of 576 or 1536 weights (SmolLM2's) are 432 or 1152 bytes, so four
    /// neighbours are one short stream, and V8 read it at 3.9-4.5 GB/s where four streams a
    /// quarter apart read 6.0-7.7 (a microbenchmark in node 20, Intel Xeon; rows of 18432 weights
    /// read 6.7 either way).
    #[inline(always)]
    fn rows_of<B: Quants>(blocks: &[B], nb: usize, xq: &QInput, r0: usize, out: &mut [f32]) {
        let quarter = out.len() / 4;
        for k in 0..quarter {
            let rs = [k, k + quarter, k + 2 * quarter, k + 3 * quarter];
            let ys = dots(blocks, nb, xq, rs.map(|r| r0 + r));
            for (r, y) in rs.into_iter().zip(ys) {
                out[r] = y;
            }
        }
        for k in 4 * quarter..out.len() {
            out[k] = dots(blocks, nb, xq, [r0 + k])[0];
        }
    }

    /// Rows `rs` of a matrix of `nb` blocks a row dotted with the input: per block,
    /// `d dx (q . qx) + m sum(x)`. Each row's sums run in the same order whatever `R` is, so the
    /// result does not depend on it.
    #[inline(always)]
    fn dots<B: Quants, const R: usize>(blocks: &[B], nb: usize, xq: &QInput, rs: [usize; R]) -> [f32; R] {
        let rows = rs.map(|r| &blocks[r * nb..(r + 1) * nb]);
        let mut acc = [f32x4_splat(0.0); R];
        let mut minimum = [0.0f32; R];
        for b in 0..nb {
            // SAFETY: four 8 x i16 reads of block b's 32 inputs, inside qx (`cols` long).
            let x: [v128; 4] = std::array::from_fn(|k| unsafe { v128_load(xq.qx.as_ptr().add(b * BLOCK + 8 * k).cast()) });
            for (i, row) in rows.iter().enumerate() {
                let blk = &row[b];
                // The block's 32 quants times its 32 inputs, summed in i32.
                let q = blk.quants();
                let p = [0, 1, 2, 3].map(|k| i32x4_dot_i16x8(q[k], x[k]));
                let s = f32x4_convert_i32x4(i32x4_add(i32x4_add(p[0], p[1]), i32x4_add(p[2], p[3])));
                acc[i] = f32x4_add(acc[i], f32x4_mul(s, f32x4_splat(blk.scale() * xq.dx[b])));
                if let Some(m) = blk.minimum() {
                    minimum[i] += m * xq.sum[b];
                }
            }
        }
        let lanes = |a: v128| f32x4_extract_lane::<0>(a) + f32x4_extract_lane::<1>(a) + f32x4_extract_lane::<2>(a) + f32x4_extract_lane::<3>(a);
        std::array::from_fn(|i| lanes(acc[i]) + minimum[i])
    }

    /// Row `r` of `w` as floats: the stored row when `w` is f32, else dequantized into `buf`.
    fn row_floats<'a>(w: &'a QMatrix, r: usize, buf: &'a mut [f32]) -> &'a [f32] {
        let nb = w.cols / BLOCK;
        let store = |o: &mut [f32], ws: [v128; 8]| {
            for (k, wv) in ws.into_iter().enumerate() {
                // SAFETY: 8 x 4 floats into a 32-float chunk.
                unsafe { v128_store(o.as_mut_ptr().add(4 * k).cast(), wv) };
            }
        };
        match &w.data {
            QData::F32(_) => return w.f32_row(r).expect("an f32 matrix has f32 rows"),
            QData::Q4_1(blocks) => {
                blocks[r * nb..(r + 1) * nb].iter().zip(buf.chunks_exact_mut(BLOCK)).for_each(|(b, o)| store(o, q4_1_floats(b)))
            }
            QData::Q8_0(blocks) => {
                blocks[r * nb..(r + 1) * nb].iter().zip(buf.chunks_exact_mut(BLOCK)).for_each(|(b, o)| store(o, q8_0_floats(b)))
            }
        }
        buf
    }

    /// [`super::rows_in_pairs`] with SIMD128's loops.
    pub fn rows_many(w: &QMatrix, x: &[f32], n: usize, r0: usize, out: &mut [f32]) {
        super::rows_in_pairs(w, x, n, r0, out, row_floats, dot_2x::<4>, dot_2x::<2>, dot_2x::<1>);
    }

    /// `w0` and `w1` (each `c` long) dotted with each of the `M` rows of `x` (`M c` long).
    #[inline(always)]
    fn dot_2x<const M: usize>(w0: &[f32], w1: &[f32], x: &[f32]) -> [[f32; M]; 2] {
        let c = w0.len();
        assert!(w1.len() == c && x.len() == M * c);
        let whole = c / 4 * 4;
        let mut acc = [[f32x4_splat(0.0); M]; 2];
        let (p0, p1, px) = (w0.as_ptr(), w1.as_ptr(), x.as_ptr());
        let mut j = 0;
        while j < whole {
            // SAFETY: j + 4 <= whole <= c, the length of w0 and w1 and of each row of x.
            unsafe {
                let (a0, a1) = (v128_load(p0.add(j).cast()), v128_load(p1.add(j).cast()));
                for i in 0..M {
                    let xv = v128_load(px.add(i * c + j).cast());
                    acc[0][i] = f32x4_add(acc[0][i], f32x4_mul(a0, xv));
                    acc[1][i] = f32x4_add(acc[1][i], f32x4_mul(a1, xv));
                }
            }
            j += 4;
        }
        let lanes = |v: v128| f32x4_extract_lane::<0>(v) + f32x4_extract_lane::<1>(v) + f32x4_extract_lane::<2>(v) + f32x4_extract_lane::<3>(v);
        let mut out = [[0.0f32; M]; 2];
        for (t, w) in [w0, w1].into_iter().enumerate() {
            for i in 0..M {
                out[t][i] = lanes(acc[t][i]) + (whole..c).map(|j| w[j] * x[i * c + j]).sum::<f32>();
            }
        }
        out
    }

    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let len = a.len().min(b.len());
        let whole = len / 16 * 16;
        // SAFETY: every load is below `whole` <= the length of both slices.
        unsafe {
            let mut acc = [f32x4_splat(0.0); 4];
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let mut i = 0;
            while i < whole {
                for (k, acc) in acc.iter_mut().enumerate() {
                    let p = f32x4_mul(v128_load(pa.add(i + 4 * k).cast()), v128_load(pb.add(i + 4 * k).cast()));
                    *acc = f32x4_add(*acc, p);
                }
                i += 16;
            }
            let s = f32x4_add(f32x4_add(acc[0], acc[1]), f32x4_add(acc[2], acc[3]));
            let mut total = f32x4_extract_lane::<0>(s) + f32x4_extract_lane::<1>(s) + f32x4_extract_lane::<2>(s) + f32x4_extract_lane::<3>(s);
            for j in whole..len {
                total += a[j] * b[j];
            }
            total
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_the_plain_sum_for_every_layout() {
        use crate::io::gguf::{TensorType, dequantize};
        // Q4_1 weights (whole blocks), f32 ones over more rows than one task, and a row length
        // with a tail (kept at f32).
        let q4_1 = |rows: usize, cols: usize| {
            let mut blocks = Vec::new();
            for i in 0..rows * cols / BLOCK {
                blocks.extend(half::f16::from_f32(0.01 + (i % 5) as f32 * 0.003).to_le_bytes());
                blocks.extend(half::f16::from_f32(-0.05).to_le_bytes());
                blocks.extend((0..16).map(|j| ((i * 31 + j * 7) % 256) as u8));
            }
            dequantize(TensorType::Q4_1, &blocks)
        };
        let f32s = |rows: usize, cols: usize| (0..rows * cols).map(|i| ((i * 7919) % 61) as f32 / 61.0 - 0.5).collect::<Vec<f32>>();
        for (rows_, cols, w) in [(96, 64, q4_1(96, 64)), (130, 96, f32s(130, 96)), (70, 40, f32s(70, 40))] {
            let m = QMatrix::exact(rows_, cols, w.clone());
            assert_eq!(m.format() == "Q4_1", rows_ == 96, "{}", m.format());
            let mut first: Vec<Vec<f32>> = Vec::new();
            for (n, one) in [(1, OneRow::Integers), (1, OneRow::Floats), (2, OneRow::Floats), (3, OneRow::Integers), (6, OneRow::Floats), (11, OneRow::Floats)] {
                // The same first rows whatever n.
                let x: Vec<f32> = (0..n * cols).map(|i| ((i * 104729) % 37) as f32 / 37.0 - 0.4).collect();
                let mut y = vec![0.0; n * rows_];
                matmul(&m, &x, n, one, &mut y);
                for i in 0..n {
                    for r in 0..rows_ {
                        let want: f32 = (0..cols).map(|c| x[i * cols + c] * w[r * cols + c]).sum();
                        assert!((y[i * rows_ + r] - want).abs() < 1e-4, "row {r} sample {i}: {} vs {want}", y[i * rows_ + r]);
                    }
                }
                if n > 1 || one == OneRow::Floats {
                    first.push(y[..rows_].to_vec());
                }
            }
            // A row multiplied as floats has the same sums alone and beside others (four a step,
            // two, or one): samples and prompts decoded together get the numbers they would in
            // any other company.
            assert!(first.windows(2).all(|p| p[0] == p[1]), "a row's sums changed with its company ({rows_} x {cols})");
        }
        assert_eq!(dot(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);
    }
}

#[cfg(test)]
mod speed {
    use super::*;
    use crate::io::gguf::{TensorType, dequantize};

    #[test]
    #[ignore]
    fn speed() {
        let (rows, cols) = (1536 * 160, 576);
        let mut blocks = Vec::new();
        for i in 0..rows * cols / 32 {
            blocks.extend(half::f16::from_f32(0.01).to_le_bytes());
            blocks.extend(half::f16::from_f32(-0.05).to_le_bytes());
            blocks.extend((0..16).map(|j| ((i + j) % 256) as u8));
        }
        let w = QMatrix::exact(rows, cols, dequantize(TensorType::Q4_1, &blocks));
        assert_eq!(w.format(), "Q4_1");
        let x: Vec<f32> = (0..cols).map(|i| i as f32 / 1000.0).collect();
        let mut y = vec![0.0; rows];
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let t = std::time::Instant::now();
                for _ in 0..10 {
                    matmul(&w, &x, 1, OneRow::Integers, &mut y);
                }
                let s = t.elapsed().as_secs_f64() / 10.0;
                eprintln!("{threads} threads: {:.3} ms, {:.2} GB/s, {:.2} Gweights/s", s * 1e3, w.bytes() as f64 / s / 1e9, (rows * cols) as f64 / s / 1e9);
            });
        }
    }
}
