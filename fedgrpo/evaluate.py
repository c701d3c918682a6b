"""Held-out evaluation of the server policy: greedy exact accuracy per domain with a 95% interval.

Every accuracy is reported next to the domain's majority-answer rate, because a policy that learns
to always say "Yes" looks good on a domain where "Yes" is usually right.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fedgrpo.answers import extract_answer
from fedgrpo.data import Example, majority_answer_rate, score_answer
from fedgrpo.models import inference
from fedgrpo.prompting import build_messages


@dataclass(frozen=True)
class DomainAccuracy:
    domain: str
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    format_rate: float
    majority_rate: float


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion; sound at 0 and n, unlike the normal one."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def generate_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: list[str],
    max_new_tokens: int,
    batch_size: int,
    worked_example: bool = True,
    desc: str = "eval",
    temperature: float = 0.0,
) -> list[str]:
    """Completions for a list of questions, batched with left padding: greedy unless a temperature
    is given (then sampled; seed torch first for repeatable samples)."""
    out: list[str] = []
    with inference(model, tokenizer, padding_side="left"):
        for start in tqdm(range(0, len(questions), batch_size), desc=desc, leave=False):
            prompts = [
                tokenizer.apply_chat_template(
                    build_messages(q, worked_example), add_generation_prompt=True, tokenize=False
                )
                for q in questions[start : start + batch_size]
            ]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(
                model.device
            )
            sampling = (
                {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
            )
            gen = model.generate(
                **enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling
            )
            out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return out


def evaluate_policy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    heldout: dict[str, list[Example]],
    max_new_tokens: int = 64,
    batch_size: int = 32,
    worked_example: bool = True,
    max_per_domain: int | None = None,
) -> dict[str, DomainAccuracy]:
    results = {}
    for domain, examples in heldout.items():
        examples = examples[:max_per_domain] if max_per_domain else examples
        completions = generate_completions(
            model,
            tokenizer,
            [e.question for e in examples],
            max_new_tokens,
            batch_size,
            worked_example,
            desc=f"eval {domain}",
        )
        answers = [extract_answer(c) for c in completions]
        correct = sum(int(score_answer(e, a) >= 1.0) for e, a in zip(examples, answers, strict=True))
        low, high = wilson_interval(correct, len(examples))
        results[domain] = DomainAccuracy(
            domain=domain,
            n=len(examples),
            correct=correct,
            accuracy=correct / max(len(examples), 1),
            ci_low=low,
            ci_high=high,
            format_rate=sum(a is not None for a in answers) / max(len(answers), 1),
            majority_rate=majority_answer_rate(examples),
        )
    return results


def accuracy_table(before: dict[str, DomainAccuracy] | None, after: dict[str, DomainAccuracy] | None) -> str:
    """A plain-text table a person can read at the end of a run."""
    domains = list((after or before or {}).keys())
    head = f"{'domain':<22}{'n':>5}  {'majority':>8}  {'before [95% CI]':>22}  {'after [95% CI]':>22}"
    lines = [head, "-" * len(head)]

    def cell(acc: DomainAccuracy | None) -> str:
        return "-" if acc is None else f"{acc.accuracy:.3f} [{acc.ci_low:.2f}, {acc.ci_high:.2f}]"

    for d in domains:
        b = (before or {}).get(d)
        a = (after or {}).get(d)
        ref = a or b
        assert ref is not None
        lines.append(f"{d:<22}{ref.n:>5}  {ref.majority_rate:>8.3f}  {cell(b):>22}  {cell(a):>22}")
    return "\n".join(lines)


def to_json(results: dict[str, DomainAccuracy] | None) -> dict[str, dict] | None:
    return None if results is None else {d: asdict(a) for d, a in results.items()}
