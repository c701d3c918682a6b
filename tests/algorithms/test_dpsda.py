"""The dpsda-fl baseline: Private Evolution's votes, noise and accounting, its config, and a tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import dp_accounting
import dp_accounting.rdp
import numpy as np
import pytest
import torch

from fedgrpo.algorithms.dpsda import evolution
from fedgrpo.algorithms.dpsda import train as dpsda
from fedgrpo.algorithms.dpsda.private_evolution import (
    Sample,
    VotingClient,
    calibrate_sigma,
    decode_histogram,
    encode_histogram,
    encode_request,
    epsilon_spent,
    nearest_neighbour_votes,
    sample_text,
    top_voted,
)
from fedgrpo.config import ConfigError, load_config
from fedgrpo.data import Example
from fedgrpo.run.curve import CURVE_FILE, read_curve
from fedgrpo.run.outcomes import load_outcomes
from fedgrpo.server.stats import RoundStats
from fedgrpo.storage.run_folder import RunExists
from tests.helpers import assert_outcomes_match

# FedGRPO's results.json keys (fedgrpo/run/experiment.py)
RUN_KEYS = {"name", "steps", "train_seconds", "seconds_per_step", "peak_rss_mb", "before", "after"}
RUN_KEYS |= {"communication", "selection", "split", "transport"}


def rdp_epsilon_by_hand(sigma: float, iterations: int, delta: float) -> float:
    """T Gaussian mechanisms composed one by one (the code composes one SelfComposedDpEvent)."""
    accountant = dp_accounting.rdp.RdpAccountant()
    for _ in range(iterations):
        accountant.compose(dp_accounting.GaussianDpEvent(sigma))
    return accountant.get_epsilon(delta)


def test_a_tiny_run_writes_results_with_the_accounted_epsilon_and_the_encoded_bytes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    over = [
        f"run.output_dir={out}",
        "dpsda.samples=6",
        "dpsda.iterations=2",
        "dpsda.variations=2",
        "dpsda.noise_multiplier=3.0",
        "dpsda.sft_steps=1",
        "dpsda.grpo_steps=1",
        "dpsda.max_new_tokens=8",
        "eval.before=false",
        "eval.max_per_domain=1",
        "eval.max_new_tokens=4",
    ]
    cfg = load_config("smoke", over)
    results = dpsda.run(cfg)

    assert set(results) >= RUN_KEYS and results == json.loads((out / "results.json").read_text())
    # the tiny random model writes no answer tag: nothing to train on, so nothing is trained
    assert results["synthetic"] == {
        "samples": 2,
        "with_answer": 0,
        "answers": "proposed",
        "proposed_right": None,
        "file": "synthetic.jsonl",
    }
    assert results["steps"] == 0 and (results["sft_steps"], results["grpo_steps"]) == (0, 0)
    assert results["before"] is None and set(results["after"]) == {"sums_1digit", "sums_2digit", "syllogism"}
    assert_outcomes_match(out, results)  # each question's outcome, as every method saves them
    privacy = results["privacy"]
    assert (privacy["noise_multiplier"], privacy["iterations"], privacy["delta"]) == (3.0, 2, 1e-5)
    assert privacy["epsilon"] == pytest.approx(rdp_epsilon_by_hand(3.0, 2, 1e-5), rel=1e-9)

    clients = cfg.data.num_clients
    rows = [json.loads(line) for line in (out / "evolution.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2] and all(len(r["samples"]) == 6 for r in rows)
    sent = [
        len(
            json.dumps(
                {
                    "kind": "pe_vote",
                    "iteration": r["iteration"],
                    "samples": [[s["question"], s["answer"]] for s in r["samples"]],
                },
                separators=(",", ":"),
            ).encode()
        )
        for r in rows
    ]
    comm = results["communication"]
    assert comm["fed/rounds"] == 2 and comm["fed/rejected_total"] == 0
    assert comm["fed/bytes_down"] == clients * sum(sent) == sum(r["bytes_down"] for r in rows)
    assert comm["fed/bytes_up"] == clients * 2 * 6 * 4  # float32 per sample, per client and iteration
    assert set(comm["fed/bytes_up_per_client"].values()) == {2 * 6 * 4}

    # 6 samples with 2 rewrites each: the 2 best-voted survive; they are the synthetic set at the end
    synthetic = [json.loads(line) for line in (out / "synthetic.jsonl").read_text().splitlines()]
    last = rows[-1]
    assert [s["question"] for s in synthetic] == [last["samples"][i]["question"] for i in last["kept"]]
    assert [s["votes"] for s in synthetic] == [last["votes"][i] for i in last["kept"]]
    assert len(synthetic) == 2 == results["synthetic"]["samples"]
    assert rows[1]["samples"][:2] == [rows[0]["samples"][i] for i in rows[0]["kept"]]
    with pytest.raises(RunExists, match="--resume"):
        dpsda.run(cfg)

    # --resume reuses the released set without asking the clients again; answered samples are trained
    # on, the unanswered one is dropped
    released = [
        {"question": "What is 2 + 5?", "answer": "7", "domain": "sums_1digit", "votes": 3.0},
        {"question": "What is 1 + 1?", "answer": "2", "domain": "sums_1digit", "votes": 2.0},
        {"question": "garbled", "answer": "", "domain": "sums_1digit", "votes": 1.0},
    ]
    (out / "synthetic.jsonl").write_text("".join(json.dumps(r) + "\n" for r in released))
    # (with a learning curve over its GRPO steps, counted after its 1 SFT step: at step 2 of 3, the
    # last being the run's own "after")
    cfg = load_config("smoke", [*over, "dpsda.grpo_steps=2", "eval.every_steps=2"])
    resumed = dpsda.run(cfg, resume=True)
    assert resumed["synthetic"] == {
        "samples": 3,
        "with_answer": 2,
        "answers": "proposed",
        "proposed_right": None,
        "file": "synthetic.jsonl",
    }
    assert (resumed["sft_steps"], resumed["grpo_steps"]) == (1, 2)
    points = read_curve(out / CURVE_FILE)
    assert [p["step"] for p in points] == [2]
    assert resumed["curve_eval_seconds"] >= points[0]["seconds"] >= 0  # (rounded to 0.1 s: CI shows 0.0)
    at_2 = load_outcomes(out, "step-2")
    assert at_2 is not None and set(at_2) == set(points[0]["accuracy"]) == set(resumed["after"])
    assert resumed["communication"] == comm and resumed["privacy"] == privacy  # nothing asked again
    assert len((out / "evolution.jsonl").read_text().splitlines()) == 2


def test_the_vote_histogram_without_noise_is_brute_force_nearest_neighbours() -> None:
    gen = torch.Generator().manual_seed(0)
    for trial in range(20):
        private = torch.randint(-3, 4, (40, 3), generator=gen).float()  # integer points: many exact ties
        samples = torch.randint(-3, 4, (7, 3), generator=gen).float()
        expected = [0] * 7
        for p in private.tolist():
            dists = [sum((a - b) ** 2 for a, b in zip(p, s, strict=True)) for s in samples.tolist()]
            expected[dists.index(min(dists))] += 1  # lowest index wins a tie
        assert nearest_neighbour_votes(private, samples).tolist() == expected, trial


def fixed_embedder(table: dict[str, list[float]]):  # noqa: ANN201 - a small test encoder
    return lambda texts: torch.tensor([table[t] for t in texts])


def test_a_clients_noise_has_std_sigma_around_its_true_votes() -> None:
    examples = [Example(f"e{i}", "d", f"q{i}", "1") for i in range(5)]
    samples = [("s0", "1"), ("s1", "2"), ("s2", "3")]
    table = {sample_text(e.question, e.answer): [0.0, float(i)] for i, e in enumerate(examples)}
    table |= {sample_text(q, a): [0.0, float(2 * i)] for i, (q, a) in enumerate(samples)}
    # examples at y = 0..4, samples at y = 0, 2, 4: 0,1 -> s0, 2,3 -> s1, 4 -> s2 (ties go to the lower)
    truth = np.array([2.0, 2.0, 1.0])
    client = VotingClient("c", examples, fixed_embedder(table), sigma=2.5, seed=7)
    population = [Sample(q, a, "d") for q, a in samples]
    requests = [encode_request(t, population) for t in range(1, 4001)]
    noise = np.stack([decode_histogram(client.handle(request), 3) - truth for request in requests])
    assert abs(noise.mean()) < 0.05
    assert noise.std() == pytest.approx(2.5, rel=0.03)
    assert np.corrcoef(noise[:, 0], noise[:, 1])[0, 1] == pytest.approx(0.0, abs=0.05)  # independent bins


def test_a_repeated_vote_request_gets_the_same_release_and_one_beyond_the_budget_none() -> None:
    """Asking again (a retry, or a second process serving it on Flower) averages nothing away; only
    the run's T iterations are answered."""
    examples = [Example(f"e{i}", "d", f"q{i}", "1") for i in range(3)]
    population = [Sample("s0", "1", "d"), Sample("s1", "2", "d")]
    table = {sample_text(e.question, e.answer): [float(i)] for i, e in enumerate(examples)}
    table |= {sample_text(s.question, s.answer): [float(i)] for i, s in enumerate(population)}
    client = VotingClient("c", examples, fixed_embedder(table), sigma=3.0, seed=7, iterations=2)
    request = encode_request(1, population)
    first = client.handle(request)
    again = VotingClient("c", examples, fixed_embedder(table), sigma=3.0, seed=7, iterations=2)
    assert again.handle(request) == first == client.handle(request)
    assert client.handle(encode_request(2, population)) != first  # fresh noise per iteration
    assert client.handle(encode_request(1, population[::-1])) != first  # and per request
    with pytest.raises(ValueError, match="iterations 1..2 only"):
        client.handle(encode_request(3, population))


