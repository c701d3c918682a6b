"""Private Evolution's private step: each client's Gaussian-noised nearest-neighbour vote histogram.

Private Evolution (PE; Lin et al., ICLR 2024, "Differentially Private Synthetic Data via Foundation
Model APIs 1: Images"; Aug-PE for text, Xie et al., ICML 2024) touches private data in one place
only: every private example votes for its nearest synthetic sample in an embedding space, and the
client adds Gaussian noise to the histogram before it leaves. With one vote per example, adding or
removing one example changes one bin by 1, so the histogram's L2 sensitivity is 1 and noise of std
``sigma`` per bin is the Gaussian mechanism with noise multiplier ``sigma``. T iterations compose T
such mechanisms on each client's data; dp-accounting's accountant (RDP or PLD) turns that into the
client's (epsilon, delta). Everything else (proposals, thresholding, rewrites) is post-processing.

Wire format: down, the samples as compact JSON (what a client needs to embed them); up, the noisy
histogram as little-endian float32 (4 bytes per sample), checked by the server before it is summed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import dp_accounting
import dp_accounting.pld
import dp_accounting.rdp
import numpy as np
import torch

from fedgrpo.data import Example, derive_seed

Embed = Callable[[list[str]], torch.Tensor]
HISTOGRAM_DTYPE = np.dtype("<f4")


@dataclass(frozen=True)
class Sample:
    """One synthetic question/answer pair; ``domain`` is that of the server's few-shot demonstrations;
    ``proposed``: the proposer's own answer where ``answer`` was solved instead (``dpsda.answers``)."""

    question: str
    answer: str
    domain: str
    proposed: str | None = None


def sample_text(question: str, answer: str) -> str:
    """The text both sides embed: a private example and a synthetic sample look alike to the encoder."""
    return f"Question: {question}\nAnswer: <answer>{answer}</answer>"


# ---- the wire -------------------------------------------------------------------------------------


def encode_request(iteration: int, samples: list[Sample]) -> bytes:
    body = {"kind": "pe_vote", "iteration": iteration, "samples": [[s.question, s.answer] for s in samples]}
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def decode_request(payload: bytes) -> tuple[int, list[tuple[str, str]]]:
    body = json.loads(payload)
    if not isinstance(body, dict) or body.get("kind") != "pe_vote":
        raise ValueError("not a pe_vote request")
    samples = body["samples"]
    if not isinstance(samples, list) or not all(
        isinstance(s, list) and len(s) == 2 and all(isinstance(x, str) for x in s) for s in samples
    ):
        raise ValueError("pe_vote samples must be [question, answer] string pairs")
    return int(body["iteration"]), [(q, a) for q, a in samples]


def encode_histogram(histogram: np.ndarray) -> bytes:
    return np.asarray(histogram, dtype=HISTOGRAM_DTYPE).tobytes()


def decode_histogram(payload: bytes, expected: int) -> np.ndarray:
    """A client's histogram, or ValueError: wrong length or a non-finite count never enters the sum."""
    if len(payload) != expected * HISTOGRAM_DTYPE.itemsize:
        raise ValueError(f"histogram of {len(payload)} bytes, expected {expected * HISTOGRAM_DTYPE.itemsize}")
    histogram = np.frombuffer(payload, dtype=HISTOGRAM_DTYPE).astype(np.float64)
    if not np.isfinite(histogram).all():
        raise ValueError("histogram holds non-finite counts")
    return histogram


# ---- the client's side ----------------------------------------------------------------------------


def nearest_neighbour_votes(private: torch.Tensor, samples: torch.Tensor) -> np.ndarray:
    """Each private embedding votes for its nearest sample (L2; the lowest index wins a tie)."""
    if samples.shape[0] == 0:
        raise ValueError("no samples to vote for")
    # exact distances (no matmul shortcut), so equal distances tie exactly
    dists = torch.cdist(private.double(), samples.double(), compute_mode="donot_use_mm_for_euclid_dist")
    nearest = dists.argmin(dim=1)
    return np.bincount(nearest.numpy(), minlength=samples.shape[0]).astype(np.float64)


