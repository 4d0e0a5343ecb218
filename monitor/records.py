"""The prediction log read back: prediction records decoded into typed feature rows and predicted labels, and
feedback joined to them by puid.

Labels arrive late (a customer confirms a fraud days after the transaction). As in SageMaker Model Monitor's
ground-truth merge, a feedback joins its prediction when it arrives within `label_window` seconds of it; one
arriving later is counted as late and not used, so an accuracy figure never mixes in labels a policy would not
wait for. Feedback whose puid matches no prediction in the window read is counted as unmatched.

Nothing in the files is trusted: a line that is not JSON, a record of the wrong shape, rows the contract does
not accept (what the predictor refused never reaches the log, but a file can be edited) are skipped and counted
by reason in `Skipped`, never raised.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.contract import Contract
from monitor.sources import LogSource, Skipped, open_source
from serving.core.validation import Features, RequestError
from serving.protocols import labels
from serving.protocols.seldon import decode_predict
from serving.protocols.v2 import decode_infer


@dataclass
class Scope:
    """Which records to read: a deployment (and namespace), and a time window."""

    namespace: str | None = None
    deployment: str | None = None
    since: float | None = None
    until: float | None = None

    def keeps(self, doc: dict[str, Any]) -> bool:
        """Whether a record can count in this scope (a feedback older than `since` joins nothing in it)."""
        if self.namespace is not None and doc.get("namespace") != self.namespace:
            return False
        if self.deployment is not None and doc.get("deployment") != self.deployment:
            return False
        t = float(doc["time"])
        if doc["kind"] == "feedback":
            return self.since is None or t >= self.since - 1.0
        return (self.since is None or t >= self.since) and (self.until is None or t <= self.until)


@dataclass
class Rows:
    """Prediction rows (one per input row) with their predictor, time, puid, prediction and, once joined, truth."""

    X: np.ndarray  # (n, features), the contract's feature order; object dtype when any feature is categorical
    predictor: list[str]
    digest: list[str | None]
    time: np.ndarray
    puid: list[str | None]
    index: list[int]  # the row's index inside its request (feedback truths are per row)
    request: list[int]  # which request (in reading order) the row came from
    predicted: list[Any]
    truth: list[Any]  # None until joined
    labelled_at: list[float | None]

    def __len__(self) -> int:
        return len(self.predictor)

    def select(self, mask: np.ndarray) -> Rows:
        keep = np.flatnonzero(mask)
        return Rows(
            self.X[keep],
            [self.predictor[i] for i in keep],
            [self.digest[i] for i in keep],
            self.time[keep],
            [self.puid[i] for i in keep],
            [self.index[i] for i in keep],
            [self.request[i] for i in keep],
            [self.predicted[i] for i in keep],
            [self.truth[i] for i in keep],
            [self.labelled_at[i] for i in keep],
        )

    @property
    def labelled(self) -> np.ndarray:
        return np.array([t is not None for t in self.truth], dtype=bool)


@dataclass
class LabelCounts:
    joined: int = 0
    late: int = 0
    unmatched: int = 0


@dataclass
class Log:
    rows: Rows
    labels: LabelCounts
    skipped: Skipped
    requests: int
    where: dict[str, tuple[str, str]] = field(default_factory=dict)  # predictor -> (namespace, deployment)


def read_log(
    log: str | Path | LogSource,
    contract: Contract,
    scope: Scope | None = None,
    label_window: float = 86400.0,
) -> Log:
    """Read the whole log (a directory, a redis:// stream URL, or a `LogSource`): its predictions within `scope`,
    decoded against `contract`, with feedback joined."""
    source = open_source(log) if isinstance(log, str | Path) else log
    skipped = Skipped()
    docs = list(source.read(skipped))
    skipped.add("not_json", source.torn)
    return build_log(docs, contract, scope, label_window, skipped)


def build_log(
    docs: Iterable[dict[str, Any]],
    contract: Contract,
    scope: Scope | None = None,
    label_window: float = 86400.0,
    skipped: Skipped | None = None,
    decoded: dict[int, tuple[dict[str, Any], Any]] | None = None,
) -> Log:
    """Decode the records within `scope` against `contract` and join feedback. Records are taken in time order
    (ties: their place in the log), so the result does not depend on how, or in how many reads, they were read.

    `decoded` (record id -> (record, its rows or why they were refused)) keeps the decoding of records read
    before, for a reader that builds the log again from mostly the same records; the contract must not change
    between builds that share it."""
    scope = scope or Scope()
    skipped = skipped if skipped is not None else Skipped()
    features = Features.of(contract.features)
    names = contract.feature_names
    name_set = set(names)
    classes = contract.classes if contract.is_classifier else None
    blocks: list[np.ndarray] = []
    predictor: list[str] = []
    digest: list[str | None] = []
    times: list[float] = []
    puid: list[str | None] = []
    index: list[int] = []
    request: list[int] = []
    predicted: list[Any] = []
    feedback: list[dict[str, Any]] = []
    where: dict[str, tuple[str, str]] = {}
    requests = 0
    for doc in sorted((x for x in docs if scope.keeps(x)), key=_order):
        if doc["kind"] == "feedback":
            feedback.append(doc)
            continue
        t = float(doc["time"])
        hit = decoded.get(id(doc)) if decoded is not None else None
        if hit is not None and hit[0] is doc:
            result = hit[1]
        else:
            try:
                result = _decode(doc, features, names, name_set, classes)
            except (RequestError, ValueError, TypeError, KeyError) as e:
                result = "rows_refused" if isinstance(e, RequestError) else "bad_record"
            if decoded is not None:
                decoded[id(doc)] = (doc, result)  # (the record held, so its id is not reused while cached)
        if isinstance(result, str):
            skipped.add(result)
            continue
        X, out = result
        if len(out) != X.shape[0]:
            skipped.add("prediction_count_mismatch")
            continue
        requests += 1
        blocks.append(X)
        p = doc.get("predictor")
        if isinstance(p, str):
            where[p] = (str(doc.get("namespace") or ""), str(doc.get("deployment") or ""))
        d = doc.get("digest")
        u = doc.get("puid")
        for i, label in enumerate(out):
            predictor.append(p if isinstance(p, str) else "")
            digest.append(d if isinstance(d, str) else None)
            times.append(t)
            puid.append(u if isinstance(u, str) else None)
            index.append(i)
            request.append(requests)
            predicted.append(label)
    text = any(f.type == "categorical" for f in contract.features)
    X_all = np.concatenate(blocks) if blocks else np.empty((0, len(names)), dtype=object if text else float)
    n = len(predictor)
    rows = Rows(X_all, predictor, digest, np.asarray(times, dtype=float), puid, index, request, predicted,
                [None] * n, [None] * n)  # fmt: skip
    counts = _join(rows, feedback, contract, label_window, skipped)
    return Log(rows, counts, skipped, requests, where)


def _order(doc: dict[str, Any]) -> tuple[float, Any]:
    return (float(doc["time"]), doc.get("_at") or [])


def _decode(
    doc: dict[str, Any], features: Features, names: list[str], name_set: set[str], classes: list[Any] | None
) -> tuple[np.ndarray, list[Any]]:
    request, response = doc.get("request"), doc.get("response")
    if doc.get("protocol") == "v2":
        decoded = decode_infer(request, name_set, typed=not features.plain)
        X = features.validate(decoded.rows)
    else:
        message = decode_predict(request)
        X = features.validate(message.rows, message.names)
    if classes is None:
        out: list[Any] = labels.predicted_values(response)
    else:
        out = labels.predicted_labels(response, classes)
    return X, out


def _join(
    rows: Rows, feedback: Iterable[dict[str, Any]], contract: Contract, window: float, skipped: Skipped
) -> LabelCounts:
    """Attach each feedback's truths to the rows of the prediction with its puid (the first feedback wins)."""
    counts = LabelCounts()
    by_puid: dict[str, list[int]] = {}  # a puid -> the rows of the first request that carried it
    first: dict[str, int] = {}
    for i, u in enumerate(rows.puid):
        if u is not None and first.setdefault(u, rows.request[i]) == rows.request[i]:
            by_puid.setdefault(u, []).append(i)
    classes = contract.classes if contract.is_classifier else None
    for doc in feedback:
        u = doc.get("puid")
        truth = doc.get("truth")
        if not isinstance(u, str) or truth is None:
            skipped.add("feedback_without_puid_or_truth")
            continue
        where = by_puid.get(u)
        if not where:
            counts.unmatched += 1
            continue
        try:
            values: list[Any] = (
                labels.truth_labels(truth, classes) if classes is not None else labels.truth_values(truth)
            )
        except RequestError:
            skipped.add("bad_truth")
            continue
        if len(values) != len(where):
            skipped.add("truth_count_mismatch")
            continue
        t = float(doc["time"])
        if t - rows.time[where[0]] > window or t < rows.time[where[0]] - 1.0:
            counts.late += 1  # (or earlier than its prediction, which no honest clock produces)
            continue
        if rows.truth[where[0]] is not None:
            skipped.add("duplicate_feedback")
            continue
        for i in where:
            rows.truth[i] = values[rows.index[i]]
            rows.labelled_at[i] = t
        counts.joined += 1
    return counts
