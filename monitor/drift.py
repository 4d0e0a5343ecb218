"""Drift of live data against the data contract's reference: pure functions of counts, no I/O.

A numeric feature's reference is a few quantiles of the training data (contract.yaml, written by `sluice model
profile`); they cut the line into bins whose reference shares are known exactly (quantiles 0.05, 0.25, 0.5,
0.75, 0.95 give 5 %, 20 %, 25 %, 25 %, 20 %, 5 %). A categorical feature's reference is its category
frequencies. Over those bins each feature gets:

    score    the population stability index, sum((live - ref) * ln(live / ref)): 0 for the same
             distribution, above 0.2 by the usual rule of thumb a shift worth acting on (the alert rules and
             `monitoring.drift_threshold` use 0.2)
    p_value  Pearson's chi-squared goodness-of-fit test of the live counts against the reference shares

A feature is flagged only when both say so: its score is over the threshold and its p-value under alpha divided
by the number of features (Bonferroni). Under no drift, n * PSI is close to a chi-squared variable with
bins - 1 degrees of freedom, so with a few hundred rows the score of an unshifted feature stays near
(bins - 1) / n, far below 0.2, and the test keeps small samples from being flagged on noise.
For numeric features, `ks` is the largest gap between the live and reference distribution functions at the
reference quantiles (a Kolmogorov-Smirnov statistic read at the points the contract keeps).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

EPSILON = 1e-4  # a bin's share floor, so an empty bin adds a large but finite term


@dataclass(frozen=True)
class Drift:
    """One feature's (or the predictions') drift against its reference."""

    feature: str
    kind: str  # numeric or categorical
    n: int
    score: float  # population stability index
    p_value: float
    ks: float | None
    bins: tuple[str, ...]
    expected: tuple[float, ...]  # reference shares per bin
    observed: tuple[float, ...]  # live shares per bin
    drifted: bool = False


def psi(expected: ArrayLike, observed: ArrayLike) -> float:
    """Population stability index of two distributions over the same bins."""
    e = np.clip(np.asarray(expected, dtype=float), EPSILON, None)
    o = np.clip(np.asarray(observed, dtype=float), EPSILON, None)
    return float(np.sum((o - e) * np.log(o / e)))


def chi_squared(expected: ArrayLike, counts: ArrayLike) -> float:
    """p-value of Pearson's goodness-of-fit test of `counts` against the shares `expected`."""
    c = np.asarray(counts, dtype=float)
    total = c.sum()
    if total == 0:
        return 1.0
    e = np.clip(np.asarray(expected, dtype=float), EPSILON, None)
    e = e / e.sum() * total
    return float(stats.chisquare(c, e).pvalue)


def numeric(feature: str, values: np.ndarray, quantiles: Mapping[float, float]) -> Drift:
    """Drift of a numeric column (NaN ignored) against reference quantiles {q: value}."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    qs = sorted(quantiles)
    edges = np.array([quantiles[q] for q in qs], dtype=float)
    shares = np.diff(np.concatenate([[0.0], np.asarray(qs), [1.0]]))
    # Bin i holds values in (edge[i-1], edge[i]]; equal edges (a column with a point mass) merge into one bin.
    idx = np.searchsorted(edges, x, side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype(int)
    labels = [f"<= {edges[0]:g}"] + [f"({a:g}, {b:g}]" for a, b in itertools.pairwise(edges)]
    labels.append(f"> {edges[-1]:g}")
    counts_m, shares_m, labels_m = _merge_empty(counts, shares, labels)
    found = _compare(feature, "numeric", counts_m, shares_m, labels_m)
    if found.n:
        gaps = np.abs(np.cumsum(found.observed)[:-1] - np.cumsum(shares_m)[:-1])
        found = Drift(**{**found.__dict__, "ks": float(np.max(gaps))})
    return found


def _compare(feature: str, kind: str, counts: np.ndarray, expected: np.ndarray, bins: Sequence[str]) -> Drift:
    """PSI and the chi-squared test of bin counts against the reference shares."""
    n = int(counts.sum())
    observed = counts / n if n else np.zeros(len(counts))
    return Drift(
        feature,
        kind,
        n,
        psi(expected, observed) if n else 0.0,
        chi_squared(expected, counts) if n else 1.0,
        None,
        tuple(bins),
        tuple(float(e) for e in expected),
        tuple(float(o) for o in observed),
    )


def _merge_empty(
    counts: np.ndarray, shares: np.ndarray, labels: list[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Fold bins the reference gives no share (repeated quantile values) into their right-hand neighbour."""
    keep_c: list[float] = []
    keep_s: list[float] = []
    keep_l: list[str] = []
    carry_c = carry_s = 0.0
    for c, s, label in zip(counts, shares, labels, strict=True):
        carry_c += c
        carry_s += s
        if carry_s > 0:
            keep_c.append(carry_c)
            keep_s.append(carry_s)
            keep_l.append(label)
            carry_c = carry_s = 0.0
    if carry_c and keep_c:
        keep_c[-1] += carry_c
    return np.asarray(keep_c, dtype=int), np.asarray(keep_s), keep_l


def categorical(feature: str, values: Sequence[Any], frequencies: Mapping[Any, float]) -> Drift:
    """Drift of a categorical column (None and "" ignored) against reference frequencies {category: share}.
    Categories the reference never saw are pooled into one `(other)` bin with a share of zero."""
    keys = [category_key(k) for k in frequencies]
    shares = np.asarray([float(v) for v in frequencies.values()], dtype=float)
    shares = shares / shares.sum() if shares.sum() > 0 else shares
    position = {k: i for i, k in enumerate(keys)}
    counts = np.zeros(len(keys) + 1, dtype=int)
    for v in values:
        if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
            continue
        counts[position.get(category_key(v), len(keys))] += 1
    expected = np.append(shares, 0.0)
    bins = [*keys, "(other)"]
    if counts[-1] == 0:
        counts, expected, bins = counts[:-1], expected[:-1], bins[:-1]
    return _compare(feature, "categorical", counts, expected, bins)


def category_key(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def flag(drifts: Sequence[Drift], threshold: float, alpha: float = 0.01) -> list[Drift]:
    """The same drifts, each `drifted` when its score is over `threshold` and its test rejects at alpha / k."""
    if not drifts:
        return []
    level = alpha / len(drifts)
    return [
        Drift(**{**d.__dict__, "drifted": d.n > 0 and d.score > threshold and d.p_value < level})
        for d in drifts
    ]
