import numpy as np

from model.bundle import Bundle


def test_fixture_bundles_differ_and_load(bundle_dir, rf_bundle_dir):
    a, b = Bundle.open(bundle_dir), Bundle.open(rf_bundle_dir)
    assert a.digest != b.digest
    model = a.load_sklearn()
    assert model.predict_proba(np.zeros((1, 30))).shape == (1, 2)
