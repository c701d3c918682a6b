"""Model-based evaluation (ME) through a client model that sits behind an OpenAI-compatible endpoint.

:class:`EndpointEvaluator` is :class:`~fedgrpo.client.model_scoring.ModelEvaluator` for an
organisation that serves its expert model itself (``transformers serve``, vLLM, ...): the same
public interface, the same two modes and the same rewards, with the model calls going over HTTP
through :class:`~fedgrpo.client.endpoint.EndpointModel`. Still only scalars leave the client, and
nothing here imports torch or transformers.

* ``agreement``: the endpoint answers the question ``samples`` times (greedy for one sample); the
  majority answer is the reference (:mod:`fedgrpo.client.agreement`, the rule ModelEvaluator uses).
  The reference is cached per question, so scoring a question's candidates, or the same question
  again, costs ``samples`` requests once, not once per candidate.
* ``likelihood``: the mean per-token probability the endpoint gives to each candidate's final
  answer after the prompt, the candidate's rationale and ``<answer>``.
  It needs prompt log-probabilities, which only some servers return (vLLM).

Any endpoint failure is raised as :class:`~fedgrpo.client.dual.ModelUnavailableError` (the client
then abstains on what only the model could score), and for ``cooldown_s`` afterwards every call
fails at once without contacting the server: a down or hanging endpoint costs one connection
attempt or timeout per request, not one per question.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TypeVar

from fedgrpo.client.agreement import SampledScorer, ScoringSettings, majority_answer
from fedgrpo.client.dual import ModelUnavailableError
from fedgrpo.client.endpoint import EndpointError, EndpointModel
from fedgrpo.data import derive_seed, normalise_question
from fedgrpo.method.answers import parsed_answer, rationale
from fedgrpo.method.prompting import build_messages

__all__ = ["EndpointEvaluator", "chatml_prompt"]

T = TypeVar("T")


def chatml_prompt(messages: list[dict[str, str]]) -> str:
    """Chat messages as one ChatML text, ending with an open assistant turn.

    Likelihood scoring sends raw text to ``/completions``, so the client renders the chat itself;
    ChatML is the format of the embedded models. Pass another ``prompt_format`` to
    :class:`EndpointEvaluator` for a model with a different chat template.
    """
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


class EndpointEvaluator(SampledScorer):
    """Scores candidates with the client's model behind an endpoint (the paper's ME, served remotely).
    ``evaluate`` and ``answer`` raise ModelUnavailableError when the endpoint fails (or failed within
    ``cooldown_s``)."""

    def __init__(
        self,
        endpoint: EndpointModel,
        settings: ScoringSettings = ScoringSettings(),
        prompt_format: Callable[[list[dict[str, str]]], str] = chatml_prompt,
        cooldown_s: float = 30.0,
    ) -> None:
        """``prompt_format`` renders the chat as raw text for likelihood mode only (agreement mode
        sends chat messages and the server applies the model's own template); ``cooldown_s`` is how
        long after a failure the endpoint is not tried again."""
        super().__init__(settings)
        if cooldown_s < 0:
            raise ValueError("cooldown_s must be at least 0")
        self.endpoint = endpoint
        self.prompt_format = prompt_format
        self.cooldown_s = cooldown_s
        self._failed: tuple[float, str] | None = None  # (monotonic time, error) of the last failure

    def __repr__(self) -> str:
        s = self.settings
        return f"EndpointEvaluator({self.endpoint!r}, mode={s.mode!r}, samples={s.samples})"

    # -- public -------------------------------------------------------------------------------

    def answer(self, question: str) -> str | None:
        """The endpoint model's majority answer over its samples; None when no sample has one.

        Seeds derive from (seed, question), so a question always gets the same samples from a server
        that honours seeds; the result is cached. Raises ModelUnavailableError as :meth:`evaluate`.
        """
        key = normalise_question(question)
        known, reference = self._recall(key)
        if known:
            return reference
        texts = self._call(
            self.endpoint.sample,
            build_messages(question, self.settings.worked_example),
            n=self.settings.samples,
            temperature=self.settings.temperature if self.settings.samples > 1 else 0.0,
            max_tokens=self.settings.max_new_tokens,
            seed=derive_seed("model-evaluation", self.settings.seed, key),
        )
        reference = majority_answer(texts)
        self._remember(key, reference)
        return reference

    # -- internals ----------------------------------------------------------------------------

    def _call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """``fn`` against the endpoint, unless it failed within ``cooldown_s``; failures become
        ModelUnavailableError (naming the endpoint's error) and start a new cooldown."""
        if self._failed is not None:
            since = time.monotonic() - self._failed[0]
            if since < self.cooldown_s:
                raise ModelUnavailableError(
                    f"{self._failed[1]} ({since:.0f} s ago; not tried again for {self.cooldown_s:g} s)"
                )
        try:
            result = fn(*args, **kwargs)
        except EndpointError as err:
            self._failed = (time.monotonic(), str(err))
            raise ModelUnavailableError(str(err)) from err
        self._failed = None
        return result

    def _likelihood(self, question: str, candidates: list[str]) -> list[float | None]:
        return self._call(self._likelihood_rewards, question, candidates)

    def _likelihood_rewards(self, question: str, candidates: list[str]) -> list[float | None]:
        """Mean per-token probability of each candidate's answer given prompt, rationale and ``<answer>``.

        A candidate without a parseable answer scores 0 (nothing to judge), as in ModelEvaluator.
        One ``/completions`` request per scored candidate.
        """
        prompt = self.prompt_format(build_messages(question, self.settings.worked_example))
        rewards: list[float | None] = [0.0] * len(candidates)
        for i, text in enumerate(candidates):
            answer = parsed_answer(text)
            if answer is None:
                continue
            logprobs = self.endpoint.answer_logprobs(prompt + rationale(text) + "<answer>", answer)
            prob = sum(math.exp(lp) for lp in logprobs) / len(logprobs)
            rewards[i] = min(max(prob, 0.0), 1.0)
        return rewards
