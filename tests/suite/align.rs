//! Alignment methods on a tiny random model: losses against hand-computed values, LoRA gradients
//! against finite differences, adapter merge/unmerge and PEFT round trips, and each trainer moving
//! its loss or reward the right way.

use alignlab::align::dpo::{DpoConfig, DpoLossType, EncodedPair, RefLogps, dpo_loss_of_margin, dpo_margins, dpo_step, encode_pairs};
use alignlab::align::kto::{KtoConfig, encode_examples, kto_losses, kto_step};
use alignlab::align::reward::{RewardConfig, RewardModel, load_reward_model, reward_losses, reward_step, save_reward_model};
use alignlab::align::rl::{RlConfig, rl_sample, rl_update};
use alignlab::align::sft::{encode_demos, sft_step};
use alignlab::align::train::{Schedule, TrainConfig, Trainer};
use alignlab::align::{Encoding, Reference};
use alignlab::backend::{BackendKind, block_on};
use alignlab::data::{Demonstration, Preference, Unpaired};
use alignlab::io::peft::{load_adapter, save_adapter};
use alignlab::model::{Batch, Llama, LoraConfig};
use alignlab::logps::{ScoringBatch, sequence_logps};
use alignlab::LoadedModel;
use burn::tensor::{Device, Tensor};
use crate::common::*;

fn noop() -> impl FnMut(&str, f32) {
    |_: &str, _: f32| {}
}

fn dev() -> Device {
    device(BackendKind::Flex).autodiff()
}

fn tiny_lm() -> LoadedModel {
    tiny_checkpoint(false, 42).into_model(&dev(), &mut noop()).unwrap()
}

fn t(xs: &[f32], d: &Device) -> Tensor<1> {
    Tensor::from_floats(xs, d)
}

fn close(got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((*g as f64 - w).abs() < tol, "{got:?} vs {want:?}");
    }
}

fn lora(r: usize, targets: &[&str]) -> LoraConfig {
    LoraConfig { r, lora_alpha: 2.0 * r as f64, lora_dropout: 0.0, target_modules: targets.iter().map(|s| s.to_string()).collect(), use_rslora: false, seed: 1 }
}

const ALL: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

fn logits(model: &Llama, seq: &[u32]) -> Vec<f32> {
    let (b, _) = Batch::right_padded(model, &[seq.to_vec()], 0).unwrap();
    read_f32(model.forward(&b, None)).unwrap()
}

// ---- losses against values computed by hand (python's math module, committed as numbers) -------

#[test]
fn dpo_losses_match_hand_computed_values() {
    let d = dev();
    let (pc, pr, rc, rr) = ([-10.0, -20.0, -5.0], [-12.0, -18.0, -9.0], [-11.0, -19.0, -6.0], [-11.5, -19.0, -8.0]);
    let (lc, lr) = ([4.0, 5.0, 2.0], [6.0, 3.0, 4.0]);
    let run = |cfg: DpoConfig| {
        let margins = dpo_margins(&cfg, t(&pc, &d), t(&pr, &d), t(&rc, &d), t(&rr, &d), t(&lc, &d), t(&lr, &d));
        read_f32(dpo_loss_of_margin(&cfg, margins)).unwrap()
    };
    let cfg = |loss_type, label_smoothing| DpoConfig { beta: 0.1, loss_type, label_smoothing, ..Default::default() };
    close(&run(cfg(DpoLossType::Sigmoid, 0.0)), &[0.6209570477895321, 0.7981388693815918, 0.5981388693815918], 1e-5);
    close(&run(cfg(DpoLossType::Sigmoid, 0.1)), &[0.6359570477895321, 0.7781388693815918, 0.6181388693815918], 1e-5);
    close(&run(cfg(DpoLossType::Robust, 0.1)), &[0.602207047789532, 0.8231388693815919, 0.5731388693815918], 1e-5);
    close(&run(cfg(DpoLossType::Hinge, 0.0)), &[0.85, 1.2, 0.8], 1e-5);
    close(&run(cfg(DpoLossType::Ipo, 0.0)), &[21.777777777777782, 30.617777777777775, 18.0625], 1e-3);
}

#[test]
fn kto_and_bradley_terry_losses_match_hand_computed_values() {
    let d = dev();
    let cfg = KtoConfig { beta: 0.1, ..Default::default() };
    let got = read_f32(kto_losses(&cfg, t(&[1.5, -0.5, 2.0, -1.0], &d), t(&[1.0, 1.0, 0.0, 0.0], &d), 0.3)).unwrap();
    close(&got, &[0.47003594823542827, 0.5199893401555817, 0.5423979407743511, 0.4675456936126813], 1e-5);
    let (c, r) = (t(&[1.0, -0.5], &d), t(&[0.2, 0.5], &d));
    let bt = |cfg: RewardConfig| read_f32(reward_losses(&cfg, c.clone(), r.clone())).unwrap();
    close(&bt(RewardConfig::default()), &[0.3711006659477777, 1.3132616875182228], 1e-5);
    close(&bt(RewardConfig { margin: 0.5, ..Default::default() }), &[0.5543552444685271, 1.7014132779827524], 1e-5);
    close(&bt(RewardConfig { center_rewards_coefficient: 0.01, ..Default::default() }), &[0.3855006659477777, 1.3132616875182228], 1e-5);
}

// ---- LoRA -------------------------------------------------------------------------------------------

/// Installs adapters with the given host values for every target layer.
fn set_lora(model: &mut Llama, cfg: &LoraConfig, seed: u64, bump: Option<(usize, f32)>) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut first = true;
    model
        .load_lora(cfg, &mut |key: &str| {
            let is_a = key.contains("lora_A");
            let (rows, cols) = if is_a { (cfg.r, 32) } else if key.contains("mlp.gate_proj") || key.contains("mlp.up_proj") { (48, cfg.r) } else if key.contains("k_proj") || key.contains("v_proj") { (16, cfg.r) } else { (32, cfg.r) };
            let mut data: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-0.3..0.3)).collect();
            if key.contains("down_proj") && is_a {
                // down_proj's A is [r, 48]
                data = (0..cfg.r * 48).map(|_| rng.random_range(-0.3..0.3)).collect();
                return Some((vec![cfg.r, 48], data));
            }
            if is_a && first {
                if let Some((i, h)) = bump {
                    data[i] += h;
                }
                first = false;
            }
            Some((vec![rows, cols], data))
        })
        .unwrap();
}

#[test]
fn zero_b_adapter_changes_no_logit_and_merge_unmerge_restore() {
    let lm = tiny_lm();
    let seq = [3u32, 9, 27, 4, 51];
    let base = logits(&lm.model, &seq);
    let mut m = lm.model.clone();
    m.add_lora(&lora(4, &ALL)).unwrap();
    assert_eq!(max_diff(&logits(&m, &seq), &base), 0.0, "B = 0 must leave the model unchanged");
    // per layer: q and o [32->32], k and v [32->16], gate/up/down [32<->48]; r = 4; 2 layers
    assert_eq!(m.num_trainable(), 2 * (2 * 4 * (32 + 32) + 2 * 4 * (32 + 16) + 3 * 4 * (32 + 48)));

    let cfg = lora(4, &ALL);
    set_lora(&mut m, &cfg, 5, None);
    let adapted = logits(&m, &seq);
    assert!(max_diff(&adapted, &base) > 1e-2, "a non-zero adapter must change the logits");
    // Switching adapters off gives back the base model (the DPO reference).
    assert!(max_diff(&logits(&m.reference(), &seq), &base) < 1e-5);

    let w0 = read_f32(m.layers[0].self_attn.q_proj.base.weight.val()).unwrap();
    m.merge_lora();
    assert!(max_diff(&logits(&m, &seq), &adapted) < 1e-4, "merged weights give the adapted logits");
    assert!(max_diff(&read_f32(m.layers[0].self_attn.q_proj.base.weight.val()).unwrap(), &w0) > 1e-3);
    m.unmerge_lora();
    assert!(max_diff(&read_f32(m.layers[0].self_attn.q_proj.base.weight.val()).unwrap(), &w0) < 1e-6, "unmerge restores the base weights");
    assert!(max_diff(&logits(&m, &seq), &adapted) < 1e-5);
}

