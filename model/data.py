"""The `prepare` stage: the raw table from `data.source`, and a train/test split.

The raw table is written as read, for the `validate` stage to judge; the split is stratified by class for a
classification task. Nothing here coerces values: a table that breaks the contract is reported by `validate`,
and the model sees values typed by the contract (`Contract.model_frame`) only after it passed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from model.contract import Contract, load_contract
from model.datasets import BUILTIN_TARGET, Typed, read_source, read_table
from model.layout import Layout
from model.params import DataParams


def contract_for(layout: Layout, params: DataParams) -> Contract:
    """The repository's contract; for a built-in set in a folder without one, its profile.

    Pipelines run by DVC always have a contract file (a dependency of every stage); profiling on the fly
    serves `train_bundle` in scratch folders (tests, benchmarks, demos).
    """
    if layout.contract.exists() or params.builtin is None:
        return load_contract(layout.contract)
    from model.profile import profile

    return profile(read_source(params.source, layout.root), BUILTIN_TARGET, source=params.source)


def load_raw(
    params: DataParams | None = None, root: str | Path = ".", contract: Typed | None = None
) -> pd.DataFrame:
    """The source table as read (the default: scikit-learn's breast-cancer set)."""
    params = params or DataParams()
    return read_source(params.source, Path(root), contract)


def split(
    frame: pd.DataFrame, params: DataParams, target: str = BUILTIN_TARGET, classifier: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A reproducible train/test split, stratified by class when the labels allow it; optional label noise.

    `target` and `classifier` come from the contract (or a bundle's signature, to recreate its split)."""
    from sklearn.model_selection import train_test_split

    labels = frame[target] if target in frame.columns else None
    stratify = None
    if classifier and labels is not None and labels.notna().all() and labels.value_counts().min() >= 2:
        stratify = labels
    train, test = train_test_split(
        frame, test_size=params.test_size, random_state=params.seed, stratify=stratify
    )
    if params.label_noise > 0 and labels is not None:
        train = _add_noise(train.copy(), target, classifier, params)
    return train.reset_index(drop=True), test.reset_index(drop=True)


def _add_noise(train: pd.DataFrame, target: str, classifier: bool, params: DataParams) -> pd.DataFrame:
    rng = np.random.default_rng(params.seed)
    flip = rng.random(len(train)) < params.label_noise
    values = train[target].to_numpy()
    if not classifier:
        train.loc[flip, target] = rng.permutation(values[flip])
        return train
    classes = sorted(pd.unique(values[pd.notna(values)]).tolist())
    if len(classes) == 2:  # the other class
        swapped = np.where(values[flip] == classes[0], classes[1], classes[0])
    else:  # another class, at random
        offsets = rng.integers(1, len(classes), size=int(flip.sum()))
        index = {c: i for i, c in enumerate(classes)}
        swapped = np.array(
            [classes[(index[v] + o) % len(classes)] for v, o in zip(values[flip], offsets, strict=True)]
        )
    train.loc[flip, target] = swapped
    return train


def data_hash(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return "sha256:" + h.hexdigest()


def prepare(layout: Layout, params: DataParams, contract: Contract | None = None) -> tuple[Path, Path, Path]:
    """Write the raw table and the train/test splits; returns their paths."""
    contract = contract or contract_for(layout, params)
    frame = read_source(params.source, layout.root, contract)
    layout.raw.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(layout.raw, index=False)
    train, test = split(frame, params, contract.target.name, contract.is_classifier)
    layout.train_csv.parent.mkdir(parents=True, exist_ok=True)
    train.to_csv(layout.train_csv, index=False)
    test.to_csv(layout.test_csv, index=False)
    return layout.raw, layout.train_csv, layout.test_csv


def read_split(path: Path, contract: Contract) -> tuple[pd.DataFrame, pd.Series]:
    """A prepared split as the model takes it: the features typed by the contract, and the labels."""
    frame = read_table(path, contract)
    return contract.model_frame(frame), contract.target_series(frame)
