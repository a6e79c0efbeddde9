//! Preference pairs scored with their prompt run once. Each pair is one row,
//! `prompt | chosen | rejected`: the chosen tokens see the prompt and the chosen tokens before
//! them, the rejected tokens the prompt and the rejected tokens before them, each at the position
//! it has alone (`P..P+C`, `P..P+R`). So every answer token gets the log-probability it gets in
//! its own sequence (to rounding), while the prompt's activations, forward and backward, are
//! computed once instead of twice: with a DPO batch's 64-token prompts and answers, a quarter
//! fewer positions through every layer. The prompt's gradient is the sum of both answers', as
//! when they run apart.

use burn::tensor::{Int, Tensor, TensorData};

use super::head_stats;
use crate::model::{Batch, KvCache, Llama};
use crate::{Error, Result};

/// A batch of `[prompt, chosen, rejected]` token ids packed one pair a row: what both readers
/// below share. A prompt may be empty (the row is then two sequences side by side); a sequence
/// may not.
pub struct SharedPromptBatch {
    batch: Batch,
    /// Each pair's `[prompt, chosen, rejected]` lengths.
    lens: Vec<[usize; 3]>,
}

impl SharedPromptBatch {
    pub fn new(model: &Llama, pairs: &[[&[u32]; 3]], pad_id: u32) -> Result<Self> {
        Self::after(model, 0, pairs, pad_id)
    }

    /// Pairs that follow `past` tokens every row shares, already run into a cache
    /// ([`Self::last_hidden`] with that cache): each row's positions start at `past`.
    pub fn after(model: &Llama, past: usize, pairs: &[[&[u32]; 3]], pad_id: u32) -> Result<Self> {
        if pairs.is_empty() {
            return Err(Error::Invalid("nothing to score".into()));
        }
        if let Some(i) = pairs.iter().position(|[p, c, r]| p.is_empty() && (c.is_empty() || r.is_empty())) {
            return Err(Error::Invalid(format!("pair #{i} has an empty prompt and an empty answer: there is nothing to score")));
        }
        let rows: Vec<Vec<u32>> = pairs.iter().map(|ids| ids.concat()).collect();
        // The rejected answer restarts where the prompt ends.
        let positions: Vec<Vec<usize>> = pairs
            .iter()
            .map(|[p, c, r]| (past..past + p.len() + c.len()).chain(past + p.len()..past + p.len() + r.len()).collect())
            .collect();
        let lens: Vec<[usize; 3]> = pairs.iter().map(|ids| ids.map(<[u32]>::len)).collect();
        let batch = Batch::packed(model, past, &rows, &positions, pad_id, |row, i, j| {
            // Whether position `k` of the row is the prompt (0), the chosen (1) or the rejected (2).
            let [p, c, _] = lens[row];
            let part = |k: usize| usize::from(k >= p) + usize::from(k >= p + c);
            j <= i && (j < p || part(i) == part(j))
        })?;
        Ok(Self { batch, lens })
    }

    /// The row length `T`: the longest pair's.
    fn row_len(&self) -> usize {
        self.batch.tokens.dims()[1]
    }

    /// The hidden state at each whole sequence's last token, `[2 pairs, hidden]`, chosen first:
    /// what a sequence-classification head reads (the reward model's score). Differentiable.
    /// With `cache`, the rows follow what it holds ([`Self::after`]).
    pub fn last_hidden(&self, model: &Llama, cache: Option<&mut KvCache>) -> Tensor<2> {
        let hidden = model.hidden(&self.batch, cache);
        let [b, t, d] = hidden.dims();
        // The flat index (`row * T + position`) of each sequence's last token: the prompt's where
        // the answer is empty (`new` refused a pair where both are).
        let last = |row: usize, end: usize| (row * t + end - 1) as i32;
        let chosen = self.lens.iter().enumerate().map(|(row, [p, c, _])| last(row, p + c));
        let rejected = self.lens.iter().enumerate().map(|(row, [p, c, r])| last(row, if *r == 0 { *p } else { p + c + r }));
        let ends: Vec<i32> = chosen.chain(rejected).collect();
        let device = hidden.device();
        let ends = Tensor::<1, Int>::from_data(TensorData::new(ends, [2 * self.lens.len()]), &device);
        hidden.reshape([b * t, d]).select(0, ends)
    }
}

