# ---- Below: the same for every hand-off (alignlab's src/lab/trl_handoff.py). ----
import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# alignlab's politeness markers (src/judges/mod.rs), matched in the lower-cased text.
POLITE = [
    "please", "thank you", "thanks", "sorry", "apologize", "apologies", "appreciate", "kindly", "would you",
    "could you", "you're welcome", "my pleasure", "happy to help", "glad", "excuse me", "pardon",
]


def parse_args():
    p = argparse.ArgumentParser(description=f"Continue an alignlab {METHOD} run in TRL.")
    p.add_argument("--model", default=BASE_MODEL, help="hub id, HF directory or .gguf file of the base model")
    p.add_argument("--fresh", action="store_true", help="train a new adapter instead of continuing from ./adapter")
    p.add_argument("--max-steps", type=int, help="optimizer steps (default: the run's)")
    p.add_argument("--output-dir", default="trl-output")
    p.add_argument("--check-only", action="store_true",
                   help="read the data with TRL's data utilities, check the judges and the config, then stop")
    return p.parse_args()


def device_dtype():
    """bfloat16 on a GPU that has it, else float32 (the CPU, older GPUs)."""
    import torch
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32"


def load_tokenizer(name):
    from transformers import AutoTokenizer
    source, kwargs = model_source(name)
    tok = AutoTokenizer.from_pretrained(source, **kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def model_source(name):
    """(directory or hub id, keyword arguments): a .gguf file is read by transformers' GGUF loader."""
    if name.endswith(".gguf"):
        path = Path(name).resolve()
        return str(path.parent), {"gguf_file": path.name}
    return name, {}


def load_model(name, seq_cls=False, pad_token_id=None):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    source, kwargs = model_source(name)
    if seq_cls:
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, dtype=device_dtype(), **kwargs)
        model.config.pad_token_id = pad_token_id
    else:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=device_dtype(), **kwargs)
    if "gguf_file" in kwargs:
        # transformers turns a GGUF's blocks into ordinary float weights but still marks the model
        # as quantized, which its Trainer refuses to train; the weights are plain floats.
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
    return model


def load_data():
    from datasets import load_dataset
    files = {"train": str(HERE / "train.jsonl")}
    if (HERE / "eval.jsonl").exists():
        files["eval"] = str(HERE / "eval.jsonl")
    return load_dataset("json", data_files=files)


def check_data(ds, tok):
    """Every row through TRL's own data utilities: its form, and the chat template applied."""
    from trl.data_utils import is_conversational, maybe_apply_chat_template
    for split in ds:
        for i, row in enumerate(ds[split]):
            if is_conversational(row) != CHAT:
                sys.exit(f"{split}.jsonl row {i + 1}: expected {'conversational' if CHAT else 'plain text'} data")
            rendered = maybe_apply_chat_template(row, tok)
            if not isinstance(rendered.get("prompt", ""), str):
                sys.exit(f"{split}.jsonl row {i + 1}: TRL could not render the prompt")
    sizes = ", ".join(f"{len(ds[s])} {s}" for s in ds)
    print(f"data: {sizes} rows, {'conversational' if CHAT else 'plain text'}; TRL's data utilities read every row")


def alignlab_ids(ds, tok):
    """Token ids as alignlab encoded them, for the methods whose numbers depend on where a
    sequence ends (TRL's chat-template path adds the template's text after the end-of-turn
    token): the prompt (through the chat template with the assistant's turn opened, or BOS +
    text) cut to its last max_prompt_length tokens, then the answer cut to
    max_completion_length - 1 tokens and the end-of-turn token. The reward model reads its score
    at that token; SFT's loss covers the answer and that token."""
    p_max, c_max = ENCODING["max_prompt_length"], ENCODING["max_completion_length"]

    def prompt_ids(prompt):
        if CHAT:
            text = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
            ids = tok(text, add_special_tokens=False).input_ids
        else:
            ids = tok(prompt).input_ids
        return ids[-p_max:]

    def answer_ids(a):
        text = a[-1]["content"] if CHAT else a
        return tok(text, add_special_tokens=False).input_ids[: c_max - 1] + [tok.eos_token_id]

    def pair(row):
        p = prompt_ids(row["prompt"])
        return {"chosen_ids": p + answer_ids(row["chosen"]), "rejected_ids": p + answer_ids(row["rejected"])}

    def demo(row):
        p, a = prompt_ids(row["prompt"]), answer_ids(row["completion"])
        return {"input_ids": p + a, "completion_mask": [0] * len(p) + [1] * len(a)}

    columns = ["prompt", "chosen", "rejected"] if METHOD == "reward" else ["prompt", "completion"]
    return ds.map(pair if METHOD == "reward" else demo, remove_columns=columns)


def pad_apart_from_eos(tok):
    """A padding id other than the end-of-turn token (BOS, else UNK, else id 0)."""
    for t in (tok.bos_token, tok.unk_token):
        if t is not None and t != tok.eos_token:
            return t
    return tok.convert_ids_to_tokens(0)


# ---- The judges, as alignlab scores them (src/judges/mod.rs), for RLHF with judges. ----

def words(text):
    return "".join(c if (c.isalnum() or c == "'") else " " for c in text).lower().split()


