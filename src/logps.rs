//! Log-probabilities of completions given prompts: `log p(completion_t | prompt, completion_<t)`
//! per completion token, batched. DPO, reward models and RL all start from this.

mod shared_prompt;

use burn::tensor::{Int, Tensor, TensorData};

use crate::backend::read_f32;
use crate::model::{Batch, KvCache, Llama, log_softmax};
use crate::{Error, Result};
pub use shared_prompt::{SharedPromptBatch, SharedPromptLogps};

/// A batch of prompt+completion sequences, right-padded, with the mask of completion targets.
pub struct ScoringBatch {
    pub batch: Batch,
    /// `[batch, seq-1]`: the token predicted at each position (input shifted left by one).
    pub targets: Tensor<2, Int>,
    /// `[batch, seq-1]`: 1.0 where the target is a completion token, else 0.0.
    pub completion_mask: Tensor<2>,
    /// Completion length of each row.
    pub completion_lens: Vec<usize>,
    /// The target positions that hold any row's completion: only these need the vocabulary
    /// projection (TRL's `logits_to_keep`), a large saving when prompts are long.
    pub window: std::ops::Range<usize>,
}

impl ScoringBatch {
    pub fn new(model: &Llama, pairs: &[(Vec<u32>, Vec<u32>)], pad_id: u32) -> Result<Self> {
        let device = &model.device();
        if pairs.is_empty() {
            return Err(Error::Invalid("nothing to score".into()));
        }
        let seqs: Vec<Vec<u32>> = pairs
            .iter()
            .map(|(p, c)| p.iter().chain(c).copied().collect())
            .collect();
        if let Some((i, _)) = pairs.iter().enumerate().find(|(_, (p, _))| p.is_empty()) {
            return Err(Error::Invalid(format!("prompt #{i} is empty; a completion needs a prompt to follow")));
        }
        let (batch, _) = Batch::right_padded(model, &seqs, pad_id)?;
        let t = seqs.iter().map(Vec::len).max().unwrap_or(1).max(2);
        let b = seqs.len();
        let mut targets = vec![pad_id as i32; b * (t - 1)];
        let mut mask = vec![0.0f32; b * (t - 1)];
        for (r, ((p, c), s)) in pairs.iter().zip(&seqs).enumerate() {
            for j in 1..s.len() {
                targets[r * (t - 1) + j - 1] = s[j] as i32;
                if j >= p.len() && j < p.len() + c.len() {
                    mask[r * (t - 1) + j - 1] = 1.0;
                }
            }
        }
        let spans = pairs.iter().filter(|(_, c)| !c.is_empty()).map(|(p, c)| (p.len() - 1, p.len() - 1 + c.len()));
        let window = match (spans.clone().map(|s| s.0).min(), spans.map(|s| s.1).max()) {
            (Some(lo), Some(hi)) => lo..hi.min(t - 1),
            _ => 0..1,
        };
        Ok(Self {
            batch,
            window,
            targets: Tensor::from_data(TensorData::new(targets, [b, t - 1]), device),
            completion_mask: Tensor::from_data(TensorData::new(mask, [b, t - 1]), device),
            completion_lens: pairs.iter().map(|(_, c)| c.len()).collect(),
        })
    }
}

/// Largest logits tensor (bytes) one chunk of the vocabulary projection may produce. WebGPU's
/// default storage-buffer limit is 128 MiB and lavapipe refuses ~190 MB, while a batch of 8 x 128
/// tokens over a 49k vocabulary is 200 MB: so the head runs over a few sequences at a time.
const MAX_LOGITS_BYTES: usize = 64 << 20;

/// What scoring can read off the next-token distributions, each `[batch, seq-1]` and zero
/// outside completions.
pub struct TokenStats {
    /// log p(target)
    pub logps: Tensor<2>,
    /// Entropy of the distribution (not differentiated).
    pub entropy: Option<Tensor<2>>,
    /// 1 where the most likely token is the target (not differentiated).
    pub correct: Option<Tensor<2>>,
}

/// One forward pass over the batch; the vocabulary projection and log-softmax run only on the
/// batch's completion window, in chunks of sequences (see [`MAX_LOGITS_BYTES`]). Differentiable
/// in `logps`.
pub fn token_stats(model: &Llama, sb: &ScoringBatch, entropy: bool, correct: bool) -> TokenStats {
    let [b, t1] = sb.completion_mask.dims();
    let (lo, w) = (sb.window.start, sb.window.len());
    let hidden = model.hidden(&sb.batch, None).narrow(1, lo, w);
    let targets = sb.targets.clone().narrow(1, lo, w);
    let (lp, ent, hit) = head_stats(model, hidden, targets, entropy, correct);
    let mask = sb.completion_mask.clone();
    let device = mask.device();
    // Back to `[batch, seq-1]`, zero outside the window.
    let join = |part: Tensor<2>| {
        let mut cols = Vec::new();
        if lo > 0 {
            cols.push(Tensor::zeros([b, lo], &device));
        }
        cols.push(part);
        if lo + w < t1 {
            cols.push(Tensor::zeros([b, t1 - lo - w], &device));
        }
        Tensor::cat(cols, 1) * mask.clone()
    };
    TokenStats { logps: join(lp), entropy: ent.map(join), correct: hit.map(join) }
}

