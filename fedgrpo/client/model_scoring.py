"""Model-based evaluation (ME) and the dual gate: how a client scores questions it holds no answer for.

A client that does not hold a question still has its own small causal LM (any Hugging Face model,
with its own tokenizer, which need not match the server's). It scores each candidate with that
model and sends back only scalars: no text, logits or weights leave the client.

Two scorers:

* ``agreement`` (the default, what the authors' code does): the client model answers the question
  itself ``samples`` times; the majority answer is the reference and each candidate is scored 1/0 on
  whether its final answer agrees with it. A client model that produces no answer at all cannot
  judge, and says so with ``None`` rewards (method ``"none"``), never with zeros.
* ``likelihood``: the probability the client model gives to the candidate's final answer (the text
  inside the tag; the tag tokens themselves are near-certain and would squeeze every score towards
  1) after reading the candidate's own rationale and the opening tag. Agreement looks only at the
  final answer, so a lucky guess after nonsense reasoning scores the same as a sound derivation;
  conditioning on the rationale lets the client model judge whether the reasoning leads to that
  answer (the paper's "score from the client's own model", in its verifier-like reading).
  It also never abstains on a parseable answer.

With ``direct_answer`` the client model's reply starts inside the answer tag (the prompt ends with
``<answer>``) and stops where the tag closes: what an SFT expert, trained to reply with the tagged
answer alone, writes anyway, in a third of the decoded tokens (``-17`` is 4 of SmolLM2's tokens,
against 10 for ``<answer>-17</answer>`` and the end of turn).

The agreement rule itself and the dual gate are torch-free (:mod:`fedgrpo.client.agreement`,
:mod:`fedgrpo.client.dual`); only this in-process scorer needs torch and transformers.
"""

from __future__ import annotations

import inspect

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from fedgrpo.accel.few_rows import activate
from fedgrpo.accel.generation import generate
from fedgrpo.accel.prompt_cache import PromptCache
from fedgrpo.client.agreement import SampledScorer, ScoringSettings, majority_answer
from fedgrpo.data import derive_seed, normalise_question
from fedgrpo.method.answers import ANSWER_CLOSE, ANSWER_OPEN, parsed_answer, rationale
from fedgrpo.method.prompting import build_messages
from fedgrpo.models.loading import CHATML_TEMPLATE, inference

__all__ = ["ModelEvaluator"]


