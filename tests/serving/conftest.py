"""Fixtures for the predictor's tests: a real uvicorn server on a free loopback port, and real test rows."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest


@dataclass
class LiveServer:
    url: str
    port: int
    app: Any


def start_live_server(app: Any) -> tuple[LiveServer, Any]:
    """Serve `app` with uvicorn (httptools) in a thread, on a socket bound before the thread starts."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, http="httptools", lifespan="off", access_log=False, log_level="warning", timeout_keep_alive=2
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(5)
        sock.close()

    return LiveServer(f"http://127.0.0.1:{port}", port, app), stop


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start more apps over real sockets within a test: `serve(app) -> LiveServer`; all stopped after it."""
    stops = []

    def start(app: Any) -> LiveServer:
        server, stop = start_live_server(app)
        stops.append(stop)
        return server

    yield start
    for stop in stops:
        stop()


def _serving(bundle: Path) -> Iterator[LiveServer]:
    from serving.http.server import build_app

    server, stop = start_live_server(build_app(str(bundle), max_body_bytes=256 * 1024))
    yield server
    stop()


@pytest.fixture(scope="module")
def live(bundle_dir: Path) -> Iterator[LiveServer]:
    """`sluice serve`'s app on the logistic-regression bundle, over a real socket."""
    yield from _serving(bundle_dir)


@pytest.fixture(scope="module")
def mixed_live(mixed_bundle_dir: Path) -> Iterator[LiveServer]:
    """`sluice serve`'s app on a multiclass bundle of numeric, categorical and boolean features."""
    yield from _serving(mixed_bundle_dir)


@pytest.fixture(scope="module")
def regression_live(regression_bundle_dir: Path) -> Iterator[LiveServer]:
    """`sluice serve`'s app on a regression bundle (ridge on the diabetes set)."""
    yield from _serving(regression_bundle_dir)


@pytest.fixture(scope="session")
def test_rows(bundle_dir: Path) -> pd.DataFrame:
    """Rows of the test split the bundle was evaluated on, in signature order."""
    from model.bundle import Bundle
    from model.layout import Layout

    names = Bundle.open(bundle_dir).signature.feature_names
    return pd.read_csv(Layout.at(bundle_dir.parent).test_csv)[names].head(25)


@pytest.fixture(scope="session")
def expected(bundle_dir: Path, test_rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """What scikit-learn itself says about `test_rows`: (labels, probabilities)."""
    from model.bundle import Bundle

    estimator = Bundle.open(bundle_dir).load_sklearn()
    return estimator.predict(test_rows), estimator.predict_proba(test_rows)