def noisy_vote_histogram(
    examples: list[Example],
    samples: list[tuple[str, str]],
    embed: Embed,
    sigma: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """What one client releases for one iteration: its votes plus N(0, sigma^2) per bin.

    It gets only this client's own examples; its output is the only thing derived from them that
    leaves the client.
    """
    private = embed([sample_text(ex.question, ex.answer) for ex in examples])
    proposed = embed([sample_text(q, a) for q, a in samples])
    votes = nearest_neighbour_votes(private, proposed)
    return votes + rng.normal(0.0, sigma, size=votes.shape)


class VotingClient:
    """A PE client: holds its examples and answers vote requests with bytes, nothing more.

    Its noise is drawn from a stream seeded by its seed, the iteration and the request's own bytes, so
    the same request always gets the same histogram: asking again tells the server nothing new, and
    the answer is the same whichever process serves it (Flower starts one per message). Seeded for
    repeatable simulations; a deployed client would draw from a CSPRNG and keep a ledger of what it
    released. ``iterations``: the run's T, the privacy budget's count: a request outside 1..T is
    refused (None: unchecked).
    """

    def __init__(
        self,
        name: str,
        examples: list[Example],
        embed: Embed,
        sigma: float,
        seed: int,
        iterations: int | None = None,
    ) -> None:
        self.name = name
        self._examples = list(examples)
        self._embed = embed
        self._sigma = sigma
        self._seed = seed
        self._iterations = iterations

    def handle(self, payload: bytes) -> bytes:
        iteration, samples = decode_request(payload)
        if self._iterations is not None and not 1 <= iteration <= self._iterations:
            raise ValueError(
                f"a vote for iteration {iteration}: this client votes in iterations 1..{self._iterations} "
                "only (its privacy budget)"
            )
        rng = np.random.default_rng(
            derive_seed("pe-noise", self._seed, iteration, hashlib.sha256(payload).hexdigest())
        )
        noisy = noisy_vote_histogram(self._examples, samples, self._embed, self._sigma, rng)
        return encode_histogram(noisy)


# ---- the server's side ----------------------------------------------------------------------------


def top_voted(histogram: np.ndarray, threshold: float, keep: int) -> list[int]:
    """Indices of the ``keep`` samples with the most votes after thresholding (PE's selection).

    Counts below ``threshold`` become 0 (noise alone rarely clears it); samples with no count left
    are kept only when fewer than ``keep`` clear it, so the population never dies out.
    """
    counts = np.where(histogram >= threshold, histogram, 0.0)
    order = sorted(range(len(counts)), key=lambda i: (-counts[i], -histogram[i], i))
    return order[:keep]


def kept_per_iteration(samples: int, variations: int) -> int:
    """How many samples survive a vote so that they and their rewrites refill the population."""
    return max(1, math.ceil(samples / (1 + variations)))


# ---- the accounting -------------------------------------------------------------------------------


def vote_event(sigma: float, iterations: int) -> dp_accounting.DpEvent:
    """T noisy histograms of one client's data: T Gaussian mechanisms of sensitivity 1, composed."""
    return dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma), iterations)


def new_accountant(name: str) -> dp_accounting.PrivacyAccountant:
    if name == "rdp":
        return dp_accounting.rdp.RdpAccountant()
    if name == "pld":
        return dp_accounting.pld.PLDAccountant()
    raise ValueError(f"unknown accountant {name!r}; use 'rdp' or 'pld'")


def epsilon_spent(sigma: float, iterations: int, delta: float, accountant: str) -> float:
    """Each client's epsilon at ``delta`` after ``iterations`` votes with noise multiplier ``sigma``."""
    acc = new_accountant(accountant)
    acc.compose(vote_event(sigma, iterations))
    return float(acc.get_epsilon(delta))


def calibrate_sigma(target_epsilon: float, iterations: int, delta: float, accountant: str) -> float:
    """The smallest noise multiplier whose T votes spend at most ``target_epsilon`` (dp-accounting's
    Brent search over fresh accountants)."""
    return float(
        dp_accounting.calibrate_dp_mechanism(
            lambda: new_accountant(accountant),
            lambda sigma: vote_event(sigma, iterations),
            target_epsilon,
            delta,
            bracket_interval=dp_accounting.LowerEndpointAndGuess(0.25, 1.0),
        )
    )
