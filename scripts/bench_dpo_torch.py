#!/usr/bin/env python3
"""Comparison benchmark: seconds per LoRA DPO training step in PyTorch + PEFT (CPU, or a GPU).

Run from the repository root, after `scripts/setup` (model) and `scripts/setup-bench` (peft in .venv-ref):

    .venv-ref/bin/python scripts/bench_dpo_torch.py [--threads 2] [--steps 5]
    python3 scripts/bench_dpo_torch.py --model DIR --device cuda    # an HF directory, on a GPU

The model is models/SmolLM2-135M-Instruct.Q4_1.gguf loaded by transformers' GGUF loader (every
tensor dequantized to float32, as scripts/reference.py does), on the CPU with torch.set_num_threads(2),
wrapped with PEFT LoRA r=8, alpha=16, target_modules q_proj and v_proj, dropout 0 (about 0.46M
trainable parameters). TRL is not used; its DPO math is written out here, mirroring
DPOTrainer.concatenated_forward / dpo_loss (loss_type "sigmoid", label_smoothing 0) and HF Trainer's
defaults (AdamW with weight_decay 0, global grad-norm clipping at 1.0):

  one step, for a batch of 4 preference pairs of random token ids (fixed seed), each a 64-token
  prompt with a 64-token chosen and a 64-token rejected completion (128 tokens a sequence):
  - policy forward on the concatenated batch [chosen; rejected] (8 x 128, no padding);
  - reference forward of the same batch with the adapters disabled (`model.disable_adapter()`),
    under torch.no_grad();
  - per-token log-probabilities of the next token (TRL's selective_log_softmax: gather minus
    logsumexp), summed over the completion tokens only;
  - loss = mean(-logsigmoid(beta * ((pi_c - pi_r) - (ref_c - ref_r)))), beta 0.1;
  - backward, clip_grad_norm_(1.0), AdamW step (lr 5e-5), zero_grad.
This is what `alignlab dpo` does per micro-batch (src/align/dpo.rs), so the two compare directly.

It runs one warm-up step and then --steps timed steps, and prints one JSON line: seconds_per_step
is the best step, seconds_per_step_median the median. The first step's loss must be ln 2 = 0.6931
(LoRA's B starts at zero, so policy == reference); it is checked and reported.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5 deprecations seen through peft

import peft  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
from bench_load import OtherLoad  # noqa: E402  (this folder is on sys.path when a script runs)

MODEL_DIR = ROOT / "models"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def selective_log_softmax(logits, index):
    """TRL's trl.trainer.utils.selective_log_softmax for float32: log_softmax(logits)[index]
    without materialising the full log-softmax (logsumexp row by row to bound peak memory)."""
    selected = torch.gather(logits, dim=-1, index=index.unsqueeze(-1)).squeeze(-1)
    lse = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])
    return selected - lse


def sequence_logps(model, input_ids, attention_mask, completion_mask, keep=0):
    """Summed log-probabilities of the completion tokens, one per sequence (TRL's
    concatenated_forward: shift by one, mask the prompt out, sum). keep > 0: the head runs on the
    last `keep` positions only (TRL's use_logits_to_keep; keep = completion length + 1)."""
    if keep:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep).logits
        input_ids, completion_mask = input_ids[:, -keep:], completion_mask[:, -keep:]
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    labels = input_ids[:, 1:]
    logits = logits[:, :-1, :]
    loss_mask = completion_mask[:, 1:].bool()
    labels = labels.masked_fill(~loss_mask, 0)
    per_token = selective_log_softmax(logits, labels)
    per_token = per_token.masked_fill(~loss_mask, 0.0)
    return per_token.sum(-1)


