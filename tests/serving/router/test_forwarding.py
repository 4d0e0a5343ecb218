"""The router's rules with in-memory predictors (no socket, no process): retry, override, feedback, mirroring."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
import pytest

from deployment import seldon
from serving.router.in_memory import InMemoryUpstream
from serving.router.proxy import Router
from serving.router.routes import Backend, labels_for, routes_for
from serving.router.upstream import UpstreamError

PREDICT = "/api/v1.0/predictions"
FEEDBACK = "/api/v1.0/feedback"
DIGEST = "sha256:" + "a" * 64


def manifest(
    *predictors: tuple[str, int, bool], annotations: dict[str, str] | None = None
) -> seldon.SeldonDeployment:
    return seldon.parse(
        {
            "apiVersion": "machinelearning.seldon.io/v1",
            "kind": "SeldonDeployment",
            "metadata": {"name": "sd", "namespace": "staging", "annotations": annotations or {}},
            "spec": {
                "predictors": [
                    {
                        "name": name,
                        "traffic": traffic,
                        "shadow": shadow,
                        "graph": {"name": "classifier", "parameters": []},
                    }
                    for name, traffic, shadow in predictors
                ]
            },
        }
    )


def predictor_app(name: str, *, status: int = 200, label: int = 1, fail: Exception | None = None) -> Any:
    """A predictor that answers as `name` (or raises `fail`, or answers `status`)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        if fail is not None:
            raise fail
        if scope["path"] == FEEDBACK:
            body = orjson.dumps({"data": {"ndarray": []}, "meta": {}})
        else:
            probs = [0.2, 0.8] if label == 1 else [0.8, 0.2]
            body = orjson.dumps({"data": {"ndarray": [probs]}, "meta": {}, "who": name})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


class Harness:
    """A Router over in-memory predictors."""

    def __init__(self, sd: seldon.SeldonDeployment, apps: dict[str, Any], draws: list[float] | None = None):
        self.draws = list(draws or [])
        self.router = Router(rng=self._draw, timeout=0.5)
        labels = labels_for(sd)
        self.upstreams = {
            name: InMemoryUpstream(app, f"10.0.0.{i}:8000") for i, (name, app) in enumerate(apps.items())
        }
        self.backends = {
            name: Backend(name, labels[name], up, ready=True) for name, up in self.upstreams.items()
        }
        self.router.swap(routes_for(sd, self.backends))

    def _draw(self) -> float:
        return self.draws.pop(0) if self.draws else 0.0

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        return asyncio.run(self._call(method, path, body, headers or {}))

    async def _call(
        self, method: str, path: str, body: Any, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], Any]:
        raw = body if isinstance(body, bytes) else (orjson.dumps(body) if body is not None else b"")
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": raw, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.router(scope, receive, send)
        await asyncio.sleep(0.05)  # let the mirror's workers run
        await self.router.mirror.stop()
        start = sent[0]
        answer_headers = {k.decode(): v.decode() for k, v in start["headers"]}
        payload = b"".join(m.get("body", b"") for m in sent[1:])
        return start["status"], answer_headers, json.loads(payload) if payload else None

    def predictors(self, requests: list[tuple[str, dict[str, str]]]) -> list[str]:
        """Who answered each (path, headers) prediction, all sent in one event loop."""

        async def run() -> list[str]:
            out = []
            for path, headers in requests:
                sent: list[dict[str, Any]] = []
                scope = {
                    "type": "http",
                    "method": "POST",
                    "path": path,
                    "raw_path": path.encode(),
                    "query_string": b"",
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
                }

                async def receive() -> dict[str, Any]:
                    return {"type": "http.request", "body": b'{"data": {}}', "more_body": False}

                async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
                    sent.append(message)

                await self.router(scope, receive, send)
                out.append(dict(sent[0]["headers"])[b"x-sluice-predictor"].decode())
            await self.router.mirror.stop()
            return out

        return asyncio.run(run())

    def sent_to(self, name: str) -> list[str]:
        return [target for _, target, _, _ in self.upstreams[name].requests]


