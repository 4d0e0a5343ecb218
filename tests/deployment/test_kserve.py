"""The deployment contract for KServe: one view of an InferenceService, KServe's defaults and admission rules
plus Sluice's, and the same answers for every reader (the local runtime, the router, the reconciler)."""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from deployment import kinds, kserve
from deployment.view import ManifestError
from rollout.guardrails import check_manifest
from rollout.targets.kserve import InferenceServiceV1Beta1, initial_manifest
from serving.local.spec import read_manifest

REPO = Path(__file__).resolve().parents[2]
DA, DB, DC = ("sha256:" + c * 64 for c in "abc")
IMG = "ghcr.io/x/serving:0.1@sha256:" + "c" * 64
T = InferenceServiceV1Beta1()


def isvc(*canaries: tuple[str, int, str], stable_uri: str = "s3://models/a") -> dict[str, Any]:
    """An InferenceService as `sluice rollout` writes it, with canaries (name, trafficPercent, digest)."""
    text = initial_manifest("staging", stable_uri, DA, namespace="staging", image=IMG)
    for name, _, digest in canaries:
        text = T.add_candidate(text, name, f"s3://models/{name}", digest)
    doc = yaml.safe_load(text)
    for entry, (_, percent, _) in zip(doc["spec"].get("canary", []), canaries, strict=True):
        entry["trafficPercent"] = percent
    return dict(doc)


def canary(doc: dict[str, Any], i: int = 0) -> dict[str, Any]:
    return dict(doc["spec"]["canary"][i]["predictor"])


def container(predictor: dict[str, Any]) -> dict[str, Any]:
    return dict(predictor["containers"][0])


def test_the_initial_manifest_reads_with_kserves_defaults() -> None:
    view = kserve.parse(isvc())
    assert view.kind == "InferenceService" and view.deployment_mode == "Standard"
    assert view.weights() == {"m-aaaaaaaaaaaa": 100}
    (stable,) = view.predictors
    assert stable.where == "spec.predictor" and stable.container == kserve.CONTAINER
    assert (stable.model_uri, stable.model_digest) == ("s3://models/a", DA)
    assert stable.model_name == "sluice-classifier"  # KServe's convention: the model is named as the service
    assert stable.image_name == "ghcr.io/x/serving" and stable.image_tag == "0.1"
    assert kserve.service_name(view, stable) == "sluice-classifier-m-aaaaaaaaaaaa-predictor"
    assert kserve.admission(view) == []


def test_the_stable_predictor_takes_what_the_canaries_leave_and_a_shadow_its_mirror() -> None:
    doc = isvc(("m-bbbbbbbbbbbb", 30, DB), ("m-cccccccccccc", 0, DC))
    doc["spec"]["canary"][1]["predictor"]["annotations"] = {kserve.SHADOW: "100"}
    view = kserve.parse(doc)
    assert view.weights() == {"m-aaaaaaaaaaaa": 70, "m-bbbbbbbbbbbb": 30, "m-cccccccccccc": 100}
    assert [p.name for p in view.live] == ["m-aaaaaaaaaaaa", "m-bbbbbbbbbbbb"]
    assert view.shadow is not None and view.shadow.name == "m-cccccccccccc"
    assert kserve.admission(view) == []


def test_a_canary_inherits_what_it_does_not_set_as_kserve_merges_it() -> None:
    doc = isvc(("m-bbbbbbbbbbbb", 10, DB))
    doc["spec"]["predictor"]["serviceAccountName"] = "models"
    doc["spec"]["predictor"]["annotations"] = {"team": "ml", "version": "1"}
    doc["spec"]["canary"][0]["predictor"]["annotations"] = {"version": "2"}
    merged = kserve.merge(doc["spec"]["predictor"], canary(doc))
    assert merged["serviceAccountName"] == "models" and merged["name"] == "m-bbbbbbbbbbbb"
    assert merged["annotations"] == {"team": "ml", "version": "2"}
    c = kserve.parse(doc).canaries[0]
    assert c.annotations == {"team": "ml", "version": "2"} and c.version == "2"
    assert c.model_uri == "s3://models/m-bbbbbbbbbbbb"
    assert c.env_field == "spec.canary[0].predictor.containers[0].env"
    # A canary with no containers of its own runs the stable predictor's: the same model, which KServe's
    # promotion (predictor.name changing without a model change) would refuse.
    del doc["spec"]["canary"][0]["predictor"]["containers"]
    c = kserve.parse(doc).canaries[0]
    assert c.model_uri == "s3://models/a" and c.env_field == "spec.predictor.containers[0].env"
    found = kserve.admission(kserve.parse(doc))
    assert [(v.path, v.rule) for v in found] == [("spec.predictor.containers[0].env[STORAGE_URI]", "kserve")]
    assert "only with a model change" in found[0].message