class BrokenClient(VotingClient):
    """A client whose reply is malformed: the server must count it and go on."""

    def __init__(self, name: str, reply: bytes) -> None:
        super().__init__(name, [], fixed_embedder({}), 1.0, 0)
        self.reply = reply

    def handle(self, payload: bytes) -> bytes:
        return self.reply


def test_bad_histograms_are_rejected_counted_and_left_out_of_the_sum() -> None:
    population = [Sample("a", "1", "d"), Sample("b", "2", "d")]
    good = BrokenClient("good", encode_histogram(np.array([3.0, 1.0])))
    short = BrokenClient("short", b"\x00" * 5)
    nan = BrokenClient("nan", encode_histogram(np.array([np.nan, 1.0])))
    stats = RoundStats()
    total, down, up = evolution.collect_votes(
        1, population, evolution.in_process_exchange([good, short, nan]), stats
    )
    assert total.tolist() == [3.0, 1.0]
    assert stats.rejected["bad_histogram"] == 2 and up == 8 + 5 + 8
    assert down == 3 * len(encode_request(1, population))


def test_top_voted_thresholds_then_keeps_the_most_voted() -> None:
    votes = np.array([1.0, 9.0, 3.5, 9.0, -2.0])
    assert top_voted(votes, threshold=4.0, keep=2) == [1, 3]
    # only two clear the threshold: the rest are ranked by their raw (noisy) count, never dropped
    assert top_voted(votes, threshold=4.0, keep=4) == [1, 3, 2, 0]


