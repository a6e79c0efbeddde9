//! The decoder on tiny random weights: KV-cache decoding, padded batches, backend agreement, and
//! the three loaders agreeing with each other on the same weights.

use alignlab::backend::BackendKind;
use alignlab::io::load_model;
use alignlab::model::{Batch, KvCache};
use alignlab::LoadedModel;
use crate::common::*;

fn noop() -> impl FnMut(&str, f32) {
    |_: &str, _: f32| {}
}

fn tiny(kind: BackendKind, tied: bool) -> LoadedModel {
    tiny_checkpoint(tied, 42).into_model(&device(kind), &mut noop()).unwrap()
}

/// Logits `[t, vocab]` of one sequence, flattened.
fn logits(lm: &LoadedModel, seq: &[u32]) -> Vec<f32> {
    let (batch, _) = Batch::right_padded(&lm.model, &[seq.to_vec()], 0).unwrap();
    read_f32(lm.model.forward(&batch, None)).unwrap()
}

const SEQ: [u32; 10] = [3, 17, 9, 40, 2, 2, 63, 11, 5, 28];

#[test]
fn kv_cache_decoding_matches_full_forward() {
    let lm = tiny(BackendKind::Flex, false);
    let v = lm.config.vocab_size;
    let full = logits(&lm, &SEQ);
    let mut cache = KvCache::new(lm.model.num_layers());
    let (prefill, _) = Batch::left_padded(&lm.model, &[SEQ[..4].to_vec()], 0).unwrap();
    let first = read_f32(lm.model.forward_last(&prefill, Some(&mut cache))).unwrap();
    assert!(max_diff(&first, &full[3 * v..4 * v]) < 1e-4);
    let mut valid = vec![vec![true; 4]];
    for (i, &tok) in SEQ.iter().enumerate().skip(4) {
        valid[0].push(true);
        let step = Batch::step(&lm.model, &[tok], &[i], &valid).unwrap();
        let got = read_f32(lm.model.forward_last(&step, Some(&mut cache))).unwrap();
        let d = max_diff(&got, &full[i * v..(i + 1) * v]);
        assert!(d < 1e-4, "position {i}: cached logits differ by {d}");
    }
    assert_eq!(cache.len(), SEQ.len());
}

#[test]
fn padded_batches_match_single_sequences() {
    let lm = tiny(BackendKind::Flex, true);
    let v = lm.config.vocab_size;
    let seqs = vec![SEQ.to_vec(), SEQ[..3].to_vec(), SEQ[2..9].to_vec()];
    // Right padding: every real position matches the sequence run alone.
    let (batch, lens) = Batch::right_padded(&lm.model, &seqs, 1).unwrap();
    let all = read_f32(lm.model.forward(&batch, None)).unwrap();
    let t = 10;
    for (r, s) in seqs.iter().enumerate() {
        let alone = logits(&lm, s);
        let got = &all[r * t * v..(r * t + lens[r]) * v];
        assert!(max_diff(got, &alone) < 1e-4, "right-padded row {r}");
    }
    // Left padding (decoding layout): the last position matches.
    let (batch, _) = Batch::left_padded(&lm.model, &seqs, 1).unwrap();
    let last = read_f32(lm.model.forward_last(&batch, None)).unwrap();
    for (r, s) in seqs.iter().enumerate() {
        let alone = logits(&lm, s);
        let d = max_diff(&last[r * v..(r + 1) * v], &alone[(s.len() - 1) * v..]);
        assert!(d < 1e-4, "left-padded row {r}: {d}");
    }
}

#[test]
fn backends_agree_on_logits_and_logprobs() {
    let reference = tiny(BackendKind::Ndarray, false);
    let want = logits(&reference, &SEQ);
    let pairs = vec![(SEQ[..4].to_vec(), SEQ[4..].to_vec()), (SEQ[..2].to_vec(), SEQ[2..5].to_vec())];
    let want_lp = score(&reference, &pairs).unwrap();
    for kind in [BackendKind::Flex, BackendKind::Wgpu] {
        let lm = tiny(kind, false);
        let d = max_diff(&logits(&lm, &SEQ), &want);
        assert!(d < 1e-4, "{kind} logits differ from ndarray by {d}");
        let got = score(&lm, &pairs).unwrap();
        for (g, w) in got.iter().zip(&want_lp) {
            assert!((g.sum - w.sum).abs() < 1e-4, "{kind} logprob sum {} vs {}", g.sum, w.sum);
        }
    }
}

