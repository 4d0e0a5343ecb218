"""The router over real HTTP, in front of real (small) predictor servers started by the runtime."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from up_harness import FakeCommand, RunningRuntime, metric_samples, predictor, v1_body, write_manifest

from serving.router.executor_metrics import CLIENT_LABELS, FEEDBACK_LABELS, SERVER_LABELS

pytestmark = pytest.mark.timeout(120)
PREDICT = "/api/v1.0/predictions"
INFER = "/v2/models/classifier/infer"
V2_BODY = {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP64", "data": [0.0] * 30}]}


def stats(rt: RunningRuntime, name: str) -> dict[str, int]:
    port = next(r["port"] for r in rt.runtime.snapshot() if r["name"] == name)
    counts: dict[str, int] = httpx.get(f"http://127.0.0.1:{port}/fake/stats").json()["counts"]
    return counts


def metrics(rt: RunningRuntime, name: str) -> list[tuple[dict[str, str], float]]:
    return metric_samples(rt.metrics(), name)


def test_split_proportions_over_both_protocols(up: Callable[..., RunningRuntime], fake_uri: Path) -> None:
    rt = up([predictor("m-a", 70, fake_uri), predictor("m-b", 30, fake_uri)])
    n = 400
    seen: Counter[str] = Counter()
    with httpx.Client(base_url=rt.url) as c:
        for i in range(n):
            r = c.post(PREDICT, json=v1_body()) if i % 2 else c.post(INFER, json=V2_BODY)
            assert r.status_code == 200, r.text
            assert r.headers["x-sluice-predictor"] == r.headers["x-fake-name"]  # says who really answered
            seen[r.headers["x-sluice-predictor"]] += 1
    sd = (n * 0.3 * 0.7) ** 0.5
    assert abs(seen["m-b"] - 0.3 * n) < 4.5 * sd, seen
    assert seen["m-a"] + seen["m-b"] == n
    # Each predictor process saw exactly what the router says it sent.
    assert sum(stats(rt, "m-b").get(p, 0) for p in (PREDICT, INFER)) == seen["m-b"]


def test_v1_answers_name_the_predictor_in_meta_and_keep_the_puid(
    up: Callable[..., RunningRuntime], fake_uri: Path
) -> None:
    rt = up([predictor("m-a", 100, fake_uri)])
    r = httpx.post(rt.url + PREDICT, json=v1_body(), headers={"seldon-puid": "abc123"})
    body = r.json()
    assert body["meta"]["tags"]["sluice_predictor"] == "m-a"
    assert body["meta"]["puid"] == "abc123" == r.headers["seldon-puid"]
    assert body["data"]["ndarray"] == [[0.2, 0.8]]  # the model's answer untouched
    generated = {httpx.post(rt.url + PREDICT, json=v1_body()).json()["meta"]["puid"] for _ in range(3)}
    assert len(generated) == 3 and all(generated)


def test_shadow_gets_copies_its_answers_are_dropped_and_it_does_not_slow_the_caller(
    up: Callable[..., RunningRuntime], fake_uri: Path
) -> None:
    command = FakeCommand()
    command.behaviour["m-shadow"] = ["--label", "0", "--delay", "0.5"]  # slow, and always disagrees
    rt = up(
        [predictor("m-live", 100, fake_uri), predictor("m-shadow", 0, fake_uri, shadow=True)], command=command
    )
    n = 12
    with httpx.Client(base_url=rt.url) as c:
        started = time.perf_counter()
        for _ in range(n):
            r = c.post(PREDICT, json=v1_body())
            assert r.status_code == 200
            assert r.headers["x-sluice-predictor"] == "m-live" == r.headers["x-fake-name"]
            assert r.json()["data"]["ndarray"] == [[0.2, 0.8]]  # the live answer (the shadow says class 0)
        elapsed = time.perf_counter() - started
    # Twelve sequential calls behind a 0.5 s shadow: a router that waited for it would need 6 s.
    assert elapsed < 0.5 * n / 2, elapsed
    rt.wait_for(lambda: stats(rt, "m-shadow").get(PREDICT, 0) == n, what="all copies mirrored")
    rt.wait_for(
        lambda: sum(v for _, v in metrics(rt, "sluice_shadow_comparisons_total")) == n, what="comparisons"
    )
    disagreements = metrics(rt, "sluice_shadow_disagreements_total")
    assert disagreements == [
        ({"namespace": "sluice", "deployment_name": "sd", "predictor_name": "m-shadow"}, float(n))
    ]
    shadow_server = [
        v
        for labels, v in metrics(rt, "seldon_api_executor_server_requests_seconds_count")
        if labels["predictor_name"] == "m-shadow"
    ]
    assert shadow_server == [float(n)]


def test_shadow_that_agrees_counts_no_disagreement_and_a_full_queue_drops(
    up: Callable[..., RunningRuntime], fake_uri: Path
) -> None:
    command = FakeCommand()
    command.behaviour["m-shadow"] = ["--delay", "1.0"]
    rt = up(
        [predictor("m-live", 100, fake_uri), predictor("m-shadow", 0, fake_uri, shadow=True)],
        command=command,
        mirror_bytes=2 * 700,  # room for about one queued copy of these requests
    )
    with httpx.Client(base_url=rt.url) as c:
        for _ in range(30):
            assert c.post(PREDICT, json=v1_body()).status_code == 200

    def dropped() -> float:
        return sum(v for _, v in metrics(rt, "sluice_shadow_dropped_total"))

    # Every copy is either sent to the shadow or counted as dropped; a slow shadow drops most.
    rt.wait_for(lambda: stats(rt, "m-shadow").get(PREDICT, 0) + dropped() == 30, what="copies accounted for")
    assert dropped() >= 10
    rt.wait_for(
        lambda: sum(v for _, v in metrics(rt, "sluice_shadow_comparisons_total")) == 30 - dropped(),
        what="every sent copy compared",
    )
    assert all(v == 0 for _, v in metrics(rt, "sluice_shadow_disagreements_total"))


def test_sticky_users_keep_their_predictor(up: Callable[..., RunningRuntime], fake_uri: Path) -> None:
    rt = up([predictor("m-a", 50, fake_uri), predictor("m-b", 50, fake_uri)])
    assigned: dict[str, set[str]] = {}
    with httpx.Client(base_url=rt.url) as c:
        for rnd in range(4):
            for u in range(30):
                user = f"user-{u}"
                r = c.post(PREDICT, json=v1_body(), headers={"x-sluice-user": user})
                assigned.setdefault(user, set()).add(r.headers["x-sluice-predictor"])
                assert rnd >= 0
    assert all(len(v) == 1 for v in assigned.values()), assigned
    assert {next(iter(v)) for v in assigned.values()} == {"m-a", "m-b"}  # pinned, yet split


def test_override_header_picks_the_predictor(up: Callable[..., RunningRuntime], fake_uri: Path) -> None:
    rt = up([predictor("m-a", 100, fake_uri), predictor("m-b", 0, fake_uri)])
    with httpx.Client(base_url=rt.url) as c:
        for header in ({"x-sluice-predictor": "m-b"}, {"x-seldon-route": ":m-b:"}):
            for _ in range(5):
                r = c.post(PREDICT, json=v1_body(), headers=header)
                assert r.headers["x-sluice-predictor"] == "m-b" == r.headers["x-fake-name"]
        assert r.headers["x-seldon-route"] == ":m-b:"  # what a Seldon v2 client sends back to stay
        r = c.post(INFER, json=V2_BODY, headers={"x-sluice-predictor": "m-zzz"})
        assert r.status_code == 404
        assert "unknown predictor 'm-zzz'" in r.json()["error"]
        # A stale Seldon v2 pin is a preference, not a command: routed as if absent.
        r = c.post(INFER, json=V2_BODY, headers={"x-seldon-route": ":m-gone:"})
        assert r.status_code == 200 and r.headers["x-sluice-predictor"] == "m-a"
        assert c.post(PREDICT, json=v1_body()).headers["x-sluice-predictor"] == "m-a"


def test_feedback_goes_to_the_predictor_that_served(
    up: Callable[..., RunningRuntime], fake_uri: Path
) -> None:
    rt = up([predictor("m-a", 50, fake_uri), predictor("m-b", 50, fake_uri)])
    served: Counter[str] = Counter()
    with httpx.Client(base_url=rt.url) as c:
        for i in range(40):
            request = v1_body()
            r = c.post(PREDICT, json=request)
            response = r.json()
            if i % 2:  # by the predictor named in meta, or by the puid alone
                del response["meta"]["tags"]["sluice_predictor"]
            fb = c.post("/api/v1.0/feedback", json={"request": request, "response": response, "reward": 1.0})
            assert fb.status_code == 200, fb.text
            assert fb.headers["x-sluice-predictor"] == r.headers["x-sluice-predictor"]
            served[r.headers["x-sluice-predictor"]] += 1
        bad = c.post("/api/v1.0/feedback", content=b"{not json")
        assert bad.status_code == 400 and "not valid JSON" in bad.json()["status"]["info"]
        gone = {"response": {"meta": {"tags": {"sluice_predictor": "m-old"}}}, "reward": 0}
        assert c.post("/api/v1.0/feedback", json=gone).status_code == 410
    for name in ("m-a", "m-b"):
        assert stats(rt, name).get("/api/v1.0/feedback", 0) == served[name]
    totals = {labels["predictor_name"]: v for labels, v in metrics(rt, "seldon_api_model_feedback_total")}
    rewards = {
        labels["predictor_name"]: v for labels, v in metrics(rt, "seldon_api_model_feedback_reward_total")
    }
    assert totals == {k: float(v) for k, v in served.items()} == rewards


def test_metric_names_and_labels_are_seldons(up: Callable[..., RunningRuntime], fake_uri: Path) -> None:
    rt = up([predictor("m-a", 100, fake_uri), predictor("m-s", 0, fake_uri, shadow=True)])
    with httpx.Client(base_url=rt.url) as c:
        for _ in range(3):
            c.post(PREDICT, json=v1_body())
        c.post(INFER, json=V2_BODY)
        c.post("/api/v1.0/feedback", json={"response": c.post(PREDICT, json=v1_body()).json(), "reward": 0.5})

    def shadow_done() -> bool:
        return any(
            lab["predictor_name"] == "m-s" and lab["service"] == "predictions" and v == 5
            for lab, v in metrics(rt, "seldon_api_executor_server_requests_seconds_count")
        )

    rt.wait_for(shadow_done, what="the shadow's five copies")
    text = rt.metrics()
    server = metric_samples(text, "seldon_api_executor_server_requests_seconds_count")
    assert {tuple(sorted(labels)) for labels, _ in server} == {tuple(sorted(SERVER_LABELS))}
    by = {(lab["predictor_name"], lab["service"], lab["code"]): v for lab, v in server}
    # Seldon's service values: both protocols' predictions are "predictions", feedback is apart.
    assert by[("m-a", "predictions", "200")] == 5
    assert by[("m-a", "feedback", "200")] == 1
    assert by[("m-s", "predictions", "200")] == 5  # the shadow's mirrored copies, under its own name
    assert ("m-s", "feedback", "200") not in by  # feedback is never mirrored
    for lab, _ in server:
        assert lab["namespace"] == "sluice" and lab["deployment_name"] == "sd"
        assert lab["model_name"] == "classifier" and lab["method"] == "POST"
    client = metric_samples(text, "seldon_api_executor_client_requests_seconds_count")
    assert {tuple(sorted(labels)) for labels, _ in client} == {tuple(sorted(CLIENT_LABELS))}
    buckets = metric_samples(text, "seldon_api_executor_server_requests_seconds_bucket")
    assert any(lab.get("le") == "+Inf" for lab, _ in buckets)
    assert metric_samples(text, "seldon_api_executor_server_requests_seconds_sum")
    feedback = metric_samples(text, "seldon_api_model_feedback_total")
    assert [tuple(sorted(lab)) for lab, _ in feedback] == [tuple(sorted(FEEDBACK_LABELS))]
    assert metric_samples(text, "seldon_api_model_feedback_reward_total")[0][1] == 0.5
    assert "sluice_shadow_comparisons_total" in text and "sluice_shadow_disagreements_total" in text


def test_a_failing_candidate_costs_the_caller_nothing(
    up: Callable[..., RunningRuntime], fake_uri: Path
) -> None:
    command = FakeCommand()
    command.behaviour["m-bad"] = ["--status", "503"]
    rt = up([predictor("m-good", 50, fake_uri), predictor("m-bad", 50, fake_uri)], command=command)
    retried = 0
    with httpx.Client(base_url=rt.url) as c:
        for _ in range(60):
            r = c.post(PREDICT, json=v1_body())
            assert r.status_code == 200 and r.headers["x-sluice-predictor"] == "m-good"
            retried += r.headers.get("x-sluice-retried-from") == "m-bad"
        # An explicit override is not retried elsewhere: the caller asked for that predictor.
        assert c.post(PREDICT, json=v1_body(), headers={"x-sluice-predictor": "m-bad"}).status_code == 503
    assert retried > 10
    samples = metrics(rt, "sluice_gateway_retries_total")
    assert samples == [
        (
            {
                "namespace": "sluice",
                "deployment_name": "sd",
                "predictor_name": "m-bad",
                "retried_on": "m-good",
            },
            float(retried),
        )
    ]
    client = {
        (lab["predictor_name"], lab["code"]): v
        for lab, v in metrics(rt, "seldon_api_executor_client_requests_seconds_count")
    }
    assert client[("m-bad", "503")] == retried + 1
    # The caller never saw them, but the failures count against m-bad for the rollout engine's error gate.
    server = {
        (lab["predictor_name"], lab["code"]): v
        for lab, v in metrics(rt, "seldon_api_executor_server_requests_seconds_count")
    }
    assert server[("m-bad", "503")] == retried + 1
    assert server[("m-good", "200")] == 60


def test_a_killed_candidate_is_retried_elsewhere_and_restarted(
    up: Callable[..., RunningRuntime], fake_uri: Path
) -> None:
    rt = up([predictor("m-a", 50, fake_uri), predictor("m-b", 50, fake_uri)])
    victim = next(p for p in rt.runtime.processes.values() if p.spec.name == "m-b")
    old_pid = victim.pid
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=rt.url) as c:
        for i in range(300):
            if i == 20:
                assert victim.popen is not None
                victim.popen.kill()
            statuses[c.post(PREDICT, json=v1_body()).status_code] += 1
        rt.wait_for(lambda: victim.backend.alive and victim.pid != old_pid, what="m-b restarted")
        after = Counter(c.post(PREDICT, json=v1_body()).headers["x-sluice-predictor"] for _ in range(60))
    assert statuses == Counter({200: 300})
    assert after["m-b"] > 5  # back in rotation
    assert victim.restarts == 1
    assert any("m-b" in e.message and "restarting" in e.message for e in rt.events)


def test_no_live_predictor_is_a_clear_503(up: Callable[..., RunningRuntime], fake_uri: Path) -> None:
    rt = up([predictor("m-a", 100, fake_uri)])
    for proc in rt.runtime.processes.values():
        proc.backend.ready = False
    r = httpx.post(rt.url + INFER, json=V2_BODY)
    assert r.status_code == 503 and "no live predictor" in r.json()["error"]
    r = httpx.post(rt.url + PREDICT, content=b"x" * (9 << 20))
    assert r.status_code == 413


def test_a_hung_predictor_is_taken_out_of_routing(up: Callable[..., RunningRuntime], fake_uri: Path) -> None:
    command = FakeCommand()
    command.behaviour["m-hung"] = ["--hang-after", "3"]
    rt = up(
        [predictor("m-ok", 50, fake_uri), predictor("m-hung", 50, fake_uri)],
        command=command,
        health_interval=0.2,
        health_timeout=0.5,
        health_failures=2,
        request_timeout=2.0,
    )
    with httpx.Client(base_url=rt.url, timeout=10) as c:
        # Until m-hung is noticed, a request that lands on it waits for the request timeout (504).
        rt.wait_for(
            lambda: (
                c.post(PREDICT, json=v1_body()).status_code == 504
                or any("out of routing" in e.message for e in rt.events)
            ),
            what="m-hung hangs",
        )
        rt.wait_for(lambda: any("m-hung" in e.message and "out of routing" in e.message for e in rt.events))
        answered = Counter(c.post(PREDICT, json=v1_body()).headers["x-sluice-predictor"] for _ in range(40))
    assert answered == Counter({"m-ok": 40})
    alive = {q["name"]: q["alive"] for q in rt.routes()["predictors"]}
    assert alive == {"m-ok": True, "m-hung": False}


def test_the_sticky_key_comes_from_the_rollout_annotation_of_the_manifest(
    up: Callable[..., RunningRuntime], fake_uri: Path
) -> None:
    from rollout.policy import ABSpec
    from rollout.state import ANNOTATION, Rollout

    key = ABSpec(sticky_key="x-team").sticky_key
    ab = {ANNOTATION: Rollout("ab", "m-b", "m-a", 0, 0.0, sticky_key=key).to_json()}
    predictors = [predictor("m-a", 50, fake_uri), predictor("m-b", 50, fake_uri)]
    rt = up(predictors, annotations=ab)
    assert rt.routes()["sticky_header"] == "x-team"

    def arms(header: str) -> dict[str, set[str]]:
        seen: dict[str, set[str]] = {}
        with httpx.Client(base_url=rt.url) as c:
            for _ in range(3):
                for i in range(20):
                    r = c.post(PREDICT, json=v1_body(), headers={header: f"k-{i}"})
                    seen.setdefault(f"k-{i}", set()).add(r.headers["x-sluice-predictor"])
        return seen

    by_team = arms("x-team")
    assert all(len(v) == 1 for v in by_team.values())  # pinned by the policy's key
    assert {next(iter(v)) for v in by_team.values()} == {"m-a", "m-b"}
    assert any(len(v) > 1 for v in arms("x-sluice-user").values())  # the default key pins nobody here
    # The rollout moves on to a canary: its stage weighs requests, so no key pins.
    canary = {ANNOTATION: Rollout("canary", "m-b", "m-a", 0, 0.0).to_json()}
    write_manifest(rt.env, predictors, annotations=canary)
    rt.wait_for(lambda: rt.routes()["sticky_header"] is None, what="the canary's routing")
    assert any(len(v) > 1 for v in arms("x-team").values())


def test_copies_for_the_shadow_are_sent_by_a_process_of_their_own(
    up: Callable[..., RunningRuntime], fake_uri: Path
) -> None:
    import psutil

    rt = up([predictor("m-live", 100, fake_uri), predictor("m-shadow", 0, fake_uri, shadow=True)])
    with httpx.Client(base_url=rt.url) as c:
        for _ in range(5):
            assert c.post(PREDICT, json=v1_body()).status_code == 200
    rt.wait_for(lambda: stats(rt, "m-shadow").get(PREDICT, 0) == 5, what="five copies")
    worker = psutil.Process(rt.runtime.router.mirror.pid)  # type: ignore[attr-defined]
    assert "serving.router.mirror_worker" in " ".join(worker.cmdline())
    assert worker.nice() - psutil.Process().nice() == 10  # it yields the CPU to live answers
    # Its results reach the router's metrics: the shadow's latency under its own name.
    rt.wait_for(
        lambda: any(
            lab["predictor_name"] == "m-shadow" and v == 5
            for lab, v in metrics(rt, "seldon_api_executor_server_requests_seconds_count")
        ),
        what="the shadow's figures",
    )
    rt.stop()
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
