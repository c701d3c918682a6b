"""Each client's expert model: a LoRA adapter trained on that client's private data only.

The paper's clients are "domain experts" with small models of their own. Here a client turns the
shared base model (``clients.model``) into its expert on its own labelled examples, with a PEFT
LoRA adapter, in one of two ways:

- ``sft`` (default): supervised fine-tuning (TRL's ``SFTTrainer``); the prompt is the one the client
  model is asked with during evaluation, the target is ``<answer>...</answer>``.
- ``grpo``: TRL's ``GRPOTrainer`` on the same prompts, rewarded by the client's own answer check
  (:class:`~fedgrpo.client.answer_scoring.AnswerEvaluator`'s exact correctness, shaped by
  :func:`~fedgrpo.method.answers.reward_for` as the server shapes a reward).
  It needs a base that already answers some questions right: with all rewards equal there is no
  group-relative signal.

Nothing leaves the client: the adapter is its own, and only the rewards it later produces are sent.

Adapters are cached per client under a key of (base model, the client's data, the training
settings), so ``fedgrpo train-clients`` and every later run reuse them. For memory, all clients load
the base model once and attach their adapters to it by name (:func:`load_experts`); a client's
evaluator switches to its adapter before each use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedgrpo.accel import speed_up_trainer_model
from fedgrpo.client.answer_scoring import AnswerEvaluator
from fedgrpo.client.private_training import DPSettings, dp_key_fields, train_private
from fedgrpo.data import Example
from fedgrpo.method.answers import reward_for
from fedgrpo.method.prompting import build_messages, completion_text
from fedgrpo.models.loading import cache_dir, load_policy, load_tokenizer

log = logging.getLogger(__name__)

EXPERT_FORMAT = 1  # bump when the training recipe changes, so old cached adapters are not reused
META_FILE = "expert.json"


@dataclass(frozen=True)
class ExpertRecipe:
    """Everything that determines a trained adapter besides the client's data."""

    base_model: str
    method: str = "sft"  # "sft" or "grpo"
    epochs: int = 2
    learning_rate: float = 1e-3
    batch_size: int = 8
    lora_r: int = 8
    lora_alpha: int = 16
    worked_example: bool = False
    seed: int = 0
    num_generations: int = 4  # grpo only: completions sampled per question
    max_completion_length: int = 32  # grpo only
    dp: DPSettings | None = None  # sft only: DP-SGD, see fedgrpo.client.private_training; None: off

    @classmethod
    def from_settings(cls, base_model: str, settings: Any, seed: int) -> ExpertRecipe:
        """The recipe of ``clients.expert`` (an ``ExpertTraining``); ``none`` trains as ``sft``."""
        fields = {f: getattr(settings, f) for f in cls.__dataclass_fields__ if hasattr(settings, f)}
        fields["method"] = "sft" if settings.method == "none" else settings.method
        fields["dp"] = DPSettings.from_settings(settings.dp)
        return cls(base_model=base_model, seed=seed, **fields)


def default_cache_dir() -> Path:
    return cache_dir() / "experts"


def expert_key(recipe: ExpertRecipe, examples: list[Example]) -> str:
    """A hash of recipe, format version and the client's (question, answer) pairs, in order."""
    fields = {k: v for k, v in asdict(recipe).items() if k != "dp"} | dp_key_fields(recipe.dp)
    if recipe.method == "sft":  # GRPO-only settings never change an SFT adapter (nor its old keys)
        for name in ("method", "num_generations", "max_completion_length"):
            fields.pop(name)
    digest = hashlib.sha256()
    digest.update(json.dumps([EXPERT_FORMAT, fields], sort_keys=True).encode())
    for ex in examples:
        digest.update(f"{ex.domain}\x00{ex.question}\x00{ex.answer}\x01".encode())
    return digest.hexdigest()[:20]


def sft_dataset(examples: list[Example], worked_example: bool) -> Any:
    """Conversational prompt/completion rows: TRL then trains on the completion tokens only."""
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": build_messages(ex.question, worked_example),
                "completion": [{"role": "assistant", "content": f"<answer>{ex.answer}</answer>"}],
            }
            for ex in examples
        ]
    )


