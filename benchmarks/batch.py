"""Batch scoring file to file: each engine on the same 1M-row Parquet file, next to the I/O floor measured in
the same run; then models, formats and peak memory for the local engine.

Every run is a child process (its own peak RSS, no warm caches of the parent), repeated `REPEAT` times in turn
(floor, local, floor, local, ...) so that a slow spell of the machine hits both; the best of each is shown.

- I/O floor: read the file with pyarrow and write it back to Parquet, no model (what the issue calls the
  IO-only floor). A second floor writes what scoring writes (the input plus the four output columns, filled
  with constants), still with no model.
- local: `score_file` with the local engine (read, validate, predict, write, fsynced checkpoints).
- dask: the dask engine with 2 workers, once with the LocalCluster it starts (what `--workers 2` costs), once on
  a cluster already running (what a long-lived cluster costs per file).
- spark: the spark engine on `local[2]` (JVM start included), when pyspark and Java are installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROWS = int(os.environ.get("SLUICE_BENCH_BATCH_ROWS", "1000000"))
CHUNK = 50_000
REPEAT = int(os.environ.get("SLUICE_BENCH_BATCH_REPEAT", "3"))
GOAL = 0.7  # the local engine against the I/O floor
REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
from pathlib import Path

def hwm():  # VmHWM: this process's own peak RSS (ru_maxrss would count the parent's pages before exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

def main():
    mode, bundle, source, target, chunk = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5])
    import pyarrow as pa
    import pyarrow.parquet as pq
    from serving.batch.engines import DaskEngine, make_engine
    from serving.batch.score import score_file
    from serving.core.predictor import Predictor
    predictor = Predictor.load(bundle)
    pa.repeat(pa.scalar("warm", pa.string()), 1)  # pyarrow loads its compute module on first use: not timed
    cluster = None
    if mode == "dask-running":
        from distributed import LocalCluster
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0", silence_logs=40)
    base = hwm()
    t, c = time.perf_counter(), cpu()
    if mode in ("floor", "floor-output"):  # read in chunks and write Parquet, no validation or prediction
        source_file = pq.ParquetFile(source, pre_buffer=False)
        writer = None
        rows = 0
        for batch in source_file.iter_batches(batch_size=chunk):
            table = pa.Table.from_batches([batch])
            if mode == "floor-output":
                n = table.num_rows
                table = table.append_column("prediction", pa.array(np.zeros(n, np.int64), pa.int64()))
                for c_ in (0, 1):
                    table = table.append_column(f"probability_{c_}", pa.array(np.zeros(n), pa.float64()))
                table = table.append_column("model_digest", pa.repeat(pa.scalar(predictor.digest, pa.string()), n))
            if writer is None:
                text = [f.name for f in table.schema if pa.types.is_string(f.type)]
                writer = pq.ParquetWriter(target, table.schema, use_dictionary=text, compression="snappy")
            writer.write_table(table)
            rows += table.num_rows
        writer.close()
    else:
        if mode == "dask-running":
            engine = DaskEngine(address=cluster.scheduler_address)
        else:
            engine = make_engine(mode, 1 if mode == "local" else 2)
        summary = score_file(predictor, source, target, chunk_size=chunk, engine=engine)
        rows = summary.rows
    seconds, cpu_seconds = time.perf_counter() - t, cpu() - c
    if cluster is not None:
        cluster.close()
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "rows": rows, "peak_mib": hwm() / 1024, "base_mib": base / 1024}))

import numpy as np
if __name__ == "__main__":
    main()
"""


def _make_rows(bundle: Any, n: int) -> np.ndarray:
    from serving.edge.export import test_split

    X = test_split(bundle).astype(np.float64)
    rng = np.random.default_rng(7)
    out: np.ndarray = X[rng.integers(0, len(X), n)] * rng.normal(1.0, 0.02, size=(n, X.shape[1]))
    return out