#[test]
fn lora_gradients_match_finite_differences() {
    let lm = tiny_lm();
    let cfg = lora(2, &["q_proj", "v_proj", "down_proj"]);
    let pairs = vec![(vec![3u32, 9, 27], vec![4u32, 51, 8]), (vec![12, 5], vec![7, 7, 30, 2])];
    let sb = ScoringBatch::new(&lm.model, &pairs, 0).unwrap();
    let loss_of = |m: &Llama| sequence_logps(m, &sb).sum();

    let mut m = lm.model.clone();
    set_lora(&mut m, &cfg, 9, None);
    let grads = loss_of(&m).backward();
    // The first adapter installed is layer 0's q_proj; its A is [in=32, r=2] in burn's layout,
    // element (row, col) of PEFT's [r, in] is burn's (col, row).
    let g = read_f32(m.layers[0].self_attn.q_proj.lora.as_ref().unwrap().a.grad(&grads).unwrap()).unwrap();
    for peft_index in [0usize, 5, 33, 63] {
        let (r, c) = (peft_index / 32, peft_index % 32);
        let analytic = g[c * 2 + r] as f64;
        let h = 1e-2f32;
        let value = |bump: f32| {
            let mut mm = lm.model.clone();
            set_lora(&mut mm, &cfg, 9, Some((peft_index, bump)));
            read_f32(loss_of(&mm)).unwrap()[0] as f64
        };
        let numeric = (value(h) - value(-h)) / (2.0 * h as f64);
        assert!(
            (analytic - numeric).abs() < 2e-2 * analytic.abs().max(0.1),
            "dL/dA[{r},{c}]: backward {analytic} vs finite difference {numeric}"
        );
    }
}

#[test]
fn peft_adapter_round_trips_exactly() {
    let lm = tiny_lm();
    let cfg = lora(4, &["q_proj", "k_proj", "v_proj", "o_proj"]);
    let mut m = lm.model.clone();
    set_lora(&mut m, &cfg, 3, None);
    let files = block_on(save_adapter(&m, &cfg, "tiny")).unwrap();
    let ac: serde_json::Value = serde_json::from_str(&files.config_json).unwrap();
    assert_eq!(ac["peft_type"], "LORA");
    assert_eq!(ac["task_type"], "CAUSAL_LM");
    assert_eq!(ac["r"], 4);
    assert_eq!(ac["bias"], "none");
    assert_eq!(ac["fan_in_fan_out"], false);
    let st = safetensors::SafeTensors::deserialize(&files.safetensors).unwrap();
    assert_eq!(st.tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").unwrap().shape(), &[4, 32]);
    assert_eq!(st.tensor("base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight").unwrap().shape(), &[16, 4]);
    assert_eq!(st.len(), 2 * 4 * 2);

    let mut fresh = lm.model.clone();
    let back = load_adapter(&mut fresh, files.config_json.as_bytes(), &files.safetensors).unwrap();
    assert_eq!(back.target_modules, cfg.target_modules);
    let seq = [5u32, 6, 7, 8];
    assert_eq!(max_diff(&logits(&fresh, &seq), &logits(&m, &seq)), 0.0);
    // An adapter for another shape is refused with a clear message.
    let bad_cfg = files.config_json.replace("\"r\": 4", "\"r\": 8");
    let e = load_adapter(&mut lm.model.clone(), bad_cfg.as_bytes(), &files.safetensors).unwrap_err().to_string();
    assert!(e.contains("another base model") || e.contains("rank"), "{e}");
}

// ---- trainers ---------------------------------------------------------------------------------------

fn enc() -> Encoding {
    Encoding { chat: false, max_prompt_length: 16, max_completion_length: 16, ..Encoding::default() }
}

fn train_cfg(lr: f64, steps: usize) -> TrainConfig {
    TrainConfig { learning_rate: lr, max_steps: steps, warmup_ratio: 0.0, lr_scheduler_type: Schedule::Constant, ..Default::default() }
}

fn prefs() -> Vec<Preference> {
    (0..8)
        .map(|i| Preference {
            prompt: format!("t{} t{}", 10 + i, 20 + i),
            chosen: format!("t5 t{} t5", 30 + i),
            rejected: format!("t6 t{} t6", 40 + i),
        })
        .collect()
}

#[test]
fn dpo_with_lora_raises_the_margin() {
    let lm = tiny_lm();
    let pairs = encode_pairs(&lm, &enc(), &prefs()).unwrap();
    let mut model = lm.model.clone();
    model.add_lora(&lora(4, &ALL)).unwrap();
    let reference = Reference::for_policy(&model);
    let mut tr = Trainer::new(model, TrainConfig { gradient_accumulation_steps: 2, ..train_cfg(1e-2, 12) }).unwrap();
    let cfg = DpoConfig::default();
    let mut history = Vec::new();
    while !tr.done() {
        let m = block_on(tr.step(&mut |policy, i| {
            let r = reference.model(policy);
            dpo_step(&cfg, policy, RefLogps::Model(&r), &pairs[i * 4..i * 4 + 4], 1)
        }))
        .unwrap();
        history.push(m);
    }
    let first = &history[0];
    let last = history.last().unwrap();
    // The last step pair by pair (8 pairs over 2 micro-batches): each pays −log σ(margin), and
    // the margins average to the metric.
    let [(m_name, margins), (l_name, losses)] = &tr.last_examples[..] else { panic!("{:?}", tr.last_examples) };
    assert_eq!((*m_name, *l_name, margins.len(), losses.len()), ("margin", "loss", 8, 8));
    for (m, l) in margins.iter().zip(losses) {
        assert!((l - (1.0 + (-m).exp()).ln()).abs() < 1e-4, "margin {m}: loss {l}");
    }
    assert!((margins.iter().sum::<f64>() / 8.0 - last["rewards/margins"]).abs() < 1e-4);
    assert!((first["loss"] - std::f64::consts::LN_2).abs() < 1e-3, "step 1 policy = reference: loss ln 2, got {}", first["loss"]);
    assert!(first["rewards/margins"].abs() < 1e-4);
    assert!(last["loss"] < 0.4, "loss {} -> {}", first["loss"], last["loss"]);
    assert!(last["rewards/margins"] > 1.0, "margin {}", last["rewards/margins"]);
    assert_eq!(last["rewards/accuracies"], 1.0);
    for key in ["rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected", "grad_norm", "learning_rate"] {
        assert!(last.contains_key(key), "missing metric {key}");
    }
    assert!(last["rewards/chosen"] > last["rewards/rejected"]);
    // The base weights did not move: the reference is still the original model.
    let seq = [3u32, 9, 27];
    assert!(max_diff(&logits(&tr.model.reference(), &seq), &logits(&lm.model, &seq)) < 1e-6);
}

/// DPO on the tiny model with LoRA r = 2 on q_proj and v_proj: its trainer (lr 1e-2, 10 steps),
/// the reference and the encoded pairs.
fn dpo_lora_run(lm: &LoadedModel) -> (Trainer, Reference, Vec<EncodedPair>) {
    let pairs = encode_pairs(lm, &enc(), &prefs()).unwrap();
    let mut model = lm.model.clone();
    model.add_lora(&lora(2, &["q_proj", "v_proj"])).unwrap();
    let reference = Reference::for_policy(&model);
    (Trainer::new(model, train_cfg(1e-2, 10)).unwrap(), reference, pairs)
}

/// `optimizer.bpk` rewritten by `edit`, which sees each tensor's name and values (and drops the
/// tensor when it returns false), and by `scalar`, which sees each scalar.
fn rewrite_optimizer_state(bytes: &[u8], edit: &dyn Fn(&str, &mut Vec<f32>) -> bool, scalar: &dyn Fn(&str, burn_pack::Scalar) -> burn_pack::Scalar) -> Vec<u8> {
    let reader = burn_pack::Reader::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes.to_vec())).unwrap();
    let (scalars, metadata) = (reader.scalars().clone(), reader.metadata().clone());
    let tensors = reader
        .into_tensors()
        .unwrap()
        .into_iter()
        .filter_map(|t| {
            let (name, dtype, shape, id, data) = t.into_parts().unwrap();
            let mut xs: Vec<f32> = data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            let keep = edit(&name, &mut xs);
            let data = burn::tensor::Bytes::from_bytes_vec(xs.iter().flat_map(|x| x.to_le_bytes()).collect());
            keep.then(|| burn_pack::Tensor::new(name, dtype, shape, id, data))
        })
        .collect();
    let mut w = burn_pack::Writer::new(tensors);
    for (k, v) in scalars {
        w = w.with_scalar(&k, scalar(&k, v));
    }
    for (k, v) in metadata {
        w = w.with_metadata(&k, &v);
    }
    w.into_bytes().unwrap().to_vec()
}

