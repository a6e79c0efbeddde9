//! Softmax, log-softmax and SiLU over rows of f32, forward and backward, with an exp the compiler
//! vectorises: what [`super::fused`] runs on the CPU in one pass where burn composes five.
//!
//! softmax:      y = e^{x - m} / sum e^{x - m}       dx = y * (g - sum g*y)
//! log-softmax:  y = x - m - log sum e^{x - m}       dx = g - e^y * sum g
//! SiLU:         y = x * s,  s = 1 / (1 + e^{-x})    dx = g * s * (1 + x * (1 - s))
//!
//! m is the row's maximum. The loops are branch-free over fixed-width lanes, so they run as
//! SSE2 natively (AVX2 or AVX-512 where the CPU has it, chosen at run time) and as SIMD128 in the
//! browser.

/// Lanes of the reductions: partial sums or maxima side by side, which the compiler keeps in
/// vector registers (a single running sum would be a chain it may not reorder).
const LANES: usize = 16;

/// Above this e^x overflows f32 (inf there); below it e^x is within 2^-124 of 0 (0 there: no
/// weight a softmax could tell from none).
const EXP_HI: f32 = 88.72;
const EXP_LO: f32 = -86.0;

/// e^x to within 3 ulp: x = n ln 2 + r with |r| <= ln 2 / 2, e^r by Cephes' degree-6
/// polynomial, 2^(n-1) written into the exponent bits and doubled (so n = 128 fits). NaN stays
/// NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Adding 1.5 * 2^23 rounds to an integer, which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(EXP_LO, EXP_HI);
    let t = xc * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let n_bits = t.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let er = p * r * r + r + 1.0;
    let y = er * f32::from_bits(((n_bits + 126) << 23) as u32) * 2.0;
    let y = if x < EXP_LO { 0.0 } else { y };
    if x > EXP_HI { f32::INFINITY } else { y }
}

