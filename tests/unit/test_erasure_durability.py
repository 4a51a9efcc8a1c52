"""Durability model: exact values, checked against brute force and Monte Carlo."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.store.erasure import durability as d
from shoal.store.erasure.layout import ErasureError


def _brute_no_repair(afr: list[float], tolerate: int) -> float:
    total = 0.0
    for outcome in itertools.product([False, True], repeat=len(afr)):
        if sum(outcome) > tolerate:
            total += math.prod(p if f else 1 - p for p, f in zip(afr, outcome))
    return total


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.0, 0.99), min_size=1, max_size=9), st.integers(0, 9))
def test_poisson_binomial_tail_is_exact(afr: list[float], tolerate: int) -> None:
    assert d.loss_probability_no_repair(afr, tolerate) == pytest.approx(_brute_no_repair(afr, tolerate), abs=1e-12)


def _mc_check(afr: list[float], tolerate: int, repair_hours: float | None, trials: int, seed: int) -> None:
    exact = d.loss_probability(afr, tolerate, repair_hours)
    lost = d.simulate(afr, tolerate, repair_hours, trials, random.Random(seed))
    # 99.99 % normal interval around the Monte Carlo estimate (fixed seed: deterministic)
    est = lost / trials
    half = 3.9 * math.sqrt(max(est * (1 - est), 1 / trials) / trials)
    assert est - half <= exact <= est + half, (exact, est, half)
    assert 0.01 < exact < 0.99  # parameters chosen so the interval is informative


def test_markov_chain_matches_monte_carlo_equal_rates() -> None:
    _mc_check([0.5] * 6, 2, 24 * 60, 20_000, 1)  # EC 4+2, 50 % AFR, 60-day repair


def test_markov_chain_matches_monte_carlo_observed_rates() -> None:
    """Different holders, different rates: the chain over sets of holders down."""
    _mc_check([0.2, 0.7, 0.45, 0.6, 0.3], 1, 24 * 45, 20_000, 2)  # EC 4+1


def test_replicas_match_monte_carlo_and_no_repair_is_the_binomial_tail() -> None:
    _mc_check([0.6, 0.5, 0.7], 2, 24 * 90, 20_000, 3)  # replicas 3
    _mc_check([0.3] * 8, 3, None, 20_000, 4)
    assert d.loss_probability([0.3] * 8, 3, None) == pytest.approx(_brute_no_repair([0.3] * 8, 3), rel=1e-12)


def test_lumped_and_full_chains_agree() -> None:
    afr = [0.1] * 6
    lumped = d.loss_probability(afr, 2, 72)
    full = d.loss_probability(afr[:-1] + [0.1 * (1 + 1e-9)], 2, 72)  # unequal: not lumped
    assert full == pytest.approx(lumped, rel=1e-6)
    assert 1e-9 < lumped < 1e-3


def test_repair_and_redundancy_help_and_tiny_values_keep_precision() -> None:
    afr = 0.05
    none = d.loss_probability([afr] * 6, 2, None)
    week = d.loss_probability([afr] * 6, 2, 168)
    day = d.loss_probability([afr] * 6, 2, 24)
    assert none > week > day > 0
    # 10+6 at 1 % with a day's repair: far below float epsilon, still positive and ordered
    tiny = d.loss_probability([0.01] * 16, 6, 24)
    assert 0 < tiny < 1e-20
    assert d.loss_probability([0.01] * 16, 5, 24) > tiny
    assert d.loss_probability([0.3] * 3, 3, 24) == 0.0  # cannot lose more than all
    assert d.loss_probability([0.3] * 3, 1, 24, years=0.0) == 0.0


def test_equal_durability_replica_count_and_scheme_helpers() -> None:
    target = d.loss_probability([0.1] * 12, 4, 168)  # EC 8+4 at 10 % AFR, weekly repair
    n = d.replicas_for(target, 0.1, 168)
    assert d.loss_probability([0.1] * n, n - 1, 168) <= target < d.loss_probability([0.1] * (n - 1), n - 2, 168)
    assert d.Scheme.replicas(3).describe() == {"replicas": 3}
    assert d.Scheme.ec(4, 2).describe() == {"ec": [4, 2]} and d.Scheme(4, 2).overhead == 1.5
    assert d.survivable_losses(6, 4) == 2 and d.survivable_losses(3, 4) == -1
    with pytest.raises(ErasureError):
        d.loss_probability([1.0, 0.5], 1, 24)
