"""The bundle's two model files agree with each other, and the scikit-learn one loads without pickle."""

import pickle

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import skops.io as sio

from model.bundle import Bundle
from model.serialization import UntrustedModelError, load_skops


def _test_split(bundle_dir):
    # train_bundle wrote its splits next to the bundle (workdir/data/prepared).
    frame = pd.read_csv(bundle_dir.parent / "data" / "prepared" / "test.csv")
    return frame.drop(columns=["target"]), frame["target"]


@pytest.mark.parametrize("which", ["bundle_dir", "rf_bundle_dir"])
def test_onnx_matches_sklearn_on_the_test_split(which, request):
    path = request.getfixturevalue(which)
    bundle = Bundle.open(path)
    X, _ = _test_split(path)
    model = bundle.load_sklearn()
    session = ort.InferenceSession(str(bundle.onnx_path), providers=["CPUExecutionProvider"])
    labels, probs = session.run(None, {bundle.signature.onnx_input: X.to_numpy(np.float32)})
    assert (labels == model.predict(X)).all()
    assert np.abs(probs - model.predict_proba(X)).max() < 1e-4
    parity = bundle.metrics["onnx_parity"]
    assert parity["label_matches"] == parity["rows"] == len(X)


def test_skops_model_loads_without_pickle(bundle_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle must not be used to load a bundle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    model = Bundle.open(bundle_dir).load_sklearn()
    X, y = _test_split(bundle_dir)
    assert (model.predict(X) == y).mean() > 0.9


def test_untrusted_types_are_refused(tmp_path):
    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "evil.skops"
    import os

    sio.dump(FunctionTransformer(func=os.system), path)
    with pytest.raises(UntrustedModelError, match="posix.system"):
        load_skops(path)


def test_bad_model_is_measurably_worse(bundle_dir, bad_bundle_dir):
    good, bad = Bundle.open(bundle_dir), Bundle.open(bad_bundle_dir)
    assert good.metrics["roc_auc"] > 0.95
    assert bad.metrics["roc_auc"] < good.metrics["roc_auc"] - 0.1


def test_a_file_swapped_after_the_allow_list_check_is_not_loaded(bundle_dir, tmp_path, monkeypatch):
    """Whoever can write the bundle directory replaces model.skops between the check and the load."""
    import os
    import shutil

    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "model.skops"
    shutil.copy(Bundle.open(bundle_dir).skops_path, path)
    evil = tmp_path / "evil.skops"
    sio.dump(FunctionTransformer(func=os.system), evil)
    real_check = sio.get_untrusted_types

    def check_then_swap(*args, **kwargs):
        answer = real_check(*args, **kwargs)
        shutil.copy(evil, path)  # the race: the file changes right after it was checked
        return answer

    monkeypatch.setattr(sio, "get_untrusted_types", check_then_swap)
    model = load_skops(path)
    assert type(model).__name__ == "Pipeline"  # the checked model, not the swapped-in FunctionTransformer
    assert path.read_bytes() == evil.read_bytes()  # the swap did happen
