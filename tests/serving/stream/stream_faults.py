"""Faults for the stream tests: records a broken or hostile producer sends, and a model that kills its worker."""

from __future__ import annotations

import json
from typing import Any

POISON_RADIUS = 12345.0  # a finite value the signature accepts: only the "native crash" below refuses it


class WorkerKilled(BaseException):
    """The worker process dies here (a segfault or an OOM kill in the model): no except, no ack."""


class KillingPredictor:
    """The real predictor, except that predicting a row whose mean_radius is POISON_RADIUS kills the worker."""

    def __init__(self, real: Any):
        self.real = real
        self.digest = real.digest
        self.is_classifier = real.is_classifier

    def validate(self, rows: Any, names: Any = None) -> Any:
        return self.real.validate(rows, names)

    def predict(self, X: Any) -> Any:
        column = self.real.feature_names.index("mean_radius")
        if (X[:, column] == POISON_RADIUS).any():
            raise WorkerKilled
        return self.real.predict(X)


def hostile_payloads(record: dict[str, float]) -> dict[str, bytes]:
    """Stream `data` values an attacker (or a broken producer) sends, by name, as raw bytes."""
    flat = list(record.values())
    return {
        "deep-nesting": b"[" * 100_000 + b"]" * 100_000,
        "int-over-4300-digits": b'{"mean_radius": ' + b"9" * 5000 + b"}",
        "int-beyond-float": json.dumps({**record, "mean_radius": 10**4000}).encode(),
        "two-rows-in-one": json.dumps([flat, flat]).encode(),
        "nested-value": json.dumps({**record, "mean_radius": {"$gt": 1}}).encode(),
        "too-large": b"[" + b"1," * 600_000 + b"1]",
        "not-utf8": b'{"mean_radius": "\xff\xfe"}',
    }


HOSTILE_REASONS = {
    "deep-nesting": "nested too deeply",
    "int-over-4300-digits": "4300",
    "int-beyond-float": "feature 'mean_radius' is an integer of 4001 digits",
    "two-rows-in-one": "a record is one row",
    "nested-value": "feature 'mean_radius' is a dict",
    "too-large": "more than a record may have",
    "not-utf8": "not valid JSON",
}
