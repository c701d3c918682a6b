"""The advantages TRL's GRPOTrainer puts into its loss equal the hand-calculated federated ones."""

from __future__ import annotations

from typing import Any

from fedgrpo.client import Client, Evaluation
from fedgrpo.config import load_config
from fedgrpo.data import Question
from fedgrpo.models.loading import load_policy, load_tokenizer
from fedgrpo.run.trl import make_trainer, train_dataset
from fedgrpo.selection import AllSelector
from fedgrpo.server import FederatedAdvantage
from fedgrpo.transport import InProcessTransport
from tests.helpers import hand_mean_aggregation

NAN = float("nan")


class TableEvaluator:
    """A client evaluator that answers every question with one fixed row of the reward matrix."""

    def __init__(self, row: list[float | None]) -> None:
        self.row = row

    def evaluate(self, question: str, candidates: list[str]) -> Evaluation:
        assert len(candidates) == len(self.row)
        method = "none" if all(r is None for r in self.row) else "answer"
        return Evaluation(list(self.row), method)


def test_trainer_uses_federated_advantages(tmp_path) -> None:
    g, n_questions = 4, 2
    cfg = load_config(
        "smoke",
        [
            f"grpo.num_generations={g}",
            f"grpo.per_device_train_batch_size={g * n_questions}",
            "grpo.max_steps=1",
            "federation.experts_per_question=3",
            "data.num_clients=4",
        ],
    )
    clients = [
        Client("a", [], evaluator=TableEvaluator([1.0, 0.0, 1.0, 0.0])),
        # correctness only (the untagged candidates get no format reward): the helper's [1.1, 0.1, 0.1]
        # shifted by 0.1, which the per-expert normalisation removes
        Client("b", [], evaluator=TableEvaluator([1.0, None, 0.0, 0.0])),
        Client("c", [], evaluator=TableEvaluator([None] * g)),  # does not hold the question
        Client("d", [], evaluator=TableEvaluator([0.5, NAN, 0.0, 1.0])),  # NaN: whole item rejected
    ]
    rewards = FederatedAdvantage(InProcessTransport(clients), AllSelector(), 4, g, "mean")
    questions = [Question(f"q{i}", "test", f"What is {i} + 1?") for i in range(n_questions)]
    tokenizer = load_tokenizer("tiny-random")
    trainer = make_trainer(
        cfg, load_policy("tiny-random"), tokenizer, train_dataset(questions, True), rewards, tmp_path / "ckpt"
    )
    # What TRL puts into its loss: the inputs of ``compute_loss``, the Trainer's public override point.
    # TRL shuffles a generation batch's rows before the loss, so each row is matched by its completion.
    used: list[tuple[str, float]] = []
    compute_loss = trainer.compute_loss

    def recording_compute_loss(model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        for ids, mask, advantage in zip(
            inputs["completion_ids"], inputs["completion_mask"], inputs["advantages"].tolist(), strict=True
        ):
            used.append((tokenizer.decode(ids[mask.bool()], skip_special_tokens=True), advantage))
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = recording_compute_loss  # type: ignore[method-assign]
    trainer.train()

    _, groups = rewards.drain()  # the federation's own record of the step: each group's candidates
    expected = hand_mean_aggregation()
    federated = [(text, expected[i]) for group in groups for i, text in enumerate(group.candidates)]
    assert len(used) == len(federated) == g * n_questions
    for text, advantage in used:  # every row's advantage is its candidate's federated one, each used once
        matches = [k for k, (t, a) in enumerate(federated) if t == text and abs(a - advantage) < 1e-5]
        assert matches, f"TRL used {advantage} for {text!r}: not its candidate's federated advantage"
        federated.pop(matches[0])
    assert rewards.total.rejected == {"non_finite": n_questions}
    assert rewards.total.rewards_received == n_questions * (4 + 3)
    assert rewards.total.abstentions == n_questions  # client c holds nothing: an abstention, not an error
