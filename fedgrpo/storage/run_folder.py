"""The run folder: one per run, refused when it already holds one, resumable, and removed again when
a run fails before its first checkpoint. Every method (FedGRPO and each baseline) runs in one, so
every run folder looks alike: ``config.yaml``, ``run.log``, ``metrics.jsonl``, checkpoints and
``results.json``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import set_seed

from fedgrpo.config import FedGRPOConfig
from fedgrpo.run.metrics import truncate_metrics
from fedgrpo.storage.atomic import write_json_atomic
from fedgrpo.storage.checkpoints import complete_checkpoints, remove_torn_checkpoints

log = logging.getLogger(__name__)


class RunExists(FileExistsError):
    """The output folder already holds a run: resume it or choose another folder."""


def check_output_dir(cfg: FedGRPOConfig, resume: bool) -> None:
    """Refuse to start a new run over a folder that holds one (checked before anything is submitted)."""
    out = cfg.output_dir
    if resume or not out.exists():
        return
    if (
        complete_checkpoints(out / "checkpoints")
        or (out / "results.json").exists()
        or (out / "metrics.jsonl").exists()
    ):
        raise RunExists(f"{out} already holds a run; pass --resume to continue it or set run.output_dir")


def in_run_folder(cfg: FedGRPOConfig, resume: bool, body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``body`` in the run folder (:func:`run_folder`): every method shares this, so every run
    folder looks alike."""
    with run_folder(cfg, resume):
        return body()


@contextmanager
def run_folder(cfg: FedGRPOConfig, resume: bool) -> Iterator[Path]:
    """The run folder, with ``run.log`` attached; removed again if the run fails before its first
    complete checkpoint (nothing to resume from: no half-made run folder is left behind)."""
    check_output_dir(cfg, resume)
    out = cfg.output_dir
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    handler = attach_log_file(out / "run.log")
    try:
        yield out
    except BaseException:
        if created and not complete_checkpoints(out / "checkpoints"):
            logging.getLogger("fedgrpo").removeHandler(handler)
            handler.close()
            shutil.rmtree(out, ignore_errors=True)
            log.error("the run failed before its first checkpoint; removed %s", out)
        raise


def start_run(cfg: FedGRPOConfig, resume: bool, split_info: dict[str, Any] | None = None) -> None:
    """Save the config (and the split's counts), seed everything, set torch's threads."""
    out = cfg.output_dir
    config_path = out / "config.yaml"
    if resume and config_path.exists() and config_path.read_text() != cfg.to_yaml():
        log.warning("resuming with a config that differs from %s; the new one is used", config_path)
    config_path.write_text(cfg.to_yaml())
    set_seed(cfg.seed)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    if split_info is not None:
        write_json_atomic(out / "split.json", split_info)


def resume_point(checkpoints: Path, metrics_path: Path) -> tuple[int, Path] | None:
    """The last complete checkpoint (its step and folder), after removing torn ones; the metric rows
    after it are dropped, since those steps run again. None (and no rows kept): start afresh."""
    for torn in remove_torn_checkpoints(checkpoints):
        log.warning("removed incomplete checkpoint %s", torn)
    done = complete_checkpoints(checkpoints)
    if not done:
        log.info("nothing to resume in %s; starting from the beginning", checkpoints)
        truncate_metrics(metrics_path, 0)
        return None
    truncate_metrics(metrics_path, done[-1][0])
    return done[-1]


def attach_log_file(path: Path) -> logging.Handler:
    """Everything the ``fedgrpo`` loggers say also goes to the run folder's ``run.log``."""
    root = logging.getLogger("fedgrpo")
    if root.level == logging.NOTSET and not logging.getLogger().handlers:
        root.setLevel(logging.INFO)  # nobody configured logging (a Flower ServerApp): still fill run.log
    for h in root.handlers:
        if isinstance(h, logging.FileHandler) and h.baseFilename == str(path.resolve()):
            return h
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    return handler
