//! Answers to several prompts decoded together.
//!
//! One sample decodes at about 80 tokens/s in the page and sixteen at about 210: a step reads
//! every weight once whatever the number of rows, so a class's runs over many prompts (twelve
//! provocations of four answers, eight questions for the teacher, the probes) go faster with
//! their prompts' samples in one batch. On the host a prompt joins the batch as soon as there is
//! room ([`ROWS`]) and leaves it when its last sample ends; answers come back in the prompts'
//! order, each as soon as it and the ones before it are done, so a panel fills in as it goes.
//! On a GPU the prompts run one after the other.
//!
//! Each prompt keeps its own sampler, seeded from its own settings, so it gets the same answers
//! whichever prompts run beside it: with several prompts every row is multiplied as floats, which
//! gives a row the same sums in any company ([`OneRow::Floats`]), and each sampler draws for its
//! prompt's samples in the same order. A run of one prompt is [`super::generate`]'s: its last
//! sample decoding alone is multiplied as integers, the faster product for one row (RL's four
//! samples of one prompt a step spent a tenth longer without it).

use std::borrow::Cow;

use crate::decode::HostDecoder;
use crate::decode::kernels::OneRow;
use crate::io::Tokenizer;
use crate::{Error, Result};
use crate::model::{KvCache, Llama};

use super::{DecodePath, FinishReason, Route, Sample, Sampler, SamplingConfig, TextStream, TokenEvent, prefill};

/// Rows decoded together on the host: sixteen samples take a step in about six times one
/// sample's time, and more add little (SmolLM2 in the page, greedy, 64 tokens: 16 rows 210
/// tokens/s, 32 rows 211; `docs/results.md`, stop 67).
const ROWS: usize = 16;

/// One prompt to answer, as token ids, with its own settings.
#[derive(Clone, Debug)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub sampling: SamplingConfig,
}

/// Answers to [`Request`]s, one prompt at a time in their order ([`Generations::next`]).
pub struct Generations<'a> {
    model: Cow<'a, Llama>,
    tokenizer: &'a Tokenizer,
    route: Route,
    one: OneRow,
    requests: Vec<Request>,
    /// One per request started so far.
    answering: Vec<Answering>,
    /// Requests handed back so far.
    returned: usize,
    decoder: Option<Decoder>,
    /// Row `r` of the running batch decodes sample `rows[r].1` of request `rows[r].0`.
    rows: Vec<(usize, usize)>,
    /// The next token's logits of each row, `[rows, vocab]`.
    logits: Vec<f32>,
    cancelled: bool,
    /// Whether each chosen token's log-probability is kept ([`Generations::keeping_logps`]).
    logps: bool,
}

/// One request's samples so far.
struct Answering {
    sampler: Sampler,
    max_new: usize,
    tokens: Vec<Vec<u32>>,
    logps: Vec<Vec<f32>>,
    finish: Vec<Option<FinishReason>>,
    streams: Vec<TextStream>,
}

impl Answering {
    fn done(&self) -> bool {
        self.finish.iter().all(Option::is_some)
    }
}

impl<'a> Generations<'a> {
    /// Answers to `requests` from `model`, the decoding steps where `path` says; every request is
    /// checked before any runs.
    pub fn new(path: DecodePath, model: &'a Llama, tokenizer: &'a Tokenizer, requests: Vec<Request>) -> Result<Self> {
        Self::with(path, Cow::Borrowed(model), tokenizer, requests)
    }

    /// [`Generations::new`] from a model of its own (a clone shares the weights).
    pub fn owned(path: DecodePath, model: Llama, tokenizer: &'a Tokenizer, requests: Vec<Request>) -> Result<Self> {
        Self::with(path, Cow::Owned(model), tokenizer, requests)
    }

    fn with(path: DecodePath, model: Cow<'a, Llama>, tokenizer: &'a Tokenizer, requests: Vec<Request>) -> Result<Self> {
        // See the module's doc: floats in company, integers for a prompt that has none.
        let one = if requests.len() == 1 { OneRow::Integers } else { OneRow::Floats };
        let max_pos = model.rope.max_positions;
        for r in &requests {
            r.sampling.validate()?;
            if r.prompt.is_empty() {
                return Err(Error::Invalid("the prompt is empty; give at least one token".into()));
            }
            if r.prompt.len() >= max_pos {
                return Err(Error::Invalid(format!(
                    "the prompt has {} tokens but the model's context is {max_pos}",
                    r.prompt.len()
                )));
            }
        }
        let model = match model {
            Cow::Borrowed(m) => m.for_inference(),
            Cow::Owned(m) => Cow::Owned(m.for_inference().into_owned()),
        };
        let route = path.on(&model.device())?;
        let model = match route.copy_dtype() {
            Some(dtype) => Cow::Owned(model.for_decoding(dtype)),
            None => model,
        };
        Ok(Self {
            model,
            tokenizer,
            route,
            one,
            requests,
            answering: Vec::new(),
            returned: 0,
            decoder: None,
            rows: Vec::new(),
            logits: Vec::new(),
            cancelled: false,
            logps: false,
        })
    }

