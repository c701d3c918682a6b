"""Is bf16 worth it on this CPU? Times one SmolLM2-sized matmul (2720 tokens x 576 x 1536) in fp32 and bf16.

python bench/experiments/matmul_dtype.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch


def gflops(dtype: torch.dtype, repeats: int = 10) -> float:
    a = torch.randn(2720, 576).to(dtype)
    w = torch.randn(576, 1536).to(dtype)
    for _ in range(2):
        a @ w
    start = time.perf_counter()
    for _ in range(repeats):
        a @ w
    seconds = (time.perf_counter() - start) / repeats
    return 2 * 2720 * 576 * 1536 / seconds / 1e9


def main() -> None:
    flags = Path("/proc/cpuinfo").read_text()
    print(
        json.dumps(
            {
                "threads": torch.get_num_threads(),
                "avx512_bf16": "avx512_bf16" in flags,
                "amx_bf16": "amx_bf16" in flags,
                "fp32_gflops": round(gflops(torch.float32), 1),
                "bf16_gflops": round(gflops(torch.bfloat16, repeats=2), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