class ModelEvaluator(SampledScorer):
    """Scores candidates with the client's own model when it has no trusted answer (the paper's ME)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        settings: ScoringSettings = ScoringSettings(),
        adapter: str | None = None,
        share_prompts: bool = True,
    ) -> None:
        """``adapter``: the name of this client's LoRA adapter on a shared PEFT ``model``, used for
        every call (clients that share one base take turns: named to the layers that generate, and
        activated where they cannot take it); None uses ``model`` as it is.
        ``share_prompts``: its samples share one prefill of the prompt, the adapter is merged for a
        call of many rows (:func:`fedgrpo.accel.generation.fast_generate`), and the prompt starts its
        calls share are read once for all of them (:class:`~fedgrpo.accel.prompt_cache.PromptCache`)."""
        super().__init__(settings)
        self.model = model
        self.tokenizer = tokenizer
        self.adapter = adapter
        self.share_prompts = share_prompts
        self._prompts = PromptCache()
        self._close_ids: list[int] | None = None

    def __repr__(self) -> str:
        adapter = f", adapter={self.adapter!r}" if self.adapter else ""
        name = type(self.model).__name__
        s = self.settings
        return f"ModelEvaluator({name}, mode={s.mode!r}, samples={s.samples}{adapter})"

    # -- public -------------------------------------------------------------------------------

    def answer(self, question: str) -> str | None:
        """The client model's own majority answer over its samples (:func:`majority_answer`); None
        when no sample has one. Seeded by the question alone, so it is kept and a question asked
        again is not generated again."""
        key = normalise_question(question)
        known, reference = self._recall(key)
        if not known:
            reference = self.answers([question])[0]
            self._remember(key, reference)
        return reference

    def prepare(self, questions: list[str]) -> None:
        """Answer the questions not yet kept in one batched ``generate`` and keep their answers, so
        that a request's items cost one call instead of one each (the default run sends its most
        competent clients both questions of a step). The samples are then seeded by those questions
        together. Nothing to do for one question (``answer`` seeds it alone, as before), for
        ``likelihood``, or when answers are not kept (``cache_size`` 0)."""
        if self.settings.mode != "agreement" or not self.settings.cache_size:
            return
        todo: dict[str, str] = {}
        for question in questions:
            key = normalise_question(question)
            if key not in todo and not self._recall(key)[0]:
                todo[key] = question
        if len(todo) < 2:
            return
        for key, reference in zip(todo, self.answers(list(todo.values())), strict=True):
            self._remember(key, reference)

    def answers(self, questions: list[str]) -> list[str | None]:
        """:meth:`answer` for many questions in one batched ``generate``: how a competence query is
        answered. One question gets exactly :meth:`answer`'s samples; for several, the samples are
        seeded by the whole list."""
        texts = self._sample(questions)
        k = self.settings.samples
        return [majority_answer(texts[i * k : (i + 1) * k]) for i in range(len(questions))]

    # -- internals ----------------------------------------------------------------------------

    def _prompt(self, question: str) -> str:
        """The chat prompt in the client's own template (ChatML when its tokenizer has none)."""
        template = None if getattr(self.tokenizer, "chat_template", None) else CHATML_TEMPLATE
        text = self.tokenizer.apply_chat_template(
            build_messages(question, self.settings.worked_example),
            chat_template=template,
            tokenize=False,
            add_generation_prompt=True,
        )
        if not isinstance(text, str):  # some tokenizers return a list for one conversation
            text = text[0]
        return text

    def _closing_ids(self) -> list[int]:
        """The tokens a direct answer's closing tag starts with in this tokenizer (SmolLM2: ``</`` and
        `` </``), found by tokenizing a tagged answer after a few kinds of last character. A tag
        started by another token is still read back whole; generation then just stops later."""
        if self._close_ids is None:
            ids: set[int] = set()
            for last in ("0", "a", ")", "."):
                body = self.tokenizer(last, add_special_tokens=False)["input_ids"]
                for space in ("", " "):
                    full = self.tokenizer(last + space + ANSWER_CLOSE, add_special_tokens=False)["input_ids"]
                    if full[: len(body)] == body and len(full) > len(body):
                        first = full[len(body)]
                        if self.tokenizer.decode([first]).strip().startswith("</"):
                            ids.add(int(first))
            self._close_ids = sorted(ids)
        return self._close_ids

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _pad_id(self) -> int:
        for tid in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if tid is not None:
                return int(tid)
        return 0

    def _stop_ids(self) -> list[int]:
        """End-of-sequence ids: the tokenizer's eos and, where it exists, ChatML's end-of-turn."""
        ids = [] if self.tokenizer.eos_token_id is None else [int(self.tokenizer.eos_token_id)]
        im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != self.tokenizer.unk_token_id and im_end not in ids:
            ids.append(int(im_end))
        return ids

    def _sample(self, questions: list[str]) -> list[str]:
        """``samples`` completions of each question, in one batch, question by question; deterministic
        per (seed, questions); greedy for one sample."""
        tok, model = self.tokenizer, self.model
        device = self._device()
        sampled = self.settings.samples > 1
        opening = ANSWER_OPEN if self.settings.direct_answer else ""
        stops = self._stop_ids() + (self._closing_ids() if self.settings.direct_answer else [])
        config = GenerationConfig(
            max_new_tokens=self.settings.max_new_tokens,
            do_sample=sampled,
            num_beams=1,
            pad_token_id=self._pad_id(),
            eos_token_id=stops or None,
            **({"temperature": self.settings.temperature, "top_k": 0, "top_p": 1.0} if sampled else {}),
        )
        # A private RNG stream: the same question always gets the same samples, and the caller's
        # global RNG (the server's own sampling, say) is left exactly where it was.
        cuda = [device.index or 0] if device.type == "cuda" else []
        with inference(model, tok, padding_side="left"):  # generation appends on the right
            batch = tok(
                [self._prompt(q) + opening for q in questions for _ in range(self.settings.samples)],
                padding=True,
                return_tensors="pt",
                add_special_tokens=False,
            ).to(device)
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(
                    derive_seed(
                        "model-evaluation", self.settings.seed, *(normalise_question(q) for q in questions)
                    )
                )
                out = generate(
                    model, self.share_prompts, self._prompts, self.adapter, **batch, generation_config=config
                )
        new_tokens = out[:, batch["input_ids"].shape[1] :]
        texts = tok.batch_decode(new_tokens, skip_special_tokens=True)
        return [opening + _closed(t) for t in texts] if self.settings.direct_answer else texts

    def _likelihood(self, question: str, candidates: list[str]) -> list[float | None]:
        """Mean per-token probability of each candidate's answer given prompt, rationale and ``<answer>``.

        Only the answer's own tokens are scored. Prefix and answer are tokenized separately and their
        ids concatenated, so the scored tokens are exactly the answer's own (a BPE merge across the
        boundary would otherwise shift it). Rows are right-padded; one forward pass scores them all.
        """
        tok, model = self.tokenizer, self.model
        prompt = self._prompt(question)
        rows: list[tuple[int, list[int], int]] = []  # (candidate index, ids, answer-block length)
        limit = getattr(model.config, "max_position_embeddings", None) or getattr(
            model.config, "n_positions", None
        )
        for i, text in enumerate(candidates):
            answer = parsed_answer(text)
            if answer is None:
                continue
            prefix = tok(prompt + rationale(text) + "<answer>", add_special_tokens=False)["input_ids"]
            block = tok(answer, add_special_tokens=False)["input_ids"]
            if limit and len(prefix) + len(block) > limit:  # keep the end of a too-long rationale
                prefix = prefix[len(prefix) + len(block) - limit :]
            if not prefix or not block:
                continue
            rows.append((i, list(prefix) + list(block), len(block)))
        rewards: list[float | None] = [0.0] * len(candidates)
        if not rows:
            return rewards

        width = max(len(ids) for _, ids, _ in rows)
        device = self._device()
        input_ids = torch.full((len(rows), width), self._pad_id(), dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (_, ids, _) in enumerate(rows):
            input_ids[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[r, : len(ids)] = 1
        # Logits at position t predict token t+1; only the block's predicting positions are needed.
        first = min(len(ids) - n - 1 for _, ids, n in rows)
        last = max(len(ids) - 2 for _, ids, _ in rows)
        kwargs: dict[str, object] = {}
        offset = 0
        if "logits_to_keep" in inspect.signature(model.forward).parameters:
            # A full (batch, length, vocab) logits tensor is gigabytes for a real vocabulary.
            kwargs["logits_to_keep"] = torch.arange(first, last + 1, device=device)
            offset = first
        activate(model, self.adapter)
        with inference(model):
            logits = model(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs
            ).logits
        for r, (i, ids, n) in enumerate(rows):
            start = len(ids) - n  # first answer-block token
            positions = torch.arange(start - 1, len(ids) - 1, device=logits.device) - offset
            logprobs = torch.log_softmax(logits[r, positions].float(), dim=-1)
            targets = torch.tensor(ids[start:], dtype=torch.long, device=logits.device)
            prob = logprobs.gather(-1, targets[:, None]).exp().mean().item()
            rewards[i] = min(max(prob, 0.0), 1.0)
        return rewards


def _closed(reply: str) -> str:
    """A direct answer stopped at the start of its closing tag (``-17</``), with the tag completed."""
    for n in range(len(ANSWER_CLOSE), 1, -1):
        if reply.endswith(ANSWER_CLOSE[:n]):
            return reply + ANSWER_CLOSE[n:]
    return reply