/// Each answer's summed log-probabilities from a [`SharedPromptBatch`], with the tables that pick
/// every answer token's predicting position out of the packed rows.
pub struct SharedPromptLogps {
    packed: SharedPromptBatch,
    /// `[2 pairs * K]`: for each answer token, the flat index (`row * T + position`) of the
    /// position whose hidden state predicts it. Chosen answers first, each padded to `K` tokens.
    at: Tensor<1, Int>,
    /// `[2 pairs, K]`: the answer tokens, pad where none.
    targets: Tensor<2, Int>,
    /// `[2 pairs, K]`: 1.0 where an answer token is.
    mask: Tensor<2>,
    /// Each answer's length, chosen first.
    pub completion_lens: Vec<usize>,
}

impl SharedPromptLogps {
    pub fn new(model: &Llama, pairs: &[[&[u32]; 3]], pad_id: u32) -> Result<Self> {
        if let Some(i) = pairs.iter().position(|[p, _, _]| p.is_empty()) {
            return Err(Error::Invalid(format!("prompt #{i} is empty; a completion needs a prompt to follow")));
        }
        let packed = SharedPromptBatch::new(model, pairs, pad_id)?;
        let t = packed.row_len();
        let k = pairs.iter().map(|[_, c, r]| c.len().max(r.len())).max().unwrap_or(0).max(1);
        let n = 2 * pairs.len();
        let (mut at, mut targets, mut mask) = (vec![0i32; n * k], vec![pad_id as i32; n * k], vec![0.0f32; n * k]);
        for (row, [p, c, r]) in pairs.iter().enumerate() {
            let (p, base) = (p.len(), row * t);
            // Each answer token as (output slot, the flat position predicting it, id). Chosen token
            // m is predicted at p - 1 + m; rejected token m at p - 1 for the first, then at the
            // rejected token before it, p + c + m - 1.
            let chosen = c.iter().enumerate().map(|(m, &id)| (row * k + m, base + p - 1 + m, id));
            let rejected = r.iter().enumerate().map(|(m, &id)| {
                let pos = if m == 0 { base + p - 1 } else { base + p + c.len() + m - 1 };
                ((pairs.len() + row) * k + m, pos, id)
            });
            for (slot, pos, id) in chosen.chain(rejected) {
                at[slot] = pos as i32;
                targets[slot] = id as i32;
                mask[slot] = 1.0;
            }
        }
        let device = &model.device();
        Ok(Self {
            packed,
            at: Tensor::from_data(TensorData::new(at, [n * k]), device),
            targets: Tensor::from_data(TensorData::new(targets, [n, k]), device),
            mask: Tensor::from_data(TensorData::new(mask, [n, k]), device),
            completion_lens: pairs.iter().map(|[_, c, _]| c.len()).chain(pairs.iter().map(|[_, _, r]| r.len())).collect(),
        })
    }

    /// Sum of each answer's log-probabilities, `[2 pairs]`, chosen first: what
    /// [`super::sequence_logps`] gives for the chosen sequences followed by the rejected ones.
    /// Differentiable.
    pub fn logps(&self, model: &Llama) -> Tensor<1> {
        let [n, k] = self.mask.dims();
        let hidden = model.hidden(&self.packed.batch, None);
        let [b, t, d] = hidden.dims();
        let answers = hidden.reshape([b * t, d]).select(0, self.at.clone()).reshape([n, k, d]);
        let (logps, _, _) = head_stats(model, answers, self.targets.clone(), false, false);
        (logps * self.mask.clone()).sum_dim(1).reshape([n])
    }
}
