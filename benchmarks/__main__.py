"""`python -m benchmarks [NAME ...]`: run the benchmark modules (all by default) and write their results."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

MODULES = [
    "serving",
    "gateway",
    "prediction_log",
    "drift",
    "batch",
    "stream",
    "edge",
    "rollout",
    "gates",
    "gates_e2e",
]
RESULTS = Path(__file__).resolve().parent / "results"


def run(names: list[str]) -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        try:
            module = importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"benchmarks.{name}":
                print(f"[bench] {name}: no benchmark module yet, skipped")
                continue
            raise
        print(f"[bench] {name}")
        try:
            module.main(RESULTS)
        except Exception as e:  # one failing benchmark must not hide the others' results
            print(f"[bench] {name} FAILED: {e!r}")
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:] or MODULES))