def test_a_canarys_replicas_follow_its_share_of_the_stable_ones() -> None:
    doc = isvc(("m-bbbbbbbbbbbb", 25, DB))
    doc["spec"]["predictor"]["minReplicas"] = 4
    assert kserve.parse(doc).canaries[0].min_replicas == 1  # ceil(4 * 25 / 100)
    doc["spec"]["canary"][0]["trafficPercent"] = 60
    assert kserve.parse(doc).canaries[0].min_replicas == 3


def _set(path: str | tuple[str, ...], value: Any) -> Any:
    """Set (or delete) the field at a dotted path, or at a tuple of keys when a key has dots in it."""

    def mutate(doc: dict[str, Any]) -> None:
        node: Any = doc
        parts = path if isinstance(path, tuple) else tuple(path.split("."))
        keys = [int(k) if k.isdigit() else k for k in parts]
        for k in keys[:-1]:
            node = node[k]
        if value is _DELETE:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value

    return mutate


_DELETE = object()


def _both(*mutations: Any) -> Any:
    def mutate(doc: dict[str, Any]) -> None:
        for m in mutations:
            m(doc)

    return mutate


ANN = ("metadata", "annotations", kserve.DEPLOYMENT_MODE)
C0 = "spec.canary.0.predictor"
ENV0 = "spec.predictor.containers.0.env"


