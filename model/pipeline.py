"""The five stages of `dvc.yaml` as functions: what `sluice model <stage>` runs, and what tests call directly."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from model.bundle import Bundle
from model.layout import Layout
from model.params import Params, load_params


class ValidationFailed(RuntimeError):
    """The raw data broke the data contract; the message lists each failed expectation."""


def prepare(root: Path) -> str:
    from model.data import prepare as _prepare

    layout = Layout.at(root)
    raw, train, test = _prepare(layout, load_params(layout.params).data)
    return f"prepared {raw.relative_to(layout.root)}, {train.relative_to(layout.root)}, {test.relative_to(layout.root)}"


def validate(root: Path) -> str:
    import pandas as pd

    from model.checks import validate_frame

    layout = Layout.at(root)
    params = load_params(layout.params)
    report = validate_frame(pd.read_csv(layout.raw), params.validate_)
    layout.validation_report.parent.mkdir(parents=True, exist_ok=True)
    layout.validation_report.write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    if not report.success:
        raise ValidationFailed(f"{layout.raw.relative_to(layout.root)}: {report.render()}")
    return report.render()


def train(root: Path) -> str:
    from model.train import train as _train

    layout = Layout.at(root)
    params = load_params(layout.params)
    result = _train(layout, params)
    return (
        f"trained {params.train.model} (train accuracy {result.metrics['train_accuracy']:.4f}); "
        f"MLflow run {result.run_id}"
    )


def evaluate(root: Path) -> str:
    from model.evaluate import evaluate as _evaluate

    layout = Layout.at(root)
    report, verdict = _evaluate(layout, load_params(layout.params))
    return f"test accuracy {report['accuracy']:.4f}, roc_auc {report['roc_auc']:.4f}; {verdict.explain()}"


def package(root: Path) -> str:
    from model.package import package as _package

    layout = Layout.at(root)
    bundle, ref = _package(layout, load_params(layout.params))
    return (
        f"bundle {bundle.path.relative_to(layout.root)} digest {bundle.digest}; registered as "
        f"{ref.name} version {ref.version} (alias challenger)"
    )


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
    from model.data import prepare as _prepare
    from model.data import read_split
    from model.evaluate import score
    from model.package import build_bundle
    from model.serialization import save_skops
    from model.train import build_estimator

    params = params or Params()
    layout = Layout.at(workdir)
    _prepare(layout, params.data)
    X, y = read_split(layout.train_csv)
    estimator = build_estimator(params.train).fit(X, y)
    save_skops(estimator, layout.trained_model)
    X_test, y_test = read_split(layout.test_csv)
    metrics = score(estimator.predict_proba(X_test)[:, 1], y_test)
    layout.evaluate_metrics.parent.mkdir(parents=True, exist_ok=True)
    layout.evaluate_metrics.write_text(json.dumps({**metrics, "test_rows": len(X_test)}, indent=2) + "\n")
    return build_bundle(layout, params, out)
