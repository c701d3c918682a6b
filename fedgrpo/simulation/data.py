"""A simulation's data from the config: the seeded split, its counts, and stand-in files for a
deployment demo (``fedgrpo example-data``). A deployment never derives data from a seed."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from fedgrpo.config import ConfigError, FedGRPOConfig
from fedgrpo.data import write_labelled, write_questions
from fedgrpo.simulation.partition import FederatedSplit, build_split


def build_data(cfg: FedGRPOConfig, seed: int | None = None) -> FederatedSplit:
    """A simulation's seeded split: client data, server questions, auxiliary and held-out sets."""
    d = cfg.data
    try:
        return build_split(
            d.domain_specs(),
            d.num_clients,
            d.examples_per_client,
            d.num_train_questions,
            d.num_auxiliary,
            d.heldout_per_domain,
            d.partition,
            d.alpha,
            cfg.seed if seed is None else seed,
            ground_truth=d.setting == "ground-truth",
        )
    except ValueError as err:  # sizes the domains cannot fill: a config error, found before any model loads
        raise ConfigError(f"data: {err}") from err


def split_summary(split: FederatedSplit) -> dict[str, Any]:
    """Counts only (who holds how many of which domain): the experimenter's view of a simulation."""
    return {
        "client_domains": split.client_domains,
        "setting": "ground-truth" if split.ground_truth else "no-ground-truth",
        "train_questions": len(split.train_questions),
        "auxiliary": len(split.auxiliary),
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
    out: dict[str, Any] = {
        "server": {k: str((server / f"{k}.jsonl").resolve()) for k in ("questions", "auxiliary", "heldout")}
    }
    for name, examples in split.clients.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        write_labelled(examples, folder / name / "data.jsonl")
        out[name] = str((folder / name / "data.jsonl").resolve())
    return out