#[test]
fn a_saved_optimizer_state_resumes_only_the_adapter_it_was_saved_with() {
    let lm = tiny_lm();
    let (mut tr, reference, pairs) = dpo_lora_run(&lm);
    let cfg = DpoConfig::default();
    for _ in 0..2 {
        block_on(tr.step(&mut |p, _| dpo_step(&cfg, p, RefLogps::Model(&reference.model(p)), &pairs[..4], 1))).unwrap();
    }
    let saved = tr.optimizer_state().unwrap();
    let load = |bytes: &[u8]| Trainer::new(tr.model.clone(), train_cfg(1e-2, 10)).unwrap().load_optimizer_state(bytes);
    load(&saved).expect("the state loads into the adapter it was saved with");
    // Rewritten unchanged, it still loads: the refusals below come from the edits alone.
    load(&rewrite_optimizer_state(&saved, &|_, _| true, &|_, v| v)).unwrap();

    let refused = |bytes: &[u8]| load(bytes).expect_err("refused").to_string();
    let nan = rewrite_optimizer_state(&saved, &|name, xs| { if name.ends_with("moment_1") { xs[0] = f32::NAN } true }, &|_, v| v);
    let err = refused(&nan);
    assert!(err.contains("NaN") && err.contains("moment_1"), "{err}");
    let negative = rewrite_optimizer_state(&saved, &|name, xs| { if name.ends_with("moment_2") { xs[0] = -1.0 } true }, &|_, v| v);
    assert!(refused(&negative).contains("moment_2"));
    // One matrix's second moment gone: burn would restart that matrix from zero moments.
    let first = std::cell::Cell::new(true);
    let partial = rewrite_optimizer_state(&saved, &|name, _| !(name.ends_with("moment_2") && first.replace(false)), &|_, v| v);
    let err = refused(&partial);
    let n = alignlab::align::resume::trainable(&tr.model).len();
    assert!(err.contains("whole state") && err.contains(&format!("{} of this adapter's {n}", n - 1)), "{err}");
    // AdamW divides by 1 - beta^time: a step count of 0 would make every update infinite.
    let zero = rewrite_optimizer_state(&saved, &|_, _| true, &|k, v| if k.ends_with(".time") { burn_pack::Scalar::UInt(0) } else { v });
    assert!(refused(&zero).contains("step count"), "{}", refused(&zero));
    // Another adapter of the same shapes (fresh ids, as another run's): burn would drop the state
    // and go on from fresh moments; it is refused instead.
    let mut other = lm.model.clone();
    other.add_lora(&lora(2, &["q_proj", "v_proj"])).unwrap();
    let err = Trainer::new(other, train_cfg(1e-2, 10)).unwrap().load_optimizer_state(&saved).unwrap_err().to_string();
    assert!(err.contains("another run"), "{err}");
    let err = refused(&saved[..saved.len() / 2]);
    assert!(err.contains("burnpack"), "{err}");
}

#[test]
fn nan_loss_stops_training_and_keeps_the_last_good_weights() {
    let lm = tiny_lm();
    let (mut tr, reference, pairs) = dpo_lora_run(&lm);
    let cfg = DpoConfig::default();
    let seq = [3u32, 9, 27];
    block_on(tr.step(&mut |p, _| dpo_step(&cfg, p, RefLogps::Model(&reference.model(p)), &pairs[..4], 1))).unwrap();
    // Weights after step 1 gave a finite loss at step 2; step 2's update is the one suspected.
    let good = logits(&tr.model, &seq);
    block_on(tr.step(&mut |p, _| dpo_step(&cfg, p, RefLogps::Model(&reference.model(p)), &pairs[..4], 1))).unwrap();
    assert!(max_diff(&logits(&tr.model, &seq), &good) > 1e-5);
    let err = block_on(tr
        .step(&mut |p, _| {
            let mut out = dpo_step(&cfg, p, RefLogps::Model(&reference.model(p)), &pairs[..4], 1)?;
            out.loss = out.loss * f64::NAN;
            Ok(out)
        }))
        .unwrap_err()
        .to_string();
    assert!(err.contains("NaN") && err.contains("last good weights"), "{err}");
    assert_eq!(max_diff(&logits(&tr.model, &seq), &good), 0.0, "rolled back to the weights that last gave a finite loss");
    assert_eq!(tr.step, 2, "the failed step is not counted");
}

#[test]
fn reward_model_learns_the_preference_and_round_trips() {
    let lm = tiny_lm();
    let all = encode_pairs(&lm, &enc(), &prefs()).unwrap();
    let (train, held_out) = all.split_at(6);
    let mut backbone = lm.model.clone();
    backbone.add_lora(&lora(4, &ALL)).unwrap();
    let mut tr = Trainer::new(RewardModel::new(backbone, 0), train_cfg(1e-2, 25)).unwrap();
    let cfg = RewardConfig::default();
    let mut first = None;
    let mut last = None;
    while !tr.done() {
        let m = block_on(tr.step(&mut |rm, _| reward_step(&cfg, rm, train, 1))).unwrap();
        first.get_or_insert(m.clone());
        last = Some(m);
    }
    let (first, last) = (first.unwrap(), last.unwrap());
    assert!(last["loss"] < first["loss"] * 0.5, "{} -> {}", first["loss"], last["loss"]);
    let rm = &tr.model;
    let score = |p: &alignlab::align::dpo::EncodedPair, c: &Vec<u32>| block_on(rm.rewards_for(&[(p.prompt.clone(), c.clone())], 1)).unwrap()[0];
    let acc = held_out.iter().filter(|p| score(p, &p.chosen) > score(p, &p.rejected)).count();
    assert_eq!(acc, held_out.len(), "held-out accuracy");
    let files = block_on(save_reward_model(rm, &lora(4, &ALL), "tiny")).unwrap();
    assert!(files.config_json.contains("\"SEQ_CLS\"") && files.config_json.contains("score"));
    let (back, _) = load_reward_model(lm.model.clone(), files.config_json.as_bytes(), &files.safetensors).unwrap();
    let p = &held_out[0];
    let a = block_on(rm.rewards_for(&[(p.prompt.clone(), p.chosen.clone())], 1)).unwrap();
    let b = block_on(back.rewards_for(&[(p.prompt.clone(), p.chosen.clone())], 1)).unwrap();
    assert!((a[0] - b[0]).abs() < 1e-5);
}

#[test]
fn sft_lowers_completion_loss() {
    let lm = tiny_lm();
    let demos: Vec<Demonstration> = (0..4).map(|i| Demonstration { prompt: format!("t{} t3", 10 + i), completion: "t9 t8 t7".into() }).collect();
    let batch = encode_demos(&lm, &enc(), &demos).unwrap();
    let mut model = lm.model.clone();
    model.add_lora(&lora(4, &ALL)).unwrap();
    let mut tr = Trainer::new(model, train_cfg(2e-2, 15)).unwrap();
    let mut hist = Vec::new();
    while !tr.done() {
        hist.push(block_on(tr.step(&mut |m, _| sft_step(m, &batch, 1))).unwrap());
    }
    assert!(hist.last().unwrap()["loss"] < hist[0]["loss"] * 0.3, "{} -> {}", hist[0]["loss"], hist.last().unwrap()["loss"]);
    assert!(hist.last().unwrap()["mean_token_accuracy"] > hist[0]["mean_token_accuracy"]);
    assert_eq!(hist.last().unwrap()["mean_token_accuracy"], 1.0);
}

#[test]
fn full_fine_tuning_without_adapters_also_trains() {
    let lm = tiny_lm();
    let demos = vec![Demonstration { prompt: "t3".into(), completion: "t9 t8".into() }];
    let batch = encode_demos(&lm, &enc(), &demos).unwrap();
    let mut tr = Trainer::new(lm.model.clone(), train_cfg(1e-2, 8)).unwrap();
    let a = block_on(tr.step(&mut |m, _| sft_step(m, &batch, 1))).unwrap()["loss"];
    for _ in 0..6 {
        block_on(tr.step(&mut |m, _| sft_step(m, &batch, 1))).unwrap();
    }
    let b = block_on(tr.step(&mut |m, _| sft_step(m, &batch, 1))).unwrap()["loss"];
    assert!(b < a * 0.5, "{a} -> {b}");
}

#[test]
fn kto_separates_desirable_from_undesirable() {
    let lm = tiny_lm();
    let data: Vec<Unpaired> = prefs()
        .iter()
        .flat_map(|p| {
            [Unpaired { prompt: p.prompt.clone(), completion: p.chosen.clone(), label: true },
             Unpaired { prompt: p.prompt.clone(), completion: p.rejected.clone(), label: false }]
        })
        .collect();
    let ex = encode_examples(&lm, &enc(), &data[..8]).unwrap();
    let mut model = lm.model.clone();
    model.add_lora(&lora(4, &ALL)).unwrap();
    let reference = Reference::for_policy(&model);
    let mut tr = Trainer::new(model, train_cfg(1e-2, 12)).unwrap();
    let cfg = KtoConfig::default();
    let mut hist = Vec::new();
    while !tr.done() {
        hist.push(block_on(tr.step(&mut |p, _| kto_step(&cfg, p, &reference.model(p), &ex, 1))).unwrap());
    }
    let (f, l) = (&hist[0], hist.last().unwrap());
    assert!((f["loss"] - 0.5).abs() < 1e-3, "policy = reference: each loss is 1 - σ(0) = 0.5, got {}", f["loss"]);
    assert!(l["loss"] < f["loss"] - 0.05, "{} -> {}", f["loss"], l["loss"]);
    assert!(l["rewards/margins"] > 0.5, "{}", l["rewards/margins"]);
    assert!(l.contains_key("kl"));
}

