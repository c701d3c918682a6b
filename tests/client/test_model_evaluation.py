"""Model-based evaluation (ME) and the dual gate, with real (tiny) client models and no mocks.

One client model is tiny-random overfitted on two questions, so it *knows* their answers; another is
a random GPT-2 with its own character-level tokenizer, to show that a client's model and tokenizer
need not match the server's.
"""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from fedgrpo.client import AnswerEvaluator, Client, DualEvaluator, Evaluation, ModelEvaluator, ScoringSettings
from fedgrpo.data import Example, make_qid
from fedgrpo.method.answers import answer_key
from fedgrpo.method.prompting import build_messages
from fedgrpo.models.loading import CHATML_TEMPLATE, load_policy, load_tokenizer
from fedgrpo.protocol import (
    CompetenceItem,
    CompetenceReply,
    CompetenceRequest,
    RewardItem,
    RewardReply,
    RewardRequest,
    decode,
    encode,
)

SUM = ("What is 3 + 4?", "7")
DOZEN = ("How many eggs are in a dozen?", "12")
CANDIDATES = ["3 + 4 = 7. <answer>7</answer>", "<answer>8</answer>", "7 with no tags", "<answer>7.0</answer>"]


def _greedy_answers(model, tokenizer) -> list[str | None]:
    ev = ModelEvaluator(model, tokenizer, ScoringSettings(samples=1, max_new_tokens=8))
    return [ev.answer(q) for q, _ in (SUM, DOZEN)]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def knowing():
    """tiny-random overfitted until its greedy answers to SUM and DOZEN are right (a few seconds)."""
    tokenizer, model = load_tokenizer("tiny-random"), load_policy("tiny-random")
    rows = []
    for question, answer in (SUM, DOZEN):
        prompt = tokenizer.apply_chat_template(
            build_messages(question), tokenize=False, add_generation_prompt=True
        )
        # Tokenized apart, like the likelihood scorer does, so both see the same ids.
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(f"<answer>{answer}</answer><|im_end|>", add_special_tokens=False)["input_ids"]
        rows.append((p, c))
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    for r, (p, c) in enumerate(rows):
        ids[r, : len(p) + len(c)] = torch.tensor(p + c)
        mask[r, : len(p) + len(c)] = 1
        labels[r, len(p) : len(p) + len(c)] = torch.tensor(c)
    torch.manual_seed(0)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(150):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        # Stop once greedy is right and the answer is confident enough to survive sampling at 0.7.
        if step % 10 == 9 and loss.item() < 0.03 and _greedy_answers(model, tokenizer) == ["7", "12"]:
            break
    assert _greedy_answers(model, tokenizer) == ["7", "12"], "the client model did not learn its answers"
    return model, tokenizer


@pytest.fixture(scope="module")
def gpt2_client():
    """A different architecture and vocabulary: random GPT-2 with a character-level BPE of 300 ids."""
    return _gpt2(chat_template=True)


