"""A decode step's matmuls on the CPU: torch's ``linear`` (``x @ W.T``) against ``W @ x.T``, by row count.

A decode step of SmolLM2-135M multiplies a few rows (one per sequence) by every weight matrix once:
all weight reads, no reuse. This times, in one process and alternating,

* the weights of one decode step alone (30 layers' seven matrices, all distinct so nothing stays in
  cache, and the 49,152-wide LM head), as ``F.linear`` and as ``W @ x.T``, with the weight bytes
  divided by the time (GB/s), against a plain read of the same bytes (``sum``);
* a whole decode step of the real model (a 60-token cache), with
:func:`fedgrpo.accel.few_rows.few_row_linears`
  off and on, at each row count; above ``FEW_ROWS`` the lever leaves ``F.linear`` in place, so those
  rows time the threshold's other side.

Prints milliseconds per step (median of ``--repeats``) and the ratio:

    python bench/experiments/decode_matmul.py --rows 1 3 8 16 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from fedgrpo.accel import few_rows
from fedgrpo.accel.compat import cache_argument, output_cache
from fedgrpo.models.loading import load_policy, smollm2_folder


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def weights_alone(model: torch.nn.Module, rows: int, repeats: int) -> dict[str, float]:
    """One decode step's matmuls on copies of the model's own weight shapes (ms, and read rate)."""
    weights = [m.weight.detach().clone() for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = {w.shape[1]: torch.randn(rows, w.shape[1]) for w in weights}
    total = sum(w.numel() * w.element_size() for w in weights)

    def linear() -> None:
        for w in weights:
            F.linear(inputs[w.shape[1]], w)

    def transposed() -> None:
        for w in weights:
            torch.mm(w, inputs[w.shape[1]].T)

    def read() -> None:
        for w in weights:
            w.sum()

    out = {}
    for name, fn in (("F.linear", linear), ("W @ x.T", transposed), ("read (sum)", read)):
        ms = _median_ms(fn, repeats)
        out[name] = ms
        out[f"{name} GB/s"] = total / ms / 1e6
    return out


def decode_step(model: torch.nn.Module, rows: int, repeats: int, lever: bool) -> float:
    """ms per decode step of the real model, ``rows`` sequences after a 60-token prompt."""
    prompt = torch.randint(0, 1000, (rows, 60))
    token = torch.randint(0, 1000, (rows, 1))
    with torch.no_grad():
        cache = output_cache(model(input_ids=prompt, use_cache=True))

        def step() -> None:
            model(input_ids=token, use_cache=True, **{cache_argument(model.forward): cache})
            cache.crop(-1)  # every timed step reads the same 60-token cache

        if not lever:
            return _median_ms(step, repeats)
        with few_rows.few_row_linears(model):
            return _median_ms(step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 3, 8, 16])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_policy(str(smollm2_folder())).eval()
    print(f"torch threads: {torch.get_num_threads()}; FEW_ROWS = {few_rows.FEW_ROWS}")
    print(
        "| rows | weights: F.linear ms (GB/s) | W @ x.T ms (GB/s) | read ms (GB/s) "
        "| decode step: plain ms | few_row_linears ms | x |"
    )
    print("|---|---|---|---|---|---|---|")
    for rows in args.rows:
        alone = weights_alone(model, rows, args.repeats)
        plain = decode_step(model, rows, args.repeats, lever=False)
        fast = decode_step(model, rows, args.repeats, lever=True)
        cells = [f"{alone[k]:.1f} ({alone[k + ' GB/s']:.0f})" for k in ("F.linear", "W @ x.T", "read (sum)")]
        print(f"| {rows} | " + " | ".join(cells) + f" | {plain:.1f} | {fast:.1f} | {plain / fast:.2f} |")


if __name__ == "__main__":
    main()
