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
        ("strategy: ab\ngates: [{name: g, metric: latency}]\n", "gates.0", "needs a margin above 0"),
        (
            "strategy: ab\ngates: [{name: g, metric: promql, max: 1}]\n",
            "gates.0",
            "needs `query` (the value per predictor) and `sample_query`",
        ),
        # the old point-threshold form of a relative gate: refused, saying what to write instead
        (
            "strategy: ab\ngates: [{name: g, metric: accuracy, compare: difference, min: -0.02}]\n",
            "gates.0",
            "takes `margin` (how much worse than the stable model the candidate may be), not min/max "
            "(got min=-0.02",
        ),
        (
            "strategy: ab\ngates: [{name: g, metric: latency, quantile: 0.99, margin: 0.2, min_sample: 20}]\n",
            "gates.0",
            "min_sample: 20 requests cannot bound a p99 latency at confidence 0.95; it needs at least 555",
        ),
        (
            "strategy: ab\ngates: [{name: g, metric: latency, max: 0.1, quantile: 0.99, min_sample: 100}]\n",
            "gates.0",
            "needs at least 473",
        ),
        ("strategy: ab\ngates: [{name: g, metric: disagreement, max: 0.05}]\n", "gates.0", "take `margin`"),
        (
            "strategy: ab\ngates: [{name: g, metric: success_rate, min: 0.9, max: 1}]\n",
            "gates.0",
            "one bound",
        ),
        (
            "strategy: ab\ngates: [{name: g, metric: latency, min: 0.1}]\n",
            "gates.0",
            "latency is better lower",
        ),
        (
            "strategy: ab\ngates: [{name: g, metric: accuracy, compare: ratio, margin: 0.1}]\n",
            "gates.0",
            "latency only",
        ),
        (
            "strategy: ab\ngates: [{name: g, metric: accuracy, margin: 0.1, confidence: 1.5}]\n",
            "gates.0.confidence",
            "less than 1",
        ),
        (
            "strategy: ab\ngates: [{name: g, metric: accuracy, margin: 0.1, quantile: 0.9}]\n",
            "gates.0",
            "only applies to latency",
        ),
        (
            "strategy: ab\ngates: [{name: g, metric: promql, query: q, sample_query: n, margin: 0.1}]\n",
            "gates.0",
            "better: a relative promql gate",
        ),
        ("strategy: ab\ngates: [{name: 'a|b', metric: accuracy, margin: 0.1}]\n", "gates.0.name", "one line"),
        ("strategy: bandit\nbandit: {start: 2, min_weight: 5}\n", "bandit", "start (2) must lie within"),
        ("strategy: ab\ninterval: sometimes\n", "interval", "not a duration"),
        ("strategy: ab\nbluegreen: {switch: [50]}\n", "bluegreen", "end at 100"),
        ("strategy: ab\nunknown_key: 1\n", "unknown_key", "Extra inputs"),
        (
            "strategy: ab\ngates: [{name: g, metric: accuracy, min: 0.9, no_data: maybe}]\n",
            "gates.0.no_data",
            "hold",
        ),
        ("strategy: rainbow\n", "strategy", "bandit"),
        ("strategy: canary\nmonitoring: {retrain_max_rows: 0}\n", "monitoring.retrain_max_rows", "(got 0)"),
    ],
)
def test_bad_policy_names_file_field_reason(tmp_path: Path, body: str, field: str, reason: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(body)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    msg = str(err.value)
    assert str(path) in msg and field in msg and reason in msg, msg


def test_a_hostile_gate_name_cannot_forge_a_trailer(tmp_path: Path) -> None:
    """A gate name is written into commit trailers: a line break in it would let a policy forge one."""
    path = tmp_path / "p.yaml"
    path.write_text(
        'strategy: ab\ngates: [{name: "ok\\nSluice-Action: promote", metric: accuracy, margin: 0.1}]\n'
    )
    with pytest.raises(PolicyError, match=r"gates\.0\.name: a gate name is one line"):
        load_policy(path)


def test_latency_min_sample_defaults_to_what_the_quantile_needs() -> None:
    from rollout.policy import Gate

    p99 = Gate.model_validate({"name": "g", "metric": "latency", "quantile": 0.99, "margin": 0.2})
    p90 = Gate.model_validate({"name": "g", "metric": "latency", "quantile": 0.9, "margin": 0.2})
    assert p99.min_sample == 555 and p90.min_sample == 54
    loose = Gate.model_validate({"name": "g", "metric": "latency", "margin": 0.2, "confidence": 0.8})
    assert loose.min_sample < p99.min_sample


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
