"""The policy schema: good files load, bad ones are refused naming the file, the field and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from rollout.policy import PolicyError, load_policy, parse_duration

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("env", ["local", "staging", "production"])
def test_shipped_policies_load(env: str) -> None:
    policy = load_policy(REPO / "policies" / f"{env}.yaml")
    assert policy.gates and policy.interval > 0


@pytest.mark.parametrize(
    ("text", "expected"), [(5, 5.0), ("30s", 30.0), ("1.5m", 90.0), ("2h", 7200.0), ("250ms", 0.25)]
)
def test_durations(text: object, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["soon", "-3s", -1, True, "5 weeks"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ("strategy: rainbow\n", "strategy", "canary"),
        ("strategy: canary\n", "stages", "at least one canary stage"),
        ("strategy: canary\nstages: [{weight: 50}, {weight: 10}]\n", "stages", "rise strictly"),
        ("strategy: canary\nstages: [{weight: 150}]\n", "stages.0.weight", "less than or equal to 100"),
        (
            "strategy: ab\ngates: [{name: g, metric: latency}]\n",
            "gates.0",
            "needs a threshold",
        ),
        ("strategy: ab\ngates: [{name: g, metric: promql, max: 1}]\n", "gates.0", "needs `query`"),
        ("strategy: ab\ninterval: sometimes\n", "interval", "not a duration"),
        ("strategy: ab\nbluegreen: {switch: [50]}\n", "bluegreen", "end at 100"),
        ("strategy: ab\nunknown_key: 1\n", "unknown_key", "Extra inputs"),
        (
            "strategy: ab\ngates: [{name: g, metric: accuracy, min: 0.9, no_data: maybe}]\n",
            "gates.0.no_data",
            "hold",
        ),
    ],
)
def test_bad_policy_names_file_field_reason(tmp_path: Path, body: str, field: str, reason: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(body)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    msg = str(err.value)
    assert str(path) in msg and field in msg and reason in msg, msg


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no such policy file"):
        load_policy(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("strategy: [canary\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- canary\n")
    with pytest.raises(PolicyError, match="mapping"):
        load_policy(tmp_path / "list.yaml")


def test_with_strategy_revalidates(tmp_path: Path) -> None:
    policy = load_policy(REPO / "policies" / "local.yaml")
    assert policy.with_strategy("bluegreen").strategy == "bluegreen"
    with pytest.raises(PolicyError, match="unknown strategy"):
        policy.with_strategy("yolo")
    ab_only = load_policy(_write(tmp_path, "strategy: ab\n"))
    with pytest.raises(PolicyError, match="stages"):
        ab_only.with_strategy("canary")


def _write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "x.yaml"
    p.write_text(body)
    return p
