"""One client from the config and its model, for simulated clients and a deployed ClientApp alike.

A client's model is one of: none (answer-based scoring only), a model in this process (a base with
an optional expert adapter), or a model behind an OpenAI-compatible endpoint the organisation runs.
All of them are scored with the run's ``clients.*`` settings and ``seed``, and send correctness only.

Torch-free at import: an answer-only or endpoint-served client (on Flower's Deployment Engine, a
fresh ClientApp process per message) must not pay for torch and transformers. Only
:func:`in_process_model` imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedgrpo.client import AnswerEvaluator, Client, ClientModel, DualEvaluator, Evaluator, ScoringSettings
from fedgrpo.client.endpoint import EndpointModel
from fedgrpo.client.endpoint_scoring import EndpointEvaluator
from fedgrpo.client.privacy import PrivacyPolicy, PrivateRelease
from fedgrpo.client.privacy_ledger import TrainingPrivacyLike
from fedgrpo.config import ClientPrivacy, FedGRPOConfig
from fedgrpo.data import Example

__all__ = ["endpoint_model", "in_process_model", "make_client", "private_release", "scoring_settings"]


def private_release(
    cfg: FedGRPOConfig,
    settings: ClientPrivacy,
    name: str,
    state_path: str | None = None,
    seeded: bool = True,
    training: TrainingPrivacyLike | None = None,
) -> PrivateRelease | None:
    """The release layer for ``settings`` (None when off). ``seeded``: noise drawn from the run's seed
    and the client's name (simulations, reproducible); otherwise from the operating system.
    ``training``: the expert's DP-SGD privacy (None: a non-private expert or none)."""
    if not settings.enabled:
        return None
    policy = PrivacyPolicy(
        settings.epsilon,
        settings.budget_epsilon,
        settings.budget_delta,
        settings.continuous_mechanism,
        settings.delta_per_value,
        settings.max_answers_per_question,
    )
    seed = [cfg.seed, *name.encode()] if seeded else None
    scores = "continuous" if cfg.clients.evaluation == "likelihood" else "binary"
    release = PrivateRelease(policy, scores, seed, state_path, cfg.name, training=training, owner=name)
    release.hide_membership = settings.hide_membership
    return release


def make_client(
    cfg: FedGRPOConfig,
    name: str,
    examples: list[Example],
    model: ClientModel | None,
    wrap: Callable[[Evaluator], Evaluator] | None = None,
    privacy: PrivateRelease | None = None,
) -> Client:
    """One client: answer-based evaluation on its examples, plus ``model`` for model-based evaluation and
    competence queries when it has one. ``wrap``: lays something over that honest evaluator (a
    simulation's adversaries, :mod:`fedgrpo.simulation.adversaries`; never a deployed client); ``privacy``:
    its
    release layer (default: none)."""
    evaluator: Evaluator = DualEvaluator(AnswerEvaluator(examples), model)
    return Client(
        name,
        examples,
        wrap(evaluator) if wrap is not None else evaluator,
        per_item_methods=cfg.federation.per_item_methods,
        max_message_bytes=cfg.flower.max_message_bytes,
        privacy=privacy,
    )


def scoring_settings(cfg: FedGRPOConfig, worked_example: bool) -> ScoringSettings:
    """The run's scoring settings, the same for a model in this process and one behind an endpoint."""
    cs = cfg.clients
    return ScoringSettings(
        mode=cs.evaluation,
        samples=cs.samples,
        max_new_tokens=cs.max_new_tokens,
        temperature=cs.temperature,
        seed=cfg.seed,
        worked_example=worked_example,
        direct_answer=cs.direct_answer,
    )


def in_process_model(cfg: FedGRPOConfig, net: Any, tokenizer: Any, adapter: str | None) -> ClientModel:
    """A model loaded in this process (``adapter``: the client's LoRA adapter on a shared base), its
    weights packed in fp16 with ``clients.weights: fp16`` (:func:`fedgrpo.accel.speed_up_client_model`)."""
    # Imported here: torch and transformers are an optional, heavy dependency that only in-process
    # client models need (not an import cycle).
    from fedgrpo.accel import speed_up_client_model
    from fedgrpo.client.model_scoring import ModelEvaluator

    speed_up_client_model(net, cfg.clients.weights)
    worked = cfg.clients.expert.worked_example if adapter else cfg.model.worked_example
    return ModelEvaluator(
        net, tokenizer, scoring_settings(cfg, worked), adapter=adapter, share_prompts=cfg.run.share_prompts
    )


def endpoint_model(cfg: FedGRPOConfig, url: str, model: str, api_key: str | None = None) -> EndpointEvaluator:
    """A model behind an OpenAI-compatible endpoint; ``model`` is the name the server expects.

    No call outlasts one reward round (``flower.reward_timeout_s``). Nothing is contacted here: an
    endpoint that is down makes the client abstain on model-scored items, it does not stop it.
    """
    endpoint = EndpointModel(url, model, api_key=api_key, timeout_s=cfg.flower.reward_timeout_s)
    return EndpointEvaluator(endpoint, scoring_settings(cfg, cfg.model.worked_example))
