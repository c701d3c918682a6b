"""A FedGRPO client: private labelled data and an evaluator behind a message boundary.

Nothing on the server side holds a ``Client``; only a transport does: in-process it calls
:meth:`Client.handle` with encoded bytes, a Flower ClientApp calls :meth:`Client.respond` with the
request it decoded from its records. Either way only protocol messages cross.

A client model that is unavailable (an endpoint that is down) never fails a request: reward items
only the model could score abstain (None, method "none"), a competence query gets an error reply
naming the model's error, and both are counted in :attr:`Client.model_unavailable`.

A reward reply says how the client scored each item only as counts per reply (answer / model /
none): per item, the method would tell the server which questions the client holds. With
``per_item_methods`` (``federation.per_item_methods``, debugging) each item carries it as well.

With a release layer (``privacy``, :mod:`fedgrpo.client.privacy`) every reward and competence bit is
privatised before it leaves, and each reply carries the run's per-release (epsilon, delta). Membership
is hidden then: every item gets a value of one form (free noise where the client cannot judge it, its
model is down or a budget is reached, never None) and the method counts are a constant
(:func:`~fedgrpo.protocol.hidden_method_counts`); per-item methods are never sent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import Protocol

from fedgrpo.client.answer_scoring import AnswerEvaluator, Evaluation
from fedgrpo.client.dual import ClientModel, ModelUnavailableError, prepare_answers
from fedgrpo.client.privacy import PrivateRelease
from fedgrpo.data import Example
from fedgrpo.method.answers import answer_key
from fedgrpo.protocol import (
    MAX_MESSAGE_BYTES,
    CompetenceReply,
    CompetenceRequest,
    ErrorReply,
    ItemScores,
    Message,
    Method,
    ProtocolError,
    RewardReply,
    RewardRequest,
    VersionMismatch,
    decode,
    encode,
    hidden_method_counts,
    method_counts,
    refusal,
)

log = logging.getLogger(__name__)

COMPETENCE_CHUNK = 32  # auxiliary questions a client model answers per batch (one log line each)


class Evaluator(Protocol):
    def evaluate(self, question: str, candidates: list[str]) -> Evaluation: ...


def _answering_model(evaluator: object) -> ClientModel | None:
    """The client model that answers competence queries: the evaluator itself when it is a client
    model (in process or behind an endpoint), else the one it gates to (DualEvaluator.model)."""
    if isinstance(evaluator, ClientModel):
        return evaluator
    model = getattr(evaluator, "model", None)
    return model if isinstance(model, ClientModel) else None


class Client:
    """One domain organisation. Its examples never leave this object; only rewards do."""

    def __init__(
        self,
        name: str,
        examples: list[Example],
        evaluator: Evaluator | None = None,
        per_item_methods: bool = False,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        privacy: PrivateRelease | None = None,
    ) -> None:
        self.name = name
        self.per_item_methods = per_item_methods
        self.max_message_bytes = max_message_bytes  # longer requests are refused unread
        self._examples = list(examples)
        self._evaluator: Evaluator = evaluator or AnswerEvaluator(self._examples)
        self.model_unavailable = 0  # requests the client model could not serve (abstained or refused)
        self.privacy = privacy  # None: values leave as scored (no differential privacy)

    def __repr__(self) -> str:  # never print private data
        return f"Client({self.name!r}, {len(self._examples)} private examples)"

    def profile(self) -> dict[str, object]:
        """What the client tells the server when it joins: its name, the domains it serves (names only,
        no examples) and what it can evaluate (``answer``: questions it holds; ``model``: any question)."""
        evaluates = ["answer"] + (["model"] if _answering_model(self._evaluator) is not None else [])
        return {
            "name": self.name,
            "domains": sorted({ex.domain for ex in self._examples}),
            "evaluates": evaluates,
        }

    def handle(self, payload: bytes) -> bytes:
        """Decode a request, answer it, encode the reply. Malformed input gets an error reply; a request
        of another protocol version one in that version's own form (:func:`refusal`), naming both."""
        try:
            request = decode(payload, self.max_message_bytes, self.name)
        except VersionMismatch as err:
            log.warning("%s: refused a request: %s", self.name, err)
            return refusal(err, self.name)
        except ProtocolError as err:
            log.warning("%s: rejected malformed request: %s", self.name, err)
            return encode(ErrorReply("?", self.name, f"malformed request: {err}"))
        return encode(self.respond(request))

    def respond(self, request: Message) -> Message:
        """The reply to one decoded request: rewards, competence bits, or an error reply.

        With privacy on, every value passes the release layer (noise, cache, budgets) and the reply
        carries the run's cumulative (epsilon, delta) spend, one aggregate pair.
        """
        if self.privacy is None:
            return self._respond(request)
        with self.privacy.session():
            reply = self._respond(request)
            if isinstance(reply, RewardReply | CompetenceReply):
                reply = dataclasses.replace(reply, privacy_spent=self.privacy.spent())
            return reply

    def _respond(self, request: Message) -> Message:
        if isinstance(request, CompetenceRequest):
            return self._competence(request)
        if not isinstance(request, RewardRequest):
            return ErrorReply(request.request_id, self.name, f"cannot handle {request.kind!r}")
        items: list[ItemScores] = []
        methods: list[Method] = []
        failed: ModelUnavailableError | None = None
        abstained = 0
        if len(request.items) > 1:
            # the client model answers the request's questions in one batch; if it is down, each
            # item finds it so on its own below, and abstains
            with contextlib.suppress(ModelUnavailableError):
                prepare_answers(self._evaluator, [item.question for item in request.items])
        for item in request.items:
            try:
                result = self._evaluator.evaluate(item.question, item.candidates)
            except ModelUnavailableError as err:  # answer-based items still score; these abstain
                failed, abstained = failed or err, abstained + 1
                result = Evaluation([None] * len(item.candidates), "none")
            rewards, method = result.rewards, result.method
            if self.privacy is not None and (self.privacy.hide_membership or method != "none"):
                rewards = self.privacy.rewards(item.question, item.candidates, rewards, method)
            if self.privacy is not None and self.privacy.hide_membership:
                items.append(ItemScores(item.key, rewards))  # every item a value, none telling how
                continue
            methods.append(method)
            items.append(ItemScores(item.key, rewards, method if self.per_item_methods else None))
        if failed is not None:
            self.model_unavailable += 1
            log.warning(
                "%s: client model unavailable, %d of %d items unscored (None; free noise with privacy): %s",
                self.name,
                abstained,
                len(request.items),
                failed,
            )
        hidden = self.privacy is not None and self.privacy.hide_membership
        counts = hidden_method_counts(len(items)) if hidden else method_counts(methods)
        return RewardReply(request.request_id, self.name, items, counts)

    def _competence(self, request: CompetenceRequest) -> Message:
        """Answer each auxiliary question with the client model; 1 where it matches the given answer."""
        model = _answering_model(self._evaluator)
        if model is None:
            return ErrorReply(request.request_id, self.name, "no model to answer competence queries")
        # A model that answers many questions in one batch (in process) gets them a chunk at a
        # time; a long query still shows it is moving.
        many = getattr(model, "answers", None)
        bits = []
        start = time.perf_counter()
        items = request.items
        for begin in range(0, len(items), COMPETENCE_CHUNK):
            chunk = items[begin : begin + COMPETENCE_CHUNK]
            questions = [item.question for item in chunk]
            try:
                predicted = many(questions) if many else [model.answer(q) for q in questions]
            except ModelUnavailableError as err:  # partial bits would read as "incompetent"
                self.model_unavailable += 1
                log.warning("%s: client model unavailable for a competence query: %s", self.name, err)
                return ErrorReply(request.request_id, self.name, f"client model unavailable: {err}")
            for item, answer in zip(chunk, predicted, strict=True):
                bit = int(answer is not None and answer_key(answer) == answer_key(item.answer))
                bits.append(bit if self.privacy is None else self.privacy.bit(item.question, bit))
            log.info(
                "%s: answered %d/%d auxiliary questions (%.0f s)",
                self.name,
                len(bits),
                len(items),
                time.perf_counter() - start,
            )
        return CompetenceReply(request.request_id, self.name, bits)
