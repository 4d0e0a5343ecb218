"""The KServe InferenceService target: the engine's layouts become named canaries (KServe's Standard mode),
round-trip edits keep comments and key order so a diff shows only what moved traffic, and the target is chosen
by the manifest's kind."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from deployment import kserve
from rollout.guardrails import check_manifest
from rollout.state import Rollout, Slot
from rollout.strategies import Step
from rollout.targets import TargetError
from rollout.targets.by_kind import ByKind, target_for
from rollout.targets.kserve import InferenceServiceV1Beta1, initial_manifest
from rollout.targets.seldon import SeldonDeploymentV1
from rollout.targets.seldon import initial_manifest as seldon_manifest

T = InferenceServiceV1Beta1()
A, B, C = "m-aaaaaaaaaaaa", "m-bbbbbbbbbbbb", "m-cccccccccccc"
DA, DB, DC = ("sha256:" + c * 64 for c in "abc")
ONE = initial_manifest("local", "file:///bundles/a", DA)
TWO = T.add_candidate(ONE, B, "file:///bundles/b", DB)


def changed_lines(a: str, b: str) -> list[str]:
    return [
        line
        for line in difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def test_the_initial_manifest_round_trips_byte_for_byte() -> None:
    assert T.apply(ONE, T.state(ONE).layout, None) == ONE
    state = T.state(ONE)
    assert state.weights() == {A: 100} and state.rollout is None and state.namespace == "sluice"
    assert check_manifest(ONE) == []


def test_add_candidate_is_a_named_canary_at_zero_built_like_the_stable_predictor() -> None:
    state = T.state(TWO)
    assert [(p.name, p.traffic, p.shadow) for p in state.predictors] == [(A, 100, False), (B, 0, False)]
    cand = state.predictor(B)
    assert cand is not None and (cand.model_uri, cand.model_digest) == ("file:///bundles/b", DB)
    doc = yaml.safe_load(TWO)
    (entry,) = doc["spec"]["canary"]
    assert entry["trafficPercent"] == 0 and entry["predictor"]["name"] == B
    stable_c, canary_c = doc["spec"]["predictor"]["containers"][0], entry["predictor"]["containers"][0]
    assert {k: v for k, v in canary_c.items() if k != "env"} == {
        k: v for k, v in stable_c.items() if k != "env"
    }
    assert check_manifest(TWO) == []
    # the stable manifest's lines are untouched: the diff is the canary entry alone
    assert all(line.startswith("+") for line in changed_lines(ONE, TWO))
    with pytest.raises(TargetError, match="already there"):
        T.add_candidate(TWO, B, "file:///bundles/b", DB)


def test_a_canary_stage_changes_one_line() -> None:
    ten = T.apply(TWO, (Slot(A, 90), Slot(B, 10)), None)
    half = T.apply(ten, (Slot(A, 50), Slot(B, 50)), None)
    assert changed_lines(TWO, ten) == ["-    - trafficPercent: 0", "+    - trafficPercent: 10"]
    assert changed_lines(ten, half) == ["-    - trafficPercent: 10", "+    - trafficPercent: 50"]
    assert T.state(half).weights() == {A: 50, B: 50}
    assert '# "m-" + the first 12 hex digits of the bundle digest' in half


def test_a_shadow_is_a_dark_canary_with_its_mirror_percentage() -> None:
    shadowed = T.apply(TWO, (Slot(A, 100), Slot(B, 100, shadow=True)), None)
    assert T.state(shadowed).layout == (Slot(A, 100), Slot(B, 100, shadow=True))
    view = kserve.loads(shadowed)
    assert view.canaries[0].declared_traffic == 0 and view.canaries[0].annotations[kserve.SHADOW] == "100"
    live = T.apply(shadowed, (Slot(A, 90), Slot(B, 10)), None)
    assert kserve.SHADOW not in live and T.state(live).weights() == {A: 90, B: 10}
    assert live == T.apply(TWO, (Slot(A, 90), Slot(B, 10)), None)  # no empty annotations map left behind


def test_promotion_makes_the_canary_the_stable_predictor_as_kserve_ran_it() -> None:
    doc = yaml.safe_load(T.apply(TWO, (Slot(A, 50), Slot(B, 50)), None))
    doc["spec"]["predictor"]["minReplicas"] = 4
    doc["spec"]["predictor"]["serviceAccountName"] = "models"
    doc["spec"]["canary"][0]["predictor"]["minReplicas"] = 2
    doc["spec"]["canary"][0]["predictor"]["annotations"] = {kserve.SHADOW: "100", "team": "ml"}
    doc["spec"]["canary"][0]["trafficPercent"] = 0
    text = yaml.safe_dump(doc, sort_keys=False)
    promoted = T.apply(text, (Slot(B, 100),), None)
    view = kserve.loads(promoted)
    assert view.weights() == {B: 100} and "canary" not in yaml.safe_load(promoted)["spec"]
    stable = yaml.safe_load(promoted)["spec"]["predictor"]
    assert stable["name"] == B and stable["minReplicas"] == 4 and stable["serviceAccountName"] == "models"
    assert stable["annotations"] == {"team": "ml"}  # the shadow marker is gone, the rest kept
    assert (view.stable.model_uri, view.stable.model_digest) == ("file:///bundles/b", DB)
    assert check_manifest(promoted) == []


def test_a_blue_green_switch_keeps_blue_at_zero_then_promotes() -> None:
    switched = T.apply(TWO, (Slot(A, 0), Slot(B, 100)), None)
    assert T.state(switched).weights() == {A: 0, B: 100} and check_manifest(switched) == []
    assert T.state(T.apply(switched, (Slot(B, 100),), None)).weights() == {B: 100}


def test_rollback_removes_the_canary_and_restores_the_first_manifest() -> None:
    stage = T.apply(TWO, (Slot(A, 75), Slot(B, 25)), None)
    assert T.apply(stage, (Slot(A, 100),), None) == ONE


@pytest.mark.parametrize(
    ("layout", "match"),
    [
        ((Slot(C, 100),), "no predictor named"),
        ((Slot(A, 100, shadow=True), Slot(B, 0)), "cannot be a shadow"),
        ((Slot(A, 80), Slot(B, 10)), r"takes what the canaries leave \(90%\), not 80%"),
        ((Slot(B, 60),), "can leave only when one canary takes all traffic"),
    ],
)
def test_layouts_an_inferenceservice_cannot_hold_are_refused(layout: tuple[Slot, ...], match: str) -> None:
    with pytest.raises(TargetError, match=match):
        T.apply(TWO, layout, None)


def test_annotation_round_trip() -> None:
    r = Rollout("canary", B, A, 1, 1_800_000_000.5, "progressing", "", 1_800_000_000.0)
    text = T.apply(TWO, None, r)
    assert T.state(text).rollout == r
    assert len(changed_lines(text, T.apply(text, None, r.evolve(stage=2)))) == 2


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("kind: Service\n", "InferenceService"),
        ("kind: [\n", "not valid YAML"),
        ("apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata: {name: x}\nspec: {}\n", "spec.predictor"),
        (ONE.replace("value: v2", "value: v2\n          - oops"), r"env\[3\]"),
        (ONE.replace("  annotations:\n", "  annotations:\n    sluice.dev/rollout: '{}'\n"), "sluice.dev/rollout"),
    ],
)  # fmt: skip
def test_bad_manifests_name_the_field(text: str, match: str) -> None:
    with pytest.raises(TargetError, match=match):
        T.state(text)


def test_a_stable_predictor_without_a_custom_container_cannot_get_a_candidate() -> None:
    doc = yaml.safe_load(ONE)
    doc["spec"]["predictor"] = {
        "name": A,
        "model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://a"},
    }
    with pytest.raises(TargetError, match="kserve-container"):
        T.add_candidate(yaml.safe_dump(doc), B, "s3://b", DB)


def test_the_target_is_chosen_by_the_manifests_kind() -> None:
    seldon_text = seldon_manifest("local", "models:/m/1", DA)
    assert isinstance(target_for(ONE), InferenceServiceV1Beta1)
    assert isinstance(target_for(seldon_text), SeldonDeploymentV1)
    both = ByKind()
    assert both.state(ONE).weights() == both.state(seldon_text).weights() == {A: 100}
    assert "canary:" in both.add_candidate(ONE, B, "file:///b", DB)
    assert "traffic: 0" in both.add_candidate(seldon_text, B, "models:/m/2", DB)
    for text in ("kind: Service\n", "{", "", "- a\n- b\n"):
        with pytest.raises(TargetError, match="SeldonDeployment or InferenceService"):
            both.state(text)


@settings(max_examples=60, deadline=None)
@given(weight=st.integers(0, 100), shadow=st.booleans())
def test_every_step_layout_is_a_valid_manifest(weight: int, shadow: bool) -> None:
    if shadow and weight == 0:
        weight = 1
    layout = Step("s", weight, 0, shadow=shadow).layout(A, B)
    text = T.apply(TWO, layout, None)
    assert check_manifest(text) == []
    assert T.state(text).layout == layout


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_registered_version_becomes_the_uri_kserve_fetches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bundle_dir: Path, rf_bundle_dir: Path
) -> None:
    """`models:/` is the registry's name for a version; KServe's storage initializer needs where its bundle is
    stored. `sluice rollout` writes that (the run's artifact URI), with the digest the version is tagged with."""
    from rollout_gitops import fast_policy
    from test_rollout_registry import _registry_in_repo
    from typer.testing import CliRunner

    from model.bundle import Bundle
    from sluice.cli import app

    repo, _, _ = _registry_in_repo(tmp_path, monkeypatch, bundle_dir, rf_bundle_dir)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "local.yaml").write_text(yaml.safe_dump(fast_policy("canary")))
    runner = CliRunner()
    common = ["--env", "local", "--repo", str(repo)]
    result = runner.invoke(
        app, ["rollout", "init", *common, "--target", "kserve", "--model", "models:/clf/1"]
    )
    assert result.exit_code == 0, result.output
    assert "gitops/environments/local/inferenceservice.yaml" in result.output
    result = runner.invoke(
        app,
        ["rollout", "start", *common, "--policies", str(policies), "--candidate", "models:/clf/2"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    text = (repo / "gitops" / "environments" / "local" / "inferenceservice.yaml").read_text()
    view = kserve.loads(text)
    assert kserve.admission(view) == []
    for p, source in zip(view.predictors, (bundle_dir, rf_bundle_dir), strict=True):
        assert p.model_uri is not None and p.model_uri.endswith("/bundle")
        stored = Bundle.open(Path(p.model_uri.removeprefix("file://")))
        assert stored.digest == p.model_digest == Bundle.open(source).digest
    result = runner.invoke(
        app, ["rollout", "start", *common, "--policies", str(policies), "--candidate", "models:/clf/9"]
    )
    assert result.exit_code == 1 and "has no version '9'" in result.output


def test_a_quarantine_is_recorded_and_found_in_an_inferenceservice_too() -> None:
    """The quarantine record is an annotation: the same place, read and written alike, in both kinds."""
    from rollout import quarantine

    both = ByKind()
    entry = quarantine.Entry(DB, B, "accuracy below the stable model's", 1_800_000_000.0, "canary")
    for text in (TWO, both.add_candidate(seldon_manifest("local", "models:/m/1", DA), B, "models:/m/2", DB)):
        recorded = quarantine.record(both, text, entry)
        assert both.state(recorded).weights() == both.state(text).weights()
        assert quarantine.find(both, recorded, DB, B) == entry
        assert quarantine.find(both, text, DB, B) is None
        assert both.annotation(recorded, quarantine.ANNOTATION) is not None
