"""The `prepare` stage: the raw table from a dataset that ships inside scikit-learn, and a stratified split.

The Wisconsin diagnostic breast cancer data (569 rows, 30 numeric features, binary target) is bundled with
scikit-learn, so the pipeline needs no network. Column names are snake_cased so they are valid everywhere
(Prometheus labels, JSON, SQL).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from model.contract import COLUMNS, TARGET
from model.layout import Layout
from model.params import DataParams


def load_raw() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    ds = load_breast_cancer(as_frame=True)
    frame = ds.frame.rename(columns=lambda c: c.replace(" ", "_"))
    frame[TARGET] = frame[TARGET].astype("int64")
    return frame[COLUMNS]


def split(frame: pd.DataFrame, params: DataParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        frame, test_size=params.test_size, random_state=params.seed, stratify=frame[TARGET]
    )
    if params.label_noise > 0:
        rng = np.random.default_rng(params.seed)
        flip = rng.random(len(train)) < params.label_noise
        train = train.copy()
        train.loc[flip, TARGET] = 1 - train.loc[flip, TARGET]
    return train.reset_index(drop=True), test.reset_index(drop=True)


def data_hash(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return "sha256:" + h.hexdigest()


def prepare(layout: Layout, params: DataParams) -> tuple[Path, Path, Path]:
    """Write the raw table and the train/test splits; returns their paths."""
    frame = load_raw()
    layout.raw.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(layout.raw, index=False)
    train, test = split(frame, params)
    layout.train_csv.parent.mkdir(parents=True, exist_ok=True)
    train.to_csv(layout.train_csv, index=False)
    test.to_csv(layout.test_csv, index=False)
    return layout.raw, layout.train_csv, layout.test_csv


def read_split(path: Path) -> tuple[pd.DataFrame, pd.Series]:
    frame = pd.read_csv(path)
    return frame.drop(columns=[TARGET]), frame[TARGET]