def counter(h: Harness, name: str) -> dict[tuple[str, ...], float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(h.router.metrics.exposition().decode()):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


# override -----------------------------------------------------------------------------------------------------
def test_an_override_may_name_a_zero_weight_predictor_but_never_the_shadow() -> None:
    sd = manifest(("m-blue", 100, False), ("m-green", 0, False), ("m-shadow", 0, True))
    h = Harness(sd, {n: predictor_app(n) for n in ("m-blue", "m-green", "m-shadow")})
    status, headers, body = h.call(
        "POST", PREDICT, {"data": {"ndarray": [[1]]}}, {"x-sluice-predictor": "m-green"}
    )
    assert status == 200 and headers["x-sluice-predictor"] == "m-green" and body["who"] == "m-green"
    status, _, body = h.call(
        "POST", PREDICT, {"data": {"ndarray": [[1]]}}, {"x-sluice-predictor": "m-shadow"}
    )
    assert status == 400 and "'m-shadow' is the shadow" in body["status"]["info"]
    assert h.sent_to("m-shadow") == []  # the shadow never answered a caller
    status, _, body = h.call("POST", PREDICT, {"data": {"ndarray": [[1]]}}, {"x-seldon-route": ":m-shadow:"})
    assert status == 200 and body["who"] == "m-blue"  # a pin to the shadow is ignored, not obeyed


def test_an_override_is_never_retried_elsewhere() -> None:
    sd = manifest(("m-a", 50, False), ("m-b", 50, False))
    h = Harness(sd, {"m-a": predictor_app("m-a", status=503), "m-b": predictor_app("m-b")})
    status, headers, _ = h.call("POST", PREDICT, {"data": {}}, {"x-sluice-predictor": "m-a"})
    assert status == 503 and headers["x-sluice-predictor"] == "m-a"
    assert h.sent_to("m-b") == []


# retry --------------------------------------------------------------------------------------------------------
def test_a_refused_connection_is_retried_on_another_predictor_and_counted_against_the_first() -> None:
    sd = manifest(("m-a", 50, False), ("m-b", 50, False))
    h = Harness(
        sd, {"m-a": predictor_app("m-a", fail=UpstreamError("refused")), "m-b": predictor_app("m-b")}, [0.1]
    )
    status, headers, body = h.call("POST", PREDICT, {"data": {}})
    assert status == 200 and body["who"] == "m-b"
    assert headers["x-sluice-retried-from"] == "m-a"
    assert not h.backends["m-a"].alive  # left out of routing for a moment after a refused connection
    retries = counter(h, "sluice_gateway_retries_total")
    assert list(retries.values()) == [1.0]
    assert dict(next(iter(retries)))["retried_on"] == "m-b"
    server = counter(h, "seldon_api_executor_server_requests_seconds_count")
    codes = {(dict(k)["predictor_name"], dict(k)["code"]) for k in server}
    assert codes == {("m-a", "502"), ("m-b", "200")}


def test_a_timeout_is_not_retried_and_the_caller_sees_no_internal_address() -> None:
    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(5)

    sd = manifest(("m-a", 50, False), ("m-b", 50, False))
    h = Harness(sd, {"m-a": slow, "m-b": predictor_app("m-b")}, [0.1])
    status, _, body = h.call("POST", PREDICT, {"data": {}})
    assert status == 504 and h.sent_to("m-b") == []
    info = body["status"]["info"]
    assert "'m-a' did not answer within 0.5 s" in info
    assert "10.0.0" not in info and "8000" not in info


def test_with_no_other_predictor_the_502_names_the_predictor_not_its_address() -> None:
    sd = manifest(("m-a", 100, False))
    h = Harness(
        sd, {"m-a": predictor_app("m-a", fail=UpstreamError("cannot connect to 10.0.0.0:8000: refused"))}
    )
    status, _, body = h.call("POST", "/v2/models/classifier/infer", {"inputs": []})
    assert status == 502
    assert body == {"error": "predictor 'm-a' could not be reached and no other predictor is live"}


def test_an_unexpected_failure_is_a_generic_500() -> None:
    sd = manifest(("m-a", 100, False))
    h = Harness(sd, {"m-a": predictor_app("m-a", fail=RuntimeError("secret detail at /etc/passwd"))})
    status, _, body = h.call("POST", PREDICT, {"data": {}})
    assert status == 500
    assert body["status"]["info"] == "internal error in the router"


# feedback -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reward", "message"),
    [
        (1e12, "field reward: 1000000000000.0 is outside [0, 1]"),
        (-0.5, "field reward: -0.5 is outside [0, 1]"),
        (1.5, "field reward: 1.5 is outside [0, 1]"),
        ("1", "field reward: expected a number, got '1'"),
        (True, "field reward: expected a number, got True"),
    ],
)
def test_rewards_outside_the_metric_range_are_refused(reward: Any, message: str) -> None:
    sd = manifest(("m-a", 100, False))
    h = Harness(sd, {"m-a": predictor_app("m-a")})
    status, _, body = h.call(
        "POST", FEEDBACK, {"response": {"meta": {"tags": {"sluice_predictor": "m-a"}}}, "reward": reward}
    )
    assert status == 400 and message in body["status"]["info"]
    assert h.sent_to("m-a") == []
    assert counter(h, "seldon_api_model_feedback_reward_total") == {}


