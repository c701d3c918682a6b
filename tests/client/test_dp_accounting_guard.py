"""Guards on the dp-accounting behaviour the privacy ledger relies on (fedgrpo/client/privacy_ledger.py).

The ledger composes the privacy loss distributions of every released value itself
(``from_randomized_response(...).self_compose(n)``) instead of asking ``PLDAccountant``: the installed
dp-accounting's accountant composes a self-composed randomised-response event as one release.
"""

from __future__ import annotations

import math

import pytest

from fedgrpo.client.privacy_ledger import DISCRETISATION as _DISCRETISATION
from fedgrpo.client.privacy_ledger import Accountant, charge_key

dp_accounting = pytest.importorskip("dp_accounting")

DELTA = 1e-5


def _exact_rr_epsilon(epsilon: float, n: int, delta: float) -> float:
    """Tight epsilon at ``delta`` of n randomised-response bits, each epsilon-DP, from the binomial.

    Against a neighbour with the other label, k of the n bits come out flipped (k ~ Binomial(n, q),
    q = 1 / (1 + e^eps)) and the privacy loss is eps * (n - 2k); delta(e) = E[(1 - e^(e - loss))+].
    """
    q = 1.0 / (1.0 + math.exp(epsilon))
    terms = [
        (
            math.exp(
                math.lgamma(n + 1)
                - math.lgamma(k + 1)
                - math.lgamma(n - k + 1)
                + k * math.log(q)
                + (n - k) * math.log1p(-q)
            ),
            epsilon * (n - 2 * k),
        )
        for k in range(n + 1)
    ]

    def delta_at(e: float) -> float:
        return sum(p * -math.expm1(e - loss) for p, loss in terms if loss > e)

    low, high = 0.0, n * epsilon  # delta_at(n * eps) = 0 <= delta
    if delta_at(low) <= delta:
        return 0.0
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (low, mid) if delta_at(mid) <= delta else (mid, high)
    return high


@pytest.mark.parametrize(("epsilon", "n"), [(8.0, 251), (2.0, 82), (0.5, 200), (1.0, 1)])
def test_ledger_composes_n_randomised_responses(epsilon: float, n: int) -> None:
    spent = Accountant(DELTA).epsilon({charge_key("rr", epsilon): n})
    exact = _exact_rr_epsilon(epsilon, n, DELTA)
    # the PLD grid makes the ledger pessimistic, by at most one grid step per composed value
    assert exact - 1e-6 <= spent <= exact + n * _DISCRETISATION
    assert spent <= n * epsilon + n * _DISCRETISATION  # never above basic composition of pure DP
    if epsilon >= 8.0:  # a flip is so rare (q = 3e-4) that basic composition is tight: n * epsilon
        assert spent == pytest.approx(n * epsilon, abs=1e-3)
    elif n > 1:  # below it: a run of flips is likely enough to fall within delta
        assert spent < n * epsilon - 0.1


def test_installed_pld_accountant_ignores_a_self_composed_randomised_response_count() -> None:
    """Pins dp-accounting's behaviour that the ledger avoids. If this fails, the installed
    dp-accounting changed how ``PLDAccountant`` composes randomised response: re-check whether the
    ledger's own composition (fedgrpo/client/privacy_ledger.py, ``Accountant.epsilon``) can use it."""
    from dp_accounting import (
        NeighboringRelation,
        RandomizedResponseDpEvent,
        SelfComposedDpEvent,
    )
    from dp_accounting.pld import PLDAccountant

    epsilon, n = 8.0, 251
    event = RandomizedResponseDpEvent(noise_parameter=2.0 / (1.0 + math.exp(epsilon)), num_buckets=2)

    def accountant() -> PLDAccountant:
        return PLDAccountant(NeighboringRelation.REPLACE_ONE, value_discretization_interval=_DISCRETISATION)

    self_composed = accountant().compose(SelfComposedDpEvent(event, n)).get_epsilon(DELTA)
    with_count = accountant().compose(event, n).get_epsilon(DELTA)
    one_by_one = accountant()
    for _ in range(3):
        one_by_one.compose(event)
    version = getattr(dp_accounting, "__version__", "installed")
    why = (
        f"dp-accounting {version} no longer composes a self-composed randomised-response event as a "
        f"single release ({n} x RR at epsilon {epsilon} gave %s, expected {epsilon}): the library "
        "changed; check Accountant.epsilon in fedgrpo/client/privacy_ledger.py against it"
    )
    assert self_composed == pytest.approx(epsilon, abs=1e-3), why % self_composed
    assert with_count == pytest.approx(epsilon, abs=1e-3), why % with_count
    # events composed one by one do add up: the library's composition itself is not at fault
    assert one_by_one.get_epsilon(DELTA) == pytest.approx(3 * epsilon, abs=1e-3)
    # what the ledger reports for the same releases
    ledger = Accountant(DELTA).epsilon({charge_key("rr", epsilon): n})
    assert ledger == pytest.approx(n * epsilon, abs=1e-3)
