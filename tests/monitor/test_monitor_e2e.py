"""`sluice monitor` on the files a real router wrote: `sluice up` on loopback with the prediction log on, traffic
with one feature shifted, feedback for some answers; the shifted feature is reported and exported under the
name the alert rules read, the others are not, and live accuracy is what the labels say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from typer.testing import CliRunner
from up_harness import metric_samples, predictor

from deployment import metric_names as n
from serving.router.prediction_log import FileSink, PredictionLog, log_files
from sluice.cli import app

REPO = Path(__file__).resolve().parents[2]
SHIFTED = "mean_texture"


def breast_cancer() -> tuple[list[str], np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    return [str(c).replace(" ", "_") for c in data.feature_names], data.data, data.target


def traffic(rt: Any, rows: np.ndarray, truths: np.ndarray, names: list[str], labelled: int) -> None:
    with httpx.Client(base_url=rt.url, timeout=10) as client:
        for i, row in enumerate(rows):
            answer = client.post(
                "/api/v1.0/predictions", json={"data": {"names": names, "ndarray": [row.tolist()]}}
            )
            assert answer.status_code == 200, answer.text
            if i < labelled:
                feedback = {"response": answer.json(), "truth": {"data": {"ndarray": [int(truths[i])]}}}
                assert client.post("/api/v1.0/feedback", json=feedback).status_code == 200


@pytest.fixture()
def logged(up: Any, fake_uri: Path, tmp_path: Path) -> tuple[Path, float]:
    """A log of 300 answers (mean_texture shifted up by half its 5-95 % range), 60 of them labelled; and the
    accuracy those labels give the fake predictor (which always answers class 1)."""
    names, X, y = breast_cancer()
    rng = np.random.default_rng(3)
    pick = rng.choice(len(X), 300, replace=False)
    rows, truths = X[pick].copy(), y[pick]
    rows[:, names.index(SHIFTED)] += 7.0
    logdir = tmp_path / "log"
    plog = PredictionLog(FileSink(logdir, max_file_bytes=64 << 10))
    rt = up([predictor("m-a", 100, fake_uri)], prediction_log=plog)
    traffic(rt, rows, truths, names, labelled=60)
    assert plog.flush()
    assert len(log_files(logdir)) > 1  # rotated while serving
    return logdir, float(np.mean(truths[:60] == 1))


def test_the_shifted_feature_is_detected_and_exported_and_the_others_are_not(
    logged: tuple[Path, float], tmp_path: Path
) -> None:
    logdir, accuracy = logged
    textfile, report = tmp_path / "monitor.prom", tmp_path / "report"
    result = CliRunner().invoke(
        app,
        ["monitor", str(logdir), "--contract", str(REPO / "contract.yaml"), "--textfile", str(textfile),
         "--report", str(report), "--check"],
    )  # fmt: skip
    assert result.exit_code == 3, result.output  # --check: a retrain is called for
    text = textfile.read_text()
    scores = {s[n.FEATURE]: (s, v) for s, v in metric_samples(text, n.DRIFT_SCORE)}
    assert len(scores) == 30
    labels, value = scores[SHIFTED]
    assert (labels[n.NAMESPACE], labels[n.DEPLOYMENT], labels[n.PREDICTOR]) == ("sluice", "sd", "m-a")
    assert value > 0.2
    assert max(v for f, (_, v) in scores.items() if f != SHIFTED) < 0.2
    ((_, live),) = metric_samples(text, n.LIVE_ACCURACY)
    assert live == pytest.approx(accuracy)
    assert dict((s["state"], v) for s, v in metric_samples(text, n.MONITOR_LABELS)) == {
        "joined": 60.0, "late": 0.0, "unmatched": 0.0,
    }  # fmt: skip
    summary = orjson.loads((report / "summary.json").read_bytes())
    (only,) = summary["predictors"]
    assert only["drifted"] == [SHIFTED] and only["rows"] == 300 and only["labelled"] == 60
    assert (report / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert SHIFTED in (report / "index.html").read_text()


def test_hostile_lines_in_the_log_are_skipped_and_counted(logged: tuple[Path, float], tmp_path: Path) -> None:
    logdir, _ = logged
    last = log_files(logdir)[-1]
    with last.open("ab") as f:
        f.write(b'{"kind": "prediction", "time": 1e300, "request": {"data": {"ndarray": [["x"]]}}}\n')
        f.write(b"not json at all\n")
        f.write(b'{"kind": "prediction", "time": "yesterday"}\n')
        f.write(b'["a list"]\n')
        f.write(b'{"kind": "feedback", "time": 1, "puid": "nobody", "truth": {"data": {"ndarray": [1]}}}\n')
        f.write(
            b'{"kind": "prediction", "time": 2, "request": {"data": {"ndarray": [[' + b"1," * 29 + b"1]]}}, "
        )
        # a torn last line, as a crash mid-write leaves it
    result = CliRunner().invoke(
        app,
        ["monitor", str(logdir), "--contract", str(REPO / "contract.yaml"), "--report", str(tmp_path / "r")],
    )
    assert result.exit_code == 0, result.output
    summary = orjson.loads((tmp_path / "r" / "summary.json").read_bytes())
    assert summary["skipped"] == {"rows_refused": 1, "not_json": 2, "bad_time": 1, "not_a_record": 1}
    assert summary["labels"]["unmatched"] == 1
    assert summary["predictors"][0]["rows"] == 300


def test_an_unshifted_log_calls_for_nothing(up: Any, fake_uri: Path, tmp_path: Path) -> None:
    names, X, y = breast_cancer()
    rows = X[np.random.default_rng(5).choice(len(X), 250, replace=False)]
    plog = PredictionLog(FileSink(tmp_path / "log"))
    rt = up([predictor("m-a", 100, fake_uri)], prediction_log=plog)
    traffic(rt, rows, y, names, labelled=0)
    assert plog.flush()
    textfile = tmp_path / "m.prom"
    result = CliRunner().invoke(
        app,
        ["monitor", str(tmp_path / "log"), "--contract", str(REPO / "contract.yaml"), "--textfile", str(textfile),
         "--report", str(tmp_path / "r"), "--check"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert max(v for _, v in metric_samples(textfile.read_text(), n.DRIFT_SCORE)) < 0.2


@pytest.mark.slow
def test_sluice_up_cli_with_real_predictors_logs_what_sluice_monitor_reads(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """The whole path as a user runs it: `sluice up --prediction-log` (subprocess, the real model behind the
    router, sampling from the policy), traffic with one feature shifted and labels, then `sluice monitor`."""
    from up_harness import SluiceUp, write_manifest

    from model.bundle import Bundle

    bundle = Bundle.open(bundle_dir)
    env = tmp_path / "env"
    env.mkdir()
    write_manifest(env, [predictor("m-live", 100, bundle.path, bundle.digest)])
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "strategy: canary\nstages: [{weight: 50}]\nmonitoring: {sample: 1.0, min_records: 100}\n"
    )
    logdir = tmp_path / "log"
    up = SluiceUp(env, tmp_path / "up.log", "--prediction-log", str(logdir), "--log-policy", str(policy))
    try:
        up.wait_routed(1, timeout=120)
        names, X, y = breast_cancer()
        pick = np.random.default_rng(4).choice(len(X), 200, replace=False)
        rows = X[pick].copy()
        rows[:, names.index(SHIFTED)] += 7.0
        traffic(up, rows, y[pick], names, labelled=100)
        expected = bundle.load_sklearn()
    finally:
        assert up.stop() == 0
    # The log is flushed on shutdown: every answer is in it.
    textfile = tmp_path / "m.prom"
    result = CliRunner().invoke(
        app,
        ["monitor", str(logdir), "--contract", str(REPO / "contract.yaml"), "--policy", str(policy),
         "--textfile", str(textfile), "--report", str(tmp_path / "r")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = orjson.loads((tmp_path / "r" / "summary.json").read_bytes())
    (only,) = summary["predictors"]
    assert only["rows"] == 200 and only["drifted"] == [SHIFTED] and only["digest"] == bundle.digest
    import pandas as pd

    frame = pd.DataFrame(rows[:100], columns=names)
    predicted = expected.predict(frame)
    assert only["accuracy"] == pytest.approx(float(np.mean(predicted == y[pick][:100])))
