"""Rows of a bundle's test split as a JSON client sends them, for the tests of typed features."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from model.bundle import Bundle
from model.contract import typed_frame


def json_rows(bundle_dir: Path, n: int = 20) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Test-split rows as a JSON client sends them (null for missing, true/false, text), and as the model
    takes them (for scikit-learn)."""
    signature = Bundle.open(bundle_dir).signature
    text = {f.name: str for f in signature.features if f.type == "categorical"}
    frame = pd.read_csv(bundle_dir.parent / "data" / "prepared" / "test.csv", dtype=text).head(n)
    records = []
    for _, row in frame.iterrows():
        record = {}
        for f in signature.features:
            value = row[f.name]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                record[f.name] = None
            elif f.type == "boolean":
                record[f.name] = bool(value)
            elif f.type == "categorical":
                record[f.name] = str(value)
            else:
                record[f.name] = float(value)
        records.append(record)
    return records, typed_frame(frame, signature.features, "test")
