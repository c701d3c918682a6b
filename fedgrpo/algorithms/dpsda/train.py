"""The ``dpsda-fl`` baseline: clients vote, with differential privacy, on synthetic data that the server
evolves with Private Evolution (:mod:`.evolution`, the server's side; :mod:`.private_evolution`, the
clients' noisy histograms and their accounting); the kept samples (``synthetic.jsonl``) train the
server with SFT, then GRPO rewarded by their answers. Same config, split, held-out sets and evaluation
(learning curve included, its steps counting SFT's) as FedGRPO; ``results.json`` adds ``privacy`` and
``synthetic``. ``--resume`` reuses a finished evolution: asking the clients again would spend privacy.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, set_seed

from fedgrpo.algorithms.dpsda.evolution import VoteExchange, evolve, in_process_exchange, voting_clients
from fedgrpo.algorithms.dpsda.private_evolution import Sample, calibrate_sigma, epsilon_spent
from fedgrpo.client.experts import answer_reward, grpo_dataset, sft_dataset
from fedgrpo.config import ConfigError, DpsdaSettings, FedGRPOConfig
from fedgrpo.config.baselines import DEFAULT_NOISE_MULTIPLIER
from fedgrpo.data import Example, normalise_answer
from fedgrpo.models.loading import load_policy, load_tokenizer
from fedgrpo.run.curve import CURVE_FILE
from fedgrpo.run.evaluate import DomainAccuracy, accuracy_table, to_json
from fedgrpo.run.experiment import evaluate_heldout
from fedgrpo.run.metrics import peak_rss_mb
from fedgrpo.run.trl import HeldOutCurve, lora_config
from fedgrpo.server.stats import TRANSFER_KEYS, RoundStats
from fedgrpo.simulation.data import build_data, split_summary
from fedgrpo.storage.atomic import write_json_atomic
from fedgrpo.storage.run_folder import RunExists, attach_log_file, check_output_dir

log = logging.getLogger(__name__)

SYNTHETIC_FILE = "synthetic.jsonl"
PRIVACY_FILE = "privacy.json"
COMMUNICATION_KEYS = (*TRANSFER_KEYS, "fed/rejected", "fed/rejected_total")  # and the bad histograms


def privacy_plan(settings: DpsdaSettings) -> dict[str, Any]:
    """The noise multiplier (given, default or calibrated to the target) and the epsilon it spends."""
    p = settings
    sigma = p.noise_multiplier
    if sigma is None and p.target_epsilon is not None:
        try:
            sigma = calibrate_sigma(p.target_epsilon, p.iterations, p.delta, p.accountant)
        except Exception as err:  # dp-accounting finds no sigma (>= 0.25) that reaches the target
            raise ConfigError(
                f"dpsda.target_epsilon={p.target_epsilon}: no noise multiplier reaches it over "
                f"{p.iterations} iterations at delta={p.delta} ({err})"
            ) from err
    sigma = DEFAULT_NOISE_MULTIPLIER if sigma is None else sigma
    return {
        "mechanism": "Private Evolution: Gaussian-noised nearest-neighbour vote histogram per client",
        "accountant": p.accountant,
        "noise_multiplier": sigma,
        "sensitivity": 1.0,
        "iterations": p.iterations,
        "delta": p.delta,
        "epsilon": epsilon_spent(sigma, p.iterations, p.delta, p.accountant),
        "target_epsilon": p.target_epsilon,
    }


def check_settings(cfg: FedGRPOConfig) -> None:
    """Checks across sections, before any model loads."""
    if cfg.federation.transport not in ("in_process", "flower-simulation"):
        raise ConfigError(
            "dpsda-fl runs in process or on Flower's Simulation Engine: set federation.transport to "
            "in_process or flower-simulation"
        )
    if cfg.data.num_auxiliary < 1:
        raise ConfigError(
            "dpsda needs data.num_auxiliary >= 1: the server's auxiliary examples are its few-shot prompts"
        )


def run(cfg: FedGRPOConfig, resume: bool = False, exchange: VoteExchange | None = None) -> dict[str, Any]:
    """A whole dpsda-fl run into ``cfg.output_dir``; returns the results also saved there.

    ``exchange``: how vote requests reach the clients (Flower's, from :mod:`.dpsda_flower`); None: the
    split's clients in this process (:func:`fedgrpo.algorithms.run_method` picks this or the Flower run).
    """
    check_settings(cfg)
    if exchange is None and cfg.federation.transport != "in_process":
        raise ConfigError("this runs dpsda-fl in process; for Flower use fedgrpo run CONFIG method=dpsda-fl")
    privacy = privacy_plan(cfg.dpsda)
    check_output_dir(cfg, resume)
    out = cfg.output_dir
    if not resume and (out / SYNTHETIC_FILE).exists():
        raise RunExists(f"{out} already holds a run; pass --resume to continue it or set run.output_dir")
    split = build_data(cfg)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    handler = attach_log_file(out / "run.log")
    try:
        return _run(cfg, split, privacy, resume, exchange)
    except BaseException:
        if created and not (out / SYNTHETIC_FILE).exists():
            logging.getLogger("fedgrpo").removeHandler(handler)
            handler.close()
            shutil.rmtree(out, ignore_errors=True)
            log.error("the run failed before its synthetic set was released; removed %s", out)
        raise


def _run(
    cfg: FedGRPOConfig, split: Any, privacy: dict[str, Any], resume: bool, exchange: VoteExchange | None
) -> dict[str, Any]:
    out = cfg.output_dir
    (out / "config.yaml").write_text(cfg.to_yaml())
    set_seed(cfg.seed)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    split_info = split_summary(split)
    write_json_atomic(out / "split.json", split_info)
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    model = load_policy(cfg.model.name_or_path, cfg.model.dtype)

    def evaluate(policy: Any, tag: str) -> dict[str, DomainAccuracy]:
        res = evaluate_heldout(cfg, policy, tokenizer, split.heldout, tag)
        write_json_atomic(out / f"eval_{tag}.json", to_json(res))
        return res

    before_path = out / "eval_before.json"
    before = None
    if cfg.eval.before and resume and before_path.exists():
        before = {k: DomainAccuracy(**v) for k, v in json.loads(before_path.read_text()).items()}
    elif cfg.eval.before:
        before = evaluate(model, "before")

    if resume and (out / SYNTHETIC_FILE).exists() and (out / PRIVACY_FILE).exists():
        log.info(
            "resuming: the synthetic set in %s was released already; the clients are not asked again", out
        )
        synthetic = read_synthetic(out / SYNTHETIC_FILE)
        released = json.loads((out / PRIVACY_FILE).read_text())
        privacy, comm = released["privacy"], RoundStats.from_json(released["communication"])
    else:
        ask = exchange or in_process_exchange(
            voting_clients(cfg, split.clients, tokenizer, privacy["noise_multiplier"])
        )
        synthetic, comm = evolve(cfg, model, tokenizer, split.auxiliary, ask, out)
        write_synthetic(out / SYNTHETIC_FILE, synthetic)
        write_json_atomic(out / PRIVACY_FILE, {"privacy": privacy, "communication": comm.to_json()})
        del ask
    log.info(
        "privacy: each client spent epsilon=%.3f at delta=%g (%s accountant, sigma=%.3f, %d iterations)",
        privacy["epsilon"],
        privacy["delta"],
        privacy["accountant"],
        privacy["noise_multiplier"],
        privacy["iterations"],
    )

    answered = training_examples(synthetic)
    right = proposed_right(synthetic)
    if right is not None:
        log.info(
            "answers solved from the questions: %d of %d samples state one arithmetic expression; the "
            "proposer had %d of those right",
            len(answered),
            len(synthetic),
            right,
        )
    if len(answered) < len(synthetic):
        log.warning(
            "dropped %d of %d synthetic samples that have no answer; training on the other %d",
            len(synthetic) - len(answered),
            len(synthetic),
            len(answered),
        )
    start = time.perf_counter()
    (out / CURVE_FILE).unlink(missing_ok=True)  # the training is redone on resume, its curve with it
    curve = HeldOutCurve(
        lambda policy, tag: evaluate_heldout(cfg, policy, tokenizer, split.heldout, tag),
        cfg.eval.every_steps or 0,
        out / CURVE_FILE,
    )
    if answered:
        model, sft_steps = train_sft(cfg, model, tokenizer, answered, out / "sft")
        curve.offset = sft_steps  # the curve's steps are the run's: SFT's, then GRPO's
        model, grpo_steps = train_grpo(cfg, model, tokenizer, answered, out / "grpo", curve)
    else:
        log.warning(
            "no synthetic sample has an answer: nothing to train on, so the server keeps its untrained "
            "policy (the policy could not write usable question/answer pairs; try a stronger model or "
            "more dpsda.samples)"
        )
        sft_steps = grpo_steps = 0
    train_seconds = time.perf_counter() - start - curve.seconds  # the curve's evaluations left out
    model.save_pretrained(str(out / "final"))
    after = evaluate(model, "after") if cfg.eval.after else None
    steps = sft_steps + grpo_steps
    summary = comm.summary()
    results = {
        "name": cfg.name,
        "method": "dpsda",
        "steps": steps,
        "sft_steps": sft_steps,
        "grpo_steps": grpo_steps,
        "train_seconds": round(train_seconds, 1),
        "seconds_per_step": round(train_seconds / max(steps, 1), 2),
        "peak_rss_mb": round(peak_rss_mb()),
        "curve_eval_seconds": round(curve.seconds, 1),
        "before": to_json(before),
        "after": to_json(after),
        "communication": {k: summary[k] for k in COMMUNICATION_KEYS},
        "selection": None,  # every client votes on every sample: no expert selection
        "privacy": privacy,
        "synthetic": {
            "samples": len(synthetic),
            "with_answer": len(answered),  # the ones trained on
            "answers": cfg.dpsda.answers,
            "proposed_right": proposed_right(synthetic),
            "file": SYNTHETIC_FILE,
        },
        "split": split_info,
        "transport": {"kind": cfg.federation.transport, "clients": len(split.clients)},
    }
    write_json_atomic(out / "results.json", results)
    log.info(
        "\n%s\ncommunication: %d PE iterations, %.1f KB down, %.1f KB up; "
        "epsilon %.3f at delta %g\nresults: %s",
        accuracy_table(before, after),
        comm.rounds,
        comm.bytes_down / 1e3,
        comm.bytes_up / 1e3,
        privacy["epsilon"],
        privacy["delta"],
        out / "results.json",
    )
    return results


def training_examples(synthetic: list[tuple[Sample, float]]) -> list[Example]:
    """The synthetic samples the server trains on: those with an answer. A sample without one is no
    training target: SFT would teach an empty ``<answer></answer>`` and GRPO could reward only the
    format (the full suite's first dpsda-fl run on SmolLM2-135M collapsed that way)."""
    return [
        Example(f"syn-{i}", s.domain, s.question, s.answer.strip())
        for i, (s, _) in enumerate(synthetic)
        if s.answer.strip()
    ]


def proposed_right(synthetic: list[tuple[Sample, float]]) -> int | None:
    """How many samples trained on had their solved answer as proposed; None: answers not solved."""
    solved = [s for s, _ in synthetic if s.proposed is not None and s.answer]
    if not any(s.proposed is not None for s, _ in synthetic):
        return None
    return sum(normalise_answer(s.proposed or "") == normalise_answer(s.answer) for s in solved)


def write_synthetic(path: Path, synthetic: list[tuple[Sample, float]]) -> None:
    rows = [({k: x for k, x in dataclasses.asdict(s).items() if x is not None}, v) for s, v in synthetic]
    lines = [json.dumps({**row, "votes": round(v, 4)}) + "\n" for row, v in rows]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(lines))
    tmp.replace(path)


def read_synthetic(path: Path) -> list[tuple[Sample, float]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        (Sample(r["question"], r["answer"], r["domain"], r.get("proposed")), float(r["votes"])) for r in rows
    ]


def train_sft(
    cfg: FedGRPOConfig, model: Any, tokenizer: Any, examples: list[Example], out: Path
) -> tuple[Any, int]:
    """``dpsda.sft_steps`` of TRL SFT on prompt -> ``<answer>..</answer>`` (the client experts' rows)."""
    p = cfg.dpsda
    if p.sft_steps == 0:
        return model, 0
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=str(out),
        max_steps=p.sft_steps,
        learning_rate=p.sft_learning_rate,
        per_device_train_batch_size=p.sft_batch_size,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=cfg.seed,
        use_cpu=cfg.run.device == "cpu",
        bf16=False,
        disable_tqdm=True,
        max_length=512,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=sft_dataset(examples, cfg.model.worked_example),
        processing_class=tokenizer,
        peft_config=lora_config(cfg.model.lora) if cfg.model.lora.enabled else None,
    )
    trainer.remove_callback(PrinterCallback)  # our log lines report progress, not printed dicts
    trainer.train()
    shutil.rmtree(out, ignore_errors=True)
    return trainer.model, trainer.state.global_step