@pytest.mark.parametrize(
    ("mutate", "rule", "path"),
    [
        (_set("metadata.name", "1-classifier"), "kserve", "metadata.name"),
        (_set(ANN, "RawDeployment"), "kserve", f"metadata.annotations[{kserve.DEPLOYMENT_MODE}]"),
        (_set(ANN, "RawDeployment"), "mode", f"metadata.annotations[{kserve.DEPLOYMENT_MODE}]"),
        (_set(f"{C0}.name", "m-aaaaaaaaaaaa"), "kserve", f"{C0.replace('.0.', '[0].')}.name"),
        (_set(f"{C0}.name", _DELETE), "kserve", "spec.canary[0].predictor.name"),
        (_set("spec.canary.0.trafficPercent", 101), "kserve", "spec.canary[0].trafficPercent"),
        (_set("spec.canary.0.trafficPercent", 101), "kserve", "spec.canary[].trafficPercent"),
        (_set(f"{C0}.maxReplicas", 3), "kserve", "spec.canary[0].predictor.maxReplicas"),
        (_set(f"{C0}.autoScaling", {"metrics": []}), "kserve", "spec.canary[0].predictor.autoScaling"),
        (_set(f"{C0}.minReplicas", 2), "kserve", "spec.canary[0].predictor.minReplicas"),
        (_set("spec.predictor.maxReplicas", 0), None, None),  # no upper bound
        (_set("spec.predictor.minReplicas", -1), "kserve", "spec.predictor.minReplicas"),
        (_set("spec.predictor.maxReplicas", -2), "kserve", "spec.predictor.minReplicas"),
        (_both(_set("spec.predictor.maxReplicas", 1), _set("spec.predictor.minReplicas", 3)), "kserve", "spec.predictor.minReplicas"),
        (_set(f"{ENV0}.0.value", "ftp://host/model"), "kserve", f"spec.predictor.containers[0].env[{kserve.STORAGE_URI}]"),
        (_set(f"{ENV0}.0.value", "models:/clf/1"), "pinning", f"spec.predictor.containers[0].env[{kserve.STORAGE_URI}]"),
        (_set(f"{ENV0}.0.value", "runs:/abc/bundle"), "pinning", f"spec.predictor.containers[0].env[{kserve.STORAGE_URI}]"),
        (_set(f"{ENV0}.2.value", "v3"), "kserve", "spec.predictor.containers[0].env[PROTOCOL]"),
        (_set("spec.predictor.model", {"modelFormat": {"name": "sklearn"}}), "kserve", "spec.predictor"),
        (_set("spec.predictor.canaryTrafficPercent", 10), "mode", "spec.predictor.canaryTrafficPercent"),
        (_set(f"{ENV0}.1.value", "latest"), "pinning", f"spec.predictor.containers[0].env[{kserve.DIGEST_ENV}]"),
        (_set("spec.predictor.containers.0.args", ["--model=/mnt/models", "--name=sluice-classifier"]), "pinning", "spec.predictor.containers[0].args"),
        (_set("spec.predictor.containers.0.args", ["--digest=$(SLUICE_MODEL_DIGEST)", "--name=other"]), "container", "spec.predictor.containers[0].args"),
        (_set(f"{C0}.containers.0.image", "ghcr.io/x/serving:latest"), "pinning", "spec.canary[0].predictor.containers[0].image"),
        (_set("spec.predictor.initContainers", [{"name": "w", "image": "busybox"}]), "pinning", "spec.predictor.initContainers[0].image"),
        (_set("spec.predictor.annotations", {kserve.SHADOW: "100"}), "shadow", f"spec.predictor.annotations[{kserve.SHADOW}]"),
        (_set(f"{C0}.annotations", {kserve.SHADOW: "all"}), "shadow", f"spec.canary[0].predictor.annotations[{kserve.SHADOW}]"),
        (_set(f"{C0}.annotations", {kserve.SHADOW: "50"}), "shadow", "spec.canary[0].trafficPercent"),
        (_set("spec.predictor.name", _DELETE), "names", "spec.predictor.name"),
        (_set("spec.predictor.name", "M_A"), "names", "spec.predictor.name"),
        (_set("spec.predictor.name", "m-" + "a" * 40), "names", "spec.predictor.name"),
        (_set("spec.predictor.containers.0.name", "server"), None, None),  # a lone container: KServe names it
        (_set("spec.predictor.containers", [{"name": "a", "image": IMG}, {"name": "b", "image": IMG}]), "container", "spec.predictor.containers"),
    ],
)  # fmt: skip
def test_kserves_admission_rules_and_ours(mutate: Any, rule: str | None, path: str | None) -> None:
    doc = isvc(("m-bbbbbbbbbbbb", 10, DB))
    mutate(doc)
    found = kserve.admission(kserve.parse(doc))
    if rule is None:
        assert found == []
        return
    assert (path, rule) in {(v.path, v.rule) for v in found}, found
    # the guardrails (reconciler, gitops check) and the local runtime refuse it too
    assert (path, rule) in {(v.path, v.rule) for v in check_manifest(doc)}


def test_canaries_over_100_and_two_shadows_are_refused() -> None:
    doc = isvc(("m-bbbbbbbbbbbb", 60, DB), ("m-cccccccccccc", 50, DC))
    found = kserve.admission(kserve.parse(doc))
    assert any("must sum to at most 100, got 110" in v.message for v in found)
    assert kserve.parse(doc).stable.traffic == 0
    for i in range(2):
        doc["spec"]["canary"][i]["trafficPercent"] = 0
        doc["spec"]["canary"][i]["predictor"]["annotations"] = {kserve.SHADOW: "10"}
    assert any(v.rule == "shadow" and "at most one shadow" in v.message for v in check_manifest(doc))


