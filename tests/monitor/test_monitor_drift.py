"""Drift statistics against a contract's reference: an unshifted sample stays quiet, a shifted one is flagged,
at rates measured over seeds (not one lucky draw)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.contract import QUANTILES, load_contract
from monitor import drift as d

REPO = Path(__file__).resolve().parents[2]

CONTRACT = load_contract(REPO / "contract.yaml")


def _reference_column(name: str) -> np.ndarray:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True).frame
    data.columns = [c.replace(" ", "_") for c in data.columns]
    return data[name].to_numpy(dtype=float)


def test_psi_is_zero_for_equal_distributions_and_grows_with_the_gap() -> None:
    ref = [0.05, 0.2, 0.25, 0.25, 0.2, 0.05]
    assert d.psi(ref, ref) == pytest.approx(0.0)
    assert 0 < d.psi(ref, [0.1, 0.2, 0.2, 0.25, 0.2, 0.05]) < d.psi(ref, [0.3, 0.3, 0.2, 0.1, 0.05, 0.05])


def test_numeric_bins_follow_the_reference_quantiles() -> None:
    quantiles = {0.25: 1.0, 0.5: 2.0, 0.75: 3.0}
    result = d.numeric("x", np.array([0.5, 1.0, 1.5, 2.5, 3.5, np.nan]), quantiles)
    assert result.n == 5
    assert result.expected == pytest.approx((0.25, 0.25, 0.25, 0.25))
    assert result.observed == pytest.approx((0.4, 0.2, 0.2, 0.2))
    assert result.bins == ("<= 1", "(1, 2]", "(2, 3]", "> 3")


def test_repeated_quantiles_merge_into_one_bin() -> None:
    result = d.numeric(
        "x", np.array([0.0, 0.0, 0.0, 1.0]), {0.05: 0.0, 0.25: 0.0, 0.5: 0.0, 0.75: 1.0, 0.95: 2.0}
    )
    assert sum(result.expected) == pytest.approx(1.0)
    assert all(e > 0 for e in result.expected)


def test_unknown_categories_are_pooled_and_count_as_drift() -> None:
    same = d.categorical("c", ["a"] * 50 + ["b"] * 50, {"a": 0.5, "b": 0.5})
    other = d.categorical("c", ["a"] * 50 + ["zzz"] * 50, {"a": 0.5, "b": 0.5})
    assert same.score == pytest.approx(0.0) and "(other)" not in same.bins
    assert other.bins[-1] == "(other)" and other.score > 1.0


def test_booleans_and_integral_floats_match_their_reference_keys() -> None:
    result = d.categorical("flag", [1.0, 0.0, 1.0, 0.0], {True: 0.5, False: 0.5})
    assert result.score == pytest.approx(0.0)


@pytest.mark.parametrize("n", [300, 1000])
def test_an_unshifted_feature_is_not_flagged_and_a_shifted_one_is(n: int) -> None:
    """Rows drawn from the data the contract was profiled from, 200 seeds: no false alarm on the unshifted
    features, and the shifted one (by half its 5-95 % range) flagged every time."""
    spec = CONTRACT.feature("mean_texture")
    assert spec.reference is not None and spec.reference.quantiles is not None
    q = spec.reference.quantiles
    shift = 0.5 * (q[0.95] - q[0.05])
    population = _reference_column("mean_texture")
    others = {name: _reference_column(name) for name in ("mean_radius", "worst_area", "mean_symmetry")}
    false_alarms = detected = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        drifts = [d.numeric("mean_texture", rng.choice(population, n) + shift, q)]
        for name, column in others.items():
            ref = CONTRACT.feature(name).reference
            assert ref is not None and ref.quantiles is not None
            drifts.append(d.numeric(name, rng.choice(column, n), ref.quantiles))
        flagged = d.flag(drifts, threshold=0.2)
        detected += flagged[0].drifted
        false_alarms += sum(x.drifted for x in flagged[1:])
    assert detected == 200
    assert false_alarms == 0


def test_small_samples_are_not_flagged_on_noise() -> None:
    """With 20 rows a PSI over 0.2 happens by chance; the chi-squared test at alpha / k keeps it quiet."""
    q = dict(zip(QUANTILES, [1.0, 2.0, 3.0, 4.0, 5.0], strict=True))
    flagged = 0
    for seed in range(300):
        rng = np.random.default_rng(seed)
        sample = np.interp(rng.random(20), [0.0, *QUANTILES, 1.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        flagged += d.flag([d.numeric("x", sample, q)] * 30, threshold=0.2)[0].drifted
    assert flagged <= 3
