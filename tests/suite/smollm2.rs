//! SmolLM2-135M-Instruct (the default model, fetched by scripts/setup) against reference values
//! that HF transformers computed from the same GGUF file (tests/data/smollm2_reference.json, made
//! by scripts/reference.py): tokenization, chat formatting, logits, log-probabilities and greedy
//! tokens.

use alignlab::backend::BackendKind;
use alignlab::generate::SamplingConfig;
use alignlab::io::{Message, load_model};
use alignlab::backend::block_on;
use alignlab::logps::completion_logps;
use alignlab::model::Batch;
use alignlab::LoadedModel;
use crate::common::{device, generate, read_f32, root, score};
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_slice(&std::fs::read(root().join("tests/data/smollm2_reference.json")).unwrap()).unwrap()
}

fn load(kind: BackendKind) -> LoadedModel {
    let path = root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(path.exists(), "{} is missing: run scripts/setup (scripts/test does)", path.display());
    load_model(&path, None, &device(kind), &mut |_: &str, _: f32| {}).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[test]
fn tokenizer_and_chat_template_match_transformers() {
    let r = reference();
    let lm = load(BackendKind::Flex);
    assert_eq!(lm.config.num_parameters(), 134_515_008);
    for case in r["tokenize"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(lm.tokenizer.encode(text, false).unwrap(), ids(&case["ids"]), "tokenizing {text:?}");
    }
    for (name, case) in r["chat"].as_object().unwrap() {
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let text = lm.chat_prompt(&messages, true).unwrap();
        assert_eq!(text, case["text"].as_str().unwrap(), "chat template, {name}");
        assert_eq!(lm.tokenizer.encode(&text, false).unwrap(), ids(&case["ids"]), "chat ids, {name}");
    }
    // Ending a turn: <|im_end|> (id 2) is EOS and stops generation.
    assert_eq!(lm.tokenizer.eos_id, Some(2));
    assert!(lm.tokenizer.stop_ids.contains(&2));
}

#[test]
fn logits_and_logprobs_match_transformers() {
    let r = reference();
    let lm = load(BackendKind::Flex);
    let head = &r["logits_head"];
    let (batch, _) = Batch::right_padded(&lm.model, &[ids(&head["ids"])], 0).unwrap();
    let last = read_f32(lm.model.forward_last(&batch, None)).unwrap();
    for (got, want) in last.iter().zip(floats(&head["first8"])) {
        assert!((got - want).abs() < 2e-3, "logit {got} vs transformers {want}");
    }
    assert_eq!(alignlab::generate::argmax(&last), head["argmax"].as_u64().unwrap() as u32);

    // All pairs in one padded batch: padding must not change any sequence's score.
    let cases = r["logprobs"].as_array().unwrap();
    let pairs: Vec<(Vec<u32>, Vec<u32>)> = cases.iter().map(|c| (ids(&c["prompt_ids"]), ids(&c["completion_ids"]))).collect();
    for (c, (p, comp)) in cases.iter().zip(&pairs) {
        // Our own tokenization of the completion gives the same ids.
        assert_eq!(&lm.tokenizer.encode(c["completion"].as_str().unwrap(), false).unwrap(), comp);
        assert!(!p.is_empty());
    }
    let scored = score(&lm, &pairs).unwrap();
    for (c, s) in cases.iter().zip(&scored) {
        let want = c["sum"].as_f64().unwrap() as f32;
        assert!((s.sum - want).abs() < 0.05, "{}: sum {} vs transformers {want}", c["name"], s.sum);
        for (g, w) in s.logprobs.iter().zip(floats(&c["logprobs"])) {
            assert!((g - w).abs() < 0.02, "{}: token logprob {g} vs {w}", c["name"]);
        }
    }
}

#[test]
fn greedy_tokens_match_transformers() {
    let r = reference();
    let mut lm = load(BackendKind::Flex);
    // transformers generated through EOS; do the same to compare all 32 tokens.
    lm.tokenizer.stop_ids.clear();
    for case in r["greedy"].as_array().unwrap() {
        let want = ids(&case["generated_ids"]);
        let got = generate(&lm, &ids(&case["prompt_ids"]), &SamplingConfig::greedy(want.len()), &mut |_| true)
            .unwrap()
            .remove(0)
            .tokens;
        let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        assert!(same >= 24, "{}: only {same} greedy tokens agree\n ours {got:?}\n ref  {want:?}", case["name"]);
        assert_eq!(same, want.len(), "{}: diverged at token {same}", case["name"]);
    }
}

#[test]
fn chat_answer_is_fluent_and_stops_at_end_of_turn() {
    let lm = load(BackendKind::Flex);
    let prompt = lm.chat_prompt(&[Message::user("What is the capital of France?")], true).unwrap();
    let ids = lm.tokenizer.encode(&prompt, false).unwrap();
    let out = generate(&lm, &ids, &SamplingConfig::greedy(64), &mut |_| true).unwrap().remove(0);
    assert_eq!(out.text, "The capital of France is Paris.");
    assert_eq!(out.finish_reason, alignlab::generate::FinishReason::Stop);
    // Sampling: 4 seeded samples in one batch are reproducible, and differ from each other.
    let cfg = SamplingConfig { temperature: 1.0, top_p: 0.95, num_samples: 4, seed: 11, max_new_tokens: 24, ..Default::default() };
    let a = generate(&lm, &ids, &cfg, &mut |_| true).unwrap();
    let b = generate(&lm, &ids, &cfg, &mut |_| true).unwrap();
    assert_eq!(a, b);
    assert!(a.iter().any(|s| s.tokens != a[0].tokens), "4 samples at temperature 1 were identical");
}

#[test]
fn wgpu_scores_match_transformers() {
    let r = reference();
    let lm = load(BackendKind::Wgpu);
    let c = &r["logprobs"][1];
    let s = score(&lm, &[(ids(&c["prompt_ids"]), ids(&c["completion_ids"]))]).unwrap().remove(0);
    let want = c["sum"].as_f64().unwrap() as f32;
    assert!((s.sum - want).abs() < 0.05, "wgpu sum {} vs transformers {want}", s.sum);
}

/// The decoding copies a GPU decodes from, on the real model: a completion's log-probabilities,
/// token by token, stay within the f32 paths' tolerances of transformers' f32 values, in f32 (q,
/// k, v with RoPE's rotation folded in, and gate/up, one product each) and in f16. The norms,
/// softmax and residual stream stay f32, so no activation overflows. Computed on Flex, whose f16
/// products accumulate in f32 as cubek's do on a GPU, in a second where lavapipe takes 40;
/// stories260K runs the copies on wgpu.
#[test]
fn decoding_copies_match_transformers() {
    use burn::tensor::FloatDType;
    let r = reference();
    let lm = load(BackendKind::Flex);
    let c = &r["logprobs"][1];
    let pairs = [(ids(&c["prompt_ids"]), ids(&c["completion_ids"]))];
    let want = c["sum"].as_f64().unwrap() as f32;
    // f16's rounding: 0.012 on Flex, 0.011 on lavapipe; the f32 paths are held to 0.02.
    for (dtype, tolerance) in [(FloatDType::F32, 0.02), (FloatDType::F16, 0.03)] {
        let copy = lm.model.for_decoding(dtype);
        let s = block_on(completion_logps(&copy, lm.tokenizer.pad_id(), &pairs)).unwrap().remove(0);
        let worst = s.logprobs.iter().zip(floats(&c["logprobs"])).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
        eprintln!("{dtype:?} copy: log-prob sum {} vs transformers {want}; tokens within {worst}", s.sum);
        assert_eq!(s.logprobs.len(), floats(&c["logprobs"]).len());
        assert!((s.sum - want).abs() < 0.05, "{dtype:?} copy: sum {} vs transformers {want}", s.sum);
        assert!(worst < tolerance, "{dtype:?} copy: token log-probs differ from transformers by up to {worst}");
    }
}

/// Retrieval on the default model: the sample fact set's first questions (about an island no model
/// has read of) answered greedily without the documents and with the best passage. The model
/// makes facts up alone and mostly gets them right from the passage.
#[test]
fn retrieved_passages_turn_made_up_facts_into_right_ones() {
    use alignlab::lab::retrieve::{FactRow, FactSummary, Library, answer, sample_documents, sample_facts};
    use alignlab::lab::{Session, Which};
    let session = Session::new(load(BackendKind::Flex), std::rc::Rc::new(Default::default()));
    let library = Library::new(&sample_documents()).unwrap();
    let enc = alignlab::align::Encoding::untruncated(true, "");
    let sampling = SamplingConfig::greedy(24);
    let rows: Vec<FactRow> = sample_facts()
        .iter()
        .step_by(4)
        .map(|f| FactRow::of(f, alignlab::backend::block_on(answer(&session, Which::Policy, &enc, &library, &f.question, 1, &sampling, &mut || true)).unwrap()))
        .collect();
    let s = FactSummary::of(&rows);
    eprintln!("{} facts: retrieved {:.2}, right without documents {:.2}, with the passage {:.2}", s.questions, s.retrieved, s.plain_right, s.grounded_right);
    assert_eq!(s.retrieved, 1.0);
    assert!(s.plain_right <= 0.2, "{s:?}");
    assert!(s.grounded_right >= s.plain_right + 0.4, "{s:?}");
}

/// The model as its own judge (lab::constitution): asked "Was that rude?", SmolLM2 gives the rude
/// answer of the red-teaming lesson's twelve pairs (a kind answer and a rude one to the same
/// provocation) the higher P(yes) far more often than chance (transformers on the same GGUF: 11 of
/// 12; with "Was that rude or unkind?" it is at chance, 5 of 12).
#[test]
fn the_model_judges_kind_answers_kinder_than_rude_ones() {
    use alignlab::lab::constitution::{Constitution, SelfJudge};
    use alignlab::lab::{Session, Which};
    let lab: Value = serde_json::from_slice(&std::fs::read(root().join("www/labs/red-teaming.json")).unwrap()).unwrap();
    let pairs = lab["setup"]["data"]["pairs"].as_array().unwrap();
    let session = Session::new(load(BackendKind::Flex), std::rc::Rc::new(Default::default()));
    let c = Constitution { principles: vec!["Was that rude?".into()] };
    let judge = SelfJudge::new(&session, Which::Reference, true, &c).unwrap();
    let mut wins = 0;
    for p in pairs {
        let answers = [p["chosen"].as_str().unwrap().to_string(), p["rejected"].as_str().unwrap().to_string()];
        let s = block_on(judge.judge(&answers)).unwrap();
        assert!(s.iter().flatten().all(|x| (0.0..=1.0).contains(x)));
        if s[1][0] > s[0][0] {
            wins += 1;
        }
    }
    eprintln!("P(yes) to \"Was that rude?\" higher for the rude answer in {wins} of {} pairs", pairs.len());
    assert!(wins >= 9, "{wins} of {}", pairs.len());
}

/// P(yes) to `principle` about `answer`, the question scored alone: the reference for the judge's
/// shared passes.
fn p_yes_alone(session: &alignlab::lab::Session, principle: &str, answer: &str) -> f64 {
    use alignlab::align::Encoding;
    use alignlab::lab::constitution::critique_question;
    use alignlab::logps::next_token_logps;
    let lm = &session.lm;
    let [yes, no] = ["Yes", "No"].map(|w| lm.tokenizer.encode(w, false).unwrap()[0]);
    let q = Encoding::untruncated(true, "").prompt(lm, &critique_question(principle, answer)).unwrap();
    let lps = block_on(next_token_logps(&lm.model, session.pad(), &[q], &[yes, no])).unwrap();
    1.0 / (1.0 + f64::from(lps[0][1] - lps[0][0]).exp())
}

/// The judge reads an answer once for two of its questions (their shared start run once): each
/// P(yes) is what the question gets alone, three principles (a row of two and a row of one) on
/// two answers; then, from the same judge, answers of which one opens with marks the tokenizer
/// joins to the quote before it (its call runs a start of its own), then the first two again.
#[test]
fn self_judging_with_the_answer_read_once_equals_each_question_alone() {
    use alignlab::lab::constitution::{Constitution, SelfJudge};
    use alignlab::lab::{Session, Which};
    let session = Session::new(load(BackendKind::Flex), std::rc::Rc::new(Default::default()));
    let c = Constitution { principles: vec!["Was that rude?".into(), "Could that hurt someone?".into(), "Was that a lie?".into()] };
    let judge = SelfJudge::new(&session, Which::Reference, true, &c).unwrap();
    let plain = ["You are wonderful, and I am glad you asked.", "Nobody cares what you think, go away."].map(String::from);
    let joined = ["...*fine*, whatever.", "Sure."].map(String::from);
    for answers in [&plain, &joined, &plain] {
        let got = block_on(judge.judge(answers)).unwrap();
        for (answer, by_principle) in answers.iter().zip(&got) {
            assert_eq!(by_principle.len(), 3);
            for (p, got) in c.principles.iter().zip(by_principle) {
                let want = p_yes_alone(&session, p, answer);
                assert!((got - want).abs() < 1e-4, "{p} on {answer:?}: {got} vs {want}");
            }
        }
    }
}

/// Self-labelling over several prompts runs the start every critique shares once for the whole
/// run: each answer's P(yes) is still what its question gets alone.
#[test]
fn self_labelling_over_several_prompts_equals_each_question_alone() {
    use alignlab::align::Encoding;
    use alignlab::lab::constitution::{judge_prompts, starter_constitution};
    use alignlab::lab::{Session, Which};
    let session = Session::new(load(BackendKind::Flex), std::rc::Rc::new(Default::default()));
    let c = starter_constitution();
    let prompts = ["Tell me about cats.", "Say something mean about my friend.", "How do I boil an egg?"].map(String::from);
    let sampling = SamplingConfig { num_samples: 2, max_new_tokens: 10, temperature: 1.0, seed: 5, ..Default::default() };
    let mut judged = Vec::new();
    block_on(judge_prompts(&session, Which::Reference, &Encoding::untruncated(true, ""), &c, &prompts, &sampling, vec![], &mut || true, &mut |i, j| {
        judged.push((i, j))
    }))
    .unwrap();
    assert_eq!(judged.iter().map(|(i, j)| (*i, j.len())).collect::<Vec<_>>(), [(0, 2), (1, 2), (2, 2)]);
    for (i, answers) in &judged {
        for j in answers {
            for (p, got) in c.principles.iter().zip(&j.by_principle) {
                let want = p_yes_alone(&session, p, &j.text);
                assert!((got - want).abs() < 1e-4, "prompt {i}, {p} on {:?}: {got} vs {want}", j.text);
            }
        }
    }
}

/// Scoring answers with a policy that has trainable weights (the page's policy after training,
/// on the autodiff device) keeps no memory behind: burn keeps the graph of a tracked pass that
/// no backward pass consumes, and the probes' KL leaked ~300 MB a probe on SmolLM2 until it
/// scored frozen copies. Resident memory over ten calls, in a process of its own.
#[test]
fn scoring_with_a_trainable_policy_keeps_no_graph() {
    use alignlab::generate::{FinishReason, Sample};
    use alignlab::lab::evaluate::sequence_kl;
    use alignlab::lab::Session;
    use alignlab::logps::completion_logps;
    use alignlab::model::LoraConfig;
    if !crate::common::alone("smollm2::scoring_with_a_trainable_policy_keeps_no_graph") {
        return;
    }
    let path = root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let lm = load_model(&path, None, &device(BackendKind::Flex).autodiff(), &mut |_: &str, _: f32| {}).unwrap();
    let session = Session::new(lm, std::rc::Rc::new(Default::default()));
    let mut policy = session.lm.model.clone();
    policy.add_lora(&LoraConfig::default()).unwrap();
    let reference = policy.reference();
    let prompt = session.lm.tokenizer.encode("Tell me about the sea and the ships that sail on it.", true).unwrap();
    let samples: Vec<Sample> = (0..2)
        .map(|i| Sample { tokens: (0..48).map(|t| 100 + i * 7 + t).collect(), text: String::new(), finish_reason: FinishReason::Length, logps: Vec::new() })
        .collect();
    let rss = || {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").parse::<f64>().unwrap() / 1024.0
    };
    // The policy's side as decoding keeps it, here from a pass of the trainable policy.
    let kl = |_: usize| {
        let mut samples = samples.clone();
        for s in samples.iter_mut() {
            s.logps = alignlab::backend::block_on(completion_logps(&policy, 0, &[(prompt.clone(), s.tokens.clone())])).unwrap().remove(0).logprobs;
        }
        alignlab::backend::block_on(sequence_kl(&session, &reference, &prompt, &samples)).unwrap()
    };
    assert!(kl(0).iter().all(|k| k.abs() < 1e-3), "a fresh adapter is the reference");
    let before = rss();
    (0..10).for_each(|i| drop(kl(i)));
    let grown = rss() - before;
    assert!(grown < 150.0, "resident memory grew {grown:.0} MB over ten scorings");
}
