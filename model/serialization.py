"""Saving and loading scikit-learn models with skops: an allow-list of types instead of pickle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Types a Sluice model may contain beyond skops' defaults. Anything else in a .skops file is refused.
TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._tree.Tree",
    "numpy.dtype",
    "numpy.ndarray",
)


class UntrustedModelError(ValueError):
    """A .skops file asks for a type that is not on the allow-list."""


def save_skops(model: Any, path: Path) -> None:
    import skops.io as sio

    path.parent.mkdir(parents=True, exist_ok=True)
    sio.dump(model, path)


def load_skops(path: Path) -> Any:
    import skops.io as sio

    untrusted = [t for t in sio.get_untrusted_types(file=path) if t not in TRUSTED_TYPES]
    if untrusted:
        raise UntrustedModelError(
            f"{path}: refusing to load types not on the allow-list: {', '.join(untrusted)}"
        )
    return sio.load(path, trusted=list(TRUSTED_TYPES) + sio.get_untrusted_types(file=path))