class Judges:
    def __init__(self, items):
        self.items = items
        kinds = {spec["kind"] for spec, _ in items}
        self.vader = None
        self.profane = set()
        if "sentiment" in kinds:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
            self.vader = SentimentIntensityAnalyzer()
        if "profanity" in kinds:
            from importlib.resources import files
            wordlist = files("better_profanity").joinpath("profanity_wordlist.txt").read_text()
            self.profane = {w.strip().lower() for w in wordlist.splitlines() if w.strip()}

    def score_one(self, spec, text):
        lower, ws = text.lower(), words(text)
        kind = spec["kind"]
        if kind == "sentiment":
            return self.vader.polarity_scores(text)["compound"]
        if kind == "politeness":
            return min(sum(p in lower for p in POLITE) / 2.0, 1.0)
        if kind == "profanity":
            return -min(float(sum(w in self.profane for w in ws)), 1.0)
        if kind == "length":
            t = float(max(spec["target_words"], 1))
            return 1.0 - 2.0 * min(abs(len(ws) - t) / t, 1.0)
        if kind == "keywords":
            def frac(ks):
                return sum(k in lower for k in ks) / len(ks) if ks else 0.0
            return frac(spec.get("include", [])) - frac(spec.get("avoid", []))
        sys.exit(f"unknown judge {kind}")

    def score(self, text):
        return sum(w * self.score_one(spec, text) for spec, w in self.items)

    def check(self):
        """The scores alignlab wrote beside these texts must come out the same here."""
        worst = 0.0
        for line in (HERE / "judges_check.jsonl").read_text().splitlines():
            row = json.loads(line)
            ours = [self.score_one(spec, row["text"]) for spec, _ in self.items]
            worst = max([worst] + [abs(a - b) for a, b in zip(ours, row["scores"])])
        if worst > 1e-4:
            sys.exit(f"the Python judges differ from alignlab's by {worst:.3g}: check the package versions in README.md")
        print(f"judges: agree with alignlab's scores (max |difference| {worst:.2g})")

    def reward(self, completions, **kwargs):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [self.score(t) for t in texts]


def base_as_reference(trainer):
    """alignlab's reference is the base model (adapters off). TRL, given a model with a trained
    adapter, makes its reference a frozen copy of that adapter (named "ref"); dropping the copy
    makes TRL fall back to the adapters-off base, so the run continues against the same reference."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")
        model.set_adapter("default")
        print("reference: the base model (adapters off), as in alignlab")


def main():
    args = parse_args()
    import trl
    config_args = dict(ARGS)
    if args.max_steps is not None:
        config_args["max_steps"] = args.max_steps
    tok = load_tokenizer(args.model)
    ds = load_data()
    check_data(ds, tok)
    reward_funcs = None
    if METHOD == "rl" and isinstance(REWARD, list):
        judges = Judges(REWARD)
        judges.check()
        reward_funcs = [judges.reward]
    if "eval" in ds:
        config_args.update(eval_strategy="steps", eval_steps=EVAL_STEPS)
    # TRL's configs default to bf16, which the CPU cannot train in: use it where the GPU has it.
    config_args.setdefault("bf16", device_dtype() != "float32")
    config = getattr(trl, CONFIG)(output_dir=args.output_dir, report_to="none", logging_steps=1, **config_args)
    print(f"config: {CONFIG} with the run's settings: " + ", ".join(f"{k}={v}" for k, v in ARGS.items()))
    if args.check_only:
        return

    from peft import LoraConfig, PeftModel
    seq_cls = METHOD == "reward"
    if seq_cls:
        # TRL reads the score at the last token that is not padding: keep padding apart from it.
        tok.pad_token = pad_apart_from_eos(tok)
    if METHOD in ("reward", "sft"):
        ds = alignlab_ids(ds, tok)
    model = load_model(args.model, seq_cls=seq_cls, pad_token_id=tok.pad_token_id)
    peft_config = None
    if (HERE / "adapter").exists() and not args.fresh:
        model = PeftModel.from_pretrained(model, str(HERE / "adapter"), is_trainable=True)
        print("continuing from ./adapter")
    elif LORA is not None:
        peft_config = LoraConfig(task_type="SEQ_CLS" if seq_cls else "CAUSAL_LM", **LORA)

    kwargs = dict(model=model, args=config, train_dataset=ds["train"], processing_class=tok, peft_config=peft_config)
    if "eval" in ds:
        kwargs["eval_dataset"] = ds["eval"]
    if METHOD == "rl":
        if REWARD == "reward_model":
            rm = load_model(args.model, seq_cls=True, pad_token_id=tok.pad_token_id)
            reward_funcs = [PeftModel.from_pretrained(rm, str(HERE / "reward_model")).merge_and_unload()]
            kwargs["reward_processing_classes"] = [tok]
        kwargs["reward_funcs"] = reward_funcs
        trainer_name = CONFIG.replace("Config", "Trainer")
    else:
        trainer_name = {"dpo": "DPOTrainer", "kto": "KTOTrainer", "reward": "RewardTrainer", "sft": "SFTTrainer"}[METHOD]
    trainer = getattr(trl, trainer_name)(**kwargs)
    base_as_reference(trainer)
    if "eval" in ds:
        # Where the hand-off starts: the held-out metrics alignlab logged last, computed by TRL.
        print(json.dumps({"eval_before": trainer.evaluate()}))
    trainer.train()
    trainer.save_model(args.output_dir)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    print(json.dumps({"steps": trainer.state.global_step, "first": logs[0] if logs else None, "last": logs[-1] if logs else None}))
    print(f"saved to {args.output_dir}: load it back into alignlab with --adapter {args.output_dir}")


if __name__ == "__main__":
    main()