def test_a_non_finite_reward_is_refused() -> None:
    sd = manifest(("m-a", 100, False))
    h = Harness(sd, {"m-a": predictor_app("m-a")})
    status, _, body = h.call("POST", FEEDBACK, b'{"reward": NaN, "response": {}}')
    assert status == 400 and "not valid JSON" in body["status"]["info"]
    status, _, body = h.call("POST", FEEDBACK, b'{"reward": 1e999, "response": {}}')
    assert status == 400


def test_feedback_follows_what_the_answer_carried() -> None:
    sd = manifest(("m-a", 50, False), ("m-b", 50, False), ("m-s", 0, True))
    h = Harness(sd, {n: predictor_app(n) for n in ("m-a", "m-b", "m-s")}, [0.9, 0.5])
    status, headers, answer = h.call("POST", PREDICT, {"data": {"ndarray": [[1]]}})
    assert status == 200 and answer["who"] == "m-b"
    puid = answer["meta"]["puid"]
    assert puid.endswith(".m-b") and headers["seldon-puid"] == puid
    # 1. the tag the router put in the answer
    assert h.call("POST", FEEDBACK, {"response": answer, "reward": 1})[1]["x-sluice-predictor"] == "m-b"
    # 2. the x-seldon-route header sent back
    route = {"x-seldon-route": headers["x-seldon-route"]}
    assert h.call("POST", FEEDBACK, {"response": {}, "reward": 1}, route)[1]["x-sluice-predictor"] == "m-b"
    # 3. the predictor named in the router's puid, from the body or the header
    by_puid = {"response": {"meta": {"puid": puid}}, "reward": 0}
    assert h.call("POST", FEEDBACK, by_puid)[1]["x-sluice-predictor"] == "m-b"
    assert h.call("POST", FEEDBACK, {"reward": 0}, {"seldon-puid": puid})[1]["x-sluice-predictor"] == "m-b"
    assert len(h.sent_to("m-b")) == 5 and h.sent_to("m-a") == []
    totals = {dict(k)["predictor_name"]: v for k, v in counter(h, "seldon_api_model_feedback_total").items()}
    assert totals == {"m-b": 4.0}


