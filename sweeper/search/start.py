"""The first trials of a search: a space-filling design spread by the priors. Each numeric entry is
cut into as many strata as the start has trials (a Latin hypercube), and each categorical entry
gives every choice its share, so six trials have already seen every rank, both bit widths and the
whole learning-rate range, where six random draws leave a third of the range untried as often as
not."""
import math
import random
from statistics import NormalDist

from sweeper.search.space import Param

_NORMAL = NormalDist()


def _scale(p: Param, value: float) -> float:
    return math.log10(value) if p.log else float(value)


def _unscale(p: Param, x: float):
    value = 10 ** x if p.log else x
    if p.step is not None:
        value = p.low + round((value - p.low) / p.step) * p.step
    value = min(max(value, p.low), p.high)
    return int(round(value)) if p.type == "int" else float(value)


def warp(p: Param, u: float):
    """A point u in (0, 1) of the unit interval → a value of the entry: uniform on its scale (log or
    linear), or, with a prior, through the inverse CDF of a normal around the prior's centre,
    truncated to the range, so strata are narrower where the prior puts more weight."""
    lo, hi = _scale(p, p.low), _scale(p, p.high)
    if p.prior is None or p.prior.center is None:
        return _unscale(p, lo + u * (hi - lo))
    mu, sigma = _scale(p, p.prior.center), p.prior.spread
    a, b = _NORMAL.cdf((lo - mu) / sigma), _NORMAL.cdf((hi - mu) / sigma)
    q = min(max(a + u * (b - a), 1e-12), 1 - 1e-12)
    return _unscale(p, min(max(mu + sigma * _NORMAL.inv_cdf(q), lo), hi))


def shares(p: Param, n: int) -> list:
    """n values of a categorical entry, each choice as often as its prior weight says (equal without
    one), every choice at least once when n allows it."""
    weights = p.prior.weights if p.prior and p.prior.weights else (1.0,) * len(p.choices)
    exact = [n * w / sum(weights) for w in weights]
    counts = [math.floor(e) for e in exact]
    for i in sorted(range(len(exact)), key=lambda i: counts[i] - exact[i])[:n - sum(counts)]:
        counts[i] += 1  # largest remainders first
    if n >= len(counts):
        for i in range(len(counts)):
            while counts[i] == 0:  # taken from the choice with the most
                counts[max(range(len(counts)), key=counts.__getitem__)] -= 1
                counts[i] += 1
    return [c for c, k in zip(p.choices, counts) for _ in range(k)]


def design(space: list[Param], n: int, seed: int) -> list[dict]:
    """The start's n points, the same for every process that builds it with this seed (a study is
    reproducible from sweep.seed; trial numbers pick distinct points, sweeper/search/sampler.py)."""
    rng = random.Random(f"qlora-sweep start {seed}")  # a str seed is hashed with SHA-512: stable across runs
    points = [{} for _ in range(n)]
    for p in space:
        if not p.searched:
            continue
        if p.type == "categorical":
            values = shares(p, n)
            rng.shuffle(values)
        else:
            strata = list(range(n))
            rng.shuffle(strata)
            values = [warp(p, (k + rng.random()) / n) for k in strata]
        for point, value in zip(points, values):
            point[p.name] = value
    if points:
        mode_first(space, points)
    return points


def mode(p: Param):
    """The value a prior believes best: its centre, or its one heaviest choice; else None."""
    if not p.searched or p.prior is None:
        return None
    if p.prior.center is not None:
        center = min(max(p.prior.center, p.low), p.high)
        return _unscale(p, _scale(p, center)) if p.step is not None or p.type == "int" else float(center)
    weights = p.prior.weights
    if weights and weights.count(max(weights)) == 1:
        return p.choices[weights.index(max(weights))]
    return None


def mode_first(space: list[Param], points: list[dict]) -> None:
    """The first point takes every prior's mode, a start centred on what the literature recommends
    before it spreads (SMAC's initial designs begin with the space's default configuration,
    smac.initial_design.DefaultInitialDesign; here the defaults are the priors'). Per entry, the
    design's value nearest the mode trades places with the first point's and then sits on the mode,
    so the other points keep their strata and shares; entries without a mode keep theirs."""
    for p in space:
        best = mode(p)
        if best is None:
            continue
        if p.type == "categorical":
            nearest = next((i for i, point in enumerate(points) if point[p.name] == best), 0)
        else:
            nearest = min(range(len(points)), key=lambda i: abs(_scale(p, points[i][p.name]) - _scale(p, best)))
        points[0][p.name], points[nearest][p.name] = points[nearest][p.name], points[0][p.name]
        points[0][p.name] = best
