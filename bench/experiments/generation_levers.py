"""Generation levers on the server policy, side by side in one process: what a GRPO step's sampling costs.

The default step samples 16 completions (2 questions x G=8) of up to 40 tokens from SmolLM2-135M with a
LoRA adapter on every linear layer. This times that one ``generate`` call under each lever that
transformers and PEFT already offer, on the same prompts and seed, and prints seconds per call (median
of ``--repeats``), new tokens, and the compute floor (2 x parameters x tokens processed, divided by the
machine's measured fp32 matmul rate):

    python bench/experiments/generation_levers.py --repeats 3

Levers: the LoRA adapter merged into the base weights for the call (PEFT's ``merge_adapter``,
undone after, up to float rounding), a static KV cache, each distinct prompt prefilled once with its
KV cache shared by its G rows plus the merge (:mod:`fedgrpo.accel.generation`, what runs use), and the bare
base model without any adapter (the floor of what merging alone can reach).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import GenerationConfig

from fedgrpo.accel.generation import fast_generate
from fedgrpo.method.prompting import build_messages
from fedgrpo.models.loading import load_policy, load_tokenizer

QUESTIONS = ["What is 37 + 48?", "What is 6 * 7?"]


def matmul_rate(threads: int) -> float:
    """Measured fp32 GFLOP/s of one SmolLM2-sized matmul (576 x 1536 by 1536 x 576, batch 256)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(256 * 16, 576), torch.randn(576, 1536)
    for _ in range(3):
        a @ b
    start, n = time.perf_counter(), 20
    for _ in range(n):
        a @ b
    return 2 * a.shape[0] * 576 * 1536 * n / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tok = load_tokenizer(args.model)
    tok.padding_side = "left"
    base = load_policy(args.model)
    params = sum(p.numel() for p in base.parameters())
    model = get_peft_model(
        base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    prompts = [
        tok.apply_chat_template(build_messages(q), tokenize=False, add_generation_prompt=True)
        for q in QUESTIONS
        for _ in range(args.generations)
    ]
    batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    prompt_len = batch["input_ids"].shape[1]
    # Always generate the full length, so every lever does the same work.
    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.max_new_tokens,
        do_sample=True,
        temperature=0.7,
        top_k=0,
        top_p=1.0,
        pad_token_id=tok.pad_token_id,
    )

    def run(m, fast: bool = False, **extra) -> float:  # noqa: ANN001
        times = []
        for r in range(args.repeats + 1):
            torch.manual_seed(r)
            start = time.perf_counter()
            with torch.no_grad():
                if fast:
                    fast_generate(m.generate, m, **batch, generation_config=config)
                else:
                    m.generate(**batch, generation_config=config, **extra)
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:])  # the first call warms up

    rows: list[tuple[str, float]] = []
    model.train()  # as inside TRL's training step
    rows.append(("LoRA unmerged, train mode (TRL as is)", run(model)))
    model.eval()
    rows.append(("LoRA unmerged, eval mode", run(model)))
    model.merge_adapter()
    rows.append(("LoRA merged for the call", run(model)))
    rows.append(("LoRA merged + static cache", run(model, cache_implementation="static")))
    model.unmerge_adapter()
    rows.append(
        (
            "each distinct prompt prefilled once + LoRA merged (fedgrpo.accel.generation)",
            run(model, fast=True),
        )
    )
    with model.disable_adapter():
        rows.append(("base model, no adapter", run(model)))

    rate = matmul_rate(args.threads)
    n = len(prompts)
    tokens = n * (prompt_len + args.max_new_tokens)
    floor = 2 * params * tokens / (rate * 1e9)
    print(f"{n} sequences, prompt {prompt_len} tokens (padded), {args.max_new_tokens} new tokens each")
    print(
        f"matmul rate {rate:.0f} GFLOP/s; compute floor {floor:.2f} s "
        f"(2 x {params / 1e6:.0f}M x {tokens} tokens)"
    )
    print("| lever | s per generate | x floor |")
    print("|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {seconds / floor:.1f} |")


if __name__ == "__main__":
    main()