def test_feedback_that_names_no_predictor_is_refused_when_there_is_a_choice() -> None:
    sd = manifest(("m-a", 50, False), ("m-b", 50, False))
    h = Harness(sd, {n: predictor_app(n) for n in ("m-a", "m-b")})
    status, _, body = h.call("POST", FEEDBACK, {"response": {"meta": {"puid": "my-own-id"}}, "reward": 1})
    assert status == 400 and "feedback names no predictor" in body["status"]["info"]
    status, _, body = h.call("POST", FEEDBACK, {"response": {"meta": {"tags": {"sluice_predictor": "m-s"}}}})
    assert status == 410  # not in this deployment (any more)
    single = Harness(manifest(("m-a", 100, False)), {"m-a": predictor_app("m-a")})
    assert single.call("POST", FEEDBACK, {"reward": 1})[1]["x-sluice-predictor"] == "m-a"


def test_feedback_may_not_name_the_shadow() -> None:
    sd = manifest(("m-a", 100, False), ("m-s", 0, True))
    h = Harness(sd, {n: predictor_app(n) for n in ("m-a", "m-s")})
    status, _, body = h.call("POST", FEEDBACK, {"response": {"meta": {"tags": {"sluice_predictor": "m-s"}}}})
    assert status == 400 and "'m-s' is the shadow" in body["status"]["info"]


# puid -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "headers", "where"),
    [
        ({"meta": {"puid": "a\r\nSet-Cookie: x=1"}, "data": {}}, {}, "field meta.puid"),
        ({"meta": {"puid": "has space"}, "data": {}}, {}, "field meta.puid"),
        ({"meta": {"puid": 12}, "data": {}}, {}, "field meta.puid"),
        ({"data": {}}, {"seldon-puid": 'a"b'}, "header seldon-puid"),
    ],
)
def test_a_puid_the_router_would_echo_must_be_a_plain_token(
    body: dict[str, Any], headers: dict[str, str], where: str
) -> None:
    h = Harness(manifest(("m-a", 100, False)), {"m-a": predictor_app("m-a")})
    status, answer_headers, answer = h.call("POST", PREDICT, body, headers)
    assert status == 400 and where in answer["status"]["info"]
    assert "set-cookie" not in answer_headers and h.sent_to("m-a") == []


def test_a_callers_own_puid_is_echoed() -> None:
    h = Harness(manifest(("m-a", 100, False)), {"m-a": predictor_app("m-a")})
    status, headers, answer = h.call("POST", PREDICT, {"data": {}}, {"seldon-puid": "order-42:a.b"})
    assert status == 200 and headers["seldon-puid"] == answer["meta"]["puid"] == "order-42:a.b"


# mirroring --------------------------------------------------------------------------------------------------
def test_only_answers_the_live_predictor_accepted_are_mirrored() -> None:
    sd = manifest(("m-a", 100, False), ("m-s", 0, True))
    live = {"status": 200}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await predictor_app("m-a", status=live["status"])(scope, receive, send)

    h = Harness(sd, {"m-a": app, "m-s": predictor_app("m-s", label=0)})
    h.call("POST", PREDICT, {"data": {"ndarray": [[1]]}})
    live["status"] = 400
    h.call("POST", PREDICT, {"data": {"ndarray": [[2]]}})
    assert len(h.sent_to("m-s")) == 1
    assert counter(h, "sluice_shadow_disagreements_total") != {}


def test_the_mirror_queue_is_bounded_in_bytes() -> None:
    from serving.router.executor_metrics import RouterMetrics
    from serving.router.mirroring import Mirror, MirrorCopy

    sd = manifest(("m-a", 100, False), ("m-s", 0, True))
    backend = Backend("m-s", labels_for(sd)["m-s"], InMemoryUpstream(predictor_app("m-s")), ready=True)
    metrics = RouterMetrics()

    async def run() -> tuple[int, int, int]:
        mirror = Mirror(metrics, max_bytes=10 << 20)
        big = b"x" * (4 << 20)
        offered = [
            mirror.offer(MirrorCopy.of(backend, "POST", PREDICT, "predictions", [], big, 200, None, 0))
            for _ in range(5)
        ]
        queued = mirror.queued_bytes
        await mirror.stop()
        return sum(offered), mirror.dropped, queued

    accepted, dropped, queued = asyncio.run(run())
    assert (accepted, dropped) == (2, 3) and queued <= 10 << 20


