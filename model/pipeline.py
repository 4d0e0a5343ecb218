"""The five stages of `dvc.yaml` as functions: what `sluice model <stage>` runs, and what tests call directly."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from model.layout import Layout
from model.params import Params, load_params

if TYPE_CHECKING:  # a stage imports only what it uses: dvc.yaml lists those modules as its deps
    from model.bundle import Bundle


class ValidationFailed(RuntimeError):
    """The raw data broke the data contract; the message lists each failed expectation."""


class StageFailed(RuntimeError):
    """A stage stopped on an expected problem (bad params, data, contract, gate, parity, registry)."""


@contextmanager
def _expected(*errors: type[BaseException]) -> Iterator[None]:
    """Turn the errors a stage expects into `StageFailed`; anything else is a bug and stays as it is."""
    from model.contract import ContractError
    from model.datasets import SourceError
    from model.params import ParamsError

    expected: tuple[type[BaseException], ...] = (
        ParamsError,
        ContractError,
        SourceError,
        FileNotFoundError,
        *errors,
    )
    try:
        yield
    except expected as e:
        raise StageFailed(str(e)) from e


def prepare(root: Path) -> str:
    from model.data import prepare as _prepare

    layout = Layout.at(root)
    with _expected():
        params = load_params(layout.params)
        raw, train, test = _prepare(layout, params.data)
    return (
        f"prepared {raw.relative_to(layout.root)} from {params.data.source}, "
        f"{train.relative_to(layout.root)}, {test.relative_to(layout.root)}"
    )


def validate(root: Path) -> str:
    from model.checks import validate_frame
    from model.contract import load_contract
    from model.datasets import read_table

    layout = Layout.at(root)
    with _expected():
        params = load_params(layout.params)
        contract = load_contract(layout.contract)
        raw = layout.raw.relative_to(layout.root)
        report = validate_frame(read_table(layout.raw, contract), contract, params.validate_, data=raw)
    layout.validation_report.parent.mkdir(parents=True, exist_ok=True)
    layout.validation_report.write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    if not report.success:
        raise ValidationFailed(report.render())
    return report.render()


def train(root: Path) -> str:
    from model.registry import RegistryError
    from model.train import train as _train

    layout = Layout.at(root)
    with _expected(RegistryError):
        params = load_params(layout.params)
        result = _train(layout, params)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if k != "train_rows")
    return f"trained {params.train.model} ({shown}); MLflow run {result.run_id}"


def evaluate(root: Path) -> str:
    from model.bundle import BundleError
    from model.evaluate import ChampionError, GateFailed
    from model.evaluate import evaluate as _evaluate
    from model.params import TASK_METRICS
    from model.registry import RegistryError

    layout = Layout.at(root)
    with _expected(GateFailed, ChampionError, BundleError, RegistryError):
        report, verdict = _evaluate(layout, load_params(layout.params))
    shown = ", ".join(f"{k} {report[k]:.4f}" for k in sorted(TASK_METRICS[report["task"]]))
    return f"test {shown}; {verdict.explain()}"


def package(root: Path) -> str:
    from model.bundle import BundleError
    from model.package import ParityError
    from model.package import package as _package
    from model.registry import RegistryError

    layout = Layout.at(root)
    with _expected(ParityError, BundleError, RegistryError):
        bundle, ref, skipped = _package(layout, load_params(layout.params))
    registered = (
        f"registered as {ref.name} version {ref.version} (alias challenger)" if ref is not None else skipped
    )
    return f"bundle {bundle.path.relative_to(layout.root)} digest {bundle.digest}; {registered}"


STAGES: dict[str, Callable[[Path], str]] = {
    "prepare": prepare,
    "validate": validate,
    "train": train,
    "evaluate": evaluate,
    "package": package,
}


def train_bundle(workdir: Path, out: Path, params: Params | None = None) -> Bundle:
    """prepare -> fit -> score -> package into `out`, without DVC or MLflow.

    For tests, benchmarks and demos that need a real bundle fast; `dvc repro` is the production path.
    """
    from model.data import contract_for, read_split
    from model.data import prepare as _prepare
    from model.metrics import predict, score
    from model.package import build_bundle
    from model.params import check_task
    from model.serialization import save_skops
    from model.train import build_estimator

    params = params or Params()
    layout = Layout.at(workdir)
    contract = contract_for(layout, params.data)
    check_task(params, contract, layout.params, contract.path)
    _prepare(layout, params.data, contract)
    X, y = read_split(layout.train_csv, contract)
    estimator = build_estimator(params.train, contract).fit(X, y)
    save_skops(estimator, layout.trained_model)
    X_test, y_test = read_split(layout.test_csv, contract)
    metrics = score(contract.task, y_test, predict(estimator, X_test, contract.task))
    layout.evaluate_metrics.parent.mkdir(parents=True, exist_ok=True)
    layout.evaluate_metrics.write_text(
        json.dumps({**metrics, "task": contract.task, "test_rows": len(X_test)}, indent=2) + "\n"
    )
    return build_bundle(layout, params, out)
