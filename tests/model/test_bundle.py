import json
import shutil

import pytest

from model.bundle import Bundle, BundleError, compute_digest, short_digest


@pytest.fixture
def bundle_copy(bundle_dir, tmp_path):
    return shutil.copytree(bundle_dir, tmp_path / "bundle")


def test_bundle_has_every_file_and_a_matching_digest(bundle_dir):
    names = {p.name for p in bundle_dir.iterdir()}
    assert {"model.skops", "model.onnx", "signature.json", "metrics.json", "metadata.json"} <= names
    bundle = Bundle.open(bundle_dir)
    assert bundle.digest == compute_digest(bundle_dir)
    assert bundle.digest.startswith("sha256:") and len(bundle.digest) == 7 + 64
    assert bundle.short_digest == bundle.digest[7:19]
    assert bundle.signature.feature_names[0] == "mean_radius"
    assert len(bundle.signature.features) == 30
    assert bundle.metadata.data_hash and bundle.metadata.params["train"]["model"] == "logistic_regression"


def test_tampered_file_fails_the_digest(bundle_copy):
    onnx = bundle_copy / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    with pytest.raises(BundleError, match="digest mismatch"):
        Bundle.open(bundle_copy)
    Bundle.open(bundle_copy, verify=False)  # still readable for inspection


def test_digest_ignores_metadata_but_not_other_files(bundle_copy):
    before = compute_digest(bundle_copy)
    meta = json.loads((bundle_copy / "metadata.json").read_text())
    meta["note"] = "edited"
    (bundle_copy / "metadata.json").write_text(json.dumps(meta))
    assert compute_digest(bundle_copy) == before
    (bundle_copy / "metrics.json").write_text("{}")
    assert compute_digest(bundle_copy) != before


def test_missing_or_malformed_signature_names_the_file_and_field(bundle_copy):
    sig = bundle_copy / "signature.json"
    data = json.loads(sig.read_text())
    data["classes"] = [1]
    sig.write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"signature.json: field classes"):
        Bundle.open(bundle_copy, verify=False)
    sig.write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.open(bundle_copy, verify=False)
    sig.unlink()
    with pytest.raises(BundleError, match="signature.json: missing"):
        Bundle.open(bundle_copy, verify=False)


def test_short_digest():
    assert short_digest("sha256:" + "ab" * 32) == "abababababab"