def train_grpo(
    cfg: FedGRPOConfig,
    model: Any,
    tokenizer: Any,
    examples: list[Example],
    out: Path,
    curve: HeldOutCurve | None = None,
) -> tuple[Any, int]:
    """GRPO with FedGRPO's ``grpo`` settings, rewarded by the synthetic answers (exact answer + format);
    ``curve`` (with ``eval.every_steps``) evaluates the held-out set along the way."""
    steps = cfg.dpsda.grpo_steps
    if steps == 0:
        return model, 0
    from peft import PeftModel
    from transformers.trainer_utils import SaveStrategy
    from trl import GRPOTrainer

    if steps is not None:
        cfg = cfg.model_copy(update={"grpo": {**cfg.grpo, "max_steps": steps}})
    args = cfg.grpo_arguments(out)
    args.save_strategy = SaveStrategy.NO  # one short training after the release: nothing to resume
    fresh_lora = cfg.model.lora.enabled and not isinstance(model, PeftModel)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[answer_reward(examples)],
        args=args,
        train_dataset=grpo_dataset(examples, cfg.model.worked_example),
        processing_class=tokenizer,
        peft_config=lora_config(cfg.model.lora) if fresh_lora else None,
    )
    trainer.remove_callback(PrinterCallback)  # our log lines report progress, not printed dicts
    if curve is not None and cfg.eval.every_steps:
        trainer.add_callback(curve)
    trainer.train()
    shutil.rmtree(out, ignore_errors=True)
    return trainer.model, trainer.state.global_step
