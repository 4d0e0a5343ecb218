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
    """Load `path` if every type it asks for is on the allow-list.

    The file is read once: the allow-list check and the load see the same bytes, so a file replaced
    between the two (a race with whoever can write the bundle directory) cannot slip a type past the check.
    """
    import skops.io as sio

    data = Path(path).read_bytes()
    asked = sio.get_untrusted_types(data=data)
    untrusted = [t for t in asked if t not in TRUSTED_TYPES]
    if untrusted:
        raise UntrustedModelError(
            f"{path}: refusing to load types not on the allow-list: {', '.join(untrusted)}"
        )
    return sio.loads(data, trusted=list(TRUSTED_TYPES))