#[test]
fn rl_raises_mean_reward() {
    let lm = tiny_lm();
    let mut model = lm.model.clone();
    model.add_lora(&lora(4, &ALL)).unwrap();
    let reference = Reference::for_policy(&model);
    let mut tr = Trainer::new(model, train_cfg(2e-2, 1000)).unwrap();
    let prompts: Vec<(String, Vec<u32>)> = ["t3 t4", "t20 t21"].iter().map(|p| (p.to_string(), lm.tokenizer.encode(p, true).unwrap())).collect();
    let cfg = RlConfig { num_generations: 6, max_new_tokens: 6, num_iterations: 2, beta: 0.01, ..Default::default() };
    // Reward: share of completion tokens that are t9.
    let reward = |cands: &[alignlab::align::best_of_n::Candidate]| -> alignlab::Result<Vec<f64>> {
        Ok(cands.iter().map(|c| c.completion_ids.iter().filter(|&&t| t == 9).count() as f64 / c.completion_ids.len() as f64).collect())
    };
    let mut rewards = Vec::new();
    for round in 0..12 {
        let (m, scores) = block_on(async {
            let samples = rl_sample(&cfg, &tr, &lm.tokenizer, &prompts).await?;
            let given = reward(&samples.candidates(&prompts))?;
            // Each sample's KL from the reference, from the policy before this round's update.
            let sb = ScoringBatch::new(&tr.model, &samples.pairs, lm.tokenizer.pad_id())?;
            let kl = alignlab::backend::read_f32(sequence_logps(&tr.model, &sb) - sequence_logps(&reference.model(&tr.model), &sb)).await?;
            let (m, scores) = rl_update(&cfg, &mut tr, &reference, &lm.tokenizer, &samples, given.clone()).await?;
            // The table's numbers: the reward given, an advantage centred in each prompt's group,
            // and the KL computed here.
            assert_eq!(scores.len(), 12);
            for (i, s) in scores.iter().enumerate() {
                assert_eq!(s.reward, given[i]);
                assert!((s.kl - kl[i] as f64).abs() < 1e-4 * (1.0 + s.kl.abs()), "sample {i}: kl {} vs {}", s.kl, kl[i]);
            }
            for group in scores.chunks(6) {
                assert!(group.iter().map(|s| s.advantage).sum::<f64>().abs() < 1e-6);
            }
            Ok::<_, alignlab::Error>((m, scores))
        })
        .unwrap();
        if round == 0 {
            assert!(scores.iter().all(|s| s.kl.abs() < 1e-4), "the first round's policy is the reference: KL 0");
        }
        for key in ["reward", "reward_std", "kl", "entropy", "clip_ratio", "completions/mean_length", "loss"] {
            assert!(m.contains_key(key), "missing {key}");
        }
        rewards.push(m["reward"]);
    }
    let early = rewards[..3].iter().sum::<f64>() / 3.0;
    let late = rewards[9..].iter().sum::<f64>() / 3.0;
    assert!(late > early + 0.2, "mean reward {early:.3} -> {late:.3}: {rewards:?}");
}

#[test]
fn rl_first_inner_epoch_has_ratio_one_under_lora_dropout() {
    // π_old is the policy that sampled. With LoRA dropout a second pass to read it draws other
    // masks, so a trained adapter's ratios would stray from 1 in the first epoch and, with a
    // narrow clip range, be clipped. Read from the epoch's own pass, none is.
    let lm = tiny_lm();
    let mut model = lm.model.clone();
    model.add_lora(&LoraConfig { lora_dropout: 0.5, ..lora(4, &ALL) }).unwrap();
    let reference = Reference::for_policy(&model);
    let mut tr = Trainer::new(model, train_cfg(5e-2, 1000)).unwrap();
    let prompts: Vec<(String, Vec<u32>)> = ["t3 t4", "t20 t21"].iter().map(|p| (p.to_string(), lm.tokenizer.encode(p, true).unwrap())).collect();
    let reward = |samples: &alignlab::align::rl::RlSamples| -> Vec<f64> {
        samples.pairs.iter().map(|(_, c)| c.iter().filter(|&&t| t == 9).count() as f64 / c.len().max(1) as f64).collect()
    };
    let round = |tr: &mut Trainer, cfg: &RlConfig| {
        block_on(async {
            let samples = rl_sample(cfg, tr, &lm.tokenizer, &prompts).await?;
            let given = reward(&samples);
            rl_update(cfg, tr, &reference, &lm.tokenizer, &samples, given).await
        })
        .unwrap()
        .0
    };
    // A few rounds first, so the adapter is no longer zero and dropout changes the answers' logps.
    let warm = RlConfig { num_generations: 4, max_new_tokens: 6, num_iterations: 2, beta: 0.0, ..Default::default() };
    for _ in 0..3 {
        round(&mut tr, &warm);
    }
    let moved = tr.step;
    let narrow = RlConfig { num_iterations: 1, epsilon: 1e-4, ..warm };
    for _ in 0..3 {
        let m = round(&mut tr, &narrow);
        assert_eq!(m["clip_ratio"], 0.0, "the first epoch's ratio is exactly 1: {m:?}");
        assert!(m["loss"].abs() < 1e-5, "ratio 1, no KL: the loss is minus the mean advantage, 0 in GRPO's groups: {m:?}");
    }
    assert_eq!(tr.step, moved + 3);
}

#[test]
fn a_steps_lora_dropout_on_the_cpu_comes_from_the_runs_seed() {
    // `Trainer::step` (SFT, KTO, RL) draws LoRA's dropout on the CPU from the run's seeded stream,
    // as DPO's parts do: one seed takes the same step whatever the device's generator did before,
    // and another seed another step.
    let lm = tiny_lm();
    let demos: Vec<Demonstration> = (0..4).map(|i| Demonstration { prompt: format!("t{} t3", 10 + i), completion: "t9 t8 t7".into() }).collect();
    let batch = encode_demos(&lm, &enc(), &demos).unwrap();
    let step = |seed: u64| {
        let mut model = lm.model.clone();
        // Non-zero B: dropout then changes the loss, not only the gradients.
        set_lora(&mut model, &LoraConfig { lora_dropout: 0.5, ..lora(4, &ALL) }, 3, None);
        let mut tr = Trainer::new(model, TrainConfig { seed, ..train_cfg(1e-2, 2) }).unwrap();
        // The device's generator moves on between runs.
        drop(Tensor::<2>::random([64, 64], burn::tensor::Distribution::Default, &dev()));
        block_on(tr.step(&mut |m, _| sft_step(m, &batch, 1))).unwrap()
    };
    let (a, again, other) = (step(1), step(1), step(2));
    for key in ["loss", "grad_norm"] {
        assert_eq!(a[key], again[key], "{key}: one seed, one step");
    }
    assert_ne!(a["loss"], other["loss"], "another seed draws other masks");
    let mut off = lm.model.clone();
    set_lora(&mut off, &lora(4, &ALL), 3, None);
    let plain = block_on(Trainer::new(off, train_cfg(1e-2, 2)).unwrap().step(&mut |m, _| sft_step(m, &batch, 1))).unwrap();
    assert_ne!(a["loss"], plain["loss"], "dropout 0.5 moves the loss");
}

#[test]
fn adapters_work_on_the_wgpu_backend_too() {
    // One DPO step on wgpu gives the same loss and margin as on the CPU.
    let run = |kind: BackendKind| {
        let lm = tiny_checkpoint(false, 42).into_model(&device(kind).autodiff(), &mut noop()).unwrap();
        let pairs = encode_pairs(&lm, &enc(), &prefs()).unwrap();
        let mut model = lm.model.clone();
        set_lora(&mut model, &lora(2, &["q_proj", "v_proj"]), 4, None);
        let reference = Reference::for_policy(&model);
        let mut tr = Trainer::new(model, train_cfg(1e-2, 2)).unwrap();
        let cfg = DpoConfig::default();
        block_on(tr.step(&mut |p, _| dpo_step(&cfg, p, RefLogps::Model(&reference.model(p)), &pairs[..4], 1))).unwrap();
        block_on(tr.step(&mut |p, _| dpo_step(&cfg, p, RefLogps::Model(&reference.model(p)), &pairs[..4], 1))).unwrap()
    };
    let (cpu, gpu) = (run(BackendKind::Flex), run(BackendKind::Wgpu));
    for key in ["loss", "rewards/margins", "grad_norm"] {
        assert!((cpu[key] - gpu[key]).abs() < 1e-3 * cpu[key].abs().max(1.0), "{key}: flex {} vs wgpu {}", cpu[key], gpu[key]);
    }
}

