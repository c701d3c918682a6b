"""A simulation's data from the config: the seeded split (with the server's canaries, when
``federation.canaries.share`` asks for them), its counts, and stand-in files for a deployment demo
(``fedgrpo example-data``). A deployment never derives data from a seed."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from fedgrpo.config import ConfigError, FedGRPOConfig
from fedgrpo.data import (
    Example,
    NotEnoughExamplesError,
    derive_seed,
    generate,
    normalise_question,
    resolve_domain,
    write_labelled,
    write_questions,
)
from fedgrpo.server.canaries import canary_count
from fedgrpo.simulation.partition import FederatedSplit, build_split


def build_data(cfg: FedGRPOConfig, seed: int | None = None) -> FederatedSplit:
    """A simulation's seeded split: client data, server questions, auxiliary and held-out sets."""
    d = cfg.data
    seed = cfg.seed if seed is None else seed
    try:
        split = build_split(
            d.domain_specs(),
            d.num_clients,
            d.examples_per_client,
            d.num_train_questions,
            d.num_auxiliary,
            d.heldout_per_domain,
            d.partition,
            d.alpha,
            seed,
            ground_truth=d.setting == "ground-truth",
        )
        split.canaries = draw_canaries(cfg, split, seed)
    except ValueError as err:  # sizes the domains cannot fill: a config error, found before any model loads
        raise ConfigError(f"data: {err}") from err
    return split


def draw_canaries(cfg: FedGRPOConfig, split: FederatedSplit, seed: int) -> list[Example]:
    """The server's canaries: as many as ``federation.canaries.share`` of the prompts needs, spread
    evenly over the domains like the training questions, from their own seeded draw, with no
    normalised question text that is anywhere in the split (client data, training, auxiliary,
    held-out): no client ever holds one, so none is scored by its answer."""
    need = canary_count(len(split.train_questions), cfg.federation.canaries.share)
    specs = [resolve_domain(item) for item in cfg.data.domains]
    if not need or not specs:
        return []
    seen = {normalise_question(q.question) for q in split.train_questions}
    seen.update(normalise_question(ex.question) for ex in split.auxiliary)
    seen.update(
        normalise_question(ex.question)
        for exs in (*split.clients.values(), *split.heldout.values())
        for ex in exs
    )
    out: list[Example] = []
    for k, spec in enumerate(specs):
        size = need // len(specs) + (k < need % len(specs))
        ask = size
        while True:
            try:
                drawn = generate(spec, ask, derive_seed("canaries", spec.name, seed))
            except NotEnoughExamplesError as err:
                raise NotEnoughExamplesError(
                    f"domain {spec.name!r} has too few questions for {size} canaries: {err}"
                ) from err
            fresh = [ex for ex in drawn if normalise_question(ex.question) not in seen]
            if len(fresh) >= size:
                break
            ask += size - len(fresh)
        out.extend(fresh[:size])
        seen.update(normalise_question(ex.question) for ex in fresh[:size])
    return out


def split_summary(split: FederatedSplit) -> dict[str, Any]:
    """Counts only (who holds how many of which domain): the experimenter's view of a simulation."""
    return {
        "client_domains": split.client_domains,
        "setting": "ground-truth" if split.ground_truth else "no-ground-truth",
        "train_questions": len(split.train_questions),
        "auxiliary": len(split.auxiliary),
        "canaries": len(split.canaries),
        "heldout": {d: len(v) for d, v in split.heldout.items()},
    }


def write_example_files(cfg: FedGRPOConfig, folder: Path, seed: int | None = None) -> dict[str, Any]:
    """Stand-in files for a deployment demo: the server's three files and one labelled file per
    organisation, from a split drawn with a fresh random seed (not the config's), so that nobody can
    rebuild any party's file from the run config. Real parties bring their own files instead."""
    split = build_data(cfg, secrets.randbits(40) if seed is None else seed)
    server = folder / "server"
    server.mkdir(parents=True, exist_ok=True)
    write_questions(split.train_questions, server / "questions.jsonl")
    write_labelled(split.auxiliary, server / "auxiliary.jsonl")
    write_labelled([ex for exs in split.heldout.values() for ex in exs], server / "heldout.jsonl")
    files = ["questions", "auxiliary", "heldout"]
    if split.canaries:
        write_labelled(split.canaries, server / "canaries.jsonl")
        files.append("canaries")
    out: dict[str, Any] = {"server": {k: str((server / f"{k}.jsonl").resolve()) for k in files}}
    for name, examples in split.clients.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        write_labelled(examples, folder / name / "data.jsonl")
        out[name] = str((folder / name / "data.jsonl").resolve())
    return out