def test_duplicate_canary_names_are_refused() -> None:
    doc = isvc(("m-bbbbbbbbbbbb", 10, DB), ("m-cccccccccccc", 10, DC))
    doc["spec"]["canary"][1]["predictor"]["name"] = "m-bbbbbbbbbbbb"
    found = {(v.path, v.rule) for v in kserve.admission(kserve.parse(doc))}
    where = "spec.canary[1].predictor.name"
    assert (where, "kserve") in found and (where, "names") in found


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (_set("spec.canary", {"predictor": {}}), "spec.canary"),
        (_set("spec.canary.0", ["m-b"]), "spec.canary[0]"),
        (_set("spec.canary.0.trafficPercent", "10"), "spec.canary[0].trafficPercent"),
        (_set("spec.canary.0.trafficPercent", True), "spec.canary[0].trafficPercent"),
        (_set("spec.canary.0.trafficPercent", _DELETE), "spec.canary[0].trafficPercent"),
        (_set("spec.predictor.canaryTrafficPercent", 1.5), "spec.predictor.canaryTrafficPercent"),
        (_set("spec.predictor", ["x"]), "spec.predictor"),
        (_set("spec.predictor.containers", "kserve-container"), "spec.predictor.containers"),
        (_set("spec.predictor.containers.0.env", {"STORAGE_URI": "x"}), "spec.predictor.containers[0].env"),
        (_set("spec.predictor.containers.0.env.0", "STORAGE_URI=x"), "spec.predictor.containers[0].env[0]"),
        (_set("spec.predictor.name", 7), "spec.predictor.name"),
        (_set("spec.predictor.minReplicas", "2"), "spec.predictor.minReplicas"),
        (_set(f"{C0}.annotations", ["x"]), "spec.canary[0].predictor.annotations"),
        (_set("metadata.annotations", "x"), "metadata.annotations"),
        (_set("apiVersion", "serving.kserve.io/v1alpha1"), "apiVersion"),
        (_set("metadata", None), "metadata"),
        (_set("spec", None), "spec"),
    ],
)
def test_hostile_shapes_are_refused_naming_the_field(mutate: Any, field: str) -> None:
    doc = isvc(("m-bbbbbbbbbbbb", 10, DB))
    mutate(doc)
    with pytest.raises(ManifestError, match=f"field {re.escape(field)}"):
        kserve.parse(doc)
    assert check_manifest(doc) and all(v.rule == "shape" for v in check_manifest(doc))


def test_every_reader_finds_and_reads_the_environments_one_manifest(tmp_path: Path) -> None:
    env = tmp_path / "env"
    env.mkdir()
    (env / "inferenceservice.yaml").write_text(yaml.safe_dump(isvc(("m-bbbbbbbbbbbb", 10, DB))))
    assert kinds.find(env).name == "inferenceservice.yaml"
    assert isinstance(kinds.read(env), kserve.InferenceService)
    spec = read_manifest(env, check_uri=None)
    assert [(p.name, p.traffic, p.model_name) for p in spec.predictors] == [
        ("m-aaaaaaaaaaaa", 90, "sluice-classifier"),
        ("m-bbbbbbbbbbbb", 10, "sluice-classifier"),
    ]
    # two manifests in one environment: which one runs would be a guess, so neither does
    (env / "seldondeployment.yaml").write_text(
        (REPO / "gitops" / "environments" / "local" / "seldondeployment.yaml").read_text()
    )
    with pytest.raises(ManifestError, match="more than one InferenceService and SeldonDeployment"):
        kinds.find(env)


def test_the_local_runtime_names_the_field_of_a_model_it_cannot_load(tmp_path: Path) -> None:
    (tmp_path / "inferenceservice.yaml").write_text(yaml.safe_dump(isvc()))
    field = re.escape("field spec.predictor.containers[0].env[STORAGE_URI]: 's3://")
    with pytest.raises(ManifestError, match=field):
        read_manifest(tmp_path)


@functools.cache
def _with_canaries(n: int) -> dict[str, Any]:
    digests = ["sha256:" + c * 64 for c in "bcd"][:n]
    return isvc(*((f"m-{d[7:19]}", 0, d) for d in digests))


weights = st.lists(st.tuples(st.integers(-5, 105), st.one_of(st.none(), st.integers(-5, 105))), max_size=3)


@settings(max_examples=200, deadline=None)
@given(layout=weights)
def test_serving_and_rollout_accept_and_refuse_the_same_inferenceservices(
    tmp_path_factory: Any, layout: list[tuple[int, int | None]]
) -> None:
    doc = copy.deepcopy(_with_canaries(len(layout)))
    for entry, (percent, mirror) in zip(doc["spec"].get("canary", []), layout, strict=True):
        entry["trafficPercent"] = percent
        if mirror is not None:
            entry["predictor"]["annotations"] = {kserve.SHADOW: str(mirror)}
    refused_by_rollout = bool(check_manifest(copy.deepcopy(doc)))
    path = tmp_path_factory.mktemp("env") / "inferenceservice.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        spec = read_manifest(path, check_uri=None)
    except ManifestError:
        refused_by_serving = True
    else:
        refused_by_serving = False
        assert {p.name: p.traffic for p in spec.predictors} == T.state(path.read_text()).weights()
        assert sum(p.traffic for p in spec.predictors if not p.shadow) == 100
    assert refused_by_serving == refused_by_rollout
