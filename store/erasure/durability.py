"""The durability model: how likely an object is to be lost within a year.

A scheme stores an object on n holders and survives the loss of any
`tolerate` of them: replicas N is n = N, tolerate = N - 1 (the same as EC
1 + (N-1)); EC K + M is n = K + M, tolerate = M. Each holder i has an annual
failure probability p_i (its observed rate: the share of holders like it
that lost their data within a year).

Assumptions (docs/DURABILITY.md discusses them):
- Failures are permanent losses of the holder's data (a peer that goes
  offline and comes back with its data is unavailability, not loss) and
  are independent across holders (placement on distinct network prefixes
  is what makes this less wrong; correlated failures are out of the model).
- Holder i fails at a constant rate lambda_i = -ln(1 - p_i) per year (an
  exponential lifetime, which gives exactly p_i over one year).
- Repair: a failed holder is replaced by a new one holding a rebuilt shard
  or copy after a time that is exponential with mean `repair_hours`
  (detection by audit plus rebuild plus transfer); holders are repaired in
  parallel and the replacement fails at the same rate. Repair never fails
  while at most `tolerate` holders are down. Without repair
  (`repair_hours=None`) the object is lost iff more than `tolerate` holders
  fail within the year: the Poisson-binomial tail.
- The object is lost the first time more than `tolerate` holders are down
  at once. All holders are healthy at time 0.

Exact computation: with repair, the state is the set of holders down (at
most `tolerate` of them) plus one absorbing "lost" state, a continuous-time
Markov chain; P(lost by t) comes from uniformization (a Poisson mixture of
powers of the jump matrix, all terms positive, so probabilities as small as
1e-30 keep their precision). When all rates are equal the chain lumps into
a birth-death chain on the number down (`tolerate + 2` states). Monte Carlo
(`simulate`) samples the same process for the tests.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from shoal.store.erasure.layout import ErasureError

__all__ = [
    "HOURS_PER_YEAR", "Scheme", "loss_probability", "loss_probability_no_repair", "simulate",
    "replicas_for", "survivable_losses",
]

HOURS_PER_YEAR = 24 * 365.25
_MAX_STATES = 200_000  # subsets of holders down; 16 holders, tolerate 6 is ~15k
_STEP = 30.0  # uniformization horizon per chunk (Lambda * dt), keeps exp(-x) far from underflow


@dataclass(frozen=True)
class Scheme:
    """Replicas N or EC K + M, as `shoal status` reports it."""

    k: int
    m: int

    @classmethod
    def replicas(cls, n: int) -> "Scheme":
        return cls(1, n - 1)

    @classmethod
    def ec(cls, k: int, m: int) -> "Scheme":
        return cls(k, m)

    def __post_init__(self) -> None:
        if self.k < 1 or self.m < 0:
            raise ErasureError("a scheme needs K >= 1 and M >= 0")

    @property
    def n(self) -> int:
        return self.k + self.m

    @property
    def overhead(self) -> float:
        """Stored bytes per object byte."""
        return self.n / self.k

    def describe(self) -> dict[str, list[int] | int]:
        return {"replicas": self.n} if self.k == 1 else {"ec": [self.k, self.m]}


def survivable_losses(healthy: int, k: int) -> int:
    """How many more holders can be lost before the object is: healthy - K (-1 if already lost)."""
    return max(healthy - k, -1)


def _rates(afr: Sequence[float]) -> list[float]:
    out = []
    for p in afr:
        if not 0.0 <= p < 1.0:
            raise ErasureError(f"annual failure probability {p} not in [0, 1)")
        out.append(-math.log1p(-p))
    return out


def loss_probability_no_repair(afr: Sequence[float], tolerate: int) -> float:
    """P(more than `tolerate` of the holders fail within the year), failures
    independent with probabilities `afr`: the Poisson-binomial upper tail."""
    # dist[j] = P(exactly j failed so far), j = 0..tolerate; over = P(more)
    dist = [1.0] + [0.0] * tolerate
    over = 0.0
    for p in afr:
        if not 0.0 <= p <= 1.0:
            raise ErasureError(f"annual failure probability {p} not in [0, 1]")
        over += dist[tolerate] * p
        for j in range(tolerate, 0, -1):
            dist[j] = dist[j] * (1 - p) + dist[j - 1] * p
        dist[0] *= 1 - p
    return over


def _chain(rates: Sequence[float], tolerate: int, mu: float) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """States, and transitions (src, dst, rate), and exit rates of the CTMC.
    The last state is "lost". Lumped to a birth-death chain when rates are equal."""
    n = len(rates)
    if len(set(rates)) <= 1:
        lam = rates[0] if rates else 0.0
        lost = tolerate + 1
        src, dst, rate = [], [], []
        for j in range(tolerate + 1):
            src.append(j); dst.append(j + 1); rate.append((n - j) * lam)
            if j:
                src.append(j); dst.append(j - 1); rate.append(j * mu)
        size = lost + 1
    else:
        states: list[tuple[int, ...]] = []
        for j in range(tolerate + 1):
            states.extend(combinations(range(n), j))
            if len(states) > _MAX_STATES:
                raise ErasureError("too many holders for the exact model; group them by rate")
        index = {s: i for i, s in enumerate(states)}
        lost = len(states)
        src, dst, rate = [], [], []
        for i, s in enumerate(states):
            down = set(s)
            for h in range(n):
                if h in down:
                    src.append(i); dst.append(index[tuple(x for x in s if x != h)]); rate.append(mu)
                else:
                    target = lost if len(s) == tolerate else index[tuple(sorted(down | {h}))]
                    src.append(i); dst.append(target); rate.append(rates[h])
        size = lost + 1
    s_arr, d_arr, r_arr = np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64), np.array(rate, dtype=float)
    exit_rates = np.bincount(s_arr, weights=r_arr, minlength=size)
    return size, s_arr, d_arr, r_arr, exit_rates


def loss_probability(afr: Sequence[float], tolerate: int, repair_hours: float | None,
                     years: float = 1.0) -> float:
    """P(the object is lost within `years`): more than `tolerate` of the holders
    (annual failure probabilities `afr`) down at once, each failed holder
    replaced after an exponential time of mean `repair_hours` (None: never)."""
    if tolerate < 0:
        raise ErasureError("tolerate must be >= 0")
    if tolerate >= len(afr):
        return 0.0
    if repair_hours is None:
        rates = _rates(afr)
        return loss_probability_no_repair([-math.expm1(-r * years) for r in rates], tolerate)
    if repair_hours <= 0:
        raise ErasureError("repair time must be positive")
    mu = HOURS_PER_YEAR / repair_hours
    size, src, dst, rate, exits = _chain(_rates(afr), tolerate, mu)
    big = float(exits.max())
    if big == 0.0:
        return 0.0
    # uniformization: jump matrix J = I + Q / big, applied as sparse flows
    stay = 1.0 - exits / big
    stay[-1] = 1.0  # "lost" absorbs
    flow = rate / big
    v = np.zeros(size)
    v[0] = 1.0
    remaining = big * years
    while remaining > 0:
        x = min(_STEP, remaining)
        remaining -= x
        term = v.copy()
        weight = math.exp(-x)
        acc = term * weight
        total = weight
        k = 0
        while total < 1.0 - 1e-15 or k < x:
            k += 1
            term = term * stay + np.bincount(dst, weights=term[src] * flow, minlength=size)
            weight *= x / k
            acc += term * weight
            total += weight
            if weight < 1e-300 and k > x:
                break
        v = acc
    return float(min(1.0, max(0.0, v[-1])))


def simulate(afr: Sequence[float], tolerate: int, repair_hours: float | None, trials: int,
             rng: random.Random, years: float = 1.0) -> int:
    """Monte Carlo: in how many of `trials` sampled years the object is lost
    (same process as `loss_probability`, sampled event by event)."""
    rates = _rates(afr)
    mu = None if repair_hours is None else HOURS_PER_YEAR / repair_hours
    lost = 0
    n = len(rates)
    for _ in range(trials):
        # next event time for each holder: failure if up, repair if down
        down = [False] * n
        t_next = [rng.expovariate(r) if r > 0 else math.inf for r in rates]
        count = 0
        while True:
            h = min(range(n), key=t_next.__getitem__)
            t = t_next[h]
            if t > years:
                break
            if down[h]:
                down[h] = False
                count -= 1
                t_next[h] = t + rng.expovariate(rates[h]) if rates[h] > 0 else math.inf
            else:
                down[h] = True
                count += 1
                if count > tolerate:
                    lost += 1
                    break
                t_next[h] = t + rng.expovariate(mu) if mu is not None else math.inf
    return lost


def replicas_for(target: float, afr: float, repair_hours: float | None, max_n: int = 20) -> int:
    """The fewest replicas whose loss probability is at most `target` (holders
    of failure probability `afr`): the "equal durability" replica count."""
    for n in range(1, max_n + 1):
        if loss_probability([afr] * n, n - 1, repair_hours) <= target:
            return n
    raise ErasureError(f"no replica count up to {max_n} reaches {target}")


def table(afrs: Sequence[float] = (0.01, 0.05, 0.1, 0.2),
          repair_hours: Sequence[float | None] = (None, 168.0, 24.0)) -> str:
    """The docs/DURABILITY.md table (markdown): annual loss probability per scheme."""
    schemes = [("replicas 2", Scheme.replicas(2)), ("replicas 3", Scheme.replicas(3)),
               ("EC 4+2", Scheme(4, 2)), ("EC 8+4", Scheme(8, 4)), ("EC 10+6", Scheme(10, 6))]
    head = "| AFR | repair | " + " | ".join(f"{name} ({s.overhead:.2f}x)" for name, s in schemes) + " |"
    lines = [head, "|" + "---|" * (len(schemes) + 2)]
    for afr in afrs:
        for rh in repair_hours:
            cells = [f"{loss_probability([afr] * s.n, s.m, rh):.1e}" for _, s in schemes]
            label = "none" if rh is None else f"{rh:g} h"
            lines.append(f"| {afr:.0%} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
