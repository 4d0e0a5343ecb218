"""The deployment contract: one view of a SeldonDeployment and one set of admission rules for every reader."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from deployment import seldon
from deployment.names import predictor_name
from rollout.guardrails import check_manifest
from rollout.targets.seldon import SeldonDeploymentV1
from serving.local.spec import ManifestError, read_manifest

REPO = Path(__file__).resolve().parents[2]
D = "sha256:" + "a" * 64
IMG = "ghcr.io/x/serving:0.1@sha256:" + "c" * 64


def predictor(name: str, traffic: Any = None, shadow: bool | None = None, **extra: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "name": name,
        "componentSpecs": [{"spec": {"containers": [{"name": "classifier", "image": IMG}]}}],
        "graph": {
            "name": "classifier",
            "parameters": [
                {"name": "model_uri", "type": "STRING", "value": f"models:/m@{name}"},
                {"name": "model_digest", "type": "STRING", "value": D},
            ],
        },
        **extra,
    }
    if traffic is not None:
        p["traffic"] = traffic
    if shadow is not None:
        p["shadow"] = shadow
    return p


def sdep(*predictors: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "machinelearning.seldon.io/v1",
        "kind": "SeldonDeployment",
        "metadata": {"name": "sd", "namespace": "staging"},
        "spec": {"predictors": list(predictors)},
    }


def write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    f = tmp_path / "seldondeployment.yaml"
    f.write_text(yaml.safe_dump(doc))
    return f


@pytest.mark.parametrize("traffic", [None, 0, 100])
def test_a_lone_predictor_takes_all_traffic_for_every_reader(tmp_path: Path, traffic: int | None) -> None:
    doc = sdep(predictor("m-a", traffic))
    assert check_manifest(doc) == []
    assert SeldonDeploymentV1().state(yaml.safe_dump(doc)).weights() == {"m-a": 100}
    assert [(p.name, p.traffic) for p in read_manifest(write(tmp_path, doc), check_uri=None).predictors] == [
        ("m-a", 100)
    ]


def test_a_lone_live_predictor_beside_a_shadow_takes_all_live_traffic() -> None:
    sd = seldon.parse(sdep(predictor("m-a", 0), predictor("m-b", 30, shadow=True)))
    assert sd.weights() == {"m-a": 100, "m-b": 30}
    assert [p.name for p in sd.live] == ["m-a"] and sd.shadow is not None and sd.shadow.name == "m-b"
    assert seldon.admission(sd) == []


@pytest.mark.parametrize(
    ("predictors", "rule", "path"),
    [
        ([predictor("m-a", 60), predictor("m-b", 30)], "weights", "spec.predictors[].traffic"),
        ([predictor("m-a", 50)], "weights", "spec.predictors[0].traffic"),
        ([predictor("m-a", 0), predictor("m-b", 40, shadow=True)], None, None),
        (
            [predictor("m-a", 100), predictor("m-b", shadow=True), predictor("m-c", shadow=True)],
            "shadow",
            None,
        ),
        ([predictor("m-b", 100, shadow=True)], "shadow", "spec.predictors[].shadow"),
        ([predictor("m-a", 101)], "weights", "spec.predictors[0].traffic"),
        ([predictor("m-a", -1)], "weights", "spec.predictors[0].traffic"),
        ([predictor("M_A", 100)], "names", "spec.predictors[0].name"),
        ([predictor("m-" + "a" * 62, 100)], "names", "spec.predictors[0].name"),
        ([predictor("m-a", 50), predictor("m-a", 50)], "names", "spec.predictors[1].name"),
    ],
)
def test_seldons_admission_rules_and_ours(
    predictors: list[dict[str, Any]], rule: str | None, path: str | None
) -> None:
    found = seldon.admission(seldon.parse(sdep(*predictors)))
    if rule is None:
        assert found == []
    else:
        assert rule in {v.rule for v in found}, found
        if path is not None:
            assert path in {v.path for v in found}, found


def test_pinning_names_the_field_and_the_value() -> None:
    p = predictor("m-a", 100)
    p["graph"]["parameters"][1]["value"] = "latest"
    p["componentSpecs"][0]["spec"]["containers"][0]["image"] = "ghcr.io/x/serving:latest"
    found = {v.path: v.message for v in seldon.admission(seldon.parse(sdep(p)))}
    assert "'latest'" in found["spec.predictors[0].graph.parameters.model_digest"]
    assert (
        "'ghcr.io/x/serving:latest'" in found["spec.predictors[0].componentSpecs[0].spec.containers[0].image"]
    )


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["spec"]["predictors"][0].__setitem__("traffic", True), "spec.predictors[0].traffic"),
        (lambda d: d["spec"]["predictors"][0].__setitem__("traffic", "50"), "spec.predictors[0].traffic"),
        (lambda d: d["spec"]["predictors"][0].__setitem__("shadow", "yes"), "spec.predictors[0].shadow"),
        (lambda d: d["spec"].__setitem__("predictors", "m-a"), "spec.predictors"),
        (lambda d: d["spec"]["predictors"].__setitem__(0, ["m-a"]), "spec.predictors[0]"),
        (lambda d: d["metadata"].__setitem__("annotations", ["x"]), "metadata.annotations"),
        (
            lambda d: d["spec"]["predictors"][0]["graph"].__setitem__("parameters", "x"),
            "spec.predictors[0].graph.parameters",
        ),
        (lambda d: d["spec"]["predictors"][0].__setitem__("graph", None), "spec.predictors[0].graph"),
        (lambda d: d.__setitem__("apiVersion", "machinelearning.seldon.io/v1alpha2"), "apiVersion"),
        (lambda d: d.__setitem__("metadata", None), "metadata"),
    ],
)
def test_hostile_shapes_are_refused_naming_the_field(mutate: Any, field: str) -> None:
    doc = sdep(predictor("m-a", 100))
    mutate(doc)
    with pytest.raises(seldon.ManifestError, match=f"field {re.escape(field)}"):
        seldon.parse(doc)
    # The guardrails report the same problem as a violation rather than raising.
    assert check_manifest(doc) and all(v.rule == "shape" for v in check_manifest(doc))


def test_componentspecs_of_the_wrong_shape_do_not_crash_the_reader() -> None:
    p = predictor("m-a", 100)
    p["componentSpecs"] = [None, {"spec": "x"}, {"spec": {"containers": "y"}}, {"spec": {"containers": [1]}}]
    sd = seldon.parse(sdep(p))
    assert sd.predictors[0].image == "" and seldon.admission(sd) == []


@pytest.mark.parametrize("env", ["local", "staging", "production"])
def test_the_committed_environments_pass(env: str) -> None:
    sd = seldon.read(REPO / "gitops" / "environments" / env)
    assert seldon.admission(sd) == []
    assert sd.namespace and all(p.name == predictor_name(p.model_digest or "") for p in sd.predictors)


def test_predictor_names_come_from_digests_only() -> None:
    assert predictor_name("sha256:" + "0123456789ab" + "f" * 52) == "m-0123456789ab"
    for bad in ("sha256:abc", "0123456789ab" * 6, "sha256:" + "G" * 64, "sha256:../../" + "a" * 58):
        with pytest.raises(ValueError, match="not a bundle digest"):
            predictor_name(bad)


layouts = st.lists(
    st.tuples(st.one_of(st.none(), st.integers(-5, 105)), st.booleans()), min_size=1, max_size=4
)


@settings(max_examples=300, deadline=None)
@given(layout=layouts)
def test_serving_and_rollout_accept_and_refuse_the_same_manifests(
    tmp_path_factory: Any, layout: list[Any]
) -> None:
    doc = sdep(*(predictor(f"m-{i}", t, shadow=s or None) for i, (t, s) in enumerate(layout)))
    refused_by_rollout = bool(check_manifest(doc))
    path = write(tmp_path_factory.mktemp("env"), doc)
    try:
        spec = read_manifest(path, check_uri=None)
    except ManifestError:
        refused_by_serving = True
    else:
        refused_by_serving = False
        state = SeldonDeploymentV1().state(path.read_text())
        assert {p.name: p.traffic for p in spec.predictors} == state.weights()
    assert refused_by_serving == refused_by_rollout
