//! Exports for scripts/bench-wasm-gemm: one product, `reps` times, by gemm, by the page's tiles or
//! by its tiles on the fused kernel (www/fused.js, which run.mjs puts into [`tile_slot`]), on one
//! thread; and the largest difference from gemm's.

#[path = "../../../src/model/tiled_gemm.rs"]
#[allow(dead_code)]
mod tiled_gemm;

use tiled_gemm::View;

/// `[m, k]` and `[k, n]` operands, as stored.
fn operands(m: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
    let a = (0..m * k).map(|i| ((i * 31 % 17) as f32) * 0.1 - 0.8).collect();
    let b = (0..k * n).map(|i| ((i * 13 % 11) as f32) * 0.1 - 0.5).collect();
    (a, b)
}

/// An `[r, c]` operand's view: stored as it is, or stored `[c, r]` and read transposed (`t`), as
/// the backward pass reads a weight (`g Wᵀ`) or the activations (`xᵀ g`).
fn view(x: &[f32], r: usize, c: usize, t: bool) -> View {
    if t { View { ptr: x.as_ptr(), rs: 1, cs: r as isize } } else { View { ptr: x.as_ptr(), rs: c as isize, cs: 1 } }
}

/// `c = a b` by gemm (`kind` 0), the page's tiles (1) or its fused tiles (2); `layout` bit 0: `a`
/// transposed, bit 1: `b`.
fn run(m: usize, k: usize, n: usize, layout: u32, kind: u32, a: &[f32], b: &[f32], c: &mut [f32]) {
    let (a, b) = (view(a, m, k, layout & 1 != 0), view(b, k, n, layout & 2 != 0));
    tiled_gemm::fused::set(kind == 2);
    // SAFETY: the operands and the output have the sizes their strides address.
    unsafe {
        if kind != 0 {
            tiled_gemm::gemm(m, n, k, a, b, c.as_mut_ptr());
        } else {
            let p = gemm::Parallelism::None;
            gemm::gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, false, a.ptr, a.cs, a.rs, b.ptr, b.cs, b.rs, 0.0, 1.0, false, false, false, p);
        }
    }
}

/// The table slot the fused kernel goes in.
#[unsafe(no_mangle)]
pub extern "C" fn tile_slot() -> u32 {
    tiled_gemm::fused::slot_index()
}

/// Runs one product `reps` times (`kind` as [`run`]'s); returns the flops done.
#[unsafe(no_mangle)]
pub extern "C" fn product(m: usize, k: usize, n: usize, layout: u32, kind: u32, reps: usize) -> f64 {
    let (a, b) = operands(m, k, n);
    let mut c = vec![0f32; m * n];
    for _ in 0..reps {
        run(m, k, n, layout, kind, &a, &b, &mut c);
    }
    std::hint::black_box(&c);
    2.0 * (m * k * n * reps) as f64
}

/// The largest difference of a product by `kind` from gemm's, relative to gemm's (at least 1).
#[unsafe(no_mangle)]
pub extern "C" fn difference(m: usize, k: usize, n: usize, layout: u32, kind: u32) -> f32 {
    let (a, b) = operands(m, k, n);
    let (mut c1, mut c2) = (vec![0f32; m * n], vec![0f32; m * n]);
    run(m, k, n, layout, 0, &a, &b, &mut c1);
    run(m, k, n, layout, kind, &a, &b, &mut c2);
    c1.iter().zip(&c2).map(|(x, y)| (x - y).abs() / x.abs().max(1.0)).fold(0.0, f32::max)
}
