"""One decode step's matmuls (SmolLM2's 30 layers x 7 shapes, no LM head) by layout: torch's
``F.linear``, ``W @ x.T``, MKL's packed weights (``torch.ops.mkl._mkl_linear``, what inductor uses
for fp32 linears on a CPU, with the packing time) and oneDNN's prepacked ``MkldnnLinear``:

    python bench/experiments/packed_linear.py --threads 1 --rows 3 16 96
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
import torch.utils.mkldnn as mkldnn

SHAPES = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, nargs="+", default=[3, 16, 96])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights = [torch.randn(o, i) for _ in range(30) for (o, i) in SHAPES]
    layers = []
    for w in weights:
        layer = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        layer.weight.data = w
        layers.append(mkldnn.MkldnnLinear(layer, torch.float32))
    for rows in args.rows:
        xs = {i: torch.randn(rows, i) for i in (576, 1536)}
        start = time.perf_counter()
        packed = [torch.ops.mkl._mkl_reorder_linear_weight(w, rows) for w in weights]
        pack_ms = (time.perf_counter() - start) * 1e3

        def run(kind: str, xs: dict = xs, packed: list = packed, rows: int = rows) -> float:
            start = time.perf_counter()
            for _ in range(3):
                for j, w in enumerate(weights):
                    x = xs[w.shape[1]]
                    if kind == "F.linear":
                        F.linear(x, w)
                    elif kind == "W @ x.T":
                        torch.mm(w, x.T)
                    elif kind == "mkl packed":
                        torch.ops.mkl._mkl_linear(x, packed[j], w, None, rows)
                    else:
                        layers[j](x)
            return (time.perf_counter() - start) / 3 * 1e3

        kinds = ["F.linear", "W @ x.T", "mkl packed", "mkldnn"]
        for _ in range(2):  # the second pass is the one printed
            times = {k: run(k) for k in kinds}
        cells = " ".join(f"{k} {v:.1f} ms" for k, v in times.items())
        print(f"rows {rows}: packing {pack_ms:.0f} ms; {cells}")


if __name__ == "__main__":
    main()
