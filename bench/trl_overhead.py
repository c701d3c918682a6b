"""FedGRPO's step time against plain TRL doing the same work: what federating the rewards costs.

Two GRPO trainers in one process, both built by ``make_trainer`` (same model weights, arguments,
LoRA, batch, seeds and training questions), differing only in the reward function:

* ``fedgrpo``: the federated advantage over an in-process transport; the clients score candidates
  by the answers they hold (answer-based evaluation), with the run's format reward;
* ``trl``: a local reward function that knows the answers: the same exact scorer plus the same
  format reward, TRL centring it per group as usual.

Their steps alternate (fedgrpo, trl, fedgrpo, trl, ...): each trainer runs in its own thread and only
the one holding the turn runs, so machine load falls on both alike. Every step is reseeded the same
way in both, so from the same weights both sample the same completions (with answer-based rewards and
``selector: all`` the federated advantage is the ground-truth reward's, so the updates agree up to
float rounding: ``same_rewards_per_step`` checks it; once rounding has moved one sampled token, later
steps can differ). A step's time runs from its ``on_step_begin`` to the next one (or
to the end of training), logging included; the first step of each is dropped. Prints one JSON line
per trainer and a summary line: the ratio of mean seconds per step (aim: 1.05 or less), the median
of the per-step ratios, and the bytes FedGRPO moved per step. Run from the repository root:

    python bench/trl_overhead.py --steps 6                       # smoke preset: tiny random model
    python bench/trl_overhead.py --preset default --steps 6 federation.selector=all \\
        clients.model=null clients.expert.method=none            # SmolLM2, answer-based
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from transformers import ProgressCallback, TrainerCallback, set_seed
from transformers.trainer_utils import SaveStrategy

from fedgrpo.config import load_config
from fedgrpo.data import Example, score_answer
from fedgrpo.method.answers import extract_answer, reward_for
from fedgrpo.method.prompting import completion_text
from fedgrpo.models.loading import load_policy, load_tokenizer
from fedgrpo.run.assemble import build_advantage, build_selector
from fedgrpo.run.metrics import MetricsCallback
from fedgrpo.run.trl import CompleteCheckpoints, make_trainer, train_dataset
from fedgrpo.server import FederatedAdvantage
from fedgrpo.simulation.clients import build_clients
from fedgrpo.simulation.data import build_data
from fedgrpo.transport import InProcessTransport

NAMES = ("fedgrpo", "trl")


class GroundTruthReward:
    """Plain TRL's reward: what an answer-based client computes, with the answers held locally."""

    __name__ = "ground_truth"

    def __init__(self, examples: list[Example], format_reward: float) -> None:
        self.by_qid = {e.qid: e for e in examples}
        self.format_reward = format_reward
        self.last: list[float] = []

    def __call__(self, prompts: list[Any], completions: list[Any], qid: list[str], **_: Any) -> list[float]:
        texts = [completion_text(c) for c in completions]
        self.last = [
            reward_for(score_answer(self.by_qid[q], extract_answer(t)), t, self.format_reward)
            for q, t in zip(qid, texts, strict=True)
        ]
        return self.last


class Turns:
    """One trainer's step at a time, in turn; a finished (or failed) trainer never blocks the other."""

    def __init__(self) -> None:
        self.turn = NAMES[0]
        self.done: set[str] = set()
        self.cond = threading.Condition()

    def take(self, me: str) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == me or self.done >= set(NAMES) - {me})
            self.turn = me

    def wait_all_done(self) -> None:
        """Keeps a finished trainer's thread alive until the other is done too: here, a thread that
        exited while the other trained made the other's torch ops about 30 times slower."""
        with self.cond:
            self.cond.wait_for(lambda: self.done >= set(NAMES))

    def hand_over(self, me: str, finished: bool = False) -> None:
        with self.cond:
            if finished:
                self.done.add(me)
            self.turn = next((n for n in NAMES if n != me and n not in self.done), me)
            self.cond.notify_all()


class StepClock(TrainerCallback):
    """Waits for the turn at each step, reseeds, and times the step up to the next one."""

    def __init__(self, name: str, turns: Turns, seed: int, rewards: Callable[[], list[float]]) -> None:
        self.name, self.turns, self.seed, self.rewards = name, turns, seed, rewards
        self.seconds: list[float] = []
        self.step_rewards: list[list[float]] = []
        self._start: float | None = None

    def _stop_clock(self) -> None:
        if self._start is not None:
            self.seconds.append(time.perf_counter() - self._start)
            self._start = None

    def on_step_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if self._start is not None:
            self._stop_clock()
            self.turns.hand_over(self.name)
        self.turns.take(self.name)
        set_seed(self.seed + state.global_step)  # the same sampling in both trainers
        self._start = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        self.step_rewards.append([round(r, 6) for r in self.rewards()])

    def on_train_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        self._stop_clock()
        self.turns.hand_over(self.name, finished=True)