@pytest.mark.parametrize(
    ("text", "question", "answer"),
    [
        ("Question: What is 2 + 5?\nAnswer: <answer>7</answer>", "What is 2 + 5?", "7"),
        ("Question: What is 3 + 4?\nAnswer: 7.", "What is 3 + 4?", "7"),  # no tags: the Answer line
        ("Question: What is 3 + 4? 7", "What is 3 + 4?", "7"),  # no label: a number after the "?"
        ("Question: Are all cats animals?\nanswer: Yes", "Are all cats animals?", "Yes"),
        ("Question: What is 5+5?\nAnswer: 10\nQuestion: What is 6+6?\nAnswer: 12", "What is 5+5?", "10"),
        ("\x14 57 ve what", "\x14 57 ve what", ""),  # nothing recoverable: kept, voted on, never trained
        ("Question: what? blah blah", "what? blah blah", ""),
        ("Question: What is 1 + 1?\nAnswer: " + "x" * 60, "What is 1 + 1?", ""),  # too long to be one
    ],
)
def test_generated_samples_are_parsed_tolerantly(text: str, question: str, answer: str) -> None:
    assert evolution.parse_sample(text, "sums") == Sample(question, answer, "sums")


def test_the_proposal_prompt_is_pes_own_and_never_the_solving_instruction() -> None:
    from fedgrpo.method.prompting import INSTRUCTION

    demos = [Example("q1", "sums", "What is 1 + 2?", "3")]
    messages = evolution.chat(evolution.proposal_prompt(demos))
    assert all(INSTRUCTION not in m["content"] for m in messages)
    assert "Question: What is 1 + 2?\nAnswer: <answer>3</answer>" in messages[-1]["content"]


