"""What starts a retrain, up to its data commit (real git, real `dvc add`, no training): live accuracy under the
policy's threshold, the schedule, and nothing when neither fires or too few rows are labelled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from monitor import loop
from monitor.assess import Thresholds
from monitor.loop import LoopSettings, next_step, progress

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from scratch_repo import make_scratch

pytestmark = pytest.mark.slow


def log_of(
    directory: Path,
    n: int,
    right: int | None = None,
    t0: float = 1000.0,
    shift: dict[str, float] | None = None,
    corrupt: Callable[[int, list[str], Any], None] | None = None,
) -> Path:
    """n predictions of class 1 on breast-cancer rows drawn at random, each labelled: `right` of the labels agree
    with the prediction, or (right None) each row's true label. `shift` adds to features (drift); `corrupt(i,
    names, row)` may break row i."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = [str(c).replace(" ", "_") for c in data.feature_names]
    order = np.random.default_rng(1).permutation(len(data.data))  # a fair sample: the file is not shuffled
    lines = []
    for i in range(n):
        puid = f"p{i}"
        x = data.data[order[i]].copy()
        for feature, by in (shift or {}).items():
            x[names.index(feature)] += by
        if corrupt is not None:
            corrupt(i, names, x)
        lines.append({"kind": "prediction", "time": t0 + i, "predictor": "m-a", "puid": puid, "protocol": "seldon",
                      "request": {"data": {"names": names, "ndarray": [x.tolist()]}},
                      "response": {"data": {"names": ["0", "1"], "ndarray": [[0.1, 0.9]]}}})  # fmt: skip
        label = int(data.target[order[i]])
        truth = (1 if i < right else 0) if right is not None else label
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


DRIFT = {"mean_concave_points": 0.08}  # two standard deviations: the client's instrument was recalibrated


def trailers(repo: Path, key: str) -> list[str]:
    out = subprocess.run(["git", "log", f"--format=%(trailers:key={key},valueonly)", "HEAD"], cwd=repo,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return [line.strip() for line in out.splitlines() if line.strip()]


@pytest.fixture
def pipeline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`dvc repro`'s stages as the scratch repository runs them (its own registry and cache)."""
    for key in [k for k in os.environ if k.startswith(("MLFLOW_", "DVC_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("SLUICE_CACHE", str(tmp_path / "cache"))


def test_a_drifted_live_version_trains_under_the_default_validation(
    tmp_path: Path, pipeline_env: None
) -> None:
    """The template's own params.yaml (quantile_tolerance 0.25): the drift that triggered the retrain is in its
    data, and the validate stage lets it through because the data commit re-profiled the reference."""
    repo = make_scratch(tmp_path / "repo").root
    contract = (repo / "contract.yaml").read_text()
    log = log_of(tmp_path / "log", 400, shift=DRIFT)
    s = settings(repo, log)
    data = next_step(s)
    assert data.step == "data" and "feature mean_concave_points drifted" in data.detail, data.detail
    [said] = trailers(repo, "Sluice-Retrain-Reference")
    assert said.startswith("reference re-profiled from live data, 969 rows (400 live), drift scores ")
    assert "mean_concave_points PSI " in said
    changed = subprocess.run(["git", "show", "--stat", "--format=", "HEAD"], cwd=repo, capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
    assert "contract.yaml" in changed
    moved = yaml.safe_load((repo / "contract.yaml").read_text())
    old = yaml.safe_load(contract)
    feature = next(f for f in moved["features"] if f["name"] == "mean_concave_points")
    before = next(f for f in old["features"] if f["name"] == "mean_concave_points")
    assert feature["bounds"] == before["bounds"] and feature["type"] == "numeric"
    assert feature["reference"]["quantiles"][0.75] > before["reference"]["quantiles"][0.75] + 0.03
    trained = next_step(s)
    assert trained.step == "trained", trained.detail
    validation = json.loads((repo / "reports" / "metrics" / "validation.json").read_text())
    assert validation["success"] and validation["rows"] == 969


def test_the_same_drift_is_refused_without_reprofiling(tmp_path: Path, pipeline_env: None) -> None:
    """What the re-profiling is for: the same data version against the template's reference is refused."""
    repo = make_scratch(tmp_path / "repo").root
    s = settings(repo, log_of(tmp_path / "log", 400, shift=DRIFT), reprofile=False)
    assert next_step(s).step == "data"
    refused = next_step(s)
    assert refused.step == "rejected", refused.detail
    assert "failed on column 'mean_concave_points'" in refused.detail, refused.detail
    assert "expect_column_quantile_values_to_be_between" in refused.detail


def test_a_broken_live_version_is_refused_by_name_and_reverted(
    tmp_path: Path, pipeline_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some clients send mean_area in the wrong unit (99999, beyond its physical bounds; serving takes any finite
    number): the validate stage refuses the data version naming file, column and value, and the refusal reverts
    it, so the next retrain starts from the last good data instead of on top of the broken rows. A loop that dies
    between the revert and its record converges on the rerun: one refusal, one revert."""

    def wrong_unit(i: int, names: list[str], row: Any) -> None:
        if i % 50 == 7:
            row[names.index("mean_area")] = 99999.0

    repo = make_scratch(tmp_path / "repo").root
    params, contract = (repo / "params.yaml").read_text(), (repo / "contract.yaml").read_text()
    log = log_of(tmp_path / "log", 400, shift=DRIFT, corrupt=wrong_unit)
    s = settings(repo, log)
    assert next_step(s).step == "data"
    assert (repo / "data" / "source" / "live.csv").exists()

    class Died(Exception):
        pass

    def die_after(step: str) -> None:
        if step == "reverted":
            raise Died(step)

    # Dies once with the revert staged and the refusal not recorded yet (as `kill -9` would leave it).
    with monkeypatch.context() as m:
        m.setattr(loop, "_die_after", die_after)
        with pytest.raises(Died):
            next_step(s)
    assert progress(repo).step == "data"
    refused = next_step(s)
    assert refused.step == "rejected", refused.detail
    assert "the validate stage refused data/source/live.csv" in refused.detail
    assert (
        "expect_column_values_to_be_between failed on column 'mean_area': observed [99999.0" in refused.detail
    )
    assert "8 unexpected values" in refused.detail
    [reverted] = trailers(repo, "Sluice-Retrain-Reverted")
    assert trailers(repo, "Sluice-Retrain-Step") == ["rejected", "data"]
    assert len(reverted) == 40
    assert (repo / "params.yaml").read_text() == params and (repo / "contract.yaml").read_text() == contract
    assert not (repo / "data" / "source" / "live.csv.dvc").exists()
    assert not (repo / "data" / "source" / "live.csv").exists()
    status = subprocess.run(["git", "status", "--porcelain", "--", "params.yaml", "contract.yaml", "data/source"],
                            cwd=repo, capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert status == ""
    assert progress(repo).step == "rejected"
    again = next_step(s)
    assert again.step == "waiting" and "only 0 newly labelled rows" in again.detail


def test_a_data_version_keeps_the_newest_rows_up_to_the_policys_maximum(tmp_path: Path) -> None:
    """monitoring.retrain_max_rows: a loop that runs for months trains on a window, not on every row it ever
    saw. The oldest rows go first, the fresh ones stay, and the commit says how many were dropped."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    repo = make_scratch(tmp_path / "repo").root
    log = log_of(tmp_path / "log", 100, shift=DRIFT)
    outcome = next_step(settings(repo, log, max_rows=300))
    assert outcome.step == "data", outcome.detail
    assert "300 rows in all, the oldest 369 dropped: monitoring.retrain_max_rows is 300;" in outcome.detail
    live = pd.read_csv(repo / "data" / "source" / "live.csv")
    assert len(live) == 300
    data = load_breast_cancer()
    source_area = data.data[:, list(data.feature_names).index("mean area")]
    order = np.random.default_rng(1).permutation(len(data.data))  # the rows log_of drew, in its order
    assert np.allclose(live["mean_area"].to_numpy()[:200], source_area[-200:])  # the newest of the source
    assert np.allclose(live["mean_area"].to_numpy()[200:], source_area[order[:100]])  # every live row
    subject = subprocess.run(
        ["git", "log", "-1", "--format=%s"], cwd=repo, capture_output=True, text=True
    ).stdout
    assert subject.strip() == (
        "Retrain data: 100 labelled live rows (300 in all, the oldest 369 dropped: monitoring.retrain_max_rows is 300)"
    )
