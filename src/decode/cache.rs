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
use std::collections::{BTreeMap, HashMap};
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

thread_local! {
    /// Each deferred weight (its f32 values not made yet, see `Llama::from_weights`) by parameter
    /// id: its fingerprint, computed from its blocks and equal to the one its values would give,
    /// so that neither a fingerprint nor the first copy makes them; and where its blocks live
    /// ([`QMatrix::blocks_at`]: the weight holds them until its values are made).
    static DEFERRED: RefCell<HashMap<u64, (u64, usize)>> = RefCell::new(HashMap::new());
}

/// Entries [`DEFERRED`] holds at most: a model's 7 weights a layer, for a few models. A weight
/// not found there only costs making its values.
const DEFERRED_MAX: usize = 4096;

/// Keeps a quantized checkpoint's blocks for the first decoding of `model`, which then neither
/// reads its weights back nor searches them for blocks (what made the page slow to be ready).
pub fn prime(model: &Llama, blocks: BTreeMap<String, QMatrix>) {
    DEFERRED.with_borrow_mut(|d| {
        if d.len() > DEFERRED_MAX {
            d.clear();
        }
        for (path, p, transposed) in model.named_matrices() {
            let q = blocks.get(&format!("{path}.weight"));
            if let (false, Some(q), Some(at)) = (p.is_initialized(), q, q.and_then(QMatrix::blocks_at)) {
                d.insert(p.id.val(), (blocks_key(p.id.val(), q, transposed), at));
            }
        }
    });
    PENDING.with_borrow_mut(|p| *p = (!blocks.is_empty()).then(|| (model.embed_tokens.weight.id.val(), blocks)));
}

/// Whether weight `p` is still deferred from the blocks `q`: its values, once made, are theirs.
/// The same blocks, not equal ones: a deferred weight holds its blocks, so no others can be
/// where they are.
pub(super) fn deferred_from(p: &Param<Tensor<2>>, q: &QMatrix) -> bool {
    let at = DEFERRED.with_borrow(|d| d.get(&p.id.val()).map(|&(_, at)| at));
    !p.is_initialized() && at.is_some() && at == q.blocks_at()
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
    for (_, p, _) in model.named_matrices() {
        matrix(&mut h, p).await?;
    }
    let norms = model.layers.iter().flat_map(|b| [&b.input_layernorm, &b.post_attention_layernorm]);
    for n in norms.chain([&model.norm]) {
        n.gamma.id.val().hash(&mut h);
        bits(&mut h, &read_f32(n.gamma.val()).await?);
    }
    Ok(h.finish())
}

async fn matrix(h: &mut DefaultHasher, p: &Param<Tensor<2>>) -> Result<()> {
    let deferred = if p.is_initialized() { None } else { DEFERRED.with_borrow(|d| d.get(&p.id.val()).map(|&(key, _)| key)) };
    let key = match deferred {
        Some(k) => k,
        None => {
            let w = p.val();
            let [rows, cols] = w.dims();
            let edge = |dim: usize, at: usize| read_f32(w.clone().narrow(dim, at, 1));
            let edges = [edge(0, 0).await?, edge(0, rows - 1).await?, edge(1, 0).await?, edge(1, cols - 1).await?];
            edges_key(p.id.val(), [rows, cols], &edges)
        }
    };
    key.hash(h);
    Ok(())
}

/// A weight's part of the fingerprint: its id and `[rows, cols]` with its first and last row
/// and column.
fn edges_key(id: u64, dims: [usize; 2], edges: &[Vec<f32>; 4]) -> u64 {
    let mut h = DefaultHasher::new();
    (id, dims[0], dims[1]).hash(&mut h);
    for e in edges {
        bits(&mut h, e);
    }
    h.finish()
}

/// [`edges_key`] of the weight `id` made from `q`, transposed for a linear layer: burn holds
/// those as `[in, out]`, so their rows are `q`'s columns and their columns `q`'s rows.
fn blocks_key(id: u64, q: &QMatrix, transposed: bool) -> u64 {
    let row = |r: usize| {
        let mut out = vec![0.0; q.cols];
        q.row_into(r, &mut out);
        out
    };
    let (rows, columns) = ([row(0), row(q.rows - 1)], [q.column(0), q.column(q.cols - 1)]);
    let ([first, last], [left, right]) = if transposed { (columns, rows) } else { (rows, columns) };
    let dims = if transposed { [q.cols, q.rows] } else { [q.rows, q.cols] };
    edges_key(id, dims, &[first, last, left, right])
}

fn bits(h: &mut DefaultHasher, xs: &[f32]) {
    for x in xs {
        x.to_bits().hash(h);
    }
}
