"""Reading a SeldonDeployment for `sluice up`: what runs, and what is refused (naming the field)."""

from __future__ import annotations

from pathlib import Path

import pytest
from up_harness import digest_of, predictor, write_manifest

from serving.local.spec import ManifestError, check_model_uri, find_manifest, read_manifest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture()
def env(tmp_path: Path) -> Path:
    d = tmp_path / "env"
    d.mkdir()
    return d


@pytest.fixture()
def bundles(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    return a, b


def test_reads_predictors_weights_shadow_and_labels(env: Path, bundles: tuple[Path, Path]) -> None:
    a, b = bundles
    write_manifest(
        env,
        [
            predictor("m-aaa", 90, a),
            predictor("m-bbb", 10, f"file://{b}"),
            predictor("m-ccc", 0, a, shadow=True),
        ],
    )
    spec = read_manifest(env)
    assert spec.name == "sd"
    assert [(p.name, p.traffic, p.shadow) for p in spec.predictors] == [
        ("m-aaa", 90, False),
        ("m-bbb", 10, False),
        ("m-ccc", 0, True),
    ]
    assert [p.name for p in spec.live] == ["m-aaa", "m-bbb"]
    assert spec.shadow is not None and spec.shadow.name == "m-ccc"
    first = spec.predictors[0]
    assert first.model_uri == str(a) and first.model_digest == digest_of("m-aaa")
    assert (first.model_name, first.model_image, first.model_version) == (
        "classifier",
        "ghcr.io/sluice-ml/sluice-serving",
        "0.1",
    )


def test_the_committed_local_environment_reads(tmp_path: Path) -> None:
    # The repository's own manifest passes the admission rules (its bundles need not exist in a fresh clone).
    spec = read_manifest(REPO / "gitops" / "environments" / "local", check_uri=None)
    assert len(spec.live) >= 1
    assert sum(p.traffic for p in spec.live) in (0, 100)


@pytest.mark.parametrize(
    ("weights", "shadow", "message"),
    [
        ([60, 30], None, r"field spec\.predictors\[\]\.traffic: non-shadow traffic must sum to 100, got 90"),
        ([50], None, r"field spec\.predictors\[0\]\.traffic: a lone live predictor takes 0 or 100 .*got 50"),
        ([100, 0], "two", r"spec\.predictors\[\]\.shadow: at most one shadow predictor"),
        ([], "one", r"cannot be the only predictor"),
    ],
)
def test_refuses_what_seldon_admission_refuses(
    env: Path, bundles: tuple[Path, Path], weights: list[int], shadow: str | None, message: str
) -> None:
    a, _ = bundles
    preds = [predictor(f"m-{i}", w, a) for i, w in enumerate(weights)]
    if shadow == "two":
        preds += [predictor("m-s1", 0, a, shadow=True), predictor("m-s2", 0, a, shadow=True)]
    elif shadow == "one":
        preds += [predictor("m-s1", 0, a, shadow=True)]
    write_manifest(env, preds)
    with pytest.raises(ManifestError, match=message) as info:
        read_manifest(env)
    assert "seldondeployment.yaml" in str(info.value)


def test_refuses_duplicate_names(env: Path, bundles: tuple[Path, Path]) -> None:
    a, b = bundles
    write_manifest(env, [predictor("m-x", 50, a), predictor("m-x", 50, b)])
    with pytest.raises(ManifestError, match=r"spec\.predictors\[1\]\.name: duplicate predictor name 'm-x'"):
        read_manifest(env)


def test_refuses_missing_model_parameters(env: Path, bundles: tuple[Path, Path]) -> None:
    a, _ = bundles
    p = predictor("m-x", 100, a)
    p["graph"]["parameters"] = [q for q in p["graph"]["parameters"] if q["name"] != "model_digest"]
    write_manifest(env, [p])
    with pytest.raises(
        ManifestError, match=r"field spec\.predictors\[0\]\.graph\.parameters\.model_digest: .*got None"
    ):
        read_manifest(env)


def test_refuses_a_malformed_digest(env: Path, bundles: tuple[Path, Path]) -> None:
    a, _ = bundles
    write_manifest(env, [predictor("m-x", 100, a, digest="sha256:abc")])
    with pytest.raises(
        ManifestError,
        match=r"model_digest: .*must pin the model \('sha256:' \+ 64 hex digits\), got 'sha256:abc'",
    ):
        read_manifest(env)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://bucket/model", "unknown model URI scheme"),
        ("models:/only-a-name", "expected models:/NAME@ALIAS or models:/NAME/VERSION"),
        ("/no/such/bundle", "no bundle directory at /no/such/bundle"),
        ("file:///no/such/bundle", "no bundle directory at /no/such/bundle"),
    ],
)
def test_refuses_unknown_model_uris(env: Path, uri: str, message: str) -> None:
    write_manifest(env, [predictor("m-x", 100, uri)])
    with pytest.raises(ManifestError, match=r"spec\.predictors\[0\]\.graph\.parameters\.model_uri") as info:
        read_manifest(env)
    assert message in str(info.value)
    assert uri in str(info.value)


def test_accepts_registry_uris_by_form() -> None:
    check_model_uri("models:/sluice-classifier@champion")
    check_model_uri("models:/sluice-classifier/3")


def test_refuses_traffic_out_of_range_and_bad_yaml(env: Path, bundles: tuple[Path, Path]) -> None:
    a, _ = bundles
    write_manifest(env, [predictor("m-x", 120, a)])
    with pytest.raises(
        ManifestError, match=r"field spec\.predictors\[0\]\.traffic: .*must be 0\.\.100, got 120"
    ):
        read_manifest(env)
    (env / "seldondeployment.yaml").write_text("kind: SeldonDeployment\nspec: [unclosed\n")
    with pytest.raises(ManifestError, match="not valid YAML"):
        read_manifest(env)


def test_finds_the_one_seldondeployment_in_a_directory(env: Path, bundles: tuple[Path, Path]) -> None:
    a, _ = bundles
    (env / "other.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    path = write_manifest(env, [predictor("m-x", 100, a)])
    assert find_manifest(env) == path
    (env / "second.yaml").write_text(path.read_text())
    with pytest.raises(ManifestError, match="more than one SeldonDeployment"):
        find_manifest(env)
    with pytest.raises(ManifestError, match="no YAML file with kind: SeldonDeployment"):
        find_manifest(env / "..")