#[test]
fn logprobs_are_log_softmax_of_logits() {
    let lm = tiny(BackendKind::Flex, false);
    let v = lm.config.vocab_size;
    let full = logits(&lm, &SEQ);
    let scored = score(&lm, &[(SEQ[..6].to_vec(), SEQ[6..].to_vec())]).unwrap().remove(0);
    assert_eq!(scored.logprobs.len(), 4);
    for (k, lp) in scored.logprobs.iter().enumerate() {
        let pos = 5 + k; // logits at pos predict token pos+1
        let row = &full[pos * v..(pos + 1) * v];
        let m = row.iter().cloned().fold(f32::MIN, f32::max);
        let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f32>().ln();
        let want = row[SEQ[pos + 1] as usize] - lse;
        assert!((lp - want).abs() < 1e-4, "token {k}: {lp} vs {want}");
        assert!(*lp < 0.0);
    }
    assert!((scored.sum - scored.logprobs.iter().sum::<f32>()).abs() < 1e-4);
}

#[test]
fn gguf_hf_and_llama2c_files_load_to_the_same_model() {
    use alignlab::io::HostTensor;
    let dir = temp_dir("formats");
    let c = tiny_config(false);
    let w = random_weights(&c, 7);
    let dev = device(BackendKind::Flex);

    // GGUF with mixed types: the reference holds exactly the rounded values the file holds.
    let types = [
        ("model.layers.0.self_attn.q_proj.weight", GgmlType::Q8_0),
        ("model.layers.1.self_attn.k_proj.weight", GgmlType::Q8_0),
        ("model.layers.0.mlp.up_proj.weight", GgmlType::F16),
        ("model.embed_tokens.weight", GgmlType::F16),
    ];
    let held = write_tiny_gguf(&dir.join("tiny.gguf"), &c, &w, &types);
    let gguf = load_model(&dir.join("tiny.gguf"), None, &dev, &mut noop()).unwrap();

    // HF with the same rounded values, one tensor stored as bf16-exact values in bf16.
    let mut hf_w = held.clone();
    let bf = "model.layers.1.mlp.down_proj.weight";
    hf_w.insert(bf.into(), HostTensor::new(hf_w[bf].shape.clone(), hf_w[bf].data.iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect()));
    let hf_dir = dir.join("hf");
    std::fs::create_dir_all(&hf_dir).unwrap();
    write_hf(&hf_dir, &c, &hf_w, &[bf]);
    let hf = load_model(&hf_dir, None, &dev, &mut noop()).unwrap();

    write_llama2c(&dir.join("tiny.bin"), &dir.join("tok.bin"), &c, &held);
    let l2c = load_model(&dir.join("tiny.bin"), Some(&dir.join("tok.bin")), &dev, &mut noop()).unwrap();

    let a = logits(&gguf, &SEQ);
    let b = logits(&l2c, &SEQ);
    assert!(max_diff(&a, &b) < 1e-5, "GGUF vs llama2.c: {}", max_diff(&a, &b));
    // bf16 rounding of one matrix is the only difference from the HF copy.
    let d = max_diff(&a, &logits(&hf, &SEQ));
    assert!(d < 2e-2, "GGUF vs HF: {d}");
    // And the GGUF model equals the in-memory model built from the same rounded weights: the
    // q/k un-permutation is right (a wrong one would move logits by O(1)).
    let mut ckpt = tiny_checkpoint(false, 0);
    ckpt.weights = alignlab::io::Weights::default();
    for (k, v) in held {
        ckpt.weights.insert(k, v);
    }
    let mem = ckpt.into_model(&dev, &mut noop()).unwrap();
    assert!(max_diff(&a, &logits(&mem, &SEQ)) < 1e-5);
    // Tokenizers from the three files agree on ids.
    assert_eq!(gguf.tokenizer.encode("%)!\"", false).unwrap(), vec![4, 8, 63]); // last two merge
    assert_eq!(gguf.tokenizer.decode(&[4, 8, 63]), "%)!\"");
    assert_eq!(hf.tokenizer.encode("t5 t9", false).unwrap(), vec![5, 9]);
    assert_eq!(gguf.tokenizer.vocab_size(), 64);
    assert_eq!(l2c.tokenizer.vocab_size(), 64);
}