/// Four pairs whose prompts and answers have uneven lengths, the third chosen answer empty.
fn uneven_pairs(lm: &LoadedModel) -> Vec<alignlab::align::dpo::EncodedPair> {
    let prefs: Vec<Preference> = (0..4)
        .map(|i| Preference {
            prompt: format!("t1{i}{}", " t12".repeat(2 * i)),
            chosen: format!("t5{}", " t3".repeat(3 - i)),
            rejected: format!("t6 t4{}", " t7".repeat(2 * i)),
        })
        .collect();
    let mut pairs = encode_pairs(lm, &enc(), &prefs).unwrap();
    pairs[2].chosen.clear();
    pairs
}

#[test]
fn a_shared_prompt_gives_the_numbers_of_separate_sequences() {
    // Each pair's prompt run once for both answers gives the loss, margins, log-probabilities and
    // gradients of chosen and rejected run apart (TRL's way), step after step as the adapter
    // moves: over prompts and answers of uneven lengths, one answer empty.
    let lm = tiny_lm();
    let pairs = uneven_pairs(&lm);
    let run = |share_prompt: bool| {
        let mut model = lm.model.clone();
        model.add_lora(&lora(4, &ALL)).unwrap();
        let reference = Reference::for_policy(&model);
        let mut tr = Trainer::new(model, train_cfg(1e-2, 4)).unwrap();
        let cfg = DpoConfig { share_prompt, precompute_ref_log_probs: false, ..Default::default() };
        (0..4).map(|_| block_on(tr.step(&mut |p, _| dpo_step(&cfg, p, RefLogps::Model(&reference.model(p)), &pairs, 1))).unwrap()).collect::<Vec<_>>()
    };
    let (shared, apart) = (run(true), run(false));
    for (i, (s, a)) in shared.iter().zip(&apart).enumerate() {
        for key in ["loss", "rewards/margins", "logps/chosen", "logps/rejected", "grad_norm"] {
            assert!((s[key] - a[key]).abs() <= 1e-4 * a[key].abs().max(1.0), "step {}: {key} shared {} vs apart {}", i + 1, s[key], a[key]);
        }
    }
    assert!(shared[3]["loss"] < shared[0]["loss"] - 0.05, "training moved the loss: {shared:?}");
}

#[test]
fn a_reward_model_scores_a_shared_prompt_as_separate_sequences() {
    // The reward model reads each whole sequence's last token; with the prompt run once, it must
    // read the same hidden state, step after step, for answers of uneven lengths, one chosen and
    // one rejected answer empty (the score is then the prompt's), and one pair with no prompt.
    let lm = tiny_lm();
    let mut pairs = uneven_pairs(&lm);
    pairs[1].rejected.clear();
    pairs[3].prompt.clear();
    let run = |share_prompt: bool| {
        let mut backbone = lm.model.clone();
        backbone.add_lora(&lora(4, &ALL)).unwrap();
        let mut tr = Trainer::new(RewardModel::new(backbone, 0), train_cfg(1e-2, 4)).unwrap();
        let cfg = RewardConfig { share_prompt, ..Default::default() };
        (0..4).map(|_| block_on(tr.step(&mut |rm, _| reward_step(&cfg, rm, &pairs, 1))).unwrap()).collect::<Vec<_>>()
    };
    let (shared, apart) = (run(true), run(false));
    for (i, (s, a)) in shared.iter().zip(&apart).enumerate() {
        for key in ["loss", "margin", "mean_reward", "accuracy", "grad_norm"] {
            assert!((s[key] - a[key]).abs() <= 1e-4 * a[key].abs().max(1.0), "step {}: {key} shared {} vs apart {}", i + 1, s[key], a[key]);
        }
    }
    assert!(shared[3]["loss"] < shared[0]["loss"] - 0.05, "training moved the loss: {shared:?}");
    // With neither a prompt nor an answer there is no sequence to score: a clear error, as apart.
    pairs[2].prompt.clear();
    let rm = RewardModel::new(lm.model.clone(), 0);
    let err = reward_step(&RewardConfig::default(), &rm, &pairs, 1).err().expect("an empty sequence is refused");
    assert!(err.to_string().contains("pair #2 has an empty prompt and an empty answer"), "{err}");
}

fn dpo_run_spec(precompute_ref_log_probs: bool, batch: usize, accumulation: usize) -> alignlab::lab::RunSpec {
    use alignlab::lab::{EvalConfig, Method, RunSpec, TrainData};
    RunSpec {
        method: Method::Dpo(DpoConfig { precompute_ref_log_probs, ..Default::default() }),
        train: TrainConfig { per_device_train_batch_size: batch, gradient_accumulation_steps: accumulation, ..train_cfg(1e-2, 6) },
        lora: Some(lora(4, &["q_proj", "v_proj"])),
        encoding: enc(),
        eval: EvalConfig { eval_fraction: 0.25, eval_steps: 2 },
        data: TrainData { pairs: prefs(), ..Default::default() },
    }
}

/// Runs `spec` to its end on `session`.
fn run_on(session: &alignlab::lab::Session, spec: alignlab::lab::RunSpec) -> (alignlab::lab::Run, Vec<alignlab::align::train::Metrics>) {
    let mut run = alignlab::lab::Run::new(session, spec).unwrap();
    let mut steps = Vec::new();
    while !run.is_done() {
        steps.push(block_on(run.step()).unwrap());
    }
    (run, steps)
}

/// Runs `spec` to its end in a fresh session.
fn run_all(spec: alignlab::lab::RunSpec) -> Vec<alignlab::align::train::Metrics> {
    run_on(&alignlab::lab::Session::new(tiny_lm(), std::rc::Rc::new(Default::default())), spec).1
}

/// Every step of `kept` (reference values kept) matches `recomputed` (a run that scores its
/// reference every step), metric by metric.
fn same_steps(kept: &[alignlab::align::train::Metrics], recomputed: &[alignlab::align::train::Metrics]) {
    assert_eq!(kept.len(), recomputed.len());
    for (i, (k, f)) in kept.iter().zip(recomputed).enumerate() {
        assert_eq!(k.keys().collect::<Vec<_>>(), f.keys().collect::<Vec<_>>());
        for (name, v) in f {
            assert!((k[name] - v).abs() <= 1e-5 * v.abs().max(1.0), "step {}: {name} kept {} vs recomputed {v}", i + 1, k[name]);
        }
    }
}

#[test]
fn kept_reference_logps_give_the_run_it_would_have_had() {
    // The reference is fixed for a run, so keeping its log-probabilities (computed once per pair,
    // in whatever batch the pair first came in) changes no number: every step's loss, margin
    // and held-out metrics match a run that recomputes them, over more than one epoch. The first
    // step's pairs take them from the policy's own pass (its fresh adapters add zero); the
    // second epoch draws those pairs again and reads the kept values.
    let (kept, fresh) = (run_all(dpo_run_spec(true, 2, 1)), run_all(dpo_run_spec(false, 2, 1)));
    assert_eq!(kept.len(), 6);
    same_steps(&kept, &fresh);
    let (first, last) = (&kept[0], kept.last().unwrap());
    assert!(last["loss"] < first["loss"] - 0.1 && last["rewards/margins"] > 0.1, "training moved the loss and margin: {kept:?}");
    assert!(last.contains_key("eval/loss"), "the held-out split was scored with kept reference values too");
}

#[test]
fn a_policy_is_its_own_reference_only_until_its_adapters_move() {
    let lm = tiny_lm();
    let mut policy = lm.model.clone();
    assert!(!block_on(policy.adapters_add_zero()).unwrap(), "a model without adapters has none to add zero");
    policy.add_lora(&lora(4, &["q_proj", "v_proj"])).unwrap();
    let reference = Reference::for_policy(&policy);
    assert!(block_on(reference.is_policy(&policy, false)).unwrap(), "fresh adapters: B = 0");
    assert!(!block_on(reference.is_policy(&policy, true)).unwrap(), "a policy that took a step is not");

    // A second run goes on from the adapters the first one trained: its first step must score
    // the reference (adapters off), not take the policy's own values (which would start the
    // loss at ln 2), and match a run that scores the reference every step.
    let second_run = |kept: bool| {
        let mut session = alignlab::lab::Session::new(tiny_lm(), std::rc::Rc::new(Default::default()));
        let mut first = alignlab::lab::Run::new(&session, dpo_run_spec(true, 2, 1)).unwrap();
        for _ in 0..3 {
            block_on(first.step()).unwrap();
        }
        first.publish(&mut session);
        assert!(!block_on(session.policy.model.adapters_add_zero()).unwrap(), "trained adapters add something");
        let mut second = alignlab::lab::Run::new(&session, dpo_run_spec(kept, 2, 1)).unwrap();
        (0..4).map(|_| block_on(second.step()).unwrap()).collect::<Vec<_>>()
    };
    let (kept, fresh) = (second_run(true), second_run(false));
    same_steps(&kept, &fresh);
    assert!(kept[0]["loss"] < std::f64::consts::LN_2 - 0.01, "the second run starts where the first left: {}", kept[0]["loss"]);
}

