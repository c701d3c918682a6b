"""The simulated federation's seeded split: generated domains cut into private client data, server
questions, an auxiliary set and held-out sets. A deployment never uses it: each party brings its files.

Split generated domains into private client data, server questions, an auxiliary set and held-out sets.

Every set is carved from one deduplicated pool per domain (held-out first, then auxiliary, then client
data), and no normalised question text occurs twice anywhere, so evaluation never sees training data
and clients never share an example.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from fedgrpo.data.domains import (
    DomainSpec,
    Example,
    NotEnoughExamplesError,
    Question,
    derive_seed,
    normalise_question,
    resolve_domain,
)
from fedgrpo.data.files import client_name, to_question
from fedgrpo.data.generate import generate

__all__ = ["FederatedSplit", "build_split"]


@dataclass
class FederatedSplit:
    """Everything a federated run needs; only `train_questions` (and `auxiliary`) go to the server."""

    clients: dict[str, list[Example]]  # client name -> private labelled data, disjoint between clients
    train_questions: list[Question]  # server training questions, answers stripped
    auxiliary: list[Example]  # labelled auxiliary set for the server, disjoint from all client data
    heldout: dict[str, list[Example]]  # per-domain held-out evaluation sets, disjoint from everything
    client_domains: dict[str, dict[str, int]]  # counts per client per domain (for logs/docs)
    # The training questions with their answers. Never sent to the server or a client: only the
    # experiment's own audit (reward correctness) reads it.
    train_examples: list[Example] = field(default_factory=list)
    ground_truth: bool = True  # False: no client holds any training question (only ME can score)
    # The server's hidden spot checks (fedgrpo.server.canaries): labelled, disjoint from everything else,
    # drawn by fedgrpo.simulation.data when federation.canaries.share > 0.
    canaries: list[Example] = field(default_factory=list)


def _even(total: int, parts: int, offset: int = 0) -> list[int]:
    """Split total into `parts` near-equal ints; the remainder goes to parts starting at `offset`."""
    base, rem = divmod(total, parts)
    out = [base] * parts
    for j in range(rem):
        out[(offset + j) % parts] += 1
    return out


def _build_pools(specs: list[DomainSpec], sizes: list[int], seed: int) -> list[list[Example]]:
    """One pool per domain, with no normalised question text repeated across domains.

    generate() is prefix-stable, so when texts already used by an earlier domain are dropped we
    simply ask for more until the pool is full. Only a shortage of distinct examples is reported as
    "too small"; a bad data file or spec surfaces as its own error.
    """
    seen: set[str] = set()
    pools = []
    for spec, size in zip(specs, sizes, strict=True):
        dom_seed = derive_seed("pool", spec.name, seed)
        ask = size
        while True:
            try:
                candidates = generate(spec, ask, dom_seed)
            except NotEnoughExamplesError as exc:
                raise NotEnoughExamplesError(
                    f"pool for domain {spec.name!r} too small: need {size} distinct examples "
                    f"(held-out + auxiliary + client share): {exc}"
                ) from exc
            pool = [e for e in candidates if normalise_question(e.question) not in seen]
            if len(pool) >= size:
                pool = pool[:size]
                break
            ask += size - len(pool)
        seen.update(normalise_question(e.question) for e in pool)
        pools.append(pool)
    return pools


def _dirichlet_assign(
    client_pools: list[list[Example]], num_clients: int, alpha: float, rng: np.random.Generator
) -> list[list[list[Example]]]:
    """assign[k][d]: client k's examples of domain d, with domain proportions ~ Dir(alpha) per domain.

    Standard label-skew partition. A client left with no example at all receives one from the client
    holding the most examples (lowest index on ties), taken from that donor's largest domain; this
    keeps every client able to answer competence probes while barely changing the skew.
    """
    assign: list[list[list[Example]]] = [[[] for _ in client_pools] for _ in range(num_clients)]
    for d, pool in enumerate(client_pools):
        props = rng.dirichlet(np.full(num_clients, alpha))
        order = rng.permutation(len(pool))
        cuts = np.round(np.cumsum(props)[:-1] * len(pool)).astype(int)
        for k, idx in enumerate(np.split(order, cuts)):
            assign[k][d] = [pool[i] for i in idx]
    for k in range(num_clients):
        if any(assign[k]):
            continue
        totals = [sum(len(x) for x in assign[j]) for j in range(num_clients)]
        donor = int(np.argmax(totals))
        d = max(range(len(client_pools)), key=lambda i: len(assign[donor][i]))
        assign[k][d].append(assign[donor][d].pop())
    return assign


def build_split(
    domains: list[DomainSpec | str],
    num_clients: int,
    examples_per_client: int,
    num_train_questions: int,
    num_auxiliary: int = 100,
    heldout_per_domain: int = 100,
    partition: Literal["iid", "dirichlet", "by-domain"] = "iid",
    alpha: float = 0.5,
    seed: int = 0,
    ground_truth: bool = True,
) -> FederatedSplit:
    """Build a seeded federated split over the given domains.

    Client data totals num_clients * examples_per_client, spread evenly over domains. With "iid" each
    client holds exactly examples_per_client, an equal share of every domain. With "dirichlet" each
    domain's client pool is split by proportions ~ Dir(alpha) (numpy default_rng(seed)), so client
    sizes vary around examples_per_client; small alpha means each client is mostly one domain. With
    "by-domain" client k holds examples_per_client examples of domain k mod D only (a coverage sweep:
    with K <= D each added client brings a domain no other client holds).
    The auxiliary set is spread evenly over domains.

    ``ground_truth=True`` draws the server's training questions from the clients' data, so each is
    held by exactly one client (answer-based evaluation can score it). ``ground_truth=False`` is the
    paper's no-ground-truth setting: training questions come from a separate pool, spread evenly over
    domains, that no client holds, so only the clients' models can score them.
    """
    specs = [resolve_domain(d) for d in domains]
    if not specs:
        raise ValueError("need at least one domain")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"domain names must be unique, got {names}")
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if examples_per_client < 1:
        raise ValueError(f"examples_per_client must be >= 1, got {examples_per_client}")
    if min(num_train_questions, num_auxiliary, heldout_per_domain) < 0:
        raise ValueError("num_train_questions, num_auxiliary and heldout_per_domain must be >= 0")
    if partition not in ("iid", "dirichlet", "by-domain"):
        raise ValueError(f"partition must be 'iid', 'dirichlet' or 'by-domain', got {partition!r}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    total_client = num_clients * examples_per_client
    if ground_truth and num_train_questions > total_client:
        raise ValueError(
            f"num_train_questions={num_train_questions} exceeds the client data it is drawn from "
            f"({num_clients} clients x {examples_per_client} = {total_client})"
        )

    n_dom = len(specs)
    # quota[k][d]: IID share of client k in domain d; remainders rotate so domains stay balanced.
    quota = [_even(examples_per_client, n_dom, offset=k) for k in range(num_clients)]
    if partition == "by-domain":  # client k holds domain k mod D alone: each new client brings coverage
        quota = [[examples_per_client * (d == k % n_dom) for d in range(n_dom)] for k in range(num_clients)]
    client_sizes = [sum(quota[k][d] for k in range(num_clients)) for d in range(n_dom)]
    aux_sizes = _even(num_auxiliary, n_dom)
    unseen_sizes = [0] * n_dom if ground_truth else _even(num_train_questions, n_dom)
    pool_sizes = [
        heldout_per_domain + a + u + c for a, u, c in zip(aux_sizes, unseen_sizes, client_sizes, strict=True)
    ]
    pools = _build_pools(specs, pool_sizes, seed)

    heldout: dict[str, list[Example]] = {}
    auxiliary: list[Example] = []
    unseen: list[Example] = []
    client_pools: list[list[Example]] = []
    for spec, pool, a, c in zip(specs, pools, aux_sizes, client_sizes, strict=True):
        heldout[spec.name] = pool[:heldout_per_domain]
        auxiliary.extend(pool[heldout_per_domain : heldout_per_domain + a])
        client_pools.append(pool[heldout_per_domain + a : heldout_per_domain + a + c])
        # The unseen share comes last (pools are prefix-stable), so clients hold exactly the same
        # data in both settings: only where the server's questions come from changes.
        unseen.extend(pool[heldout_per_domain + a + c :])

    rng = np.random.default_rng(seed)
    if partition in ("iid", "by-domain"):
        assign: list[list[list[Example]]] = [[[] for _ in range(n_dom)] for _ in range(num_clients)]
        for d, pool in enumerate(client_pools):
            order = rng.permutation(len(pool))
            start = 0
            for k in range(num_clients):
                assign[k][d] = [pool[i] for i in order[start : start + quota[k][d]]]
                start += quota[k][d]
    else:
        assign = _dirichlet_assign(client_pools, num_clients, alpha, rng)

    clients: dict[str, list[Example]] = {}
    client_domains: dict[str, dict[str, int]] = {}
    for k in range(num_clients):
        name = client_name(k)
        clients[name] = [e for per_dom in assign[k] for e in per_dom]
        client_domains[name] = {spec.name: len(assign[k][d]) for d, spec in enumerate(specs)}

    source = [e for data in clients.values() for e in data] if ground_truth else unseen
    picks = rng.permutation(len(source))[:num_train_questions]
    train_examples = [source[i] for i in picks]
    return FederatedSplit(
        clients=clients,
        train_questions=[to_question(e) for e in train_examples],
        auxiliary=auxiliary,
        heldout=heldout,
        client_domains=client_domains,
        train_examples=train_examples,
        ground_truth=ground_truth,
    )
