"""The Seldon Core v1 target: round-trip edits keep comments and key order, so a diff shows only traffic."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollout.guardrails import check_manifest
from rollout.state import Rollout, Slot
from rollout.strategies import Step
from rollout.targets import TargetError
from rollout.targets.seldon import SeldonDeploymentV1, initial_manifest

REPO = Path(__file__).resolve().parents[2]
T = SeldonDeploymentV1()
A, B = "m-aaaaaaaaaaaa", "m-bbbbbbbbbbbb"
DA, DB = "sha256:" + "a" * 64, "sha256:" + "b" * 64


@pytest.fixture
def two() -> str:
    text = initial_manifest("local", "models:/m/1", DA)
    return T.add_candidate(text, B, "models:/m/2", DB)


def changed_lines(a: str, b: str) -> list[str]:
    return [
        line
        for line in difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def test_shipped_manifest_round_trips_byte_for_byte() -> None:
    text = (REPO / "gitops/environments/local/seldondeployment.yaml").read_text()
    assert T.dump(T.load(text)) == text
    state = T.state(text)
    assert len(state.predictors) == 1 and state.predictors[0].traffic == 100 and state.rollout is None


def test_weight_change_touches_only_traffic_lines(two: str) -> None:
    before = T.apply(two, (Slot(A, 90), Slot(B, 10)), None)
    after = T.apply(before, (Slot(A, 50), Slot(B, 50)), None)
    assert changed_lines(before, after) == [
        "-      traffic: 90",
        "-      traffic: 10",
        "+      traffic: 50",
        "+      traffic: 50",
    ] or sorted(changed_lines(before, after)) == sorted(
        ["-      traffic: 90", "+      traffic: 50", "-      traffic: 10", "+      traffic: 50"]
    )
    assert '# "m-" + the first 12 hex digits of the bundle digest' in after  # comments kept
    assert after.index("apiVersion") < after.index("kind") < after.index("metadata") < after.index("spec")


def test_add_candidate_copies_the_stable_predictor(two: str) -> None:
    state = T.state(two)
    assert [(p.name, p.traffic) for p in state.predictors] == [(A, 100), (B, 0)]
    cand = state.predictor(B)
    assert cand is not None and cand.model_uri == "models:/m/2" and cand.model_digest == DB
    doc = T.load(two)
    pa, pb = doc["spec"]["predictors"]
    assert pa["componentSpecs"] == pb["componentSpecs"] and pa["graph"]["name"] == pb["graph"]["name"]
    assert check_manifest(two) == []
    with pytest.raises(TargetError, match="already there"):
        T.add_candidate(two, B, "x", DB)


def test_shadow_flag_and_removal(two: str) -> None:
    shadowed = T.apply(two, (Slot(A, 100), Slot(B, 100, shadow=True)), None)
    assert T.state(shadowed).predictor(B).shadow  # type: ignore[union-attr]
    assert changed_lines(two, shadowed) == ["-      traffic: 0", "+      traffic: 100", "+      shadow: true"]
    live = T.apply(shadowed, (Slot(A, 90), Slot(B, 10)), None)
    assert "shadow:" not in live
    back = T.apply(live, (Slot(A, 100),), None)
    assert [p.name for p in T.state(back).predictors] == [A] and check_manifest(back) == []
    assert back == T.apply(initial_manifest("local", "models:/m/1", DA), (Slot(A, 100),), None)
    with pytest.raises(TargetError, match="no predictor named"):
        T.apply(two, (Slot("m-cccccccccccc", 100),), None)


def test_annotation_round_trip(two: str) -> None:
    r = Rollout("ab", B, A, 0, 1_800_000_000.5, "progressing", "", 1_800_000_000.0, "x-sluice-user")
    text = T.apply(two, None, r)
    assert T.state(text).rollout == r
    again = T.apply(text, None, r.evolve(stage=1))
    assert len(changed_lines(text, again)) == 2  # one annotation line out, one in


API = "apiVersion: machinelearning.seldon.io/v1\n"
ONE = "    - name: a\n      graph: {name: classifier}\n"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("kind: Service\n", "SeldonDeployment"),
        (
            f"{API}kind: SeldonDeployment\nmetadata: {{name: x}}\nspec: {{predictors: []}}\n",
            "spec.predictors",
        ),
        ("kind: [\n", "not valid YAML"),
        (
            f"{API}kind: SeldonDeployment\nmetadata: {{name: x}}\nspec:\n  predictors:\n    - name: a\n      traffic: lots\n",
            r"spec.predictors\[0\].traffic",
        ),
        (
            f"{API}kind: SeldonDeployment\nmetadata:\n  name: x\n  annotations:\n    sluice.dev/rollout: '{{}}'\n"
            f"spec:\n  predictors:\n{ONE}",
            "sluice.dev/rollout",
        ),
        (
            f'{API}kind: SeldonDeployment\nmetadata:\n  name: x\n  annotations:\n    sluice.dev/rollout: \'{{"strategy": "canary", '
            '"candidate": "b", "stable": "a", "stage": 0, "entered_at": "2026-01-01T00:00:00Z", '
            f'"status": "sleeping"}}\'\nspec:\n  predictors:\n{ONE}',
            "sleeping",
        ),
    ],
)
def test_bad_manifests_name_the_field(text: str, match: str) -> None:
    with pytest.raises(TargetError, match=match):
        T.state(text)


TWO = T.add_candidate(initial_manifest("local", "models:/m/1", DA), B, "models:/m/2", DB)


@settings(max_examples=60, deadline=None)
@given(weight=st.integers(0, 100), shadow=st.booleans())
def test_every_step_layout_is_a_valid_manifest(weight: int, shadow: bool) -> None:
    two = TWO
    if shadow and weight == 0:
        weight = 1
    layout = Step("s", weight, 0, shadow=shadow).layout(A, B)
    text = T.apply(two, layout, None)
    assert check_manifest(text) == []
    assert T.state(text).layout == layout