/// Decoding on the host ([`alignlab::decode`]) gives the logits burn's forward pass gives, with
/// Q8_0 weights read as stored, f32 ones, an active LoRA adapter, several samples at once, and
/// after the adapter is merged (the copy is rebuilt, not reused).
#[test]
fn host_decoding_matches_the_forward_pass() {
    use alignlab::decode::{HostDecoder, host_base};
    use alignlab::generate::{DecodePath, SamplingConfig, generate_on};
    use alignlab::model::LoraConfig;
    use burn::module::Param;
    use burn::tensor::{Distribution, Tensor};

    let dir = temp_dir("host-decode");
    // Room for a prompt longer than the host runs natively (96 tokens).
    let c = alignlab::model::LlamaConfig { max_position_embeddings: 128, ..tiny_config(true) };
    let types = [
        ("model.embed_tokens.weight", GgmlType::Q8_0),
        ("model.layers.0.self_attn.q_proj.weight", GgmlType::Q8_0),
        ("model.layers.1.mlp.gate_proj.weight", GgmlType::Q8_0),
    ];
    write_tiny_gguf(&dir.join("tiny.gguf"), &c, &random_weights(&c, 9), &types);
    let dev = device(BackendKind::Flex);
    let mut lm = load_model(&dir.join("tiny.gguf"), None, &dev, &mut noop()).unwrap();
    use alignlab::backend::block_on;

    let base = block_on(host_base(&lm.model)).unwrap();
    // The three Q8_0 matrices come as the file stores them (q_proj's rows un-permuted), the rest
    // are read back from the device and searched for blocks.
    assert_eq!(base.from_file(), 3);
    let (bytes, formats) = base.summary();
    let q8 = formats.iter().find(|f| f.0 == "Q8_0").map_or(0, |f| f.1);
    // The tied embedding (64 x 32), q_proj of layer 0 (32 x 32), gate_proj of layer 1 (48 x 32).
    assert_eq!(q8, 64 * 32 + 32 * 32 + 48 * 32, "{formats:?}");
    let params: usize = formats.iter().map(|f| f.1).sum();
    assert!(bytes < params * 4, "{bytes} bytes for {params} weights");

    // An adapter that changes the output: B random rather than zero.
    lm.model.add_lora(&LoraConfig { target_modules: vec!["q_proj".into(), "down_proj".into()], ..Default::default() }).unwrap();
    for (_, _, lin) in lm.model.linears_mut() {
        if let Some(l) = &mut lin.lora {
            let dims = l.b.dims();
            l.b = Param::from_tensor(Tensor::random(dims, Distribution::Normal(0.0, 0.3), &dev));
        }
    }
    let tokenizer = lm.tokenizer.clone();
    // A short prompt runs on the host; one over 96 tokens runs through burn and hands over its
    // keys and values.
    let long: Vec<u32> = (0..104).map(|i| (i * 7 + 3) % 64).collect();
    let check = |model: &alignlab::model::Llama, what: &str| {
        let v = model.vocab_size();
        for (seq, prompt) in [(&SEQ[..], 4), (&long[..], 40), (&long[..], 100)] {
            let (batch, _) = Batch::right_padded(model, &[seq.to_vec()], 0).unwrap();
            let full = read_f32(model.forward(&batch, None)).unwrap();
            let (mut dec, first) = block_on(HostDecoder::start(model, &seq[..prompt], 2)).unwrap();
            let d = max_diff(&first[..v], &full[(prompt - 1) * v..prompt * v]);
            assert!(d < 1e-4, "{what}, {prompt}-token prompt: first logits differ by {d}");
            for (i, &tok) in seq.iter().enumerate().skip(prompt) {
                let got = dec.step(&[tok, tok], &[i, i]);
                for row in got.chunks_exact(v) {
                    let d = max_diff(row, &full[i * v..(i + 1) * v]);
                    assert!(d < 1e-4, "{what}, {prompt}-token prompt, position {i}: host logits differ by {d}");
                }
            }
        }
        // Whole generations agree token for token with decoding on the device.
        let tokenizer = &tokenizer;
        let cfg = SamplingConfig { temperature: 1.0, num_samples: 3, max_new_tokens: 12, seed: 5, ..Default::default() };
        let host = block_on(generate_on(DecodePath::Auto, model, tokenizer, &SEQ[..3], &cfg, &mut |_| true)).unwrap();
        let device = block_on(generate_on(DecodePath::Device, model, tokenizer, &SEQ[..3], &cfg, &mut |_| true)).unwrap();
        assert_eq!(host, device, "{what}");
    };
    check(&lm.model, "adapter on");
    // The reference model (adapters off) shares the base copy.
    check(&lm.model.reference(), "adapters off");
    lm.model.merge_lora();
    check(&lm.model, "adapter merged");
}

