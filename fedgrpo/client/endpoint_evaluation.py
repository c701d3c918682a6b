"""Model-based evaluation (ME) through a client model that sits behind an OpenAI-compatible endpoint.

:class:`EndpointEvaluator` is :class:`~fedgrpo.client.model_evaluation.ModelEvaluator` for an
organisation that serves its expert model itself (``transformers serve``, vLLM, ...): the same
public interface, the same two modes and the same rewards, with the model calls going over HTTP
through :class:`~fedgrpo.client.endpoint.EndpointModel`. Still only scalars leave the client.

* ``agreement``: the endpoint answers the question ``samples`` times (greedy for one sample); the
  majority answer is the reference, and each candidate scores 1/0 on agreeing with it plus the
  format reward. No parseable answer at all means "cannot judge": None rewards, method "none".
  The reference is cached per question, so scoring a question's candidates, or the same question
  again, costs ``samples`` requests once, not once per candidate.
* ``likelihood``: the mean per-token probability the endpoint gives to each candidate's final
  answer after the prompt, the candidate's rationale and ``<answer>`` (plus the format reward).
  It needs prompt log-probabilities, which only some servers return (vLLM); the others raise
  :class:`~fedgrpo.client.endpoint.EndpointError` saying so.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Callable

from fedgrpo.client.endpoint import EndpointModel
from fedgrpo.client.evaluation import Evaluation
from fedgrpo.client.model_evaluation import Mode, _parsed_answer, answer_key
from fedgrpo.data import derive_seed, normalise_question
from fedgrpo.prompting import ANSWER_RE, build_messages, has_answer_format

__all__ = ["EndpointEvaluator", "chatml_prompt"]


def chatml_prompt(messages: list[dict[str, str]]) -> str:
    """Chat messages as one ChatML text, ending with an open assistant turn.

    Likelihood scoring sends raw text to ``/completions``, so the client renders the chat itself;
    ChatML is the format of the embedded models. Pass another ``prompt_format`` to
    :class:`EndpointEvaluator` for a model with a different chat template.
    """
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


class EndpointEvaluator:
    """Scores candidates with the client's model behind an endpoint (the paper's ME, served remotely)."""

    def __init__(
        self,
        endpoint: EndpointModel,
        mode: Mode = "agreement",
        samples: int = 4,
        max_new_tokens: int = 48,
        temperature: float = 0.7,
        format_reward: float = 0.1,
        seed: int = 0,
        worked_example: bool = True,
        prompt_format: Callable[[list[dict[str, str]]], str] = chatml_prompt,
        cache_size: int = 4096,
    ) -> None:
        """``prompt_format`` renders the chat as raw text for likelihood mode only (agreement mode
        sends chat messages and the server applies the model's own template); ``cache_size``
        bounds the reference answers kept (least recently used go first)."""
        if mode not in ("agreement", "likelihood"):
            raise ValueError(f"unknown model-evaluation mode {mode!r}")
        if samples < 1:
            raise ValueError("samples must be at least 1")
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if samples > 1 and temperature <= 0:
            raise ValueError("sampling more than one answer needs a positive temperature")
        if cache_size < 0:
            raise ValueError("cache_size must be at least 0")
        self.endpoint = endpoint
        self.mode: Mode = mode
        self.samples = samples
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.format_reward = format_reward
        self.seed = seed
        self.worked_example = worked_example
        self.prompt_format = prompt_format
        self.cache_size = cache_size
        self._references: OrderedDict[str, str | None] = OrderedDict()

    def __repr__(self) -> str:
        return f"EndpointEvaluator({self.endpoint!r}, mode={self.mode!r}, samples={self.samples})"

    # -- public -------------------------------------------------------------------------------

    def evaluate(self, question: str, candidates: list[str]) -> Evaluation:
        """One reward per candidate with method "model", or all None ("none") when it cannot judge."""
        if not candidates:
            return Evaluation([], "model")
        if self.mode == "likelihood":
            return Evaluation(self._likelihood_rewards(question, candidates), "model")
        reference = self.answer(question)
        if reference is None:
            return Evaluation([None] * len(candidates), "none")
        ref_key = answer_key(reference)
        rewards: list[float | None] = []
        for text in candidates:
            predicted = _parsed_answer(text)
            correct = 1.0 if predicted is not None and answer_key(predicted) == ref_key else 0.0
            rewards.append(correct + (self.format_reward if has_answer_format(text) else 0.0))
        return Evaluation(rewards, "model")

    def answer(self, question: str) -> str | None:
        """The endpoint model's majority answer over its samples; None when no sample has one.

        Grouped by :func:`answer_key`, ties to the group seen first, returned in that group's first
        spelling (as ModelEvaluator). Seeds derive from (seed, question), so a question always
        gets the same samples from a server that honours seeds; the result is cached.
        """
        key = normalise_question(question)
        if key in self._references:
            self._references.move_to_end(key)
            return self._references[key]
        texts = self.endpoint.sample(
            build_messages(question, self.worked_example),
            n=self.samples,
            temperature=self.temperature if self.samples > 1 else 0.0,
            max_tokens=self.max_new_tokens,
            seed=derive_seed("model-evaluation", self.seed, key),
        )
        answers = [a for a in (_parsed_answer(t) for t in texts) if a is not None]
        reference = None
        if answers:
            keys = [answer_key(a) for a in answers]
            winner = Counter(keys).most_common(1)[0][0]  # most_common keeps first-seen order on ties
            reference = answers[keys.index(winner)]
        if self.cache_size:
            self._references[key] = reference
            while len(self._references) > self.cache_size:
                self._references.popitem(last=False)
        return reference

    # -- internals ----------------------------------------------------------------------------

    def _likelihood_rewards(self, question: str, candidates: list[str]) -> list[float | None]:
        """Mean per-token probability of each candidate's answer given prompt, rationale and ``<answer>``.

        A candidate without a parseable answer scores 0 (nothing to judge), as in ModelEvaluator.
        One ``/completions`` request per scored candidate.
        """
        prompt = self.prompt_format(build_messages(question, self.worked_example))
        rewards: list[float | None] = [0.0] * len(candidates)
        for i, text in enumerate(candidates):
            answer = _parsed_answer(text)
            if answer is None:
                continue
            rationale = text[: list(ANSWER_RE.finditer(text))[-1].start()]
            logprobs = self.endpoint.answer_logprobs(prompt + rationale + "<answer>", answer)
            prob = sum(math.exp(lp) for lp in logprobs) / len(logprobs)
            bonus = self.format_reward if has_answer_format(text) else 0.0
            rewards[i] = min(max(prob, 0.0), 1.0) + bonus
        return rewards
