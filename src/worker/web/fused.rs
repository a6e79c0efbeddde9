//! The fused tile kernel's hand-over: the engine's loader (www/fused.js) builds the kernel's
//! module, puts its function into this instance's table at [`alignlab_tile_slot`], and turns it on
//! with [`alignlab_tile_fused`] (each thread of the pool only fills its own table).

use wasm_bindgen::prelude::*;

use crate::model::tiled_gemm::fused;

/// The function-table index the loader fills with the fused kernel.
#[wasm_bindgen]
pub fn alignlab_tile_slot() -> u32 {
    fused::slot_index()
}

/// Every product's tiles from now on run the fused kernel (the loader calls this once the
/// table holds it).
#[wasm_bindgen]
pub fn alignlab_tile_fused() {
    fused::set(true);
}