#[test]
fn the_reference_writes_its_answers_once_for_a_prompt_and_its_settings() {
    // Compare's reference side and the probes' answers before training: the same prompt, seed and
    // settings give the same answers, so the session keeps them and streams nothing the second
    // time, while the reference is the loaded model.
    use alignlab::generate::SamplingConfig;
    use alignlab::lab::{Session, Which};
    let new_session = || Session::new(tiny_lm(), std::rc::Rc::new(Default::default()));
    let enc = Encoding::untruncated(false, "");
    let sampling = SamplingConfig { num_samples: 3, max_new_tokens: 12, temperature: 1.0, seed: 7, ..Default::default() };
    let answer = |session: &Session, which: Which, sampling: &SamplingConfig| {
        let mut streamed = 0;
        let (_, samples) = block_on(session.generate(which, &enc, "Once upon a time", sampling, &mut |_| {
            streamed += 1;
            true
        }))
        .unwrap();
        (samples, streamed)
    };
    let mut session = new_session();
    let (first, streamed) = answer(&session, Which::Reference, &sampling);
    assert!(streamed > 0);
    assert!(session.is_kept(Which::Reference, &enc, "Once upon a time", &sampling));
    assert_eq!(answer(&session, Which::Reference, &sampling), (first.clone(), 0), "kept: the same answers, none streamed");
    // What writing them again gives, in a session that kept nothing: the premise of keeping them.
    assert_eq!(answer(&new_session(), Which::Reference, &sampling).0, first);
    // Another seed, the policy, and a reference that is no longer the loaded model are written anew.
    let other = SamplingConfig { seed: 8, ..sampling.clone() };
    assert!(!session.is_kept(Which::Reference, &enc, "Once upon a time", &other));
    assert!(!session.is_kept(Which::Policy, &enc, "Once upon a time", &sampling));
    assert!(answer(&session, Which::Policy, &sampling).1 > 0);
    let weights = session.lm.model.clone();
    session.policy.trained(weights, None);
    assert!(!session.is_kept(Which::Reference, &enc, "Once upon a time", &sampling));
    assert!(answer(&session, Which::Reference, &sampling).1 > 0);
}

#[test]
fn answers_to_several_prompts_come_in_order_and_the_reference_keeps_them() {
    // Several prompts answered together (Session::answers): in the prompts' order, each prompt
    // with its own settings, the reference's kept answers taken as they are and its new ones kept.
    use alignlab::generate::SamplingConfig;
    use alignlab::lab::{Session, Which};
    let enc = Encoding::untruncated(false, "");
    let sampled = |n, seed| SamplingConfig { num_samples: n, max_new_tokens: 10, temperature: 1.0, seed, ..Default::default() };
    let asks = [("Once upon a time", sampled(3, 7)), ("The cat", sampled(2, 1)), ("A dog ran", SamplingConfig::greedy(6)), ("Tom had", sampled(4, 2))];
    let all = |session: &Session, which: Which, asks: &[(&str, SamplingConfig)]| {
        let mut answers = session.answers(which, &enc, asks).unwrap();
        let mut out = Vec::new();
        while let Some((i, samples)) = block_on(answers.next(&mut || true)).unwrap() {
            assert_eq!(i, out.len());
            assert_eq!(samples.len(), asks[i].1.num_samples);
            out.push(samples);
        }
        out
    };
    let session = Session::new(tiny_lm(), std::rc::Rc::new(Default::default()));
    let (_, kept) = block_on(session.generate(Which::Reference, &enc, asks[1].0, &asks[1].1, &mut |_| true)).unwrap();
    let together = all(&session, Which::Reference, &asks);
    assert_eq!(together.len(), asks.len());
    assert_eq!(together[1], kept, "the kept answers");
    for (i, (prompt, sampling)) in asks.iter().enumerate() {
        assert!(session.is_kept(Which::Reference, &enc, prompt, sampling), "prompt {i} kept");
        // Each prompt's answers are the ones it gets asked alone, in a session that kept nothing.
        let fresh = Session::new(tiny_lm(), std::rc::Rc::new(Default::default()));
        assert_eq!(all(&fresh, Which::Policy, &asks[i..=i]).remove(0), together[i], "prompt {i}");
    }
    assert_ne!(together[0], together[3]);
    // A prompt the template cannot take is refused before any is answered.
    let too_long = "word ".repeat(400);
    assert!(session.answers(Which::Policy, &enc, &[(asks[0].0, asks[0].1.clone()), (too_long.as_str(), sampled(1, 0))]).is_err());
}

/// A second DPO run of another beta and rank, with fresh adapters.
fn another_dpo_spec(precompute_ref_log_probs: bool) -> alignlab::lab::RunSpec {
    use alignlab::lab::Method;
    let mut spec = dpo_run_spec(precompute_ref_log_probs, 2, 1);
    spec.method = Method::Dpo(DpoConfig { beta: 0.3, precompute_ref_log_probs, ..Default::default() });
    spec.lora = Some(lora(8, &["q_proj", "k_proj", "v_proj"]));
    spec
}

#[test]
fn reference_values_kept_in_the_session_serve_its_next_runs() {
    // The reference of a LoRA run on the loaded weights is the loaded model, whatever the run: the
    // values one run computed serve the next (another beta, another rank), which then scores no
    // pair's reference again and gets the numbers of a run that scores it every step.
    let mut session = alignlab::lab::Session::new(tiny_lm(), std::rc::Rc::new(Default::default()));
    let (first, _) = run_on(&session, dpo_run_spec(true, 2, 1));
    first.publish(&mut session);
    assert_eq!(session.ref_logps.borrow().len(), 8, "each pair's values kept, held-out ones included");
    assert_eq!(session.ref_logps.borrow().served(), 0);
    assert!(session.policy.base_is_loaded(), "LoRA leaves the base weights as loaded");
    let (_, second) = run_on(&session, another_dpo_spec(true));
    assert_eq!(session.ref_logps.borrow().served(), 8, "the second run took every pair's values from the session");
    let (_, recomputed) = run_on(&alignlab::lab::Session::new(tiny_lm(), std::rc::Rc::new(Default::default())), another_dpo_spec(false));
    same_steps(&second, &recomputed);
    assert!(second.last().unwrap()["loss"] < second[0]["loss"] - 0.1, "the second run trained: {second:?}");
}

#[test]
fn the_reference_scored_ahead_is_kept_and_counted_only_when_a_run_takes_it() {
    // In the idle time before Train the page's worker scores a run's pairs ahead of it
    // (`ReferenceAhead`): into the session's store, where the run then takes each pair's values.
    // Looking at what is kept hands nothing out: the store counts what runs take.
    let session = alignlab::lab::Session::new(tiny_lm(), std::rc::Rc::new(Default::default()));
    let spec = dpo_run_spec(true, 2, 1);
    let mut ahead = alignlab::lab::ReferenceAhead::new(&session, &spec).unwrap().expect("a LoRA run on the loaded weights keeps its values");
    let mut scored = 0;
    while ahead.remaining() > 0 {
        scored += block_on(ahead.step(2)).unwrap();
    }
    assert_eq!((scored, session.ref_logps.borrow().len()), (8, 8), "every pair, held-out ones included");
    assert_eq!(alignlab::lab::ReferenceAhead::new(&session, &spec).unwrap().unwrap().remaining(), 0, "nothing is left to score");
    assert_eq!(session.ref_logps.borrow().served(), 0, "scoring ahead and looking hand nothing to a run");
    run_on(&session, another_dpo_spec(true));
    assert_eq!(session.ref_logps.borrow().served(), 8, "the run took every pair's values from the session");
}

#[test]
fn a_fine_tuned_base_takes_no_reference_values_kept_for_the_loaded_model() {
    // A full fine-tune changes the weights a later LoRA run sits on, so that run's reference is
    // the fine-tuned model: values kept for the loaded one would be wrong. A reset brings them back.
    let full = || alignlab::lab::RunSpec { lora: None, ..dpo_run_spec(true, 2, 1) };
    let fine_tuned = || {
        let mut session = alignlab::lab::Session::new(tiny_lm(), std::rc::Rc::new(Default::default()));
        let (run, _) = run_on(&session, full());
        run.publish(&mut session);
        session
    };
    let mut session = fine_tuned();
    assert_eq!(session.ref_logps.borrow().len(), 8, "a full fine-tune from the loaded weights has them as its reference");
    assert!(!session.policy.base_is_loaded());
    let (_, second) = run_on(&session, another_dpo_spec(true));
    assert_eq!(session.ref_logps.borrow().served(), 0, "no value kept for the loaded model served the fine-tuned one");
    let (_, recomputed) = run_on(&fine_tuned(), another_dpo_spec(false));
    same_steps(&second, &recomputed);

    session.policy.reset(&session.lm);
    assert!(session.policy.base_is_loaded());
    run_on(&session, another_dpo_spec(true));
    assert_eq!(session.ref_logps.borrow().served(), 8, "after a reset the kept values hold again");
}