    /// Keeps `log p(token)` of every chosen token under the model, at temperature 1 without
    /// penalty ([`Sample::logps`]): the sequence log-probability a KL to a reference needs, read
    /// off the decoding's own logits instead of a second pass over the answers.
    pub fn keeping_logps(mut self) -> Self {
        self.logps = true;
        self
    }

    /// The next request's index and samples, once they are all done; `None` after the last, or
    /// after `on_token` asked to stop (the requests then running come back with their samples
    /// cancelled, the ones not started do not come back). `on_token` sees every token as it is
    /// chosen, with its request's index. Each read of the logits is awaited (WebGPU needs that).
    pub async fn next(&mut self, on_token: &mut dyn FnMut(usize, TokenEvent) -> bool) -> Result<Option<(usize, Vec<Sample>)>> {
        loop {
            if let Some(a) = self.answering.get_mut(self.returned).filter(|a| a.done()) {
                let samples = (0..a.tokens.len())
                    .map(|s| Sample {
                        text: self.tokenizer.decode(&a.tokens[s]),
                        tokens: std::mem::take(&mut a.tokens[s]),
                        finish_reason: a.finish[s].unwrap_or(FinishReason::Length),
                        logps: std::mem::take(&mut a.logps[s]),
                    })
                    .collect();
                self.returned += 1;
                return Ok(Some((self.returned - 1, samples)));
            }
            if self.returned == self.requests.len() || (self.cancelled && self.returned == self.answering.len()) {
                return Ok(None);
            }
            self.admit().await?;
            self.step(on_token).await?;
        }
    }

    /// Starts the next requests while the batch has room: on the host up to [`ROWS`] rows (and
    /// always one request when none runs), elsewhere one request at a time.
    async fn admit(&mut self) -> Result<()> {
        while let Some(req) = self.requests.get(self.answering.len()) {
            let n = req.sampling.num_samples;
            let room = self.rows.is_empty() || (self.route == Route::Host && self.rows.len() + n <= ROWS);
            if self.cancelled || !room {
                break;
            }
            let max_new = req.sampling.max_new_tokens.min(self.model.rope.max_positions - req.prompt.len());
            let i = self.answering.len();
            self.answering.push(Answering {
                sampler: Sampler::new(req.sampling.clone()),
                max_new,
                tokens: vec![Vec::new(); n],
                logps: vec![Vec::new(); n],
                finish: vec![(max_new == 0).then_some(FinishReason::Length); n],
                streams: vec![TextStream::default(); n],
            });
            if max_new == 0 {
                continue;
            }
            let logits = match (&mut self.decoder, self.route) {
                (Some(Decoder::Host(h)), Route::Host) => h.add(&self.model, &req.prompt, n).await?,
                _ => {
                    let (decoder, logits) = Decoder::start(&self.model, &req.prompt, n, self.route, self.one).await?;
                    self.decoder = Some(decoder);
                    logits
                }
            };
            self.logits.extend(logits);
            self.rows.extend((0..n).map(|s| (i, s)));
        }
        Ok(())
    }