/// The head, its log-softmax and the targets' log-probabilities on `hidden: [b, w, d]` with
/// `targets: [b, w]`, a few sequences at a time (see [`MAX_LOGITS_BYTES`]); with the entropies
/// and top-1 hits when asked. Each `[b, w]`.
fn head_stats(
    model: &Llama,
    hidden: Tensor<3>,
    targets: Tensor<2, Int>,
    entropy: bool,
    correct: bool,
) -> (Tensor<2>, Option<Tensor<2>>, Option<Tensor<2>>) {
    let [b, w, _] = hidden.dims();
    let v = model.vocab_size();
    let rows = (MAX_LOGITS_BYTES / (w * v * 4).max(1)).clamp(1, b);
    let (mut lp, mut ent, mut hit) = (Vec::new(), Vec::new(), Vec::new());
    for start in (0..b).step_by(rows) {
        let n = rows.min(b - start);
        let logits = model.head(hidden.clone().narrow(0, start, n));
        let targets = targets.clone().narrow(0, start, n);
        let logp = log_softmax(logits);
        if entropy {
            ent.push((logp.clone().exp() * logp.clone()).sum_dim(2).neg().reshape([n, w]).detach());
        }
        if correct {
            let predicted = logp.clone().detach().argmax(2).reshape([n, w]);
            hit.push(predicted.equal(targets.clone()).float());
        }
        lp.push(logp.gather(2, targets.unsqueeze_dim::<3>(2)).reshape([n, w]));
    }
    (Tensor::cat(lp, 0), entropy.then(|| Tensor::cat(ent, 0)), correct.then(|| Tensor::cat(hit, 0)))
}

/// Per-position log-probabilities of the targets, `[batch, seq-1]`, zero outside completions.
/// Differentiable: training code calls this on an autodiff device.
pub fn token_logps(model: &Llama, sb: &ScoringBatch) -> Tensor<2> {
    token_stats(model, sb, false, false).logps
}

/// Per-position target log-probabilities and entropies of the next-token distribution (RL needs
/// both from one forward pass).
pub fn token_logps_and_entropy(model: &Llama, sb: &ScoringBatch) -> (Tensor<2>, Tensor<2>) {
    let s = token_stats(model, sb, true, false);
    (s.logps, s.entropy.expect("asked for entropy"))
}

/// Sum of completion log-probabilities per sequence, `[batch]`.
pub fn sequence_logps(model: &Llama, sb: &ScoringBatch) -> Tensor<1> {
    let [b, _] = sb.completion_mask.dims();
    token_logps(model, sb).sum_dim(1).reshape([b])
}

/// Host-side result for one (prompt, completion) pair.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CompletionLogps {
    pub logprobs: Vec<f32>,
    pub sum: f32,
}

/// Per-token log-probabilities of `(prompt ids, completion ids)` pairs, in one batch, under any
/// model (a policy, or its reference with adapters off).
pub async fn completion_logps(model: &Llama, pad: u32, pairs: &[(Vec<u32>, Vec<u32>)]) -> Result<Vec<CompletionLogps>> {
    let model = &*model.for_inference();
    let sb = ScoringBatch::new(model, pairs, pad)?;
    let [b, t1] = sb.completion_mask.dims();
    let lp = read_f32(token_logps(model, &sb)).await?;
    Ok((0..b)
        .map(|r| {
            let (p, c) = (&pairs[r].0, &pairs[r].1);
            let start = p.len() - 1;
            let logprobs: Vec<f32> = lp[r * t1 + start..r * t1 + start + c.len()].to_vec();
            let sum = logprobs.iter().map(|&x| x as f64).sum::<f64>() as f32;
            CompletionLogps { logprobs, sum }
        })
        .collect())
}