#[test]
fn reference_values_kept_a_pair_per_core_match_one_batch() {
    // On the CPU the reference's values of pairs not kept yet are computed a pair per core. Alone
    // a pair is not padded; in one batch it is padded to the longest: the values must agree.
    use alignlab::align::dpo::RefLogpsCache;
    let lm = tiny_lm();
    let prefs: Vec<Preference> = (0..5)
        .map(|i| Preference {
            prompt: format!("t1{i}{}", " t12".repeat(i)),
            chosen: format!("t5{}", " t3".repeat(2 * i)),
            rejected: format!("t6 t4{}", " t7".repeat(4 - i)),
        })
        .collect();
    let pairs = encode_pairs(&lm, &enc(), &prefs).unwrap();
    let idx: Vec<usize> = (0..pairs.len()).collect();
    // Kept values are scored with each prompt once (the default); the batch below runs chosen and
    // rejected apart, so they agree only if sharing the prompt changes no number.
    let mut cache = RefLogpsCache::new(&pairs, true, None);
    // Kept values are not computed again: a second fill over some of them changes nothing.
    block_on(cache.fill(&lm.model, &pairs, &idx[1..3], 1)).unwrap();
    block_on(cache.fill(&lm.model, &pairs, &idx, 1)).unwrap();
    let alone = cache.get(&idx).unwrap();
    // One padded batch of every pair: chosen rows first, then rejected.
    let seqs: Vec<(Vec<u32>, Vec<u32>)> =
        pairs.iter().map(|p| (p.prompt.clone(), p.chosen.clone())).chain(pairs.iter().map(|p| (p.prompt.clone(), p.rejected.clone()))).collect();
    let sums = read_f32(sequence_logps(&lm.model, &ScoringBatch::new(&lm.model, &seqs, 1).unwrap())).unwrap();
    let n = pairs.len();
    let batch: Vec<[f32; 2]> = (0..n).map(|i| [sums[i], sums[n + i]]).collect();
    for (i, (b, a)) in batch.iter().zip(&alone).enumerate() {
        for k in 0..2 {
            assert!((b[k] - a[k]).abs() <= 1e-5 * b[k].abs().max(1.0), "pair {i}: one batch {b:?}, a pair per core {a:?}");
        }
    }
    // Log-probabilities of whole completions: below zero, lower for the longer chosen answers.
    assert!(batch.iter().all(|v| v[0] < 0.0 && v[1] < 0.0), "{batch:?}");
    assert!(batch[4][0] < batch[0][0], "{batch:?}");
    assert!(RefLogpsCache::new(&pairs[..2], true, None).get(&[0]).is_err(), "a value never computed is an error, not a number");
}

#[test]
fn held_out_batches_score_at_once_with_the_numbers_of_one_thread() {
    // Half of eight pairs held out, in batches of two: on the CPU the batches are scored at once.
    // Before any step the policy is its reference, so every held-out pair's DPO loss is ln 2.
    let before_and_after = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut spec = dpo_run_spec(false, 2, 1);
            spec.eval.eval_fraction = 0.5;
            let session = alignlab::lab::Session::new(tiny_lm(), std::rc::Rc::new(Default::default()));
            let mut run = alignlab::lab::Run::new(&session, spec).unwrap();
            assert_eq!(run.held_out(), 4);
            let before = block_on(run.evaluate()).unwrap();
            block_on(run.step()).unwrap();
            (before, block_on(run.evaluate()).unwrap())
        })
    };
    let ((before, after), three) = (before_and_after(1), before_and_after(3));
    assert_eq!((&before, &after), (&three.0, &three.1));
    assert!((before["eval/loss"] - std::f64::consts::LN_2).abs() < 1e-6, "{before:?}");
    assert!((after["eval/loss"] - std::f64::consts::LN_2).abs() > 1e-5, "a step moved the held-out loss: {after:?}");
}

#[test]
fn gradient_accumulation_draws_a_new_micro_batch_each_time() {
    // Two micro-batches of one pair accumulate to the gradient of one batch of two: the same
    // pairs, the same mean loss, the same update (each micro-batch is a different pair).
    let (one, two) = (run_all(dpo_run_spec(true, 2, 1)), run_all(dpo_run_spec(true, 1, 2)));
    for (i, (a, b)) in one.iter().zip(&two).take(3).enumerate() {
        for name in ["loss", "rewards/margins", "grad_norm"] {
            assert!((a[name] - b[name]).abs() <= 1e-4 * a[name].abs().max(1.0), "step {}: {name} batch of 2 {} vs 2 x 1 {}", i + 1, a[name], b[name]);
        }
    }
}

/// Three DPO steps on four pairs, either as one batch or each pair a part of its own on `threads`
/// threads (`None`: one batch): the metrics of each step and the trained policy's logits.
fn dpo_steps(dropout: f64, threads: Option<usize>) -> (Vec<alignlab::align::train::Metrics>, Vec<f32>) {
    use alignlab::align::parts;
    let lm = tiny_lm();
    let pairs = encode_pairs(&lm, &enc(), &prefs()[..4]).unwrap();
    let mut model = lm.model.clone();
    model.add_lora(&LoraConfig { lora_dropout: dropout, ..lora(4, &ALL) }).unwrap();
    let reference = Reference::for_policy(&model);
    let mut tr = Trainer::new(model, train_cfg(1e-2, 3)).unwrap();
    let cfg = DpoConfig::default();
    let loss = |p: &Llama, pairs: &[alignlab::align::dpo::EncodedPair]| dpo_step(&cfg, p, RefLogps::Model(&reference.model(p)), pairs, 1);
    let mut history = Vec::new();
    while !tr.done() {
        let m = match threads {
            None => block_on(tr.step(&mut |p, _| loss(p, &pairs))),
            Some(n) => {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
                let part = |p: &Llama, _: usize, j: usize| loss(p, &pairs[j..=j]);
                pool.install(|| block_on(tr.step_parts(&[parts::each_alone(4)], &part)))
            }
        };
        history.push(m.unwrap());
    }
    (history, logits(&tr.model.for_inference(), &[3, 9, 27]))
}

#[test]
fn dpo_in_parts_trains_as_one_batch_does() {
    // DPO's loss is a mean over pairs, so four parts of one pair, each weighted 1/4, give the
    // gradient of the batch of four: the same losses, margins, norms and trained weights.
    let (batch, batch_logits) = dpo_steps(0.0, None);
    let (parts, parts_logits) = dpo_steps(0.0, Some(2));
    for (i, (a, b)) in batch.iter().zip(&parts).enumerate() {
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (name, v) in a {
            assert!((b[name] - v).abs() <= 1e-5 * v.abs().max(1.0), "step {}: {name} one batch {v} vs in parts {}", i + 1, b[name]);
        }
    }
    assert!(batch[2]["loss"] < batch[0]["loss"] - 0.01, "training moved the loss: {batch:?}");
    assert!(max_diff(&batch_logits, &parts_logits) < 1e-4, "trained weights differ");
}

#[test]
fn parts_give_the_same_numbers_on_any_number_of_threads() {
    // Each part draws its dropout from a stream of its own: one thread or three, the same bits.
    let (one, one_logits) = dpo_steps(0.1, Some(1));
    let (three, three_logits) = dpo_steps(0.1, Some(3));
    assert_eq!(one, three);
    assert_eq!(one_logits, three_logits);
    // And dropout did draw: without it the run is another.
    let (plain, _) = dpo_steps(0.0, Some(1));
    assert!((plain[2]["loss"] - one[2]["loss"]).abs() > 1e-6, "{} vs {}", plain[2]["loss"], one[2]["loss"]);
}