def _federated_rewards(advantage: FederatedAdvantage) -> list[float]:
    """The last round's reward per candidate (mean over the experts that scored it, -1 for none)."""
    return [float(r) for m in advantage.last_rewards for r in torch.nan_to_num(m.nanmean(0), nan=-1.0)]


def _summary(seconds: list[float]) -> dict[str, Any]:
    timed = seconds[1:] or seconds
    return {
        "steps_timed": len(timed),
        "seconds_per_step": round(statistics.mean(timed), 3),
        "median": round(statistics.median(timed), 3),
        "step_seconds": [round(s, 3) for s in seconds],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = load_config(args.preset, [*args.overrides, f"grpo.max_steps={args.steps}"])
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    split = build_data(cfg)
    if not split.ground_truth:
        raise SystemExit("needs answer-based rewards: data.setting must be ground-truth")
    transport = InProcessTransport(build_clients(cfg, split), cfg.flower.max_message_bytes)
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    turns = Turns()
    errors: dict[str, BaseException] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        selector, _ = build_selector(
            cfg, split.auxiliary, transport, tokenizer, out, False, split.client_domains
        )
        advantage = build_advantage(cfg, transport, selector)
        truth = GroundTruthReward(split.train_examples, cfg.federation.format_reward)
        trainers, clocks = {}, {}
        for name, reward in (("fedgrpo", advantage), ("trl", truth)):
            set_seed(cfg.seed)  # the same LoRA initialisation
            model = load_policy(cfg.model.name_or_path, cfg.model.dtype)
            dataset = train_dataset(split.train_questions, cfg.model.worked_example)
            # built by make_trainer too, so both get the same arguments and LoRA; only the reward differs
            trainer = make_trainer(cfg, model, tokenizer, dataset, cast(Any, reward), out / name)
            trainer.remove_callback(ProgressCallback)  # two threads' progress bars would interleave
            trainer.args.save_strategy = SaveStrategy.NO  # checkpoints are not a per-step cost
            if name == "trl":
                trainer.remove_callback(CompleteCheckpoints)
            else:
                trainer.add_callback(MetricsCallback(out / "metrics.jsonl", advantage))  # as in a run
            rewards = (lambda: _federated_rewards(advantage)) if name == "fedgrpo" else (lambda: truth.last)
            clocks[name] = StepClock(name, turns, cfg.seed, rewards)
            trainer.add_callback(clocks[name])
            trainers[name] = trainer

        def train(name: str) -> None:
            try:
                trainers[name].train()
            except BaseException as err:  # reported below; never leave the other trainer waiting
                errors[name] = err
                turns.hand_over(name, finished=True)
            finally:
                turns.wait_all_done()

        threads = [threading.Thread(target=train, args=(n,), name=n) for n in NAMES]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise RuntimeError(f"training failed: {errors}") from next(iter(errors.values()))
    fed, plain = clocks["fedgrpo"], clocks["trl"]
    for name, clock in clocks.items():
        print(json.dumps({"trainer": name, **_summary(clock.seconds)}))
    pairs = [f / p for f, p in zip(fed.seconds[1:], plain.seconds[1:], strict=False) if p > 0]
    comm, steps = advantage.total, max(len(fed.seconds), 1)
    summary = {
        "preset": args.preset,
        "overrides": " ".join(args.overrides),
        "steps": args.steps,
        "ratio": round(
            _summary(fed.seconds)["seconds_per_step"] / _summary(plain.seconds)["seconds_per_step"], 3
        ),
        "median_step_ratio": round(statistics.median(pairs), 3) if pairs else None,
        "bytes_per_step": {
            "down": round(comm.bytes_down / steps),
            "up": round(comm.bytes_up / steps),
            "total": round((comm.bytes_down + comm.bytes_up) / steps),
        },
        "rounds": comm.rounds,
        "fed_seconds_per_step": round(comm.seconds / steps, 4),
        "same_rewards": fed.step_rewards == plain.step_rewards,
        # per step: a float-rounding difference in the update can change a sampled token later on
        "same_rewards_per_step": [a == b for a, b in zip(fed.step_rewards, plain.step_rewards, strict=False)],
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
