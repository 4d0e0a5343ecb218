"""The pure routing core: weighted split, sticky keys, dead predictors, overrides, retries, mirroring."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serving.router.comparison import decisions, disagree
from serving.router.routing import (
    RoutingTable,
    ShadowRefused,
    Target,
    UnknownPredictor,
    key_point,
    sticky_header,
)


def always(_: str) -> bool:
    return True


def table(*weights: int, shadow: int | None = None) -> RoutingTable:
    targets = [Target(f"p{i}", w) for i, w in enumerate(weights)]
    if shadow is not None:
        targets.append(Target("s", shadow, shadow=True))
    return RoutingTable(targets)


def test_split_follows_weights_within_a_statistical_bound() -> None:
    t = table(70, 20, 10, shadow=0)
    rng = random.Random(7)
    n = 20_000
    counts = Counter(t.pick(rng.random() * 100, always) for _ in range(n))
    assert "s" not in counts  # the shadow never answers
    for name, weight in (("p0", 70), ("p1", 20), ("p2", 10)):
        p = weight / 100
        sd = (n * p * (1 - p)) ** 0.5
        assert abs(counts[name] - n * p) < 4.5 * sd, (name, counts)


def test_weight_zero_gets_nothing_and_all_zero_falls_to_the_first_alive() -> None:
    t = table(100, 0)
    assert {t.pick(x, always) for x in (0.0, 50.0, 99.999)} == {"p0"}
    single = table(0)
    assert single.pick(42.0, always) == "p0"


def test_sticky_key_is_stable_and_survives_a_weight_change_where_its_point_allows() -> None:
    before, after = table(90, 10), table(50, 50)
    users = [f"user-{i}" for i in range(2000)]
    moved = 0
    for u in users:
        point = key_point(u)
        assert key_point(u) == point and 0 <= point < 100
        a, b = before.pick(point, always), after.pick(point, always)
        assert a == before.pick(point, always)  # same user, same model, every time
        if a != b:
            moved += 1
            assert a == "p0" and b == "p1" and 50 <= point < 90  # only the slice that changed hands
    # Users leave p0 only for the 40 points it gave up.
    assert 0.35 * len(users) < moved < 0.45 * len(users)
    # p1's original users (points >= 90) all stay on p1.
    assert all(after.pick(key_point(u), always) == "p1" for u in users if key_point(u) >= 90)


def test_a_dead_predictor_shares_out_its_traffic_and_sticky_users_fall_back_consistently() -> None:
    t = table(50, 30, 20)
    dead = {"p0"}

    def alive(name: str) -> bool:
        return name not in dead

    rng = random.Random(1)
    counts = Counter(t.pick(rng.random() * 100, alive) for _ in range(10_000))
    assert counts["p0"] == 0
    assert abs(counts["p1"] / 10_000 - 0.6) < 0.03  # 30:20 of the rest
    assert t.pick(key_point("u1"), alive) == t.pick(key_point("u1"), alive)
    assert t.pick(10.0, lambda n: False) is None


def test_override_names_a_live_predictor_or_is_refused() -> None:
    t = table(100, 0, shadow=0)
    assert t.resolve_live("p1") == "p1"
    assert t.resolve_live(":p1:") == "p1"  # Seldon v2's x-seldon-route form
    assert t.resolve("s") == "s"  # feedback and pins may name it; an override may not
    with pytest.raises(ShadowRefused, match="'s' is the shadow"):
        t.resolve_live("s")
    with pytest.raises(UnknownPredictor, match=r"unknown predictor 'nope' \(this deployment has: p0, p1\)"):
        t.resolve_live("nope")


def test_fallback_is_another_live_non_shadow_predictor() -> None:
    t = table(90, 10, shadow=100)
    assert t.fallback("p1", always) == "p0"
    assert t.fallback("p0", always) == "p1"
    assert t.fallback("p0", lambda n: n != "p1") is None  # never the shadow


def test_mirror_percentage_follows_istio() -> None:
    assert table(100, shadow=0).mirror_percent == 100  # no traffic on the shadow: mirror everything
    t = table(100, shadow=25)
    assert t.mirror_percent == 25
    assert t.mirrors(24.9) and not t.mirrors(25.0)
    assert not table(100).mirrors(0.0)


def test_decisions_read_both_protocols() -> None:
    v1 = {"data": {"names": ["0", "1"], "ndarray": [[0.9, 0.1], [0.2, 0.8]]}}
    assert decisions(v1) == [0, 1]
    assert decisions({"data": {"tensor": {"shape": [2, 2], "values": [0.9, 0.1, 0.2, 0.8]}}}) == [0, 1]
    assert decisions({"jsonData": {"labels": [1, 0], "probabilities": [[0.1, 0.9], [0.9, 0.1]]}}) == [1, 0]
    v2 = {
        "outputs": [
            {"name": "probabilities", "shape": [1, 2], "datatype": "FP32", "data": [0.3, 0.7]},
            {"name": "label", "shape": [1], "datatype": "INT64", "data": [1]},
        ]
    }
    assert decisions(v2) == [1]
    assert decisions({"outputs": [{"name": "probabilities", "shape": [1, 2], "data": [0.7, 0.3]}]}) == [0]
    assert decisions(b"not json") is None
    assert decisions({"status": "FAILURE"}) is None


def test_disagreement_compares_classes_not_probabilities() -> None:
    live = b'{"data": {"ndarray": [[0.9, 0.1]]}}'
    assert disagree(live, b'{"data": {"ndarray": [[0.6, 0.4]]}}') is False
    assert disagree(live, b'{"data": {"ndarray": [[0.4, 0.6]]}}') is True
    assert disagree(live, b"{}") is None


@st.composite
def tables(draw: st.DrawFn) -> tuple[RoutingTable, set[str]]:
    n = draw(st.integers(1, 5))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=n - 1, max_size=n - 1)))
    weights = [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=True)]
    if n == 1:
        weights = [draw(st.sampled_from([0, 100]))]
    targets = [Target(f"p{i}", w) for i, w in enumerate(weights)]
    if draw(st.booleans()):
        targets.append(Target("s", draw(st.integers(0, 100)), shadow=True))
    dead = set(draw(st.lists(st.sampled_from([t.name for t in targets]), unique=True)))
    return RoutingTable(targets), dead


@given(tables(), st.floats(0, 100, exclude_max=True), st.text(min_size=1, max_size=20))
def test_pick_answers_with_an_alive_live_predictor_whenever_there_is_one(
    case: tuple[RoutingTable, set[str]], point: float, user: str
) -> None:
    t, dead = case

    def alive(name: str) -> bool:
        return name not in dead

    for p in (point, key_point(user)):
        chosen = t.pick(p, alive)
        live_alive = [x.name for x in t.live if alive(x.name)]
        if not live_alive:
            assert chosen is None
            continue
        assert chosen in live_alive  # never the shadow, never a dead one
        assert t.pick(p, alive) == chosen  # deterministic for a point: sticky
        if not dead:
            weight = t.by_name[chosen].traffic
            assert weight > 0 or all(x.traffic == 0 for x in t.live)


# which header pins a user ------------------------------------------------------------------------------------
def _annotation(**fields: object) -> dict[str, str]:
    import json

    from deployment.names import ANNOTATION

    state = {"candidate": "m-b", "stable": "m-a", "stage": 0, "entered_at": "2026-01-01T00:00:00.000000Z"}
    return {ANNOTATION: json.dumps({**state, **fields})}


def test_the_sticky_header_is_the_rollouts() -> None:
    assert sticky_header({}) == "x-sluice-user"  # no rollout: the default key pins
    assert sticky_header(_annotation(strategy="ab", sticky_key="X-Team")) == "x-team"
    assert sticky_header(_annotation(strategy="ab")) == "x-sluice-user"
    for strategy in ("canary", "shadow", "bluegreen"):  # stages weigh requests: nobody is pinned
        assert sticky_header(_annotation(strategy=strategy, status="progressing")) is None
    assert sticky_header(_annotation(strategy="canary", status="promoted")) == "x-sluice-user"
    assert sticky_header(_annotation(strategy="ab", sticky_key="bad header\r\n")) == "x-sluice-user"
    assert sticky_header({"sluice.dev/rollout": "{not json"}) == "x-sluice-user"


def test_an_ab_split_pins_users_and_splits_them_by_the_weight() -> None:
    t = table(90, 10)
    users = [f"customer-{i}" for i in range(5000)]
    arms = {u: t.pick(key_point(u), always) for u in users}
    assert all(t.pick(key_point(u), always) == arms[u] for u in users[:500])  # pinned
    on_candidate = sum(arm == "p1" for arm in arms.values())
    sd = (len(users) * 0.1 * 0.9) ** 0.5
    assert abs(on_candidate - 0.1 * len(users)) < 4 * sd
