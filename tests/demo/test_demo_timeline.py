"""Act 5's timeline: the time from drift onset to 100 % in production, and the five parts it is reported in."""

from __future__ import annotations

import pytest

from demo.act5 import Timeline


def full() -> Timeline:
    return Timeline(
        drift_onset=100.0,
        detected=109.5,
        data_committed=109.5,
        trained=170.0,
        staging_opened=170.6,
        staging_promoted=190.0,
        production_opened=190.2,
        approval_requested=201.0,
        approved=203.5,
        production_promoted=203.6,
        production_serving=205.0,
    )


def test_the_parts_add_up_to_the_time_from_onset_to_production() -> None:
    t = full()
    assert t.total == pytest.approx(105.0)
    assert t.parts() == {
        "detection": pytest.approx(9.5),
        "retrain": pytest.approx(60.5),
        "staging_rollout": pytest.approx(20.0),
        "approval_wait": pytest.approx(2.5),
        "production_rollout": pytest.approx(12.5),  # 15 s from staging's promotion, less the approval wait
    }
    assert sum(v for v in t.parts().values() if v is not None) == pytest.approx(t.total)


def test_a_run_that_stopped_early_reports_what_it_measured_and_no_total() -> None:
    t = Timeline(drift_onset=100.0, detected=112.0, trained=180.0)
    assert t.total is None
    parts = t.parts()
    assert parts["detection"] == pytest.approx(12.0) and parts["retrain"] == pytest.approx(68.0)
    assert parts["staging_rollout"] is None and parts["approval_wait"] is None
    assert parts["production_rollout"] is None


def test_the_plot_marks_each_event_that_happened_in_order() -> None:
    labels = [label for _, label in full().events()]
    assert labels == [
        "drift onset", "drift detected", "data version committed", "retrained", "promoted in staging",
        "production approved", "100 % in production",
    ]  # fmt: skip
    assert [label for _, label in Timeline(drift_onset=1.0, detected=2.0).events()] == [
        "drift onset",
        "drift detected",
    ]
