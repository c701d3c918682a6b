"""Held-out evaluation of the server policy: greedy accuracy per domain with 95% intervals.

Two accuracies, because a gain can be the model learning to answer in the requested form rather than
to reason better: *strict* accuracy scores only the answer inside ``<answer>`` tags (what the
clients reward), *answer* accuracy scores the final answer wherever the model wrote it
(:func:`fedgrpo.method.answers.final_answer`), both with the task's exact scorer. Strict rising towards
answer accuracy is format learned; answer accuracy rising is reasoning learned. Every accuracy is
reported next to the domain's majority-answer rate, because a policy that learns to always say "Yes"
looks good on a domain where "Yes" is usually right.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fedgrpo.accel.generation import generate
from fedgrpo.data import Example, majority_answer_rate, score_answer
from fedgrpo.method.answers import extract_answer, final_answer
from fedgrpo.method.prompting import build_messages
from fedgrpo.models.loading import inference
from fedgrpo.run.intervals import wilson_interval
from fedgrpo.run.outcomes import DomainOutcomes


@dataclass(frozen=True)
class DomainAccuracy:
    """One domain's held-out result. ``correct``/``accuracy``/``ci_*``: strict (tagged answer);
    ``format_rate``: share of completions with an answer tag; ``answer_*``: the final answer wherever
    written (None in results written before it existed)."""

    domain: str
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    format_rate: float
    majority_rate: float
    answer_correct: int | None = None
    answer_accuracy: float | None = None
    answer_ci_low: float | None = None
    answer_ci_high: float | None = None


def generate_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: list[str],
    max_new_tokens: int,
    batch_size: int,
    worked_example: bool = True,
    desc: str = "eval",
    temperature: float = 0.0,
    share_prompts: bool = True,
    messages: Callable[[str], list[dict[str, str]]] | None = None,
    prefill: str = "",
) -> list[str]:
    """Completions for a list of questions, batched with left padding: greedy unless a temperature
    is given (then sampled; seed torch first for repeatable samples). ``share_prompts``: the prompts'
    common start read once, LoRA merged for the call (:func:`fedgrpo.accel.generation.fast_generate`).
    ``messages``: the chat for each text (default: the task prompt, :func:`build_messages`);
    ``prefill``: the reply's first words, written for the model (not part of the completion)."""
    chat = messages or (lambda q: build_messages(q, worked_example))
    out: list[str] = []
    with inference(model, tokenizer, padding_side="left"):
        for start in tqdm(range(0, len(questions), batch_size), desc=desc, leave=False):
            prompts = [
                tokenizer.apply_chat_template(chat(q), add_generation_prompt=True, tokenize=False) + prefill
                for q in questions[start : start + batch_size]
            ]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(
                model.device
            )
            sampling = (
                {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
            )
            gen = generate(
                model,
                share_prompts,
                **enc,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                **sampling,
            )
            out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return out


def evaluate_questions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    heldout: dict[str, list[Example]],
    max_new_tokens: int = 64,
    batch_size: int = 32,
    worked_example: bool = True,
    max_per_domain: int | None = None,
    share_prompts: bool = True,
) -> tuple[dict[str, DomainAccuracy], dict[str, DomainOutcomes]]:
    """Per domain the accuracies and each question's outcome (what a paired comparison needs)."""
    results, outcomes = {}, {}
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
            share_prompts=share_prompts,
        )
        outcomes[domain] = judge_completions(examples, completions)
        results[domain] = accuracy_of(domain, examples, outcomes[domain])
    return results, outcomes


def score_completions(domain: str, examples: list[Example], completions: list[str]) -> DomainAccuracy:
    """One domain's accuracies from its examples and the policy's completions (one each, in order)."""
    return accuracy_of(domain, examples, judge_completions(examples, completions))