def grpo_dataset(examples: list[Example], worked_example: bool) -> Any:
    """Conversational prompts; the question column reaches the reward function by name."""
    from datasets import Dataset

    return Dataset.from_list(
        [{"prompt": build_messages(ex.question, worked_example), "question": ex.question} for ex in examples]
    )


def answer_reward(examples: list[Example]) -> Callable[..., list[float]]:
    """A TRL reward function: the client's own answer check of each completion (the paper's AE),
    shaped as the server shapes a reward (:func:`~fedgrpo.method.answers.reward_for`)."""
    evaluator = AnswerEvaluator(examples)

    def reward(completions: list[Any], question: list[str], **_: Any) -> list[float]:
        texts = [completion_text(c) for c in completions]
        scores = [evaluator.evaluate(q, [t]).rewards[0] for t, q in zip(texts, question, strict=True)]
        # every question is the client's own (None: not found, scored 0)
        return [0.0 if r is None else reward_for(r, t) for r, t in zip(scores, texts, strict=True)]

    reward.__name__ = "client_answer_check"
    return reward


def lora_config(recipe: ExpertRecipe) -> Any:
    """A fresh LoRA adapter on every linear layer, per the recipe's rank and alpha."""
    from peft import LoraConfig

    return LoraConfig(
        r=recipe.lora_r, lora_alpha=recipe.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM"
    )


def local_trainer(
    recipe: ExpertRecipe,
    model: Any,
    tokenizer: Any,
    examples: list[Example],
    out: Path,
    *,
    peft_config: Any = None,
    max_steps: int = -1,
    use_cpu: bool = True,
) -> Any:
    """TRL's SFT or GRPO trainer on one client's examples, per ``recipe.method``.

    ``peft_config`` adds a fresh adapter; without it ``model`` must already be a PEFT model whose
    active adapter is trained (fedpetuning's clients continue the server's averaged adapter).
    ``max_steps`` > 0 bounds the optimiser steps instead of ``recipe.epochs``. Printed log dicts
    are off: callers report progress in their own log lines.
    """
    from transformers import PrinterCallback

    common = dict(
        output_dir=str(out),
        num_train_epochs=recipe.epochs,
        max_steps=max_steps,
        learning_rate=recipe.learning_rate,
        per_device_train_batch_size=recipe.batch_size,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=recipe.seed,
        use_cpu=use_cpu,
        bf16=False,
        disable_tqdm=True,
        # TRL checkpoints activations by default, recomputing the forward in the backward pass; a
        # client's small batches fit in memory without it, and the shared-prefix forward needs the cache.
        gradient_checkpointing=False,
    )
    if recipe.method == "sft":
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**common, max_length=512),
            train_dataset=sft_dataset(examples, recipe.worked_example),
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    elif recipe.method == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[answer_reward(examples)],
            args=GRPOConfig(
                **common,
                num_generations=recipe.num_generations,
                max_completion_length=recipe.max_completion_length,
                temperature=0.7,
                beta=0.0,
            ),
            train_dataset=grpo_dataset(examples, recipe.worked_example),
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    else:
        raise ValueError(f"unknown local training method {recipe.method!r}; use 'sft' or 'grpo'")
    trainer.remove_callback(PrinterCallback)
    speed_up_trainer_model(trainer.model, generation=False)  # rows sharing a prompt start read it once
    return trainer


def training_summary(trainer: Any) -> dict[str, Any]:
    """Steps, first and final loss, and (GRPO) first and final reward from a trained trainer's log."""
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]  # grpo only
    return {
        "steps": trainer.state.global_step,
        "first_loss": round(losses[0], 4) if losses else None,
        "final_loss": round(losses[-1], 4) if losses else None,
        "first_reward": round(rewards[0], 4) if rewards else None,
        "final_reward": round(rewards[-1], 4) if rewards else None,
    }


