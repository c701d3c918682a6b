"""TRL's ``GRPOTrainer`` on the federated advantage, through TRL's public API but for one private name.

TRL does generation, clipping, KL and the loss; FedGRPO hands it one reward function (the
federated advantage, :class:`~fedgrpo.server.FederatedAdvantage`) and two callbacks: one completes
each checkpoint with the federation's state and a marker written last, one turns Ctrl-C into
"save, then stop" so that an interrupt can never be swallowed halfway through a step. For speed,
the policy instance reads each distinct prompt once (:func:`make_trainer`); no TRL method is
overridden. The one exception to TRL's public API: with ``run.share_prompts``,
:func:`fedgrpo.accel.trl_patch.score_completions_only` rebinds TRL's private
``trl.trainer.utils._use_triton`` (process-wide) so that its fused LM head projects only the
completion positions on the CPU too.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from datasets import Dataset
from transformers import TrainerCallback
from trl import GRPOTrainer

from fedgrpo.accel import speed_up_trainer_model
from fedgrpo.accel.trl_patch import score_completions_only
from fedgrpo.config import FedGRPOConfig, LoraSettings
from fedgrpo.data import Question
from fedgrpo.method.prompting import build_messages
from fedgrpo.run.curve import curve_point
from fedgrpo.server import GroupRecord
from fedgrpo.server.stats import RoundStats
from fedgrpo.storage.atomic import write_json_atomic
from fedgrpo.storage.checkpoints import COMPLETE_MARKER, STATE_FILE

log = logging.getLogger(__name__)


class TrainingReward(Protocol):
    """What a training method hands TRL as its one reward function: the federated advantage, or a
    central baseline's ground-truth reward. Its rounds feed ``metrics.jsonl``; its state is
    checkpointed."""

    __name__: str
    total: RoundStats

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]: ...

    def drain(self) -> tuple[RoundStats, list[GroupRecord]]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def train_dataset(questions: list[Question], worked_example: bool) -> Dataset:
    """What the server trains on: questions only. There is no answer column to leak."""
    return Dataset.from_list(
        [
            {
                "prompt": build_messages(q.question, worked_example),
                "qid": q.qid,
                "question": q.question,
                "domain": q.domain,
            }
            for q in questions
        ]
    )


class CompleteCheckpoints(TrainerCallback):
    """After TRL saves ``checkpoint-N``: the federation's state, then the ``COMPLETE`` marker, last."""

    def __init__(self, reward: TrainingReward) -> None:
        self.reward = reward

    def on_save(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        write_json_atomic(folder / STATE_FILE, self.reward.state_dict())
        (folder / COMPLETE_MARKER).write_text(str(state.global_step))


class StopOnInterrupt(TrainerCallback):
    """Ctrl-C (SIGINT) or SIGTERM during training: finish the step, save a checkpoint, stop.

    Python delivers KeyboardInterrupt wherever it happens to be, and a finaliser or a library
    callback can swallow it, letting the run go on as if nothing happened. Here the signal only sets a
    flag; the trainer checks it after every step. A second Ctrl-C interrupts at once.
    """

    def __init__(self) -> None:
        self.interrupted: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach only the main thread (a Flower ServerApp may run elsewhere)
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.interrupted = signal.Signals(signum).name
        log.warning("%s received: saving a checkpoint after this step, then stopping", self.interrupted)

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if self.interrupted is not None:
            control.should_save = True
            control.should_training_stop = True


class HeldOutCurve(TrainerCallback):
    """Every ``every`` steps (but the last), ``evaluate(model, tag)`` and a point in ``curve.jsonl``
    (:func:`fedgrpo.run.curve.curve_point`); ``seconds`` is what the evaluations took (the run leaves it
    out of its training time). ``offset``: the run's steps before this trainer's (dpsda-fl's SFT), so
    that a point's step is the run's."""

    def __init__(self, evaluate: Callable[[Any, str], Any], every: int, path: Path, offset: int = 0) -> None:
        self.evaluate, self.every, self.path, self.offset = evaluate, every, path, offset
        self.seconds = 0.0

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **_: Any) -> None:
        if model is not None:
            step, last = self.offset + state.global_step, self.offset + state.max_steps
            self.seconds += curve_point(self.path, step, last, self.every, self.evaluate, model)


def lora_config(lora: LoraSettings) -> Any:
    """PEFT's ``LoraConfig`` for the server policy, from ``model.lora``."""
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


def make_trainer(
    cfg: FedGRPOConfig,
    model: Any,
    tokenizer: Any,
    dataset: Dataset,
    reward: TrainingReward,
    checkpoints: Path,
) -> GRPOTrainer:
    """TRL's trainer on the federated advantage, with LoRA when the config asks for it.

    With ``run.share_prompts`` the policy's ``generate`` and its backbone's forward read each
    distinct prompt once (:func:`fedgrpo.accel.speed_up_trainer_model`): installed on the model
    instance, as TRL installs its own fused LM head, with the same numbers out; and TRL's fused LM
    head projects only the completion positions (:func:`score_completions_only`, TRL's private name)."""
    peft_config = lora_config(cfg.model.lora) if cfg.model.lora.enabled else None
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=cfg.grpo_arguments(checkpoints),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[CompleteCheckpoints(reward)],
    )
    tensorboard_in(trainer, checkpoints.parent / "tensorboard")
    score_completions_only(cfg.run.share_prompts)
    if cfg.run.share_prompts:
        speed_up_trainer_model(trainer.model)
    return trainer


def tensorboard_in(trainer: GRPOTrainer, folder: Path) -> None:
    """With ``grpo.report_to`` naming tensorboard, its events go to ``folder`` (the run folder's
    ``tensorboard/``) instead of transformers' default ``checkpoints/runs/<date>_<host>/``: the
    Trainer's TensorBoard callback is replaced by one given a writer there (its public argument)."""
    from transformers.integrations import TensorBoardCallback

    if trainer.pop_callback(TensorBoardCallback) is None:
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the same fallback as transformers' own callback
        from tensorboardX import SummaryWriter
    trainer.add_callback(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(folder))))
