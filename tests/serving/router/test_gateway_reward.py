"""The gateway counts feedback by the predictor core's rules: one message cannot outweigh the others."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from gateway_harness import RunningRuntime, metric_samples, predictor, v1_body

pytestmark = pytest.mark.timeout(120)
PREDICT = "/api/v1.0/predictions"
FEEDBACK = "/api/v1.0/feedback"


def test_a_reward_outside_the_accuracy_range_is_refused_and_not_counted(
    up: Callable[..., RunningRuntime], fake_uri: Path
) -> None:
    rt = up([predictor("m-a", 100, fake_uri)])
    with httpx.Client(base_url=rt.url) as c:
        answer = c.post(PREDICT, json=v1_body()).json()
        assert c.post(FEEDBACK, json={"response": answer, "reward": 1.0}).status_code == 200
        for hostile in (1e12, -1.0, 1.5, "1"):
            r = c.post(FEEDBACK, json={"response": answer, "reward": hostile})
            assert r.status_code == 400, r.text
            assert "reward" in r.text
        text = c.get("/metrics").text
    rewards = metric_samples(text, "seldon_api_model_feedback_reward_total")
    counts = metric_samples(text, "seldon_api_model_feedback_total")
    assert [v for _, v in rewards] == [1.0] and [v for _, v in counts] == [1.0]