def train_expert(recipe: ExpertRecipe, client: str, examples: list[Example], folder: Path) -> dict[str, Any]:
    """LoRA SFT or GRPO of the base model on one client's examples into ``folder``; returns its metadata.

    The adapter is written to a temporary folder and moved into place only when complete, so a
    killed training never leaves an adapter that looks finished.
    """
    if not examples:
        raise ValueError(f"client {client} holds no examples to train an expert on")
    start = time.perf_counter()
    tokenizer = load_tokenizer(recipe.base_model)
    model = load_policy(recipe.base_model)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{client}-", dir=folder.parent))
    try:
        if recipe.dp is not None:
            summary = train_private(recipe, model, tokenizer, examples, tmp, lora_config(recipe))
        else:
            trainer = local_trainer(
                recipe, model, tokenizer, examples, tmp / "trainer", peft_config=lora_config(recipe)
            )
            result = trainer.train()
            trainer.model.save_pretrained(tmp / "adapter")
            shutil.rmtree(tmp / "trainer", ignore_errors=True)
            summary = {**training_summary(trainer), "train_loss": round(float(result.training_loss), 4)}
        meta = {
            "client": client,
            "method": recipe.method,
            "examples": len(examples),
            **summary,
            "train_seconds": round(time.perf_counter() - start, 1),
            "recipe": asdict(recipe),
            "format": EXPERT_FORMAT,
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same adapter first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def ensure_experts(
    recipe: ExpertRecipe, clients: dict[str, list[Example]], cache: Path | None = None
) -> tuple[dict[str, Path], dict[str, str]]:
    """Every client's adapter folder, training those not cached yet, one after another.

    Returns the folders and, per client whose training failed, the reason: one client's failure
    leaves that client out, not the whole federation.
    """
    cache = cache or default_cache_dir()
    folders: dict[str, Path] = {}
    failed: dict[str, str] = {}
    trained_examples, trained_seconds = 0, 0.0  # for the estimate of what is left
    keys = {client: expert_key(recipe, examples) for client, examples in clients.items()}
    for i, (client, examples) in enumerate(clients.items(), 1):
        folder = cache / keys[client]
        if (folder / META_FILE).exists():
            log.info("expert %d/%d %s: cached at %s", i, len(clients), client, folder)
            folders[client] = folder
            continue
        eta = ""
        if trained_examples:
            left = sum(
                len(ex)
                for c, ex in list(clients.items())[i - 1 :]
                if not (cache / keys[c] / META_FILE).exists()
            )
            eta = f" (about {left * trained_seconds / trained_examples / 60:.1f} min left for the experts)"
        log.info(
            "expert %d/%d %s: LoRA %s of %s on its %d private examples%s",
            i,
            len(clients),
            client,
            recipe.method.upper() + (" (DP-SGD)" if recipe.dp else ""),
            recipe.base_model,
            len(examples),
            eta,
        )
        try:
            meta = train_expert(recipe, client, examples, folder)
        except Exception as err:
            failed[client] = f"expert training failed: {type(err).__name__}: {err}"
            log.error("expert %s: %s", client, failed[client])
            continue
        trained_examples += len(examples)
        trained_seconds += meta["train_seconds"]
        reward = ""
        if meta["first_reward"] is not None:
            reward = f", reward {meta['first_reward']} -> {meta['final_reward']}"
        log.info(
            "expert %s: %d steps, loss %s -> %s%s, %.0f s",
            client,
            meta["steps"],
            meta["first_loss"],
            meta["final_loss"],
            reward,
            meta["train_seconds"],
        )
        folders[client] = folder
    return folders, failed


def read_meta(folder: Path) -> dict[str, Any]:
    return json.loads((folder / META_FILE).read_text())


def load_experts(base: Any, folders: dict[str, Path]) -> Any:
    """One PEFT model holding every client's adapter by client name, on the single shared base."""
    from peft import PeftModel

    model = None
    for client, folder in folders.items():
        if model is None:
            model = PeftModel.from_pretrained(base, str(folder / "adapter"), adapter_name=client)
        else:
            model.load_adapter(str(folder / "adapter"), adapter_name=client)
    if model is None:
        raise ValueError("no expert adapters to load")
    model.requires_grad_(False)
    model.eval()
    return model
