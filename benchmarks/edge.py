"""Edge runtime vs scikit-learn on one row: p50/p99 latency, bundle size, label parity on the test split.

Goal from the issue: the edge runtime at least 20x faster than scikit-learn's `predict_proba` on the same
row, and 100% label parity on the test split. Both models of the template (logistic regression, random forest).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

MODELS: dict[str, dict[str, Any]] = {
    "logistic_regression": {},
    "random_forest": {"train": {"model": "random_forest"}},
}


def _percentiles(samples: list[float]) -> tuple[float, float]:
    arr = np.asarray(samples) * 1e6
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def _time(fn: Any, n: int) -> list[float]:
    for _ in range(min(50, n)):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def measure(name: str, overrides: dict[str, Any], work: Path) -> dict[str, Any]:
    import pandas as pd

    from model.params import Params
    from model.pipeline import train_bundle
    from serving.edge.export import export, test_split
    from serving.edge.runtime import EdgeModel

    bundle = train_bundle(work / name, work / name / "bundle", Params.model_validate(overrides))
    edge_dir = work / name / "edge"
    export(str(bundle.path), edge_dir)
    edge = EdgeModel.load(edge_dir)
    estimator = bundle.load_sklearn()
    X = test_split(bundle)
    frame = pd.DataFrame(X.astype(np.float64), columns=bundle.signature.feature_names)

    parity = int((edge.predict(X).labels == estimator.predict(frame)).sum())
    row = X[:1]
    record = dict(zip(edge.feature_names, row[0].astype(float).tolist(), strict=True))
    row_frame = frame.iloc[:1]
    slow_n = 300 if name == "random_forest" else 2000
    edge_p50, edge_p99 = _percentiles(_time(lambda: edge.predict(row), 5000))
    record_p50, record_p99 = _percentiles(_time(lambda: edge.predict_rows(record), 5000))
    sk_p50, sk_p99 = _percentiles(_time(lambda: estimator.predict_proba(row_frame), slow_n))

    def size(d: Path) -> int:
        return sum(p.stat().st_size for p in d.iterdir() if p.is_file())

    return {
        "model": name,
        "edge_p50_us": edge_p50,
        "edge_p99_us": edge_p99,
        "edge_record_p50_us": record_p50,
        "edge_record_p99_us": record_p99,
        "sklearn_p50_us": sk_p50,
        "sklearn_p99_us": sk_p99,
        "speedup_p50": sk_p50 / edge_p50,
        "speedup_record_p50": sk_p50 / record_p50,
        "edge_bundle_bytes": size(edge_dir),
        "full_bundle_bytes": size(bundle.path),
        "label_parity": f"{parity}/{len(X)}",
        "label_parity_ok": parity == len(X),
    }


def main(results_dir: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        rows = [measure(name, overrides, Path(tmp)) for name, overrides in MODELS.items()]
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "edge.json").write_text(json.dumps({"goal_speedup": 20, "results": rows}, indent=2) + "\n")
    lines = [
        "| model | edge p50 / p99 (us) | edge from a record p50 / p99 (us) | scikit-learn p50 / p99 (us) "
        "| speed-up p50 (array / record) | edge bundle | full bundle | label parity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['edge_p50_us']:.1f} / {r['edge_p99_us']:.1f} "
            f"| {r['edge_record_p50_us']:.1f} / {r['edge_record_p99_us']:.1f} "
            f"| {r['sklearn_p50_us']:.0f} / {r['sklearn_p99_us']:.0f} "
            f"| {r['speedup_p50']:.0f}x / {r['speedup_record_p50']:.0f}x (goal 20x) "
            f"| {r['edge_bundle_bytes'] / 1024:.1f} KiB | {r['full_bundle_bytes'] / 1024:.1f} KiB "
            f"| {r['label_parity']} |"
        )
    table = "\n".join(lines) + "\n"
    (results_dir / "edge.md").write_text("# Edge runtime vs scikit-learn, one row\n\n" + table)
    print(table)


if __name__ == "__main__":
    main(Path(__file__).resolve().parent / "results")