#[test]
fn sft_in_parts_weighs_each_demonstration_by_its_tokens() {
    // SFT's loss is a mean over the batch's completion tokens: demonstrations of 1 to 4 tokens,
    // each a part weighted by its share of the tokens, train as the batch does whole.
    use alignlab::align::parts;
    let lm = tiny_lm();
    let words = ["t9", "t9 t8", "t9 t8 t7", "t9 t8 t7 t6"];
    let demos: Vec<Demonstration> = words.iter().enumerate().map(|(i, w)| Demonstration { prompt: format!("t{} t3", 10 + i), completion: w.to_string() }).collect();
    let batch = encode_demos(&lm, &enc(), &demos).unwrap();
    let train = |in_parts: bool| {
        let mut model = lm.model.clone();
        model.add_lora(&lora(4, &ALL)).unwrap();
        let mut tr = Trainer::new(model, train_cfg(2e-2, 3)).unwrap();
        let weights = parts::by_size(batch.iter().map(|(_, c)| c.len()));
        let mut hist = Vec::new();
        while !tr.done() {
            let m = if in_parts {
                block_on(tr.step_parts(&[weights.clone()], &|m, _, j| sft_step(m, &batch[j..=j], 1)))
            } else {
                block_on(tr.step(&mut |m, _| sft_step(m, &batch, 1)))
            };
            hist.push(m.unwrap());
        }
        (hist, logits(&tr.model.for_inference(), &[3, 9, 27]))
    };
    let ((whole, whole_logits), (split, split_logits)) = (train(false), train(true));
    for (a, b) in whole.iter().zip(&split) {
        for name in ["loss", "mean_token_accuracy", "grad_norm"] {
            assert!((a[name] - b[name]).abs() <= 1e-5 * a[name].abs().max(1.0), "{name}: whole {} vs parts {}", a[name], b[name]);
        }
    }
    assert!(whole[2]["loss"] < whole[0]["loss"], "training moved the loss: {whole:?}");
    assert!(max_diff(&whole_logits, &split_logits) < 1e-4);
}

#[test]
fn reward_model_in_parts_trains_as_one_batch_does() {
    // The Bradley-Terry loss is a mean over pairs: four parts of one pair give the batch's steps,
    // the score head included (a trainable parameter outside the adapters).
    use alignlab::align::parts;
    let lm = tiny_lm();
    let pairs = encode_pairs(&lm, &enc(), &prefs()[..4]).unwrap();
    let cfg = RewardConfig { center_rewards_coefficient: 0.01, ..Default::default() };
    let train = |in_parts: bool| {
        let mut backbone = lm.model.clone();
        backbone.add_lora(&lora(4, &ALL)).unwrap();
        let mut tr = Trainer::new(RewardModel::new(backbone, 0), train_cfg(1e-2, 3)).unwrap();
        let mut hist = Vec::new();
        while !tr.done() {
            let m = if in_parts {
                block_on(tr.step_parts(&[parts::each_alone(4)], &|rm, _, j| reward_step(&cfg, rm, &pairs[j..=j], 1)))
            } else {
                block_on(tr.step(&mut |rm, _| reward_step(&cfg, rm, &pairs, 1)))
            };
            hist.push(m.unwrap());
        }
        let p = &pairs[0];
        (hist, block_on(tr.model.rewards_for(&[(p.prompt.clone(), p.chosen.clone())], 1)).unwrap()[0])
    };
    let ((whole, whole_reward), (split, split_reward)) = (train(false), train(true));
    for (a, b) in whole.iter().zip(&split) {
        for name in ["loss", "accuracy", "margin", "mean_reward", "grad_norm"] {
            assert!((a[name] - b[name]).abs() <= 1e-5 * a[name].abs().max(1.0), "{name}: whole {} vs parts {}", a[name], b[name]);
        }
    }
    assert!(whole[2]["loss"] < whole[0]["loss"], "training moved the loss: {whole:?}");
    assert!((whole_reward - split_reward).abs() < 1e-4, "{whole_reward} vs {split_reward}");
}

#[test]
fn scoring_a_mixed_batch_gives_each_row_what_it_gets_alone() {
    // Rows with different prompt and completion lengths share one batch: the vocabulary
    // projection runs only on the window that holds completions, and each row's log-probs
    // must still be those it has when scored alone.
    let lm = tiny_lm();
    let pairs: Vec<(Vec<u32>, Vec<u32>)> = vec![
        (vec![3, 9, 27, 4, 5, 6, 7, 8], vec![11, 12]),
        (vec![3], vec![13, 14, 15, 16, 17]),
        (vec![3, 9, 2], vec![18]),
    ];
    let together = score(&lm, &pairs).unwrap();
    for (i, p) in pairs.iter().enumerate() {
        let alone = &score(&lm, std::slice::from_ref(p)).unwrap()[0];
        assert_eq!(together[i].logprobs.len(), p.1.len());
        assert!(max_diff(&together[i].logprobs, &alone.logprobs) < 1e-5, "row {i}: {:?} vs {:?}", together[i].logprobs, alone.logprobs);
    }
    // And the full forward pass agrees: log-softmax of the logits at each completion position.
    let (p, c) = &pairs[1];
    let seq: Vec<u32> = p.iter().chain(c).copied().collect();
    let full = logits(&lm.model, &seq);
    let v = lm.model.vocab_size();
    for (j, &tok) in c.iter().enumerate() {
        let row = &full[(p.len() - 1 + j) * v..(p.len() + j) * v];
        let m = row.iter().fold(f32::MIN, |a, &b| a.max(b));
        let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f32>().ln();
        assert!((together[1].logprobs[j] - (row[tok as usize] - lse)).abs() < 1e-4);
    }
}

#[test]
fn next_token_logps_equal_one_token_completions() {
    // Prompts of different lengths in one batch (right-padded): the last position of each row.
    use alignlab::logps::{completion_logps, next_token_logps};
    let lm = tiny_lm();
    let prompts: Vec<Vec<u32>> = vec![vec![1, 5, 9, 12], vec![1, 7], vec![1, 3, 3, 8, 20, 31, 2]];
    let candidates = [4u32, 9, 63];
    let got = block_on(next_token_logps(&lm.model, 0, &prompts, &candidates)).unwrap();
    assert_eq!(got.len(), 3);
    for (p, row) in prompts.iter().zip(&got) {
        let pairs: Vec<(Vec<u32>, Vec<u32>)> = candidates.iter().map(|&c| (p.clone(), vec![c])).collect();
        let want = block_on(completion_logps(&lm.model, 0, &pairs)).unwrap();
        for (g, w) in row.iter().zip(&want) {
            assert!((g - w.sum).abs() < 1e-5, "prompt {p:?}: {g} vs {}", w.sum);
        }
        assert!(row.iter().all(|&l| l < 0.0));
    }
    assert!(block_on(next_token_logps(&lm.model, 0, &[vec![]], &candidates)).unwrap_err().to_string().contains("empty"));
}

#[test]
fn next_token_logps_with_a_shared_start_equal_each_prompt_alone() {
    // Two prompts a row with their shared start run once, rows of different lengths, and a row
    // with one prompt; then the same after a start every row has, run once into a cache the rows
    // of two calls read. Each equals the whole prompt scored alone.
    use alignlab::logps::{SharedStart, next_token_logps, next_token_logps_shared};
    let lm = tiny_lm();
    let rows: [[&[u32]; 3]; 3] = [[&[1, 5, 9, 12], &[7, 3], &[40, 41, 42]], [&[1, 7], &[2], &[]], [&[1, 3, 3, 8, 20], &[31, 2, 9, 9], &[6]]];
    let candidates = [4u32, 9, 63];
    for prefix in [&[][..], &[1, 17, 5][..]] {
        let start = SharedStart::new(&lm.model, 0, prefix).unwrap();
        let alone: Vec<Vec<u32>> = rows.iter().flat_map(|[s, a, b]| [[prefix, s, a].concat(), [prefix, s, b].concat()]).collect();
        let want = block_on(next_token_logps(&lm.model, 0, &alone, &candidates)).unwrap();
        let first = block_on(next_token_logps_shared(&lm.model, 0, &start, &rows, &candidates)).unwrap();
        // A second call reads the start as the first left it, with another number of rows.
        let again = block_on(next_token_logps_shared(&lm.model, 0, &start, &rows[1..], &candidates)).unwrap();
        assert_eq!(first[1..], again[..], "prefix {prefix:?}: the start is read, not used up");
        for (r, [a, b]) in first.iter().enumerate() {
            for (g, w) in a.iter().zip(&want[2 * r]).chain(b.iter().zip(&want[2 * r + 1])) {
                assert!((g - w).abs() < 1e-5, "prefix {prefix:?}, row {r}: {g} vs {w}");
            }
            assert_eq!(a.len(), 3);
            assert_eq!(b.len(), if rows[r][2].is_empty() { 0 } else { 3 });
        }
    }
    // A prompt with nothing of its own past the start the rows share is refused.
    for prefix in [&[][..], &[1, 2][..]] {
        let start = SharedStart::new(&lm.model, 0, prefix).unwrap();
        assert!(block_on(next_token_logps_shared(&lm.model, 0, &start, &[[&[], &[], &[5]]], &candidates)).unwrap_err().to_string().contains("empty"));
    }
}
