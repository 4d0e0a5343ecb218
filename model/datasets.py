"""Where the training table comes from: a CSV or Parquet file in `data/source/`, or a set built into scikit-learn.

`data.source` in params.yaml names it: `data/source/customers.csv` (tracked with `dvc add` or
`dvc import-url`), or `builtin:<name>` for the sets below, which ship inside scikit-learn (no network).
Files must sit under `data/source/`: the `prepare` stage depends on that folder, so DVC re-runs the
pipeline when a table in it changes. Built-in sets have snake_cased column names and a `target` column.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pandas as pd


class Typed(Protocol):
    """What a reader needs to know of a table's columns: which are text (a contract, or a bundle's signature)."""

    def read_dtypes(self) -> dict[str, Any]: ...


BUILTIN_PREFIX = "builtin:"
SOURCE_DIR = PurePosixPath("data/source")
FILE_SUFFIXES = (".csv", ".parquet", ".pq")
BUILTIN_TARGET = "target"


class SourceError(ValueError):
    """`data.source` names nothing readable: an unknown built-in set, or a file that is not there."""


def _sklearn(loader: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        import sklearn.datasets

        ds = getattr(sklearn.datasets, loader)(as_frame=True)
        frame: pd.DataFrame = ds.frame.rename(columns=lambda c: c.strip().replace(" ", "_").replace("/", "_"))
        return frame

    return load


# name -> (loader, what it is)
BUILTINS: dict[str, tuple[Callable[[], pd.DataFrame], str]] = {
    "breast_cancer": (
        _sklearn("load_breast_cancer"),
        "Wisconsin diagnostic breast cancer: 569 rows, 30 numeric features, binary target",
    ),
    "diabetes": (
        _sklearn("load_diabetes"),
        "diabetes progression: 442 rows, 10 numeric features (scaled), regression target",
    ),
    "iris": (_sklearn("load_iris"), "iris: 150 rows, 4 numeric features, 3 classes"),
    "wine": (_sklearn("load_wine"), "wine: 178 rows, 13 numeric features, 3 classes"),
}


def check_source(source: str) -> str:
    """The reason `source` is not a valid `data.source`, or "" when it is."""
    if source.startswith(BUILTIN_PREFIX):
        name = source.removeprefix(BUILTIN_PREFIX)
        if name not in BUILTINS:
            return f"unknown built-in set {name!r} (built in: {', '.join(BUILTINS)})"
        return ""
    path = PurePosixPath(source)
    if path.is_absolute() or ".." in path.parts:
        return "a file source must be a path relative to the repository root, without `..`"
    if path.suffix.lower() not in FILE_SUFFIXES:
        return f"expected a .csv or .parquet file, or builtin:<name> ({', '.join(BUILTINS)})"
    if path.parent != SOURCE_DIR and SOURCE_DIR not in path.parents:
        return (
            f"a file source must be under {SOURCE_DIR}/ (the folder the prepare stage depends on in "
            f"dvc.yaml): move it there, e.g. {SOURCE_DIR / path.name}"
        )
    return ""


def read_source(source: str, root: Path, contract: Typed | None = None) -> pd.DataFrame:
    """The table `source` names; with a contract, text columns are read as text (codes keep leading zeros)."""
    if source.startswith(BUILTIN_PREFIX):
        name = source.removeprefix(BUILTIN_PREFIX)
        if name not in BUILTINS:
            raise SourceError(f"data.source {source!r}: {check_source(source)}")
        return BUILTINS[name][0]()
    return read_table(root / source, contract)


def read_table(path: Path, contract: Typed | None = None) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        hint = (
            f" (a DVC-tracked file? run `dvc pull {path.name}.dvc` or `dvc checkout`)"
            if path.with_name(path.name + ".dvc").exists()
            else ""
        )
        raise SourceError(f"{path}: no such file{hint}")
    dtypes: dict[str, Any] = contract.read_dtypes() if contract is not None else {}
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path, dtype=dtypes or None, low_memory=False)
        frame = pd.read_parquet(path)
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise SourceError(f"{path}: cannot read it as {path.suffix.lstrip('.')}: {e}") from None
    for name in dtypes:
        if name in frame.columns:
            frame[name] = frame[name].map(lambda v: None if pd.isna(v) else str(v)).astype(object)
    return frame
