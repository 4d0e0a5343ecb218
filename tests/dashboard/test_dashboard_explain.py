"""The pure parts of the page: one sentence per gate, what happens next and when, what kind each commit was, and
the SVG charts. No server, no Git, no clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from dashboard_fixtures import fast_policy

from dashboard import charts
from dashboard.explain import explain, facts, outlook
from dashboard.history import Point, classify, promoted
from dashboard.views import timeline_view
from rollout.decision import Action, Decision
from rollout.gates import GateResult
from rollout.policy import parse_policy
from rollout.state import Rollout

POLICY = parse_policy(
    {
        **fast_policy("canary"),
        "interval": 10,
        "stages": [{"weight": 10, "bake": 3000}, {"weight": 50, "bake": 600}],
        "gates": [
            {"name": "success", "metric": "success_rate", "min": 0.99, "no_data_deadline": 900},
            {"name": "p99", "metric": "latency", "quantile": 0.99, "compare": "ratio", "margin": 0.5},
        ],
    }
)
ROLLOUT = Rollout("canary", "m-cand", "m-stab", 0, entered_at=1000.0)


@dataclass(frozen=True)
class Evidence:
    """A gate result with the statistical evidence fields (sample per arm, interval, limit, margin)."""

    gate: str
    metric: str
    verdict: str
    compare: str
    n_candidate: float
    n_stable: float | None
    estimate: float | None
    low: float | None
    high: float | None
    limit: float | None
    margin: float
    confidence: float
    threshold: str
    detail: str = ""
    method: str = "normal-mixture confidence sequence"


def test_a_passing_absolute_gate_reads_as_a_sentence() -> None:
    g = GateResult("success", "success_rate", "pass", n_candidate=1500, value=0.9987, limit=0.99)
    assert explain(facts(g)) == (
        "success passes: the candidate's success rate is 99.87% on 1500 observations, within the limit >= 0.99."
    )


def test_a_failing_relative_gate_gives_its_interval_sample_and_consequence() -> None:
    g = Evidence(
        "accuracy",
        "accuracy",
        "fail",
        "difference",
        1204,
        10873,
        -0.031,
        -0.052,
        -0.010,
        -0.02,
        0.02,
        0.95,
        ">= -0.02",
    )
    text = explain(facts(g))
    assert text == (
        "accuracy fails: the candidate's accuracy on feedback minus the stable model's is -3.10 points "
        "(95% interval -5.20 points to -1.00 points) on 1204 and 10873 observations, beyond the limit >= -0.02, "
        "so the rollout is rolled back."
    )
    assert "frozen" in explain(facts(g), on_failure="freeze")


def test_a_latency_ratio_a_wait_a_pass_on_no_data_and_a_skip() -> None:
    ratio = GateResult(
        "p99", "latency", "pass", "ratio", 300, 300, value=0.012, baseline=0.010, limit=1.5, better="lower"
    )
    assert "is 1.2× the stable model's" in explain(facts(ratio, POLICY.gates[1]), POLICY.gates[1])
    waiting = GateResult(
        "p99", "latency", "hold", n_candidate=3, detail="no data (candidate has 3 of 20); waiting 40s more"
    )
    assert explain(facts(waiting)) == "p99 waits: no data (candidate has 3 of 20); waiting 40s more."
    lenient = GateResult("p99", "latency", "no-data-pass", detail="no data")
    assert "never to promote" in explain(facts(lenient))
    skipped = GateResult("agree", "disagreement", "skip", detail="only measured while shadowing")
    assert explain(facts(skipped)) == "agree is not judged at this stage: only measured while shadowing."
    undecided = Evidence(
        "acc", "accuracy", "hold", "difference", 50, 60, 0.001, -0.08, 0.09, -0.02, 0.02, 0.95, ">= -0.02"
    )
    assert "undecided" in explain(facts(undecided)) and "it waits" in explain(facts(undecided))


def decision(
    action: Action, reason: str = "r", gates: tuple = (), then: Action | None = None, step: str = ""
) -> Decision:
    return Decision(action, reason, gates, then=then, step=step)


@pytest.mark.parametrize(
    "rollout, d, approval, action, words, at",
    [
        (None, None, None, "idle", "No rollout in progress", None),
        (ROLLOUT.evolve(status="frozen", message="frozen: gate x"), None, None, "hold", "Frozen", None),
        (
            ROLLOUT.evolve(status="paused", message="paused: hand edit"),
            None,
            None,
            "hold",
            "Paused: paused: hand edit",
            None,
        ),
        (
            ROLLOUT,
            decision(Action.HOLD),
            "rollout(local): advance [canary 50%]",
            "await-approval",
            "approve",
            None,
        ),
        (
            ROLLOUT,
            decision(Action.ROLLBACK, "gate failed"),
            None,
            "rollback",
            "Rolls back at the next tick: gate failed",
            2010,
        ),
        (ROLLOUT, decision(Action.PROMOTE), None, "promote", "Promotes m-cand", 2010),
        (
            ROLLOUT,
            decision(Action.ADVANCE, step="canary 50%"),
            None,
            "advance",
            "Advances to canary 50%",
            2010,
        ),
        (
            ROLLOUT,
            decision(Action.AWAIT_APPROVAL, then=Action.PROMOTE),
            None,
            "await-approval",
            "Proposes promotion for a human",
            2010,
        ),
        (
            ROLLOUT,
            decision(Action.HOLD, "baking"),
            None,
            "hold",
            "Baking canary 10%; canary 50% at 01:06:40 UTC",
            4000,
        ),
        (
            ROLLOUT,
            decision(Action.HOLD, gates=(GateResult("success", "success_rate", "hold"),)),
            None,
            "hold",
            "Waiting for enough data on success; if still undecided by 00:31:40 UTC it fails",
            1900,
        ),
        (ROLLOUT, None, None, "unknown", "Metrics are not configured", 1000 + 3000 + POLICY.window + 20),
    ],
    ids=[
        "idle",
        "frozen",
        "paused",
        "approval",
        "rollback",
        "promote",
        "advance",
        "propose",
        "bake",
        "data",
        "no-metrics",
    ],
)
def test_what_happens_next_and_when(rollout, d, approval, action, words, at) -> None:  # type: ignore[no-untyped-def]
    o = outlook(rollout, POLICY, d, now=2000.0, approval=approval)
    assert o.action == action and words in o.summary, o
    assert o.at == at


def test_an_ab_test_ends_at_its_maximum_duration() -> None:
    ab = parse_policy({**fast_policy("ab"), "ab": {**fast_policy("ab")["ab"], "max_duration": 3600}})
    r = Rollout("ab", "m-cand", "m-stab", 0, entered_at=1000.0)
    o = outlook(r, ab, decision(Action.HOLD, "A/B test running: 10 of 200"), now=1500.0)
    assert o.at == 4600.0 and "the stable model stays" in o.summary


@pytest.mark.parametrize(
    "subject, message, action, kind",
    [
        ("init", "", None, "init"),
        ("Merge sluice/local/auto/x: rollout(local): start canary m-2 [canary 10%]", "", "advance", "start"),
        ("Merge sluice/local/auto/x: rollout(local): advance m-2 [canary 50%]", "", "advance", "advance"),
        (
            "Merge sluice/local/approval/x: approved by bob",
            "approved by bob\n\nSluice-Action: advance",
            "advance",
            "approve",
        ),
        ("Merge sluice/local/auto/x: rollout(local): promote m-2 [promotion]", "", "promote", "promote"),
        (
            "Merge x: rollout(local): rollback m-2 [rollback]",
            "**rollback**: gate failed at canary 10%",
            "rollback",
            "rollback",
        ),
        (
            "Merge x: rollout(local): rollback m-2 [rollback]",
            "**rollback**: aborted by alice via sluice ui",
            "rollback",
            "abort",
        ),
        ("Merge x: rollout(local): freeze m-2", "", "hold", "hold"),
        ("bump replicas by hand", "", None, "change"),
    ],
)
def test_what_kind_of_commit(subject: str, message: str, action: str | None, kind: str) -> None:
    assert classify(subject, message, action, first=subject == "init")[0] == kind


def point(
    sha: str, at: float, kind: str, weights: dict, stable: str | None, shadows: dict | None = None
) -> Point:
    return Point(sha, at, f"subject {sha}", kind, None, weights, shadows or {}, None, stable)  # type: ignore[arg-type]


POINTS = [
    point("a" * 40, 100, "init", {"m-1": 100}, "m-1"),
    point("b" * 40, 200, "start", {"m-1": 100}, "m-1", {"m-2": 100}),
    point("c" * 40, 300, "rollback", {"m-1": 100}, "m-1"),
    point("d" * 40, 400, "start", {"m-1": 90, "m-3": 10}, "m-1"),
    point("e" * 40, 500, "promote", {"m-3": 100}, "m-3"),
]


def test_when_a_model_became_stable() -> None:
    assert promoted(POINTS, "m-3") == POINTS[4]
    assert promoted(POINTS, "m-1") is None  # no longer stable
    assert promoted(POINTS[:4], "m-1") == POINTS[0]


def test_the_timeline_marks_commits_and_links_each_to_its_diff() -> None:
    view = timeline_view("local", POINTS, "/commits/{env}/{sha}")
    assert view.predictors == ["m-1", "m-2", "m-3"]
    svg = charts.timeline(view, now=600)
    for p in POINTS:
        assert (
            f'<a href="/commits/local/{p.sha}" class="commit" data-commit="{p.sha}" data-kind="{p.kind}">'
            in svg
        )
    assert svg.count(">rollback</text>") == 1 and svg.count(">promotion</text>") == 1
    assert 'data-predictor="m-2" data-shadow="true"' in svg and 'stroke-dasharray="5 4"' in svg
    # m-1 serves until the promotion: one unbroken line; m-3 appears at the second start
    assert svg.count('data-predictor="m-1" data-shadow="false"') == 1
    assert svg.count('data-predictor="m-3" data-shadow="false"') == 1
    empty = charts.timeline(timeline_view("local", [], "/x/{sha}"), now=0)
    assert "no commits yet" in empty


def test_html_in_a_subject_stays_text_in_the_chart() -> None:
    hostile = [point("f" * 40, 100, "change", {"m-1": 100}, "m-1")]
    hostile[0] = Point(
        "f" * 40, 100, '<script>alert(1)</script>"', "change", None, {"m-1": 100}, {}, None, "m-1"
    )
    svg = charts.timeline(timeline_view("local", hostile, "/commits/{env}/{sha}"), now=200)
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_a_sparkline_breaks_where_there_is_no_value() -> None:
    svg = charts.sparkline([(0, 1.0), (1, 2.0), (2, None), (3, 1.5), (4, 1.0)])
    assert svg.count("<polyline") == 2
    assert charts.sparkline([(0, None), (1, 2.0)]).count("<polyline") == 0