def test_split_with_an_injected_draw_follows_the_weights() -> None:
    sd = manifest(("m-a", 30, False), ("m-b", 70, False))
    draws = [i / 100 for i in range(100)]
    h = Harness(sd, {n: predictor_app(n) for n in ("m-a", "m-b")}, list(draws))
    seen = [h.call("POST", PREDICT, {"data": {}})[1]["x-sluice-predictor"] for _ in range(100)]
    assert seen.count("m-a") == 30


# the split --------------------------------------------------------------------------------------------------
def _rollout(strategy: str, **extra: Any) -> dict[str, str]:
    from rollout.state import Rollout

    state = Rollout(strategy, "m-b", "m-a", 0, 0.0, "progressing", **extra)
    return {"sluice.dev/rollout": state.to_json()}


def test_a_canary_stage_gets_its_weight_of_requests_with_pinned_users_included() -> None:
    """200 users (the demo's population) each sending 20 requests with their x-sluice-user key, at a 5% stage:
    the candidate's share is within the sampling error of the 4,000 requests. Pinning those users by key
    (what the router did for every strategy) gives this population 3.0%, five standard errors low."""
    import random

    users = [{"x-sluice-user": f"user-{i}"} for i in range(200)]
    requests = [(PREDICT, u) for _ in range(20) for u in users]
    n, p = len(requests), 0.05
    sd = (n * p * (1 - p)) ** 0.5
    canary = manifest(("m-a", 95, False), ("m-b", 5, False), annotations=_rollout("canary"))
    h = Harness(canary, {x: predictor_app(x) for x in ("m-a", "m-b")})
    h.router.rng = random.Random(11).random
    share = h.predictors(requests).count("m-b")
    assert abs(share - p * n) < 3 * sd, (share, p * n, sd)
    # The same traffic when users are pinned (no rollout drives this manifest): the population's own split.
    pinned = Harness(
        manifest(("m-a", 95, False), ("m-b", 5, False)), {x: predictor_app(x) for x in ("m-a", "m-b")}
    )
    assert abs(pinned.predictors(requests).count("m-b") - p * n) > 3 * sd


def test_an_ab_rollout_pins_by_the_key_its_policy_names() -> None:
    from rollout.policy import ABSpec

    policy = ABSpec(split=50, sticky_key="x-team")
    sd = manifest(
        ("m-a", 50, False), ("m-b", 50, False), annotations=_rollout("ab", sticky_key=policy.sticky_key)
    )
    h = Harness(sd, {x: predictor_app(x) for x in ("m-a", "m-b")}, [0.1, 0.9] * 200)
    teams = [{"x-team": f"team-{i}", "x-sluice-user": f"user-{i % 3}"} for i in range(40)]
    first = h.predictors([(PREDICT, t) for t in teams])
    again = h.predictors([(PREDICT, t) for t in teams])
    assert first == again  # each team keeps its arm, whatever x-sluice-user says
    assert set(first) == {"m-a", "m-b"}
    # x-sluice-user alone does not pin under this policy: the draws alternate arms.
    loose = h.predictors([(PREDICT, {"x-sluice-user": "user-1"}) for _ in range(10)])
    assert set(loose) == {"m-a", "m-b"}


def test_the_reward_counted_is_the_one_the_predictor_scored() -> None:
    """A feedback with a truth and no reward: the predictor scores it (its answer says so), the router counts
    that, not 0."""

    async def scoring(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        body = orjson.dumps({"data": {"ndarray": []}, "meta": {"tags": {"reward": 0.75}}})
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    h = Harness(manifest(("m-a", 100, False)), {"m-a": scoring})
    status, _, _ = h.call("POST", FEEDBACK, {"truth": {"data": {"ndarray": [[1]]}}, "response": {}})
    assert status == 200
    rewards = counter(h, "seldon_api_model_feedback_reward_total")
    assert list(rewards.values()) == [0.75]
