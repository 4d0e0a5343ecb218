"""Where the training pipeline reads and writes, relative to the repository root (the folder with dvc.yaml)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    root: Path

    @classmethod
    def at(cls, root: str | Path = ".") -> Layout:
        return cls(Path(root).resolve())

    @property
    def registry_root(self) -> Path:
        """Where the embedded MLflow store lives: the repository's root, also for `dvc exp run --temp` and
        queued experiments, which DVC runs in a temporary copy (it sets DVC_ROOT to the real one)."""
        return Path(os.environ.get("DVC_ROOT") or self.root).resolve()

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def contract(self) -> Path:
        return self.root / "contract.yaml"

    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw" / "table.csv"

    @property
    def train_csv(self) -> Path:
        return self.root / "data" / "prepared" / "train.csv"

    @property
    def test_csv(self) -> Path:
        return self.root / "data" / "prepared" / "test.csv"

    @property
    def validation_report(self) -> Path:
        return self.root / "reports" / "metrics" / "validation.json"

    @property
    def trained_model(self) -> Path:
        return self.root / "artifacts" / "train" / "model.skops"

    @property
    def train_run(self) -> Path:
        return self.root / "artifacts" / "train" / "run.json"

    @property
    def train_metrics(self) -> Path:
        return self.root / "reports" / "metrics" / "train.json"

    @property
    def evaluate_metrics(self) -> Path:
        """The held-out scores: what `package` builds on (the same model scores the same, whatever the gate)."""
        return self.root / "reports" / "metrics" / "evaluate.json"

    @property
    def gate_report(self) -> Path:
        """The evaluate gate's verdict against the pinned champion."""
        return self.root / "reports" / "metrics" / "gate.json"

    @property
    def plots(self) -> Path:
        return self.root / "reports" / "plots"

    @property
    def bundle(self) -> Path:
        return self.root / "artifacts" / "model"
