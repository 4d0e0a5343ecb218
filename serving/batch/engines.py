"""Where the chunks of a batch run are scored: in this process (`local`), on a Dask cluster, or on Spark.

`local` streams the file through one process and is the fastest on one core. `dask` and `spark` run the
chunk runs of `parts.py` in parallel workers: an embedded cluster on this machine by default (Dask's
`LocalCluster` with one process per worker, Spark's `local[N]`), or an existing cluster given by address.
With a remote cluster, the bundle, the input and the work directory next to the output must be on storage
every worker sees under the same path (a shared volume).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from serving.batch.formats import BatchError

if TYPE_CHECKING:
    from serving.batch.parts import Task, TaskResult

EngineName = Literal["local", "dask", "spark"]
ENGINES: tuple[EngineName, ...] = ("local", "dask", "spark")
TaskFn = Callable[["Task"], "TaskResult"]


class EngineUnavailable(BatchError):
    """The engine's library (or Java, for Spark) is not installed here; the message says what to install."""


class Engine(Protocol):
    name: str
    workers: int

    def map(self, fn: TaskFn, tasks: list[Task], on_result: Callable[[TaskResult], None]) -> None:
        """Run `fn` on every task in the engine's workers; `on_result` is called (here) as each one ends."""
        ...


@dataclass
class LocalEngine:
    """This process, streaming (see `local.py`); `map` runs tasks one after the other."""

    name: str = "local"
    workers: int = 1

    def map(self, fn: TaskFn, tasks: list[Task], on_result: Callable[[TaskResult], None]) -> None:
        for task in tasks:
            on_result(fn(task))


@dataclass
class DaskEngine:
    """Tasks as Dask futures: on `address` (tcp://scheduler:8786) or on a `LocalCluster` of `workers`
    processes with one thread each, started for the run and stopped after it."""

    workers: int = 2
    address: str | None = None
    name: str = "dask"

    def map(self, fn: TaskFn, tasks: list[Task], on_result: Callable[[TaskResult], None]) -> None:
        try:
            from distributed import Client, LocalCluster, as_completed
        except ImportError:
            raise EngineUnavailable(
                "the dask engine needs dask and distributed: pip install 'sluice[dask]'"
            ) from None
        cluster = None
        if self.address is None:
            cluster = LocalCluster(
                n_workers=self.workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",  # loopback: the scheduler and its dashboard (on a free port) stay on this machine
                dashboard_address="127.0.0.1:0",
                silence_logs=logging.ERROR,
            )
        client = Client(cluster if cluster is not None else self.address)
        try:
            futures = client.map(fn, tasks, pure=False)
            for future in as_completed(futures):
                on_result(future.result())
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


@dataclass
class SparkEngine:
    """Tasks as Spark tasks, one partition each, run by `mapInPandas` on a tiny DataFrame of task
    descriptions (the rows themselves are read by the task with pyarrow, not shipped through Spark);
    on `master` (spark://..., or another cluster manager) or `local[workers]`."""

    workers: int = 2
    master: str | None = None
    name: str = "spark"

    def map(self, fn: TaskFn, tasks: list[Task], on_result: Callable[[TaskResult], None]) -> None:
        import base64
        import pickle
        import warnings

        session, ours = spark_session(self.master or f"local[{self.workers}]")
        try:
            specs = [(i, base64.b64encode(pickle.dumps((fn, task))).decode()) for i, task in enumerate(tasks)]
            # One task per partition (parallelize splits a list evenly), so Spark runs them side by side.
            frame = session.sparkContext.parallelize(specs, numSlices=max(1, len(specs))).toDF(
                "task long, spec string"
            )
            with warnings.catch_warnings():  # the frames here are a few task descriptions, not data
                warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
                results = frame.mapInPandas(_spark_run, schema="task long, result string")
                for row in results.toLocalIterator():
                    on_result(pickle.loads(base64.b64decode(row["result"])))
        finally:
            if ours:
                session.stop()


def _spark_run(frames: Any) -> Any:
    """On a Spark worker: run each task description of the partition, yield its pickled result."""
    import base64
    import pickle

    import pandas as pd

    for frame in frames:
        out = []
        for task_id, spec in zip(frame["task"], frame["spec"], strict=True):
            fn, task = pickle.loads(base64.b64decode(spec))
            out.append((task_id, base64.b64encode(pickle.dumps(fn(task))).decode()))
        yield pd.DataFrame(out, columns=["task", "result"])


def spark_session(master: str) -> tuple[Any, bool]:
    """A Spark session on `master` whose Python workers run this interpreter (so they import this project),
    and whether it was started here (a caller's own active session is used as it is, and left running)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise EngineUnavailable("the spark engine needs pyspark: pip install 'sluice[spark]'") from None
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise EngineUnavailable("the spark engine needs Java 17 or later (no java on PATH and no JAVA_HOME)")
    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master(master)
        .appName("sluice-batch")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session, True


def make_engine(name: str, workers: int = 1, address: str | None = None) -> Engine:
    """The engine called `name` with `workers` workers; `address` is a Dask scheduler or a Spark master."""
    if name == "local":
        if address:
            raise BatchError("the local engine takes no cluster address")
        return LocalEngine()
    if workers < 1:
        raise BatchError(f"workers {workers}: must be at least 1")
    if name == "dask":
        return DaskEngine(workers, address)
    if name == "spark":
        return SparkEngine(workers, address)
    raise BatchError(f"engine {name!r}: expected one of {', '.join(ENGINES)}")
