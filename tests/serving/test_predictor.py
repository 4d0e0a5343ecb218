"""The predictor core: loading by URI, digest pinning, request validation, and ONNX/scikit-learn parity."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model.bundle import Bundle, BundleError
from serving.core.predictor import DigestMismatch, Prediction, Predictor, RequestError


@pytest.fixture(scope="module")
def predictor(bundle_dir: Path) -> Predictor:
    return Predictor.load(str(bundle_dir))


@pytest.fixture(scope="module")
def rows(bundle_dir: Path) -> np.ndarray:
    """Real rows of the test split the bundle was evaluated on."""
    from model.layout import Layout

    test_csv = Layout.at(bundle_dir.parent).test_csv
    names = Bundle.open(bundle_dir).signature.feature_names
    return pd.read_csv(test_csv)[names].to_numpy(dtype=np.float64)[:40]


def test_load_by_path_and_file_uri(bundle_dir: Path) -> None:
    by_path = Predictor.load(str(bundle_dir))
    by_uri = Predictor.load(bundle_dir.resolve().as_uri())
    bundle = Bundle.open(bundle_dir)
    assert by_path.digest == by_uri.digest == bundle.digest
    assert by_path.name == bundle.metadata.name
    assert by_path.signature.feature_names == bundle.signature.feature_names
    assert by_path.short_digest == bundle.short_digest


def test_pinned_digest_accepted_and_mismatch_refused(bundle_dir: Path, rf_bundle_dir: Path) -> None:
    digest = Bundle.open(bundle_dir).digest
    assert Predictor.load(str(bundle_dir), expected_digest=digest).digest == digest
    other = Bundle.open(rf_bundle_dir).digest
    with pytest.raises(DigestMismatch) as e:
        Predictor.load(str(bundle_dir), expected_digest=other)
    assert other in str(e.value) and digest in str(e.value)


def test_tampered_bundle_refused(bundle_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    (copy / "model.onnx").write_bytes((copy / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(BundleError, match="digest mismatch"):
        Predictor.load(str(copy))


def test_missing_bundle_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a bundle directory"):
        Predictor.load(str(tmp_path / "nope"))


@pytest.mark.parametrize("fixture", ["bundle_dir", "rf_bundle_dir"])
def test_onnx_matches_sklearn(fixture: str, request: pytest.FixtureRequest, rows: np.ndarray) -> None:
    path = request.getfixturevalue(fixture)
    onnx = Predictor.load(str(path))
    estimator = Bundle.open(path).load_sklearn()
    frame = pd.DataFrame(rows, columns=onnx.feature_names)
    result = onnx.predict(onnx.validate(rows))
    assert isinstance(result, Prediction)
    assert result.labels.shape == (len(rows),)
    assert result.probabilities.shape == (len(rows), 2)
    np.testing.assert_array_equal(result.labels, estimator.predict(frame))
    np.testing.assert_allclose(result.probabilities, estimator.predict_proba(frame), atol=1e-2)


def test_sklearn_backend(bundle_dir: Path, rows: np.ndarray) -> None:
    sk = Predictor.load(str(bundle_dir), backend="sklearn")
    onnx = Predictor.load(str(bundle_dir))
    a, b = sk.predict(sk.validate(rows)), onnx.predict(onnx.validate(rows))
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-4)
    with pytest.raises(ValueError, match="backend"):
        Predictor.load(str(bundle_dir), backend="torch")  # type: ignore[arg-type]


def test_validate_shapes_agree(predictor: Predictor, rows: np.ndarray) -> None:
    names = predictor.feature_names
    X = rows[:3]
    as_list = predictor.validate(X.tolist())
    records = predictor.validate([dict(zip(names, r, strict=True)) for r in X.tolist()])
    columns = predictor.validate({n: X[:, j].tolist() for j, n in enumerate(names)})
    reversed_names = list(reversed(names))
    reordered = predictor.validate(X[:, ::-1].tolist(), names=reversed_names)
    for other in (records, columns, reordered):
        np.testing.assert_array_equal(as_list, other)
    one = predictor.validate(X[0].tolist())  # a flat row is one row
    assert one.shape == (1, len(names))
    record = predictor.validate(dict(zip(names, X[0].tolist(), strict=True)))  # so is one record
    np.testing.assert_array_equal(record, one)
    largest = 2.0**64  # the largest magnitude taken: products of two such values still fit a float32
    assert predictor.validate([[largest] * len(names)]).max() == largest
    prediction = predictor.predict(predictor.validate([[largest, -largest] * (len(names) // 2)]))
    assert np.isfinite(prediction.probabilities).all()
    assert predictor.validate([[int(v) for v in X[0]]]).dtype == np.float64


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda n, names: [[1.0] * (n - 1)], "wrong feature count: got 29"),
        (lambda n, names: [[1.0] * (n + 1)], "wrong feature count: got 31"),
        (lambda n, names: [], "empty batch"),
        (lambda n, names: [[]], "empty batch"),
        (lambda n, names: {name: [] for name in names}, "empty batch"),
        (lambda n, names: [[1.0] * (n - 1) + ["abc"]], "non-numeric value in the request: 'abc'"),
        (lambda n, names: [[1.0] * (n - 1) + [None]], "non-numeric value in the request: None"),
        (lambda n, names: [[True] * n], "non-numeric"),
        (lambda n, names: [[1.0] * (n - 1) + [math.nan]], "not a finite number"),
        (lambda n, names: [[math.inf] + [1.0] * (n - 1)], "feature {0}: inf"),
        (lambda n, names: [[1.0] * n, [1.0] * (n - 1)], "rows of different lengths"),
        (lambda n, names: [[[1.0] * n]], "2-D"),
        (lambda n, names: "1,2,3", "expected a list"),
        (lambda n, names: 42, "expected a list"),
        (lambda n, names: [{**dict.fromkeys(names, 1.0), "colour": 1.0}], "unknown feature 'colour'"),
        (lambda n, names: [dict.fromkeys(names[1:], 1.0)], "missing feature {0}"),
        (lambda n, names: [{**dict.fromkeys(names, 1.0), names[2]: "x"}], "feature {2}: non-numeric"),
        (lambda n, names: [{**dict.fromkeys(names, 1.0), names[2]: math.nan}], "not a finite number"),
        (lambda n, names: [dict.fromkeys(names, 1.0), 3], "row 1: expected a record"),
        (lambda n, names: {**{name: [1.0] for name in names}, names[0]: [1.0, 2.0]}, "different lengths"),
        (lambda n, names: {**{name: [1.0] for name in names}, "x": [1.0]}, "unknown feature 'x'"),
        (lambda n, names: {**{name: [1.0] for name in names}, names[1]: 1.0}, "expected a list of values"),
        # Finite in float64, infinite in the float32 the model computes in: refused, not answered with NaN.
        (
            lambda n, names: [[1e39] + [1.0] * (n - 1)],
            "feature {0}: 1e+39 is beyond the range the model takes",
        ),
        (lambda n, names: [[1.0] * (n - 1) + [-(10**40)]], "is beyond the range the model takes"),
        (
            lambda n, names: [{**dict.fromkeys(names, 1.0), names[2]: 3.5e38}],
            "feature {2}: 3.5e+38 is beyond",
        ),
        (
            lambda n, names: {**{name: [1.0] for name in names}, names[4]: [10**400]},
            "feature {4}: inf is not",
        ),
        # numpy reads a boolean among numbers as 1.0; no form accepts it as a feature value
        (lambda n, names: [[1.0] * (n - 1) + [True]], "non-numeric value in the request: True"),
        (lambda n, names: [[1] * (n - 1) + [False]], "non-numeric value in the request: False"),
        (lambda n, names: [[1.0] * (n - 1) + [10**5000]], "feature {29}: inf is not a finite number"),
    ],
)
def test_validate_rejects(predictor: Predictor, make: object, message: str) -> None:
    names = predictor.feature_names
    with pytest.raises(RequestError) as e:
        predictor.validate(make(len(names), names))  # type: ignore[operator]
    assert message.format(*(repr(n) for n in names)) in str(e.value)


def test_validate_with_names_rejects(predictor: Predictor) -> None:
    names = predictor.feature_names
    row = [[1.0] * len(names)]
    with pytest.raises(RequestError, match="unknown feature 'nope'"):
        predictor.validate(row, names=["nope", *names[1:]])
    with pytest.raises(RequestError, match="names lists 29 features"):
        predictor.validate(row, names=names[1:])
    with pytest.raises(RequestError, match="given twice"):
        predictor.validate(row, names=[names[1], *names[1:]])


def test_request_error_is_value_error() -> None:
    assert issubclass(RequestError, ValueError)
