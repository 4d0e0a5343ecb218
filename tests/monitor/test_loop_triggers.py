"""What starts a retrain, up to its data commit (real git, real `dvc add`, no training): live accuracy under the
policy's threshold, the schedule, and nothing when neither fires or too few rows are labelled."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

from monitor.assess import Thresholds
from monitor.loop import LoopSettings, next_step, progress

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from scratch_repo import make_scratch

pytestmark = pytest.mark.slow


def log_of(directory: Path, n: int, right: int, t0: float = 1000.0) -> Path:
    """n predictions of class 1 on breast-cancer rows drawn at random (no drift), each labelled; `right` of the
    labels agree with the prediction."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = [str(c).replace(" ", "_") for c in data.feature_names]
    order = np.random.default_rng(1).permutation(len(data.data))  # a fair sample: the file is not shuffled
    lines = []
    for i in range(n):
        puid = f"p{i}"
        lines.append({"kind": "prediction", "time": t0 + i, "predictor": "m-a", "puid": puid, "protocol": "seldon",
                      "request": {"data": {"names": names, "ndarray": [data.data[order[i]].tolist()]}},
                      "response": {"data": {"names": ["0", "1"], "ndarray": [[0.1, 0.9]]}}})  # fmt: skip
        truth = 1 if i < right else 0
        lines.append(
            {"kind": "feedback", "time": t0 + i + 0.5, "puid": puid, "truth": {"data": {"ndarray": [truth]}}}
        )
    directory.mkdir()
    (directory / "predictions-20260101T000000Z-1-0001.jsonl").write_bytes(
        b"".join(orjson.dumps(x) + b"\n" for x in lines)
    )
    return directory


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_scratch(tmp_path_factory.mktemp("trig") / "repo").root


def settings(repo: Path, log: Path, **kw: object) -> LoopSettings:
    base = {"thresholds": Thresholds(min_records=50, min_labels=20), "min_new_labels": 20}
    return LoopSettings(repo=repo, log_dir=log, **{**base, **kw})  # type: ignore[arg-type]


def test_nothing_fires_on_healthy_traffic(scratch: Path, tmp_path: Path) -> None:
    log = log_of(tmp_path / "log", 100, right=95)
    outcome = next_step(
        settings(scratch, log, thresholds=Thresholds(min_records=50, min_labels=20, accuracy=0.8))
    )
    assert outcome.step == "waiting" and "no trigger" in outcome.detail
    assert progress(scratch).step is None


def test_accuracy_under_the_threshold_commits_a_data_version(tmp_path: Path) -> None:
    repo = make_scratch(tmp_path / "repo").root
    log = log_of(tmp_path / "log", 100, right=60)
    low = settings(repo, log, thresholds=Thresholds(min_records=50, min_labels=20, accuracy=0.8))
    few = settings(repo, log, thresholds=low.thresholds, min_new_labels=101)
    waiting = next_step(few)
    assert waiting.step == "waiting" and "only 100 newly labelled rows" in waiting.detail
    outcome = next_step(low)
    assert outcome.step == "data", outcome.detail
    assert "live accuracy 0.600 < 0.8 on 100 labels" in outcome.detail
    p = progress(repo)
    assert p.step == "data" and p.until == pytest.approx(1099.0)


def test_the_schedule_fires_without_drift(tmp_path: Path) -> None:
    repo = make_scratch(tmp_path / "repo").root
    log = log_of(tmp_path / "log", 60, right=60)
    assert next_step(settings(repo, log, retrain_every=10 * 86400.0)).step == "waiting"
    outcome = next_step(settings(repo, log, retrain_every=1.0), now=4.0e9)
    assert outcome.step == "data" and "schedule:" in outcome.detail


def test_a_retrain_the_pipeline_refuses_is_recorded_and_not_retried_on_the_same_rows(tmp_path: Path) -> None:
    """`dvc repro` stops (here: the validate stage wants more rows than there are): the retrain is recorded as
    rejected with the reason, and the same labelled rows never start another one."""
    repo = make_scratch(tmp_path / "repo")
    params = repo.root / "params.yaml"
    params.write_text(params.read_text().replace("min_rows: 400", "min_rows: 100000"))
    repo.git("commit", "-qam", "a stricter validation")
    log = log_of(tmp_path / "log", 60, right=30)
    s = settings(repo.root, log, thresholds=Thresholds(min_records=50, min_labels=20, accuracy=0.9))
    assert next_step(s).step == "data"
    outcome = next_step(s)
    assert outcome.step == "rejected" and outcome.detail.startswith("dvc repro failed")
    p = progress(repo.root)
    assert p.step == "rejected" and not p.open
    again = next_step(s)
    assert again.step == "waiting" and "only 0 newly labelled rows" in again.detail