def _child(mode: str, bundle: Path, source: Path, target: Path, chunk: int = CHUNK) -> dict[str, Any] | str:
    """One run in a child process: its measurements, or why it could not run."""
    script = Path(tempfile.gettempdir()) / f"sluice-bench-batch-{os.getpid()}.py"
    script.write_text(CHILD)  # a file, not -c: dask's and spark's worker processes import the main module
    out = subprocess.run(
        [sys.executable, str(script), mode, str(bundle), str(source), str(target), str(chunk)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    shutil.rmtree(target.with_name(target.name + ".partial"), ignore_errors=True)
    target.unlink(missing_ok=True)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return f"failed: {last[:160]}"
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _spark_missing() -> str:
    import importlib.util

    if importlib.util.find_spec("pyspark") is None:
        return "pyspark not installed (pip install 'sluice[spark]')"
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        return "no Java"
    return ""


def _dask_missing() -> str:
    import importlib.util

    return (
        "" if importlib.util.find_spec("distributed") else "dask not installed (pip install 'sluice[dask]')"
    )


def engines(work: Path, bundle: Path, source: Path) -> list[dict[str, Any]]:
    """Rows/s of each engine and of the floors on `source`, measured in turn, best of REPEAT."""
    modes = ["floor", "floor-output", "local"]
    skipped: dict[str, str] = {}
    for mode, missing in (
        ("dask", _dask_missing()),
        ("dask-running", _dask_missing()),
        ("spark", _spark_missing()),
    ):
        if missing:
            skipped[mode] = missing
        else:
            modes.append(mode)
    best: dict[str, dict[str, Any]] = {}
    for _ in range(REPEAT):
        for mode in modes:
            if mode in skipped:
                continue
            result = _child(mode, bundle, source, work / f"out-{mode}.parquet")
            if isinstance(result, str):
                skipped[mode] = result
                continue
            if mode not in best or result["seconds"] < best[mode]["seconds"]:
                best[mode] = result
    rows = []
    floor = best["floor"]["rows"] / best["floor"]["seconds"]
    floor_output = best["floor-output"]["rows"] / best["floor-output"]["seconds"]
    for mode in ["floor", "floor-output", "local", "dask", "dask-running", "spark"]:
        if mode in best:
            r = best[mode]
            rate = r["rows"] / r["seconds"]
            rows.append(
                {
                    "engine": mode,
                    "rows": r["rows"],
                    "seconds": r["seconds"],
                    "cpu_seconds": r["cpu_seconds"],
                    "rows_per_s": rate,
                    "of_io_floor": rate / floor,
                    "of_output_floor": rate / floor_output,
                    "peak_rss_mib": r["peak_mib"],
                }
            )
        elif mode in skipped:
            rows.append({"engine": mode, "skipped": skipped[mode]})
    return rows


LABELS = {
    "floor": "I/O floor: read + write the input, no model",
    "floor-output": "I/O floor, output shape: read + write input and 4 constant columns",
    "local": "local",
    "dask": "dask, 2 workers (LocalCluster start included)",
    "dask-running": "dask, 2 workers (cluster already running)",
    "spark": "spark, local[2] (JVM start included)",
}


def models(
    work: Path, bundles: dict[str, Path], data: dict[str, Path], X: np.ndarray
) -> list[dict[str, Any]]:
    """The local engine per model and format: rows/s against raw in-memory predict, peak memory."""
    from serving.core.predictor import Predictor

    rows = []
    for name, bundle in bundles.items():
        predictor = Predictor.load(bundle)
        raw = _raw_rows_per_s(predictor, X)
        runs = (
            [("parquet", CHUNK), ("parquet", CHUNK // 5), ("csv", CHUNK)]
            if name == "logistic_regression"
            else [("parquet", CHUNK)]
        )
        for fmt, chunk in runs:
            result = _child("local", bundle, data[fmt], work / f"out-{name}-{chunk}.{fmt}", chunk)
            if isinstance(result, str):
                rows.append({"model": name, "format": fmt, "chunk_size": chunk, "skipped": result})
                continue
            rate = result["rows"] / result["seconds"]
            rows.append(
                {
                    "model": name,
                    "format": fmt,
                    "chunk_size": chunk,
                    "input_mib": data[fmt].stat().st_size / 2**20,
                    "raw_rows_per_s": raw,
                    "file_rows_per_s": rate,
                    "peak_rss_mib": result["peak_mib"],
                    "rss_over_loaded_model_mib": result["peak_mib"] - result["base_mib"],
                }
            )
    return rows


def _raw_rows_per_s(predictor: Any, X: np.ndarray) -> float:
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for i in range(0, len(X), CHUNK):
            predictor.predict(predictor.validate(X[i : i + CHUNK]))
        best = min(best, time.perf_counter() - t)
    return len(X) / best


def main(results_dir: Path) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from model.params import Params
    from model.pipeline import train_bundle

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        work = Path(tmp)
        bundles = {
            "logistic_regression": train_bundle(work / "lr", work / "lr" / "bundle", Params()),
            "random_forest": train_bundle(
                work / "rf",
                work / "rf" / "bundle",
                Params.model_validate({"train": {"model": "random_forest"}}),
            ),
        }
        lr = bundles["logistic_regression"]
        X = _make_rows(lr, ROWS)
        table = pa.table({f: X[:, j] for j, f in enumerate(lr.signature.feature_names)})
        table = table.add_column(0, "id", pa.array(np.arange(ROWS)))
        data = {"parquet": work / "in.parquet", "csv": work / "in.csv"}
        pq.write_table(table, data["parquet"], row_group_size=100_000)
        pacsv.write_csv(table, data["csv"])
        del table
        engine_rows = engines(work, lr.path, data["parquet"])
        model_rows = models(work, {k: b.path for k, b in bundles.items()}, data, X)
        input_mib = data["parquet"].stat().st_size / 2**20
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "batch.json").write_text(
        json.dumps(
            {
                "rows": ROWS,
                "chunk_size": CHUNK,
                "repeat": REPEAT,
                "goal": GOAL,
                "engines": engine_rows,
                "models": model_rows,
            },
            indent=2,
        )
        + "\n"
    )
    text = render(engine_rows, model_rows, input_mib)
    (results_dir / "batch.md").write_text(text)
    print(text)


def render(engine_rows: list[dict[str, Any]], model_rows: list[dict[str, Any]], input_mib: float) -> str:
    lines = [
        f"# Batch scoring file to file, {ROWS:,} rows\n",
        f"## Engines on the same Parquet file ({input_mib:.0f} MiB, logistic regression, chunks of {CHUNK:,}; "
        f"best of {REPEAT}, measured in turn in one run)\n",
        f"| run | rows/s | of the I/O floor (goal for local: {GOAL:.0%}) | of the output-shaped floor | "
        "wall s | CPU s | peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in engine_rows:
        label = LABELS[r["engine"]]
        if "skipped" in r:
            lines.append(f"| {label} | not run: {r['skipped']} | | | | | |")
            continue
        lines.append(
            f"| {label} | {r['rows_per_s']:,.0f} | {r['of_io_floor']:.0%} | {r['of_output_floor']:.0%} "
            f"| {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['peak_rss_mib']:.0f} MiB |"
        )
    lines += [
        "",
        "## The local engine by model and format\n",
        "| model | format | chunk | raw predict in memory (rows/s) | file to file (rows/s) | peak RSS | RSS above loaded model |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in model_rows:
        if "skipped" in r:
            lines.append(
                f"| {r['model']} | {r['format']} | {r['chunk_size']:,} | not run: {r['skipped']} | | | |"
            )
            continue
        lines.append(
            f"| {r['model']} | {r['format']} ({r['input_mib']:.0f} MiB) | {r['chunk_size']:,} "
            f"| {r['raw_rows_per_s']:,.0f} | {r['file_rows_per_s']:,.0f} "
            f"| {r['peak_rss_mib']:.0f} MiB | {r['rss_over_loaded_model_mib']:.0f} MiB |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(Path(__file__).resolve().parent / "results")