def judge_completions(examples: list[Example], completions: list[str]) -> DomainOutcomes:
    """Each question's three outcomes: strict (tagged answer right), answer (final answer right), tagged."""
    if len(examples) != len(completions):
        raise ValueError(f"{len(examples)} examples but {len(completions)} completions")
    tagged = [extract_answer(c) for c in completions]
    strict = [score_answer(e, a) >= 1.0 for e, a in zip(examples, tagged, strict=True)]
    # A non-empty tag is also the final answer: reuse its score instead of scoring it again.
    answered = [
        ok if a else score_answer(e, final_answer(c)) >= 1.0
        for e, a, c, ok in zip(examples, tagged, completions, strict, strict=True)
    ]
    return DomainOutcomes.of([e.qid for e in examples], strict, answered, [a is not None for a in tagged])


def accuracy_of(domain: str, examples: list[Example], outcomes: DomainOutcomes) -> DomainAccuracy:
    n = len(examples)
    correct, answer_correct = outcomes.strict.count("1"), outcomes.answer.count("1")
    low, high = wilson_interval(correct, n)
    answer_low, answer_high = wilson_interval(answer_correct, n)
    return DomainAccuracy(
        domain=domain,
        n=n,
        correct=correct,
        accuracy=correct / max(n, 1),
        ci_low=low,
        ci_high=high,
        format_rate=outcomes.tagged.count("1") / max(n, 1),
        majority_rate=majority_answer_rate(examples),
        answer_correct=answer_correct,
        answer_accuracy=answer_correct / max(n, 1),
        answer_ci_low=answer_low,
        answer_ci_high=answer_high,
    )


def _cell(acc: float | None, low: float | None = None, high: float | None = None) -> str:
    if acc is None:
        return "-"
    return f"{acc:.3f}" if low is None or high is None else f"{acc:.3f} [{low:.2f}, {high:.2f}]"


# The table's three lines per domain: strict, answer (each with its interval), tag rate.
_MEASURES: list[tuple[str, Callable[[DomainAccuracy], str]]] = [
    ("strict", lambda x: _cell(x.accuracy, x.ci_low, x.ci_high)),
    ("answer", lambda x: _cell(x.answer_accuracy, x.answer_ci_low, x.answer_ci_high)),
    ("tags", lambda x: _cell(x.format_rate)),
]


def accuracy_table(before: dict[str, DomainAccuracy] | None, after: dict[str, DomainAccuracy] | None) -> str:
    """A plain-text table a person can read at the end of a run (about 80 columns).

    Before and after side by side; three lines per domain: ``strict`` (the tagged answer), ``answer``
    (the final answer wherever written) and ``tags`` (the answer-tag rate). "-" where there is none.
    """
    domains = list(dict.fromkeys([*(before or {}), *(after or {})]))
    w = max([6, *(len(d) for d in domains)])
    head = f"{'domain':<{w}}{'n':>5}{'majority':>9}  {'':<7}{'before [95% CI]':<18}  after [95% CI]"
    lines = [head, "-" * (len(head) + 4)]
    for d in domains:
        b = (before or {}).get(d)
        a = (after or {}).get(d)
        ref = a or b
        assert ref is not None
        for i, (name, cell) in enumerate(_MEASURES):
            lead = f"{d:<{w}}{ref.n:>5}{ref.majority_rate:>9.3f}" if i == 0 else " " * (w + 14)
            cb, ca = ("-" if x is None else cell(x) for x in (b, a))
            lines.append(f"{lead}  {name:<7}{cb:<18}  {ca}")
    lines.append("strict: answer in <answer> tags; answer: final answer wherever written; tags: tag rate")
    return "\n".join(lines)


def to_json(results: dict[str, DomainAccuracy] | None) -> dict[str, dict] | None:
    return None if results is None else {d: asdict(a) for d, a in results.items()}


def from_json(data: dict[str, dict] | None) -> dict[str, DomainAccuracy] | None:
    """The inverse of :func:`to_json` (a saved ``eval_before.json`` or a ``results.json`` entry)."""
    return None if data is None else {k: DomainAccuracy(**v) for k, v in data.items()}
