"""MLflow and Prometheus, real: an MLflow tracking server on sqlite and a Prometheus scraping an exporter of the
router's metric names, both on loopback, started by the tests."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from doctor import services
from doctor.report import Finding, Status

ROLLOUT_TESTS = Path(__file__).resolve().parents[1] / "rollout"
sys.path.insert(0, str(ROLLOUT_TESTS))

from rollout_exporter import DEPLOYMENT, Profile  # noqa: E402
from testkit.services import free_port, running_prometheus, stop, wait_until  # noqa: E402


def _rollout_fixtures():  # type: ignore[no-untyped-def]
    """The rollout tests' exporter of the router's metric names (tests/rollout/conftest.py), reused as it is."""
    spec = importlib.util.spec_from_file_location("rollout_fixtures", ROLLOUT_TESTS / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _by_check(findings: list[Finding]) -> dict[str, tuple[Status, str]]:
    return {f.check: (f.status, f.detail) for f in findings}


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on sqlite, on a free loopback port, with one registered model and its champion alias."""
    work = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{work / 'mlflow.db'}",
            "--artifacts-destination",
            str(work / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    try:

        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError("mlflow server exited")
            try:
                return httpx.get(f"{url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        # its first start creates the sqlite schema: tens of seconds on two busy cores
        wait_until(healthy, 180, "mlflow server answering /health", step=0.2)
        api = f"{url}/api/2.0/mlflow"
        httpx.post(f"{api}/registered-models/create", json={"name": "acme-churn"}).raise_for_status()
        httpx.post(
            f"{api}/model-versions/create", json={"name": "acme-churn", "source": "s3://acme-models/churn/1"}
        ).raise_for_status()
        httpx.post(
            f"{api}/registered-models/alias", json={"name": "acme-churn", "alias": "champion", "version": "1"}
        ).raise_for_status()
        httpx.post(f"{api}/registered-models/create", json={"name": "no-versions"}).raise_for_status()
        yield url
    finally:
        stop(proc)


@pytest.mark.slow
def test_mlflow_with_the_registered_model_and_its_champion(mlflow_server: str) -> None:
    found = _by_check(list(services.mlflow(mlflow_server, "acme-churn")))
    assert found["reachable"][0] is Status.OK
    assert found["registered model"] == (Status.OK, "acme-churn")
    assert found["champion alias"] == (Status.OK, "acme-churn@champion is version 1")


@pytest.mark.slow
def test_mlflow_without_the_model_or_its_versions(mlflow_server: str) -> None:
    absent = _by_check(list(services.mlflow(mlflow_server, "sluice-classifier")))
    assert absent["registered model"] == (Status.MISSING, "no registered model 'sluice-classifier'")
    empty = _by_check(list(services.mlflow(mlflow_server, "no-versions")))
    assert empty["registered model"] == (Status.MISSING, "'no-versions' has no versions")


def test_mlflow_down_is_a_finding_within_seconds() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    found = _by_check(list(services.mlflow(url, "acme-churn")))
    assert found["reachable"][0] is Status.MISSING and "ConnectError" in found["reachable"][1]
    assert time.monotonic() - started < services.TIMEOUT


@pytest.mark.slow  # MLflow creates its sqlite schema (~20 s on two busy cores)
def test_a_local_sqlite_registry(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert _by_check(list(services.mlflow(uri, "acme-churn")))["reachable"][0] is Status.MISSING

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("acme-churn")
    client.create_model_version("acme-churn", "s3://acme-models/churn/1")
    found = _by_check(list(services.mlflow(uri, "acme-churn")))
    assert found["registered model"] == (Status.OK, "acme-churn")
    assert found["champion alias"][0] is Status.WARN


def test_an_mlflow_uri_of_another_scheme() -> None:
    found = _by_check(list(services.mlflow("file:///tmp/mlruns", "acme-churn")))
    assert found["tracking URI"][0] is Status.MISSING


def test_prometheus_with_series_in_one_namespace_and_none_in_the_other(tmp_path: Path) -> None:
    fixtures = _rollout_fixtures()
    with (
        fixtures.running_exporter() as exporter,
        running_prometheus(tmp_path, {"acme-staging": exporter.port}) as url,
    ):
        exporter.profiles["m-aaaaaaaaaaaa"] = Profile(requests=2)
        deadline = time.monotonic() + 20
        while True:
            found = _by_check(list(services.prometheus(url, DEPLOYMENT, ["acme-staging", "acme-production"])))
            if found["predictor series in acme-staging"][0] is Status.OK or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        other = _by_check(list(services.prometheus(url, "other-model", ["acme-staging"])))
    assert found["reachable"][0] is Status.OK
    assert found["predictor series in acme-staging"][0] is Status.OK
    status, detail = found["predictor series in acme-production"]
    assert status is Status.MISSING and 'namespace="acme-production"' in detail
    # another deployment's series are not this one's
    assert other["predictor series in acme-staging"][0] is Status.MISSING


def test_prometheus_down() -> None:
    found = _by_check(list(services.prometheus(f"http://127.0.0.1:{free_port()}", DEPLOYMENT, ["x"])))
    assert found["reachable"][0] is Status.MISSING