def dpo_loss(pc, pr, rc, rr, beta):
    """TRL's DPOTrainer.dpo_loss, loss_type='sigmoid', label_smoothing=0."""
    logits = (pc - pr) - (rc - rr)
    losses = -F.logsigmoid(beta * logits)
    chosen_rewards = beta * (pc - rc).detach()
    rejected_rewards = beta * (pr - rr).detach()
    return losses.mean(), chosen_rewards, rejected_rewards


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (on the CPU only)")
    ap.add_argument("--model", type=Path, default=MODEL_DIR / MODEL_FILE,
                    help="a .gguf file (dequantized to float32) or an HF directory")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--completion-len", type=int, default=64)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"],
                    help="transformers attention implementation (sdpa: PyTorch's fused kernel, the default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--logits-to-keep", action="store_true",
                    help="the head on completion positions only (TRL's use_logits_to_keep; alignlab's default)")
    args = ap.parse_args()

    dev = torch.device(args.device)
    if dev.type == "cpu":
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    beta, lr, max_grad_norm = 0.1, 5e-5, 1.0

    t = time.perf_counter()
    folder, gguf = (args.model, None) if args.model.is_dir() else (args.model.parent, args.model.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(folder), gguf_file=gguf, dtype=torch.float32, attn_implementation=args.attn
    ).to(dev)
    model.config.use_cache = False
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                      bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.train()
    load_s = time.perf_counter() - t
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())

    # Random preference pairs (fixed seed). Ids avoid the low special/byte range; no padding.
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(args.seed)
    P, C, B = args.prompt_len, args.completion_len, args.pairs
    prompt = torch.randint(100, vocab, (B, P), generator=g)
    chosen = torch.randint(100, vocab, (B, C), generator=g)
    rejected = torch.randint(100, vocab, (B, C), generator=g)
    input_ids = torch.cat([torch.cat([prompt, chosen], 1), torch.cat([prompt, rejected], 1)], 0).to(dev)  # [2B, P+C]
    attention_mask = torch.ones_like(input_ids)
    completion_mask = torch.cat([torch.zeros(2 * B, P, dtype=torch.long), torch.ones(2 * B, C, dtype=torch.long)], 1).to(dev)

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)

    keep = C + 1 if args.logits_to_keep else 0

    def step():
        with torch.no_grad(), model.disable_adapter():
            ref = sequence_logps(model, input_ids, attention_mask, completion_mask, keep)
        pol = sequence_logps(model, input_ids, attention_mask, completion_mask, keep)
        loss, cr, rr = dpo_loss(pol[:B], pol[B:], ref[:B], ref[B:], beta)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item(), (cr > rr).float().mean().item()

    times, losses, other = [], [], []
    for i in range(args.steps + 1):  # step 0 is the warm-up
        with OtherLoad() as load:
            t = time.perf_counter()
            loss, acc = step()
            dt = time.perf_counter() - t
        losses.append(loss)
        if i > 0:
            times.append(dt)
            other.append(load.cores)
        busy = "" if load.cores is None else f", other processes {load.cores:.2f} cores"
        print(f"bench_dpo_torch: step {i}{' (warm-up)' if i == 0 else ''}: {dt:.3f} s, loss {loss:.6f}, "
              f"reward accuracy {acc:.2f}{busy}", file=sys.stderr)
    other_max = None if None in other else round(max(other), 2)
    idle = [t for t, o in zip(times, other) if o is not None and o < 0.2]
    if other_max is not None and other_max > 0.2:
        print(f"bench_dpo_torch: warning: other processes kept up to {other_max} cores busy during a step; "
              "the times are not comparable (run on an idle machine)", file=sys.stderr)
    first_loss_ok = abs(losses[0] - math.log(2)) < 1e-4
    if not first_loss_ok:
        print(f"bench_dpo_torch: warning: first loss {losses[0]} is not ln 2", file=sys.stderr)

    row = {
        "engine": "pytorch+peft",
        "torch": torch.__version__,
        "peft": peft.__version__,
        "transformers": transformers.__version__,
        "logits_to_keep": keep,
        "threads": args.threads if dev.type == "cpu" else None,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU",
        "pairs": B,
        "seq_len": P + C,
        "prompt_len": P,
        "completion_len": C,
        "lora_r": 8,
        "lora_alpha": 16,
        "target_modules": ["q_proj", "v_proj"],
        "trainable_params": trainable,
        "total_params": total,
        "attn_implementation": args.attn,
        "dtype": "float32",
        "steps": args.steps,
        "seconds_per_step": round(min(times), 4),
        "seconds_per_step_median": round(statistics.median(times), 4),
        "step_times": [round(x, 4) for x in times],
        "first_loss": round(losses[0], 6),
        "first_loss_is_ln2": first_loss_ok,
        "last_loss": round(losses[-1], 6),
        "load_s": round(load_s, 2),
        "other_cpu_cores": other_max,
        # Steps during which other processes used under 0.2 cores, and their median.
        "idle_steps": len(idle),
        "seconds_per_step_median_idle": round(statistics.median(idle), 4) if idle else None,
        "other_cpu_cores_per_step": [None if x is None else round(x, 2) for x in other],
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