    /// Chooses each running row's next token, drops the rows that ended, and runs the rest one
    /// step.
    async fn step(&mut self, on_token: &mut dyn FnMut(usize, TokenEvent) -> bool) -> Result<()> {
        let vocab = self.model.vocab_size();
        let mut next = Vec::with_capacity(self.rows.len());
        let mut cancelled = false;
        for (r, &(i, s)) in self.rows.iter().enumerate() {
            let row = &mut self.logits[r * vocab..(r + 1) * vocab];
            if row.iter().any(|x| x.is_nan() || *x == f32::INFINITY) {
                return Err(Error::NonFinite(
                    "the model produced NaN or infinite scores for the next token: its weights or its \
                     adapter are broken (a diverged run?); reset the adapter or reload the model"
                        .into(),
                ));
            }
            let a = &mut self.answering[i];
            // Read before the sampler, which may change the row (a repetition penalty).
            let raw = self.logps.then(|| (log_sum_exp(row), row.to_vec()));
            let tok = a.sampler.sample(row, &self.requests[i].prompt, &a.tokens[s]);
            if self.tokenizer.stop_ids.contains(&tok) {
                a.finish[s] = Some(FinishReason::Stop);
            } else {
                if let Some((lse, raw)) = raw {
                    a.logps[s].push(raw[tok as usize] - lse);
                }
                a.tokens[s].push(tok);
                let delta = a.streams[s].push(self.tokenizer, tok);
                if !on_token(i, TokenEvent { sample: s, token: tok, text_delta: &delta }) {
                    cancelled = true;
                }
                if a.tokens[s].len() == a.max_new {
                    a.finish[s] = Some(FinishReason::Length);
                }
            }
            next.push(tok);
        }
        if cancelled {
            self.cancelled = true;
            for f in self.answering.iter_mut().flat_map(|a| a.finish.iter_mut()).filter(|f| f.is_none()) {
                *f = Some(FinishReason::Cancelled);
            }
        }
        // Drop finished rows from the batch and the cache.
        let keep: Vec<usize> = (0..self.rows.len()).filter(|&r| self.answering[self.rows[r].0].finish[self.rows[r].1].is_none()).collect();
        if keep.is_empty() {
            self.rows.clear();
            self.logits.clear();
            // The host decoder takes the next prompts; a device one is made for each.
            match &mut self.decoder {
                Some(Decoder::Host(h)) => h.keep_rows(&[]),
                _ => self.decoder = None,
            }
            return Ok(());
        }
        let decoder = self.decoder.as_mut().expect("running rows have a decoder");
        if keep.len() != self.rows.len() {
            decoder.keep_rows(&keep);
            self.rows = keep.iter().map(|&r| self.rows[r]).collect();
            next = keep.iter().map(|&r| next[r]).collect();
        }
        let positions: Vec<usize> = self.rows.iter().map(|&(i, s)| self.requests[i].prompt.len() + self.answering[i].tokens[s].len() - 1).collect();
        self.logits = decoder.step(&self.model, &next, &positions).await?;
        Ok(())
    }
}

/// The model state between decoding steps, on the device or on the host.
enum Decoder {
    /// burn's forward pass on the model's device, with its key/value cache and each row's valid keys.
    Device { cache: KvCache, valid: Vec<Vec<bool>> },
    Host(HostDecoder),
}

impl Decoder {
    /// Runs the prompt once and starts `n` samples from it; returns the decoder and the next
    /// token's logits, `[n, vocab]`.
    async fn start(model: &Llama, prompt: &[u32], n: usize, route: Route, one: OneRow) -> Result<(Self, Vec<f32>)> {
        if route == Route::Host {
            let mut decoder = HostDecoder::new(model, one).await?;
            let logits = decoder.add(model, prompt, n).await?;
            return Ok((Self::Host(decoder), logits));
        }
        let (mut cache, logits) = prefill(model, prompt).await?;
        // Every sample starts from the same prompt: one pass, its cache row repeated.
        cache.select_rows(&vec![0; n]);
        Ok((Self::Device { cache, valid: vec![vec![true; prompt.len()]; n] }, logits.repeat(n)))
    }

    fn keep_rows(&mut self, rows: &[usize]) {
        match self {
            Self::Device { cache, valid } => {
                cache.select_rows(rows);
                *valid = rows.iter().map(|&r| valid[r].clone()).collect();
            }
            Self::Host(h) => h.keep_rows(rows),
        }
    }

    /// One token per running row at `positions`; the logits of the next, `[rows, vocab]`.
    async fn step(&mut self, model: &Llama, tokens: &[u32], positions: &[usize]) -> Result<Vec<f32>> {
        match self {
            Self::Device { cache, valid } => {
                for v in valid.iter_mut() {
                    v.push(true);
                }
                let batch = crate::model::Batch::step(model, tokens, positions, valid)?;
                crate::backend::read_f32(model.forward_last(&batch, Some(cache))).await
            }
            Self::Host(h) => {
                let logits = h.step(tokens, positions);
                #[cfg(target_arch = "wasm32")]
                crate::backend::yield_if_due().await;
                Ok(logits)
            }
        }
    }
}

/// `ln sum_j e^{x_j}`, shifted by the largest value so it cannot overflow.
fn log_sum_exp(x: &[f32]) -> f32 {
    let mut e = vec![0.0f32; x.len()];
    let (max, total) = crate::model::rows::exp_scaled(x, 1.0, &mut e);
    max + total.ln()
}
