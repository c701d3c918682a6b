"""A simulation's canaries (drawn from the domains, disjoint from everything else, among the prompts)
and the liar that tries to dodge them (``aux-aware``)."""

from __future__ import annotations

from fedgrpo.client import AnswerEvaluator, Client, DualEvaluator
from fedgrpo.config import load_config
from fedgrpo.data import Example, generate, normalise_question, read_labelled
from fedgrpo.protocol import CompetenceItem, CompetenceRequest, RewardItem, RewardReply, RewardRequest
from fedgrpo.simulation.adversaries import AdversarialEvaluator
from fedgrpo.simulation.data import build_data, write_example_files
from fedgrpo.simulation.in_process import server_data
from tests.helpers import KnowingModel


def test_canaries_are_drawn_disjoint_from_every_set_and_mixed_into_the_prompts(tmp_path) -> None:
    cfg = load_config("smoke", ["federation.canaries.share=0.25"])
    split = build_data(cfg)
    assert len(split.canaries) == 4  # 0.25 of the prompts: 4 / (12 + 4)
    assert {ex.domain for ex in split.canaries} == set(split.heldout)  # spread over the domains
    texts = {normalise_question(ex.question) for ex in split.canaries}
    others = [*split.auxiliary, *split.train_examples, *(e for v in split.clients.values() for e in v)]
    others += [e for v in split.heldout.values() for e in v]
    assert len(texts) == 4 and not texts & {normalise_question(ex.question) for ex in others}
    data = server_data(split, cfg.federation.canaries.share)
    assert data.canaries == split.canaries
    assert [q.qid for q in data.train_questions] == [q.qid for q in split.train_questions] + [
        ex.qid for ex in split.canaries
    ]
    assert build_data(load_config("smoke")).canaries == []  # off: none drawn
    files = write_example_files(cfg, tmp_path, seed=7)  # a deployment demo gets a canary file too
    assert len(read_labelled(tmp_path / "server" / "canaries.jsonl")) == 4 and "canaries" in files["server"]


def test_the_aux_aware_liar_is_honest_on_questions_shaped_like_the_servers_and_flips_the_others() -> None:
    sums, products = generate("sums_2digit", 4, seed=1), generate("products", 4, seed=1)
    honest = DualEvaluator(AnswerEvaluator([]), KnowingModel([*sums, *products]))
    client = Client("liar", [], AdversarialEvaluator(honest, "aux-aware", 0, "liar"))
    aux = [CompetenceItem(str(k), ex.question, ex.answer) for k, ex in enumerate(sums[:2])]
    client.respond(CompetenceRequest("r1", "liar", aux))  # the server's labelled questions: sums only

    def rewards(ex: Example) -> list[float | None]:
        items = [RewardItem("0", ex.question, [f"<answer>{ex.answer}</answer>", "<answer>-7</answer>"])]
        reply = client.respond(RewardRequest("r2", "liar", items))
        assert isinstance(reply, RewardReply)
        return reply.items[0].rewards

    assert rewards(sums[3]) == [1.0, 0.0]  # a sum it was never shown: same shape, honest
    assert rewards(products[0]) == [0.0, 1.0]  # another shape: flipped
