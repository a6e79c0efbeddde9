//! Resuming a run: the optimizer state a checkpoint saved (burnpack: for each trainable matrix,
//! AdamW's first and second moments and its step count `time`), checked against the parameters it
//! is to update before burn reads it.
//!
//! burn trusts the file. A moment of another shape panics at the next step; state for parameters
//! the model does not have is dropped without a word, so the run would go on from fresh moments
//! while saying it resumed; `time = 0` divides by `1 − β⁰ = 0`. Checkpoints come from users
//! (`--resume-from`), so each of these is refused here, naming what does not fit.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Bytes, DType, Shape, Tensor};

use crate::{Error, Result};

/// burn-optim's keys, after the parameter's id: its tensor rank, and AdamW's step count and moments.
const RANK: &str = ".__rank";
const TIME: &str = ".momentum.time";
const MOMENT_1: &str = ".momentum.moment_1";
const MOMENT_2: &str = ".momentum.moment_2";

/// The parameters an optimizer updates (those that take a gradient), by id, with their shapes.
pub fn trainable<M: Module>(model: &M) -> BTreeMap<u64, Shape> {
    struct Collect(BTreeMap<u64, Shape>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.val().is_require_grad() {
                self.0.insert(param.id.val(), param.lazy_shape());
            }
        }
    }
    let mut c = Collect(BTreeMap::new());
    model.visit(&mut c);
    c.0
}

/// Checks that `bytes`, an optimizer state saved by [`super::train::Trainer::optimizer_state`],
/// fits `params` ([`trainable`]): every tensor belongs to one of them, has its shape, holds f32
/// values that are finite (second moments not negative), and every parameter has its whole state
/// (both moments and the step count: burn restarts a parameter missing any of them from zero).
pub fn check_optimizer_state(bytes: &[u8], params: &BTreeMap<u64, Shape>) -> Result<()> {
    let refuse = |what: String| {
        Error::format(format!(
            "the saved optimizer state {what}. Resume from one checkpoint as the run wrote it (its adapter, optimizer.bpk \
             and trainer_state.json together), or train from the start"
        ))
    };
    let reader = burn_pack::Reader::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| refuse(format!("is not a burnpack file the lab wrote ({e})")))?;
    let param = |key: &str| -> Result<(u64, &Shape)> {
        let id = key.split('.').next().and_then(|id| id.parse::<u64>().ok());
        let id = id.ok_or_else(|| refuse(format!("has an entry '{key}' that names no parameter")))?;
        match params.get(&id) {
            Some(shape) => Ok((id, shape)),
            None => Err(refuse(format!("has state for a parameter this adapter does not have ('{key}'): it was saved by another run"))),
        }
    };
    // Per parameter: first moment, second moment, step count (bits 0, 1, 2).
    let mut found: BTreeMap<u64, u8> = BTreeMap::new();
    for (key, value) in reader.scalars() {
        let (id, shape) = param(key)?;
        let as_int = u64::try_from(*value).ok();
        if key.ends_with(RANK) && as_int != Some(shape.len() as u64) {
            return Err(refuse(format!("says its parameter has rank {value:?}, but the parameter has shape {:?}", shape.as_slice())));
        }
        // AdamW's bias correction divides by 1 − β^time, and burn reads time as an i32.
        if key.ends_with(TIME) {
            if !as_int.is_some_and(|t| (1..=i32::MAX as u64).contains(&t)) {
                return Err(refuse(format!("has a step count '{key}' of {value:?}; a parameter that was updated has 1 or more")));
            }
            *found.entry(id).or_default() |= 4;
        }
    }
    let tensors = reader.into_tensors().map_err(|e| refuse(format!("is damaged ({e})")))?;
    for tensor in tensors {
        let (name, dtype, shape, id, data) = tensor.into_parts().map_err(|e| refuse(format!("is damaged ({e})")))?;
        let (key_id, want) = param(&name)?;
        if id != Some(key_id) {
            return Err(refuse(format!("has a tensor '{name}' whose parameter id ({id:?}) is not the one its name gives")));
        }
        if dtype != DType::F32 {
            return Err(refuse(format!("has a tensor '{name}' in {dtype:?}; the lab saves f32")));
        }
        if shape != *want {
            return Err(refuse(format!(
                "has a tensor '{name}' of shape {:?}, but its parameter has shape {:?} (saved with another rank or model?)",
                shape.as_slice(),
                want.as_slice()
            )));
        }
        let len = shape.iter().try_fold(4usize, |n, &d| n.checked_mul(d));
        if len != Some(data.len()) {
            return Err(refuse(format!("has a tensor '{name}' of {} bytes for shape {:?}", data.len(), shape.as_slice())));
        }
        let second = name.ends_with(MOMENT_2);
        let bad = data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).find(|v| !v.is_finite() || (second && *v < 0.0));
        if let Some(v) = bad {
            return Err(refuse(format!("has a value {v} in '{name}', which an optimizer that trained cannot hold")));
        }
        if name.ends_with(MOMENT_1) {
            *found.entry(key_id).or_default() |= 1;
        } else if second {
            *found.entry(key_id).or_default() |= 2;
        }
    }
    let whole = found.values().filter(|&&bits| bits == 7).count();
    if whole != params.len() {
        return Err(refuse(format!(
            "has the whole state (both moments and the step count) of {whole} of this adapter's {} trainable matrices: \
             it is damaged, or was saved by another run",
            params.len()
        )));
    }
    Ok(())
}
