//! The host copies of base weights, kept between generations and found again by a fingerprint of
//! the weights themselves.
//!
//! A copy must never outlive a change to the weights it copies. Parameter ids alone would not do:
//! merging an adapter and an optimizer step in a full fine-tune change a weight's values and keep
//! its id. So the fingerprint hashes each weight's id and shape with its first and last rows and
//! columns (every value of a norm): a merge (`W + s A B`) changes every row and column, an
//! optimizer step every row it trains (an embedding's trained rows each change in its first
//! column), and a new model has new ids. Reading those rows costs a few hundred small reads, nothing beside a
//! generation.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use burn::module::Param;
use burn::tensor::Tensor;

use super::HostBase;
use super::quant::QMatrix;
use crate::Result;
use crate::backend::read_f32;
use crate::model::Llama;

/// Copies kept: a policy and one other model (a teacher) decode without rebuilding each other's.
const KEEP: usize = 2;

/// Bytes of copies kept at most. A copy that could not be made compact (a full fine-tune is f32)
/// is as large as the model; in the browser's 4 GB beside the model and its optimizer state it is
/// made for one generation and dropped, not kept.
const BUDGET: usize = if cfg!(target_arch = "wasm32") { 320 << 20 } else { 2 << 30 };

static COPIES: Mutex<Vec<(u64, Arc<HostBase>)>> = Mutex::new(Vec::new());

thread_local! {
    /// The stored blocks of the model this thread loaded last, by weight name, with the id of its
    /// embedding: taken by the first copy of that model, each only after it is checked against the
    /// weights. Per thread: a model loads and first decodes on one thread (the worker's, the
    /// CLI's), and tests that load models side by side must not drop each other's blocks.
    static PENDING: RefCell<Option<(u64, BTreeMap<String, QMatrix>)>> = const { RefCell::new(None) };
}

/// Keeps a quantized checkpoint's blocks for the first decoding of `model`, which then neither
/// reads its weights back nor searches them for blocks (what made the page slow to be ready).
pub fn prime(model: &Llama, blocks: BTreeMap<String, QMatrix>) {
    PENDING.with_borrow_mut(|p| *p = (!blocks.is_empty()).then(|| (model.embed_tokens.weight.id.val(), blocks)));
}

/// The stored blocks of weight `name` of `model`, if the model is the one this thread loaded last.
pub(super) fn take_pending(model: &Llama, name: &str) -> Option<QMatrix> {
    PENDING.with_borrow_mut(|p| match p.as_mut() {
        Some((id, blocks)) if *id == model.embed_tokens.weight.id.val() => blocks.remove(name),
        _ => None,
    })
}

/// The host copy of `model`'s base weights, from the cache or read now.
pub async fn base_for(model: &Llama) -> Result<Arc<HostBase>> {
    let key = fingerprint(model).await?;
    let found = copies().iter().find(|(k, _)| *k == key).map(|(_, b)| Arc::clone(b));
    if let Some(base) = found {
        return Ok(base);
    }
    let base = Arc::new(HostBase::read(model).await?);
    let bytes = |b: &HostBase| b.summary().0;
    if bytes(&base) <= BUDGET {
        let mut copies = copies();
        copies.retain(|(k, _)| *k != key);
        while copies.len() >= KEEP || (!copies.is_empty() && copies.iter().map(|(_, b)| bytes(b)).sum::<usize>() + bytes(&base) > BUDGET) {
            copies.remove(0);
        }
        copies.push((key, Arc::clone(&base)));
    }
    Ok(base)
}

fn copies() -> std::sync::MutexGuard<'static, Vec<(u64, Arc<HostBase>)>> {
    // A panic elsewhere while the lock was held leaves a list that is still whole.
    COPIES.lock().unwrap_or_else(|e| e.into_inner())
}

async fn fingerprint(model: &Llama) -> Result<u64> {
    let mut h = DefaultHasher::new();
    matrix(&mut h, &model.embed_tokens.weight).await?;
    if let Some(head) = &model.lm_head {
        matrix(&mut h, &head.weight).await?;
    }
    for (_, lin) in model.linears() {
        matrix(&mut h, &lin.base.weight).await?;
    }
    let norms = model.layers.iter().flat_map(|b| [&b.input_layernorm, &b.post_attention_layernorm]);
    for n in norms.chain([&model.norm]) {
        n.gamma.id.val().hash(&mut h);
        bits(&mut h, read_f32(n.gamma.val()).await?);
    }
    Ok(h.finish())
}

async fn matrix(h: &mut DefaultHasher, p: &Param<Tensor<2>>) -> Result<()> {
    let w = p.val();
    let [rows, cols] = w.dims();
    (p.id.val(), rows, cols).hash(h);
    bits(h, read_f32(w.clone().narrow(0, 0, 1)).await?);
    bits(h, read_f32(w.clone().narrow(0, rows - 1, 1)).await?);
    bits(h, read_f32(w.clone().narrow(1, 0, 1)).await?);
    bits(h, read_f32(w.narrow(1, cols - 1, 1)).await?);
    Ok(())
}

fn bits(h: &mut DefaultHasher, xs: Vec<f32>) {
    for x in xs {
        x.to_bits().hash(h);
    }
}