/// On the CPU a quantized GGUF's linear weights wait as their blocks: loading makes no f32 copy
/// of them, nor does a first answer (it decodes from the blocks). The first pass through burn
/// makes them, and its logits are those of a model built from the file's values; the decoder's
/// copy is found again afterwards, not rebuilt from the new values.
#[test]
fn a_quantized_models_f32_weights_wait_for_the_first_pass_that_reads_them() {
    use alignlab::backend::block_on;
    use alignlab::decode::host_base;
    use alignlab::generate::{SamplingConfig, generate};

    let dir = temp_dir("deferred");
    let c = tiny_config(true);
    let quantized: Vec<String> = (0..c.num_hidden_layers)
        .flat_map(|i| ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj"].map(|n| format!("model.layers.{i}.{n}.weight")))
        .chain(["model.embed_tokens.weight".to_string()])
        .collect();
    let types: Vec<(&str, GgmlType)> = quantized.iter().map(|n| (n.as_str(), GgmlType::Q8_0)).collect();
    let held = write_tiny_gguf(&dir.join("tiny.gguf"), &c, &random_weights(&c, 4), &types);
    let dev = device(BackendKind::Flex);
    let lm = load_model(&dir.join("tiny.gguf"), None, &dev, &mut noop()).unwrap();
    // down_proj's rows (48 values) are not whole blocks of 32: stored f32, its values made at load.
    assert_eq!(lm.model.deferred_weights(), 13, "the (tied) embedding, and q, k, v, o, gate and up of both layers");

    let cfg = SamplingConfig::greedy(12);
    let answer = block_on(generate(&lm.model, &lm.tokenizer, &SEQ[..3], &cfg, &mut |_| true)).unwrap();
    let copy = block_on(host_base(&lm.model)).unwrap();
    assert_eq!(copy.from_file(), 13, "the decoder took every deferred weight's blocks as they are");
    assert_eq!(lm.model.deferred_weights(), 13, "an answer made no f32 weights");

    let got = logits(&lm, &SEQ);
    assert_eq!(lm.model.deferred_weights(), 0, "the forward pass made them all");
    let mut ckpt = tiny_checkpoint(true, 0);
    ckpt.weights = held.into_iter().collect();
    let want = logits(&ckpt.into_model(&dev, &mut noop()).unwrap(), &SEQ);
    assert!(max_diff(&got, &want) < 1e-5, "against the file's values: {}", max_diff(&got, &want));

    let again = block_on(host_base(&lm.model)).unwrap();
    assert!(std::sync::Arc::ptr_eq(&copy, &again), "the weights' fingerprint is the same from their blocks and from their values");
    assert_eq!(block_on(generate(&lm.model, &lm.tokenizer, &SEQ[..3], &cfg, &mut |_| true)).unwrap(), answer);

    // Weights a make_next_weight call makes one at a time, for work that lets requests in between.
    let lm = load_model(&dir.join("tiny.gguf"), None, &dev, &mut noop()).unwrap();
    let mut made = 0;
    while lm.model.make_next_weight() {
        made += 1;
        assert_eq!(lm.model.deferred_weights(), 13 - made);
    }
    assert_eq!(made, 13);
    assert!(max_diff(&logits(&lm, &SEQ), &want) < 1e-5);

    // On a training device: the weights that waited start frozen, whatever a clone did to its
    // flags meanwhile (an answer's frozen copy); a full fine-tune makes and tracks all of them,
    // an adapter's base stays frozen.
    let lm = load_model(&dir.join("tiny.gguf"), None, &dev.autodiff(), &mut noop()).unwrap();
    block_on(generate(&lm.model, &lm.tokenizer, &SEQ[..3], &cfg, &mut |_| true)).unwrap();
    assert_eq!(lm.model.deferred_weights(), 13);
    let session = alignlab::lab::Session::new(lm, std::rc::Rc::new(Default::default()));
    let tracked = |m: &alignlab::model::Llama| m.linears().iter().filter(|(_, l)| l.base.weight.val().is_require_grad()).count();
    let full = session.policy.for_training(None).unwrap();
    assert_eq!((full.deferred_weights(), tracked(&full)), (0, 14), "every linear weight of both layers is trained");
    assert!(full.embed_tokens.weight.val().is_require_grad());
    let adapted = session.policy.for_training(Some(&alignlab::model::LoraConfig::default())).unwrap();
    assert_eq!(tracked(&adapted), 0, "an adapter's base stays frozen");
    // The fine-tune tracked its own copy: of the loaded model's, only the two f32 down_proj
    // weights, which never waited, are tracked (as every weight made at load is).
    assert_eq!(tracked(&session.lm.model), 2);
}

/// The decoding copies a GPU decodes from ([`Llama::for_decoding`]): the f32 one gives the
/// model's logits up to rounding (q, k, v and the rotated q and k from one product, gate and up
/// from one), the f16 one holds every product's weights in f16 and stays within f16's rounding,
/// with an adapter active too (merged into the copy's weights, and still in the model). Their
/// numbers are computed on Flex, whose f16 products accumulate in f32 as cubek's do on a GPU, in
/// milliseconds where lavapipe takes half a minute; stories260K runs both copies on wgpu against
/// llama2.c. The head is a matrix of its own here, tied in stories260K and SmolLM2. Auto picks the
/// f16 copy on a GPU that computes in f16 (lavapipe does), and a device that cannot take a path
/// refuses it with a reason.
#[test]
fn decoding_copies_match_the_model() {
    use alignlab::generate::{DecodePath, Route};
    use alignlab::model::{LoraConfig, Llama};
    use burn::module::Param;
    use burn::tensor::{DType, Distribution, FloatDType, Tensor};

    let gpu = device(BackendKind::Wgpu);
    assert!(Llama::decodes_in_half(&gpu), "the Vulkan adapter does not compute in f16 (lavapipe does)");
    assert_eq!(DecodePath::Auto.on(&gpu).unwrap(), Route::Half);
    assert_eq!(DecodePath::Fused.on(&gpu).unwrap(), Route::Fused);
    assert_eq!(DecodePath::Device.on(&gpu).unwrap(), Route::Device);
    let dev = device(BackendKind::Flex);
    assert_eq!(DecodePath::Auto.on(&dev).unwrap(), Route::Host);
    let refused = DecodePath::Half.on(&dev).unwrap_err().to_string();
    assert!(refused.contains("f16") && refused.contains("auto or device"), "{refused}");
    let refused = DecodePath::Fused.on(&dev).unwrap_err().to_string();
    assert!(refused.contains("GPU") && refused.contains("auto or device"), "{refused}");

    let copy_logits = |model: &Llama| {
        let (batch, _) = Batch::right_padded(model, &[SEQ.to_vec()], 0).unwrap();
        read_f32(model.forward(&batch, None)).unwrap()
    };
    let mut lm = tiny(BackendKind::Flex, false);
    let half = lm.model.for_decoding(FloatDType::F16);
    for (i, layer) in half.layers.iter().enumerate() {
        let (a, m) = (&layer.self_attn, &layer.mlp);
        for w in [&a.qkv, &a.o, &m.gate_up, &m.down] {
            assert_eq!(w.as_ref().unwrap().val().dtype(), DType::F16, "layer {i}");
        }
        // Stored by outputs, [d_out, d_in].
        let d = lm.config.hidden_size;
        assert_eq!(m.down.as_ref().unwrap().dims(), [d, lm.config.intermediate_size], "layer {i}");
        assert_eq!(m.gate_up.as_ref().unwrap().dims(), [2 * lm.config.intermediate_size, d], "layer {i}");
    }
    assert_eq!(half.embed_tokens.weight.val().dtype(), DType::F16);
    assert!(half.lm_head.iter().all(|h| h.weight.val().dtype() == DType::F16));
    assert_eq!(half.norm.gamma.val().dtype(), DType::F32, "norms stay f32");

    let want = logits(&lm, &SEQ);
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    let d = max_diff(&copy_logits(&lm.model.for_decoding(FloatDType::F32)), &want);
    assert!(d < 1e-4 * scale, "the f32 copy's logits differ by {d} (logits up to {scale})");
    let d = max_diff(&copy_logits(&half), &want);
    // Rounded, not skipped: f16 keeps 11 significant bits (lavapipe: 0.0042 of 2.86).
    assert!(d > 0.0 && d < 1e-2 * scale, "half logits differ by {d} (logits up to {scale})");

    // An adapter that changes the output, merged into the copies: it moves their logits as far as
    // the model's, and they still agree.
    lm.model.add_lora(&LoraConfig { target_modules: vec!["q_proj".into(), "down_proj".into()], ..Default::default() }).unwrap();
    for (_, _, lin) in lm.model.linears_mut() {
        if let Some(l) = &mut lin.lora {
            let dims = l.b.dims();
            l.b = Param::from_tensor(Tensor::random(dims, Distribution::Normal(0.0, 0.3), &dev));
        }
    }
    let adapted = logits(&lm, &SEQ);
    let moved = max_diff(&adapted, &want);
    for (dtype, tolerance) in [(FloatDType::F32, 1e-4), (FloatDType::F16, 1e-2)] {
        let merged = lm.model.for_decoding(dtype);
        assert!(merged.linears().iter().all(|(_, lin)| lin.lora.is_none()), "the copy has its adapters merged");
        let d = max_diff(&copy_logits(&merged), &adapted);
        assert!(d < tolerance * scale && moved > 10.0 * d, "{dtype:?}, with the adapter: differs by {d}, the adapter moved {moved}");
    }
    assert_eq!(lm.model.linears().iter().filter(|(_, lin)| lin.lora.is_some()).count(), 4, "the model keeps its own");
}

/// Prompts decoded together ([`Generations`]) get the answers each gets in other company and
/// alone: more prompts than fit one batch (they wait for room), one-token, short and long prompts
/// (the long one through burn), greedy and sampled, an adapter on, Q8_0 weights (in company a
/// row alone is multiplied as floats, the same sums as beside others). They agree token for token with decoding on the device, the answers come back
/// in the prompts' order, and a stop asked for mid-way ends the running prompts as cancelled.
#[test]
fn prompts_decoded_together_get_the_answers_they_get_alone() {
    use alignlab::backend::block_on;
    use alignlab::generate::{DecodePath, FinishReason, Generations, Request, SamplingConfig, generate_on};
    use alignlab::model::LoraConfig;
    use burn::module::Param;
    use burn::tensor::{Distribution, Tensor};

    let dir = temp_dir("together");
    let c = alignlab::model::LlamaConfig { max_position_embeddings: 128, ..tiny_config(true) };
    let types = [("model.embed_tokens.weight", GgmlType::Q8_0), ("model.layers.1.mlp.up_proj.weight", GgmlType::Q8_0)];
    write_tiny_gguf(&dir.join("tiny.gguf"), &c, &random_weights(&c, 11), &types);
    let dev = device(BackendKind::Flex);
    let mut lm = load_model(&dir.join("tiny.gguf"), None, &dev, &mut noop()).unwrap();
    lm.model.add_lora(&LoraConfig { target_modules: vec!["v_proj".into(), "gate_proj".into()], ..Default::default() }).unwrap();
    for (_, _, lin) in lm.model.linears_mut() {
        if let Some(l) = &mut lin.lora {
            let dims = l.b.dims();
            l.b = Param::from_tensor(Tensor::random(dims, Distribution::Normal(0.0, 0.3), &dev));
        }
    }
    let (model, tokenizer) = (&lm.model, &lm.tokenizer);
    let long: Vec<u32> = (0..100).map(|i| (i * 5 + 1) % 64).collect();
    let sampled = |n, seed, max| SamplingConfig { temperature: 1.0, num_samples: n, max_new_tokens: max, seed, ..Default::default() };
    let requests = vec![
        Request { prompt: SEQ[..3].to_vec(), sampling: sampled(3, 5, 12) },
        Request { prompt: SEQ[2..9].to_vec(), sampling: SamplingConfig::greedy(8) },
        Request { prompt: long.clone(), sampling: sampled(2, 9, 10) },
        Request { prompt: SEQ[..1].to_vec(), sampling: sampled(8, 1, 16) },
        Request { prompt: SEQ[4..].to_vec(), sampling: SamplingConfig { max_new_tokens: 0, num_samples: 2, ..Default::default() } },
        Request { prompt: SEQ[1..6].to_vec(), sampling: sampled(4, 3, 6) },
        Request { prompt: SEQ[5..].to_vec(), sampling: SamplingConfig::greedy(14) },
    ];
    let all = |path: DecodePath, requests: Vec<Request>| {
        let mut answers = Generations::new(path, model, tokenizer, requests).unwrap();
        let mut out = Vec::new();
        while let Some((i, samples)) = block_on(answers.next(&mut |_, _| true)).unwrap() {
            assert_eq!(i, out.len(), "answers come back in the prompts' order");
            out.push(samples);
        }
        out
    };
    let together = all(DecodePath::Auto, requests.clone());
    assert_eq!(together.len(), requests.len());
    for (i, r) in requests.iter().enumerate() {
        // In other company (the next prompt), and alone.
        let next = requests[(i + 1) % requests.len()].clone();
        assert_eq!(all(DecodePath::Auto, vec![next, r.clone()])[1], together[i], "prompt {i} beside another");
        assert_eq!(all(DecodePath::Auto, vec![r.clone()])[0], together[i], "prompt {i} alone");
        let device = block_on(generate_on(DecodePath::Device, model, tokenizer, &r.prompt, &r.sampling, &mut |_| true)).unwrap();
        assert_eq!(together[i], device, "prompt {i} on the device");
        assert_eq!(together[i].len(), r.sampling.num_samples);
    }
    assert!(together[4].iter().all(|s| s.tokens.is_empty() && s.finish_reason == FinishReason::Length));
    assert!(together.iter().map(|a| a.iter().map(|s| s.tokens.len()).sum::<usize>()).sum::<usize>() > 100);
    // On the device the prompts run one after the other, with the same answers.
    assert_eq!(all(DecodePath::Device, requests.clone()), together);

    // Kept while decoding, each token's log-probability is the one a forward pass over the
    // answer gives (temperature 1, whatever the sampler's temperature).
    let mut kept = Generations::new(DecodePath::Auto, model, tokenizer, requests.clone()).unwrap().keeping_logps();
    let mut checked = 0;
    while let Some((i, samples)) = block_on(kept.next(&mut |_, _| true)).unwrap() {
        for (s, plain) in samples.iter().zip(&together[i]) {
            assert_eq!(s.tokens, plain.tokens, "keeping log-probabilities changes no answer");
            assert_eq!(s.logps.len(), s.tokens.len());
            if s.tokens.is_empty() {
                continue;
            }
            let want = block_on(alignlab::logps::completion_logps(model, 0, &[(requests[i].prompt.clone(), s.tokens.clone())])).unwrap().remove(0);
            let d = max_diff(&s.logps, &want.logprobs);
            assert!(d < 1e-4, "prompt {i}: log-probabilities differ by {d}");
            checked += s.tokens.len();
        }
    }
    assert!(checked > 100, "{checked} tokens checked");

    // Asked to stop at the 20th token: the prompts running then end as cancelled, the rest never
    // start.
    let mut answers = Generations::new(DecodePath::Auto, model, tokenizer, requests.clone()).unwrap();
    let (mut seen, mut back) = (0, Vec::new());
    while let Some((_, samples)) = block_on(answers.next(&mut |_, _| {
        seen += 1;
        seen < 20
    }))
    .unwrap()
    {
        back.push(samples);
    }
    // The stop takes effect once the step's rows have their tokens (at most 16 rows a step).
    assert!((20..36).contains(&seen), "{seen} tokens seen");
    assert!(!back.is_empty() && back.len() < requests.len(), "{} of {} came back", back.len(), requests.len());
    assert!(back.iter().flatten().any(|s| s.finish_reason == FinishReason::Cancelled));
}
