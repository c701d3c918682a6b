"""Weight formats for a client model, against fp32: speed of a prompt read and a decode step, and
whether the expert still gives the same replies.

For each default expert (``--clients``), its adapter merged into a copy of the base, then held as:
fp32 (the few-row forward), fp16 (``clients.weights: fp16``), fbgemm's dynamic int8 per tensor and per
channel (``torch.ao.quantization.quantize_dynamic``), and torchao's int8 weight-only and dynamic
int8 configs when torchao can be imported (it is not a dependency). Prints, for the first expert, the
milliseconds of a 30-token prompt read and of a 3-row decode step (a copy of the cache included), and
for each expert how many greedy direct replies to the auxiliary set match fp32's and how many are
correct:

    python bench/experiments/client_weight_formats.py --clients 2
"""

from __future__ import annotations

import copy
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parents[1]))  # bench/, for the maintained benches it reuses
from client_scoring import _evaluators, experts_parser, parse_and_build  # noqa: E402
from client_weights import _replies  # noqa: E402

from fedgrpo.accel.few_rows import activate, few_row_linears  # noqa: E402
from fedgrpo.accel.fp16_weights import pack_fp16_weights  # noqa: E402
from fedgrpo.client.agreement import ScoringSettings  # noqa: E402
from fedgrpo.client.model_scoring import ModelEvaluator  # noqa: E402
from fedgrpo.config import load_config  # noqa: E402
from fedgrpo.method.answers import is_correct  # noqa: E402


def _int8(qconfig: Any) -> Callable[[Any], Any]:
    def convert(model: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's deprecation
            return torch.ao.quantization.quantize_dynamic(
                model, {torch.nn.Linear: qconfig}, dtype=torch.qint8
            )

    return convert


def _torchao(name: str) -> Callable[[Any], Any] | None:
    try:
        from torchao import quantization
    except ImportError:
        return None

    def convert(model: Any) -> Any:
        quantization.quantize_(model, getattr(quantization, name)())
        return model

    return convert


def _fp16(model: Any) -> Any:
    pack_fp16_weights(model)
    return model


FORMATS: dict[str, Callable[[Any], Any] | None] = {
    "fp32": lambda model: model,
    "fp16 (clients.weights)": _fp16,
    "int8 per tensor": _int8(torch.ao.quantization.default_dynamic_qconfig),
    "int8 per channel": _int8(torch.ao.quantization.per_channel_dynamic_qconfig),
    "torchao int8 weight-only": _torchao("Int8WeightOnlyConfig"),
    "torchao int8 dynamic": _torchao("Int8DynamicActivationInt8WeightConfig"),
}


def _timed_ms(fn: Callable[[], Any], repeats: int = 10) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def _speed(model: Any) -> tuple[float, float]:
    ids = torch.randint(100, 20000, (1, 30))
    with torch.no_grad(), few_row_linears(model):
        read = _timed_ms(lambda: model(input_ids=ids, use_cache=True, logits_to_keep=1))
        cache = model(input_ids=ids, use_cache=True, logits_to_keep=1).past_key_values
        cache.batch_repeat_interleave(3)
        step = torch.tensor([[5], [6], [7]])
        decode = _timed_ms(
            lambda: model(input_ids=step, past_key_values=copy.deepcopy(cache), use_cache=True)
        )
    return read, decode


def main() -> None:
    parser = experts_parser(__doc__, clients=2)
    args, cfg, split = parse_and_build(parser)
    experts = _evaluators(load_config(args.config, ["clients.weights=fp32"]), split)[: args.clients]
    auxiliary = list(split.auxiliary)
    questions = [ex.question for ex in auxiliary]
    print(f"{len(questions)} auxiliary questions, greedy direct replies")
    print("| format | prompt read ms | decode step ms | same replies as fp32 | correct |")
    print("|---|---|---|---|---|")
    rows: dict[str, list[Any]] = {name: [None, None, 0, 0] for name in FORMATS}
    for i, expert in enumerate(experts):
        activate(expert.model, expert.adapter)
        expert.model.merge_adapter()
        merged = copy.deepcopy(expert.model.get_base_model())
        expert.model.unmerge_adapter()
        reference: list[str] | None = None
        for name, convert in FORMATS.items():
            if convert is None:
                continue
            model = convert(copy.deepcopy(merged)).eval()
            if i == 0:
                rows[name][:2] = _speed(model)
            scorer = ModelEvaluator(
                model,
                expert.tokenizer,
                ScoringSettings(
                    samples=1,
                    max_new_tokens=cfg.clients.max_new_tokens,
                    direct_answer=cfg.clients.direct_answer,
                    cache_size=0,
                ),
            )
            replies = _replies(scorer, questions, 1)[0]  # greedy, in competence chunks
            reference = replies if reference is None else reference
            rows[name][2] += sum(a == b for a, b in zip(replies, reference, strict=True))
            rows[name][3] += sum(is_correct(ex, r) for ex, r in zip(auxiliary, replies, strict=True))
    total = len(questions) * len(experts)
    for name, (read, decode, same, right) in rows.items():
        if read is None:
            print(f"| {name} | not installed | | | |")
            continue
        print(f"| {name} | {read:.1f} | {decode:.1f} | {same} / {total} | {right} |")


if __name__ == "__main__":
    main()
