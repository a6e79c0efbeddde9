#!/usr/bin/env python3
"""Adapters cross between alignlab and Hugging Face PEFT, both ways, on SmolLM2-135M-Instruct.

Run by scripts/interop-peft (which builds alignlab, trains the alignlab adapter and calls this):

    .venv-ref/bin/python scripts/interop_peft.py WORKDIR

WORKDIR holds `alignlab-adapter/` (trained by `alignlab sft`) and the per-token log-probs alignlab
computed with it (`alignlab.json`). This script
  1. loads that adapter with `PeftModel.from_pretrained` on the same base (the GGUF, dequantized by
     transformers) and computes the same per-token log-probs of the same token ids;
  2. makes a PEFT adapter with non-zero B (`init_lora_weights=False`, seeded), saves it to
     `peft-adapter/`, and writes PEFT's log-probs to `peft.json` for alignlab to compare against.
It prints one JSON line with the largest per-token difference of step 1.
"""
import json
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
import torch  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR, MODEL_FILE = ROOT / "models", "SmolLM2-135M-Instruct.Q4_1.gguf"


def base_model():
    m = AutoModelForCausalLM.from_pretrained(str(MODEL_DIR), gguf_file=MODEL_FILE, dtype=torch.float32, attn_implementation="eager")
    return m.eval()


@torch.no_grad()
def completion_logps(model, prompt_ids, completion_ids):
    """log p(completion_t | prompt, completion_<t) for every completion token."""
    ids = prompt_ids + completion_ids
    logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()
    logps = torch.log_softmax(logits, dim=-1)
    start = len(prompt_ids)
    return [logps[t - 1, ids[t]].item() for t in range(start, len(ids))]


def main() -> int:
    work = Path(sys.argv[1])
    torch.manual_seed(0)
    ours = json.loads((work / "alignlab.json").read_text())
    prompt, completion = ours["prompt_tokens"], ours["completion_tokens"]

    peft_model = PeftModel.from_pretrained(base_model(), str(work / "alignlab-adapter")).eval()
    theirs = completion_logps(peft_model, prompt, completion)
    with peft_model.disable_adapter():
        base = completion_logps(peft_model, prompt, completion)
    diff = max(abs(a - b) for a, b in zip(ours["logprobs"], theirs))
    shift = max(abs(a - b) for a, b in zip(theirs, base))

    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
    made = get_peft_model(base_model(), cfg).eval()
    with torch.no_grad():
        for name, p in made.named_parameters():
            if "lora_" in name:
                p.mul_(0.1)  # a realistic size: the answer changes, it does not turn to noise
    made.save_pretrained(str(work / "peft-adapter"))
    made_logps = completion_logps(made, prompt, completion)
    (work / "peft.json").write_text(json.dumps({"prompt_tokens": prompt, "completion_tokens": completion, "logprobs": made_logps}))
    b_norm = max(p.abs().max().item() for n, p in made.named_parameters() if "lora_B" in n)
    print(json.dumps({
        "tokens": len(completion),
        "alignlab_adapter_in_peft_max_abs_diff": diff,
        "adapter_shift_max_abs": shift,
        "peft_adapter_max_abs_B": b_norm,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