def test_samples_with_an_answer_are_kept_before_better_voted_ones_without() -> None:
    population = [
        Sample("q0", "", "d"),
        Sample("q1", "1", "d"),
        Sample("q2", "", "d"),
        Sample("q3", "3", "d"),
    ]
    votes = np.array([9.0, 5.0, 8.0, 1.0])
    assert top_voted(evolution.answered_first(votes, population), threshold=4.0, keep=3) == [1, 3, 0]


def test_the_sft_data_from_a_synthetic_set_has_only_non_empty_answers() -> None:
    """The stale full-suite row's bug: samples without answers taught SFT ``<answer></answer>``."""
    from fedgrpo.client.experts import sft_dataset

    texts = ["Question: What is 2 + 5?\nAnswer: 7", "garbled", "Question: 3 + 3? <answer> </answer>"]
    synthetic = [(evolution.parse_sample(t, "sums_1digit"), 1.0) for t in texts]
    examples = dpsda.training_examples(synthetic)
    assert [(ex.question, ex.answer) for ex in examples] == [("What is 2 + 5?", "7")]
    rows = sft_dataset(examples, worked_example=False)
    completions = [row["completion"][0]["content"] for row in rows]
    assert completions == ["<answer>7</answer>"]


def test_a_target_epsilon_calibrates_sigma_with_dp_accounting() -> None:
    plan = dpsda.privacy_plan(load_config("smoke", ["dpsda.target_epsilon=2.0", "dpsda.iterations=4"]).dpsda)
    assert plan["epsilon"] <= 2.0 and plan["epsilon"] == pytest.approx(2.0, abs=1e-3)
    assert plan["noise_multiplier"] == pytest.approx(calibrate_sigma(2.0, 4, 1e-5, "rdp"))
    assert plan["epsilon"] == pytest.approx(rdp_epsilon_by_hand(plan["noise_multiplier"], 4, 1e-5), rel=1e-9)
    default = dpsda.privacy_plan(load_config("default").dpsda)  # smoke shrinks N and T
    assert default["noise_multiplier"] == 4.0 and default["iterations"] == 5
    assert default["epsilon"] == pytest.approx(epsilon_spent(4.0, 5, 1e-5, "rdp"))
    assert default["epsilon"] == pytest.approx(2.45, abs=0.005)  # as documented (N=64, T=5, sigma=4)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["dpsda.noise_multiplier=2", "dpsda.target_epsilon=1"], "not both"),
        (["dpsda.sft_steps=0", "dpsda.grpo_steps=0"], "trains nothing"),
        (["dpsda.iterations=0"], "dpsda.iterations"),
        (["dpsda.delta=1.5"], "dpsda.delta"),
        (["dpsda.accountant=moments"], "dpsda.accountant"),
        (["dpsda.samples=1"], "dpsda.samples"),
    ],
)
def test_bad_dpsda_settings_fail_validation_naming_the_field(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("smoke", overrides)


def test_settings_the_run_cannot_honour_fail_before_any_model_loads(tmp_path: Path) -> None:
    out = [f"run.output_dir={tmp_path / 'run'}"]
    with pytest.raises(ConfigError, match="target_epsilon=500"):
        dpsda.run(load_config("smoke", [*out, "dpsda.target_epsilon=500"]))
    deployment = ["federation.transport=flower-deployment", "flower.insecure=true", "flower.num_supernodes=2"]
    with pytest.raises(ConfigError, match="in_process or flower-simulation"):
        load_config("smoke", [*out, "method=dpsda-fl", *deployment])
    with pytest.raises(ConfigError, match="for Flower use fedgrpo run CONFIG method=dpsda-fl"):
        dpsda.run(load_config("smoke", [*out, "federation.transport=flower-simulation"]))
    with pytest.raises(ConfigError, match="data.num_auxiliary"):
        dpsda.run(load_config("smoke", [*out, "data.num_auxiliary=0"]))
    assert not (tmp_path / "run").exists()