#[inline(always)]
fn row_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    let m = tail.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    acc.iter().fold(m, |m, &v| if v > m { v } else { m })
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (xa, xb) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += xa[i] * xb[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn sum(a: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = a.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (s, &v) in acc.iter_mut().zip(c) {
            *s += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y = e^{s x - m}`, returning the row's sum of them (`s` is 1 but for sampling's temperature;
/// `x * 1` is `x` to the bit).
#[inline(always)]
fn exp_shifted(x: &[f32], s: f32, m: f32, y: &mut [f32]) -> f32 {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = exp(v * s - m);
    }
    sum(y)
}

/// `y = e^{s x - m}`, m the largest `s x` (`s > 0`, so it is `s` times the largest x, the same
/// float): a softmax at temperature `1 / s` before its division, for sampling. Returns m and the
/// sum of y.
pub fn exp_scaled(x: &[f32], s: f32, y: &mut [f32]) -> (f32, f32) {
    let m = row_max(x) * s;
    (m, exp_shifted(x, s, m, y))
}

/// One of the operations, applied to a row: `inputs` are the forward's input (or its output and
/// the gradient, for a backward), each as long as `out`.
pub trait RowOp {
    fn row(inputs: [&[f32]; 2], out: &mut [f32]);
}

pub struct Softmax;
impl RowOp for Softmax {
    #[inline(always)]
    fn row([x, _]: [&[f32]; 2], y: &mut [f32]) {
        let total = exp_shifted(x, 1.0, row_max(x), y);
        let inv = 1.0 / total;
        y.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Inputs: the forward's output y, then the gradient g.
pub struct SoftmaxBackward;
impl RowOp for SoftmaxBackward {
    #[inline(always)]
    fn row([y, g]: [&[f32]; 2], dx: &mut [f32]) {
        let s = dot(g, y);
        for ((d, &yi), &gi) in dx.iter_mut().zip(y).zip(g) {
            *d = yi * (gi - s);
        }
    }
}

pub struct LogSoftmax;
impl RowOp for LogSoftmax {
    #[inline(always)]
    fn row([x, _]: [&[f32]; 2], y: &mut [f32]) {
        let m = row_max(x);
        let shift = m + exp_shifted(x, 1.0, m, y).ln();
        for (o, &v) in y.iter_mut().zip(x) {
            *o = v - shift;
        }
    }
}

/// Inputs: the forward's output y, then the gradient g.
pub struct LogSoftmaxBackward;
impl RowOp for LogSoftmaxBackward {
    #[inline(always)]
    fn row([y, g]: [&[f32]; 2], dx: &mut [f32]) {
        let s = sum(g);
        for ((d, &yi), &gi) in dx.iter_mut().zip(y).zip(g) {
            *d = gi - exp(yi) * s;
        }
    }
}

/// Elementwise (a "row" is any run of elements).
pub struct Silu;
impl RowOp for Silu {
    #[inline(always)]
    fn row([x, _]: [&[f32]; 2], y: &mut [f32]) {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = v / (1.0 + exp(-v));
        }
    }
}

/// Inputs: the forward's input x, then the gradient g.
pub struct SiluBackward;
impl RowOp for SiluBackward {
    #[inline(always)]
    fn row([x, g]: [&[f32]; 2], dx: &mut [f32]) {
        for ((d, &v), &gi) in dx.iter_mut().zip(x).zip(g) {
            let s = 1.0 / (1.0 + exp(-v));
            *d = gi * s * (1.0 + v * (1.0 - s));
        }
    }
}

/// `Op` on every row of `width` elements: `a` (and `b`, when the op reads two inputs) laid out as
/// `out` is.
pub fn each_row<Op: RowOp>(width: usize, a: &[f32], b: Option<&[f32]>, out: &mut [f32]) {
    assert!(width > 0 && a.len() == out.len() && out.len() % width == 0);
    assert!(b.is_none_or(|b| b.len() == out.len()));
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { each_row_avx512::<Op>(width, a, b, out) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { each_row_avx2::<Op>(width, a, b, out) };
    }
    each_row_generic::<Op>(width, a, b, out)
}

#[inline(always)]
fn each_row_generic<Op: RowOp>(width: usize, a: &[f32], b: Option<&[f32]>, out: &mut [f32]) {
    match b {
        Some(b) => {
            for ((ra, rb), ro) in a.chunks_exact(width).zip(b.chunks_exact(width)).zip(out.chunks_exact_mut(width)) {
                Op::row([ra, rb], ro);
            }
        }
        None => {
            for (ra, ro) in a.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
                Op::row([ra, &[]], ro);
            }
        }
    }
}

/// The same loops compiled for AVX2 (eight lanes where SSE2 has four).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn each_row_avx2<Op: RowOp>(width: usize, a: &[f32], b: Option<&[f32]>, out: &mut [f32]) {
    each_row_generic::<Op>(width, a, b, out)
}

/// And for AVX-512: sixteen lanes, one register per [`LANES`] accumulator.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn each_row_avx512<Op: RowOp>(width: usize, a: &[f32], b: Option<&[f32]>, out: &mut [f32]) {
    each_row_generic::<Op>(width, a, b, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`each_row`]'s output, once every SIMD build of the loops this CPU runs has given the
    /// plain loops' values.
    fn run<Op: RowOp>(width: usize, a: &[f32], b: Option<&[f32]>) -> Vec<f32> {
        let mut plain = vec![0.0; a.len()];
        each_row_generic::<Op>(width, a, b, &mut plain);
        let same = |name: &str, out: &[f32]| {
            for (x, y) in out.iter().zip(&plain) {
                assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "{x} vs {y}: the {name} and plain loops differ");
            }
        };
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("fma") {
            let mut out = vec![0.0; a.len()];
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has the features the function is compiled for.
                unsafe { each_row_avx2::<Op>(width, a, b, &mut out) };
                same("AVX2", &out);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: as above.
                unsafe { each_row_avx512::<Op>(width, a, b, &mut out) };
                same("AVX-512", &out);
            }
        }
        let mut out = vec![0.0; a.len()];
        each_row::<Op>(width, a, b, &mut out);
        same("dispatched", &out);
        out
    }

    /// Inputs across the range a model produces, with a tail shorter than the lanes.
    fn inputs(n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * 2.0 * scale).collect()
    }

    #[test]
    fn exp_matches_the_standard_library() {
        let mut worst = 0f64;
        for i in -86_000..=88_700 {
            let x = i as f32 * 1e-3 + 3.7e-4;
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert!(exp(88.72) > 3.3e38 && exp(88.72).is_finite());
        assert_eq!(exp(-1e4), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn softmax_and_log_softmax_match_the_definitions() {
        let width = 37;
        let x = inputs(width * 3, 20.0);
        let y = run::<Softmax>(width, &x, None);
        let ly = run::<LogSoftmax>(width, &x, None);
        for r in 0..3 {
            let row = &x[r * width..(r + 1) * width];
            let m = row.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
            let z: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
            for (j, &v) in row.iter().enumerate() {
                let want = (v as f64 - m).exp() / z;
                assert!((y[r * width + j] as f64 - want).abs() < 1e-6, "softmax");
                let want_log = v as f64 - m - z.ln();
                assert!((ly[r * width + j] as f64 - want_log).abs() < 1e-5, "log-softmax");
            }
        }
    }

    #[test]
    fn a_hidden_key_gets_no_weight() {
        let x = [0.0, -3.0e38, 1.0, f32::NEG_INFINITY];
        let y = run::<Softmax>(4, &x, None);
        assert_eq!((y[1], y[3]), (0.0, 0.0));
        assert!((y[0] + y[2] - 1.0).abs() < 1e-6);
    }

    /// Each backward against central differences of its forward, through a weighted sum.
    #[test]
    fn backwards_match_finite_differences() {
        let width = 21;
        let x: Vec<f32> = inputs(width * 2, 3.0);
        let g: Vec<f32> = inputs(width * 2, 1.0).iter().map(|v| v + 0.3).collect();
        let loss = |f: &dyn Fn(&[f32]) -> Vec<f32>, x: &[f32]| -> f64 {
            f(x).iter().zip(&g).map(|(y, w)| *y as f64 * *w as f64).sum()
        };
        let check = |name: &str, fwd: &dyn Fn(&[f32]) -> Vec<f32>, dx: Vec<f32>| {
            for i in 0..x.len() {
                let h = 1e-2;
                let (mut up, mut down) = (x.clone(), x.clone());
                up[i] += h;
                down[i] -= h;
                let numeric = (loss(fwd, &up) - loss(fwd, &down)) / (2.0 * h as f64);
                assert!((dx[i] as f64 - numeric).abs() < 2e-3, "{name}[{i}]: {} vs {numeric}", dx[i]);
            }
        };
        let softmax = |x: &[f32]| run::<Softmax>(width, x, None);
        let y = softmax(&x);
        check("softmax", &softmax, run::<SoftmaxBackward>(width, &y, Some(&g)));
        let log_softmax = |x: &[f32]| run::<LogSoftmax>(width, x, None);
        let y = log_softmax(&x);
        check("log-softmax", &log_softmax, run::<LogSoftmaxBackward>(width, &y, Some(&g)));
        let silu = |x: &[f32]| run::<Silu>(width, x, None);
        check("silu", &silu, run::<SiluBackward>(width, &x, Some(&g)));
    }

    #[test]
    fn silu_saturates_without_nan() {
        let y = run::<Silu>(4, &[-200.0, -90.0, 90.0, 200.0], None);
        assert_eq!(y, vec![-0.0, -0.0, 90.0, 200.0]);
    }
}
