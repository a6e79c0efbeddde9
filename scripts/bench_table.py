#!/usr/bin/env python3
"""Prints scripts/bench-compare's bench.jsonl as a table: each alignlab row beside its reference,
the ratio, and issue 11's target for it.

    python3 scripts/bench_table.py runs/bench/bench.jsonl

Ratios are alignlab's over the reference's: tokens/s for decoding (higher is better, target at
least 1.0), seconds a step for DPO (lower is better). Each side's figure is its best of the
repeats, as each benchmark reports it; the medians follow in brackets.
"""

import json
import sys


def rows(path):
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"bench_table: cannot read {path} ({e}); give the bench.jsonl scripts/bench-compare wrote")


def one(candidates, what):
    if not candidates:
        sys.exit(f"bench_table: no {what} row in the file; did scripts/bench-compare finish?")
    return candidates[-1]


def line(label, ours, theirs, ratio, target, met):
    verdict = "met" if met else "NOT met"
    print(f"{label:<36} {ours:<34} {theirs:<40} {ratio:>6.2f}x  {target} ({verdict})")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    data = rows(sys.argv[1])
    ours = [r for r in data if "what" in r]
    llama = one([r for r in data if r.get("engine") == "llama-cpp-python"], "llama-cpp-python")
    torch = [r for r in data if r.get("engine") == "pytorch+peft"]
    same_ref = one([r for r in torch if r.get("logits_to_keep", 0) > 0], "PyTorch same-work")
    trl_ref = one([r for r in torch if r.get("logits_to_keep", 0) == 0], "TRL-defaults")

    print(f"{'':<36} {'alignlab':<34} {'reference':<40} {'ratio':>7}  target")
    for r in ours:
        backend = r["backend"]
        if r["what"] == "generate":
            ratio = r["tokens_per_s"] / llama["end_to_end_tokens_per_s"]
            line(
                f"greedy decode, {backend}",
                f"{r['tokens_per_s']:.1f} tokens/s",
                f"llama-cpp-python {llama['end_to_end_tokens_per_s']:.1f} tokens/s",
                ratio,
                ">= 1.0",
                ratio >= 1.0,
            )
        elif r["what"] == "dpo":
            same_work = not r["precompute_ref_log_probs"] and not r["share_prompt"]
            ref = same_ref if same_work else trl_ref
            ratio = r["seconds"] / ref["seconds_per_step"]
            bound = 1.0 if same_work else 0.5
            line(
                f"DPO step, {'the same work' if same_work else 'each side' + chr(39) + 's defaults'}, {backend}",
                f"{r['seconds']:.2f} s ({r['seconds_median']:.2f})",
                f"{'PyTorch+PEFT' if same_work else 'TRL defaults'} {ref['seconds_per_step']:.2f} s "
                f"({ref['seconds_per_step_median']:.2f})",
                ratio,
                f"<= {bound}",
                ratio <= bound,
            )
        elif r["what"] == "load":
            print(f"{'model load, ' + backend:<36} {r['seconds']:.2f} s")
    for name, ref in (("llama-cpp-python", llama), ("PyTorch (same work)", same_ref), ("PyTorch (TRL defaults)", trl_ref)):
        if ref.get("other_cpu_cores", 0) > 0.1:
            print(f"note: other processes took {ref['other_cpu_cores']:.2f} cores during {name}'s run")


if __name__ == "__main__":
    main()