/// Log-probabilities of each of `candidates` as the next token after each of `prompts`:
/// `[prompt][candidate]`. One forward pass, the vocabulary projection on each row's last position
/// only: a model judging with "Yes" or "No" reads both from one pass instead of scoring two
/// one-token completions.
pub async fn next_token_logps(model: &Llama, pad: u32, prompts: &[Vec<u32>], candidates: &[u32]) -> Result<Vec<Vec<f32>>> {
    if prompts.is_empty() || candidates.is_empty() {
        return Ok(vec![Vec::new(); prompts.len()]);
    }
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(Error::Invalid(format!("prompt #{i} is empty; the next token needs a prompt to follow")));
    }
    let model = &*model.for_inference();
    let (batch, _) = crate::model::Batch::right_padded(model, prompts, pad)?;
    let hidden = model.hidden(&batch, None);
    let [b, _, d] = hidden.dims();
    let device = hidden.device();
    let last: Vec<i32> = prompts.iter().flat_map(|p| std::iter::repeat_n(p.len() as i32 - 1, d)).collect();
    let last = Tensor::<3, Int>::from_data(TensorData::new(last, [b, 1, d]), &device);
    candidate_logps(model, hidden.gather(1, last), candidates).await
}

/// The log-probabilities of `candidates` after each of `last`'s hidden states (`[n, 1, hidden]`):
/// `[n][candidate]`, the head and its log-softmax on those positions only.
async fn candidate_logps(model: &Llama, last: Tensor<3>, candidates: &[u32]) -> Result<Vec<Vec<f32>>> {
    let (n, k) = (last.dims()[0], candidates.len());
    let device = last.device();
    let logp = log_softmax(model.head(last));
    let wanted: Vec<i32> = (0..n).flat_map(|_| candidates.iter().map(|&c| c as i32)).collect();
    let picked = logp.gather(2, Tensor::<3, Int>::from_data(TensorData::new(wanted, [n, 1, k]), &device));
    Ok(read_f32(picked).await?.chunks(k).map(<[f32]>::to_vec).collect())
}

/// The start every prompt of a set shares (a chat template's system turn and a judge's opening
/// words), run once into a cache of its keys and values that [`next_token_logps_shared`] reads for
/// every row, call after call: a judge asking about many answers runs it once for all of them.
#[derive(Clone, Debug)]
pub struct SharedStart {
    tokens: Vec<u32>,
    /// One row of keys and values; `None` for an empty start.
    cache: Option<KvCache>,
}

impl SharedStart {
    pub fn new(model: &Llama, pad: u32, tokens: &[u32]) -> Result<Self> {
        let cache = if tokens.is_empty() {
            None
        } else {
            let model = &*model.for_inference();
            let mut cache = KvCache::new(model.num_layers());
            let (batch, _) = Batch::right_padded(model, &[tokens.to_vec()], pad)?;
            // Only the keys and values are kept: the hidden states are not read.
            drop(model.hidden(&batch, Some(&mut cache)));
            Some(cache)
        };
        Ok(Self { tokens: tokens.to_vec(), cache })
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }
}

/// [`next_token_logps`] for prompts that come in twos after a shared start, `[shared, a, b]` a row
/// (prompts `start + shared + a` and `start + shared + b`): `start`, which every row has, was run
/// once ([`SharedStart`]), and each row's `shared` runs once for its two prompts
/// ([`SharedPromptBatch`]), as a judge asking two questions about one answer reads the answer
/// once. `[row][a, b][candidate]`, to rounding what each prompt gets alone; an empty `b` is no
/// second prompt, and its list is empty. `start` must have been run on `model`'s weights.
pub async fn next_token_logps_shared(model: &Llama, pad: u32, start: &SharedStart, rows: &[[&[u32]; 3]], candidates: &[u32]) -> Result<Vec<[Vec<f32>; 2]>> {
    if rows.is_empty() || candidates.is_empty() {
        return Ok(vec![Default::default(); rows.len()]);
    }
    if let Some(i) = rows.iter().position(|[s, a, _]| s.is_empty() && a.is_empty()) {
        return Err(Error::Invalid(format!("prompt #{i} is empty past the start the rows share; each needs a token of its own")));
    }
    let model = &*model.for_inference();
    let mut cache = start.cache.clone().map(|mut cache| {
        cache.select_rows(&vec![0; rows.len()]);
        cache
    });
    let prefix = start.tokens();
    // Each prompt's last hidden state, `[2 rows, hidden]`: every row's `a` first, then its `b`.
    let last = SharedPromptBatch::after(model, prefix.len(), rows, pad)?.last_hidden(model, cache.as_mut());
    let [n2, d] = last.dims();
    let mut lps = candidate_logps(model, last.reshape([n2, 1, d]), candidates).await?;
    let seconds = lps.split_off(rows.len());
    Ok(rows.iter().zip(lps).zip(seconds).map(|(([_, _, b], a_lps), b_lps)| [a_lps, if b.is_empty() { Vec::new() } else { b_lps }]).collect())
}
