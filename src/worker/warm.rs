//! The training warm-up: two hundred DPO steps on a toy copy of the loaded model, in the
//! background while the student types or reads, so that the browser has optimized the training
//! code before the real steps.
//!
//! Why: V8 runs a wasm function first as quickly compiled baseline code and optimizes it only once
//! it has run enough (its dynamic tiering). In the threaded CPU worker, a session's first twelve
//! DPO steps on SmolLM2 took 38 s where the same steps take 27 s once V8 has optimized what they
//! run (`docs/results.md`, stops 60 to 62). The toy has the loaded model's heads, key-value heads,
//! tied head and chat template, so the same code runs, but narrow layers and a vocabulary of
//! bytes: its steps call the same functions as often while leaving the cores mostly free (a toy
//! with SmolLM2's 49,152-word head, whose products kept both cores busy, removed less than half
//! of the slowdown). What counts is how often the per-layer code runs: with 40 steps of 5 layers
//! the session's thirteenth and later real steps ran about 0.6 s slower each, for good, and 40
//! steps of 12 layers or 200 of 2 did no better; 200 steps of 5 layers (1,000 layer passes) leave
//! no slow stretch over 60 real steps. (What slowed them is V8's speculative inlining of indirect
//! calls in code it optimized late, during the real steps: the stretch goes with
//! `--no-wasm-inlining-call-indirect`. With enough toy steps V8 optimizes that code during the
//! warm-up.) Short answers keep a toy step cheap: the 200 take about 8 s.
//! The toy has its own random weights and data, so nothing the student has is touched; it gives
//! way to every request and stops for a new model.

use super::router::{Host, Router};
use crate::Result;
use crate::align::Encoding;
use crate::data::{Preference, ranking_pairs};
use crate::io::{LoadedModel, ModelInfo, SpmTokenizer, Tokenizer};
use crate::lab::{Run, RunSettings, Session, TrainData};
use crate::model::{Llama, LlamaConfig, random_weights};

/// Layers of the toy: each runs the layer's code once more a step.
const TOY_LAYERS: usize = 5;
/// Toy steps: with [`TOY_LAYERS`], enough for V8 to optimize what a step runs (measured at stop 62).
const WARM_STEPS: usize = 200;

impl<H: Host> Router<H> {
    /// Trains the toy of `session`'s model for [`WARM_STEPS`] steps whenever the worker is quiet
    /// ([`Router::wait_quiet`]), once per worker; it ends early when a new model loads (whose load
    /// warms up again). The reference scored ahead of a run waits for it: with six seconds of idle
    /// time, too few for both, a first run's six steps took 14.2-15.3 s with the warm-up first
    /// against 16.3-16.6 with the scoring first (`docs/results.md`, stop 64). Tells the page how
    /// long it took, which the model bar's tooltip shows.
    pub(super) async fn warm_training(&self, session: &Session) -> Result<()> {
        // The load's request, in flight until the warm-up ends, is background work from here.
        self.with(|s| {
            s.background += 1;
            s.warming = true;
        });
        let res = self.warm_toy(session).await;
        self.with(|s| {
            s.background -= 1;
            s.warming = false;
        });
        res
    }

    async fn warm_toy(&self, session: &Session) -> Result<()> {
        let load = self.with(|s| s.loads);
        let toy = Session::new(toy_of(&session.lm)?, session.judge_data.clone());
        let mut run = Run::new(&toy, toy_spec())?;
        let (mut ms, mut steps) = (0.0, 0);
        while !run.is_done() {
            if !self.wait_quiet(|s| s.loads == load, |_| false).await {
                return Ok(());
            }
            let t0 = self.host.now_ms();
            run.step().await?;
            ms += self.host.now_ms() - t0;
            steps += 1;
            // A turn of the event loop, for requests that came during the step.
            self.host.sleep(0).await;
        }
        self.with(|s| s.warmed = true);
        self.host.post(super::protocol::Event::TrainingWarmed { steps, ms });
        Ok(())
    }
}

/// The page's default run (DPO with LoRA) on the toy's pairs, for [`WARM_STEPS`] steps.
fn toy_spec() -> crate::lab::RunSpec {
    let mut settings = RunSettings::default();
    settings.train.max_steps = WARM_STEPS;
    settings.spec(Vec::new(), Encoding::default(), TrainData { pairs: toy_pairs(), ..TrainData::default() })
}

/// Four short answers to one prompt, ranked best first, saved as every better-over-worse pair
/// (six), as the Generate tab saves a ranking. Short, so that a toy step costs little: its
/// sequences are mostly the chat template's prompt.
fn toy_pairs() -> Vec<Preference> {
    let answers = [
        "Pip leapt the river stones to save a kitten.",
        "Moss crept into the dark barn to find the ring.",
        "A grey cat hissed at the fox until it ran.",
        "The cat was brave. Then it slept on the mat.",
    ];
    ranking_pairs("Write a short story about a brave little cat.", &answers.map(String::from))
}

/// `lm`'s architecture with [`TOY_LAYERS`] narrow layers of random weights ([`random_weights`]) and a vocabulary of
/// bytes: the same code runs for it as for `lm` (heads and key-value heads, tied head, chat
/// template), where a head over `lm`'s whole vocabulary would keep both cores busy with products.
/// Texts of bytes are also a few times longer than `lm`'s tokens, so each toy step calls the
/// per-token code more.
fn toy_of(lm: &LoadedModel) -> Result<LoadedModel> {
    let tokenizer = byte_tokenizer()?;
    let head_dim = 8;
    let width = lm.config.num_attention_heads * head_dim;
    let config = LlamaConfig {
        vocab_size: tokenizer.vocab_size(),
        hidden_size: width,
        intermediate_size: width * 8 / 3,
        num_hidden_layers: TOY_LAYERS,
        head_dim,
        ..lm.config.clone()
    };
    let mut weights = random_weights(&config, 61).into_iter().collect();
    Ok(LoadedModel {
        model: Llama::from_weights(&config, &mut weights, &lm.device)?,
        tokenizer,
        chat_template: lm.chat_template.clone(),
        config,
        info: ModelInfo { format: "toy".into(), name: Some("training warm-up".into()), tensor_types: Default::default(), file_bytes: 0 },
        device: lm.device.clone(),
    })
}

/// A SentencePiece vocabulary of the three control pieces and the 256 bytes (llama2.c's layout):
/// every text is its UTF-8 bytes.
fn byte_tokenizer() -> Result<Tokenizer> {
    let mut pieces = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    pieces.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    let n = pieces.len();
    let spm = SpmTokenizer::new(pieces, vec![0.0; n], (0..n).map(|i| i < 3).collect(), ' ')?;
    Ok(Tokenizer::from_spm(spm, Some(1), Some(2), "byte vocabulary"))
}