def _char_tokenizer(chat_template: bool, pad: bool = True) -> PreTrainedTokenizerFast:
    specials = ["<|pad|>", "<|im_start|>", "<|im_end|>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(["what is the answer", "how many are there", "<answer>1</answer>"] * 3, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", unk_token="<unk>", pad_token="<|pad|>" if pad else None
    )
    if chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def _gpt2(chat_template: bool, pad: bool = True) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast]:
    tokenizer = _char_tokenizer(chat_template, pad)
    config = GPT2Config(
        n_layer=2,
        n_embd=64,
        n_head=2,
        n_positions=1024,
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(1)
    return GPT2LMHeadModel(config), tokenizer


def test_answer_key_matches_equal_numbers_only() -> None:
    assert answer_key("7") == answer_key("7.0") == answer_key(" 7. ") == answer_key("+7")
    assert answer_key("1,000") == answer_key("1000")
    assert answer_key("3/4") == answer_key("0.75")
    assert answer_key("Paris") == answer_key(" paris ")
    assert answer_key("7") != answer_key("8")
    assert answer_key("1/0") != answer_key("0") and answer_key("x7") != answer_key("7")


def test_agreement_scores_against_the_client_models_own_majority_answer(knowing) -> None:
    model, tokenizer = knowing
    model.train()
    tokenizer.padding_side = "right"
    rng_before = torch.get_rng_state()
    ev = ModelEvaluator(model, tokenizer)  # agreement, 4 samples at temperature 0.7
    first = ev.evaluate(SUM[0], CANDIDATES)
    assert first.method == "model"
    assert first.rewards == pytest.approx([1.0, 0.0, 0.0, 1.0])
    assert ev.evaluate(SUM[0], CANDIDATES) == first  # deterministic per question
    assert ev.answer(DOZEN[0]) == "12"
    # The client's model, tokenizer and the caller's RNG are left as they were found.
    assert model.training and tokenizer.padding_side == "right"
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_a_question_asked_again_is_answered_from_the_kept_answer(knowing) -> None:
    """Its own answer is seeded by the question alone: kept, it is the same, without generating."""
    for cache_size, generations in ((4096, 1), (0, 3)):
        ev = ModelEvaluator(*knowing, ScoringSettings(cache_size=cache_size))
        calls: list[list[str]] = []
        sample = ev._sample
        ev._sample = lambda qs, sample=sample, calls=calls: calls.append(qs) or sample(qs)
        results = [ev.evaluate(SUM[0], CANDIDATES) for _ in range(3)]
        assert results[0].rewards == pytest.approx([1.0, 0.0, 0.0, 1.0])
        assert results[0] == results[1] == results[2]
        assert len(calls) == generations, cache_size


def test_agreement_with_one_greedy_sample(knowing) -> None:
    ev = ModelEvaluator(*knowing, ScoringSettings(samples=1))
    result = ev.evaluate(DOZEN[0], ["<answer>12</answer>", "<answer>12.0</answer>", "<answer>7</answer>"])
    assert result == Evaluation([1.0, 1.0, 0.0], "model")


def test_a_client_model_that_gives_no_answer_cannot_judge() -> None:
    # An <answer>X</answer> block takes at least 7 tokens in this tokenizer, so 4 can never hold one.
    ev = ModelEvaluator(
        load_policy("tiny-random"),
        load_tokenizer("tiny-random"),
        ScoringSettings(samples=2, max_new_tokens=4),
    )
    assert ev.answer(SUM[0]) is None
    assert ev.evaluate(SUM[0], CANDIDATES) == Evaluation([None] * len(CANDIDATES), "none")


def test_likelihood_prefers_the_answer_the_client_model_believes(knowing) -> None:
    ev = ModelEvaluator(*knowing, ScoringSettings(mode="likelihood"))
    result = ev.evaluate(
        SUM[0], ["<answer>7</answer>", "<answer>8</answer>", "no answer", "<answer></answer>"]
    )
    assert result.method == "model"
    right, wrong, none, empty = result.rewards
    assert right > wrong
    assert all(0.0 <= r <= 1.0 for r in (right, wrong))
    assert none == 0.0 and empty == 0.0
    dozen = ev.evaluate(DOZEN[0], ["<answer>7</answer>", "<answer>12</answer>"]).rewards
    assert dozen[1] > dozen[0]
    # The rationale is read: it is part of the context the answer block is scored after.
    with_rationale = ev.evaluate(SUM[0], ["3 + 4 = 7. <answer>7</answer>"]).rewards[0]
    assert 0.0 <= with_rationale <= 1.0 and with_rationale != pytest.approx(right, abs=1e-9)
    # One right-padded batch gives each candidate what it gets scored alone.
    mixed = ["3 + 4 = 7. <answer>7</answer>", "<answer>8</answer>", "no answer", "so, <answer>12</answer>"]
    alone = [ev.evaluate(SUM[0], [c]).rewards[0] for c in mixed]
    assert ev.evaluate(SUM[0], mixed).rewards == pytest.approx(alone, abs=1e-5)
    assert ev.evaluate(SUM[0], []) == Evaluation([], "model")


def test_heterogeneous_client_models_score_the_same_server_candidates(knowing, gpt2_client) -> None:
    llama_model, llama_tok = knowing
    gpt2_model, gpt2_tok = gpt2_client
    assert len(gpt2_tok) != len(llama_tok)
    assert gpt2_tok("What is 3 + 4?")["input_ids"] != llama_tok("What is 3 + 4?")["input_ids"]
    held = Example(make_qid("sums", SUM[0]), "sums", SUM[0], SUM[1])
    candidates = CANDIDATES + ["a long rationale without an answer " * 5]
    for model, tokenizer in ((llama_model, llama_tok), (gpt2_model, gpt2_tok)):
        for mode in ("agreement", "likelihood"):
            me = ModelEvaluator(model, tokenizer, ScoringSettings(mode=mode, max_new_tokens=16))
            result = me.evaluate(DOZEN[0], candidates)
            assert len(result.rewards) == len(candidates)
            assert all(r is None or 0.0 <= r <= 1.0 for r in result.rewards)
            assert result.method in ("model", "none")
            assert (result.method == "none") == (None in result.rewards)
            gate = DualEvaluator(AnswerEvaluator([held]), me)
            assert gate.evaluate(SUM[0], candidates).method == "answer"
            assert gate.evaluate(DOZEN[0], candidates).method in ("model", "none")


def test_a_tokenizer_without_chat_template_or_pad_token_falls_back_to_chatml() -> None:
    model, tokenizer = _gpt2(chat_template=False, pad=False)
    ev = ModelEvaluator(model, tokenizer, ScoringSettings(samples=2, max_new_tokens=4))
    assert len(ev.evaluate(SUM[0], CANDIDATES).rewards) == len(CANDIDATES)
    assert (
        len(
            ModelEvaluator(model, tokenizer, ScoringSettings(mode="likelihood"))
            .evaluate(SUM[0], CANDIDATES)
            .rewards
        )
        == 4
    )
    assert "<|im_start|>assistant" in ev._prompt(SUM[0])
    assert not tokenizer.chat_template and tokenizer.pad_token is None  # the client's tokenizer untouched


def test_dual_gate_prefers_trusted_answers_then_the_model_then_abstains(knowing) -> None:
    examples = [Example(make_qid("sums", SUM[0]), "sums", SUM[0], SUM[1])]
    answers = AnswerEvaluator(examples)
    gate = DualEvaluator(answers, ModelEvaluator(*knowing))
    held = gate.evaluate(SUM[0], CANDIDATES)
    assert held == answers.evaluate(SUM[0], CANDIDATES) and held.method == "answer"
    assert gate.evaluate(DOZEN[0], ["<answer>12</answer>", "<answer>7</answer>"]) == Evaluation(
        pytest.approx([1.0, 0.0]), "model"
    )
    alone = DualEvaluator(answers, None)
    assert alone.evaluate(DOZEN[0], ["<answer>12</answer>"]) == Evaluation([None], "none")
    assert alone.evaluate(SUM[0], CANDIDATES).method == "answer"


def test_client_serves_model_based_rewards_over_the_wire(knowing) -> None:
    examples = [Example(make_qid("sums", SUM[0]), "sums", SUM[0], SUM[1])]
    client = Client(
        "c0", examples, evaluator=DualEvaluator(AnswerEvaluator(examples), ModelEvaluator(*knowing))
    )
    request = RewardRequest(
        "r1",
        "c0",
        [
            RewardItem("0", SUM[0], ["<answer>7</answer>", "<answer>8</answer>"]),
            RewardItem("1", DOZEN[0], ["<answer>12</answer>", "twelve"]),
        ],
    )
    reply = decode(client.handle(encode(request)))
    assert isinstance(reply, RewardReply)
    held, not_held = reply.items
    assert reply.methods == {"answer": 1, "model": 1, "none": 0}  # counts only, not per item
    assert held.method is None and held.rewards == pytest.approx([1.0, 0.0])
    assert not_held.key == "1" and not_held.rewards == pytest.approx([1.0, 0.0])


def test_client_answers_competence_queries_with_its_model(knowing) -> None:
    client = Client("c0", [], evaluator=DualEvaluator(AnswerEvaluator([]), ModelEvaluator(*knowing)))
    items = [
        CompetenceItem("a", SUM[0], "7.0"),  # the model says 7: equal under answer_key
        CompetenceItem("b", DOZEN[0], "12"),
        CompetenceItem("c", DOZEN[0], "13"),  # a wrong reference: the model's 12 does not match
    ]
    reply = decode(client.handle(encode(CompetenceRequest("r1", "c0", items))), client="c0")
    assert reply == CompetenceReply("r1", "c0", [1, 1, 0])
    no_model = decode(Client("c1", []).handle(encode(CompetenceRequest("r2", "c1", items))))
    assert no_model.kind == "error" and "no model to answer competence queries" in no_model.error


def test_a_request_of_questions_the_client_does_not_hold_is_answered_in_one_batch(knowing) -> None:
    """Two model-scored items, one ``generate``; the held item and a repeat of a kept question add none."""
    examples = [Example(make_qid("sums", "What is 1 + 1?"), "sums", "What is 1 + 1?", "2")]
    model = ModelEvaluator(*knowing)
    calls: list[list[str]] = []
    sample = model._sample
    model._sample = lambda qs: calls.append(list(qs)) or sample(qs)
    client = Client("c0", examples, evaluator=DualEvaluator(AnswerEvaluator(examples), model))
    items = [
        RewardItem("0", SUM[0], ["<answer>7</answer>", "<answer>8</answer>"]),
        RewardItem("1", "What is 1 + 1?", ["<answer>2</answer>", "<answer>3</answer>"]),
        RewardItem("2", DOZEN[0], ["<answer>12</answer>", "twelve"]),
    ]
    reply = decode(client.handle(encode(RewardRequest("r1", "c0", items))))
    assert isinstance(reply, RewardReply)
    assert calls == [[SUM[0], DOZEN[0]]]  # both model-scored questions together, the held one not
    assert reply.methods == {"answer": 1, "model": 2, "none": 0}
    # the batch's answers are the model's right ones: a wrong tagged answer keeps the format reward
    assert [item.rewards for item in reply.items] == [
        pytest.approx([1.0, 0.0]),
        pytest.approx([1.0, 0.0]),
        pytest.approx([1.0, 0.0]),
    ]
    client.handle(encode(RewardRequest("r2", "c0", [items[0], items[2]])))  # both kept: no generation
    assert len(calls) == 1
    # without kept answers each item is answered on its own, as before
    unkept = ModelEvaluator(*knowing, ScoringSettings(cache_size=0))
    own = unkept._sample
    unkept._sample = lambda qs: calls.append(list(qs)) or own(qs)
    client = Client("c1", examples, evaluator=DualEvaluator(AnswerEvaluator(examples), unkept))
    client.handle(encode(RewardRequest("r3", "c1", [items[0], items[2]])))
    assert calls[1:] == [[SUM[0]], [DOZEN[0]]]


def test_a_direct_answer_starts_inside_the_tag_and_stops_at_its_close(knowing, monkeypatch) -> None:
    """The same answers as a full reply, in fewer decoded tokens; the reply read back is whole."""
    import fedgrpo.client.model_scoring as scoring

    decoded: list[int] = []
    real = scoring.generate

    def counting(model, share, head, adapter, **kwargs):
        out = real(model, share, head, adapter, **kwargs)
        decoded.append(out.shape[1] - kwargs["input_ids"].shape[1])
        return out

    monkeypatch.setattr(scoring, "generate", counting)
    replies = {}
    for direct in (False, True):
        ev = ModelEvaluator(*knowing, ScoringSettings(samples=1, max_new_tokens=16, direct_answer=direct))
        replies[direct] = ev._sample([SUM[0], DOZEN[0]])
        assert [ev.answer(q) for q, _ in (SUM, DOZEN)] == ["7", "12"]
    assert replies[True] == ["<answer>7</answer>", "<answer>12</answer>"]
    assert replies[False] == replies[True]  # the full reply is the tagged answer alone
    closing = ModelEvaluator(*knowing, ScoringSettings(direct_answer=True))._closing_ids()
    assert closing and all(knowing[1].decode([i]).strip().startswith("</") for i in closing)
    # the longest reply's tokens as trained, after the opening tag: generation stops at the first
    # closing token, so neither the opening tag nor the rest of the closing one is decoded
    tok = knowing[1]
    opening = tok("<answer>", add_special_tokens=False)["input_ids"]
    trained = tok("<answer>12</answer><|im_end|>", add_special_tokens=False)["input_ids"]
    rest = trained[len(opening) :]
    stop = next(i for i, t in enumerate(rest) if t in closing)
    full, direct = decoded[0], decoded[3]  # the two-question calls
    assert full == len(trained) and direct == stop + 1 < full - len(opening)


@pytest.mark.parametrize(
    ("reply", "read"),
    [("-17</", "-17</answer>"), ("12 </answer", "12 </answer>"), ("7</answer>", "7</answer>"), ("7<", "7<")],
)
def test_a_direct_answer_stopped_at_its_closing_tag_is_completed(reply, read) -> None:
    from fedgrpo.client.model_scoring import _closed

    assert _closed(reply) == read


def test_a_client_reads_its_prompt_start_once_for_all_its_calls(knowing, prefill_reads) -> None:
    read = prefill_reads
    ev = ModelEvaluator(*knowing, ScoringSettings(samples=3, cache_size=0))
    plain = ModelEvaluator(*knowing, ScoringSettings(samples=3, cache_size=0), share_prompts=False)
    for question, _ in (SUM, DOZEN, SUM):
        assert ev._sample([question]) == plain._sample([question])
    # the first call reads its whole start; the second only past the template; the third nothing
    assert len(read) == 2 and read[1] < read[0] - 16
